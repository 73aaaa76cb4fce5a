//! Applying a layer tar to a directory.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::error::errno;
use super::root::{self, Root, kind_at, remove_all};
use super::tar::{Entry, Kind, TarReader};
use super::whiteout::{self, Whiteout};
use super::{ExtractOptions, ExtractStats, LayerError, WhiteoutMode, path, xattr};

/// Applies the uncompressed layer tar read from `reader` to `dest`, which
/// must exist.
///
/// Entries replace what is at their name (a directory over a directory
/// merges, anything else replaces: a file over a directory removes the
/// directory tree first, as Docker does). Whiteouts are kept or carried out
/// as `opts.whiteouts` says; per the OCI image spec (layer.md,
/// "Whiteouts") they only hide what lower layers hold, never entries of the
/// same layer. The whole stream is read, so a hashing reader underneath
/// sees the layer's diffID.
///
/// No entry can read or write outside `dest`: names climbing out with `..`
/// and hardlinks to targets outside are refused, absolute names are taken
/// relative to `dest`, and symlinks met on the way (from this layer or
/// already in `dest`) resolve as if `dest` were `/`.
pub fn extract(
    reader: impl Read,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats, LayerError> {
    let root = Root::open(dest).map_err(|e| LayerError::io("opening", dest, errno(e)))?;
    let mut x = Extractor {
        root,
        opts,
        stats: ExtractStats::default(),
        layer_paths: HashSet::new(),
        dirs: Vec::new(),
        buf: vec![0; 256 * 1024],
    };
    let mut tar = TarReader::new(reader);
    while let Some(entry) = tar.next_entry()? {
        x.entry(&mut tar, &entry)?;
    }
    tar.drain()?;
    x.finish_dirs()?;
    x.stats.tar_bytes = tar.offset();
    Ok(x.stats)
}

struct Extractor<'a> {
    root: Root,
    opts: &'a ExtractOptions,
    stats: ExtractStats,
    /// Apply mode: every name this layer created, and their ancestors. A
    /// whiteout or opaque marker spares these (OCI: whiteouts apply to lower
    /// layers only), as Docker's and containerd's `unpackedPaths`.
    layer_paths: HashSet<Vec<u8>>,
    /// Directory modes and times, set once everything inside is written.
    dirs: Vec<DirMeta>,
    buf: Vec<u8>,
}

struct DirMeta {
    rel: Vec<u8>,
    mode: u32,
    mtime: (i64, u32),
    /// The directory the entry made, so a name replaced later in the layer
    /// does not get these attributes.
    dev: u64,
    ino: u64,
}

