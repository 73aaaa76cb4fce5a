//! What the process sees: network, /etc files, /sys, /proc, capabilities,
//! seccomp, devices, limits.

use kiln_sandbox::{EtcFiles, NetworkMode, Seccomp, SecurityMode};
use kiln_testkit::need::{Runc, need};

use crate::harness::Sandbox;

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_owned()))
        .collect();
    names.sort();
    names
}

#[test]
fn network_none_has_only_loopback_up() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.spec("cat /proc/net/dev; echo ---; ip -o link show lo");
    let out = sb.stdout_of(&spec);
    let (dev, lo) = out.split_once("---\n").unwrap();
    assert_eq!(interfaces(dev), ["lo"]);
    assert!(lo.contains("UP"), "{lo}");
}

#[test]
fn network_host_sees_the_hosts_interfaces() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let mut spec = sb.spec("cat /proc/net/dev");
    spec.network = NetworkMode::Host;
    let inside = interfaces(&sb.stdout_of(&spec));
    let host = interfaces(&fs_err::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(inside, host);
    assert!(inside.len() > 1, "{inside:?}");
}

#[test]
fn etc_files_are_the_hosts_and_leave_nothing_behind() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let before = sb.listing();
    assert!(!before.iter().any(|p| p == "etc"));
    let mut spec = sb.spec(
        "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; cat /etc/hostname; hostname; \
         (echo x > /etc/hosts) 2>/dev/null && echo hosts-writable; true",
    );
    spec.hostname = "kiln-test".into();
    let out = sb.stdout_of(&spec);
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(
        parts[0],
        fs_err::read_to_string("/etc/resolv.conf").unwrap()
    );
    assert_eq!(parts[1], fs_err::read_to_string("/etc/hosts").unwrap());
    assert_eq!(parts[2], "kiln-test\nkiln-test\n", "read-only: {out}");
    // Mount points made for the run (/etc and its files) are gone again.
    assert_eq!(sb.listing(), before);
    sb.assert_no_leftovers();
}

#[test]
fn the_roots_own_etc_files_are_shadowed_not_changed() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    sb.write("/etc/hosts", "10.0.0.1 mine\n");
    let mtime = || {
        fs_err::metadata(sb.rootfs().join("etc"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let etc_mtime = mtime();
    let before = sb.listing();
    let out = sb.stdout_of(&sb.spec("cat /etc/hosts"));
    assert_eq!(out, fs_err::read_to_string("/etc/hosts").unwrap());
    assert_eq!(
        fs_err::read_to_string(sb.rootfs().join("etc/hosts")).unwrap(),
        "10.0.0.1 mine\n"
    );
    assert_eq!(sb.listing(), before);
    // /etc got stubs for resolv.conf and hostname, and its time back.
    assert_eq!(mtime(), etc_mtime);
}

#[test]
fn etc_files_can_be_left_alone() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    sb.write("/etc/hosts", "10.0.0.1 mine\n");
    let mut spec = sb.spec("cat /etc/hosts; test -e /etc/resolv.conf || echo no-resolv");
    spec.etc = EtcFiles::none();
    assert_eq!(sb.stdout_of(&spec), "10.0.0.1 mine\nno-resolv\n");
}

fn mount_options(mounts: &str, mount_point: &str) -> Vec<String> {
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(mount_point))
        .unwrap_or_else(|| panic!("{mount_point} not mounted:\n{mounts}"));
    line.split_whitespace()
        .nth(3)
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

#[test]
fn sys_is_read_only_unless_insecure() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.spec("cat /proc/mounts");
    let mounts = sb.stdout_of(&spec);
    assert!(mount_options(&mounts, "/sys").contains(&"ro".to_owned()));
    assert!(
        mount_options(&mounts, "/sys/fs/cgroup").contains(&"ro".to_owned())
            || mounts.contains("cgroup")
    );

    let mut insecure = sb.spec("cat /proc/mounts");
    insecure.security = SecurityMode::Insecure;
    let mounts = sb.stdout_of(&insecure);
    assert!(mount_options(&mounts, "/sys").contains(&"rw".to_owned()));
}

