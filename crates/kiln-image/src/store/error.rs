//! The errors of the store, the image layout and the docker archive.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::document::DocumentError;
use crate::{Digest, ReferenceError};

/// What went wrong in the content store, an OCI layout or a docker archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{}", io_message(path, source))]
    Io { path: PathBuf, source: io::Error },

    #[error("timed out after {}s waiting for {}{}", waited.as_secs(), path.display(), holder_suffix(holder))]
    LockTimeout {
        path: PathBuf,
        waited: Duration,
        /// What the lock file says about its holder (`pid 123: prune`).
        holder: Option<String>,
    },

    #[error("content has digest {actual} ({size} bytes) but {expected} was expected")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },

    #[error("{what} has {actual} bytes but {expected} were expected")]
    SizeMismatch {
        /// The digest or file the size is of.
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("blob {digest} is not in the store ({})", path.display())]
    BlobNotFound { digest: Digest, path: PathBuf },

    /// A blob the store knows a source of, with nothing set to fetch it.
    #[error("blob {digest} is not in the store, only in {sources}, and nothing here may fetch it")]
    NotFetched { digest: Digest, sources: String },

    #[error("fetching blob {digest} from {sources}")]
    Fetch {
        digest: Digest,
        sources: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{digest}: {source}")]
    Document {
        digest: Digest,
        source: DocumentError,
    },

    #[error(
        "document {digest} is {size} bytes, more than the {limit} bytes kiln reads as a document"
    )]
    DocumentTooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },

    #[error("index {}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },

    #[error("index {} has schema version {found}, newer than the {supported} this kiln knows: upgrade kiln", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },

    #[error("index {}: record {key:?} in table {table} is unreadable: {reason}", path.display())]
    BadRecord {
        path: PathBuf,
        table: &'static str,
        key: String,
        reason: String,
    },

    #[error(transparent)]
    Reference(#[from] ReferenceError),

    #[error("{digest} has no manifest for {platform} (it has: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    NoMatchingPlatform {
        digest: Digest,
        platform: String,
        available: Vec<String>,
    },

    #[error("{digest}: {media_type} is not an image manifest or index kiln can read")]
    UnsupportedMediaType { digest: Digest, media_type: String },

    #[error("OCI layout {}: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },

    /// Reading or writing a tar archive (a docker archive, an OCI layout tar).
    #[error("archive entry {entry}: {reason}")]
    Archive { entry: String, reason: String },

    #[error(
        "layer {layer}: uncompressed digest {actual} does not match diffID {expected} of the config"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

/// `fs_err` errors already name their path; others get it prefixed.
fn io_message(path: &Path, source: &io::Error) -> String {
    let message = source.to_string();
    let shown = path.display().to_string();
    if message.contains(&shown) {
        message
    } else {
        format!("{shown}: {message}")
    }
}

fn holder_suffix(holder: &Option<String>) -> String {
    match holder {
        Some(h) => format!(" (held by {h})"),
        None => String::new(),
    }
}
