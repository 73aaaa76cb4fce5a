//! Directory → tar → directory, whiteout conversions both ways, and the
//! determinism of `layer::write`. Runs as root (devices, owners, trusted
//! xattrs), as CI does.

mod layer_support;

use std::path::Path;
use std::process::Command;

use kiln_image::Digest;
use kiln_image::layer::{self, ExtractOptions, Whiteouts, WriteOptions};
use kiln_testkit::need::{Root, need};
use layer_support::*;
use rustix::fs::FileType;

fn write_tar(dir: &Path, opts: &WriteOptions) -> Vec<u8> {
    let mut out = Vec::new();
    layer::write(dir, &mut out, opts).unwrap();
    out
}

fn extract(tar: &[u8], dest: &Path, mode: Whiteouts) -> layer::ApplyStats {
    fs_err::create_dir_all(dest).unwrap();
    layer::extract(tar, dest, &ExtractOptions::new(mode)).unwrap()
}

/// `rich_tree` made in `tmp`, its layer tar and what it holds.
fn rich_layer(tmp: &Path) -> (Vec<u8>, Vec<String>) {
    let src = tmp.join("src");
    rich_tree(&src);
    let tar = write_tar(&src, &WriteOptions::default());
    (tar, describe(&src, Describe::default()))
}

#[test]
fn round_trip_preserves_everything() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tar, want) = rich_layer(tmp.path());

    for mode in [Whiteouts::Apply, Whiteouts::Overlay] {
        let dst = tmp.path().join(format!("dst-{mode:?}"));
        let stats = extract(&tar, &dst, mode);
        assert_eq!(describe(&dst, Describe::default()), want, "{mode:?}");
        assert_eq!(stats.hardlinks, 2);
        assert_eq!(stats.devices, 3);
        assert_eq!(stats.fifos, 1);
        assert_eq!(stats.xattrs_skipped, 0);
        assert_eq!(stats.tar_bytes, tar.len() as u64);
        // Extracted elsewhere (other inodes, other creation order), the
        // tree archives to the same bytes.
        assert!(
            write_tar(&dst, &WriteOptions::default()) == tar,
            "{mode:?}: not byte-identical"
        );
    }
}

#[test]
fn writes_a_standard_tar() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    rich_tree(&src);
    let std_sock = std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap();
    let mut tar = Vec::new();
    let stats = layer::write(&src, &mut tar, &WriteOptions::default()).unwrap();
    drop(std_sock);
    assert_eq!(stats.sockets_skipped, 1);
    assert_eq!(stats.tar_bytes, tar.len() as u64);
    // Go's archive/tar ends an archive with exactly two zero blocks.
    assert!(tar.len() % 512 == 0 && tar[tar.len() - 1024..].iter().all(|b| *b == 0));

    // The tar crate reads every entry: a directory before its contents,
    // names in byte order, hardlinks to the first name, no user names.
    let listing = tar_listing(&tar);
    let names: Vec<&str> = listing.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"dev/"));
    assert!(names.contains(&"tmp/"));
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert!(pos("usr/") < pos("usr/bin/") && pos("usr/bin/") < pos("usr/bin/tool"));
    // etc/ comes before usr/: its name holds the data, the others link to it.
    let first = listing
        .iter()
        .find(|e| e.name == "etc/libfoo-link")
        .unwrap();
    assert_eq!((first.flag, first.size, first.link.as_str()), ('0', 13, ""));
    for name in ["usr/lib/libfoo-copy.so", "usr/lib/libfoo.so.1"] {
        let link = listing.iter().find(|e| e.name == name).unwrap();
        assert_eq!(
            (link.flag, link.size, link.link.as_str()),
            ('1', 0, "etc/libfoo-link"),
            "{name}"
        );
    }
    let big = listing.iter().find(|e| e.name == "home/big-ids").unwrap();
    assert_eq!((big.uid, big.gid), (3_000_000, 4_000_000));
    assert!(listing.iter().any(|e| e.name.len() > 255));
    assert!(!names.iter().any(|n| n.contains("socket")));
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
        assert_eq!(e.header().groupname_bytes(), Some(&b""[..]));
    }

    // GNU tar lists it and extracts it to the same tree.
    let path = tmp.path().join("layer.tar");
    fs_err::write(&path, &tar).unwrap();
    run(Command::new("tar").arg("-tvf").arg(&path));
    let gnu = tmp.path().join("gnu");
    fs_err::create_dir(&gnu).unwrap();
    run(Command::new("tar")
        .args([
            "--numeric-owner",
            "--same-owner",
            "-p",
            "--xattrs",
            "--xattrs-include=*",
            "-xf",
        ])
        .arg(&path)
        .arg("-C")
        .arg(&gnu));
    let what = Describe::default();
    let mut want = describe(&src, what);
    want.retain(|l| !l.starts_with("socket"));
    assert_eq!(describe(&gnu, what), want);
}

