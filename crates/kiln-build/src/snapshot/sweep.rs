//! Crash recovery: what a killed kiln left under `active/` and `snapshots/`.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use kiln_image::{Digest, SnapshotState};
use rustix::io::Errno;

use super::{
    OverlaySnapshotter, SnapshotError, boot_id, lock, mount, mounts_under, remove_tree, sync_fs,
    unix_now,
};

/// What [`Snapshotter::sweep`](super::Snapshotter::sweep) cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Mounts of dead processes, unmounted.
    pub unmounted: Vec<PathBuf>,
    /// Active dirs of dead processes, removed.
    pub active_removed: Vec<PathBuf>,
    /// Snapshots a dead process left `Unpacking` or `Removing`: their
    /// directories and records are gone, the next prepare unpacks again.
    pub snapshots_removed: Vec<Digest>,
    /// Snapshot directories without a record (a crash between renaming an
    /// upper dir into place and recording it), removed.
    pub orphans_removed: Vec<PathBuf>,
    /// Snapshots an earlier boot left unsynced (their files may be lost),
    /// removed; the next prepare unpacks them again from their blobs.
    pub unsynced_removed: Vec<Digest>,
    /// Snapshots of this boot, unsynced for longer than writeback takes,
    /// flushed (one syncfs) and recorded as synced.
    pub synced: Vec<Digest>,
}

/// Linux writes dirty pages back within 30 s (`dirty_expire_centisecs`);
/// unsynced snapshots older than this are flushed by sweep, which by then
/// costs next to nothing.
const WRITEBACK_GRACE_SECS: u64 = 120;

impl OverlaySnapshotter {
    /// `sweep`: cleans up after processes that died without doing it
    /// themselves (kill -9, OOM kill, power loss): unmounts their mounts,
    /// removes their active dirs and the snapshots they were unpacking.
    /// What a live process (this one included) holds is left alone, so
    /// this is safe while other builds run on the store. Call it at engine
    /// start.
    pub(super) fn sweep_dead(&self) -> Result<SweepReport, SnapshotError> {
        let mut report = SweepReport::default();
        self.sweep_active(&mut report)?;
        self.sweep_snapshots(&mut report)?;
        Ok(report)
    }

    fn sweep_active(&self, report: &mut SweepReport) -> Result<(), SnapshotError> {
        let active = &self.inner.active;
        let mut stems = BTreeSet::new();
        for (name, is_dir) in entries(active)? {
            match name.strip_suffix(".lock") {
                Some(stem) => stems.insert(stem.to_string()),
                None if is_dir => stems.insert(name),
                None => false,
            };
        }
        let mounts = mounts_under(active)?;
        for stem in stems {
            // The lock file is created before the directory and unlinked
            // after it is removed: no lock file means no live owner either.
            let held = match lock::probe(&lock::lock_path(active, &stem))? {
                lock::Probe::Busy => continue,
                lock::Probe::Free(held) => Some(held),
                lock::Probe::Missing => None,
            };
            let dir = active.join(&stem);
            // Deepest first, and every one, before anything is deleted:
            // never remove files through a mount.
            for point in mounts.iter().filter(|p| p.starts_with(&dir)) {
                if unmount_if_mounted(point)? {
                    report.unmounted.push(point.clone());
                }
            }
            if dir.exists() {
                remove_tree(&dir)?;
                report.active_removed.push(dir);
            }
            if let Some(held) = held {
                lock::unlink(held)?;
            }
        }
        Ok(())
    }

