//! Extended attributes: reading and writing them without following
//! symlinks or opening devices and FIFOs, and which ones an image carries.
//!
//! Files and directories are reached through their descriptors; anything
//! else as `/proc/self/fd/<dirfd>/<name>` ([`proc_path`]) with the
//! `l*xattr` calls: the kernel resolves the directory through our
//! descriptor and does not follow `<name>` if it is a symlink, which is
//! what `lsetxattrat` would do if the kernel had it before 6.13.

use std::os::fd::{AsFd, AsRawFd};

use rustix::buffer::spare_capacity;
use rustix::fs::XattrFlags;
use rustix::io::Errno;

/// Xattr names and values.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The xattr overlayfs reads as "opaque directory"
/// (Documentation/filesystems/overlayfs.rst); a `userxattr` mount reads
/// [`USER_OVERLAY_OPAQUE`] instead.
pub const OVERLAY_OPAQUE: &[u8] = b"trusted.overlay.opaque";
/// The opaque marker of an overlay mounted with `userxattr` (rootless).
pub const USER_OVERLAY_OPAQUE: &[u8] = b"user.overlay.opaque";

/// overlayfs's own bookkeeping (`trusted.overlay.*`, `user.overlay.*`):
/// never copied, never taken from a layer. In an overlay lower dir,
/// `.redirect` or `.metacopy` would make the mount read another path of
/// another layer, and `.opaque` is set only from a layer's OCI marker.
pub fn is_overlay(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Whether an image layer carries the xattr `name`: file capabilities
/// (`security.capability`, what `setcap` writes and Docker and BuildKit
/// keep), POSIX ACLs, and the `user.` and `trusted.` namespaces, but not
/// overlayfs's own (whiteouts and opaque directories are converted, the
/// rest describes an upper dir, not the image) nor the other `security.`
/// attributes (SELinux labels, IMA/EVM signatures), which belong to the
/// host that wrote them.
pub fn in_layer(name: &[u8]) -> bool {
    if is_overlay(name) {
        return false;
    }
    name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
        || name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
}

/// `/proc/self/fd/<dir>/<rel>`: `rel` (a name, or a path without
/// symlinks) below the directory `dir`, as a path the `l*xattr` calls
/// resolve through the descriptor; the directory itself for an empty `rel`.
pub fn proc_path(dir: impl AsFd, rel: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()).into_bytes();
    if !rel.is_empty() {
        p.push(b'/');
        p.extend_from_slice(rel);
    }
    p
}

/// The xattrs of an open file or directory that `keep` accepts, in the
/// order the filesystem lists them. A filesystem without xattr support
/// has none.
pub fn read_fd(fd: impl AsFd, keep: impl Fn(&[u8]) -> bool) -> Result<Xattrs, Errno> {
    let fd = fd.as_fd();
    let names = read_growing(
        || rustix::fs::flistxattr_query(fd),
        |buf| rustix::fs::flistxattr(fd, spare_capacity(buf)),
    );
    collect(names, keep, |name| {
        read_growing(
            || rustix::fs::fgetxattr_query(fd, name),
            |buf| rustix::fs::fgetxattr(fd, name, spare_capacity(buf)),
        )
    })
}

/// The xattrs of `path` (not following a final symlink) that `keep`
/// accepts.
pub fn read_path(path: &[u8], keep: impl Fn(&[u8]) -> bool) -> Result<Xattrs, Errno> {
    let names = read_growing(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, spare_capacity(buf)),
    );
    collect(names, keep, |name| get_path(path, name))
}

/// The value of one xattr of `path` (not following a final symlink).
pub fn get_path(path: &[u8], name: &[u8]) -> Result<Vec<u8>, Errno> {
    read_growing(
        || rustix::fs::lgetxattr_query(path, name),
        |buf| rustix::fs::lgetxattr(path, name, spare_capacity(buf)),
    )
}

/// Sets an xattr on `path` (not following a final symlink).
pub fn set_path(path: &[u8], name: &[u8], value: &[u8]) -> Result<(), Errno> {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty())
}

/// Sets an xattr on an open file or directory.
pub fn set_fd(fd: impl AsFd, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())
}

/// Whether a destination refused an xattr in a way Docker and BuildKit
/// skip over (no permission for the namespace, no xattr support) rather
/// than fail on.
pub fn refused(e: Errno) -> bool {
    matches!(e, Errno::PERM | Errno::NOTSUP | Errno::ACCESS)
}

fn collect(
    names: Result<Vec<u8>, Errno>,
    keep: impl Fn(&[u8]) -> bool,
    mut get: impl FnMut(&[u8]) -> Result<Vec<u8>, Errno>,
) -> Result<Xattrs, Errno> {
    let names = match names {
        Ok(n) => n,
        // No xattr support on this filesystem: none.
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !keep(name) {
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

/// Asks for the size, then reads into a buffer of that size; again if the
/// list or value grew in between (`ERANGE`).
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
    fn what_a_layer_keeps() {
        assert!(in_layer(b"security.capability"));
        assert!(in_layer(b"user.mime_type"));
        assert!(in_layer(b"system.posix_acl_access"));
        assert!(!in_layer(b"security.selinux"));
        assert!(!in_layer(b"trusted.overlay.opaque"));
        assert!(!in_layer(b"user.overlay.origin"));
        assert!(is_overlay(b"trusted.overlay.redirect"));
        assert!(!is_overlay(b"security.capability"));
    }

    #[test]
    fn user_xattrs_round_trip_through_paths_and_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs_err::write(&file, "x").unwrap();
        let path = file.as_os_str().as_encoded_bytes();
        match set_path(path, b"user.kiln.test", b"v\0binary") {
            Ok(()) => {}
            // A temp dir on a filesystem without user xattrs (tmpfs before 6.6).
            Err(Errno::NOTSUP | Errno::PERM) => return,
            Err(e) => panic!("{e}"),
        }
        let long = vec![b'x'; 70_000];
        let _ = set_path(path, b"user.kiln.long", &long[..4000]);
        let got = read_path(path, |n| n.starts_with(b"user.kiln.")).unwrap();
        assert!(got.contains(&(b"user.kiln.test".to_vec(), b"v\0binary".to_vec())));
        let f = fs_err::File::open(&file).unwrap();
        let by_fd = read_fd(&f, |n| n == b"user.kiln.test").unwrap();
        assert_eq!(
            by_fd,
            vec![(b"user.kiln.test".to_vec(), b"v\0binary".to_vec())]
        );
        let parent = fs_err::File::open(dir.path()).unwrap();
        let via_proc = proc_path(parent.file(), b"f");
        assert_eq!(
            get_path(&via_proc, b"user.kiln.test").unwrap(),
            b"v\0binary"
        );
    }
}
