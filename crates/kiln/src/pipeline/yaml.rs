//! A YAML tree and its block-style writer: just what a pipeline needs
//! (maps in a fixed key order, sequences, strings, integers, booleans).
//!
//! Writing YAML is the easy half, so kiln does not take a YAML crate for
//! it. The one hazard is a string read back as something else, so a string
//! is written plain only when it cannot be: no indicator at its start,
//! nothing that looks like a number, boolean or null in YAML 1.1 or 1.2
//! (`yes`, `on`, `1e3`, `.5`, `~`), no `: ` or ` #` inside; otherwise in
//! double quotes with escapes. A script of several lines is a literal
//! block (`|`), as a person would write it.

use std::fmt::Write as _;

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Yaml {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Yaml>),
    /// Keys in the order written.
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    /// A map from `(key, value)` pairs, in that order.
    pub(crate) fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Yaml)>) -> Yaml {
        Yaml::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub(crate) fn str(s: impl Into<String>) -> Yaml {
        Yaml::Str(s.into())
    }

    /// A sequence of strings.
    pub(crate) fn strs<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Yaml {
        Yaml::Seq(items.into_iter().map(|s| Yaml::Str(s.into())).collect())
    }

    /// The same value as JSON (which is YAML too): for `--format json` and
    /// for tests that look at a pipeline's structure.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Int(n) => Value::from(*n),
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Yaml::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The document as block-style YAML, ending in a newline.
    pub(crate) fn to_yaml(&self) -> String {
        let mut out = String::new();
        match self {
            Yaml::Map(entries) if !entries.is_empty() => write_map(&mut out, entries, 0),
            Yaml::Seq(items) if !items.is_empty() => write_seq(&mut out, items, 0),
            scalar => {
                write_inline(&mut out, scalar, 0);
                out.push('\n');
            }
        }
        out
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Whether a value is written on its key's (or dash's) line.
fn is_inline(value: &Yaml) -> bool {
    match value {
        Yaml::Seq(items) => items.is_empty(),
        Yaml::Map(entries) => entries.is_empty(),
        _ => true,
    }
}

fn write_map(out: &mut String, entries: &[(String, Yaml)], indent: usize) {
    for (key, value) in entries {
        pad(out, indent);
        out.push_str(&scalar(key));
        out.push(':');
        write_value(out, value, indent);
    }
}

fn write_seq(out: &mut String, items: &[Yaml], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            // `- key: value` with the map's other keys under the first.
            Yaml::Map(entries) if !entries.is_empty() => {
                let mut inner = String::new();
                write_map(&mut inner, entries, indent + 2);
                out.push(' ');
                out.push_str(&inner[indent + 2..]);
            }
            _ => write_value(out, item, indent),
        }
    }
}

/// A value after `key:` or `-` at `indent`, through its last newline.
fn write_value(out: &mut String, value: &Yaml, indent: usize) {
    if is_inline(value) {
        out.push(' ');
        write_inline(out, value, indent + 2);
        out.push('\n');
        return;
    }
    out.push('\n');
    match value {
        Yaml::Map(entries) => write_map(out, entries, indent + 2),
        Yaml::Seq(items) => write_seq(out, items, indent + 2),
        _ => unreachable!("scalars are inline"),
    }
}

/// A scalar or an empty collection; a literal block's lines at `indent`.
fn write_inline(out: &mut String, value: &Yaml, indent: usize) {
    match value {
        Yaml::Str(s) if literal_block(s) => {
            let body = s.trim_end_matches('\n');
            let trailing = s.len() - body.len();
            out.push('|');
            match trailing {
                0 => out.push('-'),
                1 => {}
                _ => out.push('+'),
            }
            for line in body.split('\n') {
                out.push('\n');
                if !line.is_empty() {
                    pad(out, indent);
                    out.push_str(line);
                }
            }
            // The caller ends the last line; `|+` keeps the empty lines after it.
            for _ in 1..trailing {
                out.push('\n');
            }
        }
        Yaml::Str(s) => out.push_str(&scalar(s)),
        Yaml::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Yaml::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Yaml::Seq(_) => out.push_str("[]"),
        Yaml::Map(_) => out.push_str("{}"),
    }
}

