//! A directory tree as a descriptor that path resolution cannot leave.
//!
//! Every lookup goes through `openat2(2)` with `RESOLVE_IN_ROOT`: the kernel
//! resolves `..` and symlinks (absolute ones included) as if the tree's top
//! were `/`, so a symlink planted by a hostile layer, archive or build step
//! can send a lookup elsewhere inside the tree but never out of it, and no
//! check-then-use race exists between a path check and its use. Where the
//! kernel has no `openat2` (before 5.6, or a seccomp profile that refuses
//! it), the same rules are walked here one component at a time, each
//! opened `O_NOFOLLOW` relative to its parent's descriptor, `..` taken from
//! our own stack of descriptors. The last component of a name is never
//! looked up this way when it is created, linked or removed: that is done
//! with `*at` calls relative to its parent's descriptor, not following it.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;

use crate::path::{components, join, split};
use crate::resolve::{Lookup, MAX_SYMLINKS, ResolveError, resolve_with};

/// A numeric owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// How a [`Root`] resolves paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// `openat2(2)` with `RESOLVE_IN_ROOT`: the kernel keeps every lookup
    /// inside, even against concurrent renames.
    Kernel,
    /// The same rules, walked a component at a time with `O_NOFOLLOW`.
    /// Safe against symlinks swapped in at any moment; a directory renamed
    /// out of the tree while a lookup is inside it is the one race only
    /// the kernel can close.
    Userspace,
}

impl Resolution {
    /// [`Kernel`](Resolution::Kernel) where this kernel and its seccomp
    /// profile allow `openat2`, asked once per process.
    pub fn detect() -> Resolution {
        static DETECTED: OnceLock<Resolution> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            match rustix::fs::openat2(
                rustix::fs::CWD,
                "/",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(_) => Resolution::Kernel,
                // ENOSYS before 5.6; EPERM or ENOSYS from seccomp; EINVAL
                // for resolve flags the kernel does not know.
                Err(_) => Resolution::Userspace,
            }
        })
    }
}

/// A directory tree whose lookups stay inside it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    resolution: Resolution,
}

/// What a directory created on the way to a path gets.
#[derive(Debug, Clone, Copy)]
pub struct NewDir {
    /// Permission bits, set explicitly (the umask does not apply).
    pub mode: u32,
    /// The owner, or the creating process's.
    pub owner: Option<Owner>,
    /// Access and modification time, or now.
    pub time: Option<Timespec>,
}

impl Default for NewDir {
    /// 0755, the creator's, now: what Docker, BuildKit and containerd give
    /// the parents they create.
    fn default() -> NewDir {
        NewDir {
            mode: 0o755,
            owner: None,
            time: None,
        }
    }
}

/// How the last component of a lookup is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Final {
    /// Followed if it is a symlink (inside the tree).
    Follow,
    /// Not followed: a symlink there is `ELOOP`.
    NoFollow,
}

/// How many times [`Root::resolve`] starts again when a parent it
/// resolved has changed under it, before it gives up with `ELOOP`.
const RESTARTS: usize = 30;

/// Why one pass of [`Root::resolve`] stopped.
enum Changed {
    /// A parent resolved as a directory is a symlink now.
    Parent,
    /// Any other error, returned as it is.
    Not(Errno),
}

impl Root {
    /// Opens the tree at `path` (itself the caller's: it may be a symlink).
    pub fn open(path: &Path) -> Result<Root, Errno> {
        Root::open_with(path, Resolution::detect())
    }

