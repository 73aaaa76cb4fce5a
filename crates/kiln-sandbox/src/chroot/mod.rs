//! RUN steps without namespaces or mounts: `chroot(2)` into the step's
//! root, for where kiln may not mount or unshare (a container started with
//! Docker's default security, where Kaniko runs). docs/ISOLATION.md says
//! what a step can and cannot do there.
//!
//! The run's first process is kiln itself again, in a hidden mode
//! ([`run_chroot_init`]): a child subreaper that chroots, drops to the
//! step's user and runs the command, reaps everything the command leaves,
//! and kills what is still running when the command exits (as the end of a
//! pid namespace would). Its stdin is a pipe only kiln writes to: the run's
//! spec, then `k` to cancel; end of file (kiln died, however) kills the
//! run too. It is in a process group of its own, so a signal to kiln's
//! group does not reach it before kiln decides.
//!
//! What runc would mount is placed in the root instead and taken out
//! after the run, so that the root holds exactly what the step wrote:
//! /etc/resolv.conf, /etc/hosts and /etc/hostname (the root's own set
//! aside meanwhile), the device nodes of /dev (whatever else the step
//! leaves in /dev is removed, as a tmpfs would be), and `RUN --mount`s:
//! a cache (read-write) directory is moved in and back (runs sharing it
//! take turns), anything read-only or on another filesystem is copied in
//! and removed, a tmpfs is an empty directory. /proc and /sys are made as
//! directories when missing, as runc makes their mount points, and stay
//! empty.

mod init;
mod place;

use std::io::{self, Write as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::panic::resume_unwind;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use self::init::{CHROOT_EXEC, run_chroot_exec, run_chroot_init};
use self::place::Placed;
use crate::control::{InitProcess, RunControl};
use crate::error::SandboxError;
use crate::executor::{Executor, ExitInfo};
use crate::output::{OutputSink, Stream};
use crate::runc::{check, pump};
use crate::spec::{NetworkMode, RunSpec};

/// Runs steps with `chroot(2)`, through a program that becomes
/// [`run_chroot_init`] (kiln runs itself again).
#[derive(Debug)]
pub struct ChrootExecutor {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    /// Cache directories moved into a root: one run at a time each.
    moved: place::Turns,
}

impl ChrootExecutor {
    /// An executor whose runs start `program args...`, which must call
    /// [`run_chroot_init`] (kiln: `/proc/self/exe __chroot-run`).
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<std::ffi::OsString>>,
    ) -> ChrootExecutor {
        ChrootExecutor {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            moved: place::Turns::default(),
        }
    }

    /// Whether this process may chroot (CAP_SYS_CHROOT in its effective
    /// set), which runs need.
    pub fn can_chroot() -> bool {
        // CAP_SYS_CHROOT is capability 18 (linux/capability.h).
        effective_capabilities().is_some_and(|caps| caps & (1 << 18) != 0)
    }
}

impl Executor for ChrootExecutor {
    fn binds_are_mounts(&self) -> bool {
        false
    }

    fn runs_real_programs(&self) -> bool {
        true
    }

    fn run(
        &self,
        spec: &RunSpec,
        output: &dyn OutputSink,
        control: &RunControl,
    ) -> Result<ExitInfo, SandboxError> {
        let _finished = control.finish_on_drop();
        check(spec)?;
        if spec.network == NetworkMode::None {
            return Err(SandboxError::Unsupported {
                what: "RUN --network=none".to_string(),
                why: "a network namespace of its own needs privileges the chroot isolation \
                      does not have"
                    .to_string(),
            });
        }
        let placed = Placed::place(spec, &self.moved)?;
        let result = self.run_placed(spec, output, control);
        // Taken out whatever happened, before the result is looked at.
        let removed = placed.remove();
        let exit = result?;
        removed?;
        Ok(exit)
    }
}

impl ChrootExecutor {
    fn run_placed(
        &self,
        spec: &RunSpec,
        output: &dyn OutputSink,
        control: &RunControl,
    ) -> Result<ExitInfo, SandboxError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|source| SandboxError::Guardian {
                program: self.program.clone(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let line = init::encode(spec);
        // A failed write means the init is gone already: its exit says why.
        let _ = stdin.write_all(&line).and_then(|()| stdin.flush());
        if let Some(init) = InitProcess::probe(child.id()) {
            control.set_running(init);
        }
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let exited = AtomicBool::new(false);
        let aborted = AtomicBool::new(false);
        let sink_panic = Mutex::new(None);
        let mut cancelled = false;
        let status = std::thread::scope(|s| {
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
            let mut asked = false;
            while !exited.load(Ordering::SeqCst) {
                let state = control.wait_until(Duration::from_secs(3600), |st| {
                    exited.load(Ordering::SeqCst)
                        || (!asked && (st.cancelled || aborted.load(Ordering::SeqCst)))
                });
                let cancel_now = state.cancelled || aborted.load(Ordering::SeqCst);
                drop(state);
                if cancel_now && !asked && !exited.load(Ordering::SeqCst) {
                    cancelled |= control.is_cancelled();
                    asked = true;
                    // The init kills the whole run, then exits.
                    let _ = stdin.write_all(init::KILL).and_then(|()| stdin.flush());
                }
            }
            for pump in pumps.into_iter().flatten() {
                let _ = pump.join();
            }
            waiter
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the init's waiter panicked")))
        });
        drop(stdin);
        let status = status?;
        if let Some(payload) = sink_panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            resume_unwind(payload);
        }
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(ExitInfo { code, cancelled })
    }
}

/// This process's effective capabilities (`CapEff` of /proc/self/status).
pub(crate) fn effective_capabilities() -> Option<u64> {
    let status = fs_err::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}
