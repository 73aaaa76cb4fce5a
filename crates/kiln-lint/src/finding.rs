//! What a rule reports, and the rule table.

use serde::Serialize;

/// How bad a finding is. Ordered: `Style < Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// How the file is written (hadolint's `style`).
    Style,
    /// Style, or a cost worth knowing about.
    Info,
    /// Defeats a cache or makes builds differ from run to run.
    Warning,
    /// Can hang a build (a prompt, a network read without a timeout, a
    /// process left running).
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Style => "style",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One rule: its id, severity, a title and why it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    /// A short name of what it finds.
    pub title: &'static str,
    /// Why it matters, in a sentence.
    pub why: &'static str,
    /// Whose rule it is: its id, severity and meaning are that tool's.
    pub origin: Origin,
    /// Reported unless turned off; a rule that is off (hadolint's rules
    /// at level `ignore`, BuildKit's experimental checks) reports only when
    /// a configuration turns it on.
    pub on_by_default: bool,
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// kiln's own (`KLxxx`).
    Kiln,
    /// hadolint's rules that need no ShellCheck (`DLxxxx`), with
    /// hadolint 2.15.1's ids and default severities.
    Hadolint,
    /// BuildKit's build checks (`StageNameCasing`, ...), by their names.
    Buildkit,
}

/// One problem in one Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's id (`KL101`).
    pub rule: &'static str,
    pub severity: Severity,
    /// The file as the caller named it.
    pub file: String,
    /// The 1-based line of the command or instruction at fault.
    pub line: usize,
    pub message: String,
    pub why: &'static str,
}
