//! The index: tags, image records, unpacked snapshots and cache keys, in
//! one redb file (`index.redb`), versioned by `meta.schema_version`.
//!
//! Tables (schema 1), every key a string and every value canonical JSON,
//! so that a later kiln can add fields without a migration (serde ignores
//! fields it does not know, and missing ones take their defaults):
//!
//! | table       | key                                   | value            |
//! |-------------|---------------------------------------|------------------|
//! | `meta`      | `schema_version`                      | u64              |
//! | `tags`      | `docker.io/library/alpine:3.19`       | [`Descriptor`]   |
//! | `images`    | manifest or index digest              | [`ImageRecord`]  |
//! | `snapshots` | chain ID                              | [`SnapshotRecord`] |
//! | `cache`     | cache key                             | [`CacheRecord`]  |
//! | `context_hashes` | (device, inode) as `(u64, u64)`  | [`ContextHashRecord`], binary |
//! | `layer_variants` | `<diffID> <encoding>`            | [`LayerVariant`] |
//! | `blob_sources` | blob digest                        | [`BlobSources`]  |
//!
//! `context_hashes`, `layer_variants` and `blob_sources` were added within
//! schema 1: an
//! index written before them has no such table, and reads it as empty; the
//! first write creates it.
//! Its values are a small fixed binary record, not JSON, because a build
//! context can hold millions of files.
//!
//! redb locks its file exclusively per open `Database`, so two processes
//! cannot both keep it open. Every access is a short cycle under
//! `index.lock` (flock): lock, open, one transaction, close, unlock. redb
//! 4.5 added multi-process modes, but they are a week old at 4.6 with a
//! page of fixes in its changelog, and they offer no bounded wait that
//! names the holder; the lock file does.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::document::Descriptor;
use crate::store::StoreError;
use crate::{Digest, Platform, Reference};

/// The schema this kiln reads and writes. An index with a newer one is
/// refused rather than misread.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const CACHE: TableDefinition<&str, &[u8]> = TableDefinition::new("cache");
const CONTEXT_HASHES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("context_hashes");
const LAYER_VARIANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("layer_variants");
const BLOB_SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("blob_sources");

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// What kiln knows about an image it stores, beyond its documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageRecord {
    /// The config's `created` (the newest of the platforms' for an index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The platforms it has, normalised.
    #[serde(default, with = "platform_strings")]
    pub platforms: Vec<Platform>,
    /// When kiln stored it (Unix seconds).
    #[serde(default)]
    pub stored_at: u64,
}

/// A layer unpacked into a directory (see DESIGN, "Snapshots").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The directory's name, under the snapshotter's root.
    pub dir: String,
    pub state: SnapshotState,
    /// The layer blob it was unpacked from. Prune keeps it, so an image
    /// built on this snapshot can be exported without pulling it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Digest>,
    /// Set when the directory was made `Ready` without being flushed to
    /// disk: its files may still be only in the page cache. A process
    /// crash loses nothing of it, a power loss may, so a snapshot left
    /// unsynced by an earlier boot is never used. `None` once synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<Unsynced>,
}

/// When and in which boot a snapshot was written without a flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsynced {
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Unix seconds.
    pub since: u64,
}

/// Where a snapshot is in its life. A crash leaves `Unpacking` or
/// `Removing` records behind: the directory is incomplete and must be
/// removed, never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    Unpacking,
    Ready,
    Removing,
}

/// The result of a build step, found by its cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CacheRecord {
    /// The layer the step made (none for metadata-only steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Descriptor>,
    /// Its diffID (the digest of the uncompressed tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The image config after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Digest>,
}

/// One layer's blob in one encoding (table `layer_variants`): what
/// exporting a layer in another compression, level or with rewritten
/// timestamps made, so that it is made once. The key is the source
/// layer's diffID and a name of the encoding the exporter chooses; the
/// variant's own diffID differs from the source's only when its files
/// changed (timestamps rewritten). A variant is a cache: prune may delete
/// its blob, and a reader checks that the blob is still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerVariant {
    pub diff_id: Digest,
    pub descriptor: Descriptor,
}

