//! Finding heredoc markers (`<<EOF`, `<<-"EOF"`, `3<<EOF`) in an instruction.

use std::collections::BTreeMap;

use super::Heredoc;
use crate::shell::Lex;

/// The heredocs a RUN/COPY/ADD line opens, in order. BuildKit lexes the whole
/// line as shell words keeping quotes and escapes, then takes every word that
/// looks like a heredoc marker; a line the lexer rejects opens none.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lex = Lex::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let Ok(words) = lex.process_words(line, &no_env()) else {
        return Ok(vec![]);
    };
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// One word as a heredoc marker: `^(\d*)<<(-?)\s*([^<]*)$` with a non-empty,
/// single-word name. A marker with any quoted part does not expand its body.
/// (The lexer keeps blanks after `<<` in the word, so `<< EOF` is a marker.)
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, name) = match after.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, after),
    };
    // Go regexp `\s`: ASCII blanks without `\v`.
    let name = name.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if name.is_empty() || name.contains('<') {
        return Ok(None);
    }
    // Go's ParseUint error is ignored: an empty number is 0, an overflowing
    // one saturates.
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse::<u64>().unwrap_or(u64::MAX)
    };

    let mut lex = Lex::new('\\');
    lex.skip_unset_env = true;
    let words = lex
        .process_words(name, &no_env())
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex
        .process_words(name, &no_env())
        .map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {name}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    Ok(Some(Heredoc {
        expand: quotes(&name) == quotes(&raw[0]),
        name,
        file_descriptor: fd,
        chomp,
        content: String::new(),
    }))
}

/// `<<-` bodies: every line's leading tabs removed.
pub fn chomp_heredoc_content(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}
