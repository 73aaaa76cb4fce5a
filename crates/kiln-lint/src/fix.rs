//! `kiln lint --fix`: the findings that have a safe fix, rewritten in the
//! text itself (KL101, KL102, KL104, KL105, KL108).
//!
//! The rule that reports a finding says what its fix is ([`Fix`], data);
//! this module finds the words it is about on the lines the frontend gave
//! and turns it into edits of those bytes only: a word inserted (`-y`, a
//! timeout, a cache mount), a word or a command taken out with its `&&`, a
//! RUN that only ran `apt-get update` removed. Everything else (comments,
//! continuations, indentation, heredocs, other instructions) stays as it
//! was. A fix whose words cannot be found exactly where the finding is, or
//! whose edits would overlap another's, is not made; exec-form RUNs get no
//! edit inside their JSON. The result is linted again: a text that would
//! not parse is never returned.

use crate::LintError;
use crate::analyze::analyze;
use crate::config::Config;
use crate::finding::Finding;

/// What a rule's finding needs changed, in terms of the words it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fix {
    /// KL101: `-y` after the apt program (`apt-get -y install`, which
    /// apt-get reads as `install -y`) and/or `DEBIAN_FRONTEND=noninteractive`
    /// before it, for this command only.
    AptPrompt {
        program: String,
        yes: bool,
        frontend: bool,
    },
    /// KL102: a network timeout for a Python installer: pip's general
    /// option `--default-timeout`, uv's and poetry's variables.
    Timeout { tool: &'static str, program: String },
    /// KL104: a cache mount for the tool's download cache (root's), on the
    /// RUN starting on `run_line`.
    CacheMount { tool: &'static str, run_line: usize },
    /// KL105: the flag that turns the mounted cache off, taken out of the
    /// command of `program`.
    DropWord { program: String, word: &'static str },
    /// KL105: the purge command (`program args`), taken out with its `&&`.
    DropCommand { program: String, args: Vec<String> },
    /// KL108: `apt-get update &&` before the install of `program` on
    /// `install_line`, and the RUN on the lines `update_run` (which only
    /// ran the update) removed.
    UpdateWithInstall {
        install_line: usize,
        program: String,
        update_run: (usize, usize),
    },
}

/// The timeout a fix gives Python installers, in seconds.
const TIMEOUT: u32 = 60;

/// A Dockerfile with its safe fixes made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    /// The new text (the old one when nothing was fixed).
    pub text: Vec<u8>,
    /// The findings fixed, as they were reported on the old text.
    pub fixed: Vec<Finding>,
}

/// Makes the safe fixes of `text`'s findings under `config` (only of the
/// findings `config` reports: an ignored rule is not fixed either).
pub fn fix_with(file: &str, text: &[u8], config: &Config) -> Result<Fixed, LintError> {
    let unchanged = || Fixed {
        text: text.to_vec(),
        fixed: Vec::new(),
    };
    let findings = analyze(file, text, config, None)?;
    // Edits are made on the bytes as they are; text that is not UTF-8 is
    // left alone rather than re-encoded.
    let Ok(source) = std::str::from_utf8(text) else {
        return Ok(unchanged());
    };
    let doc = Doc::new(source);
    let mut accepted: Vec<Edit> = Vec::new();
    let mut fixed = Vec::new();
    for (finding, fix) in findings {
        let Some(fix) = fix else { continue };
        let Some(edits) = doc.edits(&fix, finding.line) else {
            continue;
        };
        if edits.is_empty() || edits.iter().any(|e| accepted.iter().any(|a| a.overlaps(e))) {
            continue;
        }
        for edit in edits {
            // The same insertion twice (two findings on one command).
            if !accepted.contains(&edit) {
                accepted.push(edit);
            }
        }
        fixed.push(finding);
    }
    if fixed.is_empty() {
        return Ok(unchanged());
    }
    let new = apply(source, accepted);
    // A fix must never make a file the frontend refuses.
    if analyze(file, new.as_bytes(), config, None).is_err() {
        return Ok(unchanged());
    }
    Ok(Fixed {
        text: new.into_bytes(),
        fixed,
    })
}

/// Replace `start..end` (bytes of the whole text) with `insert`. At one
/// position, insertions go in `order` (lowest first in the text).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    start: usize,
    end: usize,
    insert: String,
    order: u8,
}

impl Edit {
    fn insert(at: usize, text: impl Into<String>, order: u8) -> Edit {
        Edit {
            start: at,
            end: at,
            insert: text.into(),
            order,
        }
    }

    fn delete(start: usize, end: usize) -> Edit {
        Edit {
            start,
            end,
            insert: String::new(),
            order: 0,
        }
    }

