//! `kiln executor`: Kaniko's command line. Every flag read into its plan
//! (`--print-plan`, no build), then builds as a Kaniko CI job runs them:
//! pushed with digest files, a fresh runner on the registry cache, a
//! docker archive, tar and git contexts, kiln installed as `executor`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kiln_testkit::need::{Runc, Tool, need};
use kiln_testkit::{Registry, RegistryOptions};
use serde_json::{Value, json};
use support::{Kiln, rootfs_tarball, run, text};

/// The plan of `kiln executor ARGS --print-plan`.
fn plan(args: &[&str]) -> Value {
    plan_with_env(args, &[])
}

fn plan_with_env(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = Kiln::new().cmd();
    cmd.arg("executor").args(args).arg("--print-plan");
    cmd.env_remove("KANIKO_REGISTRY_MIRROR")
        .env_remove("KANIKO_REGISTRY_MAP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The error of `kiln executor ARGS`, which must exit 1 as Kaniko does.
fn refused(args: &[&str]) -> String {
    let out = Kiln::new()
        .cmd()
        .arg("executor")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn build_flags(plan: &Value) -> Vec<String> {
    plan["build"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Whether `flag VALUE` is among the plan's `kiln build` flags.
fn has(plan: &Value, flag: &str, value: &str) -> bool {
    build_flags(plan)
        .windows(2)
        .any(|w| w[0] == flag && w[1] == value)
}

fn notes(plan: &Value) -> String {
    plan["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

const D: &str = "reg.example/team/app:1";

/// Every Kaniko flag: what kiln makes of it.
#[test]
fn every_kaniko_flag_reads_into_its_plan() {
    type Check = fn(&Value) -> bool;
    let rows: &[(&[&str], Check)] = &[
        // The defaults: /workspace/, its Dockerfile, pushed to each destination.
        (&["-d", D], |p| {
            p["context"] == json!({"kind": "dir", "path": "/workspace/"})
                && p["dockerfile"] == "Dockerfile"
                && has(p, "--tag", D)
                && has(p, "--output", "type=image,push=true")
                && p["notes"] == json!([])
        }),
        (&["-f", "build/Dockerfile.prod", "--no-push"], |p| {
            p["dockerfile"] == "build/Dockerfile.prod"
        }),
        (&["--dockerfile=x.Dockerfile", "--no-push"], |p| {
            p["dockerfile"] == "x.Dockerfile"
        }),
        (&["-c", "dir:///src", "--no-push"], |p| {
            p["context"] == json!({"kind": "dir", "path": "/src"})
        }),
        (&["--context", "/src/app", "--no-push"], |p| {
            p["context"] == json!({"kind": "dir", "path": "/src/app"})
        }),
        (&["--context=tar://ctx.tar.gz", "--no-push"], |p| {
            p["context"] == json!({"kind": "tar", "file": "ctx.tar.gz"})
        }),
        (&["-c", "tar://stdin", "--no-push"], |p| {
            p["context"] == json!({"kind": "stdin"})
        }),
        (
            &[
                "-c",
                "git://github.com/acme/app.git#refs/heads/dev#0a1b2c",
                "--no-push",
            ],
            |p| {
                p["context"]
                    == json!({"kind": "git", "url": "https://github.com/acme/app.git",
                              "reference": "refs/heads/dev", "commit": "0a1b2c"})
            },
        ),
        (&["-c", "git:///srv/app.git#v2", "--no-push"], |p| {
            p["context"]
                == json!({"kind": "git", "url": "file:///srv/app.git", "reference": "v2", "commit": null})
        }),
        (&["--context-sub-path", "services/api", "--no-push"], |p| {
            p["context_sub_path"] == "services/api"
        }),
        // Repeatable, with or without `=`, and tagged :latest when untagged.
        (&["-d", D, "--destination=reg.example/team/app"], |p| {
            has(p, "--tag", D) && has(p, "--tag", "reg.example/team/app")
        }),
        (&["--no-push", "-d", D], |p| {
            has(p, "--tag", D) && !build_flags(p).iter().any(|f| f.contains("push=true"))
        }),
        (&["--no-push=false", "-d", D], |p| {
            has(p, "--output", "type=image,push=true")
        }),
        (&["--no-push", "--tar-path", "out/image.tar"], |p| {
            has(p, "--output", "type=docker,dest=out/image.tar")
        }),
        (&["--no-push", "--tar-path", "a,b.tar"], |p| {
            has(p, "--output", "type=docker,\"dest=a,b.tar\"")
        }),
        (&["--no-push", "--tarPath", "old.tar"], |p| {
            has(p, "--output", "type=docker,dest=old.tar")
        }),
        (&["--no-push", "--oci-layout-path", "layout"], |p| {
            has(p, "--output", "type=oci,dest=layout")
        }),
        (&["-d", D, "--digest-file", "/out/digest"], |p| {
            p["digest_file"] == "/out/digest"
        }),
        (
            &["-d", D, "--image-name-with-digest-file", "/out/names"],
            |p| p["image_name_digest_file"] == "/out/names",
        ),
        (
            &["-d", D, "--image-name-tag-with-digest-file=/out/tags"],
            |p| p["image_name_tag_digest_file"] == "/out/tags",
        ),
        (
            &["--no-push", "--build-arg", "A=1", "--build-arg=B=two words"],
            |p| has(p, "--build-arg", "A=1") && has(p, "--build-arg", "B=two words"),
        ),
        // `KEY` alone: from the environment, empty when unset (Kaniko's rule).
        (
            &[
                "--no-push",
                "--build-arg",
                "FROM_ENV",
                "--build-arg",
                "UNSET_HERE",
            ],
            |p| has(p, "--build-arg", "FROM_ENV=env value") && has(p, "--build-arg", "UNSET_HERE="),
        ),
        (&["--no-push", "--target", "runtime"], |p| {
            has(p, "--target", "runtime")
        }),
        (
            &[
                "--no-push",
                "--label",
                "org.opencontainers.image.source=x",
                "--label",
                "b=2",
            ],
            |p| has(p, "--label", "org.opencontainers.image.source=x") && has(p, "--label", "b=2"),
        ),
        (&["--no-push", "--custom-platform", "linux/arm64"], |p| {
            has(p, "--platform", "linux/arm64")
        }),
        (&["--no-push", "--customPlatform=linux/arm/v7"], |p| {
            has(p, "--platform", "linux/arm/v7")
        }),
        (&["--no-push", "--skip-unused-stages"], |p| {
            p["notes"] == json!([])
        }),
        (&["--no-push", "--skip-unused-stages=false"], |p| {
            notes(p).contains("only the stages the target needs")
        }),
        (&["-d", D, "--reproducible"], |p| {
            has(p, "--build-arg", "SOURCE_DATE_EPOCH=0")
                && has(p, "--output", "type=image,push=true,rewrite-timestamp=true")
        }),
        (
            &[
                "-d",
                D,
                "--reproducible",
                "--build-arg",
                "SOURCE_DATE_EPOCH=7",
            ],
            |p| {
                has(p, "--build-arg", "SOURCE_DATE_EPOCH=7")
                    && !has(p, "--build-arg", "SOURCE_DATE_EPOCH=0")
            },
        ),
        // The cache: kiln's registry cache in <first destination>/cache,
        // Kaniko's two weeks, a cache that cannot be written a warning.
        (&["-d", D, "--cache"], |p| {
            has(
                p,
                "--cache-from",
                "type=registry,ref=reg.example/team/app/cache:buildcache",
            ) && has(
                p,
                "--cache-to",
                "type=registry,ref=reg.example/team/app/cache:buildcache,mode=max,ttl=1209600s,ignore-error=true",
            )
        }),
        (&["-d", D], |p| {
            !build_flags(p).iter().any(|f| f.starts_with("--cache"))
        }),
        (
            &["-d", D, "--cache=true", "--cache-repo", "reg.example/cache"],
            |p| {
                has(
                    p,
                    "--cache-from",
                    "type=registry,ref=reg.example/cache:buildcache",
                )
            },
        ),
        (
            &[
                "-d",
                D,
                "--cache=true",
                "--cache-repo",
                "reg.example/cache:main",
            ],
            |p| {
                has(
                    p,
                    "--cache-from",
                    "type=registry,ref=reg.example/cache:main",
                )
            },
        ),
        (
            &["--no-push", "--cache", "--cache-repo", "oci:/cache/layout"],
            |p| {
                has(p, "--cache-from", "type=local,src=/cache/layout")
                    && has(
                        p,
                        "--cache-to",
                        "type=local,dest=/cache/layout,mode=max,ttl=1209600s,ignore-error=true",
                    )
            },
        ),
        (&["-d", D, "--cache", "--cache-ttl", "6h"], |p| {
            build_flags(p).iter().any(|f| f.contains(",ttl=21600s,"))
        }),
        (&["-d", D, "--cache", "--cache-ttl=1.5h"], |p| {
            build_flags(p).iter().any(|f| f.contains(",ttl=5400s,"))
        }),
        (&["-d", D, "--cache", "--no-push-cache"], |p| {
            build_flags(p).iter().any(|f| f == "--cache-from")
                && !build_flags(p).iter().any(|f| f == "--cache-to")
        }),
        (&["-d", D, "--cache-dir", "/cache"], |p| {
            notes(p).contains("--cache-dir")
        }),
        (&["-d", D, "--cache-copy-layers"], |p| {
            notes(p).contains("--cache-copy-layers")
        }),
        (&["-d", D, "--cache-run-layers=false"], |p| {
            notes(p).contains("--cache-run-layers=false")
        }),
        (&["-d", D, "--cache-run-layers"], |p| {
            p["notes"] == json!([])
        }),
        (
            &["-d", D, "--compression", "zstd", "--compression-level", "3"],
            |p| {
                has(
                    p,
                    "--output",
                    "type=image,push=true,compression=zstd,compression-level=3",
                )
            },
        ),
        (&["-d", D, "--compression=gzip"], |p| {
            has(p, "--output", "type=image,push=true,compression=gzip")
        }),
        // The encoding reaches every output, the store's copy too.
        (
            &[
                "--no-push",
                "-d",
                D,
                "--compression",
                "zstd",
                "--tar-path",
                "t.tar",
            ],
            |p| {
                has(p, "--output", "type=image,compression=zstd")
                    && has(p, "--output", "type=docker,dest=t.tar,compression=zstd")
            },
        ),
        (&["-d", D, "--insecure"], |p| {
            p["insecure_registries"] == json!(["reg.example"])
        }),
        (&["-d", D, "--skip-tls-verify"], |p| {
            p["insecure_registries"] == json!(["reg.example"])
        }),
        (
            &[
                "-d",
                D,
                "--cache",
                "--cache-repo",
                "cache.example/c",
                "--insecure",
            ],
            |p| p["insecure_registries"] == json!(["reg.example", "cache.example"]),
        ),
        (&["-d", D, "--insecure-pull"], |p| {
            p["insecure_registries"] == json!(["*"])
        }),
        (&["-d", D, "--skip-tls-verify-pull"], |p| {
            p["insecure_registries"] == json!(["*"])
        }),
        (
            &[
                "-d",
                D,
                "--skip-tls-verify-registry",
                "a.example",
                "--skip-tls-verify-registry",
                "b.example:5000",
            ],
            |p| p["insecure_registries"] == json!(["a.example", "b.example:5000"]),
        ),
        // kiln's own global flag, spelt as Kaniko's.
        (&["-d", D, "--insecure-registry", "plain.example"], |p| {
            p["insecure_registries"] == json!([])
        }),
        (
            &[
                "-d",
                D,
                "--registry-certificate",
                "reg.example=/certs/ca.pem",
            ],
            |p| p["ca_files"] == json!(["/certs/ca.pem"]),
        ),
        // Pull mirrors: Docker Hub's, then any registry's, in Kaniko's order.
        (&["-d", D, "--registry-mirror", "mirror.example"], |p| {
            has(p, "--registry-mirror", "docker.io=mirror.example")
                && !build_flags(p).contains(&"--skip-default-registry-fallback".into())
        }),
        (
            &[
                "-d",
                D,
                "--registry-mirror=m1.example/hub",
                "--registry-map",
                "index.docker.io=m0.example;quay.io=q.example:5000/proxy",
                "--registry-map=gcr.io=g1.example;g2.example",
                "--skip-default-registry-fallback",
            ],
            |p| {
                let mirrors: Vec<String> = build_flags(p)
                    .windows(2)
                    .filter(|w| w[0] == "--registry-mirror")
                    .map(|w| w[1].clone())
                    .collect();
                mirrors
                    == [
                        "index.docker.io=m0.example",
                        "quay.io=q.example:5000/proxy",
                        "gcr.io=g1.example",
                        "gcr.io=g2.example",
                        "docker.io=m1.example/hub",
                    ]
                    && build_flags(p).contains(&"--skip-default-registry-fallback".into())
            },
        ),
        // An empty map is nothing (`--registry-map=$VAR`, unset).
        (&["-d", D, "--registry-map="], |p| {
            !build_flags(p).contains(&"--registry-mirror".into())
        }),
        (&["-d", D, "--skip-default-registry-fallback"], |p| {
            notes(p).contains("--skip-default-registry-fallback: no --registry-mirror")
                && !build_flags(p).contains(&"--skip-default-registry-fallback".into())
        }),
        // The watchdog: on with kiln build's defaults, kiln's flags passed on.
        (&["-d", D], |p| {
            !build_flags(p).iter().any(|f| f.ends_with("-timeout"))
        }),
        (
            &[
                "-d",
                D,
                "--stall-timeout",
                "30s",
                "--step-timeout=1h",
                "--retries",
                "2",
            ],
            |p| {
                has(p, "--stall-timeout", "30s")
                    && has(p, "--step-timeout", "1h")
                    && has(p, "--retries", "2")
            },
        ),
        (&["-d", D, "--push-retry", "7"], |p| {
            p["registry_attempts"] == 8
        }),
        (&["-d", D, "--image-download-retry=2"], |p| {
            p["registry_attempts"] == 3
        }),
        (&["-d", D], |p| p["registry_attempts"].is_null()),
        (
            &["-d", D, "--ignore-path", "/var/mail", "--ignore-path=/tmp"],
            |p| notes(p).contains("--ignore-path"),
        ),
        (&["-d", D, "--kaniko-dir", "/k"], |p| {
            notes(p).contains("--kaniko-dir")
        }),
        (&["-d", D, "--cleanup"], |p| {
            p["cleanup"] == true && !notes(p).contains("--cleanup")
        }),
        (&["-d", D], |p| p["cleanup"] == false),
        (&["-d", D, "--force"], |p| notes(p).contains("--force")),
        (&["-d", D, "-v", "debug"], |p| p["quiet"] == false),
        (&["-d", D, "--verbosity=warn", "--force"], |p| {
            p["quiet"] == true
        }),
        (&["-d", D, "--verbosity", "panic"], |p| p["quiet"] == true),
        (&["-d", D, "--log-format", "text"], |p| {
            p["progress"] == "plain"
        }),
        (&["-d", D, "--log-format=json"], |p| p["progress"] == "json"),
        (&["-d", D, "--log-format", "color"], |p| {
            p["progress"] == "auto"
        }),
        (&["-d", D], |p| p["progress"].is_null()),
        (&["-d", D, "--log-timestamp"], |p| {
            notes(p).contains("--log-timestamp")
        }),
        // Meaningless here: accepted, one line each.
        (&["-d", D, "--snapshot-mode=redo"], |p| {
            notes(p).contains("--snapshot-mode")
        }),
        (&["-d", D, "--use-new-run"], |p| {
            notes(p).contains("--use-new-run")
        }),
        (&["-d", D, "--single-snapshot"], |p| {
            notes(p).contains("--single-snapshot")
        }),
        (&["-d", D, "--compressed-caching=false"], |p| {
            notes(p).contains("--compressed-caching")
        }),
        // pflag's booleans: 1/0/t/f, and the last of a repeated flag wins.
        (
            &[
                "--no-push=1",
                "--cache=0",
                "--cache=t",
                "--cache-repo",
                "r.example/c",
            ],
            |p| {
                has(
                    p,
                    "--cache-from",
                    "type=registry,ref=r.example/c:buildcache",
                )
            },
        ),
    ];
    for (args, check) in rows {
        let p = plan_with_env(args, &[("FROM_ENV", "env value")]);
        assert!(
            check(&p),
            "{args:?} gave:\n{}",
            serde_json::to_string_pretty(&p).unwrap()
        );
    }
    let p = plan_with_env(
        &["-d", D, "--registry-map", "ghcr.io=flag.example"],
        &[
            ("KANIKO_REGISTRY_MAP", "ghcr.io=env.example"),
            ("KANIKO_REGISTRY_MIRROR", "hub.example"),
        ],
    );
    let mirrors: Vec<String> = build_flags(&p)
        .windows(2)
        .filter(|w| w[0] == "--registry-mirror")
        .map(|w| w[1].clone())
        .collect();
    assert_eq!(
        mirrors,
        [
            "ghcr.io=flag.example",
            "ghcr.io=env.example",
            "docker.io=hub.example"
        ],
        "{p}"
    );
    // One info line for each flag that changes nothing.
    let p = plan(&["-d", D, "--use-new-run", "--single-snapshot", "--force"]);
    assert_eq!(p["notes"].as_array().unwrap().len(), 3, "{p}");
}

/// Kaniko's own checks and the flags kiln cannot honour, each a clear
/// error and exit status 1.
#[test]
fn what_kaniko_refuses_and_what_kiln_cannot_do_fail_clearly() {
    for (args, says) in [
        (&[][..], "you must provide --destination, or use --no-push"),
        (
            &["--no-push", "--cache"][..],
            "specify cache repo with --cache-repo",
        ),
        (
            &["--no-push", "--image-name-with-digest-file", "f"][..],
            "you must provide --destination if setting --image-name-with-digest-file",
        ),
        (
            &["-d", D, "--cache", "--cache-ttl", "2w"][..],
            "--cache-ttl 2w",
        ),
        (
            &["-d", D, "--compression", "lz4"][..],
            "--compression lz4: gzip or zstd",
        ),
        (
            &["-d", D, "-v", "loud"][..],
            "--verbosity loud: one of panic",
        ),
        (&["-d", D, "--log-format", "xml"][..], "--log-format xml"),
        (
            &["-d", D, "--registry-certificate", "nohost"][..],
            "expected HOST=FILE",
        ),
        (
            &["-d", D, "--registry-map", "mirror.example"][..],
            "--registry-map mirror.example: expected REGISTRY=MIRROR",
        ),
        (
            &["-d", D, "--registry-map", "a b=mirror.example"][..],
            "\"a b\" is not a registry host",
        ),
        (
            &["-d", D, "--registry-mirror", "https://mirror.example"][..],
            "without a scheme",
        ),
        (
            &["-d", D, "--stall-timeout", "soon"][..],
            "--stall-timeout soon",
        ),
        (
            &[
                "-d",
                "reg.example/a@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ][..],
            "a tag, not a digest",
        ),
        (
            &["--no-push", "-c", "s3://bucket/ctx.tar.gz"][..],
            "a build context in an S3 bucket (s3://) is not supported by kiln",
        ),
        (
            &["--no-push", "-c", "gs://bucket/ctx.tar.gz"][..],
            "Google Cloud Storage bucket (gs://) is not supported",
        ),
        (
            &[
                "--no-push",
                "-c",
                "https://acct.blob.core.windows.net/c/ctx.tar.gz",
            ][..],
            "Azure Blob Storage container is not supported",
        ),
        (&["--no-push=maybe"][..], "\"maybe\" is not a boolean"),
    ] {
        let err = refused(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn an_unknown_flag_suggests_the_closest() {
    let err = refused(&["--destinaton", D]);
    assert!(
        err.contains("error: unknown flag --destinaton (did you mean --destination?)"),
        "{err}"
    );
    let err = refused(&["--cache-tll=1h"]);
    assert!(
        err.contains("unknown flag --cache-tll (did you mean --cache-ttl?)"),
        "{err}"
    );
}

/// Only the `executor` subcommand fails as Kaniko does: after global
/// options too, and not when the word is another command's argument.
#[test]
fn only_the_executor_subcommand_exits_as_kaniko() {
    let kiln = Kiln::new();
    let out = kiln
        .cmd()
        .args(["--progress", "plain", "executor", "--destinaton", D])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean --destination?"),
        "{}",
        text(&out)
    );
    let out = kiln
        .cmd()
        .args(["build", "--bogus", "-t", "executor", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// kiln installed as `/kaniko/executor`: a link named `executor` takes
/// Kaniko's command line with no subcommand.
fn as_executor(dir: &Path) -> PathBuf {
    let link = dir.join("executor");
    std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin("kiln"), &link).unwrap();
    link
}

#[test]
fn invoked_as_executor_it_takes_kanikos_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let executor = as_executor(dir.path());
    let out = Command::new(&executor)
        .args(["-d", D, "--cache", "--print-plan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(has(&p, "--tag", D), "{p}");
    let out = Command::new(&executor).arg("--no-pussh").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean --no-push?"),
        "{}",
        text(&out)
    );
    let out = Command::new(&executor).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--destination"));
}

/// A registry holding `<host>/base/busybox:1`.
fn base_in_registry(registry: &Registry) -> String {
    let seeder = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    let name = format!("{}/base/busybox:1", registry.host());
    seeder.ok(&["import", tarball.to_str().unwrap(), "--tag", &name]);
    seeder.ok(&["push", &name]);
    name
}

/// The Kaniko CI job: build, push, digest files, the registry cache; then
/// a fresh runner whose RUN comes from that cache.
#[test]
fn a_kaniko_job_pushes_writes_its_digest_files_and_a_fresh_runner_hits_the_cache() {
    if need(Runc).is_none() || need(Tool::Skopeo).is_none() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let base = base_in_registry(&registry);
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    fs_err::create_dir(&ctx).unwrap();
    fs_err::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo built > /built.txt\nCOPY app.txt /app/\n"),
    )
    .unwrap();
    fs_err::write(ctx.join("app.txt"), "app v1\n").unwrap();
    let image = format!("{}/team/app:1", registry.host());
    let digest_file = work.path().join("out/digest");
    let names_file = work.path().join("out/names");
    let tags_file = work.path().join("out/tags");
    let context = format!("dir://{}", ctx.display());
    let args = [
        "executor",
        "--context",
        &context,
        "--dockerfile",
        "Dockerfile",
        "--destination",
        &image,
        "--cache=true",
        "--digest-file",
        digest_file.to_str().unwrap(),
        "--image-name-with-digest-file",
        names_file.to_str().unwrap(),
        "--image-name-tag-with-digest-file",
        tags_file.to_str().unwrap(),
        "--label",
        "built.by=kaniko-job",
    ];
    let out = Kiln::new().ok(&args);
    let log = text(&out);
    assert!(log.contains("2 steps: 2 run, 0 cached"), "{log}");
    assert!(log.contains("/team/app/cache:buildcache"), "{log}");

    let digest = fs_err::read_to_string(&digest_file).unwrap();
    assert!(
        digest.starts_with("sha256:") && !digest.ends_with('\n'),
        "{digest:?}"
    );
    let inspect = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Labels"]["built.by"], "kaniko-job", "{info}");
    let repo = format!("{}/team/app", registry.host());
    assert_eq!(
        fs_err::read_to_string(&names_file).unwrap(),
        format!("{repo}@{digest}\n")
    );
    assert_eq!(
        fs_err::read_to_string(&tags_file).unwrap(),
        format!("{repo}:1@{digest}\n")
    );

    // A fresh runner: the RUN step comes from the registry cache.
    let fresh = Kiln::new();
    let out = fresh.ok(&args);
    let log = text(&out);
    assert!(log.contains("2 steps: 0 run, 2 cached"), "{log}");
    // Its digest file names what it pushed.
    let digest = fs_err::read_to_string(&digest_file).unwrap();
    let inspect = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Digest"], digest.as_str());
}

/// A CI job without a registry: `--no-push --tar-path`, a docker archive
/// named after the destination.
#[test]
fn no_push_with_a_tar_path_writes_a_docker_archive() {
    if need(Runc).is_none() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let base = base_in_registry(&registry);
    let work = tempfile::tempdir().unwrap();
    let ctx = scratch_context(work.path(), &format!("FROM {base}\nCOPY app.txt /app/\n"));
    let archive = work.path().join("image.tar");
    let digest_file = work.path().join("digest");
    let kiln = Kiln::new();
    kiln.ok(&[
        "executor",
        "-c",
        ctx.to_str().unwrap(),
        "-d",
        "reg.example/app:archived",
        "--no-push",
        "--tar-path",
        archive.to_str().unwrap(),
        "--digest-file",
        digest_file.to_str().unwrap(),
    ]);
    let manifest = run(Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("manifest.json"));
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!(["reg.example/app:archived"]));
    // Not pushed: the digest is the store's image.
    let digest = fs_err::read_to_string(&digest_file).unwrap();
    assert_eq!(
        kiln.image_digest("reg.example/app", "archived").as_deref(),
        Some(digest.as_str())
    );
}

/// A context with a Dockerfile that copies a file from it (no RUN, no
/// base image: the context is what is under test).
fn scratch_context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    fs_err::write(ctx.join("app.txt"), "from the context\n").unwrap();
    ctx
}

/// The digest `kiln executor ARGS --no-push -d NAME --digest-file` gives,
/// checked against the store's.
fn built_digest(kiln: &Kiln, args: &[&str], name: &str, stdin: Option<&Path>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let digest_file = dir.path().join("digest");
    let mut cmd = kiln.cmd();
    cmd.arg("executor")
        .args(args)
        .args(["--no-push", "-d", name, "--digest-file"])
        .arg(&digest_file);
    if let Some(file) = stdin {
        cmd.stdin(Stdio::from(
            fs_err::File::open(file).unwrap().into_parts().0,
        ));
    }
    let out = run(&mut cmd);
    let digest = fs_err::read_to_string(&digest_file).unwrap();
    let (repo, tag) = name.rsplit_once(':').unwrap();
    assert_eq!(
        kiln.image_digest(repo, tag).as_deref(),
        Some(digest.as_str()),
        "{}",
        text(&out)
    );
    digest
}

/// `tar://FILE` and `tar://stdin` give the image the same context as a
/// directory gives, and leave nothing behind in the store.
#[test]
fn a_tar_context_builds_as_its_directory_does() {
    if need(kiln_testkit::need::Root).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ctx = scratch_context(
        work.path(),
        "FROM scratch\nCOPY app.txt /app/\nCOPY Dockerfile /\n",
    );
    let tarball = work.path().join("ctx.tar.gz");
    run(Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&ctx)
        .arg("."));
    let kiln = Kiln::new();
    let from_dir = built_digest(
        &kiln,
        &["-c", ctx.to_str().unwrap()],
        "kiln.local/ctx:dir",
        None,
    );
    let context = format!("tar://{}", tarball.display());
    let from_tar = built_digest(&kiln, &["-c", &context], "kiln.local/ctx:tar", None);
    let from_stdin = built_digest(
        &kiln,
        &["-c", "tar://stdin"],
        "kiln.local/ctx:stdin",
        Some(&tarball),
    );
    // Same files, same layers; the config's created time may differ.
    let layers = |name: &str| {
        let out = kiln.ok(&["inspect", name]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Manifest"]["layers"].clone()
    };
    assert_eq!(layers("kiln.local/ctx:dir"), layers("kiln.local/ctx:tar"));
    assert_eq!(layers("kiln.local/ctx:dir"), layers("kiln.local/ctx:stdin"));
    let _ = (from_dir, from_tar, from_stdin);
    let left: Vec<_> = fs_err::read_dir(kiln.root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("executor-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `git:///PATH#REF` with `--context-sub-path`: the ref's tree, not the
/// default branch's.
#[test]
fn a_local_git_context_builds_the_ref_it_names() {
    if need(kiln_testkit::need::Root).is_none() {
        return;
    }
    let Some(_) = need(Tool::Git) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    fs_err::create_dir_all(repo.join("svc")).unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example"])
            .args(args));
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    fs_err::write(
        repo.join("svc/Dockerfile"),
        "FROM scratch\nCOPY app.txt /\n",
    )
    .unwrap();
    fs_err::write(repo.join("svc/app.txt"), "main\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "main"]);
    git(&["checkout", "--quiet", "-b", "feature"]);
    fs_err::write(repo.join("svc/app.txt"), "feature\n").unwrap();
    git(&["commit", "--quiet", "-am", "feature"]);
    git(&["checkout", "--quiet", "main"]);

    let kiln = Kiln::new();
    let at = |reference: &str, name: &str| {
        let context = format!("git://{}#{reference}", repo.display());
        built_digest(
            &kiln,
            &["-c", &context, "--context-sub-path", "svc"],
            name,
            None,
        )
    };
    at("refs/heads/feature", "kiln.local/git:feature");
    at("main", "kiln.local/git:main");
    let layer_of = |name: &str| {
        let out = kiln.ok(&["inspect", name]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Manifest"]["layers"][0]["digest"].clone()
    };
    assert_ne!(
        layer_of("kiln.local/git:feature"),
        layer_of("kiln.local/git:main"),
        "the two refs' app.txt differ"
    );
}

/// `busybox:kiln-mirror-test` of Docker Hub, as a seeder pushes it to
/// `registry` under `name`: rootfs tarballs of different sizes, so that
/// each place holds its own image. Its manifest digest.
fn seed(registry: &Registry, name: &str, extra_bytes: u64) -> String {
    let seeder = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), extra_bytes);
    let full = format!("{}/{name}", registry.host());
    seeder.ok(&["import", tarball.to_str().unwrap(), "--tag", &full]);
    seeder.ok(&["push", &full]);
    let (repo, tag) = full.rsplit_once(':').unwrap();
    seeder.image_digest(repo, tag).unwrap()
}

/// A loopback port nothing listens on: a mirror that is down.
fn dead_mirror() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// Pulls go to the mirrors first, in order: `--registry-mirror` for Docker
/// Hub (whose image the mirror holds under a prefix: Docker Hub itself is
/// never asked), `--registry-map` for another registry, falling back to it
/// past a dead mirror; with `--skip-default-registry-fallback` a build whose
/// mirrors all fail stops, naming each.
#[test]
fn pulls_go_to_the_mirrors_first_and_fall_back_unless_told_not_to() {
    let Some(origin) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let Some(mirror) = Registry::start(RegistryOptions::default()) else {
        return;
    };
    let hub_digest = seed(&mirror, "hub/library/busybox:kiln-mirror-test", 1000);
    let origin_digest = seed(&origin, "base/busybox:1", 0);
    let mirrored_digest = seed(&mirror, "proxy/base/busybox:1", 2000);
    let dead = dead_mirror();
    let build = |kiln: &Kiln, base: &str, flags: &[&str]| {
        let work = tempfile::tempdir().unwrap();
        let ctx = scratch_context(work.path(), &format!("FROM {base}\nCOPY app.txt /app/\n"));
        let mut cmd = kiln.cmd();
        cmd.args([
            "--registry-attempts",
            "1",
            "executor",
            "--no-push",
            "-d",
            "reg.example/app:1",
        ])
        .arg("-c")
        .arg(&ctx)
        .args(flags);
        cmd.output().unwrap()
    };

    // Docker Hub's image from its mirror, under the mirror's prefix; the
    // dead mirror before it is passed over.
    let kiln = Kiln::new();
    let hub_mirror = format!("{}/hub", mirror.host());
    let out = build(
        &kiln,
        "busybox:kiln-mirror-test",
        &["--registry-mirror", &dead, "--registry-mirror", &hub_mirror],
    );
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains(&format!("not from mirror {dead}")), "{log}");
    assert!(
        log.contains(&format!("pulled from mirror {hub_mirror}")),
        "{log}"
    );
    assert_eq!(
        kiln.image_digest("busybox", "kiln-mirror-test").as_deref(),
        Some(hub_digest.as_str())
    );

    // Another registry's image from its mapped mirror, not from itself.
    let kiln = Kiln::new();
    let base = format!("{}/base/busybox:1", origin.host());
    let map = format!("{}={}/proxy", origin.host(), mirror.host());
    let out = build(&kiln, &base, &["--registry-map", &map]);
    assert!(out.status.success(), "{}", text(&out));
    let repo = format!("{}/base/busybox", origin.host());
    assert_eq!(
        kiln.image_digest(&repo, "1").as_deref(),
        Some(mirrored_digest.as_str())
    );

    // Its mirror down: the registry itself.
    let kiln = Kiln::new();
    let map = format!("{}={dead}", origin.host());
    let out = build(&kiln, &base, &["--registry-map", &map]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("not from mirror {dead}")),
        "{}",
        text(&out)
    );
    assert_eq!(
        kiln.image_digest(&repo, "1").as_deref(),
        Some(origin_digest.as_str())
    );

    // No fallback: every mirror named, and the registry never asked (the
    // second mirror has no such repository).
    let kiln = Kiln::new();
    let map = format!("{}={dead};{}/elsewhere", origin.host(), mirror.host());
    let out = build(
        &kiln,
        &base,
        &["--registry-map", &map, "--skip-default-registry-fallback"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:1"), "{err}");
    assert!(
        err.contains(&format!(
            "no mirror of {} has it, and falling back to {} is turned off",
            origin.host(),
            origin.host()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("tried {dead} (")), "{err}");
    assert!(
        err.contains(&format!("; {}/elsewhere (", mirror.host())),
        "{err}"
    );
    assert_eq!(kiln.image_digest(&repo, "1"), None);
}

/// The watchdog is on under `kiln executor` and takes kiln's flags: a RUN
/// that hangs is diagnosed, killed, and the build exits 3, in both
/// isolations.
#[test]
fn a_stalled_run_under_the_executor_is_diagnosed_and_killed() {
    if need(Runc).is_none() {
        return;
    }
    let base = kiln_testkit::busybox::BUSYBOX_TAG;
    for (isolation, marker) in [("runc", "86431"), ("chroot", "86432")] {
        let kiln = Kiln::new();
        let dir = tempfile::tempdir().unwrap();
        support::import_busybox(&kiln, base, &[]);
        let ctx = scratch_context(
            dir.path(),
            &format!("FROM {base}\nRUN echo about to hang; sleep {marker}\n"),
        );
        let child = kiln
            .cmd()
            .args([
                "executor",
                "--no-push",
                "--stall-timeout",
                "2s",
                "--retries",
                "0",
            ])
            .args(["--isolation", isolation, "-c"])
            .arg(&ctx)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = support::wait_bounded(child, std::time::Duration::from_secs(180));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{isolation}: {stderr}");
        assert!(
            stderr.contains("step 1 (Dockerfile:2) stalled: no output, CPU or I/O for 2s"),
            "{isolation}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("sleep {marker}")),
            "{isolation}, the process tree: {stderr}"
        );
        assert!(
            stderr.contains("about to hang"),
            "{isolation}, the last lines: {stderr}"
        );
        assert!(
            kiln_testkit::process::processes_with(marker).is_empty(),
            "{isolation}: the step still runs"
        );
    }
}

/// As Kaniko leaves its filesystem unless `--cleanup`, the executor leaves
/// chroot isolation's trees (the steps' filesystems) to the container's
/// end, which would otherwise wait for their removal; the next chroot
/// build's sweep takes them, and `--cleanup` removes its own before exit.
#[test]
fn the_executor_leaves_its_trees_unless_told_to_clean_up() {
    if need(Runc).is_none() {
        return;
    }
    let base = kiln_testkit::busybox::BUSYBOX_TAG;
    let kiln = Kiln::new();
    support::import_busybox(&kiln, base, &[]);
    let trees = |kiln: &Kiln| -> Vec<String> {
        match fs_err::read_dir(kiln.root.path().join("trees")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let build = |dockerfile: &str, flags: &[&str]| {
        let work = tempfile::tempdir().unwrap();
        let ctx = scratch_context(work.path(), dockerfile);
        let mut args = vec!["executor", "--no-push", "--isolation", "chroot", "-c"];
        args.push(ctx.to_str().unwrap());
        args.extend(flags);
        kiln.ok(&args);
    };
    build(&format!("FROM {base}\nRUN echo one > /one\n"), &[]);
    let left = trees(&kiln);
    assert_eq!(left.len(), 1, "{left:?}");
    build(
        &format!("FROM {base}\nRUN echo two > /two\n"),
        &["--cleanup"],
    );
    assert_eq!(trees(&kiln), Vec::<String>::new());
}
