//! Kaniko's place (#12): kiln's own image in `docker run` with docker's
//! default security (root inside, no `--privileged`, default capabilities
//! and seccomp: no mounts, no namespaces) builds a multi-stage Dockerfile
//! with RUN and COPY and pushes it; the digest file is the registry's; the
//! `--tar-path` archive loads in docker and the image runs; a second
//! container, a fresh runner with nothing of the first, takes the RUN step
//! from the registry cache instead of running it.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use kiln_testkit::need::{Tool, need};
use kiln_testkit::{Registry, RegistryOptions};
use support::{Kiln, full_busybox_root, run, stdout, tar_gz, text};

/// A busybox base with every applet, pushed to `name`.
fn push_base(dir: &Path, name: &str) {
    let tarball = dir.join("base.tar.gz");
    tar_gz(&full_busybox_root(dir), &tarball);
    let seeder = Kiln::new();
    seeder.ok(&["import", tarball.to_str().unwrap(), "--tag", name]);
    seeder.ok(&["push", name]);
}

/// One Kaniko job in a fresh container of kiln's image: the context
/// mounted read-only, an empty output directory, nothing else shared.
fn kaniko_job(image: &str, ctx: &Path, out: &Path, registry: &str) -> Output {
    fs_err::create_dir_all(out).unwrap();
    Command::new("docker")
        .args(["run", "--rm", "--network", "host"])
        .arg("-v")
        .arg(format!("{}:/workspace:ro", ctx.display()))
        .arg("-v")
        .arg(format!("{}:/out", out.display()))
        .arg(image)
        .args([
            "--context=dir:///workspace",
            "--dockerfile=Dockerfile",
            &format!("--destination={registry}/e2e/app:1"),
            "--cache=true",
            &format!("--cache-repo={registry}/e2e/cache"),
            "--reproducible",
            "--digest-file=/out/digest",
            "--tar-path=/out/image.tar",
        ])
        .output()
        .unwrap()
}

#[test]
fn kilns_image_builds_and_pushes_in_a_container_without_privileges() {
    let Some(image) = support::kiln_image() else {
        return;
    };
    if need(Tool::Skopeo).is_none() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let host = registry.host();
    let work = tempfile::tempdir().unwrap();
    let base = format!("{host}/e2e/base:1");
    push_base(work.path(), &base);
    let ctx = work.path().join("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(ctx.join("app.txt"), "hello from an unprivileged build\n").unwrap();
    fs_err::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS build\n\
             RUN mkdir /out && printf 'RUN-STEP-\\122AN\\n' && seq 1 100 > /out/numbers\n\
             COPY app.txt /out/app.txt\n\
             FROM {base}\n\
             COPY --from=build /out /app\n\
             CMD [\"cat\", \"/app/app.txt\"]\n"
        ),
    )
    .unwrap();

    let first = kaniko_job(&image.name, &ctx, &work.path().join("out1"), &host);
    let log = text(&first);
    assert!(first.status.success(), "the first job failed:\n{log}");
    assert!(log.contains("isolation: chroot"), "{log}");
    assert!(log.contains("RUN-STEP-RAN"), "the step did not run:\n{log}");

    // The digest file is the registry's.
    let digest = fs_err::read_to_string(work.path().join("out1/digest")).unwrap();
    let pushed = stdout(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{host}/e2e/app:1"),
    ])));
    assert_eq!(digest.trim(), pushed.trim());

    // The archive loads, and the image runs.
    let loaded = stdout(&run(Command::new("docker").args([
        "load",
        "-i",
        work.path().join("out1/image.tar").to_str().unwrap(),
    ])));
    let name = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("no image loaded: {loaded}"))
        .trim()
        .to_string();
    let ran = stdout(&run(Command::new("docker").args(["run", "--rm", &name])));
    assert_eq!(ran, "hello from an unprivileged build\n");
    let _ = Command::new("docker").args(["rmi", &name]).output();

    // A fresh runner: another container, nothing of the first but the
    // registry. The RUN step comes from the cache.
    let second = kaniko_job(&image.name, &ctx, &work.path().join("out2"), &host);
    let log = text(&second);
    assert!(second.status.success(), "the second job failed:\n{log}");
    assert!(!log.contains("RUN-STEP-RAN"), "the step ran again:\n{log}");
    let again = fs_err::read_to_string(work.path().join("out2/digest")).unwrap();
    assert_eq!(again, digest, "a reproducible rebuild from the cache");
}

/// A normal user inside such a container (`docker run --user`) cannot
/// build rootless: docker's seccomp profile refuses user namespaces. kiln
/// says so and what works there, before it makes anything.
#[test]
fn a_user_in_a_container_is_told_that_user_namespaces_are_refused() {
    let Some(image) = support::kiln_image() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    for isolation in ["rootless", "auto"] {
        let out = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--user",
                "1000:1000",
                "--tmpfs",
                "/tmp:mode=1777",
            ])
            .args(["-e", "HOME=/tmp", "--entrypoint", "/kaniko/kiln"])
            .arg("-v")
            .arg(format!("{}:/workspace:ro", ctx.display()))
            .arg(&image.name)
            .args(["build", "--isolation", isolation, "/workspace"])
            .output()
            .unwrap();
        let said = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "--isolation {isolation}:\n{said}"
        );
        assert!(
            said.contains("user namespace") && said.contains("--isolation chroot"),
            "--isolation {isolation}:\n{said}"
        );
        assert!(!said.contains("panicked"), "{said}");
    }
}
