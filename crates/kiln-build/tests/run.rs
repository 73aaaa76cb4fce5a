//! The RUN step executor against real runc: a busybox root in a plain
//! directory (and, where layers matter, a real overlay snapshot), caches
//! in a store in a temp dir, and other processes (this binary re-executed)
//! holding locks. These tests need root; CI runs them as root.
//!
//! No timing is asserted: waits are bounded only so that a hang fails the
//! test instead of the CI job.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_build::{
    CacheMounts, ContentRef, DirSources, MountSources, RunError, RunStep, Secrets, cache_key_parts,
    run_step, sweep_scratch,
};
use kiln_build::{CommitOptions, OverlaySnapshotter, Snapshotter};
use kiln_build::{Event, EventSink, Stream};
use kiln_dockerfile::instructions::{Command, Expander, RunCommand, parse_dockerfile};
use kiln_image::Store;
use kiln_image::compress;
use kiln_image::media::Compression;
use kiln_sandbox::{
    Executor, ExitInfo, NetworkMode, OutputSink, RunControl, RunSpec, RuncExecutor, SandboxError,
};
use kiln_testkit::need::{Root, Runc, need};

// ---- support ---------------------------------------------------------------

/// Long enough for a loaded CI machine; never used to assert speed.
const BOUND: Duration = Duration::from_secs(120);

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "env", "pwd", "sleep", "grep", "wc", "touch", "true", "false",
    "mkdir", "printf", "stat", "test", "[", "rm",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nstaff:x:50:app\n";

/// A busybox root with /etc/passwd and /etc/group, in `root`.
fn make_rootfs(root: &Path) {
    fs_err::create_dir_all(root.join("bin")).unwrap();
    fs_err::create_dir_all(root.join("etc")).unwrap();
    fs_err::create_dir_all(root.join("root")).unwrap();
    fs_err::copy(kiln_testkit::busybox::busybox(), root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs_err::write(root.join("etc/passwd"), PASSWD).unwrap();
    fs_err::write(root.join("etc/group"), GROUP).unwrap();
}

/// Everything under `root`, relative, sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs_err::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs_err::canonicalize(dir).unwrap();
    fs_err::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(&dir))
        .collect()
}

/// Runs `f` on a thread and ends the test process if it does not return
/// within [`BOUND`] (nextest runs each test in a process of its own).
fn bounded<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let handle = s.spawn(move || {
            let value = f();
            let _ = tx.send(());
            value
        });
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(BOUND) {
            eprintln!("did not finish within {BOUND:?}");
            std::process::exit(101);
        }
        match handle.join() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Expansion that keeps every word as written: the tests write no
/// variables in their mounts.
struct AsWritten;

impl Expander for AsWritten {
    type Error = std::convert::Infallible;
    fn word(&mut self, word: &str) -> Result<String, Self::Error> {
        Ok(word.to_string())
    }
    fn words(&mut self, word: &str) -> Result<Vec<String>, Self::Error> {
        Ok(vec![word.to_string()])
    }
    fn raw(&mut self, text: &str) -> Result<String, Self::Error> {
        Ok(text.to_string())
    }
}

/// The last instruction of `FROM scratch\n<text>`, a RUN, expanded.
fn run_command(text: &str) -> RunCommand {
    let dockerfile = format!("FROM scratch\n{text}\n");
    let ast = kiln_dockerfile::parse(dockerfile.as_bytes()).unwrap();
    let file = parse_dockerfile(&ast).unwrap();
    let mut command = file.stages[0].commands.last().unwrap().clone();
    command.expand(&mut AsWritten).unwrap();
    match command {
        Command::Run(run) => run,
        other => panic!("not a RUN: {other:?}"),
    }
}

/// What a step reported.
#[derive(Debug, Default, Clone)]
struct Seen {
    stdout: Vec<String>,
    stderr: Vec<String>,
    notes: Vec<String>,
}

/// One test's world: a temp dir with a root, a context, a store for
/// caches, scratch space and an executor.
struct World {
    tmp: tempfile::TempDir,
    exec: RuncExecutor,
    caches: CacheMounts,
    secrets: Secrets,
    sources: DirSources,
    user: String,
    workdir: String,
    env: Vec<(String, String)>,
    network: NetworkMode,
}

