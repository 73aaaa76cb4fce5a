//! `kiln build`: the flags of `docker buildx build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use kiln_build::TAIL_LINES;
use kiln_build::{
    BuildError, BuildNetwork, BuildRequest, BuildResult, Engine, Event, EventSink,
    SOURCE_DATE_EPOCH, SecretSource, SecretSpec, StageImage,
};
use kiln_build::{CacheFrom, CacheTo, Dest, Encoding, Output, OutputKind};
use kiln_image::media::{Compression, Format};
use kiln_image::{Platform, Reference, Store};
use kiln_registry::push_descriptor;

use crate::build_report::{BuildInfo, BuildStatus, History, Outcome, Recorder};
use crate::context::{Context, Isolation, PullMirrors};
use crate::metadata::{Metadata, PlatformImage};
use crate::progress::ProgressMode;
use crate::report::SourceError;

/// What `kiln build --help` says after the flags: the watchdog's
/// per-step settings and the exit codes, which CI scripts branch on.
fn after_help() -> String {
    format!(
        "\
Every RUN step runs under a watchdog. A step that shows no progress (no output, no CPU,
no disk or network I/O in its whole process tree) for --stall-timeout, or that runs past
--step-timeout, is diagnosed (its process tree with states, wait channels, CPU times and
sockets, its last {TAIL_LINES} lines of output, any cache lock it waits for), killed, cleaned up,
and retried from its clean parent (--retries) or failed. A comment right above a RUN sets
these for that step:
  # kiln: timeout=20m stall=5m retries=3

Exit status:
  0    the image was built
  1    the build failed (a step exited non-zero, a bad Dockerfile, ...)
  3    a step stalled (no output, CPU or I/O for the stall timeout)
  4    a step ran past its step timeout
  130  interrupted by SIGINT (Ctrl-C); 143 by SIGTERM; 129 by SIGHUP. Steps are killed and cleaned up."
    )
}

