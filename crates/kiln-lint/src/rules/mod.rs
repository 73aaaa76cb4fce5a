//! The rules: the table, and the checks grouped by what they protect.
//!
//! Step rules look at one `RUN` ([`Step`]); stage rules at a stage's
//! instructions in order; [`pin`] at the stage graph.

pub(crate) mod buildkit;
mod cache;
pub(crate) mod context;
pub(crate) mod hadolint;
mod hang;
mod heavy;
pub(crate) mod pin;
mod table;

use std::collections::BTreeMap;

use crate::finding::Rule;
use crate::fix::Fix;
use crate::script::Invocation;

pub(crate) use self::cache::{
    cache_rules, context_before_install, installs_dependencies, update_apart,
};
pub(crate) use self::hang::hang_rules;
pub(crate) use self::heavy::heavy_frameworks;

pub use self::table::RULES;

/// The rule with this id.
pub(crate) fn rule(id: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.id == id)
        .expect("every id used is in RULES")
}

/// Variables in effect in a stage: `ENV`, and `ARG` (`None`: no default).
pub(crate) type StageEnv = BTreeMap<String, Option<String>>;

/// One `RUN` as the step rules see it.
pub(crate) struct Step<'a> {
    pub(crate) invocations: Vec<Invocation>,
    /// The targets of its `--mount=type=cache`, as written.
    pub(crate) cache_targets: Vec<String>,
    pub(crate) env: &'a StageEnv,
    /// Its first and last Dockerfile lines.
    pub(crate) lines: (usize, usize),
    /// Exec form (`RUN ["apt-get", ...]`): its words are JSON strings, so
    /// no fix edits them.
    pub(crate) exec: bool,
}

impl Step<'_> {
    /// The value of `name` for `inv`: its own, the script's, the stage's.
    pub(crate) fn var<'s>(&'s self, inv: &'s Invocation, name: &str) -> Option<&'s str> {
        inv.var(name)
            .or_else(|| self.env.get(name).map(|v| v.as_deref().unwrap_or("")))
    }
}

/// A finding of a rule at a line, before the file name is known; with the
/// fix `--fix` may make, when the rule knows a safe one.
pub(crate) struct Hit {
    pub(crate) rule: &'static str,
    pub(crate) line: usize,
    pub(crate) message: String,
    pub(crate) fix: Option<Fix>,
}

impl Hit {
    pub(crate) fn with_fix(mut self, fix: Option<Fix>) -> Hit {
        self.fix = fix;
        self
    }
}

pub(crate) fn hit(rule: &'static str, line: usize, message: impl Into<String>) -> Hit {
    Hit {
        rule,
        line,
        message: message.into(),
        fix: None,
    }
}

/// Whether any option of `args` is one of `longs` (`--x` or `--x=v`) or a
/// short option cluster holding one of `shorts` before any option that
/// takes an argument (`shorts_with_arg`), as getopt reads them.
pub(crate) fn has_option(
    args: &[String],
    longs: &[&str],
    shorts: &[char],
    shorts_with_arg: &[char],
) -> bool {
    for arg in args {
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            if longs.contains(&name) {
                return true;
            }
        } else if let Some(cluster) = arg.strip_prefix('-') {
            for c in cluster.chars() {
                if shorts.contains(&c) {
                    return true;
                }
                if shorts_with_arg.contains(&c) {
                    break;
                }
            }
        }
    }
    false
}

/// The arguments that are not options, skipping the values of `with_arg`.
pub(crate) fn operands<'a>(args: &'a [String], with_arg: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
        } else if arg.starts_with('-') && arg.len() > 1 {
            skip = with_arg.contains(&arg.as_str());
        } else {
            out.push(arg.as_str());
        }
    }
    out
}

/// What a Python installer invocation is, if it is one: the tool and the
/// arguments after its install subcommand.
pub(crate) fn python_install(inv: &Invocation) -> Option<(&'static str, &[String])> {
    let name = inv.name.as_str();
    let pip_args: Option<&[String]> =
        if name == "pip" || name.starts_with("pip2") || name.starts_with("pip3") {
            Some(&inv.args)
        } else if name.starts_with("python") {
            let m = inv.args.iter().position(|a| a == "-m")?;
            (inv.args.get(m + 1)? == "pip").then(|| &inv.args[m + 2..])
        } else {
            None
        };
    if let Some(args) = pip_args {
        let sub = args.iter().position(|a| !a.starts_with('-'))?;
        return matches!(args[sub].as_str(), "install" | "download" | "wheel")
            .then(|| ("pip", &args[sub + 1..]));
    }
    match name {
        "uv" => {
            let first = inv.args.first()?;
            if first == "pip" {
                let sub = inv.args.get(1)?;
                matches!(sub.as_str(), "install" | "sync").then(|| ("uv", &inv.args[2..]))
            } else {
                matches!(first.as_str(), "sync" | "add").then(|| ("uv", &inv.args[1..]))
            }
        }
        "poetry" => {
            let sub = inv.args.iter().position(|a| !a.starts_with('-'))?;
            matches!(inv.args[sub].as_str(), "install" | "add" | "update")
                .then(|| ("poetry", &inv.args[sub + 1..]))
        }
        _ => None,
    }
}

/// The apt subcommand of an `apt-get`/`apt`/`aptitude` invocation.
pub(crate) fn apt_subcommand(inv: &Invocation) -> Option<&str> {
    if !matches!(inv.name.as_str(), "apt-get" | "apt" | "aptitude") {
        return None;
    }
    operands(
        &inv.args,
        &[
            "-o",
            "-c",
            "-t",
            "--option",
            "--config-file",
            "--target-release",
        ],
    )
    .first()
    .copied()
}

pub(crate) fn is_apt_install(inv: &Invocation) -> bool {
    matches!(
        apt_subcommand(inv),
        Some("install" | "reinstall" | "upgrade" | "dist-upgrade" | "full-upgrade" | "build-dep")
    )
}
