//! The blob pipeline's memory does not grow with the layer: 1 GiB of
//! partly compressible tar through parallel gzip raises the process's peak
//! resident set (VmHWM) by far less than the data or its compressed size.
//!
//! One test in its own binary, so nothing else moves the high-water mark.
//!
//! Unoptimised (the default test profile), libzstd, zlib-rs and sha2 run at
//! a few MB/s, so there the test streams 128 MiB against a bound of half of
//! that; `cargo test --release` streams the full 1 GiB against 200 MiB.

use std::io::{self, Read, Write};

use kiln_image::compress::{self, CompressOptions};
use kiln_image::media::Compression;

const TOTAL: u64 = if cfg!(debug_assertions) {
    128 << 20
} else {
    1 << 30
};
const BOUND_KIB: u64 = if cfg!(debug_assertions) {
    64 * 1024
} else {
    200 * 1024
};

/// The process's peak resident set size, from /proc/self/status.
fn vm_hwm_kib() -> u64 {
    let status = fs_err::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Generates `left` bytes in place: each 64 KiB is a quarter repeated
/// text and three quarters noise, so it compresses about 4:3 (retaining the
/// output would take three quarters of the input, far over the bound).
struct Source {
    left: u64,
    x: u64,
    pos: usize,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            *b = if self.pos < 16 * 1024 {
                b"site-packages/torch/lib/libtorch_cuda.so\n"[self.pos % 41]
            } else {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 7;
                self.x ^= self.x << 17;
                self.x as u8
            };
            self.pos = (self.pos + 1) % (64 * 1024);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn gzip_pipeline_memory_is_flat() {
    let before = vm_hwm_kib();
    let source = Source {
        left: TOTAL,
        x: 0x2545_f491_4f6c_dd1d,
        pos: 0,
    };
    let opts = CompressOptions::new(Compression::Gzip).level(1);
    let (_, blob) = compress::compress(source, Discard, &opts).unwrap();
    let grown = vm_hwm_kib().saturating_sub(before);
    assert_eq!(blob.uncompressed_size, TOTAL);
    assert!(blob.size > TOTAL / 2 && blob.size < TOTAL, "{blob:?}");
    eprintln!(
        "{} MiB through gzip ({} MiB out): peak RSS grew {} MiB",
        TOTAL >> 20,
        blob.size >> 20,
        grown / 1024
    );
    assert!(
        grown < BOUND_KIB,
        "peak RSS grew by {grown} KiB for {TOTAL} bytes"
    );
}
