//! Reading a blob while it downloads: [`Store::open_blob_following`].
//!
//! The fetch runs on a thread of its own and writes its ingest file as
//! always (verified, fsynced, renamed); after each write it says which
//! file and how long it is now ([`BlobFetcher::fetch_following`]), and the
//! reader reads that file up to there, waiting for more. It gives the end
//! of the blob only once the fetch has verified and stored it, so whatever
//! consumes it (a layer's unpack) fails rather than finishes on bytes that
//! do not match the digest. A fetch that starts the blob over (another
//! source, or a server that cannot resume) after bytes were read breaks
//! the stream: [`FollowedBlob::broken`] says so, and the reader's caller
//! starts again from the stored blob.

use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Blob, Store, StoreError};
use crate::Digest;

/// A blob being read: from the store, or as its fetch writes it.
pub struct FollowedBlob {
    source: Source,
}

enum Source {
    Stored(Blob),
    Fetching(Following),
}

impl std::fmt::Debug for FollowedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Stored(b) => f.debug_tuple("Stored").field(&b.path()).finish(),
            Source::Fetching(r) => f.debug_tuple("Fetching").field(&r.digest).finish(),
        }
    }
}

impl FollowedBlob {
    pub(super) fn stored(blob: Blob) -> FollowedBlob {
        FollowedBlob {
            source: Source::Stored(blob),
        }
    }

    /// Whether the blob was being downloaded when it was opened.
    pub fn fetching(&self) -> bool {
        matches!(self.source, Source::Fetching(_))
    }

    /// Whether the fetch started the blob over after bytes had been read
    /// (the read then failed): read it again from
    /// [`Store::open_blob`], which waits for the fetch.
    pub fn broken(&self) -> bool {
        match &self.source {
            Source::Stored(_) => false,
            Source::Fetching(r) => r.broken.load(Ordering::Relaxed),
        }
    }
}

impl Read for FollowedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::Stored(b) => b.read(buf),
            Source::Fetching(r) => r.read(buf),
        }
    }
}

/// Where the fetch is, shared between its thread and the reader.
#[derive(Default)]
struct Progress {
    /// The ingest file being written and its length.
    file: Option<(PathBuf, u64)>,
    /// Bumped when the fetch moves to another file (it started over).
    generation: u64,
    /// The fetch's outcome, once it has one.
    done: Option<Result<(), Arc<StoreError>>>,
}

impl Progress {
    /// The fetch's error, for the reader, once it has failed.
    fn failed(&self) -> Option<io::Error> {
        match &self.done {
            Some(Err(e)) => Some(io::Error::other(Arc::clone(e))),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fetch's report: `path` now holds `len` bytes of the blob.
    fn wrote(&self, path: &Path, len: u64) {
        let mut p = self.lock();
        match &mut p.file {
            Some((current, n)) if current == path => *n = len,
            _ => {
                p.file = Some((path.to_path_buf(), len));
                p.generation += 1;
            }
        }
        drop(p);
        self.changed.notify_all();
    }

    fn finished(&self, result: Result<(), Arc<StoreError>>) {
        self.lock().done = Some(result);
        self.changed.notify_all();
    }
}

struct Following {
    store: Store,
    digest: Digest,
    shared: Arc<Shared>,
    /// The file read, and the generation it belongs to.
    file: Option<(u64, fs_err::File)>,
    pos: u64,
    broken: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Following {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let shared = Arc::clone(&self.shared);
        let mut p = shared.lock();
        loop {
            if self.broken.load(Ordering::Relaxed) {
                return Err(self.broken_error());
            }
            let stored = matches!(p.done, Some(Ok(())));
            if let Some((path, len)) = p.file.clone() {
                let generation = p.generation;
                if self.file.as_ref().is_some_and(|(g, _)| *g != generation) {
                    if self.pos > 0 {
                        self.broken.store(true, Ordering::Relaxed);
                        return Err(self.broken_error());
                    }
                    self.file = None;
                }
                if self.pos < len {
                    if self.file.is_none() {
                        // Renamed into the store, or dropped for a fresh
                        // start, since it was reported: the stored blob is
                        // the same bytes; a fresh start reports again.
                        let opened = fs_err::File::open(&path).or_else(|e| {
                            if stored {
                                fs_err::File::open(self.store.blob_path(&self.digest))
                            } else {
                                Err(e)
                            }
                        });
                        match opened {
                            Ok(f) => self.file = Some((generation, f)),
                            // Gone because the fetch failed: its error.
                            Err(e) => match p.failed() {
                                Some(failed) => return Err(failed),
                                None if e.kind() == io::ErrorKind::NotFound && !stored => {
                                    p = self.wait(p);
                                    continue;
                                }
                                None => return Err(e),
                            },
                        }
                    }
                    let (_, file) = self.file.as_ref().expect("opened above");
                    let want = buf
                        .len()
                        .min(usize::try_from(len - self.pos).unwrap_or(usize::MAX));
                    let n = file.file().read_at(&mut buf[..want], self.pos)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "{} ended before the {len} bytes its fetch wrote",
                                path.display()
                            ),
                        ));
                    }
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
            if let Some(failed) = p.failed() {
                return Err(failed);
            }
            if stored {
                // Every byte the fetch wrote has been read, and it
                // verified them: the end. (A blob the fetcher wrote
                // without reports is read from the store.)
                if p.file.is_none() {
                    drop(p);
                    return self.read_stored(buf);
                }
                return Ok(0);
            }
            p = self.wait(p);
        }
    }

