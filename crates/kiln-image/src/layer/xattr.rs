//! Extended attributes: which ones a layer carries, and reading and writing
//! them without following symlinks or opening devices and FIFOs.
//!
//! Files are reached as `/proc/self/fd/<dirfd>/<name>` with the `l*xattr`
//! calls: the kernel resolves the directory through our descriptor and does
//! not follow `<name>` if it is a symlink, which is what `lsetxattrat` would
//! do if the kernel had it before 6.13.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::buffer::spare_capacity;
use rustix::fs::XattrFlags;
use rustix::io::Errno;

/// Xattr names and values, sorted by name where a layer is written.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Whether `layer::write` puts an xattr into the layer.
///
/// Kept: file capabilities (`security.capability`, what `setcap` writes and
/// Docker and BuildKit keep), POSIX ACLs, and the `user.` and `trusted.`
/// namespaces. Dropped: overlayfs's own bookkeeping (`trusted.overlay.*`,
/// `user.overlay.*`: whiteouts and opaque directories are converted, the
/// rest describes the upper dir, not the image), and the other `security.`
/// attributes (SELinux labels, IMA/EVM signatures), which belong to the host
/// that wrote them.
pub(crate) fn keep_on_write(name: &[u8]) -> bool {
    if is_overlay(name) {
        return false;
    }
    name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
}

/// Whether `layer::extract` applies an xattr from a layer. Overlayfs's own
/// attributes never come from a layer: in an overlay lower dir,
/// `trusted.overlay.redirect` or `.metacopy` would make the mount read
/// another path of another layer, and `.opaque` is ours to set from the
/// OCI marker.
pub(crate) fn allowed_on_extract(name: &[u8]) -> bool {
    !is_overlay(name)
}

fn is_overlay(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// `/proc/self/fd/<dir>/<name>`: `name` in the directory `dir`, as a path
/// the `l*xattr` calls resolve through the descriptor.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// The names of the xattrs of `path` (not following a final symlink).
/// A filesystem without xattr support has none.
pub(crate) fn list(path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let raw = read_growing(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, spare_capacity(buf)),
    );
    match raw {
        Ok(raw) => Ok(raw
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
        Err(Errno::NOTSUP) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The value of one xattr of `path` (not following a final symlink).
pub(crate) fn get(path: &[u8], name: &[u8]) -> io::Result<Vec<u8>> {
    read_growing(
        || rustix::fs::lgetxattr_query(path, name),
        |buf| rustix::fs::lgetxattr(path, name, spare_capacity(buf)),
    )
    .map_err(io::Error::from)
}

/// Sets an xattr on `path` (not following a final symlink).
pub(crate) fn set(path: &[u8], name: &[u8], value: &[u8]) -> Result<(), Errno> {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty())
}

/// Sets an xattr on an open file or directory.
pub(crate) fn fset(fd: impl AsFd, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())
}

/// Asks for the size, then reads into a buffer of that size; again if the
/// value grew in between (ERANGE).
fn read_growing(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(keep_on_write(b"security.capability"));
        assert!(keep_on_write(b"user.mime_type"));
        assert!(keep_on_write(b"system.posix_acl_access"));
        assert!(!keep_on_write(b"security.selinux"));
        assert!(!keep_on_write(b"trusted.overlay.opaque"));
        assert!(!keep_on_write(b"user.overlay.origin"));
        assert!(allowed_on_extract(b"security.capability"));
        assert!(!allowed_on_extract(b"trusted.overlay.redirect"));
    }
}