/// Where a blob can be fetched from (table `blob_sources`): the
/// repositories that hold it. A blob with sources may be absent from the
/// store (a layer a build has not needed yet: it is fetched when it is
/// read, by the store's [`BlobFetcher`](crate::store::BlobFetcher)); a
/// push to one of these registries links it from there instead of
/// uploading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSources {
    /// The blob's media type and size, as its manifest gave them.
    pub media_type: String,
    pub size: u64,
    /// Newest first.
    pub sources: Vec<BlobSource>,
}

/// One repository that holds a blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobSource {
    /// The registry's name as references spell it (`docker.io`,
    /// `localhost:5000`).
    pub registry: String,
    pub repository: String,
}

/// How many sources a blob keeps: the newest ones.
const MAX_SOURCES: usize = 8;

impl BlobSources {
    /// The blob as a descriptor.
    pub fn descriptor(&self, digest: &Digest) -> Descriptor {
        Descriptor::new(self.media_type.clone(), digest.clone(), self.size)
    }
}

/// The key of a layer variant.
fn variant_key(diff_id: &Digest, encoding: &str) -> String {
    format!("{diff_id} {encoding}")
}

impl CacheRecord {
    /// The blobs this record keeps alive.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.layer.iter().map(|d| &d.digest).chain(&self.config)
    }
}

/// The content hash of one file of a build context, remembered by its
/// device and inode (table `context_hashes`), with the stat fields that must
/// still match for the hash to hold. kiln-build's context hashing owns what
/// the fields mean; the index only keeps them.
///
/// Stored as a versioned binary record, format 1: the byte `1`, then `size`
/// (u64), `mtime_sec` (i64), `mtime_nsec` (u32), `ctime_sec` (i64),
/// `ctime_nsec` (u32), all big-endian, then the 32 bytes of `sha256`. A
/// record of another format reads as absent, so a kiln that does not know
/// it hashes the file again instead of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextHashRecord {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    /// SHA-256 of the file's content.
    pub sha256: [u8; 32],
}

impl ContextHashRecord {
    const FORMAT: u8 = 1;
    const LEN: usize = 1 + 8 + 8 + 4 + 8 + 4 + 32;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[0] = Self::FORMAT;
        out[1..9].copy_from_slice(&self.size.to_be_bytes());
        out[9..17].copy_from_slice(&self.mtime_sec.to_be_bytes());
        out[17..21].copy_from_slice(&self.mtime_nsec.to_be_bytes());
        out[21..29].copy_from_slice(&self.ctime_sec.to_be_bytes());
        out[29..33].copy_from_slice(&self.ctime_nsec.to_be_bytes());
        out[33..].copy_from_slice(&self.sha256);
        out
    }

    /// `Ok(None)` for a record of another format; an error for a format-1
    /// record of the wrong length, which only damage produces.
    fn decode(path: &Path, key: (u64, u64), bytes: &[u8]) -> Result<Option<Self>, StoreError> {
        if bytes.first() != Some(&Self::FORMAT) {
            return Ok(None);
        }
        let Ok(b) = <[u8; Self::LEN]>::try_from(bytes) else {
            return Err(StoreError::BadRecord {
                path: path.to_path_buf(),
                table: "context_hashes",
                key: format!("{}:{}", key.0, key.1),
                reason: format!("{} bytes, expected {}", bytes.len(), Self::LEN),
            });
        };
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(Some(ContextHashRecord {
            size: u64_at(1),
            mtime_sec: u64_at(9) as i64,
            mtime_nsec: u32_at(17),
            ctime_sec: u64_at(21) as i64,
            ctime_nsec: u32_at(29),
            sha256: b[33..].try_into().expect("32 bytes"),
        }))
    }
}

type ReadOnlyContextTable = redb::ReadOnlyTable<(u64, u64), &'static [u8]>;

fn get_context_hashes(
    path: &Path,
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    keys: &[(u64, u64)],
) -> Result<Vec<Option<ContextHashRecord>>, StoreError> {
    keys.iter()
        .map(
            |&key| match table.get(key).map_err(|e| redb_error(path, e))? {
                Some(v) => ContextHashRecord::decode(path, key, v.value()),
                None => Ok(None),
            },
        )
        .collect()
}

mod platform_strings {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Platform;

