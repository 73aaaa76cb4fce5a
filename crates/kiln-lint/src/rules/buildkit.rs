//! BuildKit's build checks (`docker build --check`), by their names, with
//! BuildKit's conditions. CopyIgnoredFile runs when the caller knows the
//! context's ignore file (rules/context.rs); InvalidBaseImagePlatform needs
//! the base image, so `kiln build` reports it ([`base_platform`]). Where
//! kiln's frontend already finds it
//! (empty continuation lines, FROM arguments not declared, undefined
//! variables) its finding is reused. Whether a check runs, and at which
//! level, is the `# check=` directive's (config.rs).

use std::collections::BTreeSet;

use kiln_dockerfile::Ast;
use kiln_dockerfile::instructions::{Command, Dockerfile, MountType};
use kiln_dockerfile::plan::{self, Base, BuildOptions, StageScope};
use kiln_dockerfile::shell::Lex;

use super::context::{ContextRead, ReadKind, remote_source};
use super::{Hit, hit};

/// BuildKit's checks; returns what the stages the build needs read from
/// the context, expanded (for the context rules).
pub(crate) fn check(ast: &Ast, dockerfile: &Dockerfile, out: &mut Vec<Hit>) -> Vec<ContextRead> {
    for warning in &ast.warnings {
        if warning.message.starts_with("Empty continuation line") {
            out.push(hit(
                "NoEmptyContinuation",
                warning.end_line,
                "Empty continuation line",
            ));
        }
    }
    stages_and_casing(dockerfile, out);
    definition_descriptions(ast, out);
    from_args(dockerfile, ast.escape, out);
    let plan = plan::plan(dockerfile, ast.escape, &BuildOptions::default()).ok();
    // The checks BuildKit makes while dispatching an instruction see only
    // the stages the build needs (the last stage and what it reads).
    let built: Vec<usize> = plan.as_ref().map_or_else(
        || (0..dockerfile.stages.len()).collect(),
        |p| p.order.clone(),
    );
    let mut names = BTreeSet::new();
    // Per stage: SHELL set, WORKDIR set (both inherited from a parent stage).
    let mut states: Vec<(bool, bool)> = Vec::new();
    for (index, stage) in dockerfile.stages.iter().enumerate() {
        let line = stage.location.start_line;
        if let Some(name) = &stage.name {
            if matches!(name.as_str(), "scratch" | "context") {
                out.push(hit(
                    "ReservedStageName",
                    line,
                    format!("Stage name should not use the same name as reserved stage \"{name}\""),
                ));
            }
            if !names.insert(name.clone()) {
                out.push(hit(
                    "DuplicateStageName",
                    line,
                    format!("Duplicate stage name \"{name}\", stage names should be unique"),
                ));
            }
        }
        if let Some(platform) = &stage.platform {
            platform_checks(platform, stage.name.as_deref(), line, out);
        }
        let parent = dockerfile.stages[..index]
            .iter()
            .position(|s| s.name.as_deref() == Some(stage.base_name.to_ascii_lowercase().as_str()));
        let (mut shell_set, mut workdir_set) = parent.map_or((false, false), |p| states[p]);
        let mut used: [Option<usize>; 3] = [None; 3];
        let dispatched = built.contains(&index);
        for command in stage.commands.iter().filter(|_| dispatched) {
            let line = command.origin().location.start_line;
            let once = match command {
                Command::Cmd(_) => Some(0),
                Command::Entrypoint(_) => Some(1),
                Command::Healthcheck(_) => Some(2),
                _ => None,
            };
            if let Some(slot) = once {
                if let Some(previous) = used[slot] {
                    out.push(hit(
                        "MultipleInstructionsDisallowed",
                        previous,
                        format!(
                            "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                            command.name()
                        ),
                    ));
                }
                used[slot] = Some(line);
            }
            match command {
                Command::Shell(_) => shell_set = true,
                Command::Cmd(c) if c.command.prepend_shell && !shell_set => {
                    json_args(command.name(), line, out)
                }
                Command::Entrypoint(c) if c.command.prepend_shell && !shell_set => {
                    json_args(command.name(), line, out)
                }
                Command::Workdir(w) => {
                    if !workdir_set && !absolute(&w.path) {
                        out.push(hit(
                            "WorkdirRelativePath",
                            line,
                            format!(
                                "Relative workdir \"{}\" can have unexpected results if the base image changes",
                                w.path
                            ),
                        ));
                    }
                    workdir_set = true;
                }
                Command::Maintainer(_) => out.push(hit(
                    "MaintainerDeprecated",
                    line,
                    "Maintainer instruction is deprecated in favor of using label",
                )),
                Command::Env(env) => {
                    if env.pairs.iter().any(|p| p.no_delim) {
                        legacy_key_value("ENV", line, out);
                    }
                    for pair in &env.pairs {
                        secret_key("ENV", &pair.key, line, out);
                    }
                }
                Command::Label(label) if label.labels.iter().any(|p| p.no_delim) => {
                    legacy_key_value("LABEL", line, out);
                }
                Command::Arg(arg) => {
                    for def in &arg.args {
                        secret_key("ARG", &def.key, line, out);
                    }
                }
                Command::Expose(expose) => {
                    for port in &expose.ports {
                        expose_format(port, line, out);
                    }
                }
                _ => {}
            }
        }
        states.push((shell_set, workdir_set));
    }
    match &plan {
        Some(plan) => dispatch_stages(plan, &built, out),
        // A Dockerfile the planner refuses: its sources as written.
        None => dockerfile
            .stages
            .iter()
            .flat_map(|s| &s.commands)
            .filter_map(context_read)
            .collect(),
    }
}

