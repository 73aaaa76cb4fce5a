//! Go's `unicode` character classes, which decide what BuildKit's lexer
//! treats as a name character or as a word separator.
//!
//! Rust's `char::is_alphabetic`/`is_numeric` are wider than Go's
//! `unicode.IsLetter`/`IsDigit` (they include e.g. letter numbers like `Ⅻ`
//! and combining marks), so the general categories are looked up through the
//! regex crate's Unicode tables instead. ASCII, the common case, never
//! reaches a regex.

use std::sync::LazyLock;

use regex::Regex;

fn class(pattern: &str) -> Regex {
    // The patterns are fixed strings known to be valid.
    Regex::new(pattern).unwrap_or_else(|err| unreachable!("invalid class {pattern}: {err}"))
}

static LETTER: LazyLock<Regex> = LazyLock::new(|| class(r"\A\p{L}\z"));
static DIGIT: LazyLock<Regex> = LazyLock::new(|| class(r"\A\p{Nd}\z"));
static GRAPHIC: LazyLock<Regex> = LazyLock::new(|| class(r"\A[\p{L}\p{M}\p{N}\p{P}\p{S}]\z"));

fn matches(re: &Regex, ch: char) -> bool {
    let mut buf = [0; 4];
    re.is_match(ch.encode_utf8(&mut buf))
}

/// Go's `unicode.IsLetter`: general category L.
pub(crate) fn is_letter(ch: char) -> bool {
    if ch.is_ascii() {
        ch.is_ascii_alphabetic()
    } else {
        matches(&LETTER, ch)
    }
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(crate) fn is_digit(ch: char) -> bool {
    if ch.is_ascii() {
        ch.is_ascii_digit()
    } else {
        matches(&DIGIT, ch)
    }
}

/// Go's `unicode.IsSpace`. Both it and `char::is_whitespace` are the Unicode
/// `White_Space` property (Go lists the Latin-1 part by hand: `\t \n \v \f
/// \r`, space, U+0085, U+00A0), so the std method is exact.
pub(crate) fn is_space(ch: char) -> bool {
    ch.is_whitespace()
}

/// Go's `unicode.IsPrint`/`strconv.IsPrint`: categories L, M, N, P, S and the
/// ASCII space (other spaces are not printable).
pub(crate) fn is_print(ch: char) -> bool {
    if ch.is_ascii() {
        ch == ' ' || ch.is_ascii_graphic()
    } else {
        matches(&GRAPHIC, ch)
    }
}

/// Go's `strings.ToUpper` applied to one character: the *simple* upper-case
/// mapping. Rust only offers the full mapping (`ß` → `SS`); where that is more
/// than one character, Go keeps the character as it is for nearly all of
/// them, so we do too.
fn to_upper_simple(ch: char) -> char {
    let mut upper = ch.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(single), None) => single,
        _ => ch,
    }
}

/// Go's `strings.ToUpper`, which Windows BuildKit uses to normalise
/// environment variable names (`equal_env_windows.go`, `NormalizeEnvKey`).
pub(crate) fn to_upper(s: &str) -> String {
    s.chars().map(to_upper_simple).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goconv::quote as go_quote;

    #[test]
    fn classes_follow_go() {
        assert!(is_letter('한'));
        assert!(is_letter('é'));
        // Letter number (Nl): alphabetic for Rust, not a letter for Go.
        assert!(!is_letter('Ⅻ'));
        assert!(is_digit('٣'));
        // Superscript two is No, not Nd.
        assert!(!is_digit('²'));
        assert!(is_space('\u{a0}'));
        assert!(is_space('\u{3000}'));
        assert!(!is_print('\u{a0}'));
        assert!(is_print('한'));
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\x00\x7f"), r#""\n\t\x00\x7f""#);
        assert_eq!(go_quote("한\u{a0}\u{feff}"), r#""한\u00a0\ufeff""#);
        assert_eq!(go_quote("\u{e0001}"), r#""\U000e0001""#);
    }

    #[test]
    fn upper_is_simple_mapping() {
        assert_eq!(to_upper("pwd"), "PWD");
        assert_eq!(to_upper("straße"), "STRAßE");
    }
}
