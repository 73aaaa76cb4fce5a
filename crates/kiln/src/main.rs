//! `kiln`: a daemonless OCI image builder.

mod commands;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "Daemonless OCI image builder", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Parse(commands::parse::ParseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => commands::parse::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            report::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
