//! An executor that starts no process, for tests of what drives one (the
//! engine's cache, retries and watchdog) as any user, without runc.
//!
//! A test scripts what runs of a command do ([`Script`]): files written
//! into the root, lines printed, then an exit code, or a hang until the run
//! is cancelled. The run's process tree is reported through
//! [`RunControl::report_tree`], so a watchdog sees an idle tree for a hang
//! and a tree using a CPU for [`Script::busy`].

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_fs::{NewDir, Root};
use rustix::fs::{Mode, OFlags};

use crate::control::RunControl;
use crate::error::SandboxError;
use crate::executor::{Executor, ExitInfo};
use crate::output::{OutputSink, Stream};
use crate::proctree::{ProcessInfo, ProcessState, ProcessTree};
use crate::spec::RunSpec;

/// What one run of a command does, in order: write its files into the
/// root, print its lines, then end as [`Script::exit`], [`Script::hang`]
/// or [`Script::busy`] say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    files: Vec<(String, Vec<u8>)>,
    lines: Vec<(Stream, String)>,
    end: End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Exit(i32),
    /// Asleep until cancelled: no output, no CPU, no I/O.
    Hang,
    /// Computing until cancelled: no output, a CPU's worth of time.
    Busy,
}

impl Script {
    /// Exits 0.
    pub fn success() -> Script {
        Script::exit(0)
    }

    /// Exits with `code`.
    pub fn exit(code: i32) -> Script {
        Script {
            files: Vec::new(),
            lines: Vec::new(),
            end: End::Exit(code),
        }
    }

    /// Sleeps until the run is cancelled: one process in
    /// `hrtimer_nanosleep` whose CPU time never moves.
    pub fn hang() -> Script {
        Script {
            end: End::Hang,
            ..Script::success()
        }
    }

    /// Computes until the run is cancelled, printing nothing: one running
    /// process whose CPU time grows with the clock.
    pub fn busy() -> Script {
        Script {
            end: End::Busy,
            ..Script::success()
        }
    }

    /// Writes `contents` to `path` (absolute, inside the root; missing
    /// directories are made) before anything is printed.
    pub fn write(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Script {
        self.files.push((path.to_string(), contents.into()));
        self
    }

    /// Prints `line` on stdout.
    pub fn stdout(mut self, line: &str) -> Script {
        self.lines.push((Stream::Stdout, line.to_string()));
        self
    }

    /// Prints `line` on stderr.
    pub fn stderr(mut self, line: &str) -> Script {
        self.lines.push((Stream::Stderr, line.to_string()));
        self
    }
}

/// A run the fake was asked for, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FakeRun {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub exit: ExitInfo,
}

/// An [`Executor`] whose runs do what the test scripted for their command
/// line. A run's command is its last argument: the script of
/// `/bin/sh -c SCRIPT`, which is how a shell-form `RUN` runs. A command
/// nobody scripted exits 127 saying so on stderr, as a shell does.
#[derive(Debug, Default)]
pub struct FakeExecutor {
    scripts: Mutex<HashMap<String, Vec<Script>>>,
    runs: Mutex<Vec<FakeRun>>,
}

impl FakeExecutor {
    pub fn new() -> FakeExecutor {
        FakeExecutor::default()
    }

    /// What the runs of `command` do: the first run the first script, the
    /// second the second, and so on; the last one repeats.
    pub fn script(&self, command: &str, runs: impl IntoIterator<Item = Script>) -> &FakeExecutor {
        let runs: Vec<Script> = runs.into_iter().collect();
        assert!(!runs.is_empty(), "a script for {command:?} needs a run");
        lock(&self.scripts).insert(command.to_string(), runs);
        self
    }

    /// The runs so far, in the order they ended.
    pub fn runs(&self) -> Vec<FakeRun> {
        lock(&self.runs).clone()
    }

