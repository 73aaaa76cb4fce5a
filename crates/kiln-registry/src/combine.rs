//! What `kiln imagetools create` does with registries: read each source
//! (a manifest with its config's platform, or an index whose entries are
//! checked to exist), and copy images into the destination repository, by
//! digest, before the combined index is pushed there. The index itself is
//! made by [`kiln_image::document::combine`].

use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use kiln_image::document::{Descriptor, ImageDocument, ImagePlatform, IndexSource};
use kiln_image::{DOCUMENT_LIMIT, Digest, Platform, Reference};

use crate::transfer::{TransferError, with_digest};
use crate::{DEFAULT_CONCURRENCY, FileSink, FileSource, PushOutcome, RegistryClient, Repository};

/// Reads `reference` as a source of a combined index, named `name` in
/// messages. A manifest's platform comes from its config (normalised, as
/// buildx reads it); every entry of an index is checked to be in the
/// registry, so that the index made from it points at nothing missing.
pub async fn read_index_source(
    client: &RegistryClient,
    reference: &Reference,
    name: &str,
) -> Result<IndexSource, TransferError> {
    let fetched = client.get_manifest(reference).await?;
    let document =
        ImageDocument::parse(&fetched.media_type, fetched.bytes.to_vec()).map_err(|e| {
            TransferError::Invalid {
                reference: name.to_string(),
                reason: e.to_string(),
            }
        })?;
    let platform = match &document {
        ImageDocument::Manifest(manifest) => {
            let config = &manifest.value().config;
            Some(config_platform(client, reference, name, config).await?)
        }
        ImageDocument::Index(index) => {
            stream::iter(index.value().manifests.iter().map(|entry| async move {
                match client
                    .head_manifest(&with_digest(reference, &entry.digest))
                    .await?
                {
                    Some(_) => Ok(()),
                    None => Err(TransferError::MissingManifest {
                        reference: name.to_string(),
                        digest: entry.digest.clone(),
                    }),
                }
            }))
            .buffer_unordered(DEFAULT_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
            None
        }
    };
    Ok(IndexSource {
        name: name.to_string(),
        document,
        platform,
    })
}

/// The platform a manifest's config declares. Read leniently (only `os`,
/// `architecture` and `variant`): a config that says none gives an empty
/// platform, which the combine refuses with the source's name.
async fn config_platform(
    client: &RegistryClient,
    reference: &Reference,
    name: &str,
    config: &Descriptor,
) -> Result<ImagePlatform, TransferError> {
    let invalid = |reason: String| TransferError::Invalid {
        reference: name.to_string(),
        reason,
    };
    if config.size > DOCUMENT_LIMIT {
        return Err(invalid(format!(
            "its config is {} bytes, more than a config may be ({DOCUMENT_LIMIT})",
            config.size
        )));
    }
    let mut bytes = Vec::new();
    client
        .fetch_blob(
            &Repository::of(reference),
            &config.digest,
            Some(config.size),
            &mut bytes,
        )
        .await?;
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Declared {
        os: String,
        architecture: String,
        variant: Option<String>,
    }
    let declared: Declared = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("its config {} is not JSON: {e}", config.digest)))?;
    if declared.os.is_empty() || declared.architecture.is_empty() {
        return Ok(ImagePlatform::default());
    }
    Ok(ImagePlatform::from(&Platform::from_parts(
        &declared.os,
        &declared.architecture,
        declared.variant.as_deref(),
    )))
}

/// What a copy did with the blobs it needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Sent through this machine (another registry, or a mount refused).
    pub uploaded: usize,
    /// Linked from the source repository by the registry.
    pub mounted: usize,
    /// Already in the destination.
    pub existed: usize,
}

/// Copies the manifest or index `descriptor` from `from` into `to`, by
/// digest: an index's entries first, a manifest's config and layers before
/// the manifest. On one registry each blob is linked (a cross-repository
/// mount); from another registry, or where the registry will not link, it
/// goes through a temp file (bounded memory, resumable both ways).
pub async fn copy_manifest(
    client: &RegistryClient,
    from: &Repository,
    to: &Repository,
    descriptor: &Descriptor,
) -> Result<Copied, TransferError> {
    let at = |repository: &Repository| Reference {
        registry: repository.registry.clone(),
        repository: repository.name.clone(),
        tag: None,
        digest: Some(descriptor.digest.clone()),
    };
    let fetched = client.get_manifest(&at(from)).await?;
    let document =
        ImageDocument::parse(&fetched.media_type, fetched.bytes.to_vec()).map_err(|e| {
            TransferError::Invalid {
                reference: at(from).familiar(),
                reason: e.to_string(),
            }
        })?;
    let mut copied = Copied::default();
    match &document {
        ImageDocument::Index(index) => {
            for child in &index.value().manifests {
                let c = Box::pin(copy_manifest(client, from, to, child)).await?;
                copied.uploaded += c.uploaded;
                copied.mounted += c.mounted;
                copied.existed += c.existed;
            }
        }
        ImageDocument::Manifest(manifest) => {
            let outcomes = stream::iter(
                manifest
                    .value()
                    .blobs()
                    .map(|blob| copy_blob(client, from, to, &blob.digest, blob.size)),
            )
            .buffer_unordered(DEFAULT_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
            for outcome in outcomes {
                match outcome {
                    PushOutcome::Uploaded => copied.uploaded += 1,
                    PushOutcome::Mounted { .. } => copied.mounted += 1,
                    PushOutcome::Existed => copied.existed += 1,
                }
            }
        }
    }
    client
        .put_manifest(&at(to), &fetched.media_type, Bytes::clone(&fetched.bytes))
        .await?;
    Ok(copied)
}

/// One blob from `from` into `to`: linked when both are on one registry,
/// else downloaded to a temp file and uploaded from it.
async fn copy_blob(
    client: &RegistryClient,
    from: &Repository,
    to: &Repository,
    digest: &Digest,
    size: u64,
) -> Result<PushOutcome, TransferError> {
    if from.registry == to.registry {
        if let Some(done) = client.mount_blob(to, digest, &from.name).await? {
            return Ok(done);
        }
    } else if client.blob_exists(to, digest).await?.is_some() {
        return Ok(PushOutcome::Existed);
    }
    let temp = tempfile::Builder::new()
        .prefix(".kiln-copy-")
        .tempfile()
        .map_err(|e| io_error(std::env::temp_dir(), e))?;
    let mut sink = FileSink::create(temp.path()).map_err(|e| io_error(temp.path().into(), e))?;
    client
        .fetch_blob(from, digest, Some(size), &mut sink)
        .await?;
    sink.into_file()
        .map_err(|e| io_error(temp.path().into(), e))?;
    let source = FileSource::open(temp.path()).map_err(|e| io_error(temp.path().into(), e))?;
    Ok(client.push_blob(to, digest, &source, None).await?)
}

fn io_error(path: std::path::PathBuf, source: std::io::Error) -> TransferError {
    TransferError::Io { path, source }
}
