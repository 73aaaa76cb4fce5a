//! Mounted snapshots: the writable root of a step, committed into a layer
//! and a new snapshot, and read-only views of a finished stage.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use kiln_image::compress::{BlobWriter, CompressOptions};
use kiln_image::document::Descriptor;
use kiln_image::layer::{self, LayerStats, WriteOptions};
use kiln_image::media::{Compression, Format};
use kiln_image::{Digest, SnapshotState};
use rustix::fs::{Gid, Mode, Uid};

use super::mount::{self, Overlay};
use super::{
    ActiveSnapshot, OverlaySnapshotter, PendingCommit, ReadOnlyMount, Sealed, Snapshot,
    SnapshotError, chain_id, check_chain, diff, lock, mounts_under, record, remove_tree,
};
use crate::stop::{Stoppable, stopped};

/// How [`ActiveSnapshot::commit`] writes the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitOptions {
    pub compression: Compression,
    /// Codec level; `None` for the codec's default.
    pub level: Option<i32>,
    /// OCI or Docker media type for the layer.
    pub format: Format,
}

impl Default for CommitOptions {
    /// Gzip at its default level, OCI media types. Times are the files'
    /// own: `SOURCE_DATE_EPOCH` clamps them at export, when asked
    /// (`rewrite-timestamp`), never in the layer the cache keeps.
    fn default() -> CommitOptions {
        CommitOptions {
            compression: Compression::Gzip,
            level: None,
            format: Format::Oci,
        }
    }
}

/// What a step left.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed {
    /// The layer it made; `None` if it changed nothing (the image config
    /// then records an `empty_layer` history entry).
    pub layer: Option<CommittedLayer>,
    /// The snapshots to build the next step on, bottom first: the parents
    /// and, if there is a layer, its snapshot.
    pub chain: Vec<Snapshot>,
}

/// A layer made by a step, in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommittedLayer {
    /// The blob, for the manifest.
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar, for the config's rootfs.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// What went into the tar.
    pub stats: LayerStats,
    /// The step's upper dir, now a snapshot (also the last of `chain`).
    pub snapshot: Snapshot,
    /// Where the commit's time went.
    pub timings: CommitTimings,
}

/// The phases of a commit, for reports of where a slow one spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitTimings {
    /// Comparing the upper dir with the layers below.
    pub diff: Duration,
    /// The tar stream through both hashers and the compressor into the
    /// blob file.
    pub archive: Duration,
    /// Making the blob durable (fsync) and naming it in the store.
    pub store: Duration,
    /// Making the upper dir a snapshot.
    pub snapshot: Duration,
}

impl CommitTimings {
    pub fn total(&self) -> Duration {
        self.diff + self.archive + self.store + self.snapshot
    }
}

/// A layer written by [`PendingCommit::write`], to be made a snapshot by
/// [`PendingCommit::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    info: kiln_image::compress::LayerBlob,
    stats: LayerStats,
    timings: CommitTimings,
}

/// A writable overlay of some snapshots: the root filesystem of one step.
/// Dropping it discards it (unmounts and removes it, errors ignored).
#[derive(Debug)]
pub(super) struct OverlayActive {
    snapshotter: OverlaySnapshotter,
    parents: Vec<Snapshot>,
    /// A sealed step between `parents` and this root, its upper dir the
    /// topmost lower; held so that its directories outlive this mount.
    below: Option<Arc<OverlayPending>>,
    key: String,
    upper: PathBuf,
    slot: Slot,
}

