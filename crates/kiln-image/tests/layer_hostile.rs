//! Hostile layers: no entry, symlink, hardlink or whiteout may read or
//! write outside the destination. Every archive here is built by hand,
//! header by header, since tar libraries refuse to write most of them.
//!
//! Each test extracts into `sandbox/dest` beside a `sandbox/victim` file
//! and asserts afterwards that the victim is untouched (content, owner,
//! mode, link count) and that nothing new appeared in the sandbox, whether
//! extraction failed or not.

mod layer_support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_fs::tar::TarError;
use kiln_image::layer::{self, ApplyStats, ExtractOptions, LayerError, Whiteouts};
use kiln_testkit::need::{Root, need};
use layer_support::*;

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
    victim: PathBuf,
}

const VICTIM: &[u8] = b"precious";

impl Sandbox {
    fn new() -> Option<Sandbox> {
        need(Root)?;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("sandbox");
        let dest = root.join("dest");
        fs_err::create_dir_all(&dest).unwrap();
        let victim = root.join("victim");
        write_file(&victim, VICTIM);
        chmod(&victim, 0o600);
        Some(Sandbox {
            _tmp: tmp,
            root,
            dest,
            victim,
        })
    }

    /// The sandbox as an absolute path string, for symlinks aimed at it.
    fn abs(&self) -> String {
        self.root.to_str().unwrap().to_string()
    }

    fn extract(&self, tar: &[u8], mode: Whiteouts) -> Result<ApplyStats, LayerError> {
        let r = layer::extract(tar, &self.dest, &ExtractOptions::new(mode));
        self.check();
        r
    }

    /// Nothing outside `dest` changed.
    fn check(&self) {
        let m = fs_err::symlink_metadata(&self.victim).unwrap();
        assert!(m.is_file(), "victim replaced");
        assert_eq!(
            fs_err::read(&self.victim).unwrap(),
            VICTIM,
            "victim written"
        );
        assert_eq!(m.mode() & 0o7777, 0o600, "victim chmodded");
        assert_eq!((m.uid(), m.gid()), (0, 0), "victim chowned");
        assert_eq!(m.nlink(), 1, "victim hardlinked");
        let mut names: Vec<String> = fs_err::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dest", "victim"], "something appeared outside dest");
    }

    /// Every path extraction left in `dest`, for asserting where an entry
    /// went instead.
    fn inside(&self) -> Vec<String> {
        walk(&self.dest)
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

fn expect_invalid(r: Result<ApplyStats, LayerError>) {
    match r {
        Err(LayerError::Tar(
            TarError::InvalidEntry { .. } | TarError::InvalidLink { .. } | TarError::Escape { .. },
        )) => {}
        other => panic!("expected an unsafe-entry error, got {other:?}"),
    }
}

#[test]
fn dot_dot_names_are_refused() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    for name in ["../escape", "a/../../escape", "./../victim", "/../victim"] {
        let tar = RawTar::new().file(name, b"pwned").finish();
        expect_invalid(s.extract(&tar, Whiteouts::Apply));
    }
    assert!(s.inside().is_empty());
}

#[test]
fn absolute_names_land_inside() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let abs_victim = format!("{}/victim", s.abs());
    let tar = RawTar::new().file(&abs_victim, b"pwned").finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    let inside = Path::new(&abs_victim).strip_prefix("/").unwrap();
    assert_eq!(fs_err::read(s.dest.join(inside)).unwrap(), b"pwned");
}

#[test]
fn symlink_to_root_then_write_through_it() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .symlink("root", "/")
        .file(&format!("root{}/victim", s.abs()), b"pwned")
        .file("root/escape-root", b"pwned")
        .finish();
    // "/" is the destination, so the first file needs directories that do
    // not exist there: an error or a file inside, never the victim.
    match s.extract(&tar, Whiteouts::Apply) {
        Ok(_) => {}
        Err(LayerError::Tar(TarError::Io { .. })) => {}
        Err(e) => panic!("{e:?}"),
    }
    let tar = RawTar::new()
        .symlink("root", "/")
        .file("root/escape-root", b"pwned")
        .finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    assert_eq!(fs_err::read(s.dest.join("escape-root")).unwrap(), b"pwned");
    assert!(!Path::new("/escape-root").exists());
}

