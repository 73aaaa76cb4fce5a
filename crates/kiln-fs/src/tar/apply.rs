//! Applying an archive to a directory: the one place kiln writes a tar onto
//! a filesystem, for image layers and for `ADD` archives alike.
//!
//! No entry can read or write outside the directory: names climbing out
//! with `..` and hardlinks to targets outside are refused, absolute names
//! are taken relative to it, and every lookup resolves inside it
//! ([`Root`]), so symlinks met on the way (from this archive or already
//! there) cannot lead out. The last component of a name is created, linked
//! or removed relative to its parent's descriptor and never followed; files
//! are created `O_EXCL` after whatever was at their name is removed, so an
//! entry never writes through an existing file or symlink.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::whiteout::{self, Whiteout};
use super::{Entry, Kind, TarError, TarReader};
use crate::path::{BadName, ancestors, clean_entry_name, join, split};
use crate::root::{NewDir, Owner, Root, open_child_dir, remove_all};
use crate::xattr;

/// What `.wh.` names in the archive mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Nothing: they are ordinary names (an `ADD` archive is not a layer).
    Plain,
    /// Keep them, in overlayfs's format: `.wh.NAME` becomes a character
    /// device 0/0 named `NAME`, `.wh..wh..opq` the xattr
    /// `trusted.overlay.opaque=y` on its directory. For a layer unpacked into
    /// a directory of its own and stacked as an overlay lower dir.
    Overlay,
    /// [`Whiteouts::Overlay`] for an overlay mounted with `userxattr` (in a
    /// user namespace, where `trusted.*` cannot be set): the opaque marker
    /// is `user.overlay.opaque=y`.
    UserOverlay,
    /// Carry them out: delete from the destination what they name. For
    /// flattening layers, in order, into one root filesystem.
    Apply,
    /// Report them: nothing is deleted or marked, and [`ApplyStats::collected`]
    /// lists the paths the whiteouts and opaque markers name, with the
    /// directories the archive has entries for. For a layer unpacked into an
    /// empty directory of its own and folded onto the layers below it
    /// afterwards (the tree snapshotter unpacks a chain's layers at once).
    Collect,
}

impl Whiteouts {
    /// The xattr marking an opaque directory, in the overlay formats.
    fn opaque_xattr(self) -> Option<&'static [u8]> {
        match self {
            Whiteouts::Overlay => Some(xattr::OVERLAY_OPAQUE),
            Whiteouts::UserOverlay => Some(xattr::USER_OVERLAY_OPAQUE),
            Whiteouts::Plain | Whiteouts::Apply | Whiteouts::Collect => None,
        }
    }
}

/// Who owns what an archive creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// The numeric ids the archive gives (needs `CAP_CHOWN`).
    Archive,
    /// Everything this owner (`ADD --chown`, as go-archive's `ChownOpts`).
    Fixed(Owner),
    /// The archive's ids where this process's user namespace maps them;
    /// an unmapped one (chown(2): EINVAL) leaves the caller's, which is
    /// root's in the namespace. For a rootless kiln whose namespace maps
    /// fewer ids than the image uses (docs/ISOLATION.md).
    ArchiveWhereMapped,
    /// Whoever creates it: no `chown` at all, for a process that may not.
    Unchanged,
}

impl Owners {
    /// The archive's ids: [`Owners::Archive`], or in a user namespace
    /// [`Owners::ArchiveWhereMapped`].
    pub fn of_archive() -> Owners {
        if crate::mount::in_user_namespace() {
            Owners::ArchiveWhereMapped
        } else {
            Owners::Archive
        }
    }
}

/// What an entry naming the directory itself (`./`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopEntry {
    /// Gives the directory its owner, mode, xattrs and times (an unpacked
    /// layer's directory is the layer's root); any other type is an error.
    Apply,
    /// Nothing: the directory is the caller's (BuildKit's `ADD`).
    Skip,
}

/// How the directories missing on the way to an entry are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingParents {
    /// Along the path as written; a symlink on the way must lead to a
    /// directory that exists. Docker's layer extraction.
    AsNamed,
    /// Where the path leads: symlinks on the way are followed (inside the
    /// directory) and the directories they name are made. BuildKit's
    /// `resolveRootPath` for `ADD`.
    AtTarget,
}

