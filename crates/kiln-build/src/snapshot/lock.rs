//! Lock files (`flock(2)`) that say who is working on what.
//!
//! flock locks belong to an open file description and the kernel drops
//! them when the holder dies, however it dies (kill -9 included): "is
//! anybody still making this snapshot / using this mount?" is answered by
//! trying to lock its file. Two threads of one process conflict too, as
//! each opens its own description.
//!
//! A lock file may be unlinked by whoever holds it (a removed snapshot, a
//! finished mount). A waiter that then gets the lock holds a file nobody
//! will look at again, so every acquisition checks, once locked, that the
//! file is still linked, and starts over if not.

use std::fs::TryLockError;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SnapshotError;

/// A lock held until dropped (closing the file releases it).
#[derive(Debug)]
pub(crate) struct Held {
    file: fs_err::File,
}

impl Held {
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// Replaces the file's contents (a note for other processes: pins,
    /// owner). Written before the holder acts on what it pins.
    pub(crate) fn write_note(&mut self, note: &str) -> Result<(), SnapshotError> {
        let path = self.path().to_path_buf();
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all(note.as_bytes()))
            .map_err(SnapshotError::io("writing", path))
    }

    /// Unlinks the file, still holding the lock, so nobody who locks it
    /// later mistakes it for a live one (they find it unlinked).
    pub(crate) fn unlink(self) -> Result<(), SnapshotError> {
        match fs_err::remove_file(self.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::io("removing", self.path())(e)),
        }
    }
}

/// Locks `path` exclusively (creating it if missing), waiting for the
/// holder. A holder is working on the same snapshot right now, and its
/// work (an unpack, a removal) is what the caller would do or needs done.
pub(crate) fn exclusive(path: &Path) -> Result<Held, SnapshotError> {
    loop {
        let file = open(path)?;
        file.lock().map_err(SnapshotError::io("locking", path))?;
        if linked(&file)? {
            return Ok(Held { file });
        }
    }
}

/// What trying a lock found.
#[derive(Debug)]
pub(crate) enum Probe {
    /// No such lock file.
    Missing,
    /// A live process holds it.
    Busy,
    /// Nobody held it: its owner, if it had one, is dead. Now ours.
    Free(Held),
}

/// Tries to lock `path` exclusively without waiting or creating it.
pub(crate) fn probe(path: &Path) -> Result<Probe, SnapshotError> {
    let file = match fs_err::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
        Err(e) => return Err(SnapshotError::io("opening", path)(e)),
    };
    Ok(match try_lock(file)? {
        None => Probe::Busy,
        Some(held) if linked(&held.file)? => Probe::Free(held),
        // Unlinked by its last holder: nobody looks at it again.
        Some(_) => Probe::Missing,
    })
}

/// Locks `path` exclusively (creating it if missing) if nobody holds it.
pub(crate) fn try_exclusive(path: &Path) -> Result<Option<Held>, SnapshotError> {
    loop {
        match try_lock(open(path)?)? {
            None => return Ok(None),
            Some(held) if linked(&held.file)? => return Ok(Some(held)),
            // Unlinked by its holder between our open and our lock.
            Some(_) => continue,
        }
    }
}

/// `None` if another open file description holds the lock.
fn try_lock(file: fs_err::File) -> Result<Option<Held>, SnapshotError> {
    match file.try_lock() {
        Ok(()) => Ok(Some(Held { file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(SnapshotError::io("locking", file.path())(e)),
    }
}

/// Creates a new lock file `<dir>/<pid>-<seq>-<label>.lock`, locked for as
/// long as the returned [`Held`] lives; returns it with its stem (the name
/// without `.lock`). A lock file nobody holds is abandoned: a sweep may
/// remove it between our create and our lock, so after locking we check
/// that it is still linked, and start over with a new name if not.
pub(crate) fn create_owned(dir: &Path, label: &str) -> Result<(Held, String), SnapshotError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let stem = format!(
            "{}-{}-{label}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(format!("{stem}.lock"));
        let file = match fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SnapshotError::io("creating", &path)(e)),
        };
        file.lock().map_err(SnapshotError::io("locking", &path))?;
        if linked(&file)? {
            return Ok((Held { file }, stem));
        }
    }
}

/// The note a live holder wrote into its lock file (what it pins).
pub(crate) fn read_note(path: &Path) -> Result<String, SnapshotError> {
    let mut text = String::new();
    match fs_err::File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .map_err(SnapshotError::io("reading", path))?;
            Ok(text)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(text),
        Err(e) => Err(SnapshotError::io("opening", path)(e)),
    }
}

fn open(path: &Path) -> Result<fs_err::File, SnapshotError> {
    fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(SnapshotError::io("opening", path))
}

fn linked(file: &fs_err::File) -> Result<bool, SnapshotError> {
    let meta = file
        .metadata()
        .map_err(SnapshotError::io("inspecting", file.path()))?;
    Ok(meta.nlink() > 0)
}

/// The name a lock file gets beside what it guards: `<name>.lock`.
pub(crate) fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_busy_and_an_unlinked_one_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = lock_path(tmp.path(), "x");
        assert!(matches!(probe(&path).unwrap(), Probe::Missing));
        let held = exclusive(&path).unwrap();
        // Another description in the same process conflicts.
        assert!(matches!(probe(&path).unwrap(), Probe::Busy));
        drop(held);
        let Probe::Free(held) = probe(&path).unwrap() else {
            panic!("a released lock is free");
        };
        held.unlink().unwrap();
        assert!(matches!(probe(&path).unwrap(), Probe::Missing));
    }

    #[test]
    fn owned_files_carry_notes() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut held, stem) = create_owned(tmp.path(), "k").unwrap();
        assert!(stem.starts_with(&format!("{}-", std::process::id())));
        assert!(stem.ends_with("-k"));
        held.write_note("chain a\n").unwrap();
        assert_eq!(read_note(held.path()).unwrap(), "chain a\n");
        assert!(matches!(probe(held.path()).unwrap(), Probe::Busy));
    }
}
