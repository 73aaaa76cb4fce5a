//! `RUN --mount=type=cache`: directories that persist across steps and
//! builds in the store, bind-mounted over the step's root (so the upper
//! dir, and the layer, never see them).
//!
//! ```text
//! <store root>/cache-mounts/
//!   <key hex>/              one cache: sha256 of the id and the seed
//!     id                    the id, for people and `kiln` tools
//!     0/ 1/ ...             instances: the directories that get mounted
//!     0.lock 1.lock ...     flock of each instance: shared by `shared`
//!                           users, exclusive for `private` and `locked`
//!     0.holders/<pid>-<n>.json   who holds instance 0 (build, pid, step, since)
//!     0.contents            instance 0's fingerprint when its tar last had a
//!                           known diffID (see `contents`)
//!     tmp-<pid>-<n>/        an instance being made (seeded or restored),
//!                           renamed into place
//! ```
//!
//! The key follows BuildKit's (`solver/llbsolver/mounts/mount.go`): the
//! cache id, plus the identity of what seeds it (`from`/`source`, or the
//! directory's mode and owner), not the platform nor the sharing mode; so
//! `id=pip` is one cache for every platform of a build, as in BuildKit, and
//! `--mount=type=cache,id=pip-$TARGETARCH` splits it.
//!
//! Sharing, as BuildKit's cache ref getter does it, but across processes
//! (two kiln builds on one store) through `flock(2)`, which the kernel
//! releases when a holder dies however it dies:
//!
//! - `shared`: any instance not held exclusively, together with its other
//!   shared users; a new instance if every one is held exclusively.
//! - `private`: an instance nobody holds (reused when free), else a new one.
//! - `locked`: an instance nobody holds; if every one is held, wait (polled,
//!   as BuildKit polls) and say who holds it in a `StepNote` every few
//!   seconds, until it is free or the step is cancelled.
//!
//! Outside the store (`--cache-to ...,mounts=true`, docs/CACHE.md): the
//! build notes which caches it took ([`CacheMounts::used`]). The first time
//! it takes one that its [`CacheSource`] (a `--cache-from`) has, into an
//! instance that is new, or empty and held by this step alone, it fills the
//! instance from there first: a new one in its temp dir before the rename,
//! an empty one in a temp dir renamed over it, so no step ever sees a
//! half-restored cache, and one that holds anything is never touched. An
//! export reads an instance while holding it alone, not waiting for it
//! ([`CacheMounts::contents`]).

mod contents;

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_dockerfile::instructions::ShareMode;
use kiln_image::Digest;
use kiln_sandbox::RunControl;
use rustix::fs::{CWD, Gid, Mode, RenameFlags, Uid};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub(crate) use self::contents::{CacheSource, CacheTar};
use self::contents::{Memo, Tree};
use super::error::{RunError, io_at};
use super::observer::StepObserver;
use super::rootpath;
use crate::events::{Event, EventSink, StepId};
use crate::ops::{self, CopyOptions};

/// The version of the cache directory key: bump it when what goes into
/// the key changes meaning. A remote cache names its mounts by these keys.
pub(crate) const KEY_VERSION: &str = "kiln-cache-mount-v1";

/// How long a waiter sleeps between two tries of a `locked` cache
/// (BuildKit: 100ms). A cancel ends the sleep at once.
const POLL: Duration = Duration::from_millis(100);

/// The persistent cache-mount directories of a store, and who this build
/// is when it holds one. Cheap to clone; share one per build.
#[derive(Debug, Clone)]
pub struct CacheMounts {
    dir: PathBuf,
    build: String,
    note_every: Duration,
    /// The caches this build took, by key (shared by the clones).
    used: Arc<Mutex<BTreeMap<String, UsedCache>>>,
    /// Where a cache's contents may come from the first time it is taken.
    source: Option<Arc<dyn CacheSource>>,
    /// The keys whose first taking is over (restored or not).
    restored: Arc<Mutex<HashSet<String>>>,
}

/// A cache the build took: which one, and the instance its last user held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsedCache {
    /// The directory name under `cache-mounts/` (see [`CacheRequest::key`]).
    pub(crate) key: String,
    pub(crate) id: String,
    /// Where its first user mounted it, for messages.
    pub(crate) target: String,
    instance: u32,
}

/// What a used cache holds, as an export reads it.
#[derive(Debug)]
pub(crate) enum Contents {
    /// Unchanged since a tar of it had this diffID (made by an export, or
    /// restored): nothing was read.
    Known { diff_id: Digest, size: u64 },
    /// Read into `tar` (uncompressed, rewound) while nobody else held it.
    Read {
        diff_id: Digest,
        size: u64,
        tar: std::fs::File,
    },
}

impl CacheMounts {
    /// The directory under the store root.
    pub const DIR: &'static str = "cache-mounts";

