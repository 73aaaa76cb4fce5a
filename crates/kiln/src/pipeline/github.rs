//! GitHub Actions: one workflow, a `build` job with one matrix entry per
//! platform (its runner, whether it emulates), each pushing by digest and
//! uploading the digest as an artifact, and a `merge` job after them.
//!
//! kiln runs as root (mounts, runc) through the runner's passwordless
//! `sudo`, with the runner user's PATH and `~/.docker` (where
//! `docker/login-action` writes the credentials).

use super::{Hosted, PlatformJob, Spec, Yaml, build_and_record, merge_script, missing_install};

/// The runner of platforms without a native one (amd64).
pub(crate) const DEFAULT_RUNNER: &str = "ubuntu-latest";

const KILN: &str = r#"sudo env "PATH=$PATH" "DOCKER_CONFIG=$HOME/.docker" kiln"#;
const DIGESTS: &str = r#""$RUNNER_TEMP/digests""#;

fn step(entries: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::map(entries)
}

fn install_step(hosted: &Hosted) -> Yaml {
    step(vec![
        ("name", Yaml::str("Install kiln")),
        (
            "run",
            Yaml::str(
                hosted
                    .install
                    .clone()
                    .map_or_else(missing_install, |cmd| cmd.trim().to_string()),
            ),
        ),
    ])
}

fn login_step(spec: &Spec) -> Yaml {
    let ghcr = spec.registry == "ghcr.io";
    let mut with = Vec::new();
    if spec.registry != "docker.io" {
        with.push(("registry", Yaml::str(&spec.registry)));
    }
    let (user, password) = if ghcr {
        ("${{ github.actor }}", "${{ secrets.GITHUB_TOKEN }}")
    } else {
        (
            "${{ secrets.REGISTRY_USERNAME }}",
            "${{ secrets.REGISTRY_PASSWORD }}",
        )
    };
    with.push(("username", Yaml::str(user)));
    with.push(("password", Yaml::str(password)));
    step(vec![
        ("name", Yaml::str(format!("Log in to {}", spec.registry))),
        ("uses", Yaml::str("docker/login-action@v3")),
        ("with", Yaml::map(with)),
    ])
}

fn matrix_entry(job: &PlatformJob) -> Yaml {
    Yaml::map([
        ("platform", Yaml::str(job.platform.to_string())),
        ("slug", Yaml::str(job.slug())),
        (
            "runner",
            Yaml::str(job.runner.as_deref().unwrap_or(DEFAULT_RUNNER)),
        ),
        // The architecture binfmt installs QEMU for, empty when native.
        (
            "qemu",
            Yaml::str(if job.emulated().is_some() {
                job.platform.architecture.as_str()
            } else {
                ""
            }),
        ),
    ])
}

fn timeout_minutes(spec: &Spec) -> Yaml {
    Yaml::Int(spec.job_timeout.as_secs().div_ceil(60) as i64)
}

