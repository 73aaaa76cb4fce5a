//! An image from the store run as a container, in the sandbox RUN steps
//! run in (what `kiln run` does): `docker run`'s rules for which image a
//! name means, which platform runs, the command line, the environment,
//! the user and the working directory.
//!
//! The caller prepares the image's layers with a [`Snapshotter`], activates
//! a writable root on them, builds the [`RunSpec`] with [`container_spec`] and
//! runs it with an [`Executor`](kiln_sandbox::Executor); the root is
//! discarded afterwards, so running never changes an image.
//!
//! [`Snapshotter`]: crate::Snapshotter

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_image::document::{ContainerConfig, Descriptor, ImageConfig, Manifest};
use kiln_image::{Digest, Platform, Reference, Store, StoreError};
use kiln_sandbox::{EtcFiles, NetworkMode, RunSpec, SandboxError};

use crate::run::DEFAULT_PATH;
use crate::snapshot::Layer;

/// Why an image cannot be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    #[error(
        "no such image: {name} (pull it first with `kiln pull {name}`; `kiln images` lists the store)"
    )]
    NoSuchImage { name: String },

    #[error("{name} is ambiguous: {count} images have IDs starting with it")]
    Ambiguous { name: String, count: usize },

    /// An index without the wanted platform.
    #[error("{name} has no image for {wanted}; it has {}{hint}", available.join(", "))]
    NoPlatform {
        name: String,
        wanted: String,
        available: Vec<String>,
        /// What to do about it (`--platform` under QEMU), or empty.
        hint: String,
    },

    /// A manifest for another platform than the one wanted.
    #[error("{message}")]
    WrongPlatform { message: String },

    #[error(
        "{name} is an image for {platform}, which this {host} machine cannot run: no QEMU \
         binfmt handler for {architecture} is registered (install qemu-user-static)"
    )]
    NoEmulation {
        name: String,
        platform: String,
        architecture: String,
        host: String,
    },

    #[error(
        "no command specified: {name} has neither ENTRYPOINT nor CMD \
         (give one after the image: kiln run {name} -- COMMAND...)"
    )]
    NoCommand { name: String },

    #[error(
        "{name} is inconsistent: its manifest lists {layers} layers, its config {diff_ids} diffIDs"
    )]
    Inconsistent {
        name: String,
        layers: usize,
        diff_ids: usize,
    },

    #[error("layer {digest} of {name} is not in the store (pull the image again with `kiln pull`)")]
    MissingLayer { name: String, digest: Digest },

    #[error("the working directory {dir:?} is not an absolute path")]
    RelativeWorkdir { dir: String },

    #[error("{} is not a directory in the image", path.display())]
    NotADirectory { path: PathBuf },

    #[error("{doing}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },

    #[error("user {user:?}")]
    User {
        user: String,
        #[source]
        source: SandboxError,
    },

    #[error("reading {name}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
}

/// The image a name gives: a tag or digest reference, else an image ID
/// (`kiln images`' column, a prefix of the digest) or a digest any tag has.
/// Returns the name to show and the manifest or index.
pub fn find_image(store: &Store, name: &str) -> Result<(String, Descriptor), ContainerError> {
    let store_err = |source| ContainerError::Store {
        name: name.to_string(),
        source,
    };
    let reference = Reference::parse(name).map(Reference::with_default_tag);
    if let Ok(reference) = &reference
        && let Some(descriptor) = store.resolve(reference).map_err(store_err)?
    {
        return Ok((reference.familiar(), descriptor));
    }
    let wanted = match &reference {
        Ok(Reference {
            digest: Some(digest),
            ..
        }) => Some(digest.hex().to_string()),
        _ => {
            let hex = name.strip_prefix("sha256:").unwrap_or(name);
            (hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| hex.to_ascii_lowercase())
        }
    };
    if let Some(wanted) = wanted {
        let mut found: Vec<Descriptor> = Vec::new();
        for (_, descriptor) in store.tags().map_err(store_err)? {
            if descriptor.digest.hex().starts_with(&wanted)
                && !found.iter().any(|d| d.digest == descriptor.digest)
            {
                found.push(descriptor);
            }
        }
        match found.len() {
            1 => return Ok((name.to_string(), found.remove(0))),
            0 => {}
            count => {
                return Err(ContainerError::Ambiguous {
                    name: name.to_string(),
                    count,
                });
            }
        }
    }
    Err(ContainerError::NoSuchImage {
        name: reference
            .as_ref()
            .map_or(name.to_string(), Reference::familiar),
    })
}

