//! `kiln executor`: Kaniko's command line (`/kaniko/executor`), read into
//! a plan of `kiln build` flags ([`plan`], no I/O) and run through `kiln
//! build`'s own path; the context fetched first ([`source`]), the digest
//! files written after.

mod plan;
mod source;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser};

use super::build::{BuildArgs, Finished};
use crate::context::{Context, GlobalArgs};

/// Temp dirs of `kiln executor` under the store (an unpacked or cloned
/// context); a crashed run's are swept by the next.
const SCRATCH_PREFIX: &str = "executor-";

/// Parse a Go `strconv.ParseBool` value, as Kaniko's flags take them
/// (`--cache`, `--cache=true`, `--cache=0`).
fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// Build an image as Kaniko's executor does, with Kaniko's flags and
/// defaults (docs/KANIKO.md maps each one). Also run when kiln is invoked
/// as `executor` (`/kaniko/executor`).
#[derive(Args, Debug)]
#[command(args_override_self = true)]
pub(crate) struct ExecutorArgs {
    /// Path to the Dockerfile, as given, else inside the context.
    #[arg(short = 'f', long, default_value = "Dockerfile", value_name = "PATH")]
    pub(crate) dockerfile: String,
    /// The build context: a path, `dir://PATH`, `tar://FILE.tar.gz`, `tar://stdin`,
    /// `git://HOST/REPO.git#REF#COMMIT` or `git:///PATH#REF`.
    #[arg(
        short = 'c',
        long,
        default_value = "/workspace/",
        value_name = "CONTEXT"
    )]
    pub(crate) context: String,
    /// A directory inside the context to build from.
    #[arg(long, value_name = "PATH")]
    pub(crate) context_sub_path: Option<String>,
    /// Where to push the image, `REPO[:TAG]` (repeatable).
    #[arg(short = 'd', long = "destination", value_name = "IMAGE")]
    pub(crate) destinations: Vec<String>,
    /// Build without pushing.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) no_push: Option<bool>,
    /// Keep the cache to itself: read it, write nothing to it.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) no_push_cache: Option<bool>,
    /// Also write the image as a docker archive (`docker load`).
    #[arg(long, alias = "tarPath", value_name = "FILE")]
    pub(crate) tar_path: Option<PathBuf>,
    /// Also write the image as an OCI image layout directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) oci_layout_path: Option<PathBuf>,
    /// Write the image's digest (`sha256:...`) to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) digest_file: Option<PathBuf>,
    /// Write `REPO@sha256:...`, a line per destination, to this file.
    #[arg(long = "image-name-with-digest-file", value_name = "FILE")]
    pub(crate) image_name_digest_file: Option<PathBuf>,
    /// Write `REPO:TAG@sha256:...`, a line per destination, to this file.
    #[arg(long = "image-name-tag-with-digest-file", value_name = "FILE")]
    pub(crate) image_name_tag_digest_file: Option<PathBuf>,
    /// A build argument, `KEY=VALUE` or `KEY` (its value from the environment) (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub(crate) build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// A label on the image, `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// The platform to build for [default: this machine's].
    #[arg(long, alias = "customPlatform", value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) custom_platform: Option<String>,
    /// Kaniko builds every stage unless true; kiln builds only what the target needs.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) skip_unused_stages: Option<bool>,
    /// Times out of the image: created at 1970-01-01, file times clamped to it.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) reproducible: Option<bool>,
    /// Read and write the build cache in the registry (`--cache-repo`).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) cache: Option<bool>,
    /// The cache's repository [default: the first destination's repository + `/cache`];
    /// `oci:DIR` a directory.
    #[arg(long, value_name = "REPO")]
    pub(crate) cache_repo: Option<String>,
    /// How long cache entries live, a Go duration.
    #[arg(long, default_value = "336h", value_name = "DURATION")]
    pub(crate) cache_ttl: String,
    /// Kaniko's base image cache; kiln keeps base images in its store.
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// kiln caches COPY steps always.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) cache_copy_layers: Option<bool>,
    /// kiln caches RUN steps always.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) cache_run_layers: Option<bool>,
    /// Layer compression: gzip or zstd.
    #[arg(long, value_name = "ALGORITHM")]
    pub(crate) compression: Option<String>,
    /// Compression level; -1 the algorithm's default.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    pub(crate) compression_level: i32,
    /// Push over plain HTTP (or unverified TLS) to the destinations' registries.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) insecure: Option<bool>,
    /// Pull over plain HTTP (or unverified TLS) from any registry.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) insecure_pull: Option<bool>,
    /// Push without verifying the destinations' TLS certificates.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) skip_tls_verify: Option<bool>,
    /// Pull without verifying TLS certificates.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) skip_tls_verify_pull: Option<bool>,
    /// A registry whose TLS certificate is not verified (repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) skip_tls_verify_registry: Vec<String>,
    /// A CA certificate to trust, `HOST=FILE` (repeatable; kiln trusts it for every registry).
    #[arg(long, value_name = "HOST=FILE")]
    pub(crate) registry_certificate: Vec<String>,
    /// A mirror of Docker Hub that pulls try first, `HOST[/PREFIX]` (repeatable, in order).
    #[arg(long, value_name = "HOST[/PREFIX]")]
    pub(crate) registry_mirror: Vec<String>,
    /// Mirrors of any registry that pulls try first, `REGISTRY=MIRROR[;REGISTRY=MIRROR...]`
    /// (repeatable, in order).
    #[arg(long, value_name = "REGISTRY=MIRROR")]
    pub(crate) registry_map: Vec<String>,
    /// When every mirror of a registry fails, fail instead of pulling from the registry.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) skip_default_registry_fallback: Option<bool>,
    /// Retries of a failed push.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) push_retry: u32,
    /// Retries of a failed base image download.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) image_download_retry: u32,
    /// Retries of a failed base image extraction.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) image_fs_extract_retry: u32,
    /// Paths Kaniko leaves out of its snapshots (repeatable); kiln's steps run in a container.
    #[arg(long, value_name = "PATH")]
    pub(crate) ignore_path: Vec<String>,
    /// Kaniko leaves /var/run out of its snapshots; kiln's steps run in a container.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) ignore_var_run: Option<bool>,
    /// Kaniko's working directory; kiln works in its store (`--root`).
    #[arg(long, value_name = "DIR")]
    pub(crate) kaniko_dir: Option<PathBuf>,
    /// Remove the steps' trees (chroot isolation) before exiting, instead of leaving them
    /// to the container's end (kiln never changes the filesystem it runs in).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) cleanup: Option<bool>,
    /// Kaniko refuses to run outside a container without it; kiln runs anywhere.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) force: Option<bool>,
    /// Kaniko checks push access first; kiln's first push does.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) skip_push_permission_check: Option<bool>,
    /// Log level: panic, fatal, error, warn, info, debug, trace.
    #[arg(short = 'v', long, default_value = "info", value_name = "LEVEL")]
    pub(crate) verbosity: String,
    /// Log format: text (plain progress), color (the terminal's), json (one event a line).
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<String>,
    /// Timestamps in log lines (kiln's plain lines carry each step's time instead).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) log_timestamp: Option<bool>,
    /// Kaniko's snapshot method; kiln's layers are overlayfs diffs.
    #[arg(long, alias = "snapshotMode", value_name = "MODE")]
    pub(crate) snapshot_mode: Option<String>,
    /// Kaniko's other RUN implementation; kiln has one.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) use_new_run: Option<bool>,
    /// One layer for the whole build in Kaniko; kiln makes one per step.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) single_snapshot: Option<bool>,
    /// How Kaniko stores cached layers; kiln's cache holds them as pushed.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool)]
    pub(crate) compressed_caching: Option<bool>,
    /// kiln's own, as `kiln build`'s: kill a RUN step (each attempt) that runs longer than
    /// this, e.g. `20m` [default: no limit].
    #[arg(long, value_name = "DURATION")]
    pub(crate) step_timeout: Option<String>,
    /// kiln's own, as `kiln build`'s: kill a RUN step whose processes show no output, CPU
    /// or I/O for this long; `0` never [default: 10m].
    #[arg(long, value_name = "DURATION")]
    pub(crate) stall_timeout: Option<String>,
    /// kiln's own, as `kiln build`'s: run a RUN step that stalled, timed out or failed up to
    /// N more times, each from its clean parent.
    #[arg(long, value_name = "N")]
    pub(crate) retries: Option<u32>,
    /// kiln's own: how RUN steps are isolated, `auto` (runc where kiln may mount, else
    /// chroot, as in an unprivileged pod; rootless for a normal user), `runc`, `chroot`
    /// or `rootless` (docs/ISOLATION.md).
    #[arg(long, default_value = "auto", value_name = "MODE")]
    pub(crate) isolation: String,
    /// Print the plan (the `kiln build` flags, files, notes) as JSON and build nothing.
    #[arg(long)]
    pub(crate) print_plan: bool,
}

