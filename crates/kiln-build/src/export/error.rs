//! The one error type of the exporters.

use std::path::PathBuf;

use kiln_image::{Digest, LayerError, StoreError};

/// What went wrong encoding an image or writing it out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// An `--output` kiln cannot read.
    #[error("--output {spec}: {reason}")]
    Spec { spec: String, reason: String },

    #[error(transparent)]
    Store(#[from] StoreError),

    /// A layer could not be decompressed or compressed again.
    #[error("converting layer {layer}")]
    Convert {
        layer: Digest,
        #[source]
        source: LayerError,
    },

    /// A layer's tar could not be read while its times were rewritten.
    #[error("rewriting the timestamps of layer {layer}")]
    Tar {
        layer: Digest,
        #[source]
        source: kiln_fs::tar::TarError,
    },

    /// A layer whose media type says nothing about its compression.
    #[error("layer {digest} has media type {media_type:?}, which kiln cannot convert")]
    UnknownLayer { digest: Digest, media_type: String },

    /// An image whose documents do not fit together.
    #[error("malformed image: {reason}")]
    Shape { reason: String },

    /// A `type=local` output could not be written.
    #[error("writing the image's files into {}", dir.display())]
    Local {
        dir: PathBuf,
        #[source]
        source: kiln_fs::tar::TarError,
    },

    /// A file output could not be written.
    #[error("writing {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