impl World {
    fn new() -> Option<World> {
        need(Runc)?;
        let tmp = tempfile::tempdir().unwrap();
        make_rootfs(&tmp.path().join("rootfs"));
        fs_err::create_dir_all(tmp.path().join("context")).unwrap();
        fs_err::create_dir_all(tmp.path().join("store")).unwrap();
        let exec = RuncExecutor::new(tmp.path().join("sandbox"));
        let caches = CacheMounts::new(tmp.path().join("store"));
        let sources = DirSources::new(tmp.path().join("context"));
        Some(World {
            exec,
            caches,
            secrets: Secrets::new().with_dir(tmp.path().join("secrets")),
            sources,
            user: String::new(),
            workdir: "/".into(),
            env: Vec::new(),
            network: NetworkMode::None,
            tmp,
        })
    }

    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }

    fn context(&self) -> PathBuf {
        self.tmp.path().join("context")
    }

    fn scratch(&self) -> PathBuf {
        self.tmp.path().join("scratch")
    }

    fn store(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    /// Runs one RUN line in `rootfs` and returns how it ended and what it
    /// said.
    fn run_in(
        &self,
        rootfs: &Path,
        line: &str,
        control: &RunControl,
        events: Option<EventSink>,
    ) -> (Result<ExitInfo, RunError>, Seen) {
        self.run_on(&self.exec, rootfs, line, control, events)
    }

    /// [`run_in`](World::run_in) on another executor.
    fn run_on(
        &self,
        exec: &(dyn Executor + Sync),
        rootfs: &Path,
        line: &str,
        control: &RunControl,
        events: Option<EventSink>,
    ) -> (Result<ExitInfo, RunError>, Seen) {
        let command = run_command(line);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink: EventSink = {
            let seen = seen.clone();
            Arc::new(move |event| {
                let mut s = seen.lock().unwrap();
                match &event {
                    Event::StepLog {
                        stream: Stream::Stdout,
                        line,
                        ..
                    } => s.stdout.push(line.clone()),
                    Event::StepLog {
                        stream: Stream::Stderr,
                        line,
                        ..
                    } => s.stderr.push(line.clone()),
                    Event::StepNote { text, .. } => s.notes.push(text.clone()),
                    _ => {}
                }
                drop(s);
                if let Some(more) = &events {
                    more(event);
                }
            })
        };
        let scratch = self.scratch();
        let step = RunStep {
            rootfs,
            command: &command,
            shell: vec!["/bin/sh".into(), "-c".into()],
            env: self.env.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            default_network: self.network,
            sources: &self.sources,
            secrets: &self.secrets,
            caches: &self.caches,
            scratch: &scratch,
            control,
            step: 1,
            events: &sink,
            observer: None,
        };
        let result = bounded(|| run_step(exec, &step));
        let seen = seen.lock().unwrap().clone();
        (result, seen)
    }

    fn run(&self, line: &str) -> (Result<ExitInfo, RunError>, Seen) {
        self.run_in(&self.rootfs(), line, &RunControl::new(), None)
    }

    /// Runs a line that must succeed; returns its stdout lines.
    fn stdout(&self, line: &str) -> Vec<String> {
        let (result, seen) = self.run(line);
        if let Err(e) = result {
            panic!("{line}: {e}\nstderr: {:?}", seen.stderr);
        }
        seen.stdout
    }

    /// Nothing of the steps is left: no mount, no scratch or secret dir,
    /// no runc state or bundle.
    fn assert_clean(&self) {
        assert_eq!(mounts_under(self.tmp.path()), Vec::<String>::new());
        for dir in [self.scratch(), self.tmp.path().join("secrets")] {
            if dir.exists() {
                assert_eq!(listing(&dir), Vec::<String>::new(), "{}", dir.display());
            }
        }
        for dir in [self.exec.state_dir(), self.exec.bundle_dir()] {
            if dir.exists() {
                assert_eq!(listing(&dir), Vec::<String>::new(), "{}", dir.display());
            }
        }
    }
}

// ---- command lines -----------------------------------------------------------

#[test]
fn shell_form_runs_under_the_shell_with_both_streams() {
    let Some(w) = World::new() else {
        return;
    };
    let (result, seen) = w.run("RUN echo hello; echo oops >&2; printf 'no newline'");
    assert!(result.unwrap().success());
    assert_eq!(seen.stdout, ["hello", "no newline"]);
    assert_eq!(seen.stderr, ["oops"]);
    w.assert_clean();
}

