//! kiln's sandbox: run one process tree in an isolated root through the OCI
//! runtime `runc`, as BuildKit's runc executor does, and read that tree from
//! /proc for the watchdog.
//!
//! - [`RunSpec`]: what to run, as plain data (root, command, user, network,
//!   mounts, security). The root is prepared by the caller (an overlay mount
//!   point); the sandbox never mounts it and never leaves a file in it.
//! - [`Executor`]: the one side-effecting interface; [`RuncExecutor`] is the
//!   real one. A run blocks its thread until every process of the run is gone.
//! - [`run_guardian`]: the main of the process that ends a run's container
//!   when its caller dies, however it dies ([`RuncExecutor::with_guardian`]).
//! - [`RunControl`]: the caller's handle on a run, usable from any thread:
//!   [`RunControl::cancel`] ends it, [`RunControl::snapshot`] lists its
//!   processes ([`ProcessTree`]) with their CPU time, I/O, wait channel and
//!   sockets.
//! - [`OutputSink`]: where stdout and stderr go, as they arrive; [`Lines`]
//!   splits them into lines, [`Collect`] keeps them.
//! - [`spawn_in_user_namespace`] and [`enter_user_namespace`]: a rootless
//!   kiln run again in a user and mount namespace of its own, mapped as
//!   [`plan_user_namespace`] finds in /etc/subuid and /etc/subgid.
//! - [`resolve_user`]: `USER name[:group]` against the root's /etc/passwd and
//!   /etc/group, with Docker's rules.
//! - `FakeExecutor` (feature `testing`): runs that start no process and do
//!   what a test scripted (`Script`), for tests of the engine as any user.
//!
//! # Threads and async
//!
//! The API is synchronous: [`Executor::run`] blocks the calling thread (it
//! starts a few helper threads for the output pipes and for waiting on runc).
//! A tokio engine calls it inside `tokio::task::spawn_blocking` and keeps a
//! clone of the [`RunControl`] to cancel or inspect the run from its tasks;
//! `cancel` never blocks, and `snapshot` only reads /proc.
//!
//! ```no_run
//! use kiln_sandbox::{Executor, Lines, NetworkMode, RunControl, RunSpec, RuncExecutor};
//!
//! let executor = RuncExecutor::new("/var/lib/kiln/sandbox");
//! let mut spec = RunSpec::new("/var/lib/kiln/steps/42/merged", ["/bin/sh", "-c", "make"]);
//! spec.env = vec!["PATH=/usr/bin:/bin".into()];
//! spec.user = kiln_sandbox::resolve_user(&spec.rootfs, "builder")?;
//! spec.network = NetworkMode::None;
//!
//! let control = RunControl::new();
//! let watchdog = {
//!     let control = control.clone();
//!     std::thread::spawn(move || {
//!         let tree = control.snapshot();
//!         if tree.totals.processes > 1000 {
//!             control.cancel();
//!         }
//!     })
//! };
//! let output = Lines::new(|stream, line: &[u8]| {
//!     println!("{stream:?}: {}", String::from_utf8_lossy(line))
//! });
//! let exit = executor.run(&spec, &output, &control)?;
//! watchdog.join().unwrap();
//! println!("exit code {}", exit.code);
//! # Ok::<(), kiln_sandbox::SandboxError>(())
//! ```

mod chroot;
mod control;
mod error;
mod executor;
#[cfg(any(test, feature = "testing"))]
mod fake;
mod output;
mod proctree;
mod runc;
mod spec;
mod stubs;
mod user;
mod userns;

pub use crate::chroot::{CHROOT_EXEC, ChrootExecutor, run_chroot_exec, run_chroot_init};
pub use crate::control::{InitProcess, RunControl};
pub use crate::error::SandboxError;
pub use crate::executor::{Executor, ExitInfo};
#[cfg(any(test, feature = "testing"))]
pub use crate::fake::{FakeExecutor, FakeRun, Script};
pub use crate::output::{Collect, Lines, OutputSink, Stream};
pub use crate::proctree::{
    IoCounters, ProcessInfo, ProcessState, ProcessTree, Protocol, SocketInfo, SocketState, Totals,
};
pub use crate::runc::{RuncExecutor, run_guardian};
pub use crate::spec::{
    DEFAULT_CAPABILITIES, DEFAULT_HOSTNAME, DEFAULT_NOFILE, EtcFiles, Mount, MountKind,
    NetworkMode, Rlimit, RunSpec, Seccomp, SecurityMode, User,
};
pub use crate::user::resolve_user;
pub use crate::userns::{
    IdMap, IdRange, Mapping, RootlessMode, enter as enter_user_namespace,
    plan_mapping as plan_user_namespace, spawn as spawn_in_user_namespace,
};
