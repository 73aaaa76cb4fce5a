//! kiln's registry client (OCI distribution API v2).
//!
//! - [`RegistryClient`]: manifests (get, head, put) and blobs (exists, pull
//!   into a [`BlobSink`], push from a [`BlobSource`]), built from
//!   [`ClientOptions`].
//! - Connections as Docker makes them: plain HTTP to loopback registries,
//!   HTTPS elsewhere (system roots, extra CA files, `certs.d/<host>`),
//!   `--insecure-registry` without verification with a fall back to HTTP.
//!   Names resolved in Rust by [`NameResolver`] (`/etc/hosts`, then DNS),
//!   which every HTTP client of kiln uses; never glibc's NSS.
//! - Auth: anonymous, basic, bearer tokens from the `WWW-Authenticate`
//!   challenge (cached per registry and scopes, refreshed on 401), with
//!   credentials from the options or the docker config (`auths`,
//!   `credsStore`, `credHelpers`).
//! - Never hangs: a connect timeout, and an idle timeout on every request
//!   and body. Transient failures (connection errors, stalls, 5xx, 429)
//!   are retried with exponential backoff and full jitter, honouring
//!   `Retry-After`; downloads resume with `Range`, uploads from the offset
//!   the registry reports. Each retry, resume and restart is reported as an
//!   [`Event`].
//! - Pull mirrors ([`Mirror`], [`ClientOptions::pull_mirror`]): a pull of
//!   a registry's image tries its mirrors in order, then (unless turned
//!   off) the registry itself.
//! - Digests are verified: manifests fetched by digest, every pulled blob.
//! - Whole images move between the registry and a content store
//!   ([`pull_image`], [`push_descriptor`]) or between repositories
//!   ([`copy_manifest`], with cross-repository mounts on one registry), and
//!   [`read_index_source`] reads what `kiln imagetools create` combines.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_registry::Error> {
//! use kiln_image::{Digest, Reference};
//! use kiln_registry::{ClientOptions, Event, FileSink, RegistryClient, Repository};
//!
//! let client = RegistryClient::new(ClientOptions::default().on_event(|event| {
//!     if let Event::Retry { operation, delay, reason, .. } = event {
//!         eprintln!("{operation}: {reason}; retrying in {delay:?}");
//!     }
//! }));
//! let reference = Reference::parse("localhost:5000/app:1").expect("a reference");
//! let manifest = client.get_manifest(&reference).await?;
//! # let layer: Digest = manifest.digest.clone();
//! let mut sink = FileSink::create("/tmp/layer").expect("a file");
//! client
//!     .fetch_blob(&Repository::of(&reference), &layer, None, &mut sink)
//!     .await?;
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod combine;
mod dns;
mod error;
mod event;
mod http;
mod io;
mod manifest;
mod mirror;
mod options;
mod pull;
mod push;
mod retry;
mod transfer;

pub use crate::client::{RegistryClient, Repository};
pub use crate::combine::{Copied, copy_manifest, read_index_source};
pub use crate::dns::NameResolver;
pub use crate::error::{Error, Operation, OperationKind};
pub use crate::event::{Event, EventHandler, PROGRESS_STEP};
pub use crate::io::{BlobSink, BlobSource, FileSink, FileSource};
pub use crate::manifest::{Manifest, ManifestInfo};
pub use crate::mirror::{Mirror, MirrorError};
pub use crate::options::{ClientOptions, Credentials, RetryPolicy, UploadPolicy};
pub use crate::push::PushOutcome;
pub use crate::transfer::{
    DEFAULT_CONCURRENCY, PullOptions, PulledImage, PushedImage, RegistryFetcher, TransferError,
    fetch_blob_into, fetch_from_sources, pull_image, push_descriptor, push_image, push_store_blob,
};
