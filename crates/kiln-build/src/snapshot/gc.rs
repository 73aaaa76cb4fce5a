//! The garbage collector's side: which snapshots exist and who uses them,
//! and removing one.
//!
//! Which snapshots are worth keeping (the base images of recent builds,
//! the results of cached steps) is the collector's policy; this module
//! answers what it needs and refuses to remove a snapshot a live mount
//! stacks.

use std::collections::HashMap;
use std::path::PathBuf;

use kiln_image::{Digest, SnapshotState};

use super::sweep::entries;
use super::{OverlaySnapshotter, SnapshotError, lock, remove_tree};

/// A snapshot in the store's index.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    pub chain_id: Digest,
    pub state: SnapshotState,
    /// The layer blob it was unpacked from or committed as; prune keeps
    /// it while the snapshot is recorded.
    pub layer: Option<Digest>,
    pub dir: PathBuf,
    /// Who mounts it right now (`<pid>-<n>-<key>` of an active dir), if
    /// anybody does.
    pub used_by: Option<String>,
}

impl OverlaySnapshotter {
    /// Every recorded snapshot, by chain ID, with who uses it.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let records = self.store().read(|r| r.snapshots())?;
        let pins = self.pins()?;
        Ok(records
            .into_iter()
            .map(|(chain_id, record)| SnapshotInfo {
                dir: self.record_dir(&chain_id, &record),
                used_by: pins.get(&chain_id).cloned(),
                state: record.state,
                layer: record.layer,
                chain_id,
            })
            .collect())
    }

    /// Removes a snapshot: its directory and its record (after which a
    /// prune may delete its layer blob if nothing else keeps it). Returns
    /// `false` if there was no such snapshot. Fails with
    /// [`SnapshotError::InUse`] if a live process mounts it. A snapshot
    /// above it in a chain stays valid: each directory stands alone.
    pub fn remove(&self, chain_id: &Digest) -> Result<bool, SnapshotError> {
        let held = lock::exclusive(&self.snapshot_lock(chain_id))?;
        let Some(record) = self.store().read(|r| r.snapshot(chain_id))? else {
            return Ok(false);
        };
        // Removing first, pins second; activation does the opposite (see
        // the module docs of `snapshot`), so one of us sees the other.
        let mut removing = record.clone();
        removing.state = SnapshotState::Removing;
        self.store()
            .update(|w| w.put_snapshot(chain_id, &removing))?;
        if let Some(holder) = self.pins()?.remove(chain_id) {
            self.store().update(|w| w.put_snapshot(chain_id, &record))?;
            return Err(SnapshotError::InUse {
                chain_id: chain_id.clone(),
                holder,
            });
        }
        remove_tree(&self.record_dir(chain_id, &record))?;
        remove_tree(&self.snapshot_dir(chain_id))?;
        self.store().update(|w| w.remove_snapshot(chain_id))?;
        lock::unlink(held)?;
        Ok(true)
    }

    /// The snapshots live active dirs and read-only mounts name in their
    /// lock files, each with the first holder found.
    fn pins(&self) -> Result<HashMap<Digest, String>, SnapshotError> {
        let mut pins = HashMap::new();
        for (name, _) in entries(&self.inner.active)? {
            let Some(stem) = name.strip_suffix(".lock") else {
                continue;
            };
            let path = self.inner.active.join(&name);
            match lock::probe(&path)? {
                lock::Probe::Busy => {}
                // Dead (or not yet locked by its creator, who has then not
                // checked anything yet): it pins nothing.
                lock::Probe::Free(_) | lock::Probe::Missing => continue,
            }
            for line in lock::read_note(&path)?.lines() {
                if let Ok(chain_id) = line.parse::<Digest>() {
                    pins.entry(chain_id).or_insert_with(|| stem.to_string());
                }
            }
        }
        Ok(pins)
    }
}
