//! The output formats: text for people, JSON (stable, documented in
//! docs/LINT.md) and SARIF 2.1.0 for code-scanning tools.

use serde_json::{Value, json};

use crate::finding::Finding;
use crate::rules::RULES;

/// `FILE:LINE KLxxx severity: message`, one line per finding.
pub fn to_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{}:{} {} {}: {}\n",
                f.file,
                f.line,
                f.rule,
                f.severity.as_str(),
                f.message
            )
        })
        .collect()
}

/// An array of findings: `rule`, `severity`, `file`, `line`, `message`, `why`.
pub fn to_json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(findings).expect("findings serialise") + "\n"
}

/// A SARIF 2.1.0 log with one run: every rule in `tool.driver.rules`, one
/// result per finding.
pub fn to_sarif(findings: &[Finding]) -> String {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.title,
                "shortDescription": { "text": r.title },
                "fullDescription": { "text": r.why },
                "defaultConfiguration": { "level": level(r.severity) },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.rule,
                "ruleIndex": RULES.iter().position(|r| r.id == f.rule),
                "level": level(f.severity),
                "message": { "text": f.message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.file) },
                        "region": { "startLine": f.line },
                    }
                }],
            })
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "kiln lint",
                "informationUri": "https://github.com/kiln-build/kiln/blob/main/docs/LINT.md",
                "rules": rules,
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&log).expect("sarif serialises") + "\n"
}

/// A file name as a URI reference: bytes outside RFC 3986's unreserved and
/// sub-delimiter characters (and `/`, `:`, `@`) percent-encoded.
fn uri(file: &str) -> String {
    let mut out = String::with_capacity(file.len());
    for b in file.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@!$&'()*+,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// SARIF's level for a severity (`note` is SARIF's info).
fn level(severity: crate::Severity) -> &'static str {
    match severity {
        crate::Severity::Error => "error",
        crate::Severity::Warning => "warning",
        crate::Severity::Info | crate::Severity::Style => "note",
    }
}
