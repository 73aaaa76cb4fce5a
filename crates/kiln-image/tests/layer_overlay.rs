//! The codec against the kernel: a layer extracted in Overlay mode is a
//! working overlayfs lower dir, the upper dir the kernel leaves after
//! changes archives to OCI whiteouts, and that layer, extracted again, is
//! what the kernel shows: stacked as lower dirs or flattened.

mod layer_support;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use kiln_image::layer::{self, ExtractOptions, Whiteouts, WriteOptions};
use kiln_testkit::need::{Root, need};
use layer_support::*;
use rustix::fs::FileType;
use rustix::mount::{MountFlags, UnmountFlags};

/// An overlay mount, unmounted when dropped (also when a test fails).
struct Overlay {
    target: PathBuf,
}

impl Overlay {
    fn mount(target: &Path, options: &str) -> Overlay {
        fs_err::create_dir_all(target).unwrap();
        let data = CString::new(options).unwrap();
        rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .unwrap_or_else(|e| panic!("mount -t overlay -o {options} {}: {e}", target.display()));
        Overlay {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn overlayfs_agrees_with_the_codec() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name);

    // Layer 1, from an ordinary tree.
    let base = t("base");
    for (f, body) in [
        ("etc/conf", "a=1"),
        ("bin/tool", "#!/bin/sh"),
        ("d/a", "a"),
        ("d/b", "b"),
        ("d/sub/c", "c"),
        ("x", "x"),
        ("keep", "keep"),
        ("hard1", "linked"),
        ("dir2/inner", "i"),
        ("f2", "f2"),
    ] {
        write_file(&base.join(f), body.as_bytes());
    }
    fs_err::hard_link(base.join("hard1"), base.join("hard2")).unwrap();
    symlink("etc/conf", &base.join("conf-link"));
    chmod(&base.join("bin/tool"), 0o755);
    lchown(&base.join("d/b"), 1000, 1000);
    let mut tar1 = Vec::new();
    layer::write(&base, &mut tar1, &WriteOptions::default()).unwrap();

    // Unpacked once, in overlayfs's format, as the lower dir of a step.
    let l1 = t("l1");
    fs_err::create_dir(&l1).unwrap();
    layer::extract(&tar1[..], &l1, &ExtractOptions::new(Whiteouts::Overlay)).unwrap();
    let (upper, work, merged) = (t("upper"), t("work"), t("merged"));
    fs_err::create_dir(&upper).unwrap();
    fs_err::create_dir(&work).unwrap();
    // redirect_dir and metacopy would leave a diff that is not
    // self-contained; the snapshotter mounts without them.
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
        s(&l1),
        s(&upper),
        s(&work)
    );
    let expected = {
        let _m = Overlay::mount(&merged, &options);
        assert_eq!(
            describe(&merged, Describe::default()),
            describe(&base, Describe::default()),
            "the lower dir shows the layer"
        );
        // The step: delete, replace a directory, modify, add, rename.
        let m = |p: &str| merged.join(p);
        fs_err::remove_file(m("x")).unwrap();
        fs_err::remove_dir_all(m("d")).unwrap();
        fs_err::create_dir(m("d")).unwrap();
        write_file(&m("d/new"), b"new");
        let mut keep = fs_err::read(m("keep")).unwrap();
        keep.extend_from_slice(b" more");
        fs_err::write(m("keep"), keep).unwrap();
        chmod(&m("bin/tool"), 0o4755);
        write_file(&m("n"), b"added");
        fs_err::remove_file(m("hard1")).unwrap();
        fs_err::rename(m("etc/conf"), m("etc/conf2")).unwrap();
        fs_err::remove_dir_all(m("dir2")).unwrap();
        write_file(&m("dir2"), b"now a file");
        fs_err::remove_file(m("f2")).unwrap();
        write_file(&m("f2/inner"), b"now a dir");
        mknod(&m("fifo"), FileType::Fifo, 0o600, 0, 0);
        lsetxattr(&m("n"), "user.k", b"v");
        describe(&merged, Describe::default())
    };

    // The upper dir is the diff; archive it.
    let mut tar2 = Vec::new();
    let stats = layer::write(&upper, &mut tar2, &WriteOptions::default()).unwrap();
    let names = tar_names(&tar2);
    for want in [
        ".wh.x",
        ".wh.hard1",
        "etc/.wh.conf",
        "etc/conf2",
        "d/",
        "d/.wh..wh..opq",
        "d/new",
        "keep",
        "bin/tool",
        "n",
        "dir2",
        "f2/",
        "f2/.wh..wh..opq",
        "f2/inner",
        "fifo",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("d/a") || n == "x"),
        "{names:?}"
    );
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (3, 2), "{names:?}");
    let tool = tar_listing(&tar2)
        .into_iter()
        .find(|e| e.name == "bin/tool")
        .unwrap();
    assert_eq!(tool.mode, 0o4755);

    // Stacked: layer 2 unpacked on its own and mounted over layer 1 shows
    // exactly what the step saw.
    let l2 = t("l2");
    fs_err::create_dir(&l2).unwrap();
    layer::extract(&tar2[..], &l2, &ExtractOptions::new(Whiteouts::Overlay)).unwrap();
    {
        let stacked = t("stacked");
        let _m = Overlay::mount(&stacked, &format!("lowerdir={}:{}", s(&l2), s(&l1)));
        assert_eq!(describe(&stacked, Describe::default()), expected);
    }

    // Flattened: both layers applied in order to one directory.
    let flat = t("flat");
    fs_err::create_dir(&flat).unwrap();
    let opts = ExtractOptions::new(Whiteouts::Apply);
    layer::extract(&tar1[..], &flat, &opts).unwrap();
    layer::extract(&tar2[..], &flat, &opts).unwrap();
    assert_eq!(describe(&flat, Describe::default()), expected);

    // And the upper dir re-extracted from its own layer archives the same.
    let mut tar3 = Vec::new();
    layer::write(&l2, &mut tar3, &WriteOptions::default()).unwrap();
    assert!(tar3 == tar2, "layer 2 does not survive extract + write");
}
