//! The content store: blobs by digest, and the index of tags, images,
//! snapshots and cache keys.
//!
//! ```text
//! <root>/
//!   blobs/sha256/<hex>   content, read-only, as in an OCI image layout
//!   ingest/              blobs being written (locked temp files)
//!   leases/              blobs live processes hold for a tag to come
//!   index.redb           tags, image records, snapshots, cache keys,
//!                        context-hash memo
//!   index.lock           held around every index transaction
//!   gc.lock              shared by writers, exclusive for prune
//! ```
//!
//! Any number of kiln processes may use one store at once. Crash safety:
//! a blob becomes visible only by an atomic rename of a complete, fsynced
//! file; the index is redb's (copy-on-write, checksummed, committed with
//! fsync); temp files and leases of dead processes are recognised by
//! their unheld locks and removed on open and by prune.

mod error;
mod follow;
mod gc;
mod index;
mod ingest;
mod lease;
mod lock;
mod verify;

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::StoreError;
pub use follow::FollowedBlob;
pub use gc::PruneReport;
pub use index::{
    BlobSource, BlobSources, CacheRecord, ContextHashRecord, ImageRecord, IndexReader, IndexWriter,
    LayerVariant, SCHEMA_VERSION, SnapshotRecord, SnapshotState, Unsynced,
};
pub use ingest::{BlobInfo, Ingest};
pub use verify::{Problem, VerifyReport};

use crate::document::{Descriptor, Document, DocumentKind, ImageConfig, ImageDocument, Manifest};
use crate::media;
use crate::{Digest, Platform, Reference};
use lock::Mode;

/// Documents (manifests, indexes, configs) larger than this are refused
/// rather than read into memory: a layer mistaken for a document must not
/// exhaust memory. Real configs with long histories stay far below.
pub const DOCUMENT_LIMIT: u64 = 64 << 20;

/// Reported once when a store lock has been waited on for
/// [`StoreOptions::report_after`].
#[derive(Debug, Clone)]
pub struct LockWait {
    pub lock: PathBuf,
    /// What the holder wrote into the lock file: `pid 4242: prune`.
    pub holder: Option<String>,
    pub waited: Duration,
    /// When the wait gives up with [`StoreError::LockTimeout`].
    pub timeout: Duration,
}

/// A hook told about long lock waits (the CLI prints them).
pub type LockWaitHook = Arc<dyn Fn(&LockWait) + Send + Sync>;

/// How a [`Store`] waits for other processes.
#[derive(Clone)]
pub struct StoreOptions {
    /// How long to wait for a lock before failing. Index transactions
    /// take milliseconds; a prune holds the gc lock for its sweep.
    pub lock_timeout: Duration,
    /// When to report a wait through `on_lock_wait`.
    pub report_after: Duration,
    pub on_lock_wait: Option<LockWaitHook>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            lock_timeout: Duration::from_secs(300),
            report_after: Duration::from_secs(1),
            on_lock_wait: None,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("lock_timeout", &self.lock_timeout)
            .field("report_after", &self.report_after)
            .field("on_lock_wait", &self.on_lock_wait.is_some())
            .finish()
    }
}

/// A handle on a store directory. Cheap to clone; clones share one lease,
/// which ends (making this process's untagged blobs prunable) when the
/// last clone and the last [`Ingest`] are dropped.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    options: StoreOptions,
    lease: lease::Lease,
    fetcher: FetcherSlot,
}