/// kiln invoked as `executor`: Kaniko's command line is all there is.
#[derive(Parser)]
#[command(name = "executor", version, about = "kiln, as Kaniko's executor", long_about = None)]
struct ExecutorCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: ExecutorArgs,
}

/// Whether this process was started as `executor` (`/kaniko/executor`, a
/// symlink or copy of kiln).
pub(crate) fn invoked_as_executor(argv0: Option<&OsString>) -> bool {
    argv0
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|name| name == "executor")
}

/// `main` for kiln invoked as `executor`. As Kaniko: 1 on any error,
/// usage errors included.
pub(crate) fn main_as_executor() -> ExitCode {
    let cli = match ExecutorCli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let ctx = Context::new(cli.global);
    match run(&ctx, cli.args) {
        Ok(code) => code,
        Err(err) => {
            crate::report::print_error(&err);
            ExitCode::FAILURE
        }
    }
}

/// A command line clap refused, as Kaniko's exit status (1) and, for an
/// unknown flag, kiln's "did you mean" line.
pub(crate) fn usage_error(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        // --help, --version.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::UnknownArgument
        && let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg)
    {
        let flag = flag.split('=').next().unwrap_or(flag);
        let mut line = format!("error: unknown flag {flag}");
        let like = match e.get(ContextKind::SuggestedArg) {
            Some(ContextValue::String(like)) => Some(like.as_str()),
            Some(ContextValue::Strings(like)) => like.first().map(String::as_str),
            _ => None,
        };
        if let Some(like) = like {
            line.push_str(&format!(" (did you mean {like}?)"));
        }
        let _ = writeln!(
            std::io::stderr(),
            "{line}\nsee --help (docs/KANIKO.md maps every Kaniko flag)"
        );
    } else {
        let _ = e.print();
    }
    ExitCode::FAILURE
}

