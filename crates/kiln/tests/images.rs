//! The image verbs against real peers: a Distribution registry, skopeo and
//! Docker. Round trips must keep digests; faults must not break transfers.

mod support;

use kiln_testkit::need::{Docker, Tool, need};
use kiln_testkit::{Fault, FaultProxy, Faults, Registry, RegistryOptions, Rule};
use std::process::Command;
use std::time::Duration;
use support::{Kiln, base64_encode, rootfs_tarball, run, stdout};

fn registry() -> Option<Registry> {
    Registry::start(RegistryOptions::default())
}

#[test]
fn import_push_prune_pull_export_keeps_digests() {
    if need(Tool::Skopeo).is_none() || need(Docker).is_none() {
        return;
    }
    let Some(registry) = registry() else {
        return;
    };
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    let name = format!("{}/round/trip:1", registry.host());

    let imported = stdout(&kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", &name]))
        .trim()
        .to_string();
    assert!(imported.starts_with("sha256:"), "{imported}");
    kiln.ok(&["push", &name]);

    // skopeo reads what kiln pushed, digest for digest.
    let inspect = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Digest"], imported);

    kiln.ok(&["rmi", &name]);
    let pruned = stdout(&kiln.ok(&["prune"]));
    assert!(pruned.contains("Deleted 3 blobs"), "{pruned}");
    assert_eq!(
        kiln.image_digest(&format!("{}/round/trip", registry.host()), "1"),
        None
    );

    let pulled = stdout(&kiln.ok(&["pull", &name]));
    assert!(pulled.contains(&format!("Digest: {imported}")), "{pulled}");
    assert_eq!(
        kiln.image_digest(&format!("{}/round/trip", registry.host()), "1")
            .as_deref(),
        Some(imported.as_str())
    );

    // OCI layout, directory and tar: skopeo reads both with the same digest.
    let oci_dir = work.path().join("oci");
    kiln.ok(&[
        "export",
        &name,
        "--output",
        &format!("type=oci,dest={}", oci_dir.display()),
    ]);
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:1", oci_dir.display()),
    ]));
    assert_eq!(
        format!("sha256:{}", kiln_image::Digest::of(&raw.stdout).hex()),
        imported
    );
    let oci_tar = work.path().join("image-oci.tar");
    kiln.ok(&[
        "export",
        &name,
        "--output",
        &format!("type=oci,dest={}", oci_tar.display()),
    ]);
    run(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", oci_tar.display())]));

    // Exported in another compression: the layer is converted (skopeo
    // reads it), the stored image is left as it was.
    let zstd_dir = work.path().join("oci-zstd");
    kiln.ok(&[
        "export",
        &name,
        "--output",
        &format!("type=oci,dest={},compression=zstd", zstd_dir.display()),
    ]);
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:1", zstd_dir.display()),
    ]));
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:1", zstd_dir.display()),
        &format!("dir:{}", work.path().join("zstd-copy").display()),
    ]));
    assert_eq!(
        kiln.image_digest(&format!("{}/round/trip", registry.host()), "1")
            .as_deref(),
        Some(imported.as_str())
    );

    // A second store loads the layout back: same digest.
    let other = Kiln::new();
    let loaded = stdout(&other.ok(&["load", oci_tar.to_str().unwrap()]));
    assert!(loaded.contains("Loaded image: "), "{loaded}");
    assert_eq!(
        other
            .image_digest(&format!("{}/round/trip", registry.host()), "1")
            .as_deref(),
        Some(imported.as_str())
    );

    kiln.ok(&["store", "verify"]);

    let archive = work.path().join("image-docker.tar");
    kiln.ok(&[
        "export",
        &name,
        "--output",
        &format!("type=docker,dest={}", archive.display()),
    ]);
    run(Command::new("docker").args(["load", "-i"]).arg(&archive));
    let out = run(Command::new("docker").args(["run", "--rm", &name, "/bin/cat", "/hello.txt"]));
    assert_eq!(stdout(&out), "hello from kiln\n");
    let _ = Command::new("docker").args(["rmi", "-f", &name]).output();
}

