//! hadolint's rules that need no ShellCheck, under hadolint's ids, with
//! hadolint 2.15.1's meaning: each reads the Dockerfile as one stream of
//! instructions, as hadolint does, and reports at the line where the
//! instruction starts. A `RUN` is read as hadolint reads it (see
//! [`SimpleCommand`](crate::script::SimpleCommand)): a `sudo apt-get` is
//! `sudo`'s, not `apt-get`'s, and `sh -c '...'` is one command.
//!
//! Rules that hadolint also applies to the instruction inside `ONBUILD`
//! run a second time over those instructions alone, as hadolint does.

mod command;
mod instructions;
mod run;

use kiln_dockerfile::instructions::{self as typed, Command, Dockerfile, MountType};

use super::Hit;
use crate::script::{self, Script};

/// What the configuration gives hadolint's rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `trustedRegistries`: when not empty, DL3026 reports images from others.
    pub(crate) trusted_registries: Vec<String>,
}

/// One instruction as hadolint's rules see it.
pub(crate) struct Instr {
    /// The line the instruction starts on (an `ONBUILD`'s, for its trigger).
    pub(crate) line: usize,
    pub(crate) kind: Kind,
}

pub(crate) enum Kind {
    From(From),
    Run(Run),
    Copy {
        sources: Vec<String>,
        dest: String,
        from: Option<String>,
    },
    Add {
        sources: Vec<String>,
    },
    /// Keys and values as written.
    Env(Vec<(String, String)>),
    /// The names declared.
    Arg(Vec<String>),
    Label(Vec<String>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Healthcheck {
        shell_form: bool,
    },
    Cmd {
        shell_form: bool,
    },
    Entrypoint {
        shell_form: bool,
    },
    Maintainer,
    /// The SHELL's words.
    Shell(Vec<String>),
    Other,
}

#[derive(PartialEq, Eq)]
pub(crate) struct From {
    pub(crate) image: Image,
    /// `AS name`, as written.
    pub(crate) alias: Option<String>,
    pub(crate) platform: Option<String>,
}

/// An image reference split as hadolint's parser splits it.
#[derive(PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) registry: Option<String>,
    pub(crate) name: String,
    pub(crate) tag: Option<String>,
    pub(crate) digest: Option<String>,
}

pub(crate) struct Run {
    pub(crate) script: Script,
    /// The command text (for `PIP_NO_CACHE_DIR=` in it).
    pub(crate) text: String,
    /// Targets of its cache and tmpfs mounts.
    pub(crate) cache_targets: Vec<String>,
    /// Its flags as written, to tell RUNs with different flags apart.
    pub(crate) flags: Vec<String>,
}

/// hadolint's findings on one Dockerfile.
pub(crate) fn check(dockerfile: &Dockerfile, settings: &Settings, out: &mut Vec<Hit>) {
    let (stream, triggers) = stream(dockerfile);
    instructions::check(&stream, settings, out);
    run::check(&stream, out);
    run::check_triggers(&triggers, out);
}

/// The instructions in file order, and the `ONBUILD` triggers on their own.
fn stream(dockerfile: &Dockerfile) -> (Vec<Instr>, Vec<Instr>) {
    let mut all = Vec::new();
    let mut triggers = Vec::new();
    for arg in &dockerfile.meta_args {
        all.push(Instr {
            line: arg.origin.location.start_line,
            kind: Kind::Arg(arg.args.iter().map(|a| a.key.clone()).collect()),
        });
    }
    for stage in &dockerfile.stages {
        all.push(Instr {
            line: stage.location.start_line,
            kind: Kind::From(from(stage)),
        });
        for command in &stage.commands {
            let line = command.origin().location.start_line;
            if let Command::Onbuild(onbuild) = command
                && let Some(kind) = trigger(&onbuild.expression)
            {
                triggers.push(Instr { line, kind });
            }
            all.push(Instr {
                line,
                kind: kind(command),
            });
        }
    }
    (all, triggers)
}

/// An `ONBUILD` trigger, read as an instruction of its own.
fn trigger(expression: &str) -> Option<Kind> {
    let ast = kiln_dockerfile::parse(expression.as_bytes()).ok()?;
    let command = typed::parse_instruction(ast.children.first()?).ok()?;
    Some(kind(&command))
}