/// How [`apply`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    pub whiteouts: Whiteouts,
    pub owners: Owners,
    /// Applies `SCHILY.xattr.*` records (never overlayfs's own, see
    /// [`xattr::is_overlay`]); a destination that refuses one is skipped
    /// over, as Docker does.
    pub xattrs: bool,
    pub top: TopEntry,
    pub parents: MissingParents,
    /// Times before 1970 or past 2262 become the epoch (BuildKit's and
    /// Docker's `boundTime`). Off, times are kept exactly, so that a tree
    /// extracted and archived again gives the same bytes.
    pub bound_times: bool,
    /// Every entry gets this time instead of its own (BuildKit's local
    /// exporter with `SOURCE_DATE_EPOCH`).
    pub fixed_time: Option<i64>,
    /// A hardlink entry's owner, mode and times are given to the inode it
    /// links (BuildKit's `ADD`, which applies every header it reads). Off,
    /// the inode keeps what the entry that made it said: a layer's hardlink
    /// entries carry the same, or (hand-made ones) nothing at all.
    pub link_metadata: bool,
}

impl ApplyOptions {
    /// An image layer, as Docker applies one (but for times, kept exactly);
    /// owners from the layer when this process runs as root.
    pub fn layer(whiteouts: Whiteouts) -> ApplyOptions {
        ApplyOptions {
            whiteouts,
            owners: if rustix::process::geteuid().is_root() {
                Owners::of_archive()
            } else {
                Owners::Unchanged
            },
            xattrs: true,
            top: TopEntry::Apply,
            parents: MissingParents::AsNamed,
            bound_times: false,
            fixed_time: None,
            link_metadata: false,
        }
    }

