//! Steps that can hang: prompts (KL101), network reads without a timeout
//! (KL102, KL103), processes left running (KL112).

use super::{Hit, Step, apt_subcommand, has_option, hit, is_apt_install, python_install};
use crate::fix::Fix;

pub(crate) fn hang_rules(step: &Step<'_>, out: &mut Vec<Hit>) {
    for (n, inv) in step.invocations.iter().enumerate() {
        if is_apt_install(inv) {
            let yes = assumes_yes(&inv.args);
            let frontend = step
                .var(inv, "DEBIAN_FRONTEND")
                .is_some_and(|v| v.trim_matches(['"', '\'']) == "noninteractive");
            let missing = match (yes, frontend) {
                (true, true) => None,
                (false, true) => Some("without -y"),
                (true, false) => Some("without DEBIAN_FRONTEND=noninteractive"),
                (false, false) => Some("without -y or DEBIAN_FRONTEND=noninteractive"),
            };
            if let Some(missing) = missing {
                let sub = apt_subcommand(inv).unwrap_or("install");
                let fix = (!step.exec).then(|| Fix::AptPrompt {
                    program: inv.program.clone(),
                    yes: !yes,
                    frontend: !frontend,
                });
                out.push(
                    hit(
                        "KL101",
                        inv.line,
                        format!("`{} {sub}` {missing} can wait for an answer", inv.name),
                    )
                    .with_fix(fix),
                );
            }
        }
        if let Some((tool, _)) = python_install(inv)
            && !inv.timeout
            && !python_timeout(step, inv, tool)
        {
            let fix = match tool {
                "pip" => "--default-timeout=SECONDS or PIP_DEFAULT_TIMEOUT",
                "uv" => "UV_HTTP_TIMEOUT",
                _ => "POETRY_REQUESTS_TIMEOUT",
            };
            let edit = (!step.exec).then(|| Fix::Timeout {
                tool,
                program: inv.program.clone(),
            });
            out.push(
                hit(
                    "KL102",
                    inv.line,
                    format!(
                        "`{}` installs without a network timeout (set {fix})",
                        inv.name
                    ),
                )
                .with_fix(edit),
            );
        }
        if let Some(fix) = download_without_timeout(inv) {
            out.push(hit(
                "KL103",
                inv.line,
                format!("`{}` without a timeout ({fix})", inv.name),
            ));
        }
        let waited = step.invocations[n + 1..].iter().any(|i| i.name == "wait");
        if let Some(what) = left_running(inv, waited) {
            out.push(hit("KL112", inv.line, what));
        }
    }
}

/// apt-get's ways to say yes: `-y`/`--yes`/`--assume-yes`, quiet level 2
/// (`-qq`, `-q=2`, "implies -y", apt-get(8)), or `APT::Get::Assume-Yes`.
fn assumes_yes(args: &[String]) -> bool {
    if has_option(args, &["yes", "assume-yes"], &['y'], &['o', 'c', 't']) {
        return true;
    }
    let mut prev_o = false;
    for arg in args {
        let lower = arg.to_ascii_lowercase();
        let quiet2 = arg.starts_with('-')
            && !arg.starts_with("--")
            && arg.chars().filter(|&c| c == 'q').count() >= 2;
        let option = if prev_o {
            Some(lower.as_str())
        } else {
            lower.strip_prefix("-o")
        };
        if quiet2
            || matches!(lower.as_str(), "-q=2" | "--quiet=2")
            || option.is_some_and(|o| {
                o.starts_with("apt::get::assume-yes=")
                    && !o.ends_with("=false")
                    && !o.ends_with("=0")
            })
        {
            return true;
        }
        prev_o = arg == "-o";
    }
    false
}

fn python_timeout(step: &Step<'_>, inv: &crate::script::Invocation, tool: &str) -> bool {
    let set = |name: &str| step.var(inv, name).is_some();
    match tool {
        // pip's general options may come before the command too
        // (`pip --default-timeout=60 install`).
        "pip" => {
            has_option(&inv.args, &["timeout", "default-timeout"], &[], &[])
                || set("PIP_DEFAULT_TIMEOUT")
                || set("PIP_TIMEOUT")
        }
        "uv" => set("UV_HTTP_TIMEOUT") || set("UV_REQUEST_TIMEOUT"),
        _ => set("POETRY_REQUESTS_TIMEOUT"),
    }
}

/// curl's short options that take an argument (curl(1)).
const CURL_WITH_ARG: &[char] = &[
    'A', 'b', 'c', 'C', 'd', 'D', 'e', 'E', 'F', 'H', 'K', 'o', 'P', 'Q', 'r', 't', 'T', 'u', 'U',
    'w', 'x', 'X', 'z',
];
/// wget's short options that take an argument (wget(1)).
const WGET_WITH_ARG: &[char] = &[
    'o', 'a', 'e', 'i', 'B', 't', 'O', 'w', 'Q', 'P', 'A', 'R', 'D', 'X', 'I', 'l', 'U',
];

/// For a curl or wget without any timeout, the options that would add one.
fn download_without_timeout(inv: &crate::script::Invocation) -> Option<&'static str> {
    let args = &inv.args;
    if inv.timeout || args.is_empty() || has_option(args, &["version", "help"], &[], &[]) {
        return None;
    }
    match inv.name.as_str() {
        // -y/-Y (speed time/limit) abort a transfer that stalls.
        "curl"
            if !has_option(
                args,
                &["max-time", "connect-timeout", "speed-time", "speed-limit"],
                &['m', 'y', 'Y'],
                CURL_WITH_ARG,
            ) =>
        {
            Some("add --max-time or --connect-timeout with --speed-time")
        }
        "wget"
            if !has_option(
                args,
                &["timeout", "read-timeout", "connect-timeout", "dns-timeout"],
                &['T'],
                WGET_WITH_ARG,
            ) =>
        {
            Some("add -T SECONDS or --timeout")
        }
        _ => None,
    }
}

/// What a command leaves running: `cmd &` without a later `wait`, `nohup`,
/// `service X start`, `/etc/init.d/X start`, `start-stop-daemon --start`.
fn left_running(inv: &crate::script::Invocation, waited: bool) -> Option<String> {
    if inv.background && !waited {
        return Some(format!(
            "`{}` is sent to the background with `&` and not waited for",
            inv.name
        ));
    }
    if inv.nohup {
        return Some(format!(
            "`nohup {}` keeps running after the command",
            inv.name
        ));
    }
    let starts = |a: &str| matches!(a, "start" | "restart" | "reload" | "force-reload");
    if inv.name == "service" && inv.args.get(1).is_some_and(|a| starts(a)) {
        return Some(format!(
            "`service {} {}` starts a daemon that outlives the step",
            inv.args[0], inv.args[1]
        ));
    }
    let init_script =
        inv.program.starts_with("/etc/init.d/") && inv.args.first().is_some_and(|a| starts(a));
    let start_stop =
        inv.name == "start-stop-daemon" && inv.args.iter().any(|a| a == "--start" || a == "-S");
    (init_script || start_stop)
        .then(|| format!("`{}` starts a daemon that outlives the step", inv.program))
}
