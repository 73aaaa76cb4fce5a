//! The one error type of the RUN step executor.

use std::io;
use std::path::PathBuf;

use kiln_dockerfile::go::quote as go_quote;
use kiln_sandbox::SandboxError;

use crate::ops::CopyError;

/// Why a `RUN` step failed. Where users search for BuildKit's wording, the
/// message is BuildKit's (a failed command, a missing user or secret).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The command ran and exited non-zero (BuildKit's `execOp` text; the
    /// code is 128 + N for a command killed by signal N).
    #[error(
        "process {} did not complete successfully: exit code: {code}",
        go_quote(&args.join(" "))
    )]
    Failed { args: Vec<String>, code: i32 },

    /// [`RunControl::cancel`](kiln_sandbox::RunControl::cancel) ended the
    /// step, while it ran or while it waited for a cache mount.
    #[error("step cancelled")]
    Cancelled,

    /// A RUN for a platform this machine cannot execute, found before
    /// anything is unpacked or started (never an `exec format error` from
    /// inside the step).
    #[error(
        "this {host} machine cannot run {platform} programs: no QEMU binfmt handler for \
         {architecture} is registered ({handler} is missing or disabled); install \
         qemu-user-static (Debian, Ubuntu) and run the build again, or build this platform \
         on a {platform} runner"
    )]
    NoEmulation {
        host: String,
        platform: String,
        architecture: String,
        handler: String,
    },

    /// The same, in a container: binfmt_misc is not mounted there, and a
    /// test program of the architecture did not run, so no handler of the
    /// host serves the container.
    #[error(
        "this {host} machine cannot run {platform} programs: binfmt_misc is not mounted here \
         (a container), and a test program for {architecture} did not run, so no QEMU handler \
         of the host serves this container; on the host, install qemu-user-static (its \
         handlers carry the F flag, which containers need) and run the build again, or build \
         this platform on a {platform} runner"
    )]
    NoEmulationHere {
        host: String,
        platform: String,
        architecture: String,
    },

    /// A RUN for another operating system than the machine's.
    #[error("this {host} machine cannot run {platform} programs: a RUN step runs on {host}")]
    ForeignOs { host: String, platform: String },

    /// `USER name` with no such name in the root's /etc/passwd (BuildKit's
    /// text, from runc's `libcontainer/user`).
    #[error("unable to find user {name}: no matching entries in passwd file")]
    NoSuchUser { name: String },

    /// `USER x:group` with no such group in the root's /etc/group.
    #[error("unable to find group {name}: no matching entries in group file")]
    NoSuchGroup { name: String },

    /// A required secret (`required` or `required=true`) the build was not
    /// given (BuildKit's text).
    #[error("secret {id}: not found")]
    SecretNotFound { id: String },

    /// `env=` with an empty variable name.
    #[error("secret {id}: empty environment variable name")]
    EmptySecretEnv { id: String },

    /// A secret source that could not be read (`--secret id=x,env=VAR` with
    /// `VAR` unset).
    #[error("secret {id}: {reason}")]
    SecretSource { id: String, reason: String },

    /// A feature of `RUN` kiln does not have yet (`--mount=type=ssh`,
    /// `--device`).
    #[error("line {line}: {what} is not supported yet")]
    Unsupported { line: usize, what: String },

    /// The parser gave heredocs to an exec-form command, or several words
    /// (BuildKit's text).
    #[error("parsing produced an invalid run command: [{}]", args.join(" "))]
    InvalidCommand { args: Vec<String> },

    /// A mount at `/`, or where kiln cannot make one (a heredoc script
    /// whose name is not a file name, under `/dev/pipes/`).
    #[error("invalid mount target {}", go_quote(target))]
    InvalidMountTarget { target: String },

    /// `from=` names nothing the engine knows.
    #[error("mount from {from:?}: {reason}")]
    MountFrom { from: String, reason: String },

    /// `source=` does not exist in what `from=` names (the context when
    /// `from` is not given).
    #[error("mount source {source_path:?} not found in {from}")]
    MountSourceNotFound { from: String, source_path: String },

    /// A cache mount's `source` must be a directory.
    #[error("cache mount source {source_path:?} in {from} is not a directory")]
    CacheSourceNotDirectory { from: String, source_path: String },

    /// Copying a cache mount's seed (`from=`, `source=`) failed.
    #[error("seeding cache mount {id:?}")]
    CacheSeed {
        id: String,
        #[source]
        source: CopyError,
    },

    /// A cache mount's contents could not be archived for a `--cache-to`
    /// (a file that changed while it was read, a name a tar cannot hold).
    #[error("archiving cache mount {id:?}")]
    CacheArchive {
        id: String,
        #[source]
        source: kiln_image::LayerError,
    },

    /// A mount kiln makes itself (the throwaway overlay of a `rw` bind)
    /// failed.
    #[error("mounting {what} at {}", target.display())]
    Mount {
        what: &'static str,
        target: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The sandbox refused the run or could not start it.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),

    /// Filesystem errors; they come from `fs_err` or name their path.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl RunError {
    /// For [`MountSources`](super::MountSources) implementations: `from`
    /// could not be resolved.
    pub fn mount_from(from: impl Into<String>, reason: impl Into<String>) -> RunError {
        RunError::MountFrom {
            from: from.into(),
            reason: reason.into(),
        }
    }
}

/// An I/O error that names what was done to which path (for calls that do
/// not go through `fs_err`: rustix, flock, mount).
pub(crate) fn io_at<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_go_does() {
        assert_eq!(go_quote("/bin/sh -c false"), r#""/bin/sh -c false""#);
        assert_eq!(go_quote("a \"b\" \\"), r#""a \"b\" \\""#);
        assert_eq!(go_quote("x\ny\tz\x01"), r#""x\ny\tz\x01""#);
        assert_eq!(go_quote("é\u{a0}\u{200b}"), "\"é\\u00a0\\u200b\"");
    }

    #[test]
    fn failed_commands_read_as_buildkit_says() {
        let err = RunError::Failed {
            args: vec!["/bin/sh".into(), "-c".into(), "false".into()],
            code: 1,
        };
        assert_eq!(
            err.to_string(),
            r#"process "/bin/sh -c false" did not complete successfully: exit code: 1"#
        );
        let err = RunError::InvalidMountTarget { target: "/".into() };
        assert_eq!(err.to_string(), r#"invalid mount target "/""#);
    }
}
