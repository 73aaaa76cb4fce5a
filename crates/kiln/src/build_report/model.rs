//! The report as a document: `kiln.report/v1`. docs/REPORT.md describes
//! every field; keep the two together. Times are milliseconds since the
//! build started (`build.started_at`); sizes are bytes.

use serde::{Deserialize, Serialize};

/// One build's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    /// [`super::SCHEMA`].
    pub(crate) schema: String,
    /// Its name in `kiln history`: `20250611T142233.481Z-3f9a`.
    pub(crate) id: String,
    pub(crate) kiln_version: String,
    pub(crate) build: Build,
    /// What the build was for, as the engine announced it (none if it
    /// failed before planning).
    pub(crate) platforms: Vec<String>,
    /// One per stage and platform built, in build order.
    pub(crate) stages: Vec<Stage>,
    /// Every step planned, by number.
    pub(crate) steps: Vec<Step>,
    /// The steps on the critical path, first to last.
    pub(crate) critical_path: Vec<u32>,
    pub(crate) totals: Totals,
    pub(crate) transfers: Transfers,
    pub(crate) warnings: Vec<Warning>,
    /// What the build did outside its steps (cache imports and exports).
    pub(crate) notes: Vec<Note>,
}

/// The build as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Build {
    pub(crate) status: BuildStatus,
    /// kiln's exit status (0 built, 1 failed, 3 stalled, 4 timed out,
    /// 130/143/129 interrupted).
    pub(crate) exit_code: u8,
    /// Why it failed, as kiln printed it.
    pub(crate) error: Option<String>,
    /// RFC 3339, UTC, to the second.
    pub(crate) started_at: String,
    pub(crate) duration_ms: u64,
    pub(crate) dockerfile: String,
    pub(crate) context: String,
    /// The target stage.
    pub(crate) target: Option<String>,
    /// `-t` names.
    pub(crate) tags: Vec<String>,
    /// The digest of what was built (a manifest, or an index of several
    /// platforms).
    pub(crate) image: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BuildStatus {
    Succeeded,
    Failed,
    Stalled,
    TimedOut,
    Cancelled,
}

impl BuildStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
            BuildStatus::Stalled => "stalled",
            BuildStatus::TimedOut => "timed_out",
            BuildStatus::Cancelled => "cancelled",
        }
    }
}

/// A stage of one platform: one lane of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stage {
    pub(crate) name: String,
    pub(crate) platform: Option<String>,
    /// The stages it reads, built before it.
    pub(crate) needs: Vec<String>,
    /// Its steps, in order.
    pub(crate) steps: Vec<u32>,
    /// From its first step's start to its last step's end (none if no
    /// step of it ran).
    pub(crate) start_ms: Option<u64>,
    pub(crate) end_ms: Option<u64>,
    /// Its base image, when it is built on one (not `scratch`, not a stage).
    pub(crate) base: Option<BaseImage>,
}

/// The image a stage is built on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BaseImage {
    /// As the FROM names it.
    pub(crate) image: String,
    /// `sha256:...` of its manifest.
    pub(crate) manifest: String,
    /// The platform its config declares (`os/arch[/variant]`).
    pub(crate) platform: String,
    pub(crate) layers: u32,
    /// Its layers' bytes this build fetched from a registry (layers are
    /// fetched only when a step or an export reads them).
    pub(crate) bytes_pulled: u64,
}

/// One step: an instruction of a stage, for one platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Step {
    pub(crate) id: u32,
    pub(crate) stage: String,
    pub(crate) platform: Option<String>,
    /// The Dockerfile line it starts on.
    pub(crate) line: usize,
    /// `build 2/4`: the stage, and the step's place in it.
    pub(crate) label: String,
    /// The instruction, on one line.
    pub(crate) instruction: String,
    pub(crate) status: StepStatus,
    pub(crate) start_ms: Option<u64>,
    pub(crate) end_ms: Option<u64>,
    pub(crate) duration_ms: Option<u64>,
    /// How long its processes ran (a RUN's command in the runtime, every
    /// attempt of a retried step); `None` for a step that ran none (COPY,
    /// a cache hit). The rest of `duration_ms` is kiln's: the cache key,
    /// mounts, the commit of the layer.
    #[serde(default)]
    pub(crate) process_ms: Option<u64>,
    /// `sha256:...`, for the steps that have one (RUN, COPY, ADD, WORKDIR).
    pub(crate) cache_key: Option<String>,
    /// The `--cache-from` a `remote-cached` step came from.
    pub(crate) cache_from: Option<String>,
    pub(crate) layer: Option<Layer>,
    /// The bytes of this step's layer fetched from or sent to a registry
    /// (a remote cache hit read, a push).
    pub(crate) bytes_pulled: u64,
    pub(crate) bytes_pushed: u64,
    /// The bytes of base image layers fetched while this step ran, for its
    /// stage or a stage it reads (a step is what makes kiln fetch a base's
    /// layers: the first one that needs their files).
    pub(crate) base_bytes_pulled: u64,
    /// A RUN whose command exited non-zero: its status.
    pub(crate) exit_code: Option<i32>,
    pub(crate) error: Option<String>,
    pub(crate) retries: Vec<Retry>,
    pub(crate) watchdog: Vec<Diagnosis>,
    pub(crate) lock_waits: Vec<LockWait>,
    /// Notes about the step that are not output (a cache mount restored, a
    /// full disk).
    pub(crate) notes: Vec<Note>,
    /// Its last lines of output (at most [`OUTPUT_TAIL`]).
    pub(crate) output: Vec<String>,
    pub(crate) critical: bool,
}

