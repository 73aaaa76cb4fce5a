//! GitLab CI: stages `build` and `merge`. The platforms build as a
//! `parallel: matrix:` job, `build` for those on the default runners and
//! `build-native` for those with a runner tag (`tags: [$RUNNER]` per matrix
//! entry); each leaves its digest in an artifact, and `merge` (`needs:`
//! both) pushes the index.
//!
//! The jobs run `kiln` directly: the runners must run jobs as root with
//! runc and overlayfs (docs/CI.md).

use super::{
    Hosted, PlatformJob, Spec, Yaml, build_and_record, duration, merge_script, missing_install,
    sh_quote,
};

const DIGESTS: &str = "kiln-digests";

/// Credentials into a docker config outside the project (so outside the
/// build context): `REGISTRY_USER`/`REGISTRY_PASSWORD` CI/CD variables,
/// else GitLab's own registry job token.
fn login_script(spec: &Spec) -> String {
    // Docker keeps Docker Hub's credentials under its v1 URL.
    let server = if spec.registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        spec.registry.clone()
    };
    format!(
        r#"export DOCKER_CONFIG="${{TMPDIR:-/tmp}}/kiln-docker-$CI_JOB_ID"
mkdir -p "$DOCKER_CONFIG"
auth=$(printf '%s:%s' "${{REGISTRY_USER:-${{CI_REGISTRY_USER:-}}}}" "${{REGISTRY_PASSWORD:-${{CI_REGISTRY_PASSWORD:-}}}}" | base64 | tr -d '\n')
printf '{{"auths":{{"%s":{{"auth":"%s"}}}}}}\n' {} "$auth" > "$DOCKER_CONFIG/config.json"
"#,
        sh_quote(&server)
    )
}

fn install_script(hosted: &Hosted) -> String {
    hosted
        .install
        .clone()
        .map_or_else(missing_install, |cmd| cmd.trim().to_string())
}

/// Emulated platforms need QEMU's binfmt handlers (with the F flag) on
/// the runner's kernel: installed here where the job may (Debian's
/// qemu-user-static registers them), else a failure saying what to do.
const QEMU_SCRIPT: &str = r#"if [ -n "${QEMU:-}" ] && [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$QEMU" ]; then
  if command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq qemu-user-static; fi
  test -e "/proc/sys/fs/binfmt_misc/qemu-$QEMU" || { echo "no binfmt handler qemu-$QEMU for $PLATFORM: register QEMU on the runner host, or give $PLATFORM a native runner (kiln ci --runner)" >&2; exit 1; }
fi
"#;

fn matrix_entry(job: &PlatformJob) -> Yaml {
    let mut entry = vec![
        ("PLATFORM", Yaml::str(job.platform.to_string())),
        ("SLUG", Yaml::str(job.slug())),
    ];
    if let Some(runner) = &job.runner {
        entry.push(("RUNNER", Yaml::str(runner)));
    }
    if let Some(qemu) = job.emulated() {
        entry.push(("QEMU", Yaml::str(qemu)));
    }
    Yaml::map(entry)
}

fn rules(hosted: &Hosted) -> Yaml {
    Yaml::Seq(vec![Yaml::map([(
        "if",
        Yaml::str(format!("$CI_COMMIT_BRANCH == \"{}\"", hosted.branch)),
    )])])
}

fn build_job(spec: &Spec, hosted: &Hosted, jobs: &[&PlatformJob], native: bool) -> Yaml {
    let mut job = vec![
        ("stage", Yaml::str("build")),
        ("rules", rules(hosted)),
        ("timeout", Yaml::str(duration(spec.job_timeout))),
    ];
    if native {
        job.push(("tags", Yaml::strs(["$RUNNER"])));
    }
    job.extend([
        (
            "parallel",
            Yaml::map([(
                "matrix",
                Yaml::Seq(jobs.iter().map(|j| matrix_entry(j)).collect()),
            )]),
        ),
        (
            "before_script",
            Yaml::strs([install_script(hosted), login_script(spec)]),
        ),
        (
            "script",
            Yaml::strs([
                QEMU_SCRIPT.to_string(),
                build_and_record(
                    spec,
                    "kiln",
                    "\"$PLATFORM\"",
                    "\"${TMPDIR:-/tmp}/kiln-metadata-$SLUG.json\"",
                    DIGESTS,
                    "\"$SLUG\"",
                ),
            ]),
        ),
        (
            "artifacts",
            Yaml::map([
                ("paths", Yaml::strs([format!("{DIGESTS}/")])),
                ("expire_in", Yaml::str("1 day")),
            ]),
        ),
    ]);
    Yaml::map(job)
}

