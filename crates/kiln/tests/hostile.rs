//! Hostile steps (docs/RELIABILITY.md, "Hostile steps"), under both
//! isolations: no descriptor of kiln's reaches a step; a step that turns
//! the directories around its mounts (or /dev) into symlinks to the host
//! makes kiln's clean-up delete nothing outside the step (the
//! CVE-2024-23652 class); `WORKDIR /proc/self/fd/N` (CVE-2024-21626)
//! reaches nothing of the host's; a cache's `source=` subdirectory that a
//! parallel step keeps swapping for a symlink to the host mounts nothing
//! of the host's (CVE-2024-23651); a `--secret` is in no blob, cache blob
//! or log.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::need::{Runc, need};
use support::{Kiln, full_busybox_root, tar_gz, text};

const BASE: &str = "kiln.local/hostile-base:1";
const SECRET: &str = "kiln-secret-7f3a9c1e55";

fn base(kiln: &Kiln, dir: &Path) {
    let tarball = dir.join("base.tar.gz");
    tar_gz(&full_busybox_root(dir), &tarball);
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", BASE]);
}

/// A host directory with files a hostile step aims at.
fn victim(dir: &Path) -> PathBuf {
    let v = dir.join("victim");
    fs_err::create_dir_all(v.join("b/c")).unwrap();
    fs_err::write(v.join("b/c/keep"), "keep").unwrap();
    fs_err::write(v.join("b/keep"), "keep").unwrap();
    fs_err::write(v.join("keep"), "keep").unwrap();
    v
}

fn intact(victim: &Path) -> bool {
    ["keep", "b/keep", "b/c/keep"]
        .iter()
        .all(|f| fs_err::read_to_string(victim.join(f)).is_ok_and(|s| s == "keep"))
}

