//! Whether this machine runs programs of another architecture: QEMU
//! registered with binfmt_misc (Debian's qemu-user-static names the entry
//! `qemu-<arch>`).
//!
//! In a container binfmt_misc is not mounted (its directory under
//! /proc/sys is empty), yet the host's handlers serve the container's
//! processes when they were registered with the F flag, which
//! qemu-user-static does. There kiln cannot read the registration, so it
//! runs a program of that architecture that only exits 0, made in memory
//! ([`exit_zero_program`]): if the kernel runs it, a RUN step will run.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{MemfdFlags, Mode, OFlags};

const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// What runs programs of `architecture` (an OCI name) through QEMU: the
/// registered and enabled binfmt_misc entry, or, where binfmt_misc is not
/// visible, the host's handler that a test program showed to work.
pub(crate) fn handler(architecture: &str) -> Option<String> {
    let entry = entry(architecture);
    if visible() {
        let text = fs_err::read_to_string(&entry).ok()?;
        return (text.lines().next() == Some("enabled")).then(|| entry.display().to_string());
    }
    (runs_here(architecture) == Some(true)).then(|| {
        format!(
            "the host's binfmt_misc handler for {architecture} (binfmt_misc is not mounted here)"
        )
    })
}

/// Whether binfmt_misc is mounted in this mount namespace: not in a
/// container started with the usual defaults.
pub(crate) fn visible() -> bool {
    Path::new(BINFMT_MISC).join("status").exists()
}

/// Where binfmt_misc registers QEMU for `architecture` (an OCI name), as
/// Debian's qemu-user-static (binfmt-support) names the entry.
pub(crate) fn entry(architecture: &str) -> PathBuf {
    let qemu = match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        other => other,
    };
    Path::new(BINFMT_MISC).join(format!("qemu-{qemu}"))
}

/// Whether a program of `architecture` runs here: `None` when kiln has no
/// test program for it or could not try (a kernel that refuses to execute
/// memory files, `vm.memfd_noexec`). Tried once per process.
pub(crate) fn runs_here(architecture: &str) -> Option<bool> {
    static TRIED: OnceLock<Mutex<HashMap<String, Option<bool>>>> = OnceLock::new();
    let tried = TRIED.get_or_init(Mutex::default);
    let mut tried = tried.lock().unwrap_or_else(|e| e.into_inner());
    *tried
        .entry(architecture.to_string())
        .or_insert_with(|| exit_zero_program(architecture).and_then(|p| run_program(&p)))
}

/// Executes `program` from a memory file: true if it exited 0, false if
/// the kernel has no way to run it (`ENOEXEC`).
fn run_program(program: &[u8]) -> Option<bool> {
    let memfd = rustix::fs::memfd_create("kiln-binfmt-probe", MemfdFlags::CLOEXEC).ok()?;
    let mut written = 0;
    while written < program.len() {
        written += rustix::io::write(&memfd, &program[written..]).ok()?;
    }
    // Executed by a read-only descriptor (the kernel will not run a file
    // open for writing), which the program's process keeps: without the
    // O flag binfmt_misc gives QEMU the program's path, which QEMU opens
    // after the exec.
    let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
    let program = rustix::fs::open(&path, OFlags::RDONLY, Mode::empty()).ok()?;
    drop(memfd);
    let status = Command::new(format!("/proc/self/fd/{}", program.as_raw_fd()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    drop(program);
    match status {
        Ok(status) => Some(status.success()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOEXEC.raw_os_error()) => Some(false),
        Err(_) => None,
    }
}

/// The smallest static ELF of `architecture` that exits 0: a 64-byte
/// header, one loadable segment (the whole file, read and execute), and
/// the code. For the architectures kiln builds for most; `None` for others.
pub(crate) fn exit_zero_program(architecture: &str) -> Option<Vec<u8>> {
    let (machine, code): (u16, &[u8]) = match architecture {
        // mov x0, #0; mov x8, #93 (exit); svc #0
        "arm64" => (
            183,
            &[
                0x00, 0x00, 0x80, 0xd2, 0xa8, 0x0b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4,
            ],
        ),
        // xor edi, edi; mov eax, 60 (exit); syscall
        "amd64" => (62, &[0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05]),
        _ => return None,
    };
    Some(elf(machine, code))
}

/// A static ELF for `machine` whose one loadable segment is the whole
/// file, running `code`.
fn elf(machine: u16, code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADER: u16 = 64;
    const SEGMENT: u16 = 56;
    let start = u64::from(HEADER + SEGMENT);
    let size = start + code.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // 64-bit, little-endian, ELF version 1, System V.
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // version
    elf.extend_from_slice(&(BASE + start).to_le_bytes()); // entry
    elf.extend_from_slice(&u64::from(HEADER).to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // section headers: none
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    // Header size, program header size and count, no sections.
    for half in [HEADER, SEGMENT, 1, 0, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    elf.extend_from_slice(&0u64.to_le_bytes()); // file offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // virtual address
    elf.extend_from_slice(&BASE.to_le_bytes()); // physical address
    elf.extend_from_slice(&size.to_le_bytes()); // size in the file
    elf.extend_from_slice(&size.to_le_bytes()); // size in memory
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    elf.extend_from_slice(code);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_program_of_this_machine_runs_and_exits_0() {
        let arch = kiln_image::Platform::host().architecture;
        if exit_zero_program(&arch).is_none() {
            eprintln!("no test program for {arch}: nothing to check");
            return;
        }
        assert_eq!(runs_here(&arch), Some(true));
    }

    #[test]
    fn the_test_programs_are_elf_executables_of_their_machine() {
        for (arch, machine) in [("arm64", 183u16), ("amd64", 62)] {
            let elf = exit_zero_program(arch).unwrap();
            assert_eq!(&elf[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), machine);
            // The size the segment says is the file's.
            let filesz = u64::from_le_bytes(elf[96..104].try_into().unwrap());
            assert_eq!(filesz, elf.len() as u64);
        }
        assert_eq!(exit_zero_program("s390x"), None);
    }

    /// A program for a machine no kernel knows and no handler claims is
    /// refused with ENOEXEC: "cannot run", not "cannot tell".
    #[test]
    fn a_program_nothing_here_can_run_is_told_apart() {
        assert_eq!(run_program(&elf(0x7a7a, &[0; 4])), Some(false));
    }

    /// QEMU's aarch64 handler runs the arm64 program (where scripts/test
    /// registered it); whether binfmt_misc is visible or not, the answer
    /// is the handler's.
    #[test]
    fn the_arm64_program_runs_under_qemu_where_a_handler_is_registered() {
        if kiln_image::Platform::host().architecture == "arm64"
            || kiln_testkit::need::need(kiln_testkit::need::Arm64).is_none()
        {
            return;
        }
        assert_eq!(runs_here("arm64"), Some(true));
    }
}
