//! The tree snapshotter (no mounts: what `--isolation chroot` builds on):
//! the snapshotter suite, then what working in place must get right.
//! As any user; as root the owners are checked too.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use kiln_build::testing::suite::store_layer;
use kiln_build::{Layer, Snapshotter, TreeSnapshotter};
use kiln_image::Store;

fn tree(store: &Store, _dir: &Path) -> Option<Arc<dyn Snapshotter>> {
    Some(Arc::new(TreeSnapshotter::new(store).unwrap()))
}

kiln_build::snapshotter_suite!(tree, in_place);

/// A layer stored in `store` from a tar made by `build` (gzip, OCI).
fn stored_layer(store: &Store, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    build(&mut tar);
    let bytes = tar.into_inner().unwrap();
    store_layer(store, |blob| blob.write_all(&bytes).unwrap())
}

fn entry(tar: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    tar.append_data(&mut h, path, data).unwrap();
}

fn hardlink(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    tar.append_link(&mut h, path, target).unwrap();
}

/// A layer that hardlinks a file of a layer below cannot be unpacked on
/// its own (Docker never writes one; other tools may): the chain is then
/// unpacked in order onto one tree, and the parallel attempt leaves no
/// directory behind.
#[test]
fn a_hardlink_into_a_lower_layer_unpacks_the_chain_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let base = stored_layer(&store, |t| {
        entry(t, "usr/", tar::EntryType::Directory, b"");
        entry(t, "usr/tool", tar::EntryType::Regular, b"tool v1");
        entry(t, "usr/other", tar::EntryType::Regular, b"other");
    });
    let middle = stored_layer(&store, |t| {
        entry(t, "etc/", tar::EntryType::Directory, b"");
        entry(t, "etc/conf", tar::EntryType::Regular, b"conf");
    });
    let top = stored_layer(&store, |t| {
        entry(t, "bin/", tar::EntryType::Directory, b"");
        hardlink(t, "bin/tool", "usr/tool");
        entry(t, "usr/.wh.other", tar::EntryType::Regular, b"");
    });
    let snap = TreeSnapshotter::new(&store).unwrap();
    let chain = snap.prepare(&[base, middle, top]).unwrap();
    let view = snap.mount_readonly(&chain).unwrap();
    let root = view.root();

    let tool = fs_err::symlink_metadata(root.join("usr/tool")).unwrap();
    let link = fs_err::symlink_metadata(root.join("bin/tool")).unwrap();
    assert_eq!((link.dev(), link.ino()), (tool.dev(), tool.ino()));
    assert_eq!(tool.nlink(), 2);
    assert_eq!(fs_err::read(root.join("bin/tool")).unwrap(), b"tool v1");
    assert_eq!(fs_err::read(root.join("etc/conf")).unwrap(), b"conf");
    assert!(!root.join("usr/other").exists(), "the whiteout applied");

    // Only the chain's trees are left in the snapshotter's directory: the
    // layers the parallel attempt unpacked alone were removed.
    let trees = store.root().join("trees");
    let mut dirs = Vec::new();
    for own in fs_err::read_dir(&trees).unwrap() {
        for d in fs_err::read_dir(own.unwrap().path()).unwrap() {
            dirs.push(d.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    let top_id = chain.last().unwrap().chain_id().hex().to_string();
    assert_eq!(dirs, [top_id]);
}