#[test]
fn overlay_whiteouts_become_oci_whiteouts_and_back() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    // What overlayfs leaves in an upper dir: whiteout devices and an
    // opaque directory.
    fs_err::create_dir_all(upper.join("etc")).unwrap();
    mknod(&upper.join("gone"), FileType::CharacterDevice, 0, 0, 0);
    mknod(
        &upper.join("etc/removed.conf"),
        FileType::CharacterDevice,
        0,
        0,
        0,
    );
    fs_err::create_dir(upper.join("opq")).unwrap();
    lsetxattr(&upper.join("opq"), "trusted.overlay.opaque", b"y");
    lsetxattr(&upper.join("opq"), "trusted.overlay.origin", b"\x00\xfb");
    write_file(&upper.join("opq/fresh"), b"new");
    fs_err::create_dir(upper.join("notopq")).unwrap();
    lsetxattr(&upper.join("notopq"), "trusted.overlay.opaque", b"x");
    // Whiteouts may all be hardlinks of one inode (overlayfs shares one).
    fs_err::hard_link(upper.join("gone"), upper.join("etc/gone-too")).unwrap();

    let tar = write_tar(&upper, &WriteOptions::default());
    let listing = tar_listing(&tar);
    let names: Vec<&str> = listing.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/",
            "etc/.wh.gone-too",
            "etc/.wh.removed.conf",
            ".wh.gone",
            "notopq/",
            "opq/",
            "opq/.wh..wh..opq",
            "opq/fresh",
        ]
    );
    for e in &listing {
        if e.name.contains(".wh.") {
            assert_eq!((e.flag, e.size, e.mode), ('0', 0, 0o600), "{}", e.name);
        }
    }
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let key = r.unwrap().key().unwrap().to_string();
                assert!(!key.contains("overlay"), "{key} leaked into the layer");
            }
        }
    }

    // Overlay mode turns them back into what overlayfs reads.
    let lower = tmp.path().join("lower");
    let stats = extract(&tar, &lower, Whiteouts::Overlay);
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (3, 1));
    for w in ["gone", "etc/removed.conf", "etc/gone-too"] {
        let m = fs_err::symlink_metadata(lower.join(w)).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(m.file_type().is_char_device() && m.rdev() == 0, "{w}");
    }
    assert_eq!(
        xattr(&lower.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&lower.join("notopq"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&lower.join("opq"), "trusted.overlay.origin"), None);
    // And it writes back to the same layer (the device inodes differ now).
    assert!(write_tar(&lower, &WriteOptions::default()) == tar);
}

