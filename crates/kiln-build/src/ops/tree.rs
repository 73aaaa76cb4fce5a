//! Copying one source into the destination root: fsutil's copier
//! (`tonistiigi/fsutil/copy`, `copy.go` and `copy_linux.go`) as BuildKit's
//! file op drives it for Dockerfile sources.
//!
//! - A directory's contents are copied (`CopyDirContents`). The destination
//!   directory keeps its mode and owner; it only gets the source
//!   directory's times (`restoreFileTimestamp`), after everything inside
//!   is written.
//! - Every entry below gets the source's mode (or `--chmod` applied to it,
//!   directories included), the source's owner (or `--chown`; 0:0 for
//!   build-context sources), its atime and mtime (or the creation-time
//!   override) and its xattrs. A directory that already exists at the
//!   destination is merged into and gets all of these too
//!   (`overwriteTargetMetadata`).
//! - A file replaces what is at its name, unless that is a directory
//!   ("cannot replace to directory X with file"); a directory is merged
//!   into a directory and refused over anything else, a symlink to a
//!   directory included ("cannot copy to non-directory: X"), as BuildKit
//!   does.
//! - Symlinks below the copied path are copied as symlinks; regular files
//!   with several links become hardlinks of the first copy, within one
//!   source (fsutil's `inodes` map is per `Copy` call); devices, FIFOs and
//!   sockets are recreated with mknod (a socket of the build context
//!   becomes an empty regular file, as BuildKit's context transfer makes it).
//!
//! Sources are read and the destination written through descriptors:
//! source directories are opened without following symlinks, destination
//! directories were resolved inside the destination root, and names are
//! created with `*at` calls that never follow them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kiln_fs::xattr::{self, Xattrs};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use super::chmod::Chmod;
use super::chown::Owner;
use super::error::CopyError;
use super::root::{self, Root, TreeError, join};
use super::source::{EntryFilter, FilterDecision};
use super::stats::CopyStats;
use crate::stop::stopped;

/// What every entry of one copy gets.
pub(crate) struct Policy<'a> {
    pub(crate) chown: Option<Owner>,
    pub(crate) chmod: Option<&'a Chmod>,
    /// BuildKit's `WithCreatedTime` (SOURCE_DATE_EPOCH): every time set.
    pub(crate) time: Option<Timespec>,
    /// Set to stop the copy: checked before each entry and between the
    /// chunks of a file.
    pub(crate) stop: Option<&'a AtomicBool>,
}

impl Policy<'_> {
    fn check(&self) -> Result<(), CopyError> {
        if stopped(self.stop) {
            Err(CopyError::Stopped)
        } else {
            Ok(())
        }
    }
}

/// How much of a file is copied between two checks of the stop flag.
const CHUNK: u64 = 64 << 20;

/// The source side of an entry: its directory, its name there (`.` for a
/// tree's top) and its status (not following a symlink).
pub(crate) struct Src<'a> {
    pub(crate) dir: &'a OwnedFd,
    pub(crate) name: &'a [u8],
    pub(crate) st: Stat,
}

/// Copies entries of one source tree.
pub(crate) struct Copier<'a> {
    pub(crate) dest: &'a Root,
    pub(crate) src_root: &'a Path,
    pub(crate) policy: &'a Policy<'a>,
    pub(crate) stats: &'a mut CopyStats,
    pub(crate) reset_owners: bool,
    /// The destination directory gets the time of the copy, not the
    /// source directory's (a copy of the build context's root).
    pub(crate) fresh_top: bool,
    pub(crate) filter: Option<Arc<dyn EntryFilter>>,
    /// (dev, ino) of a source file with several links → where its first
    /// copy went.
    links: HashMap<(u64, u64), Vec<u8>>,
    frames: Vec<Frame>,
}

/// A destination directory being filled.
struct Frame {
    /// Its path in the destination root.
    rel: Vec<u8>,
    /// The source directory's status and xattrs.
    st: Stat,
    xattrs: Xattrs,
    /// Open once it exists (a [`Role::Lazy`] directory is created only when
    /// something below it is copied).
    dst: Option<OwnedFd>,
    created: bool,
    role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The copy's destination directory: only its times change.
    Top,
    /// A copied directory.
    Included,
    /// A directory the filter looks into without copying it.
    Lazy,
    /// A directory between a `--parents` pivot and the copied path.
    Parent,
}

