//! One syntax-tree node → one typed instruction (BuildKit's
//! `instructions/parse.go`), and a whole tree → stages.
//!
//! Each instruction checks its arguments and flags in BuildKit's order, so a
//! line with several problems reports the one BuildKit reports.

use super::commands::{
    AddCommand, ArgCommand, ArgDef, CmdCommand, Command, CommandLine, Comment, CopyCommand,
    EntrypointCommand, EnvCommand, ExposeCommand, Healthcheck, HealthcheckCommand, InlineFile,
    KeyValuePair, LabelCommand, MaintainerCommand, OnbuildCommand, Origin, RunCommand,
    ShellCommand, SourceContent, SourcesAndDest, Stage, StopSignalCommand, UserCommand,
    VolumeCommand, WorkdirCommand,
};
use super::error::InstructionError;
use super::flags::{FlagError, Flags};
use super::mount::{MountError, parse_mount};
use super::run::{NetworkMode, SecurityMode, parse_device};
use crate::goconv::{parse_duration, parse_i32, quote};
use crate::parser::{chomp_heredoc_content, parse_heredoc};
use crate::suggest::suggest;
use crate::{Location, Node};

/// Every instruction BuildKit knows (`command.Commands`).
pub(crate) const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// What one node is: a stage's start, or a command.
#[derive(Debug)]
pub(crate) enum Parsed {
    Stage(Stage),
    Command(Command),
}

/// A node being read: BuildKit's `parseRequest`.
struct Request<'a> {
    node: &'a Node,
    /// The instruction's name, upper case, for messages.
    name: &'static str,
    /// The arguments; for `ONBUILD`, the trigger's keyword and arguments.
    args: Vec<String>,
    flags: Flags<'a>,
}

impl Request<'_> {
    fn location(&self) -> Location {
        Location {
            start_line: self.node.start_line,
            end_line: self.node.end_line,
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            keyword: self.node.keyword.clone(),
            code: self.node.original.trim().to_string(),
            location: self.location(),
            comments: self
                .node
                .prev_comment
                .iter()
                .zip(&self.node.prev_comment_lines)
                .map(|(text, &line)| Comment {
                    line,
                    text: text.clone(),
                })
                .collect(),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> InstructionError {
        InstructionError::InvalidArguments {
            instruction: self.name.to_string(),
            message: message.into(),
            location: self.location(),
        }
    }

    fn run_option(&self, message: String) -> InstructionError {
        InstructionError::InvalidRunOption {
            message,
            location: self.location(),
        }
    }

    fn parse_flags(&mut self) -> Result<(), InstructionError> {
        self.flags.parse().map_err(|e| match e {
            FlagError::Unknown { flag, suggestion } => InstructionError::UnknownFlag {
                instruction: self.name.to_string(),
                flag,
                suggestion,
                location: self.location(),
            },
            FlagError::Invalid { flag, message } => InstructionError::InvalidFlag {
                instruction: self.name.to_string(),
                flag,
                message,
                location: self.location(),
            },
        })
    }

    fn at_least_one(&self) -> InstructionError {
        self.invalid(format!("{} requires at least one argument", self.name))
    }

    fn exactly_one(&self) -> InstructionError {
        self.invalid(format!("{} requires exactly one argument", self.name))
    }

    /// The single argument of `WORKDIR`, `USER`, `STOPSIGNAL`, `MAINTAINER`.
    fn single(&self) -> Result<String, InstructionError> {
        match self.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(self.exactly_one()),
        }
    }

    /// BuildKit's `handleJSONArgs`: the JSON array as it is, or the shell
    /// form's words joined by spaces into one.
    fn command_words(&self, args: &[String]) -> Vec<String> {
        if args.is_empty() {
            Vec::new()
        } else if self.node.json {
            args.to_vec()
        } else {
            vec![args.join(" ")]
        }
    }

    fn command_line(&self) -> CommandLine {
        CommandLine {
            args: self.command_words(&self.args),
            files: self
                .node
                .heredocs
                .iter()
                .map(|h| InlineFile {
                    name: h.name.clone(),
                    data: h.content.clone(),
                    chomp: h.chomp,
                })
                .collect(),
            prepend_shell: !self.node.json,
        }
    }
}

