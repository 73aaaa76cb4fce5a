//! Rootless kiln: `kiln build` run by a normal user, in a user namespace
//! of its own (docs/ISOLATION.md, "Rootless"), gives the image a root
//! build of the same Dockerfile gives, bit for bit; with subordinate
//! ranges (newuidmap) a step may chown and change users, with none (a
//! single-id map) kiln says what that costs. The store is the user's
//! `$XDG_DATA_HOME/kiln`, and a killed rootless kiln leaves no step
//! running.
//!
//! The tests run as root (CI does) and make their users with useradd.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::need::{Root, Runc, Tool, need};
use kiln_testkit::{Registry, RegistryOptions};
use support::{Kiln, full_busybox_root, run, sleeping, tar_gz, text};

const BASE: &str = "kiln.local/rootless-base:1";
const EPOCH: &str = "1700000000";

/// The user with subordinate ranges, and the one without.
const RANGED: &str = "kiln-test-rl";
const SINGLE: &str = "kiln-test-rl1";

/// What the tests need: root (to make users), runc, setpriv, useradd and
/// newuidmap.
fn needs() -> bool {
    need(Root).is_some()
        && need(Runc).is_some()
        && need(Tool::Setpriv).is_some()
        && need(Tool::Useradd).is_some()
        && need(Tool::Newuidmap).is_some()
}

/// A user `name` (made if missing, as a system user: no home, and no
/// subordinate ids from useradd), whose /etc/subuid and /etc/subgid lines
/// are exactly `ranges` afterwards. Returns its uid and gid.
fn user(name: &str, ranges: Option<&str>) -> (u32, u32) {
    // Two test processes may edit the files at once.
    let lock = fs_err::File::create("/etc/.kiln-rootless-tests.lock").unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let exists = Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        run(Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh"])
            .arg(name));
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let old = fs_err::read_to_string(file).unwrap_or_default();
        let mut new: String = old
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        if let Some(range) = ranges {
            new.push_str(&format!("{name}:{range}\n"));
        }
        if new != old {
            fs_err::write(file, new).unwrap();
        }
    }
    let id = |flag: &str| -> u32 {
        let out = run(Command::new("id").arg(flag).arg(name));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A temp dir the user owns: its home, its XDG dirs, the context, the
/// kiln binary it runs (a link or copy: the checkout may be closed to it).
struct Home {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
}

impl Home {
    fn new(uid: u32, gid: u32) -> Home {
        let dir = tempfile::tempdir().unwrap();
        fs_err::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("bin");
        fs_err::create_dir(&bin).unwrap();
        let kiln = assert_cmd::cargo::cargo_bin("kiln");
        if fs_err::hard_link(&kiln, bin.join("kiln")).is_err() {
            fs_err::copy(&kiln, bin.join("kiln")).unwrap();
        }
        for d in ["home", "xdg"] {
            fs_err::create_dir(dir.path().join(d)).unwrap();
        }
        let home = Home { dir, uid, gid };
        home.chown_all();
        home
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the user everything made in its dir since (by root).
    fn chown_all(&self) {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(self.path().join("home"))
            .arg(self.path().join("xdg")));
    }

    /// kiln as the user: no capabilities, no groups, its own HOME and
    /// XDG_DATA_HOME, no KILN_ROOT (the store is the user's default).
    fn kiln(&self) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--inh-caps=-all", "--"])
            .arg(self.path().join("bin/kiln"))
            .current_dir(self.path().join("home"))
            .env("HOME", self.path().join("home"))
            .env("XDG_DATA_HOME", self.path().join("xdg"))
            .env("KILN_PROGRESS", "plain")
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env_remove("KILN_ROOT")
            .env_remove("DOCKER_CONFIG");
        c
    }

    /// The store kiln picks for the user.
    fn store(&self) -> PathBuf {
        self.path().join("xdg/kiln")
    }
}

/// A busybox base whose files have several owners: root, `app` (1000),
/// nobody (65534), as a gzipped tarball at `dir/rootfs.tar.gz`.
fn base_tarball(dir: &Path) -> PathBuf {
    let root = full_busybox_root(dir);
    fs_err::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    fs_err::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    for (d, owner) in [
        ("root", "0:0"),
        ("home/app", "1000:1000"),
        ("srv/nobody", "65534:65534"),
    ] {
        fs_err::create_dir_all(root.join(d)).unwrap();
        run(Command::new("chown").arg(owner).arg(root.join(d)));
    }
    fs_err::write(root.join("home/app/profile"), "app's\n").unwrap();
    run(Command::new("chown")
        .arg("1000:1000")
        .arg(root.join("home/app/profile")));
    let tarball = dir.join("rootfs.tar.gz");
    tar_gz(&root, &tarball);
    tarball
}

