//! `kiln build` as a CI job drives it: a base pulled from a real registry,
//! every output type, `--push`, `--iidfile`, secrets, `--target`, and
//! errors that name the Dockerfile line. (What the images contain is the
//! BuildKit conformance suite's business; this is about the CLI.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::need::{Runc, need};
use kiln_testkit::{Registry, RegistryOptions};
use support::{Kiln, rootfs_tarball, run, text};

/// A registry holding `<host>/base/busybox:1`, and a kiln whose store
/// does not have it (the build must pull it).
fn base_in_registry(registry: &Registry) -> String {
    let seeder = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    let name = format!("{}/base/busybox:1", registry.host());
    seeder.ok(&["import", tarball.to_str().unwrap(), "--tag", &name]);
    seeder.ok(&["push", &name]);
    name
}

fn context(dir: &Path, dockerfile: &str) {
    fs_err::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs_err::write(dir.join("app.txt"), "app v1\n").unwrap();
}

/// A build on a pulled base: the registry holding the base, a kiln whose
/// store lacks it, and a work dir whose `ctx/` holds `dockerfile(base)`.
struct OnPulledBase {
    registry: Registry,
    kiln: Kiln,
    work: tempfile::TempDir,
    ctx: PathBuf,
}

/// `None` (the test skips) where steps cannot run or there is no registry.
fn on_pulled_base(dockerfile: impl FnOnce(&str) -> String) -> Option<OnPulledBase> {
    need(Runc)?;
    let registry = Registry::start(RegistryOptions::default())?;
    let base = base_in_registry(&registry);
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    fs_err::create_dir(&ctx).unwrap();
    context(&ctx, &dockerfile(&base));
    Some(OnPulledBase {
        registry,
        kiln: Kiln::new(),
        work,
        ctx,
    })
}

#[test]
fn a_pulled_base_every_output_a_push_and_an_iidfile() {
    let Some(OnPulledBase {
        registry,
        kiln,
        work,
        ctx,
    }) = on_pulled_base(|base| {
        format!(
            "FROM {base} AS build\nRUN echo built > /built.txt\n\
             FROM {base}\nCOPY app.txt /app/\nCOPY --from=build /built.txt /app/\nCMD [\"cat\", \"/app/app.txt\"]\n"
        )
    })
    else {
        return;
    };
    let pushed = format!("{}/built/app:1", registry.host());
    let iid = work.path().join("iid");
    let oci = work.path().join("image.oci.tar");
    let docker = work.path().join("image.docker.tar");
    let local = work.path().join("rootfs");
    let out = kiln.ok(&[
        "build",
        "-t",
        "kiln.local/app:1",
        "--iidfile",
        iid.to_str().unwrap(),
        "--output",
        &format!("type=oci,dest={}", oci.display()),
        "--output",
        &format!("type=docker,dest={}", docker.display()),
        "--output",
        &format!("type=local,dest={}", local.display()),
        ctx.to_str().unwrap(),
    ]);
    let log = text(&out);
    // The pull went through the build's own view, one line per blob.
    assert!(log.contains("pull blob sha256:"), "{log}");
    assert!(log.contains(": done, "), "{log}");
    // Two stages on one base: one pull (each blob once).
    let mut pulled: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("pull blob sha256:"))
        .collect();
    let all = pulled.len();
    pulled.sort();
    pulled.dedup();
    assert_eq!(all, pulled.len(), "{log}");
    // The summary.
    assert!(log.contains("STEP"), "{log}");
    assert!(
        log.contains("4 steps: 3 run, 0 cached, 1 config only"),
        "{log}"
    );

    // --iidfile holds the image's digest, as buildx writes it.
    let digest = fs_err::read_to_string(&iid).unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // -t tags in the store.
    assert!(kiln.image_digest("kiln.local/app", "1").is_some());
    // --push pushes every -t name (as buildx does); all from the cache now.
    let out = kiln.ok(&["build", "-t", &pushed, "--push", ctx.to_str().unwrap()]);
    assert!(text(&out).contains("3 cached"), "{}", text(&out));
    let puller = Kiln::new();
    puller.ok(&["pull", &pushed]);
    let inspect = puller.ok(&["inspect", &pushed]);
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        inspect["Config"]["config"]["Cmd"],
        serde_json::json!(["cat", "/app/app.txt"]),
        "{inspect}"
    );
    // type=oci: an OCI layout tarball; type=docker: a docker archive.
    let oci_list = run(Command::new("tar").arg("tf").arg(&oci));
    let oci_list = String::from_utf8_lossy(&oci_list.stdout);
    assert!(oci_list.contains("oci-layout") && oci_list.contains("index.json"));
    let docker_list = run(Command::new("tar").arg("tf").arg(&docker));
    assert!(String::from_utf8_lossy(&docker_list.stdout).contains("manifest.json"));
    // type=local: the image's files.
    assert_eq!(
        fs_err::read_to_string(local.join("app/app.txt")).unwrap(),
        "app v1\n"
    );
    assert_eq!(
        fs_err::read_to_string(local.join("app/built.txt")).unwrap(),
        "built\n"
    );
    // kiln load takes the OCI tarball back.
    let loader = Kiln::new();
    loader.ok(&["load", oci.to_str().unwrap()]);
}

