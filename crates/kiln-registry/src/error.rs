//! The crate's one error type, and the operation every error and event names.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_image::Digest;

/// What the client was doing: named by every [`Error`] and every
/// [`Event`](crate::Event). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Operation(Arc<OperationData>);

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Operation({self})")
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OperationData {
    kind: OperationKind,
    registry: String,
    repository: Option<String>,
    target: Option<String>,
}

/// The kinds of [`Operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperationKind {
    /// `GET /v2/`: finding the scheme and the authentication challenge.
    Ping,
    /// Fetching a bearer token or running a credential helper.
    Authenticate,
    GetManifest,
    HeadManifest,
    PutManifest,
    BlobExists,
    PullBlob,
    PushBlob,
}

impl OperationKind {
    /// What the operation does, for messages: `pull blob`, `put manifest`.
    pub fn verb(self) -> &'static str {
        self.as_str()
    }

    fn as_str(self) -> &'static str {
        match self {
            OperationKind::Ping => "ping",
            OperationKind::Authenticate => "authenticate to",
            OperationKind::GetManifest => "get manifest",
            OperationKind::HeadManifest => "check manifest",
            OperationKind::PutManifest => "put manifest",
            OperationKind::BlobExists => "check blob",
            OperationKind::PullBlob => "pull blob",
            OperationKind::PushBlob => "push blob",
        }
    }
}

impl Operation {
    pub(crate) fn new(
        kind: OperationKind,
        registry: &str,
        repository: Option<&str>,
        target: Option<String>,
    ) -> Operation {
        Operation(Arc::new(OperationData {
            kind,
            registry: registry.to_string(),
            repository: repository.map(str::to_string),
            target,
        }))
    }

    pub fn kind(&self) -> OperationKind {
        self.0.kind
    }

    /// The registry as the user named it (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.0.registry
    }

    /// The repository, when the operation has one (`library/alpine`).
    pub fn repository(&self) -> Option<&str> {
        self.0.repository.as_deref()
    }

    /// The tag or digest the operation is about.
    pub fn target(&self) -> Option<&str> {
        self.0.target.as_deref()
    }
}

impl fmt::Display for Operation {
    /// `pull blob 127.0.0.1:5000/app@sha256:…`, `get manifest docker.io/library/alpine:3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind().as_str(), self.registry())?;
        if let Some(repository) = self.repository() {
            write!(f, "/{repository}")?;
        }
        if let Some(target) = self.target() {
            let sep = if target.contains(':') { '@' } else { ':' };
            write!(f, "{sep}{target}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry answered with a status that retrying cannot fix. The
    /// message is the registry's own (`errors[].message` and `code`).
    #[error("{operation}: registry answered {status}: {message}")]
    Status {
        operation: Operation,
        status: u16,
        /// The first `errors[].code` of the body (`MANIFEST_UNKNOWN`, `DENIED`, ...).
        code: Option<String>,
        message: String,
    },
    /// Credentials were refused, or the registry still answered 401 after
    /// authenticating.
    #[error("{operation}: authentication failed ({status}): {message}")]
    Unauthorized {
        operation: Operation,
        status: u16,
        message: String,
    },
    /// The connection could not be made or broke (refused, reset, TLS, DNS).
    #[error("{operation}: {reason}")]
    Transport {
        operation: Operation,
        reason: String,
    },
    /// No byte moved for the idle timeout.
    #[error("{operation}: stalled, no data for {}", humantime_secs(*idle))]
    Stalled {
        operation: Operation,
        idle: Duration,
    },
    #[error("{operation}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        operation: Operation,
        expected: Digest,
        actual: Digest,
    },
    #[error("{operation}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        operation: Operation,
        expected: u64,
        actual: u64,
    },
    /// The registry's answer does not follow the distribution API.
    #[error("{operation}: invalid response: {message}")]
    Protocol {
        operation: Operation,
        message: String,
    },
    /// Retries ran out; the source is the last attempt's error.
    #[error("{operation}: gave up after {attempts} attempts")]
    GaveUp {
        operation: Operation,
        attempts: u32,
        #[source]
        last: Box<Error>,
    },
    /// The caller's [`BlobSink`](crate::BlobSink) failed.
    #[error("{operation}: writing the blob")]
    Sink {
        operation: Operation,
        #[source]
        source: io::Error,
    },
    /// The caller's [`BlobSource`](crate::BlobSource) failed.
    #[error("{operation}: reading the blob")]
    Source {
        operation: Operation,
        #[source]
        source: io::Error,
    },
    #[error("docker config {path}: {message}")]
    DockerConfig { path: PathBuf, message: String },
    #[error("credential helper {helper} for {registry}: {message}")]
    CredentialHelper {
        helper: String,
        registry: String,
        message: String,
    },
    #[error("certificate {path}: {message}")]
    Certificate { path: PathBuf, message: String },
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Error {
    /// The operation that failed, for errors that happened during one.
    pub fn operation(&self) -> Option<&Operation> {
        match self {
            Error::Status { operation, .. }
            | Error::Unauthorized { operation, .. }
            | Error::Transport { operation, .. }
            | Error::Stalled { operation, .. }
            | Error::DigestMismatch { operation, .. }
            | Error::SizeMismatch { operation, .. }
            | Error::Protocol { operation, .. }
            | Error::GaveUp { operation, .. }
            | Error::Sink { operation, .. }
            | Error::Source { operation, .. } => Some(operation),
            Error::DockerConfig { .. }
            | Error::CredentialHelper { .. }
            | Error::Certificate { .. } => None,
        }
    }

    /// The HTTP status the registry answered, when that is what failed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Unauthorized { status, .. } => Some(*status),
            Error::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// A 404: the manifest, blob or repository does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}