#[test]
fn proc_paths_are_masked_and_read_only() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    // Kernels differ in which of the masked paths they have: check those
    // this host has, that are not empty here.
    let files: Vec<&str> = [
        "/proc/timer_list",
        "/proc/keys",
        "/proc/kcore",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|p| fs_err::read(p).is_ok_and(|b| !b.is_empty()))
    .collect();
    let dirs: Vec<&str> = ["/proc/acpi", "/proc/scsi", "/sys/firmware"]
        .into_iter()
        .filter(|p| fs_err::read_dir(p).is_ok_and(|mut d| d.next().is_some()))
        .collect();
    assert!(
        !files.is_empty() && !dirs.is_empty(),
        "nothing to check on this host"
    );
    let mut script = String::new();
    for f in &files {
        script += &format!("echo {f} $(cat {f} | wc -c); ");
    }
    for d in &dirs {
        script += &format!("echo {d} $(ls -A {d} | wc -l); ");
    }
    script += "(echo 1 > /proc/sys/kernel/printk_ratelimit) 2>/dev/null && echo sysctl-writable; \
               cat /proc/mounts";
    let out = sb.stdout_of(&sb.spec(&script));
    let mut lines = out.lines();
    for path in files.iter().chain(&dirs) {
        assert_eq!(
            lines.next(),
            Some(format!("{path} 0").as_str()),
            "{path} is masked"
        );
    }
    assert!(!out.contains("sysctl-writable"));
    let mounts: String = lines.map(|l| format!("{l}\n")).collect();
    assert!(mount_options(&mounts, "/proc/sys").contains(&"ro".to_owned()));
}

#[test]
fn default_capabilities_are_dockers() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    fs_err::create_dir(sb.rootfs().join("mnt")).unwrap();
    let script = "grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status; \
                  mount -t tmpfs none /mnt 2>/dev/null && echo mounted || echo mount-denied";
    let out = sb.stdout_of(&sb.spec(script));
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.ends_with("mount-denied\n"), "{out}");

    let mut insecure = sb.spec(script);
    insecure.security = SecurityMode::Insecure;
    let out = sb.stdout_of(&insecure);
    // Every capability kiln has itself.
    let status = fs_err::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert!(out.contains(&format!("CapEff:\t{bounding}")), "{out}");
    assert!(out.ends_with("mounted\n"), "{out}");
}

#[test]
fn seccomp_blocks_what_capabilities_allow() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    // unshare(CLONE_NEWUSER) needs no capability: only seccomp stops it.
    let script = "unshare -U true 2>/dev/null && echo unshared || echo denied";
    assert_eq!(sb.stdout_of(&sb.spec(script)), "denied\n");
    let mut unconfined = sb.spec(script);
    unconfined.seccomp = Seccomp::Unconfined;
    assert_eq!(sb.stdout_of(&unconfined), "unshared\n");
    let out = sb.stdout_of(&sb.spec("grep Seccomp: /proc/self/status"));
    assert_eq!(out, "Seccomp:\t2\n", "filter mode");
}

#[test]
fn dev_is_minimal_and_usable() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let out =
        sb.stdout_of(&sb.spec("ls /dev; echo x > /dev/null && head -c 4 /dev/urandom | wc -c"));
    let entries: Vec<&str> = out.lines().collect();
    for name in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd",
        "stdin", "stdout", "stderr",
    ] {
        assert!(entries.contains(&name), "/dev/{name} missing: {entries:?}");
    }
    assert_eq!(entries.last(), Some(&"4"));
}

#[test]
fn open_files_limit_is_buildkits() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let got: u64 = sb.stdout_of(&sb.spec("ulimit -n")).trim().parse().unwrap();
    // Lowered to kiln's own hard limit where kiln lacks CAP_SYS_RESOURCE.
    let own = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    assert!(got == 1_048_576 || Some(got) == own, "{got} vs {own:?}");
}

#[test]
fn namespaces_are_new_except_the_network_on_host() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    let mut spec =
        sb.spec("for ns in pid mnt uts ipc net; do readlink /proc/self/ns/$ns; done; echo $$");
    spec.network = NetworkMode::Host;
    let out = sb.stdout_of(&spec);
    let lines: Vec<&str> = out.lines().collect();
    for (i, ns) in ["pid", "mnt", "uts", "ipc", "net"].iter().enumerate() {
        let host = fs_err::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let same = lines[i] == host.to_str().unwrap();
        assert_eq!(
            same,
            *ns == "net",
            "{ns}: {} vs {}",
            lines[i],
            host.display()
        );
    }
    assert_eq!(lines[5], "1", "the command is pid 1");
}

