//! RUN in the engine: its cache key, and the hand-off to the RUN executor
//! (`crate::run`), with the sources its mounts read.

use kiln_dockerfile::instructions::RunCommand;
use kiln_dockerfile::plan::{PROXY_ARGS, StageScope};
use kiln_image::Digest;
use kiln_sandbox::{NetworkMode, RunControl};

use super::cache_key::KeyBuilder;
use super::copy::From;
use super::stage::{StageOutcome, StageRunner};
use super::{BuildError, BuildNetwork};
use crate::run::{
    MountSource, MountSources, RunError, RunStep, cache_key_parts, command_args, run_step,
};
use crate::snapshot::ActiveSnapshot;

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
                let view = runner.mount_source(&other, self.location).map_err(|e| {
                    RunError::MountFrom {
                        from: from.unwrap_or_default().to_string(),
                        reason: e.to_string(),
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
        let fail = |e: RunError| BuildError::step(location, e.to_string());
        let args = command_args(run, &state.config.shell()).map_err(fail)?;
        let env: Vec<String> = scope
            .run_env()
            .iter()
            .filter(|(k, _)| !PROXY_ARGS.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let workdir = state.config.workdir();
        let mut parts = Vec::new();
        for part in cache_key_parts(run, &workdir, self.default_network()).map_err(fail)? {
            let mut text = part.text;
            if let Some(content) = part.content {
                let from = self.resolve_from(content.from.as_deref());
                let key = match from {
                    From::Context => {
                        let digest = self
                            .shared
                            .context
                            .digest(std::slice::from_ref(&content.path), &[], self.shared.memo)
                            .map_err(|e| BuildError::step(location, e.to_string()))?;
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

    /// Runs the command in the step's root; a cancel of the build reaches
    /// the running process tree.
    pub(crate) fn run_command(
        &self,
        step: Option<u32>,
        run: &RunCommand,
        active: &ActiveSnapshot,
        state: &StageOutcome,
        scope: &StageScope<'_>,
    ) -> Result<(), BuildError> {
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
        let result = run_step(
            self.engine.executor.as_ref(),
            &RunStep {
                rootfs: active.root(),
                command: run,
                shell: state.config.shell(),
                env,
                user: state.config.user(),
                workdir: state.config.workdir(),
                default_network: self.default_network(),
                sources: &sources,
                secrets: &self.shared.secrets,
                caches: &self.shared.caches,
                scratch: &self.shared.scratch,
                control: &control,
                step: step.unwrap_or(0),
                events: &self.engine.events,
            },
        );
        self.engine
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !c.same_as(&control));
        match result {
            Ok(_) => Ok(()),
            Err(RunError::Cancelled) => Err(BuildError::Cancelled),
            Err(e) => Err(BuildError::step(location, e.to_string())),
        }
    }
}
