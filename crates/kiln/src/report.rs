//! How errors reach the user: one line saying what failed, then, for
//! Dockerfile errors, the offending lines with their numbers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kiln_dockerfile::Location;

/// A Dockerfile error with the file and its text, so the lines can be shown.
#[derive(Debug)]
pub(crate) struct SourceError {
    pub(crate) path: PathBuf,
    pub(crate) source_text: String,
    pub(crate) location: Location,
    pub(crate) message: String,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.path.display(),
            self.location.start_line,
            self.message
        )
    }
}

impl std::error::Error for SourceError {}

impl SourceError {
    pub(crate) fn new(path: &Path, source_text: &str, location: Location, message: String) -> Self {
        SourceError {
            path: path.to_path_buf(),
            source_text: source_text.to_string(),
            location,
            message,
        }
    }

    /// The lines of the location, numbered, at most 6 of them.
    pub(crate) fn excerpt(&self) -> String {
        let mut out = String::new();
        let Location {
            start_line,
            end_line,
        } = self.location;
        if start_line == 0 {
            return out;
        }
        let end = end_line.max(start_line);
        let width = end.to_string().len();
        for (i, line) in self
            .source_text
            .lines()
            .enumerate()
            .skip(start_line - 1)
            .take(end - start_line + 1)
        {
            if i + 1 > start_line + 5 {
                let _ = writeln!(out, " {:>width$} | ...", "");
                break;
            }
            let _ = writeln!(out, " {:>width$} | {}", i + 1, line.trim_end_matches('\r'));
        }
        out
    }
}

pub(crate) fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
    if let Some(src) = err.downcast_ref::<SourceError>() {
        eprint!("{}", src.excerpt());
    }
}
