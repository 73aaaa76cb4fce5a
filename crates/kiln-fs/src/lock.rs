//! Lock files (`flock(2)`) that say who is working on what.
//!
//! flock locks belong to an open file description and the kernel drops
//! them when the holder dies, however it dies (kill -9 included): "is
//! anybody still using this?" is answered by trying to lock its file. Two
//! threads of one process conflict too, as each opens its own description.
//!
//! A lock file may be unlinked by whoever holds it (a removed snapshot, a
//! finished lease). A waiter that then gets the lock holds a file nobody
//! will look at again, so every acquisition checks, once locked, that the
//! file is still linked, and starts over if not.
//!
//! Errors are `io::Error`s that name the lock file.

use std::fs::TryLockError;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared (readers) or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// A held lock, released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct LockFile {
    file: Option<fs_err::File>,
    /// A note was written: it is cleared before the lock goes, so a note is
    /// only ever read while its writer holds the lock.
    noted: bool,
}

impl LockFile {
    fn new(file: fs_err::File) -> LockFile {
        LockFile {
            file: Some(file),
            noted: false,
        }
    }

    fn file(&self) -> &fs_err::File {
        self.file.as_ref().expect("present until dropped")
    }

    pub fn path(&self) -> &Path {
        self.file().path()
    }

    /// Replaces the file's contents with a note for other processes (what
    /// the holder pins, who it is). Written before the holder acts on it.
    pub fn write_note(&mut self, note: &str) -> io::Result<()> {
        self.noted = true;
        let mut file = self.file();
        file.set_len(0)?;
        file.write_all(note.as_bytes())
    }

    /// Unlinks the file, still holding the lock, so nobody who locks it
    /// later mistakes it for a live one (they find it unlinked).
    pub fn unlink(self) -> io::Result<()> {
        match fs_err::remove_file(self.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The open file, locked for as long as it stays open: for files whose
    /// contents are data (a blob being written, a lease's list).
    pub fn into_file(mut self) -> fs_err::File {
        self.noted = false;
        self.file.take().expect("present until dropped")
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if self.noted
            && let Some(file) = &self.file
        {
            // Best effort: the note only serves the messages of waiters.
            let _ = file.set_len(0);
        }
    }
}

/// Locks `path` (creating it if missing), waiting for the holder.
pub fn lock(path: &Path, kind: LockKind) -> io::Result<LockFile> {
    loop {
        let file = open(path)?;
        match kind {
            LockKind::Shared => file.lock_shared()?,
            LockKind::Exclusive => file.lock()?,
        }
        if linked(&file)? {
            return Ok(LockFile::new(file));
        }
    }
}

/// Locks `path` (creating it if missing) if nobody holds it in a
/// conflicting way.
pub fn try_lock(path: &Path, kind: LockKind) -> io::Result<Option<LockFile>> {
    loop {
        match try_locking(open(path)?, kind)? {
            None => return Ok(None),
            Some(held) if linked(held.file())? => return Ok(Some(held)),
            // Unlinked by its holder between our open and our lock.
            Some(_) => continue,
        }
    }
}

/// What trying a lock found.
#[derive(Debug)]
pub enum Probe {
    /// No such lock file (or one its last holder unlinked).
    Missing,
    /// A live process holds it.
    Busy,
    /// Nobody held it: its owner, if it had one, is dead. Now ours.
    Free(LockFile),
}

/// Tries to lock `path` exclusively without waiting or creating it.
pub fn probe(path: &Path) -> io::Result<Probe> {
    let file = match fs_err::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
        Err(e) => return Err(e),
    };
    Ok(match try_locking_past_forks(file)? {
        None => Probe::Busy,
        Some(held) if linked(held.file())? => Probe::Free(held),
        // Unlinked by its last holder: nobody looks at it again.
        Some(_) => Probe::Missing,
    })
}

/// How long [`lock_waiting`] waits, and when it says so.
#[derive(Clone, Copy)]
pub struct Patience<'a> {
    /// Give up after this long.
    pub timeout: Duration,
    /// Call `on_wait` once the wait is this long.
    pub report_after: Duration,
    /// Told how long the wait has been and what the holder's note says.
    pub on_wait: Option<&'a (dyn Fn(Duration, Option<String>) + Sync)>,
}

/// A lock not acquired within its [`Patience`].
#[derive(Debug, thiserror::Error)]
pub enum LockWaitError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("waited {waited:?} for the lock {}", path.display())]
    TimedOut {
        path: PathBuf,
        waited: Duration,
        /// The note an exclusive holder left: `pid 123: prune`.
        holder: Option<String>,
    },
}

