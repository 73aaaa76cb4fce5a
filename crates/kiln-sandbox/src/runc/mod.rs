//! The real [`Executor`]: `runc run` on a bundle generated per run, as
//! BuildKit's `executor/runcexecutor` does.
//!
//! One run, start to end:
//! 1. check the spec (root, cwd, mount sources) and write the bundle
//!    (`config.json`, the hostname file) in a temporary directory of its own;
//! 2. create the missing mount points in the root (see `stubs.rs`);
//! 3. with a guardian configured ([`RuncExecutor::with_guardian`]), start
//!    it: it ends the container if kiln dies before step 5 (see `guard.rs`);
//!    then `runc --root <state> run --bundle <dir> --pid-file <dir>/init.pid <id>`
//!    with stdin from /dev/null and stdout/stderr on pipes read by two
//!    threads; a third thread waits for runc;
//! 4. wait for runc's exit or a cancel; on cancel `runc kill --all <id> KILL`
//!    (repeated until runc exits; runc itself is SIGKILLed after
//!    [`KILL_GRACE`]);
//! 5. whatever happened (error, cancel, a panicking sink): make sure runc
//!    has exited, `runc delete --force` if its state is still there, remove
//!    the stubs and the bundle.
//!
//! No process outlives the run, nor kiln when a guardian watches it: the command is pid 1 of a new pid
//! namespace, and when it exits the kernel kills every other process in the
//! namespace (pid_namespaces(7)) before runc's wait returns. The mounts are
//! made in the run's own mount namespace, which goes with its last process.

pub(crate) mod bundle;
mod command;
mod guard;
mod seccomp;

pub use self::guard::run_guardian;

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, PidfdFlags, Signal, kill_process, pidfd_open, pidfd_send_signal};

use self::bundle::{HOSTNAME_FILE, HostFacts};
use self::guard::GuardianCommand;
use crate::control::{InitProcess, RunControl};
use crate::error::SandboxError;
use crate::executor::{Executor, ExitInfo};
use crate::output::{OutputSink, Stream};
use crate::spec::{MountKind, RunSpec};
use crate::stubs::{StubKind, Stubs};
use kiln_fs::{host_path, resolve_in_root};

/// After a cancel (or the caller's death, for the guardian), how long
/// `runc kill` may keep failing (e.g. the container is still being
/// created) before runc itself is killed.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Where the runc binary usually is, after `PATH`.
const RUNC_PLACES: &[&str] = &[
    "/usr/sbin/runc",
    "/usr/bin/runc",
    "/usr/local/sbin/runc",
    "/usr/local/bin/runc",
];

/// Container ids start with this, then the kiln pid: see [`RuncExecutor::sweep`].
const ID_PREFIX: &str = "kiln-";

/// Runs [`RunSpec`]s with `runc`. Needs root, or to be root in a user
/// namespace of its own (rootless kiln): runc then acts rootless.
#[derive(Debug)]
pub struct RuncExecutor {
    runc: Option<PathBuf>,
    work_dir: PathBuf,
    host: OnceLock<HostFacts>,
    guardian: Option<GuardianCommand>,
}

