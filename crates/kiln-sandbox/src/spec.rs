//! What to run, as plain data. Turning it into a runtime-spec bundle is the
//! executor's job (`runc/bundle.rs`).

use std::path::PathBuf;

/// The hostname a build step sees unless told otherwise: BuildKit's, so a
/// build that writes `hostname` into a file gives the same bytes as with
/// `docker build` (BuildKit's `defaultHostname`).
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// The open-files limit of a build step unless [`RunSpec::rlimits`] sets
/// `nofile`. BuildKit sets no rlimit and lets the step inherit buildkitd's,
/// which under dockerd/containerd's systemd units (`LimitNOFILE=infinity`)
/// is the kernel's `nr_open`, 1048576. kiln has no daemon whose limits would
/// be stable, so it states that value, lowered to kiln's own hard limit when
/// kiln lacks CAP_SYS_RESOURCE (raising a hard limit needs it, setrlimit(2)).
pub const DEFAULT_NOFILE: u64 = 1_048_576;

/// Docker's default capability set (moby `oci/caps/defaults.go`), which
/// BuildKit and containerd use too. A run gets those of them that kiln has
/// itself (its bounding set): runc cannot grant more.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// One run: a command in a root, with everything around it. Made with
/// [`RunSpec::new`], then adjusted field by field (more fields will come).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSpec {
    /// The root, already prepared (e.g. an overlay mount point). Never
    /// mounted by the sandbox; it leaves no file behind in it. One run per
    /// root at a time: the mount points a run creates in it and removes
    /// after are shared with any concurrent run on the same root.
    pub rootfs: PathBuf,
    /// The command line (`argv`); `args[0]` is looked up in `PATH` by runc.
    pub args: Vec<String>,
    /// `KEY=value` pairs, the whole environment (nothing is inherited).
    pub env: Vec<String>,
    /// Absolute working directory inside the root. It must exist.
    pub cwd: PathBuf,
    /// Numeric identity of the process; see [`resolve_user`](crate::resolve_user).
    pub user: User,
    /// Hostname in the run's own UTS namespace.
    pub hostname: String,
    pub network: NetworkMode,
    /// Mounts on top of the defaults, mounted parents first (sorted by
    /// depth, in given order otherwise), as Docker sorts them.
    pub mounts: Vec<Mount>,
    pub security: SecurityMode,
    /// Ignored (always unconfined) in [`SecurityMode::Insecure`].
    pub seccomp: Seccomp,
    /// Where /etc/resolv.conf, /etc/hosts and /etc/hostname come from.
    pub etc: EtcFiles,
    /// Resource limits (`--ulimit`); the rest are kiln's own, except
    /// `nofile`, which defaults to [`DEFAULT_NOFILE`].
    pub rlimits: Vec<Rlimit>,
    /// Sets the runtime-spec's `noNewPrivileges`. Off by default because
    /// BuildKit turns it off (`oci.WithNewPrivileges`): setuid tools such as
    /// `sudo` and `su` are common in Dockerfiles.
    pub no_new_privileges: bool,
}

impl RunSpec {
    /// A run of `args` in `rootfs` with BuildKit's defaults: cwd `/`, root
    /// user, the host's network, the default seccomp profile and
    /// capabilities, the host's resolv.conf and hosts, and
    /// [`DEFAULT_NOFILE`] open files.
    pub fn new(
        rootfs: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            rootfs: rootfs.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: User::root(),
            hostname: DEFAULT_HOSTNAME.to_owned(),
            network: NetworkMode::Host,
            mounts: Vec::new(),
            security: SecurityMode::Sandbox,
            seccomp: Seccomp::Default,
            etc: EtcFiles::host(),
            rlimits: Vec::new(),
            no_new_privileges: false,
        }
    }
}

/// A numeric identity, as the kernel sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups. The primary `gid` is not added implicitly.
    pub additional_gids: Vec<u32>,
}

impl User {
    pub fn root() -> Self {
        Self::default()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NetworkMode {
    /// Share the host's network namespace (kiln's default: there is no
    /// daemon to provide NAT for a private one).
    #[default]
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// Default capabilities, seccomp, masked and read-only paths, read-only
    /// /sys.
    #[default]
    Sandbox,
    /// `RUN --security=insecure`: every capability kiln has, no seccomp, no
    /// masked or read-only paths, writable /sys and cgroupfs, all devices
    /// allowed.
    Insecure,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Seccomp {
    /// containerd's default profile (Docker's allowlist).
    #[default]
    Default,
    /// No seccomp filter.
    Unconfined,
}

/// A mount on top of the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mount {
    /// Absolute path inside the root.
    pub destination: PathBuf,
    pub kind: MountKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MountKind {
    /// A recursive bind mount of a host path (a cache mount, a secret, a
    /// context directory).
    Bind { source: PathBuf, readonly: bool },
    /// A fresh tmpfs; `size` in bytes, `mode` as permission bits.
    Tmpfs {
        size: Option<u64>,
        mode: Option<u32>,
    },
}

impl Mount {
    pub fn bind(
        source: impl Into<PathBuf>,
        destination: impl Into<PathBuf>,
        readonly: bool,
    ) -> Self {
        Self {
            destination: destination.into(),
            kind: MountKind::Bind {
                source: source.into(),
                readonly,
            },
        }
    }

    pub fn tmpfs(destination: impl Into<PathBuf>) -> Self {
        Self {
            destination: destination.into(),
            kind: MountKind::Tmpfs {
                size: None,
                mode: None,
            },
        }
    }
}

/// The host files bind-mounted read-only over the root's /etc files. They
/// are mounted, never written into the root, so they never land in a layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EtcFiles {
    /// Mounted at /etc/resolv.conf; `None` leaves the root's own.
    pub resolv_conf: Option<PathBuf>,
    /// Mounted at /etc/hosts; `None` leaves the root's own.
    pub hosts: Option<PathBuf>,
    /// Mount a file holding [`RunSpec::hostname`] at /etc/hostname.
    pub hostname: bool,
}

impl EtcFiles {
    /// The host's /etc/resolv.conf and /etc/hosts, and a hostname file.
    pub fn host() -> Self {
        Self {
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            hosts: Some(PathBuf::from("/etc/hosts")),
            hostname: true,
        }
    }

    /// Nothing mounted over the root's /etc.
    pub fn none() -> Self {
        Self {
            resolv_conf: None,
            hosts: None,
            hostname: false,
        }
    }
}

/// A resource limit, named as `docker build --ulimit` names them (`nofile`,
/// `nproc`, `core`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rlimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}
