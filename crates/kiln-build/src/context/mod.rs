//! The build context: the directory a build copies from, seen as BuildKit
//! sees it after the context transfer, and the content digests of what
//! each COPY/ADD takes from it.
//!
//! kiln reads the context in place instead of transferring it, so this
//! module reproduces what the transfer would have left for the build:
//!
//! * **Ignore file.** `<Dockerfile name>.dockerignore` beside the
//!   Dockerfile if it exists, else the context's `.dockerignore`
//!   (BuildKit's order). What it excludes does not exist for the build: a
//!   source naming only ignored files is "not found", a wildcard does not
//!   match them, a directory walk skips them. An excluded directory with a
//!   `!` exception below it is still looked into, and appears only if
//!   something below it does.
//! * **The Dockerfile and the ignore file themselves** are read from disk
//!   whatever the patterns say (BuildKit fetches them separately, the
//!   classic builder sends them and removes them after reading), so a
//!   Dockerfile can be built even if it is ignored; but COPY sees them only
//!   if they are not ignored, as in both builders.
//! * **Sources** ([`BuildContext::resolve`]): cleaned inside the context
//!   (`/x` and `../../x` are `x`), symlinks on the way and at the end
//!   followed as in a chroot at the context root, wildcards per path
//!   component with Go's `filepath.Match` syntax. A wildcard that matches
//!   nothing names nothing (BuildKit's `AllowEmptyWildcard`); a path
//!   without one must exist.
//! * **Walks** ([`BuildContext::walk`]): below a source nothing is
//!   followed; `--exclude` and `--parents` patterns apply to paths below
//!   the source, never to the source itself (fsutil's copier).
//! * **Digests** ([`BuildContext::digest`]): a versioned encoding of every
//!   entry a COPY takes (path, kind, mode, symlink target, xattrs, content
//!   SHA-256), see [`CONTEXT_DIGEST_VERSION`] for the format. File
//!   contents are hashed once and remembered by inode, size, mtime and
//!   ctime in a [`HashMemo`], so an unchanged context is not read again,
//!   by this build or the next.

mod digest;
mod error;
pub(crate) mod glob;
mod ignore;
mod memo;
mod resolve;
mod select;
mod stat;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use kiln_dockerfile::dockerignore::PatternMatcher;
use kiln_image::Digest;

pub use self::digest::CONTEXT_DIGEST_VERSION;
pub use self::error::ContextError;
pub use self::memo::HashMemo;
pub use self::resolve::ContextEntry;
pub(crate) use self::select::Selected;
pub use self::select::{CopyFilter, Selection};
pub use self::stat::EntryKind;
pub(crate) use self::walk::Walk;

use self::ignore::Ignore;

/// A build context directory, with the ignore file of the build applied.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    dockerfile: PathBuf,
    ignore: Ignore,
}

impl BuildContext {
    /// Opens the context `dir` for a build of `dockerfile` (a path as the
    /// user gave it, inside the context or not), reading the ignore file
    /// that applies. The Dockerfile itself is not read.
    pub fn open(dir: &Path, dockerfile: &Path) -> Result<BuildContext, ContextError> {
        // Symlinks are resolved inside the real directory, so the root
        // must be free of them itself.
        let root =
            std::fs::canonicalize(dir).map_err(ContextError::io("opening build context", dir))?;
        if !root.is_dir() {
            return Err(ContextError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let ignore = Ignore::load(dir, dockerfile)?;
        Ok(BuildContext {
            root,
            dockerfile: dockerfile.to_path_buf(),
            ignore,
        })
    }

    /// The context directory, with symlinks resolved.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile the context was opened for.
    pub fn dockerfile(&self) -> &Path {
        &self.dockerfile
    }

    /// The ignore file in use, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.ignore.file()
    }

    /// Its patterns (none without an ignore file).
    pub fn ignore_patterns(&self) -> &PatternMatcher {
        self.ignore.matcher()
    }

    /// Whether the ignore file hides `path` (relative to the context root,
    /// symlinks not resolved) from the build: for a lint that warns about
    /// copying an ignored file.
    pub fn is_ignored(&self, path: &str) -> Result<bool, ContextError> {
        self.hides(path)
    }

    /// The entries a COPY/ADD source path names, in order. A path without
    /// wildcards names one entry or fails with [`ContextError::NotFound`];
    /// a wildcard names what it matches, possibly nothing.
    pub fn resolve(&self, source: &str) -> Result<Vec<ContextEntry>, ContextError> {
        self.resolve_source(source)
    }

    /// Resolves every source of a COPY/ADD, with its `--exclude` and
    /// `--parents` filter: what the COPY executor walks and copies, and
    /// what [`digest_selection`](Self::digest_selection) describes.
    pub fn select(&self, selection: &Selection) -> Result<Vec<Selected>, ContextError> {
        self.select_sources(selection)
    }

    /// Everything a COPY takes from `entry` (an entry of this context), in
    /// order: the entry, then what is below it that the context transfer
    /// sends and `filter` selects, depth first, names in byte order, a
    /// directory before its contents. Symlinks below the entry are entries,
    /// not followed.
    pub fn walk<'a>(&'a self, entry: &'a ContextEntry, filter: &'a CopyFilter) -> Walk<'a> {
        Walk::new(self, entry, filter, None)
    }

    pub(crate) fn walk_counted<'a>(
        &'a self,
        entry: &'a ContextEntry,
        filter: &'a CopyFilter,
        walked: &'a AtomicU64,
    ) -> Walk<'a> {
        Walk::new(self, entry, filter, Some(walked))
    }

    /// The content digest of what `COPY --exclude=<excludes> <sources>`
    /// takes from the context (see [`CONTEXT_DIGEST_VERSION`] for what it
    /// covers and how), with file contents hashed through `memo`.
    pub fn digest(
        &self,
        sources: &[String],
        excludes: &[String],
        memo: &HashMemo,
    ) -> Result<Digest, ContextError> {
        let selection = Selection::new(sources.iter().cloned()).excluding(excludes.iter().cloned());
        self.digest_selection(&selection, memo)
    }

    /// [`digest`](Self::digest) for any [`Selection`] (`--parents` too).
    pub fn digest_selection(
        &self,
        selection: &Selection,
        memo: &HashMemo,
    ) -> Result<Digest, ContextError> {
        digest::digest(self, selection, memo)
    }
}
