//! `kiln ci k8s`'s Jobs run for real (#11), under `podman kube play`.
//!
//! Podman 5 plays a Job as one pod of its template and knows no Indexed
//! Job, so each index is played as Kubernetes starts it: the build Job's
//! pod template with `JOB_COMPLETION_INDEX` set, one pod per platform, at
//! the same time; then the merge Job once both have succeeded (in a
//! cluster whoever applied the file resumes it then, docs/CI.md). The
//! pods are as generated but for their names, that variable and the
//! host's network: the repository is served by `git daemon`, the clone
//! image holds the host's git, the kiln image is kiln's debug image
//! (scripts/image), and the registry wants the credentials of the Secret
//! the file names. Podman's default capabilities are fewer than docker's
//! (no `CAP_MKNOD`, no `CAP_NET_RAW`): kiln builds with them, RUN steps by
//! chroot, the arm64 one under QEMU.

mod support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::need::{Arm64, Podman, Tool, need};
use kiln_testkit::{Registry, RegistryOptions};
use serde_json::{Value, json};
use support::{Kiln, base64_encode, busybox, busybox_root_of, run, stdout, tar_gz, text};

const USER: &str = "kiln";
const PASSWORD: &str = "s3cret";
/// The Jobs' name prefix, and so the pods' (`<job>-pod`) and their
/// containers' (`<job>-pod-<container>`).
const NAME: &str = "kiln-k8s-e2e";

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.env("PODMAN_IGNORE_CGROUPSV1_WARNING", "1");
    c
}

/// `git daemon` serving the repositories under a directory over
/// `git://127.0.0.1:PORT/NAME`; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn serve(base: &Path, git: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(git)
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = GitDaemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository with one commit on `main`.
fn repository(dir: &Path, git: &Path, files: &[(&str, String)]) {
    fs_err::create_dir_all(dir).unwrap();
    for (name, text) in files {
        fs_err::write(dir.join(name), text).unwrap();
    }
    let git = |args: &[&str]| {
        run(Command::new(git)
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=kiln", "-c", "user.email=kiln@test.invalid"])
            .args(args));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "app"]);
}

/// An image with the host's git and the libraries it loads, all a clone
/// over `git://` needs, imported into podman as `name`.
fn git_image(work: &Path, git: &Path, name: &str) {
    let root = work.join("git-root");
    let mut files = vec![(git.to_path_buf(), PathBuf::from("usr/bin/git"))];
    let ldd = stdout(&run(Command::new("ldd").arg(git)));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        files.push((PathBuf::from(lib), PathBuf::from(&lib[1..])));
    }
    for (from, to) in files {
        let to = root.join(to);
        fs_err::create_dir_all(to.parent().unwrap()).unwrap();
        // Copies the file a library's symlink names, under the link's name.
        fs_err::copy(&from, &to).unwrap();
    }
    fs_err::create_dir_all(root.join("tmp")).unwrap();
    let tarball = work.join("git.tar.gz");
    tar_gz(&root, &tarball);
    run(podman().arg("import").arg(&tarball).arg(name));
}

/// Loads a docker archive into podman unless it has `name`.
fn podman_load(name: &str, archive: &Path) {
    let exists = podman().args(["image", "exists", name]).status().unwrap();
    if !exists.success() {
        run(podman().arg("load").arg("-i").arg(archive));
    }
}

/// The busybox base for both platforms, one index at `{host}/k8s/base:1`.
fn push_base(work: &Path, host: &str, docker_config: &Path, arm64_busybox: PathBuf) -> String {
    let seeder = Kiln::new();
    let kiln = |args: &[&str]| {
        let out = seeder
            .cmd()
            .env("DOCKER_CONFIG", docker_config)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "kiln {args:?}:\n{}", text(&out));
    };
    let mut parts = Vec::new();
    for (platform, busybox) in [("linux/amd64", busybox()), ("linux/arm64", arm64_busybox)] {
        let dir = work.join(platform.replace('/', "-"));
        let tarball = dir.join("base.tar.gz");
        tar_gz(&busybox_root_of(&busybox, &dir), &tarball);
        let part = format!("{host}/k8s/base:{}", platform.replace('/', "-"));
        kiln(&[
            "import",
            tarball.to_str().unwrap(),
            "--platform",
            platform,
            "--tag",
            &part,
        ]);
        kiln(&["push", &part]);
        parts.push(part);
    }
    let base = format!("{host}/k8s/base:1");
    let mut args = vec!["imagetools", "create", "-t", &base];
    args.extend(parts.iter().map(String::as_str));
    kiln(&args);
    base
}

