//! The first process of a chroot run: kiln run again in a hidden mode,
//! between kiln and the step (see the module above).

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Resource, Rlimit as RawRlimit, Signal, WaitOptions};
use rustix::thread::CapabilitySet;
use serde_json::{Value, json};

use crate::runc::bundle::{CAPABILITY_NAMES, HostFacts};
use crate::spec::{DEFAULT_CAPABILITIES, RunSpec, SecurityMode};

/// The hidden first argument that makes kiln the command of a chroot run
/// ([`run_chroot_exec`]); the init starts `/proc/self/exe` with it.
pub const CHROOT_EXEC: &str = "__chroot-exec";

/// Where the init hands the spec to [`run_chroot_exec`].
const SPEC_VAR: &str = "KILN_CHROOT_SPEC";

/// What kiln writes to end a run.
pub(crate) const KILL: &[u8] = b"k";

/// The exit code of a run whose command could not be started (as a shell's
/// "command not found").
const NOT_STARTED: u8 = 127;

/// The run's spec as the one line the init reads first.
pub(crate) fn encode(spec: &RunSpec) -> Vec<u8> {
    let host = HostFacts::probe();
    let mut limits: Vec<Value> = Vec::new();
    let mut nofile = false;
    for r in &spec.rlimits {
        nofile |= r.name.eq_ignore_ascii_case("nofile");
        limits.push(json!([r.name.to_lowercase(), r.soft, r.hard]));
    }
    if !nofile {
        limits.push(json!(["nofile", host.max_nofile, host.max_nofile]));
    }
    let caps: Vec<&str> = match spec.security {
        SecurityMode::Sandbox => DEFAULT_CAPABILITIES.to_vec(),
        SecurityMode::Insecure => CAPABILITY_NAMES.to_vec(),
    };
    let value = json!({
        "root": spec.rootfs.as_os_str().as_bytes(),
        "args": spec.args,
        "env": spec.env,
        "cwd": spec.cwd.as_os_str().as_bytes(),
        "uid": spec.user.uid,
        "gid": spec.user.gid,
        "groups": spec.user.additional_gids,
        "rlimits": limits,
        "caps": caps,
        "no_new_privileges": spec.no_new_privileges,
    });
    let mut line = serde_json::to_vec(&value).expect("plain JSON");
    line.push(b'\n');
    line
}

/// The main of a chroot run's first process (`kiln __chroot-run`): reads
/// the spec from stdin, runs the command chrooted as the step's user,
/// reaps and finally kills what it leaves, and exits with its status
/// (128 + N if signal N killed it). `k` or end of file on stdin kills the
/// whole run.
pub fn run_chroot_init(_args: &[OsString]) -> ExitCode {
    match init() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(io::stderr(), "kiln: {e}");
            ExitCode::from(NOT_STARTED)
        }
    }
}

struct Spec {
    root: CString,
    args: Vec<String>,
    env: Vec<String>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    rlimits: Vec<(Resource, u64, u64)>,
    /// Capability numbers to drop from the bounding set.
    drop_caps: Vec<u32>,
    no_new_privileges: bool,
}

fn init() -> io::Result<u8> {
    let mut stdin = BufReader::new(io::stdin());
    let mut line = Vec::new();
    stdin.read_until(b'\n', &mut line)?;
    // Checked here, where an error still has somewhere to go.
    decode(&line)?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let main = spawn(&line)?;

    // Kill on request, or when kiln is gone.
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        loop {
            match stdin.read(&mut byte) {
                Ok(1) if byte[0] != KILL[0] => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => break,
            }
        }
        // Until the main loop has reaped everything and exits.
        loop {
            kill_descendants();
            std::thread::sleep(Duration::from_millis(50));
        }
    });

    let mut code = None;
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid == main => {
                code = Some(match status.terminating_signal() {
                    Some(sig) => 128 + sig,
                    None => status.exit_status().unwrap_or(0),
                });
                break;
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    // The command is over: what it left running goes, as with the end of
    // a pid namespace.
    loop {
        kill_descendants();
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) => continue,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break,
        }
    }
    Ok(u8::try_from(code.unwrap_or(128 + 9)).unwrap_or(255))
}

/// Starts the command through this program again as [`CHROOT_EXEC`],
/// which becomes it (`exec`) once chrooted.
fn spawn(line: &[u8]) -> io::Result<Pid> {
    let child = Command::new("/proc/self/exe")
        .arg(CHROOT_EXEC)
        .env_clear()
        .env(SPEC_VAR, OsStr::from_bytes(line.trim_ascii_end()))
        .stdin(Stdio::null())
        .spawn()?;
    Ok(Pid::from_child(&child))
}

/// The main of `kiln __chroot-exec`, the command of a chroot run before it
/// is the command: takes the spec from the environment, sets the limits,
/// chroots, changes to the working directory, drops the capabilities the
/// step does not get and becomes its user, then executes the command with
/// exactly its environment. Returns only if that fails.
pub fn run_chroot_exec() -> ExitCode {
    let error = match exec() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = writeln!(io::stderr(), "kiln: {error}");
    ExitCode::from(NOT_STARTED)
}

