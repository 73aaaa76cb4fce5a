//! The contract every [`Snapshotter`] keeps, as one suite run against each
//! backend (containerd's `testsuite.SnapshotterSuite`): the overlay one in
//! `tests/snapshot.rs` (as root), the fake in `tests/fake_snapshotter.rs`.
//!
//! [`snapshotter_suite!`](crate::snapshotter_suite) makes one `#[test]` per
//! case; each case takes a function that makes the backend on a fresh
//! store. Cases assert what the engine relies on: chain IDs, what a root
//! shows, which entries a layer holds, that nothing is left after a commit,
//! a discard or a drop. Not owners: a backend run by a normal user cannot
//! keep them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_image::compress::{self, BlobWriter, CompressOptions};
use kiln_image::document::Descriptor;
use kiln_image::layer::{self, WriteOptions};
use kiln_image::media::{Compression, Format};
use kiln_image::{Digest, Store};

use crate::snapshot::{
    ActiveSnapshot, CommitOptions, Committed, Layer, Snapshot, SnapshotError, Snapshotter,
    UnpackEvent, chain_id, chain_ids,
};

/// Makes the backend under test on `store`; `dir` is a fresh directory it
/// may keep files in. `None` when this machine cannot run it (the case
/// then returns, after kiln-testkit's `need` said why).
pub type Make = fn(store: &Store, dir: &Path) -> Option<Arc<dyn Snapshotter>>;

/// Runs every case of the suite as a `#[test]` of its own against the
/// backend `$make` (a [`Make`](crate::testing::suite::Make)) returns.
///
/// ```ignore
/// mod suite {
///     fn fake(store: &Store, dir: &Path) -> Option<Arc<dyn Snapshotter>> {
///         Some(Arc::new(FakeSnapshotter::new(store, dir).unwrap()))
///     }
///     kiln_build::snapshotter_suite!(fake);
/// }
/// ```
#[macro_export]
macro_rules! snapshotter_suite {
    ($make:path) => {
        $crate::snapshotter_suite!($make, in_place);
        $crate::snapshotter_suite!(@cases $make:
            bytes_and_time_put_back_are_no_change,
            a_released_view_is_gone,
        );
    };
    // A backend that works in place (the tree snapshotter) cannot compare
    // a file with its old bytes, and its views are its snapshots' trees:
    // it skips the two cases that need otherwise.
    ($make:path, in_place) => {
        $crate::snapshotter_suite!(@cases $make:
            prepare_gives_the_spec_chain_and_unpacks_once,
            prepare_checks_the_diff_id,
            a_root_shows_its_parents,
            commit_writes_what_changed_as_a_layer,
            a_commit_is_the_next_steps_parent,
            unchanged_is_no_layer,
            a_scratch_root_starts_empty,
            discarded_and_dropped_roots_leave_nothing,
            a_read_only_view_shows_its_chain,
            parents_must_form_a_chain,
            the_same_change_twice_is_the_same_layer_and_snapshot,
        );
    };
    (@cases $make:path: $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testing::suite::$case($make);
            }
        )*
    };
}

/// A store, the backend on it, and a place for layer trees.
struct Bench {
    tmp: tempfile::TempDir,
    store: Store,
    snap: Arc<dyn Snapshotter>,
}

