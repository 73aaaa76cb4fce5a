//! Kubernetes: an Indexed Job (one index per platform) and a merge Job,
//! as two documents of one file.
//!
//! - Each index clones the repository into an `emptyDir` (an init
//!   container), picks its platform from `JOB_COMPLETION_INDEX` and pushes
//!   its image to a per-platform tag, `REPO:TAG-<os>-<arch>`: the merge Job
//!   names those tags, so no digest has to travel between pods.
//! - The merge Job is created suspended. Kubernetes has no "after that
//!   Job", and a merge that polled the registry could take the tags of an
//!   earlier run: whoever applied the file waits for the build and resumes
//!   the merge (the commands are in the file's header and docs/CI.md).
//! - One pod template serves every index, so pods cannot pick a node per
//!   platform: the foreign platforms run under QEMU, whose binfmt handlers
//!   the nodes must have (`kiln ci k8s` refuses `--runner`).
//! - Credentials come from an existing `kubernetes.io/dockerconfigjson`
//!   Secret, mounted as `$DOCKER_CONFIG/config.json`; nothing secret is in
//!   the file. The containers are not privileged.

use super::{Spec, Yaml, build_command, duration, sh_quote};

/// What the Kubernetes Jobs need beyond the spec.
#[derive(Debug, Clone)]
pub(crate) struct K8s {
    /// The Jobs' name prefix (`NAME-build`, `NAME-merge`); a DNS label.
    pub(crate) name: String,
    /// The image with kiln (and `sh` on its PATH) the pods run.
    pub(crate) kiln_image: String,
    pub(crate) git_url: String,
    /// A branch or tag (`git clone --branch`).
    pub(crate) git_ref: String,
    /// An image whose entrypoint may be replaced by `git`.
    pub(crate) git_image: String,
    /// The Secret of type `kubernetes.io/dockerconfigjson` to push with.
    pub(crate) registry_secret: String,
}

const WORKSPACE: &str = "/workspace";
const DOCKER_CONFIG: &str = "/kiln/docker";
const STORE: &str = "/kiln/root";

/// The tag each platform's image is pushed to, for the merge Job.
pub(crate) fn platform_tag(spec: &Spec, slug: &str) -> String {
    format!("{}-{slug}", spec.tags[0])
}

fn labels(k8s: &K8s, component: &str) -> Yaml {
    Yaml::map([
        ("app.kubernetes.io/name", Yaml::str(&k8s.name)),
        ("app.kubernetes.io/component", Yaml::str(component)),
        ("app.kubernetes.io/managed-by", Yaml::str("kiln")),
    ])
}

fn kiln_container(k8s: &K8s, command: Vec<String>, mounts: Vec<Yaml>) -> Yaml {
    let mut container = vec![
        ("name", Yaml::str("kiln")),
        ("image", Yaml::str(&k8s.kiln_image)),
        ("command", Yaml::strs(command)),
    ];
    if mounts.iter().any(|m| m.to_json()["mountPath"] == WORKSPACE) {
        container.push(("workingDir", Yaml::str(WORKSPACE)));
    }
    container.extend([
        (
            "env",
            Yaml::Seq(vec![
                Yaml::map([
                    ("name", Yaml::str("DOCKER_CONFIG")),
                    ("value", Yaml::str(DOCKER_CONFIG)),
                ]),
                Yaml::map([
                    ("name", Yaml::str("KILN_ROOT")),
                    ("value", Yaml::str(STORE)),
                ]),
            ]),
        ),
        (
            // kiln's unprivileged mode: root in the container (files with
            // their owners), the runtime's default capabilities and seccomp
            // profile, no privileged container.
            "securityContext",
            Yaml::map([
                ("privileged", Yaml::Bool(false)),
                ("runAsUser", Yaml::Int(0)),
                (
                    "seccompProfile",
                    Yaml::map([("type", Yaml::str("RuntimeDefault"))]),
                ),
            ]),
        ),
        ("volumeMounts", Yaml::Seq(mounts)),
    ]);
    Yaml::map(container)
}

fn mount(name: &str, path: &str, read_only: bool) -> Yaml {
    let mut m = vec![("name", Yaml::str(name)), ("mountPath", Yaml::str(path))];
    if read_only {
        m.push(("readOnly", Yaml::Bool(true)));
    }
    Yaml::map(m)
}

