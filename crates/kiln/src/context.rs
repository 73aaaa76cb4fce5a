//! What every command may need: the store, a registry client whose events
//! become progress, and an async runtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kiln_image::{Store, StoreOptions};
use kiln_registry::{ClientOptions, Event, EventHandler, Mirror, RegistryClient, RetryPolicy};
use kiln_sandbox::RuncExecutor;

use crate::progress::{Progress, ProgressMode, TaskId};

/// The hidden first argument that makes kiln the first process of a chroot
/// run (`kiln_sandbox::run_chroot_init`); it starts kiln again with
/// `kiln_sandbox::CHROOT_EXEC` to become the step's command.
pub(crate) const CHROOT_INIT_COMMAND: &str = "__chroot-run";

/// How RUN steps are isolated (docs/ISOLATION.md).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Isolation {
    /// runc where kiln may mount (CAP_SYS_ADMIN and a runc binary), else
    /// chroot; rootless for a normal user.
    #[default]
    Auto,
    /// runc: namespaces, overlayfs, seccomp, as BuildKit does (as root).
    Runc,
    /// chroot: no mounts or namespaces, for an unprivileged container (Kaniko's place).
    Chroot,
    /// rootless: a normal user's kiln in a user namespace of its own,
    /// rootless runc over overlayfs with `userxattr`.
    Rootless,
}

impl Isolation {
    /// The isolation to use on this machine: `Runc`, `Chroot` or
    /// `Rootless`, with why when `auto` chose chroot.
    pub(crate) fn resolve(self) -> anyhow::Result<(Isolation, Option<String>)> {
        let caps = effective_capabilities();
        let has = |bit: u32| caps.is_some_and(|c| c & (1 << bit) != 0);
        // linux/capability.h: CAP_SYS_CHROOT 18, CAP_SYS_ADMIN 21.
        let (chroot, admin) = (has(18), has(21));
        let runc = RuncExecutor::new("/").runc_path().is_ok();
        // A normal user's kiln runs in its own user namespace (main), where
        // it has every capability, over its own mounts only.
        let rootless = crate::rootless::mode().is_some();
        match self {
            Isolation::Runc if rootless => anyhow::bail!(
                "--isolation runc needs root; as a normal user kiln builds rootless \
                 (--isolation rootless, which auto picks)"
            ),
            Isolation::Rootless if !rootless => anyhow::bail!(
                "--isolation rootless is how a normal user's kiln builds; as root use \
                 --isolation runc (or auto)"
            ),
            Isolation::Runc => Ok((Isolation::Runc, None)),
            Isolation::Rootless | Isolation::Auto if rootless && runc => {
                Ok((Isolation::Rootless, None))
            }
            Isolation::Rootless => anyhow::bail!(
                "--isolation rootless runs steps with runc, and no runc binary was found \
                 (install runc, Debian's package `runc`)"
            ),
            Isolation::Chroot if chroot => Ok((Isolation::Chroot, None)),
            Isolation::Chroot => anyhow::bail!(
                "--isolation chroot needs CAP_SYS_CHROOT, which this process does not have \
                 (run kiln as root, or in a container as its root user)"
            ),
            Isolation::Auto if admin && runc && !rootless => Ok((Isolation::Runc, None)),
            Isolation::Auto if chroot => {
                let why = if rootless || admin {
                    "no runc binary was found"
                } else {
                    "this process may not mount (no CAP_SYS_ADMIN, as in a container with \
                     Docker's default security)"
                };
                Ok((Isolation::Chroot, Some(why.to_string())))
            }
            Isolation::Auto => anyhow::bail!(
                "kiln cannot isolate RUN steps here: runc needs CAP_SYS_ADMIN and chroot needs \
                 CAP_SYS_CHROOT, and this process has neither (run kiln as root, as a normal \
                 user, or in a container as its root user)"
            ),
        }
    }
}

