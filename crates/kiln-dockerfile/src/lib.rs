//! kiln's Dockerfile frontend, with BuildKit's semantics. Pure: no I/O.
//!
//! Three passes, each usable and tested alone:
//!
//! 1. [`parse`]: text → syntax tree ([`Ast`] of [`Node`]s), exactly as BuildKit's
//!    `parser.Parse` splits it (directives, escapes, continuations, heredocs).
//! 2. [`instructions`]: syntax tree → typed instructions with validated flags.
//! 3. [`shell`] expansion of words (`$VAR`, `${VAR:-x}`, ...), the way BuildKit's
//!    lexer does it, applied by the stage lowering to the instructions BuildKit expands.
//!
//! [`dockerignore`] matches build-context paths with Docker's `.dockerignore` semantics.

mod error;
mod parser;

pub mod dockerignore;
pub mod instructions;
pub mod shell;

pub use crate::error::{Error, Location};
pub use crate::parser::{
    Ast, CommandView, Directive, Heredoc, HeredocView, Node, Warning, chomp_heredoc_content, parse,
    parse_heredoc,
};
