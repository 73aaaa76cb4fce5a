//! Stage images (docs/CACHE.md, "Stage images"): `--stage-image NAME=REPO`
//! pushes the result of stage NAME as the runnable image `REPO:<stage key>`,
//! and a later build whose stage key is the same takes that image instead
//! of building the stage; `kiln stage-key` prints the key.
//!
//! - The stage key is known without building: the key pass runs the stage
//!   and the stages it reads through [`StageRunner`] with `keys_only` set
//!   (instructions expanded and applied to the config, each filesystem
//!   step keyed as the build keys it, nothing looked up or run).
//!   A step's key never depends on what an earlier step produced (COPY
//!   --from and mounts of a stage are keyed by that stage's key), so no
//!   input needs a build; an `ADD <url>` without `--checksum` is
//!   downloaded, as the build does to key it, and a base image is pulled
//!   as builds pull it (its manifest and config; its layers stay in the
//!   registry).
//! - [`stage_key`]: the stage's last step key (which chains everything the
//!   stage reads), its platform and the image config it ends with.
//! - Before a build's stages start, the image of each `--stage-image`
//!   stage is looked up (`HEAD`); one that is there is pulled as a `FROM`
//!   of it would be, and stands for the stage: its layers and config, the
//!   key pass's keys and variables. Stages that only it needed are not
//!   built.
//! - After the build, the stages that were built are pushed, each as an
//!   image of its own (config and manifest for the stage's platform).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use kiln_dockerfile::plan::Plan;
use kiln_image::{Digest, Platform, Reference};
use kiln_registry::{PushedImage, TransferError, push_descriptor};

use super::cache_key::KeyBuilder;
use super::config::ConfigState;
use super::error::Cause;
use super::stage::{StageOutcome, StageRunner};
use super::{Board, BuildError, BuiltImage, Engine, Shared, with_causes};
use crate::events::Event;
use crate::export::{self, Encoding};

/// `--stage-image NAME=REPO`: stage NAME's image is `REPO:<stage key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageImage {
    /// The stage's name, lower-cased as the Dockerfile's stage names are.
    pub stage: String,
    /// Where its images go: a repository, without tag or digest (the tag
    /// is the stage key).
    pub repository: Reference,
}