#[test]
fn exec_form_runs_as_written() {
    let Some(w) = World::new() else {
        return;
    };
    assert_eq!(
        w.stdout(r#"RUN ["/bin/echo", "a  b", "$HOME"]"#),
        ["a  b $HOME"]
    );
}

#[test]
fn a_lone_heredoc_is_run_by_the_shell() {
    let Some(w) = World::new() else {
        return;
    };
    assert_eq!(
        w.stdout("RUN <<EOF\necho one\necho \"two $0\"\nEOF"),
        ["one", "two /bin/sh"]
    );
}

#[test]
fn a_shebang_heredoc_runs_as_a_script_file() {
    let Some(w) = World::new() else {
        return;
    };
    let out = w.stdout("RUN <<SCRIPT\n#!/bin/sh\necho \"running $0\"\nls -l $0\nSCRIPT");
    assert_eq!(out[0], "running /dev/pipes/SCRIPT");
    assert!(out[1].starts_with("-rwxr-xr-x"), "{out:?}");
    // Mounted under the run's own /dev: nothing of it in the root (which
    // keeps only the empty /dev runc made, as BuildKit's does).
    assert!(w.rootfs().join("dev").read_dir().unwrap().next().is_none());
    w.assert_clean();
}

#[test]
fn a_chomped_heredoc_loses_its_leading_tabs() {
    let Some(w) = World::new() else {
        return;
    };
    // Only once chomped does the body start with `#!`, and so become a
    // script that knows its own path.
    assert_eq!(
        w.stdout("RUN <<-EOF\n\t#!/bin/sh\n\techo \"chomped $0\"\n\tEOF"),
        ["chomped /dev/pipes/EOF"]
    );
}

#[test]
fn other_heredocs_are_read_by_the_shell() {
    let Some(w) = World::new() else {
        return;
    };
    assert_eq!(
        w.stdout("RUN cat <<A && cat <<-B\nfirst\nA\n\tsecond\n\tB"),
        ["first", "second"]
    );
}

#[test]
fn a_failing_command_says_so_as_buildkit_does() {
    let Some(w) = World::new() else {
        return;
    };
    let (result, _) = w.run("RUN exit 3");
    let err = result.unwrap_err();
    assert!(matches!(err, RunError::Failed { code: 3, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        r#"process "/bin/sh -c exit 3" did not complete successfully: exit code: 3"#
    );
    w.assert_clean();
}

// ---- user, working directory, environment -------------------------------------

#[test]
fn user_by_name_gets_its_groups() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.user = "app".into();
    assert_eq!(
        w.stdout("RUN id -u; id -g; id -G"),
        ["1000", "1000", "1000 50"]
    );
}

#[test]
fn user_by_id_needs_no_entry() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.user = "4321:7".into();
    assert_eq!(w.stdout("RUN id -u; id -g"), ["4321", "7"]);
}

#[test]
fn a_missing_user_is_buildkits_error() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.user = "ghost".into();
    let (result, _) = w.run("RUN true");
    assert_eq!(
        result.unwrap_err().to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

#[test]
fn a_missing_workdir_is_made_for_the_user() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.user = "app".into();
    w.workdir = "/srv/app".into();
    assert_eq!(w.stdout("RUN pwd; touch mine"), ["/srv/app"]);
    let made = fs_err::metadata(w.rootfs().join("srv/app")).unwrap();
    assert_eq!(
        (made.uid(), made.gid(), made.mode() & 0o7777),
        (1000, 1000, 0o755)
    );
    assert!(w.rootfs().join("srv/app/mine").exists());
}

#[test]
fn the_environment_is_given_in_order_with_a_default_path() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.env = vec![("A".into(), "1".into()), ("B".into(), "two words".into())];
    assert_eq!(
        w.stdout("RUN echo \"$A|$B|$PATH\""),
        ["1|two words|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
}

#[test]
fn network_none_has_only_loopback() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.network = NetworkMode::Host;
    assert_eq!(w.stdout("RUN --network=none ls /sys/class/net"), ["lo"]);
    // The build's default, here the host's network, shows the host's.
    // veth pairs come and go with other containers (dockerd's BuildKit
    // runs beside these tests): compare the rest.
    let stable = |names: Vec<String>| -> Vec<String> {
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| !n.starts_with("veth"))
            .collect();
        names.sort();
        names
    };
    let on_host: Vec<String> = fs_err::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(stable(w.stdout("RUN ls /sys/class/net")), stable(on_host));
}

#[test]
fn ssh_mounts_and_devices_are_refused_with_their_line() {
    let Some(w) = World::new() else {
        return;
    };
    let (result, _) = w.run("RUN --mount=type=ssh true");
    assert_eq!(
        result.unwrap_err().to_string(),
        "line 2: RUN --mount=type=ssh is not supported yet"
    );
    let (result, _) = w.run("RUN --device=vendor.com/gpu=0 true");
    assert_eq!(
        result.unwrap_err().to_string(),
        "line 2: RUN --device is not supported yet"
    );
}

// ---- bind and tmpfs mounts -----------------------------------------------------

