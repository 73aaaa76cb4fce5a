//! The exec form's JSON array, decoded the way BuildKit's Go code decodes it.
//!
//! Current BuildKit reads the array with `json.Unmarshal`: the whole rest of
//! the line must be one JSON value (`CMD ["a"] b` is shell form; BuildKit
//! v0.12 and older took the first value and ignored the rest). Invalid JSON
//! means "shell form"; valid JSON with a non-string element is an error.
//! Strings follow Go's rules: lone surrogates become U+FFFD, control
//! characters are invalid.

/// What a `[`-prefixed argument turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// Valid JSON, but not every element is a string.
    NotStrings,
    /// Not valid JSON (or not an array): the caller falls back to shell form.
    Invalid,
}

/// Go's `encoding/json` nesting limit.
const MAX_DEPTH: usize = 10_000;

pub(crate) fn decode_string_array(src: &str) -> JsonArray {
    let mut p = Scanner {
        s: src.as_bytes(),
        i: 0,
    };
    p.skip_ws();
    if p.peek() != Some(b'[') {
        return JsonArray::Invalid;
    }
    let decoded = p.top_level_array();
    p.skip_ws();
    if p.i != p.s.len() {
        return JsonArray::Invalid;
    }
    match decoded {
        Some(Some(items)) => JsonArray::Strings(items),
        Some(None) => JsonArray::NotStrings,
        None => JsonArray::Invalid,
    }
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

#[derive(Clone, Copy)]
enum Frame {
    /// Inside an array; `true` once at least one value was read.
    Array(bool),
    /// Inside an object; `true` once at least one member was read.
    Object(bool),
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// `Some(Some(strings))`, `Some(None)` for a valid array with a
    /// non-string element, `None` for a syntax error.
    fn top_level_array(&mut self) -> Option<Option<Vec<String>>> {
        self.i += 1; // '['
        let mut items = Some(Vec::new());
        self.skip_ws();
        if self.eat(b']') {
            return Some(items);
        }
        loop {
            self.skip_ws();
            if self.peek() == Some(b'"') {
                let s = self.string()?;
                if let Some(items) = items.as_mut() {
                    items.push(s);
                }
            } else {
                self.value()?;
                items = None;
            }
            self.skip_ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b']') {
                return Some(items);
            }
            return None;
        }
    }

    /// Validates one nested value without recursion (depth counts the
    /// enclosing top-level array, as Go's scanner does).
    fn value(&mut self) -> Option<()> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            // Read the start of a value.
            self.skip_ws();
            match self.peek()? {
                b'[' | b'{' => {
                    let open = self.peek()?;
                    self.i += 1;
                    if stack.len() + 2 > MAX_DEPTH {
                        return None;
                    }
                    self.skip_ws();
                    if open == b'[' {
                        if self.eat(b']') {
                            // empty array is a complete value
                        } else {
                            stack.push(Frame::Array(false));
                            continue;
                        }
                    } else if self.eat(b'}') {
                        // empty object
                    } else {
                        stack.push(Frame::Object(false));
                        self.member_key()?;
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value is complete: close containers as far as possible.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Some(());
                };
                self.skip_ws();
                match top {
                    Frame::Array(seen) => {
                        *seen = true;
                        if self.eat(b',') {
                            break;
                        }
                        if self.eat(b']') {
                            stack.pop();
                            continue;
                        }
                        return None;
                    }
                    Frame::Object(seen) => {
                        *seen = true;
                        if self.eat(b',') {
                            self.skip_ws();
                            self.member_key()?;
                            break;
                        }
                        if self.eat(b'}') {
                            stack.pop();
                            continue;
                        }
                        return None;
                    }
                }
            }
        }
    }

    /// `"key" :` of an object member.
    fn member_key(&mut self) -> Option<()> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.skip_ws();
        self.eat(b':').then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        if self.eat(b'0') {
        } else if matches!(self.peek(), Some(b'1'..=b'9')) {
            self.digits();
        } else {
            return None;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    /// A JSON string, decoded with Go's rules.
    fn string(&mut self) -> Option<String> {
        self.i += 1; // '"'
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // The input is a &str, and we only stop at ASCII bytes, so the
            // slice is valid UTF-8.
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).ok()?);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = match self.peek()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            self.i += 1;
                            let u = self.hex4()?;
                            out.push(self.surrogate_pair(u));
                            continue;
                        }
                        _ => return None,
                    };
                    self.i += 1;
                    out.push(c);
                }
                _ => return None, // control character
            }
        }
    }

    /// Completes a `\uXXXX` escape: a high surrogate followed by an escaped
    /// low surrogate is one character; any other surrogate is U+FFFD.
    fn surrogate_pair(&mut self, u: u32) -> char {
        if (0xd800..0xdc00).contains(&u) && self.s[self.i..].starts_with(b"\\u") {
            let save = self.i;
            self.i += 2;
            if let Some(lo) = self.hex4()
                && (0xdc00..0xe000).contains(&lo)
            {
                let c = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                return char::from_u32(c).unwrap_or('\u{fffd}');
            }
            self.i = save;
        }
        char::from_u32(u).unwrap_or('\u{fffd}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(decode_string_array(r#"["a", "b"]"#), strings(&["a", "b"]));
        assert_eq!(decode_string_array("[]"), strings(&[]));
        assert_eq!(decode_string_array(r#" [ "a" ] "#), strings(&["a"]));
    }

    #[test]
    fn text_after_the_array_makes_it_invalid_like_go_unmarshal() {
        assert_eq!(decode_string_array(r#"["a"] foo"#), JsonArray::Invalid);
        assert_eq!(decode_string_array(r#"["a"]]"#), JsonArray::Invalid);
        assert_eq!(decode_string_array("[\"a\"] \t\r\n"), strings(&["a"]));
        // Unmarshal checks the syntax of everything before decoding.
        assert_eq!(decode_string_array(r#"["a", 1] x"#), JsonArray::Invalid);
    }

    #[test]
    fn escapes() {
        assert_eq!(
            decode_string_array(r#"["\" \\ \/ \b \f \n \r \t \u0000"]"#),
            strings(&["\" \\ / \u{8} \u{c} \n \r \t \u{0}"])
        );
        assert_eq!(decode_string_array(r#"["\ud83d\ude00"]"#), strings(&["😀"]));
        assert_eq!(
            decode_string_array(r#"["\ud800x"]"#),
            strings(&["\u{fffd}x"])
        );
        assert_eq!(
            decode_string_array(r#"["\ud800\u0041"]"#),
            strings(&["\u{fffd}A"])
        );
    }

    #[test]
    fn invalid_json_falls_back() {
        for s in [
            "['a']",
            "[\"a\",]",
            "[\"a\"",
            "[",
            "[\"\t\"]",
            r#"["\x"]"#,
            "[01]",
            "[1.]",
            "[-]",
            "[tru]",
            r#"[{"a"}]"#,
            r#"[{1:2}]"#,
            "[1 2]",
        ] {
            assert_eq!(decode_string_array(s), JsonArray::Invalid, "{s}");
        }
    }

    #[test]
    fn valid_json_with_other_values_is_an_error() {
        for s in [
            "[1]",
            "[\"a\", null]",
            "[[]]",
            r#"[{"a": [1, {"b": true}]}]"#,
            "[-0.5e+3]",
            "[[[\"a\"]]]",
        ] {
            assert_eq!(decode_string_array(s), JsonArray::NotStrings, "{s}");
        }
    }

    #[test]
    fn nesting_limit_matches_go() {
        let ok = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(decode_string_array(&ok), JsonArray::NotStrings);
        let deep = format!("{}{}", "[".repeat(10_001), "]".repeat(10_001));
        assert_eq!(decode_string_array(&deep), JsonArray::Invalid);
    }
}