impl StageImage {
    /// Parses `NAME=REPO`.
    pub fn parse(spec: &str) -> Result<StageImage, BuildError> {
        let bad = |reason: &str| BuildError::StageImage {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (stage, repo) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=REPO (a stage name and a repository)"))?;
        if stage.is_empty() {
            return Err(bad("the stage name is empty"));
        }
        let repository = Reference::parse(repo).map_err(|e| bad(&e.to_string()))?;
        if repository.tag.is_some() || repository.digest.is_some() {
            return Err(bad(
                "give a repository without a tag or digest: the tag is the stage key",
            ));
        }
        Ok(StageImage {
            stage: stage.to_lowercase(),
            repository,
        })
    }

    /// The tag of the image of the stage whose key is `key`: the key's 64
    /// hex digits (a tag may have 128 of `[A-Za-z0-9_.-]`).
    pub fn tag(key: &Digest) -> String {
        key.hex().to_string()
    }

    /// The image of the stage whose key is `key`: `REPO:<tag>`.
    pub fn reference(&self, key: &Digest) -> Reference {
        Reference {
            tag: Some(StageImage::tag(key)),
            digest: None,
            ..self.repository.clone()
        }
    }
}

/// The index of the stage named `name` (any case), or why there is none.
pub(super) fn find_stage(plan: &Plan, name: &str) -> Result<usize, String> {
    let wanted = name.to_lowercase();
    plan.stages
        .iter()
        .position(|s| s.name.as_deref() == Some(wanted.as_str()))
        .ok_or_else(|| {
            let names: Vec<&str> = plan
                .stages
                .iter()
                .filter_map(|s| s.name.as_deref())
                .collect();
            if names.is_empty() {
                format!("the Dockerfile has no stage named {name:?} (no stage has a name)")
            } else {
                format!(
                    "the Dockerfile has no stage named {name:?} (its stages: {})",
                    names.join(", ")
                )
            }
        })
}

/// A stage's key as it ends, on `platform` (the stage's own): the key of
/// its last filesystem step, or of its base when it has none (a chain
/// over the base image's manifest digest, every step's definition and the
/// content of what each reads, stages read included), and the image config
/// the stage ends with, which metadata instructions after the last step
/// change too. The config's history and times are left out: they say when
/// and how, not what.
pub(crate) fn stage_key(outcome: &StageOutcome, platform: &Platform) -> Digest {
    let config = &outcome.config.config;
    let c = config.config.clone().unwrap_or_default();
    let mut k = KeyBuilder::new("stage", Some(&outcome.key));
    k.str("platform", &platform.to_string())
        .opt("author", config.author.as_deref())
        .opt("user", c.user.as_deref())
        .opt_list("env", c.env.as_deref())
        .opt_list("entrypoint", c.entrypoint.as_deref())
        .opt_list("cmd", c.cmd.as_deref())
        .opt_list("shell", c.shell.as_deref())
        .opt("workdir", c.working_dir.as_deref())
        .opt_list(
            "labels",
            c.labels
                .as_ref()
                .map(|m| {
                    m.iter()
                        .flat_map(|(k, v)| [k.clone(), v.clone()])
                        .collect::<Vec<_>>()
                })
                .as_deref(),
        )
        .opt_list(
            "ports",
            c.exposed_ports
                .as_ref()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .as_deref(),
        )
        .opt_list(
            "volumes",
            c.volumes
                .as_ref()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .as_deref(),
        )
        .opt("stop-signal", c.stop_signal.as_deref())
        .opt(
            "stop-timeout",
            c.stop_timeout.map(|t| t.to_string()).as_deref(),
        )
        .opt(
            "args-escaped",
            c.args_escaped.map(|b| b.to_string()).as_deref(),
        )
        .opt_list("onbuild", c.on_build.as_deref());
    match &c.healthcheck {
        None => k.opt("healthcheck", None),
        Some(h) => {
            let number = |n: Option<i64>| n.map(|n| n.to_string());
            k.opt("healthcheck", Some(""))
                .opt_list("test", h.test.as_deref())
                .opt("interval", number(h.interval).as_deref())
                .opt("timeout", number(h.timeout).as_deref())
                .opt("start-period", number(h.start_period).as_deref())
                .opt("start-interval", number(h.start_interval).as_deref())
                .opt("retries", number(h.retries).as_deref())
        }
    };
    k.finish()
}

/// What one platform's build does with its `--stage-image` stages.
#[derive(Default)]
pub(super) struct StageImages<'r> {
    /// Stages taken from their image, their outcomes ready for the board.
    pub(super) reused: HashMap<usize, StageOutcome>,
    /// Stages to push once built (if the target needs them built).
    pub(super) to_push: Vec<(usize, &'r StageImage)>,
}

/// A stage built by this build, to push as `reference`.
pub(super) struct StagePush {
    pub(super) stage: String,
    pub(super) reference: Reference,
    pub(super) image: BuiltImage,
}

impl Engine {
    /// The outcome of each of `stages` on `platform`, keyed without
    /// building: each and the stages it reads go through the key pass, in
    /// file order (a stage reads only stages above it).
    pub(super) fn key_stages(
        &self,
        plan: &Plan,
        platform: &Platform,
        stage_platforms: &HashMap<usize, Platform>,
        shared: &Shared<'_>,
        stages: &[usize],
    ) -> Result<HashMap<usize, StageOutcome>, BuildError> {
        let mut order = BTreeSet::new();
        for &stage in stages {
            order.extend(
                plan.order_for(stage)
                    .map_err(kiln_dockerfile::Error::from)?,
            );
        }
        let board = Board::default();
        for i in order {
            let runner = StageRunner {
                engine: self,
                plan,
                stage: i,
                platform: &stage_platforms[&i],
                target_platform: platform,
                shared,
                board: &board,
                steps: Vec::new(),
                downloads: Default::default(),
                scratch_dirs: Default::default(),
                pending: Default::default(),
                keys_only: true,
            };
            let outcome = runner.run()?;
            board.finish(i, Ok(outcome));
        }
        stages
            .iter()
            .map(|&s| Ok((s, (*board.get(s)?).clone())))
            .collect()
    }

