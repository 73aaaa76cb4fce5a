//! One stage of one platform's build: its base, then its instructions in
//! order, each expanded, keyed, and either taken from the cache or run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_dockerfile::Location;
use kiln_dockerfile::instructions::{Command, parse_instruction};
use kiln_dockerfile::plan::{Base, Plan, Source, StageScope};
use kiln_image::document::{ContainerConfig, Descriptor, ImageConfig};
use kiln_image::{CacheRecord, Digest, Platform, Reference};
use kiln_registry::{PullOptions, pull_image};

use super::cache_key::KeyBuilder;
use super::config::ConfigState;
use super::error::Cause;
use super::{Board, BuildError, Engine, Shared};
use crate::events::{Event, StepId, millis};
use crate::ops::Download;
use crate::remote_cache::{self, StepRecord};
use crate::run::DEFAULT_PATH;
use crate::snapshot::{
    ActiveSnapshot, CommitOptions, Committed, Layer, PendingCommit, Sealed, Snapshot,
    SnapshotError, WrittenLayer,
};
use crate::watchdog::Overrides;

/// The nice value of kiln's background work: a layer written beside the
/// next step, the context hashed ahead (Linux nice is per thread, and
/// threads it starts inherit it).
const BACKGROUND_NICE: i32 = 10;

/// Puts the calling thread, and the threads it starts, below the steps in
/// priority ([`BACKGROUND_NICE`]). Best effort.
pub(super) fn below_the_steps() {
    let _ = rustix::process::setpriority_process(None, BACKGROUND_NICE);
}

/// A layer of the image being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRef {
    pub(crate) descriptor: Descriptor,
    pub(crate) diff_id: Digest,
}

/// Where a stage stands after an instruction.
#[derive(Debug, Clone)]
pub(crate) struct StageOutcome {
    /// The key of the last filesystem step (or of the base).
    pub(crate) key: Digest,
    pub(crate) layers: Vec<LayerRef>,
    /// How many of `layers`, bottom first, are a base image's.
    pub(crate) base_layers: usize,
    /// The keys of the filesystem steps behind `layers` (this stage's and
    /// its base stages'), for a cache export of the image's steps only.
    pub(crate) keys: Vec<Digest>,
    /// The snapshots of `layers`, when they were prepared (a fully cached
    /// stage never prepares any).
    pub(crate) chain: Option<Vec<Snapshot>>,
    pub(crate) config: ConfigState,
    /// The stage's variables, for stages built on it.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) config_env: Vec<(String, String)>,
    pub(crate) steps_run: u32,
    pub(crate) steps_cached: u32,
}

/// One instruction of a stage as the engine runs it, planned when the
/// build started: its number in the output and, for a RUN, its own
/// `# kiln:` settings. ONBUILD triggers have neither.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Step {
    pub(crate) id: Option<u32>,
    pub(crate) settings: Overrides,
}

pub(crate) struct StageRunner<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) plan: &'a Plan,
    pub(crate) stage: usize,
    pub(crate) platform: &'a Platform,
    /// The platform of the image being built (the stage's may differ:
    /// `FROM --platform`), which cache records are filed under.
    pub(crate) target_platform: &'a Platform,
    pub(crate) shared: &'a Shared<'a>,
    pub(crate) board: &'a Board,
    /// The stage's instructions, by index.
    pub(crate) steps: Vec<Step>,
    /// ADD URLs fetched during this stage (the key needs their content,
    /// the copy their file), and the temp dirs holding them.
    pub(crate) downloads: Mutex<HashMap<String, Arc<Download>>>,
    pub(crate) scratch_dirs: Mutex<Vec<kiln_fs::OwnedDir>>,
    /// The steps whose layers are being written in the background while
    /// the next one runs on their files, oldest first, each stacked on the
    /// one before (at most [`MAX_PENDING`]).
    pub(crate) pending: Mutex<Vec<PendingStep>>,
    /// Key the stage without building it (the key pass of stage images,
    /// `engine/stage_image.rs`): instructions expanded and applied to the
    /// config, every filesystem step keyed; nothing looked up in the
    /// cache, run or reported.
    pub(crate) keys_only: bool,
}

/// What a filesystem step's end needs to know about it: for the cache
/// record, `--cache-to` and its events, written when its layer is done.
pub(crate) struct StepInfo {
    id: Option<StepId>,
    location: Location,
    key: Digest,
    /// The key of the step before.
    parent: Digest,
    command: Command,
    created: String,
    started: Instant,
}

/// How many sealed steps of a stage may wait for their layers, stacked,
/// while the next step runs on their files: a short step (a COPY) between
/// a big one and a long one does not make the long one wait for the big
/// layer. Each holds a writer thread and its upper dir; beyond this the
/// oldest is waited for.
const MAX_PENDING: usize = 4;