    /// An `ADD` archive, as BuildKit's `applyRootArchive` extracts one:
    /// `.wh.` names are plain, xattrs are not applied, the entry `./` is
    /// skipped, and owners come from `--chown` when given.
    pub fn add_archive(chown: Option<Owner>) -> ApplyOptions {
        ApplyOptions {
            whiteouts: Whiteouts::Plain,
            owners: chown.map_or_else(Owners::of_archive, Owners::Fixed),
            xattrs: false,
            top: TopEntry::Skip,
            parents: MissingParents::AtTarget,
            bound_times: true,
            fixed_time: None,
            link_metadata: true,
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyStats {
    /// Entries created or updated (whiteouts not included).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    /// `.wh.NAME` entries.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaque_dirs: u64,
    /// Paths deleted by whiteouts ([`Whiteouts::Apply`]).
    pub removed: u64,
    /// Xattrs the destination refused (EPERM, EOPNOTSUPP), as Docker skips
    /// them.
    pub xattrs_skipped: u64,
    /// Bytes of file content written (sparse holes not included).
    pub bytes: u64,
    /// Bytes of tar read.
    pub tar_bytes: u64,
    /// [`Whiteouts::Collect`]: what the layer says about the layers below.
    pub collected: Collected,
}

/// What a layer applied with [`Whiteouts::Collect`] says about the layers
/// below it: paths relative to the directory it was applied to, without a
/// leading `/`, in archive order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Collected {
    /// What each `.wh.NAME` entry hides.
    pub whiteouts: Vec<Vec<u8>>,
    /// The directories of the `.wh..wh..opq` entries: nothing below shows
    /// through them.
    pub opaque: Vec<Vec<u8>>,
    /// The directories the archive has an entry for (`""` for `./`), still
    /// directories at its end: their metadata is the archive's. Any other
    /// directory was made as a missing parent, and says nothing about the
    /// one below.
    pub dirs: Vec<Vec<u8>>,
}

/// Applies the uncompressed tar read from `reader` to the directory
/// `dest`.
///
/// Entries replace what is at their name (a directory over a directory
/// merges, anything else replaces: a file over a directory removes the
/// directory tree first, as Docker does). Whiteouts are kept, carried out
/// or ignored as `opts.whiteouts` says; per the OCI image spec (layer.md,
/// "Whiteouts") they only hide what lower layers hold, never entries of the
/// same layer. Modes, owners and times come from the archive; a
/// directory's mode and times are set once everything inside it is
/// written; the access time is never before the modification time
/// (Docker's and BuildKit's `latestTime`). The whole stream is read, so a
/// hashing reader underneath sees all of it.
pub fn apply(reader: impl Read, dest: &Root, opts: &ApplyOptions) -> Result<ApplyStats, TarError> {
    let mut x = Applier {
        root: dest,
        opts,
        stats: ApplyStats::default(),
        layer_paths: HashSet::new(),
        dirs: Vec::new(),
        buf: vec![0; 256 * 1024],
        parent: None,
        replaced: false,
        creator: Creator::this_process(),
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

struct Applier<'a> {
    root: &'a Root,
    opts: &'a ApplyOptions,
    stats: ApplyStats,
    /// Apply mode: every name this layer created, and their ancestors. A
    /// whiteout or opaque marker spares these (OCI: whiteouts apply to lower
    /// layers only), as Docker's and containerd's `unpackedPaths`.
    layer_paths: HashSet<Vec<u8>>,
    /// Directory modes and times, set once everything inside is written.
    dirs: Vec<DirMeta>,
    buf: Vec<u8>,
    /// The directory the last entry went into (or made), kept open for the
    /// next: an archive lists a directory's entries together, so most
    /// entries need no lookup of their parent.
    parent: Option<Parent>,
    /// This entry removed or replaced something, which may change where a
    /// name leads: the kept directory is not kept.
    replaced: bool,
    creator: Creator,
}

/// An open directory of the tree, by the name entries give it.
struct Parent {
    rel: Vec<u8>,
    fd: OwnedFd,
    /// The group a file created in it gets: its own if it is setgid.
    new_gid: u32,
    /// A file created in it gets the mode asked for less the umask: it has
    /// no default ACL (which would stand in for the umask).
    umask_applies: bool,
}

impl Parent {
    fn new(rel: Vec<u8>, fd: OwnedFd, st: &rustix::fs::Stat, creator: &Creator) -> Parent {
        // Size 0: only whether it is there.
        let umask_applies = matches!(
            rustix::fs::fgetxattr(&fd, "system.posix_acl_default", &mut [0u8; 0][..]),
            Err(Errno::NODATA | Errno::NOTSUP)
        );
        Parent {
            rel,
            fd,
            new_gid: if st.st_mode & 0o2000 != 0 {
                st.st_gid
            } else {
                creator.gid
            },
            umask_applies,
        }
    }
}

/// What a file this process creates gets without a `chown` or `chmod`:
/// its effective ids (the group unless the directory is setgid), and the
/// mode asked for less the umask. Neither call is made where it would
/// change nothing: they were a third of the system calls of unpacking a
/// layer of small files.
struct Creator {
    uid: u32,
    gid: u32,
    /// From /proc/self/status; unknown, every mode is set with `chmod`.
    umask: Option<u32>,
}

impl Creator {
    fn this_process() -> Creator {
        let umask = fs_err::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
                u32::from_str_radix(line.trim(), 8).ok()
            });
        Creator {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            umask,
        }
    }

    /// The mode to create a file of mode `mode` with in `dir`, and whether
    /// it comes out as `mode`. Otherwise owner-only, until `chmod`
    /// (special bits always go through `chmod`, after the owner is set:
    /// `chown` clears setuid and setgid).
    fn create_mode(&self, mode: u32, dir: &Parent) -> (u32, bool) {
        match self.umask {
            Some(umask) if dir.umask_applies && mode & 0o7000 == 0 && mode & umask == 0 => {
                (mode & 0o777, true)
            }
            _ => (0o600, false),
        }
    }
}

struct DirMeta {
    rel: Vec<u8>,
    mode: u32,
    times: Timestamps,
    /// The directory the entry made, so a name replaced later in the
    /// archive does not get these attributes.
    dev: u64,
    ino: u64,
}

impl Applier<'_> {
    fn entry(&mut self, tar: &mut impl Read, e: &Entry) -> Result<(), TarError> {
        if let Kind::Other(flag) = e.kind {
            return Err(TarError::UnsupportedEntry {
                entry: e.name(),
                kind: char::from(flag),
            });
        }
        let rel = clean_entry_name(&e.path).map_err(|bad| bad_name(e, &e.path, bad))?;
        let (parent, base) = split(&rel);
        if self.opts.whiteouts != Whiteouts::Plain
            && let Some(w) = whiteout::classify(base)
        {
            // Whiteouts remove (and may make directories on the way): no
            // directory is kept across one.
            self.parent = None;
            return self.whiteout(e, parent, w);
        }
        if matches!(
            self.opts.owners,
            Owners::Archive | Owners::ArchiveWhereMapped
        ) && (e.uid >= u64::from(u32::MAX) || e.gid >= u64::from(u32::MAX))
        {
            // -1 means "leave unchanged" to chown(2).
            return Err(invalid_entry(e, "owner id out of range"));
        }

        if rel.is_empty() {
            if self.opts.top == TopEntry::Skip {
                return Ok(());
            }
            if e.kind != Kind::Dir {
                return Err(invalid_entry(
                    e,
                    "would replace the directory it is applied to",
                ));
            }
            self.stats.entries += 1;
            let fd = self
                .root
                .open_dir_nofollow(b"")
                .map_err(|x| self.err("opening", &rel, x))?;
            return self.dir_meta(e, &rel, &fd).map(drop);
        }

        self.stats.entries += 1;
        let dir = match self.parent.take() {
            Some(kept) if kept.rel == parent => kept,
            _ => self
                .open_parent(parent)
                .map_err(|x| self.err("creating the parent directories of", &rel, x))?,
        };
        self.replaced = false;
        let mut made = None;
        // A file is created O_EXCL: whatever is at its name shows as EEXIST.
        if e.kind == Kind::File {
            self.file(tar, e, &rel, &dir, base)?;
        } else {
            let existing = kind_at(&dir.fd, base).map_err(|x| self.err("inspecting", &rel, x))?;
            match e.kind {
                Kind::Dir => made = Some(self.dir(e, &rel, &dir.fd, base, existing)?),
                Kind::Link => self.hardlink(e, &rel, &dir.fd, base, existing)?,
                _ => {
                    if existing.is_some() {
                        self.replace(&dir.fd, base, &rel)?;
                    }
                    match e.kind {
                        Kind::Symlink => self.symlink(e, &rel, &dir.fd, base)?,
                        _ => self.node(e, &rel, &dir.fd, base)?,
                    }
                }
            }
        }
        if !self.replaced {
            self.parent = Some(match made {
                // The next entries are most likely inside it.
                Some((fd, st)) => Parent::new(rel.clone(), fd, &st, &self.creator),
                None => dir,
            });
        }
        if self.opts.whiteouts == Whiteouts::Apply {
            self.remember(&rel);
        }
        Ok(())
    }