/// BuildKit's `ParseInstruction`.
pub(crate) fn parse_node(node: &Node) -> Result<Parsed, InstructionError> {
    let lower = node.keyword.to_lowercase();
    let Some(name) = INSTRUCTIONS
        .iter()
        .copied()
        .find(|n| n.eq_ignore_ascii_case(&lower))
    else {
        return Err(InstructionError::UnknownInstruction {
            instruction: node.keyword.clone(),
            suggestion: suggest(&node.keyword, &INSTRUCTIONS, false),
            location: Location {
                start_line: node.start_line,
                end_line: node.end_line,
            },
        });
    };
    let args = match &node.sub {
        Some(sub) => std::iter::once(sub.keyword.clone())
            .chain(sub.args.iter().cloned())
            .collect(),
        None => node.args.clone(),
    };
    let mut req = Request {
        node,
        name,
        args,
        flags: Flags::new(&node.flags),
    };
    let command = match name {
        "FROM" => return parse_from(&mut req).map(Parsed::Stage),
        "ADD" => Command::Add(parse_add(&mut req)?),
        "ARG" => Command::Arg(parse_arg(&req)?),
        "CMD" => Command::Cmd(parse_cmd(&mut req)?),
        "COPY" => Command::Copy(parse_copy(&mut req)?),
        "ENTRYPOINT" => Command::Entrypoint(parse_entrypoint(&mut req)?),
        "ENV" => Command::Env(parse_env(&mut req)?),
        "EXPOSE" => Command::Expose(parse_expose(&mut req)?),
        "HEALTHCHECK" => Command::Healthcheck(parse_healthcheck(&mut req)?),
        "LABEL" => Command::Label(parse_label(&mut req)?),
        "MAINTAINER" => Command::Maintainer(parse_maintainer(&mut req)?),
        "ONBUILD" => Command::Onbuild(parse_onbuild(&mut req)?),
        "RUN" => Command::Run(parse_run(&mut req)?),
        "SHELL" => Command::Shell(parse_shell(&mut req)?),
        "STOPSIGNAL" => Command::StopSignal(parse_stopsignal(&req)?),
        "USER" => Command::User(parse_user(&mut req)?),
        "VOLUME" => Command::Volume(parse_volume(&mut req)?),
        _ => Command::Workdir(parse_workdir(&mut req)?),
    };
    Ok(Parsed::Command(command))
}

/// The comment line that starts with `name` and a space, without them:
/// BuildKit's `getComment`.
fn doc_comment(comments: &[String], name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .map(str::to_string)
        .filter(|c| !c.is_empty())
}

/// Go's `strings.EqualFold(word, "as")`: simple case folding also maps
/// `ſ` (U+017F, long s) to `s`.
fn is_as(word: &str) -> bool {
    let mut chars = word.chars();
    matches!(
        (chars.next(), chars.next(), chars.next()),
        (Some('a' | 'A'), Some('s' | 'S' | '\u{17f}'), None)
    )
}

/// `^[a-z][a-z0-9-_.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_from(req: &mut Request<'_>) -> Result<Stage, InstructionError> {
    let name = match req.args.as_slice() {
        [_, as_word, name] if is_as(as_word) => {
            let lower = name.to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(req.invalid(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    quote(name)
                )));
            }
            Some(lower)
        }
        [_] => None,
        _ => return Err(req.invalid("FROM requires either one or three arguments")),
    };
    req.flags.string("platform", "");
    req.parse_flags()?;
    let origin = req.origin();
    Ok(Stage {
        doc_comment: name
            .as_deref()
            .and_then(|n| doc_comment(&req.node.prev_comment, n)),
        name,
        orig_cmd: origin.keyword,
        base_name: req.args[0].clone(),
        platform: req.flags.non_empty("platform"),
        code: origin.code,
        location: origin.location,
        commands: Vec::new(),
    })
}

/// `ENV`/`LABEL` triples → pairs: BuildKit's `parseKvps`.
fn key_value_pairs(req: &Request<'_>) -> Result<Vec<KeyValuePair>, InstructionError> {
    if req.args.is_empty() {
        return Err(req.at_least_one());
    }
    if !req.args.len().is_multiple_of(3) {
        return Err(req.invalid(format!("Bad input to {}, too many arguments", req.name)));
    }
    req.args
        .chunks(3)
        .map(|triple| {
            if triple[0].is_empty() {
                return Err(req.invalid(format!("{} names can not be blank", req.name)));
            }
            Ok(KeyValuePair {
                key: triple[0].clone(),
                value: triple[1].clone(),
                no_delim: triple[2].is_empty(),
            })
        })
        .collect()
}

