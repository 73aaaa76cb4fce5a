//! Per-instruction argument splitting, as BuildKit's `line_parsers.go`.
//!
//! Each keyword has its own rule; unknown keywords keep one empty argument
//! (BuildKit's `parseIgnore`), which the typed pass reports.

use super::json::{JsonArray, decode_string_array};
use super::text::{is_go_space, trim_leading_space};

/// The arguments of one instruction.
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) args: Vec<String>,
    pub(crate) json: bool,
}

/// An error of the argument syntax (the message is BuildKit's).
pub(crate) type ArgsError = String;

/// How a keyword's arguments are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// ADD, COPY, VOLUME: JSON array, else whitespace-separated words.
    MaybeJsonToList,
    /// ARG: words, quotes kept.
    NameOrNameVal,
    /// CMD, ENTRYPOINT, RUN, SHELL: JSON array, else the whole rest.
    MaybeJson,
    /// ENV, LABEL: `k=v` pairs or the legacy `k v`.
    NameVal(&'static str),
    /// EXPOSE, FROM: whitespace-separated words.
    Whitespace,
    /// HEALTHCHECK: a type word, then as CMD.
    HealthConfig,
    /// MAINTAINER, STOPSIGNAL, USER, WORKDIR: the whole rest.
    String,
    /// ONBUILD: another instruction.
    SubCommand,
    /// Unknown keywords.
    Ignore,
}

pub(crate) fn rule_for(keyword: &str) -> Rule {
    match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => Rule::MaybeJsonToList,
        "arg" => Rule::NameOrNameVal,
        "cmd" | "entrypoint" | "run" | "shell" => Rule::MaybeJson,
        "env" => Rule::NameVal("ENV"),
        "label" => Rule::NameVal("LABEL"),
        "expose" | "from" => Rule::Whitespace,
        "healthcheck" => Rule::HealthConfig,
        "maintainer" | "stopsignal" | "user" | "workdir" => Rule::String,
        "onbuild" => Rule::SubCommand,
        _ => Rule::Ignore,
    }
}

/// Splits `rest` (already trimmed, flags removed) by `rule`. `SubCommand` is
/// handled by the caller, which recurses into a whole instruction.
pub(crate) fn split_args(rule: Rule, rest: &str, escape: char) -> Result<Args, ArgsError> {
    match rule {
        Rule::MaybeJsonToList => maybe_json_to_list(rest),
        Rule::NameOrNameVal => Ok(plain(parse_words(rest, escape))),
        Rule::MaybeJson => maybe_json(rest),
        Rule::NameVal(key) => name_val(rest, key, escape).map(plain),
        Rule::Whitespace => Ok(plain(whitespace_delimited(rest))),
        Rule::HealthConfig => health_config(rest),
        Rule::String => Ok(plain(if rest.is_empty() {
            vec![]
        } else {
            vec![rest.to_string()]
        })),
        Rule::SubCommand => unreachable!("ONBUILD is split by the caller"),
        Rule::Ignore => Ok(plain(vec![String::new()])),
    }
}

fn plain(args: Vec<String>) -> Args {
    Args { args, json: false }
}

/// Words separated by Unicode white space; quotes and escapes are kept in
/// the words (they are removed later, by expansion), but a quoted part may
/// contain spaces and an escaped character never ends a word.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    loop {
        let Some(mut ch) = chars.next() else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Spaces {
            if is_go_space(ch) {
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if is_go_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                let Some(next) = chars.next() else {
                    continue; // an escape at the very end is dropped
                };
                // Outside quotes the escape and the escaped character both
                // stay in the word, even when the character is a quote.
                word.push(ch);
                ch = next;
            }
            word.push(ch);
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        // Inside single quotes the escape character is literal.
        if ch == escape && quote != '\'' {
            let Some(next) = chars.next() else {
                phase = Phase::Word;
                continue;
            };
            word.push(ch);
            ch = next;
        }
        word.push(ch);
    }
    words
}

