//! hadolint's rules that hadolint applies to the instructions of the file
//! only (not again to `ONBUILD` triggers): instructions other than RUN, and
//! RUN rules that look across instructions (DL3010, DL3059, DL4006).

use std::collections::{BTreeMap, BTreeSet};

use super::{From, Instr, Kind, Settings};
use crate::rules::{Hit, hit};

/// Archive suffixes hadolint knows (DL3010, DL3020).
pub(crate) const ARCHIVES: &[&str] = &[
    ".tar", ".Z", ".bz2", ".gz", ".lz", ".lzma", ".tZ", ".tb2", ".tbz", ".tbz2", ".tgz", ".tlz",
    ".tpz", ".txz", ".xz",
];

pub(crate) fn check(stream: &[Instr], settings: &Settings, out: &mut Vec<Hit>) {
    for instr in stream {
        let line = instr.line;
        match &instr.kind {
            Kind::Workdir(path) => {
                let p = drop_quotes(path);
                if !(p.starts_with('$') || p.starts_with('/') || windows_absolute(p)) {
                    out.push(hit("DL3000", line, format!("WORKDIR {path} is relative")));
                }
            }
            Kind::From(from) => {
                if let Some(tag) = &from.image.tag
                    && tag == "latest"
                    && from.image.digest.is_none()
                {
                    out.push(hit(
                        "DL3007",
                        line,
                        "FROM ...:latest: pin a release tag instead",
                    ));
                }
                if let Some(p) = &from.platform {
                    if !(p.contains("BUILDPLATFORM") || p.contains("TARGETPLATFORM")) {
                        out.push(hit(
                            "DL3029",
                            line,
                            format!("FROM --platform={p} fixes the platform"),
                        ));
                    }
                    if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
                        out.push(hit(
                            "DL3065",
                            line,
                            "FROM --platform=$TARGETPLATFORM is the default already",
                        ));
                    }
                }
                if let Some(alias) = &from.alias
                    && matches!(alias.as_str(), "scratch" | "context")
                {
                    out.push(hit(
                        "DL3063",
                        line,
                        format!("stage name {alias} is a reserved word"),
                    ));
                }
            }
            Kind::Expose(ports) if ports.iter().any(|p| port_out_of_range(p)) => {
                out.push(hit("DL3011", line, "EXPOSE of a port above 65535"));
            }
            Kind::Add { sources } => {
                let fetches_or_extracts = |s: &String| {
                    let s = drop_quotes(s);
                    ARCHIVES.iter().any(|a| s.ends_with(a))
                        || s.starts_with("https://")
                        || s.starts_with("http://")
                };
                if !sources.iter().all(fetches_or_extracts) {
                    out.push(hit("DL3020", line, "ADD of files or folders: use COPY"));
                }
            }
            Kind::Copy {
                sources,
                dest,
                from,
            } => {
                if sources.len() > 1 && !drop_quotes(dest).ends_with('/') {
                    out.push(hit(
                        "DL3021",
                        line,
                        format!(
                            "COPY of {} sources to {dest}, which does not end with /",
                            sources.len()
                        ),
                    ));
                }
                if from.is_some()
                    && sources.iter().any(|s| drop_quotes(s) == "/")
                    && drop_quotes(dest) == "/"
                {
                    out.push(hit(
                        "DL3067",
                        line,
                        "COPY --from of / to /: the whole filesystem of another stage",
                    ));
                }
            }
            Kind::Healthcheck { shell_form: true } => {
                out.push(hit("DL3025", line, "HEALTHCHECK in shell form: use JSON"));
            }
            Kind::Cmd { shell_form: true } => {
                out.push(hit("DL3025", line, "CMD in shell form: use JSON"));
            }
            Kind::Entrypoint { shell_form: true } => {
                out.push(hit("DL3025", line, "ENTRYPOINT in shell form: use JSON"));
            }
            Kind::Maintainer => out.push(hit(
                "DL4000",
                line,
                "MAINTAINER is deprecated: use LABEL org.opencontainers.image.authors",
            )),
            Kind::Label(keys) => {
                if let Some(bad) = keys.iter().find(|k| !valid_label_key(k)) {
                    out.push(hit("DL3048", line, format!("invalid label key {bad}")));
                }
            }
            _ => {}
        }
    }
    last_user_root(stream, out);
    untagged_base(stream, out);
    per_stage_duplicates(stream, out);
    copy_from(stream, out);
    env_self_reference(stream, out);
    relative_copy(stream, out);
    user_by_name(stream, out);
    trusted_registries(stream, &settings.trusted_registries, out);
    archive_extracted(stream, out);
    consecutive_runs(stream, out);
    pipefail(stream, out);
    missing_healthcheck(stream, out);
}

