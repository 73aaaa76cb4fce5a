//! One Dockerfile, read by kiln's frontend, walked stage by stage: what
//! each stage has in effect (ENV, ARG, SHELL), what each RUN runs, and the
//! rules applied in order.

use kiln_dockerfile::instructions::{self, Command, MountType, RunCommand};

use crate::LintError;
use crate::config::{CheckDirective, Config, Pragmas};
use crate::context::Context;
use crate::finding::{Finding, Origin, Severity};
use crate::fix::Fix;
use crate::rules::{self, Hit, StageEnv, Step, buildkit, hadolint, pin};
use crate::script::{self, Invocation};

/// What a stage has in effect at its end, for the stages built on it.
#[derive(Clone)]
struct StageState {
    env: StageEnv,
    shell: Vec<String>,
}

/// Lints one Dockerfile with no configuration file (its own `# hadolint`
/// comments and `# check=` directive still count). `file` names it in the
/// findings; `text` is its content. Findings come sorted by line, then rule.
pub fn lint(file: &str, text: &[u8]) -> Result<Vec<Finding>, LintError> {
    lint_with(file, text, &Config::default())
}

/// Lints one Dockerfile under a configuration: which rules are ignored,
/// at which level each reports, which registries are trusted.
pub fn lint_with(file: &str, text: &[u8], config: &Config) -> Result<Vec<Finding>, LintError> {
    lint_in_context(file, text, config, None)
}

/// [`lint_with`], and the rules that need the build context (KL110,
/// CopyIgnoredFile) when `context` describes it.
pub fn lint_in_context(
    file: &str,
    text: &[u8],
    config: &Config,
    context: Option<&Context>,
) -> Result<Vec<Finding>, LintError> {
    Ok(analyze(file, text, config, context)?
        .into_iter()
        .map(|(finding, _)| finding)
        .collect())
}

/// A platform as InvalidBaseImagePlatform compares it: OS, architecture
/// and variant, normalised (containerd's `Normalize`).
pub type PlatformParts<'a> = (&'a str, &'a str, &'a str);

/// BuildKit's InvalidBaseImagePlatform, which only a build can check: the
/// base `image` of the FROM at `line` resolved to the platform `actual`
/// while the stage is built for `expected`. The finding, if the OS or the
/// architecture differ and the Dockerfile's `# check=` directive (and
/// `config`) let it report, at the level they give it.
pub fn base_platform_finding(
    file: &str,
    text: &[u8],
    config: &Config,
    image: &str,
    expected: PlatformParts<'_>,
    actual: PlatformParts<'_>,
    line: usize,
) -> Option<Finding> {
    let hit = rules::buildkit::base_platform(image, expected, actual, line)?;
    let ast = kiln_dockerfile::parse(text).ok()?;
    settle(file, &ast, config, vec![hit])
        .into_iter()
        .next()
        .map(|(finding, _)| finding)
}

fn parse(text: &[u8]) -> Result<kiln_dockerfile::Ast, LintError> {
    kiln_dockerfile::parse(text).map_err(|e| LintError::Parse {
        line: e.location().map_or(1, |l| l.start_line),
        message: e.to_string(),
    })
}

