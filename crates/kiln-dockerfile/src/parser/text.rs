//! Go's notion of white space and trimming, which BuildKit's parser relies on.

pub(crate) use crate::shell::unicode::is_space as is_go_space;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_trim_takes_every_cr_and_lf() {
        assert_eq!(trim_newline("abc\r\r\n"), "abc");
        assert_eq!(trim_newline("a\rb\n"), "a\rb");
    }
}