#[test]
fn apply_mode_carries_whiteouts_out() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    // The lower layers, flattened.
    for f in ["f", "a/x", "a/y", "a/sub/z", "d/1", "keep/k", "same/old"] {
        write_file(&root.join(f), f.as_bytes());
    }
    let layer = RawTar::new()
        .file(".wh.f", b"")
        .file("a/new", b"new")
        // Same-layer entries before the marker survive it (OCI: whiteouts
        // apply to lower layers only).
        .file("a/.wh..wh..opq", b"")
        .file(".wh.d", b"")
        .dir("d/")
        .file("d/2", b"2")
        .file("same/new", b"n")
        .file("same/.wh.new", b"")
        .file(".wh.missing", b"")
        .file("nothere/.wh.x", b"")
        .file("keep/.wh..wh.plnk", b"")
        .finish();
    let stats = extract(&layer, &root, Whiteouts::Apply);
    let mut names: Vec<String> = walk(&root)
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "a", "a/new", "d", "d/2", "keep", "keep/k", "same", "same/new", "same/old"
        ]
    );
    assert_eq!(stats.whiteouts, 5);
    assert_eq!(stats.opaque_dirs, 1);
    // f, a/x, a/y, a/sub, a/sub/z, d, d/1
    assert_eq!(stats.removed, 7);
}

#[test]
fn overlay_mode_whiteouts_within_one_layer() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    let layer = RawTar::new()
        // Whiteout, then a directory of the same name: a new directory
        // that must hide the lower one's contents.
        .file(".wh.d", b"")
        .dir("d/")
        .file("d/new", b"")
        // A directory, then a whiteout of it: kept, made opaque.
        .dir("e/")
        .file(".wh.e", b"")
        // A file, then a whiteout of it: the file stays.
        .file("f", b"f")
        .file(".wh.f", b"")
        // A whiteout, then a file: the file replaces the device.
        .file(".wh.g", b"")
        .file("g", b"g")
        .finish();
    extract(&layer, &dir, Whiteouts::Overlay);
    assert_eq!(
        xattr(&dir.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(&dir.join("e"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs_err::read(dir.join("f")).unwrap(), b"f");
    assert_eq!(fs_err::read(dir.join("g")).unwrap(), b"g");
}

#[test]
fn same_tree_same_digest_and_epoch_clamps() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let build = |dir: &Path, reverse: bool| {
        let mut files = vec!["b/2", "a/1", "c", "b/1", "a/2"];
        if reverse {
            files.reverse();
        }
        for f in files {
            write_file(&dir.join(f), f.as_bytes());
            set_mtime(&dir.join(f), 2_000_000_000);
        }
        set_mtime(&dir.join("c"), 1_000);
        for d in ["a", "b"] {
            set_mtime(&dir.join(d), 1_500_000_000);
        }
    };
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    build(&one, false);
    build(&two, true);
    let t1 = write_tar(&one, &WriteOptions::default());
    assert_eq!(
        Digest::of(&t1),
        Digest::of(&write_tar(&one, &WriteOptions::default()))
    );
    assert_eq!(
        Digest::of(&t1),
        Digest::of(&write_tar(&two, &WriteOptions::default()))
    );

    let mut opts = WriteOptions::default();
    opts.epoch = Some(1_700_000_000);
    let clamped = write_tar(&one, &opts);
    assert_ne!(Digest::of(&clamped), Digest::of(&t1));
    for e in tar_listing(&clamped) {
        let want = match e.name.as_str() {
            "c" => 1_000,
            "a/" | "b/" => 1_500_000_000,
            _ => 1_700_000_000,
        };
        assert_eq!(e.mtime, want, "{}", e.name);
    }
}

#[test]
fn reads_gnu_tar_archives() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    rich_tree(&src);
    let want = describe(
        &src,
        Describe {
            dir_mtimes: false,
            xattrs: true,
        },
    );
    for format in ["gnu", "posix"] {
        let path = tmp.path().join(format!("{format}.tar"));
        let mut cmd = Command::new("tar");
        cmd.arg(format!("--format={format}"));
        run(cmd
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf"])
            .arg(&path)
            .arg("-C")
            .arg(&src)
            .arg("."));
        let dst = tmp.path().join(format!("dst-{format}"));
        let tar = fs_err::read(&path).unwrap();
        extract(&tar, &dst, Whiteouts::Apply);
        assert_eq!(
            describe(
                &dst,
                Describe {
                    dir_mtimes: false,
                    xattrs: true
                }
            ),
            want,
            "{format}"
        );
    }
}

