//! [`RunSpec`] → runtime-spec `config.json`: BuildKit's spec
//! (`executor/oci/spec.go`, `spec_linux.go`) over containerd's defaults
//! (`oci/spec.go: populateDefaultUnixSpec`). A pure function of its inputs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount as OciMount,
    MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

use rustix::process::{Resource, getrlimit};

use super::seccomp;
use crate::error::SandboxError;
use crate::spec::{
    DEFAULT_CAPABILITIES, DEFAULT_NOFILE, MountKind, NetworkMode, Rlimit, RunSpec, Seccomp,
    SecurityMode,
};

/// Facts about the host that shape the spec, read once per executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostFacts {
    /// The capabilities a run can be given: kiln's bounding set (runc, run
    /// as root by kiln, gets exactly those as its permitted set).
    pub(crate) bounding: u64,
    /// The cgroup v2 unified hierarchy is mounted at /sys/fs/cgroup.
    pub(crate) cgroup_v2: bool,
    /// The highest open-files limit a run can be given.
    pub(crate) max_nofile: u64,
    /// kiln runs in a user namespace of its own (rootless kiln,
    /// docs/ISOLATION.md): runc, "root" there, cannot mount sysfs over the
    /// host's network namespace nor a cgroup filesystem, and makes no
    /// cgroup (it sees the namespace and acts rootless).
    pub(crate) user_namespace: bool,
    /// Group 5 (`tty`, devpts's `gid=5`) exists in kiln's user namespace:
    /// not where it maps the user's own ids alone.
    pub(crate) tty_gid: bool,
}

impl HostFacts {
    pub(crate) fn probe() -> Self {
        let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
        let caps = |field: &str| {
            let hex = status.lines().find_map(|l| l.strip_prefix(field))?.trim();
            u64::from_str_radix(hex, 16).ok()
        };
        let bounding = caps("CapBnd:").unwrap_or(u64::MAX);
        // CAP_SYS_RESOURCE (24) lets runc raise a hard limit above kiln's
        // own, up to fs.nr_open.
        // In a user namespace the capability counts for nothing: raising a
        // hard limit needs it in the initial one (getrlimit(2)).
        let user_namespace = kiln_fs::in_user_namespace();
        let can_raise = !user_namespace && caps("CapEff:").is_some_and(|c| c & (1 << 24) != 0);
        let ceiling = if can_raise {
            fs_err::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
        } else {
            getrlimit(Resource::Nofile).maximum
        };
        Self {
            bounding,
            cgroup_v2: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            max_nofile: ceiling.map_or(DEFAULT_NOFILE, |c| c.min(DEFAULT_NOFILE)),
            user_namespace,
            tty_gid: maps_id(
                &fs_err::read_to_string("/proc/self/gid_map").unwrap_or_default(),
                TTY_GID,
            ),
        }
    }
}

/// The group devpts gives new terminals (containerd's default spec).
const TTY_GID: u32 = 5;

/// Whether a uid_map or gid_map text maps the id `id` (inside).
pub(crate) fn maps_id(map: &str, id: u32) -> bool {
    map.lines().any(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        matches!(f.as_slice(), [inside, _, count] if *inside <= u64::from(id) && u64::from(id) < inside + count)
    })
}

/// Capability numbers of linux/capability.h, by name.
pub(crate) const CAPABILITY_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's masked paths (`populateDefaultUnixSpec`): runc mounts
/// /dev/null over files and an empty read-only tmpfs over directories.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's read-only paths: runc bind-mounts each over itself read-only.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where the run's hostname file lives in the bundle.
pub(crate) const HOSTNAME_FILE: &str = "hostname";

