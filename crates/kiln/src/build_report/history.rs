//! Where reports are written: the directory of `--report DIR`, and the
//! store's history (`<store root>/history/<id>/`), which keeps the last
//! [`History::KEEP`] builds (`KILN_HISTORY_KEEP` to change it) for
//! `kiln history`.
//!
//! Each file is written whole or not at all (a temp file beside it,
//! fsynced, renamed); a history entry appears whole too (its directory is
//! filled under a temp name, then renamed). Temp directories a killed kiln
//! left are swept by the next one that saves a report.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use super::model::Report;
use super::{HTML_FILE, JSON_FILE};

/// Writes `report.json` and `report.html` into `dir`, made if missing.
pub(crate) fn write_report(dir: &Path, report: &Report, html: &str) -> anyhow::Result<()> {
    fs_err::create_dir_all(dir)?;
    let json = to_json(report);
    write_atomically(&dir.join(JSON_FILE), json.as_bytes())?;
    write_atomically(&dir.join(HTML_FILE), html.as_bytes())?;
    Ok(())
}

fn to_json(report: &Report) -> String {
    let mut json = serde_json::to_string_pretty(report).expect("a report serialises to JSON");
    json.push('\n');
    json
}

/// `bytes` at `path`, whole or not at all, mode 0644.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    crate::files::write_whole(
        path,
        bytes,
        std::fs::Permissions::from_mode(0o644),
        "report",
        "",
    )
}

/// The reports kept in a store.
pub(crate) struct History {
    dir: PathBuf,
    /// How many builds [`save`](History::save) keeps.
    keep: usize,
}

/// One build in the history, as `kiln history` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) started_at: String,
    pub(crate) target: String,
    pub(crate) status: String,
    pub(crate) duration_ms: u64,
    pub(crate) steps: u32,
    pub(crate) cached: u32,
}

/// What the list reads of a report: little, so that reports of other
/// versions list too.
#[derive(Deserialize)]
struct Summary {
    id: String,
    build: BuildSummary,
    #[serde(default)]
    totals: TotalsSummary,
}

#[derive(Deserialize)]
struct BuildSummary {
    status: String,
    started_at: String,
    duration_ms: u64,
    target: Option<String>,
}

#[derive(Deserialize, Default)]
struct TotalsSummary {
    #[serde(default)]
    steps: u32,
    #[serde(default)]
    cached: u32,
    #[serde(default)]
    remote_cached: u32,
}

/// Temp directories of entries being written.
const TEMP_PREFIX: &str = ".new-";

impl History {
    /// How many builds the history keeps unless [`KEEP_VAR`](Self::KEEP_VAR)
    /// says; the oldest go first.
    pub(crate) const KEEP: usize = 50;

    /// The environment variable that sets how many builds are kept (0:
    /// none; the history is then emptied by the next build).
    pub(crate) const KEEP_VAR: &str = "KILN_HISTORY_KEEP";

    /// The history of the store at `root`, keeping [`History::KEEP`] builds.
    pub(crate) fn new(root: &Path) -> History {
        History {
            dir: root.join("history"),
            keep: Self::KEEP,
        }
    }

    /// The history of the store at `root`, keeping as many builds as
    /// `KILN_HISTORY_KEEP` says (a count), else [`History::KEEP`].
    pub(crate) fn from_env(root: &Path) -> anyhow::Result<History> {
        let keep = Self::keep_from(std::env::var_os(Self::KEEP_VAR).as_deref())?;
        Ok(History::new(root).keeping(keep))
    }

    /// How many builds to keep, given the variable's value.
    pub(crate) fn keep_from(value: Option<&std::ffi::OsStr>) -> anyhow::Result<usize> {
        let Some(value) = value else {
            return Ok(Self::KEEP);
        };
        value
            .to_str()
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| {
                format!(
                    "{}={}: not a number of builds to keep",
                    Self::KEEP_VAR,
                    value.to_string_lossy()
                )
            })
    }

    /// This history, keeping `keep` builds.
    pub(crate) fn keeping(self, keep: usize) -> History {
        History { keep, ..self }
    }

    /// Keeps `report` (and its page) as entry `report.id`, then drops the
    /// oldest entries beyond the number it keeps. Returns the entry's
    /// directory.
    pub(crate) fn save(&self, report: &Report, html: &str) -> anyhow::Result<PathBuf> {
        let _ = kiln_fs::sweep(&self.dir, TEMP_PREFIX);
        let temp = kiln_fs::OwnedDir::create(&self.dir, TEMP_PREFIX)
            .with_context(|| format!("making a temp dir in {}", self.dir.display()))?;
        write_report(temp.path(), report, html)?;
        let entry = self.dir.join(&report.id);
        fs_err::rename(temp.path(), &entry)?;
        // The new name, durably.
        if let Ok(dir) = fs_err::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.prune(self.keep)?;
        Ok(entry)
    }

    /// The entries' ids, oldest first.
    fn ids(&self) -> anyhow::Result<Vec<String>> {
        let entries = match fs_err::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes the oldest entries until `keep` are left; returns how many
    /// it removed.
    pub(crate) fn prune(&self, keep: usize) -> anyhow::Result<usize> {
        let ids = self.ids()?;
        let extra = ids.len().saturating_sub(keep);
        for id in &ids[..extra] {
            match fs_err::remove_dir_all(self.dir.join(id)) {
                // Another kiln pruned it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(extra)
    }

    /// The entries, newest first; unreadable ones are left out.
    pub(crate) fn list(&self) -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for id in self.ids()?.into_iter().rev() {
            let Ok(bytes) = fs_err::read(self.dir.join(&id).join(JSON_FILE)) else {
                continue;
            };
            let Ok(s) = serde_json::from_slice::<Summary>(&bytes) else {
                continue;
            };
            out.push(Entry {
                id: s.id,
                started_at: s.build.started_at,
                target: s.build.target.unwrap_or_default(),
                status: s.build.status,
                duration_ms: s.build.duration_ms,
                steps: s.totals.steps,
                cached: s.totals.cached + s.totals.remote_cached,
            });
        }
        Ok(out)
    }

    /// The directory of entry `id`, or of the one entry whose id starts
    /// with it.
    pub(crate) fn find(&self, id: &str) -> anyhow::Result<PathBuf> {
        let ids = self.ids()?;
        if ids.iter().any(|i| i == id) {
            return Ok(self.dir.join(id));
        }
        let matching: Vec<&String> = ids.iter().filter(|i| i.starts_with(id)).collect();
        match matching.as_slice() {
            [one] if !id.is_empty() => Ok(self.dir.join(one)),
            [] | [_] => anyhow::bail!(
                "no build {id:?} in the history of {} (`kiln history` lists them)",
                self.dir.display()
            ),
            many => anyhow::bail!(
                "{id:?} names {} builds ({}...); give more of the id",
                many.len(),
                many[..2]
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
