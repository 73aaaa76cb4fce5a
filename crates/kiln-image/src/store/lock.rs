//! File locks (`flock(2)`, through std's `File::lock`) with a bounded,
//! reported wait, and files whose liveness is their lock.
//!
//! flock locks belong to an open file description: the kernel drops them
//! when the holder dies, however it dies, so a lock never outlives its
//! process and "is anybody still using this file?" is answered by trying
//! to lock it.

use std::fs::TryLockError;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::store::{LockWait, StoreError, StoreOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; dropping it closes the file, which releases the lock.
#[derive(Debug)]
pub(crate) struct Guard {
    file: fs_err::File,
    exclusive: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Clear our note before the lock goes, so a note is only ever read
        // while its writer holds the lock (shared holders write none).
        if self.exclusive {
            let _ = self.file.set_len(0);
        }
    }
}

/// Locks `path` (created if missing), polling until `options.lock_timeout`.
/// After `options.report_after` the wait is reported once through
/// `options.on_lock_wait`, naming the holder an exclusive holder wrote into
/// the file. An exclusive holder records itself as `pid N: <operation>`.
pub(crate) fn acquire(
    path: &Path,
    mode: Mode,
    operation: &str,
    options: &StoreOptions,
) -> Result<Guard, StoreError> {
    let file = fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(StoreError::io(path))?;
    let start = Instant::now();
    let mut reported = false;
    let mut pause = Duration::from_millis(1);
    loop {
        let attempt = match mode {
            Mode::Shared => file.try_lock_shared(),
            Mode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(StoreError::io(path)(e)),
        }
        let waited = start.elapsed();
        if waited >= options.lock_timeout {
            return Err(StoreError::LockTimeout {
                path: path.to_path_buf(),
                waited,
                holder: holder(path),
            });
        }
        if !reported && waited >= options.report_after {
            reported = true;
            if let Some(hook) = &options.on_lock_wait {
                hook(&LockWait {
                    lock: path.to_path_buf(),
                    holder: holder(path),
                    waited,
                    timeout: options.lock_timeout,
                });
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    if mode == Mode::Exclusive {
        // Best effort: the note only serves the messages of waiters.
        let note = format!("pid {}: {operation}\n", std::process::id());
        let _ = file
            .set_len(0)
            .and_then(|()| (&file).write_all(note.as_bytes()));
    }
    Ok(Guard {
        file,
        exclusive: mode == Mode::Exclusive,
    })
}

/// The holder note of a lock file, if any.
fn holder(path: &Path) -> Option<String> {
    let mut text = String::new();
    fs_err::File::open(path)
        .ok()?
        .take(256)
        .read_to_string(&mut text)
        .ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Creates a new file in `dir`, named `<pid>-<unique><suffix>`, and locks
/// it exclusively for as long as the returned file is open. A file that
/// is not locked belongs to a dead process: [`remove_if_abandoned`] may
/// delete it at any time, even between our create and our lock, so after
/// locking we check it is still linked, and start again if not.
pub(crate) fn create_owned(
    dir: &Path,
    suffix: &str,
) -> Result<(fs_err::File, PathBuf), StoreError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{}-{}-{nanos:08x}{suffix}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = match fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        file.lock().map_err(StoreError::io(&path))?;
        let linked = file.metadata().map_err(StoreError::io(&path))?.nlink() > 0;
        if linked {
            return Ok((file, path));
        }
    }
}

/// Deletes `path` if no live process holds its lock (see [`create_owned`]).
/// Returns whether it was deleted. The lock is held while unlinking, so an
/// owner that locks it afterwards finds it unlinked.
pub(crate) fn remove_if_abandoned(path: &Path) -> Result<bool, StoreError> {
    let file = match fs_err::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(path)(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(e)) => return Err(StoreError::io(path)(e)),
    }
    match fs_err::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path)(e)),
    }
}