/// [`lint_with`], each finding with the fix its rule knows, if any.
pub(crate) fn analyze(
    file: &str,
    text: &[u8],
    config: &Config,
    context: Option<&Context>,
) -> Result<Vec<(Finding, Option<Fix>)>, LintError> {
    let ast = parse(text)?;
    let dockerfile = instructions::parse_dockerfile(&ast).map_err(|e| LintError::Parse {
        line: e.location().start_line,
        message: e.message(),
    })?;
    let source = String::from_utf8_lossy(text);
    let lines: Vec<&str> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();

    // A stage's `ARG NAME` without a default takes the global one.
    let global_defaults: StageEnv = dockerfile
        .meta_args
        .iter()
        .flat_map(|a| &a.args)
        .map(|d| (d.key.clone(), d.value.as_deref().map(unquote)))
        .collect();
    let mut hits = Vec::new();
    let mut states: Vec<StageState> = Vec::new();
    let names: Vec<Option<&str>> = dockerfile
        .stages
        .iter()
        .map(|s| s.name.as_deref())
        .collect();
    // Stage index → the first line that builds on it.
    let mut used_at: Vec<Option<usize>> = vec![None; dockerfile.stages.len()];
    let stage_of = |reference: &str, before: usize| -> Option<usize> {
        let lower = reference.to_ascii_lowercase();
        names[..before]
            .iter()
            .position(|n| *n == Some(lower.as_str()))
            .or_else(|| reference.parse::<usize>().ok().filter(|&i| i < before))
    };

    for (index, stage) in dockerfile.stages.iter().enumerate() {
        let parent = stage_of(&stage.base_name, index);
        if let Some(p) = parent {
            used_at[p].get_or_insert(stage.location.start_line);
        }
        let mut state = parent.map_or_else(
            || StageState {
                env: StageEnv::new(),
                shell: vec!["/bin/sh".into(), "-c".into()],
            },
            |p| states[p].clone(),
        );
        let mut pending_updates: Vec<Update> = Vec::new();
        let mut context_copy: Option<usize> = None;
        for command in &stage.commands {
            let line = command.location().start_line;
            match command {
                Command::Env(env) => {
                    for pair in &env.pairs {
                        state
                            .env
                            .insert(pair.key.clone(), Some(unquote(&pair.value)));
                    }
                }
                Command::Arg(arg) => {
                    for def in &arg.args {
                        match &def.value {
                            Some(v) => {
                                state.env.insert(def.key.clone(), Some(unquote(v)));
                            }
                            None => {
                                let global = global_defaults.get(&def.key).cloned().flatten();
                                let value = state.env.entry(def.key.clone()).or_insert(None);
                                if value.is_none() {
                                    *value = global;
                                }
                            }
                        }
                    }
                }
                Command::Shell(shell) => state.shell = shell.shell.clone(),
                Command::Copy(copy) => {
                    if let Some(from) = &copy.from
                        && let Some(s) = stage_of(from, index)
                    {
                        used_at[s].get_or_insert(line);
                    }
                    if copy.from.is_none() && whole_context(&copy.sources.paths) {
                        context_copy.get_or_insert(line);
                    }
                }
                Command::Add(add) => {
                    for path in &add.sources.paths {
                        hits.extend(pin::add_url(line, path, add.checksum.is_some()));
                    }
                    if whole_context(&add.sources.paths) {
                        context_copy.get_or_insert(line);
                    }
                }
                Command::Run(run) => {
                    let mounts = run.mounts_as_written().unwrap_or_default();
                    for mount in &mounts {
                        if let Some(from) = &mount.from
                            && let Some(s) = stage_of(from, index)
                        {
                            used_at[s].get_or_insert(line);
                        }
                    }
                    let location = run.origin.location;
                    let step = Step {
                        invocations: run_invocations(run, &state.shell, &lines, ast.escape),
                        cache_targets: mounts
                            .iter()
                            .filter(|m| m.kind == MountType::Cache)
                            .filter_map(|m| m.target.clone())
                            .collect(),
                        env: &state.env,
                        lines: (location.start_line, location.end_line),
                        exec: !run.command.prepend_shell,
                    };
                    rules::hang_rules(&step, &mut hits);
                    rules::cache_rules(&step, &mut hits);
                    rules::heavy_frameworks(&step.invocations, &mut hits);
                    stage_rules(&step, &mut pending_updates, &mut context_copy, &mut hits);
                }
                _ => {}
            }
        }
        states.push(state);
    }

    for (index, stage) in dockerfile.stages.iter().enumerate() {
        if let Some(used) = used_at[index]
            && stage_of(&stage.base_name, index).is_none()
            && pin::unpinned(&stage.base_name)
        {
            let name = stage.name.clone().unwrap_or_else(|| index.to_string());
            hits.push(pin::unpinned_base(
                stage.location.start_line,
                &name,
                &stage.base_name,
                used,
            ));
        }
    }

    hadolint::check(
        &dockerfile,
        &hadolint::Settings {
            trusted_registries: config.trusted_registries.clone(),
        },
        &mut hits,
    );
    let reads = buildkit::check(&ast, &dockerfile, &mut hits);
    if let Some(context) = context {
        if let Some(ignore) = &context.ignore {
            rules::context::copy_ignored(&reads, &ignore.patterns, &mut hits);
        }
        rules::context::context_size(&reads, context, &mut hits);
    }
    Ok(settle(file, &ast, config, hits))
}