#[test]
fn the_outputs_compression_is_the_built_layers() {
    let Some(OnPulledBase {
        registry: _registry,
        kiln,
        work,
        ctx,
    }) = on_pulled_base(|base| {
        format!("FROM {base}\nRUN echo built > /built.txt\nCOPY app.txt /app/\n")
    })
    else {
        return;
    };
    let ctx = ctx.to_str().unwrap();
    let oci = work.path().join("oci");
    let spec = format!(
        "type=oci,dest={},compression=zstd,compression-level=5",
        oci.display()
    );
    kiln.ok(&["build", "--output", &spec, ctx]);
    let json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
        oci.join("blobs/sha256").join(digest)
    };
    let index = json(&oci.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    // The base's layer as pulled; the two the build made, zstd.
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ]
    );
    let head = fs_err::read(blob(&manifest["layers"][2]["digest"])).unwrap();
    assert_eq!(head[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");

    // Two outputs, two encodings: each comes out as it asks, the second
    // from the cache, its layers converted (and the media types Docker's).
    let zstd_again = work.path().join("zstd.oci.tar");
    let gzip_docker = work.path().join("gzip.oci.tar");
    let out = kiln.ok(&[
        "build",
        "--output",
        &format!(
            "type=oci,dest={},compression=zstd,compression-level=5",
            zstd_again.display()
        ),
        "--output",
        &format!(
            "type=oci,dest={},compression=gzip,oci-mediatypes=false",
            gzip_docker.display()
        ),
        ctx,
    ]);
    assert!(text(&out).contains("2 cached"), "{}", text(&out));
    let layer_types = |tar: &Path| -> Vec<String> {
        let dir = work.path().join(format!(
            "unpacked-{}",
            tar.file_name().unwrap().to_str().unwrap()
        ));
        fs_err::create_dir_all(&dir).unwrap();
        run(Command::new("tar").arg("xf").arg(tar).arg("-C").arg(&dir));
        let blob = |digest: &serde_json::Value| {
            let digest = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
            dir.join("blobs/sha256").join(digest)
        };
        let index = json(&dir.join("index.json"));
        let manifest = json(&blob(&index["manifests"][0]["digest"]));
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(layer_types(&zstd_again)[1..], types[1..]);
    assert_eq!(
        layer_types(&gzip_docker),
        [
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ]
    );
    // A bad level fails before anything is built.
    let bad = format!("type=oci,dest={},compression-level=12", oci.display());
    let err = kiln.fails(&["build", "--output", &bad, ctx]);
    assert!(err.contains("gzip level 12 is out of range 0..=9"), "{err}");
    assert!(!err.contains("STEP"), "nothing was built: {err}");
}

#[test]
fn secrets_targets_and_build_args_from_the_command_line() {
    let Some(OnPulledBase {
        registry: _registry,
        kiln,
        work,
        ctx,
    }) = on_pulled_base(|base| {
        format!(
            "FROM {base} AS first\nARG GREETING=hi\n\
             RUN --mount=type=secret,id=token cat /run/secrets/token > /seen; echo \"$GREETING\" > /greeting\n\
             FROM {base} AS never\nRUN exit 1\n"
        )
    })
    else {
        return;
    };
    let secret = work.path().join("token");
    fs_err::write(&secret, "s3cr3t").unwrap();
    let local = work.path().join("out");
    let out = kiln.ok(&[
        "build",
        "--target",
        "first",
        "--build-arg",
        "GREETING=hello",
        "--secret",
        &format!("id=token,src={}", secret.display()),
        "--output",
        &format!("type=local,dest={}", local.display()),
        ctx.to_str().unwrap(),
    ]);
    // The stage after the target was not built.
    assert!(!text(&out).contains("exit 1"), "{}", text(&out));
    assert_eq!(
        fs_err::read_to_string(local.join("seen")).unwrap(),
        "s3cr3t"
    );
    assert_eq!(
        fs_err::read_to_string(local.join("greeting")).unwrap(),
        "hello\n"
    );
    // The secret is in no layer: not under /run/secrets in the output.
    assert!(!local.join("run/secrets/token").exists());

    // A target that does not exist, and a secret that is not given.
    let err = kiln.fails(&["build", "--target", "nope", ctx.to_str().unwrap()]);
    assert!(err.contains("nope"), "{err}");
    let err = kiln.fails(&[
        "build",
        "--target",
        "first",
        "--secret",
        "id=token,src=/does/not/exist",
        ctx.to_str().unwrap(),
    ]);
    assert!(err.contains("/does/not/exist"), "{err}");
}

#[test]
fn a_missing_base_names_the_from_line() {
    if need(Runc).is_none() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    context(
        work.path(),
        &format!(
            "# a comment\nFROM {}/no/such:1\nRUN true\n",
            registry.host()
        ),
    );
    let err = kiln.fails(&["build", work.path().to_str().unwrap()]);
    assert!(err.contains("Dockerfile:2: "), "{err}");
    assert!(err.contains(" 2 | FROM "), "{err}");
    assert!(err.contains("no/such"), "{err}");
    // The cause is said once, not repeated by the report.
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert_eq!(line.matches("manifest unknown").count(), 1, "{line}");
}

/// A RUN for a platform the machine cannot execute fails before anything
/// runs, naming the platform, the missing binfmt handler and the package;
/// never an `exec format error` from inside the step. Steps that do not
/// run (COPY, a RUN of another platform that can) are not held up.
#[test]
fn a_run_for_a_platform_without_emulation_fails_before_it_starts() {
    if need(Runc).is_none() {
        return;
    }
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    context(
        work.path(),
        "FROM scratch\nCOPY app.txt /\nRUN --mount=type=cache,target=/c true\n",
    );
    let ctx = work.path().to_str().unwrap();
    // An architecture no QEMU is registered for on any machine.
    let err = kiln.fails(&["build", "--platform", "linux/kilnarch", ctx]);
    assert!(err.contains("Dockerfile:3: "), "{err}");
    assert!(
        err.contains("cannot run linux/kilnarch programs: no QEMU binfmt handler for kilnarch"),
        "{err}"
    );
    assert!(
        err.contains("/proc/sys/fs/binfmt_misc/qemu-kilnarch"),
        "{err}"
    );
    assert!(err.contains("install qemu-user-static"), "{err}");
    assert!(!err.contains("exec format error"), "{err}");
    let err = kiln.fails(&["build", "--platform", "windows/amd64", ctx]);
    assert!(err.contains("cannot run windows/amd64 programs"), "{err}");
    // arm64 where this machine has no handler for it: the same error.
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        let err = kiln.fails(&["build", "--platform", "linux/arm64", ctx]);
        assert!(
            err.contains("/proc/sys/fs/binfmt_misc/qemu-aarch64 is missing or disabled"),
            "{err}"
        );
    }
}

/// The CI job: one runner builds, pushes and writes the cache; a fresh
/// runner (another store, the base pulled again) takes every step from it.
#[test]
fn a_fresh_runner_builds_from_the_registry_cache() {
    let Some(OnPulledBase {
        registry,
        kiln,
        ctx,
        work: _work,
    }) = on_pulled_base(|base| {
        format!("FROM {base}\nCOPY app.txt /app/\nRUN cat /app/app.txt > /app/copy.txt\n")
    })
    else {
        return;
    };
    let cache = format!("{}/built/app:cache", registry.host());
    let image = format!("{}/built/app:1", registry.host());
    let ctx = ctx.to_str().unwrap();
    let out = kiln.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &image,
        "--push",
        "--cache-to",
        &format!("type=registry,ref={cache},mode=max"),
        ctx,
    ]);
    let log = text(&out);
    assert!(
        log.contains(&format!(
            "cache {cache}: 2 entries written, 2 layers uploaded"
        )),
        "{log}"
    );
    let fresh = Kiln::new();
    let out = fresh.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &image,
        "--cache-from",
        &cache,
        ctx,
    ]);
    let log = text(&out);
    assert!(
        log.contains(&format!("cache {cache}: 2 entries for linux/")),
        "{log}"
    );
    assert!(log.contains("2 steps: 0 run, 2 cached"), "{log}");

    // A cache kiln cannot write to fails the build, naming it; a spec it
    // cannot read fails before anything is built.
    let err = fresh.fails(&[
        "build",
        "--cache-to",
        "type=registry,ref=127.0.0.1:1/no/cache",
        ctx,
    ]);
    assert!(
        err.contains("writing the build cache to 127.0.0.1:1/no/cache"),
        "{err}"
    );
    let err = fresh.fails(&["build", "--cache-to", "type=gha", ctx]);
    assert!(
        err.contains("cache type=gha: type=gha is not supported"),
        "{err}"
    );
}

