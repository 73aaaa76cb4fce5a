//! Leases: the blobs a live process has written or decided to reuse and
//! may be about to reference from a tag, which prune must keep.
//!
//! Each `Store` handle owns at most one lease file, `leases/<pid>-…`,
//! locked for the handle's life (see `lock::create_owned`), listing one
//! digest a line. Prune keeps every digest of a locked lease file and
//! deletes unlocked ones: their process is gone, and with it the promise.
//!
//! Why leases and not a grace period on blob age: a build that writes a
//! layer at minute 1 and tags the image at minute 90 outlives any grace
//! period short enough to be useful, and a blob that a build *reuses*
//! because it already exists has an old mtime. A lease protects both for
//! exactly as long as the process lives, and a crash ends it.
//!
//! The race between "blob appears" and "lease records it" is closed by
//! the gc lock: a commit appends to the lease and renames the blob into
//! place under the gc lock held shared, and prune marks and sweeps under
//! it held exclusive, so prune sees either neither or both.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::Digest;
use crate::store::StoreError;
use crate::store::lock;

#[derive(Debug, Default)]
pub(crate) struct Lease {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    file: Option<(fs_err::File, PathBuf)>,
    held: HashSet<Digest>,
}

impl Lease {
    /// Records `digest` in this process's lease. The caller holds the gc
    /// lock (shared), so no prune is between its mark and its sweep.
    pub(crate) fn add(&self, dir: &Path, digest: &Digest) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.held.contains(digest) {
            return Ok(());
        }
        if state.file.is_none() {
            let (file, path) = lock::create_owned(dir, ".lease")?;
            state.file = Some((file, path));
        }
        let (file, path) = state.file.as_mut().expect("created above");
        // No fsync: after a crash the lease is void anyway.
        file.write_all(format!("{digest}\n").as_bytes())
            .map_err(StoreError::io(path.as_path()))?;
        state.held.insert(digest.clone());
        Ok(())
    }

    /// Ends the lease: its blobs are prunable again unless tagged.
    pub(crate) fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((file, path)) = state.file.take() {
            // Unlinked while still locked, so no cleaner races us.
            let _ = fs_err::remove_file(&path);
            drop(file);
        }
        state.held.clear();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// The digests of every live lease in `dir`; abandoned leases are deleted.
pub(crate) fn live_digests(dir: &Path) -> Result<HashSet<Digest>, StoreError> {
    let mut digests = HashSet::new();
    for path in list(dir)? {
        if lock::remove_if_abandoned(&path)? {
            continue;
        }
        let file = match fs_err::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(StoreError::io(&path))?;
            // A torn last line (the writer died mid-write) is not a digest:
            // but then the lease is dead and the next prune deletes it.
            if let Ok(d) = line.trim().parse::<Digest>() {
                digests.insert(d);
            }
        }
    }
    Ok(digests)
}

/// The files of a directory, sorted; none if it does not exist.
pub(crate) fn list(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs_err::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(StoreError::io(dir))?.path());
    }
    paths.sort();
    Ok(paths)
}
