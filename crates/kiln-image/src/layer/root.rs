//! The destination of an extraction, as a directory descriptor that path
//! resolution cannot leave.
//!
//! Every lookup goes through `openat2(2)` with `RESOLVE_IN_ROOT`: the kernel
//! resolves `..` and symlinks (absolute ones included) as if the
//! destination were `/`, so a symlink planted by a hostile layer can send a
//! lookup elsewhere inside the destination but never out of it, and no
//! check-then-use race exists between a path check and its use. The last
//! component of a name is never looked up this way: it is created, linked
//! or removed relative to its parent's descriptor with `*at` calls that do
//! not follow it.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

impl Root {
    /// Opens `path`, which must be a directory. `path` itself may be a
    /// symlink: it is the caller's, not the layer's.
    pub(crate) fn open(path: &Path) -> Result<Root, Errno> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path of a cleaned name, for messages.
    pub(crate) fn display(&self, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(std::ffi::OsStr::from_bytes(rel))
        }
    }

    /// Opens the directory at the cleaned name `rel` (`O_PATH`: usable as the
    /// `dirfd` of `*at` calls).
    pub(crate) fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        self.resolve(rel, OFlags::PATH | OFlags::DIRECTORY)
    }

    /// Opens the directory at `rel` for reading its entries, changing its
    /// metadata and xattrs. A final symlink is not followed (ELOOP).
    pub(crate) fn open_dir_rw(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
    }

    /// Opens the directory at `rel` only if no component is a symlink
    /// (ELOOP otherwise): for whiteouts, which name a real directory.
    pub(crate) fn open_dir_no_symlinks(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        loop {
            match rustix::fs::openat2(
                &self.fd,
                rel,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::AGAIN) => continue,
                other => return other,
            }
        }
    }

    fn resolve(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        loop {
            match rustix::fs::openat2(
                &self.fd,
                rel,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            ) {
                // openat2(2): EAGAIN when a concurrent rename made `..`
                // resolution unsafe to finish; the lookup may be retried.
                Err(Errno::AGAIN) => continue,
                other => return other,
            }
        }
    }

    /// Opens the directory at `rel`, first creating (mode 0755, as Docker
    /// does) the directories missing on the way. A name that exists but is
    /// not a directory, or is a symlink that leads nowhere, is an error
    /// (ENOTDIR): a directory is never created at a symlink's target.
    pub(crate) fn make_dir_all(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        match self.open_dir(rel) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let mut cur = self.open_dir(b"")?;
        let mut end = 0;
        for comp in rel.split(|b| *b == b'/') {
            end += comp.len();
            let prefix = &rel[..end];
            end += 1;
            match self.open_dir(prefix) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            // mkdir's mode is filtered by the umask.
                            rustix::fs::chmodat(
                                &cur,
                                comp,
                                Mode::from_raw_mode(0o755),
                                AtFlags::empty(),
                            )?;
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                    cur = rustix::fs::openat(
                        &cur,
                        comp,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| if e == Errno::LOOP { Errno::NOTDIR } else { e })?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }
}

/// The type of `name` in `dir`, not following a symlink; `None` if absent.
pub(crate) fn kind_at(dir: impl AsFd, name: &[u8]) -> Result<Option<(FileType, u64)>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some((FileType::from_raw_mode(st.st_mode), st.st_rdev))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` from `dir`, with everything under it if it is a
/// directory; symlinks are removed, never followed. Returns how many
/// entries were removed.
pub(crate) fn remove_all(dir: impl AsFd, name: &[u8]) -> Result<u64, Errno> {
    let dir = dir.as_fd();
    let Some((kind, _)) = kind_at(dir, name)? else {
        return Ok(0);
    };
    if kind != FileType::Directory {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        return Ok(1);
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut removed = 0;
    for child in names(&fd)? {
        removed += remove_all(&fd, &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(removed + 1)
}

/// The names in a directory opened for reading, without `.` and `..`.
pub(crate) fn names(dir: impl AsFd) -> Result<Vec<Vec<u8>>, Errno> {
    let fd = rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for entry in Dir::new(fd)? {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        let name = name.to_bytes();
        if name != b"." && name != b".." {
            out.push(name.to_vec());
        }
    }
    Ok(out)
}
