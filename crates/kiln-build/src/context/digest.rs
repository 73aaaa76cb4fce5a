//! The content digest of what a COPY/ADD takes from the context, for its
//! cache key: a versioned encoding (see [`CONTEXT_DIGEST_VERSION`]) hashed
//! as it is written, file contents through the memo, read in parallel.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use kiln_image::{ContextHashRecord, Digest, Sha256};
use rustix::fs::{FileType, Mode, OFlags};
use sha2::Digest as _;

use super::BuildContext;
use super::error::ContextError;
use super::memo::{Counters, HashMemo};
use super::select::Selection;
use super::stat::{EntryKind, FileKey, kept_xattrs};
use super::walk::WalkEntry;

/// The version of the context digest encoding.
///
/// # Encoding (version 1)
///
/// The digest is the SHA-256 of a byte string built as follows. `u8`,
/// `u32` and `u64` are big-endian; `bytes(x)` is `u64(len(x))` followed by
/// `x`; paths and names are their raw bytes (Unix), `/`-separated.
///
/// ```text
/// "kiln-context-digest" 0x00        magic, 20 bytes
/// u32(1)                            encoding version
/// u8(parents)                       1 with --parents, else 0
/// u32(n) bytes(exclude)...          the --exclude patterns, in order
/// u32(n)                            number of sources, then per source:
///   bytes(source)                     as given
///   u32(m)                            number of entries it names, then per entry:
///     bytes(path)                       cleaned, relative to the context, as named
///     for each walked entry, in walk order (below):
///       u8(1)
///       bytes(rel)                      below the source; empty for the source
///       u8(kind)                        1 file, 2 dir, 3 symlink, 4 fifo,
///                                       5 char device, 6 block device, 7 socket
///       u32(mode & 0o7777)              permissions, setuid, setgid, sticky
///       file:    u64(size) sha256(content) (32 raw bytes)
///       symlink: bytes(target)
///       device:  u64(major) u64(minor)
///       u32(k) (bytes(name) bytes(value))...
///                                       the xattrs a layer keeps, by name
///     u8(0)                             end of the entry's walk
/// ```
///
/// Walk order is depth first, a directory before its contents, names in
/// byte order: [`BuildContext::walk`]'s, so the digest covers exactly what
/// the COPY copies. A source that names a symlink is described by what it
/// points at, under the source's name.
///
/// Left out: owners (COPY sets 0:0 or `--chown`); timestamps, on purpose,
/// as BuildKit's content hash leaves them out (a `touch` or a fresh
/// checkout must not rebuild; a cache hit keeps the layer with the mtimes
/// it was built with); inode numbers and hardlink structure; the order the
/// filesystem lists names in. Any change to what is encoded is a new
/// version.
pub const CONTEXT_DIGEST_VERSION: u32 = 1;

const MAGIC: &[u8; 20] = b"kiln-context-digest\0";

/// Entries collected before their files are looked up and hashed: bounds
/// memory on huge trees while giving the hash threads work to share.
const BATCH: usize = 2048;

/// Read buffer per hashing thread.
const BUFFER: usize = 256 * 1024;

/// Hashing threads at most: reading is usually the limit beyond that.
const MAX_THREADS: usize = 8;

/// Attempts at reading a file that changes while it is read.
const ATTEMPTS: usize = 3;

/// New memo records written per transaction: one transaction per digest
/// computation, except that a first build of a huge context does not hold
/// all of them in memory until the end.
const PERSIST_BATCH: usize = 1 << 16;

pub(crate) fn digest(
    ctx: &BuildContext,
    selection: &Selection,
    memo: &HashMemo,
) -> Result<Digest, ContextError> {
    let selected = ctx.select_sources(selection)?;
    let mut enc = Encoder::default();
    enc.raw(MAGIC);
    enc.u32(CONTEXT_DIGEST_VERSION);
    enc.u8(u8::from(selection.has_parents()));
    enc.count(selection.excludes().len());
    for exclude in selection.excludes() {
        enc.bytes(exclude.as_bytes());
    }
    enc.count(selected.len());
    let mut run = Run {
        memo,
        seen: HashMap::new(),
        fresh: Vec::new(),
    };
    let walked = (|| {
        for source in &selected {
            enc.bytes(source.source().as_bytes());
            enc.count(source.entries().len());
            for entry in source.entries() {
                enc.bytes(entry.path().as_os_str().as_bytes());
                let mut batch = Vec::with_capacity(BATCH);
                for item in ctx.walk_counted(entry, source.filter(), &memo.counters.walked) {
                    memo.check()?;
                    batch.push(item?);
                    if batch.len() == BATCH {
                        run.encode(&mut enc, &batch)?;
                        batch.clear();
                    }
                }
                run.encode(&mut enc, &batch)?;
                enc.u8(0);
            }
        }
        Ok(())
    })();
    match walked {
        Ok(()) => {
            memo.persist(run.fresh)?;
            Ok(enc.hash.finish())
        }
        // The batches finished before the stop are remembered for the
        // next build (best effort: it is stopping).
        Err(ContextError::Stopped) => {
            let _ = memo.persist(run.fresh);
            Err(ContextError::Stopped)
        }
        Err(e) => Err(e),
    }
}