/// Locks `path` (created if missing), polling until `patience.timeout`;
/// the wait is reported once through `patience.on_wait`, naming the holder.
/// An exclusive holder records itself as `pid N: <operation>`.
pub fn lock_waiting(
    path: &Path,
    kind: LockKind,
    operation: &str,
    patience: &Patience<'_>,
) -> Result<LockFile, LockWaitError> {
    let start = Instant::now();
    let mut reported = false;
    let mut pause = Duration::from_millis(1);
    let mut held = loop {
        if let Some(held) = try_lock(path, kind)? {
            break held;
        }
        let waited = start.elapsed();
        if waited >= patience.timeout {
            return Err(LockWaitError::TimedOut {
                path: path.to_path_buf(),
                waited,
                holder: holder_note(path),
            });
        }
        if !reported && waited >= patience.report_after {
            reported = true;
            if let Some(hook) = patience.on_wait {
                hook(waited, holder_note(path));
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    };
    if kind == LockKind::Exclusive {
        // Best effort: the note only serves the messages of waiters.
        let _ = held.write_note(&format!("pid {}: {operation}\n", std::process::id()));
    }
    Ok(held)
}

/// The note a holder left in a lock file, trimmed; `None` if empty.
pub fn holder_note(path: &Path) -> Option<String> {
    let mut text = String::new();
    fs_err::File::open(path)
        .ok()?
        .take(256)
        .read_to_string(&mut text)
        .ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The whole note a live holder wrote into its lock file (what it pins);
/// empty if the file is gone.
pub fn read_note(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    match fs_err::File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)?;
            Ok(text)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(text),
        Err(e) => Err(e),
    }
}

/// Creates a new file `<dir>/<pid>-<n><suffix>`, locked exclusively for as
/// long as the returned lock lives. A file nobody holds belongs to a dead
/// process: [`remove_if_abandoned`] may delete it at any time, even between
/// our create and our lock, so after locking we check that it is still
/// linked, and start over with a new name if not.
pub fn create_owned(dir: &Path, suffix: &str) -> io::Result<LockFile> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let name = format!(
            "{}-{}{suffix}",
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
            // Left by an earlier process with our pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        file.lock()?;
        if linked(&file)? {
            return Ok(LockFile::new(file));
        }
    }
}

/// Deletes `path` if no live process holds its lock (see
/// [`create_owned`]). Returns whether it was deleted. The lock is held
/// while unlinking, so an owner that locks it afterwards finds it unlinked.
pub fn remove_if_abandoned(path: &Path) -> io::Result<bool> {
    let file = match fs_err::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if try_locking_past_forks(file)?.is_none() {
        return Ok(false);
    }
    match fs_err::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The name a lock file gets beside what it guards: `<name>.lock`.
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

fn open(path: &Path) -> io::Result<fs_err::File> {
    fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// How long [`try_locking_past_forks`] waits for a dead owner's child.
const FORK_GRACE: Duration = Duration::from_secs(10);

/// Locks `file` exclusively if nobody holds it, as [`try_locking`]; but a
/// lock file [`create_owned`] made whose owner is dead and which is still
/// held is waited for (up to [`FORK_GRACE`]). Its holder then is a child
/// the owner forked that has not reached its `exec` yet: std opens every
/// file O_CLOEXEC, so the child holds the owner's locks only until then. A
/// sweep that took that moment for a live owner left the dead owner's
/// mounts and directories behind until some later command swept again.
fn try_locking_past_forks(file: fs_err::File) -> io::Result<Option<LockFile>> {
    let dead_owner = owner_pid(file.path()).filter(|&pid| !process_alive(pid));
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(LockFile::new(file))),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(locking_error(&file, e)),
        }
        if dead_owner.is_none() || started.elapsed() >= FORK_GRACE {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid a [`create_owned`] name starts with (`<pid>-<seq><suffix>`).
fn owner_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let (pid, rest) = name.split_once('-')?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .filter(|seq| !seq.is_empty())?;
    pid.parse().ok()
}

/// Whether process `pid` exists (a zombie too: whoever reaps it sweeps
/// after it).
fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `None` if another open file description holds the lock.
fn try_locking(file: fs_err::File, kind: LockKind) -> io::Result<Option<LockFile>> {
    let attempt = match kind {
        LockKind::Shared => file.try_lock_shared(),
        LockKind::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => Ok(Some(LockFile::new(file))),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(locking_error(&file, e)),
    }
}

fn locking_error(file: &fs_err::File, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("locking {}: {e}", file.path().display()))
}

