//! Go's `path/filepath.Match` on Unix: what COPY/ADD wildcards match
//! (fsutil matches them with it), and what `.dockerignore` accepts as a
//! pattern (Docker calls `filepath.Match(pattern, ".")` for its error).

/// Whether `name` (one path component) matches `pattern`, with Go's
/// `filepath.Match` rules: `*` is any run of bytes, `?` one character,
/// `[...]` a class (`^` negates, `a-z` is a range, `\` escapes inside),
/// `\x` the character `x`. `None` for a malformed pattern (Go's
/// `ErrBadPattern`), which Go reports whatever the name.
pub fn path_match(pattern: impl AsRef<[u8]>, name: &[u8]) -> Option<bool> {
    let mut pattern = pattern.as_ref();
    let mut name = name;
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` takes the rest, which has no `/` within a
            // component.
            return Some(!name.contains(&b'/'));
        }
        let (after, ok) = match_chunk(chunk, name)?;
        // The last chunk must use up the name; an earlier one may leave
        // some for the next star.
        if ok && (after.is_empty() || !pattern.is_empty()) {
            name = after;
            continue;
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (after, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok && (after.is_empty() || !pattern.is_empty()) {
                    name = after;
                    continue 'chunks;
                }
                i += 1;
            }
        }
        // Go checks the rest of the pattern before answering "no", so a bad
        // pattern fails on every name.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Some(false);
    }
    Some(name.is_empty())
}

/// Whether Go accepts `pattern` at all: `Match` fails exactly when one of
/// its chunks is malformed, whatever the name, since current Go parses
/// every chunk to its end even after the name stopped matching. (Older Go,
/// 1.19 for one, stopped at the first chunk that did not match, so it
/// accepted `a*[` where the name did not reach it.)
pub fn valid_path_pattern(pattern: &str) -> bool {
    path_match(pattern, b"").is_some()
}

/// Go's `scanChunk`: the leading stars, then the bytes up to the next star
/// outside a class.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let Some(rest) = pattern.strip_prefix(b"*") {
        pattern = rest;
        star = true;
    }
    let mut in_class = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Go's `matchChunk`: matches a star-free chunk at the start of `s`, giving
/// what is left of `s` and whether it matched. After a mismatch it keeps
/// reading the chunk, so a malformed one is always reported (`None`).
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Option<(&'a [u8], bool)> {
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            b'[' => {
                let mut r = 0;
                if !failed {
                    let (c, n) = decode_rune(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if ranges > 0
                        && let Some(rest) = chunk.strip_prefix(b"]")
                    {
                        chunk = rest;
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let Some(rest) = chunk.strip_prefix(b"-") {
                        let (h, rest) = class_char(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if first == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first()?
                } else {
                    first
                };
                if !failed {
                    if literal != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        Some((b"", false))
    } else {
        Some((s, true))
    }
}

/// Go's `getEsc`: one character of a class, possibly escaped. A bare `-`
/// or `]` is not one, an invalid UTF-8 byte is an error, and the class must
/// go on after it.
fn class_char(chunk: &[u8]) -> Option<(u32, &[u8])> {
    let chunk = match chunk.first()? {
        b'-' | b']' => return None,
        b'\\' => &chunk[1..],
        _ => chunk,
    };
    if chunk.is_empty() {
        return None;
    }
    let (r, n) = decode_rune(chunk);
    if r == u32::from(char::REPLACEMENT_CHARACTER) && n == 1 {
        return None;
    }
    let rest = &chunk[n..];
    (!rest.is_empty()).then_some((r, rest))
}

/// Go's `utf8.DecodeRune`: the first character and its length; an invalid
/// or empty sequence is U+FFFD of length 1 (0 when empty).
fn decode_rune(s: &[u8]) -> (u32, usize) {
    let width = match s.first() {
        None => return (u32::from(char::REPLACEMENT_CHARACTER), 0),
        Some(0x00..=0x7f) => 1,
        Some(0xc2..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf4) => 4,
        Some(_) => 0,
    };
    match s.get(..width).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(text) if width > 0 => {
            let c = text.chars().next().expect("one character");
            (u32::from(c), width)
        }
        _ => (u32::from(char::REPLACEMENT_CHARACTER), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from Go's `path/filepath` match tests (Unix).
    #[test]
    fn matches_like_go() {
        let cases: &[(&str, &str, Option<bool>)] = &[
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*", "abc", Some(true)),
            ("a*", "ab/c", Some(false)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abc", Some(false)),
            ("ab[^e-g]", "abc", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a[^a]b", "a☺b", Some(true)),
            ("a???b", "a☺b", Some(false)),
            ("a[^a][^a][^a]b", "a☺b", Some(false)),
            ("[a-ζ]*", "α", Some(true)),
            ("*[a-ζ]", "A", Some(false)),
            ("a?b", "a/b", Some(false)),
            ("a*b", "a/b", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("[\\-]", "-", Some(true)),
            ("[x\\-]", "x", Some(true)),
            ("[x\\-]", "-", Some(true)),
            ("[x\\-]", "z", Some(false)),
            ("[\\-x]", "x", Some(true)),
            ("[\\-x]", "-", Some(true)),
            ("[\\-x]", "a", Some(false)),
            ("[]a]", "]", None),
            ("[-]", "-", None),
            ("[x-]", "x", None),
            ("[x-]", "-", None),
            ("[x-]", "z", None),
            ("[-x]", "x", None),
            ("[-x]", "-", None),
            ("[-x]", "a", None),
            ("\\", "a", None),
            ("[a-b-c]", "a", None),
            ("[", "a", None),
            ("[^", "a", None),
            ("[^bc", "a", None),
            ("a[", "a", None),
            ("a[", "ab", None),
            ("a[", "x", None),
            ("a/b[", "x", None),
            ("*x", "xxx", Some(true)),
        ];
        for &(pattern, name, want) in cases {
            assert_eq!(
                path_match(pattern, name.as_bytes()),
                want,
                "Match({pattern:?}, {name:?})"
            );
        }
    }

    #[test]
    fn accepts_what_go_accepts() {
        for p in [
            "",
            "abc",
            "*",
            "a*b*c",
            "a\\*b",
            "[abc]",
            "[^a-c]",
            "[\\]a]",
            "[\\-]",
            "[x\\-]",
            "[a-ζ]*",
            "[*]",
            "a[b]*[c]",
            "[Local-Only]",
            "**",
            "a]",
            "\\[",
            "[^\\]]",
            "a*[bc]?",
        ] {
            assert!(valid_path_pattern(p), "{p:?} should be accepted");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for p in [
            "[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "a*[", "[a",
            "x\\", "*\\", "[\\", "[a-", "[a-\\", "ok*[", "[é",
            // An unescaped `]` cannot be a class's first item.
            "[]]x]",
        ] {
            assert!(!valid_path_pattern(p), "{p:?} should be rejected");
        }
    }
}
