//! A full disk (docs/RELIABILITY.md, "A full disk"): kiln's store on a
//! 48 MiB tmpfs, and a step that fills it, a commit, a pull and an export
//! that do not fit. Each fails with exit 1 and an error that names the
//! Dockerfile line and the filesystem; the store verifies clean after, no
//! mount is left, and a small build then succeeds.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::need::{Runc, need};
use kiln_testkit::{Registry, RegistryOptions};
use support::{Kiln, rootfs_tarball, run, text};

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs_err::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Builds `dockerfile` in a fresh context; returns exit code and stderr.
fn build(kiln: &Kiln, work: &Path, name: &str, dockerfile: &str, extra: &[&str]) -> (i32, String) {
    let ctx = work.join(name);
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = kiln
        .cmd()
        .arg("build")
        .args(extra)
        .arg(&ctx)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}\n{}", String::from_utf8_lossy(&out.stderr), text(&out)),
    )
}

/// The store is sound and unmounted, and a small build still works.
fn recovers(kiln: &Kiln, work: &Path, case: &str) {
    let verify = kiln.cmd().args(["store", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{case}: {}", text(&verify));
    support::assert_store_clean(kiln, &["active", "tmp", "ingest"]);
    let (code, err) = build(
        kiln,
        work,
        &format!("{case}-after"),
        "FROM bb\nRUN echo small > /small\n",
        &[],
    );
    assert_eq!(code, 0, "{case}: a small build after it failed:\n{err}");
}

#[test]
fn a_full_disk_fails_the_step_names_the_filesystem_and_loses_nothing() {
    if need(Runc).is_none() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("disk"), "48m");
    let kiln = Kiln {
        root: tempfile::tempdir_in(&disk.0).unwrap(),
    };
    let mount_point = disk.0.to_str().unwrap().to_string();
    let tarball = rootfs_tarball(work.path(), 0);
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", "bb"]);

    // A step that fills the filesystem: its own error, and kiln's note.
    let (code, err) = build(
        &kiln,
        work.path(),
        "fill",
        "FROM bb\nRUN head -c 100000000 /dev/zero > /fill\n",
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(
        err.contains(&format!(
            "the filesystem of kiln's store is full: {mount_point} (tmpfs"
        )),
        "{err}"
    );
    recovers(&kiln, work.path(), "fill");

    // A step that fits, whose layer does not.
    let (code, err) = build(
        &kiln,
        work.path(),
        "commit",
        "FROM bb\nRUN head -c 26000000 /dev/urandom > /big\n",
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Dockerfile:2: committing the step"), "{err}");
    assert!(
        err.contains(&format!(
            "no space left: kiln's store is on {mount_point} (tmpfs"
        )),
        "{err}"
    );
    recovers(&kiln, work.path(), "commit");

    // A base that does not fit: fetched when the first step needs its files,
    // and unpacked as it downloads, so either may meet the full disk first.
    let seeder = Kiln::new();
    let big = rootfs_tarball(&work.path().join("big"), 60 << 20);
    let base = format!("{}/full/big:1", registry.host());
    seeder.ok(&["import", big.to_str().unwrap(), "--tag", &base]);
    seeder.ok(&["push", &base]);
    let (code, err) = build(
        &kiln,
        work.path(),
        "pull",
        &format!("FROM {base}\nRUN cat /hello.txt\n"),
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Dockerfile:2: fetching blob")
            || err.contains("Dockerfile:2: unpacking layer"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "no space left: kiln's store is on {mount_point} (tmpfs"
        )),
        "{err}"
    );
    recovers(&kiln, work.path(), "pull");

    // An export to a filesystem it does not fit on names that one.
    let small = Tmpfs::mount(&work.path().join("small"), "4m");
    let dest = small.0.join("image.tar");
    let (code, err) = build(
        &kiln,
        work.path(),
        "export",
        "FROM bb\nRUN head -c 6000000 /dev/urandom > /big\n",
        &["--output", &format!("type=oci,dest={}", dest.display())],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "no space left: the output is on {} (tmpfs",
            small.0.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("kiln's store is on"),
        "only the full one: {err}"
    );
    let left: Vec<_> = fs_err::read_dir(&small.0).unwrap().flatten().collect();
    assert!(left.is_empty(), "half an export left: {left:?}");
    recovers(&kiln, work.path(), "export");

    // So does a cache export (its layer is already in the store).
    let cache = small.0.join("cache");
    let (code, err) = build(
        &kiln,
        work.path(),
        "export",
        "FROM bb\nRUN head -c 6000000 /dev/urandom > /big\n",
        &[
            "--cache-to",
            &format!("type=local,dest={}", cache.display()),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "no space left: the cache (--cache-to) is on {} (tmpfs",
            small.0.display()
        )),
        "{err}"
    );
    // Whatever the cache holds is whole: each blob hashes to its name.
    if let Ok(blobs) = fs_err::read_dir(cache.join("blobs/sha256")) {
        for blob in blobs.flatten() {
            let sum = run(Command::new("sha256sum").arg(blob.path()));
            let sum = String::from_utf8_lossy(&sum.stdout);
            let name = blob.file_name().to_string_lossy().into_owned();
            assert!(sum.starts_with(&name), "a half blob in the cache: {name}");
        }
    }
    recovers(&kiln, work.path(), "cache");
}