    pub(super) fn serialize<S: Serializer>(v: &[Platform], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Platform>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| Platform::parse(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// The key of a tag: the full reference, `latest` added when untagged.
fn tag_key(reference: &Reference) -> String {
    reference.clone().with_default_tag().to_string()
}

fn redb_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Index {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("index records serialise to JSON")
}

fn decode<T: DeserializeOwned>(
    path: &Path,
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::BadRecord {
        path: path.to_path_buf(),
        table,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(
    path: &Path,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key).map_err(|e| redb_error(path, e))? {
        Some(v) => decode(path, name, key, v.value()).map(Some),
        None => Ok(None),
    }
}

fn all<T: DeserializeOwned>(
    path: &Path,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(|e| redb_error(path, e))? {
        let (k, v) = entry.map_err(|e| redb_error(path, e))?;
        let key = k.value().to_string();
        let value = decode(path, name, &key, v.value())?;
        out.push((key, value));
    }
    Ok(out)
}

fn parse_keys<T>(
    path: &Path,
    table: &'static str,
    rows: Vec<(String, T)>,
) -> Result<Vec<(Digest, T)>, StoreError> {
    rows.into_iter()
        .map(|(k, v)| {
            let d = k.parse::<Digest>().map_err(|e| StoreError::BadRecord {
                path: path.to_path_buf(),
                table,
                key: k.clone(),
                reason: e.to_string(),
            })?;
            Ok((d, v))
        })
        .collect()
}

macro_rules! read_methods {
    () => {
        /// The manifest or index `reference` points at.
        pub fn tag(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
            get(self.path, &self.table(TAGS)?, "tags", &tag_key(reference))
        }

        /// Every tag, sorted by reference.
        pub fn tags(&self) -> Result<Vec<(Reference, Descriptor)>, StoreError> {
            all(self.path, &self.table(TAGS)?, "tags")?
                .into_iter()
                .map(|(k, v)| {
                    let r = Reference::parse(&k).map_err(|e| StoreError::BadRecord {
                        path: self.path.to_path_buf(),
                        table: "tags",
                        key: k.clone(),
                        reason: e.to_string(),
                    })?;
                    Ok((r, v))
                })
                .collect()
        }

        pub fn image(&self, digest: &Digest) -> Result<Option<ImageRecord>, StoreError> {
            get(
                self.path,
                &self.table(IMAGES)?,
                "images",
                &digest.to_string(),
            )
        }

        pub fn images(&self) -> Result<Vec<(Digest, ImageRecord)>, StoreError> {
            parse_keys(
                self.path,
                "images",
                all(self.path, &self.table(IMAGES)?, "images")?,
            )
        }

        /// The snapshot of the layer stack with this chain ID.
        pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<SnapshotRecord>, StoreError> {
            get(
                self.path,
                &self.table(SNAPSHOTS)?,
                "snapshots",
                &chain_id.to_string(),
            )
        }

        pub fn snapshots(&self) -> Result<Vec<(Digest, SnapshotRecord)>, StoreError> {
            parse_keys(
                self.path,
                "snapshots",
                all(self.path, &self.table(SNAPSHOTS)?, "snapshots")?,
            )
        }

        pub fn cache(&self, key: &str) -> Result<Option<CacheRecord>, StoreError> {
            get(self.path, &self.table(CACHE)?, "cache", key)
        }

        pub fn cache_entries(&self) -> Result<Vec<(String, CacheRecord)>, StoreError> {
            all(self.path, &self.table(CACHE)?, "cache")
        }
    };
}

macro_rules! optional_read_methods {
    () => {
        /// The layer with this diffID in the named encoding, if one was
        /// recorded (its blob may have been pruned since).
        pub fn layer_variant(
            &self,
            diff_id: &Digest,
            encoding: &str,
        ) -> Result<Option<LayerVariant>, StoreError> {
            match self.optional_table(LAYER_VARIANTS)? {
                Some(t) => get(
                    self.path,
                    &t,
                    "layer_variants",
                    &variant_key(diff_id, encoding),
                ),
                None => Ok(None),
            }
        }

        /// Every recorded layer variant, by key.
        pub fn layer_variants(&self) -> Result<Vec<(String, LayerVariant)>, StoreError> {
            match self.optional_table(LAYER_VARIANTS)? {
                Some(t) => all(self.path, &t, "layer_variants"),
                None => Ok(Vec::new()),
            }
        }

        /// The repositories a blob can be fetched from, if any are known.
        pub fn blob_sources(&self, digest: &Digest) -> Result<Option<BlobSources>, StoreError> {
            match self.optional_table(BLOB_SOURCES)? {
                Some(t) => get(self.path, &t, "blob_sources", &digest.to_string()),
                None => Ok(None),
            }
        }

        /// Every blob with known sources, by digest.
        pub fn all_blob_sources(&self) -> Result<Vec<(String, BlobSources)>, StoreError> {
            match self.optional_table(BLOB_SOURCES)? {
                Some(t) => all(self.path, &t, "blob_sources"),
                None => Ok(Vec::new()),
            }
        }
    };
}

/// A read transaction on the index (see [`crate::Store::read`]).
pub struct IndexReader<'a> {
    tx: &'a redb::ReadTransaction,
    path: &'a Path,
}

impl IndexReader<'_> {
    fn table(
        &self,
        def: Table,
    ) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        self.tx
            .open_table(def)
            .map_err(|e| redb_error(self.path, e))
    }

    /// The context-hash table, `None` in an index written before it existed
    /// (a read transaction cannot create it, and there is nothing in it).
    fn context_table(&self) -> Result<Option<ReadOnlyContextTable>, StoreError> {
        match self.tx.open_table(CONTEXT_HASHES) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(redb_error(self.path, e)),
        }
    }

