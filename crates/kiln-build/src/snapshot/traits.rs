//! What the engine asks of a snapshotter, whatever keeps the files: the
//! overlay snapshotter (the rest of this module) for builds, a fake made
//! of plain directories for tests (`fake.rs`, with the `testing` feature).
//!
//! A snapshotter makes the root filesystem of each step from the layers
//! below it, and turns what the step changed into a layer. Every backend
//! passes one suite of tests (`crate::testing::suite`).

use std::fmt;
use std::path::Path;

use super::active::{CommitOptions, Committed};
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

    /// Throws the step's changes away and removes the root.
    fn discard(self: Box<Self>) -> Result<(), SnapshotError>;
}

/// A read-only view of a chain, removed when dropped.
pub trait ReadOnlyMount: Send + Sync + fmt::Debug {
    /// The root of the files.
    fn root(&self) -> &Path;

    /// Removes it, reporting errors (dropping ignores them).
    fn release(self: Box<Self>) -> Result<(), SnapshotError>;
}
