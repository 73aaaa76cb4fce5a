//! What can go wrong with `.dockerignore` patterns.

/// A pattern list Docker would reject, or a matcher used wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// A `!` with nothing after it. Docker rejects the whole list.
    #[error("illegal exclusion pattern {pattern:?}: `!` must be followed by a pattern")]
    IllegalExclusion {
        /// The pattern as given.
        pattern: String,
    },
    /// Go's `filepath.ErrBadPattern`: an unclosed or empty `[...]`, a
    /// trailing `\`, a backwards range, an unknown escape. Most are found
    /// when the list is read; a few only when the pattern is first used to
    /// match (as upstream, e.g. `[Local-Only]`, whose `l-O` range is only
    /// rejected by Go's regexp compiler), and then on every use.
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
    },
    /// A [`MatchInfo`](super::MatchInfo) from another matcher was passed in.
    #[error("parent match info holds {got} results, but the matcher has {expected} patterns")]
    MatchInfoMismatch {
        /// The number of patterns in the matcher.
        expected: usize,
        /// The number of results in the match info.
        got: usize,
    },
    /// A line of an ignore file too long for Docker's line reader (Go's
    /// `bufio.Scanner` stops at 64 KiB), which makes Docker reject the file.
    #[error("line {line} of the ignore file is longer than {max} bytes", max = super::ignorefile::MAX_LINE - 1)]
    LineTooLong {
        /// The 1-based line number.
        line: usize,
    },
}