    /// Whether the two cannot both be made: a deletion holding the other's
    /// place (its ends are fine).
    fn overlaps(&self, other: &Edit) -> bool {
        let inside = |e: &Edit, p: usize| e.start < p && p < e.end;
        inside(self, other.start)
            || inside(self, other.end)
            || inside(other, self.start)
            || inside(other, self.end)
            || (self.start == other.start && self.end == other.end && self.end > self.start)
                && self != other
    }
}

fn apply(source: &str, mut edits: Vec<Edit>) -> String {
    // From the end, so that earlier offsets stay right; at one position
    // the highest order first, so that the lowest ends up first.
    edits.sort_by_key(|e| std::cmp::Reverse((e.start, e.end, e.order)));
    let mut out = source.to_string();
    for e in edits {
        out.replace_range(e.start..e.end, &e.insert);
    }
    out
}

/// The text by lines, with each line's byte offset.
struct Doc<'a> {
    /// (offset, text without its line ending, offset of the next line).
    lines: Vec<(usize, &'a str, usize)>,
}

impl<'a> Doc<'a> {
    fn new(source: &'a str) -> Doc<'a> {
        let mut lines = Vec::new();
        let mut at = 0;
        for raw in source.split_inclusive('\n') {
            let text = raw
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(raw);
            lines.push((at, text, at + raw.len()));
            at += raw.len();
        }
        Doc { lines }
    }

    /// Line `n` (1-based): its offset and text.
    fn line(&self, n: usize) -> Option<(usize, &'a str)> {
        let (at, text, _) = *self.lines.get(n.checked_sub(1)?)?;
        Some((at, text))
    }

    /// The whole of lines `first..=last`, endings included.
    fn line_span(&self, first: usize, last: usize) -> Option<(usize, usize)> {
        let start = self.lines.get(first.checked_sub(1)?)?.0;
        let end = self.lines.get(last.checked_sub(1)?)?.2;
        Some((start, end))
    }

    /// The edits of `fix` for a finding on `line`; `None` when its words
    /// are not where they should be.
    fn edits(&self, fix: &Fix, line: usize) -> Option<Vec<Edit>> {
        match fix {
            Fix::AptPrompt {
                program,
                yes,
                frontend,
            } => {
                let (at, text) = self.line(line)?;
                let mut edits = Vec::new();
                for (start, end) in commands_of(text, program, apt_installs) {
                    // Another command of the line may have what this one
                    // lacks: it is not given it twice.
                    let says_yes = rest_words(text, end)
                        .iter()
                        .any(|w| matches!(w.as_str(), "-y" | "--yes" | "--assume-yes" | "-qq"));
                    let has_frontend = text[..start]
                        .split_whitespace()
                        .next_back()
                        .is_some_and(|w| w.starts_with("DEBIAN_FRONTEND="));
                    if *yes && !says_yes {
                        edits.push(Edit::insert(at + end, " -y", 0));
                    }
                    if *frontend && !has_frontend {
                        edits.push(Edit::insert(
                            at + start,
                            "DEBIAN_FRONTEND=noninteractive ",
                            1,
                        ));
                    }
                }
                Some(edits)
            }
            Fix::Timeout { tool, program } => {
                let (at, text) = self.line(line)?;
                let mut edits = Vec::new();
                match *tool {
                    "pip" => {
                        let pip = if base_name(program).starts_with("python") {
                            // `python -m pip install`: after the `pip`.
                            words(text, "pip")
                                .into_iter()
                                .filter(|&(s, _)| text[..s].trim_end().ends_with("-m"))
                                .filter(|&(_, e)| pip_installs(&rest_words(text, e)))
                                .collect::<Vec<_>>()
                        } else {
                            commands_of(text, program, pip_installs)
                        };
                        for (_, end) in pip {
                            edits.push(Edit::insert(
                                at + end,
                                format!(" --default-timeout={TIMEOUT}"),
                                0,
                            ));
                        }
                    }
                    "uv" | "poetry" => {
                        let var = if *tool == "uv" {
                            "UV_HTTP_TIMEOUT"
                        } else {
                            "POETRY_REQUESTS_TIMEOUT"
                        };
                        for (start, _) in commands_of(text, program, |_| true) {
                            edits.push(Edit::insert(at + start, format!("{var}={TIMEOUT} "), 1));
                        }
                    }
                    _ => return None,
                }
                Some(edits)
            }
            Fix::CacheMount { tool, run_line } => {
                let (at, text) = self.line(*run_line)?;
                let mounts = cache_mounts(tool)?;
                let indent = text.len() - text.trim_start().len();
                let keyword = text[indent..].get(..3)?;
                let after = text[indent + 3..].chars().next();
                if !keyword.eq_ignore_ascii_case("RUN")
                    || !after.is_some_and(|c| c == ' ' || c == '\t')
                {
                    return None;
                }
                Some(vec![Edit::insert(at + indent + 3, format!(" {mounts}"), 0)])
            }
            Fix::DropWord { program, word } => {
                let (at, text) = self.line(line)?;
                let mut edits = Vec::new();
                for (start, _) in commands_of(text, program, |_| true) {
                    let end = command_end(text, start);
                    for (s, e) in words(&text[..end], word) {
                        if s <= start {
                            continue;
                        }
                        // With the blanks before it.
                        let from = text[..s].trim_end_matches([' ', '\t']).len();
                        edits.push(Edit::delete(at + from, at + e));
                    }
                }
                Some(edits)
            }
            Fix::DropCommand { program, args } => self.drop_command(line, program, args),
            Fix::UpdateWithInstall {
                install_line,
                program,
                update_run,
            } => {
                let (at, text) = self.line(*install_line)?;
                let (start, _) = *commands_of(text, program, apt_installs).first()?;
                // Before the command's own assignments, which are for it.
                let mut from = start;
                loop {
                    let before = text[..from].trim_end_matches([' ', '\t']);
                    let word_start = before
                        .rfind(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '('))
                        .map_or(0, |i| i + 1);
                    let word = &before[word_start..];
                    if !word.is_empty() && is_assignment(word) {
                        from = word_start;
                    } else {
                        break;
                    }
                }
                let update = format!("{} update && ", program);
                let (run_start, run_end) = self.line_span(update_run.0, update_run.1)?;
                Some(vec![
                    Edit::insert(at + from, update, 0),
                    Edit::delete(run_start, run_end),
                ])
            }
        }
    }

