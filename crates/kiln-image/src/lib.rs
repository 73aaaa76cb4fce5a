//! kiln's image formats and storage.
//!
//! - [`Digest`]: content addresses (`sha256:…`), hashing readers and writers.
//! - [`media`]: OCI and Docker media types, layer compression.
//! - [`Reference`]: image references (`alpine`, `localhost:5000/x/y:1@sha256:…`),
//!   normalised as Docker does.
//! - [`document`]: manifests, indexes and configs (OCI and Docker schema 2),
//!   kept with the exact bytes they were read from.
//! - [`Store`]: the content store (blobs by digest) and its index (tags,
//!   image records, snapshots, cache keys), safe for concurrent processes.
//! - [`layout`] and [`docker_archive`]: OCI image layouts (directory or tar)
//!   and `docker save` archives, written from and read into a store.
//! - [`layer`] and [`compress`]: directory ⇄ layer tar (whiteouts, safe
//!   extraction) and the streaming blob pipeline (diffID, compression, digest).

mod digest;
mod reference;
mod store;

pub mod compress;
pub mod docker_archive;
pub mod document;
pub mod layer;
pub mod layout;
pub mod media;

pub use crate::digest::{Digest, DigestError, HashingReader, HashingWriter, Sha256};
pub use crate::layer::LayerError;
pub use crate::reference::{DOCKER_HUB, Reference, ReferenceError, is_loopback_host};
pub use crate::store::{
    Blob, BlobFetcher, BlobInfo, BlobSource, BlobSources, CacheRecord, ContextHashRecord,
    DOCUMENT_LIMIT, FollowedBlob, ImageRecord, IndexReader, IndexWriter, Ingest, LayerVariant,
    LockWait, LockWaitHook, Problem, PruneReport, SCHEMA_VERSION, SnapshotRecord, SnapshotState,
    Store, StoreError, StoreOptions, Unsynced, VerifyReport, Wrote,
};
pub use kiln_platform::Platform;
