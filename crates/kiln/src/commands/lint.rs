//! `kiln lint`: Dockerfile steps that hang a build, defeat its caches or do
//! not reproduce (kiln-lint's rules, docs/LINT.md).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_dockerfile::Location;
use kiln_lint::{Config, Finding, LintError, RULES, Severity};

use crate::report::{SourceError, print_error};

/// Check Dockerfiles for steps that hang, defeat caches or do not reproduce,
/// with hadolint's rules (DLxxxx) and BuildKit's checks too.
///
/// Exit status: 1 when a finding is at or above `--fail-level`, or a file
/// cannot be read or parsed; 2 for a usage error (or a configuration that
/// cannot be read); else 0.
#[derive(Args)]
pub(crate) struct LintArgs {
    /// Output format (json: an array of findings; sarif: SARIF 2.1.0).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Do not report this rule (repeatable), e.g. `--ignore KL104`.
    #[arg(long = "ignore", value_name = "ID")]
    ignore: Vec<String>,
    /// The lowest severity that makes the exit status 1 (default: the
    /// configuration's failure-threshold, else error).
    #[arg(long, value_enum)]
    fail_level: Option<Level>,
    /// A hadolint configuration file (default: the first of
    /// ./.hadolint.yaml, ./.hadolint.yml, $XDG_CONFIG_HOME/hadolint.yaml,
    /// ~/.hadolint/hadolint.yaml, ~/.hadolint.yaml, as hadolint looks).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    Style,
}

impl Level {
    fn severity(self) -> Severity {
        match self {
            Level::Error => Severity::Error,
            Level::Warning => Severity::Warning,
            Level::Info => Severity::Info,
            Level::Style => Severity::Style,
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
    let found = match &args.config {
        Some(path) => read_config(path).map(Some),
        None => find_config(),
    };
    let mut config = match found {
        Ok(config) => config.unwrap_or_default(),
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(2));
        }
    };
    config.ignored.extend(
        args.ignore
            .iter()
            .filter_map(|id| RULES.iter().find(|r| r.id.eq_ignore_ascii_case(id)))
            .map(|r| r.id.to_string()),
    );
    let mut findings: Vec<Finding> = Vec::new();
    let mut failed = false;
    for file in &args.files {
        match lint_file(file, &config) {
            Ok(found) => findings.extend(found),
            Err(err) => {
                print_error(&err);
                failed = true;
            }
        }
    }
    let output = match args.format {
        Format::Text => kiln_lint::to_text(&findings),
        Format::Json => kiln_lint::to_json(&findings),
        Format::Sarif => kiln_lint::to_sarif(&findings),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(output.as_bytes())?;
    out.flush()?;
    let fail = args
        .fail_level
        .map(Level::severity)
        .or(config.failure_threshold)
        .unwrap_or(Severity::Error);
    failed |= findings.iter().any(|f| f.severity >= fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A hadolint configuration file, read.
fn read_config(path: &Path) -> anyhow::Result<Config> {
    let text = fs_err::read_to_string(path)?;
    Config::from_hadolint_yaml(&text)
        .with_context(|| format!("reading the configuration {}", path.display()))
}

/// The configuration hadolint would use here, if any: the first file found
/// of ./.hadolint.{yaml,yml}, $XDG_CONFIG_HOME/hadolint.{yaml,yml},
/// ~/.hadolint/{hadolint,config}.{yaml,yml}, ~/.hadolint.{yaml,yml}.
pub(crate) fn find_config() -> anyhow::Result<Option<Config>> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    let mut candidates: Vec<PathBuf> = vec![".hadolint.yaml".into(), ".hadolint.yml".into()];
    if let Some(xdg) = &xdg {
        candidates.extend(["hadolint.yaml", "hadolint.yml"].map(|f| xdg.join(f)));
    }
    if let Some(home) = &home {
        let app = home.join(".hadolint");
        candidates.extend(
            ["hadolint.yaml", "hadolint.yml", "config.yaml", "config.yml"].map(|f| app.join(f)),
        );
        candidates.extend([".hadolint.yaml", ".hadolint.yml"].map(|f| home.join(f)));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(path) => read_config(path).map(Some),
        None => Ok(None),
    }
}

/// One file's findings; a file that cannot be read or parsed is an error
/// naming it and the line.
fn lint_file(file: &Path, config: &Config) -> anyhow::Result<Vec<Finding>> {
    let (bytes, shown) = if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        (buf, "<stdin>".to_string())
    } else {
        (fs_err::read(file)?, file.display().to_string())
    };
    kiln_lint::lint_with(&shown, &bytes, config).map_err(|err| match err {
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
