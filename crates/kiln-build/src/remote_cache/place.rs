//! Where a cache is read from and written to: a registry repository, or an
//! OCI layout directory. The same few operations on each.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kiln_image::document::{
    ANNOTATION_REF_NAME, Descriptor, Document, ImageConfig, Index, Manifest,
};
use kiln_image::media::{self, Format};
use kiln_image::{Digest, HashingReader, Reference, Store, StoreError};
use kiln_registry::{PushOutcome, RegistryClient, Repository, push_store_blob};

use super::{CacheError, CacheLocation};

/// The most bytes a cache document (index, manifest, config) may have: a
/// hostile or broken one must not exhaust memory.
const DOCUMENT_LIMIT: u64 = 64 << 20;

/// A cache's location with what it takes to reach it.
pub(crate) enum Place<'a> {
    Registry {
        client: &'a RegistryClient,
        runtime: &'a tokio::runtime::Handle,
        reference: &'a Reference,
    },
    Local {
        dir: &'a Path,
        tag: &'a str,
    },
}

impl<'a> Place<'a> {
    pub(crate) fn new(
        location: &'a CacheLocation,
        client: &'a RegistryClient,
        runtime: &'a tokio::runtime::Handle,
    ) -> Result<Place<'a>, CacheError> {
        match location {
            CacheLocation::Registry(reference) => Ok(Place::Registry {
                client,
                runtime,
                reference,
            }),
            CacheLocation::Local { dir, tag } => Ok(Place::Local { dir, tag }),
            // The image's own config: written by the engine, read through
            // the image's registry ref.
            CacheLocation::Inline => Err(CacheError::Spec {
                spec: "type=inline".into(),
                reason: "an inline cache lives in the image, not in a place of its own".into(),
            }),
        }
    }

    pub(crate) fn is_registry(&self) -> bool {
        matches!(self, Place::Registry { .. })
    }

    /// For a directory, an exclusive `flock` on it, held while a writer
    /// reads, merges and writes; a registry has no locks (`None`).
    pub(crate) fn lock(&self) -> Result<Option<fs_err::File>, CacheError> {
        let Place::Local { dir, .. } = self else {
            return Ok(None);
        };
        fs_err::create_dir_all(dir).map_err(Self::io_err(dir))?;
        let handle = fs_err::File::open(dir).map_err(Self::io_err(dir))?;
        rustix::fs::flock(&handle, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Self::io_err(dir)(e.into()))?;
        Ok(Some(handle))
    }

    pub(crate) fn name(&self) -> String {
        match self {
            Place::Registry { reference, .. } => reference.to_string(),
            Place::Local { dir, tag } => format!("{}:{tag}", dir.display()),
        }
    }

    fn registry_err(&self, source: kiln_registry::Error) -> CacheError {
        CacheError::Registry {
            cache: self.name(),
            source: Box::new(source.into()),
        }
    }

    fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
        dir.join("blobs/sha256").join(digest.hex())
    }

    /// The cache's index; `None` if there is no cache there yet.
    pub(crate) fn read_index(&self) -> Result<Option<Index>, CacheError> {
        let (media_type, bytes) = match self {
            Place::Registry {
                client,
                runtime,
                reference,
            } => match runtime.block_on(client.get_manifest(reference)) {
                Ok(m) => (m.media_type, m.bytes.to_vec()),
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(self.registry_err(e)),
            },
            Place::Local { dir, tag } => {
                let path = dir.join("index.json");
                let bytes = match fs_err::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Self::io_err(&path)(e)),
                };
                let layout = parse_index(&bytes)?;
                let Some(entry) = layout.manifests.iter().find(|d| {
                    d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(*tag)
                }) else {
                    return Ok(None);
                };
                (entry.media_type.clone(), self.read_blob(entry)?)
            }
        };
        if media::is_manifest(&media_type) {
            // An image of one platform, whose config may hold an inline
            // cache: read as an index of that one manifest.
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| CacheError::Format {
                    reason: format!("{}: not a manifest: {e}", self.name()),
                })?;
            let config: ImageConfig = serde_json::from_slice(&self.read_blob(&manifest.config)?)
                .map_err(|e| CacheError::Format {
                    reason: format!("{}: not an image config: {e}", self.name()),
                })?;
            let child = Descriptor::new(media_type, Digest::of(&bytes), bytes.len() as u64)
                .with_platform(&config.platform());
            return Ok(Some(Index::new(Format::Oci, vec![child])));
        }
        if !media::is_index(&media_type) {
            return Err(CacheError::Format {
                reason: format!("{} is a {media_type}, not a cache index", self.name()),
            });
        }
        parse_index(&bytes).map(Some)
    }

    /// A small blob (a manifest or config), verified against its digest.
    pub(crate) fn read_blob(&self, d: &Descriptor) -> Result<Vec<u8>, CacheError> {
        if d.size > DOCUMENT_LIMIT {
            return Err(CacheError::Format {
                reason: format!(
                    "{} is {} bytes, over the limit for a cache document",
                    d.digest, d.size
                ),
            });
        }
        let bytes = match self {
            Place::Registry {
                client,
                runtime,
                reference,
            } => {
                if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
                    let by_digest = by_digest(reference, &d.digest);
                    let m = runtime
                        .block_on(client.get_manifest(&by_digest))
                        .map_err(|e| self.registry_err(e))?;
                    m.bytes.to_vec()
                } else {
                    let mut sink = Vec::new();
                    runtime
                        .block_on(client.fetch_blob(
                            &Repository::of(reference),
                            &d.digest,
                            Some(d.size),
                            &mut sink,
                        ))
                        .map_err(|e| self.registry_err(e))?;
                    sink
                }
            }
            Place::Local { dir, .. } => {
                let path = Self::blob_path(dir, &d.digest);
                fs_err::read(&path).map_err(Self::io_err(&path))?
            }
        };
        if Digest::of(&bytes) != d.digest {
            return Err(CacheError::Format {
                reason: format!("{} does not have its digest", d.digest),
            });
        }
        Ok(bytes)
    }

    /// Makes the layer blob `d` available to `store`: a registry's is
    /// checked to be there and its source recorded (the store fetches it
    /// when it is read); a directory's is copied in (verified).
    pub(crate) fn claim(&self, store: &Store, d: &Descriptor) -> Result<(), CacheError> {
        match self {
            Place::Registry {
                client,
                runtime,
                reference,
            } => {
                // Leased: the build reads it later, and a prune meanwhile must not take it.
                if store.reuse(&d.digest)?.is_some() {
                    return Ok(());
                }
                let repository = Repository::of(reference);
                let found = runtime
                    .block_on(client.blob_exists(&repository, &d.digest))
                    .map_err(|e| self.registry_err(e))?;
                if found.is_none() {
                    return Err(CacheError::BlobGone {
                        cache: self.name(),
                        digest: d.digest.clone(),
                    });
                }
                store.update(|w| w.add_blob_source(d, &repository.registry, &repository.name))?;
            }
            Place::Local { dir, .. } => {
                if store.reuse(&d.digest)?.is_some() {
                    return Ok(());
                }
                let path = Self::blob_path(dir, &d.digest);
                let mut file = fs_err::File::open(&path).map_err(Self::io_err(&path))?;
                let mut ingest = store.ingest_expected(&d.digest, Some(d.size))?;
                std::io::copy(&mut file, &mut ingest).map_err(Self::io_err(&path))?;
                ingest.commit()?;
            }
        }
        Ok(())
    }

    /// Writes the store's blob `d` to the cache, unless it is there; true
    /// if its bytes were sent.
    pub(crate) fn push_from_store(
        &self,
        store: &Store,
        d: &Descriptor,
    ) -> Result<bool, CacheError> {
        match self {
            Place::Registry {
                client,
                runtime,
                reference,
            } => {
                // A hit's layer the store never fetched is linked from
                // where it came from (often this very cache), not fetched.
                let sources = store
                    .read(|r| r.blob_sources(&d.digest))?
                    .map(|k| k.sources)
                    .unwrap_or_default();
                let outcome = runtime
                    .block_on(push_store_blob(
                        client,
                        store,
                        &Repository::of(reference),
                        d,
                        &sources,
                        None,
                    ))
                    .map_err(|e| CacheError::Registry {
                        cache: self.name(),
                        source: Box::new(e),
                    })?;
                Ok(outcome == PushOutcome::Uploaded)
            }
            Place::Local { dir, .. } => {
                let path = store.blob_path(&d.digest);
                let input = store.open_blob(&d.digest).map_err(|e| match e {
                    StoreError::Io { source, .. } => Self::io_err(&path)(source),
                    other => CacheError::Store(other),
                })?;
                write_local_blob(dir, &d.digest, input)
            }
        }
    }

    /// Writes a document (config, manifest) to the cache by its digest.
    pub(crate) fn push_document(&self, d: &Descriptor, bytes: &[u8]) -> Result<(), CacheError> {
        match self {
            Place::Registry {
                client,
                runtime,
                reference,
            } => {
                if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
                    let by_digest = by_digest(reference, &d.digest);
                    runtime
                        .block_on(client.put_manifest(
                            &by_digest,
                            &d.media_type,
                            Bytes::copy_from_slice(bytes),
                        ))
                        .map_err(|e| self.registry_err(e))?;
                } else {
                    runtime
                        .block_on(client.push_blob(
                            &Repository::of(reference),
                            &d.digest,
                            &Bytes::copy_from_slice(bytes),
                            None,
                        ))
                        .map_err(|e| self.registry_err(e))?;
                }
            }
            Place::Local { dir, .. } => {
                write_local_blob(dir, &d.digest, bytes)?;
            }
        }
        Ok(())
    }

    /// Points the cache's name at `index`.
    pub(crate) fn put_index(&self, index: &Document<Index>) -> Result<(), CacheError> {
        match self {
            Place::Registry {
                client,
                runtime,
                reference,
            } => {
                runtime
                    .block_on(client.put_manifest(
                        reference,
                        index.media_type(),
                        Bytes::copy_from_slice(index.bytes()),
                    ))
                    .map_err(|e| self.registry_err(e))?;
            }
            Place::Local { dir, tag } => {
                write_local_blob(dir, index.digest(), index.bytes())?;
                let layout = dir.join("oci-layout");
                fs_err::write(&layout, r#"{"imageLayoutVersion":"1.0.0"}"#)
                    .map_err(Self::io_err(&layout))?;
                let path = dir.join("index.json");
                let mut entries = match fs_err::read(&path) {
                    Ok(bytes) => parse_index(&bytes)?.manifests,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Self::io_err(&path)(e)),
                };
                entries.retain(|d| {
                    d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(*tag)
                });
                let mut entry = index.descriptor();
                entry
                    .annotations
                    .insert(ANNOTATION_REF_NAME.to_string(), tag.to_string());
                entries.push(entry);
                let top = Document::new(Index::new(Format::Oci, entries));
                let mut temp = tempfile::Builder::new()
                    .prefix(".index.json.")
                    .tempfile_in(dir)
                    .map_err(Self::io_err(dir))?;
                temp.write_all(top.bytes())
                    .and_then(|()| readable(temp.as_file()))
                    .and_then(|()| temp.as_file().sync_all())
                    .map_err(Self::io_err(temp.path()))?;
                temp.persist(&path)
                    .map_err(|e| Self::io_err(&path)(e.error))?;
            }
        }
        Ok(())
    }
}

