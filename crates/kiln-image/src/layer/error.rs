//! The one error type of the layer codec and the compression pipeline.

use std::io;
use std::path::PathBuf;

/// What went wrong while reading, extracting, writing or compressing a layer.
///
/// Filesystem errors name the path they happened on; tar errors
/// ([`kiln_fs::tar::TarError`]) name the entry (as it is spelled in the
/// archive) or the byte offset of a header.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The layer stream could not be read.
    #[error("reading the layer stream")]
    Read {
        #[source]
        source: io::Error,
    },

    /// The layer stream could not be written.
    #[error("writing the layer stream")]
    Write {
        #[source]
        source: io::Error,
    },

    /// The layer tar cannot be read or applied.
    #[error(transparent)]
    Tar(#[from] kiln_fs::tar::TarError),

    /// A filesystem operation failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file changed size while it was being archived.
    #[error("{} changed while it was being archived", path.display())]
    Changed { path: PathBuf },

    /// A name the tar format cannot carry unambiguously.
    #[error("{}: names starting with .wh. are reserved for whiteouts", path.display())]
    ReservedName { path: PathBuf },

    /// The upper directory uses an overlayfs feature whose diff is not
    /// self-contained (the data or the directory contents live in a lower
    /// layer).
    #[error(
        "{} carries {xattr}: mount the overlay with redirect_dir=off and metacopy=off",
        path.display()
    )]
    OverlayFeature { path: PathBuf, xattr: String },

    /// A compression level outside the codec's range.
    #[error("{codec} level {level} is out of range {min}..={max}")]
    InvalidLevel {
        codec: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },

    /// The compressor failed (other than by its output failing).
    #[error("compressing with {codec}")]
    Compress {
        codec: &'static str,
        #[source]
        source: io::Error,
    },

    /// The decompressor could not be set up.
    #[error("decompressing {codec}")]
    Decompress {
        codec: &'static str,
        #[source]
        source: io::Error,
    },
}

impl LayerError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> LayerError {
        LayerError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// `rustix` errors as `std::io` errors, for the `source` fields.
pub(crate) fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}
