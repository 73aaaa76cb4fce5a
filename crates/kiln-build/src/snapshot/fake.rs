//! A snapshotter without mounts, for tests that run as any user (feature
//! `testing`). It keeps the overlay snapshotter's contract (the suite in
//! `suite.rs` runs against both) with plain directories and copies:
//!
//! ```text
//! <dir>/
//!   snapshots/<chain hex>/  the whole tree of a chain: its parent's tree
//!                           with its layer applied (whiteouts carried out)
//!   active/<n>/root/        a step's root: a copy of its parent's tree
//!   active/<n>/upper/       at commit: what overlayfs's upper dir would
//!                           hold (every directory, what is new or not the
//!                           same as below, a whiteout for each name gone)
//!   views/<n>/              a read-only view: a copy of the chain's tree
//! ```
//!
//! A commit then does what the overlay one does with its upper dir: the
//! same differ leaves out what is no change, the same layer writer makes
//! the blob, and the chain ID follows from its diffID. The root, which
//! already is the tree of the new chain, becomes its snapshot.
//!
//! What a copy loses: hardlinks (each name gets its own file), and owners
//! when not run as root (every file is the running user's, as an
//! extraction without CAP_CHOWN leaves them). A view is a copy, not
//! read-only: writing to it changes no snapshot. Whiteouts in `upper/`
//! are 0/0 character devices, which Linux lets any user make since 5.8.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kiln_image::document::Descriptor;
use kiln_image::layer::Whiteouts;
use kiln_image::{Digest, Store};
use rustix::fs::{CWD, FileType, Mode, Stat};

use super::active::{CommitOptions, CommitTimings, Committed, CommittedLayer, write_layer};
use super::plain::{copy_meta, kind, list, lstat, lstat_if_any, make_dir, read_link};
use super::unpack::{UnpackEvent, unpack};
use super::{
    ActiveSnapshot, Layer, ReadOnlyMount, Snapshot, SnapshotError, Snapshotter, chain_id,
    chain_ids, check_chain, diff, remove_tree,
};

/// Snapshots as directories under a directory of the test's; cheap to
/// clone (the clones share everything).
#[derive(Debug, Clone)]
pub struct FakeSnapshotter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    dir: PathBuf,
    next: AtomicU64,
    /// The snapshots made, by chain ID. Held while one is made, so that
    /// two threads preparing one chain make it once.
    snapshots: Mutex<HashMap<Digest, PathBuf>>,
    /// The chain IDs unpacked from layer blobs, in order.
    unpacked: Mutex<Vec<Digest>>,
}

impl FakeSnapshotter {
    /// A snapshotter of `store` keeping its directories under `dir`
    /// (created if missing; best a temp dir of the test's).
    pub fn new(store: &Store, dir: &Path) -> Result<FakeSnapshotter, SnapshotError> {
        for sub in ["snapshots", "active", "views"] {
            let d = dir.join(sub);
            fs_err::create_dir_all(&d).map_err(SnapshotError::io("creating", &d))?;
        }
        Ok(FakeSnapshotter {
            inner: Arc::new(Inner {
                store: store.clone(),
                dir: dir.to_path_buf(),
                next: AtomicU64::new(1),
                snapshots: Mutex::default(),
                unpacked: Mutex::default(),
            }),
        })
    }

    /// The chain IDs it unpacked from layer blobs (not those steps
    /// committed), in order: what a build had to prepare.
    pub fn unpacked(&self) -> Vec<Digest> {
        lock(&self.inner.unpacked).clone()
    }

    /// Step roots and views not yet committed, discarded, released or
    /// dropped.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in ["active", "views"] {
            if let Ok(entries) = fs_err::read_dir(self.inner.dir.join(sub)) {
                out.extend(entries.flatten().map(|e| e.path()));
            }
        }
        out.sort();
        out
    }

    /// A new directory's path under `sub` (`active`, `views`).
    fn slot(&self, sub: &str) -> PathBuf {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.join(sub).join(n.to_string())
    }

    /// Fails unless every snapshot is one this snapshotter made and still has.
    fn check_known(&self, snapshots: &[Snapshot]) -> Result<(), SnapshotError> {
        let made = lock(&self.inner.snapshots);
        for s in snapshots {
            if made.get(&s.chain_id) != Some(&s.dir) || !s.dir.is_dir() {
                return Err(SnapshotError::NotReady {
                    chain_id: s.chain_id.clone(),
                    state: "not recorded".to_string(),
                });
            }
        }
        Ok(())
    }

    /// Makes `root` (a step's root after its step) the snapshot
    /// `chain_id`, unless another step made that very snapshot first.
    fn adopt(&self, chain_id: &Digest, root: &Path) -> Result<PathBuf, SnapshotError> {
        let mut made = lock(&self.inner.snapshots);
        if let Some(dir) = made.get(chain_id) {
            return Ok(dir.clone());
        }
        let dir = self.inner.dir.join("snapshots").join(chain_id.hex());
        fs_err::rename(root, &dir).map_err(SnapshotError::io("renaming", root))?;
        made.insert(chain_id.clone(), dir.clone());
        Ok(dir)
    }
}

