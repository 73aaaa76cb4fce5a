//! The tree snapshotter: step roots without mounts, for where kiln may not
//! mount anything (a container started with Docker's default security,
//! where Kaniko runs; docs/ISOLATION.md).
//!
//! ```text
//! <store root>/trees/tree-<pid>-<n>/   this process's (kiln-fs OwnedDir;
//!                                      a sweep removes a dead one's)
//!   <chain hex>/                       the whole tree of a chain: every
//!                                      layer applied, whiteouts carried out
//!   <n>/root/                          a step's root
//!   <n>/upper/                         at commit: the diff, as overlayfs's
//!                                      upper dir would hold it
//!   <n>/                               while a chain is unpacked: one of
//!                                      its layers, folded onto the one
//!                                      below when all are (`fold.rs`)
//! ```
//!
//! A step works in place: [`activate`](Snapshotter::activate) takes its
//! parent's tree (a rename, not a copy) and records the metadata of every
//! entry (its [`Index`]); at commit the root is walked again and what is
//! new or not the same goes into `upper/` (hardlinks of the root's files,
//! directories with their metadata, a 0/0 device for each name gone),
//! which the overlay snapshotter's layer writer turns into the layer. The
//! root then becomes the tree of the new chain. A tree someone else needs
//! after a step took it (a retry, a second stage on the same base, a view
//! held meanwhile) is unpacked again from the chain's layer blobs, which
//! the store keeps: all at once, one thread per core, as the overlay
//! snapshotter unpacks its layers, then folded into one tree by renames.
//!
//! What counts as a change (the overlay differ's rules, `diff.rs`, where an
//! index can answer them): a directory is kept if its type, permissions,
//! owner or kept xattrs changed, or anything under it is kept; a
//! non-directory is the same if it is the same inode with the same ctime
//! (nothing touched it), or if type, mode, owner, size, mtime and xattrs
//! are equal, the mtime has nanoseconds and (a symlink) the target is
//! equal. What the overlay differ decides by comparing contents (a file
//! with a whole-second mtime, as from a tar, whose inode or ctime changed)
//! is kept: the old bytes are gone, and keeping an unchanged file costs
//! bytes, never correctness. The three files a RUN sees its own copies of
//! (/etc/hosts, /etc/resolv.conf, /etc/hostname, set aside and put back
//! by the chroot executor) are the same when the inode and metadata are.
//!
//! Snapshots live as long as the process: the next build unpacks its base
//! again (as Kaniko does); the store keeps the blobs and the cache.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kiln_fs::OwnedDir;
use kiln_fs::xattr::{self, Xattrs};
use kiln_image::document::Descriptor;
use kiln_image::layer::Whiteouts;
use kiln_image::{Digest, Store};
use rustix::fs::{AtFlags, CWD, FileType, Mode, Stat};

use super::active::{CommitOptions, CommitTimings, Committed, CommittedLayer, write_layer};
use super::fold::fold;
use super::plain::{copy_meta, kind, list, lstat, make_dir, read_link};
use super::unpack::{UnpackEvent, parallel, unpack};
use super::{
    ActiveSnapshot, Layer, ReadOnlyMount, Snapshot, SnapshotError, Snapshotter, chain_id,
    chain_ids, check_chain, remove_tree,
};

/// The prefix of a process's directory under `<store>/trees/`.
const PREFIX: &str = "tree-";

/// Files a RUN sees its own copies of: set aside and put back around the
/// step, so their ctime changes though nothing else did.
const SET_ASIDE: &[&[u8]] = &[b"etc/hosts", b"etc/resolv.conf", b"etc/hostname"];

/// Snapshots as whole directory trees, diffed by walking; one per store,
/// shared by the threads of a build (cheap to clone).
#[derive(Debug, Clone)]
pub struct TreeSnapshotter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    dir: OwnedDir,
    next: AtomicU64,
    state: Mutex<State>,
    /// Held while a tree is taken or unpacked, so that one chain is not
    /// unpacked twice at once.
    make: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Every chain this snapshotter knows, with its layers (bottom first):
    /// how to make its tree again.
    chains: HashMap<Digest, Vec<Layer>>,
    /// The chains whose tree is on disk now, and where.
    trees: HashMap<Digest, PathBuf>,
    /// Read-only views using a tree: a step may not take it.
    pins: HashMap<Digest, usize>,
}

