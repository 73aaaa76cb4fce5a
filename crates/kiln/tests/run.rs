//! `kiln run` with the real runc, as root: a busybox image imported into
//! a fresh store, run as `docker run` would run it, and nothing of the
//! run left behind afterwards (no mount, no active dir, no runc state),
//! whether the command succeeds, fails, or kiln is interrupted.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_image::document::{ContainerConfig, Document, ImageConfig};
use kiln_image::{Platform, Reference, Store};
use kiln_testkit::need::{Runc, need};
use support::{Kiln, busybox, rootfs_tarball, stdout, text};

/// A kiln with the support module's busybox image as `bb`.
fn kiln_with_busybox() -> (Kiln, tempfile::TempDir) {
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", "bb"]);
    (kiln, work)
}

/// A busybox root with users and more applets: `app` (1000, home
/// /home/app) in the extra group `staff` (50).
fn users_tarball(dir: &Path) -> PathBuf {
    let root = dir.join("users-rootfs");
    fs_err::create_dir_all(root.join("bin")).unwrap();
    fs_err::create_dir_all(root.join("etc")).unwrap();
    fs_err::copy(busybox(), root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "id", "pwd", "hostname", "env"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs_err::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs_err::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    let tarball = dir.join("users.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    tarball
}

/// Tags the image `source`, with `edit` applied to its config, as `target`.
fn retag_with_config(kiln: &Kiln, source: &str, target: &str, edit: impl FnOnce(&mut ImageConfig)) {
    let store = Store::open(kiln.root.path()).unwrap();
    let reference = Reference::parse(source).unwrap().with_default_tag();
    let descriptor = store.resolve(&reference).unwrap().unwrap();
    let mut manifest = store
        .select_manifest(&descriptor, &Platform::host())
        .unwrap()
        .into_value();
    let mut config = store
        .read_document::<ImageConfig>(&manifest.config)
        .unwrap()
        .into_value();
    edit(&mut config);
    let platform = config.platform();
    let config = Document::with_media_type(manifest.config.media_type.clone(), config);
    manifest.config = store.put_document(&config).unwrap();
    let manifest = store
        .put_document(&Document::new(manifest))
        .unwrap()
        .with_platform(&platform);
    let target = Reference::parse(target).unwrap().with_default_tag();
    store.tag(&target, &manifest).unwrap();
}

fn run(kiln: &Kiln, args: &[&str]) -> Output {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    kiln.cmd().args(&full).output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("kiln was killed:\n{}", text(out)))
}

/// Nothing of a run is left: no active dir or lock, no mount under the
/// store, no runc state, no bundle.
fn assert_clean(kiln: &Kiln) {
    support::assert_store_clean(kiln, &["active", "runc/state", "runc/bundles"]);
}

#[test]
fn runs_a_command_and_passes_its_output_on() {
    if need(Runc).is_none() {
        return;
    }
    let (kiln, _work) = kiln_with_busybox();
    let out = run(&kiln, &["bb", "--", "/bin/echo", "hi"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(stdout(&out), "hi\n");
    // Without `--`, and with the image named by its ID, as `docker run` takes it.
    let id = stdout(&kiln.ok(&["images", "-q"])).trim().to_string();
    let out = run(&kiln, &["--rm", &id, "cat", "/hello.txt"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(stdout(&out), "hello from kiln\n");
    // stderr is the command's, kept apart from stdout.
    let out = run(&kiln, &["bb", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(stdout(&out), "out\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).ends_with("err\n"),
        "{}",
        text(&out)
    );
    assert_clean(&kiln);
}

#[test]
fn exit_codes_are_the_commands() {
    if need(Runc).is_none() {
        return;
    }
    let (kiln, _work) = kiln_with_busybox();
    let out = run(&kiln, &["bb", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    // Killed by a signal: 128 + N, as a shell reports it.
    let out = run(
        &kiln,
        &["bb", "--", "sh", "-c", "sh -c 'kill -9 $$'; exit $?"],
    );
    assert_eq!(code(&out), 137, "{}", text(&out));
    // Docker's codes for a command that is not there, and for kiln's own failures.
    let out = run(&kiln, &["bb", "--", "/no/such/command"]);
    assert_eq!(code(&out), 127, "{}", text(&out));
    let out = run(&kiln, &["missing:1"]);
    assert_eq!(code(&out), 125, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no such image: missing:1 (pull it first with `kiln pull missing:1`"),
        "{stderr}"
    );
    let out = run(&kiln, &["bb"]);
    assert_eq!(code(&out), 125, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: no command specified"), "{stderr}");
    assert_clean(&kiln);
}

#[test]
fn env_user_workdir_and_network_from_flags() {
    if need(Runc).is_none() {
        return;
    }
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = users_tarball(work.path());
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", "users"]);
    let script = "echo $GREETING $FROM_KILN; id -u; id -g; id -G; pwd; echo $HOME; hostname";
    let out = kiln
        .cmd()
        .args([
            "run",
            "-e",
            "GREETING=hello",
            "-e",
            "FROM_KILN",
            "--user",
            "app",
        ])
        .args([
            "--workdir",
            "/srv/app",
            "--hostname",
            "box",
            "users",
            "sh",
            "-c",
            script,
        ])
        .env("FROM_KILN", "passed on")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        stdout(&out),
        "hello passed on\n1000\n1000\n1000 50\n/srv/app\n/home/app\nbox\n"
    );
    // Numeric ids need no passwd entry.
    let out = run(
        &kiln,
        &[
            "-u",
            "4321:8765",
            "users",
            "sh",
            "-c",
            "id -u; id -g; echo $HOME",
        ],
    );
    assert_eq!(stdout(&out), "4321\n8765\n/\n", "{}", text(&out));
    let out = run(&kiln, &["-u", "nobody", "users", "id"]);
    assert_eq!(code(&out), 125, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unable to find user nobody"),
        "{}",
        text(&out)
    );
    // No network: loopback alone.
    let out = run(
        &kiln,
        &["--network", "none", "users", "cat", "/proc/net/dev"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let interfaces: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
        .collect();
    assert_eq!(interfaces, ["lo"], "{}", text(&out));
    assert_clean(&kiln);
}

#[test]
fn the_images_entrypoint_cmd_env_and_workdir_are_honoured() {
    if need(Runc).is_none() {
        return;
    }
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = users_tarball(work.path());
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", "users"]);
    retag_with_config(&kiln, "users", "configured", |config| {
        config.config = Some(ContainerConfig {
            entrypoint: Some(vec!["/bin/echo".into(), "entry".into()]),
            cmd: Some(vec!["default".into(), "cmd".into()]),
            env: Some(vec!["PATH=/bin".into(), "GREETING=from the image".into()]),
            working_dir: Some("/data".into()),
            user: Some("app".into()),
            ..ContainerConfig::default()
        });
    });
    let out = run(&kiln, &["configured"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(stdout(&out), "entry default cmd\n");
    // Arguments replace CMD only.
    let out = run(&kiln, &["configured", "--", "other", "args"]);
    assert_eq!(stdout(&out), "entry other args\n", "{}", text(&out));
    // --entrypoint replaces ENTRYPOINT and drops CMD.
    let out = run(
        &kiln,
        &[
            "--entrypoint",
            "/bin/sh",
            "configured",
            "-c",
            "echo $GREETING; echo $PATH; pwd; id -u",
        ],
    );
    assert_eq!(
        stdout(&out),
        "from the image\n/bin\n/data\n1000\n",
        "{}",
        text(&out)
    );
    let out = run(&kiln, &["--entrypoint", "/bin/sh", "configured"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(stdout(&out), "");
    // -e and --user override the image's.
    let out = run(
        &kiln,
        &[
            "-e",
            "GREETING=overridden",
            "-u",
            "0",
            "--entrypoint",
            "",
            "configured",
            "sh",
            "-c",
            "echo $GREETING; id -u",
        ],
    );
    assert_eq!(stdout(&out), "overridden\n0\n", "{}", text(&out));
    assert_clean(&kiln);
}

#[test]
fn an_image_for_another_architecture_is_refused() {
    if need(Runc).is_none() {
        return;
    }
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = rootfs_tarball(work.path(), 0);
    let host = Platform::host();
    let foreign = if host.architecture == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    kiln.ok(&[
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        "foreign",
        "--platform",
        foreign,
    ]);
    let out = run(&kiln, &["foreign", "--", "/bin/echo", "hi"]);
    assert_eq!(code(&out), 125, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "foreign:latest is an image for {foreign}, but this machine is {host}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("binfmt"), "{stderr}");
    // Asking for another platform than the image's is refused too.
    let out = run(
        &kiln,
        &["--platform", "linux/s390x", "foreign", "--", "/bin/echo"],
    );
    assert_eq!(code(&out), 125, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("is an image for {foreign}, not linux/s390x")),
        "{}",
        text(&out)
    );
    assert_clean(&kiln);
}

/// The pids of the processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs_err::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs_err::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_signal_ends_the_run_and_cleans_up() {
    if need(Runc).is_none() {
        return;
    }
    let (kiln, _work) = kiln_with_busybox();
    for (signal, expected, seconds) in [("INT", 130, "1001"), ("TERM", 143, "1002")] {
        let sleeper = ["/bin/busybox", "sleep", seconds];
        let mut child = kiln
            .cmd()
            .args(["run", "bb", "--"])
            .args(sleeper)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the command to start", Duration::from_secs(60), || {
            !processes(&sleeper).is_empty()
        });
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut exit = None;
        wait_for("kiln to exit", Duration::from_secs(30), || {
            exit = child.try_wait().unwrap();
            exit.is_some()
        });
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            exit.unwrap().code(),
            Some(expected),
            "SIG{signal}:\n{}",
            text(&out)
        );
        assert!(processes(&sleeper).is_empty(), "the command outlived kiln");
        assert_clean(&kiln);
    }
}
