//! Overlay mounts: described as data ([`Overlay`]), performed by [`mount`].
//!
//! The new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`) takes
//! each lower dir as its own `lowerdir+` parameter (overlayfs.rst,
//! "Multiple lower layers"; Linux 6.8+), so the number of layers is not
//! limited by the one page `mount(2)` copies its options into (a
//! `lowerdir=a:b:…` string of 200 snapshot paths is about 20 KiB).
//! `fsconfig` strings are themselves cut at 256 bytes, so a longer path is
//! passed as `/proc/self/fd/N` of a descriptor held during the mount.
//! Kernels without `lowerdir+` (or without the API) get `mount(2)` and the
//! classic option string, with `/proc/self/fd/N` names when real paths
//! would not fit.
//!
//! Every mount sets `redirect_dir=off` and `metacopy=off`: with either, a
//! renamed directory or a chmod'ed file leaves its contents in the lower
//! layers and the upper dir alone is no longer the diff (overlayfs.rst,
//! "Redirect dir", "Metadata only copy up"; the layer codec refuses such
//! upper dirs). `index=off` because nothing here needs hardlinks kept
//! across copy-up or NFS export, and an index ties the upper dir to its
//! lower dirs' file handles, which a snapshot renamed into place must not.
//! In a user namespace (rootless kiln, docs/ISOLATION.md) `trusted.*`
//! xattrs are out of reach, so the overlay is mounted with `userxattr`
//! (`user.overlay.*`, Linux 5.11+), which refuses `redirect_dir=off` and
//! wants `nofollow`: redirects neither made nor followed, as `off` means
//! where the kernel does not force `redirect_always_follow`
//! (overlayfs.rst, "Redirect dir"; fs/overlayfs/params.c).
//!
//! A writable overlay is `volatile` (Linux 5.10+, the new mount API only):
//! a step's `fsync`s and the unmount do not wait for its writes to reach
//! the disk. Without it the unmount at the end of a step (before the next
//! step may start on its upper dir) synced the upper filesystem: half a
//! second after a `pip install` of TensorFlow. Snapshots are left to
//! writeback anyway: each is stamped with the boot id, and one an earlier
//! boot left is unpacked again from its blob, never used (`mod.rs`). A
//! volatile mount leaves `work/incompat/volatile` in its work dir, which
//! goes with the step's active dir.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use super::SnapshotError;

/// Options every overlay of the snapshotter gets (see the module docs).
const FIXED_OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "off"),
    ("metacopy", "off"),
    ("index", "off"),
];

/// [`FIXED_OPTIONS`] of a `userxattr` mount (see the module docs); the
/// flag itself is set without a value.
const USERXATTR_OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "nofollow"),
    ("metacopy", "off"),
    ("index", "off"),
];

/// What `mount(2)` copies of its data argument: one page, NUL included.
/// 4 KiB is the smallest page Linux has.
const LEGACY_LIMIT: usize = 4095;

/// `fsconfig(FSCONFIG_SET_STRING)` copies at most 256 bytes of a value
/// (`strndup_user(value, 256)` in fs/fsopen.c), NUL included.
const FSCONFIG_STRING_LIMIT: usize = 255;

/// The source shown in mountinfo for kiln's overlays.
const SOURCE: &str = "kiln";

/// An overlay mount as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overlay {
    /// Lower dirs, topmost first (the order of `lowerdir=`). A read-only
    /// overlay needs at least two, a writable one at least one.
    pub(crate) lowers: Vec<PathBuf>,
    /// The upper and work dirs; `None` mounts read-only.
    pub(crate) upper: Option<(PathBuf, PathBuf)>,
    /// Overlayfs's own xattrs are `user.overlay.*` (a mount in a user
    /// namespace), not `trusted.overlay.*`.
    pub(crate) userxattr: bool,
}

impl Overlay {
    fn options(&self) -> [(&'static str, &'static str); 3] {
        if self.userxattr {
            USERXATTR_OPTIONS
        } else {
            FIXED_OPTIONS
        }
    }
}

