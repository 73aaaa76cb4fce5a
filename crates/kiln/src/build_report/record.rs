//! The events of one build, kept with the time each arrived, then put
//! together into a [`Report`] when the build has returned.
//!
//! Recording only stores (output lines as bounded tails, transfers as a
//! running count per operation), so the engine's threads are never held
//! up; [`assemble`] does the work once, and is pure: the tests feed it
//! scripted events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use kiln_build::{Event, EventSink, StepId};
use kiln_registry::OperationKind;

use super::critical;
use super::model::{
    BaseImage, Build, BuildStatus, CommitTimes, Diagnosis, Hang, Layer, LockWait, Note,
    OUTPUT_TAIL, Report, Retry, Stage, Step, StepStatus, Totals, Transfers, Warning,
};
use crate::render::text;

/// What the command line said about the build (the engine's events say
/// the rest).
#[derive(Debug, Clone, Default)]
pub(crate) struct BuildInfo {
    pub(crate) dockerfile: PathBuf,
    pub(crate) context: PathBuf,
    pub(crate) tags: Vec<String>,
}

/// How the build ended, as kiln reports it.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) status: BuildStatus,
    pub(crate) exit_code: u8,
    pub(crate) error: Option<String>,
}

/// The longest output line a report keeps, in characters.
const LINE_MAX: usize = 2000;

/// Takes a build's events as they come; make one per build.
#[derive(Clone)]
pub(crate) struct Recorder {
    inner: Arc<Mutex<Recorded>>,
    start: Instant,
}

/// Everything kept of a build's events, times in ms since its start.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    pub(super) info: BuildInfo,
    pub(super) started_at: Option<SystemTime>,
    /// Every engine event but the output lines, with its time.
    pub(super) events: Vec<(u64, Event)>,
    /// Each step's last output lines.
    pub(super) output: BTreeMap<StepId, VecDeque<String>>,
    /// Blob transfers by operation (`pull blob reg/repo@sha256:...`).
    pub(super) transfers: HashMap<String, Transfer>,
    pub(super) mounted: u32,
    pub(super) present: u32,
    pub(super) retries: u32,
}

/// One blob's transfer: which way, which blob, how many bytes (the most
/// seen: a retried transfer counts once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Transfer {
    pub(super) push: bool,
    pub(super) digest: Option<String>,
    pub(super) bytes: u64,
    /// When it was first seen, in ms since the build started.
    pub(super) at_ms: u64,
}

impl Recorder {
    pub(crate) fn new(info: BuildInfo) -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(Recorded {
                info,
                started_at: Some(SystemTime::now()),
                ..Recorded::default()
            })),
            start: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panic in one engine thread must not lose the others' events.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Keeps one engine event.
    pub(crate) fn record(&self, event: &Event) {
        let at = self.now_ms();
        self.lock().record(at, event);
    }

    /// `sink`, with every event kept here first.
    pub(crate) fn tap(&self, sink: EventSink) -> EventSink {
        let recorder = self.clone();
        Arc::new(move |event: Event| {
            recorder.record(&event);
            sink(event);
        })
    }

    /// A registry client's event handler that counts its blob transfers.
    pub(crate) fn transfers(&self) -> kiln_registry::EventHandler {
        let recorder = self.clone();
        Arc::new(move |event: &kiln_registry::Event| {
            let at = recorder.now_ms();
            recorder.lock().transfer(at, event)
        })
    }

    /// The report of the build so far, ended as `outcome` says.
    pub(crate) fn finish(&self, outcome: &Outcome) -> Report {
        let end = self.now_ms();
        let recorded = self.lock();
        let started_at = recorded.started_at.unwrap_or_else(SystemTime::now);
        assemble(&recorded, outcome, &new_id(started_at), end)
    }
}

impl Recorded {
    pub(super) fn record(&mut self, at: u64, event: &Event) {
        match event {
            Event::StepLog { step, line, .. } => {
                for piece in line.split('\n') {
                    self.push_line(*step, text::printable(piece));
                }
            }
            // Live progress only.
            Event::StepProgress { .. } => {}
            Event::StepRetry {
                step,
                attempt,
                max,
                reason,
                ..
            } => {
                self.push_line(
                    *step,
                    format!("--- attempt {attempt}/{max}, after: {}", one_line(reason)),
                );
                self.events.push((at, event.clone()));
            }
            _ => self.events.push((at, event.clone())),
        }
    }