    /// Decides, before one platform's stages start, which `--stage-image`
    /// stages come from their image: each one's key, then its image looked
    /// up, then pulled if the target still needs it. An image that is not
    /// there, or cannot be looked up or pulled, means the stage is built
    /// (and pushed after). `--no-cache` looks nothing up.
    pub(super) fn stage_images<'r>(
        &self,
        plan: &Plan,
        platform: &Platform,
        stage_platforms: &HashMap<usize, Platform>,
        shared: &Shared<'r>,
    ) -> Result<StageImages<'r>, BuildError> {
        let mut wanted = Vec::new();
        for spec in &shared.request.stage_images {
            let stage = find_stage(plan, &spec.stage).map_err(|reason| BuildError::StageImage {
                spec: format!("{}={}", spec.stage, spec.repository.name()),
                reason,
            })?;
            // One the target does not need is said once, in `build`.
            if plan.order.contains(&stage) {
                wanted.push((stage, spec));
            }
        }
        if wanted.is_empty() || shared.request.no_cache {
            return Ok(StageImages {
                reused: HashMap::new(),
                to_push: wanted,
            });
        }
        let on = if shared.multi {
            format!(" ({platform})")
        } else {
            String::new()
        };
        let stages: Vec<usize> = wanted.iter().map(|(s, _)| *s).collect();
        let keyed = self.key_stages(plan, platform, stage_platforms, shared, &stages)?;
        let mut found: HashMap<usize, Reference> = HashMap::new();
        for (stage, spec) in &wanted {
            let image = spec.reference(&stage_key(&keyed[stage], &stage_platforms[stage]));
            let name = plan.stages[*stage].display_name();
            match self.runtime.block_on(self.client.head_manifest(&image)) {
                Ok(Some(_)) => {
                    found.insert(*stage, image);
                }
                Ok(None) => self.emit(Event::Note {
                    message: format!("stage {name}{on}: no image {image} yet, building the stage"),
                }),
                Err(e) => self.emit(Event::Warning {
                    message: format!(
                        "stage {name}{on}: image {image} not looked up ({}); building the stage",
                        with_causes(&e)
                    ),
                    line: None,
                }),
            }
        }
        // Pulled only if the target still needs it once the others found
        // stand for their stages; a pull that fails makes the stage build,
        // which may need stages a found one below it stood for.
        let mut reused = HashMap::new();
        loop {
            let needed = needed_stages(plan, &found.keys().copied().collect());
            let Some(stage) = needed
                .into_iter()
                .find(|s| found.contains_key(s) && !reused.contains_key(s))
            else {
                break;
            };
            let image = &found[&stage];
            let name = plan.stages[stage].display_name();
            let board = Board::default();
            let runner = StageRunner {
                engine: self,
                plan,
                stage,
                platform: &stage_platforms[&stage],
                target_platform: platform,
                shared,
                board: &board,
                steps: Vec::new(),
                downloads: Default::default(),
                scratch_dirs: Default::default(),
                pending: Default::default(),
                keys_only: false,
            };
            match runner.reused(&keyed[&stage], image) {
                Ok(outcome) => {
                    self.emit(Event::Note {
                        message: format!(
                            "stage {name}{on}: using image {image}; its steps do not run"
                        ),
                    });
                    reused.insert(stage, outcome);
                }
                Err(e) => {
                    self.emit(Event::Warning {
                        message: format!(
                            "stage {name}{on}: image {image} could not be pulled ({}); building the stage",
                            e.message()
                        ),
                        line: None,
                    });
                    found.remove(&stage);
                }
            }
        }
        let to_push = wanted
            .into_iter()
            .filter(|(s, _)| !reused.contains_key(s))
            .collect();
        Ok(StageImages { reused, to_push })
    }

    /// Pushes the stage images a build made, each in the build's encoding
    /// (an image named twice, by two platforms keying a stage alike, once).
    pub(super) fn push_stage_images(
        &self,
        pushes: &[StagePush],
        encoding: &Encoding,
    ) -> Result<(), BuildError> {
        let mut pushed = HashSet::new();
        for push in pushes {
            if !pushed.insert(push.reference.to_string()) {
                continue;
            }
            let began = Instant::now();
            let failed = |source: TransferError| BuildError::StageImagePush {
                stage: push.stage.clone(),
                image: push.reference.to_string(),
                source: Cause::new(source),
            };
            let (manifest, _) = export::encode_image(
                &self.store,
                &push.image.manifest,
                std::slice::from_ref(&push.image),
                encoding,
            )
            .map_err(|e| BuildError::Export {
                source: Cause::new(e),
            })?;
            let done: PushedImage = self
                .runtime
                .block_on(push_descriptor(
                    &self.client,
                    &self.store,
                    &manifest,
                    &push.reference,
                    &push.reference,
                    kiln_registry::DEFAULT_CONCURRENCY,
                ))
                .map_err(failed)?;
            self.emit(Event::Note {
                message: format!(
                    "stage {}: pushed image {} ({} layers uploaded) in {:.1}s",
                    push.stage,
                    push.reference,
                    done.uploaded,
                    began.elapsed().as_secs_f64()
                ),
            });
        }
        Ok(())
    }
}