#[test]
fn bind_mounts_read_the_context_read_only_by_default() {
    let Some(w) = World::new() else {
        return;
    };
    fs_err::create_dir_all(w.context().join("src")).unwrap();
    fs_err::write(w.context().join("src/main.c"), "int main;").unwrap();
    let (result, seen) =
        w.run("RUN --mount=target=/ctx,source=src cat /ctx/main.c && touch /ctx/new");
    assert!(matches!(result, Err(RunError::Failed { .. })));
    assert_eq!(seen.stdout, ["int main;"]);
    assert!(seen.stderr[0].contains("Read-only file system"), "{seen:?}");
    assert!(!w.rootfs().join("ctx").exists(), "the mount point is gone");
    w.assert_clean();
}

#[test]
fn rw_bind_writes_are_thrown_away() {
    let Some(mut w) = World::new() else {
        return;
    };
    let stage = w.tmp.path().join("stage");
    fs_err::create_dir_all(stage.join("out")).unwrap();
    fs_err::write(stage.join("out/a"), "from stage").unwrap();
    w.sources = w.sources.clone().with("build", &stage);
    let out = w.stdout(
        "RUN --mount=type=bind,from=build,source=/out,target=/in,rw \
         echo changed > /in/a && echo new > /in/b && cat /in/a /in/b",
    );
    assert_eq!(out, ["changed", "new"]);
    assert_eq!(
        fs_err::read_to_string(stage.join("out/a")).unwrap(),
        "from stage"
    );
    assert!(!stage.join("out/b").exists());
    // A file source: a throwaway copy.
    fs_err::write(w.context().join("notes.txt"), "kept\n").unwrap();
    assert_eq!(
        w.stdout("RUN --mount=source=notes.txt,target=/n.txt,rw echo more >> /n.txt && cat /n.txt"),
        ["kept", "more"]
    );
    assert_eq!(
        fs_err::read_to_string(w.context().join("notes.txt")).unwrap(),
        "kept\n"
    );
    assert!(!w.rootfs().join("in").exists());
    w.assert_clean();
}

#[test]
fn rw_bind_over_a_stage_mounted_read_only() {
    let Some(mut w) = World::new() else {
        return;
    };
    let store = Store::open(w.tmp.path().join("snap-store")).unwrap();
    let snap = OverlaySnapshotter::new(&store).unwrap();
    let base = snap.activate(&[], "stage").unwrap();
    fs_err::create_dir_all(base.root().join("app")).unwrap();
    fs_err::write(base.root().join("app/config"), "stage\n").unwrap();
    let chain = base.commit(&CommitOptions::default()).unwrap().chain;
    let stage = snap.mount_readonly(&chain).unwrap();
    w.sources = w.sources.clone().with("stage", stage.root());
    // An overlay whose lower dir is itself an overlay.
    let out = w.stdout(
        "RUN --mount=type=bind,from=stage,target=/st,rw \
         echo step >> /st/app/config && rm /st/app/config && ls /st/app | wc -l",
    );
    assert_eq!(out, ["0"]);
    assert_eq!(
        fs_err::read_to_string(stage.root().join("app/config")).unwrap(),
        "stage\n"
    );
    stage.release().unwrap();
    w.assert_clean();
}

#[test]
fn a_missing_bind_source_is_named() {
    let Some(w) = World::new() else {
        return;
    };
    let (result, _) = w.run("RUN --mount=target=/x,source=nope true");
    assert_eq!(
        result.unwrap_err().to_string(),
        "mount source \"/nope\" not found in context"
    );
}

#[test]
fn tmpfs_mounts_are_private_and_gone_after() {
    let Some(w) = World::new() else {
        return;
    };
    let out = w.stdout(
        "RUN --mount=type=tmpfs,target=/scratch,size=1m \
         echo x > /scratch/f && grep ' /scratch ' /proc/mounts",
    );
    assert!(out[0].starts_with("tmpfs /scratch tmpfs"), "{out:?}");
    assert!(out[0].contains("size=1024k"), "{out:?}");
    assert!(!w.rootfs().join("scratch").exists());
}

// ---- secrets -----------------------------------------------------------------

#[test]
fn secrets_are_files_and_variables_and_leave_nothing() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.secrets = w
        .secrets
        .clone()
        .with("token", "s3cr3t")
        .with("aws", "AKIA");
    let out = w.stdout(
        "RUN --mount=type=secret,id=token --mount=type=secret,id=aws,env=AWS_KEY \
         --mount=type=secret,id=token,target=/etc/tok,mode=0440,uid=1000 \
         cat /run/secrets/token; echo; echo \"$AWS_KEY\"; stat -c '%a %u' /run/secrets/token /etc/tok; \
         test -e /run/secrets/aws || echo no-aws-file",
    );
    assert_eq!(out, ["s3cr3t", "AKIA", "400 0", "440 1000", "no-aws-file"]);
    let left = listing(&w.rootfs());
    assert!(!left.iter().any(|p| p.starts_with("run")), "{left:?}");
    assert!(!w.rootfs().join("etc/tok").exists());
    w.assert_clean();
}

