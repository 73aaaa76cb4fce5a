//! How upstream turns one cleaned pattern into a matcher (`Pattern.compile`
//! in moby/patternmatcher): most patterns become a regular expression in Go's
//! syntax, and a few shapes get a cheaper string comparison.
//!
//! The regular expression is produced here exactly as Go produces it, text
//! for text, and then read with Go's rules by [`super::goregex`]: the glob
//! syntax is not translated to a regex cleanly upstream (a `[` is passed
//! through, an escape `\x` becomes the regex escape `\x`, `^`, `|`, `{` and
//! `}` are not escaped),
//! so only reading the same text the way Go's `regexp` does gives the same
//! answers and the same errors.

/// What one pattern is compared with a path by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Compiled {
    /// No wildcard, escape or class: the path must equal the pattern.
    Exact,
    /// Only a trailing `**` (`dir/**`): the path must start with the pattern
    /// minus those two bytes.
    Prefix,
    /// A leading `**` and nothing else special (`**/name`, `**file`): the
    /// path must end with the pattern minus its first two bytes.
    Suffix,
    /// Anything else: a Go regular expression, anchored with `^` and `$`.
    Regex(String),
}

/// The characters upstream escapes before they reach Go's regexp.
///
/// Upstream means to escape `.+()|{}$` but keeps the set in a bitmap of
/// eight bytes indexed by `c % 8` with bit `c / 8`; for `c >= 64` the bit
/// shifts out of the byte, so `|`, `{` and `}` are not escaped and act as
/// alternation and counted repetition in regex patterns (`*.log|x` matches
/// `a.log/b`). `^`, `[`, `]` and `\` are passed through on purpose.
fn is_escaped(c: char) -> bool {
    matches!(c, '.' | '+' | '(' | ')' | '$')
}

/// Compiles a cleaned pattern (without its `!`) the way upstream does on a
/// system whose separator is `/`.
pub(crate) fn compile(pattern: &str) -> Compiled {
    let mut re = String::from("^");
    let mut kind = Compiled::Exact;
    let mut is_regex = false;
    // Go reads the pattern with `text/scanner`, which drops a byte order mark
    // at the very start of its input. The string comparisons below still use
    // the whole pattern, so the mark only vanishes from the regex.
    let mut chars = pattern
        .strip_prefix('\u{feff}')
        .unwrap_or(pattern)
        .chars()
        .peekable();
    let mut token = 0;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is read as `**`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    // A trailing `**` matches everything below, like gitignore.
                    if !is_regex && kind == Compiled::Exact {
                        kind = Compiled::Prefix;
                    } else {
                        re.push_str(".*");
                        is_regex = true;
                    }
                } else {
                    // Any number of directories, including none.
                    re.push_str("(.*/)?");
                    is_regex = true;
                }
                if token == 0 {
                    // Upstream decides on a suffix match from the first token
                    // alone; a later wildcard turns it back into a regex.
                    kind = Compiled::Suffix;
                    is_regex = false;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                is_regex = true;
            }
            '?' => {
                re.push_str("[^/]");
                is_regex = true;
            }
            c if is_escaped(c) => {
                re.push('\\');
                re.push(c);
            }
            '\\' => match chars.next() {
                Some(escaped) => {
                    re.push('\\');
                    re.push(escaped);
                    is_regex = true;
                }
                // Unreachable after the syntax check, kept as upstream has it.
                None => re.push('\\'),
            },
            '[' | ']' => {
                re.push(c);
                is_regex = true;
            }
            c => re.push(c),
        }
        token += 1;
    }
    if is_regex {
        re.push('$');
        Compiled::Regex(re)
    } else {
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::{Compiled, compile};

    /// Upstream's `TestCompile` table (slash separator): the match kind and,
    /// for regexes, the exact regex text Go builds.
    #[test]
    fn compile_matches_upstream() {
        let regex = |s: &str| Compiled::Regex(s.to_owned());
        let cases = [
            ("*", regex(r"^[^/]*$")),
            ("file*", regex(r"^file[^/]*$")),
            ("*file", regex(r"^[^/]*file$")),
            ("a*/b", regex(r"^a[^/]*/b$")),
            ("**", Compiled::Suffix),
            ("**/**", regex(r"^(.*/)?.*$")),
            ("dir/**", Compiled::Prefix),
            ("**/dir", Compiled::Suffix),
            ("**/dir2/*", regex(r"^(.*/)?dir2/[^/]*$")),
            ("**/dir2/**", regex(r"^(.*/)?dir2/.*$")),
            ("**file", Compiled::Suffix),
            ("**/file*txt", regex(r"^(.*/)?file[^/]*txt$")),
            ("**/**/*.txt", regex(r"^(.*/)?(.*/)?[^/]*\.txt$")),
            ("a[b-d]e", regex(r"^a[b-d]e$")),
            (".*", regex(r"^\.[^/]*$")),
            ("abc.def", Compiled::Exact),
            ("abc?def", regex(r"^abc[^/]def$")),
            ("**/foo/bar", Compiled::Suffix),
            ("a(b)c/def", Compiled::Exact),
            ("a.|)$(}+{bc", Compiled::Exact),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                Compiled::Exact,
            ),
        ];
        for (pattern, want) in cases {
            assert_eq!(compile(pattern), want, "compile({pattern:?})");
        }
    }

    #[test]
    fn escapes_and_classes_pass_through() {
        assert_eq!(compile(r"a\*b"), Compiled::Regex(r"^a\*b$".to_owned()));
        assert_eq!(compile(r"a\\"), Compiled::Regex(r"^a\\$".to_owned()));
        assert_eq!(compile("[*]"), Compiled::Regex("^[[^/]*]$".to_owned()));
        assert_eq!(compile("a^b"), Compiled::Exact);
        assert_eq!(compile("a**"), Compiled::Prefix);
        assert_eq!(compile("a*/**"), Compiled::Regex("^a[^/]*/.*$".to_owned()));
        assert_eq!(
            compile("\u{feff}a*"),
            Compiled::Regex("^a[^/]*$".to_owned())
        );
        assert_eq!(compile("\u{feff}**"), Compiled::Suffix);
        // `|`, `{` and `}` escape upstream's escaping.
        assert_eq!(compile("a|b*"), Compiled::Regex("^a|b[^/]*$".to_owned()));
        assert_eq!(compile("x{2}*"), Compiled::Regex("^x{2}[^/]*$".to_owned()));
    }
}
