//! The crate's error type.

/// A span of lines in a Dockerfile, 1-based and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub start_line: usize,
    pub end_line: usize,
}

/// Everything that can go wrong reading a Dockerfile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a Dockerfile BuildKit would accept.
    #[error("dockerfile parse error on line {}: {message}", .location.start_line)]
    Parse { message: String, location: Location },
}