/// The mounts of a run in mount order: the defaults, the /etc files, then
/// the user's mounts, parents first.
pub(crate) fn mounts(
    run: &RunSpec,
    host: &HostFacts,
    bundle: &Path,
) -> Result<Vec<OciMount>, SandboxError> {
    let insecure = run.security == SecurityMode::Insecure;
    let ro = |rw: bool| if rw { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            // A gid the namespace does not map fails the mount (EINVAL):
            // left out, as `runc spec --rootless` does.
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                if host.tty_gid { "gid=5" } else { "" },
            ]
            .into_iter()
            .filter(|o| !o.is_empty())
            .collect::<Vec<_>>(),
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
    ];
    if host.user_namespace && run.network != NetworkMode::None {
        // Rootless: sysfs may be mounted only by the owner of the network
        // namespace, which is the host's (sysfs_get_tree, "net ns"), and a
        // cgroup filesystem not at all; the host's /sys, read-only, as
        // `runc spec --rootless` and rootless BuildKit do.
        out.push(bind(
            Path::new("/sys"),
            Path::new("/sys"),
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?);
    } else {
        out.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", ro(insecure)],
        )?);
    }
    if !host.user_namespace {
        // runc mounts the run's own cgroups here (on cgroup v1 a tmpfs with a
        // bind of each controller), read-only unless insecure (BuildKit's
        // withCGroup / oci.WithWriteableCgroupfs).
        out.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", ro(insecure)],
        )?);
    }
    // BuildKit drops containerd's /run tmpfs (moby/buildkit#429): what a
    // step writes to /run belongs to the image.

    let etc_bind = |source: &Path, destination: &str| {
        bind(
            source,
            Path::new(destination),
            &["nosuid", "noexec", "nodev", "rbind", "ro"],
        )
    };
    if let Some(source) = &run.etc.resolv_conf {
        out.push(etc_bind(source, "/etc/resolv.conf")?);
    }
    if let Some(source) = &run.etc.hosts {
        out.push(etc_bind(source, "/etc/hosts")?);
    }
    if run.etc.hostname {
        out.push(etc_bind(&bundle.join(HOSTNAME_FILE), "/etc/hostname")?);
    }

    let mut user: Vec<_> = run.mounts.iter().collect();
    user.sort_by_key(|m| m.destination.components().count());
    for m in user {
        if !m.destination.is_absolute() {
            return Err(SandboxError::RelativePath {
                path: m.destination.clone(),
            });
        }
        out.push(match &m.kind {
            MountKind::Bind { source, readonly } => {
                let options = ["rbind", if *readonly { "ro" } else { "rw" }];
                bind(source, &m.destination, &options)?
            }
            MountKind::Tmpfs { size, mode } => {
                // BuildKit's tmpfs mount: nosuid only (devices and exec allowed).
                let mut options = vec!["nosuid".to_owned()];
                options.extend(size.map(|s| format!("size={s}")));
                options.extend(mode.map(|m| format!("mode={m:o}")));
                MountBuilder::default()
                    .destination(m.destination.clone())
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build()
                    .map_err(SandboxError::spec)?
            }
        });
    }
    Ok(dedup_mounts(out))
}

/// A later mount on the same destination replaces an earlier one in its
/// place, as BuildKit's `dedupMounts` does: `RUN --mount=type=tmpfs,
/// target=/dev/shm` is the /dev/shm, not a second mount over the default.
fn dedup_mounts(mounts: Vec<OciMount>) -> Vec<OciMount> {
    let mut out: Vec<OciMount> = Vec::with_capacity(mounts.len());
    for m in mounts {
        match out.iter_mut().find(|o| o.destination() == m.destination()) {
            Some(slot) => *slot = m,
            None => out.push(m),
        }
    }
    out
}