fn docker_config_volume(k8s: &K8s) -> Yaml {
    Yaml::map([
        ("name", Yaml::str("docker-config")),
        (
            "secret",
            Yaml::map([
                ("secretName", Yaml::str(&k8s.registry_secret)),
                (
                    "items",
                    Yaml::Seq(vec![Yaml::map([
                        ("key", Yaml::str(".dockerconfigjson")),
                        ("path", Yaml::str("config.json")),
                    ])]),
                ),
            ]),
        ),
    ])
}

fn empty_dir(name: &str) -> Yaml {
    Yaml::map([
        ("name", Yaml::str(name)),
        ("emptyDir", Yaml::map::<&str>([])),
    ])
}

fn job(k8s: &K8s, component: &str, spec: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::map([
        ("apiVersion", Yaml::str("batch/v1")),
        ("kind", Yaml::str("Job")),
        (
            "metadata",
            Yaml::map([
                ("name", Yaml::str(format!("{}-{component}", k8s.name))),
                ("labels", labels(k8s, component)),
            ]),
        ),
        ("spec", Yaml::map(spec)),
    ])
}

/// The shell of one index: its platform, then the build.
fn build_script(spec: &Spec) -> String {
    let mut script = String::from("set -eu\ncase \"$JOB_COMPLETION_INDEX\" in\n");
    for (i, job) in spec.platforms.iter().enumerate() {
        script.push_str(&format!(
            "  {i}) PLATFORM={} SLUG={} ;;\n",
            job.platform,
            job.slug()
        ));
    }
    script.push_str(
        "  *) echo \"no platform for index $JOB_COMPLETION_INDEX\" >&2; exit 1 ;;\nesac\n",
    );
    let output = format!(
        "{}\"$SLUG\"",
        sh_quote(&format!(
            "type=registry,name={}:{}-",
            spec.image, spec.tags[0]
        ))
    );
    script.push_str(&build_command(
        spec,
        "kiln",
        "\"$PLATFORM\"",
        &output,
        "/tmp/metadata.json",
    ));
    script
}

/// The build Job and the merge Job.
pub(crate) fn jobs(spec: &Spec, k8s: &K8s) -> Vec<Yaml> {
    let n = spec.platforms.len() as i64;
    let build = job(
        k8s,
        "build",
        vec![
            ("completionMode", Yaml::str("Indexed")),
            ("completions", Yaml::Int(n)),
            ("parallelism", Yaml::Int(n)),
            // A platform that fails is retried once on its own, not with
            // the others.
            ("backoffLimitPerIndex", Yaml::Int(1)),
            (
                "activeDeadlineSeconds",
                Yaml::Int(spec.job_timeout.as_secs() as i64),
            ),
            ("ttlSecondsAfterFinished", Yaml::Int(86400)),
            (
                "template",
                Yaml::map([
                    ("metadata", Yaml::map([("labels", labels(k8s, "build"))])),
                    (
                        "spec",
                        Yaml::map([
                            ("restartPolicy", Yaml::str("Never")),
                            (
                                "initContainers",
                                Yaml::Seq(vec![Yaml::map([
                                    ("name", Yaml::str("clone")),
                                    ("image", Yaml::str(&k8s.git_image)),
                                    (
                                        "command",
                                        Yaml::strs([
                                            "git",
                                            "clone",
                                            "--depth",
                                            "1",
                                            "--branch",
                                            &k8s.git_ref,
                                            &k8s.git_url,
                                            WORKSPACE,
                                        ]),
                                    ),
                                    (
                                        "volumeMounts",
                                        Yaml::Seq(vec![mount("workspace", WORKSPACE, false)]),
                                    ),
                                ])]),
                            ),
                            (
                                "containers",
                                Yaml::Seq(vec![kiln_container(
                                    k8s,
                                    // `sh` from the image's PATH: kiln's debug
                                    // image has it in /busybox, not /bin.
                                    vec!["sh".into(), "-c".into(), build_script(spec)],
                                    vec![
                                        mount("workspace", WORKSPACE, false),
                                        mount("store", STORE, false),
                                        mount("docker-config", DOCKER_CONFIG, true),
                                    ],
                                )]),
                            ),
                            (
                                "volumes",
                                Yaml::Seq(vec![
                                    empty_dir("workspace"),
                                    empty_dir("store"),
                                    docker_config_volume(k8s),
                                ]),
                            ),
                        ]),
                    ),
                ]),
            ),
        ],
    );
    let mut merge_command: Vec<String> = vec!["kiln".into(), "imagetools".into(), "create".into()];
    for tag in &spec.tags {
        merge_command.push("-t".into());
        merge_command.push(format!("{}:{tag}", spec.image));
    }
    for job in &spec.platforms {
        merge_command.push(format!(
            "{}:{}",
            spec.image,
            platform_tag(spec, &job.slug())
        ));
    }
    let merge = job(
        k8s,
        "merge",
        vec![
            // Resumed once the build Job is complete (module doc).
            ("suspend", Yaml::Bool(true)),
            ("backoffLimit", Yaml::Int(2)),
            ("activeDeadlineSeconds", Yaml::Int(1800)),
            ("ttlSecondsAfterFinished", Yaml::Int(86400)),
            (
                "template",
                Yaml::map([
                    ("metadata", Yaml::map([("labels", labels(k8s, "merge"))])),
                    (
                        "spec",
                        Yaml::map([
                            ("restartPolicy", Yaml::str("Never")),
                            (
                                "containers",
                                Yaml::Seq(vec![kiln_container(
                                    k8s,
                                    merge_command,
                                    vec![
                                        mount("store", STORE, false),
                                        mount("docker-config", DOCKER_CONFIG, true),
                                    ],
                                )]),
                            ),
                            (
                                "volumes",
                                Yaml::Seq(vec![empty_dir("store"), docker_config_volume(k8s)]),
                            ),
                        ]),
                    ),
                ]),
            ),
        ],
    );
    vec![build, merge]
}

