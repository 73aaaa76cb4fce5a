//! Helpers for the CLI tests: a kiln with its own store, rootfs tarballs,
//! and the real peers (registry, skopeo, docker).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A kiln store in a temp dir; commands run with plain progress.
pub(crate) struct Kiln {
    pub(crate) root: tempfile::TempDir,
}

impl Kiln {
    pub(crate) fn new() -> Kiln {
        Kiln {
            root: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("kiln"));
        c.env("KILN_ROOT", self.root.path())
            .env("KILN_PROGRESS", "plain")
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    /// Runs kiln; panics with its output unless it succeeds.
    pub(crate) fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "kiln {args:?} failed:\n{}",
            text(&out)
        );
        out
    }

    /// Runs kiln expecting failure; returns its stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            !out.status.success(),
            "kiln {args:?} should have failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The digest `kiln images --format json` lists for `repo:tag`.
    pub(crate) fn image_digest(&self, familiar_repo: &str, tag: &str) -> Option<String> {
        let out = self.ok(&["images", "--format", "json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()?
            .iter()
            .find(|r| r["repository"] == familiar_repo && r["tag"] == tag)
            .map(|r| r["digest"].as_str().unwrap().to_string())
    }
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) use kiln_testkit::busybox::busybox;

/// A gzipped rootfs tarball: busybox with a few applets, plus `extra_bytes`
/// of incompressible data in /payload (to make big images).
pub(crate) fn rootfs_tarball(dir: &Path, extra_bytes: u64) -> PathBuf {
    let root = dir.join("rootfs");
    fs_err::create_dir_all(root.join("bin")).unwrap();
    fs_err::copy(busybox(), root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs_err::write(root.join("hello.txt"), "hello from kiln\n").unwrap();
    if extra_bytes > 0 {
        kiln_testkit::write_random_file(&root.join("payload"), extra_bytes, 7).unwrap();
    }
    let tarball = dir.join("rootfs.tar.gz");
    tar_gz(&root, &tarball);
    tarball
}

/// `dir/rootfs`: busybox with every applet in /bin, an /etc/passwd with
/// root, and /tmp; for tests whose steps need more than a few applets.
pub(crate) fn full_busybox_root(dir: &Path) -> PathBuf {
    busybox_root_of(&busybox(), dir)
}

/// [`full_busybox_root`] of another busybox binary (another
/// architecture's, which must run here: `--list` is asked of it).
pub(crate) fn busybox_root_of(busybox: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp"] {
        fs_err::create_dir_all(root.join(d)).unwrap();
    }
    fs_err::copy(busybox, root.join("bin/busybox")).unwrap();
    let list = run(Command::new(busybox).arg("--list"));
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    fs_err::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    root
}

/// The tree `root` as the gzipped tarball `tarball`.
pub(crate) fn tar_gz(root: &Path, tarball: &Path) {
    run(Command::new("tar")
        .arg("czf")
        .arg(tarball)
        .arg("-C")
        .arg(root)
        .arg("."));
}

/// Waits for `child` for at most `bound` (which only keeps a hang from
/// hanging the suite), then kills it and panics.
pub(crate) fn wait_bounded(child: std::process::Child, bound: std::time::Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the command did not finish within {bound:?}");
        }
    }
}

/// Runs a command, panicking with its output unless it succeeds.
pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    out
}

/// Nothing of a run left in `kiln`'s store: the store's `dirs` (such as
/// `active`, `runc/state`) empty or absent, and no mount under the store.
pub(crate) fn assert_store_clean(kiln: &Kiln, dirs: &[&str]) {
    let root = fs_err::canonicalize(kiln.root.path()).unwrap();
    for dir in dirs {
        let dir = root.join(dir);
        if dir.exists() {
            let left: Vec<_> = fs_err::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{} still has {left:?}", dir.display());
        }
    }
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    let root = root.to_str().unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(root)).collect();
    assert!(left.is_empty(), "mounts left under the store: {left:#?}");
}

/// kiln's own image and its debug variant, loaded into docker
/// (scripts/image from the static kiln, built once per content across test
/// processes; kiln-testkit's own_image), or `None` after a skip notice
/// where root, docker or the static kiln is missing. The way into
/// `docker run` for tests of kiln in a container.
pub(crate) fn kiln_image() -> Option<kiln_testkit::own_image::KilnImage> {
    use kiln_testkit::need::{Docker, Root, StaticKiln, need};
    let (Some(()), Some(()), Some(kiln)) = (need(Root), need(Docker), need(StaticKiln)) else {
        return None;
    };
    Some(kiln_testkit::own_image::kiln_image(&kiln))
}

/// Live processes whose command line is `sleep <marker>` (whichever
/// program path runs it): what a test's step left running.
pub(crate) fn sleeping(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs_err::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmdline) = fs_err::read(format!("/proc/{pid}/cmdline")) {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.first().is_some_and(|a| a.ends_with(b"sleep"))
                && args.get(1) == Some(&marker.as_bytes())
            {
                found.push(pid);
            }
        }
    }
    found
}

/// kiln-testkit's busybox root (every applet) imported into `kiln`'s
/// store as `tag`, with `extra` import flags (`--platform`).
pub(crate) fn import_busybox(kiln: &Kiln, tag: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    kiln_testkit::busybox::rootfs(&root, &[]);
    let tarball = dir.path().join("rootfs.tar.gz");
    tar_gz(&root, &tarball);
    let mut args = vec!["import", tarball.to_str().unwrap(), "--tag", tag];
    args.extend_from_slice(extra);
    kiln.ok(&args);
}

/// Standard base64 with padding (docker config `auth`, Secret data).
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