fn parse_env(req: &mut Request<'_>) -> Result<EnvCommand, InstructionError> {
    req.parse_flags()?;
    Ok(EnvCommand {
        pairs: key_value_pairs(req)?,
        origin: req.origin(),
    })
}

fn parse_label(req: &mut Request<'_>) -> Result<LabelCommand, InstructionError> {
    req.parse_flags()?;
    Ok(LabelCommand {
        labels: key_value_pairs(req)?,
        origin: req.origin(),
    })
}

fn parse_maintainer(req: &mut Request<'_>) -> Result<MaintainerCommand, InstructionError> {
    let maintainer = req.single()?;
    req.parse_flags()?;
    Ok(MaintainerCommand {
        origin: req.origin(),
        maintainer,
    })
}

/// BuildKit's `parseSourcesAndDest`: heredoc words become contents, looked
/// up by name among the node's heredocs (the last of a name wins, as in
/// BuildKit's map).
fn sources_and_dest(req: &Request<'_>) -> Result<SourcesAndDest, InstructionError> {
    let Some((dest, sources)) = req.args.split_last() else {
        return Err(no_destination(req));
    };
    if heredoc_word(dest).is_some() {
        return Err(req.invalid(format!(
            "{} cannot accept a heredoc as a destination",
            req.name
        )));
    }
    let mut out = SourcesAndDest {
        dest: dest.clone(),
        ..SourcesAndDest::default()
    };
    for source in sources {
        match heredoc_word(source) {
            Some(marker) => {
                let body = req
                    .node
                    .heredocs
                    .iter()
                    .rev()
                    .find(|h| h.name == marker.name)
                    .map(|h| h.content.clone())
                    .unwrap_or_default();
                out.contents.push(SourceContent {
                    data: if marker.chomp {
                        chomp_heredoc_content(&body)
                    } else {
                        body
                    },
                    path: marker.name,
                    expand: marker.expand,
                });
            }
            None => out.paths.push(source.clone()),
        }
    }
    Ok(out)
}

/// BuildKit's `MustParseHeredoc`: a marker, or nothing (errors included).
fn heredoc_word(word: &str) -> Option<crate::Heredoc> {
    parse_heredoc(word).ok().flatten()
}

fn no_destination(req: &Request<'_>) -> InstructionError {
    req.invalid(format!(
        "{} requires at least two arguments, but only one was provided. Destination could not be determined",
        req.name
    ))
}

fn parse_add(req: &mut Request<'_>) -> Result<AddCommand, InstructionError> {
    if req.args.len() < 2 {
        return Err(no_destination(req));
    }
    req.flags.string("chown", "");
    req.flags.string("chmod", "");
    req.flags.bool("link", false);
    req.flags.bool("keep-git-dir", false);
    req.flags.string("checksum", "");
    req.flags.bool("unpack", false);
    req.flags.strings("exclude");
    req.parse_flags()?;
    let sources = sources_and_dest(req)?;
    let f = &req.flags;
    Ok(AddCommand {
        origin: req.origin(),
        sources,
        chown: f.non_empty("chown"),
        chmod: f.non_empty("chmod"),
        link: f.is_true("link"),
        exclude: f.values("exclude"),
        keep_git_dir: f.given_bool("keep-git-dir"),
        checksum: f.non_empty("checksum"),
        unpack: f.given_bool("unpack"),
    })
}

fn parse_copy(req: &mut Request<'_>) -> Result<CopyCommand, InstructionError> {
    if req.args.len() < 2 {
        return Err(no_destination(req));
    }
    req.flags.string("chown", "");
    req.flags.string("from", "");
    req.flags.string("chmod", "");
    req.flags.bool("link", false);
    req.flags.strings("exclude");
    req.flags.bool("parents", false);
    req.parse_flags()?;
    let sources = sources_and_dest(req)?;
    let f = &req.flags;
    Ok(CopyCommand {
        origin: req.origin(),
        sources,
        from: f.non_empty("from"),
        chown: f.non_empty("chown"),
        chmod: f.non_empty("chmod"),
        link: f.is_true("link"),
        exclude: f.values("exclude"),
        parents: f.is_true("parents"),
    })
}

