//! The content-hash memo (see [`HashMemo`]).

use std::collections::HashMap;
use std::ops::Sub;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_image::{ContextHashRecord, Store};

use super::error::ContextError;
use super::stat::FileKey;

/// How recently changed a file may be and still have its hash remembered.
pub(crate) const DEFAULT_RACY_WINDOW: Duration = Duration::from_secs(1);

/// Content hashes of context files, remembered across digests and, with a
/// store, across builds. Share one per build (it is `Sync`); its
/// [`stats`](Self::stats) add up over every digest computed with it.
///
/// A file's SHA-256, remembered by device and inode
/// with the stat fields that prove the file unchanged, so an unchanged
/// context is never read twice, not even by the next build.
///
/// A remembered hash holds while the file's (device, inode, size, mtime,
/// ctime) are what they were when it was read, to the nanosecond. mtime
/// alone is not enough: `touch -d`, `tar x`, `rsync -t` and `cp -p` put an
/// old mtime back on new content, and same-size edits are common (a
/// version string, a flipped flag). ctime cannot be set from user space:
/// any write, rename, chmod or xattr change moves it to "now". The price is
/// a re-read after a metadata-only change, which hashes to the same digest.
///
/// ctime has one blind spot: timestamps come from a coarse clock (a kernel
/// tick, milliseconds), so a file read and then written again within the
/// same tick keeps its ctime. As git does for its index ("racy git"), a
/// hash is only remembered if the file's ctime is older than the moment
/// reading began by a margin (the racy window, 1 s by default): a later
/// change then always moves ctime past the remembered value. Files changed
/// within the window are hashed again next time. Clock skew on network
/// filesystems (ctime from the server's clock) is not covered.
///
/// The memo has two layers: a map for the build's duration (about 100
/// bytes per file), and the store's `context_hashes` table, read in
/// batches and written in one transaction per digest computation (one per
/// 65,536 new hashes on a first build of a huge context); a digest with
/// nothing new writes nothing. A changed file's entry is replaced (same
/// device and inode); a deleted file's stays until its inode number is
/// reused. A false hit needs an inode reused for same-size content with
/// the very same mtime and ctime, which the racy window rules out.
#[derive(Debug)]
pub struct HashMemo {
    store: Option<Store>,
    memory: Mutex<HashMap<(u64, u64), ContextHashRecord>>,
    racy_window: Duration,
    pub(crate) counters: Counters,
    /// Set from outside to stop the digests hashing through the memo
    /// (the build's cancel).
    stop: Option<Arc<AtomicBool>>,
    /// Set by [`HashMemo::halt`].
    halted: AtomicBool,
}

/// What computing digests cost, summed over every digest computed with a
/// [`HashMemo`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextStats {
    /// Entries looked at (`lstat`) while walking sources.
    pub entries_walked: u64,
    /// Files whose content was read and hashed.
    pub files_hashed: u64,
    /// Files whose hash came from the memo's in-memory layer.
    pub memory_hits: u64,
    /// Files whose hash came from the store.
    pub store_hits: u64,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// `read` calls made on file contents.
    pub read_calls: u64,
}

impl ContextStats {
    /// Files whose hash was remembered, by either layer.
    pub fn memo_hits(&self) -> u64 {
        self.memory_hits + self.store_hits
    }
}

impl Sub for ContextStats {
    type Output = ContextStats;

    /// What happened between two snapshots of [`HashMemo::stats`].
    fn sub(self, earlier: ContextStats) -> ContextStats {
        ContextStats {
            entries_walked: self.entries_walked - earlier.entries_walked,
            files_hashed: self.files_hashed - earlier.files_hashed,
            memory_hits: self.memory_hits - earlier.memory_hits,
            store_hits: self.store_hits - earlier.store_hits,
            bytes_read: self.bytes_read - earlier.bytes_read,
            read_calls: self.read_calls - earlier.read_calls,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) walked: AtomicU64,
    pub(crate) hashed: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
    pub(crate) store_hits: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) reads: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl HashMemo {
    /// A memo backed by `store`'s index: what one build hashed, the next
    /// one (any kiln process on this store) finds.
    pub fn new(store: Store) -> HashMemo {
        HashMemo::with_store(Some(store))
    }

    /// A memo for this process only (nothing is written anywhere).
    pub fn in_memory() -> HashMemo {
        HashMemo::with_store(None)
    }

    fn with_store(store: Option<Store>) -> HashMemo {
        HashMemo {
            store,
            memory: Mutex::new(HashMap::new()),
            racy_window: DEFAULT_RACY_WINDOW,
            counters: Counters::default(),
            stop: None,
            halted: AtomicBool::new(false),
        }
    }

    /// Digests computed through this memo stop, with
    /// [`ContextError::Stopped`], once `flag` is set: between two files and
    /// between two reads of one file, so that a cancel does not wait for a
    /// huge context to be read. What it hashed in the batches of files it
    /// finished (2,048 entries each) is still written to the store.
    pub fn stopping_on(mut self, flag: Arc<AtomicBool>) -> HashMemo {
        self.stop = Some(flag);
        self
    }

    /// Stops the digests computing through the memo, now and later, as
    /// the flag of [`HashMemo::stopping_on`] does.
    pub fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
    }

