//! kiln run by a normal user: the command runs again in a user and mount
//! namespace of its own (kiln_sandbox's `userns`), where kiln is root over
//! its own mounts, overlayfs mounts with `userxattr` and runc acts
//! rootless (docs/ISOLATION.md, "Rootless").

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode};
use std::sync::OnceLock;

use anyhow::Context as _;
use kiln_image::Store;
use kiln_sandbox::{Mapping, RootlessMode};
use rustix::process::{PidfdFlags, Signal};

use crate::context::GlobalArgs;

static MODE: OnceLock<RootlessMode> = OnceLock::new();

/// How this kiln's user namespace maps ids, when it is a rootless child.
pub(crate) fn mode() -> Option<RootlessMode> {
    MODE.get().copied()
}

/// Makes this process a rootless child's namespace, if it is one: first
/// thing in `main`, while it has one thread.
pub(crate) fn enter_if_child() -> anyhow::Result<()> {
    if let Some(mode) = kiln_sandbox::enter_user_namespace()? {
        let _ = MODE.set(mode);
    }
    Ok(())
}

/// Whether this command must run in the namespace: a normal user's kiln
/// that is not yet in it (a command that opens no store runs as it is).
pub(crate) fn wanted(opens_store: bool) -> bool {
    opens_store && mode().is_none() && !rustix::process::geteuid().is_root()
}

/// Runs this very command line again in a new user and mount namespace and
/// returns its exit status. The store defaults to the user's
/// (`$XDG_DATA_HOME/kiln`): inside, kiln is root and would otherwise pick
/// /var/lib/kiln. Signals that end kiln are passed on; the child dies with
/// this process (a parent-death signal).
pub(crate) fn run_again(args: &GlobalArgs, argv: &[OsString]) -> anyhow::Result<ExitCode> {
    let mapping = kiln_sandbox::plan_user_namespace()?;
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = argv.first() {
        command.arg0(arg0);
    }
    command.args(argv.iter().skip(1));
    if args.root.is_none() {
        command.env("KILN_ROOT", Store::default_root());
    }
    if let Mapping::Single { uid, .. } = &mapping {
        command.env(SINGLE_NOTE_ENV, uid.to_string());
    }
    let mut child = kiln_sandbox::spawn_in_user_namespace(command, &mapping)
        .context("starting kiln in a user namespace for a rootless build")?;
    // A signal for kiln (a `kill PID`, a hang-up) is for the build, which
    // the child runs; a terminal's Ctrl-C reaches both (one process group),
    // and the child takes a repeated one as the same cancel.
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        PidfdFlags::empty(),
    )
    .context("watching the rootless kiln")?;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for number in signals.forever() {
            if let Some(signal) = Signal::from_named_raw(number) {
                let _ = rustix::process::pidfd_send_signal(&pidfd, signal);
            }
        }
    });
    let status = child.wait().context("waiting for the rootless kiln")?;
    handle.close();
    let _ = forwarder.join();
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(128u8.saturating_add(signal as u8)),
        (None, None) => ExitCode::FAILURE,
    })
}

/// Set for a child whose namespace maps only the user's own ids: the
/// build says once what that means.
const SINGLE_NOTE_ENV: &str = "KILN_ROOTLESS_SINGLE_ID";

/// What a build in a single-id namespace says once on stderr.
pub(crate) fn single_id_note() -> Option<String> {
    if mode() != Some(RootlessMode::Single) {
        return None;
    }
    let uid = std::env::var(SINGLE_NOTE_ENV).unwrap_or_else(|_| "this user".to_owned());
    Some(format!(
        "rootless: /etc/subuid and /etc/subgid give user {uid} no ranges, so its user \
         namespace maps only its own ids: files of other owners in the images become root's, \
         and a step cannot become another user nor chown to one (add ranges, e.g. \
         `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`; \
         docs/ISOLATION.md)"
    ))
}