/// InvalidBaseImagePlatform (dockerfile2llb `validateBaseImagePlatform`):
/// the base image `image` (as the FROM names it, expanded) resolved to
/// `actual` while the stage is built for `expected`; BuildKit compares
/// the OS and the architecture only. The platforms are given normalised
/// and formatted (`linux/arm64/v8`).
pub(crate) fn base_platform(
    image: &str,
    expected: (&str, &str, &str),
    actual: (&str, &str, &str),
    line: usize,
) -> Option<Hit> {
    let format = |(os, arch, variant): (&str, &str, &str)| {
        if variant.is_empty() {
            format!("{os}/{arch}")
        } else {
            format!("{os}/{arch}/{variant}")
        }
    };
    (expected.0 != actual.0 || expected.1 != actual.1).then(|| {
        hit(
            "InvalidBaseImagePlatform",
            line,
            format!(
                "Base image {image} was pulled with platform {}, expected {} for current build",
                kiln_dockerfile::go::quote(&format(actual)),
                kiln_dockerfile::go::quote(&format(expected))
            ),
        )
    })
}

/// What an (expanded) instruction reads from the build context, if
/// anything.
fn context_read(command: &Command) -> Option<ContextRead> {
    let line = command.location().start_line;
    let local = |paths: &[String]| -> Vec<String> {
        paths
            .iter()
            .filter(|p| !remote_source(p))
            .cloned()
            .collect()
    };
    match command {
        Command::Copy(c) if c.from.is_none() => Some(ContextRead {
            line,
            kind: ReadKind::Copy,
            sources: local(&c.sources.paths),
            excludes: c.exclude.clone(),
        }),
        Command::Add(a) => Some(ContextRead {
            line,
            kind: ReadKind::Add,
            sources: local(&a.sources.paths),
            excludes: a.exclude.clone(),
        }),
        Command::Run(r) => {
            let sources: Vec<String> = r
                .mounts_as_written()
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.kind == MountType::Bind && m.from.is_none())
                .map(|m| m.source.unwrap_or_else(|| "/".to_string()))
                .collect();
            (!sources.is_empty()).then(|| ContextRead {
                line,
                kind: ReadKind::Bind,
                sources,
                excludes: Vec::new(),
            })
        }
        _ => None,
    }
    .filter(|read| !read.sources.is_empty())
}

fn json_args(name: &str, line: usize, out: &mut Vec<Hit>) {
    out.push(hit(
        "JSONArgsRecommended",
        line,
        format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
    ));
}

fn legacy_key_value(name: &str, line: usize, out: &mut Vec<Hit>) {
    out.push(hit(
        "LegacyKeyValueFormat",
        line,
        format!(
            "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
        ),
    ));
}

/// A path that is absolute on Linux or Windows (`C:\`, `\`).
fn absolute(path: &str) -> bool {
    let mut chars = path.chars();
    path.starts_with('/')
        || path.starts_with('\\')
        || matches!((chars.next(), chars.next()), (Some(d), Some(':')) if d.is_ascii_alphabetic())
}