fn name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, ArgsError> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(vec![]);
    };
    if !first.contains('=') {
        // Legacy `ENV key value...`: the value is the rest of the line.
        let mut parts = split_ascii_blanks(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        let value = parts.pop().unwrap_or_default();
        let name = parts.pop().unwrap_or_default();
        return Ok(vec![name, value, String::new()]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::goconv::quote(&word)
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

fn is_ascii_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `regexp.MustCompile("[\t\v\f\r ]+").Split(s, n)`.
fn split_ascii_blanks(s: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while out.len() + 1 < n || n == 0 {
        let Some(start) = rest.find(is_ascii_blank) else {
            break;
        };
        let after = rest[start..].trim_start_matches(is_ascii_blank);
        out.push(rest[..start].to_string());
        rest = after;
    }
    out.push(rest.to_string());
    out
}

fn whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return vec![];
    }
    split_ascii_blanks(rest, 0)
}

fn json(rest: &str) -> Result<Option<Args>, ArgsError> {
    let rest = trim_leading_space(rest);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match decode_string_array(rest) {
        JsonArray::Strings(args) => Ok(Some(Args { args, json: true })),
        JsonArray::NotStrings => {
            Err("when using JSON array syntax, arrays must be comprised of strings only".into())
        }
        JsonArray::Invalid => Ok(None),
    }
}

fn maybe_json(rest: &str) -> Result<Args, ArgsError> {
    if rest.is_empty() {
        return Ok(Args::default());
    }
    Ok(json(rest)?.unwrap_or_else(|| plain(vec![rest.to_string()])))
}

fn maybe_json_to_list(rest: &str) -> Result<Args, ArgsError> {
    Ok(json(rest)?.unwrap_or_else(|| plain(whitespace_delimited(rest))))
}

/// `HEALTHCHECK [flags] TYPE rest`: BuildKit finds the type word byte by
/// byte, so (as in flag parsing) the bytes 0x85 and 0xA0 end it too.
fn health_config(rest: &str) -> Result<Args, ArgsError> {
    let bytes = rest.as_bytes();
    let is_space = |b: &u8| is_go_space(char::from(*b));
    let sep = bytes.iter().position(is_space).unwrap_or(bytes.len());
    if sep == 0 {
        return Ok(Args::default());
    }
    let next = bytes[sep..]
        .iter()
        .position(|b| !is_space(b))
        .map_or(bytes.len(), |p| sep + p);
    let typ = String::from_utf8_lossy(&bytes[..sep]).into_owned();
    let cmd = maybe_json(&String::from_utf8_lossy(&bytes[next..]))?;
    let mut args = vec![typ];
    args.extend(cmd.args);
    Ok(Args {
        args,
        json: cmd.json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="b c" d\ e 'f\ g'"#, '\\'),
            vec![r#"a="b c""#, r"d\ e", r"'f\ g'"]
        );
        assert_eq!(parse_words(r#"a="" "#, '\\'), vec![r#"a="""#]);
        assert_eq!(parse_words("x\\", '\\'), vec!["x"]);
    }

    #[test]
    fn env_forms() {
        assert_eq!(
            name_val("a b c", "ENV", '\\').unwrap(),
            vec!["a", "b c", ""]
        );
        assert_eq!(
            name_val("a=1 b=\"c d\"", "ENV", '\\').unwrap(),
            vec!["a", "1", "=", "b", "\"c d\"", "="]
        );
        assert_eq!(
            name_val("a", "ENV", '\\').unwrap_err(),
            "ENV must have two arguments"
        );
        assert_eq!(
            name_val("a=1 b", "LABEL", '\\').unwrap_err(),
            r#"Syntax error - can't find = in "b". Must be of the form: name=value"#
        );
    }

    #[test]
    fn go_regexp_split() {
        assert_eq!(split_ascii_blanks("a  b\tc", 0), vec!["a", "b", "c"]);
        assert_eq!(split_ascii_blanks("a  b\tc", 2), vec!["a", "b\tc"]);
        assert_eq!(split_ascii_blanks("abc", 2), vec!["abc"]);
    }

    #[test]
    fn healthcheck() {
        let a = health_config("CMD [\"a\"]").unwrap();
        assert_eq!(
            (a.args, a.json),
            (vec!["CMD".to_string(), "a".to_string()], true)
        );
        assert_eq!(health_config("NONE").unwrap().args, vec!["NONE"]);
        assert!(health_config("").unwrap().args.is_empty());
    }
}
