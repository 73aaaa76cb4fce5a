//! A busybox root, an executor of its own, and bounded waits.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_sandbox::{Collect, Executor, ExitInfo, RunControl, RunSpec, RuncExecutor, SandboxError};

/// Long enough for a loaded CI machine, short enough that a hung run fails
/// the test instead of the CI job. Never used to assert speed.
pub(crate) const BOUND: Duration = Duration::from_secs(120);

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "env", "pwd", "sleep", "mount", "unshare", "ip", "ifconfig",
    "nc", "hostname", "grep", "wc", "head", "touch", "true", "false", "mkdir",
];

/// One test's world: a temp dir with a busybox root and the executor's
/// work dir.
pub(crate) struct Sandbox {
    dir: tempfile::TempDir,
    pub(crate) exec: RuncExecutor,
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs_err::create_dir_all(rootfs.join("bin")).unwrap();
        // As in a real base image; a root without them is tested apart.
        for top in ["dev", "proc", "sys"] {
            fs_err::create_dir(rootfs.join(top)).unwrap();
        }
        fs_err::copy(kiln_testkit::busybox::busybox(), rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let exec = RuncExecutor::new(dir.path().join("work"));
        Self { dir, exec }
    }

    pub(crate) fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// `sh -c script` with PATH set and no network.
    pub(crate) fn spec(&self, script: &str) -> RunSpec {
        let mut spec = RunSpec::new(self.rootfs(), ["/bin/sh", "-c", script]);
        spec.env = vec!["PATH=/bin".to_owned()];
        spec.network = kiln_sandbox::NetworkMode::None;
        spec
    }

    /// Runs to the end (bounded) and returns how it ended and its output.
    pub(crate) fn run(&self, spec: &RunSpec) -> (Result<ExitInfo, SandboxError>, Collect) {
        let control = RunControl::new();
        let output = Collect::new();
        let result = bounded(|| self.exec.run(spec, &output, &control));
        assert!(control.is_finished());
        (result, output)
    }

    /// Runs a script that must succeed and returns its stdout.
    pub(crate) fn stdout_of(&self, spec: &RunSpec) -> String {
        let (result, output) = self.run(spec);
        let exit = result.unwrap();
        assert!(exit.success(), "{exit:?}, stderr: {}", output.stderr_text());
        output.stdout_text()
    }

    /// Everything in the root, as relative paths, sorted.
    pub(crate) fn listing(&self) -> Vec<String> {
        listing(&self.rootfs())
    }

    /// Nothing of past runs is left: no runc state, no bundle, no mount.
    pub(crate) fn assert_no_leftovers(&self) {
        let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.path().to_str().unwrap();
        assert!(
            !mountinfo.contains(dir),
            "a mount under {dir} is left:\n{mountinfo}"
        );
        for dir in [self.exec.state_dir(), self.exec.bundle_dir()] {
            if dir.exists() {
                let left: Vec<_> = fs_err::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
            }
        }
    }

    pub(crate) fn write(&self, path: &str, content: &str) {
        let path = self.rootfs().join(path.trim_start_matches('/'));
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, content).unwrap();
    }
}

pub(crate) fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs_err::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs `f` on a thread scoped to this call and fails the test (ends its
/// process) if it does not return within [`BOUND`].
pub(crate) fn bounded<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let handle = s.spawn(move || {
            let value = f();
            let _ = tx.send(());
            value
        });
        // A panic in `f` drops the sender: that is an end, not a timeout.
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(BOUND) {
            // The scope would wait for the hung thread forever: end the test
            // process instead (nextest runs each test in its own).
            eprintln!("did not finish within {BOUND:?}");
            std::process::exit(101);
        }
        match handle.join() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Polls `f` until it gives a value, for at most [`BOUND`].
pub(crate) fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < BOUND, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The host pids whose command line is exactly `args`.
pub(crate) fn pids_running(args: &[&str]) -> Vec<u32> {
    fs_err::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs_err::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let parts: Vec<&[u8]> = cmdline
                .strip_suffix(b"\0")
                .unwrap_or(&cmdline)
                .split(|&b| b == 0)
                .collect();
            parts.len() == args.len() && parts.iter().zip(args).all(|(a, b)| *a == b.as_bytes())
        })
        .collect()
}

/// A sleep duration no other test (nor another copy of this suite) uses,
/// so that `pids_running(&["sleep", &n])` finds only this test's process.
pub(crate) fn unique_secs() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}", 1_000_000 + (std::process::id() % 1_000_000) * 64 + n)
}
