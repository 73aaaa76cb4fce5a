//! The `RUN` step: a typed, expanded [`RunCommand`] in a step's root,
//! through the sandbox, with BuildKit's semantics.
//!
//! The engine prepares the root (an active overlay snapshot), calls
//! [`run_step`] with plain data ([`RunStep`]) and commits the root after.
//! Everything a step mounts lives outside the root, so it never reaches
//! the upper dir or the layer: cache directories in the store
//! ([`CacheMounts`]), secrets in a private tmpfs directory ([`Secrets`]),
//! `rw` bind overlays and heredoc scripts in the step's scratch directory.
//!
//! - [`command_args`]: the process's `argv` as BuildKit's `dispatchRun`
//!   builds it (exec form, shell form, heredocs); also what history and
//!   error messages show.
//! - [`cache_key_parts`]: what the mounts, network and security add to
//!   the step's cache key, without secret or cache contents.
//! - [`MountSources`]: how `from=` of a mount reaches a stage, an image or
//!   the context (the engine's; [`DirSources`] for plain directories).
//! - [`StepObserver`]: what a watchdog sees of a running step: its raw
//!   output and its waits for `locked` cache mounts.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kiln_build::{CacheMounts, DirSources, EventSink, RunError, RunStep, Secrets, run_step};
//! use kiln_dockerfile::instructions::RunCommand;
//! use kiln_sandbox::{NetworkMode, RunControl, RuncExecutor};
//!
//! # fn demo(command: &RunCommand) -> Result<(), RunError> {
//! let exec = RuncExecutor::new("/var/lib/kiln/sandbox");
//! let events: EventSink = Arc::new(|event| println!("{event:?}"));
//! let step = RunStep {
//!     rootfs: "/var/lib/kiln/active/1-0-step/root".as_ref(),
//!     command,
//!     shell: vec!["/bin/sh".into(), "-c".into()],
//!     env: vec![("PATH".into(), "/usr/bin:/bin".into())],
//!     user: "root".into(),
//!     workdir: "/src".into(),
//!     default_network: NetworkMode::Host,
//!     sources: &DirSources::new("/home/me/project"),
//!     secrets: &Secrets::new(),
//!     caches: &CacheMounts::new("/var/lib/kiln"),
//!     scratch: "/var/lib/kiln/tmp".as_ref(),
//!     control: &RunControl::new(),
//!     step: 7,
//!     events: &events,
//!     observer: None,
//! };
//! run_step(&exec, &step)?;
//! # Ok(()) }
//! ```

mod cache;
mod command;
mod error;
mod key;
mod mounts;
mod observer;
mod rootpath;
mod scratch;
mod secrets;
mod sources;

use std::path::Path;

use kiln_dockerfile::instructions::{
    NetworkMode as DfNetwork, RunCommand, SecurityMode as DfSecurity,
};
use kiln_sandbox::{
    Executor, ExitInfo, Lines, Mount, NetworkMode, RunControl, RunSpec, SandboxError, SecurityMode,
    User,
};

pub use self::cache::CacheMounts;
pub(crate) use self::cache::{
    CacheSource, CacheTar, Contents, KEY_VERSION as CACHE_MOUNT_KEY_VERSION, UsedCache,
};
pub(crate) use self::command::{CommandArgs, SCRIPT_DIR, command_args};
pub use self::error::RunError;
pub(crate) use self::key::mount_contents;
pub use self::key::{ContentRef, cache_key_parts};
pub(crate) use self::observer::StepObserver;
pub use self::scratch::sweep_scratch;
pub use self::secrets::Secrets;
pub(crate) use self::sources::MountSource;
pub use self::sources::{DirSources, MountSources};

use crate::events::{Event, EventSink, StepId, Stream};

/// BuildKit's `PATH` for a step whose environment has none
/// (`utilsystem.DefaultPathEnvUnix`, added by its exec op).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How often a step whose pinned cache directory was removed before its
/// mount is prepared and started again (each time the race is lost anew).
const REMOUNTS: u32 = 30;