fn linked(file: &fs_err::File) -> io::Result<bool> {
    Ok(file.metadata()?.nlink() > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn a_held_lock_is_busy_and_an_unlinked_one_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = lock_path(tmp.path(), "x");
        assert!(matches!(probe(&path).unwrap(), Probe::Missing));
        let held = lock(&path, LockKind::Exclusive).unwrap();
        // Another description in the same process conflicts.
        assert!(matches!(probe(&path).unwrap(), Probe::Busy));
        assert!(try_lock(&path, LockKind::Shared).unwrap().is_none());
        drop(held);
        let Probe::Free(held) = probe(&path).unwrap() else {
            panic!("a released lock is free");
        };
        held.unlink().unwrap();
        assert!(matches!(probe(&path).unwrap(), Probe::Missing));
    }

    /// A pid no process has: one of a child that has been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_dead_owners_lock_held_by_its_forked_child_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        // As `create_owned` names it, for an owner that has died; another
        // description (the owner's child before its exec) still holds it.
        let path = tmp.path().join(format!("{}-3-root.lock", dead_pid()));
        let child = lock(&path, LockKind::Exclusive).unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(child);
        });
        let started = Instant::now();
        let Probe::Free(held) = probe(&path).unwrap() else {
            panic!("the dead owner's lock is free once its child lets go");
        };
        assert!(started.elapsed() >= Duration::from_millis(250));
        released.join().unwrap();
        drop(held);

        // A live owner's (ours) is busy at once, as is a name of no owner.
        for name in [
            format!("{}-4-root.lock", std::process::id()),
            "x.lock".into(),
        ] {
            let path = tmp.path().join(name);
            let _held = lock(&path, LockKind::Exclusive).unwrap();
            let started = Instant::now();
            assert!(matches!(probe(&path).unwrap(), Probe::Busy));
            assert!(!remove_if_abandoned(&path).unwrap());
            assert!(
                started.elapsed() < FORK_GRACE / 2,
                "no wait for a live owner"
            );
        }
    }

    #[test]
    fn shared_holders_share() {
        let tmp = tempfile::tempdir().unwrap();
        let path = lock_path(tmp.path(), "s");
        let a = lock(&path, LockKind::Shared).unwrap();
        let b = try_lock(&path, LockKind::Shared).unwrap();
        assert!(b.is_some());
        assert!(try_lock(&path, LockKind::Exclusive).unwrap().is_none());
        drop((a, b));
        assert!(try_lock(&path, LockKind::Exclusive).unwrap().is_some());
    }

    #[test]
    fn owned_files_carry_notes_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let mut held = create_owned(tmp.path(), "-k.lock").unwrap();
        let name = held
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(name.starts_with(&format!("{}-", std::process::id())));
        assert!(name.ends_with("-k.lock"));
        held.write_note("chain a\n").unwrap();
        let path = held.path().to_path_buf();
        assert_eq!(read_note(&path).unwrap(), "chain a\n");
        assert!(matches!(probe(&path).unwrap(), Probe::Busy));
        assert!(!remove_if_abandoned(&path).unwrap());
        drop(held);
        assert_eq!(read_note(&path).unwrap(), "");
        assert!(remove_if_abandoned(&path).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn data_files_keep_their_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let mut file = create_owned(tmp.path(), ".partial").unwrap().into_file();
        file.write_all(b"blob bytes").unwrap();
        let path = file.path().to_path_buf();
        assert!(!remove_if_abandoned(&path).unwrap(), "still locked");
        drop(file);
        assert_eq!(fs_err::read(&path).unwrap(), b"blob bytes");
    }

    #[test]
    fn a_wait_is_reported_once_and_times_out_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("index.lock");
        let _holder = lock_waiting(
            &path,
            LockKind::Exclusive,
            "prune",
            &Patience {
                timeout: Duration::from_secs(1),
                report_after: Duration::ZERO,
                on_wait: None,
            },
        )
        .unwrap();
        let seen = Mutex::new(Vec::new());
        let hook = |waited: Duration, holder: Option<String>| {
            seen.lock().unwrap().push((waited, holder));
        };
        let err = lock_waiting(
            &path,
            LockKind::Shared,
            "gc",
            &Patience {
                timeout: Duration::from_millis(200),
                report_after: Duration::from_millis(20),
                on_wait: Some(&hook),
            },
        )
        .unwrap_err();
        let want = format!("pid {}: prune", std::process::id());
        match err {
            LockWaitError::TimedOut { holder, waited, .. } => {
                assert_eq!(holder.as_deref(), Some(want.as_str()));
                assert!(waited >= Duration::from_millis(200));
            }
            other => panic!("{other}"),
        }
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1.as_deref(), Some(want.as_str()));
    }
}
