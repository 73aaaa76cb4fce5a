//! Archiving a directory as a layer tar.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use kiln_fs::names;
use kiln_fs::path;
use kiln_fs::tar::whiteout::{self, OPAQUE};
use kiln_fs::tar::{EntryHeader, Kind, TarWriter};
use kiln_fs::xattr::{self, Xattrs};

use super::error::errno;
use super::{LayerError, LayerStats, WriteOptions};

/// Writes the directory `dir` as an uncompressed layer tar to `out`.
///
/// The walk is depth first, each directory's names in byte order, a
/// directory before its contents (the order of Go's `filepath.Walk`, which
/// BuildKit's differ uses); `dir` itself is not an entry. Symlinks are
/// stored, never followed. Files with several links (same device and
/// inode) are stored once, then as hardlinks to the first name. Sockets
/// are skipped (a tar cannot hold them). Xattrs are kept as `SCHILY.xattr`
/// PAX records if they mean something in an image (file capabilities,
/// ACLs, `user.*`, `trusted.*`; not overlayfs's or SELinux labels).
///
/// With `overlay_upper`, whiteout devices become `.wh.NAME` entries (where
/// `NAME` sorts) and opaque directories get a `.wh..wh..opq` entry right
/// after them. An upper dir written with overlayfs's `redirect_dir` or
/// `metacopy` is refused: part of its diff lives in the lower layers. A
/// real file named `.wh.*` is refused too: every reader would take it for
/// a whiteout.
///
/// The bytes depend only on the tree: names, contents, modes, numeric
/// owners, mtimes in whole seconds (clamped to `epoch` if set), kept
/// xattrs and link structure. Not on inode numbers, directory order,
/// atimes, ctimes or user names.
pub fn write(dir: &Path, out: impl Write, opts: &WriteOptions) -> Result<LayerStats, LayerError> {
    let top = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io("opening", dir, errno(e)))?;
    let mut w = Walker {
        dir,
        opts,
        tar: TarWriter::new(BufWriter::with_capacity(256 * 1024, out)),
        links: HashMap::new(),
        stats: LayerStats::default(),
        buf: vec![0; 256 * 1024],
    };
    w.walk(top)?;
    let (_, size) = w
        .tar
        .finish()
        .map_err(|source| LayerError::Write { source })?;
    w.stats.tar_bytes = size;
    Ok(w.stats)
}

struct Walker<'a, W: Write> {
    dir: &'a Path,
    opts: &'a WriteOptions,
    tar: TarWriter<BufWriter<W>>,
    /// (device, inode) of files with several links → the first name written.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: LayerStats,
    buf: Vec<u8>,
}

/// A directory being walked: its descriptor, its name in the archive
/// (`a/b`, empty for the top), and its sorted names still to visit.
struct Frame {
    fd: OwnedFd,
    rel: Vec<u8>,
    names: std::vec::IntoIter<Vec<u8>>,
}

