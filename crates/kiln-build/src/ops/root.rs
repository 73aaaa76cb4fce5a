//! A directory tree (a source tree or the destination root) as a
//! descriptor that path resolution cannot leave.
//!
//! BuildKit resolves every COPY path with containerd's `fs.RootPath`:
//! symlinks are followed as if the tree's top were `/`, and `..` stops
//! there. kiln does the same twice over: [`Root::resolve`] gives the
//! resolved path (what BuildKit computes), and every directory is then
//! opened with `openat2(2)` and `RESOLVE_IN_ROOT`, so that a symlink swapped
//! in between cannot send a lookup out of the tree either. Final
//! components are created, linked or removed with `*at` calls relative to
//! their parent's descriptor, without following them.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use super::chown::Owner;
use super::error::{CopyError, errno};

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// What a directory created on the way to a destination gets (fsutil's
/// `MkdirAll`: mode 0755, the `--chown` owner, the creation time override).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NewDir {
    pub(crate) owner: Option<Owner>,
    /// The creation-time override, for atime and mtime.
    pub(crate) time: Option<Timespec>,
}

impl Root {
    /// Opens the tree at `path` (itself the caller's: it may be a symlink).
    pub(crate) fn open(path: &Path) -> Result<Root, CopyError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CopyError::Io {
            op: "opening",
            root: path.to_path_buf(),
            path: "/".into(),
            source: errno(e),
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory at the (already resolved) path `rel` of `parent`, as
    /// a tree of its own: lookups below it cannot leave it.
    pub(crate) fn subtree(parent: &Root, rel: &[u8]) -> Result<Root, CopyError> {
        let fd = parent
            .open_dir(rel)
            .map_err(|e| parent.err("opening", rel, e))?;
        Ok(Root {
            fd,
            path: parent.host(rel),
        })
    }

    /// The tree's host path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `rel`, for messages.
    pub(crate) fn host(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(OsStr::from_bytes(rel))
        }
    }

    /// An I/O error on `rel` inside this tree.
    pub(crate) fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> CopyError {
        CopyError::Io {
            op,
            root: self.path.clone(),
            path: display(rel),
            source: errno(e),
        }
    }

    /// `rel` with every symlink on the way (the last component included)
    /// followed inside the tree: containerd's `fs.RootPath`. `..` stops at
    /// the top; a missing component ends the resolution, and the rest is
    /// kept as written (where it would be created). The result is cleaned
    /// (`a/b/c`, empty for the top).
    pub(crate) fn resolve(&self, rel: &[u8]) -> Result<Vec<u8>, Errno> {
        let mut pending: VecDeque<Vec<u8>> = components(rel).map(<[u8]>::to_vec).collect();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        let mut missing = false;
        while let Some(part) = pending.pop_front() {
            if part == b".." {
                resolved.pop();
                continue;
            }
            if missing {
                resolved.push(part);
                continue;
            }
            let parent = match self.open_dir(&resolved.join(&b'/')) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => {
                    missing = true;
                    resolved.push(part);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match rustix::fs::statat(&parent, part.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::LOOP);
                    }
                    let target = rustix::fs::readlinkat(&parent, part.as_slice(), Vec::new())?;
                    let target = target.into_bytes();
                    if target.starts_with(b"/") {
                        resolved.clear();
                    }
                    for (i, c) in components(&target).enumerate() {
                        pending.insert(i, c.to_vec());
                    }
                }
                Ok(_) => resolved.push(part),
                Err(Errno::NOENT | Errno::NOTDIR) => {
                    missing = true;
                    resolved.push(part);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(resolved.join(&b'/'))
    }

    /// Opens the directory at `rel` for reading and for changing its
    /// metadata; symlinks on the way resolve inside the tree, and a final
    /// symlink is followed the same way.
    pub(crate) fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    fn open_at(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
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

    /// The parent directory of `rel` and its last component (`.` for the
    /// top itself, whose "parent" is then the top).
    pub(crate) fn open_parent<'a>(&self, rel: &'a [u8]) -> Result<(OwnedFd, &'a [u8]), Errno> {
        if rel.is_empty() {
            return Ok((self.open_dir(b"")?, b"."));
        }
        let (parent, name) = split(rel);
        Ok((self.open_dir(parent)?, name))
    }

    /// The status of `rel`, not following a final symlink; `None` if it does
    /// not exist.
    pub(crate) fn lstat(&self, rel: &[u8]) -> Result<Option<Stat>, Errno> {
        let (dir, name) = match self.open_parent(rel) {
            Ok(x) => x,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e),
        };
        stat_at(&dir, name)
    }

    /// Opens the directory at the cleaned path `rel`, creating the missing
    /// directories on the way as fsutil's `MkdirAll` does (mode 0755
    /// whatever the umask, the given owner and times). A component that
    /// exists and is not a directory is ENOTDIR.
    pub(crate) fn make_dir_all(&self, rel: &[u8], new: &NewDir) -> Result<OwnedFd, Errno> {
        match self.open_dir(rel) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let mut cur = self.open_dir(b"")?;
        let mut prefix = Vec::new();
        for comp in components(rel) {
            prefix = join(&prefix, comp);
            match self.open_dir(&prefix) {
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
                            if let Some(o) = new.owner {
                                chown_at(&cur, comp, o)?;
                            }
                            if let Some(t) = new.time {
                                rustix::fs::utimensat(
                                    &cur,
                                    comp,
                                    &stamps(t, t),
                                    AtFlags::SYMLINK_NOFOLLOW,
                                )?;
                            }
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                    cur = rustix::fs::openat(
                        &cur,
                        comp,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
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

/// The status of `name` in `dir`, not following a symlink; `None` if absent.
pub(crate) fn stat_at(dir: impl AsFd, name: &[u8]) -> Result<Option<Stat>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

pub(crate) fn chown_at(dir: impl AsFd, name: &[u8], o: Owner) -> Result<(), Errno> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(o.uid)),
        Some(rustix::fs::Gid::from_raw(o.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// Removes `name` from `dir`, with everything under it if it is a
/// directory; symlinks are removed, never followed.
pub(crate) fn remove_all(dir: impl AsFd, name: &[u8]) -> Result<(), Errno> {
    let dir = dir.as_fd();
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in names(&fd)? {
        remove_all(&fd, &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// The names in a directory opened for reading, without `.` and `..`,
/// sorted (Go's `os.ReadDir`, which fsutil walks with, sorts too: the order
/// decides which of several hardlinked names is written first).
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
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(name.to_vec());
        }
    }
    out.sort();
    Ok(out)
}

/// The normal components of a path (`.`, empty ones and a leading `/`
/// dropped; `..` kept).
pub(crate) fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Splits a cleaned path into its parent and last component.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `parent/name` (or `name` at the top).
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        p.extend_from_slice(parent);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A cleaned in-tree path as the build shows it: `/a/b`.
pub(crate) fn display(rel: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

/// Access and modification times for the `utimensat` calls.
pub(crate) fn stamps(atime: Timespec, mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: atime,
        last_modification: mtime,
    }
}
