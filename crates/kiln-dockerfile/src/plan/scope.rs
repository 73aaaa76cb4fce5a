//! The ARG and ENV values each instruction of a stage sees.

use std::collections::BTreeSet;

use super::{Base, Plan, PlanError, PlanWarning};
use crate::instructions::{Command, Expander, ExpansionError};
use crate::shell::{Env, ExpandError, Lex};
use crate::suggest::suggest;

/// An ordered environment where setting a key replaces it in place (LLB's
/// `AddEnv`, Docker's `ENV` list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList(Vec<(String, String)>);

impl EnvList {
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `KEY=VALUE` strings, in order (an image config's `Env`).
    pub fn to_key_values(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

impl Env for EnvList {
    fn get(&self, key: &str) -> Option<&str> {
        EnvList::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        EnvList::keys(self)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for EnvList {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut env = EnvList::default();
        for (k, v) in iter {
            env.set(k.as_ref(), v.as_ref());
        }
        env
    }
}

/// The default `PATH` BuildKit gives an image that has none (Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One stage's variables as its instructions run, BuildKit's dispatch state:
///
/// - `env` is what expansion and RUN see: the base's environment, then each
///   `ENV` and each `ARG` with a value, in order (a later one replaces an
///   earlier one of the same name, whichever instruction set it).
/// - `config_env` is the image's `Env`: the base's, then each `ENV`; `ARG`
///   values never reach it.
/// - An `ARG`'s value is the build arg if given, else its default expanded
///   with `env` at that point, else (no default) the global `ARG` or
///   automatic platform arg of that name; without any, the name is declared
///   but unset.
#[derive(Debug, Clone)]
pub struct StageScope<'p> {
    plan: &'p Plan,
    stage: usize,
    env: EnvList,
    config_env: EnvList,
    /// Names declared by `ARG` in this stage.
    declared: BTreeSet<String>,
    warnings: Vec<PlanWarning>,
}

impl<'p> StageScope<'p> {
    /// A scope for a stage whose base is an image (or scratch) with the
    /// given config environment.
    pub(crate) fn new(plan: &'p Plan, stage: usize, base_env: &[(String, String)]) -> Self {
        let config_env: EnvList = base_env.iter().map(|(k, v)| (k, v)).collect();
        Self::start(plan, stage, EnvList::default(), config_env)
    }

    /// A scope for a stage based on another stage: it starts from that
    /// stage's finished state, ARG values included (as in BuildKit, where
    /// they live in the LLB state the child inherits).
    pub fn from_parent(parent: &StageScope<'p>, stage: usize) -> Self {
        debug_assert_eq!(parent.plan.stages[stage].base, Base::Stage(parent.stage));
        Self::start(
            parent.plan,
            stage,
            parent.env.clone(),
            parent.config_env.clone(),
        )
    }

    /// A scope for a stage based on another stage whose finished variables
    /// were kept as data (`env`, `config_env` from [`StageScope::env`] and
    /// [`StageScope::config_env`]): the same as [`StageScope::from_parent`].
    pub fn resume(
        plan: &'p Plan,
        stage: usize,
        env: &[(String, String)],
        config_env: &[(String, String)],
    ) -> Self {
        let env: EnvList = env.iter().map(|(k, v)| (k, v)).collect();
        let config_env: EnvList = config_env.iter().map(|(k, v)| (k, v)).collect();
        Self::start(plan, stage, env, config_env)
    }

    fn start(plan: &'p Plan, stage: usize, mut env: EnvList, mut config_env: EnvList) -> Self {
        if config_env.get("PATH").is_none() {
            config_env.set("PATH", DEFAULT_PATH);
        }
        for (k, v) in config_env.iter() {
            env.set(k, v);
        }
        StageScope {
            plan,
            stage,
            env,
            config_env,
            declared: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }

    /// The environment expansion and RUN see now.
    pub fn env(&self) -> &EnvList {
        &self.env
    }

    /// The environment for a RUN step: [`env`](Self::env) plus the proxy
    /// build args, which need no `ARG`.
    pub fn run_env(&self) -> EnvList {
        let mut env = self.env.clone();
        for key in super::PROXY_ARGS {
            if let Some(v) = self.plan.options.build_args.get(key)
                && env.get(key).is_none()
            {
                env.set(key, v);
            }
        }
        env
    }

    /// The image config's `Env` now.
    pub fn config_env(&self) -> &EnvList {
        &self.config_env
    }

    /// Findings so far (variables used but never set).
    pub fn warnings(&self) -> &[PlanWarning] {
        &self.warnings
    }

    /// The findings since the last call, for reporting as they come.
    pub fn take_warnings(&mut self) -> Vec<PlanWarning> {
        std::mem::take(&mut self.warnings)
    }

    /// Expands `command` as BuildKit does at this point of the stage and
    /// applies its effect on the variables (`ARG`, `ENV`). Returns the
    /// expanded instruction.
    pub fn dispatch(&mut self, command: &Command) -> Result<Command, PlanError> {
        let location = command.location();
        let mut command = command.clone();
        match &mut command {
            Command::Arg(arg) => {
                for def in &mut arg.args {
                    let value = self
                        .arg_value(&def.key, def.value.as_deref())
                        .map_err(|e| PlanError::expand(e, location))?;
                    if let Some(v) = &value {
                        self.env.set(&def.key, v);
                    }
                    def.value = value;
                    self.declared.insert(def.key.clone());
                }
            }
            other => {
                let mut unmatched = BTreeSet::new();
                let mut expander = ScopeExpander {
                    lex: Lex::new(self.plan.escape),
                    env: &self.env,
                    unmatched: &mut unmatched,
                };
                other.expand(&mut expander).map_err(|e| match e {
                    ExpansionError::Expand(e) => PlanError::expand(e, location),
                    ExpansionError::Instruction(e) => PlanError::Instruction(e),
                })?;
                self.warn_undefined(&unmatched, location);
                if let Command::Env(env) = other {
                    for pair in &env.pairs {
                        self.env.set(&pair.key, &pair.value);
                        self.config_env.set(&pair.key, &pair.value);
                    }
                }
            }
        }
        Ok(command)
    }

    fn arg_value(&self, key: &str, default: Option<&str>) -> Result<Option<String>, ExpandError> {
        if let Some(v) = self.plan.options.build_args.get(key) {
            return Ok(Some(v.clone()));
        }
        match default {
            Some(default) => Lex::new(self.plan.escape)
                .process_word(default, &self.env)
                .map(Some),
            None => Ok(self.plan.global_args.get(key).map(str::to_string)),
        }
    }

    /// BuildKit's `UndefinedVar` check: a variable that is neither set nor
    /// declared by an `ARG` of this stage.
    fn warn_undefined(&mut self, unmatched: &BTreeSet<String>, location: crate::Location) {
        for name in unmatched.iter().filter(|n| !self.declared.contains(*n)) {
            let keys = self.env.keys();
            let hint = suggest(name, &keys, true)
                .map(|s| format!(" (did you mean ${s}?)"))
                .unwrap_or_default();
            self.warnings.push(PlanWarning {
                message: format!("Usage of undefined variable '${name}'{hint}"),
                location: Some(location),
            });
        }
    }
}

/// BuildKit's three expansions, bound to one environment.
struct ScopeExpander<'a> {
    lex: Lex,
    env: &'a EnvList,
    unmatched: &'a mut BTreeSet<String>,
}

impl Expander for ScopeExpander<'_> {
    type Error = ExpandError;

    fn word(&mut self, word: &str) -> Result<String, ExpandError> {
        let expanded = self.lex.process_word_with_matches(word, self.env)?;
        self.unmatched.extend(expanded.unmatched);
        Ok(expanded.value)
    }

    fn words(&mut self, word: &str) -> Result<Vec<String>, ExpandError> {
        self.lex.process_words(word, self.env)
    }

    /// Heredoc bodies: `\` as escape whatever the file's, quotes kept.
    fn raw(&mut self, text: &str) -> Result<String, ExpandError> {
        let mut lex = Lex::new('\\');
        lex.skip_process_quotes = true;
        let expanded = lex.process_word_with_matches(text, self.env)?;
        self.unmatched.extend(expanded.unmatched);
        Ok(expanded.value)
    }
}
