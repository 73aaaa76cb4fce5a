//! The guardian of a run: ends its container when kiln dies, however it
//! dies (SIGKILL and the OOM killer included), within seconds.
//!
//! Why a process of its own: the container does not die with kiln. Its
//! processes are children of `runc run` (runc's nsexec clones the init with
//! CLONE_PARENT), and when kiln is killed runc only loses its parent; the
//! step then runs until some later kiln sweeps it, hours later on a
//! persistent runner. A death signal on runc (PR_SET_PDEATHSIG) would not
//! help: a killed `runc run` leaves its container running.
//!
//! How: before `runc run` starts, the executor spawns the guardian (a
//! program the caller names: kiln re-executes itself in a hidden mode, see
//! [`run_guardian`]) with a pipe as its stdin whose write end only kiln
//! holds (O_CLOEXEC, so neither runc nor the container inherits it). The
//! kernel closes that end when kiln exits, whatever the cause, and the
//! guardian's read returns end of file. When the run ends normally kiln
//! first writes one byte: the guardian then exits at once and kiln reaps
//! it. End of file without that byte means kiln is gone: the guardian
//! repeats `runc kill --all <id> KILL` (without `--all` when rootless:
//! `command::kill_args`) until no `runc run` of the container
//! is left (runc itself is SIGKILLed after [`KILL_GRACE`]), then runs
//! `runc delete --force <id>` and exits. Killing the init is enough for the
//! whole tree: it is pid 1 of the run's pid namespace, and the kernel kills
//! every other process in the namespace with it (pid_namespaces(7)).
//!
//! The guardian is in a process group of its own, so a signal to kiln's
//! group (Ctrl-C, `kill -- -PGID`) does not take it along; it works in `/`
//! and has no other open file of kiln's (std opens everything O_CLOEXEC),
//! so it holds no lock a sweep would take for a live kiln's. A kiln killed
//! between spawning `runc run` and its exec is covered too: the guardian
//! looks for the container's runc for [`QUIET`] before concluding there is
//! none. What it does not do: unmount the step's root or remove its
//! directories (they are the snapshotter's, which the next kiln command's
//! sweep cleans up), and it cannot act if it is killed together with kiln
//! (a supervisor killing every process of a cgroup): then the next command
//! of any kiln sweeps the container too (`RuncExecutor::sweep`).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::{KILL_GRACE, command};
use crate::error::SandboxError;

/// What kiln writes when the run is over and the guardian has nothing to do.
const RELEASE: &[u8] = b"r";

/// How long no process may name the container before the guardian
/// concludes that runc is gone (or never started: a `runc run` forked but
/// not yet executed still shows kiln's command line).
const QUIET: Duration = Duration::from_secs(1);

/// The longest a guardian keeps killing: past it, it deletes what it can
/// and leaves the rest to the next sweep.
const GIVE_UP: Duration = Duration::from_secs(60);

/// How a guardian is started: a program and the arguments the executor
/// puts before its own three (the runc binary, runc's state dir, the
/// container id), which the program passes to [`run_guardian`].
#[derive(Debug, Clone)]
pub(crate) struct GuardianCommand {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
}

/// A running guardian, released on drop (the run's container is gone by
/// then: it is dropped after the container's own clean-up).
pub(crate) struct Guard {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl GuardianCommand {
    /// Starts the guardian of container `id`.
    pub(crate) fn spawn(&self, runc: &Path, state: &Path, id: &str) -> Result<Guard, SandboxError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg(runc)
            .arg(state)
            .arg(id)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(|source| SandboxError::Guardian {
                program: self.program.clone(),
                source,
            })?;
        let stdin = child.stdin.take();
        Ok(Guard { child, stdin })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            // A guardian that died already has nothing left to do.
            let _ = stdin.write_all(RELEASE);
        }
        let _ = self.child.wait();
    }
}

/// The guardian's main: `args` are the runc binary, runc's state dir and the
/// container id (what [`GuardianCommand::spawn`] appends); stdin is kiln's
/// pipe. Returns once kiln released the run, or once kiln died and the
/// container is ended. The program the caller names as guardian calls this,
/// e.g. `kiln __guard-run <runc> <state> <id>`.
pub fn run_guardian(args: &[OsString]) -> ExitCode {
    let [runc, state, id] = args else {
        eprintln!("usage: <guardian> RUNC STATE_DIR CONTAINER_ID");
        return ExitCode::from(2);
    };
    let Some(id) = id.to_str() else {
        return ExitCode::from(2);
    };
    if released(io::stdin().lock()) {
        return ExitCode::SUCCESS;
    }
    end_container(Path::new(runc), Path::new(state), id);
    ExitCode::SUCCESS
}

/// Blocks until the pipe ends; `true` if kiln wrote its release first.
fn released(mut pipe: impl io::Read) -> bool {
    let mut buf = [0u8; 16];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Cannot tell: act as if kiln died; ending a container that is
            // already gone is harmless.
            Err(_) => return false,
        }
    }
}

/// Kills container `id` and every process of it, then deletes its state.
fn end_container(runc: &Path, state: &Path, id: &str) {
    let start = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let kill = command::kill_args(id);
    while start.elapsed() < GIVE_UP {
        // Fails while the container is being created, or once it is gone.
        let _ = command::runc(runc, state, &kill);
        let runcs = naming(id);
        if runcs.is_empty() {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                break;
            }
        } else {
            quiet_since = None;
            if start.elapsed() > KILL_GRACE {
                for pid in runcs {
                    kill_if_naming(pid, id);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if state.join(id).exists() {
        let delete = [OsStr::new("delete"), OsStr::new("--force"), OsStr::new(id)];
        let _ = command::runc(runc, state, &delete);
    }
}

/// The processes (but this one) with `id` as an argument: the container's
/// `runc run`, and for a moment a `runc kill` of someone else's.
fn naming(id: &str) -> Vec<u32> {
    let Ok(entries) = fs_err::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && names(pid, id))
        .collect()
}

fn names(pid: u32, id: &str) -> bool {
    fs_err::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == id.as_bytes()))
}

/// SIGKILLs `pid` if it still names `id`: through a pidfd opened first, so
/// a pid reused after the check is never hit.
fn kill_if_naming(pid: u32, id: &str) {
    let Some(process) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let Ok(pidfd) = pidfd_open(process, PidfdFlags::empty()) else {
        return;
    };
    if names(pid, id) {
        let _ = pidfd_send_signal(&pidfd, Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_told_from_the_end_of_the_pipe() {
        assert!(released(RELEASE));
        assert!(!released(&b""[..]));
    }

    #[test]
    fn processes_naming_an_id_are_found_and_killed() {
        let id = format!("kiln-guard-test-{}", std::process::id());
        // `read` is a builtin: the shell itself waits, with `id` as its $0.
        let mut child = Command::new("sh")
            .args(["-c", "read line", &id])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !naming(&id).contains(&child.id()) {
            assert!(start.elapsed() < Duration::from_secs(10), "not found");
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_if_naming(child.id(), "another-id");
        assert!(child.try_wait().unwrap().is_none(), "killed by another id");
        kill_if_naming(child.id(), &id);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(naming(&id).is_empty());
    }
}