impl<'a> Copier<'a> {
    pub(crate) fn new(
        dest: &'a Root,
        src_root: &'a Path,
        policy: &'a Policy<'a>,
        stats: &'a mut CopyStats,
    ) -> Copier<'a> {
        Copier {
            dest,
            src_root,
            policy,
            stats,
            reset_owners: false,
            fresh_top: false,
            filter: None,
            links: HashMap::new(),
            frames: Vec::new(),
        }
    }

    fn src_err(&self, op: &'static str, rel: &[u8], e: Errno) -> CopyError {
        CopyError::Io {
            op,
            root: self.src_root.to_path_buf(),
            path: root::display(rel),
            source: io::Error::from(e),
        }
    }

    fn dst_err(&self, op: &'static str, rel: &[u8], e: Errno) -> CopyError {
        self.dest.err(op, rel, e)
    }

    /// The owner an entry gets.
    fn owner(&self, st: &Stat) -> Owner {
        match self.policy.chown {
            Some(o) => o,
            None if self.reset_owners => Owner::ROOT,
            None => Owner {
                uid: st.st_uid,
                gid: st.st_gid,
            },
        }
    }

    /// The permission and special bits an entry gets.
    fn mode(&self, st: &Stat) -> u32 {
        let own = st.st_mode & 0o7777;
        match self.policy.chmod {
            Some(c) => c.apply(own, root::is_dir(st)),
            None => own,
        }
    }

    fn times(&self, st: &Stat) -> Timestamps {
        if let Some(t) = self.policy.time {
            return root::stamps(t, t);
        }
        root::stamps(
            Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        )
    }

    /// Copies the contents of the source directory `src` (at `src_rel` in
    /// its tree) into the existing destination directory `dst_rel`.
    pub(crate) fn copy_dir_contents(
        &mut self,
        src: &Src<'_>,
        src_rel: &[u8],
        dst_rel: &[u8],
    ) -> Result<(), CopyError> {
        let src_dir =
            open_dir(src.dir, src.name).map_err(|e| self.src_err("opening", src_rel, e))?;
        let dst = self.open_existing_dir(dst_rel)?;
        self.frames.push(Frame {
            rel: dst_rel.to_vec(),
            st: src.st,
            xattrs: Vec::new(),
            dst: Some(dst),
            created: false,
            role: Role::Top,
        });
        self.stats.entries += 1;
        self.stats.dirs += 1;
        self.walk(&src_dir, src_rel, b"")?;
        self.pop()
    }

    /// `COPY --parents`: copies `path` (components below the pivot) of the
    /// pivot directory `src`, keeping the components, into the existing
    /// destination directory `dst_rel`.
    pub(crate) fn copy_with_parents(
        &mut self,
        src: &Src<'_>,
        src_rel: &[u8],
        path: &[u8],
        dst_rel: &[u8],
    ) -> Result<(), CopyError> {
        let not_found = || CopyError::SourceNotFound {
            root: self.src_root.to_path_buf(),
            path: root::display(&join(src_rel, path)),
        };
        let mut dir =
            open_dir(src.dir, src.name).map_err(|e| self.src_err("opening", src_rel, e))?;
        let dst = self.open_existing_dir(dst_rel)?;
        self.frames.push(Frame {
            rel: dst_rel.to_vec(),
            st: src.st,
            xattrs: Vec::new(),
            dst: Some(dst),
            created: false,
            role: Role::Top,
        });
        let comps: Vec<&[u8]> = root::components(path).collect();
        let Some((leaf, parents)) = comps.split_last() else {
            self.frames.pop();
            return self.copy_dir_contents(src, src_rel, dst_rel);
        };
        let (mut cur_src, mut cur_dst, mut sub) = (src_rel.to_vec(), dst_rel.to_vec(), Vec::new());
        // fsutil reaches the path through its include pattern, walking
        // with lstat: the directories on the way must be real ones.
        for comp in parents {
            cur_src = join(&cur_src, comp);
            cur_dst = join(&cur_dst, comp);
            sub = join(&sub, comp);
            let st = root::stat_at(&dir, comp)
                .map_err(|e| self.src_err("inspecting", &cur_src, e))?
                .filter(root::is_dir)
                .ok_or_else(not_found)?;
            if self.decide(&sub, true) == FilterDecision::Exclude {
                return self.unwind();
            }
            let next = open_dir(&dir, comp).map_err(|e| self.src_err("opening", &cur_src, e))?;
            let xattrs = xattr::read_fd(&next, copied)
                .map_err(|e| self.src_err("reading the xattrs of", &cur_src, e))?;
            self.frames.push(Frame {
                rel: cur_dst.clone(),
                st,
                xattrs,
                dst: None,
                created: false,
                role: Role::Parent,
            });
            dir = next;
        }
        let st = root::stat_at(&dir, leaf)
            .map_err(|e| self.src_err("inspecting", &join(&cur_src, leaf), e))?
            .ok_or_else(not_found)?;
        let leaf_src = Src {
            dir: &dir,
            name: leaf,
            st,
        };
        self.child(&leaf_src, &cur_src, &join(&sub, leaf))?;
        self.unwind()
    }

    /// Finishes every open frame, innermost first.
    fn unwind(&mut self) -> Result<(), CopyError> {
        while !self.frames.is_empty() {
            self.pop()?;
        }
        Ok(())
    }

    /// Copies a single non-directory entry to `dst_rel` (whose parent
    /// exists): a file source, or an entry below a copied directory.
    pub(crate) fn copy_leaf(
        &mut self,
        src: &Src<'_>,
        src_rel: &[u8],
        dst_rel: &[u8],
    ) -> Result<(), CopyError> {
        let (dir, name) = self
            .dest
            .open_parent(dst_rel)
            .map_err(|e| self.dst_err("opening the parent of", dst_rel, e))?;
        self.leaf(src, src_rel, &dir, name, dst_rel)
    }

    /// The filter's decision on `sub` (relative to the copy base).
    fn decide(&self, sub: &[u8], is_dir: bool) -> FilterDecision {
        match &self.filter {
            None => FilterDecision::Include,
            Some(f) => f.decide(Path::new(OsStr::from_bytes(sub)), is_dir),
        }
    }

    /// Copies the entries of the open source directory `src_dir` (at
    /// `src_rel`; `sub` below the copy base) into the innermost frame.
    fn walk(&mut self, src_dir: &OwnedFd, src_rel: &[u8], sub: &[u8]) -> Result<(), CopyError> {
        let names = root::names(src_dir).map_err(|e| self.src_err("reading", src_rel, e))?;
        for name in names {
            let child_rel = join(src_rel, &name);
            let Some(st) = root::stat_at(src_dir, &name)
                .map_err(|e| self.src_err("inspecting", &child_rel, e))?
            else {
                continue;
            };
            let src = Src {
                dir: src_dir,
                name: &name,
                st,
            };
            self.child(&src, src_rel, &join(sub, &name))?;
        }
        Ok(())
    }

    /// One entry below the copied path (`sub` below the copy base), into
    /// the innermost frame.
    fn child(&mut self, src: &Src<'_>, src_dir_rel: &[u8], sub: &[u8]) -> Result<(), CopyError> {
        self.policy.check()?;
        let is_dir = root::is_dir(&src.st);
        let decision = self.decide(sub, is_dir);
        let src_rel = join(src_dir_rel, src.name);
        match decision {
            FilterDecision::Exclude => return Ok(()),
            FilterDecision::Descend if !is_dir => return Ok(()),
            _ => {}
        }
        let parent_rel = self
            .frames
            .last()
            .map(|f| f.rel.clone())
            .unwrap_or_default();
        let dst_rel = join(&parent_rel, src.name);
        if !is_dir {
            self.materialize()?;
            // Lent out of the frame for the call, and given back.
            let Some(parent) = self.frames.last_mut().and_then(|f| f.dst.take()) else {
                return Ok(());
            };
            let result = self.leaf(src, &src_rel, &parent, src.name, &dst_rel);
            if let Some(frame) = self.frames.last_mut() {
                frame.dst = Some(parent);
            }
            return result;
        }
        let dir = open_dir(src.dir, src.name).map_err(|e| self.src_err("opening", &src_rel, e))?;
        let xattrs = xattr::read_fd(&dir, copied)
            .map_err(|e| self.src_err("reading the xattrs of", &src_rel, e))?;
        let role = if decision == FilterDecision::Include {
            Role::Included
        } else {
            Role::Lazy
        };
        self.frames.push(Frame {
            rel: dst_rel,
            st: src.st,
            xattrs,
            dst: None,
            created: false,
            role,
        });
        if role == Role::Included {
            self.materialize()?;
        }
        self.walk(&dir, &src_rel, sub)?;
        self.pop()
    }

    /// Creates (or opens) the destination directories of the frames that
    /// have none yet, outermost first.
    fn materialize(&mut self) -> Result<(), CopyError> {
        for i in 0..self.frames.len() {
            if self.frames[i].dst.is_some() {
                continue;
            }
            let Some(parent) = i.checked_sub(1).and_then(|p| self.frames[p].dst.as_ref()) else {
                continue;
            };
            let rel = self.frames[i].rel.clone();
            let name = root::split(&rel).1;
            let existing =
                root::stat_at(parent, name).map_err(|e| self.dst_err("inspecting", &rel, e))?;
            let created = match existing {
                None => {
                    rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.dst_err("creating", &rel, e))?;
                    true
                }
                Some(st) if root::is_dir(&st) => false,
                Some(_) => {
                    return Err(CopyError::NotADirectory {
                        path: root::display(&rel),
                    });
                }
            };
            let fd = open_dir(parent, name).map_err(|e| self.dst_err("opening", &rel, e))?;
            let frame = &mut self.frames[i];
            frame.dst = Some(fd);
            frame.created = created;
            self.stats.entries += 1;
            self.stats.dirs += 1;
        }
        Ok(())
    }

    /// Finishes the innermost frame: its directory's metadata, now that
    /// everything inside is written.
    fn pop(&mut self) -> Result<(), CopyError> {
        let Some(frame) = self.frames.pop() else {
            return Ok(());
        };
        let Some(fd) = &frame.dst else {
            return Ok(());
        };
        let rel = &frame.rel;
        match frame.role {
            Role::Top if self.fresh_top => {
                let now = Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                };
                let times = match self.policy.time {
                    Some(t) => root::stamps(t, t),
                    None => root::stamps(now, now),
                };
                return rustix::fs::futimens(fd, &times)
                    .map_err(|e| self.dst_err("setting the times of", rel, e));
            }
            Role::Top => {}
            Role::Included => self.meta_fd(fd, &frame.st, &frame.xattrs, rel)?,
            Role::Lazy | Role::Parent if frame.created => {
                self.meta_fd(fd, &frame.st, &frame.xattrs, rel)?;
            }
            // fsutil's `copyDirectoryOnly` on an existing parent of an
            // included path: the source's mode, nothing else.
            Role::Parent => rustix::fs::fchmod(fd, Mode::from_raw_mode(frame.st.st_mode & 0o7777))
                .map_err(|e| self.dst_err("setting the mode of", rel, e))?,
            Role::Lazy => return Ok(()),
        }
        rustix::fs::futimens(fd, &self.times(&frame.st))
            .map_err(|e| self.dst_err("setting the times of", rel, e))
    }

    /// Owner, mode and xattrs of an open destination file or directory
    /// (times are the caller's: they go last).
    fn meta_fd(
        &mut self,
        fd: &OwnedFd,
        st: &Stat,
        xattrs: &Xattrs,
        rel: &[u8],
    ) -> Result<(), CopyError> {
        let o = self.owner(st);
        // Owner before mode: chown(2) clears set-id bits; xattrs after
        // both: chown also drops file capabilities.
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(o.uid)),
            Some(rustix::fs::Gid::from_raw(o.gid)),
        )
        .map_err(|e| self.dst_err("setting the owner of", rel, e))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.mode(st)))
            .map_err(|e| self.dst_err("setting the mode of", rel, e))?;
        self.stats.xattrs_skipped += set_all(xattrs, |n, v| xattr::set_fd(fd, n, v));
        Ok(())
    }

    /// A destination directory that must exist and be a directory (not a
    /// symlink to one).
    fn open_existing_dir(&self, rel: &[u8]) -> Result<OwnedFd, CopyError> {
        let (parent, name) = self
            .dest
            .open_parent(rel)
            .map_err(|e| self.dst_err("opening the parent of", rel, e))?;
        match root::stat_at(&parent, name).map_err(|e| self.dst_err("inspecting", rel, e))? {
            Some(st) if root::is_dir(&st) => {}
            _ => {
                return Err(CopyError::NotADirectory {
                    path: root::display(rel),
                });
            }
        }
        open_dir(&parent, name).map_err(|e| self.dst_err("opening", rel, e))
    }

    /// Writes the non-directory `src` as `name` in the destination
    /// directory `dir` (at `dst_rel`).
    fn leaf(
        &mut self,
        src: &Src<'_>,
        src_rel: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        dst_rel: &[u8],
    ) -> Result<(), CopyError> {
        // fsutil's `ensureEmptyFileTarget`.
        if let Some(st) =
            root::stat_at(dir, name).map_err(|e| self.dst_err("inspecting", dst_rel, e))?
        {
            if root::is_dir(&st) {
                return Err(CopyError::ReplaceDirectory {
                    path: root::display(dst_rel),
                });
            }
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| self.dst_err("replacing", dst_rel, e))?;
        }
        let st = &src.st;
        let kind = FileType::from_raw_mode(st.st_mode);
        let times = self.times(st);
        self.stats.entries += 1;
        match kind {
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        return self.hardlink(&first, dir, name, dst_rel);
                    }
                    self.links.insert(key, dst_rel.to_vec());
                }
                let input = rustix::fs::openat(
                    src.dir,
                    src.name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.src_err("opening", src_rel, e))?;
                let xattrs = xattr::read_fd(&input, copied)
                    .map_err(|e| self.src_err("reading the xattrs of", src_rel, e))?;
                let output = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.dst_err("creating", dst_rel, e))?;
                let (input, mut output) = (File::from(input), File::from(output));
                // std's copy uses copy_file_range(2) between files, as
                // fsutil's `copyFileContent` does; a chunk at a time, so
                // that a cancel stops a big file's copy.
                let mut n = 0;
                loop {
                    self.policy.check()?;
                    let copied = io::copy(&mut (&input).take(CHUNK), &mut output).map_err(|e| {
                        CopyError::Io {
                            op: "copying to",
                            root: self.dest.path().to_path_buf(),
                            path: root::display(dst_rel),
                            source: e,
                        }
                    })?;
                    n += copied;
                    if copied < CHUNK {
                        break;
                    }
                }
                let output = OwnedFd::from(output);
                self.meta_fd(&output, st, &xattrs, dst_rel)?;
                rustix::fs::futimens(&output, &times)
                    .map_err(|e| self.dst_err("setting the times of", dst_rel, e))?;
                self.stats.files += 1;
                self.stats.bytes += n;
                return Ok(());
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src.dir, src.name, Vec::new())
                    .map_err(|e| self.src_err("reading the symlink", src_rel, e))?;
                rustix::fs::symlinkat(target.as_bytes(), dir, name)
                    .map_err(|e| self.dst_err("creating the symlink", dst_rel, e))?;
                self.stats.symlinks += 1;
            }
            // BuildKit's context transfer sends a socket as an empty
            // regular file with the socket's mode (Docker 26, checked by
            // the conformance suite); a socket in an image stays a socket.
            FileType::Socket if self.reset_owners => {
                rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.dst_err("creating", dst_rel, e))?;
                self.stats.files += 1;
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), st.st_rdev)
                    .map_err(|e| self.dst_err("creating", dst_rel, e))?;
                if kind == FileType::Fifo {
                    self.stats.fifos += 1;
                } else {
                    self.stats.devices += 1;
                }
            }
            _ => {
                return Err(self.src_err("copying", src_rel, Errno::NOTSUP));
            }
        }
        // Symlinks and special files: by name, never opened or followed.
        let o = self.owner(st);
        root::chown_at(dir, name, o)
            .map_err(|e| self.dst_err("setting the owner of", dst_rel, e))?;
        if kind != FileType::Symlink {
            rustix::fs::chmodat(
                dir,
                name,
                Mode::from_raw_mode(self.mode(st)),
                AtFlags::empty(),
            )
            .map_err(|e| self.dst_err("setting the mode of", dst_rel, e))?;
        }
        let xattrs = xattr::read_path(&xattr::proc_path(src.dir, src.name), copied)
            .map_err(|e| self.src_err("reading the xattrs of", src_rel, e))?;
        let at = xattr::proc_path(dir, name);
        self.stats.xattrs_skipped += set_all(&xattrs, |n, v| xattr::set_path(&at, n, v));
        rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.dst_err("setting the times of", dst_rel, e))
    }

    fn hardlink(
        &mut self,
        first: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        dst_rel: &[u8],
    ) -> Result<(), CopyError> {
        let (first_dir, first_name) = self
            .dest
            .open_parent(first)
            .map_err(|e| self.dst_err("opening the parent of", first, e))?;
        rustix::fs::linkat(&first_dir, first_name, dir, name, AtFlags::empty())
            .map_err(|e| self.dst_err("creating the hardlink", dst_rel, e))?;
        self.stats.hardlinks += 1;
        Ok(())
    }
}

