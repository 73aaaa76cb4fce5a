//! Steps that defeat caches: installs without a cache mount (KL104), purges
//! of a mounted cache (KL105), the context copied before installs (KL106),
//! `apt-get update` in its own step (KL108).

use super::{Hit, Step, apt_subcommand, hit, is_apt_install, operands, python_install};
use crate::fix::Fix;
use crate::script::Invocation;

/// A package manager's download cache: where it usually lives, and the
/// variable that moves it.
struct Cache {
    tool: &'static str,
    /// A cache mount whose target contains one of these holds the cache.
    fragments: &'static [&'static str],
    vars: &'static [&'static str],
}

const APT: Cache = Cache {
    tool: "apt",
    fragments: &["/var/cache/apt", "/var/lib/apt"],
    vars: &[],
};
const PIP: Cache = Cache {
    tool: "pip",
    fragments: &[".cache/pip", "/.cache"],
    vars: &["PIP_CACHE_DIR"],
};
const UV: Cache = Cache {
    tool: "uv",
    fragments: &[".cache/uv", "/.cache"],
    vars: &["UV_CACHE_DIR"],
};
const POETRY: Cache = Cache {
    tool: "poetry",
    fragments: &["pypoetry", "/.cache"],
    vars: &["POETRY_CACHE_DIR"],
};
const NPM: Cache = Cache {
    tool: "npm",
    fragments: &[".npm"],
    vars: &["npm_config_cache", "NPM_CONFIG_CACHE"],
};
const YARN: Cache = Cache {
    tool: "yarn",
    fragments: &["yarn"],
    vars: &["YARN_CACHE_FOLDER"],
};
const PNPM: Cache = Cache {
    tool: "pnpm",
    fragments: &["pnpm"],
    vars: &["PNPM_STORE_DIR"],
};
const CARGO: Cache = Cache {
    tool: "cargo",
    fragments: &["cargo/registry", "cargo/git", "/.cargo", "/usr/local/cargo"],
    vars: &["CARGO_HOME"],
};
const GO: Cache = Cache {
    tool: "go",
    fragments: &["pkg/mod", "go-build", "/go"],
    vars: &["GOMODCACHE", "GOCACHE", "GOPATH"],
};

/// The cache an invocation downloads packages into, if it installs some.
fn install_cache(inv: &Invocation) -> Option<&'static Cache> {
    if is_apt_install(inv) {
        return Some(&APT);
    }
    if let Some((tool, _)) = python_install(inv) {
        return Some(match tool {
            "pip" => &PIP,
            "uv" => &UV,
            _ => &POETRY,
        });
    }
    let sub = inv
        .args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    match (inv.name.as_str(), sub) {
        ("npm", Some("install" | "i" | "ci" | "add")) => Some(&NPM),
        ("yarn", None | Some("install" | "add")) => Some(&YARN),
        ("pnpm", Some("install" | "i" | "add" | "fetch")) => Some(&PNPM),
        ("cargo", Some("build" | "fetch" | "install" | "vendor")) => Some(&CARGO),
        ("go", Some("build" | "install" | "get")) => Some(&GO),
        ("go", Some("mod")) if inv.args.iter().any(|a| a == "download") => Some(&GO),
        _ => None,
    }
}

/// Whether a cache mount of the step holds `cache`.
fn mounted<'s>(step: &'s Step<'_>, inv: &Invocation, cache: &Cache) -> Option<&'s str> {
    step.cache_targets
        .iter()
        .find(|t| {
            let t = t.trim_end_matches('/');
            cache
                .fragments
                .iter()
                .any(|f| t.contains(f) || (f.ends_with(t) && t.len() > 1))
                || cache.vars.iter().any(|v| {
                    step.var(inv, v)
                        .is_some_and(|d| !d.is_empty() && (d.starts_with(t) || t.starts_with(d)))
                })
        })
        .map(String::as_str)
}

pub(crate) fn cache_rules(step: &Step<'_>, out: &mut Vec<Hit>) {
    let mut reported: Vec<&str> = Vec::new();
    for inv in &step.invocations {
        if let Some(cache) = install_cache(inv)
            && mounted(step, inv, cache).is_none()
            && !reported.contains(&cache.tool)
        {
            reported.push(cache.tool);
            out.push(
                hit(
                    "KL104",
                    inv.line,
                    format!(
                        "`{}` downloads into the {} cache with no --mount=type=cache for it",
                        inv.name, cache.tool
                    ),
                )
                .with_fix(Some(Fix::CacheMount {
                    tool: cache.tool,
                    run_line: step.lines.0,
                })),
            );
        }
        if let Some((what, fix)) = purge(step, inv) {
            out.push(hit("KL105", inv.line, what).with_fix(fix.filter(|_| !step.exec)));
        }
    }
}