/// The repository of `reference`, at `digest`.
fn by_digest(reference: &Reference, digest: &Digest) -> Reference {
    Reference {
        tag: None,
        digest: Some(digest.clone()),
        ..reference.clone()
    }
}

/// 0644: a layout's files are for other tools and users to read (a
/// temporary file starts at 0600).
fn readable(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

fn parse_index(bytes: &[u8]) -> Result<Index, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError::Format {
        reason: format!("not an OCI index: {e}"),
    })
}

/// A blob into a layout directory: copied beside, checked, renamed, so an
/// interrupted write never leaves a short file under a digest's name.
fn write_local_blob(dir: &Path, digest: &Digest, input: impl Read) -> Result<bool, CacheError> {
    let blobs = dir.join("blobs/sha256");
    fs_err::create_dir_all(&blobs).map_err(Place::io_err(&blobs))?;
    let dest = blobs.join(digest.hex());
    if dest.exists() {
        return Ok(false);
    }
    // A temporary file of its own (two writers of one blob do not share
    // it), removed on drop unless it became the blob.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", digest.hex()))
        .tempfile_in(&blobs)
        .map_err(Place::io_err(&blobs))?;
    let mut reader = HashingReader::new(input);
    std::io::copy(&mut reader, temp.as_file_mut())
        .and_then(|_| readable(temp.as_file()))
        .and_then(|()| temp.as_file().sync_all())
        .map_err(Place::io_err(temp.path()))?;
    let (_, actual, _) = reader.finish();
    if actual != *digest {
        return Err(CacheError::Format {
            reason: format!("{digest} changed while it was written to {}", dir.display()),
        });
    }
    temp.persist(&dest)
        .map_err(|e| Place::io_err(&dest)(e.error))?;
    Ok(true)
}
