//! Why a word could not be expanded.

use crate::goconv::quote as go_quote;

/// A word that could not be expanded.
///
/// Displays as BuildKit's error does: `failed to process "<word>": <kind>`,
/// with the word quoted the way Go's `%q` quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {kind}", go_quote(.word))]
#[non_exhaustive]
pub struct ExpandError {
    /// The whole word given to the lexer.
    pub word: String,
    /// What went wrong in it.
    pub kind: ExpandErrorKind,
}

/// What went wrong while expanding a word. The messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandErrorKind {
    /// `'…` without its closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// `"…` without its closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// `${…` that never closes. (A bare `${NAME` with nothing after the name
    /// is reported by BuildKit as an unsupported modifier instead.)
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${NAME/pattern` without the `/` that starts the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:…}`, `${{…}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// An operator BuildKit does not implement, e.g. `${NAME:=x}`, `${NAME:#x}`
    /// or `${NAME.}`. `modifier` is what followed the name (`:=`, `:#`, `.`);
    /// the end of the word shows as U+FFFD, as in BuildKit.
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier { modifier: String },
    /// `${NAME?message}` or `${NAME:?message}` with `NAME` unset. Without a
    /// message, the message is "is not allowed to be unset".
    #[error("{name}: {message}")]
    Unset { name: String, message: String },
    /// `${NAME:?message}` with `NAME` set but empty. Without a message, the
    /// message is "is not allowed to be empty".
    #[error("{name}: {message}")]
    Empty { name: String, message: String },
    /// The pattern of `${NAME#p}`, `${NAME%p}` or `${NAME/p/r}` is not valid,
    /// e.g. `\` followed by something other than `*`, `?`, `\`, `}` or `/`.
    /// For `%`/`%%` the pattern shows reversed, as in BuildKit (it reverses
    /// the pattern to search from the right).
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// Substitutions nested deeper than [`MAX_NESTING`](super::MAX_NESTING)
    /// levels. BuildKit has no such limit (Go's stacks grow); kiln has it so
    /// that no input can overflow the stack.
    #[error("substitutions nested deeper than {limit} levels")]
    TooDeep { limit: usize },
}
