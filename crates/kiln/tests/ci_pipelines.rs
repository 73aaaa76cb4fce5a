//! `kiln ci github|gitlab|k8s` with several flag combinations, each
//! pipeline checked offline by the tools CI engineers use: check-jsonschema
//! with its vendored GitHub workflow and GitLab CI schemas, and
//! kubernetes-validate --strict with the Kubernetes schemas it ships. The
//! same validators are shown to refuse a broken pipeline, and PyYAML (a
//! YAML 1.1 reader) to read the YAML as the same document as `--format json`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_testkit::need::{PipelineValidators, need};
use serde_json::Value;
use support::{Kiln, text};

/// Oldest Kubernetes the Jobs are for: `backoffLimitPerIndex` is GA there.
const K8S_MIN: &str = "1.33.0";

const IMAGE: &str = "reg.example/team/app";

fn github_cases() -> Vec<Vec<&'static str>> {
    vec![
        vec!["ci", "github", "--image", IMAGE],
        vec![
            "ci",
            "github",
            "--image",
            IMAGE,
            "--platforms",
            "linux/amd64,linux/arm64,linux/arm/v7",
            "--runner",
            "linux/arm64=ubuntu-24.04-arm",
            "--cache-ref",
            "reg.example/team/app:buildcache",
            "--build-arg",
            "PYTHON=3.12",
            "--build-arg",
            "NOTE=it's here: #1",
            "-f",
            "docker/Dockerfile",
            "-t",
            "v1-${GITHUB_RUN_ID}",
            "-t",
            "latest",
            "--step-timeout",
            "45m",
            "--stall-timeout",
            "5m",
            "--job-timeout",
            "1h 30m",
            "--install",
            "curl -fsSL https://example.invalid/kiln -o /usr/local/bin/kiln && chmod +x /usr/local/bin/kiln",
            "--branch",
            "release/1.x",
            "app",
        ],
        vec![
            "ci",
            "github",
            "--image",
            "ghcr.io/org/app",
            "--platforms",
            "linux/arm64",
            "--platforms",
            "linux/s390x",
        ],
    ]
}

fn gitlab_cases() -> Vec<Vec<&'static str>> {
    vec![
        vec!["ci", "gitlab", "--image", IMAGE],
        vec![
            "ci",
            "gitlab",
            "--image",
            IMAGE,
            "--platforms",
            "linux/amd64,linux/arm64,linux/ppc64le",
            "--runner",
            "linux/arm64=saas-linux-small-arm64",
            "--runner",
            "linux/amd64=saas-linux-small-amd64",
            "--cache-ref",
            "reg.example/team/app:cache",
            "--build-arg",
            "A=b c",
            "-t",
            "$CI_COMMIT_REF_SLUG",
            "--install",
            "apt-get update -qq && apt-get install -y -qq runc\ncp kiln /usr/local/bin/",
        ],
        vec![
            "ci",
            "gitlab",
            "--image",
            "docker.io/org/app",
            "--platforms",
            "linux/arm64",
            "--runner",
            "linux/arm64=arm",
        ],
    ]
}

fn k8s_cases() -> Vec<Vec<&'static str>> {
    let base = [
        "ci",
        "k8s",
        "--image",
        IMAGE,
        "--kiln-image",
        "reg.example/kiln:0.1",
        "--git-url",
        "https://git.example/team/app.git",
        "-t",
        "1.2.3",
    ];
    let mut full = base.to_vec();
    full.extend([
        "--platforms",
        "linux/amd64,linux/arm64,linux/riscv64",
        "--cache-ref",
        "reg.example/cache/app:main",
        "--git-ref",
        "v1.2.3",
        "--registry-secret",
        "push-creds",
        "--name",
        "app-release",
        "-t",
        "latest",
        "-f",
        "Dockerfile.gpu",
        "--build-arg",
        "CUDA=12.4",
        "sub/dir",
    ]);
    vec![base.to_vec(), full]
}

/// Runs a validator on a file; its output.
fn validate(tool: &Path, args: &[&str], file: &Path) -> Output {
    Command::new(tool).args(args).arg(file).output().unwrap()
}

fn check_github(tools: &Path, file: &Path) -> Output {
    validate(
        &tools.join("check-jsonschema"),
        &["--builtin-schema", "vendor.github-workflows"],
        file,
    )
}

fn check_gitlab(tools: &Path, file: &Path) -> Output {
    validate(
        &tools.join("check-jsonschema"),
        &["--builtin-schema", "vendor.gitlab-ci"],
        file,
    )
}