/// This process's effective capabilities (`CapEff` of /proc/self/status).
fn effective_capabilities() -> Option<u64> {
    let status = fs_err::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Registries whose images pulls take from a mirror first
/// (`--registry-mirror`), and whether they fall back to the registry
/// itself when every mirror fails.
#[derive(Debug, Clone)]
pub(crate) struct PullMirrors {
    /// (registry, mirror), in the order tried for each registry.
    pub(crate) mirrors: Vec<(String, Mirror)>,
    pub(crate) fallback: bool,
}

impl PullMirrors {
    /// `[REGISTRY=]MIRROR[/PREFIX]`, each; Docker Hub when no registry is
    /// named.
    pub(crate) fn parse(specs: &[String], fallback: bool) -> anyhow::Result<PullMirrors> {
        let mut mirrors = Vec::new();
        for spec in specs {
            let (registry, mirror) = match spec.split_once('=') {
                Some((registry, mirror)) => (registry, mirror),
                None => (kiln_image::DOCKER_HUB, spec.as_str()),
            };
            let host: Mirror = registry
                .parse()
                .ok()
                .filter(|m: &Mirror| m.prefix.is_empty())
                .with_context(|| {
                    format!("--registry-mirror {spec}: {registry:?} is not a registry host")
                })?;
            let mirror: Mirror = mirror
                .parse()
                .with_context(|| format!("--registry-mirror {spec}"))?;
            mirrors.push((host.registry, mirror));
        }
        Ok(PullMirrors { mirrors, fallback })
    }
}

/// The hidden first argument that makes kiln a run's guardian
/// (`kiln_sandbox::run_guardian`) instead of a command: see `main`.
pub(crate) const GUARD_COMMAND: &str = "__guard-run";

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct GlobalArgs {
    /// The store: images, blobs, build cache.
    /// [default: /var/lib/kiln as root, else $XDG_DATA_HOME/kiln]
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
    /// How to show progress.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto, env = "KILN_PROGRESS")]
    pub(crate) progress: ProgressMode,
    /// A registry to reach over HTTPS without verifying its certificate
    /// (falling back to plain HTTP). Loopback registries always use HTTP.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub(crate) insecure_registries: Vec<String>,
    /// A registry transfer that moves no byte for this long is retried.
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "60s", env = "KILN_REGISTRY_IDLE_TIMEOUT")]
    pub(crate) registry_idle_timeout: Duration,
    /// Attempts in a row for a failing registry request before giving up.
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 5,
        env = "KILN_REGISTRY_ATTEMPTS"
    )]
    pub(crate) registry_attempts: u32,
    /// CA certificates trusted besides the system's, for every registry
    /// (`kiln executor --registry-certificate`).
    #[arg(skip)]
    pub(crate) ca_files: Vec<PathBuf>,
}

pub(crate) struct Context {
    pub(crate) args: GlobalArgs,
    pub(crate) progress: Progress,
}

impl Context {
    pub(crate) fn new(args: GlobalArgs) -> Context {
        let progress = Progress::new(args.progress);
        Context { args, progress }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.args.root.clone().unwrap_or_else(Store::default_root)
    }

    /// Opens the store; a wait for another kiln's lock is reported.
    pub(crate) fn store(&self) -> anyhow::Result<Store> {
        let store = self.store_for_engine()?;
        self.sweep(&store);
        Ok(store)
    }

    /// The store, for a command that makes an [`kiln_build::Engine`] of it:
    /// the engine cleans up after killed kiln processes as it starts, so
    /// this does not do it first as [`Context::store`] does.
    pub(crate) fn store_for_engine(&self) -> anyhow::Result<Store> {
        let root = self.root();
        crate::report::writes_to("kiln's store", &root);
        let progress = self.progress.clone();
        let options = StoreOptions {
            report_after: Duration::from_secs(2),
            on_lock_wait: Some(Arc::new(move |wait: &kiln_image::LockWait| {
                let holder = wait.holder.as_deref().unwrap_or("another kiln process");
                progress.note(
                    None,
                    format!(
                        "waiting for the store lock {} held by {holder} ({}s so far, giving up after {}s)",
                        wait.lock.display(),
                        wait.waited.as_secs(),
                        wait.timeout.as_secs()
                    ),
                );
            })),
            ..StoreOptions::default()
        };
        Store::open_with(&root, options)
            .with_context(|| format!("opening the store at {}", root.display()))
    }

