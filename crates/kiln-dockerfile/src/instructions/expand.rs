//! Variable expansion of typed instructions: which fields BuildKit expands,
//! and how (the table is on [`Expander`]).

use super::commands::{Command, RunCommand, SourcesAndDest, Stage};
use super::error::{ExpansionError, InstructionError};
use super::mount::{ExpandWord, Mount, MountError, parse_mount};

/// Expands words the way BuildKit's shell lexer does, against the
/// environment the caller binds it to: for a command, the stage's variables
/// (base image `Env`, `ENV`s, `ARG`s with a value) as they are *before* that
/// instruction, so `ENV a=1 b=$a` sees the old `a`; for a stage's `FROM`, the
/// global `ARG`s. [`word`](Expander::word) and [`words`](Expander::words) use
/// the file's escape character ([`Ast::escape`](crate::Ast::escape)).
///
/// Which fields BuildKit expands, and through which of the three methods
/// (BuildKit: the `Expand`/`ExpandRaw` methods of `instructions/commands.go`,
/// called by `dispatch` in `dockerfile2llb/convert.go`, which skips `ARG`):
///
/// | instruction | expanded | method | upstream |
/// |---|---|---|---|
/// | `ENV`, `LABEL` | every key, then its value | `word` | `EnvCommand.Expand`, `LabelCommand.Expand` |
/// | `ADD` | `--chown`, `--chmod`, `--checksum`, each source, the destination | `word` | `AddCommand.Expand` |
/// | `COPY` | `--chown`, `--chmod`, each source, the destination | `word` | `CopyCommand.Expand` |
/// | `ADD`, `COPY` | heredoc bodies whose marker was not quoted | `raw` | `SourcesAndDest.ExpandRaw` |
/// | `WORKDIR`, `USER`, `STOPSIGNAL` | the argument | `word` | `WorkdirCommand.Expand`, ... |
/// | `VOLUME` | each path | `word` | `VolumeCommand.Expand` |
/// | `EXPOSE` | each port, giving zero or more words | `words` | `dispatchExpose` (`ProcessWords`) |
/// | `RUN` | the value of every `--mount` key; then the mount is read in full | `word` | `RunCommand.Expand` → `setMountState` |
/// | `FROM` ([`Stage::expand`]) | the base name, then `--platform` | `word` | `toDispatchState` (`ProcessWordWithMatches` on global args) |
/// | `ARG` | nothing here: the lowering expands a default only when no build argument overrides it | — | `dispatchArg` |
/// | `CMD`, `ENTRYPOINT`, `SHELL`, `HEALTHCHECK`, `MAINTAINER`, `ONBUILD` | nothing | — | no `Expand` |
///
/// Never expanded: `COPY --from` (the lowering refuses a value that
/// expansion against the global `ARG`s would change: `variable expansion is
/// not supported for --from, ...`), `--exclude`, `--parents`, `--link`,
/// `--keep-git-dir`, `--unpack`, `RUN --network`, `--security`, `--device`,
/// and the command text of `RUN`, `CMD` and `ENTRYPOINT` (the shell sees
/// it), `RUN` heredocs included.
pub trait Expander {
    type Error;

    /// One word to one string (BuildKit's `ProcessWord` with the file's
    /// escape character): quotes removed, variables expanded, white space
    /// kept.
    fn word(&mut self, word: &str) -> Result<String, Self::Error>;

    /// One word to zero or more words (`ProcessWords`): as [`word`], then
    /// split on white space that is not quoted. Only `EXPOSE` uses it.
    ///
    /// [`word`]: Expander::word
    fn words(&mut self, word: &str) -> Result<Vec<String>, Self::Error>;

    /// A heredoc body of `COPY`/`ADD` (`ExpandRaw`): `ProcessWord` with `\`
    /// as escape whatever the file's, and quotes left as they are
    /// (BuildKit's `SkipProcessQuotes`).
    fn raw(&mut self, text: &str) -> Result<String, Self::Error>;
}

fn expand_opt<X: Expander + ?Sized>(
    value: &mut Option<String>,
    ex: &mut X,
) -> Result<(), X::Error> {
    if let Some(v) = value {
        let expanded = ex.word(v)?;
        *value = Some(expanded).filter(|v| !v.is_empty());
    }
    Ok(())
}

fn expand_all<X: Expander + ?Sized>(values: &mut [String], ex: &mut X) -> Result<(), X::Error> {
    for v in values {
        *v = ex.word(v)?;
    }
    Ok(())
}

impl SourcesAndDest {
    /// Sources, then the destination (`SourcesAndDest.Expand`).
    fn expand_paths<X: Expander + ?Sized>(&mut self, ex: &mut X) -> Result<(), X::Error> {
        expand_all(&mut self.paths, ex)?;
        self.dest = ex.word(&self.dest)?;
        Ok(())
    }