impl StageRunner<'_> {
    /// The stage as its image `image` has it, pulled as a `FROM` of it
    /// would be: its layers and config (env, workdir, user, history...),
    /// with the key pass's `keyed` keys and variables, so that the stages
    /// built on it key their steps as if it had been built.
    fn reused(&self, keyed: &StageOutcome, image: &Reference) -> Result<StageOutcome, BuildError> {
        let location = self.plan.stages[self.stage].stage.location;
        let base = self.base_image(&image.to_string(), location)?;
        Ok(StageOutcome {
            layers: base.layers,
            chain: None,
            config: ConfigState::from_base(base.config),
            steps_run: 0,
            steps_cached: 0,
            ..keyed.clone()
        })
    }
}

/// The stages of `plan.order` the target needs when the stages in
/// `reused` stand as they are (they are listed, what only they read is
/// not), in build order.
pub(super) fn needed_stages(plan: &Plan, reused: &HashSet<usize>) -> Vec<usize> {
    let mut needed = HashSet::new();
    let mut next = vec![plan.target];
    while let Some(stage) = next.pop() {
        if needed.insert(stage) && !reused.contains(&stage) {
            next.extend(plan.stages[stage].stage_deps());
        }
    }
    plan.order
        .iter()
        .copied()
        .filter(|s| needed.contains(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_image_is_a_stage_name_and_a_repository_without_tag() {
        let spec = StageImage::parse("Base=reg.example:5000/app/base").unwrap();
        assert_eq!(spec.stage, "base", "stage names are lower case");
        assert_eq!(spec.repository.name(), "reg.example:5000/app/base");
        let key = Digest::of(b"stage");
        assert_eq!(
            spec.reference(&key).to_string(),
            format!("reg.example:5000/app/base:{}", key.hex())
        );
        let message = |s: &str| StageImage::parse(s).unwrap_err().to_string();
        assert_eq!(
            message("base"),
            "--stage-image base: expected NAME=REPO (a stage name and a repository)"
        );
        assert_eq!(
            message("=reg/app"),
            "--stage-image =reg/app: the stage name is empty"
        );
        assert!(
            message("base=reg.example/app:1").ends_with("the tag is the stage key"),
            "{}",
            message("base=reg.example/app:1")
        );
        assert!(
            message("base=Not A Ref")
                .starts_with("--stage-image base=Not A Ref: invalid reference")
        );
    }
}
