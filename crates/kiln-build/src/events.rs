//! What a build reports while it runs. The engine never prints: it sends
//! [`Event`]s to an [`EventSink`]; the CLI renders them as an interactive
//! view, BuildKit-style numbered lines, or JSON lines.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// A step of the build, numbered in the order it was planned (`#1`, `#2`…).
pub type StepId = u32;

/// One event of a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The build starts: what is built, for which platforms, which stages.
    BuildStarted {
        target: String,
        platforms: Vec<String>,
        stages: Vec<String>,
    },
    /// A step is known: its number, stage, Dockerfile line and text.
    StepPlanned {
        step: StepId,
        stage: String,
        platform: Option<String>,
        line: usize,
        text: String,
    },
    /// The stages of one platform are known: each with the stages it
    /// reads (its `FROM` stage, `COPY --from`, `RUN --mount=from=`), which
    /// are built before it starts. Sent before the stage's steps are
    /// planned.
    StagePlanned {
        stage: String,
        platform: Option<String>,
        needs: Vec<String>,
    },
    /// A stage's base image is resolved (from the store, or its manifest
    /// and config pulled): the image as its FROM (`line`) names it, its
    /// manifest digest, the platform its config declares next to the one
    /// the stage is built for (both normalised, `os/arch[/variant]`), and
    /// its layers' blob digests, which stay in the registry until a step or
    /// an export reads them. Sent before the stage's steps run.
    StageBase {
        stage: String,
        platform: Option<String>,
        line: usize,
        image: String,
        manifest: String,
        expected_platform: String,
        image_platform: String,
        layers: Vec<String>,
    },
    /// The step's cache key is known (`sha256:...`, format `kiln-cache-v1`),
    /// before the cache is looked up: the identity of its result.
    StepKeyed { step: StepId, key: String },
    /// The step's result came from the cache: kiln's store when `from` is
    /// `None`, else the `--cache-from` it names.
    StepCached { step: StepId, from: Option<String> },
    /// The step started running.
    StepStarted { step: StepId },
    /// One line of a step's output (stdout or stderr).
    StepLog {
        step: StepId,
        stream: Stream,
        line: String,
    },
    /// Progress of a step that moves bytes (a pull, a copy, an export).
    StepProgress {
        step: StepId,
        label: String,
        done: u64,
        total: Option<u64>,
    },
    /// A RUN step's process ended (each attempt of a retried step sends
    /// one): `duration_ms` is how long the runtime ran it, from its start
    /// until it exited and its output was read. Mounts prepared before and
    /// the commit after are not in it: that is kiln's time, not the step's.
    StepProcess {
        step: StepId,
        duration_ms: u64,
        exit_code: i32,
    },
    /// A note about a step that is not output (a retry, a lock wait).
    StepNote { step: StepId, text: String },
    /// The step's changes became a layer: `size` bytes of tar, `compressed`
    /// bytes of blob, and the time each phase of the commit took.
    StepCommitted {
        step: StepId,
        size: u64,
        compressed: u64,
        diff_ms: u64,
        archive_ms: u64,
        store_ms: u64,
        snapshot_ms: u64,
    },
    /// The step finished; `layer_size` is the compressed size of its layer,
    /// `layer_digest` the layer blob's digest. `config_only`: an instruction that only changes the image config
    /// (ENV, CMD, LABEL, ARG...), so there was nothing to run or to take
    /// from the cache. `duration_ms` is the step's own time, up to its
    /// layer being written. `settled_after_ms`: how long before this event
    /// that was. A step whose layer is written in the background is
    /// recorded (and this event sent) once the step after it is sealed or
    /// its stage ends; for it this is the time from its layer's end to
    /// then. 0 for every other step.
    StepDone {
        step: StepId,
        duration_ms: u64,
        settled_after_ms: u64,
        cached: bool,
        layer_size: Option<u64>,
        layer_digest: Option<String>,
        config_only: bool,
    },
    /// The step failed; `reason` is one line; `exit_code` is the status of
    /// a RUN's command that exited non-zero.
    StepFailed {
        step: StepId,
        duration_ms: u64,
        reason: String,
        exit_code: Option<i32>,
    },
    /// The watchdog is about to kill a RUN step that stalled or timed
    /// out: `text` is its diagnosis, several lines (the step and its line,
    /// how long it ran and idled, its last output, its process tree with
    /// states, wait channels, CPU times, command lines and sockets, any
    /// cache lock it waits for). Always sent before the kill.
    StepDiagnosis {
        step: StepId,
        hang: Hang,
        text: String,
    },
    /// A RUN step waited for a `sharing=locked` cache mount that another
    /// step or build held: `lock` says which (`cache mount /root/.cache
    /// (id "pip")`), `holder` who held it when the wait began (empty if it
    /// did not say), `waited_ms` how long, until it was taken or the step
    /// was cancelled. Sent when the wait ends.
    StepLockWait {
        step: StepId,
        lock: String,
        holder: String,
        waited_ms: u64,
    },
    /// A RUN step failed (stalled, timed out or exited non-zero) and runs
    /// again, from its clean parent snapshot, after `delay_ms`. `attempt`
    /// is the attempt about to start (2 for the first retry), `max` how
    /// many the step may have in all; `reason` is one line.
    StepRetry {
        step: StepId,
        attempt: u32,
        max: u32,
        reason: String,
        delay_ms: u64,
    },
    /// What the build did outside its steps that a user wants to see (a
    /// cache read or written), one line.
    Note { message: String },
    /// A warning about the build (unused build args, undefined variables).
    Warning {
        message: String,
        line: Option<usize>,
    },
    /// The build finished; `image` is the digest of what was built.
    BuildDone {
        image: Option<String>,
        duration_ms: u64,
    },
}

/// Why the watchdog ends a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hang {
    /// No output, CPU or I/O for the stall timeout.
    Stalled,
    /// Still running at the step timeout.
    TimedOut,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where events go. Called from the engine's threads: keep it quick.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
