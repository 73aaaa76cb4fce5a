//! Snapshotters: the root filesystem of each step, made from the layers
//! below it, and what the step changed made into a layer. The engine sees
//! them through the [`Snapshotter`], [`ActiveSnapshot`] and
//! [`ReadOnlyMount`] traits (`traits.rs`); tests use a fake made of plain
//! directories (`fake.rs`, with the `testing` feature).
//!
//! The rest of this module is the real one, [`OverlaySnapshotter`]: layers
//! unpacked once, stacked by overlayfs, and the upper dir of a step taken
//! as its diff (DESIGN.md, "Snapshots").
//!
//! ```text
//! <store root>/
//!   snapshots/<chain hex>/       a layer in overlayfs's format (whiteouts are
//!                                0/0 devices, opaque dirs carry an xattr)
//!   snapshots/<chain hex>.lock   flock: held while it is made or removed
//!   active/<pid>-<n>-<key>.lock  flock: held by the process using the dir;
//!                                lists the snapshots it mounts
//!   active/<pid>-<n>-<key>/      upper/, work/, root/ (the mount point),
//!                                empty/ (the bottom lower dir when there
//!                                is no other: FROM scratch)
//! ```
//!
//! A snapshot is recorded in the store's index under its chain ID
//! ([`chain_id`]), `Unpacking` while its directory is being written and
//! `Ready` once complete (`Removing` while removed). The
//! record is the truth for "complete"; the snapshot's lock file is the
//! truth for "someone is working on it right now", because the kernel
//! drops a flock when its holder dies. So:
//!
//! - `prepare` takes a layer's lock, looks at the record, and unpacks
//!   only if it is not `Ready`. Two processes (or threads) preparing one
//!   chain serialise on the lock: the second finds `Ready` and unpacks
//!   nothing. Unpacking into a temp dir and renaming it into place would
//!   also be safe, but both would unpack a multi-GB layer. A crash leaves
//!   an `Unpacking` record with a free lock: the next preparer (or
//!   `sweep`) removes it and starts over.
//! - `activate` records the snapshots it mounts in its own lock file
//!   *before* it checks that they are `Ready`, and
//!   [`OverlaySnapshotter::remove`] marks a snapshot `Removing` *before* it
//!   looks for live lock files naming it: whichever comes second sees the
//!   other, so a mounted lower dir is never deleted.
//! - A mount outlives a killed process; sweep finds those under `active/`
//!   in /proc/self/mountinfo and unmounts the ones whose owner's lock is
//!   free.
//!
//! - `Ready` does not wait for the disk: flushing a 2 GB layer or 200,000
//!   new inodes costs seconds on every commit, and BuildKit and Buildah
//!   leave it to writeback too. A killed process loses no page cache, a
//!   power loss may, so a `Ready` record is stamped unsynced with the boot
//!   id. A snapshot unsynced since an earlier boot is never used (it is
//!   made again from its layer blob, which the store does fsync), and
//!   sweep removes it; sweep also flushes the filesystem once, and clears
//!   the stamps, when unsynced snapshots are older than writeback's expiry
//!   (by then that flush has little or nothing left to write).
//!
//! Lifecycles are types: [`ActiveSnapshot::commit`] and
//! [`ActiveSnapshot::discard`] take it by value, and dropping one unmounts
//! and removes it.

mod active;
mod chain;
mod diff;
mod error;
#[cfg(feature = "testing")]
pub(crate) mod fake;
mod fold;
mod gc;
mod lock;
mod mount;
mod plain;
mod sweep;
mod traits;
mod tree;
mod unpack;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_image::document::Descriptor;
use kiln_image::{Digest, SnapshotRecord, SnapshotState, Store, Unsynced};

pub use active::{CommitOptions, Committed, WrittenLayer};
pub use chain::chain_id;
pub(crate) use chain::chain_ids;
pub use error::SnapshotError;
pub(crate) use sweep::SweepReport;
pub use traits::{ActiveSnapshot, PendingCommit, ReadOnlyMount, Sealed, Snapshotter};
pub use tree::TreeSnapshotter;
pub use unpack::UnpackEvent;

/// A layer to unpack: its diffID (from the image config) and its blob in
/// the store (from the manifest; the media type says how it is compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub diff_id: Digest,
    pub blob: Descriptor,
}

/// A ready snapshot: one layer unpacked in a directory of its own, meant
/// to be stacked on the snapshots of the layers below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    chain_id: Digest,
    diff_id: Digest,
    dir: PathBuf,
}

impl Snapshot {
    /// The chain ID of the stack this snapshot tops.
    pub fn chain_id(&self) -> &Digest {
        &self.chain_id
    }

    /// The diffID of its layer.
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }

    /// Its directory, in overlayfs's whiteout format.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The overlay snapshotter: unpacks layers into snapshots and mounts them;
/// one per store, shared by the threads of a build (cheap to clone).
#[derive(Debug, Clone)]
pub struct OverlaySnapshotter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    snapshots: PathBuf,
    active: PathBuf,
    /// Mount with `userxattr` and mark opaque lower dirs with
    /// `user.overlay.opaque`: kiln runs in a user namespace (rootless),
    /// where `trusted.*` xattrs are out of reach.
    userxattr: bool,
}