    /// Removes what is at `base` for an entry to take its place.
    fn replace(&mut self, dir: &OwnedFd, base: &[u8], rel: &[u8]) -> Result<(), TarError> {
        self.replaced = true;
        remove_all(dir, base).map_err(|x| self.err("replacing", rel, x))?;
        Ok(())
    }

    /// The directory named `parent`, made if missing, kept as [`Parent`].
    fn open_parent(&self, parent: &[u8]) -> Result<Parent, Errno> {
        let fd = self.parent_dir(parent)?;
        let st = rustix::fs::fstat(&fd)?;
        Ok(Parent::new(parent.to_vec(), fd, &st, &self.creator))
    }

    /// The directory an entry goes into, made if missing.
    fn parent_dir(&self, parent: &[u8]) -> Result<OwnedFd, Errno> {
        let new = NewDir::default();
        match self.opts.parents {
            MissingParents::AsNamed => self.root.make_dir_all(parent, &new),
            MissingParents::AtTarget => match self.root.open_dir(parent) {
                Err(Errno::NOENT) => {
                    let resolved = self.root.resolve(parent)?;
                    self.root.make_dir_all(&resolved, &new)
                }
                other => other,
            },
        }
    }

    fn dir(
        &mut self,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        existing: Option<(FileType, u64)>,
    ) -> Result<(OwnedFd, rustix::fs::Stat), TarError> {
        // A directory of this layer over a whiteout of this layer: the lower
        // directory of that name is gone, so the new one must not show its
        // contents through the overlay.
        let mut opaque = false;
        match existing {
            Some((FileType::Directory, _)) => {}
            Some((kind, rdev)) => {
                opaque = self.opts.whiteouts.opaque_xattr().is_some() && is_whiteout(kind, rdev);
                self.replace(dir, base, rel)?;
                self.mkdir(dir, base, rel)?;
            }
            None => self.mkdir(dir, base, rel)?,
        }
        let fd = open_child_dir(dir, base).map_err(|x| self.err("opening", rel, x))?;
        if let Some(name) = self.opts.whiteouts.opaque_xattr().filter(|_| opaque) {
            xattr::set_fd(&fd, name, b"y").map_err(|x| self.err("marking opaque", rel, x))?;
        }
        self.stats.dirs += 1;
        let st = self.dir_meta(e, rel, &fd)?;
        Ok((fd, st))
    }

