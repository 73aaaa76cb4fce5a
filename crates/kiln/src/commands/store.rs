//! `kiln prune` and `kiln store verify`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::context::Context;
use crate::progress::human_bytes;

/// Delete every blob and record no image name reaches.
#[derive(Args)]
pub(crate) struct PruneArgs {}

/// Look after the store.
#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Re-hash every blob and check every index entry; exits 1 on problems.
    Verify,
}

pub(crate) fn run_prune(ctx: &Context, _args: PruneArgs) -> anyhow::Result<ExitCode> {
    let report = ctx.store()?.prune()?;
    println!(
        "Deleted {} blobs and {} records, {} freed; {} blobs kept",
        report.removed.len(),
        report.records_removed,
        human_bytes(report.freed_bytes),
        report.kept
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(ctx: &Context, command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Verify => {
            let store = ctx.store()?;
            let report = store.verify()?;
            for problem in &report.problems {
                println!("problem: {problem}");
            }
            println!(
                "{} blobs ({}) and {} tags checked in {}: {}",
                report.blobs,
                human_bytes(report.bytes),
                report.tags,
                store.root().display(),
                if report.problems.is_empty() {
                    "ok".to_string()
                } else {
                    format!("{} problems", report.problems.len())
                }
            );
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