impl<W: Write> Walker<'_, W> {
    fn walk(&mut self, top: OwnedFd) -> Result<(), LayerError> {
        let mut stack = vec![self.frame(top, Vec::new())?];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let rel = path::join(&frame.rel, &name);
            if let Some(sub) = self.entry(&frame.fd, &name, rel)? {
                stack.push(sub);
            }
        }
        Ok(())
    }

    fn frame(&self, fd: OwnedFd, rel: Vec<u8>) -> Result<Frame, LayerError> {
        // Sorted: the archive's order is the bytes' order, not the disk's.
        let list = names(&fd).map_err(|e| self.err("reading", &rel, e))?;
        Ok(Frame {
            fd,
            rel,
            names: list.into_iter(),
        })
    }

    /// Writes one name of the directory `dir`; returns the frame to walk
    /// next if it is a directory.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        rel: Vec<u8>,
    ) -> Result<Option<Frame>, LayerError> {
        if self.opts.exclude.contains(&rel) {
            return Ok(None);
        }
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.err("inspecting", &rel, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let overlay = self.opts.overlay_upper;

        if overlay && kind == FileType::CharacterDevice && st.st_rdev == 0 {
            // overlayfs may hardlink all whiteouts to one inode (it shares a
            // whiteout per upper fs), so they are never treated as links.
            let mut wh = whiteout::PREFIX.to_vec();
            wh.extend_from_slice(name);
            let (parent, _) = path::split(&rel);
            let wh_rel = path::join(parent, &wh);
            self.empty_file(&wh_rel, &st)?;
            self.stats.whiteouts += 1;
            return Ok(None);
        }
        if name.starts_with(whiteout::PREFIX) {
            return Err(LayerError::ReservedName {
                path: self.display(&rel),
            });
        }
        if kind == FileType::Socket {
            self.stats.sockets_skipped += 1;
            return Ok(None);
        }

        let proc = xattr::proc_path(dir.as_fd(), name);
        let (xattrs, opaque) = self.xattrs(&proc, &rel)?;

        if kind != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                self.header(&rel, Kind::Link, &first, &st, 0, &[])?;
                self.stats.hardlinks += 1;
                return Ok(None);
            }
            self.links.insert(key, rel.clone());
        }

        match kind {
            FileType::Directory => {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.err("opening", &rel, e))?;
                let mut dir_name = rel.clone();
                dir_name.push(b'/');
                self.header(&dir_name, Kind::Dir, b"", &st, 0, &xattrs)?;
                self.stats.dirs += 1;
                if opaque {
                    self.empty_file(&path::join(&rel, OPAQUE), &st)?;
                    self.stats.opaque_dirs += 1;
                }
                return self.frame(fd, rel).map(Some);
            }
            FileType::RegularFile => self.file(dir, name, &rel, &st, &xattrs)?,
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| self.err("reading the symlink", &rel, e))?;
                self.header(&rel, Kind::Symlink, target.as_bytes(), &st, 0, &xattrs)?;
                self.stats.symlinks += 1;
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let k = if kind == FileType::CharacterDevice {
                    Kind::Char
                } else {
                    Kind::Block
                };
                self.header(&rel, k, b"", &st, 0, &xattrs)?;
                self.stats.devices += 1;
            }
            FileType::Fifo => {
                self.header(&rel, Kind::Fifo, b"", &st, 0, &xattrs)?;
                self.stats.fifos += 1;
            }
            _ => {
                self.stats.sockets_skipped += 1;
            }
        }
        Ok(None)
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        st: &Stat,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), LayerError> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err("opening", rel, e))?;
        let now = rustix::fs::fstat(&fd).map_err(|e| self.err("inspecting", rel, e))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(LayerError::Changed {
                path: self.display(rel),
            });
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        self.header(rel, Kind::File, b"", st, size, xattrs)?;
        let mut file = File::from(fd);
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(LayerError::Changed {
                        path: self.display(rel),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io("reading", self.display(rel), e)),
            };
            self.tar
                .write_data(&self.buf[..n])
                .map_err(|source| LayerError::Write { source })?;
            left -= n as u64;
        }
        // A file that grew would make the entry disagree with its size.
        match file.read(&mut self.buf[..1]) {
            Ok(0) => {}
            Ok(_) => {
                return Err(LayerError::Changed {
                    path: self.display(rel),
                });
            }
            Err(e) => return Err(LayerError::io("reading", self.display(rel), e)),
        }
        self.tar
            .end_data(size)
            .map_err(|source| LayerError::Write { source })?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// The kept xattrs of a name, sorted, and whether it is an opaque
    /// directory of an overlay upper dir.
    fn xattrs(&self, proc: &[u8], rel: &[u8]) -> Result<(Xattrs, bool), LayerError> {
        let overlay = self.opts.overlay_upper;
        let all = xattr::read_path(proc, |n| {
            xattr::in_layer(n) || (overlay && xattr::is_overlay(n))
        })
        .map_err(|e| LayerError::io("reading the xattrs of", self.display(rel), errno(e)))?;
        let mut kept = Vec::new();
        let mut opaque = false;
        for (name, value) in all {
            if !xattr::is_overlay(&name) {
                kept.push((name, value));
                continue;
            }
            let what = name
                .strip_prefix(b"trusted.overlay.")
                .or_else(|| name.strip_prefix(b"user.overlay."));
            match what {
                Some(b"opaque") => opaque = value == b"y",
                // The data or the directory contents are in a lower
                // layer: the upper dir alone is not the diff.
                Some(b"redirect" | b"metacopy") => {
                    return Err(LayerError::OverlayFeature {
                        path: self.display(rel),
                        xattr: String::from_utf8_lossy(&name).into_owned(),
                    });
                }
                _ => {}
            }
        }
        kept.sort();
        Ok((kept, opaque))
    }

    /// An empty regular file entry (a whiteout or the opaque marker) with
    /// the owner and mtime of what it stands for, mode 0600 as Docker's
    /// overlay converter writes it.
    fn empty_file(&mut self, rel: &[u8], st: &Stat) -> Result<(), LayerError> {
        let mut st = *st;
        st.st_mode = 0o600;
        self.header(rel, Kind::File, b"", &st, 0, &[])?;
        self.tar
            .end_data(0)
            .map_err(|source| LayerError::Write { source })
    }

    fn header(
        &mut self,
        name: &[u8],
        kind: Kind,
        link: &[u8],
        st: &Stat,
        size: u64,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), LayerError> {
        let mut mtime = st.st_mtime;
        if let Some(epoch) = self.opts.epoch {
            mtime = mtime.min(epoch);
        }
        let (dev_major, dev_minor) = match kind {
            Kind::Char | Kind::Block => {
                (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev))
            }
            _ => (0, 0),
        };
        let h = EntryHeader {
            path: name,
            kind,
            link,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime,
            size,
            dev_major,
            dev_minor,
            xattrs,
        };
        self.tar
            .append(&h)
            .map_err(|source| LayerError::Write { source })?;
        self.stats.entries += 1;
        Ok(())
    }

    fn display(&self, rel: &[u8]) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.dir.join(std::ffi::OsStr::from_bytes(rel))
    }

    fn err(&self, op: &'static str, rel: &[u8], e: rustix::io::Errno) -> LayerError {
        LayerError::io(op, self.display(rel), errno(e))
    }
}