/// The image for one platform, ready to run.
#[derive(Debug, Clone)]
pub struct RunnableImage {
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// The binfmt_misc entry that runs it, when it is for another
    /// architecture than this machine's.
    pub emulated_by: Option<String>,
}

/// The manifest and config for the platform wanted (`explicit`, else this
/// machine's), refusing an image this machine cannot run.
pub fn select_image(
    store: &Store,
    name: &str,
    descriptor: &Descriptor,
    explicit: Option<&Platform>,
) -> Result<RunnableImage, ContainerError> {
    let host = Platform::host();
    let wanted = explicit.cloned().unwrap_or_else(|| host.clone());
    let store_err = |source| ContainerError::Store {
        name: name.to_string(),
        source,
    };
    let manifest = match store.select_manifest(descriptor, &wanted) {
        Ok(m) => m.into_value(),
        Err(StoreError::NoMatchingPlatform { available, .. }) => {
            let hint = if explicit.is_none() {
                emulation_hint(&available)
            } else {
                String::new()
            };
            return Err(ContainerError::NoPlatform {
                name: name.to_string(),
                wanted: wanted.to_string(),
                available,
                hint,
            });
        }
        Err(e) => return Err(store_err(e)),
    };
    let config = store
        .read_document::<ImageConfig>(&manifest.config)
        .map_err(store_err)?
        .into_value();
    let platform = config.platform();
    if !wanted.matches(&platform) {
        let message = if explicit.is_none() {
            format!(
                "{name} is an image for {platform}, but this machine is {host}{}",
                emulation_hint(&[platform.to_string()])
            )
        } else {
            format!("{name} is an image for {platform}, not {wanted}")
        };
        return Err(ContainerError::WrongPlatform { message });
    }
    let emulated_by = if host.matches(&platform) {
        None
    } else {
        Some(
            crate::emulation::handler(&platform.architecture).ok_or_else(|| {
                ContainerError::NoEmulation {
                    name: name.to_string(),
                    platform: platform.to_string(),
                    architecture: platform.architecture.clone(),
                    host: host.to_string(),
                }
            })?,
        )
    };
    Ok(RunnableImage {
        manifest,
        config,
        emulated_by,
    })
}

/// What to tell someone whose image is for other platforms.
fn emulation_hint(platforms: &[String]) -> String {
    let foreign: Vec<(String, String)> = platforms
        .iter()
        .filter_map(|p| {
            let platform = Platform::parse(p).ok()?;
            let handler = crate::emulation::handler(&platform.architecture)?;
            Some((p.clone(), handler))
        })
        .collect();
    match foreign.first() {
        Some((platform, handler)) => format!(
            "; QEMU is registered with binfmt_misc for it ({handler}): \
             pass --platform {platform} to run it emulated"
        ),
        None => "; no QEMU binfmt handler is registered for it, so it cannot run here \
                 (install qemu-user-static, then pass --platform)"
            .to_string(),
    }
}

