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
//! 4. [`plan`]: the stage graph of a build (`--target`, `--build-arg`, platform
//!    args) and the ARG/ENV scoping that decides what each instruction sees.
//!
//! [`dockerignore`] matches build-context paths with Docker's `.dockerignore` semantics.

mod error;
mod goconv;
mod gomatch;
mod parser;
mod suggest;

pub mod dockerignore;
/// Go's standard library where its exact behaviour shows in what BuildKit
/// accepts or says: one implementation each, for the frontend and the
/// engine.
pub mod go {
    pub use crate::goconv::{parse_duration, quote, ram_in_bytes};
    pub use crate::gomatch::{path_match, valid_path_pattern};
}
pub mod instructions;
pub mod plan;
pub mod shell;

pub use crate::error::{Error, Location};
pub use crate::parser::{
    Ast, CommandView, Directive, Heredoc, HeredocView, Node, Warning, chomp_heredoc_content, parse,
    parse_heredoc,
};
