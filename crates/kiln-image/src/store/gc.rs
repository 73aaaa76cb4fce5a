//! Prune: mark what the index and live leases reach, sweep the rest.

use std::collections::HashSet;
use std::io;

use crate::Digest;
use crate::document::{Descriptor, ImageDocument};
use crate::media;
use crate::store::{DOCUMENT_LIMIT, Store, StoreError, lease, lock::Mode};

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The blobs deleted, sorted.
    pub removed: Vec<Digest>,
    pub freed_bytes: u64,
    /// The blobs kept.
    pub kept: usize,
    /// Image records dropped because their manifest or index is gone.
    pub records_removed: usize,
}

/// Roots are tags, cache records, snapshot layers and the digests of live
/// leases. The walk follows indexes to manifests and manifests to their
/// config and layers. The whole prune holds the gc lock exclusively, so
/// no blob is published (and no index update lands) between the mark and
/// the sweep.
pub(crate) fn prune(store: &Store) -> Result<PruneReport, StoreError> {
    let _gc = store.gc_lock(Mode::Exclusive, "prune")?;
    store.remove_abandoned()?;

    let (tags, cache, snapshots) = store.with_index("prune: read roots", |db| {
        db.read(|r| Ok((r.tags()?, r.cache_entries()?, r.snapshots()?)))
    })?;

    let mut marked = HashSet::new();
    for (_, target) in &tags {
        mark(store, target, &mut marked)?;
    }
    let mut loose: Vec<Digest> = lease::live_digests(&store.leases_dir())?
        .into_iter()
        .collect();
    for (_, record) in &cache {
        if let Some(layer) = &record.layer {
            mark(store, layer, &mut marked)?;
        }
        loose.extend(record.config.iter().cloned());
    }
    loose.extend(snapshots.iter().filter_map(|(_, s)| s.layer.clone()));
    // Digests without a descriptor: a leased manifest must still keep its
    // layers, so anything that parses as a manifest or index is followed.
    loose.sort();
    for digest in loose {
        mark_loose(store, &digest, &mut marked)?;
    }

    let mut report = PruneReport::default();
    let dir = store.blobs_dir();
    for path in lease::list(&dir)? {
        let Some(digest) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| Digest::from_hex(n).ok())
        else {
            // Not a blob name: not ours to delete; `verify` reports it.
            continue;
        };
        if marked.contains(&digest) {
            report.kept += 1;
            continue;
        }
        let size = match fs_err::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        match fs_err::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path)(e)),
        }
        report.freed_bytes += size;
        report.removed.push(digest);
    }
    if !report.removed.is_empty() {
        fs_err::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(&dir))?;
    }

    // Records of images whose documents are gone describe nothing.
    let images = store.with_index("prune: records", |db| db.read(|r| r.images()))?;
    let stale: Vec<Digest> = images
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| !store.blob_path(d).exists())
        .collect();
    if !stale.is_empty() {
        store.with_index("prune: records", |db| {
            db.write(|w| {
                for d in &stale {
                    w.remove_image(d)?;
                }
                Ok(())
            })
        })?;
    }
    report.records_removed = stale.len();

    // Layer variants are a cache of conversions, not roots: the ones whose
    // blob went are forgotten.
    let variants = store.with_index("prune: variants", |db| db.read(|r| r.layer_variants()))?;
    let gone: Vec<String> = variants
        .into_iter()
        .filter(|(_, v)| !store.blob_path(&v.descriptor.digest).exists())
        .map(|(k, _)| k)
        .collect();
    if !gone.is_empty() {
        store.with_index("prune: variants", |db| {
            db.write(|w| {
                for key in &gone {
                    w.remove_layer_variant(key)?;
                }
                Ok(())
            })
        })?;
    }

    // Where a blob can be fetched from matters while something reaches it.
    let sources = store.with_index("prune: blob sources", |db| {
        db.read(|r| r.all_blob_sources())
    })?;
    let marked_names: HashSet<String> = marked.iter().map(Digest::to_string).collect();
    let unreached: Vec<String> = sources
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !marked_names.contains(k))
        .collect();
    if !unreached.is_empty() {
        store.with_index("prune: blob sources", |db| {
            db.write(|w| {
                for key in &unreached {
                    w.remove_blob_sources(key)?;
                }
                Ok(())
            })
        })?;
    }
    Ok(report)
}

/// Marks `d` and, for a manifest or index, what it references. A missing
/// blob has nothing to keep. A document that cannot be read stops the
/// prune: without its children the sweep would delete what it needs.
fn mark(store: &Store, d: &Descriptor, marked: &mut HashSet<Digest>) -> Result<(), StoreError> {
    if !marked.insert(d.digest.clone()) || !store.contains(&d.digest)? {
        return Ok(());
    }
    if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
        let doc = store.read_image(d)?;
        for child in doc.children() {
            mark(store, child, marked)?;
        }
    }
    Ok(())
}

/// Marks a digest known without its media type: followed if its bytes are
/// a manifest or an index.
fn mark_loose(
    store: &Store,
    digest: &Digest,
    marked: &mut HashSet<Digest>,
) -> Result<(), StoreError> {
    let Some(size) = store.blob_size(digest)? else {
        return Ok(());
    };
    if !marked.insert(digest.clone()) || size > DOCUMENT_LIMIT {
        return Ok(());
    }
    let mut head = [0u8; 1];
    {
        use std::io::Read;
        let mut blob = store.open_blob(digest)?;
        let n = blob
            .read(&mut head)
            .map_err(StoreError::io(store.blob_path(digest)))?;
        if n == 0 || head[0] != b'{' {
            return Ok(());
        }
    }
    let bytes = store.read_blob(digest)?;
    if let Ok(doc) = ImageDocument::parse("", bytes) {
        for child in doc.children() {
            mark(store, child, marked)?;
        }
    }
    Ok(())
}