impl Extractor<'_> {
    fn entry(&mut self, tar: &mut impl Read, e: &Entry) -> Result<(), LayerError> {
        if let Kind::Other(flag) = e.kind {
            return Err(LayerError::UnsupportedEntry {
                entry: e.name(),
                kind: char::from(flag),
            });
        }
        let rel = path::clean(&e.path).map_err(|reason| invalid_entry(e, reason))?;
        let (parent, base) = path::split(&rel);
        if let Some(w) = whiteout::classify(base) {
            return self.whiteout(e, parent, w);
        }
        if e.uid >= u64::from(u32::MAX) || e.gid >= u64::from(u32::MAX) {
            // -1 means "leave unchanged" to chown(2).
            return Err(invalid_entry(e, "owner id out of range"));
        }

        self.stats.entries += 1;
        if rel.is_empty() {
            if e.kind != Kind::Dir {
                return Err(invalid_entry(e, "would replace the layer root"));
            }
            let fd = self
                .root
                .open_dir_rw(b"")
                .map_err(|x| self.err("opening", &rel, x))?;
            return self.dir_meta(e, &rel, fd);
        }

        let dir = self
            .root
            .make_dir_all(parent)
            .map_err(|x| self.err("creating the parent directories of", &rel, x))?;
        let existing = kind_at(&dir, base).map_err(|x| self.err("inspecting", &rel, x))?;
        match e.kind {
            Kind::Dir => self.dir(e, &rel, &dir, base, existing)?,
            Kind::Link => self.hardlink(e, &rel, &dir, base, existing)?,
            _ => {
                if existing.is_some() {
                    remove_all(&dir, base).map_err(|x| self.err("replacing", &rel, x))?;
                }
                match e.kind {
                    Kind::File => self.file(tar, e, &rel, &dir, base)?,
                    Kind::Symlink => self.symlink(e, &rel, &dir, base)?,
                    _ => self.node(e, &rel, &dir, base)?,
                }
            }
        }
        if self.opts.whiteouts == WhiteoutMode::Apply {
            self.remember(&rel);
        }
        Ok(())
    }

    fn dir(
        &mut self,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        existing: Option<(FileType, u64)>,
    ) -> Result<(), LayerError> {
        // A directory of this layer over a whiteout of this layer: the lower
        // directory of that name is gone, so the new one must not show its
        // contents through the overlay.
        let mut opaque = false;
        match existing {
            Some((FileType::Directory, _)) => {}
            Some((kind, rdev)) => {
                opaque = self.opts.whiteouts == WhiteoutMode::Overlay && is_whiteout(kind, rdev);
                remove_all(dir, base).map_err(|x| self.err("replacing", rel, x))?;
                self.mkdir(dir, base, rel)?;
            }
            None => self.mkdir(dir, base, rel)?,
        }
        let fd = open_child_dir(dir, base).map_err(|x| self.err("opening", rel, x))?;
        if opaque {
            xattr::fset(&fd, whiteout::OVERLAY_OPAQUE, b"y")
                .map_err(|x| self.err("marking opaque", rel, x))?;
        }
        self.stats.dirs += 1;
        self.dir_meta(e, rel, fd)
    }

    fn mkdir(&self, dir: &OwnedFd, base: &[u8], rel: &[u8]) -> Result<(), LayerError> {
        // Owner-only until the mode is set at the end: nobody else sees a
        // half-extracted directory.
        rustix::fs::mkdirat(dir, base, Mode::from_raw_mode(0o700))
            .map_err(|x| self.err("creating", rel, x))
    }

    /// Owner and xattrs now; mode and times once the contents are written
    /// (writing into a directory changes its mtime, and a mode without
    /// write permission would stop a non-root extraction).
    fn dir_meta(&mut self, e: &Entry, rel: &[u8], fd: OwnedFd) -> Result<(), LayerError> {
        if self.opts.chown {
            rustix::fs::fchown(&fd, Some(uid(e)), Some(gid(e)))
                .map_err(|x| self.err("changing the owner of", rel, x))?;
        }
        for (name, value) in &e.xattrs {
            if xattr::allowed_on_extract(name) {
                let r = xattr::fset(&fd, name, value);
                self.xattr_result(r, rel)?;
            }
        }
        let st = rustix::fs::fstat(&fd).map_err(|x| self.err("inspecting", rel, x))?;
        self.dirs.push(DirMeta {
            rel: rel.to_vec(),
            mode: e.mode,
            mtime: e.mtime,
            dev: st.st_dev,
            ino: st.st_ino,
        });
        Ok(())
    }

    fn file(
        &mut self,
        tar: &mut impl Read,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
    ) -> Result<(), LayerError> {
        // O_EXCL after the removal above: a new inode, never an existing
        // file or the target of a symlink.
        let fd = rustix::fs::openat(
            dir,
            base,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|x| self.err("creating", rel, x))?;
        let mut file = File::from(fd);
        match &e.sparse {
            None => self.copy(tar, e, rel, &mut file)?,
            Some(segments) => {
                // Holes are never written: each data segment lands at its
                // offset and the length is set last, so a sparse file stays
                // sparse and a huge logical size costs nothing.
                for &(offset, len) in segments {
                    self.copy_at(tar, e, rel, &file, offset, len)?;
                }
                file.set_len(e.size)
                    .map_err(|x| LayerError::io("writing", self.root.display(rel), x))?;
            }
        }
        self.stats.files += 1;
        self.stats.bytes += match &e.sparse {
            None => e.size,
            Some(segments) => segments.iter().map(|s| s.1).sum(),
        };
        let fd = OwnedFd::from(file);
        self.fd_meta(e, rel, &fd)
    }

    fn copy(
        &mut self,
        tar: &mut impl Read,
        e: &Entry,
        rel: &[u8],
        out: &mut File,
    ) -> Result<(), LayerError> {
        loop {
            let n = read_data(tar, &mut self.buf, e)?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&self.buf[..n])
                .map_err(|x| LayerError::io("writing", self.root.display(rel), x))?;
        }
    }

    fn copy_at(
        &mut self,
        tar: &mut impl Read,
        e: &Entry,
        rel: &[u8],
        out: &File,
        mut offset: u64,
        mut len: u64,
    ) -> Result<(), LayerError> {
        while len > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(len).unwrap_or(usize::MAX));
            let n = read_data(tar, &mut self.buf[..want], e)?;
            if n == 0 {
                return Err(truncated(e));
            }
            out.write_all_at(&self.buf[..n], offset)
                .map_err(|x| LayerError::io("writing", self.root.display(rel), x))?;
            offset += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
    ) -> Result<(), LayerError> {
        // The target is stored verbatim and never resolved here: it is the
        // container's business, and lookups through it stay in the root.
        rustix::fs::symlinkat(e.link.as_slice(), dir, base)
            .map_err(|x| self.err("creating the symlink", rel, x))?;
        self.stats.symlinks += 1;
        self.at_meta(e, rel, dir, base, false)
    }

    fn node(
        &mut self,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
    ) -> Result<(), LayerError> {
        let (kind, dev) = match e.kind {
            Kind::Char => (
                FileType::CharacterDevice,
                rustix::fs::makedev(e.dev_major, e.dev_minor),
            ),
            Kind::Block => (
                FileType::BlockDevice,
                rustix::fs::makedev(e.dev_major, e.dev_minor),
            ),
            _ => (FileType::Fifo, 0),
        };
        rustix::fs::mknodat(dir, base, kind, Mode::from_raw_mode(0o600), dev)
            .map_err(|x| self.err("creating", rel, x))?;
        if kind == FileType::Fifo {
            self.stats.fifos += 1;
        } else {
            self.stats.devices += 1;
        }
        self.at_meta(e, rel, dir, base, true)
    }

    fn hardlink(
        &mut self,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        existing: Option<(FileType, u64)>,
    ) -> Result<(), LayerError> {
        let invalid_link = |reason| LayerError::InvalidLink {
            entry: e.name(),
            target: String::from_utf8_lossy(&e.link).into_owned(),
            reason,
        };
        // Link targets are names in the same archive: cleaned as names are,
        // then looked up inside the root.
        let target = path::clean(&e.link).map_err(invalid_link)?;
        if target.is_empty() {
            return Err(invalid_link("is the layer root"));
        }
        if target == rel && existing.is_some() {
            return Ok(());
        }
        let (tparent, tbase) = path::split(&target);
        let tdir = self.root.open_dir(tparent).map_err(|x| match x {
            Errno::NOENT | Errno::NOTDIR => invalid_link("does not exist in the layer"),
            x => self.err("resolving the hardlink target of", rel, x),
        })?;
        match kind_at(&tdir, tbase).map_err(|x| self.err("inspecting", &target, x))? {
            None => return Err(invalid_link("does not exist in the layer")),
            Some((FileType::Directory, _)) => return Err(invalid_link("is a directory")),
            Some(_) => {}
        }
        if existing.is_some() {
            remove_all(dir, base).map_err(|x| self.err("replacing", rel, x))?;
        }
        // Without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink
        // itself, as tar means it, and reads nothing through it.
        rustix::fs::linkat(&tdir, tbase, dir, base, AtFlags::empty())
            .map_err(|x| self.err("creating the hardlink", rel, x))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Owner, mode, xattrs and times of a file open for writing. The mode
    /// follows the owner: chown(2) clears setuid and setgid.
    fn fd_meta(&mut self, e: &Entry, rel: &[u8], fd: &OwnedFd) -> Result<(), LayerError> {
        if self.opts.chown {
            rustix::fs::fchown(fd, Some(uid(e)), Some(gid(e)))
                .map_err(|x| self.err("changing the owner of", rel, x))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode))
            .map_err(|x| self.err("changing the mode of", rel, x))?;
        for (name, value) in &e.xattrs {
            if xattr::allowed_on_extract(name) {
                let r = xattr::fset(fd, name, value);
                self.xattr_result(r, rel)?;
            }
        }
        rustix::fs::futimens(fd, &times(e.mtime))
            .map_err(|x| self.err("setting the times of", rel, x))
    }

    /// The same for a name that is not opened (a symlink, device or FIFO:
    /// opening those would follow the link, talk to a driver or block).
    fn at_meta(
        &mut self,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        chmod: bool,
    ) -> Result<(), LayerError> {
        if self.opts.chown {
            rustix::fs::chownat(
                dir,
                base,
                Some(uid(e)),
                Some(gid(e)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|x| self.err("changing the owner of", rel, x))?;
        }
        if chmod {
            // Not a symlink (we just made it), so following is moot.
            rustix::fs::chmodat(dir, base, Mode::from_raw_mode(e.mode), AtFlags::empty())
                .map_err(|x| self.err("changing the mode of", rel, x))?;
        }
        if !e.xattrs.is_empty() {
            let p = xattr::proc_path(dir.as_fd(), base);
            for (name, value) in &e.xattrs {
                if xattr::allowed_on_extract(name) {
                    let r = xattr::set(&p, name, value);
                    self.xattr_result(r, rel)?;
                }
            }
        }
        rustix::fs::utimensat(dir, base, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|x| self.err("setting the times of", rel, x))
    }

    /// Docker skips xattrs the destination filesystem refuses.
    fn xattr_result(&mut self, r: Result<(), Errno>, rel: &[u8]) -> Result<(), LayerError> {
        match r {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::NOTSUP | Errno::ACCESS) => {
                self.stats.xattrs_skipped += 1;
                Ok(())
            }
            Err(x) => Err(self.err("setting an xattr on", rel, x)),
        }
    }

    fn whiteout(&mut self, e: &Entry, parent: &[u8], w: Whiteout<'_>) -> Result<(), LayerError> {
        let name = match w {
            Whiteout::Meta => return Ok(()),
            Whiteout::Opaque => None,
            Whiteout::Remove(name) => {
                if name.is_empty() || name == b"." || name == b".." {
                    return Err(invalid_entry(e, "whiteout names nothing"));
                }
                Some(name)
            }
        };
        if name.is_some() {
            self.stats.whiteouts += 1;
        } else {
            self.stats.opaque_dirs += 1;
        }
        let Some(dir) = self.whiteout_dir(parent)? else {
            return Ok(());
        };
        match (name, self.opts.whiteouts) {
            (None, WhiteoutMode::Overlay) => {
                let dir = open_child_dir(&dir, b".").map_err(|x| self.err("opening", parent, x))?;
                xattr::fset(&dir, whiteout::OVERLAY_OPAQUE, b"y")
                    .map_err(|x| self.err("marking opaque", parent, x))
            }
            (None, WhiteoutMode::Apply) => self.prune(parent, &dir),
            (Some(name), WhiteoutMode::Overlay) => self.overlay_whiteout(e, &dir, name, parent),
            (Some(name), WhiteoutMode::Apply) => {
                let target = path::join(parent, name);
                match kind_at(&dir, name).map_err(|x| self.err("inspecting", &target, x))? {
                    None => Ok(()),
                    Some((kind, _)) if self.layer_paths.contains(&target) => {
                        // Made by this layer: only what lower layers put
                        // inside it goes.
                        if kind == FileType::Directory {
                            let sub = open_child_dir(&dir, name)
                                .map_err(|x| self.err("opening", &target, x))?;
                            self.prune(&target, &sub)?;
                        }
                        Ok(())
                    }
                    Some(_) => {
                        self.stats.removed +=
                            remove_all(&dir, name).map_err(|x| self.err("removing", &target, x))?;
                        Ok(())
                    }
                }
            }
        }
    }

    /// The directory a whiteout or opaque marker sits in, created in Overlay
    /// mode (the marker must live there). A whiteout is about a real
    /// directory of the image: one reached through a symlink names nothing
    /// a lower layer holds under that name, and is skipped, so no whiteout
    /// can delete or mark anything but the path it spells.
    fn whiteout_dir(&self, parent: &[u8]) -> Result<Option<OwnedFd>, LayerError> {
        let mut r = self.root.open_dir_no_symlinks(parent);
        if r.as_ref().err() == Some(&Errno::NOENT) && self.opts.whiteouts == WhiteoutMode::Overlay {
            r = match self.root.make_dir_all(parent) {
                Ok(_) => self.root.open_dir_no_symlinks(parent),
                Err(x) => Err(x),
            };
        }
        match r {
            Ok(dir) => Ok(Some(dir)),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => Ok(None),
            Err(x) => Err(self.err("opening", parent, x)),
        }
    }

    fn overlay_whiteout(
        &mut self,
        e: &Entry,
        dir: &OwnedFd,
        name: &[u8],
        parent: &[u8],
    ) -> Result<(), LayerError> {
        let target = path::join(parent, name);
        match kind_at(dir, name).map_err(|x| self.err("inspecting", &target, x))? {
            // This layer made the directory: it stays, but nothing of the
            // lower layers shows through it.
            Some((FileType::Directory, _)) => {
                let sub = open_child_dir(dir, name).map_err(|x| self.err("opening", &target, x))?;
                xattr::fset(&sub, whiteout::OVERLAY_OPAQUE, b"y")
                    .map_err(|x| self.err("marking opaque", &target, x))
            }
            // This layer made a file there: it already hides the lower one.
            Some(_) => Ok(()),
            None => {
                // overlayfs.rst: "A whiteout is created as a character device
                // with 0/0 device number".
                rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(|x| self.err("creating the whiteout", &target, x))?;
                if self.opts.chown {
                    rustix::fs::chownat(
                        dir,
                        name,
                        Some(uid(e)),
                        Some(gid(e)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|x| self.err("changing the owner of", &target, x))?;
                }
                rustix::fs::utimensat(dir, name, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|x| self.err("setting the times of", &target, x))
            }
        }
    }

    /// Apply mode: removes from the directory `rel` everything this layer
    /// did not make, keeping the way to what it did.
    fn prune(&mut self, rel: &[u8], dir: &OwnedFd) -> Result<(), LayerError> {
        let names = root::names(dir).map_err(|x| self.err("reading", rel, x))?;
        for name in names {
            let child = path::join(rel, &name);
            if !self.layer_paths.contains(&child) {
                self.stats.removed +=
                    remove_all(dir, &name).map_err(|x| self.err("removing", &child, x))?;
            } else if let Some((FileType::Directory, _)) =
                kind_at(dir, &name).map_err(|x| self.err("inspecting", &child, x))?
            {
                let sub = open_child_dir(dir, &name).map_err(|x| self.err("opening", &child, x))?;
                self.prune(&child, &sub)?;
            }
        }
        Ok(())
    }

    fn remember(&mut self, rel: &[u8]) {
        if !self.layer_paths.insert(rel.to_vec()) {
            return;
        }
        for a in path::ancestors(rel) {
            if !self.layer_paths.insert(a.to_vec()) {
                break;
            }
        }
    }

    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        for d in std::mem::take(&mut self.dirs) {
            let fd = match self.root.open_dir_rw(&d.rel) {
                Ok(fd) => fd,
                // Replaced or removed later in the layer.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(x) => return Err(self.err("opening", &d.rel, x)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|x| self.err("inspecting", &d.rel, x))?;
            if (st.st_dev, st.st_ino) != (d.dev, d.ino) {
                continue;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|x| self.err("changing the mode of", &d.rel, x))?;
            rustix::fs::futimens(&fd, &times(d.mtime))
                .map_err(|x| self.err("setting the times of", &d.rel, x))?;
        }
        Ok(())
    }

    fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> LayerError {
        LayerError::io(op, self.root.display(rel), errno(e))
    }
}

fn open_child_dir(dir: &OwnedFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn read_data(tar: &mut impl Read, buf: &mut [u8], e: &Entry) -> Result<usize, LayerError> {
    loop {
        match tar.read(buf) {
            Ok(n) => return Ok(n),
            Err(x) if x.kind() == io::ErrorKind::Interrupted => {}
            Err(x) if x.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(LayerError::Truncated {
                    entry: e.name(),
                    source: x,
                });
            }
            Err(source) => return Err(LayerError::Read { source }),
        }
    }
}

fn truncated(e: &Entry) -> LayerError {
    LayerError::Truncated {
        entry: e.name(),
        source: io::ErrorKind::UnexpectedEof.into(),
    }
}

fn invalid_entry(e: &Entry, reason: &'static str) -> LayerError {
    LayerError::InvalidEntry {
        entry: e.name(),
        reason,
    }
}

fn is_whiteout(kind: FileType, rdev: u64) -> bool {
    kind == FileType::CharacterDevice && rdev == 0
}

fn uid(e: &Entry) -> Uid {
    Uid::from_raw(e.uid as u32)
}

fn gid(e: &Entry) -> Gid {
    Gid::from_raw(e.gid as u32)
}

fn times((secs, nanos): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: i64::from(nanos),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}
