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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, ValueEnum};
use kiln_build::snapshot::{Layer, UnpackEvent};
use kiln_build::{ActiveSnapshot, OverlaySnapshotter, Snapshotter};
use kiln_image::document::{ContainerConfig, Descriptor, ImageConfig, Manifest};
use kiln_image::{Digest, Platform, Reference, Store, StoreError};
use kiln_sandbox::{
    EtcFiles, Executor as _, NetworkMode, OutputSink, RunControl, RunSpec, RuncExecutor,
    SandboxError, Stream,
};

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

/// The PATH Docker gives a Linux container whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
                Some(SandboxError::Start { stderr, .. }) => start_failure_code(stderr),
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
    let (name, descriptor) = find_image(&store, &args.image)?;
    let (manifest, config) = select_image(ctx, &store, &name, &descriptor, args)?;
    let container = config.config.clone().unwrap_or_default();
    let argv =
        command_line(&container, args.entrypoint.as_deref(), &args.command).ok_or_else(|| {
            anyhow!(
                "no command specified: {name} has neither ENTRYPOINT nor CMD \
                 (give one after the image: kiln run {} -- COMMAND...)",
                args.image
            )
        })?;
    let layers = layers(&store, &name, &manifest, &config)?;

    let snapshotter = OverlaySnapshotter::new(&store)?;
    if let Err(e) = snapshotter.sweep() {
        ctx.progress
            .note(None, format!("could not clean up after earlier runs: {e}"));
    }
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

    let id = container_id();
    // From here on a signal cancels the run, which then cleans up.
    let active =
        interrupts.while_active(|| snapshotter.activate(&parents, &format!("run-{id}")))?;
    let result = run_in(ctx, args, &container, argv, &id, &*active, &control);
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
    container: &ContainerConfig,
    argv: Vec<String>,
    id: &str,
    active: &dyn ActiveSnapshot,
    control: &RunControl,
) -> anyhow::Result<kiln_sandbox::ExitInfo> {
    let root = active.root();
    let mut spec = RunSpec::new(root, argv);
    let user = args
        .user
        .as_deref()
        .or(container.user.as_deref())
        .unwrap_or("");
    spec.user = kiln_sandbox::resolve_user(root, user).with_context(|| format!("user {user:?}"))?;
    let workdir = args
        .workdir
        .as_deref()
        .or(container.working_dir.as_deref())
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    if !workdir.starts_with('/') {
        bail!("the working directory {workdir:?} is not an absolute path");
    }
    make_dir_in_root(root, Path::new(workdir))
        .with_context(|| format!("creating the working directory {workdir}"))?;
    spec.cwd = PathBuf::from(workdir);
    spec.hostname = args.hostname.clone().unwrap_or_else(|| id.to_string());
    let home = home_dir(root, spec.user.uid);
    spec.env = environment(
        container.env.as_deref().unwrap_or_default(),
        &args.env,
        &spec.hostname,
        &home,
        |key| std::env::var(key).ok(),
    );
    spec.network = match args.network {
        Network::Host => NetworkMode::Host,
        Network::None => NetworkMode::None,
    };
    spec.etc = EtcFiles::host();

    // Where `kiln build` keeps its runs too, so each sweeps the other's.
    let executor = RuncExecutor::new(ctx.root().join("runc"));
    if let Err(e) = executor.sweep() {
        ctx.progress
            .note(None, format!("could not clean up after earlier runs: {e}"));
    }
    Ok(executor.run(&spec, &PassThrough, control)?)
}