impl RuncExecutor {
    /// An executor keeping runc's state in `<work_dir>/state` and the runs'
    /// bundles in `<work_dir>/bundles` (e.g. `<kiln root>/sandbox`).
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            runc: None,
            work_dir: work_dir.into(),
            host: OnceLock::new(),
            guardian: None,
        }
    }

    /// Watches every run with a guardian, `program args.. RUNC STATE ID`,
    /// which must call [`run_guardian`] with the last three: if this process
    /// dies before the run is over (SIGKILL included), the guardian kills
    /// the container's processes and deletes it within seconds. Without
    /// one, a killed caller's container runs until the next
    /// [`sweep`](RuncExecutor::sweep).
    pub fn with_guardian<I, S>(mut self, program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.guardian = Some(GuardianCommand {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Uses this runc binary instead of looking in `PATH` and the usual
    /// places.
    pub fn with_runc(mut self, runc: impl Into<PathBuf>) -> Self {
        self.runc = Some(runc.into());
        self
    }

    /// runc's `--root`: one directory of state per live container.
    pub fn state_dir(&self) -> PathBuf {
        self.work_dir.join("state")
    }

    /// Where each run's bundle directory is created (and removed).
    pub fn bundle_dir(&self) -> PathBuf {
        self.work_dir.join("bundles")
    }

    /// The runc binary runs will use.
    pub fn runc_path(&self) -> Result<PathBuf, SandboxError> {
        if let Some(runc) = &self.runc {
            return if runc.is_file() {
                Ok(runc.clone())
            } else {
                Err(SandboxError::RuncNotFound {
                    tried: vec![runc.clone()],
                })
            };
        }
        let mut tried: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join("runc")).collect())
            .unwrap_or_default();
        tried.extend(RUNC_PLACES.iter().map(PathBuf::from));
        match tried.iter().find(|p| p.is_file()) {
            Some(found) => Ok(found.clone()),
            None => Err(SandboxError::RuncNotFound { tried }),
        }
    }

    /// Ends what a crashed kiln left behind: kills and deletes its
    /// containers and removes its bundles. Runs of live kiln processes are
    /// left alone (the container id names the kiln pid that started it).
    /// Returns how many containers it deleted.
    pub fn sweep(&self) -> Result<usize, SandboxError> {
        let state = self.state_dir();
        let mut deleted = 0;
        if state.is_dir() {
            // runc is looked up only when there is something to end, so a
            // build that runs nothing needs no runc.
            let mut found: Option<PathBuf> = None;
            for entry in fs_err::read_dir(&state)? {
                let id = entry?.file_name().to_string_lossy().into_owned();
                if !is_stale(&id) {
                    continue;
                }
                let runc = match &found {
                    Some(path) => path.clone(),
                    None => found.insert(self.runc_path()?).clone(),
                };
                let _ = command::runc(&runc, &state, &command::kill_args(&id));
                let out = command::runc(
                    &runc,
                    &state,
                    &[OsStr::new("delete"), OsStr::new("--force"), OsStr::new(&id)],
                )?;
                if !out.status.success() && state.join(&id).exists() {
                    return Err(SandboxError::Runc {
                        command: "delete",
                        id,
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    });
                }
                deleted += 1;
            }
        }
        let bundles = self.bundle_dir();
        if bundles.is_dir() {
            for entry in fs_err::read_dir(&bundles)? {
                let entry = entry?;
                if is_stale(&entry.file_name().to_string_lossy()) {
                    fs_err::remove_dir_all(entry.path())?;
                }
            }
        }
        Ok(deleted)
    }

    fn host(&self) -> &HostFacts {
        self.host.get_or_init(HostFacts::probe)
    }
}

/// How often a container that failed to start for a passing reason
/// ([`transient_start_failure`]) is started again.
const START_RETRIES: u32 = 3;

/// Whether runc's start failure is one that passes: runc 1.1's nsexec
/// re-executes a sealed copy of itself (its CVE-2019-5736 guard) and, with
/// many runc starting at once, may find that copy busy: "could not ensure
/// we are a cloned binary: Device or resource busy". Seen in kiln's CI
/// with parallel tests; nothing of the step ran.
fn transient_start_failure(stderr: &str) -> bool {
    stderr.contains("could not ensure we are a cloned binary")
        && stderr.contains("Device or resource busy")
}

impl Executor for RuncExecutor {
    fn runs_real_programs(&self) -> bool {
        true
    }

    fn run(
        &self,
        spec: &RunSpec,
        output: &dyn OutputSink,
        control: &RunControl,
    ) -> Result<ExitInfo, SandboxError> {
        // Dropped last, on every path out, unwinding included.
        let _finished = control.finish_on_drop();
        let mut retried = 0;
        loop {
            match self.run_inner(spec, output, control) {
                // The container never started: nothing ran, nothing was
                // written; a fresh attempt (new id, new bundle) is safe.
                Err(SandboxError::Start { stderr, .. })
                    if retried < START_RETRIES
                        && transient_start_failure(&stderr)
                        && !control.is_cancelled() =>
                {
                    retried += 1;
                    std::thread::sleep(Duration::from_millis(100 * u64::from(retried)));
                }
                other => return other,
            }
        }
    }

    fn sweep(&self) -> Result<usize, SandboxError> {
        RuncExecutor::sweep(self)
    }
}