/// A step sealed with its layer still being written beside the steps
/// after it (ARCHITECTURE.md, glossary: "Pending step"), or one sealed on
/// such steps that changed nothing, to be recorded after them. The
/// stage's `layers` and `chain` do not have it yet: `chain` is the chain
/// it is finished on, once the pending steps before it are.
pub(crate) struct PendingStep {
    info: StepInfo,
    end: PendingEnd,
}

enum PendingEnd {
    /// Its layer, written by `writer`, which gives when it was done.
    Layer {
        commit: Arc<dyn PendingCommit>,
        writer: std::thread::JoinHandle<(Result<WrittenLayer, SnapshotError>, Instant)>,
    },
    /// It changed nothing; sealed at that instant.
    Unchanged(Instant),
}

impl PendingStep {
    /// Whether it can be finished without waiting.
    fn written(&self) -> bool {
        match &self.end {
            PendingEnd::Layer { writer, .. } => writer.is_finished(),
            PendingEnd::Unchanged(_) => true,
        }
    }
}

/// A resolved base image.
pub(super) struct BaseImage {
    pub(super) manifest_digest: Digest,
    pub(super) layers: Vec<LayerRef>,
    pub(super) config: ImageConfig,
}

impl StageRunner<'_> {
    pub(crate) fn run(&self) -> Result<StageOutcome, BuildError> {
        let result = self.run_inner();
        if result.is_err() && !self.keys_only {
            // First failure stops the whole build, as BuildKit does.
            self.engine.cancel();
        }
        result
    }

    fn run_inner(&self) -> Result<StageOutcome, BuildError> {
        let planned = &self.plan.stages[self.stage];
        let location = planned.stage.location;
        let (mut state, mut scope, triggers) = match &planned.base {
            Base::Scratch => {
                let key = KeyBuilder::new("base", None)
                    .str("image", "scratch")
                    .str("platform", &self.platform.to_string())
                    .finish();
                // BuildKit's `emptyImage`: scratch starts with the default
                // PATH and WorkingDir "/" in its config.
                let config = ImageConfig {
                    architecture: self.platform.architecture.clone(),
                    os: self.platform.os.clone(),
                    variant: self.platform.variant.clone(),
                    config: Some(ContainerConfig {
                        env: Some(vec![format!("PATH={DEFAULT_PATH}")]),
                        working_dir: Some("/".into()),
                        ..ContainerConfig::default()
                    }),
                    ..ImageConfig::default()
                };
                let state = self.fresh_state(key, Vec::new(), Some(Vec::new()), config);
                let env = [("PATH".to_string(), DEFAULT_PATH.to_string())];
                (state, self.plan.scope(self.stage, &env), Vec::new())
            }
            Base::Image(name) => {
                let mut base = self.base_image(name, location)?;
                if !self.keys_only {
                    // kiln build judges the platforms (BuildKit's
                    // InvalidBaseImagePlatform, a warning, not an error).
                    self.engine.emit(Event::StageBase {
                        stage: planned.display_name(),
                        platform: self.shared.multi.then(|| self.platform.to_string()),
                        line: location.start_line,
                        image: name.clone(),
                        manifest: base.manifest_digest.to_string(),
                        expected_platform: self.platform.to_string(),
                        image_platform: base.config.platform().to_string(),
                        layers: base
                            .layers
                            .iter()
                            .map(|l| l.descriptor.digest.to_string())
                            .collect(),
                    });
                }
                // BuildKit makes sure PATH is always set: a base image
                // without one gets the default in its config (convert.go).
                let container = base
                    .config
                    .config
                    .get_or_insert_with(ContainerConfig::default);
                let env = container.env.get_or_insert_with(Vec::new);
                if !env.iter().any(|kv| kv.split('=').next() == Some("PATH")) {
                    env.push(format!("PATH={DEFAULT_PATH}"));
                }
                let key = KeyBuilder::new("base", None)
                    .digest("manifest", &base.manifest_digest)
                    .str("platform", &self.platform.to_string())
                    .finish();
                let env = env_pairs(
                    base.config
                        .config
                        .as_ref()
                        .and_then(|c| c.env.as_deref())
                        .unwrap_or_default(),
                );
                let triggers = base
                    .config
                    .config
                    .as_ref()
                    .and_then(|c| c.on_build.clone())
                    .unwrap_or_default();
                let state = self.fresh_state(key, base.layers, None, base.config);
                (state, self.plan.scope(self.stage, &env), triggers)
            }
            Base::Stage(parent) => {
                let parent = self.board.get(*parent)?;
                let mut state = (*parent).clone();
                state.steps_run = 0;
                state.steps_cached = 0;
                // A CMD set in the parent stage counts as inherited here: an
                // ENTRYPOINT in this stage resets it, as BuildKit does.
                state.config.new_stage();
                let scope =
                    StageScope::resume(self.plan, self.stage, &parent.env, &parent.config_env);
                // A stage's ONBUILD instructions trigger in stages built on it.
                let triggers: Vec<String> = state
                    .config
                    .config
                    .config
                    .as_ref()
                    .and_then(|c| c.on_build.clone())
                    .unwrap_or_default();
                (state, scope, triggers)
            }
        };
        // Triggers run once, in the stage that uses the base; the new image
        // does not inherit them (BuildKit resets OnBuild).
        if let Some(c) = state.config.config.config.as_mut() {
            c.on_build = None;
        }
        let steps = (|| {
            for trigger in &triggers {
                let command = parse_trigger(trigger, location)?;
                self.step(Step::default(), &command, &mut state, &mut scope)?;
            }
            for (i, command) in planned.stage.commands.iter().enumerate() {
                if self.engine.cancelled() {
                    return Err(BuildError::Cancelled);
                }
                // The stages it reads (`COPY --from`, `RUN --mount=from=`)
                // are waited for before its clock starts: a step's time is
                // its own work, not another stage's. A failed one is the
                // step's error.
                for (_, source) in planned.sources.iter().filter(|(c, _)| *c == i) {
                    if let Source::Stage(stage) = source {
                        let _ = self.board.get(*stage);
                    }
                }
                let step = self.steps.get(i).copied().unwrap_or_default();
                self.step(step, command, &mut state, &mut scope)?;
            }
            Ok(())
        })();
        // A layer still being written is finished whatever happened: a
        // step that failed (or a cancel) after it does not lose it.
        let settled = self.settle(&mut state);
        match (steps, settled) {
            (Ok(()), Ok(())) => {}
            // A failed background commit cancels the steps after it.
            (Ok(()) | Err(BuildError::Cancelled), Err(e)) => return Err(e),
            (Err(e), _) => return Err(e),
        }
        state.env = scope
            .env()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        state.config_env = scope
            .config_env()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(state)
    }

    fn fresh_state(
        &self,
        key: Digest,
        layers: Vec<LayerRef>,
        chain: Option<Vec<Snapshot>>,
        config: ImageConfig,
    ) -> StageOutcome {
        StageOutcome {
            key,
            base_layers: layers.len(),
            keys: Vec::new(),
            layers,
            chain,
            config: ConfigState::from_base(config),
            env: Vec::new(),
            config_env: Vec::new(),
            steps_run: 0,
            steps_cached: 0,
        }
    }

    /// The base image: from the store, or pulled (always with `--pull`).
    pub(super) fn base_image(
        &self,
        name: &str,
        location: Location,
    ) -> Result<BaseImage, BuildError> {
        let store = &self.engine.store;
        let reference = Reference::parse(name)
            .map_err(|source| BuildError::Reference {
                location,
                name: name.to_string(),
                source,
            })?
            .with_default_tag();
        let known = if self.shared.request.pull {
            None
        } else {
            store
                .resolve(&reference)
                .map_err(BuildError::store("looking up the base image"))?
        };
        let desc = match known {
            Some(d) => d,
            None => {
                let cell = {
                    let mut pulls = self.shared.pulls.lock().unwrap_or_else(|e| e.into_inner());
                    pulls
                        .entry(format!("{reference}@{}", self.platform))
                        .or_default()
                        .clone()
                };
                // The first stage to get here pulls; the others wait for it.
                let pulled = cell.get_or_init(|| {
                    // The layers stay in the registry until a step or an
                    // export reads them (a build whose steps are all
                    // cached, pushed to the base's registry, fetches none).
                    let options = PullOptions {
                        platform: self.platform.clone(),
                        lazy_layers: true,
                        ..PullOptions::default()
                    };
                    self.engine
                        .runtime
                        .block_on(pull_image(&self.engine.client, store, &reference, &options))
                        .map(|p| p.target)
                        .map_err(Cause::new)
                });
                // Named with the FROM (or --from) line.
                pulled.clone().map_err(|source| BuildError::Pull {
                    location,
                    reference: reference.familiar(),
                    source,
                })?
            }
        };
        let manifest =
            store
                .select_manifest(&desc, self.platform)
                .map_err(|e| BuildError::BaseImage {
                    location,
                    reference: reference.familiar(),
                    source: Cause::new(e),
                })?;
        let config: ImageConfig = store
            .read_document::<ImageConfig>(&manifest.value().config)
            .map_err(BuildError::store("reading the base image's config"))?
            .into_value();
        // A base of another platform than the stage's is built on all the
        // same, as BuildKit does; the build warns (InvalidBaseImagePlatform,
        // from Event::StageBase).
        let layers = manifest
            .value()
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, diff)| LayerRef {
                descriptor: d.clone(),
                diff_id: diff.clone(),
            })
            .collect();
        Ok(BaseImage {
            manifest_digest: manifest.digest().clone(),
            layers,
            config,
        })
    }

    /// An image named by `--from`: its manifest digest and layers.
    pub(crate) fn base_image_public(
        &self,
        name: &str,
        location: Location,
    ) -> Result<(Digest, Vec<LayerRef>), BuildError> {
        let base = self.base_image(name, location)?;
        Ok((base.manifest_digest, base.layers))
    }

    /// One instruction: expanded, then applied to the config or run.
    fn step(
        &self,
        step: Step,
        command: &Command,
        state: &mut StageOutcome,
        scope: &mut StageScope<'_>,
    ) -> Result<(), BuildError> {
        let location = command.location();
        let expanded = scope
            .dispatch(command)
            .map_err(|e| BuildError::Instruction {
                location,
                source: Cause::new(e),
            })?;
        for w in scope.take_warnings() {
            if self.keys_only {
                // The build that follows the key pass reports them.
                continue;
            }
            self.engine.emit(Event::Warning {
                message: w.message,
                line: w.location.map(|l| l.start_line),
            });
        }
        let created = created_time(self.shared.encoding.epoch);
        let started = Instant::now();
        match &expanded {
            Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Workdir(_) => {
                if let Command::Workdir(_) = &expanded {
                    state.config.apply(&expanded, &[]);
                }
                self.fs_step(step, &expanded, state, scope, &created, started)
            }
            Command::Arg(arg) => {
                let pairs: Vec<String> = arg
                    .args
                    .iter()
                    .map(|a| match &a.value {
                        Some(v) => format!("{}={v}", a.key),
                        None => a.key.clone(),
                    })
                    .collect();
                state
                    .config
                    .history(&format!("ARG {}", pairs.join(" ")), &created, true);
                self.metadata_done(step.id, started);
                Ok(())
            }
            other => {
                let config_env = scope.config_env().to_key_values();
                if let Some(text) = state.config.apply(other, &config_env) {
                    state.config.history(&text, &created, true);
                }
                self.metadata_done(step.id, started);
                Ok(())
            }
        }
    }

    fn metadata_done(&self, step: Option<u32>, started: Instant) {
        if let Some(step) = step {
            self.engine.emit(Event::StepDone {
                step,
                duration_ms: millis(started.elapsed()),
                settled_after_ms: 0,
                cached: false,
                layer_size: None,
                layer_digest: None,
                config_only: true,
            });
        }
    }

    /// A step that changes the filesystem: keyed, cached, or run on a snapshot.
    fn fs_step(
        &self,
        step: Step,
        command: &Command,
        state: &mut StageOutcome,
        scope: &StageScope<'_>,
        created: &str,
        started: Instant,
    ) -> Result<(), BuildError> {
        let (key, history) = self.step_key(command, state, scope)?;
        if self.keys_only {
            state.keys.push(key.clone());
            state.key = key;
            return Ok(());
        }
        let key_text = key.to_string();
        let parent = state.key.clone();
        let id = step.id;
        let emit = |event: Event| self.engine.emit(event);
        if let Some(step) = id {
            emit(Event::StepKeyed {
                step,
                key: key_text.clone(),
            });
        }
        let cached = if self.shared.request.no_cache {
            None
        } else {
            self.cached(&key, &key_text, id)?
        };
        if let Some((record, from)) = cached {
            // Its layer goes on top of the one still being written.
            self.settle(state)?;
            let layer = match (&record.layer, &record.diff_id) {
                (Some(d), Some(diff)) => Some(LayerRef {
                    descriptor: d.clone(),
                    diff_id: diff.clone(),
                }),
                _ => None,
            };
            let size = layer.as_ref().map(|l| l.descriptor.size);
            let digest = layer.as_ref().map(|l| l.descriptor.digest.to_string());
            if let Some(layer) = layer {
                // Its snapshot may exist already; if not, the next step that
                // needs the chain unpacks it from the cached blob.
                state.layers.push(layer);
                state.chain = None;
                self.layers_grew(state);
            }
            self.record(
                state,
                &key,
                parent,
                size.is_some(),
                (command, created, started),
            );
            state.key = key;
            state.config.history(&history, created, size.is_none());
            state.steps_cached += 1;
            if let Some(step) = id {
                emit(Event::StepCached { step, from });
                emit(Event::StepDone {
                    step,
                    duration_ms: millis(started.elapsed()),
                    settled_after_ms: 0,
                    cached: true,
                    layer_size: size,
                    layer_digest: digest,
                    config_only: false,
                });
            }
            return Ok(());
        }

        if let Some(step) = id {
            emit(Event::StepStarted { step });
        }
        let info = StepInfo {
            id,
            location: command.location(),
            key: key.clone(),
            parent,
            command: command.clone(),
            created: created.to_string(),
            started,
        };
        let empty = self.execute(step, state, scope, info).inspect_err(|e| {
            if let Some(step) = id {
                emit(Event::StepFailed {
                    step,
                    duration_ms: millis(started.elapsed()),
                    reason: e.message(),
                    exit_code: e.exit_code(),
                });
            }
        })?;
        state.key = key;
        state.config.history(&history, created, empty);
        state.steps_run += 1;
        Ok(())
    }

    /// The end of a step that ran, once its layer is done: the cache
    /// record, the stage's layers and chain, `--cache-to`'s record, the
    /// event.
    fn step_finished(
        &self,
        state: &mut StageOutcome,
        info: &StepInfo,
        layer: Option<LayerRef>,
        chain: Option<Vec<Snapshot>>,
        written: Option<Instant>,
    ) -> Result<(), BuildError> {
        let size = layer.as_ref().map(|l| l.descriptor.size);
        let digest = layer.as_ref().map(|l| l.descriptor.digest.to_string());
        let record = CacheRecord {
            layer: layer.as_ref().map(|l| l.descriptor.clone()),
            diff_id: layer.as_ref().map(|l| l.diff_id.clone()),
            config: None,
        };
        self.engine
            .store
            .update(|w| w.put_cache(&info.key.to_string(), &record))
            .map_err(BuildError::store("recording the build cache"))?;
        if let Some(layer) = layer {
            state.layers.push(layer);
            self.layers_grew(state);
        }
        self.record(
            state,
            &info.key,
            info.parent.clone(),
            size.is_some(),
            (&info.command, &info.created, info.started),
        );
        state.chain = chain;
        if let Some(step) = info.id {
            // A layer written in the background ended the step before now.
            let now = Instant::now();
            let ended = written.unwrap_or(now);
            self.engine.emit(Event::StepDone {
                step,
                duration_ms: millis(ended.saturating_duration_since(info.started)),
                settled_after_ms: millis(now.saturating_duration_since(ended)),
                cached: false,
                layer_size: size,
                layer_digest: digest,
                config_only: false,
            });
        }
        Ok(())
    }

    /// Tells [`Engine::layers_ahead`] the target stage's layers so far.
    fn layers_grew(&self, state: &StageOutcome) {
        if let Some(tell) = &self.engine.layers_ahead
            && self.stage == self.plan.target
            && !self.keys_only
        {
            let layers: Vec<Descriptor> =
                state.layers.iter().map(|l| l.descriptor.clone()).collect();
            tell(self.target_platform, &layers);
        }
    }

    /// The stage's pending steps, oldest first.
    fn pending_steps(&self) -> std::sync::MutexGuard<'_, Vec<PendingStep>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finishes every step whose layer is being written in the background,
    /// oldest first, waiting for their layers. Called before anything
    /// needs the stage's layers or chain, and at the stage's end whatever
    /// happened.
    fn settle(&self, state: &mut StageOutcome) -> Result<(), BuildError> {
        self.settle_to(state, 0)
    }

    /// Finishes the pending steps whose layers are written, oldest first
    /// (each is finished on the chain with the one before), and waits for
    /// the oldest while more than `keep` remain. Called only when no root
    /// is stacked on them (the step on them sealed, or none activated). A
    /// failure is that step's, named with its line; the pending steps
    /// above it are lost with it (their writers joined: no thread goes on
    /// writing), as a step stopped by a failure is.
    fn settle_to(&self, state: &mut StageOutcome, keep: usize) -> Result<(), BuildError> {
        loop {
            let next = {
                let mut pending = self.pending_steps();
                match pending.first() {
                    Some(p) if pending.len() > keep || p.written() => pending.remove(0),
                    _ => return Ok(()),
                }
            };
            if let Err(e) = self.settle_one(state, next) {
                let above = std::mem::take(&mut *self.pending_steps());
                for lost in above {
                    if let PendingEnd::Layer { writer, .. } = lost.end {
                        let _ = writer.join();
                    }
                    if let Some(step) = lost.info.id {
                        self.engine.emit(Event::StepFailed {
                            step,
                            duration_ms: millis(lost.info.started.elapsed()),
                            reason: if matches!(e, BuildError::Cancelled) {
                                "not recorded: the build was stopped"
                            } else {
                                "not recorded: the layer of a step before it failed"
                            }
                            .to_string(),
                            exit_code: None,
                        });
                    }
                }
                return Err(e);
            }
        }
    }

    /// Finishes one pending step: waits for its layer, makes it a snapshot
    /// on the stage's chain (the one it was built on, with the pending
    /// steps below it finished) and ends the step as one committed at once
    /// ends. One that changed nothing ends as such a step does.
    fn settle_one(&self, state: &mut StageOutcome, pending: PendingStep) -> Result<(), BuildError> {
        let PendingStep { info, end } = pending;
        let (commit, writer) = match end {
            PendingEnd::Layer { commit, writer } => (commit, writer),
            PendingEnd::Unchanged(sealed) => {
                let chain = state.chain.clone();
                return self.step_finished(state, &info, None, chain, Some(sealed));
            }
        };
        if let Some(step) = info.id
            && !writer.is_finished()
        {
            self.engine.emit(Event::StepNote {
                step,
                text: "waiting for its layer to be written".to_string(),
            });
        }
        let (written, written_at) = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let parents = state.chain.clone().unwrap_or_default();
        let committed = written.and_then(|w| commit.finish(w, &parents));
        // Its directories go (the upper dir is a snapshot now, or the
        // commit failed) once no pending step above holds them.
        drop(commit);
        let ended = committed
            .map_err(|e| match e {
                // A second Ctrl-C: the build is cancelled, this step with it.
                SnapshotError::Stopped { .. } => BuildError::Cancelled,
                e => BuildError::Commit {
                    location: info.location,
                    source: Cause::new(e),
                },
            })
            .and_then(|c| self.committed(info.id, c, false))
            .and_then(|(layer, chain)| {
                self.step_finished(state, &info, layer, chain, Some(written_at))
            });
        if let (Err(e), Some(step)) = (&ended, info.id) {
            self.engine.emit(Event::StepFailed {
                step,
                duration_ms: millis(info.started.elapsed()),
                reason: e.message(),
                exit_code: None,
            });
        }
        ended
    }

    /// The cache record of `key`: the store's, else one a `--cache-from`
    /// has (its layer fetched now, and the record kept in the store), with
    /// the `--cache-from` it came from. A record whose layer blob is gone
    /// is no record: the step runs.
    fn cached(
        &self,
        key: &Digest,
        key_text: &str,
        step: Option<StepId>,
    ) -> Result<Option<(CacheRecord, Option<String>)>, BuildError> {
        let store = &self.engine.store;
        if let Some(record) = store
            .read(|r| r.cache(key_text))
            .map_err(BuildError::store("reading the build cache"))?
            && record.layer.as_ref().is_none_or(|l| {
                remote_cache::reachable(store, &self.engine.client, &self.engine.runtime, &l.digest)
            })
        {
            return Ok(Some((record, None)));
        }
        let Some(hit) = self.shared.remote.get(key) else {
            return Ok(None);
        };
        let remote = &self.shared.remote;
        if let Err(e) = remote.claim(hit, store, &self.engine.client, &self.engine.runtime) {
            self.engine.emit(Event::Warning {
                message: format!(
                    "{}: the cached layer could not be read ({}); running the step",
                    step.map_or_else(|| "a trigger".to_string(), |s| format!("step {s}")),
                    super::with_causes(&e)
                ),
                line: None,
            });
            return Ok(None);
        }
        let record = CacheRecord {
            layer: hit.layer.as_ref().map(|(d, _)| d.clone()),
            diff_id: hit.layer.as_ref().map(|(_, diff)| diff.clone()),
            config: None,
        };
        store
            .update(|w| w.put_cache(key_text, &record))
            .map_err(BuildError::store("recording the build cache"))?;
        Ok(Some((record, Some(remote.location(hit).to_string()))))
    }

    /// Notes a step's key among the stage's, and its result (its layer:
    /// the stage's top one when `made_layer`) for `--cache-to`.
    fn record(
        &self,
        state: &mut StageOutcome,
        key: &Digest,
        parent: Digest,
        made_layer: bool,
        (command, created, started): (&Command, &str, Instant),
    ) {
        state.keys.push(key.clone());
        if self.shared.request.cache_to.is_empty() {
            return;
        }
        let record = StepRecord {
            platform: self.target_platform.to_string(),
            key: key.clone(),
            parent,
            layer: state
                .layers
                .last()
                .filter(|_| made_layer)
                .map(|l| (l.descriptor.clone(), l.diff_id.clone())),
            stage: self.plan.stages[self.stage].display_name(),
            instruction: super::one_line(&command.origin().code),
            created: created.to_string(),
            millis: millis(started.elapsed()),
        };
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    /// The snapshots of the stage's layers, unpacking (and fetching) what
    /// is missing, for the step at `location`.
    fn chain(
        &self,
        state: &mut StageOutcome,
        location: Location,
    ) -> Result<Vec<Snapshot>, BuildError> {
        if let Some(chain) = &state.chain {
            return Ok(chain.clone());
        }
        let layers: Vec<Layer> = state
            .layers
            .iter()
            .map(|l| Layer {
                diff_id: l.diff_id.clone(),
                blob: l.descriptor.clone(),
            })
            .collect();
        let chain = self
            .engine
            .snapshotter
            .prepare(&layers)
            .map_err(|e| BuildError::Prepare {
                location,
                source: Cause::new(e),
            })?;
        state.chain = Some(chain.clone());
        Ok(chain)
    }

    pub(crate) fn commit_options(&self) -> CommitOptions {
        CommitOptions {
            compression: self.shared.request.compression,
            level: self.shared.request.compression_level,
            format: self.shared.request.format,
            ..CommitOptions::default()
        }
    }

    /// Runs a filesystem step on a fresh snapshot and ends it (its layer
    /// recorded, the chain to continue from set), or leaves its layer to
    /// be written in the background (then it is the stage's newest pending step).
    /// True if it changed nothing (no layer): known when it is sealed.
    fn execute(
        &self,
        step: Step,
        state: &mut StageOutcome,
        scope: &StageScope<'_>,
        info: StepInfo,
    ) -> Result<bool, BuildError> {
        let command = &info.command;
        let key = &info.key;
        let link = matches!(command, Command::Copy(c) if c.link)
            || matches!(command, Command::Add(a) if a.link);
        if let Command::Run(run) = command
            && self.engine.checks_emulation()
        {
            // Before its parents are fetched and unpacked.
            crate::container::check_runnable(self.platform)
                .map_err(BuildError::run(run.origin.location))?;
        }
        // A step runs on the files of the steps whose layers are still
        // being written (stacked on the newest); a --link one is made on
        // nothing, and stacked on the finished layers.
        let pipelined = self.engine.background_commits && !link;
        let below = if pipelined {
            self.pending_steps()
                .iter()
                .rev()
                .find_map(|p| match &p.end {
                    PendingEnd::Layer { commit, .. } => Some(Arc::clone(commit)),
                    PendingEnd::Unchanged(_) => None,
                })
        } else {
            self.settle(state)?;
            None
        };
        let parents = if link {
            Vec::new()
        } else if below.is_some() {
            state.chain.clone().unwrap_or_default()
        } else {
            self.chain(state, command.location())?
        };
        let below = below.as_ref();
        let active: Box<dyn ActiveSnapshot> = match command {
            // A RUN may run several times (retries), each time on a fresh
            // snapshot of the same clean parents.
            Command::Run(run) => {
                self.run_attempts(step, run, &parents, below, &short_key(key), state, scope)?
            }
            _ => {
                let active = self.activate(&parents, below, &short_key(key))?;
                match command {
                    Command::Workdir(_) => {
                        self.mkdir_workdir(&*active, &state.config, command.location())?
                    }
                    Command::Copy(_) | Command::Add(_) => self.copy(command, &*active, state)?,
                    _ => unreachable!("only filesystem steps reach execute"),
                }
                active
            }
        };
        let location = command.location();
        let commit_error = |e| BuildError::Commit {
            location,
            source: Cause::new(e),
        };
        if !pipelined {
            let committed = active
                .commit(&self.commit_options())
                .map_err(commit_error)?;
            let (layer, chain) = self.committed(step.id, committed, link)?;
            let empty = layer.is_none();
            self.step_finished(state, &info, layer, chain, None)?;
            return Ok(empty);
        }
        let sealed = active.seal(&self.commit_options()).map_err(commit_error);
        // No root stands on the pending steps any more: those written are
        // finished now. A step that left a layer to write, or changed
        // nothing, waits after the others (recorded in its turn), so the
        // next step need not wait for them; a failed seal is recorded
        // after them.
        match &sealed {
            Ok(Sealed::Pending(_) | Sealed::Unchanged) => self.settle_to(state, MAX_PENDING - 1)?,
            _ => self.settle(state)?,
        }
        match sealed? {
            Sealed::Committed(committed) => {
                let (layer, chain) = self.committed(step.id, *committed, false)?;
                let empty = layer.is_none();
                self.step_finished(state, &info, layer, chain, None)?;
                Ok(empty)
            }
            Sealed::Unchanged => {
                let mut pending = self.pending_steps();
                if pending.is_empty() {
                    drop(pending);
                    let chain = state.chain.clone();
                    self.step_finished(state, &info, None, chain, None)?;
                } else {
                    pending.push(PendingStep {
                        info,
                        end: PendingEnd::Unchanged(Instant::now()),
                    });
                }
                Ok(true)
            }
            Sealed::Pending(commit) => {
                // The chain under the pending steps left: the writer
                // compares with their files and this chain.
                let parents = state.chain.clone().unwrap_or_default();
                self.write_in_background(info, commit, parents)?;
                Ok(false)
            }
        }
    }

    /// Starts writing a sealed step's layer on a thread of its own, and
    /// makes it the stage's newest pending step. If the writing fails, the build
    /// is cancelled at once (the steps running on it stop), and the
    /// failure is the step's when it is settled.
    fn write_in_background(
        &self,
        info: StepInfo,
        commit: Arc<dyn PendingCommit>,
        parents: Vec<Snapshot>,
    ) -> Result<(), BuildError> {
        let canceller = self.engine.canceller();
        let writing = Arc::clone(&commit);
        let stop = Arc::clone(&self.engine.stop_writing);
        // Counted until the write ends (or the thread never starts).
        let counted = self.engine.count_writing();
        let writer = std::thread::Builder::new()
            .name("kiln-commit".to_string())
            .spawn(move || {
                // Below the steps in priority (its compression threads
                // inherit it): the next step's process is what the build
                // waits for, the layer only at the stage's end, when
                // nothing else runs.
                below_the_steps();
                let written = writing.write(&parents, &stop);
                drop(counted);
                if written.is_err() {
                    canceller.cancel();
                }
                (written, Instant::now())
            })
            .map_err(|e| BuildError::Commit {
                location: info.location,
                source: Cause::new(SnapshotError::io(
                    "starting the layer writer in",
                    self.engine.store.root(),
                )(e)),
            })?;
        if let Some(step) = info.id {
            self.engine.emit(Event::StepNote {
                step,
                text: "writing its layer in the background".to_string(),
            });
        }
        self.pending_steps().push(PendingStep {
            info,
            end: PendingEnd::Layer { commit, writer },
        });
        Ok(())
    }

    /// A step's root: on `parents`, or on the files of the step `below`
    /// (sealed, on `parents`) whose layer is still being written.
    pub(crate) fn activate(
        &self,
        parents: &[Snapshot],
        below: Option<&Arc<dyn PendingCommit>>,
        name: &str,
    ) -> Result<Box<dyn ActiveSnapshot>, BuildError> {
        Ok(match below {
            Some(pending) => Arc::clone(pending).activate_above(parents, name)?,
            None => self.engine.snapshotter.activate(parents, name)?,
        })
    }

    /// A committed step's layer, told and recorded in the build's
    /// encoding, and the chain to continue from (none after a --link
    /// step: prepared when a later step needs it).
    fn committed(
        &self,
        step: Option<StepId>,
        committed: Committed,
        link: bool,
    ) -> Result<(Option<LayerRef>, Option<Vec<Snapshot>>), BuildError> {
        if let (Some(step), Some(l)) = (step, &committed.layer) {
            let t = &l.timings;
            self.engine.emit(Event::StepCommitted {
                step,
                size: l.uncompressed_size,
                compressed: l.descriptor.size,
                diff_ms: millis(t.diff),
                archive_ms: millis(t.archive),
                store_ms: millis(t.store),
                snapshot_ms: millis(t.snapshot),
            });
        }
        if let Some(l) = &committed.layer {
            // Exporting it in the build's encoding converts nothing.
            crate::export::record_layer_encoding(
                &self.engine.store,
                &l.diff_id,
                &l.descriptor,
                &self.shared.encoding,
            )
            .map_err(|source| BuildError::Export {
                source: Cause::new(source),
            })?;
        }
        let layer = committed.layer.map(|l| LayerRef {
            descriptor: l.descriptor,
            diff_id: l.diff_id,
        });
        // A --link layer was made on nothing, so it does not depend on the
        // stage's layers: the chain to continue from (those plus this one)
        // is prepared when a later step needs it.
        let chain = (!link).then_some(committed.chain);
        Ok((layer, chain))
    }

    /// WORKDIR: the directory and its missing parents, owned by the USER,
    /// as BuildKit's `llb.Mkdir(..., WithParents, WithUser)`.
    fn mkdir_workdir(
        &self,
        active: &dyn ActiveSnapshot,
        config: &ConfigState,
        location: Location,
    ) -> Result<(), BuildError> {
        // The config keeps an absolute WORKDIR as written; the directory
        // is its clean path.
        let dir = super::config::clean(&config.workdir());
        let user = config.run_user();
        let owner = if user.is_empty() || user == "0" || user == "0:0" {
            (0, 0)
        } else {
            let u =
                kiln_sandbox::resolve_user(active.root(), &user).map_err(|e| BuildError::User {
                    location,
                    source: Cause::new(e),
                })?;
            (u.uid, u.gid)
        };
        crate::ops::mkdir_all(active.root(), &dir, 0o755, owner).map_err(BuildError::copy(location))
    }
}

/// `KEY=VALUE` strings to pairs.
fn env_pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// An ONBUILD trigger's text as one instruction.
fn parse_trigger(text: &str, location: Location) -> Result<Command, BuildError> {
    let bad = |e: kiln_dockerfile::Error| BuildError::Trigger {
        location,
        trigger: text.to_string(),
        source: Cause::new(e),
    };
    let ast = kiln_dockerfile::parse(text.as_bytes()).map_err(bad)?;
    let node = ast
        .children
        .first()
        .ok_or_else(|| BuildError::EmptyTrigger {
            location,
            trigger: text.to_string(),
        })?;
    let mut command = parse_instruction(node).map_err(|e| bad(e.into()))?;
    command.set_location(location);
    Ok(command)
}

/// 12 hex digits of a key, to name active snapshots.
fn short_key(key: &Digest) -> String {
    key.hex()[..12].to_string()
}

/// The `created` time of history entries and the config: SOURCE_DATE_EPOCH
/// when set, else now.
pub(crate) fn created_time(epoch: Option<i64>) -> String {
    let secs = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    kiln_image::document::rfc3339(secs)
}