/// The pipeline.
pub(crate) fn pipeline(spec: &Spec, hosted: &Hosted) -> Yaml {
    let (native, default): (Vec<&PlatformJob>, Vec<&PlatformJob>) =
        spec.platforms.iter().partition(|j| j.runner.is_some());
    let mut jobs = vec![("stages", Yaml::strs(["build", "merge"]))];
    let mut needs = Vec::new();
    if !default.is_empty() {
        jobs.push(("build", build_job(spec, hosted, &default, false)));
        needs.push("build");
    }
    if !native.is_empty() {
        jobs.push(("build-native", build_job(spec, hosted, &native, true)));
        needs.push("build-native");
    }
    jobs.push((
        "merge",
        Yaml::map([
            ("stage", Yaml::str("merge")),
            ("rules", rules(hosted)),
            ("needs", Yaml::strs(needs)),
            ("timeout", Yaml::str("30m")),
            (
                "before_script",
                Yaml::strs([install_script(hosted), login_script(spec)]),
            ),
            (
                "script",
                Yaml::strs([merge_script(spec, "kiln", DIGESTS, "$CI_COMMIT_SHA")]),
            ),
        ]),
    ));
    Yaml::map(jobs)
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;

    fn hosted() -> Hosted {
        Hosted {
            install: Some("install-kiln".into()),
            branch: "main".into(),
        }
    }

    #[test]
    fn default_and_native_runners_are_two_matrix_jobs_the_merge_needs() {
        let p = pipeline(&spec(), &hosted()).to_json();
        assert_eq!(p["stages"], serde_json::json!(["build", "merge"]));
        assert_eq!(
            p["build"]["parallel"]["matrix"],
            serde_json::json!([{"PLATFORM": "linux/amd64", "SLUG": "linux-amd64"}])
        );
        assert_eq!(
            p["build-native"]["parallel"]["matrix"],
            serde_json::json!([{"PLATFORM": "linux/arm64", "SLUG": "linux-arm64", "RUNNER": "ubuntu-24.04-arm"}])
        );
        assert_eq!(p["build-native"]["tags"], serde_json::json!(["$RUNNER"]));
        assert!(p["build"].get("tags").is_none());
        assert_eq!(
            p["merge"]["needs"],
            serde_json::json!(["build", "build-native"])
        );
        assert_eq!(p["build"]["timeout"], "3h");
        let merge = p["merge"]["script"][0].as_str().unwrap();
        assert!(
            merge.contains(r#"-t reg.example/team/app:"$CI_COMMIT_SHA""#),
            "{merge}"
        );
    }

    #[test]
    fn an_emulated_platform_names_its_qemu_handler() {
        let mut s = spec();
        s.platforms[1].runner = None;
        let p = pipeline(&s, &hosted()).to_json();
        assert_eq!(p["build"]["parallel"]["matrix"][1]["QEMU"], "aarch64");
        assert!(p.get("build-native").is_none());
        assert_eq!(p["merge"]["needs"], serde_json::json!(["build"]));
    }

    #[test]
    fn docker_hub_credentials_go_under_its_v1_url() {
        let mut s = spec();
        s.registry = "docker.io".into();
        let script = login_script(&s);
        assert!(
            script.contains(r#"https://index.docker.io/v1/ "$auth""#),
            "{script}"
        );
    }
}