impl OverlaySnapshotter {
    /// The snapshotter of `store`, keeping its directories under the
    /// store's root. Call [`OverlaySnapshotter::sweep`] once at engine start.
    pub fn new(store: &Store) -> Result<OverlaySnapshotter, SnapshotError> {
        // Canonical, because mount points are compared with the paths of
        // /proc/self/mountinfo, which the kernel resolves.
        let root = fs_err::canonicalize(store.root())
            .map_err(SnapshotError::io("resolving", store.root()))?;
        let inner = Inner {
            store: store.clone(),
            snapshots: root.join("snapshots"),
            active: root.join("active"),
            userxattr: kiln_fs::in_user_namespace(),
        };
        for dir in [&inner.snapshots, &inner.active] {
            // Owner-only, as Docker keeps its layer dirs: image files may
            // hold anything, and setuid binaries must not be reachable by
            // other users through these paths (CVE-2021-41091).
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(SnapshotError::io("creating", dir))?;
        }
        Ok(OverlaySnapshotter {
            inner: Arc::new(inner),
        })
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// How layers are unpacked into snapshots: overlayfs's format for the
    /// mounts this snapshotter makes.
    fn whiteouts(&self) -> kiln_image::layer::Whiteouts {
        if self.inner.userxattr {
            kiln_image::layer::Whiteouts::UserOverlay
        } else {
            kiln_image::layer::Whiteouts::Overlay
        }
    }

    /// The directory of the snapshot with this chain ID.
    fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.inner.snapshots.join(chain_id.hex())
    }

    fn snapshot_lock(&self, chain_id: &Digest) -> PathBuf {
        lock::lock_path(&self.inner.snapshots, chain_id.hex())
    }

    /// Where a record's directory is. Records name a directory under
    /// `snapshots/`; anything else is not one kiln wrote.
    fn record_dir(&self, chain_id: &Digest, record: &SnapshotRecord) -> PathBuf {
        let name = Path::new(&record.dir);
        let plain = name.components().count() == 1
            && matches!(
                name.components().next(),
                Some(std::path::Component::Normal(_))
            );
        if plain {
            self.inner.snapshots.join(name)
        } else {
            self.snapshot_dir(chain_id)
        }
    }

    /// Whether a record describes a usable snapshot: ready, and its
    /// directory still there.
    fn usable(&self, chain_id: &Digest, record: Option<&SnapshotRecord>) -> Option<PathBuf> {
        let record = record?;
        if record.state != SnapshotState::Ready {
            return None;
        }
        if record
            .unsynced
            .as_ref()
            .is_some_and(|u| u.boot_id != boot_id())
        {
            // Written before a reboot and never flushed: files may be
            // empty. Made again (from its layer blob) like a missing one.
            return None;
        }
        let dir = self.record_dir(chain_id, record);
        dir.is_dir().then_some(dir)
    }
}

/// Each method's work is in the file named after it: `unpack.rs`,
/// `active.rs`, `sweep.rs`.
impl Snapshotter for OverlaySnapshotter {
    fn prepare_with(
        &self,
        layers: &[Layer],
        on_event: &(dyn Fn(UnpackEvent<'_>) + Sync),
    ) -> Result<Vec<Snapshot>, SnapshotError> {
        self.unpack_missing(layers, on_event)
    }

    fn activate(
        &self,
        parents: &[Snapshot],
        key: &str,
    ) -> Result<Box<dyn ActiveSnapshot>, SnapshotError> {
        Ok(Box::new(self.mount_active(parents, None, key)?))
    }

    fn mount_readonly(&self, chain: &[Snapshot]) -> Result<Box<dyn ReadOnlyMount>, SnapshotError> {
        Ok(Box::new(self.mount_view(chain)?))
    }

    fn sweep(&self) -> Result<SweepReport, SnapshotError> {
        self.sweep_dead()
    }
}

/// The record of a snapshot in `state`, named after its chain ID. A
/// `Ready` one is recorded unsynced (see [`Unsynced`]).
fn record(chain_id: &Digest, state: SnapshotState, layer: Option<Digest>) -> SnapshotRecord {
    let unsynced = (state == SnapshotState::Ready).then(|| Unsynced {
        boot_id: boot_id().to_string(),
        since: unix_now(),
    });
    SnapshotRecord {
        dir: chain_id.hex().to_string(),
        state,
        layer,
        unsynced,
    }
}

/// The kernel's id of this boot; it changes at every boot, so a record
/// stamped with another one was written before a reboot. Empty where the
/// kernel has none, which makes every unsynced snapshot look current.
fn boot_id() -> &'static str {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT_ID.get_or_init(|| {
        fs_err::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks that `parents` (bottom first) form a chain: each chain ID
/// follows from the one below and the diffID.
fn check_chain(parents: &[Snapshot]) -> Result<(), SnapshotError> {
    let mut below: Option<&Digest> = None;
    for (position, s) in parents.iter().enumerate() {
        let expected = chain_id(below, &s.diff_id);
        if expected != s.chain_id {
            return Err(SnapshotError::BrokenChain {
                position,
                chain_id: s.chain_id.clone(),
                expected,
            });
        }
        below = Some(&s.chain_id);
    }
    Ok(())
}

/// Removes a directory tree that may not exist.
fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    match fs_err::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SnapshotError::io("removing", path)(e)),
    }
}

/// Flushes the filesystem holding `dir` (syncfs(2)), so that what was
/// written to it survives a power loss.
fn sync_fs(dir: &Path) -> Result<(), SnapshotError> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(SnapshotError::errno("opening", dir))?;
    rustix::fs::syncfs(&fd).map_err(SnapshotError::errno("syncing", dir))
}

/// The mounts at or under `dir`, deepest first (kiln-fs's).
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    kiln_fs::mounts_under(dir).map_err(SnapshotError::io("reading the mounts under", dir))
}