    fn mkdir(&self, dir: &OwnedFd, base: &[u8], rel: &[u8]) -> Result<(), TarError> {
        // Owner-only until the mode is set at the end: nobody else sees a
        // half-extracted directory.
        rustix::fs::mkdirat(dir, base, Mode::from_raw_mode(0o700))
            .map_err(|x| self.err("creating", rel, x))
    }

    /// Owner and xattrs now; mode and times once the contents are written
    /// (writing into a directory changes its mtime, and a mode without
    /// write permission would stop a non-root extraction).
    /// Returns the directory's status after.
    fn dir_meta(
        &mut self,
        e: &Entry,
        rel: &[u8],
        fd: &OwnedFd,
    ) -> Result<rustix::fs::Stat, TarError> {
        if let Some(o) = self.owner(e) {
            let r = rustix::fs::fchown(fd, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid)));
            self.chowned(r)
                .map_err(|x| self.err("changing the owner of", rel, x))?;
        }
        if self.opts.xattrs {
            for (name, value) in &e.xattrs {
                if !xattr::is_overlay(name) {
                    let r = xattr::set_fd(fd, name, value);
                    self.xattr_result(r, rel)?;
                }
            }
        }
        let st = rustix::fs::fstat(fd).map_err(|x| self.err("inspecting", rel, x))?;
        self.dirs.push(DirMeta {
            rel: rel.to_vec(),
            mode: e.mode,
            times: self.times(e),
            dev: st.st_dev,
            ino: st.st_ino,
        });
        Ok(st)
    }

    fn file(
        &mut self,
        tar: &mut impl Read,
        e: &Entry,
        rel: &[u8],
        dir: &Parent,
        base: &[u8],
    ) -> Result<(), TarError> {
        // O_EXCL: a new inode, never an existing file or the target of a
        // symlink; whatever is there is removed first.
        let (create_mode, mode_set) = self.creator.create_mode(e.mode, dir);
        let create = || {
            rustix::fs::openat(
                &dir.fd,
                base,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(create_mode),
            )
        };
        let fd = match create() {
            Err(Errno::EXIST) => {
                self.replace(&dir.fd, base, rel)?;
                create()
            }
            r => r,
        }
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
                    .map_err(|x| self.io_err("writing", rel, x))?;
            }
        }
        self.stats.files += 1;
        self.stats.bytes += match &e.sparse {
            None => e.size,
            Some(segments) => segments.iter().map(|s| s.1).sum(),
        };
        let fd = OwnedFd::from(file);
        self.fd_meta(e, rel, &fd, dir.new_gid, mode_set)
    }

    fn copy(
        &mut self,
        tar: &mut impl Read,
        e: &Entry,
        rel: &[u8],
        out: &mut File,
    ) -> Result<(), TarError> {
        loop {
            let n = read_data(tar, &mut self.buf, e)?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&self.buf[..n])
                .map_err(|x| self.io_err("writing", rel, x))?;
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
    ) -> Result<(), TarError> {
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
                .map_err(|x| self.io_err("writing", rel, x))?;
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
    ) -> Result<(), TarError> {
        // The target is stored verbatim and never resolved here: it is the
        // container's business, and lookups through it stay in the root.
        rustix::fs::symlinkat(e.link.as_slice(), dir, base)
            .map_err(|x| self.err("creating the symlink", rel, x))?;
        self.stats.symlinks += 1;
        self.at_meta(e, rel, dir, base, false)
    }

    fn node(&mut self, e: &Entry, rel: &[u8], dir: &OwnedFd, base: &[u8]) -> Result<(), TarError> {
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
    ) -> Result<(), TarError> {
        let invalid_link = |reason| TarError::InvalidLink {
            entry: e.name(),
            target: String::from_utf8_lossy(&e.link).into_owned(),
            reason,
        };
        // Link targets are names in the same archive: cleaned as names are,
        // then looked up inside the root.
        let target = clean_entry_name(&e.link).map_err(|bad| bad_name(e, &e.link, bad))?;
        if target.is_empty() {
            return Err(invalid_link("is the directory the archive is applied to"));
        }
        if target == rel && existing.is_some() {
            return Ok(());
        }
        let (tparent, tbase) = split(&target);
        let tdir = self.root.open_dir(tparent).map_err(|x| match x {
            Errno::NOENT | Errno::NOTDIR => invalid_link("does not exist in the archive"),
            x => self.err("resolving the hardlink target of", rel, x),
        })?;
        let link_kind =
            match kind_at(&tdir, tbase).map_err(|x| self.err("inspecting", &target, x))? {
                None => return Err(invalid_link("does not exist in the archive")),
                Some((FileType::Directory, _)) => return Err(invalid_link("is a directory")),
                Some((kind, _)) => kind,
            };
        if existing.is_some() {
            self.replace(dir, base, rel)?;
        }
        // Without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink
        // itself, as tar means it, and reads nothing through it.
        rustix::fs::linkat(&tdir, tbase, dir, base, AtFlags::empty())
            .map_err(|x| self.err("creating the hardlink", rel, x))?;
        self.stats.hardlinks += 1;
        if !self.opts.link_metadata {
            return Ok(());
        }
        // The link is the target's inode: BuildKit gives it the entry's
        // owner, and its mode and times unless it is a symlink.
        self.at_meta(e, rel, dir, base, link_kind != FileType::Symlink)
    }

    /// A chown's result: an id the user namespace does not map is no error
    /// under [`Owners::ArchiveWhereMapped`].
    fn chowned(&self, r: Result<(), Errno>) -> Result<(), Errno> {
        match r {
            Err(Errno::INVAL) if self.opts.owners == Owners::ArchiveWhereMapped => Ok(()),
            r => r,
        }
    }

    /// Who owns an entry, if anybody is to be made its owner.
    fn owner(&self, e: &Entry) -> Option<Owner> {
        match self.opts.owners {
            Owners::Archive | Owners::ArchiveWhereMapped => Some(Owner {
                uid: e.uid as u32,
                gid: e.gid as u32,
            }),
            Owners::Fixed(o) => Some(o),
            Owners::Unchanged => None,
        }
    }

    /// Owner, mode, xattrs and times of a file this applier created,
    /// owned by the creator's uid and `gid`, its mode `mode_set` already.
    /// The mode follows the owner: chown(2) clears setuid and setgid.
    fn fd_meta(
        &mut self,
        e: &Entry,
        rel: &[u8],
        fd: &OwnedFd,
        gid: u32,
        mode_set: bool,
    ) -> Result<(), TarError> {
        if let Some(o) = self.owner(e)
            && (o.uid, o.gid) != (self.creator.uid, gid)
        {
            let r = rustix::fs::fchown(fd, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid)));
            self.chowned(r)
                .map_err(|x| self.err("changing the owner of", rel, x))?;
        }
        if !mode_set {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode))
                .map_err(|x| self.err("changing the mode of", rel, x))?;
        }
        if self.opts.xattrs {
            for (name, value) in &e.xattrs {
                if !xattr::is_overlay(name) {
                    let r = xattr::set_fd(fd, name, value);
                    self.xattr_result(r, rel)?;
                }
            }
        }
        rustix::fs::futimens(fd, &self.times(e))
            .map_err(|x| self.err("setting the times of", rel, x))
    }

    /// The same for a name that is not opened (a symlink, device, FIFO or
    /// hardlink: opening those would follow the link, talk to a driver or
    /// block). `chmod` and the times are skipped for a symlink, whose own
    /// mode Linux ignores.
    fn at_meta(
        &mut self,
        e: &Entry,
        rel: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        chmod: bool,
    ) -> Result<(), TarError> {
        if let Some(o) = self.owner(e) {
            self.chowned(crate::root::chown_at(dir, base, o))
                .map_err(|x| self.err("changing the owner of", rel, x))?;
        }
        if chmod {
            // Not a symlink (checked by the caller), so following is moot.
            rustix::fs::chmodat(dir, base, Mode::from_raw_mode(e.mode), AtFlags::empty())
                .map_err(|x| self.err("changing the mode of", rel, x))?;
        }
        if self.opts.xattrs && !e.xattrs.is_empty() {
            let p = xattr::proc_path(dir.as_fd(), base);
            for (name, value) in &e.xattrs {
                if !xattr::is_overlay(name) {
                    let r = xattr::set_path(&p, name, value);
                    self.xattr_result(r, rel)?;
                }
            }
        }
        rustix::fs::utimensat(dir, base, &self.times(e), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|x| self.err("setting the times of", rel, x))
    }

    /// Docker skips xattrs the destination filesystem refuses.
    fn xattr_result(&mut self, r: Result<(), Errno>, rel: &[u8]) -> Result<(), TarError> {
        match r {
            Ok(()) => Ok(()),
            Err(x) if xattr::refused(x) => {
                self.stats.xattrs_skipped += 1;
                Ok(())
            }
            Err(x) => Err(self.err("setting an xattr on", rel, x)),
        }
    }

    fn whiteout(&mut self, e: &Entry, parent: &[u8], w: Whiteout<'_>) -> Result<(), TarError> {
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
        if self.opts.whiteouts == Whiteouts::Collect {
            let collected = &mut self.stats.collected;
            match name {
                Some(name) => collected.whiteouts.push(join(parent, name)),
                None => collected.opaque.push(parent.to_vec()),
            }
            return Ok(());
        }
        let Some(dir) = self.whiteout_dir(parent)? else {
            return Ok(());
        };
        match (name, self.opts.whiteouts) {
            (_, Whiteouts::Plain) => unreachable!("plain archives have no whiteouts"),
            (None, w @ (Whiteouts::Overlay | Whiteouts::UserOverlay)) => {
                let opaque = w.opaque_xattr().expect("an overlay format");
                xattr::set_fd(&dir, opaque, b"y").map_err(|x| self.err("marking opaque", parent, x))
            }
            (None, Whiteouts::Apply) => self.prune(parent, &dir),
            (_, Whiteouts::Collect) => unreachable!("collected before"),
            (Some(name), Whiteouts::Overlay | Whiteouts::UserOverlay) => {
                self.overlay_whiteout(e, &dir, name, parent)
            }
            (Some(name), Whiteouts::Apply) => {
                let target = join(parent, name);
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
    fn whiteout_dir(&self, parent: &[u8]) -> Result<Option<OwnedFd>, TarError> {
        let mut r = self.root.open_dir_no_symlinks(parent);
        if r.as_ref().err() == Some(&Errno::NOENT) && self.opts.whiteouts.opaque_xattr().is_some() {
            r = match self.root.make_dir_all(parent, &NewDir::default()) {
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
    ) -> Result<(), TarError> {
        let target = join(parent, name);
        match kind_at(dir, name).map_err(|x| self.err("inspecting", &target, x))? {
            // This layer made the directory: it stays, but nothing of the
            // lower layers shows through it.
            Some((FileType::Directory, _)) => {
                let sub = open_child_dir(dir, name).map_err(|x| self.err("opening", &target, x))?;
                let opaque = self
                    .opts
                    .whiteouts
                    .opaque_xattr()
                    .expect("an overlay format");
                xattr::set_fd(&sub, opaque, b"y")
                    .map_err(|x| self.err("marking opaque", &target, x))
            }
            // This layer made a file there: it already hides the lower one.
            Some(_) => Ok(()),
            None => {
                // overlayfs.rst: "A whiteout is created as a character device
                // with 0/0 device number".
                rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(|x| self.err("creating the whiteout", &target, x))?;
                if let Some(o) = self.owner(e) {
                    self.chowned(crate::root::chown_at(dir, name, o))
                        .map_err(|x| self.err("changing the owner of", &target, x))?;
                }
                rustix::fs::utimensat(dir, name, &self.times(e), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|x| self.err("setting the times of", &target, x))
            }
        }
    }

    /// Apply mode: removes from the directory `rel` everything this layer
    /// did not make, keeping the way to what it did.
    fn prune(&mut self, rel: &[u8], dir: &OwnedFd) -> Result<(), TarError> {
        let names = crate::root::names(dir).map_err(|x| self.err("reading", rel, x))?;
        for name in names {
            let child = join(rel, &name);
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
        for a in ancestors(rel) {
            if !self.layer_paths.insert(a.to_vec()) {
                break;
            }
        }
    }

    fn finish_dirs(&mut self) -> Result<(), TarError> {
        for d in std::mem::take(&mut self.dirs) {
            let fd = match self.root.open_dir_nofollow(&d.rel) {
                Ok(fd) => fd,
                // Replaced or removed later in the archive.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(x) => return Err(self.err("opening", &d.rel, x)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|x| self.err("inspecting", &d.rel, x))?;
            if (st.st_dev, st.st_ino) != (d.dev, d.ino) {
                continue;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|x| self.err("changing the mode of", &d.rel, x))?;
            rustix::fs::futimens(&fd, &d.times)
                .map_err(|x| self.err("setting the times of", &d.rel, x))?;
            if self.opts.whiteouts == Whiteouts::Collect {
                self.stats.collected.dirs.push(d.rel);
            }
        }
        Ok(())
    }

    fn times(&self, e: &Entry) -> Timestamps {
        match self.opts.fixed_time {
            Some(t) => {
                let t = Timespec {
                    tv_sec: t,
                    tv_nsec: 0,
                };
                Timestamps {
                    last_access: t,
                    last_modification: t,
                }
            }
            None => times(e, self.opts.bound_times),
        }
    }

    fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> TarError {
        self.io_err(op, rel, io::Error::from(e))
    }

    fn io_err(&self, op: &'static str, rel: &[u8], source: io::Error) -> TarError {
        TarError::Io {
            op,
            path: self.root.host(rel),
            rel: rel.to_vec(),
            source,
        }
    }
}

/// The type of `name` in `dir` and its device number, not following a
/// symlink; `None` if absent.
fn kind_at(dir: impl AsFd, name: &[u8]) -> Result<Option<(FileType, u64)>, Errno> {
    Ok(
        crate::root::stat_at(dir, name)?
            .map(|st| (FileType::from_raw_mode(st.st_mode), st.st_rdev)),
    )
}

fn read_data(tar: &mut impl Read, buf: &mut [u8], e: &Entry) -> Result<usize, TarError> {
    loop {
        match tar.read(buf) {
            Ok(n) => return Ok(n),
            Err(x) if x.kind() == io::ErrorKind::Interrupted => {}
            Err(x) if x.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(TarError::Truncated {
                    entry: e.name(),
                    source: x,
                });
            }
            Err(source) => return Err(TarError::Read { source }),
        }
    }
}

fn truncated(e: &Entry) -> TarError {
    TarError::Truncated {
        entry: e.name(),
        source: io::ErrorKind::UnexpectedEof.into(),
    }
}

fn invalid_entry(e: &Entry, reason: &'static str) -> TarError {
    TarError::InvalidEntry {
        entry: e.name(),
        reason,
    }
}

/// An entry name or link target that cannot be cleaned.
fn bad_name(e: &Entry, name: &[u8], bad: BadName) -> TarError {
    match bad {
        BadName::Nul => invalid_entry(e, "contains a NUL byte"),
        BadName::Escapes => TarError::Escape {
            path: String::from_utf8_lossy(name).into_owned(),
        },
    }
}

fn is_whiteout(kind: FileType, rdev: u64) -> bool {
    kind == FileType::CharacterDevice && rdev == 0
}

/// The entry's access and modification times, as Docker and BuildKit set
/// them: the access time is the later of the two (`latestTime`), and with
/// `bounded` a time before the epoch or past what Go's
/// `time.Unix(0, 1<<63-1)` holds is the epoch (`boundTime`).
fn times(e: &Entry, bounded: bool) -> Timestamps {
    let bound = |t| if bounded { bound(t) } else { t };
    let mtime = bound(e.mtime);
    let atime = e.atime.map(bound).filter(|a| *a > mtime).unwrap_or(mtime);
    let ts = |(secs, nanos): (i64, u32)| Timespec {
        tv_sec: secs,
        tv_nsec: i64::from(nanos),
    };
    Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    }
}

fn bound(t: (i64, u32)) -> (i64, u32) {
    const MAX_SECS: i64 = i64::MAX / 1_000_000_000;
    if t.0 < 0 || t.0 > MAX_SECS { (0, 0) } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_bounded_and_atime_never_earlier() {
        let entry = |mtime, atime| Entry {
            path: b"f".to_vec(),
            link: Vec::new(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            atime,
            size: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            sparse: None,
        };
        let secs = |t: Timestamps| (t.last_access.tv_sec, t.last_modification.tv_sec);
        assert_eq!(secs(times(&entry((100, 0), None), true)), (100, 100));
        assert_eq!(
            secs(times(&entry((100, 0), Some((50, 0))), true)),
            (100, 100)
        );
        assert_eq!(
            secs(times(&entry((100, 0), Some((150, 0))), true)),
            (150, 100)
        );
        assert_eq!(secs(times(&entry((-5, 0), None), true)), (0, 0));
        assert_eq!(secs(times(&entry((i64::MAX, 0), None), true)), (0, 0));
        assert_eq!(secs(times(&entry((-5, 0), None), false)), (-5, -5));
    }
}
