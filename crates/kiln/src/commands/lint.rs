//! `kiln lint`: Dockerfile steps that hang a build, defeat its caches or do
//! not reproduce (kiln-lint's rules, docs/LINT.md).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_build::{BuildContext, CopyFilter, EntryKind};
use kiln_dockerfile::Location;
use kiln_lint::{
    Config, Context, Finding, HeavyKind, HeavyPath, IgnoreFile, LintError, RULES, Severity,
};

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
    /// Rewrite each file with the safe fixes of KL101, KL102, KL104, KL105 and KL108
    /// (comments and layout kept), then report what is left; with `-`, the fixed
    /// Dockerfile goes to standard output and the findings to standard error.
    #[arg(long)]
    fix: bool,
    /// The build context of the Dockerfiles, for KL110 and CopyIgnoredFile
    /// (default: each Dockerfile's directory, as `docker build -f DIR/Dockerfile DIR`;
    /// none for `-`).
    #[arg(long, value_name = "DIR")]
    context: Option<PathBuf>,
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
        let linted = context_of(file, args.context.as_deref()).and_then(|context| {
            if args.fix {
                fix_file(file, &config, context.as_ref())
            } else {
                lint_file(file, &config, context.as_ref())
            }
        });
        match linted {
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
    // A Dockerfile fixed from standard input has standard output.
    if args.fix && args.files.iter().any(|f| f == Path::new("-")) {
        let mut err = std::io::stderr().lock();
        err.write_all(output.as_bytes())?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(output.as_bytes())?;
        out.flush()?;
    }
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
fn lint_file(
    file: &Path,
    config: &Config,
    context: Option<&Context>,
) -> anyhow::Result<Vec<Finding>> {
    let (bytes, shown) = read(file)?;
    kiln_lint::lint_in_context(&shown, &bytes, config, context)
        .map_err(|err| lint_error(err, &shown, &bytes))
}

/// The context of `file`: `dir` if given, else the Dockerfile's directory;
/// none for standard input without `dir`.
fn context_of(file: &Path, dir: Option<&Path>) -> anyhow::Result<Option<Context>> {
    let stdin = file == Path::new("-");
    let dir = match dir {
        Some(dir) => dir,
        None if stdin => return Ok(None),
        None => file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    };
    // Standard input has no `<name>.dockerignore` beside it (a path
    // without a file name has none).
    let dockerfile = if stdin { Path::new("") } else { file };
    read_context(dir, dockerfile).map(Some)
}

/// What the rules need of the context `dir` of `dockerfile`: its ignore
/// file, and every path the ignore file leaves, walked as the build's
/// transfer would (kiln-build's context view, BuildKit's rules): the
/// files and their bytes, and the heavy paths ([`HeavyKind`]) with theirs.
pub(crate) fn read_context(dir: &Path, dockerfile: &Path) -> anyhow::Result<Context> {
    let failed = || format!("reading the build context {}", dir.display());
    let build_context = BuildContext::open(dir, dockerfile).with_context(failed)?;
    let mut context = Context {
        ignore: build_context.ignore_file().map(|file| IgnoreFile {
            name: file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            patterns: build_context.ignore_patterns().clone(),
        }),
        ..Context::default()
    };
    let filter = CopyFilter::default();
    let roots = build_context.resolve(".").with_context(failed)?;
    // The heavy directory being walked: what is below it counts for it.
    let mut inside: Option<(String, usize)> = None;
    for root in &roots {
        for entry in build_context.walk(root, &filter) {
            let entry = entry.with_context(failed)?;
            let path = entry.context_path().to_string_lossy().into_owned();
            let is_file = entry.kind() == EntryKind::File;
            let size = if is_file { entry.metadata().len() } else { 0 };
            if is_file {
                context.files += 1;
                context.bytes += size;
            }
            if let Some((dir, index)) = &inside {
                if path
                    .strip_prefix(dir.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                {
                    context.heavy[*index].bytes += size;
                    continue;
                }
                inside = None;
            }
            let name = path.rsplit('/').next().unwrap_or(&path);
            let is_dir = entry.kind() == EntryKind::Dir;
            if let Some(kind) = HeavyKind::of(name, is_dir).filter(|_| is_dir || is_file) {
                if is_dir {
                    inside = Some((path.clone(), context.heavy.len()));
                }
                context.heavy.push(HeavyPath {
                    path,
                    kind,
                    bytes: size,
                });
            }
        }
    }
    Ok(context)
}

/// `--fix`: the file rewritten with its safe fixes (each said on stderr),
/// whole or not at all, its mode kept; then the findings left.
fn fix_file(
    file: &Path,
    config: &Config,
    context: Option<&Context>,
) -> anyhow::Result<Vec<Finding>> {
    let (bytes, shown) = read(file)?;
    let fixed = kiln_lint::fix_with(&shown, &bytes, config)
        .map_err(|err| lint_error(err, &shown, &bytes))?;
    for f in &fixed.fixed {
        eprintln!("fixed {}:{} {}: {}", f.file, f.line, f.rule, f.message);
    }
    if file == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(&fixed.text)?;
        out.flush()?;
    } else if fixed.text != bytes {
        replace(file, &fixed.text)?;
    }
    kiln_lint::lint_in_context(&shown, &fixed.text, config, context)
        .map_err(|err| lint_error(err, &shown, &fixed.text))
}

/// `path` now holds `bytes`: a temp file beside it, with its mode, renamed
/// over it.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let permissions = fs_err::metadata(path)?.permissions();
    crate::files::write_whole(path, bytes, permissions, "lint", "")
}

/// The bytes of `file` (`-`: standard input) and its name in findings.
fn read(file: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the Dockerfile from standard input")?;
        Ok((buf, "<stdin>".to_string()))
    } else {
        Ok((fs_err::read(file)?, file.display().to_string()))
    }
}

fn lint_error(err: LintError, shown: &str, bytes: &[u8]) -> anyhow::Error {
    match err {
        LintError::Parse { line, message } => SourceError::new(
            Path::new(shown),
            &String::from_utf8_lossy(bytes),
            Location {
                start_line: line,
                end_line: line,
            },
            message,
        )
        .into(),
        other => anyhow::Error::new(other).context(format!("linting {shown}")),
    }
}
