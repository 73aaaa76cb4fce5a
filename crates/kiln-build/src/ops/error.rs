//! The one error type of the COPY and ADD file operations.

use std::io;
use std::path::PathBuf;

/// What went wrong while resolving, fetching, copying or unpacking the
/// sources of a `COPY` or `ADD`.
///
/// Paths inside a source tree or the destination are given as the build
/// sees them (`/app/x`, rooted at that tree); host paths only where no tree
/// is involved (a download directory). Where Docker's wording is what users
/// search for, the message is Docker's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The copy was stopped before its end (the build was cancelled).
    #[error("the copy stopped: the build was cancelled")]
    Stopped,

    /// A source path (after symlinks inside its tree were followed) does
    /// not exist.
    #[error("source {path:?} not found in {}", root.display())]
    SourceNotFound { root: PathBuf, path: String },

    /// Several sources and a destination that is neither an existing
    /// directory nor written with a trailing `/` (Docker's text).
    #[error(
        "When using {command} with more than one source file, the destination must be a directory and end with a /"
    )]
    DestinationNotDirectory { command: &'static str, dest: String },

    /// A directory would be copied onto something that is not a directory
    /// (BuildKit's text).
    #[error("cannot copy to non-directory: {path}")]
    NotADirectory { path: String },

    /// A file would replace a directory (BuildKit's text).
    #[error("cannot replace to directory {path} with file")]
    ReplaceDirectory { path: String },

    /// `--chmod` is neither an octal mode up to 07777 nor a valid symbolic
    /// mode. Numeric-looking values get BuildKit's text.
    #[error("invalid chmod parameter: '{value}'. {reason}")]
    InvalidChmod { value: String, reason: &'static str },

    /// `--chown` names a user or group the destination's /etc/passwd or
    /// /etc/group does not have, or an id out of range.
    #[error("invalid --chown={spec}")]
    Chown {
        spec: String,
        #[source]
        source: kiln_sandbox::SandboxError,
    },

    /// `--checksum` is not `algorithm:hex` with a known algorithm.
    #[error("invalid checksum {value:?}: {reason}")]
    InvalidChecksum { value: String, reason: &'static str },

    /// A URL that does not parse or is not http(s).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The download failed (connection, TLS, redirect loop, cut body).
    #[error("downloading {url}")]
    Download {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The server answered with a status outside 200..400 (BuildKit's text).
    #[error("downloading {url}: invalid response status {status}")]
    HttpStatus { url: String, status: u16 },

    /// The downloaded bytes do not have the `--checksum` digest (BuildKit's
    /// text).
    #[error("digest mismatch for {url}: {actual} (expected: {expected})")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },

    /// An archive entry whose name or hardlink target climbs out of the
    /// directory it is extracted into (BuildKit's text).
    #[error("archive path {entry:?} is outside extraction root")]
    ArchiveEscape { entry: String },

    /// An archive that cannot be read as a tar, or an entry kiln does not
    /// extract.
    #[error("archive {archive}: {source}")]
    Archive {
        archive: String,
        #[source]
        source: kiln_fs::tar::TarError,
    },

    /// A filesystem operation failed; `path` is inside the tree named by
    /// `root`.
    #[error("{op} {path} (in {})", root.display())]
    Io {
        op: &'static str,
        root: PathBuf,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// `rustix` errors as `std::io` errors, for the `source` fields.
pub(crate) fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}