fn parse_onbuild(req: &mut Request<'_>) -> Result<OnbuildCommand, InstructionError> {
    let Some(first) = req.args.first() else {
        return Err(req.at_least_one());
    };
    let trigger = first.trim().to_uppercase();
    req.parse_flags()?;
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(req.invalid("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
        }
        "MAINTAINER" | "FROM" => {
            return Err(req.invalid(format!("{trigger} isn't allowed as an ONBUILD trigger")));
        }
        _ => {}
    }
    let mut expression = strip_onbuild(&req.node.original).to_string();
    for heredoc in &req.node.heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    Ok(OnbuildCommand {
        origin: req.origin(),
        trigger,
        expression,
    })
}

/// The text without `(?i)^\s*ONBUILD\s*`, `\s` being Go's ASCII white space.
fn strip_onbuild(original: &str) -> &str {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let rest = original.trim_start_matches(is_space);
    match rest.get(..7) {
        Some(word) if word.eq_ignore_ascii_case("ONBUILD") => {
            rest[7..].trim_start_matches(is_space)
        }
        _ => original,
    }
}

fn parse_workdir(req: &mut Request<'_>) -> Result<WorkdirCommand, InstructionError> {
    let path = req.single()?;
    req.parse_flags()?;
    Ok(WorkdirCommand {
        origin: req.origin(),
        path,
    })
}

fn parse_run(req: &mut Request<'_>) -> Result<RunCommand, InstructionError> {
    // BuildKit's RUN hooks, in the order Go runs their files' `init`:
    // devices, mounts, network, security.
    req.flags.strings("device");
    req.flags.strings("mount");
    req.flags.string("network", NetworkMode::Default.as_str());
    req.flags.string("security", SecurityMode::Sandbox.as_str());
    req.parse_flags()?;
    let command = req.command_line();

    let devices = req
        .flags
        .values("device")
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| req.run_option(m))?;
    let mount_specs = req.flags.values("mount");
    let mounts = mount_specs
        .iter()
        .map(|spec| parse_mount::<std::convert::Infallible>(spec, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| match e {
            MountError::Invalid(m) => req.run_option(m),
            MountError::Expand(never) => match never {},
        })?;
    let network = NetworkMode::parse(req.flags.value("network")).map_err(|m| req.run_option(m))?;
    let security =
        SecurityMode::parse(req.flags.value("security")).map_err(|m| req.run_option(m))?;
    Ok(RunCommand {
        origin: req.origin(),
        command,
        mount_specs,
        mounts,
        network,
        security,
        devices,
        flags_used: req.flags.used_names(),
    })
}

fn parse_cmd(req: &mut Request<'_>) -> Result<CmdCommand, InstructionError> {
    req.parse_flags()?;
    Ok(CmdCommand {
        origin: req.origin(),
        command: req.command_line(),
    })
}

fn parse_entrypoint(req: &mut Request<'_>) -> Result<EntrypointCommand, InstructionError> {
    req.parse_flags()?;
    Ok(EntrypointCommand {
        origin: req.origin(),
        command: req.command_line(),
    })
}

/// A `--interval`-like flag: zero when not given or zero, else at least 1ms.
fn interval(req: &Request<'_>, name: &str) -> Result<std::time::Duration, InstructionError> {
    let text = req.flags.value(name);
    if text.is_empty() {
        return Ok(std::time::Duration::ZERO);
    }
    let nanos = parse_duration(text).map_err(|m| req.invalid(m))?;
    if nanos == 0 {
        return Ok(std::time::Duration::ZERO);
    }
    if nanos < 1_000_000 {
        // Go's `%#v` of the flag's name, which has no dashes.
        return Err(req.invalid(format!("Interval {} cannot be less than 1ms", quote(name))));
    }
    Ok(std::time::Duration::from_nanos(nanos.unsigned_abs()))
}

