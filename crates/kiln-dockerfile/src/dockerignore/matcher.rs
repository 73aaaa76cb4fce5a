//! The ordered pattern list, and the two ways of matching a path against it
//! that BuildKit uses: looking at the path's parents directly, or walking
//! down with what was found for each directory.

use std::fmt;

use regex::Regex;

use super::compile::{Compiled, compile};
use super::error::PatternError;
use super::goregex;
use super::path::{ancestors, clean_path, dir};

/// The patterns of a `.dockerignore` file, in order, ready to match
/// build-context paths (`moby/patternmatcher`'s `PatternMatcher`).
///
/// Paths are relative to the context root, `/`-separated, without a leading
/// `./` (`src/main.rs`). They are used as given, not cleaned.
///
/// A path is excluded when the *last* pattern that matches it (or one of its
/// parent directories) is an inclusion; a `!` pattern that matches brings it
/// back. Matching never touches the file system, and a matcher is immutable,
/// so it can be shared between threads.
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
    /// No `!` pattern has a wildcard once a trailing `/**` or `/*` is
    /// stripped: BuildKit's condition for skipping excluded directories.
    prefix_only_exclusions: bool,
}

/// One pattern of a [`PatternMatcher`].
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern as given (trimmed), for messages.
    source: String,
    /// Trimmed, cleaned, and without its `!`.
    cleaned: String,
    exclusion: bool,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact,
    Prefix,
    Suffix,
    Regex(Regex),
    /// Accepted by the glob syntax check but not by Go's regexp compiler:
    /// every attempt to match with it is an error.
    Invalid,
}

/// Which patterns matched a directory, kept by a walker for the entries
/// below it ([`PatternMatcher::matches_using_parent_results`]).
///
/// The default value means "nothing known about the parents": matching then
/// looks at the parent directories itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// Endings BuildKit strips from an exception before deciding whether it is
/// a plain prefix (in this order, one each).
const TRAILING_GLOBS: [&str; 2] = ["/**", "/*"];

/// Characters that make BuildKit treat an exception as a wildcard one.
const WILDCARD_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];

impl PatternMatcher {
    /// Reads an ordered pattern list, as `patternmatcher.New` does: each
    /// pattern is trimmed (empty ones are dropped), cleaned like a path
    /// ([`clean_path`]), split into its `!` and the rest, and checked with
    /// Go's glob syntax.
    ///
    /// A leading `/` is *not* removed here (only [`read_ignore_file`] does
    /// that), so `/docs` given directly matches no relative path.
    ///
    /// [`read_ignore_file`]: super::read_ignore_file
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, PatternError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for source in patterns {
            let source = source.as_ref().trim();
            if source.is_empty() {
                continue;
            }
            let cleaned = clean_path(source);
            let (exclusion, body) = match cleaned.strip_prefix('!') {
                Some("") => {
                    return Err(PatternError::IllegalExclusion {
                        pattern: source.to_owned(),
                    });
                }
                // The rest is not trimmed or cleaned again: upstream keeps
                // `! /x` as the pattern ` /x`.
                Some(rest) => (true, rest),
                None => (false, cleaned.as_str()),
            };
            if !crate::gomatch::valid_path_pattern(body) {
                return Err(PatternError::BadPattern {
                    pattern: source.to_owned(),
                });
            }
            compiled.push(Pattern {
                source: source.to_owned(),
                cleaned: body.to_owned(),
                exclusion,
                matcher: Matcher::new(body),
            });
        }
        let exclusions = compiled.iter().any(|p| p.exclusion);
        let prefix_only_exclusions = compiled
            .iter()
            .filter(|p| p.exclusion)
            .all(|p| !without_trailing_glob(&p.cleaned).contains(WILDCARD_CHARS));
        Ok(PatternMatcher {
            patterns: compiled,
            exclusions,
            prefix_only_exclusions,
        })
    }

    /// Whether `path` is excluded: the last pattern that matches `path` or
    /// one of its parent directories decides (`MatchesOrParentMatches`).
    ///
    /// So `docs` excludes `docs/a/b.md`, and `docs` followed by
    /// `!docs/README.md` keeps `docs/README.md`. Patterns that cannot change
    /// the outcome are not evaluated, so a malformed pattern only fails when
    /// it is reached.
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, PatternError> {
        let parent = dir(path);
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot add to a match, an exception cannot undo
            // a non-match.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path)?;
            if !hit && parent != "." {
                hit = pattern.matches_any_ancestor(&parent);
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Like [`matches_or_parent_matches`](Self::matches_or_parent_matches),
    /// for a walker that visits a directory before its entries and passes
    /// each entry the [`MatchInfo`] returned for its directory
    /// (`MatchesUsingParentResults`, which BuildKit's context transfer uses).
    /// With `MatchInfo::default()` the parent directories are looked at here.
    ///
    /// A pattern that matched the directory counts as matching every entry
    /// below it, whether or not it was needed for the directory's result.
    /// This is upstream's optimisation and it is reproduced as is, including
    /// where it differs from `matches_or_parent_matches`: with
    /// `["a", "!a/b", "a"]`, `a/b/c` is excluded by the latter but kept when
    /// walked, because the second `a` was not evaluated for `a`.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let inherited = &parent.parent_matched;
        if !inherited.is_empty() && inherited.len() != self.patterns.len() {
            return Err(PatternError::MatchInfoMismatch {
                expected: self.patterns.len(),
                got: inherited.len(),
            });
        }
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = inherited.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(path)?;
                if !hit && inherited.is_empty() {
                    let parent = dir(path);
                    if parent != "." {
                        hit = pattern.matches_any_ancestor(&parent);
                    }
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, info))
    }

    /// Whether any pattern is an exception (`!`). Without one, a walker can
    /// skip an excluded directory wholesale: nothing below it can come back.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether a walker that found the directory `dir` excluded may skip
    /// everything below it, by BuildKit's rule (`tonistiigi/fsutil`'s filter):
    /// yes when there are no exceptions; no when any exception has a wildcard
    /// (`!**/*.md` could re-include something at any depth); otherwise no
    /// only when an exception lies at or below `dir` (`!docs/README.md`
    /// under `docs`). A trailing `/**` or `/*` of an exception is ignored for
    /// this. When the walker descends, the excluded directory itself is only
    /// sent if something below it is.
    ///
    /// The answer is only meaningful for a directory that is excluded.
    pub fn can_skip_excluded_dir(&self, dir: &str) -> bool {
        if !self.exclusions {
            return true;
        }
        if !self.prefix_only_exclusions {
            return false;
        }
        !self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            let stripped = without_trailing_glob(&p.cleaned);
            // `pattern/` starts with `dir/`: the exception is `dir` itself
            // or lies below it.
            stripped.len() >= dir.len()
                && stripped.starts_with(dir)
                && (stripped.len() == dir.len() || stripped[dir.len()..].starts_with('/'))
        })
    }

    /// The patterns, in order, without the empty ones.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