/// A purge of a cache the step mounts, described, with its fix: the
/// command taken out, or the flag that turns the cache off.
fn purge(step: &Step<'_>, inv: &Invocation) -> Option<(String, Option<Fix>)> {
    // A command run with assignments of its own is left to people.
    let drop_command = inv.env.is_empty().then(|| Fix::DropCommand {
        program: inv.program.clone(),
        args: inv.args.clone(),
    });
    let sub = inv
        .args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let second = inv.args.get(1).map(String::as_str);
    let (cache, what, fix): (&Cache, String, Option<Fix>) = match (inv.name.as_str(), sub) {
        ("apt-get" | "apt", _) if matches!(apt_subcommand(inv), Some("clean" | "autoclean")) => {
            (&APT, format!("`{} clean`", inv.name), drop_command)
        }
        (n, Some("cache"))
            if n.starts_with("pip") && matches!(second, Some("purge" | "remove")) =>
        {
            (&PIP, "`pip cache purge`".into(), drop_command)
        }
        ("uv", Some("cache")) if matches!(second, Some("clean" | "prune")) => {
            (&UV, "`uv cache clean`".into(), drop_command)
        }
        ("npm" | "yarn", Some("cache")) if matches!(second, Some("clean")) => (
            if inv.name == "npm" { &NPM } else { &YARN },
            format!("`{} cache clean`", inv.name),
            drop_command,
        ),
        ("go", Some("clean")) if inv.args.iter().any(|a| a == "-modcache" || a == "-cache") => {
            (&GO, "`go clean -modcache`".into(), drop_command)
        }
        ("rm", _) => {
            let target = operands(&inv.args, &[])
                .into_iter()
                .find_map(|path| step.cache_targets.iter().find(|t| wipes(path, t)))?;
            // Only an `rm` of the cache alone: one that also removes
            // other paths is left to people.
            let alone = operands(&inv.args, &[]).len() == 1;
            return Some((
                format!("`rm` deletes the mounted cache {target}"),
                drop_command.filter(|_| alone),
            ));
        }
        _ => {
            let (tool, args) = python_install(inv)?;
            let flag = if tool == "pip" {
                "--no-cache-dir"
            } else {
                "--no-cache"
            };
            let by_flag = args.iter().any(|a| a == flag);
            let no_cache = by_flag
                || match tool {
                    "pip" => step
                        .var(inv, "PIP_NO_CACHE_DIR")
                        .is_some_and(|v| !matches!(v, "" | "0" | "false" | "off")),
                    "uv" => step.var(inv, "UV_NO_CACHE").is_some(),
                    _ => false,
                };
            if !no_cache {
                return None;
            }
            // A variable that turns the cache off is left to people: it
            // may be meant for other steps.
            let fix = by_flag.then(|| Fix::DropWord {
                program: inv.program.clone(),
                word: flag,
            });
            let cache = if tool == "pip" {
                &PIP
            } else if tool == "uv" {
                &UV
            } else {
                &POETRY
            };
            (
                cache,
                format!("`{}` is told not to use its cache", inv.name),
                fix,
            )
        }
    };
    let target = mounted(step, inv, cache)?;
    Some((format!("{what} empties the cache mounted at {target}"), fix))
}

/// Whether `rm path` empties the cache mounted at `target`: the target
/// itself, everything in it, a directory above it, or one whole directory
/// in it (`/var/lib/apt/lists/*`). A pattern deeper inside
/// (`.git/*.lock`) is housekeeping, not a purge.
fn wipes(path: &str, target: &str) -> bool {
    let path = path
        .strip_suffix("/*")
        .unwrap_or(path)
        .trim_end_matches('/');
    let target = target.trim_end_matches('/');
    if path.is_empty() || target.is_empty() {
        return false;
    }
    if path == target || target.starts_with(&format!("{path}/")) {
        return true;
    }
    path.strip_prefix(&format!("{target}/"))
        .is_some_and(|rest| !rest.contains('/') && !rest.contains(['*', '?', '[']))
}

/// Whether an invocation installs a project's dependencies from files of the
/// build context (what KL106 wants to come before `COPY . .`).
pub(crate) fn installs_dependencies(inv: &Invocation) -> bool {
    if let Some((tool, args)) = python_install(inv) {
        // `pip install flask` needs nothing from the context; `-r`, `.`
        // and `-e` do, and so do `uv sync` and `poetry install`.
        return tool == "poetry"
            || inv.args.first().is_some_and(|a| a == "sync")
            || args.iter().any(|a| {
                matches!(
                    a.as_str(),
                    "-r" | "--requirement" | "-e" | "--editable" | "."
                ) || a.starts_with("--requirement=")
                    || a.starts_with("-r")
                    || a.starts_with("./")
            });
    }
    let sub = inv
        .args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    matches!(
        (inv.name.as_str(), sub),
        ("npm", Some("install" | "i" | "ci"))
            | ("yarn", None | Some("install"))
            | ("pnpm", Some("install" | "i" | "fetch"))
            | ("cargo", Some("fetch" | "build"))
            | ("go", Some("mod"))
            | ("bundle", Some("install"))
            | ("composer", Some("install"))
    )
}

/// KL106: the first `COPY . …` / `ADD . …` of a stage, and the dependency
/// install after it (`copy_line`, installs as (line, program)).
pub(crate) fn context_before_install(copy_line: usize, install: (usize, &str)) -> Hit {
    hit(
        "KL106",
        copy_line,
        format!(
            "the whole build context is copied before `{}` on line {}",
            install.1, install.0
        ),
    )
}

/// KL108: `apt-get update` on `update_line` in a RUN without install, the
/// install on `install_line`; `fix`, when the RUN of the update does
/// nothing else and the install can take it.
pub(crate) fn update_apart(update_line: usize, install_line: usize, fix: Option<Fix>) -> Hit {
    hit(
        "KL108",
        update_line,
        format!(
            "`apt-get update` runs in another step than the `apt-get install` on line {install_line}"
        ),
    )
    .with_fix(fix)
}
