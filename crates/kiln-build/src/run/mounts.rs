//! `RUN --mount`: each mount with BuildKit's defaults applied (a pure
//! plan), then made real for one step (sources resolved, caches held,
//! secrets written, overlays mounted) as the sandbox's mounts.
//!
//! Defaults, from BuildKit's `dockerfile2llb/convert_runmount.go` and
//! `convert_secrets.go`:
//! - a relative target is joined to the working directory; `/` is refused;
//! - a cache's id is its target as written, cleaned; its sharing `shared`;
//!   `mode`, `uid`, `gid` (0755, 0, 0) make its directory when it has
//!   neither `source` nor `from` (BuildKit ignores them otherwise);
//! - a bind reads the context unless `from=` names a stage or an image;
//!   `rw` writes go to a throwaway overlay (`ForceNoOutput`);
//! - a secret's id is `source`, else `id`, else the target's base name; it
//!   is a file at the target (default `/run/secrets/<id>`) unless `env=`
//!   makes it a variable (and a file too when a target is given); 0400
//!   root's unless `mode`/`uid`/`gid` say otherwise; a missing secret is
//!   an error only when `required`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_dockerfile::instructions::{Mount as DfMount, MountType, RunCommand, ShareMode};
use kiln_sandbox::{Mount, MountKind};

use super::RunStep;
use super::cache::{CacheLease, CacheRequest, Seed};
use super::error::RunError;
use super::rootpath;
use super::scratch::Scratch;
use super::secrets::Staged;
use super::sources::MountSource;

/// The directory `source` of the cache at `cache`, found (or made) and
/// bind-mounted in `scratch` by its descriptor. A parallel step may also
/// remove that directory before it is mounted: an empty one kiln has just
/// made is replaced by a `mv` renaming another directory onto its name,
/// and the kernel refuses to mount a removed directory (`ENOENT`). Then
/// the name is looked up again, as [`rootpath::open_dir_made`] does for a
/// name that changed on the way. Removed after the pin, runc's mount of it
/// fails: [`run_step`](super::run_step) then prepares the step again.
fn pinned_cache_dir(
    scratch: &mut Scratch,
    cache: &Path,
    source: &str,
) -> Result<PathBuf, RunError> {
    let mut tries = 0;
    loop {
        let (dir, _) = rootpath::open_dir_made(cache, Path::new(source))?;
        match scratch.pinned_view(&dir) {
            Err(_) if tries < 30 && removed(&dir) => tries += 1,
            pinned => return pinned,
        }
    }
}

/// Whether the open directory `dir` has been removed from its parent.
fn removed(dir: &std::os::fd::OwnedFd) -> bool {
    rustix::fs::fstat(dir).is_ok_and(|st| st.st_nlink == 0)
}

