//! Typed instructions → a build plan: which stages a target needs and in
//! which order, what each starts from, and the ARG and ENV values every
//! instruction sees (BuildKit's `dockerfile2llb` dispatch, without its I/O).
//!
//! [`plan`] resolves the stage graph once per build: global `ARG`s with
//! `--build-arg` overrides and the automatic platform args, `FROM` names and
//! `--platform`, stage references (`FROM stage`, `COPY --from`,
//! `RUN --mount=from=`), `--target`, and the build args nothing consumes.
//! A [`StageScope`] then walks one stage's instructions in order, expanding
//! each the way BuildKit does with the environment at that point; the engine
//! feeds it the base image's config environment, which only it can fetch.

mod error;
mod scope;

use std::collections::{BTreeMap, BTreeSet};

use crate::instructions::{Command, Dockerfile, Stage};
use crate::shell::Lex;
use crate::suggest::suggest;
use crate::{Location, instructions};

pub use self::error::PlanError;
pub use self::scope::{DEFAULT_PATH, EnvList, StageScope};
pub use kiln_platform::Platform;

/// Proxy settings a build may pass without any `ARG` declaring them; RUN
/// steps get them in their environment, but they stay out of cache keys
/// and image history (BuildKit's predefined args).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The automatic platform args, set in the global scope and inherited by an
/// `ARG` of the same name inside a stage.
pub const PLATFORM_ARGS: [&str; 9] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

/// What a build asks of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg KEY=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference, expanded.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where `COPY --from` or `RUN --mount=from=` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
}

/// One stage of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform=...`, expanded.
    pub platform: Option<Platform>,
    /// For each instruction (by index in `stage.commands`) the stages and
    /// images it reads besides the build context.
    pub sources: Vec<(usize, Source)>,
    /// The stage's instructions, unexpanded (a [`StageScope`] expands them).
    pub stage: Stage,
}

impl PlannedStage {
    /// The stages this one needs built first.
    pub fn stage_deps(&self) -> BTreeSet<usize> {
        let mut deps: BTreeSet<usize> = self
            .sources
            .iter()
            .filter_map(|(_, s)| {
                if let Source::Stage(i) = s {
                    Some(*i)
                } else {
                    None
                }
            })
            .collect();
        if let Base::Stage(i) = self.base {
            deps.insert(i);
        }
        deps
    }

    /// How the stage is called in messages: its name or `stage-N`.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// A finding that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanWarning {
    pub message: String,
    pub location: Option<Location>,
}

/// The resolved stage graph of one build.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The Dockerfile's escape character, for expansion.
    pub escape: char,
    /// Global-scope args after `--build-arg` overrides, platform args first.
    pub global_args: EnvList,
    /// Every stage of the Dockerfile, in file order.
    pub stages: Vec<PlannedStage>,
    /// The stage being built.
    pub target: usize,
    /// The stages the target needs, each after the stages it reads.
    pub order: Vec<usize>,
    pub warnings: Vec<PlanWarning>,
    pub options: BuildOptions,
}

impl Plan {
    /// A scope to expand `stage`'s instructions. `base_env` is the base
    /// image's config environment (`KEY=VALUE` order kept); for a stage based
    /// on another stage, pass that stage's finished scope instead via
    /// [`StageScope::from_parent`].
    pub fn scope(&self, stage: usize, base_env: &[(String, String)]) -> StageScope<'_> {
        StageScope::new(self, stage, base_env)
    }

    /// The stages `stage` needs, each after the stages it reads, `stage`
    /// last: [`Plan::order`] as if it were the target (the args stay the
    /// build's; `TARGETSTAGE` names the build's target).
    pub fn order_for(&self, stage: usize) -> Result<Vec<usize>, PlanError> {
        build_order(&self.stages, stage)
    }
}

