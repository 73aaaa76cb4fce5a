//! Many builds on one store (docs/RELIABILITY.md, "Many builds on one
//! store"): eight `kiln build`s at once on the same base, with the same
//! first steps, cache mounts shared, private and locked, while `kiln
//! prune` runs over and over. Every build succeeds and gives the image
//! the same Dockerfile gives built alone in a store of its own; the store
//! verifies after.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use kiln_testkit::need::{Runc, need};
use support::{Kiln, full_busybox_root, run, tar_gz, text};

const BASE: &str = "kiln.local/many-base:1";

/// A busybox root with every applet, as a gzipped tarball.
fn base_tarball(dir: &Path) -> PathBuf {
    let tarball = dir.join("base.tar.gz");
    tar_gz(&full_busybox_root(dir), &tarball);
    tarball
}

/// Four Dockerfiles with the same first step (a race to build and commit
/// one snapshot), each then using a cache mount its own way. What a step
/// leaves in its layer never depends on what the cache holds, so the
/// images do not depend on the order the builds ran in.
fn dockerfiles() -> Vec<(&'static str, String)> {
    let first = "RUN mkdir /many && cd /many && for i in $(seq 1 1500); do echo $i > f$i; done";
    let cache = |id: &str, sharing: &str, out: &str| {
        format!(
            "RUN --mount=type=cache,id={id},target=/cache,sharing={sharing} \
             echo $$ >> /cache/log && sleep 0.3 && ls /cache > /dev/null && echo {out} > /{out}"
        )
    };
    vec![
        (
            "shared",
            format!("FROM {BASE}\n{first}\n{}\n", cache("one", "shared", "a")),
        ),
        (
            "private",
            format!("FROM {BASE}\n{first}\n{}\n", cache("one", "private", "b")),
        ),
        (
            "locked",
            format!(
                "FROM {BASE}\n{first}\n{}\n{}\n",
                cache("two", "locked", "c"),
                cache("one", "locked", "d")
            ),
        ),
        (
            "two-stages",
            format!(
                "FROM {BASE} AS deps\n{first}\n{}\n\
                 FROM {BASE}\nCOPY --from=deps /many/f7 /f7\n{}\n",
                cache("two", "shared", "e"),
                cache("one", "private", "f")
            ),
        ),
    ]
}

fn import_base(kiln: &Kiln, tarball: &Path) {
    run(kiln.cmd().env("SOURCE_DATE_EPOCH", "1700000000").args([
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        BASE,
    ]));
}

fn build(kiln: &Kiln, ctx: &Path, out: &Path) -> Command {
    let mut cmd = kiln.cmd();
    cmd.env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--output"])
        .arg(format!(
            "type=oci,dest={},rewrite-timestamp=true",
            out.display()
        ))
        .arg(ctx)
        .stdout(Stdio::null());
    cmd
}

fn manifest_digest(layout_tar: &Path) -> String {
    let index = run(Command::new("tar")
        .arg("-xOf")
        .arg(layout_tar)
        .arg("index.json"));
    let index: serde_json::Value = serde_json::from_slice(&index.stdout).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn eight_builds_at_once_and_prune_meanwhile_give_the_serial_images() {
    if need(Runc).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tarball = base_tarball(work.path());
    let mut contexts = Vec::new();
    for (name, dockerfile) in dockerfiles() {
        let ctx = work.path().join(name);
        fs_err::create_dir_all(&ctx).unwrap();
        fs_err::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        contexts.push((name, ctx));
    }

    // Each alone, in a store of its own.
    let mut expected = Vec::new();
    for (name, ctx) in &contexts {
        let alone = Kiln::new();
        import_base(&alone, &tarball);
        let out = work.path().join(format!("{name}-alone.tar"));
        let result = build(&alone, ctx, &out).output().unwrap();
        assert!(result.status.success(), "{name} alone:\n{}", text(&result));
        expected.push(manifest_digest(&out));
    }

    // Twice each, all at once, on one store, with prunes.
    let kiln = Kiln::new();
    import_base(&kiln, &tarball);
    let mut builds: Vec<(String, usize, PathBuf, Child, PathBuf)> = Vec::new();
    for round in 0..2 {
        for (i, (name, ctx)) in contexts.iter().enumerate() {
            let out = work.path().join(format!("{name}-{round}.tar"));
            let log = work.path().join(format!("{name}-{round}.log"));
            let child = build(&kiln, ctx, &out)
                .stderr(fs_err::File::create(&log).unwrap().into_parts().0)
                .spawn()
                .unwrap();
            builds.push((format!("{name} #{round}"), i, out, child, log));
        }
    }
    let mut prunes = 0;
    while builds.iter_mut().any(|b| b.3.try_wait().unwrap().is_none()) {
        let prune = kiln.cmd().arg("prune").output().unwrap();
        assert!(prune.status.success(), "prune:\n{}", text(&prune));
        prunes += 1;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(prunes > 0, "no prune ran while the builds did");
    for (label, i, out, mut child, log) in builds {
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{label} failed:\n{}",
            fs_err::read_to_string(&log).unwrap_or_default()
        );
        assert_eq!(
            manifest_digest(&out),
            expected[i],
            "{label} gave another image than built alone"
        );
    }
    kiln.ok(&["store", "verify"]);
    support::assert_store_clean(&kiln, &["active", "tmp"]);
}
