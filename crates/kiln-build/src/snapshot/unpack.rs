//! Preparing a chain: every missing layer unpacked into its own directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_image::compress;
use kiln_image::layer::{self, ApplyStats, ExtractOptions, Whiteouts};
use kiln_image::media::Compression;
use kiln_image::{Digest, SnapshotState, Store};

use super::{
    Layer, OverlaySnapshotter, Snapshot, SnapshotError, chain_ids, lock, record, remove_tree,
};

/// What [`Snapshotter::prepare_with`](super::Snapshotter::prepare_with)
/// reports, from the thread doing the work. Layers found ready report
/// nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum UnpackEvent<'a> {
    /// This call starts unpacking a layer.
    Started {
        chain_id: &'a Digest,
        layer: &'a Layer,
    },
    /// It finished, and the snapshot is ready.
    Finished {
        chain_id: &'a Digest,
        layer: &'a Layer,
        stats: &'a ApplyStats,
    },
}

impl OverlaySnapshotter {
    /// `prepare`: makes sure every layer of a stack (bottom first) is
    /// unpacked, and returns their snapshots, bottom first.
    ///
    /// Layers already unpacked cost one index read. Missing ones are
    /// unpacked from their blob in the store, several at once: a layer's
    /// directory does not depend on the layers below it (whiteouts are kept
    /// as overlayfs whiteouts, not carried out), only its chain ID does.
    /// Each blob's uncompressed digest is checked against its diffID.
    /// Another process or thread preparing the same layer is waited for,
    /// not duplicated.
    ///
    /// The snapshots are not held: `activate` checks that they are still
    /// there (a removal in between makes it fail with
    /// [`SnapshotError::NotReady`], and preparing again brings them back).
    pub(super) fn unpack_missing(
        &self,
        layers: &[Layer],
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<Vec<Snapshot>, SnapshotError> {
        let chain = chain_ids(layers.iter().map(|l| &l.diff_id));
        let records = self.store().read(|r| {
            chain
                .iter()
                .map(|c| r.snapshot(c))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut dirs: Vec<Option<PathBuf>> = chain
            .iter()
            .zip(&records)
            .map(|(c, r)| self.usable(c, r.as_ref()))
            .collect();
        let missing: Vec<usize> = (0..layers.len()).filter(|&i| dirs[i].is_none()).collect();
        let made = parallel(&missing, |&i| self.ensure(&chain[i], &layers[i], on_event))?;
        for (i, dir) in missing.into_iter().zip(made) {
            dirs[i] = Some(dir);
        }
        Ok(chain
            .into_iter()
            .zip(layers)
            .zip(dirs)
            .map(|((chain_id, layer), dir)| Snapshot {
                chain_id,
                diff_id: layer.diff_id.clone(),
                dir: dir.expect("every missing layer was unpacked"),
            })
            .collect())
    }

    /// Unpacks one layer unless someone did while we waited for its lock.
    fn ensure(
        &self,
        chain_id: &Digest,
        layer: &Layer,
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<PathBuf, SnapshotError> {
        let held = lock::exclusive(&self.snapshot_lock(chain_id))?;
        let existing = self.store().read(|r| r.snapshot(chain_id))?;
        if let Some(dir) = self.usable(chain_id, existing.as_ref()) {
            return Ok(dir);
        }
        // We hold the lock, so whatever is there is a dead process's.
        let dir = self.snapshot_dir(chain_id);
        if let Some(old) = &existing {
            remove_tree(&self.record_dir(chain_id, old))?;
        }
        remove_tree(&dir)?;
        let blob = Some(layer.blob.digest.clone());
        self.store().update(|w| {
            w.put_snapshot(
                chain_id,
                &record(chain_id, SnapshotState::Unpacking, blob.clone()),
            )
        })?;
        on_event(UnpackEvent::Started { chain_id, layer });
        let unpacked =
            make_dir(&dir).and_then(|()| unpack(self.store(), layer, &dir, self.whiteouts()));
        let stats = match unpacked {
            Ok(stats) => stats,
            Err(e) => {
                // Best effort: a crash here is what sweep is for.
                let _ = remove_tree(&dir);
                let _ = self.store().update(|w| w.remove_snapshot(chain_id));
                return Err(e);
            }
        };
        self.store()
            .update(|w| w.put_snapshot(chain_id, &record(chain_id, SnapshotState::Ready, blob)))?;
        drop(held);
        on_event(UnpackEvent::Finished {
            chain_id,
            layer,
            stats: &stats,
        });
        Ok(dir)
    }
}

/// Extracts `layer`'s blob from `store` into `dir`, whiteouts kept as
/// overlayfs's or carried out as `whiteouts` says, and checks the
/// uncompressed bytes against the layer's diffID.
pub(crate) fn unpack(
    store: &Store,
    layer: &Layer,
    dir: &Path,
    whiteouts: Whiteouts,
) -> Result<ApplyStats, SnapshotError> {
    let digest = &layer.blob.digest;
    let compression = Compression::from_media_type(&layer.blob.media_type).ok_or_else(|| {
        SnapshotError::UnsupportedMediaType {
            blob: digest.clone(),
            media_type: layer.blob.media_type.clone(),
        }
    })?;
    let unpack_error = |source| SnapshotError::Unpack {
        blob: digest.clone(),
        dir: dir.to_path_buf(),
        source,
    };
    let extract = |reader: &mut (dyn std::io::Read + Send)| {
        let reader = compress::decompress(reader, compression)?;
        layer::extract_hashed(reader, dir, &ExtractOptions::new(whiteouts))
    };
    // A blob still in its registry is unpacked as it downloads. If the
    // download starts over after bytes were unpacked (another source, a
    // server that cannot resume), the directory is emptied and the blob,
    // stored by then, unpacked again.
    let mut blob = store.open_blob_following(digest)?;
    let (stats, actual) = match extract(&mut blob) {
        Err(_) if blob.broken() => {
            drop(blob);
            remove_tree(dir)?;
            make_dir(dir)?;
            let mut stored = store.open_blob(digest)?;
            extract(&mut stored).map_err(unpack_error)?
        }
        extracted => extracted.map_err(unpack_error)?,
    };
    if actual != layer.diff_id {
        return Err(SnapshotError::DiffIdMismatch {
            blob: digest.clone(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    Ok(stats)
}

/// A snapshot's root: 0755 as an image root is, unless the layer has a
/// `./` entry saying otherwise.
fn make_dir(dir: &Path) -> Result<(), SnapshotError> {
    use rustix::fs::Mode;
    let mode = Mode::from_raw_mode(0o755);
    rustix::fs::mkdir(dir, mode).map_err(SnapshotError::errno("creating", dir))?;
    // mkdir's mode went through the umask.
    rustix::fs::chmod(dir, mode).map_err(SnapshotError::errno("changing the mode of", dir))
}

/// Runs `f` on every item on up to one thread per core; returns the
/// results in order, or the error of the first item that failed (the
/// others finish the item they are on and take no more).
pub(super) fn parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, SnapshotError> + Sync,
) -> Result<Vec<R>, SnapshotError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R, SnapshotError>>>> =
        Mutex::new(items.iter().map(|_| None).collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(items.len());
    let mut first_error = None;
    for r in results {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            // Not started after a failure.
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_order_and_reports_the_first_error() {
        let items: Vec<usize> = (0..50).collect();
        let out = parallel(&items, |&i| Ok(i * 2)).unwrap();
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        let e = parallel(&items, |&i| {
            if i == 7 {
                Err(SnapshotError::OptionsTooLong {
                    target: PathBuf::from("/x"),
                    len: i,
                    limit: 0,
                })
            } else {
                Ok(i)
            }
        })
        .unwrap_err();
        assert!(matches!(e, SnapshotError::OptionsTooLong { len: 7, .. }));
    }
}
