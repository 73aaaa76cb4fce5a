//! Output, exit codes, environment, identity.

use std::time::Duration;

use kiln_sandbox::{Executor, Lines, RunControl, SandboxError, Stream, resolve_user};
use kiln_testkit::need::{Runc, need};

use crate::harness::{Sandbox, bounded};

#[test]
fn echo_output_is_captured() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let (result, output) = sb.run(&sb.spec("echo hi; echo oops >&2"));
    let exit = result.unwrap();
    assert!(exit.success(), "{exit:?}: {}", output.stderr_text());
    assert_eq!(output.stdout_text(), "hi\n");
    assert_eq!(output.stderr_text(), "oops\n");
    sb.assert_no_leftovers();
}

#[test]
fn exit_codes_are_returned() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let (result, _) = sb.run(&sb.spec("exit 3"));
    let exit = result.unwrap();
    assert_eq!((exit.code, exit.cancelled, exit.signal()), (3, false, None));
    assert!(!exit.success());
}

#[test]
fn death_by_signal_reads_as_128_plus_n() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let mut spec = sb.spec("");
    spec.args = vec!["/bin/sleep".into(), "1000".into()];
    let control = RunControl::new();
    let output = kiln_sandbox::Collect::new();
    let exit = std::thread::scope(|s| {
        let run = s.spawn(|| sb.exec.run(&spec, &output, &control));
        let init = control
            .wait_started(crate::harness::BOUND)
            .expect("started");
        // From outside its namespace SIGKILL reaches a pid 1 (pid_namespaces(7)).
        let pid = rustix::process::Pid::from_raw(init.pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        run.join().unwrap()
    })
    .unwrap();
    assert_eq!(
        (exit.code, exit.signal(), exit.cancelled),
        (137, Some(9), false)
    );
    sb.assert_no_leftovers();
}

#[test]
fn env_and_cwd_are_the_specs() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    fs_err::create_dir_all(sb.rootfs().join("work/dir")).unwrap();
    let mut spec = sb.spec("echo \"$GREETING\"; pwd; env | grep -c .");
    spec.env.push("GREETING=hello world".into());
    spec.cwd = "/work/dir".into();
    // PATH, GREETING, and the HOSTNAME/HOME that runc and sh add.
    let out = sb.stdout_of(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["hello world", "/work/dir"]);
}

#[test]
fn user_and_groups_come_from_the_roots_files() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    sb.write(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    sb.write(
        "/etc/group",
        "root:x:0:\napp:x:1000:\nbuilders:x:2000:app\naudio:x:29:root,app\n",
    );
    let before = sb.listing();
    let user = resolve_user(&sb.rootfs(), "app").unwrap();
    let mut spec = sb.spec("id -u; id -g; id -G");
    spec.user = user;
    let out = sb.stdout_of(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"]);
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(
        groups.contains(&"2000") && groups.contains(&"29"),
        "{groups:?}"
    );
    // The files were only read, and /etc got no stub back.
    assert_eq!(sb.listing(), before);
}

#[test]
fn a_missing_command_is_a_start_error() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let before = sb.listing();
    let mut spec = sb.spec("");
    spec.args = vec!["/bin/no-such-tool".into()];
    let (result, _) = sb.run(&spec);
    match result {
        Err(SandboxError::Start { stderr, .. }) => {
            assert!(stderr.contains("no-such-tool"), "{stderr}")
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    assert_eq!(sb.listing(), before);
    sb.assert_no_leftovers();
}

#[test]
fn output_can_be_taken_line_by_line() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let lines = std::sync::Mutex::new(Vec::new());
    let sink = Lines::new(|stream: Stream, line: &[u8]| {
        lines
            .lock()
            .unwrap()
            .push((stream, String::from_utf8_lossy(line).into_owned()))
    });
    let spec = sb.spec("echo one; echo two; printf three");
    let exit = bounded(|| sb.exec.run(&spec, &sink, &RunControl::new())).unwrap();
    assert!(exit.success());
    let got = lines.into_inner().unwrap();
    let texts: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
}

#[test]
fn usable_from_tokio() {
    if need(Runc).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let sb = std::sync::Arc::new(Sandbox::new());
        let control = RunControl::new();
        let spec = sb.spec("sleep 1000");
        let run = tokio::task::spawn_blocking({
            let (sb, control) = (sb.clone(), control.clone());
            move || sb.exec.run(&spec, &kiln_sandbox::Collect::new(), &control)
        });
        let started = tokio::task::spawn_blocking({
            let control = control.clone();
            move || control.wait_started(crate::harness::BOUND)
        });
        assert!(started.await.unwrap().is_some());
        control.cancel();
        let exit = tokio::time::timeout(crate::harness::BOUND, run)
            .await
            .expect("run ended")
            .unwrap()
            .unwrap();
        assert!(exit.cancelled);
        tokio::time::sleep(Duration::from_millis(1)).await;
        sb.assert_no_leftovers();
    });
}
