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
//!     tmp-<pid>-<n>/        an instance being made (seeded), renamed into place
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

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_dockerfile::instructions::ShareMode;
use kiln_sandbox::RunControl;
use rustix::fs::{CWD, Gid, Mode, RenameFlags, Uid};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::{RunError, io_at};
use super::observer::StepObserver;
use super::rootpath;
use crate::events::{Event, EventSink, StepId};
use crate::ops::{self, CopyOptions};

/// The version of the cache directory key: bump it when what goes into
/// the key changes meaning.
const KEY_VERSION: &str = "kiln-cache-mount-v1";

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
        }
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
    holder: Option<PathBuf>,
    _lock: fs_err::File,
}

impl CacheLease {
    /// The instance directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
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
        let cache = self.dir.join(req.key());
        fs_err::create_dir_all(&cache)?;
        let id_file = cache.join("id");
        if !id_file.exists() {
            // For people and tools only; a race writes the same bytes.
            let _ = fs_err::write(&id_file, format!("{}\n", req.id));
        }
        remove_stale_temps(&cache);
        let mut last_note: Option<Instant> = None;
        let result = loop {
            if control.is_cancelled() {
                break Err(RunError::Cancelled);
            }
            match self.try_acquire(&cache, req, step) {
                Ok(Some(lease)) => break Ok(lease),
                Ok(None) => {}
                Err(e) => break Err(e),
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
        result
    }

    /// One pass over the instances; `None` when a `locked` cache is busy.
    fn try_acquire(
        &self,
        cache: &Path,
        req: &CacheRequest,
        step: StepId,
    ) -> Result<Option<CacheLease>, RunError> {
        loop {
            let existing = instances(cache)?;
            for &n in &existing {
                let lock = open_lock(&lock_path(cache, n), false)?;
                if try_lock(&lock, req.sharing)? {
                    return self.lease(cache, n, lock, req, step).map(Some);
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
                return self.lease(cache, n, lock, req, step).map(Some);
            }
        }
    }

    /// Makes sure instance `n` exists, then says who holds it.
    fn lease(
        &self,
        cache: &Path,
        n: u32,
        lock: fs_err::File,
        req: &CacheRequest,
        step: StepId,
    ) -> Result<CacheLease, RunError> {
        let path = ensure_instance(cache, n, req)?;
        let holders = cache.join(format!("{n}.holders"));
        fs_err::create_dir_all(&holders)?;
        let holder = holders.join(format!("{}-{}.json", std::process::id(), next_seq()));
        let note = Holder {
            build: self.build.clone(),
            pid: std::process::id(),
            step,
            target: req.target.clone(),
            sharing: req.sharing.as_str().to_string(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let json = serde_json::to_vec(&note).map_err(io::Error::other)?;
        fs_err::File::create(&holder)?.write_all(&json)?;
        Ok(CacheLease {
            path,
            holder: Some(holder),
            _lock: lock,
        })
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

/// The directory of instance `n`, made (and seeded) if it is new: in a
/// temp dir first, renamed into place without replacing, so that a user
/// never sees a half-seeded cache and two makers cannot both win.
fn ensure_instance(cache: &Path, n: u32, req: &CacheRequest) -> Result<PathBuf, RunError> {
    let dir = cache.join(n.to_string());
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = cache.join(format!("tmp-{}-{}", std::process::id(), next_seq()));
    let made = seed(&tmp, req).and_then(|()| {
        match rustix::fs::renameat_with(CWD, &tmp, CWD, &dir, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            // Another shared user made it first: theirs is as good.
            Err(Errno::EXIST | Errno::NOTEMPTY) => Ok(()),
            // A filesystem without RENAME_NOREPLACE (renameat2(2)): a
            // plain rename, which only replaces an empty directory.
            Err(Errno::INVAL) if !dir.exists() => match fs_err::rename(&tmp, &dir) {
                Ok(()) => Ok(()),
                Err(_) if dir.is_dir() => Ok(()),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(io_at("renaming into place", &tmp)(e.into()).into()),
        }
    });
    if tmp.exists() {
        let _ = fs_err::remove_dir_all(&tmp);
    }
    made.map(|()| dir)
}

fn seed(tmp: &Path, req: &CacheRequest) -> Result<(), RunError> {
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
            // Owners, modes, links and times as in the source (what
            // BuildKit's mutable ref on top of the source shows).
            let seed_err = |source| RunError::CacheSeed {
                id: req.id.clone(),
                source,
            };
            let items = ops::expand_source(root, source, false).map_err(seed_err)?;
            ops::copy_sources(&items, tmp, "/", "/", &CopyOptions::copy()).map_err(seed_err)?;
            use std::os::unix::fs::MetadataExt;
            (meta.mode() & 0o7777, meta.uid(), meta.gid())
        }
    };
    rustix::fs::chown(tmp, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| io_at("chown", tmp)(e.into()))?;
    // After chown, which clears setuid/setgid bits.
    rustix::fs::chmod(tmp, Mode::from_raw_mode(mode)).map_err(|e| io_at("chmod", tmp)(e.into()))?;
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
            holders.push(format!(
                "build {} (pid {}), step #{}, {} at {}, since {} ({ago}s)",
                h.build,
                h.pid,
                h.step,
                h.sharing,
                h.target,
                httpdate::fmt_http_date(since),
            ));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let events: EventSink = {
            let notes = notes.clone();
            let control = control.clone();
            Arc::new(move |e| {
                if let Event::StepNote { text, .. } = e {
                    notes.lock().unwrap().push(text);
                    control.cancel();
                }
            })
        };
        let err = caches
            .acquire(&request("x", ShareMode::Locked), 3, &events, &control)
            .unwrap_err();
        assert!(matches!(err, RunError::Cancelled), "{err}");
        let notes = notes.lock().unwrap();
        assert!(notes[0].contains("build test build"), "{}", notes[0]);
        assert!(notes[0].contains("step #1"), "{}", notes[0]);
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
}