/// Whether this machine can run programs of `platform`: natively (its own
/// architecture, or 386 on amd64), else through a registered QEMU binfmt
/// handler. The error says what is missing.
pub(crate) fn check_runnable(platform: &Platform) -> Result<(), crate::run::RunError> {
    let host = Platform::host();
    if platform.os != host.os {
        return Err(crate::run::RunError::ForeignOs {
            host: host.os.clone(),
            platform: platform.to_string(),
        });
    }
    let native = platform.architecture == host.architecture
        || (host.architecture == "amd64" && platform.architecture == "386");
    if native || crate::emulation::handler(&platform.architecture).is_some() {
        return Ok(());
    }
    if !crate::emulation::visible() {
        if crate::emulation::runs_here(&platform.architecture).is_none() {
            // No way to tell here: the step will say.
            return Ok(());
        }
        return Err(crate::run::RunError::NoEmulationHere {
            host: host.architecture.clone(),
            platform: platform.to_string(),
            architecture: platform.architecture.clone(),
        });
    }
    Err(crate::run::RunError::NoEmulation {
        host: host.architecture.clone(),
        platform: platform.to_string(),
        architecture: platform.architecture.clone(),
        handler: crate::emulation::entry(&platform.architecture)
            .display()
            .to_string(),
    })
}

/// The layers of the image, bottom first: diffIDs from the config, blobs
/// from the manifest, every blob in the store.
pub fn image_layers(
    store: &Store,
    name: &str,
    image: &RunnableImage,
) -> Result<Vec<Layer>, ContainerError> {
    let diff_ids = &image.config.rootfs.diff_ids;
    let blobs = &image.manifest.layers;
    if diff_ids.len() != blobs.len() {
        return Err(ContainerError::Inconsistent {
            name: name.to_string(),
            layers: blobs.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (blob, diff_id) in blobs.iter().zip(diff_ids) {
        // A layer still in its registry is fetched when it is unpacked.
        let present = store
            .available(&blob.digest)
            .map_err(|source| ContainerError::Store {
                name: name.to_string(),
                source,
            })?;
        if !present {
            return Err(ContainerError::MissingLayer {
                name: name.to_string(),
                digest: blob.digest.clone(),
            });
        }
        layers.push(Layer {
            diff_id: diff_id.clone(),
            blob: blob.clone(),
        });
    }
    Ok(layers)
}

/// Docker's command line: the ENTRYPOINT, then the CMD, where
/// `--entrypoint` replaces the first and drops the second, and arguments
/// after the image replace the CMD. `None` if that leaves nothing.
pub fn container_command(
    config: &ContainerConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Option<Vec<String>> {
    let (entrypoint, cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (
            config.entrypoint.clone().unwrap_or_default(),
            config.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if args.is_empty() { cmd } else { args.to_vec() };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    (!argv.is_empty()).then_some(argv)
}

/// What `docker run`'s flags ask of the container.
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    /// `--user`, instead of the image's.
    pub user: Option<String>,
    /// `--workdir` (absolute), instead of the image's; made if missing.
    pub workdir: Option<String>,
    /// `-e KEY=VALUE`, or `-e KEY` for the caller's own value.
    pub env: Vec<String>,
    /// `--hostname` [default: the container's id].
    pub hostname: Option<String>,
    pub network: NetworkMode,
}

/// The sandbox spec for `argv` in the container's mounted `root`: the
/// user looked up in the image, the working directory made, Docker's
/// environment. `lookup` reads the caller's environment for `-e KEY`.
pub fn container_spec(
    root: &Path,
    config: &ContainerConfig,
    argv: Vec<String>,
    opts: &ContainerOptions,
    id: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<RunSpec, ContainerError> {
    let mut spec = RunSpec::new(root, argv);
    let user = opts
        .user
        .as_deref()
        .or(config.user.as_deref())
        .unwrap_or("");
    spec.user = kiln_sandbox::resolve_user(root, user).map_err(|source| ContainerError::User {
        user: user.to_string(),
        source,
    })?;
    let workdir = opts
        .workdir
        .as_deref()
        .or(config.working_dir.as_deref())
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    if !workdir.starts_with('/') {
        return Err(ContainerError::RelativeWorkdir {
            dir: workdir.to_string(),
        });
    }
    make_dir_in_root(root, Path::new(workdir))?;
    spec.cwd = PathBuf::from(workdir);
    spec.hostname = opts.hostname.clone().unwrap_or_else(|| id.to_string());
    let home = home_dir(root, spec.user.uid);
    spec.env = container_environment(
        config.env.as_deref().unwrap_or_default(),
        &opts.env,
        &spec.hostname,
        &home,
        lookup,
    );
    spec.network = opts.network;
    spec.etc = EtcFiles::host();
    Ok(spec)
}

/// The environment: Docker's PATH and HOSTNAME, then the image's, then
/// `-e` (each replacing a variable of the same name), then HOME if unset.
pub fn container_environment(
    image: &[String],
    flags: &[String],
    hostname: &str,
    home: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), hostname.into()),
    ];
    let mut set = |key: &str, value: String| match env.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => env.push((key.to_string(), value)),
    };
    for pair in image {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        set(key, value.to_string());
    }
    for flag in flags {
        match flag.split_once('=') {
            Some((key, value)) => set(key, value.to_string()),
            None => {
                if let Some(value) = lookup(flag) {
                    set(flag, value);
                }
            }
        }
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The home directory of `uid` in the root's /etc/passwd, or `/`, as
/// Docker sets HOME.
fn home_dir(root: &Path, uid: u32) -> String {
    let home = kiln_fs::resolve_in_root(root, Path::new("/etc/passwd"))
        .ok()
        .and_then(|passwd| fs_err::read_to_string(kiln_fs::host_path(root, &passwd)).ok())
        .and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_string())
            })
        });
    home.filter(|h| !h.is_empty()).unwrap_or_else(|| "/".into())
}