/// Fetches a blob the store lacks from one of the repositories its
/// `blob_sources` record names (kiln-registry has the real one). The store
/// calls it from [`Store::open_blob`] and [`Store::ensure_blob`], in
/// synchronous code.
pub trait BlobFetcher: Send + Sync {
    /// Puts `blob` into `store` (verified, as every ingest is), from the
    /// first of `sources` that gives it.
    fn fetch(
        &self,
        store: &Store,
        blob: &Descriptor,
        sources: &[BlobSource],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// [`fetch`](BlobFetcher::fetch), calling `wrote(file, len)` after each
    /// write to the ingest file: `file` now holds the first `len` bytes of
    /// the blob (another file than before means the fetch started over).
    /// For [`Store::open_blob_following`]; a fetcher without reports is
    /// read once it is done.
    fn fetch_following(
        &self,
        store: &Store,
        blob: &Descriptor,
        sources: &[BlobSource],
        wrote: Wrote<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let _ = wrote;
        self.fetch(store, blob, sources)
    }
}

/// Told after each write of a fetch to its ingest file: that file now
/// holds this many bytes of the blob ([`BlobFetcher::fetch_following`]).
pub type Wrote<'a> = &'a (dyn Fn(&Path, u64) + Send + Sync);

#[derive(Default)]
struct FetcherSlot(std::sync::RwLock<Option<Arc<dyn BlobFetcher>>>);

impl std::fmt::Debug for FetcherSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.read().map(|s| s.is_some()).unwrap_or(false);
        f.debug_tuple("FetcherSlot").field(&set).finish()
    }
}

/// An open blob: a file you can read and seek.
#[derive(Debug)]
pub struct Blob {
    file: fs_err::File,
    size: u64,
}

impl Blob {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The open file, for copies made in the kernel (`copy_file_range`,
    /// reflinks) rather than through [`Read`].
    pub fn file(&self) -> &std::fs::File {
        self.file.file()
    }
}

impl Read for Blob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for Blob {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Store {
    /// `$KILN_ROOT` if set; otherwise `/var/lib/kiln` for root and
    /// `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`) for other users.
    /// A `--root` flag overrides all of these.
    pub fn default_root() -> PathBuf {
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(root) = non_empty("KILN_ROOT") {
            return root.into();
        }
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        // The XDG spec ignores relative values.
        if let Some(data) = non_empty("XDG_DATA_HOME").map(PathBuf::from)
            && data.is_absolute()
        {
            return data.join("kiln");
        }
        match non_empty("HOME") {
            Some(home) => PathBuf::from(home).join(".local/share/kiln"),
            None => {
                std::env::temp_dir().join(format!("kiln-{}", rustix::process::geteuid().as_raw()))
            }
        }
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_with(root, StoreOptions::default())
    }

