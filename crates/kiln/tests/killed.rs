//! kiln killed with SIGKILL mid-run, as root with the real runc
//! (docs/RELIABILITY.md, "kiln killed"): the step's whole process tree is
//! gone within seconds, and the next kiln command, whichever it is, leaves
//! no mount, container, bundle or scratch dir of the dead kiln behind.
//! Each sleep's argument is unique to the test, so that its processes are
//! told from any other's in /proc.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::need::{Runc, need};
use support::Kiln;

/// Runs `kiln images` on drop, so that a failing test leaves no container
/// or mount behind either (the command sweeps what the killed kiln left).
struct SweepOnDrop<'a>(&'a Kiln);

impl Drop for SweepOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().arg("images").output();
    }
}

/// A kiln with the support module's busybox image as `bb`.
fn kiln_with_busybox() -> (Kiln, tempfile::TempDir) {
    let kiln = Kiln::new();
    let work = tempfile::tempdir().unwrap();
    let tarball = support::rootfs_tarball(work.path(), 0);
    kiln.ok(&["import", tarball.to_str().unwrap(), "--tag", "bb"]);
    (kiln, work)
}

/// Two sleeps no other process runs: a parent's and its background child's.
fn sleepers(salt: u32) -> [String; 2] {
    let n = 100_000 + (std::process::id() % 100_000) * 10 + salt;
    [format!("1{n}"), format!("2{n}")]
}

/// A shell command running both sleepers: a tree of three processes.
fn tree(sleepers: &[String; 2]) -> String {
    format!(
        "/bin/busybox sleep {} & /bin/busybox sleep {}",
        sleepers[1], sleepers[0]
    )
}

/// The pids of live processes running `busybox sleep <seconds>`.
fn sleeping(seconds: &str) -> Vec<u32> {
    let wanted = format!("/bin/busybox\0sleep\0{seconds}\0").into_bytes();
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

/// Waits until both sleepers run, SIGKILLs kiln, and checks that every
/// process of the run is gone within 10 s.
fn kill_kiln_mid_run(mut kiln_process: Child, sleepers: &[String; 2], log: &std::path::Path) {
    wait_for("the step to run", Duration::from_secs(120), || {
        if let Some(status) = kiln_process.try_wait().unwrap() {
            panic!(
                "kiln ended first ({status}):\n{}",
                fs_err::read_to_string(log).unwrap_or_default()
            );
        }
        sleepers.iter().all(|s| !sleeping(s).is_empty())
    });
    let pids: Vec<u32> = sleepers.iter().flat_map(|s| sleeping(s)).collect();
    kiln_process.kill().unwrap();
    kiln_process.wait().unwrap();
    wait_for(
        "the run's processes to die with kiln",
        Duration::from_secs(10),
        || {
            sleepers.iter().all(|s| sleeping(s).is_empty())
                && pids
                    .iter()
                    .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        },
    );
}

/// Nothing of a run is left under the store: no active dir or lock, scratch
/// dir, runc state or bundle, and no mount.
fn assert_clean(kiln: &Kiln) {
    support::assert_store_clean(kiln, &["active", "tmp", "runc/state", "runc/bundles"]);
}

#[test]
fn a_killed_build_takes_its_step_along() {
    if need(Runc).is_none() {
        return;
    }
    let (kiln, work) = kiln_with_busybox();
    let _sweep = SweepOnDrop(&kiln);
    let sleepers = sleepers(1);
    let context = work.path().join("context");
    fs_err::create_dir_all(&context).unwrap();
    fs_err::write(
        context.join("Dockerfile"),
        format!("FROM bb\nRUN {}\n", tree(&sleepers)),
    )
    .unwrap();
    let log = work.path().join("build.log");
    let build = kiln
        .cmd()
        .args(["build", "--tag", "never", context.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(fs_err::File::create(&log).unwrap().into_parts().0)
        .spawn()
        .unwrap();
    kill_kiln_mid_run(build, &sleepers, &log);
    // Any command sweeps, not only build and run.
    kiln.ok(&["images"]);
    assert_clean(&kiln);
}

#[test]
fn a_killed_kiln_run_takes_its_command_along() {
    if need(Runc).is_none() {
        return;
    }
    let (kiln, work) = kiln_with_busybox();
    let _sweep = SweepOnDrop(&kiln);
    let sleepers = sleepers(2);
    let log = work.path().join("run.log");
    let run = kiln
        .cmd()
        .args([
            "run",
            "bb",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            &tree(&sleepers),
        ])
        .stdout(Stdio::null())
        .stderr(fs_err::File::create(&log).unwrap().into_parts().0)
        .spawn()
        .unwrap();
    kill_kiln_mid_run(run, &sleepers, &log);
    kiln.ok(&["images"]);
    assert_clean(&kiln);
}
