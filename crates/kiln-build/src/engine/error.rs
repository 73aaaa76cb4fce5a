//! Why a build failed: one enum, with the Dockerfile lines where it knows
//! them ([`BuildError::location`]) and the error that caused it, kept whole
//! as its `source()`.
//!
//! `Display` says what failed, not why: the cause is the source.
//! [`BuildError::message`] is the line users read, with every cause once.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use kiln_dockerfile::Location;
use kiln_dockerfile::plan::PlanError;
use kiln_image::{LayerError, ReferenceError, StoreError};
use kiln_registry::TransferError;
use kiln_sandbox::SandboxError;

use crate::events::StepId;
use crate::ops::CopyError;
use crate::watchdog::{Breach, OverrideError, headline};
use crate::{ContextError, RunError, SnapshotError};

/// A build failure. Reports show [`BuildError::message`], after the
/// Dockerfile line when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The Dockerfile is malformed, or cannot be built as asked.
    #[error(transparent)]
    Dockerfile(#[from] kiln_dockerfile::Error),

    // A step failed. Where the step's own error says it all (BuildKit's
    // words, which users search for), the message starts with it.
    /// The instruction's words could not be expanded (`${X:?msg}`), or a
    /// `RUN` option is invalid once expanded.
    #[error("expanding the instruction")]
    Instruction {
        location: Location,
        #[source]
        source: Cause<PlanError>,
    },
    /// A `# kiln:` comment above a `RUN` cannot be read.
    #[error("reading the step's `# kiln:` settings")]
    StepSettings {
        location: Location,
        #[source]
        source: OverrideError,
    },
    /// Reading the build context for a step (its sources, their content
    /// digests), or opening it (`location` is `None`).
    #[error("reading the build context")]
    Context {
        location: Option<Location>,
        #[source]
        source: Cause<ContextError>,
    },
    /// A `COPY`/`ADD` (its flags, a download, the copy itself) or the
    /// directory of a `WORKDIR`.
    #[error("copying files")]
    Copy {
        location: Location,
        #[source]
        source: Cause<CopyError>,
    },
    /// A `RUN` failed, on the last of its `attempts`.
    #[error("running the step")]
    Run {
        location: Location,
        attempts: u32,
        #[source]
        source: Cause<RunError>,
    },
    /// The `USER` that owns a `WORKDIR` is not in the image.
    #[error("resolving the user")]
    User {
        location: Location,
        #[source]
        source: Cause<SandboxError>,
    },

    // The rest of a step's errors say what the engine was doing.
    /// A base image (`FROM`, `--from`) whose name is not a reference.
    #[error("{name}")]
    Reference {
        location: Location,
        name: String,
        #[source]
        source: ReferenceError,
    },
    /// Pulling a base image failed. Stages on one base share the pull and
    /// its error.
    #[error("{reference}")]
    Pull {
        location: Location,
        /// As users write it: `alpine:3`.
        reference: String,
        #[source]
        source: Cause<TransferError>,
    },
    /// The base image is in the store, but its manifest for the platform
    /// cannot be read.
    #[error("base image {reference}")]
    BaseImage {
        location: Location,
        reference: String,
        #[source]
        source: Cause<StoreError>,
    },
    /// A base's `ONBUILD` trigger is not an instruction.
    #[error("ONBUILD trigger {trigger:?}")]
    Trigger {
        location: Location,
        trigger: String,
        #[source]
        source: Cause<kiln_dockerfile::Error>,
    },
    #[error("empty ONBUILD trigger {trigger:?}")]
    EmptyTrigger { location: Location, trigger: String },
    /// `ADD --checksum` with a source that is not a URL (Docker 26's
    /// BuildKit's words).
    #[error("checksum can't be specified for non-HTTP sources")]
    ChecksumNotHttp { location: Location },
    /// The directory an `ADD <url>` downloads into.
    #[error("creating a download directory")]
    DownloadDir {
        location: Location,
        #[source]
        source: std::io::Error,
    },
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

    // Not about one step.
    #[error(transparent)]
    Snapshot(Box<SnapshotError>),
    /// The layers a step runs on could not be fetched or unpacked (a full
    /// disk, a registry gone).
    #[error("preparing the step's files")]
    Prepare {
        location: Location,
        #[source]
        source: Cause<SnapshotError>,
    },
    /// A step ran, but what it changed could not be made a layer (a full
    /// disk, a file that vanished).
    #[error("committing the step's changes")]
    Commit {
        location: Location,
        #[source]
        source: Cause<SnapshotError>,
    },
    /// The store failed `doing` something (`reading the build cache`).
    #[error("{doing}")]
    Store {
        doing: &'static str,
        #[source]
        source: Cause<StoreError>,
    },
    /// A `--secret` could not be read.
    #[error("--secret id={id}")]
    Secret {
        id: String,
        #[source]
        source: Cause<RunError>,
    },
    /// `--output compression-level=` out of the codec's range.
    #[error("checking the compression level")]
    CompressionLevel {
        #[source]
        source: LayerError,
    },
    /// The `SOURCE_DATE_EPOCH` build arg is not Unix seconds.
    #[error("invalid SOURCE_DATE_EPOCH {value:?}: not a number of seconds since 1970")]
    SourceDateEpoch { value: String },
    /// A `--cache-to` could not be written (and `ignore-error` was not set).
    #[error("writing the build cache to {cache}")]
    CacheExport {
        cache: String,
        #[source]
        source: Cause<crate::remote_cache::CacheError>,
    },
    /// A `--stage-image` that cannot be read, or names no stage of the
    /// Dockerfile.
    #[error("--stage-image {spec}: {reason}")]
    StageImage { spec: String, reason: String },
    /// `kiln stage-key` names no stage of the Dockerfile.
    #[error("{reason}")]
    NoSuchStage { reason: String },
    /// A stage's image could not be pushed (`--stage-image`).
    #[error("pushing the image of stage {stage} to {image}")]
    StageImagePush {
        stage: String,
        image: String,
        #[source]
        source: Cause<TransferError>,
    },
    /// The built image could not be put in the encoding asked for.
    #[error("encoding the image")]
    Export {
        #[source]
        source: Cause<crate::export::ExportError>,
    },
    /// The scratch directory of RUN steps could not be made or cleared.
    #[error("clearing the scratch directory")]
    Scratch {
        #[source]
        source: Cause<RunError>,
    },
    /// What a crashed kiln left (`doing`: its runs, secrets, downloads)
    /// could not be cleared. The source is a `SandboxError`, a `RunError`
    /// or an `io::Error`.
    #[error("{doing}")]
    Sweep {
        doing: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stage this one reads failed; that stage's own error is the one
    /// the build returns.
    #[error("a stage it needs failed")]
    StageFailed { stage: usize },
    /// A thread of the build panicked.
    #[error("a build thread panicked")]
    Panicked,
    /// Interrupted (Ctrl-C, SIGTERM): everything was cleaned up.
    #[error("build cancelled")]
    Cancelled,
}

impl BuildError {
    /// The exit status of a RUN's command that exited non-zero.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            BuildError::Run { source, .. } => match &**source {
                RunError::Failed { code, .. } => Some(*code),
                _ => None,
            },
            _ => None,
        }
    }

    /// The Dockerfile lines the error is about, when it is about some.
    pub fn location(&self) -> Option<Location> {
        match self {
            BuildError::Dockerfile(e) => e.location(),
            BuildError::Context { location, .. } => *location,
            BuildError::Instruction { location, .. }
            | BuildError::StepSettings { location, .. }
            | BuildError::Copy { location, .. }
            | BuildError::Run { location, .. }
            | BuildError::User { location, .. }
            | BuildError::Reference { location, .. }
            | BuildError::Pull { location, .. }
            | BuildError::BaseImage { location, .. }
            | BuildError::Trigger { location, .. }
            | BuildError::EmptyTrigger { location, .. }
            | BuildError::ChecksumNotHttp { location }
            | BuildError::DownloadDir { location, .. }
            | BuildError::Commit { location, .. }
            | BuildError::Prepare { location, .. }
            | BuildError::Stalled { location, .. }
            | BuildError::TimedOut { location, .. } => Some(*location),
            BuildError::Snapshot(_)
            | BuildError::Store { .. }
            | BuildError::Secret { .. }
            | BuildError::CompressionLevel { .. }
            | BuildError::SourceDateEpoch { .. }
            | BuildError::Export { .. }
            | BuildError::CacheExport { .. }
            | BuildError::StageImage { .. }
            | BuildError::NoSuchStage { .. }
            | BuildError::StageImagePush { .. }
            | BuildError::Scratch { .. }
            | BuildError::Sweep { .. }
            | BuildError::StageFailed { .. }
            | BuildError::Panicked
            | BuildError::Cancelled => None,
        }
    }

    /// The line users read, without the Dockerfile line the caller shows
    /// in front of it (`Dockerfile:12: `): what failed, then each cause
    /// once. A step whose own error says it all starts with that error,
    /// as BuildKit's messages do; a retried `RUN` ends with how many
    /// attempts it had.
    pub fn message(&self) -> String {
        match self {
            BuildError::Instruction { source, .. } => with_causes(&**source),
            BuildError::StepSettings { source, .. } => with_causes(source),
            BuildError::Context { source, .. } => with_causes(&**source),
            BuildError::Copy { source, .. } => with_causes(&**source),
            BuildError::User { source, .. } => with_causes(&**source),
            BuildError::CompressionLevel { source } => with_causes(source),
            BuildError::Scratch { source } => with_causes(&**source),
            BuildError::Prepare { source, .. } => with_causes(&**source),
            BuildError::Commit { source, .. } => {
                format!("committing the step: {}", with_causes(&**source))
            }
            BuildError::Run {
                source, attempts, ..
            } => match attempts {
                0 | 1 => with_causes(&**source),
                n => format!("{} (after {n} attempts)", with_causes(&**source)),
            },
            // BuildKit's words for a bad instruction, without the line
            // prefix: the line would be the trigger's own, always 1.
            BuildError::Trigger { source, .. } => match &**source {
                kiln_dockerfile::Error::Instruction(e) => format!("{self}: {}", e.message()),
                _ => with_causes(self),
            },
            _ => with_causes(self),
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

    /// A COPY/ADD error at `location`; a copy stopped by the build's
    /// cancel is the cancel.
    pub(crate) fn copy(location: Location) -> impl Fn(CopyError) -> BuildError + Copy {
        move |e| match e {
            CopyError::Stopped => BuildError::Cancelled,
            e => BuildError::Copy {
                location,
                source: Cause::new(e),
            },
        }
    }

    /// A `RUN` failure on its first attempt.
    pub(crate) fn run(location: Location) -> impl Fn(RunError) -> BuildError + Copy {
        move |e| BuildError::Run {
            location,
            attempts: 1,
            source: Cause::new(e),
        }
    }

    /// A `# kiln:` comment's error, at the comment's line.
    pub(crate) fn step_settings(source: OverrideError) -> BuildError {
        BuildError::StepSettings {
            location: Location {
                start_line: source.line,
                end_line: source.line,
            },
            source,
        }
    }

    /// A context error at `location`; a digest stopped by the build's
    /// cancel is the cancel.
    pub(crate) fn context(location: Location) -> impl Fn(ContextError) -> BuildError + Copy {
        move |e| match e {
            ContextError::Stopped => BuildError::Cancelled,
            e => BuildError::Context {
                location: Some(location),
                source: Cause::new(e),
            },
        }
    }

    pub(crate) fn store(doing: &'static str) -> impl FnOnce(StoreError) -> BuildError {
        move |e| BuildError::Store {
            doing,
            source: Cause::new(e),
        }
    }

    pub(crate) fn sweep<E>(doing: &'static str) -> impl FnOnce(E) -> BuildError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| BuildError::Sweep {
            doing,
            source: Box::new(e),
        }
    }
}