/// One digest computation.
struct Run<'a> {
    memo: &'a HashMemo,
    /// Content hashes of files with several links, by inode: each is read
    /// once even when the memo may not remember it. (Other files named
    /// twice, by overlapping sources, are found in the memo; keeping every
    /// hash here would double its memory on huge contexts.)
    seen: HashMap<(u64, u64), (FileKey, [u8; 32])>,
    /// New memo records, written to the store at the end (or every
    /// `PERSIST_BATCH`).
    fresh: Vec<((u64, u64), ContextHashRecord)>,
}

impl Run<'_> {
    fn encode(&mut self, enc: &mut Encoder, batch: &[WalkEntry]) -> Result<(), ContextError> {
        let hashes = self.content_hashes(batch)?;
        for (entry, hash) in batch.iter().zip(hashes) {
            let m = entry.metadata();
            enc.u8(1);
            enc.bytes(entry.rel_path().as_os_str().as_bytes());
            enc.u8(entry.kind().tag());
            enc.u32(m.mode() & 0o7777);
            match entry.kind() {
                EntryKind::File => {
                    let (size, sha) = hash.expect("files are hashed");
                    enc.u64(size);
                    enc.raw(&sha);
                }
                EntryKind::Symlink => {
                    let target = std::fs::read_link(entry.disk_path())
                        .map_err(ContextError::io("reading symlink", entry.disk_path()))?;
                    enc.bytes(target.as_os_str().as_bytes());
                }
                EntryKind::CharDevice | EntryKind::BlockDevice => {
                    enc.u64(u64::from(rustix::fs::major(m.rdev())));
                    enc.u64(u64::from(rustix::fs::minor(m.rdev())));
                }
                _ => {}
            }
            let xattrs = kept_xattrs(entry.disk_path())?;
            enc.count(xattrs.len());
            for (name, value) in &xattrs {
                enc.bytes(name);
                enc.bytes(value);
            }
        }
        Ok(())
    }

    /// (size, SHA-256) of each file of the batch, `None` for the rest:
    /// from this run, then the memo, then read, in parallel.
    fn content_hashes(
        &mut self,
        batch: &[WalkEntry],
    ) -> Result<Vec<Option<Content>>, ContextError> {
        let mut out = vec![None; batch.len()];
        let mut ask = Vec::new();
        for (i, entry) in batch.iter().enumerate() {
            if entry.kind() != EntryKind::File {
                continue;
            }
            let key = FileKey::of(entry.metadata());
            match self.seen.get(&key.inode()) {
                Some((k, sha)) if *k == key => out[i] = Some((key.size, *sha)),
                _ => ask.push((i, key, entry.metadata().nlink() > 1)),
            }
        }
        let keys: Vec<FileKey> = ask.iter().map(|(_, k, _)| *k).collect();
        let remembered = self.memo.lookup(&keys)?;
        let mut read: Vec<Task> = Vec::new();
        let mut waiting: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        for ((i, key, linked), sha) in ask.into_iter().zip(remembered) {
            if let Some(sha) = sha {
                if linked {
                    self.seen.insert(key.inode(), (key, sha));
                }
                out[i] = Some((key.size, sha));
                continue;
            }
            let readers = waiting.entry(key.inode()).or_default();
            if readers.is_empty() {
                read.push(Task {
                    path: batch[i].disk_path().to_path_buf(),
                    size: key.size,
                    inode: key.inode(),
                    linked,
                });
            }
            readers.push(i);
        }
        for (task, hashed) in read.iter().zip(hash_all(&read, self.memo)?) {
            if task.linked {
                self.seen
                    .insert(hashed.key.inode(), (hashed.key, hashed.sha));
            }
            if let Some(record) = self.memo.remember(&hashed.key, hashed.sha, hashed.started) {
                self.fresh.push(record);
            }
            for &i in &waiting[&task.inode] {
                out[i] = Some((hashed.key.size, hashed.sha));
            }
        }
        if self.fresh.len() >= PERSIST_BATCH {
            self.memo.persist(std::mem::take(&mut self.fresh))?;
        }
        Ok(out)
    }
}

