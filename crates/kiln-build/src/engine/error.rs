//! Why a build failed: one enum, with the Dockerfile lines where it knows them.

use kiln_dockerfile::Location;

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
    #[error("{reference}: {source}")]
    Pull {
        reference: String,
        source: Box<kiln_registry::TransferError>,
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
            BuildError::Step { location, .. } => Some(*location),
            _ => None,
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
        move |source| BuildError::Store { context, source: Box::new(source) }
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
