//! Whole images between a registry and the content store: pull (tag →
//! manifest or index → platform → config and layers, in parallel) and
//! push (blobs, then manifests, then the index).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use kiln_image::document::{Descriptor, ImageDocument};
use kiln_image::{Digest, Ingest, Platform, Reference, Store, StoreError};

use crate::{BlobSink, Error, FileSource, RegistryClient, Repository};

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
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index.
    pub platform: Platform,
    /// Pull every platform of an index (and tag the index), instead of one.
    pub all_platforms: bool,
    pub concurrency: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            all_platforms: false,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
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
/// again when committed.
struct IngestSink {
    store: Store,
    digest: Digest,
    size: u64,
    ingest: Option<Ingest>,
}

impl IngestSink {
    fn new(store: &Store, digest: &Digest, size: u64) -> Result<IngestSink, StoreError> {
        let ingest = store.ingest_expected(digest, Some(size))?;
        Ok(IngestSink {
            store: store.clone(),
            digest: digest.clone(),
            size,
            ingest: Some(ingest),
        })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        match self.ingest.take() {
            Some(ingest) => ingest.commit().map(|_| ()),
            None => Ok(()),
        }
    }
}

impl BlobSink for IngestSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        match self.ingest.as_mut() {
            Some(ingest) => ingest.write_all(bytes),
            None => Err(std::io::Error::other("ingest already closed")),
        }
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
    if store.reuse(&blob.digest)?.is_some() {
        return Ok(false);
    }
    let mut sink = IngestSink::new(store, &blob.digest, blob.size)?;
    client
        .fetch_blob(repository, &blob.digest, Some(blob.size), &mut sink)
        .await?;
    sink.commit()?;
    Ok(true)
}

fn with_digest(reference: &Reference, digest: &Digest) -> Reference {
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

/// Pulls `reference` into `store` and tags it there.
pub async fn pull_image(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
) -> Result<PulledImage, TransferError> {
    let reference = reference.clone().with_default_tag();
    let repository = Repository::of(&reference);
    let top = client.get_manifest(&reference).await?;
    let registry_digest = top.digest.clone();
    store_document(store, &top.bytes, &top.digest)?;
    let top_doc = parse_document(&reference, &top.media_type, &top.bytes)?;

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
                    .get_manifest(&with_digest(&reference, &child.digest))
                    .await?;
                store_document(store, &m.bytes, &m.digest)?;
                docs.push(parse_document(&reference, &m.media_type, &m.bytes)?);
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

    // Config and layers of every manifest, the ones missing, in parallel.
    let mut blobs: Vec<Descriptor> = Vec::new();
    for m in &manifests {
        for child in m.children() {
            if !blobs.iter().any(|b| b.digest == child.digest) {
                blobs.push(child.clone());
            }
        }
    }
    let mut missing = Vec::new();
    for blob in &blobs {
        if store.reuse(&blob.digest)?.is_none() {
            missing.push(blob.clone());
        }
    }
    let reused = blobs.len() - missing.len();
    let downloaded = missing.len();
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

    store.tag(&reference, &target)?;
    Ok(PulledImage {
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
        for blob in &blobs {
            if !store.contains(&blob.digest)? {
                return Err(TransferError::MissingBlob {
                    reference: source.familiar(),
                    digest: blob.digest.clone(),
                });
            }
        }
        stream::iter(blobs.into_iter().map(|blob| {
            let repository = repository.clone();
            let mount_from = mount_from.clone();
            let counts = Arc::clone(&counts);
            async move {
                let path = store.blob_path(&blob.digest);
                let src =
                    FileSource::open(&path).map_err(|e| StoreError::Io { path, source: e })?;
                let outcome = client
                    .push_blob(&repository, &blob.digest, &src, mount_from.as_deref())
                    .await?;
                let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    crate::PushOutcome::Uploaded => c.0 += 1,
                    crate::PushOutcome::Existed => c.1 += 1,
                    crate::PushOutcome::Mounted { .. } => c.2 += 1,
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
