//! The default seccomp profile, as data: containerd's
//! `contrib/seccomp/seccomp_default.go` (`DefaultProfile`), which is
//! Docker's allowlist. BuildKit applies moby's copy of the same profile.
//!
//! Everything not listed fails with EPERM (runc's errno for a plain
//! `SCMP_ACT_ERRNO`). Extra syscalls are allowed per capability in the
//! bounding set, so `--security=insecure` (which drops seccomp entirely)
//! and a capability-less profile stay consistent.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::SandboxError;

/// Allowed whatever the capabilities.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // containerd allows ptrace on kernels >= 4.8, where seccomp can no longer
    // be bypassed through it; kiln's kernels (overlayfs' new mount API) all are.
    "ptrace",
];

/// `personality(2)` domains allowed: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and 0xffffffff (the query).
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

#[cfg(target_arch = "x86_64")]
const ARCH_ALLOWED: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "x86")]
const ARCH_ALLOWED: &[&str] = &["modify_ldt"];
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const ARCH_ALLOWED: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(target_arch = "powerpc64")]
const ARCH_ALLOWED: &[&str] = &["sync_file_range2", "swapcontext"];
#[cfg(target_arch = "s390x")]
const ARCH_ALLOWED: &[&str] = &[
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
];
#[cfg(target_arch = "riscv64")]
const ARCH_ALLOWED: &[&str] = &["riscv_flush_icache"];
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "riscv64"
)))]
const ARCH_ALLOWED: &[&str] = &[];

/// Allowed only when the capability is in the bounding set.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `CLONE_NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP`
/// (linux/sched.h): without CAP_SYS_ADMIN, clone(2) is allowed only with
/// none of these flags.
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x0200_0000;

/// ENOSYS (asm-generic/errno.h): clone3's flags are in memory, where seccomp
/// cannot look, so it is refused as "not implemented" and libc falls back to
/// clone (moby/moby#42681).
const ENOSYS: u32 = 38;

fn arches() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    } else if cfg!(target_arch = "s390x") {
        vec![Arch::ScmpArchS390, Arch::ScmpArchS390x]
    } else if cfg!(target_arch = "riscv64") {
        vec![Arch::ScmpArchRiscv64]
    } else {
        Vec::new()
    }
}

/// The profile for a process whose bounding set is `capabilities`
/// (`CAP_*` names).
pub(crate) fn default_profile(capabilities: &[&str]) -> Result<LinuxSeccomp, SandboxError> {
    let mut rules = vec![allow(ALLOWED.iter().chain(ARCH_ALLOWED), Vec::new())?];
    for &value in PERSONALITIES {
        rules.push(allow(
            ["personality"].iter(),
            vec![arg(0, value, None, LinuxSeccompOperator::ScmpCmpEq)?],
        )?);
    }
    for (cap, names) in BY_CAPABILITY {
        if capabilities.contains(cap) {
            rules.push(allow(names.iter(), Vec::new())?);
        }
    }
    if !capabilities.contains(&"CAP_SYS_ADMIN") {
        // On s390 the flags are clone's second argument.
        let index = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        let no_namespaces = arg(
            index,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )?;
        rules.push(allow(["clone"].iter(), vec![no_namespaces])?);
        rules.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_owned()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(ENOSYS)
                .build()
                .map_err(SandboxError::spec)?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .architectures(arches())
        .syscalls(rules)
        .build()
        .map_err(SandboxError::spec)
}

fn allow<'a>(
    names: impl Iterator<Item = &'a &'a str>,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall, SandboxError> {
    let mut builder = LinuxSyscallBuilder::default()
        .names(names.map(|n| n.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow);
    if !args.is_empty() {
        builder = builder.args(args);
    }
    builder.build().map_err(SandboxError::spec)
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Result<LinuxSeccompArg, SandboxError> {
    let mut builder = oci_spec::runtime::LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(two) = value_two {
        builder = builder.value_two(two);
    }
    builder.build().map_err(SandboxError::spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_unconditionally(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_caps_get_chroot_but_not_mount_or_unshare() {
        let profile = default_profile(crate::spec::DEFAULT_CAPABILITIES).unwrap();
        let allowed = allowed_unconditionally(&profile);
        assert!(allowed.iter().any(|n| n == "chroot"));
        assert!(allowed.iter().any(|n| n == "read"));
        for blocked in [
            "mount", "unshare", "setns", "bpf", "reboot", "clone", "clone3",
        ] {
            assert!(!allowed.iter().any(|n| n == blocked), "{blocked} allowed");
        }
        let clone3 = profile
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone3"])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
    }

    #[test]
    fn sys_admin_allows_namespaces() {
        let profile = default_profile(&["CAP_SYS_ADMIN"]).unwrap();
        let allowed = allowed_unconditionally(&profile);
        for name in ["mount", "unshare", "setns", "clone", "clone3"] {
            assert!(allowed.iter().any(|n| n == name), "{name} not allowed");
        }
    }

    #[test]
    fn no_name_is_listed_twice_in_the_allowlist() {
        let mut names: Vec<_> = ALLOWED.iter().chain(ARCH_ALLOWED).collect();
        names.sort();
        let len = names.len();
        names.dedup();
        assert_eq!(len, names.len());
    }
}