/// Builds `dockerfile`; returns whether it succeeded, and all it printed.
fn build(
    kiln: &Kiln,
    ctx: &Path,
    isolation: &str,
    dockerfile: &str,
    extra: &[&str],
) -> (bool, String) {
    fs_err::create_dir_all(ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = kiln
        .cmd()
        .args(["build", "--isolation", isolation, "--retries", "0"])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

#[test]
fn hostile_steps_reach_nothing_of_kilns_or_the_hosts() {
    if need(Runc).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let kiln = Kiln::new();
    base(&kiln, work.path());
    for isolation in ["runc", "chroot"] {
        let dir = work.path().join(isolation);
        let v = victim(&dir);
        let vs = v.display();

        // Descriptors: only 0, 1 and 2. (`\105` is `E`: the command line,
        // which the log shows too, does not say LEAK.)
        let (ok, out) = build(
            &kiln,
            &dir.join("fds"),
            isolation,
            &format!(
                "FROM {BASE}\nRUN for i in $(seq 3 64); do (: <&$i) 2>/dev/null && \
                 printf 'L\\105AK %s\\n' $i; done; echo checked\n"
            ),
            &["--no-cache"],
        );
        assert!(ok, "{isolation}: {out}");
        assert!(
            out.contains("checked") && !out.contains("LEAK "),
            "{isolation}: {out}"
        );

        // A mount's parent, and /dev, turned into symlinks to the host.
        let (_, out) = build(
            &kiln,
            &dir.join("swap"),
            isolation,
            &format!(
                "FROM {BASE}\n\
                 RUN --mount=type=tmpfs,target=/a/c --mount=type=cache,target=/x/c \
                 rm -rf /a /x ; ln -s {vs}/b /a ; ln -s {vs}/b /x ; echo swapped\n\
                 RUN rm -rf /dev ; ln -s {vs} /dev ; echo devswapped\n"
            ),
            &["--no-cache"],
        );
        assert!(
            intact(&v),
            "{isolation}: the clean-up deleted host files\n{out}"
        );

        // CVE-2024-21626: a working directory through a leaked descriptor.
        let (_, out) = build(
            &kiln,
            &dir.join("workdir"),
            isolation,
            &format!(
                "FROM {BASE}\nWORKDIR /proc/self/fd/7\nRUN ls -a .. ../.. ../../.. 2>&1; echo listed\n"
            ),
            &["--no-cache"],
        );
        assert!(!out.contains("cgroup.procs"), "{isolation}: {out}");
        assert!(intact(&v), "{isolation}: {out}");
    }
}

/// CVE-2024-23651: stage `swap` keeps moving the cache's `sub` aside, a
/// symlink to a host directory in its place, and back, while stage `use`
/// mounts `source=sub` of the same cache again and again. Whatever the
/// moment, the mount is the cache's directory, never the host's, and it is
/// made (a path resolved first and mounted later sometimes finds the
/// symlink, sometimes nothing; the directory kiln made while the name was
/// missing is sometimes replaced by the `mv` back before its mount).
#[test]
fn a_cache_subdirectory_swapped_for_a_symlink_mounts_nothing_of_the_hosts() {
    if need(Runc).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let kiln = Kiln::new();
    base(&kiln, work.path());
    for isolation in ["runc", "chroot"] {
        let dir = work.path().join(isolation);
        let v = victim(&dir);
        let vs = v.display();
        // The swapping stage stops once the other has mounted 20 times (or
        // after 15 s: under chroot a cache is one step's at a time).
        let mut dockerfile = format!(
            "FROM {BASE} AS swap\n\
             RUN --mount=type=cache,id=race,target=/c \\\n\
             i=0; end=$(($(date +%s)+15)); mkdir -p /c/sub; \\\n\
             while [ ! -e /c/done ] && [ $(date +%s) -lt $end ]; do \\\n\
             mv /c/sub /c/held && ln -s {vs} /c/sub && rm /c/sub && mv /c/held /c/sub; \\\n\
             i=$((i+1)); done 2>/dev/null; \\\n\
             rm -f /c/done; echo swapped $i times\n\
             FROM {BASE} AS use\n\
             RUN --mount=type=cache,id=race,target=/c sleep 0.3\n"
        );
        for n in 0..20 {
            dockerfile.push_str(&format!(
                "RUN --mount=type=cache,id=race,target=/x,source=sub \\\n\
                 if [ -e /x/keep ]; then echo \"ESC\"APED {n}; fi; \\\n\
                 touch /x/planted-{n} 2>/dev/null; echo used {n}\n"
            ));
        }
        dockerfile.push_str(&format!(
            "RUN --mount=type=cache,id=race,target=/c touch /c/done\n\
             FROM {BASE}\n\
             COPY --from=swap /bin/sh /a\n\
             COPY --from=use /bin/sh /b\n"
        ));
        let (ok, out) = build(
            &kiln,
            &dir.join("race"),
            isolation,
            &dockerfile,
            &["--no-cache"],
        );
        assert!(ok, "{isolation}: {out}");
        assert!(!out.contains("ESCAPED"), "{isolation}: {out}");
        let planted: Vec<_> = fs_err::read_dir(&v)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with("planted"))
            .collect();
        assert!(
            planted.is_empty() && intact(&v),
            "{isolation}: a step wrote into the host's {vs}: {planted:?}\n{out}"
        );
    }
}

#[test]
fn a_secret_is_in_no_blob_cache_or_log() {
    if need(Runc).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let kiln = Kiln::new();
    base(&kiln, work.path());
    let secret = work.path().join("secret");
    fs_err::write(&secret, SECRET).unwrap();
    for isolation in ["runc", "chroot"] {
        let layout = work.path().join(format!("{isolation}-oci"));
        let cache = work.path().join(format!("{isolation}-cache"));
        let (ok, out) = build(
            &kiln,
            &work.path().join(format!("{isolation}-ctx")),
            isolation,
            &format!(
                "FROM {BASE}\n\
                 RUN --mount=type=secret,id=tok wc -c /run/secrets/tok > /len && cp /run/secrets/tok /dev/null\n\
                 RUN --mount=type=secret,id=tok,target=/etc/tok --mount=type=cache,target=/c \
                 test -s /etc/tok && echo used > /c/used\n"
            ),
            &[
                "--no-cache",
                "--secret",
                &format!("id=tok,src={}", secret.display()),
                "--output",
                &format!("type=oci,dest={}", layout.display()),
                "--cache-to",
                &format!("type=local,dest={},mode=max,mounts=true", cache.display()),
            ],
        );
        assert!(ok, "{isolation}: {out}");
        assert!(
            !out.contains(SECRET),
            "{isolation}: the secret is in the log"
        );
        for dir in [layout.join("blobs/sha256"), cache.join("blobs/sha256")] {
            for blob in fs_err::read_dir(&dir).unwrap().flatten() {
                // Layers decompressed; configs and manifests as they are.
                let plain = Command::new("sh")
                    .arg("-c")
                    .arg("gzip -dc \"$1\" 2>/dev/null || cat \"$1\"")
                    .arg("sh")
                    .arg(blob.path())
                    .output()
                    .unwrap()
                    .stdout;
                let found = plain.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
                assert!(
                    !found,
                    "{isolation}: the secret is in {}",
                    blob.path().display()
                );
            }
        }
    }
    // Nor in the store.
    let store = kiln.root.path().join("blobs/sha256");
    for blob in fs_err::read_dir(&store).unwrap().flatten() {
        let bytes = fs_err::read(blob.path()).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in the store's {}",
            blob.path().display()
        );
    }
}