/// The workflow.
pub(crate) fn workflow(spec: &Spec, hosted: &Hosted) -> Yaml {
    let build = Yaml::map([
        ("name", Yaml::str("build ${{ matrix.platform }}")),
        ("runs-on", Yaml::str("${{ matrix.runner }}")),
        ("timeout-minutes", timeout_minutes(spec)),
        (
            "strategy",
            Yaml::map([
                // One platform failing still shows the others' logs; the
                // merge needs them all anyway.
                ("fail-fast", Yaml::Bool(false)),
                (
                    "matrix",
                    Yaml::map([(
                        "include",
                        Yaml::Seq(spec.platforms.iter().map(matrix_entry).collect()),
                    )]),
                ),
            ]),
        ),
        (
            "steps",
            Yaml::Seq(vec![
                step(vec![("uses", Yaml::str("actions/checkout@v4"))]),
                step(vec![
                    ("name", Yaml::str("Emulate ${{ matrix.platform }} (QEMU)")),
                    ("if", Yaml::str("matrix.qemu != ''")),
                    ("uses", Yaml::str("docker/setup-qemu-action@v3")),
                    (
                        "with",
                        Yaml::map([("platforms", Yaml::str("${{ matrix.qemu }}"))]),
                    ),
                ]),
                login_step(spec),
                install_step(hosted),
                step(vec![
                    ("name", Yaml::str("Build and push by digest")),
                    (
                        "env",
                        Yaml::map([
                            ("PLATFORM", Yaml::str("${{ matrix.platform }}")),
                            ("SLUG", Yaml::str("${{ matrix.slug }}")),
                        ]),
                    ),
                    (
                        "run",
                        Yaml::str(build_and_record(
                            spec,
                            KILN,
                            "\"$PLATFORM\"",
                            r#""$RUNNER_TEMP/metadata.json""#,
                            DIGESTS,
                            "\"$SLUG\"",
                        )),
                    ),
                ]),
                step(vec![
                    ("uses", Yaml::str("actions/upload-artifact@v4")),
                    (
                        "with",
                        Yaml::map([
                            ("name", Yaml::str("digest-${{ matrix.slug }}")),
                            ("path", Yaml::str("${{ runner.temp }}/digests/*")),
                            ("if-no-files-found", Yaml::str("error")),
                            ("retention-days", Yaml::Int(1)),
                        ]),
                    ),
                ]),
            ]),
        ),
    ]);
    let merge = Yaml::map([
        ("name", Yaml::str("merge")),
        ("needs", Yaml::str("build")),
        ("runs-on", Yaml::str(DEFAULT_RUNNER)),
        ("timeout-minutes", Yaml::Int(30)),
        (
            "steps",
            Yaml::Seq(vec![
                step(vec![
                    ("uses", Yaml::str("actions/download-artifact@v4")),
                    (
                        "with",
                        Yaml::map([
                            ("path", Yaml::str("${{ runner.temp }}/digests")),
                            ("pattern", Yaml::str("digest-*")),
                            ("merge-multiple", Yaml::Bool(true)),
                        ]),
                    ),
                ]),
                login_step(spec),
                install_step(hosted),
                step(vec![
                    ("name", Yaml::str("Push one index of the digests")),
                    (
                        "run",
                        Yaml::str(merge_script(spec, KILN, DIGESTS, "$GITHUB_SHA")),
                    ),
                ]),
            ]),
        ),
    ]);
    let mut permissions = vec![("contents", Yaml::str("read"))];
    if spec.registry == "ghcr.io" {
        permissions.push(("packages", Yaml::str("write")));
    }
    Yaml::map([
        ("name", Yaml::str(format!("image {}", spec.image))),
        (
            "on",
            Yaml::map([
                (
                    "push",
                    Yaml::map([("branches", Yaml::strs([hosted.branch.as_str()]))]),
                ),
                ("workflow_dispatch", Yaml::map::<&str>([])),
            ]),
        ),
        ("permissions", Yaml::map(permissions)),
        ("jobs", Yaml::map([("build", build), ("merge", merge)])),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;

    fn hosted() -> Hosted {
        Hosted {
            install: Some("curl -fsSL https://example.invalid/kiln | sudo install /dev/stdin /usr/local/bin/kiln".into()),
            branch: "main".into(),
        }
    }

    #[test]
    fn one_matrix_entry_per_platform_with_its_runner() {
        let w = workflow(&spec(), &hosted()).to_json();
        let include = &w["jobs"]["build"]["strategy"]["matrix"]["include"];
        assert_eq!(
            include,
            &serde_json::json!([
                {"platform": "linux/amd64", "slug": "linux-amd64", "runner": "ubuntu-latest", "qemu": ""},
                {"platform": "linux/arm64", "slug": "linux-arm64", "runner": "ubuntu-24.04-arm", "qemu": ""},
            ])
        );
        assert_eq!(w["jobs"]["build"]["timeout-minutes"], 180);
        assert_eq!(w["jobs"]["merge"]["needs"], "build");
    }

    #[test]
    fn the_build_pushes_by_digest_and_the_merge_tags_the_commit() {
        let w = workflow(&spec(), &hosted()).to_json();
        let steps = w["jobs"]["build"]["steps"].as_array().unwrap();
        let build = steps
            .iter()
            .find_map(|s| s["run"].as_str().filter(|r| r.contains("kiln build")))
            .unwrap();
        assert!(
            build.contains("--output type=registry,name=reg.example/team/app,push-by-digest=true"),
            "{build}"
        );
        assert!(
            build.contains("--step-timeout 2h --stall-timeout 10m"),
            "{build}"
        );
        let merge = w["jobs"]["merge"]["steps"][3]["run"].as_str().unwrap();
        assert!(
            merge.contains(r#"kiln imagetools create -t reg.example/team/app:"$GITHUB_SHA" "$@""#),
            "{merge}"
        );
        assert!(merge.contains("-eq 2"), "{merge}");
    }

    #[test]
    fn an_emulated_platform_sets_up_qemu_and_ghcr_logs_in_with_the_token() {
        let mut s = spec();
        s.platforms[1].runner = None;
        s.image = "ghcr.io/o/app".into();
        s.registry = "ghcr.io".into();
        let w = workflow(&s, &hosted()).to_json();
        assert_eq!(
            w["jobs"]["build"]["strategy"]["matrix"]["include"][1]["qemu"],
            "arm64"
        );
        assert_eq!(w["permissions"]["packages"], "write");
        let login = &w["jobs"]["build"]["steps"][2];
        assert_eq!(login["with"]["password"], "${{ secrets.GITHUB_TOKEN }}");
    }

    #[test]
    fn without_an_install_command_the_install_step_fails_saying_why() {
        let mut h = hosted();
        h.install = None;
        let w = workflow(&spec(), &h).to_json();
        let install = w["jobs"]["build"]["steps"][3]["run"].as_str().unwrap();
        assert!(
            install.contains("--install CMD") && install.ends_with("exit 1\n"),
            "{install}"
        );
    }
}