/// StageNameCasing, FromAsCasing and ConsistentInstructionCasing.
fn stages_and_casing(dockerfile: &Dockerfile, out: &mut Vec<Hit>) {
    let consistent = |s: &str| s == s.to_lowercase() || s == s.to_uppercase();
    let mut keywords: Vec<(&str, usize)> = Vec::new();
    for stage in &dockerfile.stages {
        let line = stage.location.start_line;
        keywords.push((&stage.orig_cmd, line));
        keywords.extend(
            stage
                .commands
                .iter()
                .map(|c| (c.origin().keyword.as_str(), c.origin().location.start_line)),
        );
        // `FROM [--flags] image AS name`, as written.
        let words: Vec<&str> = stage
            .code
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with("--"))
            .collect();
        if let [_, as_word, name] = words.as_slice() {
            if *name != name.to_lowercase() {
                out.push(hit(
                    "StageNameCasing",
                    line,
                    format!("Stage name '{name}' should be lowercase"),
                ));
            }
            let from = stage.orig_cmd.as_str();
            let mismatch = if from == from.to_lowercase() {
                *as_word != as_word.to_lowercase()
            } else if from == from.to_uppercase() {
                *as_word != as_word.to_uppercase()
            } else {
                false
            };
            if mismatch {
                out.push(hit(
                    "FromAsCasing",
                    line,
                    format!("'{as_word}' and '{from}' keywords' casing do not match"),
                ));
            }
        }
    }
    let lower = keywords
        .iter()
        .filter(|(k, _)| consistent(k) && *k == k.to_lowercase())
        .count();
    let upper = keywords
        .iter()
        .filter(|(k, _)| consistent(k) && *k != k.to_lowercase())
        .count();
    let majority_lower = lower > upper;
    for (keyword, line) in keywords {
        let wrong = if majority_lower {
            keyword != keyword.to_lowercase()
        } else {
            keyword != keyword.to_uppercase()
        };
        if wrong {
            out.push(hit(
                "ConsistentInstructionCasing",
                line,
                format!(
                    "Command '{keyword}' should match the case of the command majority ({})",
                    if majority_lower {
                        "lowercase"
                    } else {
                        "uppercase"
                    }
                ),
            ));
        }
    }
}

/// SecretsUsedInArgOrEnv: a name with a word (between `_`, or whole) that
/// names a secret, and none that says it is not one.
fn secret_key(instruction: &str, key: &str, line: usize, out: &mut Vec<Hit>) {
    let words: Vec<String> = key.split('_').map(str::to_ascii_lowercase).collect();
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    let secret = has(&[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ]);
    if secret && !has(&["public", "file", "version"]) {
        out.push(hit(
            "SecretsUsedInArgOrEnv",
            line,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} \"{key}\")"
            ),
        ));
    }
}

/// ExposeProtoCasing and ExposeInvalidFormat for one `[ip:][host:]port[/proto]`.
fn expose_format(raw: &str, line: usize, out: &mut Vec<Hit>) {
    let (spec, proto) = raw.split_once('/').unwrap_or((raw, ""));
    if proto != proto.to_lowercase() {
        out.push(hit(
            "ExposeProtoCasing",
            line,
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
        ));
    }
    if spec.contains(':') {
        out.push(hit(
            "ExposeInvalidFormat",
            line,
            format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"),
        ));
    }
}

/// RedundantTargetPlatform and FromPlatformFlagConstDisallowed.
fn platform_checks(platform: &str, stage: Option<&str>, line: usize, out: &mut Vec<Hit>) {
    if platform == "$TARGETPLATFORM" || platform == "${TARGETPLATFORM}" {
        out.push(hit(
            "RedundantTargetPlatform",
            line,
            format!("Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"),
        ));
    }
    if platform.contains('$') {
        return;
    }
    let mut parts = platform.split('/');
    let (Some(os), Some(arch)) = (parts.next(), parts.next()) else {
        return;
    };
    let name = stage.unwrap_or("");
    if !name.contains(os) && !name.contains(arch) {
        out.push(hit(
            "FromPlatformFlagConstDisallowed",
            line,
            format!("FROM --platform flag should not use constant value \"{platform}\""),
        ));
    }
}

/// InvalidDefinitionDescription (experimental): the comment right above an
/// ARG or FROM ... AS does not start with the name it declares.
fn definition_descriptions(ast: &Ast, out: &mut Vec<Hit>) {
    for node in &ast.children {
        let (instruction, keys): (&str, Vec<&str>) = match node.command_lower().as_str() {
            "arg" => (
                "ARG",
                node.args
                    .iter()
                    .map(|a| a.split('=').next().unwrap_or(a))
                    .collect(),
            ),
            "from" if node.args.len() == 3 => ("FROM", vec![node.args[2].as_str()]),
            _ => continue,
        };
        // The block of comments that ends right above the instruction.
        let mut first = node.prev_comment.len();
        let mut next = node.start_line;
        while first > 0 && node.prev_comment_lines[first - 1] + 1 == next {
            first -= 1;
            next = node.prev_comment_lines[first];
        }
        let Some(last) = node.prev_comment[first..].last() else {
            continue;
        };
        let word = last.trim().split(' ').next().unwrap_or("");
        if keys.is_empty() || keys.contains(&word) {
            continue;
        }
        let example = if keys.len() > 1 { "<arg_key>" } else { keys[0] };
        out.push(hit(
            "InvalidDefinitionDescription",
            node.start_line,
            format!(
                "Comment for {instruction} should follow the format: `# {example} <description>`"
            ),
        ));
    }
}

