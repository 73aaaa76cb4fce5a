//! Reading an ignore file into patterns (`moby/patternmatcher/ignorefile`'s
//! `ReadAll`) and finding which ignore file a build uses.

use std::path::{Path, PathBuf};

use super::error::PatternError;
use super::path::clean_path;

/// Go's `bufio.Scanner` fails on a line (without its `\n`) of this many bytes
/// or more, and `ReadAll` then fails the whole file.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// The name of the ignore file at the root of a build context.
const DOCKERIGNORE: &str = ".dockerignore";

/// The patterns of an ignore file, in order, ready for
/// [`PatternMatcher::new`](super::PatternMatcher::new), as Docker's
/// `ReadAll` reads them:
///
/// * a UTF-8 byte order mark at the start of the file is dropped;
/// * a line whose first character is `#` is a comment (only in the first
///   column: ` # x` is the pattern `# x`);
/// * lines are trimmed, and empty ones dropped;
/// * a leading `!` is split off and what follows it trimmed again, so
///   `! /x` is `!x`; a lone `!` is kept (and then rejected by the matcher);
/// * the rest is cleaned like a path ([`clean_path`]) and one leading `/` is
///   removed, so `/docs/` is `docs`, because patterns are relative to the
///   context root.
///
/// Lines end at `\n`, and a `\r` before it is dropped. A line of 64 KiB or
/// more makes Docker reject the file, and so it does here.
pub fn read_ignore_file(text: &str) -> Result<Vec<String>, PatternError> {
    // Go strips the mark from the first line after reading it, so it still
    // counts towards that line's length.
    let (text, mut mark) = match text.strip_prefix('\u{feff}') {
        Some(rest) => (rest, '\u{feff}'.len_utf8()),
        None => (text, 0),
    };
    let mut patterns = Vec::new();
    for (index, line) in lines(text).enumerate() {
        if line.len() + std::mem::take(&mut mark) >= MAX_LINE {
            return Err(PatternError::LineTooLong { line: index + 1 });
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (invert, body) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = String::with_capacity(line.len());
        if invert {
            pattern.push('!');
        }
        if !body.is_empty() {
            let cleaned = clean_path(body);
            // Only `/` itself keeps its slash.
            match cleaned.strip_prefix('/') {
                Some(relative) if !relative.is_empty() => pattern.push_str(relative),
                _ => pattern.push_str(&cleaned),
            }
        }
        patterns.push(pattern);
    }
    Ok(patterns)
}

/// The lines of `text` as Go's `bufio.ScanLines` yields them (before it drops
/// a final `\r`): split at `\n`, with no empty line after a final `\n`.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    // An empty text has no lines at all, not one empty line.
    (!text.is_empty())
        .then(|| body.split('\n'))
        .into_iter()
        .flatten()
}

/// The ignore files that apply to a build with the given Dockerfile and
/// context directory, most specific first; the first one that exists is
/// used, even when it is empty, and the others are then ignored:
///
/// 1. `<Dockerfile name>.dockerignore` beside the Dockerfile
///    (`build/Dockerfile.dev` → `build/Dockerfile.dev.dockerignore`), which
///    BuildKit's Dockerfile frontend reads first;
/// 2. `.dockerignore` at the root of the context.
///
/// Pure: nothing is looked up on disk. A Dockerfile path without a file name
/// (e.g. `..`) has no Dockerfile-specific ignore file.
pub fn ignore_file_candidates(dockerfile: &Path, context: &Path) -> Vec<PathBuf> {
    let mut candidates = Vec::with_capacity(2);
    if let Some(name) = dockerfile.file_name() {
        let mut ignore_name = name.to_os_string();
        ignore_name.push(DOCKERIGNORE);
        candidates.push(dockerfile.with_file_name(ignore_name));
    }
    candidates.push(context.join(DOCKERIGNORE));
    candidates
}
