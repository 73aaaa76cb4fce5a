//! Rootless kiln: a normal user's kiln runs again in a user namespace and
//! a mount namespace of its own, where it is root over its own mounts.
//! There runc sees a user namespace and acts rootless, and overlayfs
//! mounts with `userxattr` (docs/ISOLATION.md, "Rootless").
//!
//! The user's kiln (the *parent*) starts itself again ([`spawn`]); the
//! *child* calls [`enter`] first thing in `main`, while it has one thread
//! (unshare(2): `CLONE_NEWUSER` refuses a multithreaded caller):
//!
//! ```text
//! parent                                child
//!   spawn ───────────────────────────▶   unshare(NEWUSER | NEWNS), dumpable again
//!                                         single map: writes its own uid/gid map
//!   ◀──────────────── "unshared" byte ──
//!   newuidmap/newgidmap PID (ranges)
//!   "go" byte ──────────────────────▶    PR_SET_PDEATHSIG(SIGKILL), parent checked
//!   waits, forwards signals               / private, then the command as root
//! ```
//!
//! The child dies with the parent (SIGKILL by parent-death signal, set
//! once the namespace is made: a change of credentials clears it,
//! prctl(2)); its runs die with it through their guardians or chroot
//! pipes as they do as root (docs/RELIABILITY.md), and its mounts go with
//! its mount namespace.

mod maps;

pub use maps::{IdMap, IdRange, Mapping};
use maps::{subordinate_ranges, user_name};

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};

use rustix::io::FdFlags;
use rustix::process::{Pid, Signal};
use rustix::thread::UnshareFlags;

use crate::error::SandboxError;

/// The variable that tells a kiln it is a rootless child, and how to reach
/// its parent: `READ_FD,WRITE_FD,PARENT_PID,single|subordinate`.
const CHILD_ENV: &str = "KILN_USERNS_CHILD";

/// The namespace a rootless kiln runs in, as [`enter`] made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootlessMode {
    /// The user's id and subordinate ranges (newuidmap, newgidmap).
    Subordinate,
    /// Only the user's own uid and gid, as 0.
    Single,
}

/// What this user's namespace will map: ranges from /etc/subuid and
/// /etc/subgid with the helpers to write them, else the user's ids alone.
/// Ranges without newuidmap or newgidmap are an error that says what to
/// install: the user configured them to be used.
pub fn plan_mapping() -> Result<Mapping, SandboxError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let read = |path: &str| fs_err::read_to_string(path).unwrap_or_default();
    let name = user_name(&read("/etc/passwd"), uid)
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()));
    let sub_uids = subordinate_ranges(&read("/etc/subuid"), name.as_deref(), uid);
    // /etc/subgid names users too (subgid(5)), never groups.
    let sub_gids = subordinate_ranges(&read("/etc/subgid"), name.as_deref(), uid);
    let (Some(uids), Some(gids)) = (
        IdMap::with_subordinate(uid, &sub_uids),
        IdMap::with_subordinate(gid, &sub_gids),
    ) else {
        return Ok(Mapping::Single { uid, gid });
    };
    let helper = |program: &'static str| {
        maps::find_helper(program).ok_or_else(|| SandboxError::IdMapHelper {
            program,
            detail: format!(
                "is not installed: /etc/subuid and /etc/subgid give {} ranges, which only the \
                 setuid helpers newuidmap and newgidmap may map: install them (Debian and \
                 Ubuntu: `apt-get install uidmap`; Fedora: `dnf install shadow-utils`)",
                name.as_deref().unwrap_or("this user")
            ),
        })
    };
    Ok(Mapping::Subordinate {
        uids,
        gids,
        newuidmap: helper("newuidmap")?,
        newgidmap: helper("newgidmap")?,
    })
}

