//! The trees COPY and ADD read and write: kiln-fs's [`Root`] (lookups that
//! cannot leave the tree, BuildKit's `fs.RootPath` for naming), with errors
//! as these operations report them: the path as the build sees it, inside
//! the tree it names.

use std::path::Path;

use rustix::io::Errno;

pub(crate) use kiln_fs::path::{components, display, join, split};
pub(crate) use kiln_fs::{NewDir, Root, chown_at, is_dir, names, stamps, stat_at};

use super::error::{CopyError, errno};

/// Opens the tree at `path` (itself the caller's: it may be a symlink).
pub(crate) fn open(path: &Path) -> Result<Root, CopyError> {
    Root::open(path).map_err(|e| CopyError::Io {
        op: "opening",
        root: path.to_path_buf(),
        path: "/".into(),
        source: errno(e),
    })
}

/// The directory at the resolved path `rel` of `parent`, as a tree of its
/// own: lookups below it cannot leave it.
pub(crate) fn subtree(parent: &Root, rel: &[u8]) -> Result<Root, CopyError> {
    parent
        .subtree(rel)
        .map_err(|e| parent.err("opening", rel, e))
}

/// Errors on a path inside a tree.
pub(crate) trait TreeError {
    /// An I/O error on `rel` inside this tree.
    fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> CopyError;
}

impl TreeError for Root {
    fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> CopyError {
        CopyError::Io {
            op,
            root: self.path().to_path_buf(),
            path: display(rel),
            source: errno(e),
        }
    }
}
