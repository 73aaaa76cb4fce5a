//! The one error type of the snapshotter.

use std::io;
use std::path::{Path, PathBuf};

use kiln_image::{Digest, LayerError, StoreError};

/// What went wrong while unpacking, mounting, committing or removing
/// snapshots. Filesystem errors name their path, layer errors their blob
/// or directory, snapshot errors their chain ID.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    Store(#[from] StoreError),

    /// A layer blob could not be unpacked into its snapshot directory.
    #[error("unpacking layer {blob} into {}", dir.display())]
    Unpack {
        blob: Digest,
        dir: PathBuf,
        #[source]
        source: LayerError,
    },

    /// A layer being written was stopped (a second Ctrl-C): nothing of it
    /// was stored.
    #[error("stopped writing {} as a layer", upper.display())]
    Stopped { upper: PathBuf },

    /// An upper directory could not be written as a layer blob.
    #[error("writing {} as a layer", upper.display())]
    WriteLayer {
        upper: PathBuf,
        #[source]
        source: LayerError,
    },

    #[error("layer {blob} has media type {media_type:?}, which is not a layer kiln can unpack")]
    UnsupportedMediaType { blob: Digest, media_type: String },

    /// The uncompressed blob is not the layer the image config names.
    #[error("layer {blob}: uncompressed digest {actual} does not match diffID {expected}")]
    DiffIdMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },

    /// A parent passed to `activate` or `mount_readonly` does not sit on
    /// the parents before it: its chain ID is not the one its diffID gives.
    #[error(
        "snapshot {chain_id} at position {position} does not follow its parents (expected chain ID {expected})"
    )]
    BrokenChain {
        position: usize,
        chain_id: Digest,
        expected: Digest,
    },

    /// A snapshot to mount is not (or no longer) ready: removed, or never
    /// prepared by this store.
    #[error("snapshot {chain_id} is not ready ({state}); prepare it again")]
    NotReady { chain_id: Digest, state: String },

    /// A snapshot to remove is a lower dir of a live mount.
    #[error("snapshot {chain_id} is in use by {holder}")]
    InUse { chain_id: Digest, holder: String },

    /// The overlay mount failed. `detail` is what the kernel logged on the
    /// filesystem context, when it said something.
    #[error("mounting an overlay of {lowers} lower dirs at {}{}", target.display(), detail_suffix(detail))]
    Mount {
        target: PathBuf,
        lowers: usize,
        detail: Option<String>,
        #[source]
        source: io::Error,
    },

    /// Without the new mount API, the lower dirs must fit the one page
    /// `mount(2)` takes.
    #[error("the overlay options for {} are {len} bytes, more than the {limit} mount(2) takes", target.display())]
    OptionsTooLong {
        target: PathBuf,
        len: usize,
        limit: usize,
    },

    /// A root stacked on a step whose layer is still being written was
    /// asked to commit; only a seal can end it (its chain is not known
    /// until the step below is finished).
    #[error("the root of step {key} is stacked on a layer not yet committed: seal it instead")]
    AbovePending { key: String },

    #[error("unmounting {}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SnapshotError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> SnapshotError {
        let path = path.into();
        move |source| SnapshotError::Io { op, path, source }
    }

    pub(crate) fn errno(
        op: &'static str,
        path: &Path,
    ) -> impl FnOnce(rustix::io::Errno) -> SnapshotError {
        let path = path.to_path_buf();
        move |e| SnapshotError::Io {
            op,
            path,
            source: e.into(),
        }
    }
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}