#[test]
fn a_missing_secret_fails_only_when_required() {
    let Some(w) = World::new() else {
        return;
    };
    let (result, _) = w.run("RUN --mount=type=secret,id=mysecret,required true");
    assert_eq!(
        result.unwrap_err().to_string(),
        "secret mysecret: not found"
    );
    // Optional: no file; a variable is set, empty, as in BuildKit.
    let out = w.stdout(
        "RUN --mount=type=secret,id=mysecret --mount=type=secret,id=mysecret,env=S \
         test -e /run/secrets/mysecret || echo \"no file, S=[$S]\"",
    );
    assert_eq!(out, ["no file, S=[]"]);
}

// ---- cache mounts --------------------------------------------------------------

#[test]
fn a_cache_persists_across_steps_and_never_lands_in_the_root() {
    let Some(w) = World::new() else {
        return;
    };
    let line = "RUN --mount=type=cache,target=/root/.cache/pip \
                echo run >> /root/.cache/pip/log && wc -l < /root/.cache/pip/log";
    assert_eq!(w.stdout(line), ["1"]);
    assert_eq!(w.stdout(line), ["2"]);
    assert!(!w.rootfs().join("root/.cache").exists());
    // Kept in the store, outside any root.
    let kept: Vec<String> = listing(&w.store())
        .into_iter()
        .filter(|p| p.ends_with("/log"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("cache-mounts/"));
    w.assert_clean();
}

/// Renames `from` onto `onto` just before its first run, then runs as
/// runc: a parallel step's `mv` landing between kiln's pin of a cache
/// directory and runc's mount of it.
struct RenamesFirst {
    inner: RuncExecutor,
    rename: Mutex<Option<(PathBuf, PathBuf)>>,
}

impl Executor for RenamesFirst {
    fn run(
        &self,
        spec: &RunSpec,
        output: &dyn OutputSink,
        control: &RunControl,
    ) -> Result<ExitInfo, SandboxError> {
        if let Some((from, onto)) = self.rename.lock().unwrap().take() {
            fs_err::rename(from, onto).unwrap();
        }
        self.inner.run(spec, output, control)
    }
}

#[test]
fn a_cache_directory_replaced_after_its_pin_is_mounted_as_found_again() {
    let Some(w) = World::new() else {
        return;
    };
    w.stdout("RUN --mount=type=cache,id=c,target=/c mkdir /c/other && touch /c/other/mark");
    let other = listing(&w.store())
        .into_iter()
        .find(|p| p.ends_with("/other"))
        .map(|p| w.store().join(p))
        .unwrap();
    // `sub` is missing: kiln makes it empty and pins it; the rename then
    // replaces it before runc mounts the pin (the kernel refuses to
    // mount a removed directory).
    let exec = RenamesFirst {
        inner: RuncExecutor::new(w.tmp.path().join("sandbox")),
        rename: Mutex::new(Some((other.clone(), other.with_file_name("sub")))),
    };
    let (result, seen) = w.run_on(
        &exec,
        &w.rootfs(),
        "RUN --mount=type=cache,id=c,target=/x,source=sub ls /x",
        &RunControl::new(),
        None,
    );
    assert!(exec.rename.lock().unwrap().is_none(), "renamed");
    if let Err(e) = result {
        panic!("{e}\nstderr: {:?}", seen.stderr);
    }
    assert_eq!(seen.stdout, ["mark"]);
    w.assert_clean();
}

#[test]
fn cache_ids_and_modes() {
    let Some(w) = World::new() else {
        return;
    };
    // The id, not the target, names a cache.
    w.stdout("RUN --mount=type=cache,id=shared-id,target=/a touch /a/mark");
    assert_eq!(
        w.stdout("RUN --mount=type=cache,id=shared-id,target=/b ls /b"),
        ["mark"]
    );
    assert_eq!(
        w.stdout(
            "RUN --mount=type=cache,target=/c,uid=1000,gid=50,mode=0700 stat -c '%a %u %g' /c"
        ),
        ["700 1000 50"]
    );
    assert_eq!(
        w.stdout("RUN --mount=type=cache,target=/d stat -c '%a %u %g' /d"),
        ["755 0 0"]
    );
    // A relative target is under the working directory; its id is as written.
    let mut w = w;
    w.workdir = "/app".into();
    w.stdout("RUN --mount=type=cache,target=rel touch /app/rel/here");
    assert_eq!(
        w.stdout("RUN --mount=type=cache,id=rel,target=/elsewhere ls /elsewhere"),
        ["here"]
    );
    // `ro` mounts it read-only.
    let (result, seen) = w.run("RUN --mount=type=cache,target=/d,ro touch /d/x");
    assert!(matches!(result, Err(RunError::Failed { .. })), "{seen:?}");
}

#[test]
fn a_cache_is_seeded_from_its_source_once() {
    let Some(mut w) = World::new() else {
        return;
    };
    let stage = w.tmp.path().join("stage");
    fs_err::create_dir_all(stage.join("seed")).unwrap();
    fs_err::write(stage.join("seed/f"), "seeded\n").unwrap();
    w.sources = w.sources.clone().with("deps", &stage);
    let line = "RUN --mount=type=cache,target=/c,from=deps,source=/seed \
                cat /c/f && echo more >> /c/f";
    assert_eq!(w.stdout(line), ["seeded"]);
    assert_eq!(w.stdout(line), ["seeded", "more"]);
}

#[test]
fn a_cache_never_lands_in_a_layer() {
    let Some(w) = World::new() else {
        return;
    };
    let store = Store::open(w.tmp.path().join("snap-store")).unwrap();
    let snap = OverlaySnapshotter::new(&store).unwrap();
    let base = snap.activate(&[], "base").unwrap();
    make_rootfs(base.root());
    let chain = base.commit(&CommitOptions::default()).unwrap().chain;

    let active = snap.activate(&chain, "run").unwrap();
    let (result, seen) = w.run_in(
        active.root(),
        "RUN --mount=type=cache,target=/var/cache/apt \
         echo pkg > /var/cache/apt/pkg.deb && echo out > /out",
        &RunControl::new(),
        None,
    );
    result.unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    let committed = active.commit(&CommitOptions::default()).unwrap();
    let layer = committed.layer.expect("a layer");
    let compression = Compression::from_media_type(&layer.descriptor.media_type).unwrap();
    let mut tar_bytes = Vec::new();
    compress::decompress(
        store.open_blob(&layer.descriptor.digest).unwrap(),
        compression,
    )
    .unwrap()
    .read_to_end(&mut tar_bytes)
    .unwrap();
    let names: Vec<String> = tar::Archive::new(&tar_bytes[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
        .collect();
    // The root had no /dev, /proc or /sys: as in BuildKit, the empty ones
    // runc made are in the layer; the cache is not.
    assert_eq!(names, ["dev/", "out", "proc/", "sys/"]);
    // The cache kept it.
    let kept = listing(&w.store());
    assert!(kept.iter().any(|p| p.ends_with("/pkg.deb")), "{kept:?}");
    w.assert_clean();
}

#[test]
fn private_caches_give_concurrent_steps_their_own_dirs() {
    let Some(w) = World::new() else {
        return;
    };
    let ctl = w.context();
    let first_started = Arc::new(Mutex::new(None::<mpsc::Sender<()>>));
    let (started_tx, started_rx) = mpsc::channel();
    *first_started.lock().unwrap() = Some(started_tx);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let events: EventSink = {
                let first_started = first_started.clone();
                Arc::new(move |e| {
                    if matches!(&e, Event::StepLog { line, .. } if line == "started")
                        && let Some(tx) = first_started.lock().unwrap().take()
                    {
                        let _ = tx.send(());
                    }
                })
            };
            w.run_in(
                &w.rootfs(),
                "RUN --mount=type=cache,target=/c,sharing=private --mount=target=/ctl \
                 touch /c/first; echo started; \
                 while [ ! -e /ctl/go ]; do sleep 0.05; done; ls /c",
                &RunControl::new(),
                Some(events),
            )
        });
        started_rx
            .recv_timeout(BOUND)
            .expect("the first step started");
        // The first holds its instance: the second must get another.
        let second =
            w.stdout("RUN --mount=type=cache,target=/c,sharing=private touch /c/second; ls /c");
        assert_eq!(second, ["second"]);
        fs_err::write(ctl.join("go"), "").unwrap();
        let (result, seen) = first.join().unwrap();
        result.unwrap();
        assert_eq!(seen.stdout, ["started", "first"]);
    });
    // Both free now: a third step reuses one of them.
    let third = w.stdout("RUN --mount=type=cache,target=/c,sharing=private ls /c");
    assert!(third == ["first"] || third == ["second"], "{third:?}");
}