/// Everything one `RUN` step needs, as data.
pub struct RunStep<'a> {
    /// The step's root: an active overlay snapshot, mounted (any directory
    /// does; only the working directory, if missing, is created in it).
    pub rootfs: &'a Path,
    /// Expanded by the caller, so its mounts are complete.
    pub command: &'a RunCommand,
    /// The stage's `SHELL` (`["/bin/sh", "-c"]` by default).
    pub shell: Vec<String>,
    /// The step's environment in order: image `Env`, `ENV`, `ARG` values,
    /// proxy build args. `PATH` defaults to `DEFAULT_PATH`.
    pub env: Vec<(String, String)>,
    /// `USER` as written (`name`, `uid`, `name:group`); empty is root.
    /// Names are looked up in the root's /etc/passwd and /etc/group.
    pub user: String,
    /// `WORKDIR`, absolute. Created (0755, owned by the user) if missing,
    /// as BuildKit's executor does; that directory then is in the layer.
    pub workdir: String,
    /// The build's `--network`; `RUN --network=none|host` overrides it.
    pub default_network: NetworkMode,
    pub sources: &'a dyn MountSources,
    pub secrets: &'a Secrets,
    pub caches: &'a CacheMounts,
    /// A directory on a disk filesystem (not overlayfs, not in the root)
    /// where the step may make temporary directories: `rw` bind overlays,
    /// heredoc scripts. Removed when the step ends; see [`sweep_scratch`].
    pub scratch: &'a Path,
    pub control: &'a RunControl,
    pub step: StepId,
    pub events: &'a EventSink,
    /// Sees the raw output and the cache-lock waits (the watchdog).
    pub observer: Option<&'a dyn StepObserver>,
}

/// Runs `step.command` to its end. Its output goes to `step.events` as
/// [`Event::StepLog`] lines (both streams; a last line without newline
/// too); a step waiting for a `locked` cache says so with
/// [`Event::StepNote`]s.
///
/// `Ok` only for exit code 0. A non-zero exit is
/// [`RunError::Failed`] (BuildKit's `process "..." did not complete
/// successfully: exit code: N`), a cancel [`RunError::Cancelled`]. Either
/// way, every mount, lock, secret file and scratch directory of the step is
/// gone when this returns.
pub fn run_step(exec: &dyn Executor, step: &RunStep<'_>) -> Result<ExitInfo, RunError> {
    let workdir = if step.workdir.is_empty() {
        "/".to_string()
    } else {
        mounts::clean(&format!("/{}", step.workdir))
    };
    // Everything that can be refused is refused before anything waits.
    let planned = mounts::plan(step.command, &workdir)?;
    let CommandArgs { args, script } = command_args(step.command, &step.shell)?;
    let user = resolve_user(step.rootfs, &step.user)?;

    let mut remounts = 0;
    let exit = loop {
        let mut prepared = mounts::prepare(step, &planned, exec.binds_are_mounts())?;
        let result = (|| {
            if let Some(script) = &script {
                let dir = prepared.scratch(step.scratch)?.script_dir(script)?;
                prepared.mounts.push(Mount::bind(dir, SCRIPT_DIR, true));
            }
            let cwd = Path::new(&workdir);
            // A working directory inside a mount is the mount's business.
            if !prepared
                .mounts
                .iter()
                .any(|m| cwd.starts_with(&m.destination))
            {
                rootpath::mkdir_all_owned(step.rootfs, cwd, user.uid, user.gid)?;
            }
            let mut spec = RunSpec::new(step.rootfs, args.clone());
            spec.env = environment(&step.env, &prepared.env);
            spec.cwd = cwd.to_path_buf();
            spec.user = user.clone();
            spec.network = match step.command.network {
                DfNetwork::Default => step.default_network,
                DfNetwork::None => NetworkMode::None,
                DfNetwork::Host => NetworkMode::Host,
            };
            spec.security = match step.command.security {
                DfSecurity::Sandbox => SecurityMode::Sandbox,
                DfSecurity::Insecure => SecurityMode::Insecure,
            };
            spec.mounts = prepared.mounts.clone();
            run(exec, &spec, step)
        })();
        // A cache directory pinned for its mount was removed before runc
        // mounted it (a parallel step renamed another directory onto the
        // empty one kiln had just made): the container never started,
        // nothing ran. The name is looked up again, as for a removal
        // before the pin.
        let again = remounts < REMOUNTS
            && matches!(result, Err(RunError::Sandbox(SandboxError::Start { .. })))
            && prepared.a_pin_was_removed();
        let released = prepared.release();
        if again && released.is_ok() {
            remounts += 1;
            continue;
        }
        let exit = result?;
        released?;
        break exit;
    };
    if exit.cancelled {
        return Err(RunError::Cancelled);
    }
    if exit.code != 0 {
        return Err(RunError::Failed {
            args,
            code: exit.code,
        });
    }
    Ok(exit)
}