    /// KL105's purge command on `line`, with the `&&` that joins it, or its
    /// whole line; `None` where taking it out would leave the instruction
    /// without a command or its continuation broken in a way not handled.
    fn drop_command(&self, line: usize, program: &str, args: &[String]) -> Option<Vec<Edit>> {
        let (at, text) = self.line(line)?;
        let found: Vec<(usize, usize)> = commands_of(text, program, |rest| rest == args)
            .into_iter()
            .map(|(start, _)| (start, command_end(text, start)))
            .collect();
        let [(start, end)] = found[..] else {
            return None;
        };
        let before = text[..start].trim_end_matches([' ', '\t']);
        let after = text[end..].trim_start_matches([' ', '\t']);
        let indent_only = before.trim().is_empty();
        if let Some(joined) = before.strip_suffix("&&") {
            let lead = joined.trim_end_matches([' ', '\t']);
            if !lead.trim().is_empty() {
                // `a && purge`: from the blanks before `&&` to its end.
                return Some(vec![Edit::delete(at + lead.len(), at + end)]);
            }
            // `    && purge \` on a line of its own: the whole line.
            let (line_start, next) = self.line_span(line, line)?;
            if after == "\\" {
                return Some(vec![Edit::delete(line_start, next)]);
            }
            // The last line of the instruction: the line, and the
            // continuation at the end of the line before.
            if after.is_empty() {
                let (prev_at, prev) = self.line(line.checked_sub(1)?)?;
                let kept = prev.trim_end_matches([' ', '\t']).strip_suffix('\\')?;
                let kept = kept.trim_end_matches([' ', '\t']);
                // The line ending of the line before goes with it, its own
                // stays.
                return Some(vec![Edit::delete(
                    prev_at + kept.len(),
                    line_start + text.len(),
                )]);
            }
            return None;
        }
        if let Some(rest) = after.strip_prefix("&&") {
            // `purge && b` (after `RUN`, or at a line's start): up to `b`.
            let b = end + (text[end..].len() - rest.len());
            let b = b + (rest.len() - rest.trim_start_matches([' ', '\t']).len());
            if !before.is_empty() && !indent_only && !is_run_keyword(before) {
                return None;
            }
            return Some(vec![Edit::delete(at + start, at + b)]);
        }
        // A command on a line of its own (a heredoc's script): the line,
        // unless a continuation runs into it.
        if indent_only && after.is_empty() {
            let continued = line > 1
                && self
                    .line(line - 1)
                    .is_some_and(|(_, prev)| prev.trim_end().ends_with('\\'));
            if !continued && !is_run_keyword(text.trim_start()) {
                let (line_start, next) = self.line_span(line, line)?;
                return Some(vec![Edit::delete(line_start, next)]);
            }
        }
        None
    }
}