impl RuncExecutor {
    fn run_inner(
        &self,
        spec: &RunSpec,
        output: &dyn OutputSink,
        control: &RunControl,
    ) -> Result<ExitInfo, SandboxError> {
        check(spec)?;
        let runc = self.runc_path()?;
        let state = self.state_dir();
        fs_err::create_dir_all(&state)?;
        fs_err::create_dir_all(self.bundle_dir())?;

        let id = new_id();
        // Removed on drop, whatever happens below.
        let bundle = tempfile::Builder::new()
            .prefix(&format!("{id}."))
            .tempdir_in(self.bundle_dir())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating a bundle in {}: {e}", self.bundle_dir().display()),
                )
            })?;
        let dir = bundle.path();
        fs_err::write(dir.join(HOSTNAME_FILE), format!("{}\n", spec.hostname))?;
        let config = bundle::runtime_spec(spec, self.host(), dir)?;
        let json = serde_json::to_vec_pretty(&config).map_err(SandboxError::spec)?;
        fs_err::write(dir.join("config.json"), json)?;

        let points: Vec<(PathBuf, StubKind)> = bundle::mounts(spec, self.host(), dir)?
            .into_iter()
            .map(|m| {
                let file = m.typ().as_deref() == Some("bind")
                    && m.source().as_ref().is_some_and(|s| s.is_file());
                let kind = if file { StubKind::File } else { StubKind::Dir };
                (m.destination().clone(), kind)
            })
            .collect();
        // BuildKit keeps the /proc, /dev and /sys that runc makes in a root
        // without them (its stub cleaner covers only the mounts it adds),
        // so they land in the layer: make them as directories, not stubs.
        for top in ["/proc", "/dev", "/sys"] {
            if points.iter().any(|(p, _)| p == Path::new(top)) {
                let host = host_path(
                    &spec.rootfs,
                    &resolve_in_root(&spec.rootfs, Path::new(top))?,
                );
                if fs_err::symlink_metadata(&host).is_err() {
                    fs_err::create_dir(&host)?;
                    std::os::unix::fs::chown(&host, Some(0), Some(0))?;
                    fs_err::set_permissions(
                        &host,
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )?;
                }
            }
        }
        let stubs = Stubs::create(&spec.rootfs, &points)?;

        // Before runc, so that no moment of the run is unwatched; released
        // on every way out, after the container is gone (it is dropped
        // after the scope below ends it).
        let _guard = match &self.guardian {
            Some(guardian) => Some(guardian.spawn(&runc, &state, &id)?),
            None => None,
        };
        let pid_file = dir.join("init.pid");
        let log_file = dir.join("runc.log");
        let mut child = Command::new(&runc)
            .arg("--root")
            .arg(&state)
            .arg("--log")
            .arg(&log_file)
            .args(["--log-format", "json", "run", "--bundle"])
            .arg(dir)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                runc: runc.clone(),
                source,
            })?;
        let runc_pid = child.id();
        // Names runc even after the waiter reaps it, so a late kill cannot hit
        // a reused pid. Kernels before 5.3 have no pidfd: then the pid is used.
        let runc_process = Pid::from_child(&child);
        let pidfd = pidfd_open(runc_process, PidfdFlags::empty()).ok();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let exited = AtomicBool::new(false);
        let aborted = AtomicBool::new(false);
        let sink_panic = Mutex::new(None);
        let mut started = false;
        let mut pid_file_seen = None;
        let mut cancelled = false;
        let status: io::Result<ExitStatus> = std::thread::scope(|s| {
            let pumps = [
                stdout.map(|p| {
                    s.spawn(|| pump(p, Stream::Stdout, output, &aborted, &sink_panic, control))
                }),
                stderr.map(|p| {
                    s.spawn(|| pump(p, Stream::Stderr, output, &aborted, &sink_panic, control))
                }),
            ];
            let waiter = s.spawn(|| {
                let status = child.wait();
                exited.store(true, Ordering::SeqCst);
                control.wake();
                status
            });

            // Ends the container before the scope joins the threads above,
            // on every way out of this closure.
            let mut container = Container {
                runc: &runc,
                state: &state,
                id: &id,
                runc_process,
                pidfd: pidfd.as_ref(),
                exited: &exited,
                control,
                kill_since: None,
            };
            loop {
                let waiting_for_start = !started;
                let killing = container.kill_since.is_some();
                let timeout = if waiting_for_start || killing {
                    // runc writes the pid file once the command runs; there is
                    // no event for it.
                    Duration::from_millis(if killing { 100 } else { 10 })
                } else {
                    Duration::from_secs(3600)
                };
                let state = control.wait_until(timeout, |st| {
                    exited.load(Ordering::SeqCst)
                        || (!killing && (st.cancelled || aborted.load(Ordering::SeqCst)))
                });
                let cancel_now = state.cancelled || aborted.load(Ordering::SeqCst);
                drop(state);
                if !started {
                    if let Some(init) = read_init(&pid_file, runc_pid) {
                        started = true;
                        control.set_running(init);
                    } else if pid_file.exists() {
                        // Written, but not (or no longer) runc's child: the
                        // command already ended, most likely. Look again for
                        // a while before concluding so.
                        let seen = *pid_file_seen.get_or_insert_with(Instant::now);
                        started = seen.elapsed() > Duration::from_secs(1);
                    }
                }
                if exited.load(Ordering::SeqCst) {
                    break;
                }
                if cancel_now {
                    cancelled |= control.is_cancelled();
                    container.kill();
                }
            }
            cancelled |= container.kill_since.is_some() && control.is_cancelled();
            container.ensure_gone();
            drop(container);
            for pump in pumps.into_iter().flatten() {
                let _ = pump.join();
            }
            waiter
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("runc waiter panicked")))
        });
        let status = status?;
        started |= pid_file.exists();

        if let Some(payload) = sink_panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            drop(stubs);
            drop(bundle);
            resume_unwind(payload);
        }
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let result = if !started && code != 0 && !cancelled {
            let log = fs_err::read_to_string(&log_file).unwrap_or_default();
            Err(SandboxError::Start {
                id: id.clone(),
                code,
                stderr: command::log_errors(&log),
            })
        } else {
            Ok(ExitInfo { code, cancelled })
        };
        stubs.remove()?;
        bundle
            .close()
            .map_err(|e| io::Error::new(e.kind(), format!("removing bundle of {id}: {e}")))?;
        result
    }
}