pub(crate) fn drop_quotes(s: &str) -> &str {
    s.trim_matches(['"', '\''])
}

fn windows_absolute(p: &str) -> bool {
    let mut chars = p.chars();
    matches!((chars.next(), chars.next()), (Some(d), Some(':')) if d.is_alphabetic())
}

/// `EXPOSE 70000`, `EXPOSE 1-70000/tcp`.
fn port_out_of_range(spec: &str) -> bool {
    let ports = spec.split('/').next().unwrap_or(spec);
    ports
        .split('-')
        .any(|p| p.parse::<u64>().is_ok_and(|n| n > 65535))
}

fn valid_label_key(key: &str) -> bool {
    let first_ok = key.starts_with(|c: char| c.is_ascii_lowercase());
    let last_ok = key.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = key.chars().all(|c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_' | '/')
    });
    let reserved = ["com.docker.", "io.docker.", "org.dockerproject."]
        .iter()
        .any(|r| key.starts_with(r));
    first_ok && last_ok && chars_ok && !reserved && !key.contains("..") && !key.contains("--")
}

/// DL3002: a stage whose last USER is root.
fn last_user_root(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut stage_root: BTreeMap<usize, usize> = BTreeMap::new();
    let mut stage = 0;
    for instr in stream {
        match &instr.kind {
            Kind::From(_) => stage = instr.line,
            Kind::User(user) => {
                let root = user == "root"
                    || user == "0"
                    || user.starts_with("root:")
                    || user.starts_with("0:");
                if root {
                    stage_root.insert(stage, instr.line);
                } else {
                    stage_root.remove(&stage);
                }
            }
            _ => {}
        }
    }
    out.extend(
        stage_root
            .into_values()
            .map(|line| hit("DL3002", line, "the last USER of the stage is root")),
    );
}

/// DL3006: FROM an image without a tag (not a stage, scratch, a digest or
/// a variable).
fn untagged_base(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut aliases = BTreeSet::new();
    for instr in stream {
        if let Kind::From(From { image, alias, .. }) = &instr.kind {
            let untagged = image.tag.is_none()
                && image.digest.is_none()
                && image.name != "scratch"
                && !image.name.starts_with('$')
                && !aliases.contains(&image.name);
            if untagged {
                out.push(hit(
                    "DL3006",
                    instr.line,
                    format!("FROM {} has no tag", image.name),
                ));
            }
            if let Some(a) = alias {
                aliases.insert(a.clone());
            }
        }
    }
}

/// DL3012, DL4003, DL4004: a second HEALTHCHECK, CMD, ENTRYPOINT in a stage;
/// DL3024: a stage name used twice.
fn per_stage_duplicates(stream: &[Instr], out: &mut Vec<Hit>) {
    let (mut health, mut cmd, mut entry) = (false, false, false);
    let mut names = BTreeSet::new();
    for instr in stream {
        let line = instr.line;
        match &instr.kind {
            Kind::From(from) => {
                (health, cmd, entry) = (false, false, false);
                if let Some(alias) = &from.alias
                    && !names.insert(alias.clone())
                {
                    out.push(hit(
                        "DL3024",
                        line,
                        format!("stage name {alias} is used twice"),
                    ));
                }
            }
            Kind::Healthcheck { .. } => {
                if health {
                    out.push(hit("DL3012", line, "a second HEALTHCHECK in the stage"));
                }
                health = true;
            }
            Kind::Cmd { .. } => {
                if cmd {
                    out.push(hit(
                        "DL4003",
                        line,
                        "a second CMD in the stage: only the last takes effect",
                    ));
                }
                cmd = true;
            }
            Kind::Entrypoint { .. } => {
                if entry {
                    out.push(hit(
                        "DL4004",
                        line,
                        "a second ENTRYPOINT in the stage: only the last takes effect",
                    ));
                }
                entry = true;
            }
            _ => {}
        }
    }
}

