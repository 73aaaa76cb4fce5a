//! `kiln build`: the flags of `docker buildx build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use kiln_build::engine::{
    BuildError, BuildNetwork, BuildRequest, Engine, SecretSource, SecretSpec,
};
use kiln_build::watchdog::TAIL_LINES;
use kiln_image::media::{Compression, Format};
use kiln_image::{Platform, Reference};
use kiln_registry::push_image;
use kiln_sandbox::RuncExecutor;

use super::export::{Output, OutputCompression, parse_output_with, write_image};
use crate::context::Context;
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
  130  interrupted by SIGINT (Ctrl-C); 143 by SIGTERM. Steps are killed and cleaned up."
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
    /// Where the result goes: `type=oci|docker|local|registry|image,...` (repeatable).
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
    /// Run a RUN step that stalled, timed out or exited non-zero up to N more times, with
    /// backoff, each time from its clean parent.
    #[arg(long, value_name = "N", default_value_t = BuildRequest::DEFAULT_RETRIES)]
    retries: u32,
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

/// The layers' compression and level, from `--compression` and the
/// outputs' `compression=` and `compression-level=`. One build makes one
/// set of layers, so they must agree.
fn layer_compression(
    flag: Option<CompressionArg>,
    outputs: &[(&str, OutputCompression)],
) -> anyhow::Result<(Compression, Option<i32>)> {
    let mut compression = flag.map(|c| {
        let c = match c {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Uncompressed => Compression::None,
        };
        (c, "--compression".to_string())
    });
    let mut level: Option<(i32, String)> = None;
    for (spec, asked) in outputs {
        if let Some(c) = asked.compression {
            match &compression {
                Some((other, from)) if *other != c => bail!(
                    "--output {spec} asks for {} layers, {from} for {}: one build makes one set \
                     of layers",
                    c.name(),
                    other.name()
                ),
                _ => compression = Some((c, format!("--output {spec}"))),
            }
        }
        if let Some(l) = asked.level {
            match &level {
                Some((other, from)) if *other != l => {
                    bail!("--output {spec} asks for compression level {l}, {from} for {other}")
                }
                _ => level = Some((l, format!("--output {spec}"))),
            }
        }
    }
    // The engine checks the level against the codec before any step runs.
    Ok((
        compression.map_or(Compression::Gzip, |(c, _)| c),
        level.map(|(l, _)| l),
    ))
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

pub(crate) fn run(ctx: &Context, args: BuildArgs) -> anyhow::Result<ExitCode> {
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
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| super::parse_reference(t))
        .collect::<anyhow::Result<_>>()?;
    let mut outputs = Vec::new();
    let mut asked = Vec::new();
    for spec in &args.outputs {
        let (output, compression) = parse_output_with(spec)?;
        outputs.push(output);
        asked.push((spec.as_str(), compression));
    }
    let (compression, compression_level) = layer_compression(args.compression, &asked)?;
    if args.push {
        outputs.push(Output::Registry);
    }
    if outputs
        .iter()
        .any(|o| matches!(o, Output::Registry | Output::Image { push: true }))
        && tags.is_empty()
    {
        bail!("pushing needs a name: give one with -t/--tag");
    }

    let mut request = BuildRequest::new(
        args.context.clone(),
        dockerfile.clone(),
        dockerfile_text.clone(),
    );
    request.target = args.target.clone();
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
    request.epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    // `0` turns a limit off: the request reads it so.
    request.step_timeout = args.step_timeout;
    request.stall_timeout = Some(args.stall_timeout.into());
    request.retries = args.retries;

    let store = ctx.store()?;
    let runtime = ctx.runtime()?;
    let renderer = crate::render::Renderer::new(ctx.args.progress);
    let executor = Arc::new(RuncExecutor::new(store.root().join("runc")));
    let engine = Arc::new(Engine::new(
        store.clone(),
        // Base pulls print lines through the build's own view.
        ctx.client_with_notes(renderer.notes()),
        runtime.handle().clone(),
        executor,
        renderer.sink(),
    )?);
    let stop = install_signal_handlers(&engine)?;
    let result = engine.build(&request);
    renderer.finish();
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let signal = stop.load(Ordering::SeqCst);
            if signal != 0 {
                eprintln!("error: build cancelled");
                return Ok(ExitCode::from(128u8.saturating_add(signal as u8)));
            }
            // The watchdog's own exit codes; its diagnosis is already out.
            let code = match &e {
                BuildError::Stalled { .. } => EXIT_STALLED,
                BuildError::TimedOut { .. } => EXIT_TIMED_OUT,
                _ => return Err(build_error(&dockerfile, &dockerfile_text, e)),
            };
            eprintln!("error: {e}");
            if let Some(location) = e.location() {
                let text = String::from_utf8_lossy(&dockerfile_text);
                eprint!(
                    "{}",
                    SourceError::new(&dockerfile, &text, location, String::new()).excerpt()
                );
            }
            return Ok(ExitCode::from(code));
        }
    };
    if !matches!(ctx.args.progress, ProgressMode::Json | ProgressMode::Quiet) {
        for (step, attempts) in &result.attempts {
            eprintln!("step {step} needed {attempts} attempts");
        }
    }

    let name = tags.first().cloned();
    for tag in &tags {
        store.tag(tag, &result.target)?;
    }
    let export_name = name
        .clone()
        .unwrap_or_else(|| Reference::parse("kiln.local/build:latest").expect("a valid reference"));
    for output in &outputs {
        match output {
            Output::Oci { .. } | Output::Docker { .. } => {
                write_image(
                    &store,
                    output,
                    &export_name,
                    &result.target,
                    &result.images[0].platform,
                )?;
            }
            Output::Local { dir } => export_local(&store, &result, dir)?,
            Output::Registry | Output::Image { push: true } => {
                let client = ctx.client();
                for tag in &tags {
                    runtime.block_on(push_image(
                        &client,
                        &store,
                        tag,
                        tag,
                        kiln_registry::DEFAULT_CONCURRENCY,
                    ))?;
                    ctx.progress
                        .note(None, format!("pushed {}", tag.familiar()));
                }
            }
            Output::Image { push: false } => {}
        }
    }
    if let Some(path) = &args.iidfile {
        fs_err::write(path, result.target.digest.to_string())?;
    }
    if args.quiet {
        println!("{}", result.target.digest);
    }
    Ok(ExitCode::SUCCESS)
}