/// Whether a string is written as a literal block: several lines, nothing
/// a block cannot carry (a first line starting with a blank would need an
/// indentation indicator; trailing blanks and control characters are lost
/// or refused), and not only newlines.
fn literal_block(s: &str) -> bool {
    s.trim_end_matches('\n').contains('\n')
        && !s.starts_with([' ', '\t'])
        && s.lines().all(|l| !l.ends_with([' ', '\t']))
        && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// A one-line string: plain where it reads back as the same string, else
/// double-quoted.
fn scalar(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

fn plain_is_safe(s: &str) -> bool {
    const RESERVED: &[&str] = &[
        "true", "false", "yes", "no", "y", "n", "on", "off", "null", "~", "<<",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Letters, `/`, `$` and `_` start nothing special; a digit, sign or dot
    // may start a number (`1e3`, `-1`, `.5`, `0x1f`, `1_000`).
    if !(first.is_ascii_alphabetic() || matches!(first, '/' | '$' | '_')) {
        return false;
    }
    if RESERVED.iter().any(|r| s.eq_ignore_ascii_case(r)) || s.eq_ignore_ascii_case(".inf") {
        return false;
    }
    s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                ' ' | '_'
                    | '.'
                    | '/'
                    | ':'
                    | '='
                    | '@'
                    | '$'
                    | '-'
                    | '+'
                    | '*'
                    | '('
                    | ')'
                    | '{'
                    | '}'
            )
    }) && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_would_read_back_as_something_else_are_quoted() {
        for s in [
            "", "true", "No", "on", "OFF", "y", "null", "~", "1", "1.5", "-1", ".5", "0x1f", "1e3",
            "1_000", "- x", "a: b", "a #b", "x:", "#c", "*a", "&a", "!t", "|", ">", "'q'", "\"q\"",
            "%x", "@x", "`x`", "[a]", "{a}", ",", "? x", " lead", "trail ", "a\tb", ".inf", "<<",
        ] {
            let written = scalar(s);
            assert!(written.starts_with('"'), "{s:?} written plain as {written}");
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        for s in [
            "ubuntu-latest",
            "linux/arm64",
            "actions/checkout@v4",
            "${{ matrix.platform }}",
            "reg.example:5000/app",
            "digests-*",
            "$CI_COMMIT_SHA",
            "Build (linux/amd64)",
            "a=b",
        ] {
            assert_eq!(scalar(s), s);
        }
    }

    #[test]
    fn double_quotes_escape_what_they_must() {
        assert_eq!(double_quoted("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn a_document_in_block_style() {
        let doc = Yaml::map([
            ("name", Yaml::str("ci")),
            ("on", Yaml::map([("push", Yaml::map::<&str>([]))])),
            (
                "steps",
                Yaml::Seq(vec![
                    Yaml::map([
                        ("uses", Yaml::str("actions/checkout@v4")),
                        ("with", Yaml::map([("fetch-depth", Yaml::Int(1))])),
                    ]),
                    Yaml::map([("run", Yaml::str("set -e\necho hi\n"))]),
                    Yaml::map([("run", Yaml::str("a\nb"))]),
                    Yaml::strs(["x", "y"]),
                ]),
            ),
            ("empty", Yaml::Seq(vec![])),
            ("ok", Yaml::Bool(true)),
        ]);
        assert_eq!(
            doc.to_yaml(),
            "\
name: ci
\"on\":
  push: {}
steps:
  - uses: actions/checkout@v4
    with:
      fetch-depth: 1
  - run: |
      set -e
      echo hi
  - run: |-
      a
      b
  -
    - x
    - \"y\"
empty: []
ok: true
"
        );
    }

    #[test]
    fn literal_blocks_keep_empty_lines_and_trailing_newlines() {
        let doc = Yaml::map([("a", Yaml::str("x\n\ny\n\n"))]);
        assert_eq!(doc.to_yaml(), "a: |+\n  x\n\n  y\n\n");
        // A first line starting with a blank would need an indentation
        // indicator: quoted instead.
        let doc = Yaml::map([("a", Yaml::str("  x\ny\n"))]);
        assert_eq!(doc.to_yaml(), "a: \"  x\\ny\\n\"\n");
    }
}
