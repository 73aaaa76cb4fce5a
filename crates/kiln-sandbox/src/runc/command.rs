//! runc's short subcommands (kill, delete, list), each bounded in time.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

/// How long a runc subcommand may take before it is killed. They take
/// milliseconds; a hung one must not hang the build.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `runc --root <state> <args>` and returns its output, or an error if
/// it could not start or outlived [`TIMEOUT`].
pub(crate) fn runc(runc: &Path, state: &Path, args: &[&OsStr]) -> io::Result<Output> {
    let child = Command::new(runc)
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = Pid::from_child(&child);
    // The pidfd names this child even after it is reaped, so a late kill
    // cannot hit a reused pid.
    let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(output) => output,
        Err(_) => {
            let _ = pidfd_send_signal(&pidfd, Signal::KILL);
            let _ = rx.recv();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} {:?} took over {TIMEOUT:?}", runc.display(), args),
            ))
        }
    }
}

/// The arguments of `runc kill` that end every process of container `id`.
/// As root, `--all`, which signals each process runc finds in the
/// container's cgroup. In a user namespace (rootless kiln) runc makes no
/// cgroup and `--all` fails (runc 1.1: "unable to signal all processes"),
/// so the container's init alone: every run has a pid namespace of its
/// own, and the kernel kills all of it when its init dies
/// (pid_namespaces(7)).
pub(crate) fn kill_args(id: &str) -> Vec<&OsStr> {
    let mut args = vec![OsStr::new("kill")];
    if !kiln_fs::in_user_namespace() {
        args.push(OsStr::new("--all"));
    }
    args.extend([OsStr::new(id), OsStr::new("KILL")]);
    args
}

/// runc's error messages from its JSON log (`--log-format json`): the `msg`
/// of every error-level line; the raw text when it is not JSON.
pub(crate) fn log_errors(log: &str) -> String {
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(entry) => {
                let level = entry["level"].as_str().unwrap_or_default();
                if matches!(level, "error" | "fatal" | "panic")
                    && let Some(msg) = entry["msg"].as_str()
                {
                    messages.push(msg.to_owned());
                }
            }
            Err(_) => messages.push(line.to_owned()),
        }
    }
    messages.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_of_the_json_log() {
        let log = r#"{"level":"warning","msg":"ignored","time":"t"}
{"level":"error","msg":"runc run failed: unable to start container process: exec: \"nope\": executable file not found in $PATH","time":"t"}
"#;
        assert_eq!(
            log_errors(log),
            "runc run failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(log_errors("plain text\n"), "plain text");
    }
}