// Kept whole, boxed to keep every `Result<_, BuildError>` small.
impl From<SnapshotError> for BuildError {
    fn from(e: SnapshotError) -> BuildError {
        BuildError::Snapshot(Box::new(e))
    }
}

/// Opening the context; a step's context errors name its line.
impl From<ContextError> for BuildError {
    fn from(e: ContextError) -> BuildError {
        BuildError::Context {
            location: None,
            source: Cause::new(e),
        }
    }
}

/// The error a [`BuildError`] was caused by, on the heap (so every
/// `Result<_, BuildError>` stays small) and shared (stages waiting on one
/// pull get its error). It dereferences to the error, and `source()`
/// returns the error itself, so callers can downcast it: a `Box<E>`
/// field would be the source itself, a box, which downcasts to no `E`.
pub struct Cause<E>(Arc<E>);

impl<E> Cause<E> {
    pub(crate) fn new(error: E) -> Cause<E> {
        Cause(Arc::new(error))
    }
}

impl<E> Deref for Cause<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.0
    }
}

impl<E> AsRef<E> for Cause<E> {
    fn as_ref(&self) -> &E {
        &self.0
    }
}

impl<E> Clone for Cause<E> {
    fn clone(&self) -> Cause<E> {
        Cause(Arc::clone(&self.0))
    }
}