/// `RUN`, or `RUN --mount=...` flags: what comes before a RUN's command.
fn is_run_keyword(before: &str) -> bool {
    let mut words = before.split_whitespace();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case("RUN"))
        && words.all(|w| w.starts_with("--"))
}

/// The cache mounts of a tool's download cache, as root has it.
fn cache_mounts(tool: &str) -> Option<&'static str> {
    Some(match tool {
        // apt takes a lock on both: `sharing=locked`.
        "apt" => {
            "--mount=type=cache,target=/var/cache/apt,sharing=locked \
             --mount=type=cache,target=/var/lib/apt,sharing=locked"
        }
        "pip" => "--mount=type=cache,target=/root/.cache/pip",
        "uv" => "--mount=type=cache,target=/root/.cache/uv",
        "poetry" => "--mount=type=cache,target=/root/.cache/pypoetry",
        "npm" => "--mount=type=cache,target=/root/.npm",
        "yarn" => "--mount=type=cache,target=/usr/local/share/.cache/yarn",
        _ => return None,
    })
}

fn base_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn is_assignment(word: &str) -> bool {
    let Some((name, _)) = word.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The places of `word` in `text` as a shell word: after the start, a
/// blank, an operator or a quote, and before the end, a blank, an
/// operator, a quote or a line continuation.
fn words(text: &str, word: &str) -> Vec<(usize, usize)> {
    let starts_word =
        |c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | '"' | '\'' | '`');
    let ends_word =
        |c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | ')' | '"' | '\'' | '`' | '\\');
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let start = from + i;
        let end = start + word.len();
        let before_ok = text[..start].chars().next_back().is_none_or(starts_word);
        let after_ok = text[end..].chars().next().is_none_or(ends_word);
        if before_ok && after_ok {
            out.push((start, end));
        }
        from = start + word.len().max(1);
    }
    out
}

/// Where the simple command starting at `start` ends: before `&&`, `||`,
/// `;`, `|`, a line continuation or the line's end, blanks excluded.
/// Quotes are skipped whole.
fn command_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = start;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b';' | b'|' | b'&' | b')' | b'#' => break,
                b'\\' if text[i + 1..].trim().is_empty() => break,
                _ => {}
            },
        }
        i += 1;
    }
    text[..i].trim_end_matches([' ', '\t']).len()
}

/// The words of the command after `from` (to its end), unquoted.
fn rest_words(text: &str, from: usize) -> Vec<String> {
    let end = command_end(text, from).max(from);
    text[from..end]
        .split_whitespace()
        .map(|w| w.trim_matches(['"', '\'']).to_string())
        .collect()
}

/// The places of the program word `program` in `text` whose command's
/// words after it pass `keep`.
fn commands_of(text: &str, program: &str, keep: impl Fn(&[String]) -> bool) -> Vec<(usize, usize)> {
    words(text, program)
        .into_iter()
        .filter(|&(_, end)| keep(&rest_words(text, end)))
        .collect()
}

/// Whether apt's words after the program install (or say nothing on
/// this line: the subcommand is on the next).
fn apt_installs(rest: &[String]) -> bool {
    let mut skip = false;
    for w in rest {
        if skip {
            skip = false;
            continue;
        }
        if matches!(w.as_str(), "-o" | "-c" | "-t") {
            skip = true;
            continue;
        }
        if w.starts_with('-') {
            continue;
        }
        return matches!(
            w.as_str(),
            "install" | "reinstall" | "upgrade" | "dist-upgrade" | "full-upgrade" | "build-dep"
        );
    }
    true
}

/// Whether pip's words after the program install (or say nothing here).
fn pip_installs(rest: &[String]) -> bool {
    rest.iter()
        .find(|w| !w.starts_with('-'))
        .is_none_or(|w| matches!(w.as_str(), "install" | "download" | "wheel"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_found_between_shell_delimiters_only() {
        let text = r#"RUN apt-get update && sh -c "apt-get install x" && my-apt-get apt-get-x"#;
        let found: Vec<&str> = words(text, "apt-get")
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(found.len(), 2);
        assert_eq!(command_end("a b && c", 0), 3);
        assert_eq!(command_end("a 'x && y' \\", 0), 10);
        assert_eq!(
            rest_words("apt-get -q install x && y", 7),
            ["-q", "install", "x"]
        );
    }

    #[test]
    fn insertions_at_one_place_keep_their_order() {
        let edits = vec![
            Edit::insert(4, "B ", 1),
            Edit::insert(4, "A ", 0),
            Edit::insert(11, " -y", 0),
        ];
        assert_eq!(apply("RUN apt-get x", edits), "RUN A B apt-get -y x");
    }
}