/// One entry of a tree to make into a layer.
enum Node<'a> {
    Dir,
    File(&'a str),
    Symlink(&'a str),
    /// An overlayfs whiteout: the layer deletes the name.
    Whiteout,
}

impl Bench {
    fn new(make: Make) -> Option<Bench> {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(tmp.path().join("store")).expect("a store");
        let dir = tmp.path().join("snapshotter");
        fs_err::create_dir_all(&dir).expect("the backend's dir");
        let snap = make(&store, &dir)?;
        Some(Bench { tmp, store, snap })
    }

    /// A layer in the store made of `nodes` (parents first); gzip, OCI.
    fn layer(&self, name: &str, nodes: &[(&str, Node<'_>)]) -> Layer {
        let dir = self.tmp.path().join("trees").join(name);
        fs_err::create_dir_all(&dir).expect("a tree dir");
        for (path, node) in nodes {
            let path = dir.join(path);
            match node {
                Node::Dir => fs_err::create_dir_all(&path).expect("a dir"),
                Node::File(text) => fs_err::write(&path, text).expect("a file"),
                Node::Symlink(target) => {
                    std::os::unix::fs::symlink(target, &path).expect("a symlink")
                }
                Node::Whiteout => whiteout(&path),
            }
        }
        store_layer(&self.store, |blob| {
            layer::write(&dir, blob, &WriteOptions::default()).expect("the layer");
        })
    }

    /// Two layers: a base, and one that changes a file, deletes one and
    /// adds one (see [`two_layers_view`]).
    fn two_layers(&self) -> Vec<Layer> {
        let base = self.layer(
            "base",
            &[
                ("etc", Node::Dir),
                ("etc/passwd", Node::File("root")),
                ("bin", Node::Dir),
                ("bin/tool", Node::File("v1")),
                ("bin/sh", Node::Symlink("tool")),
                ("usr", Node::Dir),
            ],
        );
        let top = self.layer(
            "top",
            &[
                ("etc", Node::Dir),
                ("etc/passwd", Node::File("root\napp")),
                ("bin", Node::Dir),
                ("bin/tool", Node::Whiteout),
                ("usr", Node::Dir),
                ("usr/new", Node::File("n")),
            ],
        );
        vec![base, top]
    }

    fn prepare(&self, layers: &[Layer]) -> Vec<Snapshot> {
        self.snap.prepare(layers).expect("prepared")
    }
}

/// A gzip layer (OCI) in `store` of the tar `write` gives the blob writer.
pub fn store_layer(
    store: &Store,
    write: impl FnOnce(&mut BlobWriter<kiln_image::Ingest>),
) -> Layer {
    let ingest = store.ingest().expect("an ingest");
    let mut blob =
        BlobWriter::new(ingest, &CompressOptions::new(Compression::Gzip)).expect("a writer");
    write(&mut blob);
    let (ingest, info) = blob.finish().expect("the blob");
    ingest.commit().expect("stored");
    Layer {
        diff_id: info.diff_id,
        blob: Descriptor::new(
            Compression::Gzip.layer_media_type(Format::Oci),
            info.digest,
            info.size,
        ),
    }
}

/// What a root on [`Bench::two_layers`] shows.
fn two_layers_view() -> BTreeMap<String, String> {
    view(&[
        ("bin", "dir"),
        ("bin/sh", "-> tool"),
        ("etc", "dir"),
        ("etc/passwd", "root\napp"),
        ("usr", "dir"),
        ("usr/new", "n"),
    ])
}

fn view(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A tree as `path → "dir" | contents | "-> target"`.
fn describe(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs_err::read_dir(dir).expect("readable") {
            let path = entry.expect("an entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            let meta = fs_err::symlink_metadata(&path).expect("an lstat");
            if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = fs_err::read_link(&path).expect("a link");
                out.insert(rel, format!("-> {}", target.display()));
            } else {
                out.insert(rel, fs_err::read_to_string(&path).expect("a file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The entry names of a committed layer, in archive order; checks that
/// the blob is in the store and its tar is the layer's diffID.
fn layer_names(store: &Store, committed: &Committed) -> Vec<String> {
    let layer = committed.layer.as_ref().expect("a layer");
    let compression =
        Compression::from_media_type(&layer.descriptor.media_type).expect("a layer media type");
    let blob = store
        .open_blob(&layer.descriptor.digest)
        .expect("in the store");
    let mut tar = Vec::new();
    compress::decompress(blob, compression)
        .expect("decompressed")
        .read_to_end(&mut tar)
        .expect("read");
    assert_eq!(Digest::of(&tar), layer.diff_id, "the diffID is the tar's");
    assert_eq!(tar.len() as u64, layer.uncompressed_size);
    let mut reader = kiln_fs::tar::TarReader::new(&tar[..]);
    let mut names = Vec::new();
    while let Some(entry) = reader.next_entry().expect("a tar") {
        names.push(entry.name());
    }
    names
}

fn whiteout(path: &Path) {
    // A 0/0 character device: what overlayfs writes, and what any user
    // may make since Linux 5.8.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .expect("a whiteout device");
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent).expect("parents");
    }
    fs_err::write(path, text).expect("written");
}

fn commit(active: Box<dyn ActiveSnapshot>) -> Committed {
    active.commit(&CommitOptions::default()).expect("committed")
}

// ---- the cases -------------------------------------------------------------

/// Prepare gives each layer's snapshot under the chain ID of the image
/// spec, and unpacks a layer once: a second prepare reports nothing.
pub fn prepare_gives_the_spec_chain_and_unpacks_once(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let layers = b.two_layers();
    let unpacked = Mutex::new(Vec::new());
    let note = |e: UnpackEvent<'_>| {
        if let UnpackEvent::Finished { chain_id, .. } = e {
            unpacked.lock().unwrap().push(chain_id.clone());
        }
    };
    let chain = b.snap.prepare_with(&layers, &note).expect("prepared");
    let ids = chain_ids(layers.iter().map(|l| &l.diff_id));
    assert_eq!(
        chain
            .iter()
            .map(|s| s.chain_id().clone())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        chain
            .iter()
            .map(|s| s.diff_id().clone())
            .collect::<Vec<_>>(),
        layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()
    );
    // Layers may unpack at once, finishing in any order.
    let mut finished = std::mem::take(&mut *unpacked.lock().unwrap());
    finished.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(finished, expected);
    let again = b.snap.prepare_with(&layers, &note).expect("prepared");
    assert_eq!(again, chain);
    assert_eq!(*unpacked.lock().unwrap(), Vec::<Digest>::new());
    // A prefix of a prepared chain is prepared too.
    assert_eq!(b.prepare(&layers[..1]), chain[..1]);
}

/// A blob whose tar is not the layer's diffID is refused.
pub fn prepare_checks_the_diff_id(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let mut layers = b.two_layers();
    layers[1].diff_id = layers[0].diff_id.clone();
    let e = b.snap.prepare(&layers).unwrap_err();
    assert!(matches!(e, SnapshotError::DiffIdMismatch { .. }), "{e}");
}

/// A root shows its parents' files, the upper layers winning and their
/// whiteouts hiding what is below.
pub fn a_root_shows_its_parents(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let active = b.snap.activate(&chain, "look").expect("activated");
    assert_eq!(describe(active.root()), two_layers_view());
    assert_eq!(active.parents(), &chain[..]);
    assert_eq!(active.key(), "look");
    // Each root is its own: a write to one is not in another.
    let other = b.snap.activate(&chain, "other").expect("activated");
    write(&active.root().join("mine"), "m");
    assert!(!other.root().join("mine").exists());
}

/// A commit's layer holds what the step added, changed and deleted, with
/// the directories on the way, and nothing else; the chain grows by the
/// new snapshot, whose chain ID follows from the layer's diffID.
pub fn commit_writes_what_changed_as_a_layer(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let active = b.snap.activate(&chain, "change").expect("activated");
    let root = active.root().to_path_buf();
    write(&root.join("app/out"), "built");
    write(&root.join("etc/passwd"), "root\napp\nweb");
    fs_err::remove_file(root.join("usr/new")).expect("removed");
    let committed = commit(active);
    assert_eq!(
        layer_names(&b.store, &committed),
        [
            "app/",
            "app/out",
            "etc/",
            "etc/passwd",
            "usr/",
            "usr/.wh.new"
        ]
    );
    let layer = committed.layer.as_ref().expect("a layer");
    assert_eq!(
        layer.descriptor.media_type,
        Compression::Gzip.layer_media_type(Format::Oci)
    );
    assert_eq!(committed.chain.len(), 3);
    assert_eq!(committed.chain[..2], chain[..]);
    let top = &committed.chain[2];
    assert_eq!(top, &layer.snapshot);
    assert_eq!(top.diff_id(), &layer.diff_id);
    assert_eq!(
        top.chain_id(),
        &chain_id(Some(chain[1].chain_id()), &layer.diff_id)
    );
    assert!(!root.exists(), "the step's root is gone");
}

/// The chain a commit returns is what the next step starts from, and the
/// layer it made prepares to that same chain without unpacking anything.
pub fn a_commit_is_the_next_steps_parent(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let mut layers = b.two_layers();
    let chain = b.prepare(&layers);
    let active = b.snap.activate(&chain, "first").expect("activated");
    write(&active.root().join("etc/passwd"), "changed");
    fs_err::remove_file(active.root().join("bin/sh")).expect("removed");
    let committed = commit(active);
    let mut expected = two_layers_view();
    expected.insert("etc/passwd".into(), "changed".into());
    expected.remove("bin/sh");

    let next = b
        .snap
        .activate(&committed.chain, "next")
        .expect("activated");
    assert_eq!(describe(next.root()), expected);
    drop(next);

    let layer = committed.layer.as_ref().expect("a layer");
    layers.push(Layer {
        diff_id: layer.diff_id.clone(),
        blob: layer.descriptor.clone(),
    });
    let unpacked = Mutex::new(0);
    let again = b
        .snap
        .prepare_with(&layers, &|e| {
            if matches!(e, UnpackEvent::Started { .. }) {
                *unpacked.lock().unwrap() += 1;
            }
        })
        .expect("prepared");
    assert_eq!(again, committed.chain);
    assert_eq!(*unpacked.lock().unwrap(), 0, "the commit made the snapshot");
}

/// A step that changed nothing makes no layer: reading is no change.
pub fn unchanged_is_no_layer(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let active = b.snap.activate(&chain, "idle").expect("activated");
    let passwd = active.root().join("etc/passwd");
    assert_eq!(fs_err::read_to_string(&passwd).expect("read"), "root\napp");
    let root = active.root().to_path_buf();
    let committed = commit(active);
    assert!(committed.layer.is_none(), "{committed:?}");
    assert_eq!(committed.chain, chain);
    assert!(!root.exists());
}

/// A file rewritten with its own bytes and its time (from a tar, whole
/// seconds) put back is no change: the backend compares the contents.
pub fn bytes_and_time_put_back_are_no_change(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let active = b.snap.activate(&chain, "idle").expect("activated");
    let passwd = active.root().join("etc/passwd");
    let before = fs_err::symlink_metadata(&passwd).expect("there");
    let text = fs_err::read_to_string(&passwd).expect("read");
    fs_err::write(&passwd, &text).expect("rewritten");
    let mtime = filetime(&before);
    rustix::fs::utimensat(
        rustix::fs::CWD,
        &passwd,
        &rustix::fs::Timestamps {
            last_access: mtime,
            last_modification: mtime,
        },
        rustix::fs::AtFlags::empty(),
    )
    .expect("time put back");
    let committed = commit(active);
    assert!(committed.layer.is_none(), "{committed:?}");
    assert_eq!(committed.chain, chain);
}

fn filetime(meta: &std::fs::Metadata) -> rustix::fs::Timespec {
    use std::os::unix::fs::MetadataExt;
    rustix::fs::Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec() as _,
    }
}

/// FROM scratch: no parents, an empty root; its first layer's chain ID is
/// its diffID.
pub fn a_scratch_root_starts_empty(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let active = b.snap.activate(&[], "scratch").expect("activated");
    assert_eq!(describe(active.root()), BTreeMap::new());
    write(&active.root().join("hello"), "world");
    let committed = commit(active);
    assert_eq!(layer_names(&b.store, &committed), ["hello"]);
    assert_eq!(committed.chain.len(), 1);
    assert_eq!(committed.chain[0].chain_id(), committed.chain[0].diff_id());

    let next = b
        .snap
        .activate(&committed.chain, "next")
        .expect("activated");
    assert_eq!(describe(next.root()), view(&[("hello", "world")]));
}

/// Discarding or dropping a root throws its changes away and removes it.
pub fn discarded_and_dropped_roots_leave_nothing(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let roots: Vec<PathBuf> = (0..2)
        .map(|i| {
            let active = b.snap.activate(&chain, "thrown").expect("activated");
            let root = active.root().to_path_buf();
            write(&root.join("etc/passwd"), "lost");
            write(&root.join("tmp/junk"), "lost");
            if i == 0 {
                active.discard().expect("discarded");
            } else {
                drop(active);
            }
            root
        })
        .collect();
    for root in roots {
        assert!(!root.exists(), "{} is gone", root.display());
    }
    let fresh = b.snap.activate(&chain, "fresh").expect("activated");
    assert_eq!(describe(fresh.root()), two_layers_view());
}

/// A read-only view shows the chain as a root would; an empty chain is an
/// empty directory; releasing or dropping one removes it.
pub fn a_read_only_view_shows_its_chain(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let view = b.snap.mount_readonly(&chain).expect("mounted");
    assert_eq!(describe(view.root()), two_layers_view());
    view.release().expect("released");

    let empty = b.snap.mount_readonly(&[]).expect("mounted");
    let root = empty.root().to_path_buf();
    assert_eq!(describe(&root), BTreeMap::new());
    drop(empty);
    assert!(!root.exists());
}

/// A view's directory goes with it (not for a backend whose views are its
/// snapshots' own trees).
pub fn a_released_view_is_gone(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let view = b.snap.mount_readonly(&chain).expect("mounted");
    let root = view.root().to_path_buf();
    view.release().expect("released");
    assert!(!root.exists());
}

/// Parents that are not a chain (each on the one before) are refused.
pub fn parents_must_form_a_chain(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let shuffled = [chain[1].clone(), chain[0].clone()];
    let e = b.snap.activate(&shuffled, "bad").unwrap_err();
    assert!(
        matches!(e, SnapshotError::BrokenChain { position: 0, .. }),
        "{e}"
    );
    let e = b.snap.mount_readonly(&shuffled).unwrap_err();
    assert!(matches!(e, SnapshotError::BrokenChain { .. }), "{e}");
}

/// The same change made twice (the same bytes, modes and times) is the
/// same layer, and the second commit finds the first one's snapshot.
pub fn the_same_change_twice_is_the_same_layer_and_snapshot(make: Make) {
    let Some(b) = Bench::new(make) else {
        return;
    };
    let chain = b.prepare(&b.two_layers());
    let opts = CommitOptions::default();
    let at = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_700_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_700_000_000,
            tv_nsec: 0,
        },
    };
    let committed: Vec<Committed> = (0..2)
        .map(|_| {
            let active = b.snap.activate(&chain, "same").expect("activated");
            write(&active.root().join("srv/data"), "same bytes");
            for p in ["srv/data", "srv"] {
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    active.root().join(p),
                    &at,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .expect("times set");
            }
            active.commit(&opts).expect("committed")
        })
        .collect();
    let layer = |c: &Committed| c.layer.clone().expect("a layer");
    assert_eq!(layer(&committed[0]).diff_id, layer(&committed[1]).diff_id);
    assert_eq!(
        layer(&committed[0]).descriptor,
        layer(&committed[1]).descriptor
    );
    assert_eq!(committed[0].chain, committed[1].chain);
}
