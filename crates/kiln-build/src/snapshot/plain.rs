//! Plain-directory helpers the snapshotters without mounts share (the
//! tree snapshotter, and the tests' fake).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kiln_fs::xattr;
use rustix::fs::{AtFlags, CWD, FileType, Mode, Stat, Timestamps};

use super::SnapshotError;

/// Gives `dst` the owner (as root), mode, kept xattrs and times of `src`.
pub(crate) fn copy_meta(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let st = lstat(src)?;
    let symlink = kind(&st) == FileType::Symlink;
    if rustix::process::geteuid().is_root() {
        rustix::fs::chownat(
            CWD,
            dst,
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(SnapshotError::errno("changing the owner of", dst))?;
    }
    if !symlink {
        // After the owner: chown(2) clears set-id bits.
        rustix::fs::chmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(SnapshotError::errno("changing the mode of", dst))?;
        let xattrs = xattr::read_path(src.as_os_str().as_bytes(), xattr::in_layer)
            .map_err(SnapshotError::errno("reading the xattrs of", src))?;
        for (name, value) in xattrs {
            match xattr::set_path(dst.as_os_str().as_bytes(), &name, &value) {
                Ok(()) => {}
                // What this user may not set, an extraction would not have set either.
                Err(e) if xattr::refused(e) => {}
                Err(e) => return Err(SnapshotError::errno("setting an xattr of", dst)(e)),
            }
        }
    }
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(SnapshotError::errno("setting the times of", dst))
}

/// The names in a directory, sorted.
pub(crate) fn list(dir: &Path) -> Result<BTreeSet<OsString>, SnapshotError> {
    let mut names = BTreeSet::new();
    for entry in fs_err::read_dir(dir).map_err(SnapshotError::io("reading", dir))? {
        names.insert(
            entry
                .map_err(SnapshotError::io("reading", dir))?
                .file_name(),
        );
    }
    Ok(names)
}

pub(crate) fn lstat(path: &Path) -> Result<Stat, SnapshotError> {
    rustix::fs::lstat(path).map_err(SnapshotError::errno("inspecting", path))
}

#[cfg(feature = "testing")]
pub(crate) fn lstat_if_any(path: &Path) -> Result<Option<Stat>, SnapshotError> {
    match rustix::fs::lstat(path) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(SnapshotError::errno("inspecting", path)(e)),
    }
}

pub(crate) fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

pub(crate) fn read_link(path: &Path) -> Result<PathBuf, SnapshotError> {
    fs_err::read_link(path).map_err(SnapshotError::io("reading the symlink", path))
}

/// Makes `dir` with exactly `mode` (not through the umask).
pub(crate) fn make_dir(dir: &Path, mode: u32) -> Result<(), SnapshotError> {
    let mode = Mode::from_raw_mode(mode);
    rustix::fs::mkdir(dir, mode).map_err(SnapshotError::errno("creating", dir))?;
    rustix::fs::chmod(dir, mode).map_err(SnapshotError::errno("changing the mode of", dir))
}