/// An overlay mount for the duration of a test.
struct Overlay {
    merged: std::path::PathBuf,
}

impl Overlay {
    fn mount(
        lower: &std::path::Path,
        upper: &std::path::Path,
        work: &std::path::Path,
        merged: &std::path::Path,
    ) -> Self {
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(merged)
            .status()
            .unwrap();
        assert!(status.success(), "overlay mount failed");
        Self {
            merged: merged.to_owned(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.merged)
            .status();
    }
}

#[test]
fn an_overlay_upper_dir_gets_no_stub() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    // The busybox root is the lower layer: no /etc.
    let base = tempfile::tempdir().unwrap();
    let [upper, work, merged] = ["upper", "work", "merged"].map(|d| base.path().join(d));
    for d in [&upper, &work, &merged] {
        fs_err::create_dir(d).unwrap();
    }
    let overlay = Overlay::mount(&sb.rootfs(), &upper, &work, &merged);
    let mut spec = sb.spec("cat /etc/hosts >/dev/null; ls /proc/self >/dev/null");
    spec.rootfs = merged.clone();
    let (result, output) = sb.run(&spec);
    assert!(result.unwrap().success(), "{}", output.stderr_text());
    assert!(
        crate::harness::listing(&upper).is_empty(),
        "{:?}",
        crate::harness::listing(&upper)
    );
    drop(overlay);
    sb.assert_no_leftovers();
}

#[test]
fn a_root_without_proc_dev_sys_gets_them_as_plain_directories() {
    if need(Runc).is_none() {
        return;
    }
    // BuildKit keeps the /proc, /dev and /sys runc makes in a root without
    // them (a `FROM scratch` stage's RUN), so they land in its layer as
    // empty root-owned 0755 directories; kiln must do the same.
    let sb = Sandbox::new();
    for top in ["dev", "proc", "sys"] {
        fs_err::remove_dir(sb.rootfs().join(top)).unwrap();
    }
    let before = sb.listing();
    let (result, output) = sb.run(&sb.spec("ls /proc/self >/dev/null"));
    assert!(result.unwrap().success(), "{}", output.stderr_text());
    let mut expected = before;
    expected.extend(["dev", "proc", "sys"].map(String::from));
    expected.sort();
    assert_eq!(sb.listing(), expected);
    use std::os::unix::fs::MetadataExt;
    for top in ["dev", "proc", "sys"] {
        let meta = fs_err::symlink_metadata(sb.rootfs().join(top)).unwrap();
        assert!(meta.is_dir(), "{top}");
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o755, 0, 0)
        );
    }
    sb.assert_no_leftovers();
}

#[test]
fn an_overlay_copies_up_the_directory_of_a_stub_and_nothing_else() {
    if need(Runc).is_none() {
        return;
    }
    let sb = Sandbox::new();
    // A lower /etc without resolv.conf, hosts or hostname: their stubs
    // make overlayfs copy /etc up; it stays in the upper dir, unchanged.
    sb.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    let lower_etc = fs_err::metadata(sb.rootfs().join("etc")).unwrap();
    let base = tempfile::tempdir().unwrap();
    let [upper, work, merged] = ["upper", "work", "merged"].map(|d| base.path().join(d));
    for d in [&upper, &work, &merged] {
        fs_err::create_dir(d).unwrap();
    }
    let overlay = Overlay::mount(&sb.rootfs(), &upper, &work, &merged);
    let mut spec = sb.spec("true");
    spec.rootfs = merged.clone();
    let (result, _) = sb.run(&spec);
    assert!(result.unwrap().success());
    assert_eq!(crate::harness::listing(&upper), ["etc"]);
    let upper_etc = fs_err::metadata(upper.join("etc")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (
            upper_etc.mode(),
            upper_etc.uid(),
            upper_etc.gid(),
            upper_etc.mtime(),
            upper_etc.mtime_nsec()
        ),
        (
            lower_etc.mode(),
            lower_etc.uid(),
            lower_etc.gid(),
            lower_etc.mtime(),
            lower_etc.mtime_nsec()
        ),
        "the copied-up /etc is identical to the lower one"
    );
    drop(overlay);
}