/// One `--mount`, with every default applied. Pure data: the cache key
/// and the step are both made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Planned {
    Bind {
        target: String,
        from: Option<String>,
        /// Absolute, cleaned; `/` for the whole source.
        source: String,
        readonly: bool,
    },
    Cache {
        target: String,
        id: String,
        sharing: ShareMode,
        readonly: bool,
        from: Option<String>,
        /// Absolute, cleaned; `/` for the whole cache.
        source: String,
        /// The directory's mode and owner when it is made empty.
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        /// Where the file goes; `None` for a variable only.
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// The mounts of `command` (expanded: mounts complete) for a step whose
/// working directory is `workdir`, in the order written.
pub(crate) fn plan(command: &RunCommand, workdir: &str) -> Result<Vec<Planned>, RunError> {
    let line = command.origin.location.start_line;
    if !command.devices.is_empty() {
        return Err(RunError::Unsupported {
            line,
            what: "RUN --device".into(),
        });
    }
    command
        .mounts
        .iter()
        .map(|m| plan_one(m, workdir, line))
        .collect()
}

fn plan_one(m: &DfMount, workdir: &str, line: usize) -> Result<Planned, RunError> {
    let written = m.target.as_deref().unwrap_or("");
    Ok(match m.kind {
        MountType::Ssh => {
            return Err(RunError::Unsupported {
                line,
                what: "RUN --mount=type=ssh".into(),
            });
        }
        MountType::Bind => Planned::Bind {
            target: target(written, workdir)?,
            from: m.from.clone(),
            source: clean(&format!("/{}", m.source.as_deref().unwrap_or(""))),
            readonly: m.read_only,
        },
        MountType::Cache => {
            let source = clean(&format!("/{}", m.source.as_deref().unwrap_or("")));
            // BuildKit applies them only to a cache without `source` and
            // `from` (`setCacheUIDGID` on scratch); elsewhere they are
            // ignored, so they are not kept either.
            let own = source == "/" && m.from.is_none();
            Planned::Cache {
                target: target(written, workdir)?,
                id: m.id.clone().unwrap_or_else(|| clean(written)),
                sharing: m.sharing.unwrap_or(ShareMode::Shared),
                readonly: m.read_only,
                from: m.from.clone(),
                source,
                mode: m.mode.filter(|_| own).unwrap_or(0o755),
                uid: m.uid.filter(|_| own).unwrap_or(0),
                gid: m.gid.filter(|_| own).unwrap_or(0),
            }
        }
        MountType::Tmpfs => Planned::Tmpfs {
            target: target(written, workdir)?,
            size: u64::try_from(m.size_limit).ok().filter(|s| *s > 0),
        },
        MountType::Secret => {
            let id = match (&m.source, &m.id) {
                (Some(source), _) => source.clone(),
                (None, Some(id)) => id.clone(),
                (None, None) => base(written).to_string(),
            };
            if let Some(env) = &m.env
                && env.is_empty()
            {
                return Err(RunError::EmptySecretEnv { id });
            }
            // No workdir here: BuildKit hands the target to runc as it
            // is, which takes a relative destination from `/`.
            let given = m.target.as_deref().map(|t| clean(&format!("/{t}")));
            let target = match (&m.env, given) {
                (_, Some(t)) => Some(t),
                (None, None) => Some(format!("/run/secrets/{}", base(&id))),
                (Some(_), None) => None,
            };
            if target.as_deref() == Some("/") {
                return Err(RunError::InvalidMountTarget { target: "/".into() });
            }
            Planned::Secret {
                id,
                target,
                env: m.env.clone(),
                required: m.required,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            }
        }
    })
}

/// BuildKit: an absolute target is used as it is, a relative one (or
/// none) is joined to the working directory; `/` is refused.
fn target(written: &str, workdir: &str) -> Result<String, RunError> {
    let cleaned = clean(written);
    let abs = if cleaned.starts_with('/') {
        cleaned
    } else {
        clean(&format!("/{workdir}/{written}"))
    };
    if abs == "/" {
        return Err(RunError::InvalidMountTarget { target: abs });
    }
    Ok(abs)
}

/// Go's `path.Clean`.
pub(crate) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`.
fn base(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "." } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// The mounts of a step made real, and what must live as long as the run.
/// Dropped (on an error path) in field order: the overlays before the
/// sources they lie on.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub(crate) mounts: Vec<Mount>,
    /// Secrets as variables (`env=`), in mount order.
    pub(crate) env: Vec<(String, String)>,
    scratch: Option<Scratch>,
    secrets: Option<Staged>,
    leases: Vec<CacheLease>,
    sources: Vec<MountSource>,
}

impl Prepared {
    pub(crate) fn scratch(&mut self, parent: &Path) -> Result<&mut Scratch, RunError> {
        if self.scratch.is_none() {
            self.scratch = Some(Scratch::create(parent)?);
        }
        Ok(self.scratch.as_mut().expect("just made"))
    }

    /// Whether a cache directory pinned for a mount has been removed since
    /// ([`Scratch::a_pin_was_removed`]).
    pub(crate) fn a_pin_was_removed(&self) -> bool {
        self.scratch
            .as_ref()
            .is_some_and(Scratch::a_pin_was_removed)
    }

    /// Unmounts, unlocks and removes everything, in the reverse order of
    /// making it; reports the first error after trying all.
    pub(crate) fn release(mut self) -> Result<(), RunError> {
        let mut first = None;
        if let Some(scratch) = self.scratch.take()
            && let Err(e) = scratch.remove()
        {
            first.get_or_insert(e);
        }
        if let Some(staged) = self.secrets.take()
            && let Err(e) = staged.remove()
        {
            first.get_or_insert(e);
        }
        self.leases.clear();
        self.sources.clear();
        first.map_or(Ok(()), Err)
    }
}

/// Makes `planned` real for `step`: checks secrets first (a missing one
/// fails before any wait), then takes the caches (in key order, so two
/// steps holding several `locked` caches cannot deadlock), then mounts.
pub(crate) fn prepare(
    step: &RunStep<'_>,
    planned: &[Planned],
    binds_are_mounts: bool,
) -> Result<Prepared, RunError> {
    let mut out = Prepared::default();
    for p in planned {
        if let Planned::Secret { id, required, .. } = p
            && *required
            && step.secrets.get(id).is_none()
        {
            return Err(RunError::SecretNotFound { id: id.clone() });
        }
    }

    // `from=` of binds and seeded caches, one source per mount.
    let mut source_of: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, p) in planned.iter().enumerate() {
        let from = match p {
            Planned::Bind { from, .. } => Some(from.as_deref()),
            Planned::Cache { from: Some(f), .. } => Some(Some(f.as_str())),
            _ => None,
        };
        if let Some(from) = from {
            source_of.insert(i, out.sources.len());
            out.sources.push(step.sources.resolve(from)?);
        }
    }

    // Caches: one lease per distinct cache (two mounts of one id in a step
    // share it, as in BuildKit's per-exec map), taken in key order.
    let mut requests: BTreeMap<String, (CacheRequest, Vec<usize>)> = BTreeMap::new();
    for (i, p) in planned.iter().enumerate() {
        let Planned::Cache {
            target,
            id,
            sharing,
            from,
            source,
            mode,
            uid,
            gid,
            ..
        } = p
        else {
            continue;
        };
        let seed = match (from, source_of.get(&i)) {
            (Some(from), Some(&s)) => Seed::Copy {
                root: out.sources[s].root().to_path_buf(),
                key: out.sources[s].key().to_string(),
                from: from.clone(),
                source: source.clone(),
            },
            _ => Seed::Empty {
                mode: *mode,
                uid: *uid,
                gid: *gid,
            },
        };
        // An executor that moves a cache into the root has it in one
        // root at a time: a `shared` cache is taken in turns, as a
        // `locked` one, by this build's steps and other kiln processes'.
        let sharing = match sharing {
            ShareMode::Shared if !binds_are_mounts => ShareMode::Locked,
            other => *other,
        };
        let req = CacheRequest {
            id: id.clone(),
            target: target.clone(),
            sharing,
            seed,
        };
        requests
            .entry(req.key())
            .or_insert_with(|| (req, Vec::new()))
            .1
            .push(i);
    }
    let mut lease_of: BTreeMap<usize, usize> = BTreeMap::new();
    for (req, users) in requests.values() {
        let lease = step.caches.acquire_observed(
            req,
            step.step,
            step.events,
            step.control,
            step.observer,
        )?;
        for &i in users {
            lease_of.insert(i, out.leases.len());
        }
        out.leases.push(lease);
    }

    for (i, p) in planned.iter().enumerate() {
        match p {
            Planned::Bind {
                target,
                from,
                source,
                readonly,
            } => {
                let src = &out.sources[source_of[&i]];
                let host = existing_source(src.root(), from, source)?;
                if *readonly || !binds_are_mounts {
                    // An executor that copies and moves sources in copies
                    // a `readonly` one: what the step writes is dropped.
                    out.mounts.push(Mount::bind(host, target, true));
                } else {
                    let view = out.scratch(step.scratch)?.writable_view(&host)?;
                    out.mounts.push(Mount::bind(view, target, false));
                }
            }
            Planned::Cache {
                target,
                readonly,
                from,
                source,
                ..
            } => {
                let mut host = out.leases[lease_of[&i]].path().to_path_buf();
                // Without `from`, `source` is a directory of the cache
                // itself (BuildKit's selector on the cache ref), made on
                // first use. A parallel step sharing the cache may swap a
                // name on its way for a symlink to the host at any moment
                // (CVE-2024-23651): runc gets a mount of the directory
                // found now, by its descriptor. An executor that moves the
                // cache in gets its path: while a step has a cache, the
                // cache is in that step's root, not at this path.
                if from.is_none() && source != "/" {
                    host = if binds_are_mounts {
                        pinned_cache_dir(out.scratch(step.scratch)?, &host, source)?
                    } else {
                        rootpath::open_dir_made(&host, Path::new(source))?.1
                    };
                }
                out.mounts.push(Mount::bind(host, target, *readonly));
            }
            Planned::Tmpfs { target, size } => {
                out.mounts.push(Mount {
                    destination: PathBuf::from(target),
                    kind: MountKind::Tmpfs {
                        size: *size,
                        mode: None,
                    },
                });
            }
            Planned::Secret {
                id,
                target,
                env,
                mode,
                uid,
                gid,
                ..
            } => {
                let bytes = step.secrets.get(id);
                if let Some(name) = env {
                    // BuildKit sets the variable even when an optional
                    // secret is missing, empty (`loadSecretEnv`).
                    let value = String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
                    out.env.push((name.clone(), value));
                }
                let (Some(target), Some(bytes)) = (target, bytes) else {
                    continue;
                };
                if out.secrets.is_none() {
                    out.secrets = Some(step.secrets.stage()?);
                }
                let staged = out.secrets.as_mut().expect("just made");
                let file = staged.write(bytes, *uid, *gid, *mode)?;
                out.mounts.push(Mount::bind(file, target, true));
            }
        }
    }
    Ok(out)
}

/// `source` resolved inside `root` (symlinks followed there), which must
/// exist.
fn existing_source(root: &Path, from: &Option<String>, source: &str) -> Result<PathBuf, RunError> {
    let host = rootpath::resolve(root, Path::new(source))?;
    if !host.exists() {
        return Err(RunError::MountSourceNotFound {
            from: from.clone().unwrap_or_else(|| "context".into()),
            source_path: source.to_string(),
        });
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use kiln_testkit::need::{Root, need};

    use super::*;

    #[test]
    fn clean_is_gos() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("a/../..", ".."),
            ("/a/../..", "/"),
            ("//x//y/./", "/x/y"),
            ("cache/", "cache"),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
        assert_eq!(base("/run/x/"), "x");
        assert_eq!(base("id"), "id");
    }

    #[test]
    fn targets_join_the_workdir() {
        assert_eq!(target("cache", "/app").unwrap(), "/app/cache");
        assert_eq!(target("/abs/", "/app").unwrap(), "/abs");
        assert_eq!(target("", "/app").unwrap(), "/app");
        assert!(matches!(
            target("", "/"),
            Err(RunError::InvalidMountTarget { .. })
        ));
        assert!(matches!(
            target("/..", "/app"),
            Err(RunError::InvalidMountTarget { .. })
        ));
    }

    /// A cache's `source=` directory under a parallel step that keeps renaming
    /// it away, a symlink to the host in its place, and back: the rename back
    /// lands on whatever kiln made meanwhile and removes it when it is empty.
    /// Every pin is made, and is a directory of the cache (never the host's).
    #[test]
    fn a_directory_removed_before_its_mount_is_found_again() {
        if need(Root).is_none() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (cache, victim) = (tmp.path().join("cache"), tmp.path().join("victim"));
        fs_err::create_dir_all(cache.join("sub")).unwrap();
        fs_err::create_dir(&victim).unwrap();
        let stop = AtomicBool::new(false);
        // Stops the renaming thread however the test ends: the scope
        // waits for it.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let (sub, held) = (cache.join("sub"), cache.join("held"));
                // A pause between commands, as a shell's takes to start
                // the next: kiln finds the name missing in one and makes
                // the directory, which the rename back then replaces.
                let pause = || std::thread::sleep(Duration::from_micros(300));
                while !stop.load(Ordering::Relaxed) {
                    // rename(2) as `mv` calls it: onto an empty directory
                    // it replaces that directory.
                    if fs_err::rename(&sub, &held).is_ok() {
                        pause();
                        let _ = std::os::unix::fs::symlink(&victim, &sub);
                        pause();
                        let _ = fs_err::remove_file(&sub);
                        pause();
                        let _ = fs_err::rename(&held, &sub);
                    }
                    pause();
                }
            });
            let _stop = Stop(&stop);
            let host = fs_err::metadata(&victim).unwrap().ino();
            let end = Instant::now() + Duration::from_secs(2);
            let mut pinned = 0;
            while Instant::now() < end {
                let mut scratch = Scratch::create(tmp.path()).unwrap();
                let got = pinned_cache_dir(&mut scratch, &cache, "/sub").map(|p| {
                    let meta = fs_err::metadata(p).unwrap();
                    (meta.is_dir(), meta.ino())
                });
                scratch.remove().unwrap();
                let (is_dir, ino) = got.unwrap_or_else(|e| panic!("pin {pinned}: {e:?}"));
                assert!(is_dir && ino != host, "pin {pinned} is the host's");
                pinned += 1;
            }
        });
    }
}