/// A file's size and the SHA-256 of its content.
type Content = (u64, [u8; 32]);

struct Task {
    path: PathBuf,
    size: u64,
    inode: (u64, u64),
    /// More than one link: another name may come later in this run.
    linked: bool,
}

struct Hashed {
    /// The stat the content read belongs to (the file may have been
    /// replaced since it was walked).
    key: FileKey,
    sha: [u8; 32],
    started: SystemTime,
}

/// Hashes every task, on several threads when there are several: the
/// biggest files first, so one large file does not start last. Stops
/// when the memo does.
fn hash_all(tasks: &[Task], memo: &HashMemo) -> Result<Vec<Hashed>, ContextError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS)
        .min(tasks.len());
    if threads <= 1 {
        let mut buf = vec![0; BUFFER];
        return tasks
            .iter()
            .map(|t| hash_file(&t.path, &mut buf, memo))
            .collect();
    }
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tasks[i].size));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<Hashed, ContextError>>>> =
        tasks.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = vec![0; BUFFER];
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= order.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = order[n];
                    let result = hash_file(&tasks[i].path, &mut buf, memo);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *results[i].lock().expect("result lock") = Some(result);
                }
            });
        }
    });
    // Tasks left unstarted by a stop have no result.
    memo.check()?;
    let mut out = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for slot in results {
        match slot.into_inner().expect("result lock") {
            Some(Ok(h)) => out.push(h),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            // Not started: another task failed.
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// SHA-256 of a file's content, streamed through `buf`. The stat is taken
/// from the open file before and after reading; if they differ the file
/// changed while being read, and it is read again. Stops, between two
/// reads, when the memo does.
fn hash_file(path: &Path, buf: &mut [u8], memo: &HashMemo) -> Result<Hashed, ContextError> {
    let counters = &memo.counters;
    for _ in 0..ATTEMPTS {
        memo.check()?;
        let started = SystemTime::now();
        // NOFOLLOW: the walk saw a regular file; a symlink put there since
        // must not lead the read out of the context. NONBLOCK: nor may a
        // FIFO put there block it.
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContextError::io("opening", path)(e.into()))?;
        let stat = |fd: &std::os::fd::OwnedFd| {
            rustix::fs::fstat(fd).map_err(|e| ContextError::io("inspecting", path)(e.into()))
        };
        let before = stat(&fd)?;
        if FileType::from_raw_mode(before.st_mode) != FileType::RegularFile {
            return Err(ContextError::Unstable {
                path: path.to_path_buf(),
            });
        }
        // A hint only: the kernel reads ahead further.
        let _ = rustix::fs::fadvise(&fd, 0, None, rustix::fs::Advice::Sequential);
        let mut file = std::fs::File::from(fd);
        let mut hasher = sha2::Sha256::new();
        loop {
            memo.check()?;
            let n = match file.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ContextError::io("reading", path)(e)),
            };
            Counters::add(&counters.reads, 1);
            if n == 0 {
                break;
            }
            Counters::add(&counters.bytes, n as u64);
            hasher.update(&buf[..n]);
        }
        let after = stat(&std::os::fd::OwnedFd::from(file))?;
        let key = FileKey::of_stat(&before);
        if key == FileKey::of_stat(&after) {
            Counters::add(&counters.hashed, 1);
            return Ok(Hashed {
                key,
                sha: hasher.finalize().into(),
                started,
            });
        }
    }
    Err(ContextError::Unstable {
        path: path.to_path_buf(),
    })
}

/// Writes the encoding straight into the hash.
#[derive(Default)]
struct Encoder {
    hash: Sha256,
}

impl Encoder {
    fn raw(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
    }

    fn u8(&mut self, v: u8) {
        self.raw(&[v]);
    }

    fn u32(&mut self, v: u32) {
        self.raw(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.raw(&v.to_be_bytes());
    }

    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 2^32 items"));
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.raw(b);
    }
}
