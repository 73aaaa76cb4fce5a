//! For tests (feature `testing`): fakes that let the engine run as any
//! user, in milliseconds, with no runc, no mounts and no network, and the
//! one suite every snapshotter passes.
//!
//! - [`FakeSnapshotter`]: snapshots as plain directories, copies for step
//!   roots, commits through the overlay snapshotter's differ and layer
//!   writer, so cache keys, layers and chain IDs are real.
//! - [`FakeExecutor`] and [`Script`] (kiln-sandbox's): RUN steps that write
//!   files, print lines, exit, hang or spin as a test scripts them, and
//!   report a process tree the watchdog judges.
//! - [`suite`] and [`snapshotter_suite!`](crate::snapshotter_suite): the
//!   snapshotter contract, one `#[test]` per case for each backend.
//!
//! ```ignore
//! let snapshotter = Arc::new(FakeSnapshotter::new(&store, &dir.join("snapshots"))?);
//! let executor = Arc::new(FakeExecutor::new());
//! executor.script("make", [Script::exit(1), Script::success().write("/out/app", "bin")]);
//! let engine = Engine::with_snapshotter(store, snapshotter, client, runtime, executor, events)?;
//! ```

pub mod suite;

pub use crate::snapshot::fake::FakeSnapshotter;
pub use kiln_sandbox::{FakeExecutor, FakeRun, Script};