impl Snapshotter for FakeSnapshotter {
    fn prepare_with(
        &self,
        layers: &[Layer],
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<Vec<Snapshot>, SnapshotError> {
        let chain = chain_ids(layers.iter().map(|l| &l.diff_id));
        let mut made = lock(&self.inner.snapshots);
        let mut out: Vec<Snapshot> = Vec::new();
        for (chain_id, layer) in chain.into_iter().zip(layers) {
            let dir = match made.get(&chain_id) {
                Some(dir) if dir.is_dir() => dir.clone(),
                _ => {
                    on_event(UnpackEvent::Started {
                        chain_id: &chain_id,
                        layer,
                    });
                    let tmp = self.slot("active");
                    copy_or_empty(out.last().map(Snapshot::dir), &tmp)?;
                    let stats = unpack(&self.inner.store, layer, &tmp, Whiteouts::Apply)
                        .inspect_err(|_| {
                            let _ = remove_tree(&tmp);
                        })?;
                    let dir = self.inner.dir.join("snapshots").join(chain_id.hex());
                    remove_tree(&dir)?;
                    fs_err::rename(&tmp, &dir).map_err(SnapshotError::io("renaming", &tmp))?;
                    made.insert(chain_id.clone(), dir.clone());
                    lock(&self.inner.unpacked).push(chain_id.clone());
                    on_event(UnpackEvent::Finished {
                        chain_id: &chain_id,
                        layer,
                        stats: &stats,
                    });
                    dir
                }
            };
            out.push(Snapshot {
                chain_id,
                diff_id: layer.diff_id.clone(),
                dir,
            });
        }
        Ok(out)
    }

    fn activate(
        &self,
        parents: &[Snapshot],
        key: &str,
    ) -> Result<Box<dyn ActiveSnapshot>, SnapshotError> {
        check_chain(parents)?;
        self.check_known(parents)?;
        let dir = self.slot("active");
        let root = dir.join("root");
        make_dir(&dir, 0o700)?;
        let active = FakeActive {
            snapshotter: self.clone(),
            parents: parents.to_vec(),
            key: key.to_string(),
            root,
            dir,
        };
        copy_or_empty(parents.last().map(Snapshot::dir), &active.root)?;
        Ok(Box::new(active))
    }

    fn mount_readonly(&self, chain: &[Snapshot]) -> Result<Box<dyn ReadOnlyMount>, SnapshotError> {
        check_chain(chain)?;
        self.check_known(chain)?;
        let view = FakeView {
            root: self.slot("views"),
        };
        copy_or_empty(chain.last().map(Snapshot::dir), &view.root)?;
        Ok(Box::new(view))
    }
}

/// A step's root: a copy of its parent's tree. Removed when dropped.
#[derive(Debug)]
struct FakeActive {
    snapshotter: FakeSnapshotter,
    parents: Vec<Snapshot>,
    key: String,
    /// `dir/root`.
    root: PathBuf,
    dir: PathBuf,
}

impl ActiveSnapshot for FakeActive {
    fn root(&self) -> &Path {
        &self.root
    }

    fn parents(&self) -> &[Snapshot] {
        &self.parents
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn commit(self: Box<Self>, opts: &CommitOptions) -> Result<Committed, SnapshotError> {
        // `self` is dropped after, which removes what is left of its dir.
        self.commit_inner(opts)
    }

    fn discard(self: Box<Self>) -> Result<(), SnapshotError> {
        remove_tree(&self.dir)
    }
}

impl FakeActive {
    fn commit_inner(&self, opts: &CommitOptions) -> Result<Committed, SnapshotError> {
        let lower = self.parents.last().map(Snapshot::dir);
        let upper = self.dir.join("upper");
        make_dir(&upper, 0o755)?;
        stage(&self.root, lower, &upper)?;
        copy_meta(&self.root, &upper)?;
        let lowers: Vec<PathBuf> = lower.map(Path::to_path_buf).into_iter().collect();
        let diff = diff::diff(&upper, &lowers)?;
        if diff.empty {
            return Ok(Committed {
                layer: None,
                chain: self.parents.clone(),
            });
        }

        // The overlay snapshotter's pipeline (active.rs), on `upper`.
        let store = &self.snapshotter.inner.store;
        let (info, stats) = write_layer(store, &upper, Arc::new(diff.exclude), opts, None, || {})?;

        let below = self.parents.last().map(Snapshot::chain_id);
        let chain_id = chain_id(below, &info.diff_id);
        let dir = self.snapshotter.adopt(&chain_id, &self.root)?;
        let snapshot = Snapshot {
            chain_id,
            diff_id: info.diff_id.clone(),
            dir,
        };
        let mut chain = self.parents.clone();
        chain.push(snapshot.clone());
        let media_type = info.compression.layer_media_type(opts.format);
        Ok(Committed {
            layer: Some(CommittedLayer {
                descriptor: Descriptor::new(media_type, info.digest, info.size),
                diff_id: info.diff_id,
                uncompressed_size: info.uncompressed_size,
                stats,
                snapshot,
                timings: CommitTimings::default(),
            }),
            chain,
        })
    }
}

impl Drop for FakeActive {
    fn drop(&mut self) {
        let _ = remove_tree(&self.dir);
    }
}

/// A copy of a chain's tree. Removed when dropped.
#[derive(Debug)]
struct FakeView {
    root: PathBuf,
}

impl ReadOnlyMount for FakeView {
    fn root(&self) -> &Path {
        &self.root
    }