/// A sealed step (see [`Sealed::Pending`]): its upper dir, unmounted and
/// known to hold a change, in its active dir, whose lock it keeps.
#[derive(Debug)]
pub(super) struct OverlayPending {
    snapshotter: OverlaySnapshotter,
    upper: PathBuf,
    /// Where its files are: `upper` until [`PendingCommit::finish`] moves
    /// them into their snapshot, then the snapshot's dir. The roots and
    /// diffs of the steps stacked on it read them under a read guard:
    /// `finish` waits for a diff above to end before it moves them.
    files: RwLock<PathBuf>,
    /// The sealed step it was stacked on, if that one was still pending:
    /// its files are lower dirs of this one's (and kept while it lives).
    below: Option<Arc<OverlayPending>>,
    opts: CommitOptions,
    /// The seal's look for a change.
    diff: Duration,
    /// Removed (with what is left of the upper dir) when the last
    /// reference goes.
    _slot: Slot,
}

impl OverlaySnapshotter {
    /// `activate`: mounts `parents` (bottom first) with a fresh upper dir
    /// over them. `key` names the step, for people reading `active/` and
    /// for messages.
    pub(super) fn mount_active(
        &self,
        parents: &[Snapshot],
        below: Option<Arc<OverlayPending>>,
        key: &str,
    ) -> Result<OverlayActive, SnapshotError> {
        check_chain(parents)?;
        // The pending step's own active dir (locked by this process) keeps
        // its upper dir; only the snapshots need pins.
        let mut slot = Slot::create(self, key, parents)?;
        self.check_ready(parents)?;
        let upper = slot.dir.join("upper");
        let work = slot.dir.join("work");
        for d in [&upper, &work, &slot.root] {
            make_dir(d)?;
        }
        // FROM scratch still needs one lower dir: an empty one.
        let mut lowers = lower_dirs(&pending_files(below.as_deref()), parents);
        copy_root_metadata(lowers.first().map(PathBuf::as_path), &upper)?;
        if lowers.is_empty() {
            lowers.push(slot.empty_dir()?);
        }
        let overlay = Overlay {
            lowers,
            upper: Some((upper.clone(), work)),
            userxattr: self.inner.userxattr,
        };
        mount::mount(&overlay, &slot.root)?;
        slot.mounted = true;
        Ok(OverlayActive {
            snapshotter: self.clone(),
            parents: parents.to_vec(),
            below,
            key: key.to_string(),
            upper,
            slot,
        })
    }

    /// `mount_readonly`: mounts `chain` (bottom first) read-only.
    /// Unmounted and removed when dropped. An empty chain (a scratch stage)
    /// is an empty directory.
    pub(super) fn mount_view(&self, chain: &[Snapshot]) -> Result<OverlayView, SnapshotError> {
        check_chain(chain)?;
        let mut slot = Slot::create(self, "ro", chain)?;
        self.check_ready(chain)?;
        make_dir(&slot.root)?;
        if !chain.is_empty() {
            let mut lowers = lower_dirs(&[], chain);
            // Without an upper dir overlayfs wants two lower dirs; an empty
            // one at the bottom still lets it interpret the whiteouts.
            if lowers.len() == 1 {
                lowers.push(slot.empty_dir()?);
            }
            let overlay = Overlay {
                lowers,
                upper: None,
                userxattr: self.inner.userxattr,
            };
            mount::mount(&overlay, &slot.root)?;
            slot.mounted = true;
        }
        Ok(OverlayView { slot })
    }

    /// Fails unless every snapshot is `Ready`. Called after the caller's
    /// lock file names them, so a removal either sees the pin or is seen.
    fn check_ready(&self, snapshots: &[Snapshot]) -> Result<(), SnapshotError> {
        let records = self.store().read(|r| {
            snapshots
                .iter()
                .map(|s| r.snapshot(&s.chain_id))
                .collect::<Result<Vec<_>, _>>()
        })?;
        for (s, r) in snapshots.iter().zip(records) {
            if self.usable(&s.chain_id, r.as_ref()).is_none() {
                return Err(SnapshotError::NotReady {
                    chain_id: s.chain_id.clone(),
                    state: match r {
                        None => "not recorded".to_string(),
                        Some(r) if r.state == SnapshotState::Ready => {
                            "directory missing".to_string()
                        }
                        Some(r) => format!("{:?}", r.state).to_lowercase(),
                    },
                });
            }
        }
        Ok(())
    }