/// The container of one run, as runc knows it.
struct Container<'a> {
    runc: &'a Path,
    state: &'a Path,
    id: &'a str,
    /// The `runc run` process.
    runc_process: Pid,
    pidfd: Option<&'a OwnedFd>,
    exited: &'a AtomicBool,
    control: &'a RunControl,
    kill_since: Option<Instant>,
}

impl Container<'_> {
    /// One step of killing: `runc kill --all` (`command::kill_args`; it fails while the container
    /// is being created, so it is repeated), then runc itself past the grace.
    fn kill(&mut self) {
        let since = *self.kill_since.get_or_insert_with(Instant::now);
        let _ = command::runc(self.runc, self.state, &command::kill_args(self.id));
        if since.elapsed() > KILL_GRACE {
            let _ = match self.pidfd {
                Some(pidfd) => pidfd_send_signal(pidfd, Signal::KILL),
                None => kill_process(self.runc_process, Signal::KILL),
            };
        }
    }

    /// Returns once runc has exited and its state is gone.
    fn ensure_gone(&mut self) {
        while !self.exited.load(Ordering::SeqCst) {
            self.kill();
            drop(self.control.wait_until(Duration::from_millis(100), |_| {
                self.exited.load(Ordering::SeqCst)
            }));
        }
        // `runc run` deletes its container when the command exits; its
        // state is left only if runc itself was killed.
        if self.state.join(self.id).exists() {
            let args = [
                OsStr::new("delete"),
                OsStr::new("--force"),
                OsStr::new(self.id),
            ];
            let _ = command::runc(self.runc, self.state, &args);
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        self.ensure_gone();
    }
}