/// kubernetes-validate --strict, against its newest schema and the oldest
/// version the Jobs are for; the first failure.
fn check_k8s(tools: &Path, file: &Path) -> Output {
    let newest = validate(&tools.join("kubernetes-validate"), &["--strict"], file);
    if !newest.status.success() {
        return newest;
    }
    validate(
        &tools.join("kubernetes-validate"),
        &["--strict", "-k", K8S_MIN],
        file,
    )
}

fn assert_valid(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} is invalid:\n{}", text(out));
}

/// `kiln ARGS -o FILE`, and the same as JSON; the YAML read by PyYAML
/// must be that JSON.
fn generate(kiln: &Kiln, tools: &Path, dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let yaml = dir.join(format!("{name}.yml"));
    let mut with_output = args.to_vec();
    let yaml_arg = yaml.to_str().unwrap();
    with_output.extend(["-o", yaml_arg]);
    kiln.ok(&with_output);
    let mut as_json = args.to_vec();
    as_json.extend(["--format", "json"]);
    let json: Value = serde_json::from_slice(&kiln.ok(&as_json).stdout).unwrap();
    let read = Command::new(tools.join("python"))
        .args([
            "-c",
            "import sys, json, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1]))]\n\
             doc = docs[0] if len(docs) == 1 else {'apiVersion': 'v1', 'kind': 'List', 'items': docs}\n\
             json.dump(doc, sys.stdout)",
            yaml_arg,
        ])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "PyYAML cannot read {name}:\n{}",
        text(&read)
    );
    let read: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(
        read, json,
        "{name}: the YAML does not read back as the JSON"
    );
    yaml
}

#[test]
fn github_workflows_validate_against_the_workflow_schema() {
    let Some(tools) = need(PipelineValidators) else {
        return;
    };
    let kiln = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    for (i, args) in github_cases().iter().enumerate() {
        let file = generate(&kiln, &tools, dir.path(), &format!("github-{i}"), args);
        assert_valid(&check_github(&tools, &file), &format!("{args:?}"));
    }
}

#[test]
fn gitlab_pipelines_validate_against_the_gitlab_ci_schema() {
    let Some(tools) = need(PipelineValidators) else {
        return;
    };
    let kiln = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    for (i, args) in gitlab_cases().iter().enumerate() {
        let file = generate(&kiln, &tools, dir.path(), &format!("gitlab-{i}"), args);
        assert_valid(&check_gitlab(&tools, &file), &format!("{args:?}"));
    }
}

#[test]
fn kubernetes_jobs_validate_strictly() {
    let Some(tools) = need(PipelineValidators) else {
        return;
    };
    let kiln = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    for (i, args) in k8s_cases().iter().enumerate() {
        let file = generate(&kiln, &tools, dir.path(), &format!("k8s-{i}"), args);
        let out = check_k8s(&tools, &file);
        assert_valid(&out, &format!("{args:?}"));
        // Both Jobs were checked, not an empty file.
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            said.matches("passed for resource job/").count(),
            2,
            "{said}"
        );
    }
}

/// A pipeline as JSON, changed by `break_it`, written out.
fn broken(
    kiln: &Kiln,
    dir: &Path,
    name: &str,
    args: &[&str],
    break_it: impl Fn(&mut Value),
) -> PathBuf {
    let mut as_json = args.to_vec();
    as_json.extend(["--format", "json"]);
    let mut doc: Value = serde_json::from_slice(&kiln.ok(&as_json).stdout).unwrap();
    break_it(&mut doc);
    let path = dir.join(format!("{name}.yml"));
    // JSON is YAML; a List's items as documents of their own, which
    // kubernetes-validate checks one by one (it has no schema for a List).
    let docs = match doc["kind"].as_str() {
        Some("List") => doc["items"].as_array().unwrap().clone(),
        _ => vec![doc],
    };
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap())
        .collect();
    fs_err::write(&path, text.join("\n---\n")).unwrap();
    path
}