#[test]
fn symlink_to_dot_dot_then_write_through_it() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .symlink("up", "..")
        .file("up/victim", b"pwned")
        .symlink("upup", "../../..")
        .file("upup/escape", b"pwned")
        .finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    // `..` of the root is the root: both files land at the top of dest.
    assert_eq!(fs_err::read(s.dest.join("victim")).unwrap(), b"pwned");
    assert_eq!(fs_err::read(s.dest.join("escape")).unwrap(), b"pwned");
}

#[test]
fn symlink_chain_out_of_the_root() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .symlink("a", "b")
        .symlink("b", "c/../d")
        .dir("c/")
        .symlink("d", &s.abs())
        .file("a/victim", b"pwned")
        .file("a/new", b"pwned")
        .finish();
    // d points at a path that does not exist inside dest.
    assert!(matches!(
        s.extract(&tar, Whiteouts::Apply),
        Err(LayerError::Tar(TarError::Io { .. }))
    ));
}

#[test]
fn symlink_chain_lands_inside_when_target_exists_inside() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let inner = s.abs();
    let tar = RawTar::new()
        .dir(&format!("{inner}/"))
        .symlink("a", "b")
        .symlink("b", &inner)
        .file("a/victim", b"pwned")
        .finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    let landed = s.dest.join(inner.trim_start_matches('/')).join("victim");
    assert_eq!(fs_err::read(landed).unwrap(), b"pwned");
}

#[test]
fn hardlink_to_a_file_outside() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    for target in [
        format!("{}/victim", s.abs()),
        "../victim".into(),
        "../../sandbox/victim".into(),
    ] {
        let tar = RawTar::new().hardlink("h", &target).finish();
        expect_invalid(s.extract(&tar, Whiteouts::Apply));
    }
    // Then writing through the name must not reach the victim either.
    let tar = RawTar::new()
        .hardlink("h", "../victim")
        .file("h", b"pwned")
        .finish();
    expect_invalid(s.extract(&tar, Whiteouts::Apply));
}

#[test]
fn hardlink_through_a_symlinked_dir() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .symlink("s", &s.abs())
        .hardlink("h", "s/victim")
        .finish();
    expect_invalid(s.extract(&tar, Whiteouts::Apply));
    let tar = RawTar::new()
        .symlink("up", "..")
        .hardlink("h2", "up/../victim")
        .finish();
    // `up/../victim` is cleaned to `victim` before lookup, which is not in dest.
    expect_invalid(s.extract(&tar, Whiteouts::Apply));
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .symlink("l", &format!("{}/victim", s.abs()))
        .hardlink("h", "l")
        .finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    let m = fs_err::symlink_metadata(s.dest.join("h")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.nlink(), 2);
}

#[test]
fn dir_replaced_by_symlink_then_written_into() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .dir("d/")
        .file("d/ok", b"ok")
        .symlink("d", &s.abs())
        .file("d/victim", b"pwned")
        .finish();
    assert!(s.extract(&tar, Whiteouts::Apply).is_err());
    let m = fs_err::symlink_metadata(s.dest.join("d")).unwrap();
    assert!(m.file_type().is_symlink());
}

#[test]
fn entry_whose_parent_is_a_symlink() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .symlink("p", &s.abs())
        .file("p/new", b"pwned")
        .finish();
    assert!(s.extract(&tar, Whiteouts::Apply).is_err());
    // Relative, climbing: still inside.
    let tar = RawTar::new()
        .dir("x/")
        .symlink("x/p", "../../../..")
        .file("x/p/new", b"inside")
        .finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    assert_eq!(fs_err::read(s.dest.join("new")).unwrap(), b"inside");
}

#[test]
fn file_over_a_symlink_replaces_the_symlink() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let victim = format!("{}/victim", s.abs());
    let mut h = raw_header(b"x", b'2', 0, victim.as_bytes());
    // Mode and owner on the symlink entry must not reach its target.
    octal(&mut h[100..108], 0o4777);
    octal(&mut h[108..116], 1234);
    checksum(&mut h);
    let tar = RawTar::new().header(h).file("x", b"pwned").finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    let m = fs_err::symlink_metadata(s.dest.join("x")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs_err::read(s.dest.join("x")).unwrap(), b"pwned");
}

