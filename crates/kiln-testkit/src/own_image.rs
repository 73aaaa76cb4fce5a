//! kiln's own image, as scripts/image builds it, for tests that run it in
//! docker: built from the static kiln ([`StaticKiln`](crate::need::StaticKiln))
//! and loaded once per content, however many tests and test processes ask.
//!
//! ```no_run
//! use kiln_testkit::own_image::kiln_image;
//! use kiln_testkit::need::{Docker, Root, StaticKiln, need};
//! let (Some(()), Some(()), Some(kiln)) = (need(Root), need(Docker), need(StaticKiln)) else {
//!     return;
//! };
//! let image = kiln_image(&kiln);
//! // docker run --rm <image.name> --destination ...
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// kiln's image and its debug variant, built and loaded into docker.
#[derive(Debug, Clone)]
pub struct KilnImage {
    /// The name docker knows it by: `kiln.test/kiln:<key>`, where the key
    /// is a digest of the binary, image/Dockerfile and scripts/image.
    pub name: String,
    /// The debug variant's (busybox in /busybox): `<name>-debug`.
    pub debug_name: String,
    /// scripts/image's `--out`: `kiln.tar` and `kiln-debug.tar` (docker
    /// archives), `oci/` and `oci-debug/` (OCI layouts), `metadata.json`
    /// and `metadata-debug.json`.
    pub dir: PathBuf,
}

/// kiln's image of `static_kiln`: scripts/image run once for the same
/// binary, Dockerfile and script (in `target/kiln-image/<key>`, which
/// replaces the directories of other keys), and both archives loaded into
/// docker unless docker has them. Concurrent callers, in this process or
/// others, wait on a lock file for the first one. Needs root and docker
/// (ask [`need`](crate::need::need) first); panics with the script's
/// output when the build or the load fails.
pub fn kiln_image(static_kiln: &Path) -> KilnImage {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = checkout.join("scripts/image");
    let key = content_key(&[static_kiln, &checkout.join("image/Dockerfile"), &script]);
    let name = format!("kiln.test/kiln:{key}");
    let base = checkout.join("target/kiln-image");
    fs_err::create_dir_all(&base).unwrap();
    let dir = base.join(&key);
    let lock = fs_err::File::create(base.join(format!("{key}.lock"))).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .expect("locking target/kiln-image");
    if !dir.join("kiln.tar").is_file() {
        // Built next to its final place and renamed, so that a build
        // killed half-way is never taken for a finished one.
        let partial = base.join(format!("{key}.partial"));
        let _ = fs_err::remove_dir_all(&partial);
        let out = Command::new("bash")
            .arg(&script)
            .arg("--kiln")
            .arg(static_kiln)
            .args(["--tag", &name, "--out"])
            .arg(&partial)
            .env("KILN_ROOT", partial.join("store"))
            .output()
            .expect("running scripts/image");
        assert!(
            out.status.success(),
            "scripts/image failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs_err::remove_dir_all(partial.join("store")).unwrap();
        fs_err::rename(&partial, &dir).unwrap();
        // The images of earlier binaries: a checkout keeps one.
        for entry in fs_err::read_dir(&base).unwrap().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != key && !name.contains('.') && entry.path().is_dir() {
                let _ = fs_err::remove_dir_all(entry.path());
            }
        }
    }
    let debug_name = format!("{name}-debug");
    for (name, archive) in [(&name, "kiln.tar"), (&debug_name, "kiln-debug.tar")] {
        let loaded = Command::new("docker")
            .args(["image", "inspect", name])
            .output()
            .expect("running docker");
        if !loaded.status.success() {
            let out = Command::new("docker")
                .arg("load")
                .arg("-i")
                .arg(dir.join(archive))
                .output()
                .expect("running docker");
            assert!(
                out.status.success(),
                "docker load of {archive} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    drop(lock);
    KilnImage {
        name,
        debug_name,
        dir,
    }
}

/// The first 16 hex digits of a digest of the files' digests.
fn content_key(files: &[&Path]) -> String {
    let mut all = Vec::new();
    for file in files {
        let digest =
            crate::sha256_file(file).unwrap_or_else(|e| panic!("hashing {}: {e}", file.display()));
        writeln!(all, "{digest}").unwrap();
    }
    kiln_image::Digest::of(&all).hex()[..16].to_string()
}