fn kind(command: &Command) -> Kind {
    match command {
        Command::Run(run) => Kind::Run(Run {
            script: run_script(run),
            text: run.command.args.join(" "),
            cache_targets: run
                .mounts_as_written()
                .unwrap_or_default()
                .iter()
                .filter(|m| matches!(m.kind, MountType::Cache | MountType::Tmpfs))
                .filter_map(|m| m.target.clone())
                .collect(),
            flags: run_flags(&run.origin.code),
        }),
        Command::Copy(copy) => Kind::Copy {
            sources: copy.sources.paths.clone(),
            dest: copy.sources.dest.clone(),
            from: copy.from.clone(),
        },
        Command::Add(add) => Kind::Add {
            sources: add.sources.paths.clone(),
        },
        Command::Env(env) => Kind::Env(
            env.pairs
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
        ),
        Command::Arg(arg) => Kind::Arg(arg.args.iter().map(|a| a.key.clone()).collect()),
        Command::Label(label) => Kind::Label(label.labels.iter().map(|p| p.key.clone()).collect()),
        Command::Workdir(w) => Kind::Workdir(w.path.clone()),
        Command::User(u) => Kind::User(u.user.clone()),
        Command::Expose(e) => Kind::Expose(e.ports.clone()),
        Command::Healthcheck(h) => Kind::Healthcheck {
            shell_form: h.health.test.first().is_some_and(|t| t == "CMD-SHELL"),
        },
        Command::Cmd(c) => Kind::Cmd {
            shell_form: c.command.prepend_shell,
        },
        Command::Entrypoint(e) => Kind::Entrypoint {
            shell_form: e.command.prepend_shell,
        },
        Command::Maintainer(_) => Kind::Maintainer,
        Command::Shell(s) => Kind::Shell(s.shell.clone()),
        _ => Kind::Other,
    }
}

/// A RUN's commands as hadolint reads them: the shell text (continuations
/// joined) or the exec form's words joined by spaces. A RUN that starts
/// with a heredoc (`RUN <<EOF [command]`) is its command, if any, and the
/// heredoc bodies; a heredoc later in the line (`RUN python3 <<EOF`) is
/// text given to that command.
fn run_script(run: &typed::RunCommand) -> Script {
    let line = run.origin.location.start_line;
    let text = run.command.args.join(" ");
    if !(run.command.prepend_shell && text.trim_start().starts_with("<<")) {
        return script::simple_commands(&script::body_chars(&text, line));
    }
    let command: Vec<&str> = text
        .split_whitespace()
        .filter(|w| !w.starts_with("<<"))
        .collect();
    let mut script = script::simple_commands(&script::body_chars(&command.join(" "), line));
    for file in &run.command.files {
        script.extend(script::simple_commands(&script::body_chars(
            &file.data, line,
        )));
    }
    script
}

/// The `--flags` of a `RUN`, from its text.
fn run_flags(code: &str) -> Vec<String> {
    code.split_whitespace()
        .skip(1)
        .take_while(|w| w.starts_with("--"))
        .map(str::to_string)
        .collect()
}

fn from(stage: &typed::Stage) -> From {
    // The alias as written: `Stage::name` is lower-cased.
    let words: Vec<&str> = stage.code.split_whitespace().collect();
    let alias = match words.as_slice() {
        [.., as_, name] if as_.eq_ignore_ascii_case("as") && words.len() > 3 => {
            Some(name.to_string())
        }
        _ => None,
    };
    From {
        image: image(&stage.base_name),
        alias,
        platform: stage.platform.clone(),
    }
}

/// `registry/name:tag@digest`: the first part is a registry when it has a
/// `.` or a `:` or is `localhost`.
pub(crate) fn image(reference: &str) -> Image {
    let (rest, digest) = match outside_braces(reference, b'@') {
        Some(at) => (&reference[..at], Some(reference[at + 1..].to_string())),
        None => (reference, None),
    };
    let (registry, rest) = match rest.split_once('/') {
        Some((first, after))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first.to_string()), after)
        }
        _ => (None, rest),
    };
    // A `:` inside `${...}` (`scra${V:-tch}`) is not a tag's.
    let mut depth = 0;
    let mut tag_colon = None;
    let mut last_slash = 0;
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b'/' if depth == 0 => {
                last_slash = i + 1;
                tag_colon = None;
            }
            b':' if depth == 0 => tag_colon = Some(i),
            _ => {}
        }
    }
    let (name, tag) = match tag_colon {
        Some(colon) if colon >= last_slash => (
            rest[..colon].to_string(),
            Some(rest[colon + 1..].to_string()),
        ),
        _ => (rest.to_string(), None),
    };
    Image {
        registry,
        name,
        tag,
        digest,
    }
}

/// The first `byte` of `s` not inside `${...}`.
fn outside_braces(s: &str, byte: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            _ if b == byte && depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}