/// A pre-built base stage in CI: `kiln stage-key` gives the tag without
/// building (the base not even pulled), a first runner builds the stage
/// and pushes it under that tag, a fresh runner takes it instead of
/// running the stage. An app edit keeps the key, a requirements edit
/// changes it.
#[test]
fn stage_key_and_stage_images_from_the_command_line() {
    let Some(OnPulledBase {
        registry,
        kiln,
        work,
        ctx,
    }) = on_pulled_base(|base| {
        format!(
            "FROM {base} AS deps\nCOPY requirements.txt /req/\nRUN cat /req/requirements.txt > /req/installed\n\
             FROM deps AS app\nCOPY app.txt /app/\n"
        )
    })
    else {
        return;
    };
    fs_err::write(ctx.join("requirements.txt"), "numpy==2.0\n").unwrap();
    let ctx_arg = ctx.to_str().unwrap();
    let stage_key = |kiln: &Kiln| {
        let out = kiln.ok(&["stage-key", "deps", ctx_arg]);
        let key = support::stdout(&out);
        assert_eq!(key.lines().count(), 1, "{key}");
        let key = key.trim_end().to_string();
        assert!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        key
    };
    let key = stage_key(&kiln);

    let repo = format!("{}/built/deps", registry.host());
    let image = format!("{repo}:{key}");
    let flag = format!("deps={repo}");
    let out = kiln.ok(&[
        "build",
        "--stage-image",
        &flag,
        "-t",
        "kiln.local/app:1",
        ctx_arg,
    ]);
    let log = text(&out);
    assert!(
        log.contains(&format!(
            "stage deps: no image {image} yet, building the stage"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("stage deps: pushed image {image}")),
        "{log}"
    );
    assert!(log.contains("3 steps: 3 run, 0 cached"), "{log}");

    // A fresh runner: the same key, and the image instead of the stage.
    let fresh = Kiln::new();
    assert_eq!(stage_key(&fresh), key);
    let out = fresh.ok(&["build", "--stage-image", &flag, ctx_arg]);
    let log = text(&out);
    assert!(
        log.contains(&format!(
            "stage deps: using image {image}; its steps do not run"
        )),
        "{log}"
    );
    assert!(log.contains("1 step: 1 run, 0 cached"), "{log}");
    assert!(!log.contains("/req/installed"), "{log}");

    fs_err::write(ctx.join("app.txt"), "app v2\n").unwrap();
    assert_eq!(stage_key(&fresh), key);
    fs_err::write(ctx.join("requirements.txt"), "numpy==2.1\n").unwrap();
    assert_ne!(stage_key(&fresh), key);

    // One line per platform with several (FROM scratch: any platform).
    let scratch = work.path().join("scratch.Dockerfile");
    fs_err::write(&scratch, "FROM scratch AS deps\nCOPY requirements.txt /\n").unwrap();
    let out = fresh.ok(&[
        "stage-key",
        "deps",
        "-f",
        scratch.to_str().unwrap(),
        "--platform",
        "linux/amd64,linux/arm64",
        ctx_arg,
    ]);
    let lines: Vec<String> = support::stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("linux/amd64 "), "{lines:?}");
    assert!(lines[1].starts_with("linux/arm64 "), "{lines:?}");

    // Errors name the flag, and the stages there are.
    let err = fresh.fails(&["build", "--stage-image", &format!("dpes={repo}"), ctx_arg]);
    assert!(
        err.contains(&format!(
            r#"--stage-image dpes={repo}: the Dockerfile has no stage named "dpes" (its stages: deps, app)"#
        )),
        "{err}"
    );
    let err = fresh.fails(&["build", "--stage-image", &format!("deps={repo}:1"), ctx_arg]);
    assert!(
        err.contains("give a repository without a tag or digest"),
        "{err}"
    );
    let err = fresh.fails(&["stage-key", "nope", ctx_arg]);
    assert!(
        err.contains(r#"the Dockerfile has no stage named "nope""#),
        "{err}"
    );
}

/// A download cache that outlives the runner: with `mounts=true` a RUN
/// cache mount's contents go into the registry cache, and a fresh runner's
/// step (another one: its argument differs) finds them in its mount.
#[test]
fn a_fresh_runner_finds_what_the_last_one_left_in_a_cache_mount() {
    let Some(OnPulledBase {
        registry,
        kiln,
        ctx,
        work: _work,
    }) = on_pulled_base(|base| {
        format!(
            "FROM {base}\nARG RUNNER\n\
             RUN --mount=type=cache,id=dl,target=/dl sh -c \
             'echo \"found: $(cat /dl/f 2>/dev/null || echo nothing)\"; echo \"left by $RUNNER\" > /dl/f'\n"
        )
    })
    else {
        return;
    };
    let cache = format!("{}/built/app:mounts", registry.host());
    let ctx = ctx.to_str().unwrap();
    let out = kiln.ok(&[
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "RUNNER=a",
        "--cache-to",
        &format!("type=registry,ref={cache},mounts=true"),
        ctx,
    ]);
    let log = text(&out);
    assert!(log.contains("found: nothing"), "{log}");
    assert!(log.contains("; 1 cache mounts, 1 uploaded"), "{log}");

    let fresh = Kiln::new();
    let out = fresh.ok(&[
        "build",
        "--progress",
        "plain",
        "--build-arg",
        "RUNNER=b",
        "--cache-from",
        &cache,
        ctx,
    ]);
    let log = text(&out);
    assert!(
        log.contains(&format!("cache {cache}: 1 cache mounts")),
        "{log}"
    );
    assert!(
        log.contains("restoring cache mount /dl (id \"dl\")"),
        "{log}"
    );
    assert!(log.contains("found: left by a"), "{log}");
}

#[test]
fn an_oci_tar_begun_during_the_build_is_the_export_after_it() {
    // One type=oci file output: the image's finished bottom layers go into
    // it while the last step still runs. The file is, byte for byte, what
    // `kiln export` writes of the same image afterwards; a build that fails
    // leaves nothing beside the outputs.
    let Some(OnPulledBase {
        registry: _registry,
        kiln,
        work,
        ctx,
    }) = on_pulled_base(|base| {
        format!(
            "FROM {base}\nRUN head -c 3000000 /dev/urandom > /one\nCOPY app.txt /app/\n\
             RUN sleep 2 && echo two > /two\n"
        )
    })
    else {
        return;
    };
    let outputs = work.path().join("out");
    fs_err::create_dir(&outputs).unwrap();
    let built = outputs.join("built.tar");
    let out = kiln.ok(&[
        "build",
        "-t",
        "kiln.local/ahead:1",
        "--output",
        &format!("type=oci,dest={}", built.display()),
        ctx.to_str().unwrap(),
    ]);
    let log = text(&out);
    assert!(
        log.contains("blobs of the output were written while the build ran"),
        "{log}"
    );
    let exported = work.path().join("exported.tar");
    kiln.ok(&[
        "export",
        "kiln.local/ahead:1",
        "--output",
        &format!("type=oci,dest={}", exported.display()),
    ]);
    assert!(
        fs_err::read(&built).unwrap() == fs_err::read(&exported).unwrap(),
        "the tar written during the build is not the export's"
    );
    Kiln::new().ok(&["load", built.to_str().unwrap()]);

    fs_err::write(
        ctx.join("Dockerfile"),
        fs_err::read_to_string(ctx.join("Dockerfile"))
            .unwrap()
            .replace("echo two > /two", "false"),
    )
    .unwrap();
    let failed = kiln
        .cmd()
        .args(["build", "--output"])
        .arg(format!(
            "type=oci,dest={}",
            outputs.join("failed.tar").display()
        ))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let left: Vec<String> = fs_err::read_dir(&outputs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["built.tar"], "{}", text(&failed));
}
