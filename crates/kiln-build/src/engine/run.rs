//! RUN in the engine: its cache key, and the hand-off to the RUN executor
//! (`crate::run`), with the sources its mounts read, under the watchdog
//! (`crate::watchdog`), attempt after attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_dockerfile::instructions::RunCommand;
use kiln_dockerfile::plan::{PROXY_ARGS, StageScope};
use kiln_image::Digest;
use kiln_sandbox::{NetworkMode, RunControl};

use super::cache_key::KeyBuilder;
use super::copy::From;
use super::stage::{StageOutcome, StageRunner, Step};
use super::{BuildError, BuildNetwork, one_line};
use crate::events::{Event, millis};
use crate::run::{
    MountSource, MountSources, RunError, RunStep, cache_key_parts, command_args, run_step,
};
use crate::snapshot::{ActiveSnapshot, PendingCommit, Snapshot};
use crate::watchdog::{StepPolicy, StepRecorder, StepWatch};

/// How one attempt of a RUN went wrong.
pub(crate) struct AttemptError {
    pub(crate) error: BuildError,
    /// Worth another attempt: the step stalled, timed out or exited
    /// non-zero (a missing secret or user fails the same way again).
    pub(crate) retryable: bool,
}

/// What `from=` of a RUN mount names, as the engine resolves it.
struct Sources<'a, 'b> {
    runner: &'a StageRunner<'b>,
    location: kiln_dockerfile::Location,
}

impl MountSources for Sources<'_, '_> {
    fn resolve(&self, from: Option<&str>) -> Result<MountSource, RunError> {
        let runner = self.runner;
        match runner.resolve_from(from) {
            // The build context, as it is on disk. (BuildKit binds the
            // transferred context, which leaves out .dockerignore'd files.)
            From::Context => Ok(MountSource::new(runner.shared.context.root(), "context")),
            other => {
                let key = match &other {
                    From::Stage(i) => format!("stage-{i}"),
                    From::Image(name) => format!("image-{name}"),
                    From::Context => unreachable!(),
                };
                // RunError sits below the engine: it keeps the text.
                let view = runner.mount_source(&other, self.location).map_err(|e| {
                    RunError::MountFrom {
                        from: from.unwrap_or_default().to_string(),
                        reason: e.message(),
                    }
                })?;
                let root = view.root().to_path_buf();
                Ok(MountSource::new(root, key).with_guard(view))
            }
        }
    }
}