/// The files podman played, taken down (pods, containers, the Secret) on
/// drop, with the images pulled from the test registry.
struct Played {
    files: Vec<PathBuf>,
    images: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Played {
    fn drop(&mut self) {
        for file in self.files.iter().rev() {
            let _ = podman()
                .args(["kube", "down", "--force"])
                .arg(file)
                .output();
        }
        for image in &self.images {
            let _ = podman().args(["rmi", "-f", image]).output();
        }
        // The Secret's volume (podman keeps a Secret as a volume).
        for volume in &self.volumes {
            let _ = podman().args(["volume", "rm", "-f", volume]).output();
        }
    }
}

impl Played {
    /// `podman kube play` of `docs` (JSON is YAML) in one file; the pods
    /// start and the call returns.
    fn play(&mut self, dir: &Path, name: &str, docs: &[Value]) {
        let file = dir.join(format!("{name}.yaml"));
        let yaml: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        fs_err::write(&file, yaml.join("\n---\n")).unwrap();
        self.files.push(file.clone());
        let out = podman()
            .args(["kube", "play", "--network", "host"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman kube play {name}:\n{}{}",
            text(&out),
            pod_logs(&format!("{name}-pod"))
        );
    }
}

/// Gives the `emptyDir` volumes of a Job's pod template names of the
/// Job's own. Podman 5.4 makes an `emptyDir` a named volume of the
/// volume's name, which every pod naming it shares (two indices would
/// clone into one directory); in Kubernetes each pod has its own.
fn own_empty_dirs(job: &mut Value, job_name: &str) {
    let pod = &mut job["spec"]["template"]["spec"];
    let mut renamed = Vec::new();
    for volume in pod["volumes"].as_array_mut().unwrap() {
        if volume.get("emptyDir").is_some() {
            let old = volume["name"].as_str().unwrap().to_string();
            let new = format!("{job_name}-{old}");
            volume["name"] = json!(new);
            renamed.push((old, new));
        }
    }
    for kind in ["initContainers", "containers"] {
        for container in pod[kind].as_array_mut().into_iter().flatten() {
            for mount in container["volumeMounts"].as_array_mut().unwrap() {
                if let Some((_, new)) = renamed.iter().find(|(old, _)| mount["name"] == **old) {
                    mount["name"] = json!(new);
                }
            }
        }
    }
}

/// The logs of every container of a pod, init containers too.
fn pod_logs(pod: &str) -> String {
    let names = podman()
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("pod={pod}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    let mut logs = String::new();
    for c in String::from_utf8_lossy(&names.stdout).lines() {
        let out = podman().args(["logs", c]).output().unwrap();
        logs.push_str(&format!("--- {c}:\n{}", text(&out)));
    }
    logs
}

/// The exit code of a played Job's kiln container, and its logs (and its
/// clone's) for a failure message.
fn wait_job(job: &str) -> (String, String) {
    let container = format!("{job}-pod-kiln");
    let waiting = podman()
        .args(["wait", &container])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = stdout(&support::wait_bounded(waiting, Duration::from_secs(600)));
    (code.trim().to_string(), pod_logs(&format!("{job}-pod")))
}

#[test]
fn the_indexed_build_job_and_the_merge_job_run_under_podman_kube_play() {
    if need(Podman).is_none() {
        return;
    }
    let Some(image) = support::kiln_image() else {
        return;
    };
    let (Some(git), Some(_), Some(arm64_busybox)) =
        (need(Tool::Git), need(Tool::Skopeo), need(Arm64))
    else {
        return;
    };
    let Some(registry) = Registry::start(RegistryOptions {
        htpasswd: Some((USER.into(), PASSWORD.into())),
        ..Default::default()
    }) else {
        return;
    };
    let host = registry.host();
    let work = tempfile::tempdir().unwrap();
    let config = serde_json::to_string(&json!({"auths": {
        &host: {"auth": base64_encode(format!("{USER}:{PASSWORD}").as_bytes())}
    }}))
    .unwrap();
    let docker_config = work.path().join("docker");
    fs_err::create_dir_all(&docker_config).unwrap();
    fs_err::write(docker_config.join("config.json"), &config).unwrap();

    let base = push_base(work.path(), &host, &docker_config, arm64_busybox);
    let repos = work.path().join("git");
    repository(
        &repos.join("app"),
        &git,
        &[
            (
                "Dockerfile",
                format!(
                    "FROM {base}\n\
                     RUN uname -m > /arch && echo \"built on $(uname -m)\"\n\
                     COPY app.txt /app.txt\n"
                ),
            ),
            ("app.txt", "cloned by the Job\n".to_string()),
        ],
    );
    let daemon = GitDaemon::serve(&repos, &git);
    let git_image_name = "localhost/kiln-test-git:1";
    git_image(work.path(), &git, git_image_name);
    podman_load(&image.debug_name, &image.dir.join("kiln-debug.tar"));

    let repo = format!("{host}/team/app");
    let secret = format!("{NAME}-regcred");
    let generated = Kiln::new().ok(&[
        "ci",
        "k8s",
        "--platforms",
        "linux/amd64,linux/arm64",
        "--image",
        &repo,
        "-t",
        "1.0",
        "--kiln-image",
        &image.debug_name,
        "--git-url",
        &format!("git://127.0.0.1:{}/app", daemon.port),
        "--git-ref",
        "main",
        "--git-image",
        git_image_name,
        "--registry-secret",
        &secret,
        "--name",
        NAME,
        "--step-timeout",
        "5m",
        "--stall-timeout",
        "2m",
        "--job-timeout",
        "15m",
        "--format",
        "json",
    ]);
    let generated: Value = serde_json::from_slice(&generated.stdout).unwrap();
    let docs = match &generated {
        Value::Array(docs) => docs.clone(),
        v if v["kind"] == "List" => v["items"].as_array().unwrap().clone(),
        v => panic!("not a list of documents: {v}"),
    };
    let [build, merge] = &docs[..] else {
        panic!("two Jobs: {generated}")
    };
    assert_eq!(build["spec"]["completionMode"], "Indexed");
    assert_eq!(build["spec"]["completions"], 2);
    assert_eq!(merge["spec"]["suspend"], true);

    let mut played = Played {
        files: Vec::new(),
        images: vec![format!("{repo}:1.0")],
        volumes: vec![secret.clone()],
    };
    // The Secret the Jobs name, as `kubectl create secret docker-registry`
    // makes it.
    played.play(
        work.path(),
        "secret",
        &[json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64_encode(config.as_bytes())},
        })],
    );
    let mut jobs = Vec::new();
    for index in 0..2 {
        let mut job = build.clone();
        let name = format!("{NAME}-build-{index}");
        job["metadata"]["name"] = json!(name);
        job["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "JOB_COMPLETION_INDEX", "value": index.to_string()}));
        own_empty_dirs(&mut job, &name);
        played.play(work.path(), &name, &[job]);
        jobs.push(name);
    }
    for (job, arch) in jobs.iter().zip(["x86_64", "aarch64"]) {
        let (code, logs) = wait_job(job);
        assert_eq!(code, "0", "{job} failed:\n{logs}");
        assert!(logs.contains("isolation: chroot"), "{job}:\n{logs}");
        assert!(logs.contains(&format!("built on {arch}")), "{job}:\n{logs}");
    }

    let mut merge = merge.clone();
    own_empty_dirs(&mut merge, &format!("{NAME}-merge"));
    played.play(work.path(), "merge", &[merge]);
    let (code, logs) = wait_job(&format!("{NAME}-merge"));
    assert_eq!(code, "0", "the merge failed:\n{logs}");

    // One tag, both platforms; each image is its platform's and holds the
    // file of the commit the Job cloned.
    let creds = format!("{USER}:{PASSWORD}");
    let raw = stdout(&run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{repo}:1.0"),
    ])));
    let index: Value = serde_json::from_str(&raw).unwrap();
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]).replace('"', "")
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{raw}");
    for (platform, arch) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        run(podman()
            .args([
                "pull",
                "--tls-verify=false",
                "--creds",
                &creds,
                "--platform",
                platform,
            ])
            .arg(format!("{repo}:1.0")));
        let ran = run(podman()
            .args(["run", "--rm", "--pull=never", "--platform", platform])
            .arg(format!("{repo}:1.0"))
            .args(["cat", "/arch", "/app.txt"]));
        assert_eq!(
            stdout(&ran),
            format!("{arch}\ncloned by the Job\n"),
            "{platform}"
        );
    }
}