/// Build an image from a Dockerfile.
#[derive(Args)]
#[command(after_help = after_help())]
pub(crate) struct BuildArgs {
    /// The build context directory.
    context: PathBuf,
    /// The Dockerfile [default: CONTEXT/Dockerfile]; `-` reads standard input.
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Name the image (repeatable).
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    target: Option<String>,
    /// A build argument (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Set a label on the image (`KEY=VALUE`, repeatable), over the Dockerfile's.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Target platforms, comma-separated or repeated [default: this machine's].
    #[arg(
        long = "platform",
        value_name = "OS/ARCH[/VARIANT]",
        value_delimiter = ','
    )]
    platforms: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=NAME[,src=FILE]` or `id=NAME,env=VAR`.
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,
    /// Network for RUN steps.
    #[arg(long, value_enum, default_value_t = NetworkArg::Default)]
    network: NetworkArg,
    /// Where the result goes: `type=oci|docker|local|registry|image,...` (repeatable);
    /// `type=registry,name=REPO,push-by-digest=true` pushes without a tag.
    #[arg(short, long = "output", value_name = "SPEC")]
    outputs: Vec<String>,
    /// Push the image to its registry (`--output type=registry`).
    #[arg(long)]
    push: bool,
    /// Accepted for compatibility: the image is always in kiln's store.
    #[arg(long)]
    load: bool,
    /// Run every step, ignoring the cache.
    #[arg(long)]
    no_cache: bool,
    /// Always look base images up in their registry.
    #[arg(long)]
    pull: bool,
    /// Write the image digest to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Write what was built and pushed as buildx does (`containerimage.digest`,
    /// `containerimage.descriptor`, `image.name`, ...; see docs/CI.md).
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Print only the image digest.
    #[arg(short, long)]
    quiet: bool,
    /// Layer compression (also `compression=` in `--output`, with `compression-level=`)
    /// [default: gzip].
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// Docker schema 2 media types instead of OCI.
    #[arg(long)]
    docker_media_types: bool,
    /// Kill a RUN step (each attempt) that runs longer than this, e.g. `20m`, `1h30m`
    /// [default: no limit].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    step_timeout: Option<Duration>,
    /// Kill a RUN step whose processes show no output, CPU or I/O for this long; `0` never.
    #[arg(long, value_name = "DURATION", default_value_t = BuildRequest::DEFAULT_STALL_TIMEOUT.into())]
    stall_timeout: humantime::Duration,
    /// How RUN steps are isolated: `runc` (namespaces and overlayfs; needs CAP_SYS_ADMIN),
    /// `chroot` (no mounts or namespaces: an unprivileged container; docs/ISOLATION.md), or
    /// `auto`: runc where kiln may mount, else chroot.
    #[arg(long, value_enum, default_value_t = Isolation::Auto)]
    pub(crate) isolation: Isolation,
    /// Run a RUN step that stalled, timed out or exited non-zero up to N more times, with
    /// backoff, each time from its clean parent.
    #[arg(long, value_name = "N", default_value_t = BuildRequest::DEFAULT_RETRIES)]
    retries: u32,
    /// Read cache entries from `type=registry,ref=REF` (a cache, or an image with an inline
    /// cache) or `type=local,src=DIR` (repeatable,
    /// tried in order; see docs/CACHE.md).
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// Write the build's cache entries to `type=registry,ref=REF`, `type=local,dest=DIR` or
    /// `type=inline` (the image's config)
    /// [`mode=min|max`, `ttl=`, `ignore-error=true`, `compression=`, `mounts=true` (and
    /// `mounts-max-size=2GiB`): RUN cache mounts' contents too] (repeatable).
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,
    /// Take stage NAME from the image `REPO:<its stage key>` when the registry has it, else
    /// build it and push it there (repeatable; see `kiln stage-key` and docs/CACHE.md).
    #[arg(long = "stage-image", value_name = "NAME=REPO")]
    stage_images: Vec<String>,
    /// Pull base images of REGISTRY (default Docker Hub) from MIRROR first, a host with an
    /// optional repository prefix (repeatable, tried in order, then REGISTRY itself;
    /// BuildKit's `[registry."docker.io"] mirrors`). Pushes and caches do not use it.
    #[arg(long = "registry-mirror", value_name = "[REGISTRY=]MIRROR[/PREFIX]")]
    pub(crate) registry_mirrors: Vec<String>,
    /// When every mirror of a registry fails, fail instead of pulling from the registry.
    #[arg(long, requires = "registry_mirrors")]
    pub(crate) skip_default_registry_fallback: bool,
    /// Run `kiln lint` on the Dockerfile first and print its findings; `--lint=error` also
    /// fails before building when one is at level error (docs/LINT.md).
    #[arg(long, value_enum, value_name = "LEVEL", num_args = 0..=1, require_equals = true,
          default_missing_value = "warn")]
    lint: Option<LintMode>,
    /// Write the build's report into DIR, failed or not: `report.json` (schema
    /// `kiln.report/v1`, docs/REPORT.md) and `report.html` (a timeline of stages and
    /// steps, one self-contained page). Every build's report is also kept in the store
    /// for `kiln history`.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// `kiln executor` without `--cleanup`: chroot isolation's trees are left
    /// to the container's end or the next command's sweep, not removed.
    #[arg(skip)]
    pub(crate) leave_trees: bool,
}

/// `--lint`: print the findings, or (`error`) fail on those at level error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LintMode {
    Warn,
    Error,
}

/// `--lint`: the Dockerfile's findings on stderr before anything is built
/// (under the hadolint configuration `kiln lint` would use, the build's
/// context known); with `--lint=error`, an error when one is at level
/// error. A Dockerfile or a context the linter cannot read is left to the
/// build, which says why.
fn lint_first(
    dockerfile: &Path,
    text: &[u8],
    context_dir: &Path,
    mode: LintMode,
) -> anyhow::Result<()> {
    let shown = dockerfile.display().to_string();
    let config = super::lint::find_config()?.unwrap_or_default();
    let context = super::lint::read_context(context_dir, dockerfile).ok();
    let Ok(findings) = kiln_lint::lint_in_context(&shown, text, &config, context.as_ref()) else {
        return Ok(());
    };
    eprint!("{}", kiln_lint::to_text(&findings));
    let errors = findings
        .iter()
        .filter(|f| f.severity == kiln_lint::Severity::Error)
        .count();
    if mode == LintMode::Error && errors > 0 {
        anyhow::bail!(
            "{shown}: {errors} lint finding{} at level error (--lint=error); nothing was built",
            if errors == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// `sink`, with BuildKit's InvalidBaseImagePlatform check made on the way:
/// when a stage's base image resolves to another OS or architecture than
/// the stage is built for, a warning (once per message) with BuildKit's
/// text, unless the Dockerfile's `# check=` directive (or the hadolint
/// configuration's `ignored`) turns the check off. The build goes on, as
/// BuildKit's does; the findings at level error (`# check=error=true`)
/// are noted in `errors`, which fail the build at its end, as BuildKit's
/// "lint violation found" does.
fn base_checks(
    dockerfile: &Path,
    text: &[u8],
    sink: EventSink,
    errors: Arc<std::sync::Mutex<Vec<kiln_lint::Finding>>>,
) -> EventSink {
    let shown = dockerfile.display().to_string();
    let text = text.to_vec();
    let config = super::lint::find_config()
        .ok()
        .flatten()
        .unwrap_or_default();
    let said = std::sync::Mutex::new(std::collections::HashSet::new());
    Arc::new(move |event: Event| {
        let finding = match &event {
            Event::StageBase {
                line,
                image,
                expected_platform,
                image_platform,
                ..
            } => {
                let parts = |p: &str| {
                    let mut parts = p.splitn(3, '/');
                    let os = parts.next().unwrap_or("");
                    let arch = parts.next().unwrap_or("");
                    let variant = parts.next().unwrap_or("");
                    (os.to_string(), arch.to_string(), variant.to_string())
                };
                let (e, a) = (parts(expected_platform), parts(image_platform));
                kiln_lint::base_platform_finding(
                    &shown,
                    &text,
                    &config,
                    image,
                    (&e.0, &e.1, &e.2),
                    (&a.0, &a.1, &a.2),
                    *line,
                )
            }
            _ => None,
        };
        sink(event);
        if let Some(f) = finding
            && said
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(f.message.clone())
        {
            sink(Event::Warning {
                message: format!("{}: {}", f.rule, f.message),
                line: Some(f.line),
            });
            if f.severity == kiln_lint::Severity::Error {
                errors.lock().unwrap_or_else(|e| e.into_inner()).push(f);
            }
        }
    })
}