/// The hits of a file as findings: dropped or levelled by `config`, the
/// file's `# hadolint` pragmas and its `# check=` directives, sorted by
/// line, then rule.
fn settle(
    file: &str,
    ast: &kiln_dockerfile::Ast,
    config: &Config,
    mut hits: Vec<Hit>,
) -> Vec<(Finding, Option<Fix>)> {
    let comments = ast
        .children
        .iter()
        .flat_map(|n| {
            n.prev_comment_lines
                .iter()
                .copied()
                .zip(n.prev_comment.iter())
        })
        .map(|(line, text)| (line, text.as_str()));
    let pragmas = Pragmas::read(comments);
    hits.extend(
        pragmas
            .comments
            .iter()
            .map(|&line| rules::hit("DL1001", line, "an inline `# hadolint ignore=` pragma")),
    );
    let check = ast
        .directives
        .iter()
        .find(|d| d.name == "check")
        .map(|d| CheckDirective::parse(&d.value))
        .unwrap_or_default();
    // BuildKit also reads a `# check=` comment above an instruction, for
    // that instruction's findings.
    let local_checks: std::collections::BTreeMap<usize, CheckDirective> = ast
        .children
        .iter()
        .filter_map(|node| {
            let local = node
                .prev_comment
                .iter()
                .find_map(|c| CheckDirective::from_comment(c))?;
            Some((node.start_line, check.merged(&local)))
        })
        .collect();

    let mut findings: Vec<(Finding, Option<Fix>)> = hits
        .into_iter()
        .filter_map(
            |Hit {
                 rule,
                 line,
                 message,
                 fix,
             }| {
                let rule = rules::rule(rule);
                let severity = match rule.origin {
                    Origin::Buildkit => {
                        let check = local_checks.get(&line).unwrap_or(&check);
                        if !check.runs(rule.id, !rule.on_by_default) {
                            return None;
                        }
                        if check.error {
                            Severity::Error
                        } else {
                            rule.severity
                        }
                    }
                    _ => match config.overrides.get(rule.id) {
                        Some(level) => (*level)?,
                        None if rule.on_by_default => rule.severity,
                        None => return None,
                    },
                };
                let ignored = config.ignored.contains(rule.id)
                    || (!config.disable_ignore_pragma && pragmas.ignores(rule.id, line));
                (!ignored).then(|| {
                    let finding = Finding {
                        rule: rule.id,
                        severity,
                        file: file.to_string(),
                        line,
                        message,
                        why: rule.why,
                    };
                    (finding, fix)
                })
            },
        )
        .collect();
    findings.sort_by(|(a, _), (b, _)| (a.line, a.rule).cmp(&(b.line, b.rule)));
    findings
}

/// An `apt-get update` in a RUN without an install, waiting for the
/// install after it (KL108).
struct Update {
    line: usize,
    /// The lines of its RUN, when that RUN runs nothing else (in shell
    /// form): the fix moves the update into the install's RUN and removes
    /// this one.
    alone: Option<(usize, usize)>,
}

/// KL108 and KL106, which look across the steps of a stage.
fn stage_rules(
    step: &Step<'_>,
    pending_updates: &mut Vec<Update>,
    context_copy: &mut Option<usize>,
    hits: &mut Vec<Hit>,
) {
    let alone = step.invocations.len() == 1 && !step.exec;
    let updates: Vec<Update> = step
        .invocations
        .iter()
        .filter(|i| rules::apt_subcommand(i) == Some("update"))
        .map(|i| Update {
            line: i.line,
            alone: (alone && i.env.is_empty()).then_some(step.lines),
        })
        .collect();
    let install = step.invocations.iter().find(|i| rules::is_apt_install(i));
    match install {
        Some(install) => {
            // One update moves into the install's RUN; a second one alone
            // would be removed with nothing to stand for it twice.
            let fixable = pending_updates.len() == 1 && !step.exec;
            hits.extend(pending_updates.drain(..).map(|u| {
                let fix = u
                    .alone
                    .filter(|_| fixable)
                    .map(|update_run| Fix::UpdateWithInstall {
                        install_line: install.line,
                        program: install.program.clone(),
                        update_run,
                    });
                rules::update_apart(u.line, install.line, fix)
            }));
        }
        None => pending_updates.extend(updates),
    }
    if let Some(copy_line) = *context_copy
        && let Some(inv) = step
            .invocations
            .iter()
            .find(|i| rules::installs_dependencies(i))
    {
        hits.push(rules::context_before_install(
            copy_line,
            (inv.line, &inv.name),
        ));
        *context_copy = None;
    }
}