/// Resolves the stages, args and target of a build.
pub fn plan(
    dockerfile: &Dockerfile,
    escape: char,
    options: &BuildOptions,
) -> Result<Plan, PlanError> {
    if dockerfile.stages.is_empty() {
        return Err(PlanError::NoStages);
    }
    let lex = Lex::new(escape);
    let target_name = match &options.target {
        Some(t) => t.clone(),
        None => dockerfile
            .stages
            .last()
            .and_then(|s| s.name.clone())
            .unwrap_or_default(),
    };
    let global_args = global_args(dockerfile, &lex, options, &target_name)?;
    let mut warnings = Vec::new();

    // FROM names and platforms, expanded against the global args; a base
    // naming an earlier stage (exactly: names are lower case) is that stage.
    let mut stages: Vec<PlannedStage> = Vec::with_capacity(dockerfile.stages.len());
    for (index, stage) in dockerfile.stages.iter().enumerate() {
        let location = stage.location;
        let expanded = lex
            .process_word_with_matches(&stage.base_name, &global_args)
            .map_err(|e| PlanError::expand(e, location))?;
        warn_undeclared(&expanded.unmatched, &global_args, location, &mut warnings);
        if expanded.value.is_empty() {
            return Err(PlanError::BlankBaseName {
                base: stage.base_name.clone(),
                location,
            });
        }
        let base = if let Some(parent) = stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&expanded.value))
        {
            Base::Stage(parent)
        } else if expanded.value.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else {
            Base::Image(expanded.value)
        };
        let platform = match &stage.platform {
            None => None,
            Some(raw) => {
                let p = lex
                    .process_word_with_matches(raw, &global_args)
                    .map_err(|e| PlanError::expand(e, location))?;
                warn_undeclared(&p.unmatched, &global_args, location, &mut warnings);
                if p.value.is_empty() {
                    return Err(PlanError::EmptyPlatform {
                        expression: raw.clone(),
                        location,
                    });
                }
                let parsed =
                    Platform::parse(&p.value).map_err(|reason| PlanError::InvalidPlatform {
                        platform: raw.clone(),
                        reason,
                        location,
                    })?;
                Some(parsed)
            }
        };
        stages.push(PlannedStage {
            index,
            name: stage.name.clone(),
            base,
            platform,
            sources: Vec::new(),
            stage: stage.clone(),
        });
    }

    // COPY --from / RUN --mount=from=: a stage by name or index, else an image.
    for index in 0..stages.len() {
        let mut sources = Vec::new();
        for (i, command) in stages[index].stage.commands.iter().enumerate() {
            for from in from_values(command) {
                sources.push((i, resolve_from(&stages, &from, command.location())?));
            }
        }
        stages[index].sources = sources;
    }

    let target = match &options.target {
        None => stages.len() - 1,
        Some(t) => {
            let wanted = t.to_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&wanted))
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    PlanError::TargetNotFound {
                        target: t.clone(),
                        suggestion: suggest(t, &names, true),
                    }
                })?
        }
    };
    let order = build_order(&stages, target)?;
    warn_unused_build_args(dockerfile, &stages, &order, options, &mut warnings);

    Ok(Plan {
        escape,
        global_args,
        stages,
        target,
        order,
        warnings,
        options: options.clone(),
    })
}

/// The global scope: platform args (a build arg may override them), then
/// each `ARG` before the first `FROM`, its value the build arg if given,
/// else its default expanded against the args before it.
fn global_args(
    dockerfile: &Dockerfile,
    lex: &Lex,
    options: &BuildOptions,
    target: &str,
) -> Result<EnvList, PlanError> {
    let (bp, tp) = (&options.build_platform, &options.target_platform);
    let defaults = [
        ("BUILDPLATFORM", bp.to_string()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", bp.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", tp.to_string()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", tp.variant.clone().unwrap_or_default()),
        ("TARGETSTAGE", target.to_string()),
    ];
    let mut args = EnvList::default();
    for (key, value) in defaults {
        let value = options.build_args.get(key).cloned().unwrap_or(value);
        args.set(key, &value);
    }
    for command in &dockerfile.meta_args {
        for def in &command.args {
            let value = match options.build_args.get(&def.key) {
                Some(v) => Some(v.clone()),
                None => match &def.value {
                    Some(default) => Some(
                        lex.process_word(default, &args)
                            .map_err(|e| PlanError::expand(e, command.origin.location))?,
                    ),
                    None => None,
                },
            };
            if let Some(value) = value {
                args.set(&def.key, &value);
            }
        }
    }
    Ok(args)
}

fn warn_undeclared(
    unmatched: &BTreeSet<String>,
    args: &EnvList,
    location: Location,
    warnings: &mut Vec<PlanWarning>,
) {
    for name in unmatched {
        let known: Vec<&str> = args.keys();
        let hint = suggest(name, &known, true)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        warnings.push(PlanWarning {
            message: format!("FROM argument '{name}' is not declared{hint}"),
            location: Some(location),
        });
    }
}

/// The `from` values of a COPY and of a RUN's mounts (read at parse time).
fn from_values(command: &Command) -> Vec<String> {
    match command {
        Command::Copy(c) => c.from.iter().cloned().collect(),
        Command::Run(r) => r.mounts.iter().filter_map(|m| m.from.clone()).collect(),
        _ => Vec::new(),
    }
}

/// Go's `strconv.Atoi`: optional sign, decimal digits.
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().or(Some(if s.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    }))
}

