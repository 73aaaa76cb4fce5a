//! What of an upper dir is no change.
//!
//! After a step the upper dir is the diff, with one catch: overlayfs
//! copies a lower directory up as soon as anything is created in it, and
//! a file as soon as its metadata is touched (overlayfs.rst, "Non-directories"
//! and "Directories"), and a copy-up stays when the change is undone. The
//! RUN sandbox creates and removes mount-point stubs (/etc/resolv.conf,
//! /etc/hosts, /etc/hostname), so every RUN would leave /etc in its layer.
//!
//! BuildKit's overlay differ (`util/overlay/overlay_linux.go`: `Changes`,
//! `checkDelete`, `sameDirent`, the same comparison as continuity's and
//! Docker's `changes.go`) records an entry of the upper dir only if it
//! differs from what the lower layers show at that path, and containerd's
//! tar writer puts back the parent directories of what it records
//! (`ChangeWriter.includeParents`). This module computes the same thing,
//! as the set of names `layer::write` leaves out:
//!
//! - a directory whose file type, permissions, owner and kept xattrs equal
//!   the lower directory's (its mtime is not compared: creating and
//!   deleting a name changes it, moby/moby#9874) is left out unless
//!   something under it is kept;
//! - a non-directory is left out if, in addition, its size and mtime
//!   seconds are equal and either both mtimes have the same non-zero
//!   nanoseconds, or both have none (a time that came from a tar) and the
//!   content (a symlink's target) is equal;
//! - a whiteout of a name no lower layer has is left out (`checkDelete`),
//!   and so is a socket (a tar cannot hold one);
//! - an opaque directory is kept with everything in it: its marker hides
//!   all of the lower directory, so all of the upper one is the diff.
//!
//! One difference from BuildKit: it compares only `security.capability`
//! among the xattrs, which loses a `setfattr` on an otherwise unchanged
//! file; kiln compares every xattr a layer carries.
//!
//! The lower layers are not mounted for this: the path is looked up in
//! each snapshot directory, topmost first, as overlayfs does
//! (overlayfs.rst, "whiteouts and opaque directories"): a whiteout hides
//! the name below it, a non-directory ends the lookup, and a directory
//! merges with the ones below unless it is opaque. Where a lookup cannot
//! be done (a path over PATH_MAX), the entry is kept: keeping an unchanged
//! entry costs bytes, never correctness.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use kiln_fs::typed_names;
use kiln_fs::xattr::{self, Xattrs, proc_path};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::SnapshotError;

/// The xattrs marking an opaque directory (overlayfs.rst, "whiteouts and
/// opaque directories"): `trusted.` for kiln's mounts as root, `user.` for
/// its `userxattr` mounts in a user namespace. Either says opaque: one
/// that this process may not read (`trusted.*` in a user namespace) reads
/// as absent, and a snapshotter only ever writes its own.
const OPAQUE: [&[u8]; 2] = [xattr::OVERLAY_OPAQUE, xattr::USER_OVERLAY_OPAQUE];

/// The outcome for an upper dir.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    /// Names (relative to the upper dir) to leave out of the layer.
    pub(crate) exclude: HashSet<Vec<u8>>,
    /// Nothing is left: the step made no layer.
    pub(crate) empty: bool,
}

/// Compares the upper dir `upper` with the lower dirs `lowers` (topmost
/// first) it was mounted over.
pub(crate) fn diff(upper: &Path, lowers: &[PathBuf]) -> Result<Diff, SnapshotError> {
    compare(upper, lowers, false)
}

/// Whether [`diff`] would find a change (`!empty`), stopping at the first
/// one: a step's seal needs to know that much at once, its layer's
/// writer the rest.
pub(crate) fn changed(upper: &Path, lowers: &[PathBuf]) -> Result<bool, SnapshotError> {
    Ok(!compare(upper, lowers, true)?.empty)
}

