//! `kiln lint`: Dockerfile steps that hang a build, defeat its caches or do
//! not reproduce (kiln-lint's rules, docs/LINT.md).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_dockerfile::Location;
use kiln_lint::{Finding, LintError, RULES, Severity};

use crate::report::{SourceError, print_error};

/// Check Dockerfiles for steps that hang, defeat caches or do not reproduce.
///
/// Exit status: 1 when a finding is at or above `--fail-level`, or a file
/// cannot be read or parsed; 2 for a usage error; else 0.
#[derive(Args)]
pub(crate) struct LintArgs {
    /// Output format (json: an array of findings; sarif: SARIF 2.1.0).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Do not report this rule (repeatable), e.g. `--ignore KL104`.
    #[arg(long = "ignore", value_name = "ID")]
    ignore: Vec<String>,
    /// The lowest severity that makes the exit status 1.
    #[arg(long, value_enum, default_value_t = Level::Error)]
    fail_level: Level,
    /// The Dockerfiles (`-` reads standard input).
    #[arg(default_value = "Dockerfile")]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Clone, Copy, ValueEnum)]
enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    fn severity(self) -> Severity {
        match self {
            Level::Error => Severity::Error,
            Level::Warning => Severity::Warning,
            Level::Info => Severity::Info,
        }
    }
}

pub(crate) fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    if let Some(unknown) = args
        .ignore
        .iter()
        .find(|id| !RULES.iter().any(|r| r.id.eq_ignore_ascii_case(id)))
    {
        eprintln!(
            "error: unknown rule {unknown} for --ignore (known: {})",
            RULES.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let mut findings: Vec<Finding> = Vec::new();
    let mut failed = false;
    for file in &args.files {
        match lint_file(file) {
            Ok(found) => findings.extend(found),
            Err(err) => {
                print_error(&err);
                failed = true;
            }
        }
    }
    findings.retain(|f| !args.ignore.iter().any(|id| id.eq_ignore_ascii_case(f.rule)));
    let output = match args.format {
        Format::Text => kiln_lint::to_text(&findings),
        Format::Json => kiln_lint::to_json(&findings),
        Format::Sarif => kiln_lint::to_sarif(&findings),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(output.as_bytes())?;
    out.flush()?;
    let fail = args.fail_level.severity();
    failed |= findings.iter().any(|f| f.severity >= fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One file's findings; a file that cannot be read or parsed is an error
/// naming it and the line.
fn lint_file(file: &Path) -> anyhow::Result<Vec<Finding>> {
    let (bytes, shown) = if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        (buf, "<stdin>".to_string())
    } else {
        (fs_err::read(file)?, file.display().to_string())
    };
    kiln_lint::lint(&shown, &bytes).map_err(|err| match err {
        LintError::Parse { line, message } => SourceError::new(
            Path::new(&shown),
            &String::from_utf8_lossy(&bytes),
            Location {
                start_line: line,
                end_line: line,
            },
            message,
        )
        .into(),
        other => anyhow::Error::new(other).context(format!("linting {shown}")),
    })
}