/// UndefinedArgInFrom and InvalidDefaultArgInFrom: FROM's image and
/// platform expanded with the global ARGs' defaults (and the platform
/// ARGs BuildKit defines).
fn from_args(dockerfile: &Dockerfile, escape: char, out: &mut Vec<Hit>) {
    const PLATFORM_ARGS: &[&str] = &[
        "BUILDPLATFORM",
        "BUILDOS",
        "BUILDARCH",
        "BUILDVARIANT",
        "TARGETPLATFORM",
        "TARGETOS",
        "TARGETARCH",
        "TARGETVARIANT",
    ];
    let lex = Lex::new(escape);
    let mut declared: BTreeSet<&str> = PLATFORM_ARGS.iter().copied().collect();
    let mut values: Vec<(String, String)> = PLATFORM_ARGS
        .iter()
        .map(|a| (a.to_string(), "linux/amd64".to_string()))
        .collect();
    for def in dockerfile.meta_args.iter().flat_map(|a| &a.args) {
        declared.insert(&def.key);
        if let Some(default) = &def.value
            && let Ok(v) = lex.process_word(default, &values)
        {
            values.push((def.key.clone(), v));
        }
    }
    for stage in &dockerfile.stages {
        let line = stage.location.start_line;
        let mut words = vec![stage.base_name.as_str()];
        words.extend(stage.platform.as_deref());
        for (i, word) in words.into_iter().enumerate() {
            let Ok(expanded) = lex.process_word_with_matches(word, &values) else {
                continue;
            };
            for name in expanded
                .unmatched
                .iter()
                .filter(|n| !declared.contains(n.as_str()))
            {
                let hint = kiln_dockerfile_suggest(name, &declared);
                out.push(hit(
                    "UndefinedArgInFrom",
                    line,
                    format!("FROM argument '{name}' is not declared{hint}"),
                ));
            }
            if i == 0 && word.contains('$') && !valid_reference(&expanded.value) {
                out.push(hit(
                    "InvalidDefaultArgInFrom",
                    line,
                    format!(
                        "Default value for ARG {word} results in empty or invalid base image name"
                    ),
                ));
            }
        }
    }
}

/// ` (did you mean X?)` for a declared name one edit away, or nothing.
fn kiln_dockerfile_suggest(name: &str, declared: &BTreeSet<&str>) -> String {
    let close = declared.iter().find(|d| {
        let (a, b): (Vec<char>, Vec<char>) = (name.chars().collect(), d.chars().collect());
        edit_distance(&a, &b) <= 2
    });
    close
        .map(|c| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// UndefinedVar, from kiln's frontend: each stage the build needs, its
/// instructions expanded in order. The base image's own variables are not
/// known here (only PATH is assumed, as every image has it). Returns what
/// those stages read from the context, expanded.
fn dispatch_stages(plan: &plan::Plan, built: &[usize], out: &mut Vec<Hit>) -> Vec<ContextRead> {
    let mut reads = Vec::new();
    let mut scopes: Vec<Option<StageScope<'_>>> = Vec::new();
    for (index, stage) in plan.stages.iter().enumerate() {
        let mut scope = match stage.base {
            Base::Stage(parent) => match scopes.get(parent).and_then(Option::as_ref) {
                Some(p) => StageScope::from_parent(p, index),
                None => plan.scope(index, &[]),
            },
            _ => plan.scope(index, &[]),
        };
        for command in &stage.stage.commands {
            let Ok(expanded) = scope.dispatch(command) else {
                break;
            };
            if built.contains(&index) {
                reads.extend(context_read(&expanded));
            }
        }
        for warning in scope.take_warnings() {
            if built.contains(&index)
                && warning.message.starts_with("Usage of undefined variable")
                && let Some(location) = warning.location
            {
                out.push(hit("UndefinedVar", location.start_line, warning.message));
            }
        }
        scopes.push(Some(scope));
    }
    reads.sort_by_key(|r| r.line);
    reads
}

/// Whether an image reference could be valid (Docker's grammar, loosely:
/// not empty, a lower-case repository path, an optional tag and digest).
fn valid_reference(reference: &str) -> bool {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    if digest.is_some_and(|d| !d.contains(':')) {
        return false;
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[last_slash..].rfind(':') {
        Some(c) => (&rest[..last_slash + c], Some(&rest[last_slash + c + 1..])),
        None => (rest, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !t.starts_with(['.', '-'])
    });
    let mut components = path.split('/');
    let first = components.next().unwrap_or("");
    let domain =
        path.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo_components: Vec<&str> = if domain {
        components.collect()
    } else {
        path.split('/').collect()
    };
    let component_ok = |c: &&str| {
        !c.is_empty()
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    !path.is_empty()
        && !repo_components.is_empty()
        && repo_components.iter().all(component_ok)
        && tag_ok
}