    /// The cache mounts of the store at `store_root`.
    pub fn new(store_root: impl AsRef<Path>) -> CacheMounts {
        CacheMounts {
            dir: store_root.as_ref().join(Self::DIR),
            build: format!("kiln pid {}", std::process::id()),
            note_every: Duration::from_secs(5),
            used: Arc::default(),
            source: None,
            restored: Arc::default(),
        }
    }

    /// Caches first taken by this build start from what `source` has for
    /// them when they are new or empty (a `--cache-from`'s mounts).
    pub(crate) fn with_source(mut self, source: Arc<dyn CacheSource>) -> CacheMounts {
        self.source = Some(source);
        self
    }

    /// How this build names itself to the builds that wait for a cache it
    /// holds (a build id, `kiln build -t app:dev`, ...).
    pub fn with_build(mut self, build: impl Into<String>) -> CacheMounts {
        self.build = build.into();
        self
    }

    /// How often a step waiting for a `locked` cache says so (5 s by
    /// default; the first note comes as soon as it waits).
    pub fn with_note_interval(mut self, every: Duration) -> CacheMounts {
        self.note_every = every;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// One cache a step needs: its identity and how it shares.
#[derive(Debug)]
pub(crate) struct CacheRequest {
    pub(crate) id: String,
    /// The mount's target, for messages.
    pub(crate) target: String,
    pub(crate) sharing: ShareMode,
    pub(crate) seed: Seed,
}

/// What a new instance of a cache starts with.
#[derive(Debug)]
pub(crate) enum Seed {
    /// An empty directory with this mode and owner (`mode`, `uid`, `gid`;
    /// 0755 root's by default).
    Empty { mode: u32, uid: u32, gid: u32 },
    /// A copy of `source` in `root` (`from=`, `source=`); `key` names
    /// `root`'s contents, `from` is what the Dockerfile said.
    Copy {
        root: PathBuf,
        key: String,
        from: String,
        source: String,
    },
}

impl CacheRequest {
    /// The directory name of the cache: length-prefixed fields, hashed.
    pub(crate) fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |value: &[u8]| {
            h.update((value.len() as u64).to_be_bytes());
            h.update(value);
        };
        field(KEY_VERSION.as_bytes());
        field(self.id.as_bytes());
        match &self.seed {
            Seed::Empty { mode, uid, gid } => {
                field(b"empty");
                field(format!("{mode:o} {uid} {gid}").as_bytes());
            }
            Seed::Copy { key, source, .. } => {
                field(b"copy");
                field(key.as_bytes());
                field(source.as_bytes());
            }
        }
        hex::encode(h.finalize())
    }
}

/// An instance held for a step: mounted at the target, released (and the
/// holder note removed) when dropped.
#[derive(Debug)]
pub(crate) struct CacheLease {
    path: PathBuf,
    instance: u32,
    holder: Option<PathBuf>,
    lock: fs_err::File,
}

impl CacheLease {
    /// The instance directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Turns an exclusive hold into a shared one. flock(2) does not promise
    /// that a conversion is atomic (a waiter may be granted the lock in
    /// between); Linux swaps the lock under one spinlock, so from exclusive
    /// to shared nothing conflicts. Should a waiter slip in elsewhere, this
    /// blocks until it is done rather than fail the step.
    fn share(&self) -> Result<(), RunError> {
        self.lock
            .file()
            .lock_shared()
            .map_err(|e| io_at("locking", self.lock.path())(e).into())
    }
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        // Before the lock goes with the file: a waiter that then gets it
        // must not read us as its holder.
        if let Some(holder) = self.holder.take() {
            let _ = fs_err::remove_file(holder);
        }
    }
}

/// Who holds an instance, as its holder wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    build: String,
    pid: u32,
    step: StepId,
    target: String,
    sharing: String,
    /// Unix seconds.
    since: u64,
}

impl CacheMounts {
    /// Gets an instance of the cache `req` asks for, waiting (with notes on
    /// `events`) while a `locked` one is held elsewhere.
    #[cfg(test)]
    pub(crate) fn acquire(
        &self,
        req: &CacheRequest,
        step: StepId,
        events: &EventSink,
        control: &RunControl,
    ) -> Result<CacheLease, RunError> {
        self.acquire_observed(req, step, events, control, None)
    }

