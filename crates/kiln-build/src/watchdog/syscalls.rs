//! Names of the syscalls a hung process usually sits in, for the
//! diagnosis (`/proc/<pid>/syscall` gives the number, which differs per
//! architecture: `arch/x86/entry/syscalls/syscall_64.tbl` and
//! `include/uapi/asm-generic/unistd.h`). Others show as their number.

#[cfg(target_arch = "x86_64")]
const NAMES: &[(i64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (3, "close"),
    (7, "poll"),
    (16, "ioctl"),
    (17, "pread64"),
    (18, "pwrite64"),
    (19, "readv"),
    (20, "writev"),
    (23, "select"),
    (34, "pause"),
    (35, "nanosleep"),
    (41, "socket"),
    (42, "connect"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (56, "clone"),
    (59, "execve"),
    (61, "wait4"),
    (72, "fcntl"),
    (73, "flock"),
    (74, "fsync"),
    (128, "rt_sigtimedwait"),
    (130, "rt_sigsuspend"),
    (202, "futex"),
    (230, "clock_nanosleep"),
    (232, "epoll_wait"),
    (247, "waitid"),
    (257, "openat"),
    (270, "pselect6"),
    (271, "ppoll"),
    (281, "epoll_pwait"),
    (288, "accept4"),
    (299, "recvmmsg"),
    (307, "sendmmsg"),
];

#[cfg(target_arch = "aarch64")]
const NAMES: &[(i64, &str)] = &[
    (22, "epoll_pwait"),
    (25, "fcntl"),
    (29, "ioctl"),
    (32, "flock"),
    (56, "openat"),
    (57, "close"),
    (63, "read"),
    (64, "write"),
    (65, "readv"),
    (66, "writev"),
    (67, "pread64"),
    (68, "pwrite64"),
    (72, "pselect6"),
    (73, "ppoll"),
    (82, "fsync"),
    (95, "waitid"),
    (98, "futex"),
    (101, "nanosleep"),
    (115, "clock_nanosleep"),
    (133, "rt_sigsuspend"),
    (137, "rt_sigtimedwait"),
    (198, "socket"),
    (202, "accept"),
    (203, "connect"),
    (206, "sendto"),
    (207, "recvfrom"),
    (211, "sendmsg"),
    (212, "recvmsg"),
    (220, "clone"),
    (221, "execve"),
    (242, "accept4"),
    (243, "recvmmsg"),
    (260, "wait4"),
    (269, "sendmmsg"),
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NAMES: &[(i64, &str)] = &[];

/// `wait4`, or `syscall 435` for one without a name here.
pub(crate) fn name(nr: i64) -> String {
    match NAMES.iter().find(|(n, _)| *n == nr) {
        Some((_, name)) => (*name).to_string(),
        None => format!("syscall {nr}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_sorted_and_unique() {
        assert!(super::NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(super::name(100_000), "syscall 100000");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn common_ones() {
        assert_eq!(super::name(61), "wait4");
        assert_eq!(super::name(230), "clock_nanosleep");
    }
}
