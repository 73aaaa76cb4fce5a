//! The typed instructions (BuildKit's `instructions/commands.go`).
//!
//! Words are kept as written (quotes, `$VAR`): variables are expanded later,
//! when a stage is lowered, through [`Command::expand`](super::Command::expand)
//! on exactly the fields BuildKit expands. A string flag that was not given,
//! or given empty, is `None`: BuildKit does not tell the two apart.

use std::time::Duration;

use super::mount::Mount;
use super::run::{Device, NetworkMode, SecurityMode};
use crate::Location;

/// Where a command comes from: BuildKit's `withNameAndCode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The keyword as written (`RUN`, `run`, `Run`).
    pub keyword: String,
    /// The instruction's text, continuation lines joined, trimmed.
    pub code: String,
    /// Its lines, heredoc bodies included.
    pub location: Location,
    /// The comment lines above it (the parser's `prev_comment`, with their
    /// line numbers), for tools that read settings from them, such as
    /// kiln's `# kiln: timeout=20m` on a `RUN`. BuildKit keeps comments
    /// across blank lines; [`Origin::comments_directly_above`] does not.
    pub comments: Vec<Comment>,
}

impl Origin {
    /// The comments of the block that ends on the line right above the
    /// instruction, with no blank line in between.
    pub fn comments_directly_above(&self) -> &[Comment] {
        let mut first = self.comments.len();
        let mut next_line = self.location.start_line;
        while first > 0 && self.comments[first - 1].line + 1 == next_line {
            first -= 1;
            next_line = self.comments[first].line;
        }
        &self.comments[first..]
    }
}

/// One comment line of a Dockerfile: its text without the `#` and the
/// surrounding blanks, and its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub line: usize,
    pub text: String,
}

/// A build stage: a `FROM` and the commands up to the next one.
///
/// Expanded ([`Stage::expand`]): `base_name`, `platform`, against the global
/// `ARG`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `FROM ... AS name`, lower-cased; checked against `^[a-z][a-z0-9-_.]*$`.
    pub name: Option<String>,
    /// The `FROM` keyword as written (for casing checks).
    pub orig_cmd: String,
    /// The image or stage to start from, as written (not expanded).
    pub base_name: String,
    /// `--platform`, as written (not expanded).
    pub platform: Option<String>,
    /// The `FROM` line, trimmed.
    pub code: String,
    pub location: Location,
    /// The comment line above `FROM` that starts with the stage's name,
    /// without the name: `# build compiles the app` documents `build`.
    pub doc_comment: Option<String>,
    /// The commands of the stage, in order.
    pub commands: Vec<Command>,
}

/// One instruction other than `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    Add(AddCommand),
    Arg(ArgCommand),
    Cmd(CmdCommand),
    Copy(CopyCommand),
    Entrypoint(EntrypointCommand),
    Env(EnvCommand),
    Expose(ExposeCommand),
    Healthcheck(HealthcheckCommand),
    Label(LabelCommand),
    Maintainer(MaintainerCommand),
    Onbuild(OnbuildCommand),
    Run(RunCommand),
    Shell(ShellCommand),
    StopSignal(StopSignalCommand),
    User(UserCommand),
    Volume(VolumeCommand),
    Workdir(WorkdirCommand),
}

impl Command {
    /// Where the command comes from.
    pub fn origin(&self) -> &Origin {
        match self {
            Command::Add(c) => &c.origin,
            Command::Arg(c) => &c.origin,
            Command::Cmd(c) => &c.origin,
            Command::Copy(c) => &c.origin,
            Command::Entrypoint(c) => &c.origin,
            Command::Env(c) => &c.origin,
            Command::Expose(c) => &c.origin,
            Command::Healthcheck(c) => &c.origin,
            Command::Label(c) => &c.origin,
            Command::Maintainer(c) => &c.origin,
            Command::Onbuild(c) => &c.origin,
            Command::Run(c) => &c.origin,
            Command::Shell(c) => &c.origin,
            Command::StopSignal(c) => &c.origin,
            Command::User(c) => &c.origin,
            Command::Volume(c) => &c.origin,
            Command::Workdir(c) => &c.origin,
        }
    }

