//! What can go wrong reading a build context.

use std::io;
use std::path::{Path, PathBuf};

use kiln_dockerfile::dockerignore::PatternError;
use kiln_image::StoreError;

/// An error reading the build context: its ignore file, a COPY/ADD source,
/// a walk below one, or the content-hash memo.
///
/// Filesystem errors name the path they happened on; source errors name the
/// source as the Dockerfile gave it (the caller adds the Dockerfile line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A filesystem operation failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The context path is not a directory.
    #[error("build context {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },

    /// The ignore file has a pattern Docker rejects.
    #[error("ignore file {}", path.display())]
    IgnoreFile {
        path: PathBuf,
        #[source]
        source: PatternError,
    },

    /// An `--exclude` pattern, or the pattern of a `--parents` source,
    /// that Docker rejects (the source names the pattern).
    #[error("invalid {flag} pattern")]
    CopyPattern {
        flag: &'static str,
        #[source]
        source: PatternError,
    },

    /// A source whose wildcards are not Go `filepath.Match` syntax (an
    /// unclosed `[`, a trailing `\`).
    #[error("source {pattern:?} is not a valid wildcard pattern")]
    BadSource { pattern: String },

    /// Nothing the build can see at a source path: it does not exist, the
    /// ignore file hides it, or a symlink on the way leads nowhere inside
    /// the context. `path` is where the lookup failed, as BuildKit shows it
    /// (`/dir/file`, relative to the context root).
    #[error("{}", not_found_message(pattern, path))]
    NotFound { pattern: String, path: String },

    /// More than [`kiln_fs::MAX_SYMLINKS`] symlinks followed while resolving
    /// one source.
    #[error("source {pattern:?}: too many levels of symbolic links")]
    TooManySymlinks { pattern: String },

    /// A file kept changing while its content was hashed (three attempts).
    #[error("{} kept changing while it was hashed", path.display())]
    Unstable { path: PathBuf },

    /// The content-hash memo in the store could not be read or written.
    #[error("context-hash memo")]
    Memo(#[source] StoreError),

    /// The digest was stopped before its end: the memo it hashes through
    /// was halted (the build was cancelled or is over).
    #[error("hashing the context stopped: the build was cancelled or is over")]
    Stopped,
}

fn not_found_message(pattern: &str, path: &str) -> String {
    let shown = format!("/{}", pattern.trim_start_matches('/'));
    if shown == path {
        format!("{path:?}: not found in the build context")
    } else {
        format!("source {pattern:?}: {path:?} not found in the build context")
    }
}

impl ContextError {
    /// An I/O error on `path`, without the path `fs_err` already put into
    /// the message (the variant names it).
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContextError {
        let path = path.to_path_buf();
        move |source| ContextError::Io {
            op,
            path,
            source: plain(source),
        }
    }
}

/// `fs_err` wraps the OS error in one whose message repeats the path.
pub(crate) fn plain(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => e,
    }
}