#[test]
fn write_refuses_what_a_layer_cannot_say() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let redirected = tmp.path().join("redirect");
    fs_err::create_dir_all(redirected.join("moved")).unwrap();
    lsetxattr(
        &redirected.join("moved"),
        "trusted.overlay.redirect",
        b"/orig",
    );
    match layer::write(&redirected, Vec::new(), &WriteOptions::default()) {
        Err(e @ layer::LayerError::OverlayFeature { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("moved") && msg.contains("redirect_dir=off"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Not an overlay upper dir: the xattr is just dropped.
    let mut opts = WriteOptions::default();
    opts.overlay_upper = false;
    layer::write(&redirected, Vec::new(), &opts).unwrap();

    let reserved = tmp.path().join("reserved");
    write_file(&reserved.join("dir/.wh.looks-like-a-whiteout"), b"");
    match layer::write(&reserved, Vec::new(), &WriteOptions::default()) {
        Err(e @ layer::LayerError::ReservedName { .. }) => {
            assert!(
                e.to_string().contains("dir/.wh.looks-like-a-whiteout"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn io_errors_name_their_path() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let e = layer::write(&missing, Vec::new(), &WriteOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    let tar = RawTar::new().file("f", b"x").finish();
    let e = layer::extract(&tar[..], &missing, &ExtractOptions::new(Whiteouts::Apply)).unwrap_err();
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    // A file where the layer needs a directory.
    let dest = tmp.path().join("dest");
    write_file(&dest.join("etc"), b"a file");
    let tar = RawTar::new().file("etc/passwd", b"x").finish();
    let e = layer::extract(&tar[..], &dest, &ExtractOptions::new(Whiteouts::Apply)).unwrap_err();
    assert!(e.to_string().contains("dest/etc/passwd"), "{e}");
}

#[test]
fn extracts_without_chown() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut h = raw_header(b"owned", b'0', 1, b"");
    octal(&mut h[108..116], 4321);
    octal(&mut h[100..108], 0o4755);
    checksum(&mut h);
    let tar = RawTar::new().header(h).data(b"x").finish();
    let mut opts = ExtractOptions::new(Whiteouts::Apply);
    opts.chown = false;
    layer::extract(&tar[..], tmp.path(), &opts).unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = fs_err::metadata(tmp.path().join("owned")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o4755));
}

/// A file entry with its own mode and owner.
fn file_entry(tar: &mut RawTar, name: &str, mode: u32, gid: u32) {
    let mut h = raw_header(name.as_bytes(), b'0', 2, b"");
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[116..124], u64::from(gid));
    checksum(&mut h);
    tar.header(h).data(b"hi");
}

/// Extraction leaves out the `chown` and `chmod` that would change nothing
/// (a new file is the creator's, its mode the one asked for less the
/// umask): whatever the umask, in a setgid directory (whose group a new
/// file takes) and under a default ACL (which stands in for the umask),
/// owners and modes still come out as the archive says.
#[test]
fn owners_and_modes_are_exact_under_any_umask_setgid_dir_or_default_acl() {
    if need(Root).is_none() {
        return;
    }
    // nextest runs each test in a process of its own: this umask is ours.
    let tmp = tempfile::tempdir().unwrap();
    let (tar, want) = rich_layer(tmp.path());
    for umask in [0o077, 0o000, 0o022] {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
        for mode in [Whiteouts::Apply, Whiteouts::Overlay] {
            let dst = tmp.path().join(format!("dst-{umask:o}-{mode:?}"));
            extract(&tar, &dst, mode);
            assert_eq!(
                describe(&dst, Describe::default()),
                want,
                "umask {umask:o}, {mode:?}"
            );
        }
    }

    // Directories in the destination the archive does not list.
    let dst = tmp.path().join("pre");
    let (sg, acl) = (dst.join("sg"), dst.join("acl"));
    fs_err::create_dir_all(&sg).unwrap();
    fs_err::create_dir_all(&acl).unwrap();
    lchown(&sg, 0, 1234);
    chmod(&sg, 0o2775);
    // user::rwx group::r-x other::--- for what is created inside.
    let mut default_acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 7u16), (0x04, 5), (0x20, 0)] {
        default_acl.extend_from_slice(&tag.to_le_bytes());
        default_acl.extend_from_slice(&perm.to_le_bytes());
        default_acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    lsetxattr(&acl, "system.posix_acl_default", &default_acl);
    use std::os::unix::fs::MetadataExt;
    let mut raw = RawTar::new();
    file_entry(&mut raw, "sg/root", 0o644, 0);
    file_entry(&mut raw, "sg/staff", 0o644, 1234);
    file_entry(&mut raw, "acl/r", 0o644, 0);
    file_entry(&mut raw, "acl/x", 0o755, 0);
    file_entry(&mut raw, "acl/w", 0o666, 0);
    extract(&raw.finish(), &dst, Whiteouts::Apply);
    let meta = |rel: &str| fs_err::symlink_metadata(dst.join(rel)).unwrap();
    assert_eq!(
        meta("sg/root").gid(),
        0,
        "the setgid directory's group stayed"
    );
    assert_eq!(meta("sg/staff").gid(), 1234);
    for (rel, mode) in [("acl/r", 0o644), ("acl/x", 0o755), ("acl/w", 0o666)] {
        assert_eq!(
            meta(rel).mode() & 0o7777,
            mode,
            "{rel}: the default ACL's mode stayed"
        );
    }
}

/// A writer that runs `change` once, on its first write: while the layer
/// writer is inside the tree (its buffer fills in the first file).
struct ChangeOnFirstWrite<F: FnMut()> {
    change: Option<F>,
    out: Vec<u8>,
}

impl<F: FnMut()> std::io::Write for ChangeOnFirstWrite<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(mut change) = self.change.take() {
            change();
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_file_that_vanishes_shrinks_or_grows_while_written_is_an_error_naming_it() {
    // `a` (2 MiB) is being read when the output first sees bytes; `b`
    // comes after it. Whatever happens to them then, the layer is refused
    // with the file's path, never written with an entry that lies.
    type Change = fn(&Path);
    let cases: [(&str, Change, &str, &str); 3] = [
        (
            "vanishes",
            |d| fs_err::remove_file(d.join("b")).unwrap(),
            "b",
            "inspecting",
        ),
        (
            "shrinks",
            |d| {
                fs_err::File::options()
                    .write(true)
                    .open(d.join("a"))
                    .unwrap()
                    .set_len(4096)
                    .unwrap()
            },
            "a",
            "changed while it was being archived",
        ),
        (
            "grows",
            |d| {
                use std::io::Write;
                let mut f = fs_err::File::options()
                    .append(true)
                    .open(d.join("a"))
                    .unwrap();
                f.write_all(&[1; 8192]).unwrap();
            },
            "a",
            "changed while it was being archived",
        ),
    ];
    for (what, change, name, says) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("upper");
        fs_err::create_dir(&dir).unwrap();
        fs_err::write(dir.join("a"), vec![7u8; 2 << 20]).unwrap();
        fs_err::write(dir.join("b"), b"after a").unwrap();
        let out = ChangeOnFirstWrite {
            change: Some(|| change(&dir)),
            out: Vec::new(),
        };
        let err = layer::write(&dir, out, &WriteOptions::default())
            .expect_err(&format!("a file that {what} is no layer"));
        let shown = format!("{err}");
        assert!(
            shown.contains(dir.join(name).to_str().unwrap()) && shown.contains(says),
            "{what}: {shown}"
        );
    }
}