    /// [`open`](Root::open) with the given resolution, for tests of both.
    pub fn open_with(path: &Path, resolution: Resolution) -> Result<Root, Errno> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
            resolution,
        })
    }

    /// The directory at `rel` (symlinks followed inside this tree) as a
    /// tree of its own: lookups below it cannot leave it.
    pub fn subtree(&self, rel: &[u8]) -> Result<Root, Errno> {
        let fd = self.open_at(rel, OFlags::PATH | OFlags::DIRECTORY, Final::Follow)?;
        Ok(Root {
            fd,
            path: self.host(rel),
            resolution: self.resolution,
        })
    }

    /// The tree's host path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How this tree resolves paths.
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    /// The host path of `rel`, for messages.
    pub fn host(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(OsStr::from_bytes(rel))
        }
    }

    /// `rel` with every symlink on the way (the last component included)
    /// followed inside the tree: containerd's `fs.RootPath`. `..` stops at
    /// the top; a missing component is kept as written (where it would be
    /// created). The result is cleaned (`a/b/c`, empty for the top).
    /// `ELOOP` past [`MAX_SYMLINKS`].
    ///
    /// A tree that changes under the resolution (a parallel step renaming
    /// what it looks at) gives one of the states it had: a name that stops
    /// being a symlink between its stat and its readlink is taken as it is
    /// now, and a parent resolved as a directory that has become a symlink
    /// since starts the resolution again from the top ([`RESTARTS`] times
    /// at most, then `ELOOP`).
    pub fn resolve(&self, rel: &[u8]) -> Result<Vec<u8>, Errno> {
        let mut restarts = 0;
        loop {
            match self.resolve_once(rel) {
                Err(Changed::Parent) if restarts < RESTARTS => restarts += 1,
                Err(Changed::Parent) => return Err(Errno::LOOP),
                Err(Changed::Not(e)) => return Err(e),
                Ok(path) => return Ok(path),
            }
        }
    }

    fn resolve_once(&self, rel: &[u8]) -> Result<Vec<u8>, Changed> {
        let resolved = resolve_with(rel, |parents, name, _last| {
            let parent: Vec<&[u8]> = parents.iter().map(|c| c.name.as_slice()).collect();
            // The parents were resolved with no symlink on the way: one
            // there now (ELOOP) was put there since.
            let dir = match self.open_dir_no_symlinks(&parent.join(&b'/')) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Lookup::Missing(())),
                Err(Errno::LOOP) => return Err(Changed::Parent),
                Err(e) => return Err(Changed::Not(e)),
            };
            match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    match rustix::fs::readlinkat(&dir, name, Vec::new()) {
                        Ok(target) => Ok(Lookup::Link(target.into_bytes())),
                        // Changed since the stat (a parallel step renaming
                        // it): taken as it is now, gone or no symlink.
                        Err(Errno::NOENT) => Ok(Lookup::Missing(())),
                        Err(Errno::INVAL) => Ok(Lookup::Found(())),
                        Err(e) => Err(Changed::Not(e)),
                    }
                }
                Ok(_) => Ok(Lookup::Found(())),
                Err(Errno::NOENT | Errno::NOTDIR) => Ok(Lookup::Missing(())),
                Err(e) => Err(Changed::Not(e)),
            }
        });
        match resolved {
            Ok(r) => Ok(r.path()),
            Err(ResolveError::TooManyLinks) => Err(Changed::Not(Errno::LOOP)),
            Err(ResolveError::Lookup(e)) => Err(e),
        }
    }

    /// Opens the directory at `rel` for reading and for changing its
    /// metadata; symlinks on the way, and a final one, resolve inside the
    /// tree.
    pub fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Final::Follow)
    }

    /// [`open_dir`](Root::open_dir), but a final symlink is not followed
    /// (`ENOTDIR`: `O_NOFOLLOW` with `O_DIRECTORY`).
    pub fn open_dir_nofollow(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, Final::NoFollow)
    }

    /// Opens the directory at the cleaned path `rel` only if no component
    /// is a symlink (`ELOOP` otherwise): for what must name a real
    /// directory of the tree, such as a whiteout's.
    pub fn open_dir_no_symlinks(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match self.resolution {
            Resolution::Kernel => retry_again(|| {
                rustix::fs::openat2(
                    &self.fd,
                    dot(rel),
                    flags,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
                )
            }),
            Resolution::Userspace => {
                let mut cur: Option<OwnedFd> = None;
                for comp in components(rel) {
                    if comp == b".." {
                        // BENEATH: a cleaned path never climbs.
                        return Err(Errno::XDEV);
                    }
                    let parent = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
                    let next =
                        rustix::fs::openat(parent, comp, flags | OFlags::NOFOLLOW, Mode::empty())
                            .map_err(|e| match e {
                            // As RESOLVE_NO_SYMLINKS says it.
                            Errno::NOTDIR if is_symlink(parent, comp) => Errno::LOOP,
                            e => e,
                        })?;
                    cur = Some(next);
                }
                match cur {
                    Some(fd) => Ok(fd),
                    None => rustix::fs::openat(&self.fd, c".", flags, Mode::empty()),
                }
            }
        }
    }

    /// The parent directory of `rel` (opened as [`open_dir`](Root::open_dir)
    /// does) and its last component; `.` for the top itself, whose "parent"
    /// is then the top.
    pub fn open_parent<'a>(&self, rel: &'a [u8]) -> Result<(OwnedFd, &'a [u8]), Errno> {
        if rel.is_empty() {
            return Ok((self.open_dir(b"")?, b"."));
        }
        let (parent, name) = split(rel);
        Ok((self.open_dir(parent)?, name))
    }

    /// The status of `rel`, not following a final symlink; `None` if it
    /// does not exist.
    pub fn lstat(&self, rel: &[u8]) -> Result<Option<Stat>, Errno> {
        let (dir, name) = match self.open_parent(rel) {
            Ok(x) => x,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e),
        };
        stat_at(&dir, name)
    }

    /// Opens the directory at the cleaned path `rel`, first creating the
    /// directories missing on the way as `new` says. Symlinks on the way
    /// resolve inside the tree; a component that exists and is not a
    /// directory, or a symlink that leads nowhere, is `ENOTDIR`: a
    /// directory is never created at a symlink's target (callers that want
    /// that, as BuildKit's `resolveRootPath`, [`resolve`](Root::resolve)
    /// first).
    pub fn make_dir_all(&self, rel: &[u8], new: &NewDir) -> Result<OwnedFd, Errno> {
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
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(new.mode)) {
                        Ok(()) => set_new_dir(&cur, comp, new)?,
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

    fn open_at(&self, rel: &[u8], flags: OFlags, last: Final) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlags::CLOEXEC;
        match self.resolution {
            Resolution::Kernel => {
                let flags = match last {
                    Final::Follow => flags,
                    Final::NoFollow => flags | OFlags::NOFOLLOW,
                };
                retry_again(|| {
                    rustix::fs::openat2(
                        &self.fd,
                        dot(rel),
                        flags,
                        Mode::empty(),
                        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                    )
                })
            }
            Resolution::Userspace => self.walk(rel, flags, last),
        }
    }

    /// `RESOLVE_IN_ROOT` walked by hand: one component at a time, each
    /// opened `O_NOFOLLOW` from its parent's descriptor; a symlink is read
    /// and its target spliced in (an absolute one restarts from the top);
    /// `..` pops our own stack, so it stops at the top.
    fn walk(&self, rel: &[u8], flags: OFlags, last: Final) -> Result<OwnedFd, Errno> {
        let mut pending: VecDeque<Vec<u8>> = components(rel).map(<[u8]>::to_vec).collect();
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(comp) = pending.pop_front() {
            if comp == b".." {
                stack.pop();
                continue;
            }
            let dir: BorrowedFd<'_> = stack.last().map_or(self.fd.as_fd(), AsFd::as_fd);
            let is_last = pending.is_empty();
            let st = rustix::fs::statat(dir, comp.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink
                && (!is_last || last == Final::Follow)
            {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(dir, comp.as_slice(), Vec::new())?;
                let target = target.into_bytes();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                for (i, c) in components(&target).enumerate() {
                    pending.insert(i, c.to_vec());
                }
                continue;
            }
            // O_NOFOLLOW: a symlink swapped in since the stat fails here
            // (ELOOP, or ENOTDIR for a directory lookup) instead of leading
            // anywhere.
            if is_last {
                return rustix::fs::openat(
                    dir,
                    comp.as_slice(),
                    flags | OFlags::NOFOLLOW,
                    Mode::empty(),
                );
            }
            let next = rustix::fs::openat(
                dir,
                comp.as_slice(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            stack.push(next);
        }
        let dir = stack.last().map_or(self.fd.as_fd(), AsFd::as_fd);
        rustix::fs::openat(dir, c".", flags, Mode::empty())
    }
}

fn is_symlink(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// `.` for the top, as the `*at` calls want it.
fn dot(rel: &[u8]) -> &[u8] {
    if rel.is_empty() { b"." } else { rel }
}

/// openat2(2): `EAGAIN` when a concurrent rename made `..` resolution
/// unsafe to finish; the lookup may be retried.
fn retry_again(mut open: impl FnMut() -> Result<OwnedFd, Errno>) -> Result<OwnedFd, Errno> {
    loop {
        match open() {
            Err(Errno::AGAIN) => continue,
            other => return other,
        }
    }
}

/// Mode (explicitly: mkdir's is filtered by the umask), owner, times.
fn set_new_dir(dir: &OwnedFd, name: &[u8], new: &NewDir) -> Result<(), Errno> {
    rustix::fs::chmodat(dir, name, Mode::from_raw_mode(new.mode), AtFlags::empty())?;
    if let Some(o) = new.owner {
        chown_at(dir, name, o)?;
    }
    if let Some(t) = new.time {
        rustix::fs::utimensat(dir, name, &stamps(t, t), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

/// The status of `name` in `dir`, not following a symlink; `None` if absent.
pub fn stat_at(dir: impl AsFd, name: &[u8]) -> Result<Option<Stat>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a status is a directory's.
pub fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Changes the owner of `name` in `dir`, not following a symlink.
pub fn chown_at(dir: impl AsFd, name: &[u8], o: Owner) -> Result<(), Errno> {
    rustix::fs::chownat(
        dir,
        name,
        Some(Uid::from_raw(o.uid)),
        Some(Gid::from_raw(o.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// Opens the directory `name` in `dir`, not following a symlink.
pub fn open_child_dir(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes `name` from `dir`, with everything under it if it is a
/// directory; symlinks are removed, never followed. Returns how many
/// entries went.
pub fn remove_all(dir: impl AsFd, name: &[u8]) -> Result<u64, Errno> {
    let dir = dir.as_fd();
    let Some(st) = stat_at(dir, name)? else {
        return Ok(0);
    };
    if !is_dir(&st) {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        return Ok(1);
    }
    let fd = open_child_dir(dir, name)?;
    let mut removed = 0;
    for child in names(&fd)? {
        removed += remove_all(&fd, &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(removed + 1)
}

/// The names in a directory, without `.` and `..`, sorted (Go's
/// `os.ReadDir`, which fsutil walks with, sorts too: the order decides
/// which of several hardlinked names is written first).
pub fn names(dir: impl AsFd) -> Result<Vec<Vec<u8>>, Errno> {
    Ok(typed_names(dir)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// [`names`] with the type each directory entry gives (`Unknown` where the
/// filesystem does not fill it in), for walks that can skip a `stat`.
pub fn typed_names(dir: impl AsFd) -> Result<Vec<(Vec<u8>, FileType)>, Errno> {
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
            out.push((name.to_vec(), entry.file_type()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Access and modification times for the `utimensat` calls.
pub fn stamps(atime: Timespec, mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: atime,
        last_modification: mtime,
    }
}

/// Resolves `path` as a process chrooted at `root` would see it, and
/// returns it as an absolute path inside the root (`/usr/lib/x`; join it
/// to the root with [`host_path`]): the rules of runc's
/// `filepath-securejoin`, which runc applies to mount destinations and
/// BuildKit to working directories and /etc/passwd. A missing component is
/// kept as written: where runc would create it.
pub fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let tree = Root::open(root).map_err(|e| io_at(e, root))?;
    let rel = tree
        .resolve(path.as_os_str().as_bytes())
        .map_err(|e| io_at(e, &root.join(path.strip_prefix("/").unwrap_or(path))))?;
    let mut inside = PathBuf::from("/");
    inside.push(OsStr::from_bytes(&rel));
    Ok(inside)
}

/// `root` joined with an absolute in-root path.
pub fn host_path(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

/// An errno as an `io::Error` that names its path.
fn io_at(e: Errno, path: &Path) -> std::io::Error {
    let e = std::io::Error::from(e);
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// Every test runs against both resolutions.
    fn both(f: impl Fn(Resolution)) {
        f(Resolution::Userspace);
        if Resolution::detect() == Resolution::Kernel {
            f(Resolution::Kernel);
        }
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("usr/lib")).unwrap();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        fs_err::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        symlink("/usr/lib", dir.path().join("lib")).unwrap();
        symlink("../../../../usr", dir.path().join("up")).unwrap();
        symlink("/etc/passwd", dir.path().join("pw")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        dir
    }

    /// A name that a parallel process keeps turning from a symlink into
    /// nothing, a directory and back: each resolution of it, or of a path
    /// below it, is one of the states it had, never an error. As the last
    /// component, the symlink seen by the stat may be gone, or a directory,
    /// by the readlink; as a parent, resolved as a directory, it may be a
    /// symlink when the next component is looked up in it.
    #[test]
    fn a_symlink_changing_under_the_resolution_is_taken_as_it_is() {
        use std::sync::atomic::{AtomicBool, Ordering};
        both(|res| {
            let dir = tempfile::tempdir().unwrap();
            let root = Root::open_with(dir.path(), res).unwrap();
            let name = dir.path().join("sub");
            symlink("/elsewhere", dir.path().join("alt")).unwrap();
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let top = rustix::fs::open(dir.path(), OFlags::PATH, Mode::empty()).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let _ = symlink("/elsewhere", &name);
                        let _ = fs_err::remove_file(&name);
                        let _ = fs_err::create_dir(&name);
                        // A directory and a symlink swapped in one step,
                        // back and forth: `sub` a directory again after.
                        for _ in 0..8 {
                            let _ = rustix::fs::renameat_with(
                                &top,
                                "sub",
                                &top,
                                "alt",
                                rustix::fs::RenameFlags::EXCHANGE,
                            );
                        }
                        let _ = fs_err::remove_dir(&name);
                    }
                });
                let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
                let states: [&[u8]; 4] = [b"sub", b"elsewhere", b"sub/x", b"elsewhere/x"];
                let mut got = Ok(b"sub".to_vec());
                let mut lookups = [&b"sub"[..], b"sub/x"].into_iter().cycle();
                while matches!(&got, Ok(p) if states.contains(&p.as_slice()))
                    && std::time::Instant::now() < end
                {
                    got = root.resolve(lookups.next().unwrap());
                }
                // Before asserting: the scope waits for the thread.
                stop.store(true, Ordering::Relaxed);
                let got = got.map(String::from_utf8);
                assert!(
                    matches!(&got, Ok(Ok(p)) if states.contains(&p.as_bytes())),
                    "{res:?}: {got:?}"
                );
            });
        });
    }

    #[test]
    fn symlinks_and_dot_dot_stay_inside() {
        both(|res| {
            let dir = tree();
            let root = Root::open_with(dir.path(), res).unwrap();
            assert_eq!(root.resolve(b"/lib/x").unwrap(), b"usr/lib/x");
            assert_eq!(root.resolve(b"up/lib").unwrap(), b"usr/lib");
            assert_eq!(root.resolve(b"/../..").unwrap(), b"");
            assert_eq!(root.resolve(b"a"), Err(Errno::LOOP));
            // Opening follows the same way, and reads inside the root.
            let fd = root.open_dir(b"up/../../lib").unwrap();
            let st = rustix::fs::fstat(&fd).unwrap();
            let want = fs_err::metadata(dir.path().join("usr/lib")).unwrap();
            assert_eq!(st.st_ino, std::os::unix::fs::MetadataExt::ino(&want));
            assert_eq!(root.open_dir(b"a").unwrap_err(), Errno::LOOP);
            assert_eq!(root.open_dir_nofollow(b"lib").unwrap_err(), Errno::NOTDIR);
            assert_eq!(
                root.open_dir_no_symlinks(b"up/lib").unwrap_err(),
                Errno::LOOP
            );
            assert!(root.open_dir_no_symlinks(b"usr/lib").is_ok());
        });
    }

    #[test]
    fn an_escaping_symlink_cannot_reach_the_host() {
        both(|res| {
            let outside = tempfile::tempdir().unwrap();
            fs_err::create_dir(outside.path().join("secret")).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let target = format!("{}/secret", outside.path().display());
            symlink(&target, dir.path().join("x")).unwrap();
            let root = Root::open_with(dir.path(), res).unwrap();
            // The absolute target is read inside the root, where it is not.
            assert_eq!(root.open_dir(b"x").unwrap_err(), Errno::NOENT);
            let made = root.make_dir_all(&root.resolve(b"x/y").unwrap(), &NewDir::default());
            assert!(made.is_ok());
            assert!(!outside.path().join("secret/y").exists());
            assert!(dir.path().join(&target[1..]).join("y").is_dir());
        });
    }

    #[test]
    fn directories_are_made_with_mode_owner_and_time() {
        both(|res| {
            let dir = tree();
            let root = Root::open_with(dir.path(), res).unwrap();
            let t = Timespec {
                tv_sec: 1_700_000_000,
                tv_nsec: 0,
            };
            let new = NewDir {
                mode: 0o750,
                owner: Some(Owner {
                    uid: rustix::process::geteuid().as_raw(),
                    gid: rustix::process::getegid().as_raw(),
                }),
                time: Some(t),
            };
            root.make_dir_all(b"lib/a/b", &new).unwrap();
            use std::os::unix::fs::MetadataExt;
            let made = fs_err::metadata(dir.path().join("usr/lib/a/b")).unwrap();
            assert_eq!(made.mode() & 0o7777, 0o750);
            assert_eq!(made.mtime(), 1_700_000_000);
            // A file on the way is not a directory.
            assert_eq!(
                root.make_dir_all(b"etc/passwd/x", &new).unwrap_err(),
                Errno::NOTDIR
            );
        });
    }

    #[test]
    fn remove_all_never_follows_symlinks() {
        let dir = tree();
        let keep = tempfile::tempdir().unwrap();
        fs_err::write(keep.path().join("f"), "x").unwrap();
        fs_err::create_dir(dir.path().join("d")).unwrap();
        symlink(keep.path(), dir.path().join("d/out")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let top = root.open_dir(b"").unwrap();
        assert_eq!(remove_all(&top, b"d").unwrap(), 2);
        assert!(keep.path().join("f").exists());
        assert_eq!(remove_all(&top, b"d").unwrap(), 0);
    }

    #[test]
    fn in_root_paths_for_mount_destinations() {
        let dir = tree();
        fs_err::create_dir(dir.path().join("run")).unwrap();
        symlink(
            "../../../../run/stub-resolv.conf",
            dir.path().join("etc/resolv.conf"),
        )
        .unwrap();
        let got = resolve_in_root(dir.path(), Path::new("/etc/resolv.conf")).unwrap();
        assert_eq!(got, Path::new("/run/stub-resolv.conf"));
        assert_eq!(
            host_path(dir.path(), &got),
            dir.path().join("run/stub-resolv.conf")
        );
        let err = resolve_in_root(dir.path(), Path::new("/a")).unwrap_err();
        assert!(err.to_string().contains("/a"), "{err}");
    }
}
