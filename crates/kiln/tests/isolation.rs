//! `--isolation chroot`: RUN steps without mounts or namespaces (what an
//! unprivileged container allows), checked against `--isolation runc`:
//! the same Dockerfile gives the same image, bit for bit; `auto` picks
//! chroot where kiln may not mount; a step's processes never outlive it,
//! nor a killed kiln.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::need::{Runc, Tool, need};
use support::{Kiln, full_busybox_root, run, sleeping, tar_gz, text};

const BASE: &str = "kiln.local/isolation-base:1";

/// A busybox root with every applet and a passwd, as a gzipped tarball.
fn full_busybox(dir: &Path) -> PathBuf {
    let root = full_busybox_root(dir);
    fs_err::create_dir_all(root.join("root")).unwrap();
    fs_err::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs_err::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    fs_err::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost image-own-hosts\n",
    )
    .unwrap();
    let tarball = dir.join("rootfs.tar.gz");
    tar_gz(&root, &tarball);
    tarball
}

/// What a step can do to a root: files made, changed, removed and
/// re-made; modes, symlinks, hardlinks; cache (whole and a `source=`
/// part), writable bind, secret and tmpfs mounts;
/// another user; a background process; the /etc files a RUN sees. (Not
/// a change to a file with two names: overlayfs copies up the one name
/// and the other keeps the old file, a plain filesystem changes both;
/// docs/ISOLATION.md.)
const DOCKERFILE: &str = r#"
FROM kiln.local/isolation-base:1 AS build
RUN mkdir -p /data/keep /data/gone /data/swap && echo a > /data/keep/a && echo b > /data/gone/b \
 && ln -s a /data/keep/link && echo h > /data/hard && ln /data/hard /data/hard2 \
 && chmod 0700 /data/keep && echo f > /data/swap/f && echo s > /data/solo
RUN rm -rf /data/gone /data/swap && echo swapped > /data/swap && echo changed > /data/keep/a \
 && chmod 0600 /data/solo && rm /bin/vi && mkdir -p /var/empty
RUN --mount=type=cache,target=/cache echo run >> /cache/log && cat /cache/log > /data/seen
RUN --mount=type=cache,id=parts,target=/part,source=sub echo run >> /part/log && cat /part/log > /data/part
RUN --mount=type=bind,rw,target=/ctx echo scribble > /ctx/scribbled && ls /ctx > /data/ctx
RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /data/toklen
RUN --mount=type=tmpfs,target=/scratch echo hi > /scratch/x && ls /scratch > /data/scratch
RUN cat /etc/hostname > /data/hostname && grep -c localhost /etc/hosts > /data/hosts \
 && test -c /dev/null && echo ok > /dev/null && echo gone > /dev/made-by-step
RUN mkdir /work && chown 1000:1000 /work
USER app
WORKDIR /work
RUN id -u > uid && (sleep 3117 &) && echo started > started
USER root
RUN true

FROM kiln.local/isolation-base:1
COPY --from=build /data /data
COPY --from=build /work /work
RUN cat /data/keep/a /work/uid > /summary
"#;

/// A store holding the base, and a context with the Dockerfile and a secret.
fn setup(work: &Path) -> (Kiln, PathBuf, PathBuf) {
    let tarball = work.join("rootfs.tar.gz");
    if !tarball.exists() {
        full_busybox(work);
    }
    let kiln = Kiln::new();
    // The same base in every store: its config's time is the epoch's.
    run(kiln.cmd().env("SOURCE_DATE_EPOCH", "1700000000").args([
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        BASE,
    ]));
    let ctx = work.join("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let secret = work.join("token");
    fs_err::write(&secret, "s3cret-value").unwrap();
    (kiln, ctx, secret)
}

fn build(kiln: &Kiln, ctx: &Path, secret: &Path, isolation: &str, out: &Path) -> String {
    let output = kiln
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--isolation", isolation])
        .arg("--secret")
        .arg(format!("id=tok,src={}", secret.display()))
        .arg("--output")
        .arg(format!(
            "type=oci,dest={},rewrite-timestamp=true",
            out.display()
        ))
        .arg(ctx)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{isolation} build failed:\n{}",
        text(&output)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(out.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn chroot_builds_the_image_runc_builds() {
    if need(Runc).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (kiln, ctx, secret) = setup(work.path());
    let by_runc = build(&kiln, &ctx, &secret, "runc", &work.path().join("runc"));
    // Another store with the same base (the same tarball), so that the
    // cache mount and every step start afresh.
    let (chroot_kiln, _, _) = setup(work.path());
    let chroot_out = work.path().join("chroot");
    let by_chroot = build(&chroot_kiln, &ctx, &secret, "chroot", &chroot_out);
    assert_eq!(by_chroot, by_runc, "the same image either way");
    assert!(
        !ctx.join("scribbled").exists(),
        "a write to a writable bind reached the context"
    );

    // What the steps saw, from the layout's last layer and the build's.
    let listing = Command::new("tar")
        .arg("-xOf")
        .arg(last_layer(&chroot_out))
        .arg("summary")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "changed\n1000\n");
    assert!(
        sleeping("3117").is_empty(),
        "a step's background process outlived it"
    );
    // The cache mount went back to the store; nothing of the runs is left.
    let trees = chroot_kiln.root.path().join("trees");
    let left: Vec<_> = fs_err::read_dir(&trees)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "trees left: {left:?}");
    support::assert_store_clean(&chroot_kiln, &["active"]);
}

fn last_layer(layout: &Path) -> PathBuf {
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest[7..]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs_err::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    blob(layers.last().unwrap()["digest"].as_str().unwrap())
}

/// Without CAP_SYS_ADMIN (as in a container with Docker's default
/// security), `auto` builds with chroot, and says so.
#[test]
fn auto_chooses_chroot_where_kiln_may_not_mount() {
    if need(Runc).is_none() || need(Tool::Setpriv).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (kiln, ctx, secret) = setup(work.path());
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--bounding-set",
        "-sys_admin",
        "--inh-caps",
        "-sys_admin",
        "--",
    ])
    .arg(assert_cmd::cargo::cargo_bin("kiln"))
    .env("KILN_ROOT", kiln.root.path())
    .env("KILN_PROGRESS", "plain")
    .args(["build", "--secret"])
    .arg(format!("id=tok,src={}", secret.display()))
    .arg(&ctx);
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("isolation: chroot, because this process may not mount"),
        "{}",
        text(&out)
    );
}

/// A step that runs too long is killed with everything it started; so is
/// a step whose kiln is killed with SIGKILL.
#[test]
fn a_chroot_step_dies_with_its_timeout_and_with_kiln() {
    if need(Runc).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (kiln, ctx, _) = setup(work.path());
    fs_err::write(
        ctx.join("Dockerfile"),
        format!("FROM {BASE}\nRUN (sleep 3118 &) ; sleep 3119\n"),
    )
    .unwrap();
    let err = kiln.fails(&[
        "build",
        "--isolation",
        "chroot",
        "--step-timeout",
        "2s",
        "--retries",
        "0",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        err.contains("timed out") || err.contains("timeout"),
        "{err}"
    );
    assert!(sleeping("3118").is_empty() && sleeping("3119").is_empty());

    let mut child = kiln
        .cmd()
        .args(["build", "--isolation", "chroot"])
        .arg(&ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while sleeping("3119").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    while !(sleeping("3118").is_empty() && sleeping("3119").is_empty()) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the step outlived kiln by 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