    /// Cleans up after kiln processes that were killed (docs/RELIABILITY.md):
    /// every command that opens a store does, so their mounts and containers
    /// go at the next command, whichever it is. A failure (e.g. no right to
    /// unmount) is a note: it is not this command's business to fail on.
    fn sweep(&self, store: &Store) {
        let swept = kiln_build::OverlaySnapshotter::new(store)
            .map_err(kiln_build::BuildError::from)
            .and_then(|snapshotter| {
                kiln_build::sweep_after_crash(store, &self.executor(), &snapshotter)
            });
        if let Err(e) = swept {
            self.progress.note(
                None,
                format!("could not clean up after a killed kiln: {}", e.message()),
            );
        }
    }

    /// The sandbox of RUN steps and `kiln run`, runc's state kept under the
    /// store; each run watched by a guardian, this binary run again as
    /// [`GUARD_COMMAND`], which ends the run's container if kiln is killed.
    pub(crate) fn executor(&self) -> RuncExecutor {
        // /proc/self/exe is resolved by the child as it executes it: this
        // very binary, even if the file was replaced since kiln started.
        RuncExecutor::new(self.root().join("runc")).with_guardian("/proc/self/exe", [GUARD_COMMAND])
    }

    /// The sandbox of RUN steps under `--isolation chroot`: each run's
    /// first process is this binary run again as [`CHROOT_INIT_COMMAND`].
    pub(crate) fn chroot_executor(&self) -> kiln_sandbox::ChrootExecutor {
        kiln_sandbox::ChrootExecutor::new("/proc/self/exe", [CHROOT_INIT_COMMAND])
    }

    /// A registry client whose retries, resumes and transfers show as progress.
    pub(crate) fn client(&self) -> RegistryClient {
        self.client_observed(None)
    }

    /// [`Context::client`], each of its events also given to `also` (a
    /// build's report counting what was pulled and pushed).
    pub(crate) fn client_observed(&self, also: Option<EventHandler>) -> RegistryClient {
        let progress = self.progress.clone();
        let tasks: Arc<Mutex<HashMap<String, TaskId>>> = Arc::default();
        RegistryClient::new(self.client_options().on_event(move |event| {
            if let Some(also) = &also {
                also(event);
            }
            render_event(&progress, &tasks, event);
        }))
    }

    /// A registry client for a build, whose own view owns the terminal:
    /// each finished blob, retry, resume, restart and mirror tried is a
    /// line for `note`; each event also goes to `also`. Its pulls go
    /// through `mirrors` first.
    pub(crate) fn client_with_notes(
        &self,
        note: Arc<dyn Fn(&str) + Send + Sync>,
        also: Option<EventHandler>,
        mirrors: &PullMirrors,
    ) -> RegistryClient {
        let mut options = self
            .client_options()
            .mirror_fallback(mirrors.fallback)
            .on_event(move |event| {
                if let Some(also) = &also {
                    also(event);
                }
                note_event(&*note, event);
            });
        for (registry, mirror) in &mirrors.mirrors {
            options = options.pull_mirror(registry, mirror.clone());
        }
        RegistryClient::new(options)
    }

    fn client_options(&self) -> ClientOptions {
        let mut options = ClientOptions::default()
            .idle_timeout(self.args.registry_idle_timeout)
            .retry(RetryPolicy {
                max_attempts: self.args.registry_attempts.max(1),
                ..RetryPolicy::default()
            });
        for host in &self.args.insecure_registries {
            options = options.insecure_registry(host.clone());
        }
        for file in &self.args.ca_files {
            options = options.ca_file(file.clone());
        }
        options
    }

    /// Lets `store` fetch the layers it knows only the registry of (a
    /// build's base layers and cache hits) when a command reads them, with
    /// a client whose transfers show as progress.
    pub(crate) fn fetch_layers(&self, store: &Store, runtime: &tokio::runtime::Runtime) {
        self.fetch_layers_observed(store, runtime, None);
    }

