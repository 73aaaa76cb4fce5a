//! What the context module reads from `lstat`: the kind of an entry, the
//! identity of a file's content for the memo, and the xattrs a layer keeps.

use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

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
pub(crate) type Xattrs = kiln_fs::xattr::Xattrs;

/// The xattrs of `path` (not following a symlink) that a layer keeps
/// ([`kiln_fs::xattr::in_layer`]), sorted by name: what a COPY of the entry
/// carries into the image.
pub(crate) fn kept_xattrs(path: &Path) -> Result<Xattrs, ContextError> {
    let mut kept = kiln_fs::xattr::read_path(path.as_os_str().as_bytes(), kiln_fs::xattr::in_layer)
        .map_err(|e| ContextError::io("reading xattrs of", path)(e.into()))?;
    kept.sort();
    Ok(kept)
}

/// A relative path as the `/`-separated text the pattern matchers take.
/// Names that are not UTF-8 are matched in their lossy form.
pub(crate) fn slash_text(path: &Path) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(path.as_os_str().as_bytes())
}