    /// Heredoc bodies whose marker was not quoted (`SourcesAndDest.ExpandRaw`).
    fn expand_contents<X: Expander + ?Sized>(&mut self, ex: &mut X) -> Result<(), X::Error> {
        for content in self.contents.iter_mut().filter(|c| c.expand) {
            content.data = ex.raw(&content.data)?;
        }
        Ok(())
    }
}

impl Command {
    /// Applies BuildKit's expansion to the fields it expands for this
    /// instruction (the table on [`Expander`]), in BuildKit's order. An
    /// option that expands to the empty string becomes `None`. A `RUN`'s
    /// mounts are then read in full, which may refuse them.
    pub fn expand<X: Expander + ?Sized>(
        &mut self,
        ex: &mut X,
    ) -> Result<(), ExpansionError<X::Error>> {
        let e = ExpansionError::Expand;
        match self {
            Command::Env(c) => {
                for pair in &mut c.pairs {
                    pair.key = ex.word(&pair.key).map_err(e)?;
                    pair.value = ex.word(&pair.value).map_err(e)?;
                }
            }
            Command::Label(c) => {
                for pair in &mut c.labels {
                    pair.key = ex.word(&pair.key).map_err(e)?;
                    pair.value = ex.word(&pair.value).map_err(e)?;
                }
            }
            Command::Add(c) => {
                expand_opt(&mut c.chown, ex).map_err(e)?;
                expand_opt(&mut c.chmod, ex).map_err(e)?;
                expand_opt(&mut c.checksum, ex).map_err(e)?;
                c.sources.expand_paths(ex).map_err(e)?;
                c.sources.expand_contents(ex).map_err(e)?;
            }
            Command::Copy(c) => {
                expand_opt(&mut c.chown, ex).map_err(e)?;
                expand_opt(&mut c.chmod, ex).map_err(e)?;
                c.sources.expand_paths(ex).map_err(e)?;
                c.sources.expand_contents(ex).map_err(e)?;
            }
            Command::Workdir(c) => c.path = ex.word(&c.path).map_err(e)?,
            Command::User(c) => c.user = ex.word(&c.user).map_err(e)?,
            Command::StopSignal(c) => c.signal = ex.word(&c.signal).map_err(e)?,
            Command::Volume(c) => expand_all(&mut c.volumes, ex).map_err(e)?,
            Command::Expose(c) => {
                let mut ports = Vec::with_capacity(c.ports.len());
                for port in &c.ports {
                    ports.extend(ex.words(port).map_err(e)?);
                }
                c.ports = ports;
            }
            Command::Run(c) => {
                let mut word = |v: &str| ex.word(v);
                c.mounts = c.read_mounts(&mut word)?;
            }
            Command::Arg(_)
            | Command::Cmd(_)
            | Command::Entrypoint(_)
            | Command::Healthcheck(_)
            | Command::Maintainer(_)
            | Command::Onbuild(_)
            | Command::Shell(_) => {}
        }
        Ok(())
    }
}

impl RunCommand {
    /// Every mount read in full with its values taken as written, i.e. as
    /// if expansion changed nothing. BuildKit never does this (it reads
    /// mounts in full only once expanded); it serves tools that look at a
    /// Dockerfile without building it.
    pub fn mounts_as_written(&self) -> Result<Vec<Mount>, InstructionError> {
        let mut same = |v: &str| Ok::<_, std::convert::Infallible>(v.to_string());
        self.read_mounts(&mut same).map_err(|e| match e {
            ExpansionError::Instruction(e) => e,
            ExpansionError::Expand(never) => match never {},
        })
    }

    /// Every mount read in full, each value expanded by `expand` first.
    fn read_mounts<E>(&self, expand: ExpandWord<'_, E>) -> Result<Vec<Mount>, ExpansionError<E>> {
        let mut mounts = Vec::with_capacity(self.mount_specs.len());
        for spec in &self.mount_specs {
            let mount = parse_mount(spec, Some(&mut *expand)).map_err(|e| match e {
                MountError::Expand(e) => ExpansionError::Expand(e),
                MountError::Invalid(message) => {
                    ExpansionError::Instruction(InstructionError::InvalidRunOption {
                        message,
                        location: self.origin.location,
                    })
                }
            })?;
            mounts.push(mount);
        }
        Ok(mounts)
    }
}

impl Stage {
    /// Expands the base name, then `--platform`. BuildKit does this against
    /// the global `ARG`s (and the automatic platform ones), not a stage's
    /// environment; a base name that expands to nothing is refused by the
    /// lowering (`base name (...) should not be blank`).
    pub fn expand<X: Expander + ?Sized>(&mut self, ex: &mut X) -> Result<(), X::Error> {
        self.base_name = ex.word(&self.base_name)?;
        expand_opt(&mut self.platform, ex)
    }
}
