//! Errors of planning a build and expanding its instructions.

use crate::Location;
use crate::instructions::InstructionError;
use crate::shell::ExpandError;

/// Why a Dockerfile cannot be built as asked. Messages are BuildKit's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("dockerfile contains no stages to build")]
    NoStages,
    /// A word could not be expanded (`${X:?msg}`, a bad substitution).
    #[error("{source}")]
    Expand {
        source: ExpandError,
        location: Location,
    },
    #[error("base name ({base}) should not be blank")]
    BlankBaseName { base: String, location: Location },
    #[error("empty platform value from expression {expression}")]
    EmptyPlatform {
        expression: String,
        location: Location,
    },
    #[error("failed to parse platform {platform}: {reason}")]
    InvalidPlatform {
        platform: String,
        reason: String,
        location: Location,
    },
    #[error("target stage {target:?} could not be found{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    TargetNotFound {
        target: String,
        suggestion: Option<String>,
    },
    #[error(
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    )]
    FromVariable { location: Location },
    #[error("invalid stage index {index}")]
    InvalidStageIndex { index: i64, location: Location },
    #[error("circular dependency detected on stage: {stage}")]
    CircularDependency { stage: String },
    #[error(
        "cannot copy from stage {from:?}, it needs to be defined before current stage {stage:?}"
    )]
    StageOutOfOrder {
        from: String,
        stage: String,
        location: Option<Location>,
    },
    /// An instruction refused once its words were expanded (a mount, say).
    #[error("{0}")]
    Instruction(#[from] InstructionError),
}

impl PlanError {
    pub(crate) fn expand(source: ExpandError, location: Location) -> Self {
        PlanError::Expand { source, location }
    }

    /// The Dockerfile lines the error is about, when it is about some.
    pub fn location(&self) -> Option<Location> {
        match self {
            PlanError::Expand { location, .. }
            | PlanError::BlankBaseName { location, .. }
            | PlanError::EmptyPlatform { location, .. }
            | PlanError::InvalidPlatform { location, .. }
            | PlanError::FromVariable { location }
            | PlanError::InvalidStageIndex { location, .. } => Some(*location),
            PlanError::StageOutOfOrder { location, .. } => *location,
            PlanError::Instruction(e) => Some(e.location()),
            PlanError::NoStages
            | PlanError::TargetNotFound { .. }
            | PlanError::CircularDependency { .. } => None,
        }
    }
}