/// Creates the directory `dir` (absolute, as the container sees it) in
/// `root`, as Docker creates a missing working directory: symlinks are
/// followed as if `root` were `/` (Docker's securejoin), and missing
/// directories on the way are made, 0755 and root's.
fn make_dir_in_root(root: &Path, dir: &Path) -> Result<(), ContainerError> {
    let io = |source: kiln_fs::Errno| ContainerError::Io {
        doing: format!("creating the working directory {}", dir.display()),
        source: source.into(),
    };
    let tree = kiln_fs::Root::open(root).map_err(io)?;
    let rel = tree.resolve(dir.as_os_str().as_bytes()).map_err(io)?;
    match tree.make_dir_all(&rel, &kiln_fs::NewDir::default()) {
        Ok(_) => Ok(()),
        Err(kiln_fs::Errno::NOTDIR) => {
            // Name the first component that is in the way.
            let mut prefix = Vec::new();
            for part in kiln_fs::path::components(&rel) {
                prefix = kiln_fs::path::join(&prefix, part);
                if tree
                    .lstat(&prefix)
                    .map_err(io)?
                    .is_some_and(|st| !kiln_fs::is_dir(&st))
                {
                    break;
                }
            }
            Err(ContainerError::NotADirectory {
                path: kiln_fs::path::display(&prefix).into(),
            })
        }
        Err(e) => Err(io(e)),
    }
}

/// A new container's ID: 12 hex digits, as Docker shows its IDs (the
/// default hostname, and the name of its root's directory).
pub fn container_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}-{nanos}", std::process::id());
    Digest::of(seed.as_bytes()).hex()[..12].to_string()
}

/// Why the runtime could not start a command, read from what it said, as
/// `docker run` tells them apart (exit 127 and 126).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailure {
    NotFound,
    NotExecutable,
    Other,
}