/// `COPY . dest`, `COPY ./ dest`: the whole build context.
fn whole_context(paths: &[String]) -> bool {
    paths
        .iter()
        .any(|p| matches!(p.as_str(), "." | "./" | "./*" | "*"))
}

/// Quotes around an ENV or ARG value, removed (no expansion).
fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// The programs a RUN runs: its exec-form argv, or its shell text (with the
/// Dockerfile lines), and the heredoc bodies the shell reads as scripts.
/// A stage whose SHELL is not a POSIX shell gives none for the shell form.
fn run_invocations(
    run: &RunCommand,
    shell: &[String],
    lines: &[&str],
    escape: char,
) -> Vec<Invocation> {
    let location = run.origin.location;
    if !run.command.prepend_shell {
        return script::argv_invocations(&run.command.args, location.start_line);
    }
    if !shell.first().is_some_and(|s| script::is_posix_shell(s)) {
        return Vec::new();
    }
    // Heredoc bodies are the last lines of the instruction, each followed
    // by its terminator line.
    let mut body_starts = Vec::new();
    let mut next = location.end_line + 1;
    for file in run.command.files.iter().rev() {
        next -= file.data.matches('\n').count() + 1;
        body_starts.push(next);
    }
    body_starts.reverse();
    let command_end = body_starts.first().map_or(location.end_line, |b| b - 1);
    let first = location.start_line.saturating_sub(1);
    let text_lines = lines
        .get(first..command_end.min(lines.len()))
        .unwrap_or(&[]);
    let chars = script::join_instruction(text_lines, location.start_line, escape);
    let mut invocations = script::invocations(&skip_keyword_and_flags(&chars));
    let runs_bodies = invocations.is_empty()
        || invocations
            .iter()
            .any(|i| script::is_posix_shell(&i.name) && script::dash_c_script(&i.args).is_none());
    if runs_bodies {
        for (file, start) in run.command.files.iter().zip(body_starts) {
            let interpreter = file
                .data
                .strip_prefix("#!")
                .and_then(|l| l.lines().next())
                .map(|l| l.split_whitespace().collect::<Vec<_>>());
            if let Some(words) = interpreter {
                let posix = match words.as_slice() {
                    [env, prog, ..] if env.ends_with("/env") => script::is_posix_shell(prog),
                    [prog, ..] => script::is_posix_shell(prog),
                    [] => false,
                };
                if !posix {
                    continue;
                }
            }
            invocations.extend(script::invocations(&script::body_chars(&file.data, start)));
        }
    }
    invocations
}

/// The chars after `RUN` and its `--flags`.
fn skip_keyword_and_flags(chars: &[(char, usize)]) -> Vec<(char, usize)> {
    let is_space = |c: char| c == ' ' || c == '\t';
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while *i < chars.len() && is_space(chars[*i].0) {
            *i += 1;
        }
    };
    let skip_word = |i: &mut usize| {
        while *i < chars.len() && !is_space(chars[*i].0) && chars[*i].0 != '\n' {
            *i += 1;
        }
    };
    skip_spaces(&mut i);
    skip_word(&mut i);
    loop {
        skip_spaces(&mut i);
        if chars.get(i).map(|c| c.0) == Some('-') && chars.get(i + 1).map(|c| c.0) == Some('-') {
            skip_word(&mut i);
        } else {
            break;
        }
    }
    chars[i..].to_vec()
}
