//! Syntax tree → typed instructions with validated flags: the second pass of
//! the frontend, BuildKit's `frontend/dockerfile/instructions` package.
//!
//! [`parse_dockerfile`] turns an [`Ast`] into the `ARG`s before the first
//! `FROM` and the [`Stage`]s; [`parse_instruction`] reads one [`Node`] (an
//! `ONBUILD` trigger, say). Arguments stay as written; [`Command::expand`]
//! later applies variable expansion to exactly the fields BuildKit expands
//! (the table is on [`Expander`]; each type's docs say what it expands).
//!
//! What is checked, and when, follows BuildKit (dockerfile frontend 1.2x,
//! `parse.go`, `bflag.go`, `commands_run*.go`): argument counts and forms,
//! each instruction's own flags (`unknown flag: --mont (did you mean
//! mount?)`), `RUN --network`/`--security`/`--device` values, the CSV of
//! `--mount` and its `from` (no variables); the rest of a mount only once
//! its values are expanded, as BuildKit does.

mod commands;
mod error;
mod expand;
mod flags;
mod mount;
mod parse;
mod run;

pub use self::commands::{
    AddCommand, ArgCommand, ArgDef, CmdCommand, Command, CommandLine, Comment, CopyCommand,
    EntrypointCommand, EnvCommand, ExposeCommand, Healthcheck, HealthcheckCommand, InlineFile,
    KeyValuePair, LabelCommand, MaintainerCommand, OnbuildCommand, Origin, RunCommand,
    ShellCommand, SourceContent, SourcesAndDest, Stage, StopSignalCommand, UserCommand,
    VolumeCommand, WorkdirCommand,
};
pub use self::error::{ExpansionError, InstructionError};
pub use self::expand::Expander;
pub use self::mount::{Mount, MountType, ShareMode};
pub use self::run::{Device, NetworkMode, SecurityMode};

use self::parse::{Parsed, parse_node};
use crate::{Ast, Location, Node};

/// A Dockerfile's instructions, by stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The `ARG`s before the first `FROM` (the global scope).
    pub meta_args: Vec<ArgCommand>,
    /// The stages in order; never empty.
    pub stages: Vec<Stage>,
}

/// Reads every instruction of `ast` into stages (BuildKit's
/// `instructions.Parse`), and refuses a file without a `FROM` as BuildKit
/// does right after (`dockerfile contains no stages to build`).
///
/// Stops at the first instruction BuildKit refuses; anything but `ARG`
/// before the first `FROM` is `no build stage in current context`.
pub fn parse_dockerfile(ast: &Ast) -> Result<Dockerfile, InstructionError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.children {
        match parse_node(node)? {
            Parsed::Stage(stage) => stages.push(stage),
            Parsed::Command(command) => match stages.last_mut() {
                Some(stage) => stage.commands.push(command),
                None => match command {
                    Command::Arg(arg) => meta_args.push(arg),
                    other => {
                        return Err(InstructionError::NoBuildStage {
                            instruction: other.name().to_string(),
                            location: other.location(),
                        });
                    }
                },
            },
        }
    }
    if stages.is_empty() {
        return Err(InstructionError::NoStages {
            location: Location {
                start_line: ast.children.first().map_or(1, |n| n.start_line),
                end_line: ast.children.last().map_or(1, |n| n.end_line),
            },
        });
    }
    Ok(Dockerfile { meta_args, stages })
}

/// Reads one instruction other than `FROM` (BuildKit's `ParseCommand`);
/// `FROM` is refused as not a command.
pub fn parse_instruction(node: &Node) -> Result<Command, InstructionError> {
    match parse_node(node)? {
        Parsed::Command(command) => Ok(command),
        Parsed::Stage(_) => Err(InstructionError::NotACommand {
            location: node.location(),
        }),
    }
}
