//! What the context module reads from `lstat`: the kind of an entry, the
//! identity of a file's content for the memo, and the xattrs a layer keeps.

use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::buffer::spare_capacity;
use rustix::io::Errno;

use super::error::ContextError;

/// What a build-context entry is (never followed: a symlink is a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl EntryKind {
    pub(crate) fn of(t: FileType) -> EntryKind {
        if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_fifo() {
            EntryKind::Fifo
        } else if t.is_char_device() {
            EntryKind::CharDevice
        } else if t.is_block_device() {
            EntryKind::BlockDevice
        } else if t.is_socket() {
            EntryKind::Socket
        } else {
            EntryKind::File
        }
    }

    /// The byte that stands for the kind in the digest encoding. Fixed: part
    /// of the cache-key format.
    pub(crate) fn tag(self) -> u8 {
        match self {
            EntryKind::File => 1,
            EntryKind::Dir => 2,
            EntryKind::Symlink => 3,
            EntryKind::Fifo => 4,
            EntryKind::CharDevice => 5,
            EntryKind::BlockDevice => 6,
            EntryKind::Socket => 7,
        }
    }
}

/// The stat fields that must be unchanged for a remembered content hash to
/// hold: the file (device, inode) and the traces any write leaves (size,
/// mtime, ctime). See the memo module for why ctime is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime_sec: i64,
    pub(crate) mtime_nsec: u32,
    pub(crate) ctime_sec: i64,
    pub(crate) ctime_nsec: u32,
}

impl FileKey {
    pub(crate) fn of(m: &Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec() as u32,
            ctime_sec: m.ctime(),
            ctime_nsec: m.ctime_nsec() as u32,
        }
    }

    pub(crate) fn of_stat(st: &rustix::fs::Stat) -> FileKey {
        FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec as u32,
        }
    }

    pub(crate) fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// `lstat`, with the path in the error.
pub(crate) fn lstat(path: &Path) -> Result<Metadata, ContextError> {
    std::fs::symlink_metadata(path).map_err(ContextError::io("inspecting", path))
}

/// `lstat`, `None` when nothing is there (or a component on the way is not
/// a directory), which callers read as "not in the context".
pub(crate) fn lstat_opt(path: &Path) -> Result<Option<Metadata>, ContextError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(ContextError::io("inspecting", path)(e)),
    }
}

pub(crate) fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error())
}

/// Xattr names and values.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The xattrs of `path` (not following a symlink) that a layer keeps, as
/// `kiln_image::layer::keeps_xattr` decides, sorted by name: what a COPY of
/// the entry carries into the image.
pub(crate) fn kept_xattrs(path: &Path) -> Result<Xattrs, ContextError> {
    let err = |e: Errno| ContextError::io("reading xattrs of", path)(e.into());
    let raw = match read_growing(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, spare_capacity(buf)),
    ) {
        Ok(raw) => raw,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for name in raw.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !kiln_image::layer::keeps_xattr(name) {
            continue;
        }
        let value = match read_growing(
            || rustix::fs::lgetxattr_query(path, name),
            |buf| rustix::fs::lgetxattr(path, name, spare_capacity(buf)),
        ) {
            Ok(v) => v,
            // Removed between the listing and now.
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(err(e)),
        };
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
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

/// A relative path as the `/`-separated text the pattern matchers take.
/// Names that are not UTF-8 are matched in their lossy form.
pub(crate) fn slash_text(path: &Path) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(path.as_os_str().as_bytes())
}