fn run(exec: &dyn Executor, spec: &RunSpec, step: &RunStep<'_>) -> Result<ExitInfo, RunError> {
    let (events, id) = (step.events, step.step);
    let lines = Lines::new(|stream, line: &[u8]| {
        events(Event::StepLog {
            step: id,
            stream: match stream {
                kiln_sandbox::Stream::Stdout => Stream::Stdout,
                kiln_sandbox::Stream::Stderr => Stream::Stderr,
            },
            line: String::from_utf8_lossy(line).into_owned(),
        })
    });
    let sink = observer::Observed {
        inner: lines,
        observer: step.observer,
    };
    let started = std::time::Instant::now();
    let exit = exec.run(spec, &sink, step.control)?;
    events(Event::StepProcess {
        step: id,
        duration_ms: crate::events::millis(started.elapsed()),
        exit_code: exit.code,
    });
    Ok(exit)
}

/// `USER` against the root, with BuildKit's messages for a missing name.
/// The primary group is among the process's groups too, as in a BuildKit
/// RUN (`id` as `user` with a supplementary `staff`: groups=50,1000).
fn resolve_user(rootfs: &Path, user: &str) -> Result<User, RunError> {
    let mut user = kiln_sandbox::resolve_user(rootfs, user).map_err(|e| match e {
        SandboxError::NoSuchUser { name, .. } => RunError::NoSuchUser { name },
        SandboxError::NoSuchGroup { name, .. } => RunError::NoSuchGroup { name },
        other => other.into(),
    })?;
    if !user.additional_gids.contains(&user.gid) {
        user.additional_gids.push(user.gid);
    }
    Ok(user)
}

/// The step's variables, then the secret ones (replacing a variable of
/// the same name), then `PATH` if still missing.
fn environment(vars: &[(String, String)], secrets: &[(String, String)]) -> Vec<String> {
    let mut all = vars.to_vec();
    for (name, value) in secrets {
        match all.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.clone(),
            None => all.push((name.clone(), value.clone())),
        }
    }
    if !all.iter().any(|(n, _)| n == "PATH") {
        all.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    all.into_iter().map(|(n, v)| format!("{n}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_defaults_and_secrets_replace() {
        let vars = vec![
            ("A".to_string(), "1".to_string()),
            ("TOKEN".into(), "x".into()),
        ];
        let secrets = vec![("TOKEN".to_string(), "s3cr3t".to_string())];
        assert_eq!(
            environment(&vars, &secrets),
            ["A=1", "TOKEN=s3cr3t", &format!("PATH={DEFAULT_PATH}")]
        );
        let with_path = vec![("PATH".to_string(), "/bin".to_string())];
        assert_eq!(environment(&with_path, &[]), ["PATH=/bin"]);
    }
}
