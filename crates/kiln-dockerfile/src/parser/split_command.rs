//! Splitting an instruction line into keyword, flags and the rest.

use super::text::{is_go_space, trim_space};

/// `line` → (keyword, flags, rest), as BuildKit's `splitCommand`.
pub(crate) fn split_command(line: &str) -> (String, Vec<String>, String) {
    let trimmed = trim_space(line);
    // The keyword ends at the first ASCII blank (`[\t\v\f\r ]+`), not at any
    // Unicode space: that is the regexp BuildKit splits with.
    let (cmd, rest) = match trimmed.find(is_token_blank) {
        Some(i) => {
            let after = trimmed[i..].trim_start_matches(is_token_blank);
            (&trimmed[..i], Some(after))
        }
        None => (trimmed, None),
    };
    let (args, flags) = match rest {
        Some(rest) => extract_builder_flags(rest),
        None => (String::new(), Vec::new()),
    };
    (cmd.to_string(), flags, trim_space(&args).to_string())
}

fn is_token_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Takes the leading `--flag` words off `line`; returns (rest, flags).
///
/// BuildKit walks this part byte by byte and turns each byte into a rune, so a
/// non-ASCII byte becomes the Latin-1 character of that value (`é` → `Ã©`),
/// and the bytes 0x85 and 0xA0 count as spaces. Reproduced here because the
/// flags BuildKit sees are the flags the build must see.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes = line.as_bytes();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= bytes.len() {
        let ch = bytes.get(pos).copied().unwrap_or(0);
        let at_end = pos == bytes.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_go_space(char::from(ch)) {
                pos += 1;
                continue;
            }
            if ch != b'-' || bytes.get(pos + 1) != Some(&b'-') {
                return (lossy_tail(bytes, pos), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_go_space(char::from(ch)) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (lossy_tail(bytes, pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == b'\\' {
                if pos + 1 == bytes.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = bytes[pos];
            }
            word.push(char::from(c));
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == b'\\' {
            if pos + 1 == bytes.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = bytes[pos];
        }
        word.push(char::from(c));
        pos += 1;
    }
    (String::new(), words)
}

/// The rest of the line from byte `pos`, which may fall inside a UTF-8
/// sequence when a 0x85/0xA0 continuation byte was taken for a space.
fn lossy_tail(bytes: &[u8], pos: usize) -> String {
    String::from_utf8_lossy(&bytes[pos..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> (String, Vec<String>, String) {
        split_command(line)
    }

    #[test]
    fn flags_then_rest() {
        assert_eq!(
            split("COPY --from=a --chown=1:1 x y"),
            (
                "COPY".into(),
                vec!["--from=a".into(), "--chown=1:1".into()],
                "x y".into()
            )
        );
    }

    #[test]
    fn double_dash_ends_flags() {
        assert_eq!(split("RUN -- --x"), ("RUN".into(), vec![], "--x".into()));
        assert_eq!(split("CMD --a=1 -- [\"x\"]").1, vec!["--a=1".to_string()]);
    }

    #[test]
    fn quoted_flag_values_are_unquoted() {
        assert_eq!(split(r#"COPY --a="b c" --d x"#).1, vec!["--a=b c", "--d"]);
    }

    #[test]
    fn non_ascii_bytes_become_latin1_like_buildkit() {
        // à is C3 A0; A0 is a space to Go's unicode.IsSpace(rune(byte)).
        let (_, flags, rest) = split("RUN --a=àb c");
        assert_eq!(flags, vec!["--a=Ã"]);
        assert_eq!(rest, "b c");
        assert_eq!(split("RUN --a=éb c").1, vec!["--a=Ã©b"]);
    }

    #[test]
    fn keyword_alone() {
        assert_eq!(split("  RUN  "), ("RUN".into(), vec![], String::new()));
    }
}