fn resolve_from(
    stages: &[PlannedStage],
    from: &str,
    location: Location,
) -> Result<Source, PlanError> {
    if from.contains('$') {
        return Err(PlanError::FromVariable { location });
    }
    if let Some(index) = atoi(from) {
        return match usize::try_from(index).ok().filter(|i| *i < stages.len()) {
            Some(i) => Ok(Source::Stage(i)),
            None => Err(PlanError::InvalidStageIndex { index, location }),
        };
    }
    let wanted = from.to_lowercase();
    Ok(
        match stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&wanted))
        {
            Some(i) => Source::Stage(i),
            None => Source::Image(from.to_string()),
        },
    )
}

/// The stages `target` needs, dependencies first (depth first, in file
/// order, so the order is stable). A stage read by `COPY --from` must come
/// earlier in the file, as BuildKit dispatches stages in file order.
fn build_order(stages: &[PlannedStage], target: usize) -> Result<Vec<usize>, PlanError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; stages.len()];
    let mut order = Vec::new();
    // Iterative DFS: (stage, its deps, next dep to visit).
    let mut stack: Vec<(usize, Vec<usize>, usize)> = Vec::new();
    let deps_of = |i: usize| stages[i].stage_deps().into_iter().collect::<Vec<_>>();
    marks[target] = Mark::Active;
    stack.push((target, deps_of(target), 0));
    while let Some((stage, deps, next)) = stack.last_mut() {
        let stage = *stage;
        if let Some(&dep) = deps.get(*next) {
            *next += 1;
            match marks[dep] {
                Mark::Done => {}
                Mark::Active => {
                    return Err(PlanError::CircularDependency {
                        stage: stages[dep].display_name(),
                    });
                }
                Mark::New => {
                    if dep > stage && stages[stage].base != Base::Stage(dep) {
                        let copy = stages[stage]
                            .sources
                            .iter()
                            .find(|(_, s)| *s == Source::Stage(dep));
                        return Err(PlanError::StageOutOfOrder {
                            from: stages[dep].display_name(),
                            stage: stages[stage].display_name(),
                            location: copy
                                .map(|(i, _)| stages[stage].stage.commands[*i].location()),
                        });
                    }
                    marks[dep] = Mark::Active;
                    stack.push((dep, deps_of(dep), 0));
                }
            }
        } else {
            marks[stage] = Mark::Done;
            order.push(stage);
            stack.pop();
        }
    }
    Ok(order)
}

/// Docker's warning for build args that no `ARG` of the built stages (or
/// of the global scope) declares; proxy and platform args are exempt, and
/// so is `SOURCE_DATE_EPOCH`, which the builder itself reads (the image's
/// times) and buildx passes from its environment to every build.
fn warn_unused_build_args(
    dockerfile: &Dockerfile,
    stages: &[PlannedStage],
    order: &[usize],
    options: &BuildOptions,
    warnings: &mut Vec<PlanWarning>,
) {
    let mut declared: BTreeSet<&str> = BTreeSet::new();
    let meta = dockerfile.meta_args.iter().flat_map(|c| &c.args);
    let in_stages = order
        .iter()
        .flat_map(|&i| &stages[i].stage.commands)
        .flat_map(|c| match c {
            Command::Arg(a) => a.args.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        });
    for def in meta.chain(in_stages) {
        declared.insert(def.key.as_str());
    }
    let unused: Vec<&str> = options
        .build_args
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !declared.contains(k)
                && !PROXY_ARGS.contains(k)
                && !PLATFORM_ARGS.contains(k)
                && *k != "SOURCE_DATE_EPOCH"
        })
        .collect();
    if !unused.is_empty() {
        warnings.push(PlanWarning {
            message: format!(
                "One or more build-args [{}] were not consumed",
                unused.join(" ")
            ),
            location: None,
        });
    }
}

/// Convenience: parse, type and plan a Dockerfile in one go.
pub fn plan_source(src: &[u8], options: &BuildOptions) -> Result<Plan, crate::Error> {
    let ast = crate::parse(src)?;
    let dockerfile = instructions::parse_dockerfile(&ast)?;
    Ok(plan(&dockerfile, ast.escape, options)?)
}