/// A context dir holding `dockerfile`, under `parent`.
fn context(parent: &Path, dockerfile: &str) -> PathBuf {
    let ctx = parent.join("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    fs_err::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn build_args(isolation: &str, ctx: &Path, out: &Path) -> Vec<String> {
    vec![
        "build".into(),
        "--isolation".into(),
        isolation.into(),
        "--output".into(),
        format!("type=oci,dest={},rewrite-timestamp=true", out.display()),
        ctx.display().to_string(),
    ]
}

fn digest_of(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// The same Dockerfile built by root (runc, its own store), for comparison.
fn root_build(work: &Path, tarball: &Path, dockerfile: &str) -> String {
    let kiln = Kiln::new();
    run(kiln.cmd().env("SOURCE_DATE_EPOCH", EPOCH).args([
        "import",
        tarball.to_str().unwrap(),
        "--tag",
        BASE,
    ]));
    let dir = work.join("as-root");
    let ctx = context(&dir, dockerfile);
    let out = dir.join("out");
    run(kiln
        .cmd()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(build_args("runc", &ctx, &out)));
    digest_of(&out)
}

fn user_ok(home: &Home, args: &[&str]) -> Output {
    let out = home.kiln().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kiln {args:?} as the user failed:\n{}",
        text(&out)
    );
    out
}

/// The base, made in the user's home (both builds import it from the same
/// path: the path is in the image's history).
fn users_base(home: &Home) -> PathBuf {
    let dir = home.path().join("home/base");
    fs_err::create_dir_all(&dir).unwrap();
    let tarball = base_tarball(&dir);
    home.chown_all();
    tarball
}

/// The user's build of `dockerfile` (base imported into the user's store
/// first); its digest and its output.
fn user_build(home: &Home, tarball: &Path, dockerfile: &str) -> (String, Output) {
    let dir = home.path().join("home/build");
    let ctx = context(&dir, dockerfile);
    home.chown_all();
    user_ok(home, &["import", tarball.to_str().unwrap(), "--tag", BASE]);
    let out = dir.join("out");
    let args = build_args("rootless", &ctx, &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = user_ok(home, &args);
    (digest_of(&out), output)
}

/// What a step does to a root: files made, removed (whiteouts, an opaque
/// directory), a hardlink, owners changed to other users, a step as
/// nobody, a cache mount.
const RANGED_DOCKERFILE: &str = r#"
FROM kiln.local/rootless-base:1
RUN mkdir -p /data/a /data/gone /data/opaque && echo a > /data/a/f && echo g > /data/gone/g \
 && echo o > /data/opaque/old && echo h > /data/hard && ln /data/hard /data/hard2 \
 && chown 1000:1000 /data/a/f && chown 65534:65534 /data/a && chown 123:456 /data/hard
RUN rm -rf /data/gone /data/opaque && mkdir /data/opaque && echo n > /data/opaque/new \
 && rm /bin/vi && echo more >> /home/app/profile
RUN mkdir /work && chown nobody:nogroup /work
USER nobody
WORKDIR /work
RUN id -u > uid && id -g > gid && echo mine > mine
USER root
RUN --mount=type=cache,target=/cache echo once >> /cache/log && cp /cache/log /data/log \
 && stat -c '%u:%g' /home/app /srv/nobody > /data/base-owners
"#;

#[test]
fn a_rootless_build_with_subordinate_ids_gives_the_root_builds_image() {
    if !needs() {
        return;
    }
    let (uid, gid) = user(RANGED, Some("300000:65536"));
    let home = Home::new(uid, gid);
    let tarball = users_base(&home);
    let work = tempfile::tempdir().unwrap();
    let by_root = root_build(work.path(), &tarball, RANGED_DOCKERFILE);
    let (by_user, output) = user_build(&home, &tarball, RANGED_DOCKERFILE);
    assert_eq!(
        by_user,
        by_root,
        "the same image as root's:\n{}",
        text(&output)
    );
    assert!(
        !text(&output).contains("no ranges"),
        "a ranged user got the single-id note:\n{}",
        text(&output)
    );
    // The store is the user's default, and its files are the user's (or
    // its subordinate ids'), never root's.
    let store = home.store();
    assert!(
        store.join("blobs/sha256").is_dir(),
        "no store at {}",
        store.display()
    );
    let meta = fs_err::metadata(&store).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    // A chowned file of a step is the subordinate id's on the host.
    let snapshots_owned_by_sub = Command::new("find")
        .arg(store.join("snapshots"))
        .args(["-uid", "300122", "-name", "hard"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&snapshots_owned_by_sub.stdout)
            .trim()
            .is_empty(),
        "uid 123 of the namespace is not the host's 300122"
    );
    // Nothing left mounted or running (the namespace's mounts went with it).
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(store.to_str().unwrap()), "{mounts}");
}

/// No chown, no other user: what a single-id namespace can build.
const SINGLE_DOCKERFILE: &str = r#"
FROM kiln.local/rootless-base:1
RUN mkdir -p /data/gone && echo g > /data/gone/g && echo h > /data/hard && ln /data/hard /data/hard2
RUN rm -rf /data/gone && rm /bin/vi && ls -la /home/app > /dev/null
"#;

#[test]
fn a_rootless_build_with_one_id_gives_the_root_builds_image_and_says_what_it_maps() {
    if !needs() {
        return;
    }
    let (uid, gid) = user(SINGLE, None);
    let home = Home::new(uid, gid);
    let tarball = users_base(&home);
    let work = tempfile::tempdir().unwrap();
    let by_root = root_build(work.path(), &tarball, SINGLE_DOCKERFILE);
    let (by_user, output) = user_build(&home, &tarball, SINGLE_DOCKERFILE);
    assert_eq!(
        by_user,
        by_root,
        "the same image as root's:\n{}",
        text(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("maps only its own ids").count(),
        1,
        "the single-id note, once:\n{stderr}"
    );

    // What it cannot do: become another user. The error is the step's.
    let dir = home.path().join("home/nobody");
    let ctx = context(
        &dir,
        "FROM kiln.local/rootless-base:1\nUSER nobody\nRUN true\n",
    );
    home.chown_all();
    let out = home
        .kiln()
        .args(["build", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "USER nobody with one id:\n{}",
        text(&out)
    );
}

/// `--isolation runc` is root's; a normal user is told to build rootless.
#[test]
fn a_normal_user_asking_for_runc_is_told_to_build_rootless() {
    if !needs() {
        return;
    }
    let (uid, gid) = user(RANGED, Some("300000:65536"));
    let home = Home::new(uid, gid);
    let ctx = context(&home.path().join("home"), "FROM scratch\n");
    home.chown_all();
    let out = home
        .kiln()
        .args(["build", "--isolation", "runc", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--isolation runc needs root"),
        "{}",
        text(&out)
    );
    // And root asking for rootless is told what it is for.
    let kiln = Kiln::new();
    let err = kiln.fails(&["build", "--isolation", "rootless", ctx.to_str().unwrap()]);
    assert!(err.contains("normal user"), "{err}");
}

/// A user given subordinate ranges on a machine without the setuid
/// helpers that map them (newuidmap, newgidmap: hidden here behind
/// /dev/null in a mount namespace of the test's) is told what to install,
/// rather than quietly given a single-id namespace that cannot chown.
#[test]
fn ranges_without_newuidmap_are_an_error_that_says_what_to_install() {
    // unshare(1) is util-linux's, as setpriv is.
    if !needs() {
        return;
    }
    let (uid, gid) = user(RANGED, Some("300000:65536"));
    let home = Home::new(uid, gid);
    let ctx = context(
        &home.path().join("home"),
        "FROM scratch\nCOPY Dockerfile /\n",
    );
    home.chown_all();
    let as_user = home.kiln();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount --bind /dev/null /usr/bin/newuidmap && \
             mount --bind /dev/null /usr/bin/newgidmap && exec \"$@\"",
        )
        .arg("sh")
        .arg(as_user.get_program())
        .args(as_user.get_args())
        .args(["build", "--isolation", "rootless", ctx.to_str().unwrap()])
        .current_dir(as_user.get_current_dir().unwrap());
    for (key, value) in as_user.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("newuidmap is not installed")
            && said.contains(RANGED)
            && said.contains("apt-get install uidmap"),
        "{said}"
    );
    // No step was started.
    let active = fs_err::read_dir(home.store().join("active")).map_or(0, |d| d.count());
    assert_eq!(active, 0, "{said}");
}

/// The user's build of a step running `sleep MARKER` twice (one in the
/// background), once both run.
fn build_sleeping(home: &Home, marker: &str) -> std::process::Child {
    let tarball = users_base(home);
    let dir = home.path().join("home").join(marker);
    let ctx = context(
        &dir,
        &format!("FROM kiln.local/rootless-base:1\nRUN (sleep {marker} &) ; sleep {marker}\n"),
    );
    home.chown_all();
    user_ok(home, &["import", tarball.to_str().unwrap(), "--tag", BASE]);
    let mut child = home
        .kiln()
        .args(["build", ctx.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while sleeping(marker).len() < 2 {
        assert!(Instant::now() < deadline, "the step never started");
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("kiln ended before its step ran ({status}):\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Waits up to `secs` for no `sleep MARKER` to be left.
fn none_left(marker: &str, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !sleeping(marker).is_empty() {
        assert!(Instant::now() < deadline, "{what}: {:?}", sleeping(marker));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The user's kiln SIGKILLed during a step: the kiln in the namespace dies
/// with it (parent-death signal), and the step with that one (its
/// guardian), within seconds.
#[test]
fn a_killed_rootless_kiln_leaves_no_step_running() {
    if !needs() {
        return;
    }
    let (uid, gid) = user(RANGED, Some("300000:65536"));
    let home = Home::new(uid, gid);
    // setpriv execs kiln: the child is the user's kiln itself.
    let mut child = build_sleeping(&home, "3119");
    child.kill().unwrap();
    child.wait().unwrap();
    none_left("3119", 15, "the step outlived its killed kiln");
}

/// SIGTERM to the user's kiln reaches the build in the namespace: the
/// step is cancelled, and kiln exits as a terminated build does (143).
#[test]
fn a_terminated_rootless_kiln_cancels_its_step() {
    if !needs() {
        return;
    }
    let (uid, gid) = user(RANGED, Some("300000:65536"));
    let home = Home::new(uid, gid);
    let mut child = build_sleeping(&home, "3121");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("SIGTERM did not end the rootless build");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(143), "{status}");
    none_left("3121", 5, "the step outlived its cancelled build");
}

/// A rootless step that outlives its timeout is ended, background
/// processes included: runc makes no cgroup there, so kiln kills the
/// step's init, and the kernel its pid namespace.
#[test]
fn a_rootless_step_dies_with_its_timeout() {
    if !needs() {
        return;
    }
    let (uid, gid) = user(RANGED, Some("300000:65536"));
    let home = Home::new(uid, gid);
    let tarball = users_base(&home);
    let ctx = context(
        &home.path().join("home"),
        "FROM kiln.local/rootless-base:1\nRUN (sleep 3120 &) ; sleep 3120\n",
    );
    home.chown_all();
    user_ok(&home, &["import", tarball.to_str().unwrap(), "--tag", BASE]);
    let started = Instant::now();
    let out = home
        .kiln()
        .args(["build", "--step-timeout", "3s", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "a timed-out step:\n{}",
        text(&out)
    );
    // At once, not after runc's 10 s grace for a `runc kill --all` that
    // cannot work without a cgroup.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the kill took {:?}",
        started.elapsed()
    );
    assert!(
        sleeping("3120").is_empty(),
        "the step outlived its timeout: {:?}",
        sleeping("3120")
    );
}

/// Inside its namespace the user's kiln still reads the user's registry
/// credentials (`~/.docker/config.json`, mode 0600) and reaches the
/// registry over the host's network: a build pushed to a registry with
/// basic auth.
#[test]
fn a_rootless_build_pushes_with_the_users_credentials() {
    if !needs() {
        return;
    }
    let Some(registry) = Registry::start(RegistryOptions {
        htpasswd: Some(("kiln".into(), "s3cret".into())),
        ..Default::default()
    }) else {
        return;
    };
    let (uid, gid) = user(RANGED, Some("300000:65536"));
    let home = Home::new(uid, gid);
    let tarball = users_base(&home);
    let docker = home.path().join("home/.docker");
    fs_err::create_dir_all(&docker).unwrap();
    // base64("kiln:s3cret")
    fs_err::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"a2lsbjpzM2NyZXQ="}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    fs_err::set_permissions(
        docker.join("config.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let ctx = context(
        &home.path().join("home/push"),
        "FROM kiln.local/rootless-base:1\nRUN echo pushed > /pushed\n",
    );
    home.chown_all();
    user_ok(&home, &["import", tarball.to_str().unwrap(), "--tag", BASE]);
    let name = format!("{}/rootless/app:1", registry.host());
    let output = format!("type=registry,name={name}");
    user_ok(
        &home,
        &["build", "--output", &output, ctx.to_str().unwrap()],
    );

    // Root pulls it back with the same credentials.
    let kiln = Kiln::new();
    let out = kiln
        .cmd()
        .env("DOCKER_CONFIG", &docker)
        .args(["pull", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}
