//! Go's notion of white space and trimming, which BuildKit's parser relies on.

/// Go's `unicode.IsSpace`: the Unicode White_Space property, which is what
/// Rust's `char::is_whitespace` implements as well.
pub(crate) fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `strings.TrimSpace`.
pub(crate) fn trim_space(s: &str) -> &str {
    s.trim_matches(is_go_space)
}

/// Go's `bytes.TrimRight(line, "\r\n")`: every trailing CR and LF.
pub(crate) fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

pub(crate) fn trim_leading_space(s: &str) -> &str {
    s.trim_start_matches(is_go_space)
}

/// A line that is a comment once leading white space is dropped.
pub(crate) fn is_comment(line: &str) -> bool {
    trim_leading_space(trim_newline(line)).starts_with('#')
}

/// Go's `strconv.Quote`, used by BuildKit's AST dump.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint` without Unicode category
/// tables: everything is printable except controls, separators other than
/// the ASCII space, the common format characters, private use and
/// non-characters. Only the AST dump depends on it.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(u, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e)
        || matches!(u, 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff)
        || matches!(u, 0xfff9..=0xfffb | 0xe000..=0xf8ff | 0xf0000..)
        || matches!(u, 0xfdd0..=0xfdef)
        || (u & 0xfffe) == 0xfffe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\n\t"), r#""\x00\n\t""#);
        assert_eq!(go_quote("♥ ☃"), "\"♥ ☃\"");
        assert_eq!(go_quote("\u{a0}\u{feff}"), r#""\u00a0\ufeff""#);
    }

    #[test]
    fn newline_trim_takes_every_cr_and_lf() {
        assert_eq!(trim_newline("abc\r\r\n"), "abc");
        assert_eq!(trim_newline("a\rb\n"), "a\rb");
    }
}