#[test]
fn what_skopeo_and_docker_push_kiln_pulls() {
    if need(Tool::Skopeo).is_none() || need(Docker).is_none() {
        return;
    }
    let Some(registry) = registry() else {
        return;
    };
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();

    // skopeo copies an OCI layout made by the testkit into the registry.
    let image = kiln_testkit::TestImage::small();
    let layout = work.path().join("layout");
    image.write_oci_layout(&layout, "v1").unwrap();
    let name = format!("{}/from/skopeo:v1", registry.host());
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{name}"),
    ]));
    let pulled = stdout(&kiln.ok(&["pull", &name]));
    let skopeo_digest = {
        let out = run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{name}"),
        ]));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["Digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(pulled.contains(&skopeo_digest), "{pulled}");
    kiln.ok(&["store", "verify"]);

    // docker imports a rootfs and pushes it (loopback registries need no TLS).
    let tarball = rootfs_tarball(work.path(), 0);
    let name = format!("{}/from/docker:v1", registry.host());
    run(Command::new("docker")
        .args(["import"])
        .arg(&tarball)
        .arg(&name));
    run(Command::new("docker").args(["push", &name]));
    let out = stdout(&kiln.ok(&["pull", &name]));
    assert!(out.contains("Digest: sha256:"), "{out}");
    let exported = work.path().join("again.tar");
    kiln.ok(&[
        "export",
        &name,
        "--output",
        &format!("type=docker,dest={}", exported.display()),
    ]);
    let _ = Command::new("docker").args(["rmi", "-f", &name]).output();
    run(Command::new("docker").args(["load", "-i"]).arg(&exported));
    let out = run(Command::new("docker").args(["run", "--rm", &name, "/bin/cat", "/hello.txt"]));
    assert_eq!(stdout(&out), "hello from kiln\n");
    let _ = Command::new("docker").args(["rmi", "-f", &name]).output();
}

#[test]
fn a_300_mb_image_survives_a_flaky_registry() {
    let Some(registry) = registry() else {
        return;
    };
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 300 << 20);
    // Import under a local name first: the pull faults target the layer blob.
    let imported = stdout(&kiln.ok(&[
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        "local/big:1",
        "--compression",
        "none",
    ]))
    .trim()
    .to_string();
    let inspect: serde_json::Value =
        serde_json::from_slice(&kiln.ok(&["inspect", "local/big:1"]).stdout).unwrap();
    let layer = format!(
        "/blobs/{}",
        inspect["Manifest"]["layers"][0]["digest"].as_str().unwrap()
    );
    let faults = Faults::new()
        // Pushes: a 500 and a 429 on blob uploads, a request dropped mid-body.
        .rule(
            Rule::new(Fault::Status {
                status: 500,
                retry_after: None,
            })
            .method("POST")
            .path("/blobs/uploads/"),
        )
        .rule(
            Rule::new(Fault::Status {
                status: 429,
                retry_after: Some("1".into()),
            })
            .method("PATCH")
            .path("/blobs/uploads/"),
        )
        .rule(
            Rule::new(Fault::DropRequest { after: 40 << 20 })
                .method("PATCH")
                .path("/blobs/uploads/")
                .skip(1),
        )
        // Pulls: the layer's connection dropped mid-blob, then a stall past
        // the idle timeout on the resumed request (the first rule that
        // matches a request takes it, so the stall sees the second GET
        // first), and a 503 on the manifest.
        .rule(
            Rule::new(Fault::DropResponse { after: 50 << 20 })
                .method("GET")
                .path(&layer),
        )
        .rule(
            Rule::new(Fault::StallResponse {
                after: 120 << 20,
                duration: Duration::from_secs(8),
            })
            .method("GET")
            .path(&layer),
        )
        .rule(
            Rule::new(Fault::Status {
                status: 503,
                retry_after: None,
            })
            .method("GET")
            .path("/manifests/"),
        );
    let proxy = FaultProxy::start(&registry.host(), faults);
    let name = format!("{}/flaky/big:1", proxy.host());
    kiln.ok(&["tag", "local/big:1", &name]);
    let push = kiln
        .cmd()
        .args(["push", &name, "--registry-idle-timeout", "3s"])
        .output()
        .unwrap();
    let push_log = support::text(&push);
    assert!(push.status.success(), "{push_log}");
    assert!(
        push_log.contains("retry"),
        "retries should show:\n{push_log}"
    );

    // A fresh store pulls it back through the same faults.
    let fresh = Kiln::new();
    let pull = fresh
        .cmd()
        .args(["pull", &name, "--registry-idle-timeout", "3s"])
        .output()
        .unwrap();
    let pull_log = support::text(&pull);
    assert!(pull.status.success(), "{pull_log}");
    assert!(
        pull_log.contains(&format!("Digest: {imported}")),
        "{pull_log}"
    );
    assert!(
        pull_log.contains("retry") || pull_log.contains("resuming"),
        "{pull_log}"
    );
    let fired: Vec<u32> = (0..6).map(|i| proxy.fired(i)).collect();
    assert!(
        fired.iter().all(|n| *n >= 1),
        "every fault should have fired once: {fired:?}"
    );
    let verify = stdout(&fresh.ok(&["store", "verify"]));
    assert!(verify.contains(": ok"), "{verify}");
}