    /// Makes the upper dir `upper` the snapshot `chain_id`, unless another
    /// step made that very snapshot first (then `upper` is left to be
    /// removed with its active dir).
    fn adopt(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        upper: &Path,
        blob: &Digest,
    ) -> Result<Snapshot, SnapshotError> {
        let held = lock::exclusive(&self.snapshot_lock(chain_id))?;
        let existing = self.store().read(|r| r.snapshot(chain_id))?;
        let dir = match self.usable(chain_id, existing.as_ref()) {
            Some(dir) => dir,
            None => {
                let dir = self.snapshot_dir(chain_id);
                if let Some(old) = &existing {
                    remove_tree(&self.record_dir(chain_id, old))?;
                }
                remove_tree(&dir)?;
                fs_err::rename(upper, &dir).map_err(SnapshotError::io("renaming", upper))?;
                let rec = record(chain_id, SnapshotState::Ready, Some(blob.clone()));
                self.store().update(|w| w.put_snapshot(chain_id, &rec))?;
                dir
            }
        };
        drop(held);
        Ok(Snapshot {
            chain_id: chain_id.clone(),
            diff_id: diff_id.clone(),
            dir,
        })
    }
}

impl ActiveSnapshot for OverlayActive {
    /// The mounted root filesystem.
    fn root(&self) -> &Path {
        &self.slot.root
    }

    /// The snapshots mounted below, bottom first.
    fn parents(&self) -> &[Snapshot] {
        &self.parents
    }

    fn key(&self) -> &str {
        &self.key
    }

    /// Ends the step: unmounts the root, writes what changed as a layer
    /// blob into the store (streamed: tar → diffID → compressor → digest →
    /// blob, no temp tar) and makes the upper dir a snapshot without
    /// copying or unpacking anything.
    ///
    /// Directories overlayfs copied up without a change (the RUN
    /// sandbox's mount-point stubs do that to /etc) are not part of the
    /// layer (see BuildKit's overlay differ). If nothing changed, there is
    /// no layer and the chain stays the parents.
    fn commit(mut self: Box<Self>, opts: &CommitOptions) -> Result<Committed, SnapshotError> {
        // Either way `self` is dropped here, which removes the active dir.
        // Failing to remove it does not undo a commit: the layer and the
        // snapshot exist, and the next sweep removes what is left.
        self.commit_inner(opts)
    }

    /// Unmounts the root and finds whether anything changed, up to the
    /// first change; the rest of the diff and the layer are left to the
    /// [`OverlayPending`] returned, whose upper dir stays in this active
    /// dir (locked, so a sweep leaves it) until it is finished.
    fn seal(mut self: Box<Self>, opts: &CommitOptions) -> Result<Sealed, SnapshotError> {
        let started = Instant::now();
        self.slot.unmount()?;
        if !diff::changed(&self.upper, &self.lowers())? {
            return Ok(Sealed::Unchanged);
        }
        let this = *self;
        Ok(Sealed::Pending(Arc::new(OverlayPending {
            snapshotter: this.snapshotter,
            files: RwLock::new(this.upper.clone()),
            upper: this.upper,
            below: this.below,
            opts: opts.clone(),
            diff: started.elapsed(),
            _slot: this.slot,
        })))
    }

    /// Throws the step's changes away: unmounts and removes everything.
    fn discard(mut self: Box<Self>) -> Result<(), SnapshotError> {
        self.slot.finish()
    }
}

impl OverlayActive {
    /// Unmounts the root (nothing may change the upper dir while it is
    /// archived) and compares the upper dir with the layers below: the
    /// names to leave out of the layer, or `None` if nothing changed.
    fn unmount_and_diff(
        &mut self,
    ) -> Result<Option<std::collections::HashSet<Vec<u8>>>, SnapshotError> {
        self.slot.unmount()?;
        let diff = diff::diff(&self.upper, &self.lowers())?;
        Ok((!diff.empty).then_some(diff.exclude))
    }