/// The exit status of a build that a step's watchdog ended.
const EXIT_STALLED: u8 = 3;
const EXIT_TIMED_OUT: u8 = 4;

#[derive(Clone, Copy, ValueEnum)]
enum NetworkArg {
    Default,
    Host,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    Uncompressed,
}

/// The compression and level the build writes its layers in: `--compression`,
/// else what every output that names one agrees on (so that nothing is
/// converted on the way out), else gzip at its default level. Outputs that
/// ask for another get their layers converted at export.
fn build_compression(
    flag: Option<CompressionArg>,
    outputs: &[Output],
) -> (Compression, Option<i32>) {
    if let Some(c) = flag {
        let c = match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Uncompressed => Compression::None,
        };
        return (c, None);
    }
    let asked: Vec<(Compression, Option<i32>)> = outputs
        .iter()
        .filter(|o| o.compression.is_some() || o.level.is_some())
        .map(|o| (o.compression.unwrap_or(Compression::Gzip), o.level))
        .collect();
    match asked.split_first() {
        Some((first, rest)) if rest.iter().all(|a| a == first) => *first,
        _ => (Compression::Gzip, None),
    }
}

fn parse_build_arg(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => match std::env::var(s) {
            Ok(v) => Ok((s.to_string(), v)),
            Err(_) => bail!("--build-arg {s}: no value given and ${s} is not set"),
        },
    }
}

fn parse_secret(s: &str) -> anyhow::Result<SecretSpec> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for field in s.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(PathBuf::from(v)),
            "env" => env = Some(v.to_string()),
            "type" if v == "file" || v == "env" => {}
            other => bail!("--secret {s}: unknown key {other:?} (id, src, env)"),
        }
    }
    let id = id.with_context(|| format!("--secret {s}: id= is required"))?;
    let source = match (src, env) {
        (Some(path), None) => SecretSource::File(path),
        (None, Some(var)) => SecretSource::Env(var),
        // Docker: `--secret id=FOO` reads the env var FOO if set, else ./FOO.
        (None, None) if std::env::var(&id).is_ok() => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(PathBuf::from(&id)),
        (Some(_), Some(_)) => bail!("--secret {s}: give src= or env=, not both"),
    };
    Ok(SecretSpec { id, source })
}

/// An image name as given (`-t`, or `name=` of an output): the text, for
/// `image.name` in the metadata file, and the reference.
#[derive(Clone)]
struct Name {
    written: String,
    reference: Reference,
}

impl Name {
    fn parse(s: &str) -> anyhow::Result<Name> {
        Ok(Name {
            written: s.trim().to_string(),
            reference: super::parse_reference(s.trim())?,
        })
    }
}

/// The names a pushing or `type=image` output gives the image: the `-t`
/// tags when there are some (buildx puts them in place of `name=`), else
/// its own `name=`.
fn output_names(tags: &[Name], output: &Output) -> anyhow::Result<Vec<Name>> {
    if !tags.is_empty() {
        return Ok(tags.to_vec());
    }
    output.names.iter().map(|n| Name::parse(n)).collect()
}

