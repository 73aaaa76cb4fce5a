//! Why an instruction was refused.
//!
//! The text after the line prefix is BuildKit's own message, word for word
//! (its capitals included: `FROM requires either one or three arguments`),
//! because users search for these messages and tests compare them.

use crate::Location;

/// An instruction BuildKit would refuse, with the lines it spans.
///
/// Displays as `dockerfile parse error on line N: <message>`, the form of
/// BuildKit's `instructions.Parse`; [`message`](InstructionError::message)
/// gives the message alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstructionError {
    /// `unknown instruction: RUNN (did you mean RUN?)`.
    #[error("{}", self.rendered())]
    UnknownInstruction {
        /// The keyword as written.
        instruction: String,
        /// The nearest instruction name, in the keyword's case.
        suggestion: Option<String>,
        location: Location,
    },
    /// `unknown flag: --mont (did you mean mount?)`.
    #[error("{}", self.rendered())]
    UnknownFlag {
        instruction: String,
        /// The flag as written, up to its `=` (`--mont`).
        flag: String,
        /// The nearest flag the instruction takes, without `--`.
        suggestion: Option<String>,
        location: Location,
    },
    /// A flag given twice, without the value it needs, with a value that is
    /// not a boolean, or a word that does not start with `--`.
    #[error("{}", self.rendered())]
    InvalidFlag {
        instruction: String,
        flag: String,
        message: String,
        location: Location,
    },
    /// The arguments are wrong for the instruction (count, form or value).
    #[error("{}", self.rendered())]
    InvalidArguments {
        instruction: String,
        message: String,
        location: Location,
    },
    /// A `RUN --mount`, `--network`, `--security` or `--device` value is
    /// wrong; for mounts, possibly only found once the values are expanded.
    #[error("{}", self.rendered())]
    InvalidRunOption { message: String, location: Location },
    /// An instruction other than `ARG` before the first `FROM`.
    #[error("{}", self.rendered())]
    NoBuildStage {
        instruction: String,
        location: Location,
    },
    /// `FROM` given where a command is expected.
    #[error("{}", self.rendered())]
    NotACommand { location: Location },
    /// No `FROM` at all. BuildKit raises this right after parsing the
    /// instructions (in `dockerfile2llb`); the location spans the file.
    #[error("dockerfile contains no stages to build")]
    NoStages { location: Location },
}

impl InstructionError {
    /// The lines of the instruction at fault.
    pub fn location(&self) -> Location {
        match self {
            InstructionError::UnknownInstruction { location, .. }
            | InstructionError::UnknownFlag { location, .. }
            | InstructionError::InvalidFlag { location, .. }
            | InstructionError::InvalidArguments { location, .. }
            | InstructionError::InvalidRunOption { location, .. }
            | InstructionError::NoBuildStage { location, .. }
            | InstructionError::NotACommand { location }
            | InstructionError::NoStages { location } => *location,
        }
    }

    /// BuildKit's message, without the line prefix.
    pub fn message(&self) -> String {
        let did_you_mean = |s: &Option<String>| match s {
            Some(s) => format!(" (did you mean {s}?)"),
            None => String::new(),
        };
        match self {
            InstructionError::UnknownInstruction {
                instruction,
                suggestion,
                ..
            } => format!(
                "unknown instruction: {instruction}{}",
                did_you_mean(suggestion)
            ),
            InstructionError::UnknownFlag {
                flag, suggestion, ..
            } => format!("unknown flag: {flag}{}", did_you_mean(suggestion)),
            InstructionError::InvalidFlag { message, .. }
            | InstructionError::InvalidArguments { message, .. }
            | InstructionError::InvalidRunOption { message, .. } => message.clone(),
            InstructionError::NoBuildStage { .. } => {
                "no build stage in current context".to_string()
            }
            InstructionError::NotACommand { .. } => {
                "*instructions.Stage is not a command type".to_string()
            }
            InstructionError::NoStages { .. } => {
                "dockerfile contains no stages to build".to_string()
            }
        }
    }

    fn rendered(&self) -> String {
        format!(
            "dockerfile parse error on line {}: {}",
            self.location().start_line,
            self.message()
        )
    }
}

/// Why [`Command::expand`](super::Command::expand) failed: the expander's
/// own error, or a value BuildKit refuses once expanded (a `RUN --mount`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpansionError<E> {
    #[error(transparent)]
    Expand(E),
    #[error(transparent)]
    Instruction(#[from] InstructionError),
}