impl TreeSnapshotter {
    /// A snapshotter of `store`, with its trees in a directory of this
    /// process's under the store's root (the same filesystem as its blobs).
    pub fn new(store: &Store) -> Result<TreeSnapshotter, SnapshotError> {
        let parent = store.root().join("trees");
        let dir =
            OwnedDir::create(&parent, PREFIX).map_err(SnapshotError::io("creating", &parent))?;
        Ok(TreeSnapshotter {
            inner: Arc::new(Inner {
                store: store.clone(),
                dir,
                next: AtomicU64::new(1),
                state: Mutex::default(),
                make: Mutex::default(),
            }),
        })
    }

    /// Removes every tree: for the end of a build, since a process that
    /// exits without dropping its engine would leave them to the next
    /// command's sweep. The snapshotter is empty afterwards.
    pub fn close(&self) -> Result<(), SnapshotError> {
        let _make = lock(&self.inner.make);
        let mut state = self.state();
        state.trees.clear();
        state.pins.clear();
        remove_tree(self.inner.dir.path())
    }

    /// Forgets every tree and leaves them on disk, for the end of a build
    /// whose process ends soon: in a container that goes with it (Kaniko's
    /// place), the removal [`close`](TreeSnapshotter::close) does would only
    /// delay the end (tens of thousands of files); elsewhere the next
    /// command's sweep removes them.
    pub fn leave(&self) {
        let _make = lock(&self.inner.make);
        let mut state = self.state();
        state.trees.clear();
        state.pins.clear();
        self.inner.dir.leave();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// A new directory's path in this process's directory.
    fn slot(&self) -> PathBuf {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.path().join(n.to_string())
    }

    fn tree_path(&self, chain_id: &Digest) -> PathBuf {
        self.inner.dir.path().join(chain_id.hex())
    }

    fn layers_of(&self, chain_id: &Digest) -> Result<Vec<Layer>, SnapshotError> {
        self.state()
            .chains
            .get(chain_id)
            .cloned()
            .ok_or_else(|| SnapshotError::NotReady {
                chain_id: chain_id.clone(),
                state: "not prepared by this process".to_string(),
            })
    }

    /// Unpacks the layers of `chain_id` into the new directory `dir`: all
    /// at once, each into a directory of its own, folded onto the one
    /// below by renames (`fold.rs`); in order onto one tree if that fails
    /// (a layer that cannot be unpacked alone: a hardlink to a file of a
    /// layer below, which applying in order allows).
    fn unpack_chain(
        &self,
        chain_id: &Digest,
        dir: &Path,
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<(), SnapshotError> {
        let layers = self.layers_of(chain_id)?;
        let chain = chain_ids(layers.iter().map(|l| &l.diff_id));
        if layers.len() > 1 && self.unpack_at_once(&layers, &chain, dir, on_event).is_ok() {
            return Ok(());
        }
        make_dir(dir, 0o755)?;
        let result = (|| {
            for (layer, id) in layers.iter().zip(&chain) {
                on_event(UnpackEvent::Started {
                    chain_id: id,
                    layer,
                });
                let stats = unpack(&self.inner.store, layer, dir, Whiteouts::Apply)?;
                on_event(UnpackEvent::Finished {
                    chain_id: id,
                    layer,
                    stats: &stats,
                });
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = remove_tree(dir);
        }
        result
    }

    /// The layers unpacked in parallel (one thread per core), then folded
    /// bottom up; `dir` is made only if it all worked.
    fn unpack_at_once(
        &self,
        layers: &[Layer],
        chain: &[Digest],
        dir: &Path,
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<(), SnapshotError> {
        let dirs: Vec<PathBuf> = layers.iter().map(|_| self.slot()).collect();
        let indices: Vec<usize> = (0..layers.len()).collect();
        let result = (|| {
            let collected = parallel(&indices, |&i| {
                let (layer, chain_id) = (&layers[i], &chain[i]);
                make_dir(&dirs[i], 0o755)?;
                on_event(UnpackEvent::Started { chain_id, layer });
                let stats = unpack(&self.inner.store, layer, &dirs[i], Whiteouts::Collect)?;
                on_event(UnpackEvent::Finished {
                    chain_id,
                    layer,
                    stats: &stats,
                });
                Ok(stats.collected)
            })?;
            for (upper, collected) in dirs.iter().zip(&collected).skip(1) {
                fold(&dirs[0], upper, collected)?;
                remove_tree(upper)?;
            }
            fs_err::rename(&dirs[0], dir).map_err(SnapshotError::io("renaming", &dirs[0]))
        })();
        if result.is_err() {
            for d in &dirs {
                let _ = remove_tree(d);
            }
        }
        result
    }

    /// Makes sure the tree of `chain_id` is on disk.
    fn materialize(
        &self,
        chain_id: &Digest,
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<(), SnapshotError> {
        let _make = lock(&self.inner.make);
        if self.state().trees.contains_key(chain_id) {
            return Ok(());
        }
        let tmp = self.slot();
        self.unpack_chain(chain_id, &tmp, on_event)?;
        let dir = self.tree_path(chain_id);
        fs_err::rename(&tmp, &dir).map_err(SnapshotError::io("renaming", &tmp))?;
        self.state().trees.insert(chain_id.clone(), dir);
        Ok(())
    }

    /// Moves the tree of `chain_id` to `root` if nobody holds it, else
    /// unpacks the chain there.
    fn take(&self, chain_id: &Digest, root: &Path) -> Result<(), SnapshotError> {
        let _make = lock(&self.inner.make);
        let taken = {
            let mut state = self.state();
            if state.pins.get(chain_id).is_some_and(|&n| n > 0) {
                None
            } else {
                state.trees.remove(chain_id)
            }
        };
        match taken {
            Some(tree) => fs_err::rename(&tree, root).map_err(SnapshotError::io("renaming", &tree)),
            None => self.unpack_chain(chain_id, root, &|_| {}),
        }
    }

    /// Makes `root` the tree of `chain_id` (whose layers are `layers`),
    /// unless it is on disk already.
    fn adopt(
        &self,
        chain_id: &Digest,
        layers: Vec<Layer>,
        root: &Path,
    ) -> Result<(), SnapshotError> {
        let mut state = self.state();
        state.chains.entry(chain_id.clone()).or_insert(layers);
        if state.trees.contains_key(chain_id) {
            return remove_tree(root);
        }
        let dir = self.tree_path(chain_id);
        fs_err::rename(root, &dir).map_err(SnapshotError::io("renaming", root))?;
        state.trees.insert(chain_id.clone(), dir);
        Ok(())
    }
}

impl Snapshotter for TreeSnapshotter {
    fn prepare_with(
        &self,
        layers: &[Layer],
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<Vec<Snapshot>, SnapshotError> {
        let chain = chain_ids(layers.iter().map(|l| &l.diff_id));
        {
            let mut state = self.state();
            for (i, id) in chain.iter().enumerate() {
                state
                    .chains
                    .entry(id.clone())
                    .or_insert_with(|| layers[..=i].to_vec());
            }
        }
        if let Some(top) = chain.last() {
            self.materialize(top, on_event)?;
        }
        Ok(chain
            .into_iter()
            .zip(layers)
            .map(|(chain_id, layer)| Snapshot {
                dir: self.tree_path(&chain_id),
                chain_id,
                diff_id: layer.diff_id.clone(),
            })
            .collect())
    }

    fn activate(
        &self,
        parents: &[Snapshot],
        key: &str,
    ) -> Result<Box<dyn ActiveSnapshot>, SnapshotError> {
        check_chain(parents)?;
        let layers = match parents.last() {
            Some(top) => self.layers_of(&top.chain_id)?,
            None => Vec::new(),
        };
        let dir = self.slot();
        make_dir(&dir, 0o700)?;
        let active = TreeActive {
            snapshotter: self.clone(),
            parents: parents.to_vec(),
            layers,
            key: key.to_string(),
            root: dir.join("root"),
            dir,
            index: Index::default(),
        };
        let mut active = active;
        match parents.last() {
            Some(top) => self.take(&top.chain_id, &active.root)?,
            None => make_dir(&active.root, 0o755)?,
        }
        active.index = Index::of(&active.root)?;
        Ok(Box::new(active))
    }

    fn mount_readonly(&self, chain: &[Snapshot]) -> Result<Box<dyn ReadOnlyMount>, SnapshotError> {
        check_chain(chain)?;
        let Some(top) = chain.last() else {
            let root = self.slot();
            make_dir(&root, 0o755)?;
            return Ok(Box::new(TreeView {
                snapshotter: self.clone(),
                pinned: None,
                root,
            }));
        };
        self.layers_of(&top.chain_id)?;
        let _make = lock(&self.inner.make);
        let existing = self.state().trees.get(&top.chain_id).cloned();
        let root = match existing {
            Some(root) => root,
            None => {
                let tmp = self.slot();
                self.unpack_chain(&top.chain_id, &tmp, &|_| {})?;
                let dir = self.tree_path(&top.chain_id);
                fs_err::rename(&tmp, &dir).map_err(SnapshotError::io("renaming", &tmp))?;
                self.state().trees.insert(top.chain_id.clone(), dir.clone());
                dir
            }
        };
        *self.state().pins.entry(top.chain_id.clone()).or_default() += 1;
        Ok(Box::new(TreeView {
            snapshotter: self.clone(),
            pinned: Some(top.chain_id.clone()),
            root,
        }))
    }

    fn sweep(&self) -> Result<super::SweepReport, SnapshotError> {
        let parent = self.inner.store.root().join("trees");
        kiln_fs::sweep(&parent, PREFIX).map_err(SnapshotError::io("cleaning up", &parent))?;
        Ok(super::SweepReport::default())
    }
}

/// A step's root, and what it held when the step began.
#[derive(Debug)]
struct TreeActive {
    snapshotter: TreeSnapshotter,
    parents: Vec<Snapshot>,
    /// The layers of the parents' chain, bottom first.
    layers: Vec<Layer>,
    key: String,
    /// `dir/root`.
    root: PathBuf,
    dir: PathBuf,
    index: Index,
}

impl ActiveSnapshot for TreeActive {
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

    fn discard(mut self: Box<Self>) -> Result<(), SnapshotError> {
        self.give_back()?;
        remove_tree(&self.dir)
    }
}

impl TreeActive {
    /// A step thrown away unchanged gives its parent's tree back, so that
    /// the next step on it need not unpack it again; a changed one is
    /// removed with its dir, and the tree made again when needed.
    fn give_back(&mut self) -> Result<(), SnapshotError> {
        let Some(top) = self.parents.last() else {
            return Ok(());
        };
        if !self.root.exists() {
            return Ok(());
        }
        let changed = Stager {
            root: &self.root,
            upper: None,
            index: &self.index,
        }
        .dir(b"", true)?;
        if changed {
            return Ok(());
        }
        let chain_id = top.chain_id.clone();
        self.snapshotter
            .adopt(&chain_id, self.layers.clone(), &self.root)
    }

    fn commit_inner(&self, opts: &CommitOptions) -> Result<Committed, SnapshotError> {
        let snapshotter = &self.snapshotter;
        let started = Instant::now();
        let upper = self.dir.join("upper");
        make_dir(&upper, 0o755)?;
        let kept = Stager {
            root: &self.root,
            upper: Some(&upper),
            index: &self.index,
        }
        .dir(b"", true)?;
        let diff_time = started.elapsed();
        if !kept {
            if let Some(top) = self.parents.last() {
                snapshotter.adopt(&top.chain_id, self.layers.clone(), &self.root)?;
            }
            return Ok(Committed {
                layer: None,
                chain: self.parents.clone(),
            });
        }

        let archive = Instant::now();
        let store = &snapshotter.inner.store;
        let (info, stats) = write_layer(store, &upper, Arc::default(), opts, None, || {})?;
        let archive_time = archive.elapsed();
        remove_tree(&upper)?;

        let snapshot_started = Instant::now();
        let below = self.parents.last().map(Snapshot::chain_id);
        let chain_id = chain_id(below, &info.diff_id);
        let media_type = info.compression.layer_media_type(opts.format);
        let descriptor = Descriptor::new(media_type, info.digest.clone(), info.size);
        let mut layers = self.layers.clone();
        layers.push(Layer {
            diff_id: info.diff_id.clone(),
            blob: descriptor.clone(),
        });
        snapshotter.adopt(&chain_id, layers, &self.root)?;
        let snapshot = Snapshot {
            dir: snapshotter.tree_path(&chain_id),
            chain_id,
            diff_id: info.diff_id.clone(),
        };
        let mut chain = self.parents.clone();
        chain.push(snapshot.clone());
        Ok(Committed {
            layer: Some(CommittedLayer {
                descriptor,
                diff_id: info.diff_id,
                uncompressed_size: info.uncompressed_size,
                stats,
                snapshot,
                timings: CommitTimings {
                    diff: diff_time,
                    archive: archive_time,
                    snapshot: snapshot_started.elapsed(),
                    ..CommitTimings::default()
                },
            }),
            chain,
        })
    }
}

impl Drop for TreeActive {
    fn drop(&mut self) {
        let _ = self.give_back();
        let _ = remove_tree(&self.dir);
    }
}

/// A chain's tree, shown as it is (pinned: no step takes it meanwhile);
/// nothing may write to it. An empty directory for an empty chain.
#[derive(Debug)]
struct TreeView {
    snapshotter: TreeSnapshotter,
    pinned: Option<Digest>,
    root: PathBuf,
}

impl TreeView {
    fn finish(&mut self) -> Result<(), SnapshotError> {
        match &self.pinned {
            Some(chain_id) => {
                let mut state = self.snapshotter.state();
                if let Some(n) = state.pins.get_mut(chain_id) {
                    *n = n.saturating_sub(1);
                }
                drop(state);
                self.pinned = None;
                // Released: the root is the chain's tree, not the view's.
                self.root = PathBuf::new();
                Ok(())
            }
            None if self.root.as_os_str().is_empty() => Ok(()),
            None => remove_tree(&self.root),
        }
    }
}

impl ReadOnlyMount for TreeView {
    fn root(&self) -> &Path {
        &self.root
    }

    fn release(mut self: Box<Self>) -> Result<(), SnapshotError> {
        self.finish()
    }
}

impl Drop for TreeView {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// What an entry was when the step began.
#[derive(Debug, Clone)]
struct Meta {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    rdev: u64,
    xattrs: Xattrs,
    /// A symlink's target.
    link: Option<Vec<u8>>,
}

impl Meta {
    fn of(path: &Path, st: &Stat) -> Result<Meta, SnapshotError> {
        let link = match kind(st) {
            FileType::Symlink => Some(read_link(path)?.into_os_string().into_vec()),
            _ => None,
        };
        Ok(Meta {
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
            rdev: st.st_rdev,
            xattrs: read_xattrs(path, st)?,
            link,
        })
    }
}

/// Every entry of a root (relative paths, no leading `/`), and each
/// directory's names.
#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Vec<u8>, Meta>,
    children: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
}

impl Index {
    fn of(root: &Path) -> Result<Index, SnapshotError> {
        let mut index = Index::default();
        let mut stack = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let dir = join_root(root, &rel);
            let mut names = BTreeSet::new();
            for name in list(&dir)? {
                let name = name.into_vec();
                let child = join(&rel, &name);
                let path = join_root(root, &child);
                let st = lstat(&path)?;
                if kind(&st) == FileType::Directory {
                    stack.push(child.clone());
                }
                index.entries.insert(child, Meta::of(&path, &st)?);
                names.insert(name);
            }
            index.children.insert(rel, names);
        }
        Ok(index)
    }
}

/// Writes what changed under a root into an upper dir, or (without one)
/// only tells whether anything did.
struct Stager<'a> {
    root: &'a Path,
    upper: Option<&'a Path>,
    index: &'a Index,
}

impl Stager<'_> {
    /// Stages the directory `rel`; `was_dir`: the index has a directory
    /// there, whose gone names need whiteouts. Returns whether anything
    /// under it is kept (without an upper dir, as soon as something is).
    /// A directory of the upper dir is made only when something goes in
    /// it: most of a root is unchanged, and making and removing thousands
    /// of directories costs more than the walk.
    fn dir(&self, rel: &[u8], was_dir: bool) -> Result<bool, SnapshotError> {
        let names: BTreeSet<Vec<u8>> = list(&join_root(self.root, rel))?
            .into_iter()
            .map(OsStringExt::into_vec)
            .collect();
        let mut kept = false;
        for name in &names {
            let child = join(rel, name);
            let src = join_root(self.root, &child);
            let st = lstat(&src)?;
            let old = self.index.entries.get(&child);
            if kind(&st) == FileType::Directory {
                let old_dir =
                    old.filter(|m| FileType::from_raw_mode(m.mode) == FileType::Directory);
                let below = self.dir(&child, old_dir.is_some())?;
                let same = match old_dir {
                    Some(m) => same_dir(m, &src, &st)?,
                    None => false,
                };
                if below || !same {
                    let Some(upper) = self.upper else {
                        return Ok(true);
                    };
                    let dst = self.ensure(upper, &child)?;
                    copy_meta(&src, &dst)?;
                    kept = true;
                }
            } else {
                let same = match old {
                    Some(m) => same_entry(m, &child, &src, &st)?,
                    None => false,
                };
                if !same && kind(&st) != FileType::Socket {
                    let Some(upper) = self.upper else {
                        return Ok(true);
                    };
                    self.ensure(upper, rel)?;
                    let dst = join_root(upper, &child);
                    rustix::fs::linkat(CWD, &src, CWD, &dst, AtFlags::empty())
                        .map_err(SnapshotError::errno("linking into the diff", &src))?;
                    kept = true;
                }
            }
        }
        if was_dir && let Some(before) = self.index.children.get(rel) {
            for gone in before.difference(&names) {
                let Some(upper) = self.upper else {
                    return Ok(true);
                };
                self.ensure(upper, rel)?;
                let path = join_root(upper, &join(rel, gone));
                rustix::fs::mknodat(CWD, &path, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(SnapshotError::errno("making a whiteout at", &path))?;
                kept = true;
            }
        }
        Ok(kept)
    }

    /// Makes the upper dir's directory `rel` and its missing parents (their
    /// metadata is set once their walk is done).
    fn ensure(&self, upper: &Path, rel: &[u8]) -> Result<PathBuf, SnapshotError> {
        let dst = join_root(upper, rel);
        if rel.is_empty() || dst.is_dir() {
            return Ok(dst);
        }
        if let Some(slash) = rel.iter().rposition(|&b| b == b'/') {
            self.ensure(upper, &rel[..slash])?;
        }
        make_dir(&dst, 0o700)?;
        Ok(dst)
    }
}

/// A directory is the same if its type, permissions, owner and kept
/// xattrs are (not its times: names coming and going change them).
fn same_dir(old: &Meta, path: &Path, st: &Stat) -> Result<bool, SnapshotError> {
    if (old.mode, old.uid, old.gid) != (st.st_mode, st.st_uid, st.st_gid) {
        return Ok(false);
    }
    if (old.ino, old.ctime) == (st.st_ino, (st.st_ctime, st.st_ctime_nsec as i64)) {
        return Ok(true);
    }
    Ok(read_xattrs(path, st)? == old.xattrs)
}

/// Whether a non-directory is what it was (the rules in the module docs).
fn same_entry(old: &Meta, rel: &[u8], path: &Path, st: &Stat) -> Result<bool, SnapshotError> {
    if FileType::from_raw_mode(old.mode) != kind(st) {
        return Ok(false);
    }
    let ctime = (st.st_ctime, st.st_ctime_nsec as i64);
    if old.ino == st.st_ino && old.ctime == ctime {
        return Ok(true);
    }
    let mtime = (st.st_mtime, st.st_mtime_nsec as i64);
    let meta = (st.st_mode, st.st_uid, st.st_gid, st.st_size, mtime);
    if (old.mode, old.uid, old.gid, old.size, old.mtime) != meta {
        return Ok(false);
    }
    if read_xattrs(path, st)? != old.xattrs {
        return Ok(false);
    }
    Ok(match kind(st) {
        FileType::Symlink => old.link.as_deref() == Some(read_link(path)?.as_os_str().as_bytes()),
        FileType::RegularFile => mtime.1 != 0 || (old.ino == st.st_ino && SET_ASIDE.contains(&rel)),
        _ => old.rdev == st.st_rdev,
    })
}

fn read_xattrs(path: &Path, st: &Stat) -> Result<Xattrs, SnapshotError> {
    if kind(st) == FileType::Symlink {
        // Only `trusted.*`/`security.*` could sit on one; no layer keeps them.
        return Ok(Xattrs::default());
    }
    xattr::read_path(path.as_os_str().as_bytes(), xattr::in_layer)
        .map_err(SnapshotError::errno("reading the xattrs of", path))
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    kiln_fs::path::join(rel, name)
}

fn join_root(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere cannot leave them torn.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
