//! `kiln`: a daemonless OCI image builder.

mod build_report;
mod commands;
mod context;
mod files;
mod metadata;
mod pipeline;
mod progress;
mod render;
mod report;
mod rootless;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::context::{Context, GlobalArgs};

#[derive(Parser)]
#[command(name = "kiln", version, about = "Daemonless OCI image builder", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Parse(commands::parse::ParseArgs),
    Lint(commands::lint::LintArgs),
    Build(commands::build::BuildArgs),
    History(commands::history::HistoryArgs),
    StageKey(commands::stage_key::StageKeyArgs),
    Executor(Box<commands::executor::ExecutorArgs>),
    Pull(commands::pull::PullArgs),
    Push(commands::push::PushArgs),
    Import(commands::import::ImportArgs),
    Images(commands::images::ImagesArgs),
    Inspect(commands::inspect::InspectArgs),
    Tag(commands::tag::TagArgs),
    Rmi(commands::tag::RmiArgs),
    Export(commands::export::ExportArgs),
    Load(commands::load::LoadArgs),
    Run(commands::run::RunArgs),
    Prune(commands::store::PruneArgs),
    #[command(subcommand)]
    Store(commands::store::StoreCommand),
    #[command(subcommand)]
    Imagetools(commands::imagetools::ImagetoolsCommand),
    #[command(subcommand)]
    Ci(commands::ci::CiCommand),
}

/// Whether the subcommand of a kiln command line that did not parse is
/// `executor`: the first argument that is neither a global option nor the
/// value of one.
fn subcommand_is_executor(argv: &[std::ffi::OsString]) -> bool {
    use clap::CommandFactory;
    let cli = Cli::command();
    let takes_value = |long: &str| {
        cli.get_arguments()
            .any(|a| a.get_long() == Some(long) && a.get_action().takes_values())
    };
    let mut args = argv.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if let Some(long) = arg.strip_prefix("--") {
            if !long.contains('=') && takes_value(long) {
                args.next();
            }
        } else if !arg.starts_with('-') {
            return arg == "executor";
        }
    }
    false
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Not a clap subcommand: a guardian must not depend on the environment
    // parsing as a command's options, and users never type it.
    if argv.get(1).is_some_and(|a| a == context::GUARD_COMMAND) {
        return kiln_sandbox::run_guardian(&argv[2..]);
    }
    if argv
        .get(1)
        .is_some_and(|a| a == context::CHROOT_INIT_COMMAND)
    {
        return kiln_sandbox::run_chroot_init(&argv[2..]);
    }
    if argv.get(1).is_some_and(|a| a == kiln_sandbox::CHROOT_EXEC) {
        return kiln_sandbox::run_chroot_exec();
    }
    // A rootless child makes its namespaces while it has one thread.
    if let Err(err) = rootless::enter_if_child() {
        report::print_error(&err);
        return ExitCode::FAILURE;
    }
    // Installed as `/kaniko/executor`: Kaniko's command line.
    if commands::executor::invoked_as_executor(argv.first()) {
        return commands::executor::main_as_executor();
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        // `kiln executor` fails as Kaniko does (1, "did you mean").
        Err(e) if subcommand_is_executor(&argv) => {
            return commands::executor::usage_error(e);
        }
        Err(e) => e.exit(),
    };
    // Every command that opens a store or runs a step; parsing and linting
    // touch neither, and `kiln ci` only prints.
    let opens_store = !matches!(
        cli.command,
        Command::Parse(_) | Command::Lint(_) | Command::Ci(_)
    );
    if rootless::wanted(opens_store) {
        return match rootless::run_again(&cli.global, &argv) {
            Ok(code) => code,
            Err(err) => {
                report::print_error(&err);
                ExitCode::FAILURE
            }
        };
    }
    let ctx = Context::new(cli.global);
    let result = match cli.command {
        Command::Parse(args) => commands::parse::run(args),
        Command::Lint(args) => commands::lint::run(args),
        Command::Build(args) => commands::build::run(&ctx, args),
        Command::History(args) => commands::history::run(&ctx, args),
        Command::StageKey(args) => commands::stage_key::run(&ctx, args),
        Command::Executor(args) => commands::executor::run(&ctx, *args),
        Command::Pull(args) => commands::pull::run(&ctx, args),
        Command::Push(args) => commands::push::run(&ctx, args),
        Command::Import(args) => commands::import::run(&ctx, args),
        Command::Images(args) => commands::images::run(&ctx, args),
        Command::Inspect(args) => commands::inspect::run(&ctx, args),
        Command::Tag(args) => commands::tag::run_tag(&ctx, args),
        Command::Rmi(args) => commands::tag::run_rmi(&ctx, args),
        Command::Export(args) => commands::export::run(&ctx, args),
        Command::Load(args) => commands::load::run(&ctx, args),
        Command::Run(args) => commands::run::run(&ctx, args),
        Command::Prune(args) => commands::store::run_prune(&ctx, args),
        Command::Store(cmd) => commands::store::run(&ctx, cmd),
        Command::Imagetools(cmd) => commands::imagetools::run(&ctx, cmd),
        Command::Ci(cmd) => commands::ci::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            report::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