/// The image a name gives: a tag or digest reference, else an image ID
/// (`kiln images`' column, a prefix of the digest) or a digest any tag has.
fn find_image(store: &Store, name: &str) -> anyhow::Result<(String, Descriptor)> {
    let reference = Reference::parse(name).map(Reference::with_default_tag);
    if let Ok(reference) = &reference
        && let Some(descriptor) = store
            .resolve(reference)
            .with_context(|| format!("looking up {}", reference.familiar()))?
    {
        return Ok((reference.familiar(), descriptor));
    }
    let wanted = match &reference {
        Ok(Reference {
            digest: Some(digest),
            ..
        }) => Some(digest.hex().to_string()),
        _ => {
            let hex = name.strip_prefix("sha256:").unwrap_or(name);
            (hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| hex.to_ascii_lowercase())
        }
    };
    if let Some(wanted) = wanted {
        let mut found: Vec<Descriptor> = Vec::new();
        for (_, descriptor) in store.tags()? {
            if descriptor.digest.hex().starts_with(&wanted)
                && !found.iter().any(|d| d.digest == descriptor.digest)
            {
                found.push(descriptor);
            }
        }
        match found.len() {
            1 => return Ok((name.to_string(), found.remove(0))),
            0 => {}
            n => bail!("{name} is ambiguous: {n} images have IDs starting with it"),
        }
    }
    let shown = reference
        .as_ref()
        .map_or(name.to_string(), Reference::familiar);
    Err(anyhow!(
        "no such image: {shown} (pull it first with `kiln pull {shown}`; `kiln images` lists the store)"
    ))
}

/// The manifest and config for the platform wanted, refusing an image
/// this machine cannot run.
fn select_image(
    ctx: &Context,
    store: &Store,
    name: &str,
    descriptor: &Descriptor,
    args: &RunArgs,
) -> anyhow::Result<(Manifest, ImageConfig)> {
    let host = Platform::host();
    let wanted = args.platform.clone().unwrap_or_else(|| host.clone());
    let manifest = match store.select_manifest(descriptor, &wanted) {
        Ok(m) => m.into_value(),
        Err(StoreError::NoMatchingPlatform { available, .. }) => {
            let mut message = format!(
                "{name} has no image for {wanted}; it has {}",
                available.join(", ")
            );
            if args.platform.is_none() {
                message.push_str(&emulation_hint(&available));
            }
            bail!(message);
        }
        Err(e) => return Err(anyhow!(e).context(format!("reading {name}"))),
    };
    let config = store
        .read_document::<ImageConfig>(&manifest.config)
        .with_context(|| format!("reading the config of {name}"))?
        .into_value();
    let platform = config.platform();
    if !wanted.matches(&platform) {
        let mut message = format!("{name} is an image for {platform}, not {wanted}");
        if args.platform.is_none() {
            message = format!("{name} is an image for {platform}, but this machine is {host}");
            message.push_str(&emulation_hint(&[platform.to_string()]));
        }
        bail!(message);
    }
    if !host.matches(&platform) {
        if binfmt_handler(&platform.architecture).is_none() {
            bail!(
                "{name} is an image for {platform}, which this {host} machine cannot run: no QEMU \
                 binfmt handler for {} is registered (install qemu-user-static)",
                platform.architecture
            );
        }
        ctx.progress.note(
            None,
            format!("{name} is an image for {platform}: running it under QEMU emulation"),
        );
    }
    Ok((manifest, config))
}

/// What to tell someone whose image is for other platforms.
fn emulation_hint(platforms: &[String]) -> String {
    let foreign: Vec<(String, String)> = platforms
        .iter()
        .filter_map(|p| {
            let platform = Platform::parse(p).ok()?;
            let handler = binfmt_handler(&platform.architecture)?;
            Some((p.clone(), handler))
        })
        .collect();
    match foreign.first() {
        Some((platform, handler)) => format!(
            "; QEMU is registered with binfmt_misc for it ({handler}): \
             pass --platform {platform} to run it emulated"
        ),
        None => "; no QEMU binfmt handler is registered for it, so it cannot run here \
                 (install qemu-user-static, then pass --platform)"
            .to_string(),
    }
}

/// The binfmt_misc entry that runs binaries of `architecture` (an OCI
/// name) through QEMU, if one is registered and enabled.
fn binfmt_handler(architecture: &str) -> Option<String> {
    let qemu = match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        other => other,
    };
    let entry = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
    let text = fs_err::read_to_string(&entry).ok()?;
    (text.lines().next() == Some("enabled")).then(|| entry.display().to_string())
}