/// Writes a heredoc source: BuildKit's `Mkfile(name, 0644, data)` in a
/// scratch state, then copied like any file (root's unless `--chown`,
/// `--chmod` applied to 0644, written now unless the time is fixed).
pub(crate) fn write_inline(
    dest: &Root,
    policy: &Policy<'_>,
    data: &[u8],
    dst_rel: &[u8],
    stats: &mut CopyStats,
) -> Result<(), CopyError> {
    let err = |op, e| dest.err(op, dst_rel, e);
    let (dir, name) = dest
        .open_parent(dst_rel)
        .map_err(|e| err("opening the parent of", e))?;
    if let Some(st) = root::stat_at(&dir, name).map_err(|e| err("inspecting", e))? {
        if root::is_dir(&st) {
            return Err(CopyError::ReplaceDirectory {
                path: root::display(dst_rel),
            });
        }
        rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| err("replacing", e))?;
    }
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| err("creating", e))?;
    let mut file = File::from(fd);
    io::Write::write_all(&mut file, data).map_err(|e| CopyError::Io {
        op: "writing",
        root: dest.path().to_path_buf(),
        path: root::display(dst_rel),
        source: e,
    })?;
    let fd = OwnedFd::from(file);
    let o = policy.chown.unwrap_or(Owner::ROOT);
    rustix::fs::fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(o.uid)),
        Some(rustix::fs::Gid::from_raw(o.gid)),
    )
    .map_err(|e| err("setting the owner of", e))?;
    let mode = policy.chmod.map_or(0o644, |c| c.apply(0o644, false));
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
        .map_err(|e| err("setting the mode of", e))?;
    if let Some(t) = policy.time {
        rustix::fs::futimens(&fd, &root::stamps(t, t))
            .map_err(|e| err("setting the times of", e))?;
    }
    stats.entries += 1;
    stats.files += 1;
    stats.bytes += data.len() as u64;
    Ok(())
}

/// Opens the directory `name` in `dir` for reading, not following a
/// symlink.
pub(crate) fn open_dir(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Which xattrs a copy carries: BuildKit copies every xattr of every entry
/// (fsutil's `copyXAttrs`), and kiln does too, but for overlayfs's own: a
/// source that is an unpacked layer directory carries them as bookkeeping
/// of that layer, and written into the destination they would change what
/// the overlay shows.
fn copied(name: &[u8]) -> bool {
    !xattr::is_overlay(name)
}

/// Sets every xattr; returns how many the destination refused, which
/// BuildKit only logs.
fn set_all(xattrs: &Xattrs, mut set: impl FnMut(&[u8], &[u8]) -> Result<(), Errno>) -> u64 {
    xattrs.iter().filter(|(n, v)| set(n, v).is_err()).count() as u64
}