/// The header lines of the file: how to run it.
pub(crate) fn usage(spec: &Spec, k8s: &K8s) -> String {
    format!(
        "# Run: kubectl apply -f THIS_FILE\n\
         #      kubectl wait --for=condition=complete --timeout={} job/{name}-build\n\
         #      kubectl patch job {name}-merge --type=merge -p '{{\"spec\":{{\"suspend\":false}}}}'\n\
         # Needs the Secret {} (kubectl create secret docker-registry ...).\n",
        duration(spec.job_timeout).replace(' ', ""),
        k8s.registry_secret,
        name = k8s.name,
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;

    fn k8s() -> K8s {
        K8s {
            name: "app".into(),
            kiln_image: "reg.example/kiln:0.1".into(),
            git_url: "https://git.example/team/app.git".into(),
            git_ref: "main".into(),
            git_image: "alpine/git".into(),
            registry_secret: "regcred".into(),
        }
    }

    fn spec_k8s() -> Spec {
        let mut s = spec();
        for p in &mut s.platforms {
            p.runner = None;
        }
        s.tags = vec!["1.2".into(), "latest".into()];
        s
    }

    #[test]
    fn one_index_per_platform_each_picking_its_own() {
        let [build, _] = &jobs(&spec_k8s(), &k8s())[..] else {
            panic!()
        };
        let b = build.to_json();
        assert_eq!(b["metadata"]["name"], "app-build");
        assert_eq!(b["spec"]["completionMode"], "Indexed");
        assert_eq!(b["spec"]["completions"], 2);
        assert_eq!(b["spec"]["parallelism"], 2);
        assert_eq!(b["spec"]["activeDeadlineSeconds"], 10800);
        let pod = &b["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["containers"][0]["securityContext"]["privileged"], false);
        let script = pod["containers"][0]["command"][2].as_str().unwrap();
        assert!(script.contains("  0) PLATFORM=linux/amd64 SLUG=linux-amd64 ;;\n  1) PLATFORM=linux/arm64 SLUG=linux-arm64 ;;"), "{script}");
        assert!(
            script.contains(r#"--output type=registry,name=reg.example/team/app:1.2-"$SLUG""#),
            "{script}"
        );
        assert_eq!(pod["volumes"][2]["secret"]["secretName"], "regcred");
    }

    #[test]
    fn the_merge_is_suspended_and_names_the_platform_tags() {
        let [_, merge] = &jobs(&spec_k8s(), &k8s())[..] else {
            panic!()
        };
        let m = merge.to_json();
        assert_eq!(m["spec"]["suspend"], true);
        assert_eq!(
            m["spec"]["template"]["spec"]["containers"][0]["command"],
            serde_json::json!([
                "kiln",
                "imagetools",
                "create",
                "-t",
                "reg.example/team/app:1.2",
                "-t",
                "reg.example/team/app:latest",
                "reg.example/team/app:1.2-linux-amd64",
                "reg.example/team/app:1.2-linux-arm64",
            ])
        );
    }
}
