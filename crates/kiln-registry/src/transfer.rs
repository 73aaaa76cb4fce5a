//! Whole images between a registry and the content store: pull (tag →
//! manifest or index → platform → config and layers, in parallel) and
//! push (blobs, then manifests, then the index).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use kiln_image::document::{Descriptor, ImageDocument};
use kiln_image::{
    BlobFetcher, BlobSource, Digest, Ingest, Platform, Reference, Store, StoreError, Wrote,
};

use crate::{BlobSink, Error, Event, FileSource, PushOutcome, RegistryClient, Repository};

/// How many blobs move at once.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// What can go wrong moving an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error(transparent)]
    Registry(#[from] Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{reference}: no image for platform {platform} (the index has {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: Platform,
        available: String,
    },
    #[error("{reference}: not in the store")]
    NotFound { reference: String },
    #[error(
        "{reference}: the image's blob {digest} is not in the store (pulled for one platform only? pull it with --all-platforms)"
    )]
    MissingBlob { reference: String, digest: Digest },
    #[error("{reference}: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("{reference}: lists the manifest {digest}, which the registry does not have")]
    MissingManifest { reference: String, digest: Digest },
    #[error(
        "no mirror of {registry} has it, and falling back to {registry} is turned off; tried {tried}"
    )]
    NoMirror {
        reference: String,
        registry: String,
        /// Each mirror tried, with why it failed: `m1 (reason); m2 (reason)`.
        tried: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index.
    pub platform: Platform,
    /// Pull every platform of an index (and tag the index), instead of one.
    pub all_platforms: bool,
    pub concurrency: usize,
    /// Leave the layers in the registry: only the manifests and configs
    /// are stored, with the layers' source recorded, and a layer is
    /// fetched when something reads it (see [`RegistryFetcher`]).
    pub lazy_layers: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            all_platforms: false,
            concurrency: DEFAULT_CONCURRENCY,
            lazy_layers: false,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// Where it came from: the reference asked for, or its place in the
    /// mirror that gave it.
    pub source: Reference,
    /// What the tag now points at: the platform's manifest, or the index.
    pub target: Descriptor,
    /// The digest the registry has for the reference (an index's, when the
    /// reference names one): what `docker pull` prints as `Digest:`.
    pub registry_digest: Digest,
    /// Blobs downloaded, and blobs the store already had.
    pub downloaded: usize,
    pub reused: usize,
}

/// A [`BlobSink`] writing into a store ingest, which verifies the digest
/// again when committed; with `wrote`, flushed and reported after each
/// write.
struct IngestSink<'a> {
    store: Store,
    digest: Digest,
    size: u64,
    ingest: Option<Ingest>,
    wrote: Option<Wrote<'a>>,
}

impl<'a> IngestSink<'a> {
    fn new(
        store: &Store,
        digest: &Digest,
        size: u64,
        wrote: Option<Wrote<'a>>,
    ) -> Result<IngestSink<'a>, StoreError> {
        let ingest = store.ingest_expected(digest, Some(size))?;
        Ok(IngestSink {
            store: store.clone(),
            digest: digest.clone(),
            size,
            ingest: Some(ingest),
            wrote,
        })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        match self.ingest.take() {
            Some(ingest) => ingest.commit().map(|_| ()),
            None => Ok(()),
        }
    }
}

impl BlobSink for IngestSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let Some(ingest) = self.ingest.as_mut() else {
            return Err(std::io::Error::other("ingest already closed"));
        };
        ingest.write_all(bytes)?;
        if let Some(wrote) = self.wrote {
            // In the file, for the reader following it.
            ingest.flush()?;
            wrote(ingest.path(), ingest.written());
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.ingest.as_ref().map_or(0, Ingest::written)
    }

    fn reset(&mut self) -> std::io::Result<()> {
        // Dropping an ingest removes its temp file; start a fresh one.
        self.ingest = None;
        let fresh = self
            .store
            .ingest_expected(&self.digest, Some(self.size))
            .map_err(std::io::Error::other)?;
        self.ingest = Some(fresh);
        Ok(())
    }
}

/// Downloads the blob `blob` of `repository` into `store` (verified, as
/// every ingest is) unless the store has it; returns whether it was
/// downloaded.
pub async fn fetch_blob_into(
    client: &RegistryClient,
    store: &Store,
    repository: &Repository,
    blob: &Descriptor,
) -> Result<bool, TransferError> {
    fetch_blob_reporting(client, store, repository, blob, None).await
}

