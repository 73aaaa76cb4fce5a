//! The watchdog: every RUN step runs under it, so a build never hangs
//! silently (DESIGN.md: "a build never hangs silently").
//!
//! ```text
//! run_command ─ StepWatch::run(run_step) ─────────────── the step (runc)
//!                   │ every second                          │ output, lock waits
//!                   ▼                                       ▼
//!               RunControl::snapshot() ──▶ Monitor ◀── StepRecorder (a StepObserver)
//!                                            │ past a limit?
//!                                            ▼
//!               Event::StepDiagnosis (tree, sockets, wait channels, last lines, lock holder)
//!               then RunControl::cancel(): the tree is killed, run_step removes the mounts
//!               then the engine retries from the clean parent snapshot, or fails the build
//! ```
//!
//! - [`StepPolicy`]: the limits ([`Limits`]: step timeout, stall timeout),
//!   retries and [`Backoff`] of a step: the build's (`--step-timeout`,
//!   `--stall-timeout`, `--retries`) with the step's own [`Overrides`]
//!   from a `# kiln: timeout=20m stall=5m retries=3` comment on top,
//!   read for every RUN at once when the build starts ([`StepSettings`]).
//! - [`Monitor`]: the decision, pure. It is fed [`Observation`]s (a
//!   [`ProcessTree`](kiln_sandbox::ProcessTree), the bytes printed so far,
//!   the cache locks granted) with their times, and says when the step is
//!   past a limit ([`Breach`]). What counts as progress is in
//!   `progress.rs`: output, CPU (a floor of [`MIN_CPU_SHARE`]), I/O,
//!   socket changes; a cache-lock wait is not progress.
//! - [`Diagnosis`]: the text shown before the kill.
//! - [`StepRecorder`]: the [`StepObserver`](crate::run::StepObserver) that
//!   counts output, keeps the last [`TAIL_LINES`] lines and the lock wait.
//! - [`StepWatch`]: the thread that samples a run every [`SAMPLE_EVERY`],
//!   and reports and cancels it when the monitor says so.
//!
//! Everything but [`StepWatch`] works on data and is tested with scripted
//! snapshots; the real thing is tested against runc in
//! `tests/watchdog*.rs`.

mod diagnosis;
mod monitor;
mod policy;
mod progress;
mod recorder;
mod syscalls;
mod watch;

pub(crate) use self::diagnosis::headline;
pub(crate) use self::monitor::Breach;
pub(crate) use self::policy::StepSettings;
pub(crate) use self::policy::{Backoff, Limits, OverrideError, Overrides, StepPolicy};
pub(crate) use self::recorder::StepRecorder;
pub use self::recorder::TAIL_LINES;
pub(crate) use self::watch::{SAMPLE_EVERY, StepWatch};