    /// How many runs of `command` there were.
    pub fn count(&self, command: &str) -> usize {
        lock(&self.runs)
            .iter()
            .filter(|r| r.args.last().map(String::as_str) == Some(command))
            .count()
    }

    /// The script for the next run of `command`.
    fn next(&self, command: &str) -> Script {
        let mut scripts = lock(&self.scripts);
        match scripts.get_mut(command) {
            Some(runs) if runs.len() > 1 => runs.remove(0),
            Some(runs) => runs[0].clone(),
            None => Script::exit(127).stderr(&format!("fake executor: {command}: not scripted")),
        }
    }
}

impl Executor for FakeExecutor {
    fn run(
        &self,
        spec: &RunSpec,
        output: &dyn OutputSink,
        control: &RunControl,
    ) -> Result<ExitInfo, SandboxError> {
        let command = spec.args.last().ok_or(SandboxError::EmptyCommand)?;
        let script = self.next(command);
        let process = Process::new(spec);
        control.report_tree(process.tree(ProcessState::Running, Duration::ZERO));
        let result = play(&script, spec, output, control, &process);
        for stream in [Stream::Stdout, Stream::Stderr] {
            output.close(stream);
        }
        control.set_finished();
        let exit = result?;
        lock(&self.runs).push(FakeRun {
            args: spec.args.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            exit,
        });
        Ok(exit)
    }
}

/// Carries out `script` for the run of `spec`.
fn play(
    script: &Script,
    spec: &RunSpec,
    output: &dyn OutputSink,
    control: &RunControl,
    process: &Process,
) -> Result<ExitInfo, SandboxError> {
    // Killed as `runc kill` kills: SIGKILL, 128 + 9.
    let killed = ExitInfo {
        code: 137,
        cancelled: true,
    };
    if control.is_cancelled() {
        return Ok(killed);
    }
    for (path, contents) in &script.files {
        write_in_root(&spec.rootfs, path, contents)?;
    }
    for (stream, line) in &script.lines {
        output.write(*stream, format!("{line}\n").as_bytes());
    }
    let started = Instant::now();
    match script.end {
        End::Exit(code) => {
            return Ok(ExitInfo {
                code,
                cancelled: false,
            });
        }
        End::Hang => {
            control.report_tree(process.tree(ProcessState::Sleeping, Duration::ZERO));
            while !control.wait_cancelled(Duration::from_secs(3600)) {}
        }
        End::Busy => {
            // A fresh tree every few milliseconds: whoever samples it sees
            // the CPU time of the wall time gone by.
            while !control.wait_cancelled(Duration::from_millis(5)) {
                control.report_tree(process.tree(ProcessState::Running, started.elapsed()));
            }
        }
    }
    Ok(killed)
}

/// The one process a fake run pretends to be.
struct Process {
    comm: String,
    cmdline: Vec<String>,
}

impl Process {
    fn new(spec: &RunSpec) -> Process {
        let comm = spec
            .args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|n| n.to_string_lossy().chars().take(15).collect())
            .unwrap_or_default();
        Process {
            comm,
            cmdline: spec.args.clone(),
        }
    }

    fn tree(&self, state: ProcessState, cpu: Duration) -> ProcessTree {
        let asleep = state == ProcessState::Sleeping;
        ProcessTree {
            processes: vec![ProcessInfo {
                // No such host process: a pid above any default pid_max.
                pid: 1 << 30,
                ns_pid: Some(1),
                ppid: 0,
                state,
                comm: self.comm.clone(),
                cmdline: self.cmdline.clone(),
                wchan: asleep.then(|| "hrtimer_nanosleep".to_string()),
                syscall: None,
                threads: 1,
                user_time: cpu,
                system_time: Duration::ZERO,
                reaped_children_time: Duration::ZERO,
                io: None,
                sockets: Vec::new(),
            }],
            ..ProcessTree::default()
        }
    }
}