    read_methods!();
    optional_read_methods!();

    /// A table added within schema 1, `None` in an index written before it.
    fn optional_table(
        &self,
        def: Table,
    ) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StoreError> {
        match self.tx.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(redb_error(self.path, e)),
        }
    }

    /// The remembered content hash of the file with this device and inode.
    pub fn context_hash(
        &self,
        dev: u64,
        ino: u64,
    ) -> Result<Option<ContextHashRecord>, StoreError> {
        Ok(self.context_hashes(&[(dev, ino)])?.pop().flatten())
    }

    /// [`context_hash`](Self::context_hash) for many files at once, in the
    /// order of `keys` (device, inode).
    pub fn context_hashes(
        &self,
        keys: &[(u64, u64)],
    ) -> Result<Vec<Option<ContextHashRecord>>, StoreError> {
        match self.context_table()? {
            Some(table) => get_context_hashes(self.path, &table, keys),
            None => Ok(vec![None; keys.len()]),
        }
    }

    /// How many files have a remembered content hash.
    pub fn context_hash_count(&self) -> Result<u64, StoreError> {
        match self.context_table()? {
            Some(table) => table.len().map_err(|e| redb_error(self.path, e)),
            None => Ok(0),
        }
    }
}

/// A write transaction on the index (see [`crate::Store::update`]): its
/// changes commit together when the closure returns `Ok`, or not at all.
pub struct IndexWriter<'a> {
    tx: &'a redb::WriteTransaction,
    path: &'a Path,
}

