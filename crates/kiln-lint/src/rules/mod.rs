//! The rules: the table, and the checks grouped by what they protect.
//!
//! Step rules look at one `RUN` ([`Step`]); stage rules at a stage's
//! instructions in order; [`pin`] at the stage graph.

mod cache;
mod hang;
mod heavy;
pub(crate) mod pin;

use std::collections::BTreeMap;

use crate::finding::{Rule, Severity};
use crate::script::Invocation;

pub(crate) use self::cache::{
    cache_rules, context_before_install, installs_dependencies, update_apart,
};
pub(crate) use self::hang::hang_rules;
pub(crate) use self::heavy::heavy_frameworks;

/// Every rule kiln lint knows, in id order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "KL101",
        severity: Severity::Error,
        title: "apt install that can prompt",
        why: "without -y and DEBIAN_FRONTEND=noninteractive apt and debconf ask questions, and a build has no one to answer them",
    },
    Rule {
        id: "KL102",
        severity: Severity::Error,
        title: "Python package install without a network timeout",
        why: "a stalled index or mirror connection keeps the step waiting; a timeout turns it into a retry or a clear failure",
    },
    Rule {
        id: "KL103",
        severity: Severity::Error,
        title: "curl or wget without a timeout",
        why: "a download that stops sending keeps the step waiting for as long as the connection stays open",
    },
    Rule {
        id: "KL104",
        severity: Severity::Warning,
        title: "package install without a cache mount",
        why: "every cache miss downloads every package again; RUN --mount=type=cache keeps the downloads across builds without putting them in a layer",
    },
    Rule {
        id: "KL105",
        severity: Severity::Warning,
        title: "cache purged in a step that mounts it",
        why: "a cache mount never enters the image, so purging it only throws away what the next build would reuse",
    },
    Rule {
        id: "KL106",
        severity: Severity::Warning,
        title: "whole context copied before the dependency install",
        why: "any change to any file invalidates the install step; copy the manifests (requirements.txt, package.json, Cargo.lock, go.sum) first, install, then copy the rest",
    },
    Rule {
        id: "KL107",
        severity: Severity::Info,
        title: "several heavy frameworks installed in one RUN",
        why: "one layer of several gigabytes is rebuilt and re-pushed whole when any of them changes; separate steps cache and pull independently",
    },
    Rule {
        id: "KL108",
        severity: Severity::Warning,
        title: "apt-get update apart from apt-get install",
        why: "the update layer is cached while the install step runs again later with stale package lists, which fails or installs old versions",
    },
    Rule {
        id: "KL109",
        severity: Severity::Warning,
        title: "ADD of a URL without --checksum",
        why: "the content behind a URL can change or be tampered with; --checksum=sha256:... makes the build fail instead",
    },
    Rule {
        id: "KL111",
        severity: Severity::Warning,
        title: "unpinned base of a stage others build on",
        why: "a :latest or untagged base changes under the build, and every stage built on it changes too; pin a tag, better a digest",
    },
    Rule {
        id: "KL112",
        severity: Severity::Error,
        title: "background process left running by a RUN",
        why: "a RUN ends when its process tree does: a daemon left running keeps the step waiting, or is killed with the snapshot half-written",
    },
];

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
}

impl Step<'_> {
    /// The value of `name` for `inv`: its own, the script's, the stage's.
    pub(crate) fn var<'s>(&'s self, inv: &'s Invocation, name: &str) -> Option<&'s str> {
        inv.var(name)
            .or_else(|| self.env.get(name).map(|v| v.as_deref().unwrap_or("")))
    }
}

/// A finding of a rule at a line, before the file name is known.
pub(crate) struct Hit {
    pub(crate) rule: &'static str,
    pub(crate) line: usize,
    pub(crate) message: String,
}

pub(crate) fn hit(rule: &'static str, line: usize, message: impl Into<String>) -> Hit {
    Hit {
        rule,
        line,
        message: message.into(),
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