/// Mounts `overlay` at `target` (an existing directory): with the new
/// API and `lowerdir+` where the kernel has them, else with `mount(2)`.
pub(crate) fn mount(overlay: &Overlay, target: &Path) -> Result<(), SnapshotError> {
    match mount_new_api(overlay, target) {
        Ok(()) => Ok(()),
        Err(Fallback::Unsupported) => mount_legacy(overlay, target),
        Err(Fallback::Failed(e)) => Err(e),
    }
}

/// How long [`unmount`] waits for a busy mount to be let go. A process
/// another thread has just started holds, until its `exec`, a copy of
/// every descriptor kiln had open at the `fork`, close-on-exec ones too
/// (they close at `exec`); one into a step's root keeps the mount busy for
/// as long as that `exec` takes, which under heavy writeback can be a
/// good part of a second. A mount still busy after this is held by
/// something else.
pub(crate) const BUSY_GRACE: Duration = Duration::from_secs(2);

/// Unmounts `target`. Fails if something still uses it (EBUSY) after
/// [`BUSY_GRACE`]: the files under it may still change.
pub(crate) fn unmount(target: &Path) -> Result<(), SnapshotError> {
    let deadline = Instant::now() + BUSY_GRACE;
    loop {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Err(Errno::BUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r.map_err(|e| unmount_error(target, e)),
        }
    }
}

/// Unmounts `target`, detaching it (`MNT_DETACH`) if something still uses
/// it: it leaves the tree now and is freed when its last user goes. For
/// clean-up, which must never leave a mount behind.
pub(crate) fn unmount_or_detach(target: &Path) -> Result<(), SnapshotError> {
    kiln_fs::unmount_or_detach(target).map_err(|e| unmount_error(target, e))
}

fn unmount_error(target: &Path, e: Errno) -> SnapshotError {
    SnapshotError::Unmount {
        target: target.to_path_buf(),
        source: e.into(),
    }
}

enum Fallback {
    /// The kernel lacks the new API or `lowerdir+`: use `mount(2)`.
    Unsupported,
    Failed(SnapshotError),
}

/// A path as a mount parameter: itself, or `/proc/self/fd/N` of a
/// descriptor that lives as long as this value.
struct Arg {
    text: Vec<u8>,
    _fd: Option<OwnedFd>,
}

impl Arg {
    fn plain(path: &Path) -> Arg {
        Arg {
            text: path.as_os_str().as_bytes().to_vec(),
            _fd: None,
        }
    }

    /// `/proc/self/fd/N`: the kernel resolves the magic link to the
    /// directory itself, whatever its path is.
    fn by_fd(path: &Path, target: &Path, lowers: usize) -> Result<Arg, SnapshotError> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| mount_error(target, lowers, None, e))?;
        Ok(Arg {
            text: format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes(),
            _fd: Some(fd),
        })
    }

    fn os(&self) -> &OsStr {
        OsStr::from_bytes(&self.text)
    }
}

fn mount_new_api(overlay: &Overlay, target: &Path) -> Result<(), Fallback> {
    let lowers = overlay.lowers.len();
    let fail =
        |detail: Option<String>, e: Errno| Fallback::Failed(mount_error(target, lowers, detail, e));
    let fs = match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        // No new mount API (before 5.2), or a seccomp profile hiding it.
        Err(Errno::NOSYS | Errno::PERM) => return Err(Fallback::Unsupported),
        Err(e) => return Err(fail(None, e)),
    };
    let arg = |path: &Path| -> Result<Arg, Fallback> {
        if path.as_os_str().len() > FSCONFIG_STRING_LIMIT {
            Arg::by_fd(path, target, lowers).map_err(Fallback::Failed)
        } else {
            Ok(Arg::plain(path))
        }
    };
    let set = |key: &str, value: &OsStr| {
        rustix::mount::fsconfig_set_string(&fs, key, value).map_err(|e| fail(kernel_log(&fs), e))
    };
    set("source", OsStr::new(SOURCE))?;
    for (i, lower) in overlay.lowers.iter().enumerate() {
        let value = arg(lower)?;
        match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", value.os()) {
            Ok(()) => {}
            Err(e) => {
                let log = kernel_log(&fs);
                // "Unknown parameter 'lowerdir+'": a kernel before 6.8.
                let unknown = log
                    .as_deref()
                    .is_none_or(|l| l.contains("Unknown parameter"));
                if i == 0 && e == Errno::INVAL && unknown {
                    return Err(Fallback::Unsupported);
                }
                return Err(fail(log, e));
            }
        }
    }
    if let Some((upper, work)) = &overlay.upper {
        let (upper, work) = (arg(upper)?, arg(work)?);
        set("upperdir", upper.os())?;
        set("workdir", work.os())?;
    }
    if overlay.userxattr {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(|e| fail(kernel_log(&fs), e))?;
    }
    if overlay.upper.is_some() {
        // A kernel before 5.10 does not know it: a mount that syncs.
        if rustix::mount::fsconfig_set_flag(&fs, "volatile").is_err() {
            let _ = kernel_log(&fs);
        }
    }
    for (key, value) in overlay.options() {
        set(key, OsStr::new(value))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| fail(kernel_log(&fs), e))?;
    let attrs = if overlay.upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| fail(kernel_log(&fs), e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail(None, e))
}

