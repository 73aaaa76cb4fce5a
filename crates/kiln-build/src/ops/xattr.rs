//! Extended attributes of copied entries.
//!
//! BuildKit copies every xattr of every entry (fsutil's `copyXAttrs`) and
//! only logs the ones the destination refuses; kiln does the same and
//! counts them. It leaves out overlayfs's own attributes
//! (`trusted.overlay.*`, `user.overlay.*`): a source that is an unpacked
//! layer directory carries them as bookkeeping of that layer, and written
//! into the destination they would change what the overlay shows.
//!
//! Files and directories are reached through their descriptors; symlinks
//! and special files as `/proc/self/fd/<dirfd>/<name>` with the `l*xattr`
//! calls, which resolve the directory through the descriptor and do not
//! follow `<name>`.

use std::os::fd::{AsFd, AsRawFd};

use rustix::buffer::spare_capacity;
use rustix::fs::XattrFlags;
use rustix::io::Errno;

pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn copied(name: &[u8]) -> bool {
    !(name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay."))
}

/// `/proc/self/fd/<dir>/<name>`.
pub(crate) fn proc_path(dir: impl AsFd, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// The xattrs of an open file or directory.
pub(crate) fn read_fd(fd: impl AsFd) -> Result<Xattrs, Errno> {
    let fd = fd.as_fd();
    let names = growing(
        || rustix::fs::flistxattr_query(fd),
        |buf| rustix::fs::flistxattr(fd, spare_capacity(buf)),
    );
    collect(names, |name| {
        growing(
            || rustix::fs::fgetxattr_query(fd, name),
            |buf| rustix::fs::fgetxattr(fd, name, spare_capacity(buf)),
        )
    })
}

/// The xattrs of `path` (not following a final symlink).
pub(crate) fn read_path(path: &[u8]) -> Result<Xattrs, Errno> {
    let names = growing(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, spare_capacity(buf)),
    );
    collect(names, |name| {
        growing(
            || rustix::fs::lgetxattr_query(path, name),
            |buf| rustix::fs::lgetxattr(path, name, spare_capacity(buf)),
        )
    })
}

fn collect(
    names: Result<Vec<u8>, Errno>,
    mut get: impl FnMut(&[u8]) -> Result<Vec<u8>, Errno>,
) -> Result<Xattrs, Errno> {
    let names = match names {
        Ok(n) => n,
        // No xattr support on the source filesystem: none to copy.
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !copied(name) {
            continue;
        }
        match get(name) {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed since it was listed.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Sets `xattrs` on an open file or directory; returns how many the
/// destination refused.
pub(crate) fn write_fd(fd: impl AsFd, xattrs: &Xattrs) -> u64 {
    let fd = fd.as_fd();
    xattrs
        .iter()
        .filter(|(n, v)| rustix::fs::fsetxattr(fd, n.as_slice(), v, XattrFlags::empty()).is_err())
        .count() as u64
}

/// Sets `xattrs` on `path` (not following a final symlink); returns how
/// many the destination refused.
pub(crate) fn write_path(path: &[u8], xattrs: &Xattrs) -> u64 {
    xattrs
        .iter()
        .filter(|(n, v)| rustix::fs::lsetxattr(path, n.as_slice(), v, XattrFlags::empty()).is_err())
        .count() as u64
}

/// Asks for the size, then reads into a buffer of that size; again if the
/// value grew in between (ERANGE).
fn growing(
    mut query: impl FnMut() -> Result<usize, Errno>,
    mut read: impl FnMut(&mut Vec<u8>) -> Result<usize, Errno>,
) -> Result<Vec<u8>, Errno> {
    loop {
        let size = query()?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = Vec::with_capacity(size);
        match read(&mut buf) {
            Ok(_) => return Ok(buf),
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
