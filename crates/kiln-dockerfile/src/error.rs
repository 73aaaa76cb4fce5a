//! The crate's error type.

/// A span of lines in a Dockerfile, 1-based and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub start_line: usize,
    pub end_line: usize,
}

/// Everything that can go wrong reading a Dockerfile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a Dockerfile BuildKit would accept.
    #[error("dockerfile parse error on line {}: {message}", .location.start_line)]
    Parse { message: String, location: Location },
    /// An instruction is malformed (unknown, bad flags, bad arguments).
    #[error(transparent)]
    Instruction(#[from] crate::instructions::InstructionError),
    /// The build cannot be planned as asked (target, args, stage references).
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
}

impl Error {
    /// The Dockerfile lines the error is about, when it is about some.
    pub fn location(&self) -> Option<Location> {
        match self {
            Error::Parse { location, .. } => Some(*location),
            Error::Instruction(e) => Some(e.location()),
            Error::Plan(e) => e.location(),
        }
    }
}