impl<E: fmt::Debug> fmt::Debug for Cause<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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

/// `error: cause: its cause: ...`, as anyhow's `{:#}` writes a chain, but
/// each cause once: some errors' messages already hold their cause's text.
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    const LINE_3: Location = Location {
        start_line: 3,
        end_line: 3,
    };

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
        assert_eq!(err.message(), err.to_string());
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

    #[test]
    fn a_step_error_reads_as_its_cause_and_keeps_it_as_the_source() {
        let err = BuildError::copy(LINE_3)(CopyError::NotADirectory {
            path: "/plain".into(),
        });
        assert_eq!(err.to_string(), "copying files");
        assert_eq!(err.message(), "cannot copy to non-directory: /plain");
        assert_eq!(err.location(), Some(LINE_3));
        let source = err.source().and_then(|s| s.downcast_ref::<CopyError>());
        assert!(
            matches!(source, Some(CopyError::NotADirectory { path }) if path == "/plain"),
            "{source:?}"
        );
    }

    #[test]
    fn a_nested_cause_is_said_once_after_its_context() {
        // The sandbox's error is the copy error's source.
        let err = BuildError::copy(LINE_3)(CopyError::Chown {
            spec: "nobody".into(),
            source: SandboxError::NoSuchUser {
                name: "nobody".into(),
                passwd: "/etc/passwd".into(),
            },
        });
        assert_eq!(
            err.message(),
            "invalid --chown=nobody: unable to find user nobody in /etc/passwd"
        );
        // A store error whose text already holds its I/O error's.
        let io = std::io::Error::other("disk on fire");
        let err = BuildError::store("reading the build cache")(StoreError::Io {
            path: "/store/index.redb".into(),
            source: io,
        });
        assert_eq!(
            err.message(),
            "reading the build cache: /store/index.redb: disk on fire"
        );
        assert_eq!(err.location(), None);
        assert!(
            err.source()
                .is_some_and(|s| s.downcast_ref::<StoreError>().is_some())
        );
    }

    #[test]
    fn a_retried_run_says_how_many_attempts_after_buildkits_words() {
        let failed = || RunError::Failed {
            args: vec!["/bin/sh".into(), "-c".into(), "exit 7".into()],
            code: 7,
        };
        let err = BuildError::run(LINE_3)(failed());
        assert_eq!(
            err.message(),
            r#"process "/bin/sh -c exit 7" did not complete successfully: exit code: 7"#
        );
        let err = BuildError::Run {
            location: LINE_3,
            attempts: 3,
            source: Cause::new(failed()),
        };
        assert_eq!(
            err.message(),
            r#"process "/bin/sh -c exit 7" did not complete successfully: exit code: 7 (after 3 attempts)"#
        );
    }

    #[test]
    fn a_bad_onbuild_trigger_reads_as_buildkit_says_without_its_line() {
        let text = "RUNN x";
        let ast = kiln_dockerfile::parse(text.as_bytes()).unwrap();
        let e = kiln_dockerfile::instructions::parse_instruction(&ast.children[0]).unwrap_err();
        let err = BuildError::Trigger {
            location: LINE_3,
            trigger: text.into(),
            source: Cause::new(e.into()),
        };
        assert_eq!(
            err.message(),
            r#"ONBUILD trigger "RUNN x": unknown instruction: RUNN (did you mean RUN?)"#
        );
    }

    #[test]
    fn results_stay_small() {
        // No variant is larger than the Dockerfile error, kept whole (104
        // bytes; clippy's `result_large_err` starts at 128).
        assert_eq!(size_of::<BuildError>(), size_of::<kiln_dockerfile::Error>());
    }
}