/// The layers of the image, bottom first: diffIDs from the config, blobs
/// from the manifest, every blob in the store.
fn layers(
    store: &Store,
    name: &str,
    manifest: &Manifest,
    config: &ImageConfig,
) -> anyhow::Result<Vec<Layer>> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        bail!(
            "{name} is inconsistent: its manifest lists {} layers, its config {} diffIDs",
            manifest.layers.len(),
            diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    for (blob, diff_id) in manifest.layers.iter().zip(diff_ids) {
        if !store.contains(&blob.digest)? {
            bail!(
                "layer {} of {name} is not in the store (pull the image again with `kiln pull`)",
                blob.digest
            );
        }
        layers.push(Layer {
            diff_id: diff_id.clone(),
            blob: blob.clone(),
        });
    }
    Ok(layers)
}

/// Docker's command line: the ENTRYPOINT, then the CMD, where
/// `--entrypoint` replaces the first and drops the second, and arguments
/// after the image replace the CMD. `None` if that leaves nothing.
fn command_line(
    config: &ContainerConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Option<Vec<String>> {
    let (entrypoint, cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (
            config.entrypoint.clone().unwrap_or_default(),
            config.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if args.is_empty() { cmd } else { args.to_vec() };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    (!argv.is_empty()).then_some(argv)
}

/// The environment: Docker's PATH and HOSTNAME, then the image's, then
/// `-e` (each replacing a variable of the same name), then HOME if unset.
fn environment(
    image: &[String],
    flags: &[String],
    hostname: &str,
    home: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), hostname.into()),
    ];
    let mut set = |key: &str, value: String| match env.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => env.push((key.to_string(), value)),
    };
    for pair in image {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        set(key, value.to_string());
    }
    for flag in flags {
        match flag.split_once('=') {
            Some((key, value)) => set(key, value.to_string()),
            None => {
                if let Some(value) = lookup(flag) {
                    set(flag, value);
                }
            }
        }
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The home directory of `uid` in the root's /etc/passwd, or `/`, as
/// Docker sets HOME.
fn home_dir(root: &Path, uid: u32) -> String {
    let home = kiln_fs::resolve_in_root(root, Path::new("/etc/passwd"))
        .ok()
        .and_then(|passwd| fs_err::read_to_string(kiln_fs::host_path(root, &passwd)).ok())
        .and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_string())
            })
        });
    home.filter(|h| !h.is_empty()).unwrap_or_else(|| "/".into())
}

/// Creates the directory `dir` (absolute, as the container sees it) in
/// `root`, as Docker creates a missing working directory: symlinks are
/// followed as if `root` were `/` (Docker's securejoin), and missing
/// directories on the way are made, 0755 and root's.
fn make_dir_in_root(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let tree = kiln_fs::Root::open(root).with_context(|| format!("opening {}", root.display()))?;
    let rel = tree
        .resolve(dir.as_os_str().as_bytes())
        .with_context(|| format!("resolving {} in the image", dir.display()))?;
    match tree.make_dir_all(&rel, &kiln_fs::NewDir::default()) {
        Ok(_) => Ok(()),
        Err(kiln_fs::Errno::NOTDIR) => {
            // Name the first component that is in the way.
            let mut prefix = Vec::new();
            for part in kiln_fs::path::components(&rel) {
                prefix = kiln_fs::path::join(&prefix, part);
                if tree.lstat(&prefix)?.is_some_and(|st| !kiln_fs::is_dir(&st)) {
                    break;
                }
            }
            bail!(
                "{} is not a directory in the image",
                kiln_fs::path::display(&prefix)
            )
        }
        Err(e) => Err(std::io::Error::from(e))
            .with_context(|| format!("creating {} in the image", dir.display())),
    }
}

/// A new container's ID: 12 hex digits, as Docker shows its IDs (the
/// default hostname, and the name of its directory under `active/`).
fn container_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}-{nanos}", std::process::id());
    Digest::of(seed.as_bytes()).hex()[..12].to_string()
}

/// `sha256:0123456789ab`.
fn short(digest: &Digest) -> String {
    format!("sha256:{}", &digest.hex()[..12])
}

