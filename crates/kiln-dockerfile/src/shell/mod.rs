//! Shell-word expansion the way BuildKit's Dockerfile frontend does it
//! (`frontend/dockerfile/shell/lex.go`).
//!
//! A [`Lex`] takes one word of a Dockerfile instruction and an [`Env`], and
//!
//! * removes quotes (`'…'` keeps everything literally, `"…"` still expands `$`),
//! * handles the escape character (`\`, or `` ` `` after `# escape=``),
//! * expands `$VAR`, `${VAR}` and the operators `${VAR:-w}`, `${VAR-w}`,
//!   `${VAR:+w}`, `${VAR+w}`, `${VAR:?w}`, `${VAR?w}`, `${VAR#p}`, `${VAR##p}`,
//!   `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}` and `${VAR//p/r}`,
//! * and, for [`Lex::process_words`], splits the result into words on
//!   unquoted white space.
//!
//! It is not a shell: there is no command substitution, no arithmetic, no
//! globbing of file names, and positional/special parameters (`$1`, `$@`, …)
//! are looked up like any other name (and are normally unset).
//!
//! The behaviour, including its quirks, follows BuildKit's; where BuildKit
//! does something surprising the code says so and cites it.

mod env;
mod error;
mod lex;
mod pattern;
pub(crate) mod unicode;

pub use self::{
    env::{Env, EnvCase},
    error::{ExpandError, ExpandErrorKind},
    lex::{Expanded, Lex, MAX_NESTING},
};
