//! What can go wrong reading an archive or applying it.

use std::io;
use std::path::PathBuf;

/// An archive that cannot be read or applied.
///
/// Tar errors name the entry (as it is spelled in the archive) or the byte
/// offset of a header; filesystem errors name the host path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// The stream could not be read.
    #[error("reading the tar stream")]
    Read {
        #[source]
        source: io::Error,
    },

    /// The stream is not a well-formed archive.
    #[error("malformed tar at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },

    /// An entry's data ended before its header's size.
    #[error("tar entry {entry:?} is truncated")]
    Truncated {
        entry: String,
        #[source]
        source: io::Error,
    },

    /// An entry name, or a hardlink target, whose `..` climbs out of the
    /// directory the archive is applied to (BuildKit's text).
    #[error("archive path {path:?} is outside extraction root")]
    Escape { path: String },

    /// An entry that cannot be applied as written (a NUL in its name, an
    /// owner id of -1, a whiteout naming nothing, a file replacing the
    /// top).
    #[error("tar entry {entry:?}: {reason}")]
    InvalidEntry { entry: String, reason: &'static str },

    /// A hardlink whose target is the top or a directory, or is not there.
    #[error("tar entry {entry:?}: hardlink target {target:?} {reason}")]
    InvalidLink {
        entry: String,
        target: String,
        reason: &'static str,
    },

    /// An entry type kiln does not apply (GNU volume labels, multi-volume
    /// continuations, ...).
    #[error("tar entry {entry:?} has unsupported type {kind:?}")]
    UnsupportedEntry { entry: String, kind: char },

    /// A filesystem operation failed at `path` (on the host), which is
    /// `rel` below the directory the archive is applied to.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        rel: Vec<u8>,
        #[source]
        source: io::Error,
    },
}