/// The runtime spec of a run whose bundle directory is `bundle`.
pub(crate) fn runtime_spec(
    run: &RunSpec,
    host: &HostFacts,
    bundle: &Path,
) -> Result<Spec, SandboxError> {
    let insecure = run.security == SecurityMode::Insecure;
    // Only what kiln can give: asking runc for more fails the run ("unable
    // to apply caps"), e.g. on hosts that drop CAP_SYS_RESOURCE.
    let grantable = |name: &&str| {
        CAPABILITY_NAMES
            .iter()
            .position(|n| n == name)
            .is_some_and(|bit| host.bounding & (1 << bit) != 0)
    };
    let cap_names: Vec<&str> = if insecure {
        CAPABILITY_NAMES.iter().copied().filter(grantable).collect()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(grantable)
            .collect()
    };
    let caps: HashSet<Capability> = cap_names
        .iter()
        .map(|name| {
            serde_json::from_value(serde_json::Value::from(*name)).map_err(SandboxError::spec)
        })
        .collect::<Result<_, _>>()?;
    // No inheritable set: since CVE-2022-24769 containerd and moby leave it
    // empty, so file capabilities cannot be inherited across exec.
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(SandboxError::spec)?;

    let user = UserBuilder::default()
        .uid(run.user.uid)
        .gid(run.user.gid)
        .additional_gids(run.user.additional_gids.clone())
        .build()
        .map_err(SandboxError::spec)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(run.args.clone())
        .env(run.env.clone())
        .cwd(run.cwd.clone())
        .capabilities(capabilities)
        .rlimits(rlimits(run, host)?)
        .no_new_privileges(run.no_new_privileges)
        .build()
        .map_err(SandboxError::spec)?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if run.network == NetworkMode::None {
        // A new network namespace without a path: runc brings up `lo` in it
        // (specconv adds its "loopback" network).
        namespaces.push(LinuxNamespaceType::Network);
    }
    if host.cgroup_v2 {
        // BuildKit adds a cgroup namespace only on v2: on a v1 hierarchy it
        // fails with EINVAL for non-standard layouts (moby/buildkit#4108).
        namespaces.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(SandboxError::spec)?;

    // Deny every device, then runc appends its allow rules for the devices
    // it creates (null, zero, full, random, urandom, tty, ptmx).
    let devices = LinuxDeviceCgroupBuilder::default()
        .allow(insecure)
        .access("rwm")
        .build()
        .map_err(SandboxError::spec)?;
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![devices])
        .build()
        .map_err(SandboxError::spec)?;

    let (masked, readonly): (Vec<String>, Vec<String>) = if insecure {
        (Vec::new(), Vec::new())
    } else {
        (strings(MASKED_PATHS), strings(READONLY_PATHS))
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .masked_paths(masked)
        .readonly_paths(readonly);
    if !insecure && run.seccomp == Seccomp::Default {
        linux = linux.seccomp(seccomp::default_profile(&cap_names)?);
    }
    let linux = linux.build().map_err(SandboxError::spec)?;

    let root = RootBuilder::default()
        .path(run.rootfs.clone())
        .readonly(false)
        .build()
        .map_err(SandboxError::spec)?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .mounts(mounts(run, host, bundle)?)
        .process(process)
        .hostname(run.hostname.clone())
        .linux(linux)
        .build()
        .map_err(SandboxError::spec)
}

fn rlimits(run: &RunSpec, host: &HostFacts) -> Result<Vec<PosixRlimit>, SandboxError> {
    let default_nofile = Rlimit {
        name: "nofile".to_owned(),
        soft: host.max_nofile,
        hard: host.max_nofile,
    };
    let has_nofile = run
        .rlimits
        .iter()
        .any(|r| r.name.eq_ignore_ascii_case("nofile"));
    run.rlimits
        .iter()
        .chain((!has_nofile).then_some(&default_nofile))
        .map(|r| {
            let name = format!("RLIMIT_{}", r.name.to_uppercase());
            let typ: PosixRlimitType = serde_json::from_value(serde_json::Value::from(name))
                .map_err(|_| SandboxError::UnknownRlimit {
                    name: r.name.clone(),
                })?;
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(r.soft)
                .hard(r.hard)
                .build()
                .map_err(SandboxError::spec)
        })
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<OciMount, SandboxError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(strings(options))
        .build()
        .map_err(SandboxError::spec)
}

fn bind(source: &Path, destination: &Path, options: &[&str]) -> Result<OciMount, SandboxError> {
    MountBuilder::default()
        .destination(destination.to_path_buf())
        .typ("bind")
        .source(PathBuf::from(source))
        .options(strings(options))
        .build()
        .map_err(SandboxError::spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Mount, User};

    const HOST: HostFacts = HostFacts {
        bounding: (1 << 41) - 1,
        cgroup_v2: false,
        max_nofile: DEFAULT_NOFILE,
        user_namespace: false,
        tty_gid: true,
    };

    fn spec_of(run: &RunSpec) -> Spec {
        runtime_spec(run, &HOST, Path::new("/bundle")).unwrap()
    }

    fn json(run: &RunSpec) -> serde_json::Value {
        serde_json::to_value(spec_of(run)).unwrap()
    }

    fn namespaces(v: &serde_json::Value) -> Vec<String> {
        v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_owned())
            .collect()
    }

    fn destinations(v: &serde_json::Value) -> Vec<String> {
        v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_owned())
            .collect()
    }

    fn sorted_caps(v: &serde_json::Value, set: &str) -> Vec<String> {
        let mut caps: Vec<String> = v["process"]["capabilities"][set]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        caps.sort();
        caps
    }

    #[test]
    fn defaults_follow_buildkit() {
        let mut run = RunSpec::new("/rootfs", ["sh", "-c", "true"]);
        run.env = vec!["PATH=/bin".into()];
        run.user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
        };
        let v = json(&run);
        assert_eq!(v["root"]["path"], "/rootfs");
        assert_eq!(v["root"]["readonly"], false);
        assert_eq!(v["hostname"], "buildkitsandbox");
        assert_eq!(
            v["process"]["args"],
            serde_json::json!(["sh", "-c", "true"])
        );
        assert_eq!(v["process"]["env"], serde_json::json!(["PATH=/bin"]));
        assert_eq!(v["process"]["terminal"], false);
        assert_eq!(v["process"]["noNewPrivileges"], false);
        assert_eq!(
            v["process"]["user"],
            serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [10]})
        );
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}])
        );
        let mut want: Vec<String> = strings(DEFAULT_CAPABILITIES);
        want.sort();
        assert_eq!(sorted_caps(&v, "bounding"), want);
        assert_eq!(sorted_caps(&v, "effective"), want);
        assert!(sorted_caps(&v, "inheritable").is_empty());
        assert_eq!(namespaces(&v), ["pid", "ipc", "uts", "mount"]);
        assert_eq!(
            destinations(&v),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/hostname"
            ]
        );
        let sys = &v["mounts"][5]["options"];
        assert!(sys.as_array().unwrap().contains(&"ro".into()));
        assert_eq!(v["mounts"][9]["source"], "/bundle/hostname");
        assert_eq!(
            v["linux"]["maskedPaths"].as_array().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert_eq!(
            v["linux"]["readonlyPaths"].as_array().unwrap().len(),
            READONLY_PATHS.len()
        );
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            v["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"}])
        );
    }

    #[test]
    fn network_none_gets_its_own_namespace() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.network = NetworkMode::None;
        assert_eq!(
            namespaces(&json(&run)),
            ["pid", "ipc", "uts", "mount", "network"]
        );
    }

    #[test]
    fn cgroup_v2_hosts_get_a_cgroup_namespace() {
        let run = RunSpec::new("/rootfs", ["true"]);
        let host = HostFacts {
            cgroup_v2: true,
            ..HOST
        };
        let v = serde_json::to_value(runtime_spec(&run, &host, Path::new("/b")).unwrap()).unwrap();
        assert!(namespaces(&v).contains(&"cgroup".to_owned()));
    }

    #[test]
    fn insecure_opens_everything() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.security = SecurityMode::Insecure;
        let v = json(&run);
        assert_eq!(sorted_caps(&v, "bounding").len(), 41);
        assert!(v["linux"].get("seccomp").is_none());
        assert!(v["linux"]["maskedPaths"].as_array().unwrap().is_empty());
        assert!(v["linux"]["readonlyPaths"].as_array().unwrap().is_empty());
        assert!(
            v["mounts"][5]["options"]
                .as_array()
                .unwrap()
                .contains(&"rw".into())
        );
        assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
    }

    #[test]
    fn caps_are_limited_to_what_kiln_has() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.security = SecurityMode::Insecure;
        // No CAP_SYS_RESOURCE (24), and a kernel that stops at 37.
        let host = HostFacts {
            bounding: ((1 << 38) - 1) & !(1 << 24),
            ..HOST
        };
        let v = serde_json::to_value(runtime_spec(&run, &host, Path::new("/b")).unwrap()).unwrap();
        let caps = sorted_caps(&v, "bounding");
        assert_eq!(caps.len(), 37);
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_owned()));
        // Without CAP_CHOWN, the default set loses it too.
        let host = HostFacts {
            bounding: !1,
            ..HOST
        };
        let run = RunSpec::new("/rootfs", ["true"]);
        let v = serde_json::to_value(runtime_spec(&run, &host, Path::new("/b")).unwrap()).unwrap();
        assert_eq!(
            sorted_caps(&v, "bounding").len(),
            DEFAULT_CAPABILITIES.len() - 1
        );
    }

    #[test]
    fn unconfined_seccomp_keeps_the_caps() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.seccomp = Seccomp::Unconfined;
        let v = json(&run);
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(
            sorted_caps(&v, "bounding").len(),
            DEFAULT_CAPABILITIES.len()
        );
    }

    #[test]
    fn user_mounts_come_last_parents_first() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.etc = crate::spec::EtcFiles::none();
        run.mounts = vec![
            Mount::bind("/cache/pip", "/root/.cache/pip", false),
            Mount::bind("/cache", "/root/.cache", true),
            Mount {
                destination: "/tmp".into(),
                kind: MountKind::Tmpfs {
                    size: Some(1 << 20),
                    mode: Some(0o1777),
                },
            },
        ];
        let v = json(&run);
        assert_eq!(
            destinations(&v)[7..],
            ["/tmp", "/root/.cache", "/root/.cache/pip"]
        );
        assert_eq!(
            v["mounts"][7]["options"],
            serde_json::json!(["nosuid", "size=1048576", "mode=1777"])
        );
        assert_eq!(
            v["mounts"][8]["options"],
            serde_json::json!(["rbind", "ro"])
        );
        assert_eq!(
            v["mounts"][9]["options"],
            serde_json::json!(["rbind", "rw"])
        );
    }

    #[test]
    fn a_user_mount_replaces_a_default_on_the_same_destination() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.mounts = vec![Mount {
            destination: "/dev/shm".into(),
            kind: MountKind::Tmpfs {
                size: Some(128 << 20),
                mode: None,
            },
        }];
        let v = json(&run);
        let dests = destinations(&v);
        assert_eq!(dests.iter().filter(|d| *d == "/dev/shm").count(), 1);
        let at = dests.iter().position(|d| d == "/dev/shm").unwrap();
        // In the default's place (after /dev), with the user's options.
        assert!(at < dests.iter().position(|d| d == "/sys").unwrap());
        assert_eq!(
            v["mounts"][at]["options"],
            serde_json::json!(["nosuid", "size=134217728"])
        );
    }

    #[test]
    fn nofile_defaults_to_what_the_host_can_grant() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        let host = HostFacts {
            max_nofile: 20000,
            ..HOST
        };
        let v = serde_json::to_value(runtime_spec(&run, &host, Path::new("/b")).unwrap()).unwrap();
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}])
        );
        run.rlimits = vec![
            Rlimit {
                name: "NOFILE".into(),
                soft: 1024,
                hard: 4096,
            },
            Rlimit {
                name: "nproc".into(),
                soft: 100,
                hard: 200,
            },
        ];
        let v = json(&run);
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([
                {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
                {"type": "RLIMIT_NPROC", "hard": 200, "soft": 100}
            ])
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.mounts = vec![Mount::tmpfs("tmp")];
        assert!(matches!(
            runtime_spec(&run, &HOST, Path::new("/b")),
            Err(SandboxError::RelativePath { .. })
        ));
        let mut run = RunSpec::new("/rootfs", ["true"]);
        run.rlimits = vec![Rlimit {
            name: "bogus".into(),
            soft: 1,
            hard: 1,
        }];
        assert!(matches!(
            runtime_spec(&run, &HOST, Path::new("/b")),
            Err(SandboxError::UnknownRlimit { .. })
        ));
    }

    fn mount_of<'a>(v: &'a serde_json::Value, destination: &str) -> Option<&'a serde_json::Value> {
        v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == destination)
    }

    /// Rootless: runc may not mount sysfs over the host's network
    /// namespace, nor a cgroup filesystem; with a network of its own it
    /// may mount sysfs.
    #[test]
    fn in_a_user_namespace_sys_is_the_hosts_read_only() {
        let host = HostFacts {
            user_namespace: true,
            ..HOST
        };
        let mut run = RunSpec::new("/rootfs", ["true"]);
        let v = serde_json::to_value(runtime_spec(&run, &host, Path::new("/b")).unwrap()).unwrap();
        let sys = mount_of(&v, "/sys").unwrap();
        assert_eq!(sys["source"], "/sys");
        assert!(sys["options"].as_array().unwrap().contains(&"ro".into()));
        assert!(sys["options"].as_array().unwrap().contains(&"rbind".into()));
        assert!(mount_of(&v, "/sys/fs/cgroup").is_none());

        run.network = NetworkMode::None;
        let v = serde_json::to_value(runtime_spec(&run, &host, Path::new("/b")).unwrap()).unwrap();
        assert_eq!(mount_of(&v, "/sys").unwrap()["type"], "sysfs");
        assert!(mount_of(&v, "/sys/fs/cgroup").is_none());

        let v = serde_json::to_value(runtime_spec(&run, &HOST, Path::new("/b")).unwrap()).unwrap();
        assert_eq!(mount_of(&v, "/sys").unwrap()["type"], "sysfs");
        assert_eq!(mount_of(&v, "/sys/fs/cgroup").unwrap()["type"], "cgroup");
    }

    #[test]
    fn devpts_gets_the_tty_group_only_where_it_is_mapped() {
        assert!(maps_id("         0          0 4294967295\n", 5));
        assert!(maps_id("0 1000 1\n1 100000 65536\n", 5));
        assert!(!maps_id("0 1000 1\n", 5));
        let run = RunSpec::new("/rootfs", ["true"]);
        let options = |host: &HostFacts| {
            let v =
                serde_json::to_value(runtime_spec(&run, host, Path::new("/b")).unwrap()).unwrap();
            mount_of(&v, "/dev/pts").unwrap()["options"].clone()
        };
        assert!(options(&HOST).as_array().unwrap().contains(&"gid=5".into()));
        let single = HostFacts {
            user_namespace: true,
            tty_gid: false,
            ..HOST
        };
        assert!(
            !options(&single)
                .as_array()
                .unwrap()
                .contains(&"gid=5".into())
        );
    }
}