impl IndexWriter<'_> {
    fn table(
        &self,
        def: Table,
    ) -> Result<redb::Table<'_, &'static str, &'static [u8]>, StoreError> {
        self.tx
            .open_table(def)
            .map_err(|e| redb_error(self.path, e))
    }

    fn put<T: Serialize + DeserializeOwned>(
        &mut self,
        def: Table,
        name: &'static str,
        key: &str,
        value: &T,
    ) -> Result<Option<T>, StoreError> {
        let mut table = self.table(def)?;
        let bytes = encode(value);
        let old = table
            .insert(key, bytes.as_slice())
            .map_err(|e| redb_error(self.path, e))?
            .map(|v| v.value().to_vec());
        // A previous value that no longer decodes is simply replaced.
        Ok(old.and_then(|v| decode(self.path, name, key, &v).ok()))
    }

    fn delete<T: DeserializeOwned>(
        &mut self,
        def: Table,
        name: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let mut table = self.table(def)?;
        let old = table
            .remove(key)
            .map_err(|e| redb_error(self.path, e))?
            .map(|v| v.value().to_vec());
        Ok(old.and_then(|v| decode(self.path, name, key, &v).ok()))
    }

    read_methods!();
    optional_read_methods!();

    /// In a write transaction the table is made when first opened.
    fn optional_table(
        &self,
        def: Table,
    ) -> Result<Option<redb::Table<'_, &'static str, &'static [u8]>>, StoreError> {
        self.table(def).map(Some)
    }

    /// Notes that `repository` of `registry` holds the blob `blob` (the
    /// newest source first; the oldest forgotten past a few).
    pub fn add_blob_source(
        &mut self,
        blob: &Descriptor,
        registry: &str,
        repository: &str,
    ) -> Result<(), StoreError> {
        let key = blob.digest.to_string();
        let source = BlobSource {
            registry: registry.to_string(),
            repository: repository.to_string(),
        };
        let mut sources = match self.blob_sources(&blob.digest)? {
            Some(known) => known.sources,
            None => Vec::new(),
        };
        if sources.first() == Some(&source) {
            return Ok(());
        }
        sources.retain(|s| *s != source);
        sources.insert(0, source);
        sources.truncate(MAX_SOURCES);
        let record = BlobSources {
            media_type: blob.media_type.clone(),
            size: blob.size,
            sources,
        };
        self.put(BLOB_SOURCES, "blob_sources", &key, &record)
            .map(drop)
    }

    /// Forgets where a blob can be fetched from.
    pub fn remove_blob_sources(&mut self, digest: &str) -> Result<(), StoreError> {
        self.delete::<BlobSources>(BLOB_SOURCES, "blob_sources", digest)
            .map(drop)
    }

    /// Records the layer with this diffID in the named encoding.
    pub fn put_layer_variant(
        &mut self,
        diff_id: &Digest,
        encoding: &str,
        variant: &LayerVariant,
    ) -> Result<(), StoreError> {
        let key = variant_key(diff_id, encoding);
        self.put(LAYER_VARIANTS, "layer_variants", &key, variant)
            .map(drop)
    }

    /// Forgets a layer variant, by its key (see
    /// [`layer_variants`](Self::layer_variants)).
    pub fn remove_layer_variant(&mut self, key: &str) -> Result<(), StoreError> {
        self.delete::<LayerVariant>(LAYER_VARIANTS, "layer_variants", key)
            .map(drop)
    }

    /// Points `reference` (`latest` when untagged) at `target`; returns
    /// what it pointed at before. Prefer [`crate::Store::tag`], which
    /// checks the target and records the image.
    pub fn set_tag(
        &mut self,
        reference: &Reference,
        target: &Descriptor,
    ) -> Result<Option<Descriptor>, StoreError> {
        self.put(TAGS, "tags", &tag_key(reference), target)
    }

    pub fn remove_tag(&mut self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
        self.delete(TAGS, "tags", &tag_key(reference))
    }

    pub fn put_image(&mut self, digest: &Digest, record: &ImageRecord) -> Result<(), StoreError> {
        self.put(IMAGES, "images", &digest.to_string(), record)
            .map(drop)
    }

    pub fn remove_image(&mut self, digest: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        self.delete(IMAGES, "images", &digest.to_string())
    }

    pub fn put_snapshot(
        &mut self,
        chain_id: &Digest,
        record: &SnapshotRecord,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        self.put(SNAPSHOTS, "snapshots", &chain_id.to_string(), record)
    }

    pub fn remove_snapshot(
        &mut self,
        chain_id: &Digest,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        self.delete(SNAPSHOTS, "snapshots", &chain_id.to_string())
    }

    pub fn put_cache(
        &mut self,
        key: &str,
        record: &CacheRecord,
    ) -> Result<Option<CacheRecord>, StoreError> {
        self.put(CACHE, "cache", key, record)
    }

    pub fn remove_cache(&mut self, key: &str) -> Result<Option<CacheRecord>, StoreError> {
        self.delete(CACHE, "cache", key)
    }

    /// Opens (creating it if needed) the context-hash table.
    fn context_table(&self) -> Result<redb::Table<'_, (u64, u64), &'static [u8]>, StoreError> {
        self.tx
            .open_table(CONTEXT_HASHES)
            .map_err(|e| redb_error(self.path, e))
    }

    /// See [`IndexReader::context_hash`].
    pub fn context_hash(
        &self,
        dev: u64,
        ino: u64,
    ) -> Result<Option<ContextHashRecord>, StoreError> {
        let table = self.context_table()?;
        Ok(get_context_hashes(self.path, &table, &[(dev, ino)])?
            .pop()
            .flatten())
    }

    /// Remembers the content hash of the file with this device and inode,
    /// replacing what was remembered for it (a file that changed, or an
    /// inode number reused by a new file).
    pub fn put_context_hash(
        &mut self,
        dev: u64,
        ino: u64,
        record: &ContextHashRecord,
    ) -> Result<(), StoreError> {
        self.put_context_hashes(std::iter::once(((dev, ino), *record)))
    }

    /// [`put_context_hash`](Self::put_context_hash) for many files, with
    /// the table opened once.
    pub fn put_context_hashes(
        &mut self,
        records: impl IntoIterator<Item = ((u64, u64), ContextHashRecord)>,
    ) -> Result<(), StoreError> {
        let mut table = self.context_table()?;
        for (key, record) in records {
            table
                .insert(key, record.encode().as_slice())
                .map_err(|e| redb_error(self.path, e))?;
        }
        Ok(())
    }

    /// Forgets a file's content hash; whether there was one.
    pub fn remove_context_hash(&mut self, dev: u64, ino: u64) -> Result<bool, StoreError> {
        let mut table = self.context_table()?;
        let old = table
            .remove((dev, ino))
            .map_err(|e| redb_error(self.path, e))?;
        Ok(old.is_some())
    }
}