fn exec() -> io::Result<std::convert::Infallible> {
    let line = std::env::var_os(SPEC_VAR).ok_or_else(|| io::Error::other("no run spec"))?;
    let spec = decode(line.as_bytes())?;
    let (program, rest) = spec
        .args
        .split_first()
        .ok_or_else(|| io::Error::other("no command"))?;
    for &(resource, soft, hard) in &spec.rlimits {
        let limit = RawRlimit {
            current: Some(soft),
            maximum: Some(hard),
        };
        rustix::process::setrlimit(resource, limit)?;
    }
    close_inherited()?;
    rustix::process::chroot(spec.root.as_c_str())
        .map_err(|e| io::Error::other(format!("chroot to {:?}: {e}", spec.root)))?;
    rustix::process::chdir(spec.cwd.as_c_str())
        .map_err(|e| io::Error::other(format!("working directory {:?}: {e}", spec.cwd)))?;
    for &cap in &spec.drop_caps {
        // A capability the kernel does not know is not there to drop.
        let _ = rustix::thread::remove_capability_from_bounding_set(
            CapabilitySet::from_bits_retain(1 << cap),
        );
    }
    let groups: Vec<rustix::process::Gid> = spec
        .groups
        .iter()
        .map(|&g| rustix::process::Gid::from_raw(g))
        .collect();
    let (uid, gid) = (
        rustix::process::Uid::from_raw(spec.uid),
        rustix::process::Gid::from_raw(spec.gid),
    );
    rustix::thread::set_thread_groups(&groups)?;
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    if spec.no_new_privileges {
        rustix::thread::set_no_new_privs(true)?;
    }
    let error = Command::new(program)
        .args(rest)
        .env_clear()
        .envs(spec.env.iter().map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        }))
        .exec();
    Err(io::Error::new(
        error.kind(),
        format!("cannot run {program:?}: {error}"),
    ))
}

/// Marks every descriptor above 2 close-on-exec, so that none reaches the
/// step: kiln's own are (std opens everything so), but what kiln inherited
/// from whoever started it is not (a CI runner's pipes, a test harness's
/// jobserver). runc closes them for its runs; here it is this process's
/// job, while it still sees /proc.
fn close_inherited() -> io::Result<()> {
    let mut inherited = Vec::new();
    for entry in fs_err::read_dir("/proc/self/fd")?.flatten() {
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            && fd > 2
        {
            inherited.push(fd);
        }
    }
    for fd in inherited {
        // SAFETY: `fd` was open a moment ago (the read_dir's own, now
        // closed, fails below and is skipped), and this process has one
        // thread, which closes nothing meanwhile: the borrow is of an open
        // descriptor for the length of one fcntl. No safe API takes a
        // descriptor number (rustix has no close_range).
        #[allow(unsafe_code)]
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        match rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC) {
            Ok(()) | Err(rustix::io::Errno::BADF) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn decode(line: &[u8]) -> io::Result<Spec> {
    let bad = |what: &str| io::Error::other(format!("bad run spec: {what}"));
    let v: Value = serde_json::from_slice(line).map_err(|e| bad(&e.to_string()))?;
    let bytes = |key: &str| -> io::Result<CString> {
        let raw: Vec<u8> = serde_json::from_value(v[key].clone()).map_err(|_| bad(key))?;
        CString::new(raw).map_err(|_| bad(key))
    };
    let strings = |key: &str| -> io::Result<Vec<String>> {
        serde_json::from_value(v[key].clone()).map_err(|_| bad(key))
    };
    let id = |key: &str| -> io::Result<u32> {
        v[key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(key))
    };
    let mut rlimits = Vec::new();
    let raw: Vec<(String, u64, u64)> =
        serde_json::from_value(v["rlimits"].clone()).map_err(|_| bad("rlimits"))?;
    for (name, soft, hard) in raw {
        let resource =
            resource(&name).ok_or_else(|| io::Error::other(format!("unknown rlimit {name}")))?;
        rlimits.push((resource, soft, hard));
    }
    let keep: Vec<String> = strings("caps")?;
    let drop_caps = (0..64u32)
        .filter(|&n| {
            let name = CAPABILITY_NAMES.get(n as usize);
            !name.is_some_and(|name| keep.iter().any(|k| k == name))
        })
        .filter(|&n| {
            rustix::thread::capability_is_in_bounding_set(CapabilitySet::from_bits_retain(1 << n))
                .unwrap_or(false)
        })
        .collect();
    Ok(Spec {
        root: bytes("root")?,
        args: strings("args")?,
        env: strings("env")?,
        cwd: bytes("cwd")?,
        uid: id("uid")?,
        gid: id("gid")?,
        groups: serde_json::from_value(v["groups"].clone()).map_err(|_| bad("groups"))?,
        rlimits,
        drop_caps,
        no_new_privileges: v["no_new_privileges"].as_bool().unwrap_or(false),
    })
}

fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "cpu" => Resource::Cpu,
        "fsize" => Resource::Fsize,
        "data" => Resource::Data,
        "stack" => Resource::Stack,
        "core" => Resource::Core,
        "rss" => Resource::Rss,
        "nproc" => Resource::Nproc,
        "nofile" => Resource::Nofile,
        "memlock" => Resource::Memlock,
        "as" => Resource::As,
        "locks" => Resource::Locks,
        "sigpending" => Resource::Sigpending,
        "msgqueue" => Resource::Msgqueue,
        "nice" => Resource::Nice,
        "rtprio" => Resource::Rtprio,
        "rttime" => Resource::Rttime,
        _ => return None,
    })
}

/// SIGKILLs every descendant of this process; returns how many it found.
fn kill_descendants() -> usize {
    let me = std::process::id();
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs_err::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = crate::proctree::read_stat(pid) {
                parents.push((pid, stat.ppid));
            }
        }
    }
    let mut mine = vec![me];
    let mut found = 0;
    let mut i = 0;
    while i < mine.len() {
        let parent = mine[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !mine.contains(&pid) {
                mine.push(pid);
            }
        }
        i += 1;
    }
    for &pid in &mine[1..] {
        if let Some(pid) = Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            found += 1;
        }
    }
    found
}