/// `type=local,dest=DIR`: the image's filesystem, flattened (one directory
/// per platform when there are several).
fn export_local(
    store: &kiln_image::Store,
    result: &kiln_build::engine::BuildResult,
    dir: &Path,
) -> anyhow::Result<()> {
    let multi = result.images.len() > 1;
    for image in &result.images {
        let dest = if multi {
            dir.join(image.platform.to_string().replace('/', "_"))
        } else {
            dir.to_path_buf()
        };
        fs_err::create_dir_all(&dest)?;
        let manifest = store.read_document::<kiln_image::document::Manifest>(&image.manifest)?;
        for layer in &manifest.value().layers {
            let blob = store.open_blob(&layer.digest)?;
            let compression = kiln_image::media::Compression::from_media_type(&layer.media_type)
                .unwrap_or(Compression::Gzip);
            let tar = kiln_image::compress::decompress(blob, compression)?;
            let opts =
                kiln_image::layer::ExtractOptions::new(kiln_image::layer::WhiteoutMode::Apply);
            kiln_image::layer::extract(tar, &dest, &opts)
                .with_context(|| format!("unpacking into {}", dest.display()))?;
        }
    }
    Ok(())
}

/// Ctrl-C and SIGTERM cancel the build: the running step is killed, its
/// mounts and snapshots cleaned up, and kiln exits 130 or 143. The signal
/// is taken on a thread of its own, so cancelling (which locks and talks to
/// runc) never runs in a signal handler.
fn install_signal_handlers(
    engine: &Arc<Engine>,
) -> anyhow::Result<Arc<std::sync::atomic::AtomicU32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let caught = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let engine = Arc::clone(engine);
    let flag = Arc::clone(&caught);
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            flag.store(signal as u32, Ordering::SeqCst);
            engine.cancel();
        }
    });
    Ok(caught)
}

/// A build error with the Dockerfile lines it is about.
fn build_error(dockerfile: &Path, text: &[u8], e: BuildError) -> anyhow::Error {
    match e.location() {
        Some(location) => SourceError::new(
            dockerfile,
            &String::from_utf8_lossy(text),
            location,
            e.to_string(),
        )
        .into(),
        None => anyhow::Error::new(e),
    }
}