/// Starts `command` (this kiln again, with the same arguments) as a
/// rootless child in a user and mount namespace mapped as `mapping` says,
/// and returns it once it runs there. A child that fails before (e.g. the
/// kernel refused the namespace) has said why on stderr: its exit status
/// is the caller's to report. The caller waits for it.
pub fn spawn(mut command: Command, mapping: &Mapping) -> Result<Child, SandboxError> {
    // std's pipes are close-on-exec.
    let (from_child, child_writes) = std::io::pipe()?;
    let (child_reads, to_child) = std::io::pipe()?;
    let (child_writes, child_reads) = (OwnedFd::from(child_writes), OwnedFd::from(child_reads));
    // The child's two ends stay open across its exec; the rest do not.
    for fd in [&child_writes, &child_reads] {
        rustix::io::fcntl_setfd(fd, FdFlags::empty()).map_err(io_err)?;
    }
    let mode = match mapping {
        Mapping::Subordinate { .. } => "subordinate",
        Mapping::Single { .. } => "single",
    };
    command.env(
        CHILD_ENV,
        format!(
            "{},{},{},{mode}",
            child_reads.as_raw_fd(),
            child_writes.as_raw_fd(),
            std::process::id()
        ),
    );
    let spawned = command.spawn();
    drop((child_writes, child_reads));
    let mut child = spawned?;
    let mut from_child = from_child;
    let mut byte = [0u8; 1];
    if from_child.read(&mut byte)? == 0 {
        // It ended before making its namespace, and said why.
        return Ok(child);
    }
    if let Mapping::Subordinate {
        uids,
        gids,
        newuidmap,
        newgidmap,
    } = mapping
    {
        for (program, helper, map) in [
            ("newuidmap", newuidmap, uids),
            ("newgidmap", newgidmap, gids),
        ] {
            if let Err(e) = run_helper(program, helper, child.id(), map) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
    let mut to_child = to_child;
    to_child.write_all(b"g")?;
    Ok(child)
}

fn run_helper(
    program: &'static str,
    helper: &std::path::Path,
    pid: u32,
    map: &IdMap,
) -> Result<(), SandboxError> {
    let out = Command::new(helper)
        .arg(pid.to_string())
        .args(map.helper_args())
        .output()
        .map_err(|e| SandboxError::IdMapHelper {
            program,
            detail: format!("({}) could not be started: {e}", helper.display()),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(SandboxError::IdMapHelper {
        program,
        detail: format!(
            "({}) failed: {} (it maps {}; check the user's lines in /etc/subuid and \
             /etc/subgid, and that the helper is setuid root or has cap_setuid/cap_setgid)",
            helper.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            map.helper_args().join(" ")
        ),
    })
}

/// In a rootless child ([`spawn`]'s): makes and enters the user and mount
/// namespaces and returns how they map; `None` in any other process. Call
/// it first in `main`, while the process has one thread. `Err` when the
/// kernel refuses the namespace (the error says what to configure) or the
/// parent is gone.
pub fn enter() -> Result<Option<RootlessMode>, SandboxError> {
    let Some(value) = std::env::var_os(CHILD_ENV) else {
        return Ok(None);
    };
    // SAFETY: called first in main, with one thread: nothing reads the
    // environment meanwhile (std::env::remove_var). The variable must not
    // reach the processes this kiln starts.
    #[allow(unsafe_code)]
    let () = unsafe { std::env::remove_var(CHILD_ENV) };
    let value = value.to_string_lossy().into_owned();
    let bad = || io::Error::other(format!("bad {CHILD_ENV} value {value:?}"));
    let fields: Vec<&str> = value.split(',').collect();
    let [read_fd, write_fd, parent, mode] = fields.as_slice() else {
        return Err(bad().into());
    };
    let (read_fd, write_fd, parent): (i32, i32, i32) = (
        read_fd.parse().map_err(|_| bad())?,
        write_fd.parse().map_err(|_| bad())?,
        parent.parse().map_err(|_| bad())?,
    );
    let mode = match *mode {
        "single" => RootlessMode::Single,
        "subordinate" => RootlessMode::Subordinate,
        _ => return Err(bad().into()),
    };
    // SAFETY: the parent opened these two descriptors for this process
    // alone and named them in the variable, which nothing else reads; they
    // are owned here from now on and closed once.
    #[allow(unsafe_code)]
    let (from_parent, to_parent) = unsafe {
        (
            OwnedFd::from_raw_fd(read_fd),
            OwnedFd::from_raw_fd(write_fd),
        )
    };
    for fd in [&from_parent, &to_parent] {
        rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC).map_err(io_err)?;
    }

    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    // SAFETY: no CLONE_FILES: the descriptor table stays this process's;
    // and there is one thread (CLONE_NEWUSER refuses more).
    #[allow(unsafe_code)]
    let unshared =
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) };
    unshared.map_err(|e| SandboxError::UserNamespace {
        hint: refusal_hint(e),
        source: e.into(),
    })?;
    // The new credentials made the process non-dumpable, which leaves its
    // /proc files root's: newuidmap, run by the user, could not write the
    // maps (user_namespaces(7); Podman's and rootlesskit's way too).
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .map_err(io_err)?;
    if mode == RootlessMode::Single {
        // An unprivileged map of one's own ids needs setgroups denied first
        // (user_namespaces(7), "The /proc/[pid]/setgroups file").
        fs_err::write("/proc/self/setgroups", "deny")?;
        fs_err::write(
            "/proc/self/uid_map",
            IdMap::single(uid.as_raw()).proc_text(),
        )?;
        fs_err::write(
            "/proc/self/gid_map",
            IdMap::single(gid.as_raw()).proc_text(),
        )?;
    }
    let mut to_parent = std::fs::File::from(to_parent);
    to_parent.write_all(b"u")?;
    let mut byte = [0u8; 1];
    if std::fs::File::from(from_parent).read(&mut byte)? == 0 {
        return Err(io::Error::other(
            "the kiln that started this one ended before mapping its user namespace",
        )
        .into());
    }
    drop(to_parent);
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(io_err)?;
    // The parent may have died before the signal was armed.
    if rustix::process::getppid().is_none_or(|p| Some(p) != Pid::from_raw(parent)) {
        return Err(io::Error::other("the kiln that started this one is gone").into());
    }
    // Mounts made here must never reach the host's namespace.
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(io_err)?;
    Ok(Some(mode))
}

/// What to configure when unshare(CLONE_NEWUSER) is refused.
fn refusal_hint(e: rustix::io::Errno) -> String {
    use rustix::io::Errno;
    let sysctl = |path: &str| {
        fs_err::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let mut why = Vec::new();
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push(
            "kernel.unprivileged_userns_clone is 0: `sysctl -w kernel.unprivileged_userns_clone=1`"
                .to_owned(),
        );
    }
    if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        why.push(
            "user.max_user_namespaces is 0: `sysctl -w user.max_user_namespaces=15000`".to_owned(),
        );
    }
    if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        why.push(
            "AppArmor restricts unprivileged user namespaces \
             (kernel.apparmor_restrict_unprivileged_userns=1, Ubuntu 23.10+): allow kiln with an \
             AppArmor profile granting `userns`, or `sysctl -w \
             kernel.apparmor_restrict_unprivileged_userns=0`"
                .to_owned(),
        );
    }
    if why.is_empty() {
        why.push(match e {
            Errno::NOSPC => "the user namespace limit is reached (user.max_user_namespaces)".to_owned(),
            Errno::PERM => "unprivileged user namespaces are not allowed here (in a container, its seccomp profile or missing capabilities may forbid them: there use `--isolation chroot` as the container's root)".to_owned(),
            _ => "see user_namespaces(7)".to_owned(),
        });
    }
    why.join("; ")
}

fn io_err(e: rustix::io::Errno) -> io::Error {
    e.into()
}