impl StartFailure {
    pub fn of(stderr: &str) -> StartFailure {
        let stderr = stderr.to_ascii_lowercase();
        if stderr.contains("not found") || stderr.contains("no such file") {
            StartFailure::NotFound
        } else if stderr.contains("permission denied") || stderr.contains("exec format error") {
            StartFailure::NotExecutable
        } else {
            StartFailure::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        ContainerConfig {
            entrypoint: entrypoint.map(strings),
            cmd: cmd.map(strings),
            ..ContainerConfig::default()
        }
    }

    #[test]
    fn command_line_follows_docker() {
        let both = config(Some(&["/entry", "-x"]), Some(&["serve", "--port=80"]));
        assert_eq!(
            container_command(&both, None, &[]).unwrap(),
            ["/entry", "-x", "serve", "--port=80"]
        );
        // Arguments replace CMD, not ENTRYPOINT.
        assert_eq!(
            container_command(&both, None, &strings(&["check"])).unwrap(),
            ["/entry", "-x", "check"]
        );
        // --entrypoint replaces ENTRYPOINT and resets CMD.
        assert_eq!(
            container_command(&both, Some("/bin/sh"), &[]).unwrap(),
            ["/bin/sh"]
        );
        assert_eq!(
            container_command(&both, Some("/bin/sh"), &strings(&["-c", "id"])).unwrap(),
            ["/bin/sh", "-c", "id"]
        );
        // --entrypoint "" clears it: the arguments alone run.
        assert_eq!(
            container_command(&both, Some(""), &strings(&["/bin/echo", "hi"])).unwrap(),
            ["/bin/echo", "hi"]
        );
        assert_eq!(container_command(&both, Some(""), &[]), None);
        let cmd_only = config(None, Some(&["/bin/sh"]));
        assert_eq!(
            container_command(&cmd_only, None, &[]).unwrap(),
            ["/bin/sh"]
        );
        assert_eq!(container_command(&config(None, None), None, &[]), None);
    }

    #[test]
    fn environment_layers_as_docker_does() {
        let env = container_environment(
            &strings(&["PATH=/opt/bin:/bin", "LANG=C.UTF-8", "EMPTY="]),
            &strings(&["LANG=en_US.UTF-8", "NEW=1", "FROM_HOST", "UNSET_HERE"]),
            "abc123",
            "/root",
            |k| (k == "FROM_HOST").then(|| "host value".to_string()),
        );
        assert_eq!(
            env,
            [
                "PATH=/opt/bin:/bin",
                "HOSTNAME=abc123",
                "LANG=en_US.UTF-8",
                "EMPTY=",
                "NEW=1",
                "FROM_HOST=host value",
                "HOME=/root",
            ]
        );
        let env = container_environment(&[], &strings(&["HOME=/x"]), "h", "/", |_| None);
        assert_eq!(
            env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=h".into(),
                "HOME=/x".into()
            ]
        );
    }

    #[test]
    fn paths_in_the_root_never_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(root.join("etc")).unwrap();
        fs_err::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("etc/up")).unwrap();
        // An absolute link means the root's path, not the host's.
        make_dir_in_root(&root, Path::new(&format!("{}/made", outside.display()))).unwrap();
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("made")
                .is_dir()
        );
        make_dir_in_root(&root, Path::new("/abs/work")).unwrap();
        assert!(!outside.join("work").exists());
        make_dir_in_root(&root, Path::new("/etc/up/srv/app")).unwrap();
        assert!(root.join("srv/app").is_dir());
        fs_err::write(root.join("file"), "").unwrap();
        let err = make_dir_in_root(&root, Path::new("/file/x")).unwrap_err();
        assert_eq!(err.to_string(), "/file is not a directory in the image");
    }

    #[test]
    fn home_comes_from_passwd() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        fs_err::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnohome:x:7:7::",
        )
        .unwrap();
        assert_eq!(home_dir(dir.path(), 0), "/root");
        assert_eq!(home_dir(dir.path(), 1000), "/home/app");
        assert_eq!(home_dir(dir.path(), 7), "/");
        assert_eq!(home_dir(dir.path(), 4242), "/");
    }

    #[test]
    fn start_failures_read_as_docker_run_does() {
        assert_eq!(
            StartFailure::of("exec: \"nope\": executable file not found in $PATH"),
            StartFailure::NotFound
        );
        assert_eq!(
            StartFailure::of("exec /x: permission denied"),
            StartFailure::NotExecutable
        );
        assert_eq!(
            StartFailure::of("exec /x: exec format error"),
            StartFailure::NotExecutable
        );
        assert_eq!(StartFailure::of("mount failed"), StartFailure::Other);
    }
}