/// The validators refuse what is wrong, so the tests above cannot pass by
/// checking nothing. Each pipeline is first shown valid as JSON, then
/// broken in one place.
#[test]
fn the_validators_refuse_a_broken_pipeline() {
    let Some(tools) = need(PipelineValidators) else {
        return;
    };
    let kiln = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    let github = &github_cases()[1];
    let gitlab = &gitlab_cases()[1];
    let k8s = &k8s_cases()[1];

    assert_valid(
        &check_github(&tools, &broken(&kiln, dir.path(), "gh-ok", github, |_| {})),
        "github as JSON",
    );
    let out = check_github(
        &tools,
        &broken(&kiln, dir.path(), "gh-bad", github, |w| {
            w["jobs"]["merge"]["runs-on"] = Value::Null;
            w["jobs"]["build"]["steps"][0]["uses"] = Value::from(7);
        }),
    );
    assert!(
        !out.status.success(),
        "a broken workflow passed:\n{}",
        text(&out)
    );

    assert_valid(
        &check_gitlab(&tools, &broken(&kiln, dir.path(), "gl-ok", gitlab, |_| {})),
        "gitlab as JSON",
    );
    let out = check_gitlab(
        &tools,
        &broken(&kiln, dir.path(), "gl-bad", gitlab, |p| {
            p["merge"]["needs"] = Value::from("build");
            p["merge"]["when"] = Value::from("sometimes");
        }),
    );
    assert!(
        !out.status.success(),
        "a broken GitLab pipeline passed:\n{}",
        text(&out)
    );

    let out = check_k8s(&tools, &broken(&kiln, dir.path(), "k8s-ok", k8s, |_| {}));
    assert_valid(&out, "k8s as JSON");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.matches("passed for resource job/").count(),
        2,
        "{said}"
    );
    // --strict refuses a field Kubernetes does not have.
    let out = check_k8s(
        &tools,
        &broken(&kiln, dir.path(), "k8s-bad", k8s, |l| {
            l["items"][0]["spec"]["completionsMode"] = Value::from("Indexed");
        }),
    );
    assert!(
        !out.status.success(),
        "a broken Job passed:\n{}",
        text(&out)
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let kiln = Kiln::new();
    let cases: &[(&[&str], &str)] = &[
        (&["ci", "github", "--image", "reg.example/app:1"], "--image"),
        (&["ci", "github", "--image", "reg.example/App"], "--image"),
        (
            &[
                "ci",
                "github",
                "--image",
                IMAGE,
                "--platforms",
                "linux//arm64",
            ],
            "--platforms",
        ),
        (
            &[
                "ci",
                "github",
                "--image",
                IMAGE,
                "--platforms",
                "linux/amd64,linux/amd64",
            ],
            "--platforms",
        ),
        (
            &[
                "ci",
                "github",
                "--image",
                IMAGE,
                "--runner",
                "linux/arm64=arm",
            ],
            "not in --platforms",
        ),
        (
            &["ci", "github", "--image", IMAGE, "--runner", "linux/amd64"],
            "--runner",
        ),
        (
            &[
                "ci",
                "github",
                "--image",
                IMAGE,
                "--platforms",
                "linux/mips",
            ],
            "--runner linux/mips=LABEL",
        ),
        (&["ci", "gitlab", "--image", IMAGE, "-t", "a/b"], "--tag"),
        (
            &[
                "ci",
                "gitlab",
                "--image",
                IMAGE,
                "--cache-ref",
                "reg.example/app",
            ],
            "--cache-ref",
        ),
        (
            &["ci", "gitlab", "--image", IMAGE, "--build-arg", "NOVALUE"],
            "--build-arg",
        ),
        (
            &["ci", "gitlab", "--image", IMAGE, "--step-timeout", "4h"],
            "--job-timeout",
        ),
        (
            &["ci", "gitlab", "--image", IMAGE, "--stall-timeout", "0s"],
            "--stall-timeout",
        ),
        (
            &[
                "ci",
                "k8s",
                "--image",
                IMAGE,
                "--kiln-image",
                "k:1",
                "--git-url",
                "u",
                "-t",
                "1",
                "--runner",
                "linux/amd64=x",
            ],
            "--runner",
        ),
        (
            &[
                "ci",
                "k8s",
                "--image",
                IMAGE,
                "--kiln-image",
                "k:1",
                "--git-url",
                "u",
            ],
            "--tag",
        ),
        (
            &[
                "ci",
                "k8s",
                "--image",
                IMAGE,
                "--kiln-image",
                "k:1",
                "--git-url",
                "u",
                "-t",
                "$X",
            ],
            "--tag",
        ),
        (
            &[
                "ci",
                "k8s",
                "--image",
                IMAGE,
                "--kiln-image",
                "k:1",
                "--git-url",
                "u",
                "-t",
                "1",
                "--name",
                "App",
            ],
            "--name",
        ),
    ];
    for (args, flag) in cases {
        let err = kiln.fails(args);
        assert!(err.contains(flag), "kiln {args:?}: {err}");
    }
}