/// Copies one pipe to the sink until end of file. A panicking sink is
/// caught here, the run aborted, and the pipe still drained so the
/// processes never block on a full pipe while they are killed.
pub(crate) fn pump(
    mut pipe: impl Read,
    stream: Stream,
    sink: &dyn OutputSink,
    aborted: &AtomicBool,
    panic_slot: &Mutex<Option<Box<dyn std::any::Any + Send>>>,
    control: &RunControl,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut broken = false;
    let mut deliver = |f: &dyn Fn()| {
        if broken {
            return;
        }
        if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
            broken = true;
            panic_slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(payload);
            aborted.store(true, Ordering::SeqCst);
            control.wake();
        }
    };
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => deliver(&|| sink.write(stream, &buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    deliver(&|| sink.close(stream));
}

/// The run's first process from runc's pid file, if it is (still) there.
/// Its parent must be `runc run`: runc's nsexec clones the container's init
/// with CLONE_PARENT, so a stale or reused pid is told apart.
fn read_init(pid_file: &Path, runc_pid: u32) -> Option<InitProcess> {
    let pid: u32 = fs_err::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let stat = crate::proctree::read_stat(pid)?;
    (stat.ppid == runc_pid).then_some(InitProcess {
        pid,
        start_time: stat.start_time,
    })
}

/// Checks what runc would otherwise report late or not at all.
pub(crate) fn check(spec: &RunSpec) -> Result<(), SandboxError> {
    if !spec.rootfs.is_dir() {
        return Err(SandboxError::NotADirectory {
            path: spec.rootfs.clone(),
        });
    }
    if spec.args.is_empty() {
        return Err(SandboxError::EmptyCommand);
    }
    if !spec.cwd.is_absolute() {
        return Err(SandboxError::RelativePath {
            path: spec.cwd.clone(),
        });
    }
    // A cwd inside a mount exists once the mount is made.
    let in_mount = spec
        .mounts
        .iter()
        .any(|m| spec.cwd.starts_with(&m.destination));
    if !in_mount && !host_path(&spec.rootfs, &resolve_in_root(&spec.rootfs, &spec.cwd)?).is_dir() {
        return Err(SandboxError::MissingCwd {
            rootfs: spec.rootfs.clone(),
            cwd: spec.cwd.clone(),
        });
    }
    let sources = spec
        .mounts
        .iter()
        .filter_map(|m| match &m.kind {
            MountKind::Bind { source, .. } => Some(source),
            MountKind::Tmpfs { .. } => None,
        })
        .chain(&spec.etc.resolv_conf)
        .chain(&spec.etc.hosts);
    for source in sources {
        if !source.exists() {
            return Err(SandboxError::MissingSource {
                path: source.clone(),
            });
        }
    }
    Ok(())
}

/// `kiln-<pid>-<n>-<time>`: unique in the state dir across runs of this
/// process and across a restart that reuses its pid.
fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{ID_PREFIX}{}-{n}-{nanos:08x}", std::process::id())
}

/// A container or bundle name made by a kiln process that is gone.
fn is_stale(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(ID_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_cloned_binary_is_started_again() {
        // runc 1.1.15's words in kiln's CI (command::log_errors of its log).
        assert!(transient_start_failure(
            "nsexec[19817]: could not ensure we are a cloned binary: Device or resource busy; \
             runc run failed: unable to start container process: waiting for init preliminary \
             setup: read init-p: connection reset by peer"
        ));
        assert!(!transient_start_failure(
            "runc run failed: unable to start container process: exec: \"nope\": executable \
             file not found in $PATH"
        ));
        assert!(!transient_start_failure(
            "could not ensure we are a cloned binary: Operation not permitted"
        ));
    }

    #[test]
    fn ids_are_unique_and_name_their_process() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("kiln-{}-", std::process::id())));
        assert!(!is_stale(&a), "a run of this process is not stale");
        assert!(is_stale("kiln-4194304999-0-0"), "no such pid");
        assert!(!is_stale("other-container"));
    }

    #[test]
    fn bad_specs_fail_before_runc() {
        let dir = tempfile::tempdir().unwrap();
        let exec = RuncExecutor::new(dir.path().join("work")).with_runc("/nonexistent/runc");
        let control = RunControl::new();
        let sink = crate::output::Collect::new();
        let run = |spec: &RunSpec| exec.run(spec, &sink, &control);

        let missing_root = RunSpec::new(dir.path().join("nope"), ["true"]);
        assert!(matches!(
            run(&missing_root),
            Err(SandboxError::NotADirectory { .. })
        ));
        let no_args = RunSpec::new(dir.path(), Vec::<String>::new());
        assert!(matches!(run(&no_args), Err(SandboxError::EmptyCommand)));
        let mut missing_cwd = RunSpec::new(dir.path(), ["true"]);
        missing_cwd.cwd = "/work".into();
        let err = run(&missing_cwd).unwrap_err();
        assert!(matches!(err, SandboxError::MissingCwd { .. }));
        assert!(
            err.to_string()
                .starts_with("working directory /work does not exist in ")
        );
        let mut missing_source = RunSpec::new(dir.path(), ["true"]);
        missing_source.mounts = vec![crate::spec::Mount::bind(
            "/nonexistent/cache",
            "/cache",
            false,
        )];
        assert!(matches!(
            run(&missing_source),
            Err(SandboxError::MissingSource { .. })
        ));
        let ok = RunSpec::new(dir.path(), ["true"]);
        assert!(matches!(run(&ok), Err(SandboxError::RuncNotFound { .. })));
        assert!(control.is_finished());
        // Nothing was left in the root.
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 0);
    }
}
