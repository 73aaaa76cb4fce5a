use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the sandbox. A command that runs and
/// exits non-zero is not an error: that is an [`ExitInfo`](crate::ExitInfo).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The root given in the [`RunSpec`](crate::RunSpec) is not a directory.
    #[error("root {path} is not a directory")]
    NotADirectory { path: PathBuf },

    /// The command line is empty.
    #[error("no command to run")]
    EmptyCommand,

    /// The working directory does not exist in the root. runc would create
    /// it; the caller's WORKDIR logic owns that, so a missing one is a bug
    /// worth naming.
    #[error("working directory {cwd} does not exist in {rootfs}")]
    MissingCwd { rootfs: PathBuf, cwd: PathBuf },

    /// A path inside the sandbox (cwd, mount destination) is not absolute.
    #[error("{path} is not an absolute path")]
    RelativePath { path: PathBuf },

    /// A bind mount's source (or /etc/resolv.conf, /etc/hosts) is missing.
    #[error("mount source {path} does not exist")]
    MissingSource { path: PathBuf },

    /// An rlimit name the runtime spec does not know.
    #[error("unknown rlimit {name}")]
    UnknownRlimit { name: String },

    /// `USER name` with no such name in the root's /etc/passwd.
    #[error("unable to find user {name} in {passwd}")]
    NoSuchUser { name: String, passwd: PathBuf },

    /// `USER x:group` with no such group in the root's /etc/group.
    #[error("unable to find group {name} in {group}")]
    NoSuchGroup { name: String, group: PathBuf },

    /// A numeric uid or gid outside 0..=2^31-1 (Docker's range).
    #[error("user {spec}: id {id} is out of range")]
    IdOutOfRange { spec: String, id: i64 },

    /// No runc binary at the configured path nor in the usual places.
    #[error("runc not found (looked for {tried:?})")]
    RuncNotFound { tried: Vec<PathBuf> },

    /// The runc process could not be started.
    #[error("failed to execute {runc}")]
    Spawn {
        runc: PathBuf,
        #[source]
        source: io::Error,
    },

    /// runc exited before the command started (bad executable, failed
    /// mount, ...). `stderr` holds runc's own error messages.
    #[error("container {id} did not start (runc exit code {code}): {stderr}")]
    Start {
        id: String,
        code: i32,
        stderr: String,
    },

    /// The guardian that ends the run if kiln dies could not be started.
    #[error("failed to start the guardian {program}")]
    Guardian {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A runc subcommand (state, kill, delete, list) failed.
    #[error("runc {command} {id} failed: {stderr}")]
    Runc {
        command: &'static str,
        id: String,
        stderr: String,
    },

    /// Something a step asks for that this executor cannot give it.
    #[error("{what} is not supported here: {why}")]
    Unsupported { what: String, why: String },

    /// A value the runtime-spec types rejected.
    #[error("invalid runtime spec: {message}")]
    Spec { message: String },

    /// The kernel refused this process a user namespace (rootless kiln).
    #[error("kiln cannot make a user namespace for a rootless build: {hint}")]
    UserNamespace {
        hint: String,
        #[source]
        source: io::Error,
    },

    /// /etc/subuid or /etc/subgid gives this user ranges, and the setuid
    /// helper that maps them is missing or failed.
    #[error("{program} {detail}")]
    IdMapHelper {
        /// `newuidmap` or `newgidmap`.
        program: &'static str,
        detail: String,
    },

    /// File system errors; they come from `fs_err` and name their path.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SandboxError {
    pub(crate) fn spec(error: impl std::fmt::Display) -> Self {
        Self::Spec {
            message: error.to_string(),
        }
    }
}