#[test]
fn shared_caches_are_used_together() {
    let Some(w) = World::new() else {
        return;
    };
    let ctl = w.context();
    std::thread::scope(|s| {
        let (started_tx, started_rx) = mpsc::channel();
        let started_tx = Mutex::new(Some(started_tx));
        let first = s.spawn(|| {
            let events: EventSink = Arc::new(move |e| {
                if matches!(&e, Event::StepLog { line, .. } if line == "started")
                    && let Some(tx) = started_tx.lock().unwrap().take()
                {
                    let _ = tx.send(());
                }
            });
            w.run_in(
                &w.rootfs(),
                "RUN --mount=type=cache,target=/c --mount=target=/ctl \
                 touch /c/first; echo started; \
                 while [ ! -e /ctl/go ]; do sleep 0.05; done; ls /c",
                &RunControl::new(),
                Some(events),
            )
        });
        started_rx
            .recv_timeout(BOUND)
            .expect("the first step started");
        assert_eq!(
            w.stdout("RUN --mount=type=cache,target=/c touch /c/second; ls /c"),
            ["first", "second"]
        );
        fs_err::write(ctl.join("go"), "").unwrap();
        let (result, seen) = first.join().unwrap();
        result.unwrap();
        assert_eq!(seen.stdout, ["started", "first", "second"]);
    });
}

