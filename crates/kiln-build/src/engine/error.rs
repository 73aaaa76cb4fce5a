//! Why a build failed: one enum, with the Dockerfile lines where it knows them.

use std::time::Duration;

use kiln_dockerfile::Location;

use crate::events::StepId;
use crate::watchdog::{Breach, headline};

/// A build failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The Dockerfile is malformed, or cannot be built as asked.
    #[error(transparent)]
    Dockerfile(#[from] kiln_dockerfile::Error),
    /// A step failed: `message` is one line saying why.
    #[error("{message}")]
    Step { message: String, location: Location },
    #[error("{context}: {source}")]
    Store {
        context: String,
        source: Box<kiln_image::StoreError>,
    },
    #[error(transparent)]
    Snapshot(Box<crate::SnapshotError>),
    #[error(transparent)]
    Context(Box<crate::ContextError>),
    /// A RUN step made no progress (no output, CPU or I/O) for `limit`,
    /// the stall timeout, and was killed, on each of its `attempts`:
    /// `step 7 (Dockerfile:12) stalled: no output, CPU or I/O for 10m0s
    /// (killed after 3 attempts)`. The diagnosis went out as an event
    /// before the kill.
    #[error("{}", killed(*step, place, Breach::Stalled { limit: *limit }, *attempts))]
    Stalled {
        step: Option<StepId>,
        /// `Dockerfile:12`.
        place: String,
        location: Location,
        limit: Duration,
        attempts: u32,
    },
    /// A RUN step ran past `limit`, the step timeout, and was killed, on
    /// the last of its `attempts`: `step 7 (Dockerfile:12) timed out:
    /// still running after 20m0s (killed)`.
    #[error("{}", killed(*step, place, Breach::TimedOut { limit: *limit }, *attempts))]
    TimedOut {
        step: Option<StepId>,
        place: String,
        location: Location,
        limit: Duration,
        attempts: u32,
    },
    /// Interrupted (Ctrl-C, SIGTERM): everything was cleaned up.
    #[error("build cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl BuildError {
    /// The Dockerfile lines the error is about, when it is about some.
    pub fn location(&self) -> Option<Location> {
        match self {
            BuildError::Dockerfile(e) => e.location(),
            BuildError::Step { location, .. }
            | BuildError::Stalled { location, .. }
            | BuildError::TimedOut { location, .. } => Some(*location),
            _ => None,
        }
    }

    /// The watchdog's error for `breach`, after `attempts` attempts.
    pub(crate) fn breach(
        breach: Breach,
        step: Option<StepId>,
        place: String,
        location: Location,
        attempts: u32,
    ) -> BuildError {
        match breach {
            Breach::Stalled { limit } => BuildError::Stalled {
                step,
                place,
                location,
                limit,
                attempts,
            },
            Breach::TimedOut { limit } => BuildError::TimedOut {
                step,
                place,
                location,
                limit,
                attempts,
            },
        }
    }

    pub(crate) fn step(location: Location, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            message: message.into(),
            location,
        }
    }

    pub(crate) fn store(
        context: impl Into<String>,
    ) -> impl FnOnce(kiln_image::StoreError) -> BuildError {
        let context = context.into();
        move |source| BuildError::Store {
            context,
            source: Box::new(source),
        }
    }
}

// The sources are boxed to keep every `Result<_, BuildError>` small.
impl From<crate::SnapshotError> for BuildError {
    fn from(e: crate::SnapshotError) -> BuildError {
        BuildError::Snapshot(Box::new(e))
    }
}

impl From<crate::ContextError> for BuildError {
    fn from(e: crate::ContextError) -> BuildError {
        BuildError::Context(Box::new(e))
    }
}

/// `<headline> (killed)`, or `(killed after 3 attempts)`.
fn killed(step: Option<StepId>, place: &str, breach: Breach, attempts: u32) -> String {
    let head = headline(step, place, breach);
    match attempts {
        0 | 1 => format!("{head} (killed)"),
        n => format!("{head} (killed after {n} attempts)"),
    }
}

/// `error: cause: its cause: ...`, as anyhow's `{:#}` writes a chain.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        // Some errors already end with their cause's text.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_errors_are_one_line_with_the_step_and_line() {
        let location = Location {
            start_line: 12,
            end_line: 12,
        };
        let err = BuildError::breach(
            Breach::Stalled {
                limit: Duration::from_secs(600),
            },
            Some(7),
            "Dockerfile:12".into(),
            location,
            3,
        );
        assert_eq!(
            err.to_string(),
            "step 7 (Dockerfile:12) stalled: no output, CPU or I/O for 10m0s (killed after 3 attempts)"
        );
        assert_eq!(err.location(), Some(location));
        let err = BuildError::breach(
            Breach::TimedOut {
                limit: Duration::from_secs(1200),
            },
            Some(2),
            "Dockerfile:4".into(),
            location,
            1,
        );
        assert_eq!(
            err.to_string(),
            "step 2 (Dockerfile:4) timed out: still running after 20m0s (killed)"
        );
    }
}