/// How many of a step's last output lines a report keeps.
pub(crate) const OUTPUT_TAIL: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StepStatus {
    /// It ran (or copied) and made its result.
    Run,
    /// Its result came from kiln's store.
    Cached,
    /// Its result came from a `--cache-from`.
    RemoteCached,
    /// It only changed the image config (ENV, CMD, LABEL, ARG...).
    Config,
    Failed,
    /// Planned, never finished: the build stopped first.
    NotRun,
}

impl StepStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepStatus::Run => "run",
            StepStatus::Cached => "cached",
            StepStatus::RemoteCached => "remote-cached",
            StepStatus::Config => "config",
            StepStatus::Failed => "failed",
            StepStatus::NotRun => "not-run",
        }
    }
}

/// A step's layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Layer {
    pub(crate) digest: Option<String>,
    /// Of the blob (compressed).
    pub(crate) size: u64,
    /// Of the tar, for a layer this build made.
    pub(crate) uncompressed_size: Option<u64>,
    /// Where the commit's time went, for a layer this build made.
    pub(crate) commit: Option<CommitTimes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommitTimes {
    pub(crate) diff_ms: u64,
    pub(crate) archive_ms: u64,
    pub(crate) store_ms: u64,
    pub(crate) snapshot_ms: u64,
}

/// An attempt of a RUN that failed and ran again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Retry {
    pub(crate) at_ms: u64,
    /// The attempt about to start (2 for the first retry), of `max`.
    pub(crate) attempt: u32,
    pub(crate) max: u32,
    pub(crate) reason: String,
    pub(crate) delay_ms: u64,
}

/// The watchdog's diagnosis of a step it killed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Diagnosis {
    pub(crate) at_ms: u64,
    pub(crate) hang: Hang,
    /// Several lines: process tree, wait channels, sockets, last output,
    /// the lock waited for.
    pub(crate) text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Hang {
    Stalled,
    TimedOut,
}

/// A wait for a `sharing=locked` cache mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LockWait {
    /// When the wait ended.
    pub(crate) at_ms: u64,
    pub(crate) lock: String,
    pub(crate) holder: String,
    pub(crate) waited_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Note {
    pub(crate) at_ms: u64,
    pub(crate) text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Warning {
    pub(crate) message: String,
    pub(crate) line: Option<usize>,
}

/// Counts and sums over the steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub(crate) steps: u32,
    pub(crate) run: u32,
    pub(crate) cached: u32,
    pub(crate) remote_cached: u32,
    pub(crate) config: u32,
    pub(crate) failed: u32,
    pub(crate) not_run: u32,
    /// Steps with a layer, and their blobs' sizes.
    pub(crate) layers: u32,
    pub(crate) layer_bytes: u64,
    /// Of those, the layers this build made.
    pub(crate) new_layer_bytes: u64,
    /// The time of the critical path's steps.
    pub(crate) critical_path_ms: u64,
    /// The steps' process times, summed.
    #[serde(default)]
    pub(crate) process_ms: u64,
    /// The longest chain of process times through the stage graph: no
    /// schedule of these steps ends sooner. `build.duration_ms` less this
    /// is kiln's own time (see "Process time and kiln's overhead" in
    /// docs/REPORT.md).
    #[serde(default)]
    pub(crate) process_critical_ms: u64,
}

/// What went to and from registries during the build and its exports
/// (base images, caches, lazy layers, pushes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Transfers {
    pub(crate) bytes_pulled: u64,
    pub(crate) bytes_pushed: u64,
    pub(crate) blobs_pulled: u32,
    pub(crate) blobs_pushed: u32,
    /// Blobs linked from another repository of the registry instead of sent.
    pub(crate) blobs_mounted: u32,
    /// Blobs the registry had already.
    pub(crate) blobs_present: u32,
    /// Requests that failed and were tried again.
    pub(crate) retries: u32,
}
