//! A multi-platform image as CI builds it (docs/CI.md): one runner per
//! platform, each with its own store, pushes its image by digest and
//! writes a metadata file; a merge job combines the digests with
//! `kiln imagetools create`. Against a real registry, read back by skopeo;
//! an arm64 image built under QEMU is pulled and run by docker.

mod support;

use std::path::Path;
use std::process::Command;

use kiln_image::Digest;
use kiln_testkit::need::{Arm64, Docker, Runc, Tool, need};
use kiln_testkit::{Registry, RegistryOptions};
use serde_json::Value;
use support::{Kiln, busybox, busybox_root_of, stdout, tar_gz, text};

/// `skopeo inspect --raw`: the exact bytes the registry has, or `None`
/// when it has nothing there.
fn raw(reference: &str) -> Option<Vec<u8>> {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// The tags of a repository, none when the registry knows none.
fn tags_of(repo: &str) -> Vec<String> {
    let out = Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repo}"),
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("404"), "{err}");
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn read_json(path: &Path) -> Value {
    json(&fs_err::read(path).unwrap())
}

/// `(os/arch, digest)` of each entry of an index.
fn entries(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            (
                format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Builds `FROM scratch` + COPY for `platform` in a store of its own
/// (COPY runs nothing, so arm64 needs no emulator), pushed by digest with
/// `output`; returns the metadata file's contents.
fn build_by_digest(work: &Path, platform: &str, content: &str, output: &str) -> Value {
    let runner = Kiln::new();
    let ctx = work.join(format!(
        "ctx-{}-{}",
        platform.replace('/', "-"),
        content.len()
    ));
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY app.txt /app.txt\n",
    )
    .unwrap();
    fs_err::write(ctx.join("app.txt"), content).unwrap();
    let metadata = ctx.join("metadata.json");
    runner.ok(&[
        "build",
        "--platform",
        platform,
        "--output",
        output,
        "--metadata-file",
        metadata.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    read_json(&metadata)
}

#[test]
fn per_platform_runners_push_by_digest_and_a_merge_job_combines_them() {
    if need(Runc).is_none() || need(Tool::Skopeo).is_none() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = format!("{}/multi/app", registry.host());

    // Two runners, two stores: each pushes its platform by digest, in
    // both spellings buildx takes.
    let amd = build_by_digest(
        work.path(),
        "linux/amd64",
        "app v1\n",
        &format!("type=registry,name={repo},push-by-digest=true"),
    );
    let arm = build_by_digest(
        work.path(),
        "linux/arm64",
        "app v1\n",
        &format!("type=image,name={repo},push=true,push-by-digest=true"),
    );
    let mut digests = Vec::new();
    for (meta, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
        assert_eq!(meta["image.name"], repo.as_str(), "{meta}");
        let descriptor = &meta["containerimage.descriptor"];
        assert_eq!(descriptor["digest"], digest.as_str(), "{meta}");
        assert_eq!(
            descriptor["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            descriptor["platform"],
            serde_json::json!({"architecture": arch, "os": "linux"})
        );
        // The registry has the manifest under its digest, with its config.
        let manifest = raw(&format!("{repo}@{digest}")).expect("pushed by digest");
        assert_eq!(Digest::of(&manifest).to_string(), digest);
        assert_eq!(descriptor["size"], manifest.len());
        assert_eq!(
            json(&manifest)["config"]["digest"],
            meta["containerimage.config.digest"],
            "{meta}"
        );
        digests.push(digest);
    }
    let (d_amd, d_arm) = (&digests[0], &digests[1]);
    // By digest only: the repository has no tag (Distribution answers a
    // tag list of a repository without tags with 404).
    assert_eq!(tags_of(&repo), Vec::<String>::new());

    // The merge job: a third machine, no store needed.
    let merger = Kiln::new();
    let merged_meta = work.path().join("merged.json");
    let multi = format!("{repo}:multi");
    merger.ok(&[
        "imagetools",
        "create",
        "-t",
        &multi,
        "--metadata-file",
        merged_meta.to_str().unwrap(),
        &format!("{repo}@{d_amd}"),
        &format!("{repo}@{d_arm}"),
    ]);
    let index_bytes = raw(&multi).expect("the index is pushed");
    let index = json(&index_bytes);
    let index_digest = Digest::of(&index_bytes).to_string();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        entries(&index),
        [
            ("linux/amd64".to_string(), d_amd.clone()),
            ("linux/arm64".to_string(), d_arm.clone())
        ]
    );
    let meta = read_json(&merged_meta);
    assert_eq!(meta["containerimage.digest"], index_digest.as_str());
    assert_eq!(meta["containerimage.descriptor"]["size"], index_bytes.len());
    assert_eq!(meta["image.name"], repo.as_str());

    // The sources in the other order, and a bare digest for one of them
    // (the only repository named): the same index, the same digest.
    let again = format!("{repo}:again");
    merger.ok(&[
        "imagetools",
        "create",
        "-t",
        &again,
        d_arm,
        &format!("{repo}@{d_amd}"),
    ]);
    assert_eq!(raw(&again).unwrap(), index_bytes);

    // inspect --raw prints exactly the bytes whose sha256 is the digest;
    // the summary lists the platforms.
    let out = merger.ok(&["imagetools", "inspect", "--raw", &multi]);
    assert_eq!(out.stdout, index_bytes);
    let summary = stdout(&merger.ok(&["imagetools", "inspect", &multi]));
    assert!(
        summary.contains(&format!("Digest:    {index_digest}")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("  Name:      {multi}@{d_arm}\n"))
            && summary.contains("  Platform:  linux/arm64\n"),
        "{summary}"
    );

    // --dry-run prints the index it would push and pushes nothing.
    let dry = format!("{repo}:dry");
    let out = merger.ok(&[
        "imagetools",
        "create",
        "--dry-run",
        "-t",
        &dry,
        &format!("{repo}@{d_amd}"),
        &format!("{repo}@{d_arm}"),
    ]);
    assert_eq!(out.stdout, [index_bytes.as_slice(), b"\n"].concat());
    assert_eq!(raw(&dry), None, "--dry-run pushed {dry}");

    // --append: an index of amd64 alone, then arm64 added to it, is the
    // index of both.
    let grown = format!("{repo}:grown");
    merger.ok(&[
        "imagetools",
        "create",
        "-t",
        &grown,
        &format!("{repo}@{d_amd}"),
    ]);
    assert_eq!(entries(&json(&raw(&grown).unwrap())).len(), 1);
    merger.ok(&[
        "imagetools",
        "create",
        "--append",
        "-t",
        &grown,
        &format!("{repo}@{d_arm}"),
    ]);
    assert_eq!(raw(&grown).unwrap(), index_bytes);

    // Another amd64 image beside the first: refused, naming both.
    let other = build_by_digest(
        work.path(),
        "linux/amd64",
        "app v2, another amd64 image\n",
        &format!("type=registry,name={repo},push-by-digest=true"),
    );
    let d_other = other["containerimage.digest"].as_str().unwrap();
    assert_ne!(d_other, d_amd);
    let err = merger.fails(&[
        "imagetools",
        "create",
        "-t",
        &format!("{repo}:clash"),
        &format!("{repo}@{d_amd}"),
        &format!("{repo}@{d_arm}"),
        &format!("{repo}@{d_other}"),
    ]);
    assert!(
        err.contains(&format!("{repo}@{d_amd}"))
            && err.contains(&format!("{repo}@{d_other}"))
            && err.contains("linux/amd64"),
        "{err}"
    );
    assert_eq!(raw(&format!("{repo}:clash")), None);
    // So is appending one of a platform the index has.
    let err = merger.fails(&[
        "imagetools",
        "create",
        "--append",
        "-t",
        &grown,
        &format!("{repo}@{d_other}"),
    ]);
    assert!(err.contains(d_amd) && err.contains(d_other), "{err}");

    // A source the registry lacks is named.
    let missing = format!("{repo}@{}", Digest::of(b"nothing"));
    let err = merger.fails(&["imagetools", "create", "-t", &multi, &missing]);
    assert!(err.contains(&missing), "{err}");

    // Into another repository of the same registry, annotated: the images
    // are linked, not uploaded.
    let elsewhere = format!("{}/released/app:1", registry.host());
    let out = merger.ok(&[
        "imagetools",
        "create",
        "-t",
        &elsewhere,
        "--annotation",
        "index:org.opencontainers.image.description=both platforms",
        "--annotation",
        "manifest-descriptor[linux/arm64]:com.example.note=arm",
        &multi,
    ]);
    let log = text(&out);
    assert!(log.contains("mounted from multi/app"), "{log}");
    assert!(log.contains("0 uploaded"), "{log}");
    let released = json(&raw(&elsewhere).unwrap());
    assert_eq!(
        released["annotations"]["org.opencontainers.image.description"],
        "both platforms"
    );
    assert_eq!(
        released["manifests"][1]["annotations"]["com.example.note"],
        "arm"
    );
    assert_eq!(entries(&released), entries(&index));
    for digest in [d_amd, d_arm] {
        let host = registry.host();
        assert!(raw(&format!("{host}/released/app@{digest}")).is_some());
    }

    // One runner building both platforms pushes their index by digest;
    // the metadata file names each platform's manifest. A lone index
    // source is pushed as it is, so its tag has the same digest.
    let both = build_by_digest(
        work.path(),
        "linux/amd64,linux/arm64",
        "app v1\n",
        &format!("type=registry,name={repo},push-by-digest=true"),
    );
    let d_both = both["containerimage.digest"].as_str().unwrap();
    let both_bytes = raw(&format!("{repo}@{d_both}")).expect("the index is pushed by digest");
    let both_index = json(&both_bytes);
    assert_eq!(
        both["containerimage.descriptor"],
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d_both,
            "size": both_bytes.len(),
        })
    );
    for (platform, digest) in entries(&both_index) {
        assert_eq!(
            both[format!("containerimage.digest/{platform}")],
            digest.as_str(),
            "{both}"
        );
        let manifest = json(&raw(&format!("{repo}@{digest}")).unwrap());
        assert_eq!(
            both[format!("containerimage.config.digest/{platform}")],
            manifest["config"]["digest"]
        );
    }
    assert!(both.get("containerimage.config.digest").is_none(), "{both}");
    // Still no tag but the merge job's.
    let mut tags = tags_of(&repo);
    tags.sort();
    assert_eq!(tags, ["again", "grown", "multi"]);
    let retagged = format!("{repo}:retagged");
    merger.ok(&[
        "imagetools",
        "create",
        "-t",
        &retagged,
        &format!("{repo}@{d_both}"),
    ]);
    assert_eq!(raw(&retagged).unwrap(), both_bytes);

    // From another registry the images are copied: the same index there.
    let Some(second) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let copied = format!("{}/mirror/app:multi", second.host());
    let out = merger.ok(&["imagetools", "create", "-t", &copied, &multi]);
    assert!(text(&out).contains("uploaded"), "{}", text(&out));
    assert_eq!(
        raw(&copied).unwrap(),
        index_bytes,
        "a copy keeps the digest"
    );
    pulled_whole(&copied);
}

/// The copied image is whole: kiln pulls every platform of it.
fn pulled_whole(reference: &str) {
    let puller = Kiln::new();
    puller.ok(&["pull", "--all-platforms", reference]);
    puller.ok(&["store", "verify"]);
}

/// A push needs a name: `-t`, or `name=` in the output. Checked before
/// anything is built.
#[test]
fn a_push_by_digest_without_a_name_is_refused_before_building() {
    let kiln = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    fs_err::write(ctx.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let err = kiln.fails(&[
        "build",
        "--output",
        "type=registry,push-by-digest=true",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(
        err.contains("pushing needs a name: give one with -t/--tag or name= in --output"),
        "{err}"
    );
    // buildx reads --output as one CSV record: a quoted value inside a
    // field is refused, with the way to write it.
    let err = kiln.fails(&[
        "build",
        "--output",
        r#"type=registry,name="a/b,a/c""#,
        ctx.path().to_str().unwrap(),
    ]);
    assert!(
        err.contains(r#"quote the whole field: "name=a,b""#),
        "{err}"
    );
    // imagetools create needs somewhere to push, or --dry-run.
    let err = kiln.fails(&["imagetools", "create", "localhost:5000/a@sha256:0000"]);
    assert!(err.contains("give -t/--tag, or --dry-run"), "{err}");
}

/// The whole CI path with a RUN step on each platform: arm64's runs under
/// QEMU on this amd64 runner, each runner pushes by digest, the merge job
/// writes one tag, and docker pulls and runs each platform of it.
#[test]
fn an_arm64_image_built_under_qemu_runs_in_docker_from_the_merged_tag() {
    if need(Runc).is_none() || need(Docker).is_none() {
        return;
    }
    let Some(arm64_busybox) = need(Arm64) else {
        return;
    };
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = format!("{}/qemu/app", registry.host());
    let mut digests = Vec::new();
    for (platform, busybox) in [("linux/amd64", busybox()), ("linux/arm64", arm64_busybox)] {
        // One runner: its own store, its base imported for its platform.
        let dir = work.path().join(platform.replace('/', "-"));
        let tarball = dir.join("base.tar.gz");
        tar_gz(&busybox_root_of(&busybox, &dir), &tarball);
        let runner = Kiln::new();
        runner.ok(&[
            "import",
            tarball.to_str().unwrap(),
            "--platform",
            platform,
            "--tag",
            "kiln.local/qemu-base:1",
        ]);
        let ctx = dir.join("ctx");
        fs_err::create_dir_all(&ctx).unwrap();
        fs_err::write(
            ctx.join("Dockerfile"),
            "FROM kiln.local/qemu-base:1\nRUN uname -m > /arch && echo \"built on $(uname -m)\"\n",
        )
        .unwrap();
        let metadata = dir.join("metadata.json");
        let out = runner
            .cmd()
            .args(["build", "--platform", platform, "--output"])
            .arg(format!("type=registry,name={repo},push-by-digest=true"))
            .arg("--metadata-file")
            .arg(&metadata)
            .arg(&ctx)
            .output()
            .unwrap();
        let log = text(&out);
        assert!(out.status.success(), "{platform}: {log}");
        let arch = if platform.ends_with("arm64") {
            "aarch64"
        } else {
            "x86_64"
        };
        assert!(
            log.contains(&format!("built on {arch}")),
            "{platform}: {log}"
        );
        let digest = read_json(&metadata)["containerimage.digest"]
            .as_str()
            .unwrap()
            .to_string();
        digests.push(format!("{repo}@{digest}"));
    }
    let tag = format!("{repo}:multi");
    let merger = Kiln::new();
    let mut args = vec!["imagetools", "create", "-t", &tag];
    args.extend(digests.iter().map(String::as_str));
    merger.ok(&args);

    for (platform, arch) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
        let pulled = Command::new("docker")
            .args(["pull", "--platform", platform, &tag])
            .output()
            .unwrap();
        assert!(
            pulled.status.success(),
            "docker pull {platform}: {}",
            text(&pulled)
        );
        let ran = Command::new("docker")
            .args(["run", "--rm", "--platform", platform, &tag, "cat", "/arch"])
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "docker run {platform}: {}",
            text(&ran)
        );
        assert_eq!(stdout(&ran).trim(), arch, "{platform}");
    }
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
}