    /// The dirs the root was mounted over, topmost first.
    fn lowers(&self) -> Vec<PathBuf> {
        lower_dirs(&pending_files(self.below.as_deref()), &self.parents)
    }

    fn commit_inner(&mut self, opts: &CommitOptions) -> Result<Committed, SnapshotError> {
        if self.below.is_some() {
            return Err(SnapshotError::AbovePending {
                key: self.key.clone(),
            });
        }
        let upper = self.upper.clone();
        let mut timings = CommitTimings::default();
        let mut clock = Instant::now();
        let mut lap = || {
            let now = Instant::now();
            std::mem::replace(&mut clock, now).elapsed()
        };
        let exclude = self.unmount_and_diff()?;
        timings.diff = lap();
        let Some(exclude) = exclude else {
            return Ok(Committed {
                layer: None,
                chain: self.parents.clone(),
            });
        };

        let store = self.snapshotter.store();
        let (info, stats) = write_layer(store, &upper, Arc::new(exclude), opts, None, || {
            timings.archive = lap();
        })?;
        timings.store = lap();

        let written = WrittenLayer {
            info,
            stats,
            timings,
        };
        self.snapshotter
            .adopt_written(written, &upper, &self.parents, opts.format)
    }
}

impl OverlaySnapshotter {
    /// Makes the upper dir `upper`, written as `written`, a snapshot on
    /// `parents`: the end of every commit.
    fn adopt_written(
        &self,
        mut written: WrittenLayer,
        upper: &Path,
        parents: &[Snapshot],
        format: Format,
    ) -> Result<Committed, SnapshotError> {
        let started = Instant::now();
        let info = written.info;
        let below = parents.last().map(Snapshot::chain_id);
        let chain_id = chain_id(below, &info.diff_id);
        let snapshot = self.adopt(&chain_id, &info.diff_id, upper, &info.digest)?;
        written.timings.snapshot = started.elapsed();
        let mut chain = parents.to_vec();
        chain.push(snapshot.clone());
        let media_type = info.compression.layer_media_type(format);
        Ok(Committed {
            layer: Some(CommittedLayer {
                descriptor: Descriptor::new(media_type, info.digest, info.size),
                diff_id: info.diff_id,
                uncompressed_size: info.uncompressed_size,
                stats: written.stats,
                snapshot,
                timings: written.timings,
            }),
            chain,
        })
    }
}

impl PendingCommit for OverlayPending {
    fn activate_above(
        self: Arc<Self>,
        parents: &[Snapshot],
        key: &str,
    ) -> Result<Box<dyn ActiveSnapshot>, SnapshotError> {
        let snapshotter = self.snapshotter.clone();
        Ok(Box::new(snapshotter.mount_active(
            parents,
            Some(self),
            key,
        )?))
    }

    /// The diff against what is below: the sealed steps under it still
    /// pending (their files held in place for the diff's length) and
    /// `parents`; then the upper dir through tar, diffID, compressor and
    /// digest into a blob in the store, as a serial commit writes it: the
    /// same bytes.
    fn write(
        &self,
        parents: &[Snapshot],
        stop: &AtomicBool,
    ) -> Result<WrittenLayer, SnapshotError> {
        let started = Instant::now();
        let exclude = {
            let below = pending_files(self.below.as_deref());
            diff::diff(&self.upper, &lower_dirs(&below, parents))?.exclude
        };
        let mut timings = CommitTimings {
            diff: self.diff + started.elapsed(),
            ..CommitTimings::default()
        };
        let started = Instant::now();
        let mut archived = None;
        let (info, stats) = write_layer(
            self.snapshotter.store(),
            &self.upper,
            Arc::new(exclude),
            &self.opts,
            Some(stop),
            || archived = Some(started.elapsed()),
        )?;
        timings.archive = archived.unwrap_or_default();
        timings.store = started.elapsed() - timings.archive;
        Ok(WrittenLayer {
            info,
            stats,
            timings,
        })
    }

