//! The ignore file of a build, and what it hides.
//!
//! BuildKit does not filter at COPY time: it transfers the context with the
//! ignore patterns applied, and COPY sees only what was transferred. The
//! transfer walks the context top-down with `MatchesUsingParentResults`,
//! skips an excluded directory wholesale when no exception can bring
//! anything below it back, and sends an excluded directory it had to
//! descend into only when something below it is sent. [`Mark`] carries that
//! walk's state for one path, so every lookup here sees exactly the tree
//! the transfer would have sent.

use std::path::{Path, PathBuf};

use kiln_dockerfile::dockerignore::{
    MatchInfo, PatternError, PatternMatcher, ignore_file_candidates, read_ignore_file,
};

use super::error::{ContextError, plain};
use super::stat::{is_missing, slash_text};

/// The ignore patterns of a build and the file they came from.
#[derive(Debug, Clone)]
pub(crate) struct Ignore {
    matcher: PatternMatcher,
    file: Option<PathBuf>,
}

/// What the ignore patterns say about one context path, given its parents.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mark {
    /// The patterns that matched the path (for its children).
    info: MatchInfo,
    /// The path is excluded. An excluded directory is still sent when
    /// something below it is.
    pub(crate) excluded: bool,
    /// Nothing at or below the path is sent: it, or a directory above it,
    /// is excluded and no exception can reach below it.
    pub(crate) skipped: bool,
}

impl Ignore {
    /// Reads the ignore file that applies to `dockerfile` building
    /// `context`: `<Dockerfile name>.dockerignore` beside the Dockerfile,
    /// else `.dockerignore` in the context; the first one that exists is
    /// used even if it is empty. None at all ignores nothing.
    pub(crate) fn load(context: &Path, dockerfile: &Path) -> Result<Ignore, ContextError> {
        for candidate in ignore_file_candidates(dockerfile, context) {
            let bytes = match fs_err::read(&candidate) {
                Ok(bytes) => bytes,
                Err(e) if is_missing(&e) => continue,
                Err(e) => {
                    return Err(ContextError::Io {
                        op: "reading",
                        path: candidate,
                        source: plain(e),
                    });
                }
            };
            // Go reads the file as bytes; invalid UTF-8 only matters inside
            // a pattern, where U+FFFD will not match a name either.
            let text = String::from_utf8_lossy(&bytes);
            let parsed = read_ignore_file(&text).and_then(|p| PatternMatcher::new(&p));
            return match parsed {
                Ok(matcher) => Ok(Ignore {
                    matcher,
                    file: Some(candidate),
                }),
                Err(source) => Err(ContextError::IgnoreFile {
                    path: candidate,
                    source,
                }),
            };
        }
        Ok(Ignore {
            matcher: PatternMatcher::new::<&str>(&[]).expect("no patterns is valid"),
            file: None,
        })
    }

    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub(crate) fn matcher(&self) -> &PatternMatcher {
        &self.matcher
    }

    /// The mark of the context path `rel`, whose parent directory has the
    /// mark `parent` (the context root's is `Mark::default()`).
    pub(crate) fn child(&self, parent: &Mark, rel: &Path) -> Result<Mark, ContextError> {
        if parent.skipped {
            return Ok(Mark {
                info: MatchInfo::default(),
                excluded: true,
                skipped: true,
            });
        }
        if self.matcher.patterns().is_empty() {
            return Ok(Mark::default());
        }
        let text = slash_text(rel);
        let (excluded, info) = self
            .matcher
            .matches_using_parent_results(&text, &parent.info)
            .map_err(|e| self.error(e))?;
        Ok(Mark {
            skipped: excluded && self.matcher.can_skip_excluded_dir(&text),
            info,
            excluded,
        })
    }

    /// The mark of a context path, from the root down.
    pub(crate) fn mark(&self, rel: &Path) -> Result<Mark, ContextError> {
        let mut mark = Mark::default();
        let mut at = PathBuf::new();
        for component in rel.components() {
            at.push(component);
            mark = self.child(&mark, &at)?;
        }
        Ok(mark)
    }

    /// Whether the transfer sends the entry at `abs` (context path `rel`,
    /// with `mark`): anything not excluded; an excluded directory only if
    /// something below it is sent.
    pub(crate) fn sends(
        &self,
        abs: &Path,
        rel: &Path,
        mark: &Mark,
        is_dir: bool,
    ) -> Result<bool, ContextError> {
        if !mark.excluded {
            return Ok(true);
        }
        if !is_dir || mark.skipped {
            return Ok(false);
        }
        self.sends_below(abs, rel, mark)
    }

    /// Whether anything below the directory `abs` is sent: the first entry
    /// found that is not excluded decides, so this reads no more than the
    /// excluded part of the tree it has to.
    pub(crate) fn sends_below(
        &self,
        abs: &Path,
        rel: &Path,
        mark: &Mark,
    ) -> Result<bool, ContextError> {
        if mark.skipped {
            return Ok(false);
        }
        for name in read_names(abs)? {
            let child_rel = rel.join(&name);
            let child = self.child(mark, &child_rel)?;
            if !child.excluded {
                return Ok(true);
            }
            if child.skipped {
                continue;
            }
            let child_abs = abs.join(&name);
            let is_dir = match std::fs::symlink_metadata(&child_abs) {
                Ok(m) => m.is_dir(),
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(ContextError::io("inspecting", &child_abs)(e)),
            };
            if is_dir && self.sends_below(&child_abs, &child_rel, &child)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn error(&self, source: PatternError) -> ContextError {
        ContextError::IgnoreFile {
            path: self.file.clone().unwrap_or_default(),
            source,
        }
    }
}

/// The names in a directory, in byte order (the order of Go's
/// `filepath.Walk`, so of BuildKit's transfer and wildcard expansion).
pub(crate) fn read_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, ContextError> {
    let err = ContextError::io("reading directory", dir);
    let mut names = Vec::new();
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return Err(err(e)),
    };
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) => return Err(ContextError::io("reading directory", dir)(e)),
        }
    }
    names.sort_unstable_by(|a, b| {
        use std::os::unix::ffi::OsStrExt;
        a.as_bytes().cmp(b.as_bytes())
    });
    Ok(names)
}
