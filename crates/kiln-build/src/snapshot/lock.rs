//! The snapshotter's lock files: kiln-fs's `flock` files (see
//! [`kiln_fs::LockFile`] for why a lock answers "is anybody still working
//! on this?"), with the snapshotter's errors.

use std::path::Path;

pub(crate) use kiln_fs::{LockFile as Held, Probe, lock_path};

use super::SnapshotError;

/// Locks `path` exclusively (creating it if missing), waiting for the
/// holder. A holder is working on the same snapshot right now, and its
/// work (an unpack, a removal) is what the caller would do or needs done.
pub(crate) fn exclusive(path: &Path) -> Result<Held, SnapshotError> {
    kiln_fs::lock(path, kiln_fs::LockKind::Exclusive).map_err(SnapshotError::io("locking", path))
}

/// Locks `path` exclusively (creating it if missing) if nobody holds it.
pub(crate) fn try_exclusive(path: &Path) -> Result<Option<Held>, SnapshotError> {
    kiln_fs::try_lock(path, kiln_fs::LockKind::Exclusive)
        .map_err(SnapshotError::io("locking", path))
}

/// Tries to lock `path` exclusively without waiting or creating it.
pub(crate) fn probe(path: &Path) -> Result<Probe, SnapshotError> {
    kiln_fs::probe(path).map_err(SnapshotError::io("locking", path))
}

/// Creates a new lock file `<dir>/<pid>-<seq>-<label>.lock`, locked for as
/// long as the returned lock lives; returns it with its stem (the name
/// without `.lock`), which names what it guards.
pub(crate) fn create_owned(dir: &Path, label: &str) -> Result<(Held, String), SnapshotError> {
    let held = kiln_fs::create_owned(dir, &format!("-{label}.lock"))
        .map_err(SnapshotError::io("creating a lock file in", dir))?;
    let name = held
        .path()
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let stem = name.strip_suffix(".lock").unwrap_or(&name).to_owned();
    Ok((held, stem))
}

/// Writes the note a live holder leaves for others (what it pins).
pub(crate) fn write_note(held: &mut Held, note: &str) -> Result<(), SnapshotError> {
    let path = held.path().to_path_buf();
    held.write_note(note)
        .map_err(SnapshotError::io("writing", path))
}

/// Unlinks a held lock file, so nobody who locks it later mistakes it for
/// a live one.
pub(crate) fn unlink(held: Held) -> Result<(), SnapshotError> {
    let path = held.path().to_path_buf();
    held.unlink().map_err(SnapshotError::io("removing", path))
}

/// The note a live holder wrote into its lock file (what it pins).
pub(crate) fn read_note(path: &Path) -> Result<String, SnapshotError> {
    kiln_fs::read_note(path).map_err(SnapshotError::io("reading", path))
}