/// A pattern without one trailing `/**` and then one trailing `/*`, as
/// BuildKit strips them before deciding whether an exception is a prefix.
fn without_trailing_glob(pattern: &str) -> &str {
    TRAILING_GLOBS
        .iter()
        .fold(pattern, |p, glob| p.strip_suffix(glob).unwrap_or(p))
}

impl Pattern {
    /// The pattern as compared with paths: trimmed, cleaned, and without
    /// its `!` (upstream's `Pattern.String()`).
    pub fn cleaned(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is an exception (`!pattern`), which re-includes what it
    /// matches.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Matches the path itself (upstream's `Pattern.match`).
    fn matches(&self, path: &str) -> Result<bool, PatternError> {
        let pattern = self.cleaned.as_bytes();
        let path_bytes = path.as_bytes();
        Ok(match &self.matcher {
            Matcher::Exact => path == self.cleaned,
            // Byte slices: upstream cuts the pattern by bytes, and after a
            // leading byte order mark the cut falls inside a character.
            // Compilation chose these kinds for a trailing or leading `**`,
            // so the two bytes cut off are there.
            Matcher::Prefix => path_bytes.starts_with(&pattern[..pattern.len().saturating_sub(2)]),
            Matcher::Suffix => {
                let suffix = pattern.get(2..).unwrap_or_default();
                // `**/foo` also matches `foo` itself.
                path_bytes.ends_with(suffix)
                    || suffix.first() == Some(&b'/') && path_bytes == &suffix[1..]
            }
            Matcher::Regex(re) => re.is_match(path),
            Matcher::Invalid => {
                return Err(PatternError::BadPattern {
                    pattern: self.source.clone(),
                });
            }
        })
    }

    /// Whether the pattern matches one of the directories `parent` consists
    /// of. Errors count as no match here, as upstream ignores them (the same
    /// pattern has already failed on the path itself by then).
    fn matches_any_ancestor(&self, parent: &str) -> bool {
        ancestors(parent).any(|ancestor| self.matches(ancestor).unwrap_or(false))
    }
}

impl Matcher {
    fn new(cleaned: &str) -> Matcher {
        match compile(cleaned) {
            Compiled::Exact => Matcher::Exact,
            Compiled::Prefix => Matcher::Prefix,
            Compiled::Suffix => Matcher::Suffix,
            Compiled::Regex(go) => goregex::translate(&go)
                .ok()
                .and_then(|rust| Regex::new(&rust).ok())
                .map_or(Matcher::Invalid, Matcher::Regex),
        }
    }
}

impl fmt::Display for Pattern {
    /// The pattern as a `.dockerignore` line: `!` and the cleaned pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(&self.cleaned)
    }
}