    /// [`Context::fetch_layers`], the client's events also given to `also`.
    pub(crate) fn fetch_layers_observed(
        &self,
        store: &Store,
        runtime: &tokio::runtime::Runtime,
        also: Option<EventHandler>,
    ) {
        store.set_fetcher(Arc::new(kiln_registry::RegistryFetcher::new(
            self.client_observed(also),
            runtime.handle().clone(),
        )));
    }

    pub(crate) fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    }
}

fn render_event(progress: &Progress, tasks: &Mutex<HashMap<String, TaskId>>, event: &Event) {
    let mut tasks = tasks.lock().unwrap_or_else(|e| e.into_inner());
    let key = |op: &kiln_registry::Operation| op.to_string();
    match event {
        Event::Progress {
            operation,
            bytes,
            total,
        } => {
            let id = *tasks
                .entry(key(operation))
                .or_insert_with(|| progress.start(short_label(operation), *total));
            progress.update(id, *bytes);
            if total.is_some_and(|t| *bytes >= t) {
                tasks.remove(&key(operation));
                progress.finish(id, "done");
            }
        }
        Event::Retry {
            operation,
            attempt,
            delay,
            reason,
        } => {
            let id = tasks.get(&key(operation)).copied();
            let text = format!("retry {attempt} in {:.1}s: {reason}", delay.as_secs_f64());
            match id {
                Some(_) => progress.note(id, text),
                None => progress.note(None, format!("{}: {text}", short_label(operation))),
            }
        }
        Event::Resume { operation, offset } => {
            let id = tasks.get(&key(operation)).copied();
            progress.note(
                id,
                format!("resuming at byte {offset} ({})", short_label(operation)),
            );
        }
        Event::Restart { operation, reason } => {
            let id = tasks.get(&key(operation)).copied();
            progress.note(
                id,
                format!("starting over ({}): {reason}", short_label(operation)),
            );
        }
        Event::BlobExists { operation } => {
            progress.note(None, format!("{}: already there", short_label(operation)))
        }
        Event::Mounted { operation, from } => progress.note(
            None,
            format!("{}: mounted from {from}", short_label(operation)),
        ),
        Event::MirrorFailed { .. } | Event::Mirrored { .. } => {
            if let Some(line) = mirror_line(event) {
                progress.note(None, line);
            }
        }
        _ => {}
    }
}

fn note_event(note: &dyn Fn(&str), event: &Event) {
    match event {
        Event::Progress {
            operation,
            bytes,
            total: Some(total),
        } if bytes >= total && *total > 0 => note(&format!(
            "{}: done, {:.1} MiB",
            short_label(operation),
            *total as f64 / (1024.0 * 1024.0)
        )),
        Event::Retry {
            operation,
            attempt,
            delay,
            reason,
        } => note(&format!(
            "{}: retry {attempt} in {:.1}s: {reason}",
            short_label(operation),
            delay.as_secs_f64()
        )),
        Event::Resume { operation, offset } => note(&format!(
            "{}: resuming at byte {offset}",
            short_label(operation)
        )),
        Event::Restart { operation, reason } => note(&format!(
            "{}: starting over: {reason}",
            short_label(operation)
        )),
        Event::MirrorFailed { .. } | Event::Mirrored { .. } => {
            if let Some(line) = mirror_line(event) {
                note(&line);
            }
        }
        _ => {}
    }
}

/// What a pull did with a mirror, as a line.
fn mirror_line(event: &Event) -> Option<String> {
    match event {
        Event::MirrorFailed {
            image,
            mirror,
            reason,
        } => Some(format!("{image}: not from mirror {mirror}: {reason}")),
        Event::Mirrored { image, mirror, .. } => {
            Some(format!("{image}: pulled from mirror {mirror}"))
        }
        _ => None,
    }
}

/// `pull blob sha256:0123456789ab` rather than the whole operation.
fn short_label(operation: &kiln_registry::Operation) -> String {
    // A ping or a login has no target: name the registry instead.
    let target = operation
        .target()
        .or(operation.repository())
        .unwrap_or(operation.registry());
    let target = match target.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}", &hex[..12]),
        _ => target.to_string(),
    };
    format!("{} {target}", operation.kind().verb())
}