/// Writes `contents` to the absolute `path` inside `rootfs`, never
/// leaving it (kiln-fs's [`Root`]); missing directories are made 0755.
fn write_in_root(rootfs: &Path, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
    let at = |e: kiln_fs::Errno| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("writing {path} in {}: {e}", rootfs.display()),
        )
    };
    let root = Root::open(rootfs).map_err(at)?;
    let rel = path.trim_start_matches('/').as_bytes();
    let (parent, name) = kiln_fs::path::split(rel);
    let dir = root.make_dir_all(parent, &NewDir::default()).map_err(at)?;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(at)?;
    std::fs::File::from(fd)
        .write_all(contents)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}")))?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain lists: a panic elsewhere cannot leave them torn.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Collect;

    fn spec(root: &Path, command: &str) -> RunSpec {
        RunSpec::new(root, ["/bin/sh", "-c", command])
    }

    #[test]
    fn runs_do_what_was_scripted_in_turn() {
        let root = tempfile::tempdir().unwrap();
        let exec = FakeExecutor::new();
        exec.script(
            "make",
            [
                Script::exit(2).stderr("cc: error"),
                Script::success()
                    .write("/out/bin/app", "binary")
                    .stdout("built"),
            ],
        );
        let out = Collect::new();
        let first = exec
            .run(&spec(root.path(), "make"), &out, &RunControl::new())
            .unwrap();
        assert_eq!(first.code, 2);
        assert!(!root.path().join("out").exists());
        for _ in 0..2 {
            let control = RunControl::new();
            let exit = exec
                .run(&spec(root.path(), "make"), &out, &control)
                .unwrap();
            assert!(exit.success());
            assert!(control.is_finished());
        }
        assert_eq!(
            fs_err::read_to_string(root.path().join("out/bin/app")).unwrap(),
            "binary"
        );
        assert_eq!(out.stderr_text(), "cc: error\n");
        assert_eq!(out.stdout_text(), "built\nbuilt\n");
        assert_eq!(exec.count("make"), 3);

        let unknown = exec
            .run(&spec(root.path(), "ls"), &out, &RunControl::new())
            .unwrap();
        assert_eq!(unknown.code, 127);
    }

    #[test]
    fn a_hang_sleeps_until_cancelled_and_a_busy_run_uses_cpu() {
        let root = tempfile::tempdir().unwrap();
        let exec = FakeExecutor::new();
        exec.script("sleep infinity", [Script::hang()]);
        exec.script("spin", [Script::busy()]);
        for (command, state) in [
            ("sleep infinity", ProcessState::Sleeping),
            ("spin", ProcessState::Running),
        ] {
            let control = RunControl::new();
            let watcher = {
                let control = control.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..3 {
                        std::thread::sleep(Duration::from_millis(20));
                        seen.push(control.snapshot());
                    }
                    control.cancel();
                    seen
                })
            };
            let exit = exec
                .run(&spec(root.path(), command), &Collect::new(), &control)
                .unwrap();
            assert_eq!(
                exit,
                ExitInfo {
                    code: 137,
                    cancelled: true
                }
            );
            let seen = watcher.join().unwrap();
            assert!(seen.iter().all(|t| t.processes[0].state == state));
            let cpu: Vec<Duration> = seen.iter().map(|t| t.processes[0].cpu_time()).collect();
            if state == ProcessState::Sleeping {
                assert!(cpu.iter().all(Duration::is_zero), "{cpu:?}");
            } else {
                assert!(cpu[0] < cpu[2], "{cpu:?}");
            }
            assert!(control.snapshot().processes.is_empty(), "finished");
        }
    }

    #[test]
    fn files_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let exec = FakeExecutor::new();
        exec.script("w", [Script::success().write("/escape/x", "x")]);
        // The link leads to a path the root does not have: an error.
        let result = exec.run(&spec(root.path(), "w"), &Collect::new(), &RunControl::new());
        assert!(result.is_err());
        assert!(!outside.path().join("x").exists());
    }
}