impl StageRunner<'_> {
    fn default_network(&self) -> NetworkMode {
        match self.shared.request.network {
            BuildNetwork::Host => NetworkMode::Host,
            BuildNetwork::None => NetworkMode::None,
        }
    }

    /// A RUN's key: the command as BuildKit runs it (shell and heredoc
    /// script included), its environment (without proxies, which must not
    /// change results), user, workdir, and every mount (never secret or
    /// cache contents) with the content of what its `from=` brings in.
    pub(crate) fn run_key(
        &self,
        run: &RunCommand,
        state: &StageOutcome,
        scope: &StageScope<'_>,
    ) -> Result<(Digest, String), BuildError> {
        let location = run.origin.location;
        let args = command_args(run, &state.config.shell()).map_err(BuildError::run(location))?;
        let env: Vec<String> = scope
            .run_env()
            .iter()
            .filter(|(k, _)| !PROXY_ARGS.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let workdir = state.config.workdir();
        let mut parts = Vec::new();
        for part in cache_key_parts(run, &workdir, self.default_network())
            .map_err(BuildError::run(location))?
        {
            let mut text = part.text;
            if let Some(content) = part.content {
                let from = self.resolve_from(content.from.as_deref());
                let key = match from {
                    From::Context => {
                        let digest = self
                            .shared
                            .context
                            .digest(std::slice::from_ref(&content.path), &[], self.shared.memo)
                            .map_err(BuildError::context(location))?;
                        format!("context:{digest}")
                    }
                    From::Stage(i) => format!("stage:{}:{}", self.board.get(i)?.key, content.path),
                    From::Image(name) => format!(
                        "image:{}:{}",
                        self.base_image_public(&name, location)?.0,
                        content.path
                    ),
                };
                text.push('\0');
                text.push_str(&key);
            }
            parts.push(text);
        }
        let key = KeyBuilder::new("run", Some(&state.key))
            .str("platform", &self.platform.to_string())
            .list("argv", &args.args)
            .list("env", &env)
            .str("user", &state.config.user())
            .str("workdir", &workdir)
            .list("mounts", &parts)
            .finish();
        Ok((key, format!("RUN {}", args.args.join(" "))))
    }

    /// Runs a RUN step on a fresh snapshot of `parents` (or of the sealed
    /// step `below`, on them; named `name`),
    /// again on a new one after a stall, a timeout or a non-zero exit
    /// while the step has retries left, and returns the snapshot of the
    /// attempt that succeeded, to commit. Each failed attempt's snapshot
    /// is discarded before the next starts, after a backoff that a cancel
    /// of the build cuts short. The policy is the build's with the step's
    /// own `# kiln:` settings, as planned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_attempts(
        &self,
        step: Step,
        run: &RunCommand,
        parents: &[Snapshot],
        below: Option<&Arc<dyn PendingCommit>>,
        name: &str,
        state: &StageOutcome,
        scope: &StageScope<'_>,
    ) -> Result<Box<dyn ActiveSnapshot>, BuildError> {
        let policy = self.shared.request.step_policy().with(&step.settings);
        let step = step.id;
        let attempts = policy.attempts();
        let mut attempt = 1;
        loop {
            let active = self.activate(parents, below, name)?;
            let failure =
                match self.run_command(step, run, &*active, state, scope, &policy, attempt) {
                    Ok(()) => {
                        if let Some(step) = step.filter(|_| attempt > 1) {
                            self.shared
                                .attempts
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(step, attempt);
                        }
                        return Ok(active);
                    }
                    Err(failure) => failure,
                };
            if !failure.retryable || attempt >= attempts || self.engine.cancelled() {
                // Dropping it unmounts and removes it; the step's error is
                // the one worth reporting.
                let _ = active.discard();
                return Err(with_attempts(failure.error, attempt));
            }
            active.discard()?;
            let delay = policy.backoff.delay(attempt);
            attempt += 1;
            self.engine.emit(Event::StepRetry {
                step: step.unwrap_or(0),
                attempt,
                max: attempts,
                reason: failure.error.message(),
                delay_ms: millis(delay),
            });
            if !self.pause(delay) {
                return Err(BuildError::Cancelled);
            }
        }
    }

    /// Waits `delay` unless the build is cancelled first; false if it was.
    fn pause(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.engine.cancelled() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Runs the command in the step's root, once, under the watchdog; a
    /// cancel of the build reaches the running process tree.
    #[allow(clippy::too_many_arguments)]
    fn run_command(
        &self,
        step: Option<u32>,
        run: &RunCommand,
        active: &dyn ActiveSnapshot,
        state: &StageOutcome,
        scope: &StageScope<'_>,
        policy: &StepPolicy,
        attempt: u32,
    ) -> Result<(), AttemptError> {
        let location = run.origin.location;
        let control = RunControl::new();
        self.engine
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(control.clone());
        if self.engine.cancelled() {
            control.cancel();
        }
        let env: Vec<(String, String)> = scope
            .run_env()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sources = Sources {
            runner: self,
            location,
        };
        let place = format!("{}:{}", self.shared.dockerfile_name, location.start_line);
        let command = one_line(&run.origin.code);
        let recorder = StepRecorder::new();
        let watch = StepWatch {
            step,
            place: &place,
            command: &command,
            limits: policy.limits,
            attempt,
            attempts: policy.attempts(),
            control: &control,
            recorder: &recorder,
            events: &self.engine.events,
            sample_every: self.engine.sample_every,
        };
        let (result, breach) = watch.run(|| {
            run_step(
                self.engine.executor.as_ref(),
                &RunStep {
                    rootfs: active.root(),
                    command: run,
                    shell: state.config.shell(),
                    env,
                    user: state.config.run_user(),
                    workdir: state.config.workdir(),
                    default_network: self.default_network(),
                    sources: &sources,
                    secrets: &self.shared.secrets,
                    caches: &self.shared.caches,
                    scratch: &self.shared.scratch,
                    control: &control,
                    step: step.unwrap_or(0),
                    events: &self.engine.events,
                    observer: Some(&recorder),
                },
            )
        });
        self.engine
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !c.same_as(&control));
        if let (Err(RunError::Failed { .. }), Some(step)) = (&result, step) {
            // A step that filled the disk says so only in its output.
            if let Ok(space) = kiln_fs::Space::of(self.engine.store.root())
                && space.nearly_full()
            {
                self.engine.emit(Event::StepNote {
                    step,
                    text: format!(
                        "the filesystem of kiln's store is full: {}",
                        space.describe()
                    ),
                });
            }
        }
        let (error, retryable) = match (result, breach) {
            (Ok(_), _) => return Ok(()),
            // The watchdog killed it: whatever the run said after is the kill.
            (Err(_), Some(breach)) => (
                BuildError::breach(breach, step, place, location, attempt),
                true,
            ),
            (Err(RunError::Cancelled), None) => (BuildError::Cancelled, false),
            (Err(e @ RunError::Failed { .. }), None) => (BuildError::run(location)(e), true),
            (Err(e), None) => (BuildError::run(location)(e), false),
        };
        Err(AttemptError { error, retryable })
    }
}

/// The error of a step's last attempt, saying how many it had.
fn with_attempts(error: BuildError, attempts: u32) -> BuildError {
    match error {
        BuildError::Run {
            location, source, ..
        } => BuildError::Run {
            location,
            attempts,
            source,
        },
        other => other,
    }
}
