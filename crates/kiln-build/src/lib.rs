//! kiln's build engine: a Dockerfile and a context in, an image out.
//!
//! The engine never prints: it reports events, the CLI renders them.

pub mod container;
pub mod context;
pub mod engine;
pub mod events;
pub mod export;
pub mod ops;
pub mod run;
pub mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watchdog;
pub use crate::context::{BuildContext, ContextError, HashMemo};
pub use crate::run::{RunError, RunStep, run_step};
pub use crate::snapshot::{
    ActiveSnapshot, OverlaySnapshotter, ReadOnlyMount, Snapshot, SnapshotError, Snapshotter,
};