/// DL3022 (COPY --from a name no earlier stage has) and DL3023 (COPY
/// --from the stage itself).
fn copy_from(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut names = BTreeSet::new();
    let mut count = 0usize;
    let mut current: Option<&String> = None;
    for instr in stream {
        match &instr.kind {
            Kind::From(from) => {
                count += 1;
                current = from.alias.as_ref();
                if let Some(a) = &from.alias {
                    names.insert(a.clone());
                }
            }
            Kind::Copy {
                from: Some(source), ..
            } => {
                let s = drop_quotes(source);
                let known = s.contains(':')
                    || names.contains(source)
                    || leading_number(source).is_some_and(|n| n < count);
                if !known {
                    out.push(hit(
                        "DL3022",
                        instr.line,
                        format!("COPY --from={source} names no earlier stage"),
                    ));
                }
                if current == Some(source) {
                    out.push(hit(
                        "DL3023",
                        instr.line,
                        format!("COPY --from={source} copies from its own stage"),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// The decimal number a word starts with (as Haskell's `decimal` reads it).
fn leading_number(s: &str) -> Option<usize> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// DL3044: `ENV A=1 B=$A` (a name defined by the same ENV, and not
/// before it by an ENV or ARG, used in another of its values).
fn env_self_reference(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut defined: BTreeSet<String> = BTreeSet::new();
    for instr in stream {
        match &instr.kind {
            Kind::Env(pairs) => {
                let referenced = pairs.iter().enumerate().any(|(i, (name, _))| {
                    !defined.contains(name)
                        && pairs
                            .iter()
                            .enumerate()
                            .any(|(j, (_, value))| i != j && references(value, name))
                });
                if referenced {
                    out.push(hit(
                        "DL3044",
                        instr.line,
                        "ENV refers to a variable it defines itself",
                    ));
                }
                defined.extend(pairs.iter().map(|(k, _)| k.clone()));
            }
            Kind::Arg(names) => defined.extend(names.iter().cloned()),
            _ => {}
        }
    }
}

/// `${name}` or `$name` not followed by a name character.
fn references(text: &str, name: &str) -> bool {
    if text.contains(&format!("${{{name}}}")) {
        return true;
    }
    let bare = format!("${name}");
    text.match_indices(&bare).any(|(at, _)| {
        !text[at + bare.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The key hadolint gives a stage for what it inherits: its alias, or
/// its base image's name.
fn stage_key(from: &From) -> String {
    from.alias
        .clone()
        .unwrap_or_else(|| from.image.name.clone())
}

/// DL3045: COPY to a relative destination in a stage (or the stages it is
/// built on) with no WORKDIR.
fn relative_copy(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut workdir_set: BTreeMap<Option<String>, bool> = BTreeMap::new();
    let mut current: Option<String> = None;
    for instr in stream {
        match &instr.kind {
            Kind::From(from) => {
                let inherited = workdir_set
                    .get(&Some(from.image.name.clone()))
                    .copied()
                    .unwrap_or(false);
                let key = stage_key(from);
                workdir_set.insert(Some(key.clone()), inherited);
                current = Some(key);
            }
            Kind::Workdir(_) => {
                workdir_set.insert(current.clone(), true);
            }
            Kind::Copy { dest, .. } => {
                let set = workdir_set.get(&current).copied().unwrap_or(false);
                let d = drop_quotes(dest);
                if !set && !d.starts_with('/') && !windows_absolute(d) && !d.starts_with('$') {
                    out.push(hit(
                        "DL3045",
                        instr.line,
                        format!("COPY to {dest}, relative, with no WORKDIR in the stage"),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// DL3066: USER by name, not a number (nor an ARG declared before).
fn user_by_name(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut args: BTreeSet<String> = BTreeSet::new();
    for instr in stream {
        match &instr.kind {
            Kind::Arg(names) => args.extend(names.iter().cloned()),
            Kind::User(user) => {
                let uid = user.split(':').next().unwrap_or(user);
                let from_arg = args.iter().any(|a| {
                    user.contains(&format!("${{{a}}}")) || user.contains(&format!("${a}"))
                });
                if !uid.chars().all(|c| c.is_ascii_digit()) && !from_arg {
                    out.push(hit(
                        "DL3066",
                        instr.line,
                        format!("USER {user} is a name, not a numeric id"),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// DL3026: with `trustedRegistries` configured, an image (FROM, COPY
/// --from, a RUN mount's from) from another registry.
fn trusted_registries(stream: &[Instr], trusted: &[String], out: &mut Vec<Hit>) {
    if trusted.is_empty() {
        return;
    }
    let allowed = |registry: &str| {
        trusted.iter().any(|t| {
            if t == "*" {
                true
            } else if let Some(suffix) = t.strip_prefix('*') {
                registry.ends_with(suffix)
            } else if let Some(prefix) = t.strip_suffix('*') {
                registry.starts_with(prefix)
            } else {
                registry == t
            }
        })
    };
    let mut aliases: BTreeSet<String> = BTreeSet::new();
    let ok = |aliases: &BTreeSet<String>, reference: &str| {
        let image = super::image(reference);
        aliases.contains(&image.name)
            || match &image.registry {
                Some(r) => allowed(r),
                None => {
                    image.name == "scratch" || allowed("docker.io") || allowed("hub.docker.com")
                }
            }
    };
    for instr in stream {
        let (reference, line) = match &instr.kind {
            Kind::From(from) => {
                let reference = from_reference(from);
                let good = ok(&aliases, &reference);
                if let Some(a) = &from.alias {
                    aliases.insert(a.clone());
                }
                (reference, if good { None } else { Some(instr.line) })
            }
            Kind::Copy { from: Some(f), .. } => {
                (f.clone(), (!ok(&aliases, f)).then_some(instr.line))
            }
            _ => continue,
        };
        if let Some(line) = line {
            out.push(hit(
                "DL3026",
                line,
                format!("{reference} is not from a trusted registry"),
            ));
        }
    }
}

fn from_reference(from: &From) -> String {
    match &from.image.registry {
        Some(r) => format!("{r}/{}", from.image.name),
        None => from.image.name.clone(),
    }
}

/// DL3010: a local archive COPY'd in and then extracted by a RUN of the
/// same stage.
fn archive_extracted(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut archives: Vec<(usize, String)> = Vec::new();
    let mut extracted: BTreeSet<(usize, String)> = BTreeSet::new();
    let basename = |p: &str| {
        let p = drop_quotes(p);
        p.rsplit(['/', '\\']).next().unwrap_or(p).to_string()
    };
    let is_archive = |p: &str| ARCHIVES.iter().any(|a| drop_quotes(p).ends_with(a));
    for instr in stream {
        match &instr.kind {
            Kind::From(_) => archives.clear(),
            Kind::Copy {
                sources,
                dest,
                from: None,
            } => {
                if is_archive(dest) {
                    archives.push((instr.line, basename(dest)));
                } else {
                    archives.extend(
                        sources
                            .iter()
                            .filter(|s| is_archive(s))
                            .map(|s| (instr.line, basename(s))),
                    );
                }
            }
            Kind::Run(run) => {
                for cmd in &run.script.commands {
                    let tar_x = cmd.name == "tar"
                        && cmd.args.iter().any(|a| {
                            a == "--extract"
                                || a == "--get"
                                || (a.starts_with('-') && a.contains('x'))
                        });
                    let unzip = matches!(
                        cmd.name.as_str(),
                        "unzip"
                            | "gunzip"
                            | "bunzip2"
                            | "unlzma"
                            | "unxz"
                            | "zgz"
                            | "uncompress"
                            | "zcat"
                            | "gzcat"
                    );
                    if tar_x || unzip {
                        let names: Vec<String> =
                            cmd.args_no_flags().iter().map(|a| basename(a)).collect();
                        for a in &archives {
                            if names.contains(&a.1) {
                                extracted.insert(a.clone());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out.extend(extracted.into_iter().map(|(line, name)| {
        hit(
            "DL3010",
            line,
            format!("{name} is copied, then extracted: ADD extracts it"),
        )
    }));
}

/// DL3059: a RUN right after another with the same flags, both of at
/// most one command. (hadolint's limit reads "at most two", but it counts
/// each command twice: ShellCheck's syntax tree has it as a redirection
/// holding a simple command, and hadolint takes both.)
fn consecutive_runs(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut previous: Option<(&Vec<String>, usize)> = None;
    for instr in stream {
        match &instr.kind {
            Kind::Run(run) => {
                let count = run.script.commands.len();
                match previous {
                    Some((flags, prev_count))
                        if *flags == run.flags && count <= 1 && prev_count <= 1 =>
                    {
                        out.push(hit(
                            "DL3059",
                            instr.line,
                            "RUN right after another RUN: consider one",
                        ));
                    }
                    _ => previous = Some((&run.flags, count)),
                }
            }
            _ => previous = None,
        }
    }
}

/// DL4006: a RUN with a pipe in a stage whose SHELL has no `-o pipefail`
/// (stages start without it).
fn pipefail(stream: &[Instr], out: &mut Vec<Hit>) {
    let mut pipefail = false;
    for instr in stream {
        match &instr.kind {
            Kind::From(_) => pipefail = false,
            Kind::Shell(words) => {
                let first = words.first().map(String::as_str).unwrap_or("");
                let non_posix = ["pwsh", "powershell", "cmd"]
                    .iter()
                    .any(|s| first.starts_with(s));
                let shell = matches!(
                    first,
                    "/bin/bash" | "/bin/zsh" | "/bin/ash" | "bash" | "zsh" | "ash"
                );
                let has_o = words[1..].iter().any(|w| {
                    w.strip_prefix("--").map_or_else(
                        || w.starts_with('-') && w.len() > 1 && w.contains('o'),
                        |l| l.split('=').next() == Some("o"),
                    )
                });
                pipefail = non_posix || (shell && has_o && words.iter().any(|w| w == "pipefail"));
            }
            Kind::Run(run) if !pipefail && run.script.pipes => {
                out.push(hit(
                    "DL4006",
                    instr.line,
                    "RUN with a pipe and no `SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]`",
                ));
            }
            _ => {}
        }
    }
}

/// DL3057 (off by default): a stage with no HEALTHCHECK, neither its own
/// nor one of a stage it is built on.
fn missing_healthcheck(stream: &[Instr], out: &mut Vec<Hit>) {
    // (line, name, base image name, has one)
    let mut stages: Vec<(usize, String, String, bool)> = Vec::new();
    for instr in stream {
        match &instr.kind {
            Kind::From(from) => {
                stages.push((instr.line, stage_key(from), from.image.name.clone(), false))
            }
            Kind::Healthcheck { .. } => {
                if let Some(s) = stages.last_mut() {
                    s.3 = true;
                }
            }
            _ => {}
        }
    }
    let has = |i: usize| -> bool {
        let mut at = i;
        for _ in 0..stages.len() {
            if stages[at].3 {
                return true;
            }
            match stages[..at].iter().rposition(|s| s.1 == stages[at].2) {
                Some(parent) => at = parent,
                None => return false,
            }
        }
        false
    };
    for (i, stage) in stages.iter().enumerate() {
        if !has(i) {
            out.push(hit("DL3057", stage.0, "the stage has no HEALTHCHECK"));
        }
    }
}