    pub fn open_with(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Store, StoreError> {
        let store = Store {
            inner: Arc::new(Inner {
                root: root.into(),
                options,
                lease: lease::Lease::default(),
                fetcher: FetcherSlot::default(),
            }),
        };
        for dir in [store.blobs_dir(), store.ingest_dir(), store.leases_dir()] {
            fs_err::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        }
        store.remove_abandoned()?;
        store.init_index()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the blob with `digest` is (or would be).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    fn blobs_dir(&self) -> PathBuf {
        self.inner.root.join("blobs/sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.inner.root.join("ingest")
    }

    fn leases_dir(&self) -> PathBuf {
        self.inner.root.join("leases")
    }

    fn index_path(&self) -> PathBuf {
        self.inner.root.join("index.redb")
    }

    /// Temp files and leases whose process died (their lock is free).
    fn remove_abandoned(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for dir in [self.ingest_dir(), self.leases_dir()] {
            for path in lease::list(&dir)? {
                removed += usize::from(lock::remove_if_abandoned(&path)?);
            }
        }
        Ok(removed)
    }

    fn gc_lock(&self, mode: Mode, operation: &str) -> Result<lock::Guard, StoreError> {
        lock::acquire(
            &self.inner.root.join("gc.lock"),
            mode,
            operation,
            &self.inner.options,
        )
    }

    /// One short cycle on the index: lock, open, `f`, close, unlock.
    fn with_index<T>(
        &self,
        operation: &str,
        f: impl FnOnce(&mut index::Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.index_lock(operation)?;
        Self::in_db(&self.index_path(), f)
    }

    /// Makes the index's tables unless they are there (most opens: then
    /// the file is only read).
    fn init_index(&self) -> Result<(), StoreError> {
        let _lock = self.index_lock("open")?;
        if let Some(db) = index::ReadDb::open(&self.index_path())? {
            let initialized = db.initialized();
            db.close()?;
            if initialized? {
                return Ok(());
            }
        }
        Self::in_db(&self.index_path(), |db| db.init())
    }

    fn index_lock(&self, operation: &str) -> Result<lock::Guard, StoreError> {
        lock::acquire(
            &self.inner.root.join("index.lock"),
            Mode::Exclusive,
            operation,
            &self.inner.options,
        )
    }

    /// `f` on the index opened to write, then closed; the index lock held.
    fn in_db<T>(
        path: &Path,
        f: impl FnOnce(&mut index::Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut db = index::Db::open(path)?;
        let out = f(&mut db);
        then_closed(out, db.close())
    }

    // ---- blobs ----------------------------------------------------------

    /// Starts writing a blob whose digest is not known in advance.
    pub fn ingest(&self) -> Result<Ingest, StoreError> {
        Ingest::new(self.clone(), None, None)
    }

    /// Starts writing a blob that must have `digest` (and `size`, if
    /// given): a write past the size fails at once, a wrong digest at
    /// commit, and nothing is stored.
    pub fn ingest_expected(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Ingest, StoreError> {
        Ingest::new(self.clone(), Some(digest.clone()), size)
    }

    /// Stores `bytes` (a no-op if the blob is already there).
    pub fn write_blob(&self, bytes: &[u8]) -> Result<BlobInfo, StoreError> {
        let digest = Digest::of(bytes);
        let size = bytes.len() as u64;
        if self.reuse(&digest)? == Some(size) {
            return Ok(BlobInfo { digest, size });
        }
        let mut ingest = self.ingest_expected(&digest, Some(size))?;
        io::Write::write_all(&mut ingest, bytes)
            .map_err(StoreError::io(self.blob_path(&digest)))?;
        ingest.commit()
    }

    /// Called by a committing ingest: records the blob in this process's
    /// lease and renames it into place, both under the gc lock (shared)
    /// so that a prune sees neither or both.
    fn publish(&self, temp: &Path, digest: &Digest) -> Result<(), StoreError> {
        let _gc = self.gc_lock(Mode::Shared, "write blob")?;
        self.inner.lease.add(&self.leases_dir(), digest)?;
        let dest = self.blob_path(digest);
        // Renaming over an existing copy is fine: same content, and readers
        // holding the old file keep reading it.
        fs_err::rename(temp, &dest).map_err(StoreError::io(&dest))?;
        let dir = self.blobs_dir();
        fs_err::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(&dir))
    }

    /// The size of the blob if the store has it, `None` if not. A blob
    /// found is protected from prune for as long as this handle lives: use
    /// this before skipping a download or a write because the blob exists.
    pub fn reuse(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let _gc = self.gc_lock(Mode::Shared, "reuse blob")?;
        let size = self.blob_size(digest)?;
        if size.is_some() {
            self.inner.lease.add(&self.leases_dir(), digest)?;
        }
        Ok(size)
    }

    /// The size of the blob, `None` if the store does not have it.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let path = self.blob_path(digest);
        match fs_err::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    pub fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.blob_size(digest)?.is_some())
    }

    /// Opens a blob; one the store lacks but knows a source of is fetched
    /// first (see [`set_fetcher`](Self::set_fetcher)).
    pub fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError> {
        if let Some(blob) = self.open_stored(digest)? {
            return Ok(blob);
        }
        self.fetch_missing(digest)?;
        let path = self.blob_path(digest);
        let file = fs_err::File::open(&path).map_err(StoreError::io(&path))?;
        let size = file.metadata().map_err(StoreError::io(&path))?.len();
        Ok(Blob { file, size })
    }

    /// The blob if the store has it.
    fn open_stored(&self, digest: &Digest) -> Result<Option<Blob>, StoreError> {
        let path = self.blob_path(digest);
        let file = match fs_err::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(path)(e)),
        };
        let size = file.metadata().map_err(StoreError::io(&path))?.len();
        Ok(Some(Blob { file, size }))
    }

    /// Makes sure the store has the blob, fetching it from a known source
    /// if it does not. For readers that open [`blob_path`](Self::blob_path)
    /// themselves.
    pub fn ensure_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        if self.contains(digest)? {
            return Ok(());
        }
        self.fetch_missing(digest)
    }

