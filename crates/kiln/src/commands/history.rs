//! `kiln history`: the reports of the last builds, kept in the store
//! (`<root>/history/<id>/`, the last 50 or `KILN_HISTORY_KEEP`), `kiln
//! history show ID` and `kiln history prune [--keep N]`.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::build_report::{HTML_FILE, History, JSON_FILE};
use crate::context::Context;

/// List the last builds (newest first), or show one's report.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct HistoryArgs {
    #[command(subcommand)]
    command: Option<HistoryCommand>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Print a build's report.json, or open its report.html.
    Show(ShowArgs),
    /// Remove the oldest reports, keeping the newest N.
    Prune(PruneArgs),
}

#[derive(Args)]
struct PruneArgs {
    /// How many of the newest builds to keep (default: KILN_HISTORY_KEEP,
    /// else 50).
    #[arg(long, value_name = "N")]
    keep: Option<usize>,
}

#[derive(Args)]
struct ShowArgs {
    /// The build's id as `kiln history` lists it, or the start of one.
    id: String,
    /// Open report.html with `xdg-open`; without it, print the file's path.
    #[arg(long)]
    open: bool,
    /// Print the directory that holds report.json and report.html.
    #[arg(long, conflicts_with = "open")]
    path: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    /// One JSON array.
    Json,
}

#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    started_at: &'a str,
    target: &'a str,
    status: &'a str,
    duration_ms: u64,
    steps: u32,
    cached: u32,
}

pub(crate) fn run(ctx: &Context, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let history = History::new(&ctx.root());
    match args.command {
        None => list(&history, args.format),
        Some(HistoryCommand::Show(show)) => self::show(&history, &show),
        Some(HistoryCommand::Prune(prune)) => {
            let keep = match prune.keep {
                Some(keep) => keep,
                None => History::keep_from(std::env::var_os(History::KEEP_VAR).as_deref())?,
            };
            let removed = history.prune(keep)?;
            eprintln!(
                "removed {removed} report{}",
                if removed == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(history: &History, format: Format) -> anyhow::Result<ExitCode> {
    let entries = history.list()?;
    match format {
        Format::Json => {
            let rows: Vec<Row<'_>> = entries
                .iter()
                .map(|e| Row {
                    id: &e.id,
                    started_at: &e.started_at,
                    target: &e.target,
                    status: &e.status,
                    duration_ms: e.duration_ms,
                    steps: e.steps,
                    cached: e.cached,
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            let mut rows = vec![[
                "ID".to_string(),
                "STARTED".to_string(),
                "TARGET".to_string(),
                "STATUS".to_string(),
                "DURATION".to_string(),
                "STEPS".to_string(),
            ]];
            for e in &entries {
                rows.push([
                    e.id.clone(),
                    e.started_at.clone(),
                    e.target.clone(),
                    e.status.clone(),
                    crate::render::text::duration(Duration::from_millis(e.duration_ms)),
                    format!("{} ({} cached)", e.steps, e.cached),
                ]);
            }
            let mut widths = [0usize; 6];
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in &rows {
                let mut line = String::new();
                for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                    if i + 1 == row.len() {
                        line.push_str(cell);
                    } else {
                        line.push_str(&format!("{cell:<w$}  "));
                    }
                }
                println!("{}", line.trim_end());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(history: &History, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let dir = history.find(&args.id)?;
    if args.path {
        println!("{}", dir.display());
    } else if args.open {
        let html = dir.join(HTML_FILE);
        // Nothing to open it with (a server, a CI runner): the path, to
        // copy where a browser is.
        let opened = Command::new("xdg-open")
            .arg(&html)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !opened {
            println!("{}", html.display());
        }
    } else {
        let json = fs_err::read_to_string(dir.join(JSON_FILE))?;
        print!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}
