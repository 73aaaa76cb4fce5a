//! What one COPY/ADD takes from the context: its sources, `--exclude`
//! patterns and `--parents`, resolved into entries and a filter for the
//! entries below them.

use std::path::Path;

use kiln_dockerfile::dockerignore::{MatchInfo, PatternMatcher};

use super::BuildContext;
use super::error::ContextError;
use super::glob::has_wildcards;
use super::resolve::{ContextEntry, clean_source};
use super::stat::slash_text;

/// The context side of one COPY or ADD: its source paths (already expanded
/// by the Dockerfile frontend), `--exclude` patterns and `--parents`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    sources: Vec<String>,
    excludes: Vec<String>,
    parents: bool,
}

impl Selection {
    pub fn new<S: Into<String>>(sources: impl IntoIterator<Item = S>) -> Selection {
        Selection {
            sources: sources.into_iter().map(Into::into).collect(),
            ..Selection::default()
        }
    }

    /// `--exclude` patterns: `.dockerignore` syntax, matched against paths
    /// below each source (the source itself is never excluded, as in
    /// BuildKit's copier).
    pub fn excluding<S: Into<String>>(
        mut self,
        patterns: impl IntoIterator<Item = S>,
    ) -> Selection {
        self.excludes = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// `--parents`: each source is `pivot/./pattern` (no `/./`: the pivot
    /// is the root), and the entries below the pivot that the pattern
    /// matches are copied with their path below the pivot.
    pub fn parents(mut self, parents: bool) -> Selection {
        self.parents = parents;
        self
    }

    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    pub fn excludes(&self) -> &[String] {
        &self.excludes
    }

    pub fn has_parents(&self) -> bool {
        self.parents
    }
}

/// One source of a [`Selection`], resolved: the entries it names (in
/// order, possibly none for a wildcard) and the filter for what is below
/// them. Walk each entry with [`BuildContext::walk`].
#[derive(Debug, Clone)]
pub struct Selected {
    source: String,
    entries: Vec<ContextEntry>,
    filter: CopyFilter,
}

impl Selected {
    /// The source as the Dockerfile gave it.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn entries(&self) -> &[ContextEntry] {
        &self.entries
    }

    pub fn filter(&self) -> &CopyFilter {
        &self.filter
    }
}

/// Which entries below a copied source are copied: not those an `--exclude`
/// pattern matches, and with `--parents` only those the source's pattern
/// matches (directories on the way are created as needed). Paths are
/// matched relative to the copied source, with `.dockerignore` semantics
/// (`MatchesUsingParentResults`, `!` exceptions).
#[derive(Debug, Clone, Default)]
pub struct CopyFilter {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
}

/// What a [`CopyFilter`] says about one path below a source.
#[derive(Debug, Clone, Default)]
pub(crate) struct Choice {
    pub(crate) selected: bool,
    /// Excluded, and nothing below can be selected again.
    pub(crate) prune: bool,
    pub(crate) include: MatchInfo,
    pub(crate) exclude: MatchInfo,
}

impl CopyFilter {
    /// A filter that takes everything.
    pub fn all() -> CopyFilter {
        CopyFilter::default()
    }

    /// A filter that leaves out what the `--exclude` patterns match.
    pub fn excluding<S: AsRef<str>>(patterns: &[S]) -> Result<CopyFilter, ContextError> {
        let exclude =
            match patterns.is_empty() {
                true => None,
                false => Some(PatternMatcher::new(patterns).map_err(|source| {
                    ContextError::CopyPattern {
                        flag: "--exclude",
                        source,
                    }
                })?),
            };
        Ok(CopyFilter {
            include: None,
            exclude,
        })
    }

    /// Also keeps only what `pattern` matches (the part of a `--parents`
    /// source below its pivot).
    pub fn including(mut self, pattern: &str) -> Result<CopyFilter, ContextError> {
        let matcher =
            PatternMatcher::new(&[pattern]).map_err(|source| ContextError::CopyPattern {
                flag: "--parents",
                source,
            })?;
        self.include = Some(matcher);
        Ok(self)
    }

    /// Decides for `rel` (below the source, not empty) given its parent's
    /// choice, as fsutil's copier does.
    pub(crate) fn choose(&self, rel: &Path, parent: &Choice) -> Result<Choice, ContextError> {
        let text = slash_text(rel);
        let mut choice = Choice {
            selected: true,
            ..Choice::default()
        };
        if let Some(m) = &self.include {
            let (hit, info) = m
                .matches_using_parent_results(&text, &parent.include)
                .map_err(|source| ContextError::CopyPattern {
                    flag: "--parents",
                    source,
                })?;
            choice.selected = hit;
            choice.include = info;
        }
        if let Some(m) = &self.exclude {
            let (hit, info) = m
                .matches_using_parent_results(&text, &parent.exclude)
                .map_err(|source| ContextError::CopyPattern {
                    flag: "--exclude",
                    source,
                })?;
            if hit {
                choice.selected = false;
                choice.prune = m.can_skip_excluded_dir(&text);
            }
            choice.exclude = info;
        }
        Ok(choice)
    }
}

impl BuildContext {
    pub(crate) fn select_sources(
        &self,
        selection: &Selection,
    ) -> Result<Vec<Selected>, ContextError> {
        let base = CopyFilter::excluding(&selection.excludes)?;
        let mut out = Vec::with_capacity(selection.sources.len());
        for source in &selection.sources {
            if !selection.parents {
                out.push(Selected {
                    source: source.clone(),
                    entries: self.resolve_source(source)?,
                    filter: base.clone(),
                });
                continue;
            }
            // BuildKit cuts the source at its first `/./` before cleaning
            // it: the pivot is what is before, the root without one.
            let (pivot, pattern) = source.split_once("/./").unwrap_or(("/", source.as_str()));
            let pattern = clean_source(pattern).join("/");
            // Without wildcards the path must exist (BuildKit's
            // RequiredPaths); with them, matching nothing copies nothing.
            if !has_wildcards(pivot) && !has_wildcards(&pattern) {
                self.resolve_source(&format!("{pivot}/{pattern}"))
                    .map_err(|e| match e {
                        ContextError::NotFound { path, .. } => ContextError::NotFound {
                            pattern: source.clone(),
                            path,
                        },
                        other => other,
                    })?;
            }
            out.push(Selected {
                source: source.clone(),
                entries: self.resolve_source(pivot)?,
                filter: base.clone().including(&pattern)?,
            });
        }
        Ok(out)
    }
}