    /// The lines the command spans.
    /// Moves the command to other lines: an ONBUILD trigger runs where the
    /// image that carries it is used, and its errors point there.
    pub fn set_location(&mut self, location: Location) {
        match self {
            Command::Add(c) => c.origin.location = location,
            Command::Arg(c) => c.origin.location = location,
            Command::Cmd(c) => c.origin.location = location,
            Command::Copy(c) => c.origin.location = location,
            Command::Entrypoint(c) => c.origin.location = location,
            Command::Env(c) => c.origin.location = location,
            Command::Expose(c) => c.origin.location = location,
            Command::Healthcheck(c) => c.origin.location = location,
            Command::Label(c) => c.origin.location = location,
            Command::Maintainer(c) => c.origin.location = location,
            Command::Onbuild(c) => c.origin.location = location,
            Command::Run(c) => c.origin.location = location,
            Command::Shell(c) => c.origin.location = location,
            Command::StopSignal(c) => c.origin.location = location,
            Command::User(c) => c.origin.location = location,
            Command::Volume(c) => c.origin.location = location,
            Command::Workdir(c) => c.origin.location = location,
        }
    }

    pub fn location(&self) -> Location {
        self.origin().location
    }

    /// The instruction's name in upper case (`RUN`), whatever its spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Add(_) => "ADD",
            Command::Arg(_) => "ARG",
            Command::Cmd(_) => "CMD",
            Command::Copy(_) => "COPY",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Env(_) => "ENV",
            Command::Expose(_) => "EXPOSE",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Label(_) => "LABEL",
            Command::Maintainer(_) => "MAINTAINER",
            Command::Onbuild(_) => "ONBUILD",
            Command::Run(_) => "RUN",
            Command::Shell(_) => "SHELL",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::User(_) => "USER",
            Command::Volume(_) => "VOLUME",
            Command::Workdir(_) => "WORKDIR",
        }
    }
}

/// `KEY=VALUE` of `ENV` and `LABEL`. The value keeps its quotes until expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValuePair {
    pub key: String,
    pub value: String,
    /// Written in the legacy `ENV KEY value` form (BuildKit's `NoDelim`, which
    /// the `LegacyKeyValueFormat` check reports).
    pub no_delim: bool,
}

/// `ENV key=value ...`. Expanded: each key and value (`EnvCommand.Expand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCommand {
    pub origin: Origin,
    pub pairs: Vec<KeyValuePair>,
}

/// `LABEL key=value ...`. Expanded: each key and value (`LabelCommand.Expand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelCommand {
    pub origin: Origin,
    pub labels: Vec<KeyValuePair>,
}

/// `MAINTAINER name` (deprecated). Not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerCommand {
    pub origin: Origin,
    pub maintainer: String,
}

/// One name of an `ARG`, with its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    pub key: String,
    /// The default after `=`, raw (`ARG a="x y"` gives `"x y"` with its quotes).
    pub value: Option<String>,
    /// The comment line above the `ARG` that starts with this name, without it.
    pub doc_comment: Option<String>,
}

/// `ARG name[=default] ...`; several names per line. Not expanded by
/// [`Command::expand`]: BuildKit's lowering expands a default itself, and
/// only when no build argument overrides it (`dispatchArg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCommand {
    pub origin: Origin,
    pub args: Vec<ArgDef>,
}

/// A here-document used as a `COPY`/`ADD` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContent {
    /// The heredoc's name, which becomes the file's name.
    pub path: String,
    /// The body, leading tabs already removed for `<<-`.
    pub data: String,
    /// No part of the marker was quoted: the body is expanded (raw mode).
    pub expand: bool,
}

/// The sources and destination of `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcesAndDest {
    pub dest: String,
    /// Paths, URLs and git references, in order.
    pub paths: Vec<String>,
    /// Heredoc sources, in order (BuildKit keeps them apart from `paths`).
    pub contents: Vec<SourceContent>,
}

/// `ADD [--chown] [--chmod] [--link] [--exclude]... [--keep-git-dir]
/// [--checksum] [--unpack] src... dest`.
///
/// Expanded: `chown`, `chmod`, `checksum`, each source path, `dest`
/// (`AddCommand.Expand`); heredoc bodies with `expand` in raw mode
/// (`SourcesAndDest.ExpandRaw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCommand {
    pub origin: Origin,
    pub sources: SourcesAndDest,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// `--exclude` patterns, in order; never expanded.
    pub exclude: Vec<String>,
    /// `--keep-git-dir`, when given (the default comes from the build).
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    /// `--unpack`, when given (by default only local archives are unpacked).
    pub unpack: Option<bool>,
}