    fn sweep_snapshots(&self, report: &mut SweepReport) -> Result<(), SnapshotError> {
        let records = self.store().read(|r| r.snapshots())?;
        let mut referenced = HashSet::new();
        let mut to_sync = Vec::new();
        for (chain_id, record) in &records {
            referenced.insert(self.record_dir(chain_id, record));
            if record.state == SnapshotState::Ready {
                match &record.unsynced {
                    Some(u) if u.boot_id != boot_id() => {
                        self.remove_unsynced(chain_id, report)?;
                    }
                    Some(u) if unix_now().saturating_sub(u.since) > WRITEBACK_GRACE_SECS => {
                        to_sync.push((chain_id.clone(), u.clone()));
                    }
                    _ => {}
                }
                continue;
            }
            // Held: a live process is unpacking or removing it.
            let Some(held) = lock::try_exclusive(&self.snapshot_lock(chain_id))? else {
                continue;
            };
            let now = self.store().read(|r| r.snapshot(chain_id))?;
            if let Some(record) = now.filter(|r| r.state != SnapshotState::Ready) {
                remove_tree(&self.record_dir(chain_id, &record))?;
                remove_tree(&self.snapshot_dir(chain_id))?;
                self.store().update(|w| w.remove_snapshot(chain_id))?;
                report.snapshots_removed.push(chain_id.clone());
                lock::unlink(held)?;
            }
        }

        for (name, is_dir) in entries(&self.inner.snapshots)? {
            let dir = self.inner.snapshots.join(&name);
            // Only directories named as kiln names them are kiln's.
            let Ok(chain_id) = Digest::from_hex(&name) else {
                continue;
            };
            if !is_dir || referenced.contains(&dir) {
                continue;
            }
            let Some(held) = lock::try_exclusive(&self.snapshot_lock(&chain_id))? else {
                continue;
            };
            // Recorded since we listed the records (a commit finishing)?
            if self.store().read(|r| r.snapshot(&chain_id))?.is_some() {
                continue;
            }
            remove_tree(&dir)?;
            report.orphans_removed.push(dir);
            lock::unlink(held)?;
        }

        if !to_sync.is_empty() {
            sync_fs(&self.inner.snapshots)?;
            let synced = self.store().update(|w| {
                let mut synced = Vec::new();
                for (chain_id, stamp) in &to_sync {
                    // Only what that flush covered: not a record rewritten since.
                    if let Some(mut r) = w.snapshot(chain_id)?
                        && r.unsynced.as_ref() == Some(stamp)
                    {
                        r.unsynced = None;
                        w.put_snapshot(chain_id, &r)?;
                        synced.push(chain_id.clone());
                    }
                }
                Ok(synced)
            })?;
            report.synced = synced;
        }
        Ok(())
    }

    /// Removes a snapshot an earlier boot left unsynced. No process of
    /// this boot uses it ([`OverlaySnapshotter::usable`] refuses it), but
    /// one may be making it again right now: then its lock is held and it
    /// is left.
    fn remove_unsynced(
        &self,
        chain_id: &Digest,
        report: &mut SweepReport,
    ) -> Result<(), SnapshotError> {
        let Some(held) = lock::try_exclusive(&self.snapshot_lock(chain_id))? else {
            return Ok(());
        };
        let now = self.store().read(|r| r.snapshot(chain_id))?;
        let stale = now.filter(|r| {
            r.state == SnapshotState::Ready
                && r.unsynced.as_ref().is_some_and(|u| u.boot_id != boot_id())
        });
        if let Some(record) = stale {
            remove_tree(&self.record_dir(chain_id, &record))?;
            remove_tree(&self.snapshot_dir(chain_id))?;
            self.store().update(|w| w.remove_snapshot(chain_id))?;
            report.unsynced_removed.push(chain_id.clone());
            lock::unlink(held)?;
        }
        Ok(())
    }
}

/// Unmounts `point`; `false` if it was no longer mounted (another sweep
/// got there first).
fn unmount_if_mounted(point: &Path) -> Result<bool, SnapshotError> {
    match mount::unmount_or_detach(point) {
        Ok(()) => Ok(true),
        Err(SnapshotError::Unmount { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(e) if e == Errno::INVAL.raw_os_error() || e == Errno::NOENT.raw_os_error()
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The names in `dir` and whether each is a directory (not following
/// symlinks).
pub(super) fn entries(dir: &Path) -> Result<Vec<(String, bool)>, SnapshotError> {
    let list = match fs_err::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SnapshotError::io("reading", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in list {
        let entry = entry.map_err(SnapshotError::io("reading", dir))?;
        let is_dir = entry
            .file_type()
            .map_err(SnapshotError::io("inspecting", entry.path()))?
            .is_dir();
        // Names kiln did not write (not UTF-8) are not kiln's to touch.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, is_dir));
        }
    }
    out.sort();
    Ok(out)
}
