//! Parser directives: `# syntax=`, `# escape=`, `# check=` at the very top.

use super::Directive;

/// Reads directives until the first line that is not one.
///
/// Directives must precede everything else: the first line that is not a
/// well-formed `# name=value` with a known name (a blank line, an instruction,
/// an ordinary comment, an unknown directive) ends them, and later lines that
/// look like directives are plain comments.
#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    done: bool,
    pub(crate) found: Vec<Directive>,
}

const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// Go regexp `\s`: ASCII white space without `\v`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

impl DirectiveParser {
    /// Looks at one line (newline trimmed); returns the directive it holds.
    pub(crate) fn parse_line(
        &mut self,
        line: &str,
        line_no: usize,
    ) -> Result<Option<&Directive>, String> {
        if self.done {
            return Ok(None);
        }
        let Some((name, value)) = split_directive(line) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        self.found.push(Directive {
            name,
            value: value.to_string(),
            line: line_no,
        });
        Ok(self.found.last())
    }
}

/// `# name = value` → (name, value), by BuildKit's
/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` after the `#` and any spaces.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let body = line
        .strip_prefix('#')?
        .trim_start_matches(char::is_whitespace);
    let name_len = body
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(body.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = body.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    if rest.is_empty() {
        return None;
    }
    let value = rest.trim_start_matches(is_re_space);
    if value.is_empty() {
        // `(.+?)` must take one character: the regexp gives back the last
        // blank, so `# escape= ` has the value " ".
        return Some((name, &rest[rest.len() - 1..]));
    }
    Some((name, value.trim_end_matches(is_re_space)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_shapes() {
        assert_eq!(split_directive("#escape=`"), Some(("escape", "`")));
        assert_eq!(split_directive("# escape = ` "), Some(("escape", "`")));
        assert_eq!(
            split_directive("#   Syntax=docker/dockerfile:1"),
            Some(("Syntax", "docker/dockerfile:1"))
        );
        assert_eq!(split_directive("# escape= "), Some(("escape", " ")));
        assert_eq!(split_directive("# escape="), None);
        assert_eq!(split_directive("# esc ape=x"), None);
        assert_eq!(split_directive("escape=x"), None);
        assert_eq!(split_directive("# 1x=y"), None);
    }

    #[test]
    fn first_non_directive_ends_them() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# syntax=a", 1).unwrap().is_some());
        assert!(p.parse_line("# hello", 2).unwrap().is_none());
        assert!(p.parse_line("# escape=`", 3).unwrap().is_none());
        assert_eq!(p.found.len(), 1);
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let mut p = DirectiveParser::default();
        p.parse_line("# escape=`", 1).unwrap();
        assert_eq!(
            p.parse_line("# ESCAPE=\\", 2).unwrap_err(),
            "only one escape parser directive can be used"
        );
    }
}