fn compare(upper: &Path, lowers: &[PathBuf], first_change: bool) -> Result<Diff, SnapshotError> {
    let roots = lowers
        .iter()
        .map(|l| {
            rustix::fs::open(
                l,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(SnapshotError::errno("opening", l))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let top = open_dir(rustix::fs::CWD, upper).map_err(SnapshotError::errno("opening", upper))?;
    let mut d = Differ {
        upper,
        roots,
        first_change,
        diff: Diff::default(),
    };
    let root_lowers = Some((0..lowers.len()).collect());
    let kept = d.walk(top, root_lowers)?;
    d.diff.empty = !kept;
    Ok(d.diff)
}

struct Differ<'a> {
    upper: &'a Path,
    roots: Vec<OwnedFd>,
    /// Stop at the first change (then `diff.exclude` is incomplete).
    first_change: bool,
    diff: Diff,
}

/// A directory of the upper dir being walked.
struct Frame {
    fd: OwnedFd,
    rel: Vec<u8>,
    /// With the type its directory entry gives.
    names: std::vec::IntoIter<(Vec<u8>, FileType)>,
    /// The lower layers (indices into `roots`) whose directory at `rel`
    /// shows through, topmost first; `None` if that cannot be known.
    lowers: Option<Vec<usize>>,
    /// The directory itself equals the lower one.
    same: bool,
    /// Something under it is kept.
    kept: bool,
}

/// What the lower layers show at a path.
struct Lower {
    /// The layer whose entry shows, and its stat.
    shown: Option<(usize, Stat)>,
    /// For a directory: the layers whose directory merges into it.
    dirs: Vec<usize>,
}

impl Differ<'_> {
    /// Walks the upper dir depth first, without recursion (a step can make
    /// a tree deeper than the stack would like). Returns whether anything
    /// is kept.
    fn walk(&mut self, top: OwnedFd, lowers: Option<Vec<usize>>) -> Result<bool, SnapshotError> {
        let mut stack = vec![self.frame(top, Vec::new(), lowers, false)?];
        loop {
            let depth = stack.len();
            let frame = stack.last_mut().expect("the root frame is popped last");
            // Something under the frame is kept, or it is a directory (not
            // the root) that differs, kept when it is popped: so will be
            // the root.
            if self.first_change && (frame.kept || (depth > 1 && !frame.same)) {
                return Ok(true);
            }
            let Some((name, hint)) = frame.names.next() else {
                let done = stack.pop().expect("non-empty");
                let kept = done.kept || !done.same;
                match stack.last_mut() {
                    None => return Ok(done.kept),
                    Some(parent) => {
                        if kept {
                            parent.kept = true;
                        } else {
                            self.diff.exclude.insert(done.rel);
                        }
                    }
                }
                continue;
            };
            // Where no lower directory shows through, a file, a symlink,
            // a FIFO or a device other than a whiteout is new, so kept:
            // the entry's type says enough, without a stat (in the new
            // directories of a `pip install`, nearly every entry).
            if frame.lowers.as_ref().is_none_or(Vec::is_empty)
                && matches!(
                    hint,
                    FileType::RegularFile
                        | FileType::Symlink
                        | FileType::Fifo
                        | FileType::BlockDevice
                )
            {
                frame.kept = true;
                continue;
            }
            let rel = join(&frame.rel, &name);
            let st = rustix::fs::statat(&frame.fd, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.err("inspecting", &rel, e))?;
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind == FileType::Socket {
                // A tar cannot hold one: containerd's tar writer skips it
                // before it adds parents, so it changes nothing.
                self.diff.exclude.insert(rel);
                continue;
            }
            if kind == FileType::Directory && self.opaque_upper(&frame.fd, &name, &rel)? {
                frame.kept = true;
                continue;
            }
            // Unknowable (see the module docs): compared with nothing, and
            // the same for everything under it.
            let lower = match &frame.lowers {
                Some(lowers) => self.lookup(lowers, &rel)?,
                None => None,
            };

            if kind == FileType::CharacterDevice && st.st_rdev == 0 {
                // A whiteout: a change only if it hides something.
                if lower.as_ref().is_none_or(|l| l.shown.is_some()) {
                    frame.kept = true;
                } else {
                    self.diff.exclude.insert(rel);
                }
                continue;
            }
            if kind == FileType::Directory {
                let fd = open_dir(&frame.fd, &name).map_err(|e| self.err("opening", &rel, e))?;
                let same = match lower.as_ref().and_then(|l| l.shown.as_ref()) {
                    Some((layer, lst)) => {
                        FileType::from_raw_mode(lst.st_mode) == FileType::Directory
                            && same_stat(&st, lst)
                            && self.same_xattrs(frame.fd.as_fd(), &name, *layer, &rel)?
                    }
                    None => false,
                };
                let sub = self.frame(fd, rel, lower.map(|l| l.dirs), same)?;
                stack.push(sub);
                continue;
            }
            let same = match lower.as_ref().and_then(|l| l.shown.as_ref()) {
                Some((layer, lst)) => self.same_entry(&frame.fd, &name, &st, *layer, lst, &rel)?,
                None => false,
            };
            if same {
                self.diff.exclude.insert(rel);
            } else {
                frame.kept = true;
            }
        }
    }

    fn frame(
        &self,
        fd: OwnedFd,
        rel: Vec<u8>,
        lowers: Option<Vec<usize>>,
        same: bool,
    ) -> Result<Frame, SnapshotError> {
        let names = typed_names(&fd).map_err(|e| self.err("reading", &rel, e))?;
        Ok(Frame {
            fd,
            rel,
            names: names.into_iter(),
            lowers,
            same,
            kept: false,
        })
    }

    /// Looks `rel` up in the layers `lowers` (where its parent directory
    /// shows through), as overlayfs does; `None` if the path is too long
    /// to look up.
    fn lookup(&self, lowers: &[usize], rel: &[u8]) -> Result<Option<Lower>, SnapshotError> {
        let mut out = Lower {
            shown: None,
            dirs: Vec::new(),
        };
        for &layer in lowers {
            let st = match rustix::fs::statat(&self.roots[layer], rel, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(Errno::NAMETOOLONG) => return Ok(None),
                Err(e) => return Err(self.lower_err(layer, rel, e)),
            };
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind == FileType::CharacterDevice && st.st_rdev == 0 {
                break;
            }
            if out.shown.is_none() {
                out.shown = Some((layer, st));
            }
            if kind != FileType::Directory {
                break;
            }
            out.dirs.push(layer);
            match self.opaque_lower(layer, rel)? {
                Some(false) => {}
                Some(true) => break,
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn opaque_upper(&self, dir: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<bool, SnapshotError> {
        let path = proc_path(dir.as_fd(), name);
        for opaque in OPAQUE {
            let v =
                get_xattr(&path, opaque).map_err(|e| self.err("reading the xattrs of", rel, e))?;
            if v.as_deref() == Some(b"y") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a lower directory is opaque; `None` if the path is too long.
    fn opaque_lower(&self, layer: usize, rel: &[u8]) -> Result<Option<bool>, SnapshotError> {
        let path = proc_path(self.roots[layer].as_fd(), rel);
        for opaque in OPAQUE {
            match get_xattr(&path, opaque) {
                Ok(v) if v.as_deref() == Some(b"y") => return Ok(Some(true)),
                Ok(_) => {}
                Err(Errno::NAMETOOLONG) => return Ok(None),
                Err(e) => return Err(self.lower_err(layer, rel, e)),
            }
        }
        Ok(Some(false))
    }

    /// `sameDirent` for a non-directory (see the module docs).
    fn same_entry(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        st: &Stat,
        layer: usize,
        lst: &Stat,
        rel: &[u8],
    ) -> Result<bool, SnapshotError> {
        if !same_stat(st, lst) || st.st_size != lst.st_size || st.st_mtime != lst.st_mtime {
            return Ok(false);
        }
        if !self.same_xattrs(dir.as_fd(), name, layer, rel)? {
            return Ok(false);
        }
        let (nsec, lower_nsec) = (st.st_mtime_nsec, lst.st_mtime_nsec);
        if nsec != 0 || lower_nsec != 0 {
            return Ok(nsec == lower_nsec);
        }
        // Both times were cut to seconds (by a tar): only the content can
        // tell.
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let ours = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| self.err("reading the symlink", rel, e))?;
                match rustix::fs::readlinkat(&self.roots[layer], rel, Vec::new()) {
                    Ok(theirs) => Ok(ours == theirs),
                    Err(Errno::NAMETOOLONG) => Ok(false),
                    Err(e) => Err(self.lower_err(layer, rel, e)),
                }
            }
            FileType::RegularFile if st.st_size > 0 => {
                let ours = open_file(dir, name).map_err(|e| self.err("opening", rel, e))?;
                let theirs = match open_file(&self.roots[layer], rel) {
                    Ok(f) => f,
                    Err(Errno::NAMETOOLONG) => return Ok(false),
                    Err(e) => return Err(self.lower_err(layer, rel, e)),
                };
                same_content(ours, theirs).map_err(SnapshotError::io("comparing", self.show(rel)))
            }
            _ => Ok(true),
        }
    }

    /// Whether the xattrs a layer keeps are the same on the upper entry
    /// `name` of `dir` and the lower entry `rel` of `layer`.
    fn same_xattrs(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        layer: usize,
        rel: &[u8],
    ) -> Result<bool, SnapshotError> {
        let ours = kept_xattrs(&proc_path(dir, name))
            .map_err(|e| self.err("reading the xattrs of", rel, e))?;
        match kept_xattrs(&proc_path(self.roots[layer].as_fd(), rel)) {
            Ok(theirs) => Ok(ours == theirs),
            Err(Errno::NAMETOOLONG) => Ok(false),
            Err(e) => Err(self.lower_err(layer, rel, e)),
        }
    }

    fn show(&self, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.upper.join(std::ffi::OsStr::from_bytes(rel))
    }

    fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> SnapshotError {
        SnapshotError::Io {
            op,
            path: self.show(rel),
            source: e.into(),
        }
    }

    fn lower_err(&self, layer: usize, rel: &[u8], e: Errno) -> SnapshotError {
        use std::os::unix::ffi::OsStrExt;
        let path = rustix::fs::readlink(proc_path(self.roots[layer].as_fd(), b""), Vec::new())
            .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p.as_bytes())))
            .unwrap_or_default()
            .join(std::ffi::OsStr::from_bytes(rel));
        SnapshotError::Io {
            op: "inspecting",
            path,
            source: e.into(),
        }
    }
}

/// File type and permissions, owner and device number: what continuity's
/// `compareSysStat` compares.
fn same_stat(a: &Stat, b: &Stat) -> bool {
    a.st_mode == b.st_mode && a.st_uid == b.st_uid && a.st_gid == b.st_gid && a.st_rdev == b.st_rdev
}

fn same_content(a: OwnedFd, b: OwnedFd) -> io::Result<bool> {
    let (mut a, mut b) = (File::from(a), File::from(b));
    let mut buf_a = vec![0u8; 128 * 1024];
    let mut buf_b = vec![0u8; 128 * 1024];
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn open_dir(dir: impl AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn open_file(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
    out.extend_from_slice(parent);
    out.push(b'/');
    out.extend_from_slice(name);
    out
}

/// The xattrs `layer::write` would put into the layer, sorted.
fn kept_xattrs(path: &[u8]) -> Result<Xattrs, Errno> {
    let mut kept = xattr::read_path(path, xattr::in_layer)?;
    kept.sort();
    Ok(kept)
}

/// One xattr's value; `None` if absent.
fn get_xattr(path: &[u8], name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    match xattr::get_path(path, name) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA | Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}