    /// `Err(Stopped)` once the memo is halted or its stop flag set.
    pub(crate) fn check(&self) -> Result<(), ContextError> {
        let stopped = self.halted.load(Ordering::Relaxed)
            || self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed));
        if stopped {
            Err(ContextError::Stopped)
        } else {
            Ok(())
        }
    }

    /// Sets the racy window (see the module documentation): hashes of files
    /// whose ctime is less than `window` before they were read are not
    /// remembered. A window below the filesystem's timestamp granularity
    /// can remember a hash a later write does not invalidate.
    pub fn with_racy_window(mut self, window: Duration) -> HashMemo {
        self.racy_window = window;
        self
    }

    pub fn stats(&self) -> ContextStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ContextStats {
            entries_walked: get(&c.walked),
            files_hashed: get(&c.hashed),
            memory_hits: get(&c.memory_hits),
            store_hits: get(&c.store_hits),
            bytes_read: get(&c.bytes),
            read_calls: get(&c.reads),
        }
    }

    /// The remembered hashes of `keys`, in order: from memory, then the
    /// rest from the store in one read transaction.
    pub(crate) fn lookup(&self, keys: &[FileKey]) -> Result<Vec<Option<[u8; 32]>>, ContextError> {
        let mut out = vec![None; keys.len()];
        let mut missing = Vec::new();
        {
            let memory = self.memory.lock().expect("memo lock");
            for (i, key) in keys.iter().enumerate() {
                match memory.get(&key.inode()) {
                    Some(r) if holds(r, key) => out[i] = Some(r.sha256),
                    _ => missing.push(i),
                }
            }
        }
        Counters::add(
            &self.counters.memory_hits,
            (keys.len() - missing.len()) as u64,
        );
        let Some(store) = &self.store else {
            return Ok(out);
        };
        if missing.is_empty() {
            return Ok(out);
        }
        let inodes: Vec<(u64, u64)> = missing.iter().map(|&i| keys[i].inode()).collect();
        let stored = store
            .read(|r| r.context_hashes(&inodes))
            .map_err(ContextError::Memo)?;
        let mut memory = self.memory.lock().expect("memo lock");
        let mut hits = 0;
        for (&i, record) in missing.iter().zip(stored) {
            if let Some(r) = record.filter(|r| holds(r, &keys[i])) {
                out[i] = Some(r.sha256);
                memory.insert(keys[i].inode(), r);
                hits += 1;
            }
        }
        Counters::add(&self.counters.store_hits, hits);
        Ok(out)
    }

    /// Remembers the hash of a file read from `started` on, unless the file
    /// changed too recently to trust its stat (the racy window). Returns
    /// the record for the store.
    pub(crate) fn remember(
        &self,
        key: &FileKey,
        sha256: [u8; 32],
        started: SystemTime,
    ) -> Option<((u64, u64), ContextHashRecord)> {
        if self.is_racy(key, started) {
            return None;
        }
        let record = ContextHashRecord {
            size: key.size,
            mtime_sec: key.mtime_sec,
            mtime_nsec: key.mtime_nsec,
            ctime_sec: key.ctime_sec,
            ctime_nsec: key.ctime_nsec,
            sha256,
        };
        self.memory
            .lock()
            .expect("memo lock")
            .insert(key.inode(), record);
        Some((key.inode(), record))
    }

    /// Writes what one digest computation hashed, in one transaction.
    pub(crate) fn persist(
        &self,
        records: Vec<((u64, u64), ContextHashRecord)>,
    ) -> Result<(), ContextError> {
        match &self.store {
            Some(store) if !records.is_empty() => store
                .update(|w| w.put_context_hashes(records))
                .map_err(ContextError::Memo),
            _ => Ok(()),
        }
    }

    fn is_racy(&self, key: &FileKey, started: SystemTime) -> bool {
        let ctime = i128::from(key.ctime_sec) * 1_000_000_000 + i128::from(key.ctime_nsec);
        let started = match started.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(_) => return true,
        };
        ctime + self.racy_window.as_nanos() as i128 >= started
    }
}

fn holds(record: &ContextHashRecord, key: &FileKey) -> bool {
    record.size == key.size
        && record.mtime_sec == key.mtime_sec
        && record.mtime_nsec == key.mtime_nsec
        && record.ctime_sec == key.ctime_sec
        && record.ctime_nsec == key.ctime_nsec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ctime_sec: i64, ctime_nsec: u32) -> FileKey {
        FileKey {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_sec: 4,
            mtime_nsec: 5,
            ctime_sec,
            ctime_nsec,
        }
    }

    #[test]
    fn only_files_changed_before_the_racy_window_are_remembered() {
        let memo = HashMemo::in_memory();
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        // Changed 1 s or less before reading began: could change again
        // without moving ctime.
        assert!(memo.remember(&key(100, 0), [1; 32], at(100)).is_none());
        assert!(memo.remember(&key(99, 0), [1; 32], at(100)).is_none());
        assert!(
            memo.remember(&key(98, 999_999_999), [1; 32], at(100))
                .is_some()
        );
        // A ctime in the future (clock skew) is never trusted.
        assert!(memo.remember(&key(200, 0), [1; 32], at(100)).is_none());
        let zero = HashMemo::in_memory().with_racy_window(Duration::ZERO);
        assert!(
            zero.remember(&key(99, 999_999_999), [1; 32], at(100))
                .is_some()
        );
    }

    #[test]
    fn a_remembered_hash_holds_only_for_the_same_stat() {
        let memo = HashMemo::in_memory();
        let k = key(10, 0);
        memo.remember(&k, [7; 32], UNIX_EPOCH + Duration::from_secs(100));
        assert_eq!(memo.lookup(&[k]).unwrap(), [Some([7; 32])]);
        let touched = FileKey { ctime_nsec: 1, ..k };
        let resized = FileKey { size: 4, ..k };
        let other = FileKey { ino: 9, ..k };
        assert_eq!(
            memo.lookup(&[touched, resized, other]).unwrap(),
            [None, None, None]
        );
        assert_eq!(memo.stats().memory_hits, 1);
    }

    #[test]
    fn shared_between_threads() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<HashMemo>();
        assert_sync::<crate::context::BuildContext>();
    }
}