    fn push_line(&mut self, step: StepId, mut line: String) {
        if let Some((cut, _)) = line.char_indices().nth(LINE_MAX) {
            line.truncate(cut);
            line.push('…');
        }
        let tail = self.output.entry(step).or_default();
        if tail.len() == OUTPUT_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    pub(super) fn transfer(&mut self, at_ms: u64, event: &kiln_registry::Event) {
        use kiln_registry::Event as E;
        match event {
            E::Progress {
                operation, bytes, ..
            } => {
                let push = match operation.kind() {
                    OperationKind::PullBlob => false,
                    OperationKind::PushBlob => true,
                    _ => return,
                };
                let t = self
                    .transfers
                    .entry(operation.to_string())
                    .or_insert_with(|| Transfer {
                        push,
                        digest: operation.target().map(str::to_string),
                        bytes: 0,
                        at_ms,
                    });
                t.bytes = t.bytes.max(*bytes);
            }
            E::Mounted { .. } => self.mounted += 1,
            E::BlobExists { .. } => self.present += 1,
            E::Retry { .. } => self.retries += 1,
            _ => {}
        }
    }
}

/// `20250611T142233.481Z-3f9a`: sorts as the builds started (to the
/// millisecond: a history keeps the newest, and builds of one second are
/// common in CI and tests); the suffix keeps two of one millisecond apart.
pub(super) fn new_id(started_at: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_millis(started_at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let noise = std::collections::hash_map::RandomState::new().hash_one((
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    ));
    format!("{stamp}-{:04x}", noise & 0xffff)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the events say of one step, before its status is decided.
#[derive(Default)]
struct Seen {
    planned: bool,
    stage: String,
    platform: Option<String>,
    line: usize,
    label: String,
    instruction: String,
    key: Option<String>,
    cache_from: Option<String>,
    started: Option<u64>,
    done: Option<Done>,
    failed: Option<(u64, u64, String, Option<i32>)>,
    committed: Option<(u64, CommitTimes)>,
    /// The summed run time of its processes (a RUN's attempts).
    process_ms: Option<u64>,
    retries: Vec<Retry>,
    watchdog: Vec<Diagnosis>,
    lock_waits: Vec<LockWait>,
    notes: Vec<Note>,
}

struct Done {
    at: u64,
    duration: u64,
    cached: bool,
    config_only: bool,
    layer_size: Option<u64>,
    layer_digest: Option<String>,
}

/// The report of what `recorded` holds, the build having ended at `end`
/// ms as `outcome` says.
pub(super) fn assemble(recorded: &Recorded, outcome: &Outcome, id: &str, end: u64) -> Report {
    let mut platforms: Vec<String> = Vec::new();
    let mut target = None;
    let mut image = None;
    let mut stages: Vec<Stage> = Vec::new();
    let mut seen: BTreeMap<StepId, Seen> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    // Per stage and platform built on an image: its layers' digests.
    let mut base_layers: Vec<(String, Option<String>, Vec<String>)> = Vec::new();
    // Events name a platform only when there are several.
    let only = |platforms: &[String], p: &Option<String>| match (p, platforms) {
        (Some(p), _) => Some(p.clone()),
        (None, [one]) => Some(one.clone()),
        (None, _) => None,
    };
    for (at, event) in &recorded.events {
        let at = *at;
        match event {
            Event::BuildStarted {
                target: t,
                platforms: p,
                ..
            } => {
                target = Some(t.clone());
                platforms = p.clone();
            }
            Event::StagePlanned {
                stage,
                platform,
                needs,
            } => {
                let platform = only(&platforms, platform);
                lane(&mut stages, stage, &platform).needs = needs.clone();
            }
            Event::StageBase {
                stage,
                platform,
                image,
                manifest,
                image_platform,
                layers,
                ..
            } => {
                let platform = only(&platforms, platform);
                lane(&mut stages, stage, &platform).base = Some(BaseImage {
                    image: image.clone(),
                    manifest: manifest.clone(),
                    platform: image_platform.clone(),
                    layers: u32::try_from(layers.len()).unwrap_or(u32::MAX),
                    bytes_pulled: 0,
                });
                base_layers.push((stage.clone(), platform, layers.clone()));
            }
            Event::StepPlanned {
                step,
                stage,
                platform,
                line,
                text: planned,
            } => {
                let platform = only(&platforms, platform);
                let lane = lane(&mut stages, stage, &platform);
                if !lane.steps.contains(step) {
                    lane.steps.push(*step);
                }
                let s = seen.entry(*step).or_default();
                s.planned = true;
                s.stage = stage.clone();
                s.platform = platform;
                s.line = *line;
                let planned = one_line(planned);
                // The engine names the step's place: `[build 2/4] RUN make`.
                match planned
                    .strip_prefix('[')
                    .and_then(|rest| rest.split_once("] "))
                {
                    Some((label, rest)) => {
                        s.label = label.to_string();
                        s.instruction = rest.to_string();
                    }
                    None => {
                        s.label = stage.clone();
                        s.instruction = planned;
                    }
                }
            }
            Event::StepKeyed { step, key } => {
                seen.entry(*step).or_default().key = Some(key.clone())
            }
            Event::StepCached { step, from } => {
                seen.entry(*step).or_default().cache_from = from.clone();
            }
            Event::StepStarted { step } => {
                seen.entry(*step).or_default().started.get_or_insert(at);
            }
            Event::StepProcess {
                step, duration_ms, ..
            } => {
                let s = seen.entry(*step).or_default();
                s.process_ms = Some(s.process_ms.unwrap_or(0) + duration_ms);
            }
            Event::StepNote { step, text } => seen.entry(*step).or_default().notes.push(Note {
                at_ms: at,
                text: text.clone(),
            }),
            Event::StepCommitted {
                step,
                size,
                diff_ms,
                archive_ms,
                store_ms,
                snapshot_ms,
                ..
            } => {
                seen.entry(*step).or_default().committed = Some((
                    *size,
                    CommitTimes {
                        diff_ms: *diff_ms,
                        archive_ms: *archive_ms,
                        store_ms: *store_ms,
                        snapshot_ms: *snapshot_ms,
                    },
                ));
            }
            Event::StepDone {
                step,
                duration_ms,
                settled_after_ms,
                cached,
                layer_size,
                layer_digest,
                config_only,
            } => {
                seen.entry(*step).or_default().done = Some(Done {
                    // The step's own end: a step whose layer was written in
                    // the background is recorded after it.
                    at: at.saturating_sub(*settled_after_ms),
                    duration: *duration_ms,
                    cached: *cached,
                    config_only: *config_only,
                    layer_size: *layer_size,
                    layer_digest: layer_digest.clone(),
                });
            }
            Event::StepFailed {
                step,
                duration_ms,
                reason,
                exit_code,
            } => {
                seen.entry(*step).or_default().failed =
                    Some((at, *duration_ms, reason.clone(), *exit_code));
            }
            Event::StepDiagnosis { step, hang, text } => {
                seen.entry(*step).or_default().watchdog.push(Diagnosis {
                    at_ms: at,
                    hang: match hang {
                        kiln_build::Hang::Stalled => Hang::Stalled,
                        kiln_build::Hang::TimedOut => Hang::TimedOut,
                    },
                    text: text.clone(),
                })
            }
            Event::StepRetry {
                step,
                attempt,
                max,
                reason,
                delay_ms,
            } => seen.entry(*step).or_default().retries.push(Retry {
                at_ms: at,
                attempt: *attempt,
                max: *max,
                reason: reason.clone(),
                delay_ms: *delay_ms,
            }),
            Event::StepLockWait {
                step,
                lock,
                holder,
                waited_ms,
            } => seen.entry(*step).or_default().lock_waits.push(LockWait {
                at_ms: at,
                lock: lock.clone(),
                holder: holder.clone(),
                waited_ms: *waited_ms,
            }),
            Event::Note { message } => notes.push(Note {
                at_ms: at,
                text: message.clone(),
            }),
            Event::Warning { message, line } => warnings.push(Warning {
                message: message.clone(),
                line: *line,
            }),
            Event::BuildDone { image: i, .. } => image = i.clone(),
            _ => {}
        }
    }

    let mut steps: Vec<Step> = seen
        .into_iter()
        .map(|(id, s)| step(id, s, recorded, end))
        .collect();
    for t in recorded.transfers.values() {
        let Some(step) = steps
            .iter_mut()
            .find(|s| s.layer.as_ref().and_then(|l| l.digest.as_ref()) == t.digest.as_ref())
        else {
            continue;
        };
        if t.push {
            step.bytes_pushed += t.bytes;
        } else {
            step.bytes_pulled += t.bytes;
        }
    }
    attribute_base_pulls(recorded, &base_layers, &mut stages, &mut steps);
    for stage in &mut stages {
        let times = || {
            steps
                .iter()
                .filter(|s| stage.steps.contains(&s.id) && s.platform == stage.platform)
        };
        stage.start_ms = times().filter_map(|s| s.start_ms).min();
        stage.end_ms = times().filter_map(|s| s.end_ms).max();
    }
    let critical_path = critical::path(&stages, &steps);
    for s in &mut steps {
        s.critical = critical_path.contains(&s.id);
    }
    let mut totals = totals(&steps, &critical_path);
    totals.process_critical_ms = critical::process_path_ms(&stages, &steps);
    let transfers = transfers(recorded);
    let started_at = recorded.started_at.unwrap_or(SystemTime::UNIX_EPOCH);
    Report {
        schema: super::SCHEMA.to_string(),
        id: id.to_string(),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        build: Build {
            status: outcome.status,
            exit_code: outcome.exit_code,
            error: outcome.error.clone(),
            started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
            duration_ms: end,
            dockerfile: recorded.info.dockerfile.display().to_string(),
            context: recorded.info.context.display().to_string(),
            target,
            tags: recorded.info.tags.clone(),
            image,
        },
        platforms,
        stages,
        steps,
        critical_path,
        totals,
        transfers,
        warnings,
        notes,
    }
}

/// The lane of `name` on `platform`, made if new.
fn lane<'a>(stages: &'a mut Vec<Stage>, name: &str, platform: &Option<String>) -> &'a mut Stage {
    let i = match stages
        .iter()
        .position(|s| s.name == name && &s.platform == platform)
    {
        Some(i) => i,
        None => {
            stages.push(Stage {
                name: name.to_string(),
                platform: platform.clone(),
                needs: Vec::new(),
                steps: Vec::new(),
                start_ms: None,
                end_ms: None,
                base: None,
            });
            stages.len() - 1
        }
    };
    &mut stages[i]
}

/// One step's entry: its status decided, its times placed. A step's start
/// is its end less the engine's measure of it (which includes working out
/// its cache key, before any `StepStarted`).
fn step(id: StepId, s: Seen, recorded: &Recorded, end: u64) -> Step {
    let mut error = None;
    let mut exit_code = None;
    let mut layer = None;
    let (status, start, finish) = if let Some((at, duration, reason, code)) = s.failed {
        error = Some(reason);
        exit_code = code;
        (
            StepStatus::Failed,
            Some(at.saturating_sub(duration)),
            Some(at),
        )
    } else if let Some(done) = &s.done {
        let status = if done.cached {
            if s.cache_from.is_some() {
                StepStatus::RemoteCached
            } else {
                StepStatus::Cached
            }
        } else if done.config_only {
            StepStatus::Config
        } else {
            StepStatus::Run
        };
        if let Some(size) = done.layer_size {
            layer = Some(Layer {
                digest: done.layer_digest.clone(),
                size,
                uncompressed_size: s.committed.map(|(u, _)| u),
                commit: s.committed.map(|(_, t)| t),
            });
        }
        (
            status,
            Some(done.at.saturating_sub(done.duration)),
            Some(done.at),
        )
    } else if let Some(started) = s.started {
        // It was running when the build stopped.
        error = Some("the build stopped before this step ended".to_string());
        (StepStatus::Failed, Some(started), Some(end.max(started)))
    } else {
        (StepStatus::NotRun, None, None)
    };
    Step {
        id,
        stage: s.stage,
        platform: s.platform,
        line: s.line,
        label: s.label,
        instruction: s.instruction,
        status,
        start_ms: start,
        end_ms: finish,
        duration_ms: start.zip(finish).map(|(a, b)| b.saturating_sub(a)),
        process_ms: s.process_ms,
        cache_key: s.key,
        cache_from: s.cache_from,
        layer,
        bytes_pulled: 0,
        bytes_pushed: 0,
        base_bytes_pulled: 0,
        exit_code,
        error,
        retries: s.retries,
        watchdog: s.watchdog,
        lock_waits: s.lock_waits,
        notes: s.notes,
        output: recorded
            .output
            .get(&id)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default(),
        critical: false,
    }
}

/// The pulls of base image layers: counted for the stages built on the
/// image, and for the step that was running when the pull began, of such a
/// stage or of a stage that reads one (a stage's steps read its base's
/// files, and so may a stage that copies from it). A pull while no such
/// step ran (an export's) counts for the stage only.
fn attribute_base_pulls(
    recorded: &Recorded,
    base_layers: &[(String, Option<String>, Vec<String>)],
    stages: &mut [Stage],
    steps: &mut [Step],
) {
    for t in recorded.transfers.values().filter(|t| !t.push) {
        let Some(digest) = &t.digest else {
            continue;
        };
        let mut bases: Vec<(String, Option<String>)> = Vec::new();
        for (stage, platform, layers) in base_layers {
            if layers.contains(digest) {
                bases.push((stage.clone(), platform.clone()));
                if let Some(lane) = stages
                    .iter_mut()
                    .find(|l| &l.name == stage && &l.platform == platform)
                    && let Some(base) = &mut lane.base
                {
                    base.bytes_pulled += t.bytes;
                }
            }
        }
        if bases.is_empty() {
            continue;
        }
        // The stages whose steps may read those layers: the stages built on
        // the image, and every stage that needs one of them, transitively.
        let mut readers = bases.clone();
        let mut grew = true;
        while grew {
            grew = false;
            for lane in stages.iter() {
                let key = (lane.name.clone(), lane.platform.clone());
                if !readers.contains(&key)
                    && lane
                        .needs
                        .iter()
                        .any(|n| readers.contains(&(n.clone(), lane.platform.clone())))
                {
                    readers.push(key);
                    grew = true;
                }
            }
        }
        let running = steps
            .iter_mut()
            .filter(|s| readers.contains(&(s.stage.clone(), s.platform.clone())))
            .filter(|s| {
                s.start_ms.is_some_and(|a| a <= t.at_ms) && s.end_ms.is_none_or(|b| t.at_ms <= b)
            })
            .min_by_key(|s| (s.start_ms, s.id));
        if let Some(step) = running {
            step.base_bytes_pulled += t.bytes;
        }
    }
}

fn totals(steps: &[Step], critical_path: &[StepId]) -> Totals {
    let mut t = Totals {
        steps: u32::try_from(steps.len()).unwrap_or(u32::MAX),
        ..Totals::default()
    };
    for s in steps {
        match s.status {
            StepStatus::Run => t.run += 1,
            StepStatus::Cached => t.cached += 1,
            StepStatus::RemoteCached => t.remote_cached += 1,
            StepStatus::Config => t.config += 1,
            StepStatus::Failed => t.failed += 1,
            StepStatus::NotRun => t.not_run += 1,
        }
        if let Some(layer) = &s.layer {
            t.layers += 1;
            t.layer_bytes += layer.size;
            if s.status == StepStatus::Run {
                t.new_layer_bytes += layer.size;
            }
        }
        t.process_ms += s.process_ms.unwrap_or(0);
    }
    t.critical_path_ms = critical_time(steps.iter().filter(|s| critical_path.contains(&s.id)));
    t
}

/// The time `steps` took, each moment counted once: a step whose layer
/// was written in the background ends after the next step started, and
/// the two overlap. A step with no times of its own counts its duration.
fn critical_time<'a>(steps: impl Iterator<Item = &'a Step>) -> u64 {
    let mut spans = Vec::new();
    let mut untimed = 0;
    for s in steps {
        match (s.start_ms, s.end_ms) {
            (Some(start), Some(end)) => spans.push((start, end.max(start))),
            _ => untimed += s.duration_ms.unwrap_or(0),
        }
    }
    spans.sort_unstable();
    let (mut total, mut reached) = (0, 0);
    for (start, end) in spans {
        total += end.saturating_sub(start.max(reached));
        reached = reached.max(end);
    }
    total + untimed
}

fn transfers(recorded: &Recorded) -> Transfers {
    let mut t = Transfers {
        blobs_mounted: recorded.mounted,
        blobs_present: recorded.present,
        retries: recorded.retries,
        ..Transfers::default()
    };
    for transfer in recorded.transfers.values() {
        if transfer.push {
            t.blobs_pushed += 1;
            t.bytes_pushed += transfer.bytes;
        } else {
            t.blobs_pulled += 1;
            t.bytes_pulled += transfer.bytes;
        }
    }
    t
}
