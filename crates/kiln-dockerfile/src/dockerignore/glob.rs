//! The syntax check Docker runs on every pattern when the list is read.
//!
//! Upstream calls Go's `filepath.Match(pattern, ".")` only for its error. Go
//! splits the pattern into chunks at each `*` that is outside a `[...]`, and
//! current Go parses every chunk to its end even after the name stopped
//! matching, so the answer does not depend on the name: `Match` fails
//! exactly when one chunk is malformed. That is what is reproduced here,
//! without matching anything. (Older Go, 1.19 for one, stopped at the first
//! chunk that did not match, so it accepted `a*[` at this point and failed
//! on it later, when matching.)

/// Whether Go's `filepath.Match` (Unix) accepts `pattern`.
pub(crate) fn is_valid(pattern: &str) -> bool {
    let mut rest = pattern.as_bytes();
    while !rest.is_empty() {
        let (chunk, after) = next_chunk(rest);
        if !chunk_is_valid(chunk) {
            return false;
        }
        rest = after;
    }
    true
}

/// Splits off the next run of non-`*` operators, after any leading stars.
/// Like Go's `scanChunk`, it tracks `[` and `]` bytewise, so a `*` inside a
/// class does not end the chunk, and a `\` hides the byte after it.
fn next_chunk(pattern: &[u8]) -> (&[u8], &[u8]) {
    let start = pattern.iter().take_while(|&&b| b == b'*').count();
    let pattern = &pattern[start..];
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
    pattern.split_at(i)
}

/// Go's `matchChunk` reduced to its error paths: a `\` must escape
/// something, and a class needs at least one item and a closing `]`.
fn chunk_is_valid(mut chunk: &[u8]) -> bool {
    while let Some((&first, rest)) = chunk.split_first() {
        chunk = rest;
        match first {
            b'\\' => match chunk.split_first() {
                Some((_, rest)) => chunk = rest,
                None => return false,
            },
            b'[' => match class_end(chunk) {
                Some(rest) => chunk = rest,
                None => return false,
            },
            // `?` and literals cannot be malformed; multi-byte characters
            // are walked a byte at a time, which Go also does outside classes.
            _ => {}
        }
    }
    true
}

/// Parses the inside of a class (after its `[`) and returns what follows
/// its `]`, or `None` where Go reports `ErrBadPattern`.
fn class_end(mut chunk: &[u8]) -> Option<&[u8]> {
    if let Some(rest) = chunk.strip_prefix(b"^") {
        chunk = rest;
    }
    let mut ranges = 0;
    loop {
        if ranges > 0
            && let Some(rest) = chunk.strip_prefix(b"]")
        {
            return Some(rest);
        }
        chunk = class_char(chunk)?;
        if let Some(rest) = chunk.strip_prefix(b"-") {
            chunk = class_char(rest)?;
        }
        ranges += 1;
    }
}

/// Go's `getEsc`: one possibly escaped character of a class. An unescaped
/// `-` or `]` is not a character here, and the class must go on after it.
fn class_char(chunk: &[u8]) -> Option<&[u8]> {
    let chunk = match chunk.first()? {
        b'-' | b']' => return None,
        b'\\' => &chunk[1..],
        _ => chunk,
    };
    let width = utf8_width(*chunk.first()?);
    let rest = chunk.get(width..)?;
    (!rest.is_empty()).then_some(rest)
}

/// The length of the UTF-8 sequence a byte starts (the input is a `str`,
/// so it is well formed).
fn utf8_width(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid;

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
        ] {
            assert!(is_valid(p), "{p:?} should be accepted");
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
            assert!(!is_valid(p), "{p:?} should be rejected");
        }
    }
}
