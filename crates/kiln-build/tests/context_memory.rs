//! Hashing a big context file streams it: 200 MiB through the digest
//! raise the process's peak resident set (VmHWM) by a small fraction of
//! that, in reads of a bounded size.
//!
//! One test in its own binary, so nothing else moves the high-water mark.

mod context_support;

use context_support::{Tree, sources};
use kiln_build::HashMemo;

const SIZE: u64 = 200 << 20;
const BOUND_KIB: u64 = 32 * 1024;

/// The process's peak resident set size, from /proc/self/status.
fn vm_hwm_kib() -> u64 {
    let status = fs_err::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_big_file_is_hashed_with_flat_memory() {
    let t = Tree::new();
    // Sparse: the test costs no disk, and reading it is all page cache.
    let big = fs_err::File::create(t.path("model.bin")).unwrap();
    big.set_len(SIZE).unwrap();
    drop(big);
    let ctx = t.open();
    let memo = HashMemo::in_memory();

    let before = vm_hwm_kib();
    let digest = ctx.digest(&sources(&["model.bin"]), &[], &memo).unwrap();
    let grown = vm_hwm_kib().saturating_sub(before);

    let s = memo.stats();
    assert_eq!(s.files_hashed, 1);
    assert_eq!(s.bytes_read, SIZE);
    // Bounded reads (256 KiB), plus the one that finds the end.
    assert!(s.read_calls > SIZE / (1 << 20), "{} reads", s.read_calls);
    assert!(
        grown < BOUND_KIB,
        "peak RSS grew by {grown} KiB hashing {} MiB",
        SIZE >> 20
    );
    // The digest is of the content, which is all zeros.
    let again = Tree::new();
    let f = fs_err::File::create(again.path("model.bin")).unwrap();
    f.set_len(SIZE).unwrap();
    drop(f);
    assert_eq!(
        again
            .open()
            .digest(&sources(&["model.bin"]), &[], &HashMemo::in_memory())
            .unwrap(),
        digest
    );
}
