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

/// An error as [`print_error`] shows it (without its notes), for a build's
/// report.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut text = format!("{err:#}");
    if let Some(src) = err.downcast_ref::<SourceError>() {
        text.push('\n');
        text.push_str(src.excerpt().trim_end());
    }
    text
}

pub(crate) fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
    if let Some(src) = err.downcast_ref::<SourceError>() {
        eprint!("{}", src.excerpt());
    }
    if err.chain().any(out_of_space) {
        for note in space_notes(&format!("{err:#}")) {
            eprintln!("note: {note}");
        }
    }
}

/// Where a command writes (kiln's store, its outputs): the filesystems an
/// error for want of space names.
static WRITES_TO: std::sync::Mutex<Vec<(String, std::path::PathBuf)>> =
    std::sync::Mutex::new(Vec::new());

/// Notes that the command writes `what` at `path` (it, or the nearest
/// directory above it that exists, names the filesystem).
pub(crate) fn writes_to(what: &str, path: &std::path::Path) {
    WRITES_TO
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((what.to_string(), path.to_path_buf()));
}

/// Whether an error is a full disk or quota, however it was wrapped.
fn out_of_space(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && matches!(
            io.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
    {
        return true;
    }
    // Errors that went through a string (a registry's, a thread's).
    let text = e.to_string();
    text.contains("No space left on device") || text.contains("Disk quota exceeded")
}

/// One line per filesystem written to: `kiln's store is on /mnt (ext4,
/// ...)`; only those the error's text names a path on, when it names any.
fn space_notes(error: &str) -> Vec<String> {
    let places = WRITES_TO.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut found: Vec<(String, kiln_fs::Space)> = Vec::new();
    for (what, path) in places {
        let existing = path.ancestors().find(|p| p.exists()).map(Path::to_path_buf);
        let Some(space) = existing.and_then(|p| kiln_fs::Space::of(&p).ok()) else {
            continue;
        };
        if !found
            .iter()
            .any(|(_, s)| s.mount_point == space.mount_point)
        {
            found.push((what, space));
        }
    }
    // The deepest mount point an error's path is under is the one it was
    // written on.
    let named = found
        .iter()
        .filter(|(_, s)| error.contains(&*s.mount_point.to_string_lossy()))
        .max_by_key(|(_, s)| s.mount_point.components().count())
        .map(|(_, s)| s.mount_point.clone());
    found
        .into_iter()
        .filter(|(_, s)| named.as_ref().is_none_or(|m| *m == s.mount_point))
        .map(|(what, space)| {
            format!(
                "no space left: {what} is on {} (free again: kiln removed what it had \
                 written)",
                space.describe()
            )
        })
        .collect()
}
