//! `kiln lint`'s rules: Dockerfile steps that hang a build (a prompt, a
//! download without a timeout, a daemon left running), defeat its caches,
//! or do not reproduce (kiln's KLxxx); hadolint's rules that need no
//! ShellCheck (DLxxxx, as hadolint 2.15.1 has them); BuildKit's build
//! checks, by name. The rules and their reasons are in docs/LINT.md; a
//! hadolint [`Config`] and the file's own `# hadolint ignore=` and
//! `# check=` comments decide which are reported, and at which level.
//!
//! Pure: [`lint`] reads the text it is given with kiln's frontend
//! (`kiln-dockerfile`: exact lines, continuations, heredocs, `# escape=`)
//! and splits the shell of each `RUN` into the programs it runs (a small
//! splitter, not a shell: see `script.rs` for its limits). The formats
//! ([`to_text`], [`to_json`], [`to_sarif`]) are plain functions too.
//! [`fix_with`] makes the safe fixes of KL101, KL102, KL104, KL105 and
//! KL108 in the text, touching nothing else.
//!
//! The rules that need more than the text take it as data:
//! [`lint_in_context`] a [`Context`] (the ignore file, the heavy paths and
//! their sizes) for KL110 and CopyIgnoredFile, [`base_platform_finding`]
//! the platform a build's base image resolved to.

mod analyze;
mod config;
mod context;
mod finding;
mod fix;
mod report;
mod rules;
mod script;

pub use crate::analyze::{PlatformParts, base_platform_finding, lint, lint_in_context, lint_with};
pub use crate::config::{Config, ConfigError};
pub use crate::context::{Context, HEAVY_MIN_BYTES, HeavyKind, HeavyPath, IgnoreFile};
pub use crate::finding::{Finding, Origin, Rule, Severity};
pub use crate::fix::{Fixed, fix_with};
pub use crate::report::{to_json, to_sarif, to_text};
pub use crate::rules::RULES;

/// Why a Dockerfile could not be linted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LintError {
    /// kiln's frontend (and BuildKit) would refuse the file.
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
}
