//! The shell patterns of `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`.
//!
//! BuildKit turns the pattern into a regular expression (`*` → `.*` or `.*?`,
//! `?` → `.`, no bracket expressions) and matches with Go's `regexp`. Rust's
//! `regex` has the same RE2 syntax and leftmost-first semantics, so the same
//! translation gives the same matches.

use regex::Regex;

use super::error::ExpandErrorKind;
use super::unicode;

/// Translate a shell pattern into a regex (lex.go `convertShellPatternToRegex`).
///
/// `greedy` picks `.*` over `.*?` for `*`; `anchored` matches at the start
/// only.
fn to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, ExpandErrorKind> {
    let invalid = |reason: String| ExpandErrorKind::InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    // BuildKit reads the pattern with Go's text/scanner, which drops a byte
    // order mark at the very start.
    let mut chars = pattern
        .strip_prefix('\u{feff}')
        .unwrap_or(pattern)
        .chars()
        .peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `\}` and `\/` only keep the `}` or `/` from ending the
                // `${…}`; the backslash is not part of the pattern.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(escaped);
                    }
                    // Go prints the end of input (rune -1) with %c as U+FFFD.
                    other => {
                        let shown = other.unwrap_or(char::REPLACEMENT_CHARACTER);
                        return Err(invalid(format!("invalid escape '\\{shown}'")));
                    }
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(tok);
            }
            _ => out.push(tok),
        }
    }
    Regex::new(&out).map_err(|err| invalid(err.to_string()))
}

/// `${VAR#p}` / `${VAR##p}`: `value` without the shortest (longest when
/// `greedy`) prefix matching `pattern`.
pub(crate) fn trim_prefix(
    pattern: &str,
    value: &str,
    greedy: bool,
) -> Result<String, ExpandErrorKind> {
    let re = to_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_owned(),
        None => value.to_owned(),
    })
}

/// `${VAR%p}` / `${VAR%%p}`: `value` without the shortest (longest when
/// `greedy`) suffix matching `pattern`.
///
/// A regex cannot find the shortest match that ends at the end, so BuildKit
/// reverses both the pattern (keeping `\x` pairs in order) and the value and
/// trims a prefix instead.
pub(crate) fn trim_suffix(
    pattern: &str,
    value: &str,
    greedy: bool,
) -> Result<String, ExpandErrorKind> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverse a pattern but keep each `\x` escape as `\x` (lex.go
/// `reversePattern`): `a\*c` → `c\*a`. A lone trailing `\` is an ordinary
/// character here (and makes an invalid pattern afterwards).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        pieces.push(&chars[i..i + len]);
        i += len;
    }
    pieces.iter().rev().flat_map(|piece| piece.iter()).collect()
}

/// `${VAR/p/r}` / `${VAR//p/r}`: replace the first (or every) longest match
/// of `pattern` in `value`.
///
/// The two forms differ beyond "first" and "all", as in BuildKit: the single
/// replacement inserts `replacement` literally, while replacing all goes
/// through Go's `Regexp.ReplaceAllString`, which expands `$0`/`${0}` (the
/// match), `$$` and other `$name` references (empty) in the replacement.
pub(crate) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, ExpandErrorKind> {
    let re = to_regex(pattern, true, false)?;
    if !all {
        return Ok(match re.find(value) {
            Some(m) => format!("{}{replacement}{}", &value[..m.start()], &value[m.end()..]),
            None => value.to_owned(),
        });
    }
    Ok(replace_all_go(&re, value, replacement))
}

/// Go's `Regexp.ReplaceAllString`, including how it steps over empty
/// matches: an empty match right after the previous match is not replaced,
/// and the search always advances by at least one character.
fn replace_all_go(re: &Regex, src: &str, template: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut last_match_end = 0;
    let mut search_pos = 0;
    while search_pos <= src.len() {
        let Some(m) = re.find_at(src, search_pos) else {
            break;
        };
        out.push_str(&src[last_match_end..m.start()]);
        if m.end() > last_match_end || m.start() == 0 {
            expand_template(template, m.as_str(), &mut out);
        }
        last_match_end = m.end();
        let width = src[search_pos..].chars().next().map_or(0, char::len_utf8);
        if search_pos + width > m.end() {
            search_pos += width;
        } else if search_pos + 1 > m.end() {
            // Only at the end of the input, where there is no character left.
            search_pos += 1;
        } else {
            search_pos = m.end();
        }
    }
    out.push_str(&src[last_match_end..]);
    out
}

/// Go's `Regexp.Expand` for a regex whose only group is the whole match
/// (BuildKit's patterns escape every parenthesis).
fn expand_template(template: &str, matched: &str, out: &mut String) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match parse_reference(rest) {
            Some((name, after)) => {
                // Only group 0 exists; a number with a leading zero (`00`)
                // or any other name refers to nothing and expands to "".
                if name == "0" {
                    out.push_str(matched);
                }
                rest = after;
            }
            // Malformed: the `$` is kept as text.
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Go's `regexp.extract`: the name of a `name` or `{name}` reference (Unicode
/// letters, digits and `_`) and the text after it.
fn parse_reference(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let len: usize = body
        .chars()
        .take_while(|&ch| unicode::is_letter(ch) || unicode::is_digit(ch) || ch == '_')
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let (name, after) = body.split_at(len);
    if braced {
        let after = after.strip_prefix('}')?;
        Some((name, after))
    } else {
        Some((name, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_matches_buildkit() {
        let cases = [
            ("*", "^.*"),
            ("?", "^."),
            ("\\*", "^\\*"),
            (
                "(()[]{\\}^$.\\*\\?|\\\\",
                "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\",
            ),
        ];
        for (pattern, expected) in cases {
            let re = to_regex(pattern, true, true).unwrap();
            assert_eq!(re.as_str(), expected, "{pattern}");
        }
        for pattern in ["\\", "\\x", "\\\\\\"] {
            assert!(to_regex(pattern, true, true).is_err(), "{pattern}");
        }
    }

    #[test]
    fn invalid_escape_message() {
        let err = to_regex("a\\", true, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pattern (a\\) in substitution: invalid escape '\\\u{fffd}'"
        );
    }

    #[test]
    fn reverse_keeps_escapes() {
        let cases = [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
        ];
        for (pattern, expected) in cases {
            assert_eq!(reverse_pattern(pattern), expected, "{pattern}");
        }
    }

    #[test]
    fn replace_all_steps_like_go() {
        let re = Regex::new("a*").unwrap();
        assert_eq!(replace_all_go(&re, "baaac", "X"), "XbXcX");
        let re = Regex::new("").unwrap();
        assert_eq!(replace_all_go(&re, "한x", "-"), "-한-x-");
    }

    #[test]
    fn template_expansion() {
        let mut out = String::new();
        expand_template("<$0|${0}|$$|$00|$x|$|${0|$.>", "m", &mut out);
        assert_eq!(out, "<m|m|$|||$|${0|$.>");
    }
}