/// `kiln build`'s flags read by clap, as the plan spells them.
#[derive(Parser)]
#[command(name = "kiln build")]
struct BuildCli {
    #[command(flatten)]
    args: BuildArgs,
}

pub(crate) fn run(ctx: &Context, args: ExecutorArgs) -> anyhow::Result<ExitCode> {
    let plan = plan::plan(&args, &|k| std::env::var(k).ok())?;
    if args.print_plan {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    if !plan.quiet {
        for note in &plan.notes {
            eprintln!("info: {note}");
        }
    }
    let ctx = Context::new(plan.global_args(ctx.args.clone()));
    let root = ctx.root();
    // A crashed executor's unpacked contexts.
    let _ = kiln_fs::sweep(&root, SCRATCH_PREFIX);
    let scratch = kiln_fs::OwnedDir::create(&root, SCRATCH_PREFIX)
        .with_context(|| format!("making a temp dir in {}", root.display()))?;
    let mut context = source::fetch(&plan.context, scratch.path())?;
    if let Some(sub) = &plan.context_sub_path {
        context = context.join(sub);
    }
    if !context.is_dir() {
        anyhow::bail!("build context {} is not a directory", context.display());
    }
    let dockerfile = plan::dockerfile_path(&plan.dockerfile, &context)?;
    let mut argv: Vec<OsString> = vec!["kiln build".into()];
    argv.extend(plan.build.iter().map(OsString::from));
    argv.push("--file".into());
    argv.push(dockerfile.into());
    argv.push(context.into());
    let mut build = BuildCli::try_parse_from(argv)
        .map_err(|e| anyhow::anyhow!("the kiln build flags of this plan: {e}"))?;
    // As Kaniko, which leaves its filesystem as the build made it unless
    // --cleanup: the steps' trees go with the container.
    build.args.leave_trees = !plan.cleanup;
    let result = super::build::execute(&ctx, &build.args);
    drop(scratch);
    match result? {
        Finished::Built(digest) => {
            plan.write_digest_files(&digest)?;
            Ok(ExitCode::SUCCESS)
        }
        Finished::Stopped { code, .. } => Ok(ExitCode::from(code)),
    }
}