/// [`fetch_blob_into`], telling `wrote` after each write.
async fn fetch_blob_reporting(
    client: &RegistryClient,
    store: &Store,
    repository: &Repository,
    blob: &Descriptor,
    wrote: Option<Wrote<'_>>,
) -> Result<bool, TransferError> {
    if store.reuse(&blob.digest)?.is_some() {
        return Ok(false);
    }
    let mut sink = IngestSink::new(store, &blob.digest, blob.size, wrote)?;
    client
        .fetch_blob(repository, &blob.digest, Some(blob.size), &mut sink)
        .await?;
    sink.commit()?;
    Ok(true)
}

/// Pushes the store's blob `blob` to `repository`. `sources` are the
/// repositories the store knows hold it (its `blob_sources`): one of the
/// same registry is asked to link it (else `mount_from`, if given), and a
/// blob the store never fetched is downloaded from them only when the
/// registry will not link it.
pub async fn push_store_blob(
    client: &RegistryClient,
    store: &Store,
    repository: &Repository,
    blob: &Descriptor,
    sources: &[BlobSource],
    mount_from: Option<&str>,
) -> Result<PushOutcome, TransferError> {
    let mount_from = sources
        .iter()
        .find(|s| s.registry == repository.registry && s.repository != repository.name)
        .map(|s| s.repository.as_str())
        .or(mount_from);
    if !store.contains(&blob.digest)? {
        if let Some(from) = mount_from
            && let Some(done) = client.mount_blob(repository, &blob.digest, from).await?
        {
            return Ok(done);
        }
        fetch_from_sources(client, store, blob, sources).await?;
    }
    let path = store.blob_path(&blob.digest);
    let src = FileSource::open(&path).map_err(|e| StoreError::Io { path, source: e })?;
    Ok(client
        .push_blob(repository, &blob.digest, &src, mount_from)
        .await?)
}

/// Downloads `blob` into `store` from the first of `sources` that gives
/// it; the error of the first source if none does.
pub async fn fetch_from_sources(
    client: &RegistryClient,
    store: &Store,
    blob: &Descriptor,
    sources: &[BlobSource],
) -> Result<(), TransferError> {
    fetch_from_sources_reporting(client, store, blob, sources, None).await
}

async fn fetch_from_sources_reporting(
    client: &RegistryClient,
    store: &Store,
    blob: &Descriptor,
    sources: &[BlobSource],
    wrote: Option<Wrote<'_>>,
) -> Result<(), TransferError> {
    let mut first = None;
    for source in sources {
        let repository = Repository::new(&source.registry, &source.repository);
        match fetch_blob_reporting(client, store, &repository, blob, wrote).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| {
        TransferError::Store(StoreError::BlobNotFound {
            digest: blob.digest.clone(),
            path: store.blob_path(&blob.digest),
        })
    }))
}

/// The store's [`BlobFetcher`]: a blob it lacks but knows sources of is
/// downloaded with this client, on this runtime, when something reads it.
/// Set it with [`Store::set_fetcher`].
pub struct RegistryFetcher {
    client: RegistryClient,
    runtime: tokio::runtime::Handle,
}

impl RegistryFetcher {
    pub fn new(client: RegistryClient, runtime: tokio::runtime::Handle) -> RegistryFetcher {
        RegistryFetcher { client, runtime }
    }
}

impl BlobFetcher for RegistryFetcher {
    fn fetch(
        &self,
        store: &Store,
        blob: &Descriptor,
        sources: &[BlobSource],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.fetch_reporting(store, blob, sources, None)
    }

    fn fetch_following(
        &self,
        store: &Store,
        blob: &Descriptor,
        sources: &[BlobSource],
        wrote: Wrote<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.fetch_reporting(store, blob, sources, Some(wrote))
    }
}