// ---- locked caches across processes ---------------------------------------------

const CHILD_ROLE: &str = "KILN_RUN_TEST_CHILD";
const CHILD_STORE: &str = "KILN_RUN_TEST_STORE";
const CHILD_CTL: &str = "KILN_RUN_TEST_CTL";
const REPORT: &str = "@@report";

/// The step both processes run on one `locked` cache: the child writes
/// into it, says so and holds it until the control dir has `release`.
const CHILD_LINE: &str = "RUN --mount=type=cache,id=the-lock,target=/cache,sharing=locked \
    --mount=target=/ctl \
    echo child > /cache/from-child; echo holding; \
    while [ ! -e /ctl/release ]; do sleep 0.05; done";

/// Not a test of its own: the body of the process the tests below start
/// (another kiln build on the same store). Does nothing under the harness.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    assert_eq!(role, "hold-locked");
    let tmp = tempfile::tempdir().unwrap();
    make_rootfs(&tmp.path().join("rootfs"));
    let command = run_command(CHILD_LINE);
    let caches = CacheMounts::new(std::env::var(CHILD_STORE).unwrap()).with_build("child-build");
    let sources = DirSources::new(std::env::var(CHILD_CTL).unwrap());
    let events: EventSink = Arc::new(|e| {
        if let Event::StepLog { line, .. } = e {
            println!("{REPORT} log {line}");
        }
    });
    let exec = RuncExecutor::new(tmp.path().join("sandbox"));
    let step = RunStep {
        rootfs: &tmp.path().join("rootfs"),
        command: &command,
        shell: vec!["/bin/sh".into(), "-c".into()],
        env: Vec::new(),
        user: String::new(),
        workdir: "/".into(),
        default_network: NetworkMode::None,
        sources: &sources,
        secrets: &Secrets::new(),
        caches: &caches,
        scratch: &tmp.path().join("scratch"),
        control: &RunControl::new(),
        step: 42,
        events: &events,
        observer: None,
    };
    run_step(&exec, &step).unwrap();
    println!("{REPORT} done");
}

/// Starts the child on `w`'s store and returns it once it holds the lock,
/// with the receiver of its further reports.
fn start_holder(w: &World) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, "hold-locked")
        .env(CHILD_STORE, w.store())
        .env(CHILD_CTL, w.context())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness may have started the line ("test child_process ... ").
            if let Some((_, report)) = line.split_once(REPORT) {
                let _ = tx.send(report.trim().to_string());
            }
        }
    });
    loop {
        match rx.recv_timeout(BOUND) {
            Ok(report) if report == "log holding" => return (child, rx),
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("the child never held the lock: {e}");
            }
        }
    }
}

fn release_and_wait(w: &World, mut child: std::process::Child, reports: mpsc::Receiver<String>) {
    fs_err::write(w.context().join("release"), "").unwrap();
    loop {
        match reports.recv_timeout(BOUND) {
            Ok(report) if report == "done" => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("the child did not finish: {e}");
            }
        }
    }
    assert!(bounded(|| child.wait()).unwrap().success());
}