#[test]
fn basic_auth_comes_from_the_docker_config() {
    let Some(registry) = Registry::start(RegistryOptions {
        htpasswd: Some(("kiln".into(), "s3cret".into())),
        ..Default::default()
    }) else {
        return;
    };
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    let name = format!("{}/private/app:1", registry.host());
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", &name]);

    let no_creds = tempfile::tempdir().unwrap();
    let err = kiln
        .cmd()
        .env("DOCKER_CONFIG", no_creds.path())
        .args(["push", &name])
        .output()
        .unwrap();
    assert!(!err.status.success());
    let err_text = String::from_utf8_lossy(&err.stderr);
    assert!(
        err_text.contains("401") || err_text.to_lowercase().contains("unauthorized"),
        "{err_text}"
    );

    let config = tempfile::tempdir().unwrap();
    let auth = base64_encode(b"kiln:s3cret");
    fs_err::write(
        config.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let out = kiln
        .cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["push", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::text(&out));
    let other = Kiln::new();
    let out = other
        .cmd()
        .env("DOCKER_CONFIG", config.path())
        .args(["pull", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::text(&out));
}

#[test]
fn errors_are_clear_and_leave_nothing_behind() {
    let Some(registry) = registry() else {
        return;
    };
    let kiln = Kiln::new();
    let err = kiln.fails(&["pull", &format!("{}/no/such:image", registry.host())]);
    assert!(
        err.contains("manifest unknown") || err.contains("404"),
        "{err}"
    );
    assert!(!err.contains("retry"), "a 404 is not retried:\n{err}");

    let err = kiln.fails(&["push", "not/in/store:1"]);
    assert!(
        err.contains("not in the store") || err.contains("no such image"),
        "{err}"
    );
    let err = kiln.fails(&["tag", "Bad:Reference", "x"]);
    assert!(err.contains("invalid reference"), "{err}");

    let work = tempfile::tempdir().unwrap();
    let not_tar = work.path().join("not.tar");
    fs_err::write(&not_tar, "").unwrap();
    let err = kiln.fails(&["import", not_tar.to_str().unwrap(), "--tag", "x:1"]);
    assert!(err.contains("empty"), "{err}");

    // A failed export leaves no file under the destination name.
    let tarball = rootfs_tarball(work.path(), 0);
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", "local/app:1"]);
    let err = kiln.fails(&[
        "export",
        "local/app:1",
        "--output",
        "type=docker,dest=/nonexistent/dir/img.tar",
    ]);
    assert!(err.contains("/nonexistent/dir"), "{err}");
    let verify = stdout(&kiln.ok(&["store", "verify"]));
    assert!(verify.contains(": ok"), "{verify}");
}

#[test]
fn import_from_stdin_tag_images_inspect_rmi() {
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    let out = kiln
        .cmd()
        .args([
            "import",
            "-",
            "--tag",
            "local/stdin:1",
            "--platform",
            "linux/arm64",
            "-m",
            "from a pipe",
        ])
        .stdin(fs_err::File::open(&tarball).unwrap().into_parts().0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::text(&out));
    kiln.ok(&["tag", "local/stdin:1", "local/other:2"]);
    let images = stdout(&kiln.ok(&["images"]));
    assert!(
        images.contains("local/stdin")
            && images.contains("local/other")
            && images.contains("linux/arm64"),
        "{images}"
    );
    let inspect: serde_json::Value =
        serde_json::from_slice(&kiln.ok(&["inspect", "local/other:2"]).stdout).unwrap();
    assert_eq!(inspect["Config"]["architecture"], "arm64");
    assert_eq!(inspect["Config"]["history"][0]["comment"], "from a pipe");
    assert_eq!(
        inspect["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    kiln.ok(&["rmi", "local/stdin:1", "local/other:2"]);
    assert!(
        kiln.fails(&["rmi", "local/other:2"])
            .contains("no such image")
    );
    let q = stdout(&kiln.ok(&["images", "-q"]));
    assert!(q.trim().is_empty(), "{q}");
}

#[test]
fn two_kilns_pull_into_one_store_at_once() {
    let Some(registry) = registry() else {
        return;
    };
    let seed = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 20 << 20);
    let names: Vec<String> = (0..2)
        .map(|i| format!("{}/same/image:{i}", registry.host()))
        .collect();
    seed.ok(&["import", tarball.to_str().unwrap(), "--tag", &names[0]]);
    seed.ok(&["tag", &names[0], &names[1]]);
    seed.ok(&["push", &names[0]]);
    seed.ok(&["push", &names[1]]);

    let shared = Kiln::new();
    let children: Vec<_> = names
        .iter()
        .map(|n| shared.cmd().args(["pull", n]).spawn().unwrap())
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let verify = stdout(&shared.ok(&["store", "verify"]));
    assert!(
        verify.contains("2 tags") && verify.contains(": ok"),
        "{verify}"
    );
}

#[test]
fn json_progress_is_one_object_per_line() {
    let Some(registry) = registry() else {
        return;
    };
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    let name = format!("{}/json/progress:1", registry.host());
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", &name]);
    let out = kiln
        .cmd()
        .args(["--progress", "json", "push", &name])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(events.iter().any(|e| e["event"] == "done"), "{stderr}");
}

#[test]
fn an_export_is_the_same_bytes_to_a_file_a_redirect_and_a_pipe() {
    // To a file (dest= or stdout redirected to one) the kernel copies the
    // blobs (copy_file_range); to a pipe kiln does: the bytes must agree.
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 3 << 20);
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", "local/copy:1"]);
    for kind in ["oci", "docker"] {
        let dest = work.path().join(format!("{kind}.tar"));
        kiln.ok(&[
            "export",
            "local/copy:1",
            "--output",
            &format!("type={kind},dest={}", dest.display()),
        ]);
        let to_file = fs_err::read(&dest).unwrap();
        let spec = format!("type={kind},dest=-");
        let piped = kiln
            .ok(&["export", "local/copy:1", "--output", &spec])
            .stdout;
        let redirected = work.path().join(format!("{kind}-redirected.tar"));
        let out = kiln
            .cmd()
            .args(["export", "local/copy:1", "--output", &spec])
            .stdout(fs_err::File::create(&redirected).unwrap().into_parts().0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", support::text(&out));
        assert!(to_file.len() > 3 << 20, "{kind}: {}", to_file.len());
        assert!(piped == to_file, "{kind}: the pipe's bytes differ");
        assert!(
            fs_err::read(&redirected).unwrap() == to_file,
            "{kind}: the redirect's bytes differ"
        );
    }
}
