//! `kiln run`: an image from the store, run in the sandbox RUN steps run
//! in, so that a built image can be smoke-tested without Docker.
//!
//! The image's layers are unpacked into snapshots (once; later runs and
//! builds reuse them), a writable overlay is mounted on them, and the
//! command runs there through runc. The overlay is thrown away after the
//! run, whatever happens: `kiln run` never changes an image.
//!
//! As `docker run` does, the command is the image's ENTRYPOINT followed by
//! its CMD; `--entrypoint` replaces the ENTRYPOINT and drops the CMD, and
//! arguments after the image replace the CMD. The exit code is the
//! command's (128 + N if signal N killed it); kiln's own failures exit 125,
//! a command that cannot be found 127, one that cannot be executed 126.
//! SIGINT, SIGTERM and SIGHUP end the run and exit 128 + the signal.

use std::io::Write as _;

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_build::UnpackEvent;
use kiln_build::{ActiveSnapshot, OverlaySnapshotter, Snapshotter};
use kiln_build::{ContainerOptions, StartFailure};
use kiln_image::document::ContainerConfig;
use kiln_image::{Digest, Platform};
use kiln_sandbox::{Executor as _, NetworkMode, OutputSink, RunControl, SandboxError, Stream};

use crate::commands::pull::parse_platform;
use crate::context::Context;
use crate::progress::human_bytes;
use crate::report;

/// Run a command in an image from the store, in the sandbox of RUN steps.
#[derive(Args)]
pub(crate) struct RunArgs {
    /// Accepted for `docker run` habits: what the command changes is
    /// always thrown away.
    #[arg(long)]
    rm: bool,
    /// The user (`name`, `uid`, `name:group`, `uid:gid`) instead of the image's.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// The working directory (absolute) instead of the image's; created if missing.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Set an environment variable; `KEY` alone passes kiln's own value on.
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// The network: the host's, or none (loopback only).
    #[arg(long, value_enum, default_value_t = Network::Host)]
    network: Network,
    /// The command to run instead of the image's ENTRYPOINT (its CMD is
    /// then dropped too); `""` clears the ENTRYPOINT.
    #[arg(long, value_name = "COMMAND")]
    entrypoint: Option<String>,
    /// The container's hostname [default: a random id].
    #[arg(long)]
    hostname: Option<String>,
    /// The platform to pick from a multi-platform image [default: this
    /// machine's]. Another architecture runs through QEMU, if binfmt has
    /// it registered.
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
    /// The image: name[:tag], name@digest, or an image ID (prefix).
    image: String,
    /// The command and its arguments, replacing the image's CMD.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Network {
    Host,
    None,
}

/// `docker run`'s codes for failures that are not the command's.
const EXIT_KILN_FAILED: u8 = 125;
const EXIT_CANNOT_EXECUTE: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

// signal(7), the same on every Linux architecture.
const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

pub(crate) fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    match run_image(ctx, &args) {
        Ok(code) => Ok(code),
        Err(err) => {
            report::print_error(&err);
            let code = match err.downcast_ref::<SandboxError>() {
                Some(SandboxError::Start { stderr, .. }) => match StartFailure::of(stderr) {
                    StartFailure::NotFound => EXIT_NOT_FOUND,
                    StartFailure::NotExecutable => EXIT_CANNOT_EXECUTE,
                    StartFailure::Other => EXIT_KILN_FAILED,
                },
                _ => EXIT_KILN_FAILED,
            };
            Ok(ExitCode::from(code))
        }
    }
}

