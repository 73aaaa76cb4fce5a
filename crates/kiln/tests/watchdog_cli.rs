//! `kiln build` under the watchdog, as a user and CI see it: the flags,
//! the diagnosis on stderr, the exit codes (1 build error, 3 stalled, 4
//! timed out, 130/143/129 interrupted), and recovery: SIGINT, SIGTERM and
//! SIGHUP clean up, and after `kill -9` of kiln at random points of many builds
//! the next build succeeds, `kiln store verify` passes, and nothing of
//! the killed builds remains. These tests drive runc and need root; CI
//! runs them as root.
//!
//! Limits are short (2-3 s); the bounds only keep a hang from hanging the
//! suite. No speed is asserted.

mod support;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::need::{Runc, need};
use kiln_testkit::process::processes_with;
use support::{Kiln, text};

/// Long enough for a loaded CI machine; never used to assert speed.
const BOUND: Duration = Duration::from_secs(180);

const BASE: &str = kiln_testkit::busybox::BUSYBOX_TAG;

/// A store holding [`BASE`]: static busybox with every applet; `None`
/// (the test skips) where builds cannot run steps.
fn kiln_with_base() -> Option<Kiln> {
    need(Runc)?;
    let kiln = Kiln::new();
    support::import_busybox(&kiln, BASE, &[]);
    Some(kiln)
}

/// A build context with `Dockerfile` = `FROM <BASE>` + `body`.
fn context(body: &str) -> tempfile::TempDir {
    context_with(&format!("FROM {BASE}\n{body}"))
}

/// A build context with this Dockerfile and a `data.txt`.
fn context_with(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    fs_err::write(dir.path().join("data.txt"), "some data\n").unwrap();
    dir
}

/// Starts `kiln build` with `flags` on `ctx`, its stderr piped.
fn start_build(kiln: &Kiln, ctx: &Path, flags: &[&str]) -> Child {
    kiln.cmd()
        .arg("build")
        .args(flags)
        .arg(ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `kiln build` to its end (bounded); its status and stderr.
fn build(kiln: &Kiln, ctx: &Path, flags: &[&str]) -> (ExitStatus, String) {
    let child = start_build(kiln, ctx, flags);
    let out = wait_bounded(child);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_bounded(child: Child) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BOUND) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("kiln build did not finish within {BOUND:?}");
        }
    }
}