    fn finish(
        &self,
        written: WrittenLayer,
        parents: &[Snapshot],
    ) -> Result<Committed, SnapshotError> {
        check_chain(parents)?;
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        let committed =
            self.snapshotter
                .adopt_written(written, &self.upper, parents, self.opts.format)?;
        if let Some(layer) = &committed.layer {
            *files = layer.snapshot.dir.clone();
        }
        Ok(committed)
    }
}

/// The files of the sealed step `below` and of each pending one under it,
/// topmost first, held where they are while the guards live.
fn pending_files(below: Option<&OverlayPending>) -> Vec<RwLockReadGuard<'_, PathBuf>> {
    std::iter::successors(below, |p| p.below.as_deref())
        .map(|p| p.files.read().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// The lower dirs of a root on `parents` (bottom first) and the sealed
/// steps `below` them (as [`pending_files`] gives them), topmost first, as
/// overlayfs lists them and the differ looks names up. A sealed step
/// finished since is also one of `parents`: listed once, where it is.
fn lower_dirs(below: &[RwLockReadGuard<'_, PathBuf>], parents: &[Snapshot]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = below.iter().map(|files| PathBuf::clone(files)).collect();
    for s in parents.iter().rev() {
        if !dirs.contains(&s.dir) {
            dirs.push(s.dir.clone());
        }
    }
    dirs
}

/// Writes the upper dir `upper` (less the `exclude`d names that changed
/// nothing) as a layer blob into `store`: streamed, tar → diffID →
/// compressor → digest → blob, no temp tar. `archived` is called when the
/// blob is written and before it is committed to the store. Every
/// snapshotter's commit ends here.
pub(crate) fn write_layer(
    store: &kiln_image::Store,
    upper: &Path,
    exclude: Arc<std::collections::HashSet<Vec<u8>>>,
    opts: &CommitOptions,
    stop: Option<&AtomicBool>,
    archived: impl FnOnce(),
) -> Result<(kiln_image::compress::LayerBlob, LayerStats), SnapshotError> {
    let mut compress = CompressOptions::new(opts.compression);
    if let Some(level) = opts.level {
        compress = compress.level(level);
    }
    let write_error = |source| SnapshotError::WriteLayer {
        upper: upper.to_path_buf(),
        source,
    };
    let mut blob = BlobWriter::new(store.ingest()?, &compress).map_err(write_error)?;
    let mut write = WriteOptions::default();
    write.exclude = exclude;
    let mut to = Stoppable {
        inner: &mut blob,
        stop,
    };
    let stats = layer::write(upper, &mut to, &write).map_err(|source| {
        if stopped(stop) {
            SnapshotError::Stopped {
                upper: upper.to_path_buf(),
            }
        } else {
            write_error(source)
        }
    })?;
    let (ingest, info) = blob.finish().map_err(write_error)?;
    archived();
    let stored = ingest.commit()?;
    debug_assert_eq!(stored.digest, info.digest);
    Ok((info, stats))
}

/// A read-only overlay of a chain, unmounted and removed when dropped.
#[derive(Debug)]
pub(super) struct OverlayView {
    slot: Slot,
}

impl ReadOnlyMount for OverlayView {
    /// The root of the files.
    fn root(&self) -> &Path {
        &self.slot.root
    }

    /// Unmounts and removes it, reporting errors (dropping ignores them).
    fn release(mut self: Box<Self>) -> Result<(), SnapshotError> {
        self.slot.finish()
    }
}

/// A directory under `active/` with its owner lock, and maybe a mount.
#[derive(Debug)]
struct Slot {
    /// Held for the slot's life; says which snapshots it mounts.
    lock: Option<lock::Held>,
    dir: PathBuf,
    root: PathBuf,
    mounted: bool,
}

impl Slot {
    /// Creates the lock file (with the pins written) and then the
    /// directory: a sweep that finds a directory without a live lock knows
    /// its owner is gone.
    fn create(
        snapshotter: &OverlaySnapshotter,
        key: &str,
        pins: &[Snapshot],
    ) -> Result<Slot, SnapshotError> {
        let active = &snapshotter.inner.active;
        let (mut held, stem) = lock::create_owned(active, &label(key))?;
        let mut note = format!("pid {}\nkey {key:?}\n", std::process::id());
        for s in pins {
            note.push_str(&format!("{}\n", s.chain_id));
        }
        lock::write_note(&mut held, &note)?;
        let dir = active.join(stem);
        let slot = Slot {
            lock: Some(held),
            root: dir.join("root"),
            dir,
            mounted: false,
        };
        make_dir(&slot.dir)?;
        Ok(slot)
    }

    /// An empty directory: the lowest layer of a mount that has no other.
    fn empty_dir(&self) -> Result<PathBuf, SnapshotError> {
        let empty = self.dir.join("empty");
        make_dir(&empty)?;
        Ok(empty)
    }

    /// Unmounts the root, failing if it is busy: a process left over
    /// from the step could still be writing.
    fn unmount(&mut self) -> Result<(), SnapshotError> {
        if self.mounted {
            mount::unmount(&self.root)?;
            self.mounted = false;
        }
        Ok(())
    }

    /// Unmounts (detaching if busy) everything under the directory and
    /// removes it, then the lock file. Nothing is deleted through a mount.
    fn finish(&mut self) -> Result<(), SnapshotError> {
        if self.mounted {
            mount::unmount_or_detach(&self.root)?;
            self.mounted = false;
        }
        for point in mounts_under(&self.dir)? {
            mount::unmount_or_detach(&point)?;
        }
        remove_tree(&self.dir)?;
        if let Some(held) = self.lock.take() {
            lock::unlink(held)?;
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.lock.is_some() {
            // If this fails, the lock is released anyway as the file
            // closes, and the next sweep finishes the job.
            let _ = self.finish();
        }
    }
}

/// The part of a key that goes into a directory name: letters, digits,
/// `.`, `_`, `-`, at most 48 of them.
fn label(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, 'k');
    }
    out
}

fn make_dir(dir: &Path) -> Result<(), SnapshotError> {
    rustix::fs::mkdir(dir, Mode::from_raw_mode(0o700))
        .map_err(SnapshotError::errno("creating", dir))
}

/// Gives the upper dir the mode and owner of the topmost lower root (0755
/// root:root for FROM scratch): overlayfs shows the upper root's own
/// attributes as `/` (overlayfs.rst, "Upper and Lower"), and a 0700 root
/// would lock every non-root user of the step out.
fn copy_root_metadata(from: Option<&Path>, upper: &Path) -> Result<(), SnapshotError> {
    let (mode, uid, gid) = match from {
        Some(dir) => {
            let st = rustix::fs::stat(dir).map_err(SnapshotError::errno("inspecting", dir))?;
            (st.st_mode & 0o7777, st.st_uid, st.st_gid)
        }
        None => (0o755, 0, 0),
    };
    rustix::fs::chown(upper, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(SnapshotError::errno("changing the owner of", upper))?;
    rustix::fs::chmod(upper, Mode::from_raw_mode(mode))
        .map_err(SnapshotError::errno("changing the mode of", upper))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_safe_names() {
        assert_eq!(label("stage-0/step 3"), "stage-0_step_3");
        assert_eq!(label(""), "k");
        assert_eq!(label("../x"), "k.._x");
        assert_eq!(label(&"a".repeat(100)).len(), 48);
    }
}