fn parse_healthcheck(req: &mut Request<'_>) -> Result<HealthcheckCommand, InstructionError> {
    let Some((kind, rest)) = req.args.split_first() else {
        return Err(req.at_least_one());
    };
    let kind = kind.to_uppercase();
    let rest = rest.to_vec();
    if kind == "NONE" {
        // BuildKit reads no flags for NONE: any are ignored.
        if !rest.is_empty() {
            return Err(req.invalid("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(HealthcheckCommand {
            origin: req.origin(),
            health: Healthcheck {
                test: vec![kind],
                interval: std::time::Duration::ZERO,
                timeout: std::time::Duration::ZERO,
                start_period: std::time::Duration::ZERO,
                start_interval: std::time::Duration::ZERO,
                retries: 0,
            },
        });
    }
    for name in [
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ] {
        req.flags.string(name, "");
    }
    req.parse_flags()?;
    if kind != "CMD" {
        return Err(req.invalid(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            quote(&kind)
        )));
    }
    let words = req.command_words(&rest);
    if words.is_empty() {
        return Err(req.invalid("Missing command after HEALTHCHECK CMD"));
    }
    let mut test = vec![if req.node.json {
        kind
    } else {
        "CMD-SHELL".to_string()
    }];
    test.extend(words);
    let health = Healthcheck {
        test,
        interval: interval(req, "interval")?,
        timeout: interval(req, "timeout")?,
        start_period: interval(req, "start-period")?,
        start_interval: interval(req, "start-interval")?,
        retries: match req.flags.value("retries") {
            "" => 0,
            text => {
                let n = parse_i32(text).map_err(|m| req.invalid(m))?;
                u32::try_from(n)
                    .map_err(|_| req.invalid(format!("--retries cannot be negative ({n})")))?
            }
        },
    };
    Ok(HealthcheckCommand {
        origin: req.origin(),
        health,
    })
}

fn parse_expose(req: &mut Request<'_>) -> Result<ExposeCommand, InstructionError> {
    if req.args.is_empty() {
        return Err(req.at_least_one());
    }
    req.parse_flags()?;
    let mut ports = req.args.clone();
    ports.sort();
    Ok(ExposeCommand {
        origin: req.origin(),
        ports,
    })
}

fn parse_user(req: &mut Request<'_>) -> Result<UserCommand, InstructionError> {
    let user = req.single()?;
    req.parse_flags()?;
    Ok(UserCommand {
        origin: req.origin(),
        user,
    })
}

fn parse_volume(req: &mut Request<'_>) -> Result<VolumeCommand, InstructionError> {
    if req.args.is_empty() {
        return Err(req.at_least_one());
    }
    req.parse_flags()?;
    let mut volumes = Vec::with_capacity(req.args.len());
    for v in &req.args {
        let v = v.trim();
        if v.is_empty() {
            return Err(req.invalid("VOLUME specified can not be an empty string"));
        }
        volumes.push(v.to_string());
    }
    Ok(VolumeCommand {
        origin: req.origin(),
        volumes,
    })
}

/// BuildKit reads no flags for `STOPSIGNAL`: any are ignored.
fn parse_stopsignal(req: &Request<'_>) -> Result<StopSignalCommand, InstructionError> {
    Ok(StopSignalCommand {
        signal: req.single()?,
        origin: req.origin(),
    })
}

/// BuildKit reads no flags for `ARG` either. A name and its default are
/// split at the first `=`; the default keeps its quotes.
fn parse_arg(req: &Request<'_>) -> Result<ArgCommand, InstructionError> {
    if req.args.is_empty() {
        return Err(req.at_least_one());
    }
    let mut args = Vec::with_capacity(req.args.len());
    for word in &req.args {
        let (key, value) = match word.split_once('=') {
            Some(("", _)) => return Err(req.invalid("ARG names can not be blank")),
            Some((key, value)) => (key.to_string(), Some(value.to_string())),
            None => (word.clone(), None),
        };
        args.push(ArgDef {
            doc_comment: doc_comment(&req.node.prev_comment, &key),
            key,
            value,
        });
    }
    Ok(ArgCommand {
        origin: req.origin(),
        args,
    })
}

fn parse_shell(req: &mut Request<'_>) -> Result<ShellCommand, InstructionError> {
    req.parse_flags()?;
    let shell = req.command_words(&req.args);
    if shell.is_empty() {
        return Err(req.at_least_one());
    }
    if !req.node.json {
        return Err(req.invalid("SHELL requires the arguments to be in JSON form"));
    }
    Ok(ShellCommand {
        origin: req.origin(),
        shell,
    })
}