/// Waits (bounded) until a process with `marker` runs.
fn wait_for_process(marker: &str) {
    let start = Instant::now();
    while processes_with(marker).is_empty() {
        assert!(start.elapsed() < BOUND, "no process {marker} appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Nothing of any build is left in the store: no mount under it, no
/// active snapshot, no scratch or download directory, no runc state or
/// bundle, no process with `marker`.
fn assert_clean(kiln: &Kiln, marker: &str) {
    let left = processes_with(marker);
    assert!(left.is_empty(), "processes left: {left:#?}");
    let root = fs_err::canonicalize(kiln.root.path()).unwrap();
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|p| Path::new(p).starts_with(&root))
        })
        .collect();
    assert!(ours.is_empty(), "mounts left: {ours:#?}");
    for dir in ["active", "tmp", "runc/state", "runc/bundles"] {
        let left = entries(&root.join(dir));
        assert!(left.is_empty(), "left in {dir}: {left:?}");
    }
    let temps: Vec<String> = entries(&root)
        .into_iter()
        .filter(|n| n.starts_with("kiln-add-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    let secrets: Vec<String> = entries(Path::new("/dev/shm"))
        .into_iter()
        .filter(|n| n.starts_with("kiln-secrets-"))
        .filter(|n| {
            let pid = n.trim_start_matches("kiln-secrets-").split('-').next();
            pid.is_some_and(|p| !Path::new("/proc").join(p).exists())
        })
        .collect();
    assert!(secrets.is_empty(), "secrets of dead processes: {secrets:?}");
}

fn entries(dir: &Path) -> Vec<String> {
    match fs_err::read_dir(dir) {
        Ok(list) => list
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

// ---- exit codes ------------------------------------------------------------

#[test]
fn a_stall_exits_3_after_printing_its_diagnosis() {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let ctx = context("RUN echo about to hang; sleep 86421\n");
    let (status, stderr) = build(&kiln, ctx.path(), &["--stall-timeout", "2s"]);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("step 1 (Dockerfile:2) stalled: no output, CPU or I/O for 2s"),
        "{stderr}"
    );
    assert!(stderr.contains("sleep 86421"), "the process tree: {stderr}");
    assert!(stderr.contains("about to hang"), "the last lines: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.ends_with("for 2s (killed)")),
        "the one-line reason: {stderr}"
    );
    assert_clean(&kiln, "86421");
}

#[test]
fn a_step_timeout_exits_4_and_retries_are_shown() {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let ctx = context("RUN echo busy; sleep 86422\n");
    let (status, stderr) = build(
        &kiln,
        ctx.path(),
        &[
            "--step-timeout",
            "2s",
            "--stall-timeout",
            "0",
            "--retries",
            "1",
        ],
    );
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("timed out: still running after 2s (killed after 2 attempts)"),
        "{stderr}"
    );
    assert!(stderr.contains("2/2"), "the retry is shown: {stderr}");
    assert_clean(&kiln, "86422");
}

#[test]
fn a_failing_step_exits_1_after_its_retries() {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let ctx = context("RUN echo failing 86427; exit 7\n");
    let (status, stderr) = build(&kiln, ctx.path(), &["--retries", "2"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exit code: 7 (after 3 attempts)"),
        "{stderr}"
    );
    assert_clean(&kiln, "86427");
}

#[test]
fn a_retried_step_that_succeeds_says_how_many_attempts_it_needed() {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let ctx = context(
        "# kiln: retries=2\n\
         RUN --mount=type=cache,target=/c,id=cli-flaky \
         n=$(( $(cat /c/n 2>/dev/null || echo 0) + 1 )); echo $n > /c/n; [ $n -ge 2 ]\n",
    );
    let (status, stderr) = build(&kiln, ctx.path(), &[]);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("2 attempts"), "the summary: {stderr}");
}

#[test]
fn bad_flags_and_bad_kiln_comments_are_build_errors() {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let ctx = context("# kiln: stall=often\nRUN true\n");
    let (status, stderr) = build(&kiln, ctx.path(), &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(stderr.contains("stall=often"), "{stderr}");
    let ctx = context("RUN true\n");
    let (status, stderr) = build(&kiln, ctx.path(), &["--stall-timeout", "soon"]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("--stall-timeout"), "{stderr}");
}

#[test]
fn help_documents_the_flags_and_exit_codes() {
    let kiln = Kiln::new();
    let out = kiln.ok(&["build", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--step-timeout",
        "--stall-timeout",
        "--retries",
        "# kiln:",
        "3 ",
        "4 ",
        "130",
        "143",
    ] {
        assert!(help.contains(needle), "{needle:?} in:\n{help}");
    }
}

// ---- two builds on one store -----------------------------------------------

#[test]
fn a_build_waiting_for_a_lock_another_build_holds_names_it_and_stalls() {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let mount = "--mount=type=cache,target=/cache,id=cli-lock,sharing=locked";
    let holder_ctx = context(&format!("RUN {mount} sleep 86426\n"));
    let waiter_ctx = context(&format!("RUN {mount} echo got lock $((6 * 7))\n"));
    let holder = start_build(&kiln, holder_ctx.path(), &["--stall-timeout", "0"]);
    wait_for_process("86426");
    let (status, stderr) = build(&kiln, waiter_ctx.path(), &["--stall-timeout", "2s"]);
    signal(holder.id(), "INT");
    let holder_pid = holder.id();
    let holder_out = wait_bounded(holder);
    assert_eq!(status.code(), Some(3), "{stderr}");
    let held_by = format!(
        "held by build {} (pid {holder_pid})",
        holder_ctx.path().join("Dockerfile").display()
    );
    assert!(
        stderr.contains(&format!(
            "waiting for cache mount /cache (id \"cli-lock\", sharing=locked): {held_by}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("got lock 42"), "{stderr}");
    assert_eq!(holder_out.status.code(), Some(130), "{}", text(&holder_out));
    assert_clean(&kiln, "86426");
}

// ---- interruption and crashes ----------------------------------------------

fn interrupt_cleans_up(signal_name: &str, code: i32, marker: &str) {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let ctx = context(&format!(
        "RUN --mount=type=cache,target=/c --mount=type=bind,target=/ctx,rw \
         echo started; sleep {marker}\n"
    ));
    let child = start_build(&kiln, ctx.path(), &[]);
    let pid = child.id();
    wait_for_process(marker);
    signal(pid, signal_name);
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    assert_clean(&kiln, marker);
    kiln.ok(&["store", "verify"]);
}

#[test]
fn sigint_kills_the_step_cleans_up_and_exits_130() {
    interrupt_cleans_up("INT", 130, "86423");
}

#[test]
fn sigterm_kills_the_step_cleans_up_and_exits_143() {
    interrupt_cleans_up("TERM", 143, "86424");
}

#[test]
fn sighup_kills_the_step_cleans_up_and_exits_129() {
    interrupt_cleans_up("HUP", 129, "86428");
}

#[test]
fn a_second_sigint_drops_the_layer_being_written() {
    // The first Ctrl-C cancels the sleeping step and says the big layer
    // under it is still written, kept for the next build; the second
    // stops that too: exit 130, nothing left, the store sound, and the
    // next build runs the step again.
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let big = "RUN head -c 400000000 /dev/urandom > /big\n";
    let ctx = context(&format!("{big}RUN sleep 86429\n"));
    let child = start_build(&kiln, ctx.path(), &["--progress", "plain"]);
    let pid = child.id();
    wait_for_process("86429");
    signal(pid, "INT");
    std::thread::sleep(Duration::from_millis(300));
    signal(pid, "INT");
    let out = wait_bounded(child);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(
        said.contains("1 layer is still being written") && said.contains("signal again to drop it"),
        "{said}"
    );
    assert_clean(&kiln, "86429");
    kiln.ok(&["store", "verify"]);

    let again = context(&format!("{big}RUN true\n"));
    let (status, said) = build(&kiln, again.path(), &["--progress", "plain"]);
    assert!(status.success(), "{said}");
    assert!(!said.contains("CACHED"), "{said}");
}

#[test]
fn sigint_during_a_push_to_a_silent_registry_exits_130() {
    // The build is done and its push waits on a registry that accepted
    // the connection and never answers (a minute per attempt, five
    // attempts): a Ctrl-C ends kiln there, with 130, not after the
    // retries.
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, connected) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            open.push(stream);
            let _ = accepted.send(());
        }
    });
    let ctx = context("COPY data.txt /\n");
    let tag = format!("127.0.0.1:{port}/silent/x:1");
    let child = start_build(&kiln, ctx.path(), &["--push", "-t", &tag]);
    let pid = child.id();
    connected
        .recv_timeout(BOUND)
        .expect("kiln never connected to the registry");
    signal(pid, "INT");
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains("build cancelled"), "{}", text(&out));
}

/// A small xorshift generator: the test prints its seed, so a failing run
/// can be replayed with `KILN_TEST_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("KILN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("KILN_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_9_at_random_points_then_the_next_build_succeeds_on_a_sound_store() {
    let Some(kiln) = kiln_with_base() else {
        return;
    };
    // Two stages, COPY, a cache mount, a rw bind (an overlay in kiln's own
    // mount namespace), a secret, and RUN steps that write and sleep a
    // little: kills land in every phase of a build.
    let ctx = context_with(
        "FROM kiln.test/busybox:1 AS deps\n\
         ARG ROUND\n\
         RUN --mount=type=cache,target=/cache echo $ROUND >> /cache/rounds; \
         mkdir -p /deps && seq 1 2000 > /deps/list && sleep 0.3\n\
         FROM deps\n\
         ARG ROUND\n\
         COPY data.txt /app/\n\
         RUN --mount=type=secret,id=token --mount=type=bind,target=/ctx,rw \
         cat /run/secrets/token > /dev/null; touch /ctx/scratch; \
         echo $ROUND > /app/round; sleep $((ROUND % 3)); : 86425\n\
         RUN dd if=/dev/zero of=/app/blob bs=64k count=64 2>/dev/null\n",
    );
    let secret = ctx.path().join("token.txt");
    fs_err::write(&secret, "s3cr3t").unwrap();
    let secret_flag = format!("id=token,src={}", secret.display());
    let mut rng = Rng::new();
    let rounds = 20;
    for round in 0..rounds {
        let child = kiln
            .cmd()
            .arg("build")
            .args(["--build-arg", &format!("ROUND={round}")])
            .args(["--secret", &secret_flag])
            .args(["-t", "kiln.test/crash:latest"])
            .arg(ctx.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.below(2000));
        std::thread::sleep(delay);
        let mut child = child;
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        // What the next build has to sweep: a step still running, say.
        let orphans = processes_with("86425").len();
        eprintln!("round {round}: killed after {delay:?} ({status}); {orphans} orphans");
    }
    let (status, stderr) = build(
        &kiln,
        ctx.path(),
        &[
            "--build-arg",
            "ROUND=final",
            "--secret",
            &secret_flag,
            "-t",
            "kiln.test/crash:latest",
        ],
    );
    assert!(status.success(), "{stderr}");
    kiln.ok(&["store", "verify"]);
    assert_clean(&kiln, "86425");
    // The image is whole: the last step's file is in it.
    let out = kiln.ok(&["inspect", "kiln.test/crash:latest"]);
    assert!(!out.stdout.is_empty());
}