    /// Whether the store has the blob, or knows where to fetch it from.
    pub fn available(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.contains(digest)? || self.read(|r| r.blob_sources(digest))?.is_some())
    }

    /// Who fetches the blobs the store lacks but knows sources of. Set by
    /// whoever holds a registry client (kiln-registry's `RegistryFetcher`);
    /// shared by every clone of this handle.
    pub fn set_fetcher(&self, fetcher: Arc<dyn BlobFetcher>) {
        *self
            .inner
            .fetcher
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fetcher);
    }

    /// The fetcher, if one is set.
    fn fetcher(&self) -> Option<Arc<dyn BlobFetcher>> {
        self.inner
            .fetcher
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn fetch_missing(&self, digest: &Digest) -> Result<(), StoreError> {
        self.fetch_missing_with(digest, None)
    }

    /// [`fetch_missing`](Self::fetch_missing) with the fetcher's reports.
    pub(crate) fn fetch_missing_following(
        &self,
        digest: &Digest,
        wrote: Wrote<'_>,
    ) -> Result<(), StoreError> {
        self.fetch_missing_with(digest, Some(wrote))
    }

    fn fetch_missing_with(
        &self,
        digest: &Digest,
        wrote: Option<Wrote<'_>>,
    ) -> Result<(), StoreError> {
        let not_found = || StoreError::BlobNotFound {
            digest: digest.clone(),
            path: self.blob_path(digest),
        };
        let Some(known) = self.read(|r| r.blob_sources(digest))? else {
            return Err(not_found());
        };
        let fetcher = self.fetcher();
        let where_from = known
            .sources
            .iter()
            .map(|s| format!("{}/{}", s.registry, s.repository))
            .collect::<Vec<_>>()
            .join(", ");
        let Some(fetcher) = fetcher else {
            return Err(StoreError::NotFetched {
                digest: digest.clone(),
                sources: where_from,
            });
        };
        let blob = known.descriptor(digest);
        match wrote {
            Some(wrote) => fetcher.fetch_following(self, &blob, &known.sources, wrote),
            None => fetcher.fetch(self, &blob, &known.sources),
        }
        .map_err(|source| StoreError::Fetch {
            digest: digest.clone(),
            sources: where_from,
            source,
        })?;
        if !self.contains(digest)? {
            return Err(not_found());
        }
        Ok(())
    }

    /// A small blob's bytes, checked against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut blob = self.open_blob(digest)?;
        if blob.size > DOCUMENT_LIMIT {
            return Err(StoreError::DocumentTooLarge {
                digest: digest.clone(),
                size: blob.size,
                limit: DOCUMENT_LIMIT,
            });
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        blob.read_to_end(&mut bytes)
            .map_err(StoreError::io(self.blob_path(digest)))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    // ---- documents ------------------------------------------------------

    /// Stores a document's bytes; returns its descriptor.
    pub fn put_document<T>(&self, document: &Document<T>) -> Result<Descriptor, StoreError> {
        self.write_blob(document.bytes())?;
        Ok(document.descriptor())
    }

    /// Reads and parses the document `descriptor` points at, checking its
    /// size, digest and media type.
    pub fn read_document<T: DocumentKind>(
        &self,
        descriptor: &Descriptor,
    ) -> Result<Document<T>, StoreError> {
        let bytes = self.read_described(descriptor)?;
        Document::parse(&descriptor.media_type, bytes).map_err(|source| StoreError::Document {
            digest: descriptor.digest.clone(),
            source,
        })
    }

    /// Reads a manifest or an index.
    pub fn read_image(&self, descriptor: &Descriptor) -> Result<ImageDocument, StoreError> {
        if !media::is_manifest(&descriptor.media_type) && !media::is_index(&descriptor.media_type) {
            return Err(StoreError::UnsupportedMediaType {
                digest: descriptor.digest.clone(),
                media_type: descriptor.media_type.clone(),
            });
        }
        let bytes = self.read_described(descriptor)?;
        ImageDocument::parse(&descriptor.media_type, bytes).map_err(|source| StoreError::Document {
            digest: descriptor.digest.clone(),
            source,
        })
    }

    fn read_described(&self, descriptor: &Descriptor) -> Result<Vec<u8>, StoreError> {
        let bytes = self.read_blob(&descriptor.digest)?;
        if bytes.len() as u64 != descriptor.size {
            return Err(StoreError::SizeMismatch {
                what: descriptor.digest.to_string(),
                expected: descriptor.size,
                actual: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// The manifest for `platform`: `descriptor` itself if it is a
    /// manifest, else the index entry [`crate::document::Index::select`] picks.
    pub fn select_manifest(
        &self,
        descriptor: &Descriptor,
        platform: &Platform,
    ) -> Result<Document<Manifest>, StoreError> {
        match self.read_image(descriptor)? {
            ImageDocument::Manifest(m) => Ok(m),
            ImageDocument::Index(index) => {
                let Some(chosen) = index.value().select(platform) else {
                    return Err(StoreError::NoMatchingPlatform {
                        digest: descriptor.digest.clone(),
                        platform: platform.to_string(),
                        available: index
                            .value()
                            .platforms()
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    });
                };
                self.read_document(chosen)
            }
        }
    }

    /// Every blob an image needs, each once: the documents first (index,
    /// manifests), each followed by what it references. Blobs with `urls`
    /// (foreign layers) may be absent and are left out; layers with a
    /// known source may be absent and are listed (they are fetched when
    /// read); any other missing blob is an error.
    pub fn image_blobs(&self, root: &Descriptor) -> Result<Vec<Descriptor>, StoreError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.collect_blobs(root, &mut seen, &mut out)?;
        Ok(out)
    }

    fn collect_blobs(
        &self,
        d: &Descriptor,
        seen: &mut HashSet<Digest>,
        out: &mut Vec<Descriptor>,
    ) -> Result<(), StoreError> {
        if !seen.insert(d.digest.clone()) {
            return Ok(());
        }
        if !self.contains(&d.digest)? {
            let is_document = media::is_manifest(&d.media_type) || media::is_index(&d.media_type);
            if !is_document && self.read(|r| r.blob_sources(&d.digest))?.is_some() {
                // In its registry: fetched when it is read.
                out.push(d.clone());
                return Ok(());
            }
            if d.urls.is_empty() {
                return Err(StoreError::BlobNotFound {
                    digest: d.digest.clone(),
                    path: self.blob_path(&d.digest),
                });
            }
            return Ok(());
        }
        out.push(d.clone());
        if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
            let doc = self.read_image(d)?;
            for child in doc.children() {
                self.collect_blobs(child, seen, out)?;
            }
        }
        Ok(())
    }

    // ---- the index ------------------------------------------------------

    /// Runs `f` in a read transaction of the index. Do not call other
    /// `Store` methods from `f`: the index lock is held.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&IndexReader<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.index_lock("read")?;
        let Some(db) = index::ReadDb::open(&self.index_path())? else {
            // Missing or left open by a crash: the writable open repairs it.
            return Self::in_db(&self.index_path(), |db| db.read(f));
        };
        then_closed(db.read(f), db.close())
    }

    /// Runs `f` in a write transaction: its changes commit together if it
    /// returns `Ok`, else none do. Held under the gc lock (shared), so a
    /// prune never runs between what `f` checks and what it writes. Do not
    /// call other `Store` methods from `f`.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _gc = self.gc_lock(Mode::Shared, "update index")?;
        self.with_index("update", |db| db.write(f))
    }

    /// Points `reference` (`latest` when untagged) at a manifest or index
    /// in the store, and records the image (created time, platforms).
    /// Returns what the tag pointed at before.
    pub fn tag(
        &self,
        reference: &Reference,
        target: &Descriptor,
    ) -> Result<Option<Descriptor>, StoreError> {
        self.tag_with(reference, target, |_| Ok(()))
    }

    /// [`tag`](Store::tag), with `also` written in the same transaction
    /// (a pull records where the image's layers came from): one commit of
    /// the index, which is flushed to disk, rather than two.
    pub fn tag_with(
        &self,
        reference: &Reference,
        target: &Descriptor,
        also: impl FnOnce(&mut IndexWriter<'_>) -> Result<(), StoreError>,
    ) -> Result<Option<Descriptor>, StoreError> {
        // Under the gc lock, so the target checked here is still there when
        // the tag is written.
        let _gc = self.gc_lock(Mode::Shared, "tag")?;
        let record = self.image_record(target)?;
        self.with_index("tag", |db| {
            db.write(|w| {
                also(w)?;
                w.put_image(&target.digest, &record)?;
                w.set_tag(reference, target)
            })
        })
    }

    /// Removes a tag; returns what it pointed at. The image's blobs stay
    /// until a prune finds nothing else needs them.
    pub fn untag(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
        self.update(|w| w.remove_tag(reference))
    }

    /// What `reference` points at.
    pub fn resolve(&self, reference: &Reference) -> Result<Option<Descriptor>, StoreError> {
        self.read(|r| r.tag(reference))
    }

    pub fn tags(&self) -> Result<Vec<(Reference, Descriptor)>, StoreError> {
        self.read(|r| r.tags())
    }

    /// The record of an image: from its config, or from the index and the
    /// configs of the platforms present (a partial pull has only some).
    fn image_record(&self, target: &Descriptor) -> Result<ImageRecord, StoreError> {
        let stored_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let config_of = |m: &Document<Manifest>| -> Result<ImageConfig, StoreError> {
            Ok(self
                .read_document::<ImageConfig>(&m.value().config)?
                .into_value())
        };
        Ok(match self.read_image(target)? {
            ImageDocument::Manifest(m) => {
                let config = config_of(&m)?;
                ImageRecord {
                    platforms: vec![target.platform().unwrap_or_else(|| config.platform())],
                    created: config.created,
                    stored_at,
                }
            }
            ImageDocument::Index(index) => {
                let mut created: Option<String> = None;
                for d in &index.value().manifests {
                    if !media::is_manifest(&d.media_type) || !self.contains(&d.digest)? {
                        continue;
                    }
                    let manifest = self.read_document::<Manifest>(d)?;
                    if !self.contains(&manifest.value().config.digest)? {
                        continue;
                    }
                    let c = config_of(&manifest)?.created;
                    // RFC 3339 in UTC compares as text.
                    if c > created {
                        created = c;
                    }
                }
                ImageRecord {
                    platforms: index.value().platforms(),
                    created,
                    stored_at,
                }
            }
        })
    }

    /// Removes blobs that no tag, cache record, snapshot record or live
    /// lease reaches (see [`PruneReport`]).
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        gc::prune(self)
    }

    /// Re-hashes every blob and checks that everything the index points at
    /// exists and parses (see [`VerifyReport`]).
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        verify::verify(self)
    }
}

/// What was done with the index, once it is closed: the first error of
/// the two, the work's before the close's.
fn then_closed<T>(
    out: Result<T, StoreError>,
    closed: Result<(), StoreError>,
) -> Result<T, StoreError> {
    let out = out?;
    closed?;
    Ok(out)
}