/// `COPY [--from] [--chown] [--chmod] [--link] [--exclude]... [--parents] src... dest`.
///
/// Expanded: `chown`, `chmod`, each source path, `dest` (`CopyCommand.Expand`);
/// heredoc bodies with `expand` in raw mode (`SourcesAndDest.ExpandRaw`).
/// Not `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    pub origin: Origin,
    pub sources: SourcesAndDest,
    /// A stage name or index, a named context or an image. Never expanded:
    /// BuildKit's lowering refuses a value that expansion would change
    /// ("variable expansion is not supported for --from, ...").
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// `--exclude` patterns, in order; never expanded.
    pub exclude: Vec<String>,
    pub parents: bool,
}

/// `ONBUILD instruction`: the trigger is kept as text and parsed again when
/// a child stage runs it. Not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnbuildCommand {
    pub origin: Origin,
    /// The trigger's keyword, upper-cased (`RUN`).
    pub trigger: String,
    /// The trigger's text (the line without `ONBUILD`), followed by each
    /// heredoc as `\n` + body + name, as BuildKit stores it in the image.
    pub expression: String,
}

/// `WORKDIR path`. Expanded: `path` (`WorkdirCommand.Expand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirCommand {
    pub origin: Origin,
    pub path: String,
}

/// A heredoc that a `RUN`, `CMD` or `ENTRYPOINT` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    /// The body, not chomped.
    pub data: String,
    /// `<<-`: leading tabs are to be removed.
    pub chomp: bool,
}

/// The command of `RUN`, `CMD` and `ENTRYPOINT` (BuildKit's
/// `ShellDependantCmdLine`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec form: the JSON array. Shell form: one word, the whole text.
    pub args: Vec<String>,
    /// Heredocs the command reads, in order.
    pub files: Vec<InlineFile>,
    /// Shell form: the stage's shell goes in front.
    pub prepend_shell: bool,
}

/// `RUN [--mount]... [--network] [--security] [--device]... command`.
///
/// Expanded: the value of each `--mount` key, after which `mounts` is read
/// in full (`RunCommand.Expand`, `setMountState`). Not the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    pub origin: Origin,
    pub command: CommandLine,
    /// Each `--mount` value as written.
    pub mount_specs: Vec<String>,
    /// The mounts, one per `--mount`, as BuildKit's `GetMounts` has them.
    ///
    /// Right after parsing, only `from` is read (variables refused there)
    /// and every other key keeps its default: BuildKit defers reading a
    /// mount until its values are expanded. After
    /// [`Command::expand`](super::Command::expand) they are complete. For a
    /// complete reading of the unexpanded text, see
    /// [`RunCommand::mounts_as_written`].
    pub mounts: Vec<Mount>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    pub devices: Vec<Device>,
    /// The names of the flags given, sorted.
    pub flags_used: Vec<String>,
}

/// `CMD command`. Not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdCommand {
    pub origin: Origin,
    pub command: CommandLine,
}

/// `ENTRYPOINT command`. Empty `args` means no entrypoint (`null` in the
/// image config), unlike `CMD []`, which is an empty command. Not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointCommand {
    pub origin: Origin,
    pub command: CommandLine,
}

/// A health check as the image config holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` (exec form) or `["CMD-SHELL", text]`.
    pub test: Vec<String>,
    /// Zero when not given (the runtime's default applies).
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    /// Zero when not given.
    pub retries: u32,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`. Not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCommand {
    pub origin: Origin,
    pub health: Healthcheck,
}

/// `EXPOSE port[/proto] ...`. Expanded: each port, with word splitting
/// (`dispatchExpose`, `ProcessWords`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposeCommand {
    pub origin: Origin,
    /// As written, sorted byte-wise as BuildKit sorts them before expansion.
    pub ports: Vec<String>,
}

/// `USER user[:group]`. Expanded: `user` (`UserCommand.Expand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    pub origin: Origin,
    pub user: String,
}

/// `VOLUME path...`. Expanded: each path (`VolumeCommand.Expand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCommand {
    pub origin: Origin,
    /// Each trimmed of white space.
    pub volumes: Vec<String>,
}

/// `STOPSIGNAL signal`. Expanded: `signal` (`StopSignalCommand.Expand`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignalCommand {
    pub origin: Origin,
    pub signal: String,
}

/// `SHELL ["executable", "parameters"...]`. Not expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    pub origin: Origin,
    pub shell: Vec<String>,
}