/// Where an output pushing by digest goes: each name's repository (once),
/// at the image's digest, untagged.
fn digest_destinations(names: &[Name], digest: &kiln_image::Digest) -> Vec<Reference> {
    let mut out: Vec<Reference> = Vec::new();
    for name in names {
        let destination = Reference {
            tag: None,
            digest: Some(digest.clone()),
            ..name.reference.clone()
        };
        if !out.contains(&destination) {
            out.push(destination);
        }
    }
    out
}

/// `image.name` of the metadata file: the names as written, comma-joined;
/// pushed by digest, the repositories they name (as BuildKit pushes them).
fn image_name(names: &[Name], by_digest: bool) -> String {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let n = if by_digest {
            Reference {
                tag: None,
                digest: None,
                ..name.reference.clone()
            }
            .familiar()
        } else {
            name.written.clone()
        };
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out.join(",")
}

/// A `kiln build` command line read: the request, and where its result goes.
pub(crate) struct Parsed {
    pub(crate) request: BuildRequest,
    pub(crate) dockerfile: PathBuf,
    pub(crate) dockerfile_text: Vec<u8>,
    tags: Vec<Name>,
    outputs: Vec<Output>,
    build_encoding: Encoding,
}

/// Reads the flags into a request, checking all of them before anything
/// is built.
pub(crate) fn parse(args: &BuildArgs) -> anyhow::Result<Parsed> {
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let dockerfile_text = if dockerfile == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading the Dockerfile from standard input")?;
        buf
    } else {
        fs_err::read(&dockerfile)?
    };
    if !args.context.is_dir() {
        bail!(
            "build context {} is not a directory",
            args.context.display()
        );
    }
    let tags: Vec<Name> = args
        .tags
        .iter()
        .map(|t| Name::parse(t))
        .collect::<anyhow::Result<_>>()?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|spec| Output::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let (compression, compression_level) = build_compression(args.compression, &outputs);
    if args.push {
        outputs.push(Output::new(OutputKind::Registry));
    }
    if outputs
        .iter()
        .any(|o| o.pushes() && tags.is_empty() && o.names.is_empty())
    {
        bail!("pushing needs a name: give one with -t/--tag or name= in --output");
    }

    let mut request = BuildRequest::new(
        args.context.clone(),
        dockerfile.clone(),
        dockerfile_text.clone(),
    );
    request.target = args.target.clone();
    request.labels = args
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            // buildx: a label without `=` has an empty value.
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    request.build_args = args
        .build_args
        .iter()
        .map(|a| parse_build_arg(a))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    if !args.platforms.is_empty() {
        request.platforms = args
            .platforms
            .iter()
            .map(|p| Platform::parse(p).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?;
    }
    request.secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<_>>()?;
    request.network = match args.network {
        NetworkArg::None => BuildNetwork::None,
        NetworkArg::Default | NetworkArg::Host => BuildNetwork::Host,
    };
    request.no_cache = args.no_cache;
    request.pull = args.pull;
    request.compression = compression;
    request.compression_level = compression_level;
    request.format = if args.docker_media_types {
        Format::Docker
    } else {
        Format::Oci
    };
    // As buildx: the variable of the environment is the build arg, unless
    // --build-arg gives one.
    if let Ok(epoch) = std::env::var(SOURCE_DATE_EPOCH)
        && !request.build_args.contains_key(SOURCE_DATE_EPOCH)
    {
        request
            .build_args
            .insert(SOURCE_DATE_EPOCH.to_string(), epoch);
    }
    // Every output's encoding is checked before anything is built.
    let build_encoding = request.encoding()?;
    for output in &outputs {
        let e = output.encoding(&build_encoding);
        if let Some(level) = e.level {
            kiln_image::compress::check_level(e.compression, level)?;
        }
    }
    // `0` turns a limit off: the request reads it so.
    request.step_timeout = args.step_timeout;
    request.stall_timeout = Some(args.stall_timeout.into());
    request.retries = args.retries;
    request.cache_from = args
        .cache_from
        .iter()
        .map(|s| CacheFrom::parse(s))
        .collect::<Result<_, _>>()?;
    request.cache_to = args
        .cache_to
        .iter()
        .map(|s| CacheTo::parse(s))
        .collect::<Result<_, _>>()?;
    for to in &request.cache_to {
        if let kiln_build::CacheLocation::Local { dir, .. } = &to.location {
            crate::report::writes_to("the cache (--cache-to)", dir);
        }
        if let Some(level) = to.level {
            kiln_image::compress::check_level(
                to.compression.unwrap_or(build_encoding.compression),
                level,
            )?;
        }
    }
    request.stage_images = args
        .stage_images
        .iter()
        .map(|s| StageImage::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::Error::msg(e.message()))?;
    Ok(Parsed {
        request,
        dockerfile,
        dockerfile_text,
        tags,
        outputs,
        build_encoding,
    })
}