#[test]
fn a_locked_cache_held_by_another_process_is_waited_for() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.caches = w
        .caches
        .clone()
        .with_note_interval(Duration::from_millis(200));
    let (child, reports) = start_holder(&w);
    let child_pid = child.id();

    // The first note says who holds it; then the child lets go.
    let (note_tx, note_rx) = mpsc::channel::<String>();
    let note_tx = Mutex::new(note_tx);
    let events: EventSink = Arc::new(move |e| {
        if let Event::StepNote { text, .. } = e {
            let _ = note_tx.lock().unwrap().send(text);
        }
    });
    let releaser = {
        let ctl = w.context();
        std::thread::spawn(move || {
            let first = note_rx.recv_timeout(BOUND).expect("a note while waiting");
            fs_err::write(ctl.join("release"), "").unwrap();
            first
        })
    };
    let (result, seen) = w.run_in(
        &w.rootfs(),
        "RUN --mount=type=cache,id=the-lock,target=/cache,sharing=locked cat /cache/from-child",
        &RunControl::new(),
        Some(events),
    );
    result.unwrap();
    assert_eq!(
        seen.stdout,
        ["child"],
        "the same directory, after the child"
    );
    let note = releaser.join().unwrap();
    assert!(note.starts_with("waiting for cache mount /cache"), "{note}");
    assert!(note.contains("sharing=locked"), "{note}");
    assert!(note.contains("build child-build"), "{note}");
    assert!(note.contains(&format!("pid {child_pid}")), "{note}");
    assert!(note.contains("step #42"), "{note}");
    release_and_wait(&w, child, reports);
    w.assert_clean();
}

#[test]
fn waiting_for_a_locked_cache_can_be_cancelled() {
    let Some(mut w) = World::new() else {
        return;
    };
    w.caches = w
        .caches
        .clone()
        .with_note_interval(Duration::from_millis(200));
    let (child, reports) = start_holder(&w);

    let control = RunControl::new();
    let events: EventSink = {
        let control = control.clone();
        Arc::new(move |e| {
            if matches!(e, Event::StepNote { .. }) {
                control.cancel();
            }
        })
    };
    let (result, seen) = w.run_in(
        &w.rootfs(),
        "RUN --mount=type=cache,id=the-lock,target=/cache,sharing=locked echo never",
        &control,
        Some(events),
    );
    assert!(matches!(result, Err(RunError::Cancelled)), "{result:?}");
    assert!(seen.stdout.is_empty());
    assert!(!seen.notes.is_empty());
    release_and_wait(&w, child, reports);
    w.assert_clean();
}

// ---- cache keys ----------------------------------------------------------------

#[test]
fn cache_key_parts_describe_mounts_in_target_order() {
    let command = run_command(
        "RUN --mount=type=secret,id=tok --mount=type=cache,target=/z,sharing=locked \
         --mount=type=bind,from=build,source=out,target=a --network=none echo",
    );
    let parts = cache_key_parts(&command, "/w", NetworkMode::Host).unwrap();
    let texts: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            r#"{"part":"secret","id":"tok","target":"/run/secrets/tok","env":null,"required":false,"mode":"0400","uid":0,"gid":0}"#,
            r#"{"part":"bind","target":"/w/a","from":"build","source":"/out","readonly":true}"#,
            r#"{"part":"cache","target":"/z","id":"/z","sharing":"locked","readonly":false,"from":null,"source":"/","mode":"0755","uid":0,"gid":0}"#,
            r#"{"part":"network","mode":"none"}"#,
            r#"{"part":"security","mode":"sandbox"}"#,
        ]
    );
    assert_eq!(
        parts[1].content,
        Some(ContentRef {
            from: Some("build".into()),
            path: "/out".into()
        })
    );
    let without: Vec<_> = parts.iter().filter(|p| p.content.is_none()).collect();
    assert_eq!(without.len(), parts.len() - 1);

    // The script of a shebang heredoc is part of the key, its shell is not.
    let script = run_command("RUN <<EOF\n#!/bin/sh\necho hi\nEOF");
    let parts = cache_key_parts(&script, "/", NetworkMode::None).unwrap();
    assert_eq!(
        parts[0].text,
        r##"{"part":"script","path":"/dev/pipes/EOF","data":"#!/bin/sh\necho hi\n"}"##
    );
}

#[test]
fn dir_sources_resolve_names_case_insensitively() {
    let sources = DirSources::new("/ctx").with("Build", "/stages/build");
    assert_eq!(sources.resolve(None).unwrap().root(), Path::new("/ctx"));
    assert_eq!(
        sources.resolve(Some("build")).unwrap().root(),
        Path::new("/stages/build")
    );
    let err = sources.resolve(Some("nope")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mount from \"nope\": no such stage or image"
    );
}

#[test]
fn sweeping_scratch_removes_what_a_dead_kiln_left() {
    if need(Root).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    // A pid that was alive and is not any more.
    let mut gone = Process::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let left = scratch.join(format!("run-{dead}-0"));
    let point = left.join("bind-0/merged");
    fs_err::create_dir_all(&point).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &point,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    let ours = scratch.join(format!("run-{}-0", std::process::id()));
    fs_err::create_dir_all(&ours).unwrap();

    assert_eq!(sweep_scratch(&scratch).unwrap(), 1);
    assert!(!left.exists());
    assert!(ours.exists(), "a live process's dir stays");
    assert_eq!(mounts_under(tmp.path()), Vec::<String>::new());
}
