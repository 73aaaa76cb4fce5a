//! The one extractor against hostile archives, with each resolution
//! (`openat2` and the walk by hand) and with the rules of a layer and of an
//! `ADD` archive. Owners are left alone, so these run as any user.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_fs::tar::{
    ApplyOptions, EntryHeader, Kind, MissingParents, Owners, TarError, TarWriter, TopEntry,
    Whiteouts, apply,
};
use kiln_fs::{Owner, Resolution, Root};

/// An archive, entry by entry.
#[derive(Default)]
struct Archive {
    w: Option<TarWriter<Vec<u8>>>,
}

impl Archive {
    fn new() -> Archive {
        Archive {
            w: Some(TarWriter::new(Vec::new())),
        }
    }

    fn add(mut self, path: &str, kind: Kind, link: &str, data: &[u8], mode: u32) -> Archive {
        let w = self.w.as_mut().unwrap();
        w.append(&EntryHeader {
            path: path.as_bytes(),
            kind,
            link: link.as_bytes(),
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            size: data.len() as u64,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        })
        .unwrap();
        if !data.is_empty() {
            w.write_data(data).unwrap();
            w.end_data(data.len() as u64).unwrap();
        }
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Archive {
        self.add(path, Kind::File, "", data, 0o644)
    }

    fn dir(self, path: &str) -> Archive {
        self.add(path, Kind::Dir, "", b"", 0o755)
    }

    fn symlink(self, path: &str, target: &str) -> Archive {
        self.add(path, Kind::Symlink, target, b"", 0o777)
    }

    fn hardlink(self, path: &str, target: &str) -> Archive {
        self.add(path, Kind::Link, target, b"", 0o644)
    }

    fn finish(mut self) -> Vec<u8> {
        self.w.take().unwrap().finish().unwrap().0
    }
}

/// A destination beside a file it must never touch.
struct Sandbox {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    dest: PathBuf,
    victim: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("sandbox");
        let dest = top.join("dest");
        fs_err::create_dir_all(&dest).unwrap();
        let victim = top.join("victim");
        fs_err::write(&victim, "precious").unwrap();
        fs_err::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        Sandbox {
            _tmp: tmp,
            top,
            dest,
            victim,
        }
    }

    fn apply(&self, tar: &[u8], res: Resolution, opts: &ApplyOptions) -> Result<(), TarError> {
        let root = Root::open_with(&self.dest, res).unwrap();
        let r = apply(tar, &root, opts).map(drop);
        self.check();
        r
    }

    /// Nothing outside `dest` changed.
    fn check(&self) {
        let m = fs_err::symlink_metadata(&self.victim).unwrap();
        assert!(m.is_file(), "victim replaced");
        assert_eq!(fs_err::read(&self.victim).unwrap(), b"precious");
        assert_eq!(m.mode() & 0o7777, 0o600, "victim chmodded");
        assert_eq!(m.nlink(), 1, "victim hardlinked");
        let mut names: Vec<String> = fs_err::read_dir(&self.top)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dest", "victim"], "something appeared outside dest");
    }

    fn abs(&self) -> String {
        self.top.to_str().unwrap().to_owned()
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs_err::read(self.dest.join(rel)).unwrap()
    }
}

fn layer() -> ApplyOptions {
    ApplyOptions {
        owners: Owners::Unchanged,
        ..ApplyOptions::layer(Whiteouts::Apply)
    }
}

fn add_archive() -> ApplyOptions {
    ApplyOptions {
        owners: Owners::Unchanged,
        ..ApplyOptions::add_archive(None)
    }
}

/// Every case, with both resolutions and both rule sets.
fn each(f: impl Fn(Resolution, &ApplyOptions)) {
    let mut resolutions = vec![Resolution::Userspace];
    if Resolution::detect() == Resolution::Kernel {
        resolutions.push(Resolution::Kernel);
    }
    for res in resolutions {
        for opts in [layer(), add_archive()] {
            f(res, &opts);
        }
    }
}