/// How a build ended without an error: built (the digest of the image
/// `--metadata-file` describes: the first pushed, else the store's), or
/// stopped with an exit status of its own (the watchdog's, a signal's) and
/// the error it printed.
pub(crate) enum Finished {
    Built(kiln_image::Digest),
    Stopped { code: u8, error: String },
}

pub(crate) fn run(ctx: &Context, args: BuildArgs) -> anyhow::Result<ExitCode> {
    Ok(match execute(ctx, &args)? {
        Finished::Built(_) => ExitCode::SUCCESS,
        Finished::Stopped { code, .. } => ExitCode::from(code),
    })
}

/// Builds and exports what `args` ask for (`kiln build`, and `kiln
/// executor` through the same flags), then keeps the build's report, built
/// or not.
pub(crate) fn execute(ctx: &Context, args: &BuildArgs) -> anyhow::Result<Finished> {
    let parsed = parse(args)?;
    if let Some(mode) = args.lint {
        lint_first(
            &parsed.dockerfile,
            &parsed.dockerfile_text,
            &args.context,
            mode,
        )?;
    }
    let recorder = Recorder::new(BuildInfo {
        dockerfile: parsed.dockerfile.clone(),
        context: args.context.clone(),
        tags: parsed.tags.iter().map(|t| t.written.clone()).collect(),
    });
    let finished = build_and_export(ctx, args, parsed, &recorder);
    keep_report(ctx, args, &recorder, finished)
}