impl RegistryFetcher {
    fn fetch_reporting(
        &self,
        store: &Store,
        blob: &Descriptor,
        sources: &[BlobSource],
        wrote: Option<Wrote<'_>>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let fetch = || {
            self.runtime.block_on(fetch_from_sources_reporting(
                &self.client,
                store,
                blob,
                sources,
                wrote,
            ))
        };
        // Outside the runtime the caller's thread waits for the download;
        // inside it (an async task reading a blob), a thread of its own
        // does, as a runtime's thread may not block on it.
        let done = if tokio::runtime::Handle::try_current().is_err() {
            fetch()
        } else {
            std::thread::scope(|s| {
                s.spawn(fetch)
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        };
        done.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    }
}

pub(crate) fn with_digest(reference: &Reference, digest: &Digest) -> Reference {
    Reference {
        tag: None,
        digest: Some(digest.clone()),
        ..reference.clone()
    }
}

/// Stores a manifest or index fetched from the registry, exactly as sent.
fn store_document(store: &Store, bytes: &Bytes, expected: &Digest) -> Result<(), StoreError> {
    if store.reuse(expected)?.is_none() {
        let mut ingest = store.ingest_expected(expected, Some(bytes.len() as u64))?;
        std::io::Write::write_all(&mut ingest, bytes).map_err(|e| StoreError::Io {
            path: store.root().to_path_buf(),
            source: e,
        })?;
        ingest.commit()?;
    }
    Ok(())
}

fn parse_document(
    reference: &Reference,
    media_type: &str,
    bytes: &Bytes,
) -> Result<ImageDocument, TransferError> {
    ImageDocument::parse(media_type, bytes.to_vec()).map_err(|e| TransferError::Invalid {
        reference: reference.to_string(),
        reason: e.to_string(),
    })
}

/// Pulls `reference` into `store` and tags it there. The client's mirrors
/// of its registry are tried first, in order (a mirror that fails in any
/// way but the store's is passed over), then the registry itself unless
/// the client's mirror fallback is off.
pub async fn pull_image(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<PulledImage, TransferError> {
    let reference = reference.clone().with_default_tag();
    let mirrors = &client.inner.options.mirrors;
    let mut tried = Vec::new();
    for mirror in mirrors.of(&reference.registry) {
        let from = mirror.reference(&reference);
        match pull_from(client, store, &reference, &from, options).await {
            Ok(pulled) => {
                client.inner.emit(Event::Mirrored {
                    image: reference.familiar(),
                    mirror: mirror.to_string(),
                    from: from.to_string(),
                });
                return Ok(pulled);
            }
            // The store's own failures are not the mirror's.
            Err(e @ (TransferError::Store(_) | TransferError::Io { .. })) => return Err(e),
            Err(e) => {
                client.inner.emit(Event::MirrorFailed {
                    image: reference.familiar(),
                    mirror: mirror.to_string(),
                    reason: e.to_string(),
                });
                tried.push(format!("{mirror} ({e})"));
            }
        }
    }
    if !tried.is_empty() && !mirrors.fallback {
        return Err(TransferError::NoMirror {
            reference: reference.familiar(),
            registry: reference.registry.clone(),
            tried: tried.join("; "),
        });
    }
    pull_from(client, store, &reference, &reference, options).await
}

/// Pulls `from` (`reference` itself, or its place in a mirror) into `store`
/// and tags it there as `reference`.
async fn pull_from(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    from: &Reference,
    options: &PullOptions,
) -> Result<PulledImage, TransferError> {
    let repository = Repository::of(from);
    let top = client.get_manifest(from).await?;
    let registry_digest = top.digest.clone();
    store_document(store, &top.bytes, &top.digest)?;
    let top_doc = parse_document(from, &top.media_type, &top.bytes)?;

    // The manifests to pull the blobs of, and what the tag will name.
    let (manifests, target) = match &top_doc {
        ImageDocument::Manifest(_) => (vec![top_doc.clone()], top_doc.descriptor()),
        ImageDocument::Index(index) => {
            let children: Vec<Descriptor> = if options.all_platforms {
                index
                    .value()
                    .manifests
                    .iter()
                    .filter(|d| d.platform().is_some())
                    .cloned()
                    .collect()
            } else {
                let chosen = index
                    .value()
                    .select(&options.platform)
                    .cloned()
                    .ok_or_else(|| TransferError::NoMatchingPlatform {
                        reference: reference.familiar(),
                        platform: options.platform.clone(),
                        available: index
                            .value()
                            .platforms()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                vec![chosen]
            };
            let mut docs = Vec::new();
            for child in &children {
                let m = client
                    .get_manifest(&with_digest(from, &child.digest))
                    .await?;
                store_document(store, &m.bytes, &m.digest)?;
                docs.push(parse_document(from, &m.media_type, &m.bytes)?);
            }
            let target = if options.all_platforms {
                top_doc.descriptor()
            } else {
                let mut d = docs[0].descriptor();
                d.platform = children[0].platform.clone();
                d
            };
            (docs, target)
        }
    };

    // Config and layers of every manifest, the ones missing, in parallel;
    // with lazy layers the configs only.
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut layers: Vec<Descriptor> = Vec::new();
    for m in &manifests {
        if let ImageDocument::Manifest(manifest) = m {
            layers.extend(manifest.value().layers.iter().cloned());
        }
        for child in m.children() {
            if !blobs.iter().any(|b| b.digest == child.digest) {
                blobs.push(child.clone());
            }
        }
    }
    let mut missing = Vec::new();
    for blob in &blobs {
        let lazy = options.lazy_layers && layers.iter().any(|l| l.digest == blob.digest);
        if !lazy && store.reuse(&blob.digest)?.is_none() {
            missing.push(blob.clone());
        }
    }
    let downloaded = missing.len();
    let reused = blobs.len() - downloaded;
    stream::iter(missing.into_iter().map(|blob| {
        let repository = repository.clone();
        async move {
            fetch_blob_into(client, store, &repository, &blob).await?;
            Ok::<(), TransferError>(())
        }
    }))
    .buffer_unordered(options.concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;

    // Where each layer came from (a push to this registry links it from
    // here, and a lazy one is fetched from here), with the tag: nothing
    // reads a lazy layer of the image before the tag names it.
    store.tag_with(reference, &target, |w| {
        for layer in &layers {
            w.add_blob_source(layer, &from.registry, &from.repository)?;
        }
        Ok(())
    })?;
    Ok(PulledImage {
        source: from.clone(),
        target,
        registry_digest,
        downloaded,
        reused,
    })
}

/// How a push went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// The digest of what the destination tag now names.
    pub digest: Digest,
    pub uploaded: usize,
    pub existed: usize,
    pub mounted: usize,
}

/// Pushes the image `source` names in `store` to `destination` (blobs,
/// then each manifest, then the index when it is one).
pub async fn push_image(
    client: &RegistryClient,
    store: &Store,
    source: &Reference,
    destination: &Reference,
    concurrency: usize,
) -> Result<PushedImage, TransferError> {
    let source = source.clone().with_default_tag();
    let root = store
        .resolve(&source)?
        .ok_or_else(|| TransferError::NotFound {
            reference: source.familiar(),
        })?;
    push_descriptor(client, store, &root, &source, destination, concurrency).await
}

/// Pushes the manifest or index `root` of `store` to `destination`
/// (blobs, then each manifest, then the index when it is one). `source`
/// names it in messages, and says where its blobs came from: blobs pulled
/// from another repository of the destination's registry are linked
/// there instead of uploaded.
pub async fn push_descriptor(
    client: &RegistryClient,
    store: &Store,
    root: &Descriptor,
    source: &Reference,
    destination: &Reference,
    concurrency: usize,
) -> Result<PushedImage, TransferError> {
    let destination = destination.clone().with_default_tag();
    let repository = Repository::of(&destination);
    let mount_from = (source.registry == destination.registry
        && source.repository != destination.repository)
        .then(|| source.repository.clone());

    let top = store.read_image(root)?;
    let manifests: Vec<ImageDocument> = match &top {
        ImageDocument::Manifest(_) => vec![top.clone()],
        ImageDocument::Index(index) => {
            let mut docs = Vec::new();
            for child in &index.value().manifests {
                if !store.contains(&child.digest)? {
                    return Err(TransferError::MissingBlob {
                        reference: source.familiar(),
                        digest: child.digest.clone(),
                    });
                }
                docs.push(store.read_image(child)?);
            }
            docs
        }
    };
    let counts = Arc::new(std::sync::Mutex::new((0usize, 0usize, 0usize)));
    for manifest in &manifests {
        let blobs: Vec<Descriptor> = manifest.children().into_iter().cloned().collect();
        // Where each blob came from: one of the destination's registry is
        // linked from there, and a blob the store never fetched is fetched
        // only if it cannot be.
        let mut sources = HashMap::new();
        for blob in &blobs {
            let known = store.read(|r| r.blob_sources(&blob.digest))?;
            if !store.contains(&blob.digest)? && known.is_none() {
                return Err(TransferError::MissingBlob {
                    reference: source.familiar(),
                    digest: blob.digest.clone(),
                });
            }
            sources.insert(
                blob.digest.clone(),
                known.map(|k| k.sources).unwrap_or_default(),
            );
        }
        stream::iter(blobs.into_iter().map(|blob| {
            let repository = repository.clone();
            let known = sources.remove(&blob.digest).unwrap_or_default();
            let mount_from = mount_from.clone();
            let counts = Arc::clone(&counts);
            async move {
                let outcome = push_store_blob(
                    client,
                    store,
                    &repository,
                    &blob,
                    &known,
                    mount_from.as_deref(),
                )
                .await?;
                let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    PushOutcome::Uploaded => c.0 += 1,
                    PushOutcome::Existed => c.1 += 1,
                    PushOutcome::Mounted { .. } => c.2 += 1,
                }
                Ok::<(), TransferError>(())
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        if matches!(top, ImageDocument::Index(_)) {
            let desc = manifest.descriptor();
            client
                .put_manifest(
                    &with_digest(&destination, &desc.digest),
                    &desc.media_type,
                    Bytes::copy_from_slice(manifest.bytes()),
                )
                .await?;
        }
    }
    let desc = top.descriptor();
    let digest = client
        .put_manifest(
            &destination,
            &desc.media_type,
            Bytes::copy_from_slice(top.bytes()),
        )
        .await?;
    let (uploaded, existed, mounted) = *counts.lock().unwrap_or_else(|e| e.into_inner());
    Ok(PushedImage {
        digest,
        uploaded,
        existed,
        mounted,
    })
}