fn run_image(ctx: &Context, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let control = RunControl::new();
    let interrupts = Interrupts::install(control.clone())?;

    let store = ctx.store()?;
    let runtime = ctx.runtime()?;
    ctx.fetch_layers(&store, &runtime);
    let (name, descriptor) = kiln_build::find_image(&store, &args.image)?;
    let image = kiln_build::select_image(&store, &name, &descriptor, args.platform.as_ref())?;
    if image.emulated_by.is_some() {
        ctx.progress.note(
            None,
            format!(
                "{name} is an image for {}: running it under QEMU emulation",
                image.config.platform()
            ),
        );
    }
    let config = image.config.config.clone().unwrap_or_default();
    let argv = kiln_build::container_command(&config, args.entrypoint.as_deref(), &args.command)
        .ok_or_else(|| kiln_build::ContainerError::NoCommand {
            name: args.image.clone(),
        })?;
    let layers = kiln_build::image_layers(&store, &name, &image)?;

    // What killed runs left was swept when the store was opened.
    let snapshotter = OverlaySnapshotter::new(&store)?;
    let on_unpack = |event: UnpackEvent<'_>| {
        if let UnpackEvent::Started { layer, .. } = event {
            ctx.progress.note(
                None,
                format!(
                    "unpacking layer {} ({})",
                    short(&layer.blob.digest),
                    human_bytes(layer.blob.size)
                ),
            );
        }
    };
    let parents = snapshotter
        .prepare_with(&layers, &on_unpack)
        .with_context(|| format!("unpacking the layers of {name}"))?;

    let id = kiln_build::container_id();
    // From here on a signal cancels the run, which then cleans up.
    let active =
        interrupts.while_active(|| snapshotter.activate(&parents, &format!("run-{id}")))?;
    let result = run_in(ctx, args, &config, argv, &id, &*active, &control);
    let discarded = active
        .discard()
        .context("removing the container's root filesystem");
    let exit = result?;
    discarded?;

    if let Some(signal) = interrupts.received() {
        return Ok(ExitCode::from(128 + signal as u8));
    }
    Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(u8::MAX)))
}

/// Runs `argv` in the mounted root of `active`.
fn run_in(
    ctx: &Context,
    args: &RunArgs,
    config: &ContainerConfig,
    argv: Vec<String>,
    id: &str,
    active: &dyn ActiveSnapshot,
    control: &RunControl,
) -> anyhow::Result<kiln_sandbox::ExitInfo> {
    let opts = ContainerOptions {
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        env: args.env.clone(),
        hostname: args.hostname.clone(),
        network: match args.network {
            Network::Host => NetworkMode::Host,
            Network::None => NetworkMode::None,
        },
    };
    let spec = kiln_build::container_spec(active.root(), config, argv, &opts, id, |key| {
        std::env::var(key).ok()
    })?;
    // Where `kiln build` keeps its runs too, with the same guardian.
    Ok(ctx.executor().run(&spec, &PassThrough, control)?)
}

/// `sha256:0123456789ab`.
fn short(digest: &Digest) -> String {
    format!("sha256:{}", &digest.hex()[..12])
}

/// The command's output, passed on as it comes (not line by line: a
/// progress bar drawn with `\r` shows as it is drawn).
struct PassThrough;

impl OutputSink for PassThrough {
    fn write(&self, stream: Stream, data: &[u8]) {
        // A closed stdout must not stop the run; the command sees EPIPE
        // only if it writes to its own closed pipe, never because of us.
        let _ = match stream {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush())
            }
            Stream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(data).and_then(|()| err.flush())
            }
        };
    }
}

/// What a signal does, which depends on how far the run got.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing to clean up (unpacking is safe to stop at any point, see
    /// the snapshotter): exit at once.
    Preparing,
    /// A root is mounted: cancel the run, so that it is cleaned up.
    Active,
}

/// SIGINT, SIGTERM and SIGHUP, caught for the whole of `kiln run`.
struct Interrupts {
    received: Arc<AtomicI32>,
    phase: Arc<Mutex<Phase>>,
    // Runs the task that waits for the signals.
    _runtime: tokio::runtime::Runtime,
}

impl Interrupts {
    fn install(control: RunControl) -> anyhow::Result<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kiln-signals")
            .enable_all()
            .build()
            .context("starting the signal handler")?;
        // Registered here, before anything is mounted, so no signal can
        // find kiln with the default action (death) and a mount to leave.
        let (mut int, mut term, mut hup) = runtime
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                ))
            })
            .context("installing the signal handlers")?;
        let received = Arc::new(AtomicI32::new(0));
        let phase = Arc::new(Mutex::new(Phase::Preparing));
        {
            let received = Arc::clone(&received);
            let phase = Arc::clone(&phase);
            runtime.spawn(async move {
                loop {
                    let signal = tokio::select! {
                        _ = int.recv() => SIGINT,
                        _ = term.recv() => SIGTERM,
                        _ = hup.recv() => SIGHUP,
                    };
                    let _ =
                        received.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
                    let phase = *phase.lock().unwrap_or_else(|e| e.into_inner());
                    match phase {
                        Phase::Preparing => std::process::exit(128 + signal),
                        Phase::Active => control.cancel(),
                    }
                }
            });
        }
        Ok(Interrupts {
            received,
            phase,
            _runtime: runtime,
        })
    }

    /// Runs `f`, which mounts something, after which signals cancel rather
    /// than exit.
    fn while_active<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = Phase::Active;
        drop(phase);
        f()
    }

    /// The first signal received, if any.
    fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}