/// The index's schema version, `None` in a new file; an error if it is
/// newer than this kiln knows.
fn check_schema(db: &impl ReadableDatabase, path: &Path) -> Result<Option<u64>, StoreError> {
    let tx = db.begin_read().map_err(|e| redb_error(path, e))?;
    let found = match tx.open_table(META) {
        Ok(t) => t
            .get("schema_version")
            .map_err(|e| redb_error(path, e))?
            .map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(redb_error(path, e)),
    };
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: v,
            supported: SCHEMA_VERSION,
        }),
        found => Ok(found),
    }
}

/// How both opens open the file: a small cache, as the database lives for
/// one transaction.
fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(4 << 20);
    b
}

/// A read transaction on `db`, given to `f`.
fn read_in<T>(
    db: &impl ReadableDatabase,
    path: &Path,
    f: impl FnOnce(&IndexReader<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = db.begin_read().map_err(|e| redb_error(path, e))?;
    f(&IndexReader { tx: &tx, path })
}

/// The index file opened to read only, for one transaction. A writable
/// open is not free: redb marks the file as open (a write and a flush),
/// and its close records the allocator state and clears the mark (a
/// commit and two flushes more), five device flushes for a lookup. On a
/// disk busy writing a layer each of those waits behind the writeback
/// (tens of milliseconds each, whole seconds seen on a VM's disk); this
/// open writes and flushes nothing.
pub(crate) struct ReadDb {
    db: redb::ReadOnlyDatabase,
    path: std::path::PathBuf,
}

impl ReadDb {
    /// The index opened to read, or `None` where only a writable open
    /// will do: the file is missing, or was not closed cleanly (a crashed
    /// writer) and needs the repair that a writable open makes.
    pub(crate) fn open(path: &Path) -> Result<Option<ReadDb>, StoreError> {
        match builder().open_read_only(path) {
            Ok(db) => Ok(Some(ReadDb {
                db,
                path: path.to_path_buf(),
            })),
            Err(redb::DatabaseError::RepairAborted) => Ok(None),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(redb_error(path, e)),
        }
    }

    /// Whether the index has its tables (schema checked as
    /// [`Db::init`] does); if not, a writable open must make them.
    pub(crate) fn initialized(&self) -> Result<bool, StoreError> {
        Ok(check_schema(&self.db, &self.path)?.is_some())
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&IndexReader<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        read_in(&self.db, &self.path, f)
    }

    pub(crate) fn close(self) -> Result<(), StoreError> {
        self.db.close().map_err(|e| redb_error(&self.path, e))
    }
}

/// The open index file, for one transaction.
pub(crate) struct Db {
    db: redb::Database,
    path: std::path::PathBuf,
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Db, StoreError> {
        let db = builder().create(path).map_err(|e| redb_error(path, e))?;
        Ok(Db {
            db,
            path: path.to_path_buf(),
        })
    }

    /// Creates the tables of a new index, or checks an existing one's
    /// schema version.
    pub(crate) fn init(&self) -> Result<(), StoreError> {
        match check_schema(&self.db, &self.path)? {
            // Migrations from older schemas go here when there are some.
            Some(_) => Ok(()),
            None => self.write(|w| {
                for def in [TAGS, IMAGES, SNAPSHOTS, CACHE] {
                    w.table(def)?;
                }
                w.context_table()?;
                let mut meta = w.tx.open_table(META).map_err(|e| redb_error(w.path, e))?;
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(|e| redb_error(w.path, e))?;
                Ok(())
            }),
        }
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&IndexReader<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        read_in(&self.db, &self.path, f)
    }

    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| redb_error(&self.path, e))?;
        let out = f(&mut IndexWriter {
            tx: &tx,
            path: &self.path,
        });
        match out {
            Ok(v) => {
                tx.commit().map_err(|e| redb_error(&self.path, e))?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.abort();
                Err(e)
            }
        }
    }

    /// redb's own check of every page checksum and of the allocator state;
    /// `Ok(false)` means it found damage and repaired it.
    pub(crate) fn check_integrity(&mut self) -> Result<bool, StoreError> {
        self.db
            .check_integrity()
            .map_err(|e| redb_error(&self.path, e))
    }

    pub(crate) fn close(self) -> Result<(), StoreError> {
        self.db.close().map_err(|e| redb_error(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: u8) -> ContextHashRecord {
        ContextHashRecord {
            size: 4096 + u64::from(seed),
            mtime_sec: -86_400 * 365 * 80, // before 1970: negative seconds survive
            mtime_nsec: 999_999_999,
            ctime_sec: 1_700_000_000,
            ctime_nsec: u32::from(seed),
            sha256: [seed; 32],
        }
    }

    #[test]
    fn context_hashes_round_trip_and_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("index.redb")).unwrap();
        db.init().unwrap();
        db.write(|w| {
            w.put_context_hash(1, 10, &record(1))?;
            w.put_context_hashes([((1, 11), record(2)), ((2, 10), record(3))])
        })
        .unwrap();
        db.read(|r| {
            assert_eq!(r.context_hash(1, 10)?, Some(record(1)));
            assert_eq!(
                r.context_hashes(&[(2, 10), (9, 9), (1, 11)])?,
                vec![Some(record(3)), None, Some(record(2))]
            );
            assert_eq!(r.context_hash_count()?, 3);
            Ok(())
        })
        .unwrap();
        // A changed file's entry is overwritten, not added.
        db.write(|w| w.put_context_hash(1, 10, &record(7))).unwrap();
        db.read(|r| {
            assert_eq!(r.context_hash(1, 10)?, Some(record(7)));
            assert_eq!(r.context_hash_count()?, 3);
            Ok(())
        })
        .unwrap();
        assert!(db.write(|w| w.remove_context_hash(1, 10)).unwrap());
        assert!(!db.write(|w| w.remove_context_hash(1, 10)).unwrap());
        db.close().unwrap();
    }

    /// An index written before the table existed (schema 1 without it)
    /// reads as empty and gains the table on the first write.
    #[test]
    fn a_missing_context_table_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            for def in [TAGS, IMAGES, SNAPSHOTS, CACHE] {
                tx.open_table(def).unwrap();
            }
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
            tx.commit().unwrap();
        }
        let db = Db::open(&path).unwrap();
        db.init().unwrap();
        db.read(|r| {
            assert_eq!(r.context_hash(1, 2)?, None);
            assert_eq!(r.context_hashes(&[(1, 2), (3, 4)])?, vec![None, None]);
            assert_eq!(r.context_hash_count()?, 0);
            Ok(())
        })
        .unwrap();
        db.write(|w| w.put_context_hash(1, 2, &record(5))).unwrap();
        assert_eq!(db.read(|r| r.context_hash(1, 2)).unwrap(), Some(record(5)));
    }

    #[test]
    fn context_records_of_another_format_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("index.redb")).unwrap();
        db.init().unwrap();
        db.write(|w| {
            let mut t = w.context_table()?;
            t.insert((1, 1), [2u8, 0, 0].as_slice()).unwrap();
            t.insert((1, 2), [1u8, 0, 0].as_slice()).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(db.read(|r| r.context_hash(1, 1)).unwrap(), None);
        let err = db.read(|r| r.context_hash(1, 2)).unwrap_err();
        assert!(
            matches!(&err, StoreError::BadRecord { table: "context_hashes", key, .. } if key == "1:2"),
            "{err}"
        );
    }
}