#[test]
fn symlink_metadata_is_not_applied_to_its_target() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let victim = format!("{}/victim", s.abs());
    let mut h = raw_header(b"x", b'2', 0, victim.as_bytes());
    octal(&mut h[100..108], 0o4777);
    octal(&mut h[108..116], 1234);
    checksum(&mut h);
    let tar = RawTar::new()
        .pax(&[("SCHILY.xattr.user.evil", b"1")])
        .header(h)
        .finish();
    let stats = s.extract(&tar, Whiteouts::Apply).unwrap();
    // user.* xattrs are not allowed on symlinks: skipped, not followed.
    assert_eq!(stats.xattrs_skipped, 1);
    assert_eq!(xattr(&s.victim, "user.evil"), None);
    assert_eq!(
        fs_err::symlink_metadata(s.dest.join("x")).unwrap().uid(),
        1234
    );
}

#[test]
fn whiteouts_through_symlinks_delete_nothing_outside() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .symlink("s", &s.abs())
        .file("s/.wh.victim", b"")
        .file("s/.wh..wh..opq", b"")
        .symlink("up", "..")
        .file("up/.wh.victim", b"")
        .file("up/.wh..wh..opq", b"")
        .finish();
    s.extract(&tar, Whiteouts::Apply).unwrap();
    // The opaque marker under `up` (= the root) emptied dest of what this
    // layer did not make; `s` and `up` are this layer's.
    assert_eq!(s.inside(), ["s", "up"]);

    for bad in [".wh..", ".wh.", "a/.wh...", "../.wh.victim"] {
        let tar = RawTar::new().file(bad, b"").finish();
        assert!(s.extract(&tar, Whiteouts::Apply).is_err(), "{bad}");
        assert!(s.extract(&tar, Whiteouts::Overlay).is_err(), "{bad}");
    }
}

#[test]
fn overlay_xattrs_in_a_layer_are_dropped() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    let tar = RawTar::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.overlay.metacopy", b""),
            ("SCHILY.xattr.user.ok", b"kept"),
        ])
        .dir("d/")
        .finish();
    s.extract(&tar, Whiteouts::Overlay).unwrap();
    let d = s.dest.join("d");
    assert_eq!(xattr(&d, "trusted.overlay.redirect"), None);
    assert_eq!(xattr(&d, "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&d, "user.overlay.metacopy"), None);
    assert_eq!(xattr(&d, "user.ok").as_deref(), Some(&b"kept"[..]));
}

#[test]
fn huge_metadata_headers_are_refused_without_allocating() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    for flag in [b'x', b'L', b'K', b'g'] {
        // Claims 4 GiB of header; the stream ends right after.
        let tar = RawTar::new()
            .header(raw_header(b"meta", flag, 4 << 30, b""))
            .finish();
        match s.extract(&tar, Whiteouts::Apply) {
            Err(LayerError::Tar(TarError::Malformed { reason, .. })) => {
                assert!(reason.contains("limit"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn malformed_archives_are_errors() {
    let Some(s) = Sandbox::new() else {
        return;
    };
    // Bad checksum.
    let mut h = raw_header(b"f", b'0', 0, b"");
    h[0] = b'g';
    let tar = RawTar::new().header(h).finish();
    assert!(matches!(
        s.extract(&tar, Whiteouts::Apply),
        Err(LayerError::Tar(TarError::Malformed { .. }))
    ));
    // Data shorter than the header says.
    let mut tar = RawTar::new();
    tar.header(raw_header(b"f", b'0', 4096, b""));
    tar.bytes.extend_from_slice(&[7; 100]);
    let tar = std::mem::take(&mut tar.bytes);
    assert!(matches!(
        s.extract(&tar, Whiteouts::Apply),
        Err(LayerError::Tar(TarError::Truncated { .. }))
    ));
    // An extension header with no entry after it.
    let tar = RawTar::new().pax(&[("path", b"x")]).finish();
    assert!(matches!(
        s.extract(&tar, Whiteouts::Apply),
        Err(LayerError::Tar(TarError::Malformed { .. }))
    ));
    // An entry type kiln does not extract.
    let tar = RawTar::new()
        .header(raw_header(b"vol", b'V', 0, b""))
        .finish();
    assert!(matches!(
        s.extract(&tar, Whiteouts::Apply),
        Err(LayerError::Tar(TarError::UnsupportedEntry {
            kind: 'V',
            ..
        }))
    ));
    // A file over the root.
    let tar = RawTar::new().file("./", b"").finish();
    expect_invalid(s.extract(&tar, Whiteouts::Apply));
}