#[test]
fn names_climbing_out_are_refused() {
    each(|res, opts| {
        let s = Sandbox::new();
        for name in ["../escape", "a/../../escape", "./../victim", "/../victim"] {
            let tar = Archive::new().file(name, b"pwned").finish();
            match s.apply(&tar, res, opts) {
                Err(TarError::Escape { path }) => assert_eq!(path, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    });
}

#[test]
fn absolute_names_and_symlinks_land_inside() {
    each(|res, opts| {
        let s = Sandbox::new();
        let tar = Archive::new()
            .symlink("up", "..")
            .file("up/victim", b"pwned")
            .symlink("root", "/")
            .file("root/escape-root", b"pwned")
            .file(&format!("{}/victim", s.abs()), b"pwned")
            .finish();
        s.apply(&tar, res, opts).unwrap();
        assert_eq!(s.read("victim"), b"pwned");
        assert_eq!(s.read("escape-root"), b"pwned");
        assert_eq!(s.read(&format!("{}/victim", &s.abs()[1..])), b"pwned");
    });
}

#[test]
fn hardlinks_never_reach_outside() {
    each(|res, opts| {
        let s = Sandbox::new();
        let outside = format!("{}/victim", s.abs());
        for target in [outside.as_str(), "../victim", "../../sandbox/victim"] {
            let tar = Archive::new().hardlink("h", target).finish();
            match s.apply(&tar, res, opts) {
                Err(TarError::Escape { .. } | TarError::InvalidLink { .. }) => {}
                other => panic!("{target}: {other:?}"),
            }
        }
        let tar = Archive::new()
            .symlink("s", &s.abs())
            .hardlink("h", "s/victim")
            .finish();
        assert!(matches!(
            s.apply(&tar, res, opts),
            Err(TarError::InvalidLink { .. })
        ));
    });
}

#[test]
fn a_directory_swapped_for_a_symlink_is_not_written_through() {
    each(|res, opts| {
        let s = Sandbox::new();
        let tar = Archive::new()
            .dir("d/")
            .file("d/ok", b"ok")
            .symlink("d", &s.abs())
            .file("d/victim", b"pwned")
            .finish();
        match opts.parents {
            // Docker: the symlink leads to nothing inside dest: an error.
            MissingParents::AsNamed => assert!(s.apply(&tar, res, opts).is_err()),
            // BuildKit's ADD: made where it leads, inside dest.
            MissingParents::AtTarget => {
                s.apply(&tar, res, opts).unwrap();
                assert_eq!(s.read(&format!("{}/victim", &s.abs()[1..])), b"pwned");
            }
        }
        let m = fs_err::symlink_metadata(s.dest.join("d")).unwrap();
        assert!(m.file_type().is_symlink());
    });
}

#[test]
fn whiteouts_are_carried_out_for_layers_and_plain_names_for_add() {
    each(|res, opts| {
        let s = Sandbox::new();
        fs_err::write(s.dest.join("old"), "lower").unwrap();
        fs_err::create_dir(s.dest.join("lower-dir")).unwrap();
        fs_err::write(s.dest.join("lower-dir/x"), "lower").unwrap();
        // A whiteout through a symlink names nothing real: it deletes
        // nothing, here or outside.
        let tar = Archive::new()
            .file(".wh.old", b"")
            .file("lower-dir/.wh..wh..opq", b"")
            .symlink("out", &s.abs())
            .file("out/.wh.victim", b"")
            .finish();
        s.apply(&tar, res, opts).unwrap();
        match opts.whiteouts {
            Whiteouts::Plain => {
                assert!(s.dest.join("old").exists());
                assert!(s.dest.join(".wh.old").exists());
                assert!(s.dest.join("lower-dir/x").exists());
            }
            _ => {
                assert!(!s.dest.join("old").exists());
                assert!(!s.dest.join(".wh.old").exists());
                assert!(!s.dest.join("lower-dir/x").exists());
                assert!(s.dest.join("lower-dir").is_dir());
            }
        }
    });
}

#[test]
fn the_top_entry_is_the_layer_root_or_skipped() {
    each(|res, opts| {
        let s = Sandbox::new();
        fs_err::set_permissions(&s.dest, std::fs::Permissions::from_mode(0o700)).unwrap();
        let tar = Archive::new().add("./", Kind::Dir, "", b"", 0o755).finish();
        s.apply(&tar, res, opts).unwrap();
        let mode = fs_err::metadata(&s.dest).unwrap().mode() & 0o7777;
        match opts.top {
            TopEntry::Apply => assert_eq!(mode, 0o755),
            TopEntry::Skip => assert_eq!(mode, 0o700),
        }
    });
}

#[test]
fn hardlinks_get_the_entry_metadata_and_fixed_owners_apply() {
    let s = Sandbox::new();
    let tar = Archive::new()
        .add("f", Kind::File, "", b"data", 0o600)
        .add("h", Kind::Link, "f", b"", 0o640)
        .finish();
    let me = Owner {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    };
    let opts = ApplyOptions::add_archive(Some(me));
    s.apply(&tar, Resolution::detect(), &opts).unwrap();
    let m = fs_err::metadata(s.dest.join("f")).unwrap();
    assert_eq!(m.nlink(), 2);
    assert_eq!(
        m.mode() & 0o7777,
        0o640,
        "the link's header mode wins, as in Docker"
    );
    assert_eq!((m.uid(), m.gid()), (me.uid, me.gid));
    assert_eq!(m.mtime(), 1_700_000_000);
    // A layer keeps what the entry that made the inode said.
    let s = Sandbox::new();
    s.apply(&tar, Resolution::detect(), &layer()).unwrap();
    let m = fs_err::metadata(s.dest.join("f")).unwrap();
    assert_eq!((m.nlink(), m.mode() & 0o7777), (2, 0o600));
}

#[test]
fn truncated_and_malformed_archives_are_errors() {
    let s = Sandbox::new();
    let tar = Archive::new().file("f", &[7u8; 4096]).finish();
    let cut = &tar[..512 + 1000];
    assert!(matches!(
        s.apply(cut, Resolution::detect(), &layer()),
        Err(TarError::Truncated { .. })
    ));
    let mut bad = Archive::new().file("g", b"x").finish();
    bad[148] = b'9';
    assert!(matches!(
        s.apply(&bad, Resolution::detect(), &layer()),
        Err(TarError::Malformed { .. })
    ));
    assert!(!Path::new(&s.dest.join("g")).exists());
}

/// A layer for an overlay mounted with `userxattr` (rootless kiln) marks
/// its opaque directories with `user.overlay.opaque`, the only marker such
/// a mount reads; the classic format keeps `trusted.overlay.opaque`.
#[test]
fn a_user_overlay_layer_marks_opaque_dirs_with_the_user_xattr() {
    let s = Sandbox::new();
    let tar = Archive::new()
        .dir("d")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"n")
        .finish();
    let opts = ApplyOptions {
        owners: Owners::Unchanged,
        ..ApplyOptions::layer(Whiteouts::UserOverlay)
    };
    s.apply(&tar, Resolution::detect(), &opts).unwrap();
    let dir = s.dest.join("d");
    let get = |name: &str| {
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let mut buf = [0u8; 8];
        rustix::fs::lgetxattr(path.as_c_str(), name, &mut buf)
            .ok()
            .map(|n| buf[..n].to_vec())
    };
    assert_eq!(get("user.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(get("trusted.overlay.opaque"), None);
    assert!(!dir.join(".wh..wh..opq").exists());
    assert_eq!(s.read("d/new"), b"n");
}