    /// The blob from the store, past what was read.
    fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.file.is_none() {
            let f = fs_err::File::open(self.store.blob_path(&self.digest))?;
            self.file = Some((u64::MAX, f));
        }
        let (_, file) = self.file.as_ref().expect("opened above");
        let n = file.file().read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn wait<'a>(
        &self,
        p: std::sync::MutexGuard<'a, Progress>,
    ) -> std::sync::MutexGuard<'a, Progress> {
        // Woken by every report; the timeout only guards against a lost one.
        self.shared
            .changed
            .wait_timeout(p, Duration::from_millis(200))
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    fn broken_error(&self) -> io::Error {
        io::Error::other(format!(
            "the download of {} started over after {} bytes of it had been read",
            self.digest, self.pos
        ))
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        // The fetch goes on to store the blob (a reader that stopped early,
        // on an error of its own, may read it again from the store).
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens a blob to read it once from start to end. One the store has is
    /// its file; one it lacks but knows a source of is fetched on a thread
    /// of its own and read as the download writes it, not after. The end of
    /// the stream comes only once the fetch has verified and stored the
    /// blob; a failed fetch is a read error.
    pub fn open_blob_following(&self, digest: &Digest) -> Result<FollowedBlob, StoreError> {
        if let Some(blob) = self.open_stored(digest)? {
            return Ok(FollowedBlob::stored(blob));
        }
        if self.fetcher().is_none() || self.read(|r| r.blob_sources(digest))?.is_none() {
            // The error of a fetch, here rather than at the first read.
            return self.open_blob(digest).map(FollowedBlob::stored);
        }
        let shared = Arc::new(Shared::default());
        let thread = {
            let store = self.clone();
            let wanted = digest.clone();
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("kiln-fetch".into())
                .spawn(move || {
                    let wrote = |path: &Path, len: u64| shared.wrote(path, len);
                    let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        store.fetch_missing_following(&wanted, &wrote)
                    }));
                    // A reader waits for an outcome: a panic is one too.
                    let result = fetched.unwrap_or_else(|_| {
                        Err(StoreError::io(store.blob_path(&wanted))(io::Error::other(
                            "the fetch's thread panicked",
                        )))
                    });
                    shared.finished(result.map_err(Arc::new));
                })
                .map_err(StoreError::io(self.blob_path(digest)))?
        };
        Ok(FollowedBlob {
            source: Source::Fetching(Following {
                store: self.clone(),
                digest: digest.clone(),
                shared,
                file: None,
                pos: 0,
                broken: Arc::new(AtomicBool::new(false)),
                thread: Some(thread),
            }),
        })
    }
}