/// Docker's exit code for a command runc could not start.
fn start_failure_code(stderr: &str) -> u8 {
    let stderr = stderr.to_ascii_lowercase();
    if stderr.contains("not found") || stderr.contains("no such file") {
        EXIT_NOT_FOUND
    } else if stderr.contains("permission denied") || stderr.contains("exec format error") {
        EXIT_CANNOT_EXECUTE
    } else {
        EXIT_KILN_FAILED
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        ContainerConfig {
            entrypoint: entrypoint.map(strings),
            cmd: cmd.map(strings),
            ..ContainerConfig::default()
        }
    }

    #[test]
    fn command_line_follows_docker() {
        let both = config(Some(&["/entry", "-x"]), Some(&["serve", "--port=80"]));
        assert_eq!(
            command_line(&both, None, &[]).unwrap(),
            ["/entry", "-x", "serve", "--port=80"]
        );
        // Arguments replace CMD, not ENTRYPOINT.
        assert_eq!(
            command_line(&both, None, &strings(&["check"])).unwrap(),
            ["/entry", "-x", "check"]
        );
        // --entrypoint replaces ENTRYPOINT and resets CMD.
        assert_eq!(
            command_line(&both, Some("/bin/sh"), &[]).unwrap(),
            ["/bin/sh"]
        );
        assert_eq!(
            command_line(&both, Some("/bin/sh"), &strings(&["-c", "id"])).unwrap(),
            ["/bin/sh", "-c", "id"]
        );
        // --entrypoint "" clears it: the arguments alone run.
        assert_eq!(
            command_line(&both, Some(""), &strings(&["/bin/echo", "hi"])).unwrap(),
            ["/bin/echo", "hi"]
        );
        assert_eq!(command_line(&both, Some(""), &[]), None);
        let cmd_only = config(None, Some(&["/bin/sh"]));
        assert_eq!(command_line(&cmd_only, None, &[]).unwrap(), ["/bin/sh"]);
        assert_eq!(command_line(&config(None, None), None, &[]), None);
    }

    #[test]
    fn environment_layers_as_docker_does() {
        let env = environment(
            &strings(&["PATH=/opt/bin:/bin", "LANG=C.UTF-8", "EMPTY="]),
            &strings(&["LANG=en_US.UTF-8", "NEW=1", "FROM_HOST", "UNSET_HERE"]),
            "abc123",
            "/root",
            |k| (k == "FROM_HOST").then(|| "host value".to_string()),
        );
        assert_eq!(
            env,
            [
                "PATH=/opt/bin:/bin",
                "HOSTNAME=abc123",
                "LANG=en_US.UTF-8",
                "EMPTY=",
                "NEW=1",
                "FROM_HOST=host value",
                "HOME=/root",
            ]
        );
        let env = environment(&[], &strings(&["HOME=/x"]), "h", "/", |_| None);
        assert_eq!(
            env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=h".into(),
                "HOME=/x".into()
            ]
        );
    }

    #[test]
    fn paths_in_the_root_never_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(root.join("etc")).unwrap();
        fs_err::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("etc/up")).unwrap();
        // An absolute link means the root's path, not the host's.
        make_dir_in_root(&root, Path::new(&format!("{}/made", outside.display()))).unwrap();
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("made")
                .is_dir()
        );
        make_dir_in_root(&root, Path::new("/abs/work")).unwrap();
        assert!(!outside.join("work").exists());
        make_dir_in_root(&root, Path::new("/etc/up/srv/app")).unwrap();
        assert!(root.join("srv/app").is_dir());
        assert_eq!(
            kiln_fs::resolve_in_root(&root, Path::new("/etc/up/etc/passwd")).unwrap(),
            Path::new("/etc/passwd")
        );
        fs_err::write(root.join("file"), "").unwrap();
        let err = make_dir_in_root(&root, Path::new("/file/x")).unwrap_err();
        assert_eq!(err.to_string(), "/file is not a directory in the image");
    }

    #[test]
    fn home_comes_from_passwd() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        fs_err::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnohome:x:7:7::",
        )
        .unwrap();
        assert_eq!(home_dir(dir.path(), 0), "/root");
        assert_eq!(home_dir(dir.path(), 1000), "/home/app");
        assert_eq!(home_dir(dir.path(), 7), "/");
        assert_eq!(home_dir(dir.path(), 4242), "/");
    }

    #[test]
    fn start_failures_exit_as_docker_run() {
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_failure_code("exec /x: permission denied"), 126);
        assert_eq!(start_failure_code("exec /x: exec format error"), 126);
        assert_eq!(start_failure_code("mount failed"), 125);
    }
}