    /// [`CacheMounts::acquire`], telling `observer` about the wait: a
    /// watchdog counts it as time without progress and names the holder.
    pub(crate) fn acquire_observed(
        &self,
        req: &CacheRequest,
        step: StepId,
        events: &EventSink,
        control: &RunControl,
        observer: Option<&dyn StepObserver>,
    ) -> Result<CacheLease, RunError> {
        if !self.dir.is_dir() {
            fs_err::create_dir_all(&self.dir)?;
            // Owner-only, as the snapshots: caches may hold anything, and
            // setuid files must not be reachable by other users of the
            // host through these paths (CVE-2021-41091). A step sees an
            // instance through its bind mount, whatever its parents' modes.
            fs_err::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let key = req.key();
        let cache = self.dir.join(&key);
        fs_err::create_dir_all(&cache)?;
        let id_file = cache.join("id");
        if !id_file.exists() {
            // For people and tools only; a race writes the same bytes.
            let _ = fs_err::write(&id_file, format!("{}\n", req.id));
        }
        remove_stale_temps(&cache);
        // The first taking of a cache the source has may fill it. Two
        // steps of the build taking it at once may both try: one rename
        // wins, and both use the winner's.
        let restore = self
            .source
            .as_deref()
            .filter(|source| {
                source.has(&key)
                    && !self
                        .restored
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&key)
            })
            .map(|source| Restore {
                source,
                key: &key,
                req,
                step,
                events,
            });
        let mut last_note: Option<Instant> = None;
        // When the wait began, and who held the cache then.
        let mut waited: Option<(Instant, String)> = None;
        let result = loop {
            if control.is_cancelled() {
                break Err(RunError::Cancelled);
            }
            match self.try_acquire(&cache, req, step, restore.as_ref()) {
                Ok(Some(lease)) => break Ok(lease),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if waited.is_none() {
                waited = Some((Instant::now(), holder_notes(&cache).join("; ")));
            }
            if last_note.is_none_or(|at| at.elapsed() >= self.note_every) {
                last_note = Some(Instant::now());
                let text = waiting_note(&cache, req);
                if let Some(observer) = observer {
                    observer.lock_wait(&text);
                }
                events(Event::StepNote { step, text });
            }
            if control.wait_cancelled(POLL) {
                break Err(RunError::Cancelled);
            }
        };
        if last_note.is_some()
            && let Some(observer) = observer
        {
            observer.lock_done();
        }
        if let Some((since, holder)) = waited {
            events(Event::StepLockWait {
                step,
                lock: format!(
                    "cache mount {} (id {:?}, sharing={})",
                    req.target, req.id, req.sharing
                ),
                holder,
                waited_ms: crate::events::millis(since.elapsed()),
            });
        }
        let lease = result?;
        if restore.is_some() {
            self.restored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
        }
        self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(
            key.clone(),
            UsedCache {
                key,
                id: req.id.clone(),
                target: req.target.clone(),
                instance: lease.instance,
            },
        );
        Ok(lease)
    }

    /// One pass over the instances; `None` when a `locked` cache is busy.
    fn try_acquire(
        &self,
        cache: &Path,
        req: &CacheRequest,
        step: StepId,
        restore: Option<&Restore<'_>>,
    ) -> Result<Option<CacheLease>, RunError> {
        loop {
            let existing = instances(cache)?;
            for &n in &existing {
                let lock = open_lock(&lock_path(cache, n), false)?;
                // An empty instance to fill: a shared user takes it alone
                // if nobody else holds it, fills it, then shares it.
                if restore.is_some()
                    && req.sharing == ShareMode::Shared
                    && contents::is_empty_dir(&cache.join(n.to_string()))
                    && try_lock(&lock, ShareMode::Locked)?
                {
                    let lease = self.lease(cache, n, lock, req, step, restore, true)?;
                    lease.share()?;
                    return Ok(Some(lease));
                }
                if try_lock(&lock, req.sharing)? {
                    let alone = req.sharing != ShareMode::Shared;
                    return self
                        .lease(cache, n, lock, req, step, restore, alone)
                        .map(Some);
                }
            }
            if req.sharing == ShareMode::Locked && !existing.is_empty() {
                return Ok(None);
            }
            // A new instance. Losing the race for its number to another
            // process means looking again: a `locked` user then waits for
            // that instance rather than making one beside it.
            let n = existing.last().map_or(0, |last| last + 1);
            let lock = match open_lock(&lock_path(cache, n), true) {
                Ok(lock) => lock,
                Err(RunError::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            if try_lock(&lock, req.sharing)? {
                let alone = req.sharing != ShareMode::Shared;
                return self
                    .lease(cache, n, lock, req, step, restore, alone)
                    .map(Some);
            }
        }
    }

    /// Makes sure instance `n` exists (filled by `restore` when it is new,
    /// or empty and held `alone`), then says who holds it.
    #[allow(clippy::too_many_arguments)]
    fn lease(
        &self,
        cache: &Path,
        n: u32,
        lock: fs_err::File,
        req: &CacheRequest,
        step: StepId,
        restore: Option<&Restore<'_>>,
        alone: bool,
    ) -> Result<CacheLease, RunError> {
        let path = ensure_instance(cache, n, req, restore, alone)?;
        self.hold(
            cache,
            n,
            path,
            lock,
            step,
            &req.target,
            req.sharing.as_str(),
        )
    }

    /// Notes this build as a holder of instance `n` (whose `lock` it holds).
    #[allow(clippy::too_many_arguments)]
    fn hold(
        &self,
        cache: &Path,
        n: u32,
        path: PathBuf,
        lock: fs_err::File,
        step: StepId,
        target: &str,
        sharing: &str,
    ) -> Result<CacheLease, RunError> {
        let holders = cache.join(format!("{n}.holders"));
        fs_err::create_dir_all(&holders)?;
        let holder = holders.join(format!("{}-{}.json", std::process::id(), next_seq()));
        let note = Holder {
            build: self.build.clone(),
            pid: std::process::id(),
            step,
            target: target.to_string(),
            sharing: sharing.to_string(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let json = serde_json::to_vec(&note).map_err(io::Error::other)?;
        fs_err::File::create(&holder)?.write_all(&json)?;
        Ok(CacheLease {
            path,
            instance: n,
            holder: Some(holder),
            lock,
        })
    }
}

/// For `--cache-to ...,mounts=true`.
impl CacheMounts {
    /// The caches this build took, in key order.
    pub(crate) fn used(&self) -> Vec<UsedCache> {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn instance_dir(&self, used: &UsedCache) -> PathBuf {
        self.dir.join(&used.key).join(used.instance.to_string())
    }

    /// The bytes of a used cache's files, read without a lock (another
    /// build may be changing them: an estimate, for `mounts-max-size`).
    pub(crate) fn measure(&self, used: &UsedCache) -> Result<u64, RunError> {
        Ok(contents::tree(&self.instance_dir(used))?.size)
    }

    /// What a used cache holds, read while this build holds it alone;
    /// `None` if another build holds it (not waited for: an export must
    /// not stall on a step, nor a step on an export). The hold lasts only
    /// as long as the reading: its fingerprint, and, unless it is `Known`
    /// from its note (and `trust_note`), its tar, written to a temporary
    /// file under `scratch`.
    pub(crate) fn contents(
        &self,
        used: &UsedCache,
        trust_note: bool,
        scratch: &Path,
    ) -> Result<Option<Contents>, RunError> {
        let cache = self.dir.join(&used.key);
        let n = used.instance;
        let lock = open_lock(&lock_path(&cache, n), false)?;
        if !try_lock(&lock, ShareMode::Locked)? {
            return Ok(None);
        }
        // Waiters read "held by build B (pid N), writing it to a cache".
        let dir = self.instance_dir(used);
        let _held = self.hold(&cache, n, dir.clone(), lock, 0, &used.target, "export")?;
        let Tree { fingerprint, size } = contents::tree(&dir)?;
        if trust_note
            && let Some(memo) = contents::read_memo(&cache, n)
            && memo.tree == fingerprint
        {
            return Ok(Some(Contents::Known {
                diff_id: memo.diff_id,
                size,
            }));
        }
        let (tar, diff_id, _) = contents::archive(&dir, &used.id, scratch)?;
        let memo = Memo {
            tree: fingerprint,
            diff_id: diff_id.clone(),
            size,
        };
        contents::write_memo(&cache, n, &memo)?;
        Ok(Some(Contents::Read { diff_id, size, tar }))
    }

    /// Who holds a used cache now, for a message; empty if nobody.
    pub(crate) fn holders(&self, used: &UsedCache) -> String {
        holder_notes(&self.dir.join(&used.key)).join("; ")
    }
}

/// The step for which a cache is taken the first time, and where its
/// contents may come from.
struct Restore<'a> {
    source: &'a dyn CacheSource,
    key: &'a str,
    req: &'a CacheRequest,
    step: StepId,
    events: &'a EventSink,
}

impl Restore<'_> {
    /// Fills `dir` (empty, seen by no step) from the source; says so, or
    /// warns why not (the caller then starts the cache as if new).
    fn fill(&self, dir: &Path) -> Option<Memo> {
        let warn = |reason: String| {
            (self.events)(Event::Warning {
                message: format!(
                    "cache mount {} (id {:?}) not restored: {reason}; it starts empty",
                    self.req.target, self.req.id
                ),
                line: None,
            });
        };
        let tar = match self.source.open(self.key) {
            Ok(tar) => tar,
            Err(reason) => {
                warn(reason);
                return None;
            }
        };
        (self.events)(Event::StepNote {
            step: self.step,
            text: format!(
                "restoring cache mount {} (id {:?}) from {}",
                self.req.target, self.req.id, tar.from
            ),
        });
        let from = tar.from.clone();
        match contents::fill(tar, dir) {
            Ok(memo) => Some(memo),
            Err(reason) => {
                warn(format!("{from}: {reason}"));
                None
            }
        }
    }

    /// Fills the existing, empty instance `dir` (held by this step alone):
    /// in a temp dir with its mode and owner, renamed over it.
    fn refill(&self, cache: &Path, n: u32, dir: &Path) -> Result<(), RunError> {
        let meta = fs_err::metadata(dir)?;
        let tmp = temp_dir(cache);
        fs_err::create_dir(&tmp)?;
        let filled = set_owner_mode(&tmp, meta.uid(), meta.gid(), meta.mode() & 0o7777)
            .map(|()| self.fill(&tmp));
        let result = match filled {
            // A rename onto an empty directory replaces it (rename(2)).
            Ok(Some(memo)) => fs_err::rename(&tmp, dir)
                .map_err(RunError::from)
                .and_then(|()| contents::write_memo(cache, n, &memo)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if tmp.exists() {
            let _ = fs_err::remove_dir_all(&tmp);
        }
        result
    }
}

fn lock_path(cache: &Path, n: u32) -> PathBuf {
    cache.join(format!("{n}.lock"))
}

/// The instance numbers, from their lock files (never removed), sorted.
fn instances(cache: &Path) -> Result<Vec<u32>, RunError> {
    let mut out = Vec::new();
    for entry in fs_err::read_dir(cache)? {
        let name = entry?.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".lock"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

fn open_lock(path: &Path, create_new: bool) -> Result<fs_err::File, RunError> {
    let mut options = fs_err::OpenOptions::new();
    options.read(true).write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(false);
    }
    Ok(options.open(path)?)
}

/// Takes the lock the sharing mode needs, without waiting. Each call opens
/// its own file description, so two steps of one process conflict too.
fn try_lock(file: &fs_err::File, sharing: ShareMode) -> Result<bool, RunError> {
    let result = match sharing {
        ShareMode::Shared => file.try_lock_shared(),
        ShareMode::Private | ShareMode::Locked => file.try_lock(),
    };
    match result {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(io_at("locking", file.path())(e).into()),
    }
}

/// The directory of instance `n`, made (seeded, or filled by `restore`) if
/// it is new: in a temp dir first, renamed into place without replacing,
/// so that a user never sees a half-made cache and two makers cannot both
/// win. An existing one is filled by `restore` only if it is empty and
/// held `alone`.
fn ensure_instance(
    cache: &Path,
    n: u32,
    req: &CacheRequest,
    restore: Option<&Restore<'_>>,
    alone: bool,
) -> Result<PathBuf, RunError> {
    let dir = cache.join(n.to_string());
    if dir.is_dir() {
        if let Some(restore) = restore
            && alone
            && contents::is_empty_dir(&dir)
        {
            restore.refill(cache, n, &dir)?;
        }
        return Ok(dir);
    }
    let tmp = temp_dir(cache);
    let made = make(&tmp, req, restore).and_then(|memo| {
        let won = match rustix::fs::renameat_with(CWD, &tmp, CWD, &dir, RenameFlags::NOREPLACE) {
            Ok(()) => true,
            // Another shared user made it first: theirs is as good.
            Err(Errno::EXIST | Errno::NOTEMPTY) => false,
            // A filesystem without RENAME_NOREPLACE (renameat2(2)): a
            // plain rename, which only replaces an empty directory.
            Err(Errno::INVAL) if !dir.exists() => match fs_err::rename(&tmp, &dir) {
                Ok(()) => true,
                Err(_) if dir.is_dir() => false,
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(io_at("renaming into place", &tmp)(e.into()).into()),
        };
        match memo {
            // The note is the winner's to write: the loser's tree is gone.
            Some(memo) if won => contents::write_memo(cache, n, &memo),
            _ => Ok(()),
        }
    });
    if tmp.exists() {
        let _ = fs_err::remove_dir_all(&tmp);
    }
    made.map(|()| dir)
}

/// `<cache>/tmp-<pid>-<n>`: where an instance is made; a dead maker's is
/// removed by the next taker ([`remove_stale_temps`]).
fn temp_dir(cache: &Path) -> PathBuf {
    cache.join(format!("tmp-{}-{}", std::process::id(), next_seq()))
}

/// A new instance in `tmp`: filled by `restore` when it can (the restored
/// tree replaces the seed's copy: it is what the seeded cache became), else
/// seeded. The restored tree's note, if it was restored.
fn make(
    tmp: &Path,
    req: &CacheRequest,
    restore: Option<&Restore<'_>>,
) -> Result<Option<Memo>, RunError> {
    if let Some(restore) = restore {
        seed(tmp, req, false)?;
        if let Some(memo) = restore.fill(tmp) {
            return Ok(Some(memo));
        }
        fs_err::remove_dir_all(tmp)?;
    }
    seed(tmp, req, true)?;
    Ok(None)
}

/// Makes `tmp` with the mode and owner the seed gives it, and with its
/// files when `copy` (a `from=` source's; an empty seed has none).
fn seed(tmp: &Path, req: &CacheRequest, copy: bool) -> Result<(), RunError> {
    fs_err::create_dir(tmp)?;
    let (mode, uid, gid) = match &req.seed {
        Seed::Empty { mode, uid, gid } => (*mode, *uid, *gid),
        Seed::Copy {
            root, from, source, ..
        } => {
            let host = rootpath::resolve(root, Path::new(source))?;
            let meta = match fs_err::metadata(&host) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(RunError::MountSourceNotFound {
                        from: from.clone(),
                        source_path: source.clone(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            if !meta.is_dir() {
                return Err(RunError::CacheSourceNotDirectory {
                    from: from.clone(),
                    source_path: source.clone(),
                });
            }
            if copy {
                // Owners, modes, links and times as in the source (what
                // BuildKit's mutable ref on top of the source shows).
                let seed_err = |source| RunError::CacheSeed {
                    id: req.id.clone(),
                    source,
                };
                let items = ops::expand_source(root, source, false).map_err(seed_err)?;
                ops::copy_sources(&items, tmp, "/", "/", &CopyOptions::copy()).map_err(seed_err)?;
            }
            (meta.mode() & 0o7777, meta.uid(), meta.gid())
        }
    };
    set_owner_mode(tmp, uid, gid, mode)
}

fn set_owner_mode(dir: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), RunError> {
    rustix::fs::chown(dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| io_at("chown", dir)(e.into()))?;
    // After chown, which clears setuid/setgid bits.
    rustix::fs::chmod(dir, Mode::from_raw_mode(mode)).map_err(|e| io_at("chmod", dir)(e.into()))?;
    Ok(())
}

/// Temp dirs of makers that died mid-seed. Best effort.
fn remove_stale_temps(cache: &Path) {
    let Ok(entries) = fs_err::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|s| s.strip_prefix("tmp-"))
            .and_then(|s| s.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !alive(pid) {
            let _ = fs_err::remove_dir_all(entry.path());
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// `waiting for cache mount /root/.cache (id "/root/.cache", sharing=locked):
/// held by build B (pid 12), step #4, since <date> (31s)`.
fn waiting_note(cache: &Path, req: &CacheRequest) -> String {
    let holders = holder_notes(cache);
    let who = if holders.is_empty() {
        "held by another step (no holder information yet)".to_string()
    } else {
        format!("held by {}", holders.join("; "))
    };
    format!(
        "waiting for cache mount {} (id {:?}, sharing={}): {who}",
        req.target, req.id, req.sharing
    )
}

/// What the live holders of a cache's instances wrote: `build B (pid 12),
/// step #4, shared at /root/.cache, since <date> (31s)`. Notes of dead
/// holders are removed.
fn holder_notes(cache: &Path) -> Vec<String> {
    let mut holders: Vec<String> = Vec::new();
    for n in instances(cache).unwrap_or_default() {
        let dir = cache.join(format!("{n}.holders"));
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(bytes) = fs_err::read(entry.path()) else {
                continue;
            };
            let Ok(h) = serde_json::from_slice::<Holder>(&bytes) else {
                continue;
            };
            if !alive(h.pid) {
                // Its lock died with it; the note is all that is left.
                let _ = fs_err::remove_file(entry.path());
                continue;
            }
            let since = UNIX_EPOCH + Duration::from_secs(h.since);
            let ago = SystemTime::now()
                .duration_since(since)
                .map_or(0, |d| d.as_secs());
            // Steps are numbered from 1: step 0 is a cache export.
            let what = if h.step == 0 {
                "writing it to a cache".to_string()
            } else {
                format!("step #{}, {} at {}", h.step, h.sharing, h.target)
            };
            holders.push(format!(
                "build {} (pid {}), {what}, since {} ({ago}s)",
                h.build,
                h.pid,
                httpdate::fmt_http_date(since),
            ));
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, sharing: ShareMode) -> CacheRequest {
        CacheRequest {
            id: id.into(),
            target: "/cache".into(),
            sharing,
            seed: Seed::Empty {
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
        }
    }

    fn quiet() -> EventSink {
        Arc::new(|_| {})
    }

    #[test]
    fn keys_depend_on_id_and_seed_only() {
        let a = request("pip", ShareMode::Shared);
        let b = request("pip", ShareMode::Locked);
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), request("npm", ShareMode::Shared).key());
        let mut c = request("pip", ShareMode::Shared);
        c.seed = Seed::Empty {
            mode: 0o777,
            uid: 0,
            gid: 0,
        };
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn private_users_get_their_own_instance_and_reuse_free_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(tmp.path());
        let control = RunControl::new();
        let req = request("x", ShareMode::Private);
        let a = caches.acquire(&req, 1, &quiet(), &control).unwrap();
        let b = caches.acquire(&req, 2, &quiet(), &control).unwrap();
        assert_ne!(a.path(), b.path());
        let a_path = a.path().to_path_buf();
        drop(a);
        let c = caches.acquire(&req, 3, &quiet(), &control).unwrap();
        assert_eq!(c.path(), a_path);
    }

    #[test]
    fn shared_users_share_and_locked_waits_for_them() {
        let tmp = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(tmp.path()).with_build("test build");
        let control = RunControl::new();
        let a = caches
            .acquire(&request("x", ShareMode::Shared), 1, &quiet(), &control)
            .unwrap();
        let b = caches
            .acquire(&request("x", ShareMode::Shared), 2, &quiet(), &control)
            .unwrap();
        assert_eq!(a.path(), b.path());

        // A locked user waits; cancelling ends the wait.
        let notes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let events: EventSink = {
            let (notes, waits) = (notes.clone(), waits.clone());
            let control = control.clone();
            Arc::new(move |e| match e {
                Event::StepNote { text, .. } => {
                    notes.lock().unwrap().push(text);
                    control.cancel();
                }
                wait @ Event::StepLockWait { .. } => waits.lock().unwrap().push(wait),
                _ => {}
            })
        };
        let err = caches
            .acquire(&request("x", ShareMode::Locked), 3, &events, &control)
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled), "{err}");
        let notes = notes.lock().unwrap();
        assert!(notes[0].contains("build test build"), "{}", notes[0]);
        assert!(notes[0].contains("step #1"), "{}", notes[0]);
        // The wait, once over, is one event: which lock, who held it.
        let waits = waits.lock().unwrap();
        let [
            Event::StepLockWait {
                step, lock, holder, ..
            },
        ] = &waits[..]
        else {
            panic!("{waits:?}");
        };
        assert_eq!(*step, 3);
        assert!(lock.contains("sharing=locked"), "{lock}");
        assert!(holder.contains("step #1"), "{holder}");
    }

    #[test]
    fn seeded_caches_copy_their_source() {
        let tmp = tempfile::tempdir().unwrap();
        let stage = tmp.path().join("stage");
        fs_err::create_dir_all(stage.join("opt/seed/sub")).unwrap();
        fs_err::write(stage.join("opt/seed/sub/f"), "seeded").unwrap();
        let caches = CacheMounts::new(tmp.path().join("store"));
        let mut req = request("s", ShareMode::Shared);
        req.seed = Seed::Copy {
            root: stage.clone(),
            key: "stage-key".into(),
            from: "stage".into(),
            source: "/opt/seed".into(),
        };
        let lease = caches
            .acquire(&req, 1, &quiet(), &RunControl::new())
            .unwrap();
        assert_eq!(
            fs_err::read_to_string(lease.path().join("sub/f")).unwrap(),
            "seeded"
        );
        // No temp dir left beside the instance.
        let cache = lease.path().parent().unwrap();
        assert!(
            fs_err::read_dir(cache).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("tmp-"))
        );
    }

    /// A `--cache-from` with one cache's contents: the tree of `dir`.
    #[derive(Debug)]
    struct Holding {
        key: String,
        tar: PathBuf,
        diff_id: Digest,
    }

    impl Holding {
        fn of(req: &CacheRequest, dir: &Path, scratch: &Path) -> Arc<Holding> {
            let (mut file, diff_id, _) = contents::archive(dir, &req.id, scratch).unwrap();
            let tar = scratch.join("held.tar");
            io::copy(&mut file, &mut fs_err::File::create(&tar).unwrap()).unwrap();
            Arc::new(Holding {
                key: req.key(),
                tar,
                diff_id,
            })
        }
    }

    impl CacheSource for Holding {
        fn has(&self, key: &str) -> bool {
            key == self.key
        }

        fn open(&self, _: &str) -> Result<CacheTar, String> {
            let file = fs_err::File::open(&self.tar).map_err(|e| e.to_string())?;
            Ok(CacheTar {
                tar: Box::new(file),
                diff_id: self.diff_id.clone(),
                from: "cache test".into(),
            })
        }
    }

    /// Another build's caches on the same store, with a source holding
    /// `f` = "restored" for `req`.
    fn restoring(tmp: &Path, req: &CacheRequest) -> CacheMounts {
        let tree = tmp.join("tree");
        fs_err::create_dir_all(tree.join("sub")).unwrap();
        fs_err::write(tree.join("sub/f"), "restored").unwrap();
        CacheMounts::new(tmp.join("store")).with_source(Holding::of(req, &tree, tmp))
    }

    fn events() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (Arc::new(move |e| sink.lock().unwrap().push(e)), seen)
    }

    #[test]
    fn a_new_cache_starts_from_its_source_and_is_noted_so() {
        let tmp = tempfile::tempdir().unwrap();
        let req = request("x", ShareMode::Shared);
        let caches = restoring(tmp.path(), &req);
        let (sink, seen) = events();
        let lease = caches.acquire(&req, 1, &sink, &RunControl::new()).unwrap();
        assert_eq!(
            fs_err::read_to_string(lease.path().join("sub/f")).unwrap(),
            "restored"
        );
        let notes = seen.lock().unwrap();
        assert!(
            notes
                .iter()
                .any(|e| matches!(e, Event::StepNote { text, .. }
                if text.contains("restoring cache mount /cache") && text.contains("cache test"))),
            "{notes:?}"
        );
        drop(lease);
        // Its note makes it known: an export reads nothing.
        let used = caches.used();
        assert_eq!(used.len(), 1);
        let contents = caches
            .contents(&used[0], true, tmp.path())
            .unwrap()
            .unwrap();
        assert!(
            matches!(contents, Contents::Known { size: 8, .. }),
            "{contents:?}"
        );
    }

    #[test]
    fn a_cache_that_holds_anything_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let req = request("x", ShareMode::Private);
        // This runner's own contents, from an earlier build.
        let earlier = CacheMounts::new(tmp.path().join("store"));
        let lease = earlier
            .acquire(&req, 1, &quiet(), &RunControl::new())
            .unwrap();
        fs_err::write(lease.path().join("mine"), "local").unwrap();
        drop(lease);

        let caches = restoring(tmp.path(), &req);
        let lease = caches
            .acquire(&req, 1, &quiet(), &RunControl::new())
            .unwrap();
        assert_eq!(
            fs_err::read_to_string(lease.path().join("mine")).unwrap(),
            "local"
        );
        assert!(!lease.path().join("sub").exists());
    }

    #[test]
    fn an_empty_cache_is_filled_only_by_a_step_that_holds_it_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let req = request("x", ShareMode::Shared);
        let earlier = CacheMounts::new(tmp.path().join("store"));
        let other = earlier
            .acquire(&req, 1, &quiet(), &RunControl::new())
            .unwrap();

        // Another build shares it, empty: it is not ours to fill.
        let caches = restoring(tmp.path(), &req);
        let lease = caches
            .acquire(&req, 2, &quiet(), &RunControl::new())
            .unwrap();
        assert_eq!(lease.path(), other.path());
        assert!(contents::is_empty_dir(lease.path()));
        drop((lease, other));

        // Nobody holds it: the first taking of a new build fills it (in a
        // temp dir renamed over it), and then shares it.
        let caches = restoring(tmp.path(), &req);
        let lease = caches
            .acquire(&req, 3, &quiet(), &RunControl::new())
            .unwrap();
        assert_eq!(
            fs_err::read_to_string(lease.path().join("sub/f")).unwrap(),
            "restored"
        );
        let shared = earlier
            .acquire(&req, 4, &quiet(), &RunControl::new())
            .unwrap();
        assert_eq!(shared.path(), lease.path(), "shared after the fill");
    }

    #[test]
    fn a_source_that_fails_is_a_warning_and_an_empty_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let req = request("x", ShareMode::Shared);
        let caches = restoring(tmp.path(), &req);
        fs_err::write(tmp.path().join("held.tar"), b"not a tar at all").unwrap();
        let (sink, seen) = events();
        let lease = caches.acquire(&req, 1, &sink, &RunControl::new()).unwrap();
        assert!(contents::is_empty_dir(lease.path()));
        let warnings: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("not restored"), "{warnings:?}");
        // The mode and owner are the seed's, as for any new cache.
        let mode = fs_err::metadata(lease.path()).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn an_export_reads_a_cache_alone_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(tmp.path().join("store"));
        let req = request("x", ShareMode::Shared);
        let lease = caches
            .acquire(&req, 1, &quiet(), &RunControl::new())
            .unwrap();
        fs_err::write(lease.path().join("f"), "one").unwrap();
        let used = caches.used();
        // A step (another build's, say) holds it: not read, not waited for.
        assert!(
            caches
                .contents(&used[0], true, tmp.path())
                .unwrap()
                .is_none()
        );
        drop(lease);

        let first = caches
            .contents(&used[0], true, tmp.path())
            .unwrap()
            .unwrap();
        let Contents::Read { diff_id, size, .. } = first else {
            panic!("{first:?}")
        };
        assert_eq!(size, 3);
        // Unchanged: known from the note, nothing read.
        let again = caches
            .contents(&used[0], true, tmp.path())
            .unwrap()
            .unwrap();
        assert!(matches!(&again, Contents::Known { diff_id: d, .. } if *d == diff_id));
        // Not trusting the note reads it again, to the same tar.
        let reread = caches
            .contents(&used[0], false, tmp.path())
            .unwrap()
            .unwrap();
        assert!(matches!(&reread, Contents::Read { diff_id: d, .. } if *d == diff_id));
        // Changed: read again.
        let lease = caches
            .acquire(&req, 2, &quiet(), &RunControl::new())
            .unwrap();
        fs_err::write(lease.path().join("f"), "two").unwrap();
        drop(lease);
        let changed = caches
            .contents(&used[0], true, tmp.path())
            .unwrap()
            .unwrap();
        assert!(matches!(&changed, Contents::Read { diff_id: d, .. } if *d != diff_id));
    }
}