fn mount_legacy(overlay: &Overlay, target: &Path) -> Result<(), SnapshotError> {
    let lowers = overlay.lowers.len();
    // Commas and colons separate options and lower dirs; a path holding
    // one (or a backslash, the escape) is passed by descriptor instead.
    let safe = |p: &Path| !p.as_os_str().as_bytes().iter().any(|b| b",:\\".contains(b));
    let arg = |p: &Path, by_fd: bool| {
        if by_fd || !safe(p) {
            Arg::by_fd(p, target, lowers)
        } else {
            Ok(Arg::plain(p))
        }
    };
    let upper = match &overlay.upper {
        Some((u, w)) => Some((arg(u, false)?, arg(w, false)?)),
        None => None,
    };
    let build = |lower_args: &[Arg]| {
        let mut data = b"lowerdir=".to_vec();
        for (i, l) in lower_args.iter().enumerate() {
            if i > 0 {
                data.push(b':');
            }
            data.extend_from_slice(&l.text);
        }
        if let Some((u, w)) = &upper {
            data.extend_from_slice(b",upperdir=");
            data.extend_from_slice(&u.text);
            data.extend_from_slice(b",workdir=");
            data.extend_from_slice(&w.text);
        }
        if overlay.userxattr {
            data.extend_from_slice(b",userxattr");
        }
        for (key, value) in overlay.options() {
            data.extend_from_slice(format!(",{key}={value}").as_bytes());
        }
        data
    };
    let plain: Vec<Arg> = overlay
        .lowers
        .iter()
        .map(|l| arg(l, false))
        .collect::<Result<_, _>>()?;
    let mut data = build(&plain);
    let _held;
    if data.len() > LEGACY_LIMIT {
        let by_fd: Vec<Arg> = overlay
            .lowers
            .iter()
            .map(|l| arg(l, true))
            .collect::<Result<_, _>>()?;
        data = build(&by_fd);
        _held = by_fd;
        if data.len() > LEGACY_LIMIT {
            return Err(SnapshotError::OptionsTooLong {
                target: target.to_path_buf(),
                len: data.len(),
                limit: LEGACY_LIMIT,
            });
        }
    }
    let data = CString::new(data).expect("paths hold no NUL");
    let flags = if overlay.upper.is_none() {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    rustix::mount::mount(SOURCE, target, "overlay", flags, data.as_c_str())
        .map_err(|e| mount_error(target, lowers, None, e))
}

fn mount_error(target: &Path, lowers: usize, detail: Option<String>, e: Errno) -> SnapshotError {
    SnapshotError::Mount {
        target: target.to_path_buf(),
        lowers,
        detail,
        source: e.into(),
    }
}

/// What the kernel logged on a filesystem context ("e overlay: ..."
/// lines, read one message per `read(2)`): the reason behind an EINVAL.
fn kernel_log(fs: &OwnedFd) -> Option<String> {
    let mut lines = Vec::new();
    let mut buf = [0u8; 1024];
    // The kernel keeps the last 8 messages.
    for _ in 0..8 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => lines.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    (!lines.is_empty()).then(|| lines.join("; "))
}

#[cfg(test)]
mod tests {
    use kiln_testkit::need::{Root, need};

    use super::*;

    fn tree(root: &Path, layers: usize) -> Vec<PathBuf> {
        // Layer i holds file i and "top" saying i: the topmost wins.
        (0..layers)
            .map(|i| {
                let dir = root.join(format!("layer-{i:03}"));
                fs_err::create_dir_all(&dir).unwrap();
                fs_err::write(dir.join(format!("f{i}")), b"x").unwrap();
                fs_err::write(dir.join("top"), i.to_string()).unwrap();
                dir
            })
            .rev()
            .collect()
    }

    /// Mounts and checks; returns at once (the test skips) without root.
    fn check(legacy: bool, layers: usize, writable: bool) {
        if need(Root).is_none() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lowers = tree(tmp.path(), layers);
        let target = tmp.path().join("mnt");
        fs_err::create_dir(&target).unwrap();
        let upper = writable.then(|| {
            let (u, w) = (tmp.path().join("upper"), tmp.path().join("work"));
            fs_err::create_dir(&u).unwrap();
            fs_err::create_dir(&w).unwrap();
            (u, w)
        });
        let overlay = Overlay {
            lowers,
            upper,
            userxattr: false,
        };
        if legacy {
            mount_legacy(&overlay, &target).unwrap();
        } else {
            mount(&overlay, &target).unwrap();
        }
        let top = fs_err::read_to_string(target.join("top"));
        let all = (0..layers).all(|i| target.join(format!("f{i}")).exists());
        let write = fs_err::write(target.join("new"), b"n");
        unmount(&target).unwrap();
        assert_eq!(top.unwrap(), (layers - 1).to_string());
        assert!(all);
        assert_eq!(write.is_ok(), writable, "{write:?}");
    }

    #[test]
    fn new_api_mounts_many_layers() {
        check(false, 120, true);
    }

    #[test]
    fn legacy_mounts_read_only() {
        check(true, 3, false);
    }

    /// 200 paths under a temp dir overflow a page: the fallback passes
    /// them as /proc/self/fd/N.
    #[test]
    fn legacy_passes_long_lists_by_descriptor() {
        check(true, 200, true);
    }

    /// A process whose working directory is in the mount, and which ends
    /// soon after (as a just-forked child lets go of its descriptors at
    /// `exec`), delays the unmount but does not fail it; one that stays
    /// fails it once the grace is over.
    #[test]
    fn unmount_waits_out_a_short_hold_but_not_a_long_one() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("mnt");
        fs_err::create_dir(&target).unwrap();
        let overlay = Overlay {
            lowers: tree(tmp.path(), 2),
            upper: None,
            userxattr: false,
        };
        let hold = |secs: &str| {
            std::process::Command::new("sleep")
                .arg(secs)
                .current_dir(&target)
                .spawn()
                .unwrap()
        };

        mount(&overlay, &target).unwrap();
        let mut short = hold("0.3");
        let unmounted = unmount(&target);
        short.wait().unwrap();
        unmounted.unwrap();

        mount(&overlay, &target).unwrap();
        let mut long = hold("30");
        let started = Instant::now();
        let e = unmount(&target).unwrap_err();
        let waited = started.elapsed();
        long.kill().unwrap();
        long.wait().unwrap();
        unmount(&target).unwrap();
        let SnapshotError::Unmount { source, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!(source.raw_os_error(), Some(Errno::BUSY.raw_os_error()));
        assert!(waited >= BUSY_GRACE, "{waited:?}");
    }

    #[test]
    fn a_failure_says_what_the_kernel_said() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs_err::write(&file, b"").unwrap();
        let overlay = Overlay {
            lowers: vec![file],
            upper: None,
            userxattr: false,
        };
        let e = mount(&overlay, tmp.path()).unwrap_err();
        let SnapshotError::Mount { detail, lowers, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!(*lowers, 1);
        assert!(
            detail
                .as_deref()
                .unwrap_or_default()
                .contains("is not a directory"),
            "{e}"
        );
    }
}