    fn release(self: Box<Self>) -> Result<(), SnapshotError> {
        remove_tree(&self.root)
    }
}

impl Drop for FakeView {
    fn drop(&mut self) {
        let _ = remove_tree(&self.root);
    }
}

/// Writes into `upper` what overlayfs's upper dir would hold after a step
/// turned the tree `lower` (none: scratch) into `root`: every directory of
/// `root` (more than overlayfs copies up; the differ leaves out the
/// unchanged ones), each non-directory that is new or not the same as
/// below, and a whiteout for each name below that is gone.
fn stage(root: &Path, lower: Option<&Path>, upper: &Path) -> Result<(), SnapshotError> {
    let names = list(root)?;
    for name in &names {
        let (src, dst) = (root.join(name), upper.join(name));
        let st = lstat(&src)?;
        let below = lower.map(|l| l.join(name));
        let below_st = match &below {
            Some(b) => lstat_if_any(b)?,
            None => None,
        };
        match (kind(&st), below_st.as_ref().map(kind)) {
            (FileType::Directory, Some(FileType::Directory)) => {
                make_dir(&dst, 0o700)?;
                stage(&src, below.as_deref(), &dst)?;
                copy_meta(&src, &dst)?;
            }
            (FileType::Directory, _) => copy_tree(&src, &dst)?,
            _ => {
                let same = match (&below, &below_st) {
                    (Some(b), Some(bst)) => same_entry(&src, &st, b, bst)?,
                    _ => false,
                };
                if !same {
                    copy_tree(&src, &dst)?;
                }
            }
        }
    }
    if let Some(lower) = lower {
        for gone in list(lower)?.difference(&names) {
            let path = upper.join(gone);
            rustix::fs::mknodat(CWD, &path, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(SnapshotError::errno("making a whiteout at", &path))?;
        }
    }
    Ok(())
}

/// Whether a non-directory is what it was below, by the overlay differ's
/// rules: type, mode, owner, size and mtime equal, and where the mtimes
/// have no nanoseconds (times from a tar) the contents too.
fn same_entry(a: &Path, sa: &Stat, b: &Path, sb: &Stat) -> Result<bool, SnapshotError> {
    let meta = |s: &Stat| {
        (
            s.st_mode,
            s.st_uid,
            s.st_gid,
            s.st_size,
            s.st_mtime,
            s.st_mtime_nsec,
        )
    };
    if meta(sa) != meta(sb) {
        return Ok(false);
    }
    Ok(match kind(sa) {
        FileType::Symlink => read_link(a)? == read_link(b)?,
        FileType::RegularFile if sa.st_mtime_nsec == 0 => {
            fs_err::read(a).map_err(SnapshotError::io("reading", a))?
                == fs_err::read(b).map_err(SnapshotError::io("reading", b))?
        }
        _ => true,
    })
}

/// Copies the tree `src` to `dst` (or makes `dst` an empty 0755
/// directory, a scratch root, when there is no `src`).
fn copy_or_empty(src: Option<&Path>, dst: &Path) -> Result<(), SnapshotError> {
    match src {
        Some(src) => copy_tree(src, dst),
        None => make_dir(dst, 0o755),
    }
}

/// Copies `src` (any file type but a socket, which is skipped) to the new
/// path `dst` with its mode, times, kept xattrs and, as root, owner.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let st = lstat(src)?;
    match kind(&st) {
        FileType::Directory => {
            make_dir(dst, 0o700)?;
            for name in list(src)? {
                copy_tree(&src.join(&name), &dst.join(&name))?;
            }
        }
        FileType::RegularFile => {
            fs_err::copy(src, dst).map_err(SnapshotError::io("copying", src))?;
        }
        FileType::Symlink => {
            rustix::fs::symlink(read_link(src)?, dst)
                .map_err(SnapshotError::errno("making the symlink", dst))?;
        }
        FileType::Socket => return Ok(()),
        other => rustix::fs::mknodat(
            CWD,
            dst,
            other,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            st.st_rdev,
        )
        .map_err(SnapshotError::errno("making", dst))?,
    }
    copy_meta(src, dst)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps and lists: a panic elsewhere cannot leave them torn.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
