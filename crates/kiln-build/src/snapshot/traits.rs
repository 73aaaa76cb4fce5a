//! What the engine asks of a snapshotter, whatever keeps the files: the
//! overlay snapshotter (the rest of this module) for builds, a fake made
//! of plain directories for tests (`fake.rs`, with the `testing` feature).
//!
//! A snapshotter makes the root filesystem of each step from the layers
//! below it, and turns what the step changed into a layer. Every backend
//! passes one suite of tests (`crate::testing::suite`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::active::{CommitOptions, Committed, WrittenLayer};
use super::sweep::SweepReport;
use super::unpack::UnpackEvent;
use super::{Layer, Snapshot, SnapshotError};

/// Makes step roots from layers; one per store, shared by the threads of a
/// build.
pub trait Snapshotter: Send + Sync + fmt::Debug {
    /// Makes sure every layer of a stack (bottom first) is unpacked, and
    /// returns their snapshots, bottom first (what
    /// [`activate`](Snapshotter::activate) takes). Each blob's uncompressed
    /// digest is checked against its diffID. Layers already unpacked cost
    /// nothing; `on_event` hears about the others, from the thread doing
    /// the work.
    fn prepare_with(
        &self,
        layers: &[Layer],
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<Vec<Snapshot>, SnapshotError>;

    /// [`prepare_with`](Snapshotter::prepare_with), telling nobody.
    fn prepare(&self, layers: &[Layer]) -> Result<Vec<Snapshot>, SnapshotError> {
        self.prepare_with(layers, &|_| {})
    }

    /// A writable root showing `parents` (bottom first, as
    /// [`prepare`](Snapshotter::prepare) returns them, each on the one
    /// before: [`SnapshotError::BrokenChain`] otherwise), for one step.
    /// `key` names the step, for people and messages.
    fn activate(
        &self,
        parents: &[Snapshot],
        key: &str,
    ) -> Result<Box<dyn ActiveSnapshot>, SnapshotError>;

    /// The files of `chain` (bottom first), read-only: a finished stage for
    /// `COPY --from` and `RUN --mount=from=`. An empty chain (a scratch
    /// stage) is an empty directory.
    fn mount_readonly(&self, chain: &[Snapshot]) -> Result<Box<dyn ReadOnlyMount>, SnapshotError>;

    /// Cleans up what processes that died without doing it left (mounts,
    /// step roots, half-made snapshots), leaving what live ones hold alone.
    /// An engine calls it once at start, after the executor's sweep.
    fn sweep(&self) -> Result<SweepReport, SnapshotError> {
        Ok(SweepReport::default())
    }
}

/// The writable root of one step. [`commit`](ActiveSnapshot::commit) it
/// or [`discard`](ActiveSnapshot::discard) it: both take it by value, so
/// neither can happen twice; dropping it discards it (errors ignored).
pub trait ActiveSnapshot: Send + Sync + fmt::Debug {
    /// The root filesystem the step works in.
    fn root(&self) -> &Path;

    /// The snapshots below, bottom first.
    fn parents(&self) -> &[Snapshot];

    fn key(&self) -> &str;

    /// Ends the step: what changed becomes a layer blob in the store and a
    /// snapshot on the parents. If nothing changed there is no layer and
    /// the chain stays the parents.
    fn commit(self: Box<Self>, opts: &CommitOptions) -> Result<Committed, SnapshotError>;

    /// Ends the step for a commit that finishes while the next step runs
    /// (the build's pipeline, ARCHITECTURE.md): nothing may change the
    /// root after this. What changed is found now; the layer is written
    /// later, on any thread, by the [`PendingCommit`] returned, while the
    /// next step runs on its files.
    ///
    /// A snapshotter that cannot stack a step on files not yet made a
    /// snapshot commits at once (the default: [`Sealed::Committed`]).
    fn seal(self: Box<Self>, opts: &CommitOptions) -> Result<Sealed, SnapshotError> {
        self.commit(opts).map(|c| Sealed::Committed(Box::new(c)))
    }

    /// Throws the step's changes away and removes the root.
    fn discard(self: Box<Self>) -> Result<(), SnapshotError>;
}

/// A step's root after [`ActiveSnapshot::seal`].
#[derive(Debug)]
pub enum Sealed {
    /// Committed already (layer and snapshot made, or no layer).
    Committed(Box<Committed>),
    /// Nothing changed: no layer, and the next step builds on the chain
    /// this one was built on.
    Unchanged,
    /// Changes whose layer is still to be written.
    Pending(Arc<dyn PendingCommit>),
}

/// A sealed step whose layer is still to be made: its files stay where
/// they are, read-only, for the steps stacked on them, while
/// [`write`](PendingCommit::write) turns them into a layer blob beside
/// those steps. A step sealed on it may be pending too, stacked on it.
/// Its directories are removed when the last reference (the engine's, the
/// roots and pending steps stacked on it) goes, so a root stacked on it
/// never loses its lower dir.
pub trait PendingCommit: Send + Sync + fmt::Debug {
    /// A writable root for the next step: the sealed step's files over
    /// those of the pending steps it is stacked on, if any, over
    /// `parents`, the stage's chain under them all (bottom first). Only
    /// [`ActiveSnapshot::seal`] or discard may end it.
    fn activate_above(
        self: Arc<Self>,
        parents: &[Snapshot],
        key: &str,
    ) -> Result<Box<dyn ActiveSnapshot>, SnapshotError>;

    /// Writes the layer blob into the store (tar, both hashes,
    /// compression, streamed): the slow part, on any thread, once.
    /// `parents` is the chain under the pending steps it is stacked on,
    /// bottom first (any of those finished since are in it or not: the
    /// diff compares with their files wherever they are). Once `stop` is
    /// set it ends at its next write, [`SnapshotError::Stopped`], with
    /// nothing stored.
    fn write(&self, parents: &[Snapshot], stop: &AtomicBool)
    -> Result<WrittenLayer, SnapshotError>;

    /// Makes the written layer a snapshot on `parents` (the chain the
    /// sealed step was built on, with the pending steps below it finished,
    /// bottom first). Call it once no root made by
    /// [`activate_above`](PendingCommit::activate_above) is mounted on its
    /// files any more (each was sealed or discarded): the files move into
    /// place, once the diff of a pending step stacked on them is done.
    fn finish(
        &self,
        written: WrittenLayer,
        parents: &[Snapshot],
    ) -> Result<Committed, SnapshotError>;
}

/// A read-only view of a chain, removed when dropped.
pub trait ReadOnlyMount: Send + Sync + fmt::Debug {
    /// The root of the files.
    fn root(&self) -> &Path;

    /// Removes it, reporting errors (dropping ignores them).
    fn release(self: Box<Self>) -> Result<(), SnapshotError>;
}