/// Writes the report of a build that ended as `finished` says into
/// `--report`'s directory and the store's history, and hands `finished`
/// back. A report that cannot be written fails a build that succeeded; a
/// failed build's own error comes first.
fn keep_report(
    ctx: &Context,
    args: &BuildArgs,
    recorder: &Recorder,
    finished: anyhow::Result<Finished>,
) -> anyhow::Result<Finished> {
    let outcome = match &finished {
        Ok(Finished::Built(_)) => Outcome {
            status: BuildStatus::Succeeded,
            exit_code: 0,
            error: None,
        },
        Ok(Finished::Stopped { code, error }) => Outcome {
            status: match *code {
                EXIT_STALLED => BuildStatus::Stalled,
                EXIT_TIMED_OUT => BuildStatus::TimedOut,
                _ => BuildStatus::Cancelled,
            },
            exit_code: *code,
            error: Some(error.clone()),
        },
        Err(e) => Outcome {
            status: BuildStatus::Failed,
            exit_code: 1,
            error: Some(crate::report::error_text(e)),
        },
    };
    let report = recorder.finish(&outcome);
    let html = crate::build_report::render_html(&report);
    let shown =
        !matches!(ctx.args.progress, ProgressMode::Json | ProgressMode::Quiet) && !args.quiet;
    if let Err(e) = History::from_env(&ctx.root()).and_then(|h| h.save(&report, &html)) {
        eprintln!("warning: the build's report was not kept for `kiln history`: {e:#}");
    }
    if let Some(dir) = &args.report {
        match crate::build_report::write_report(dir, &report, &html) {
            Ok(()) if shown => eprintln!(
                "report: {} (kiln history show {})",
                dir.join(crate::build_report::HTML_FILE).display(),
                report.id
            ),
            Ok(()) => {}
            Err(e) if finished.is_ok() => return Err(e),
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    finished
}

/// The build itself and its outputs, every event also going to `recorder`.
fn build_and_export(
    ctx: &Context,
    args: &BuildArgs,
    parsed: Parsed,
    recorder: &Recorder,
) -> anyhow::Result<Finished> {
    let Parsed {
        request,
        dockerfile,
        dockerfile_text,
        tags,
        outputs,
        build_encoding,
    } = parsed;

    for output in &outputs {
        if let OutputKind::Oci {
            dest: Dest::Dir(p) | Dest::Tar(p),
        }
        | OutputKind::Docker {
            dest: Dest::Dir(p) | Dest::Tar(p),
        } = &output.kind
        {
            crate::report::writes_to("the output", p);
        }
    }
    let mirrors = PullMirrors::parse(&args.registry_mirrors, !args.skip_default_registry_fallback)?;
    let (isolation, why) = args.isolation.resolve()?;
    let store = ctx.store_for_engine()?;
    let runtime = ctx.runtime()?;
    if let Some(why) = why
        && !matches!(ctx.args.progress, ProgressMode::Json | ProgressMode::Quiet)
    {
        eprintln!("isolation: chroot, because {why} (docs/ISOLATION.md)");
    }
    if let Some(note) = crate::rootless::single_id_note()
        && !matches!(ctx.args.progress, ProgressMode::Json | ProgressMode::Quiet)
    {
        eprintln!("{note}");
    }
    let mut trees = None;
    let (snapshotter, executor): (
        Arc<dyn kiln_build::Snapshotter>,
        Arc<dyn kiln_sandbox::Executor>,
    ) = match isolation {
        Isolation::Chroot => {
            let tree = kiln_build::TreeSnapshotter::new(&store)
                .map_err(|e| build_error(&dockerfile, &dockerfile_text, e.into()))?;
            trees = Some(tree.clone());
            (Arc::new(tree), Arc::new(ctx.chroot_executor()))
        }
        // Rootless is runc over overlayfs too: in the user namespace, the
        // snapshotter mounts with `userxattr` and runc acts rootless.
        Isolation::Runc | Isolation::Rootless | Isolation::Auto => (
            Arc::new(
                kiln_build::OverlaySnapshotter::new(&store)
                    .map_err(|e| build_error(&dockerfile, &dockerfile_text, e.into()))?,
            ),
            Arc::new(ctx.executor()),
        ),
    };
    let renderer = crate::render::Renderer::new(ctx.args.progress);
    let check_errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    // An OCI tar output is begun while the build runs (tar_ahead.rs).
    let ahead = super::tar_ahead::TarAhead::begin(
        &store,
        &outputs,
        &build_encoding,
        request.platforms.len(),
    )?;
    let mut engine = Engine::with_snapshotter(
        store.clone(),
        snapshotter,
        // Base pulls print lines through the build's own view.
        ctx.client_with_notes(renderer.notes(), Some(recorder.transfers()), &mirrors),
        runtime.handle().clone(),
        executor,
        base_checks(
            &dockerfile,
            &dockerfile_text,
            recorder.tap(renderer.sink()),
            check_errors.clone(),
        ),
    )
    .map_err(|e| build_error(&dockerfile, &dockerfile_text, e))?;
    engine.layers_ahead = ahead.as_ref().map(super::tar_ahead::TarAhead::hook);
    let engine = Arc::new(engine);
    let stop = install_signal_handlers(&engine)?;
    let result = engine.build(&request);
    // Built or not, the output begun takes no more layers (a failed
    // build's is removed here).
    let mut ahead = ahead.map(super::tar_ahead::TarAhead::stop);
    if result.is_err() {
        ahead = None;
    }
    if let Some(trees) = trees {
        // The engine lives on in the signal handler; its trees need not.
        if args.leave_trees {
            trees.leave();
        } else {
            let _ = trees.close();
        }
    }
    renderer.finish();
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(stopped) = cancelled(&stop) {
                return Ok(stopped);
            }
            // The watchdog's own exit codes; its diagnosis is already out.
            let code = match &e {
                BuildError::Stalled { .. } => EXIT_STALLED,
                BuildError::TimedOut { .. } => EXIT_TIMED_OUT,
                _ => return Err(build_error(&dockerfile, &dockerfile_text, e)),
            };
            let mut error = e.message();
            eprintln!("error: {error}");
            if let Some(location) = e.location() {
                let text = String::from_utf8_lossy(&dockerfile_text);
                let excerpt =
                    SourceError::new(&dockerfile, &text, location, String::new()).excerpt();
                eprint!("{excerpt}");
                error = format!(
                    "{}:{}: {error}\n{}",
                    dockerfile.display(),
                    location.start_line,
                    excerpt.trim_end()
                );
            }
            return Ok(Finished::Stopped { code, error });
        }
    };
    // `# check=error=true`: BuildKit fails the build once it is done,
    // before anything is exported.
    let violated = std::mem::take(&mut *check_errors.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(first) = violated.first() {
        let mut rules: Vec<&str> = violated.iter().map(|f| f.rule).collect();
        rules.dedup();
        let text = String::from_utf8_lossy(&dockerfile_text);
        let location = kiln_dockerfile::Location {
            start_line: first.line,
            end_line: first.line,
        };
        return Err(SourceError::new(
            &dockerfile,
            &text,
            location,
            format!(
                "lint violation found for rules: {} (# check=error=true); nothing was exported",
                rules.join(", ")
            ),
        )
        .into());
    }
    if !matches!(ctx.args.progress, ProgressMode::Json | ProgressMode::Quiet) {
        for (step, attempts) in &result.attempts {
            eprintln!("step {step} needed {attempts} attempts");
        }
    }

    // The store's tags name the image in the encoding of a `type=image`
    // output when there is one, else in the build's.
    let stored = outputs
        .iter()
        .find(|o| matches!(o.kind, OutputKind::Image { .. }))
        .map_or(build_encoding, |o| o.encoding(&build_encoding));
    let (stored_target, stored_images) = encoded(&store, &result, &build_encoding, &stored)?;
    // `-t`, else the names of `type=image` outputs (not those pushed by
    // digest only: they name repositories, not tags).
    let mut store_names = tags.clone();
    if tags.is_empty() {
        for output in &outputs {
            if matches!(output.kind, OutputKind::Image { .. }) && !output.push_by_digest {
                store_names.extend(output_names(&tags, output)?);
            }
        }
    }
    for name in &store_names {
        store.tag(&name.reference, &stored_target)?;
    }
    // What --metadata-file describes: the first pushed image, else the
    // store's.
    let mut described = None;
    // The outputs read layers the build left in their registry: fetched
    // now with a client whose transfers show as progress.
    ctx.fetch_layers_observed(&store, &runtime, Some(recorder.transfers()));
    let export_name = store_names
        .first()
        .map(|n| n.reference.clone())
        .unwrap_or_else(|| Reference::parse("kiln.local/build:latest").expect("a valid reference"));
    for output in &outputs {
        // A signal since the build ended stops kiln before its next output
        // (an OCI tar begun during the build is removed).
        if let Some(stopped) = cancelled(&stop) {
            return Ok(stopped);
        }
        let encoding = output.encoding(&build_encoding);
        let (target, images) = encoded(&store, &result, &build_encoding, &encoding)?;
        match &output.kind {
            // How the blob bytes were copied is for tests and benchmarks.
            OutputKind::Oci { dest } => match ahead.take() {
                Some((begun, Ok(written))) => {
                    begun.finish(&store, &export_name, &target)?;
                    if written > 0 {
                        ctx.progress.note(
                            None,
                            format!(
                                "{written} blobs of the output were written while the build ran"
                            ),
                        );
                    }
                }
                // Not begun, or writing ahead failed: that file goes, and
                // the whole export from the start gives the real error if
                // there still is one.
                failed => {
                    drop(failed);
                    kiln_build::write_oci(&store, dest, &export_name, &target)?;
                }
            },
            OutputKind::Docker { dest } => {
                kiln_build::write_docker(&store, dest, &export_name, &target, &images[0].platform)?;
            }
            OutputKind::Local { dir } => {
                kiln_build::write_local(&store, &images, dir, encoding.epoch)?
            }
            OutputKind::Registry | OutputKind::Image { push: true } => {
                let client = ctx.client_observed(Some(recorder.transfers()));
                let names = output_names(&tags, output)?;
                let destinations = if output.push_by_digest {
                    digest_destinations(&names, &target.digest)
                } else {
                    names.iter().map(|n| n.reference.clone()).collect()
                };
                for destination in &destinations {
                    // A push waiting on a registry (retries of a minute
                    // each) ends at a signal.
                    let pushed = runtime.block_on(until_signal(
                        &stop,
                        push_descriptor(
                            &client,
                            &store,
                            &target,
                            destination,
                            destination,
                            kiln_registry::DEFAULT_CONCURRENCY,
                        ),
                    ));
                    match pushed {
                        Some(pushed) => pushed?,
                        None => return Ok(cancelled(&stop).expect("a signal was caught")),
                    };
                    ctx.progress
                        .note(None, format!("pushed {}", destination.familiar()));
                }
                if described.is_none() {
                    described = Some((
                        target.clone(),
                        images.clone(),
                        Some(image_name(&names, output.push_by_digest)),
                    ));
                }
            }
            OutputKind::Image { push: false } => {}
        }
    }
    let described_digest = described
        .as_ref()
        .map_or(&stored_target.digest, |(target, _, _)| &target.digest)
        .clone();
    if let Some(path) = &args.metadata_file {
        let (target, images, names) = match described {
            Some(pushed) => pushed,
            None => (
                stored_target.clone(),
                stored_images,
                (!store_names.is_empty()).then(|| image_name(&store_names, false)),
            ),
        };
        let images = images
            .iter()
            .map(|image| {
                let manifest =
                    store.read_document::<kiln_image::document::Manifest>(&image.manifest)?;
                Ok(PlatformImage {
                    platform: image.platform.clone(),
                    manifest: image.manifest.clone(),
                    config: manifest.value().config.digest.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Metadata::of_build(&target, &images, names).write(path)?;
    }
    let result_digest = &stored_target.digest;
    if let Some(path) = &args.iidfile {
        fs_err::write(path, result_digest.to_string())?;
    }
    if args.quiet {
        println!("{result_digest}");
    }
    Ok(Finished::Built(described_digest))
}

/// The build's image in `encoding`: as it is when that is the build's own,
/// else encoded (converted layers are recorded, so this is cheap twice).
fn encoded(
    store: &Store,
    result: &BuildResult,
    build: &Encoding,
    encoding: &Encoding,
) -> anyhow::Result<(
    kiln_image::document::Descriptor,
    Vec<kiln_build::BuiltImage>,
)> {
    if encoding == build {
        return Ok((result.target.clone(), result.images.clone()));
    }
    Ok(kiln_build::encode_image(
        store,
        &result.target,
        &result.images,
        encoding,
    )?)
}

/// How kiln ends once a signal was caught (`stop`, set by the handler of
/// [`install_signal_handlers`]); `None` while none was.
fn cancelled(stop: &std::sync::atomic::AtomicU32) -> Option<Finished> {
    let signal = stop.load(Ordering::SeqCst);
    (signal != 0).then(|| {
        eprintln!("error: build cancelled");
        Finished::Stopped {
            code: 128u8.saturating_add(signal as u8),
            error: format!("build cancelled (signal {signal})"),
        }
    })
}

/// `work` until it ends, or `None` once a signal was caught (looked at
/// every 50 ms); `work` is dropped then, whatever it was doing.
async fn until_signal<T>(
    stop: &std::sync::atomic::AtomicU32,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let caught = async {
        while stop.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        done = work => Some(done),
        () = caught => None,
    }
}

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal or ssh session) cancel
/// the build: the running step is killed, its mounts and snapshots cleaned
/// up, and kiln exits 130, 143 or 129. The layers of the steps that ran
/// are still written (so the next build reuses them); a second signal
/// stops those too. The signal is taken on a thread of its own, so
/// cancelling (which locks and talks to runc) never runs in a signal
/// handler.
fn install_signal_handlers(
    engine: &Arc<Engine>,
) -> anyhow::Result<Arc<std::sync::atomic::AtomicU32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let caught = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let engine = Arc::clone(engine);
    let flag = Arc::clone(&caught);
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if let Some(signal) = signals.next() {
            flag.store(signal as u32, Ordering::SeqCst);
            engine.cancel();
            let writing = engine.layers_being_written();
            if writing > 0 {
                let (layers, them) = if writing == 1 {
                    ("layer is", "it")
                } else {
                    ("layers are", "them")
                };
                eprintln!(
                    "kiln: cancelling; {writing} {layers} still being written and kept \
                     for the next build (signal again to drop {them})"
                );
            }
        }
        if signals.next().is_some() {
            engine.cancel_now();
        }
    });
    Ok(caught)
}

/// A build error with the Dockerfile lines it is about. Its message has
/// every cause once (anyhow's `{:#}` would repeat the ones an error's own
/// text already holds).
pub(crate) fn build_error(dockerfile: &Path, text: &[u8], e: BuildError) -> anyhow::Error {
    match e.location() {
        Some(location) => SourceError::new(
            dockerfile,
            &String::from_utf8_lossy(text),
            location,
            e.message(),
        )
        .into(),
        None => anyhow::Error::msg(e.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Name> {
        list.iter().map(|n| Name::parse(n).unwrap()).collect()
    }

    fn written(list: &[Name]) -> Vec<&str> {
        list.iter().map(|n| n.written.as_str()).collect()
    }

    #[test]
    fn tags_take_the_place_of_an_outputs_names_as_in_buildx() {
        let output = Output::parse(r#"type=registry,"name=r.example/a:1,r.example/b""#).unwrap();
        let own = output_names(&[], &output).unwrap();
        assert_eq!(written(&own), ["r.example/a:1", "r.example/b"]);
        let tags = names(&["r.example/t:2"]);
        assert_eq!(
            written(&output_names(&tags, &output).unwrap()),
            ["r.example/t:2"]
        );
    }

    #[test]
    fn a_push_by_digest_goes_to_each_repository_once_untagged() {
        let digest = kiln_image::Digest::of(b"image");
        let list = names(&[
            "localhost:5000/app:1",
            "localhost:5000/app:2",
            "localhost:5000/other",
        ]);
        let to: Vec<String> = digest_destinations(&list, &digest)
            .iter()
            .map(Reference::to_string)
            .collect();
        assert_eq!(
            to,
            [
                format!("localhost:5000/app@{digest}"),
                format!("localhost:5000/other@{digest}")
            ]
        );
        // image.name: the names as written, or the repositories.
        assert_eq!(
            image_name(&list, false),
            "localhost:5000/app:1,localhost:5000/app:2,localhost:5000/other"
        );
        assert_eq!(
            image_name(&list, true),
            "localhost:5000/app,localhost:5000/other"
        );
        assert_eq!(image_name(&names(&["alpine:3"]), true), "alpine");
    }
}
