//! Throughput of the blob pipeline (diffID hash, compressor, digest hash)
//! on 256 MiB of layer-like tar: the start of this machine's /usr as
//! `layer::write` archives it (binaries, libraries, text), topped up with
//! generated data if /usr is smaller.
//!
//! `cargo bench -p kiln-image --bench compress`

use std::io::{self, Write};
use std::sync::LazyLock;

use divan::Bencher;
use divan::counter::BytesCount;
use kiln_image::compress::{self, CompressOptions};
use kiln_image::layer::{self, WriteOptions};
use kiln_image::media::Compression;

const SIZE: usize = 256 << 20;

static CORPUS: LazyLock<Vec<u8>> = LazyLock::new(corpus);

fn main() {
    divan::main();
}

/// A `Vec` that refuses bytes past `SIZE`, which stops the walk there.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = SIZE - self.0.len();
        if room == 0 {
            return Err(io::Error::other("full"));
        }
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn corpus() -> Vec<u8> {
    let mut out = Capped(Vec::with_capacity(SIZE));
    // Stops with an error once full; what was written is the corpus.
    let _ = layer::write("/usr".as_ref(), &mut out, &WriteOptions::default());
    let mut data = out.0;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < SIZE {
        for _ in 0..64 {
            data.extend_from_slice(
                b"lib/python3.11/site-packages/numpy/core/_multiarray_umath.so\n",
            );
        }
        for _ in 0..512 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
    }
    data.truncate(SIZE);
    data
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

fn run(bencher: Bencher, opts: CompressOptions) {
    let data = &*CORPUS;
    bencher
        .counter(BytesCount::new(data.len()))
        .bench(|| compress::compress(&data[..], Discard, &opts).unwrap().1);
}

/// Uncompressed: the two hashes and the copies only.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn none(bencher: Bencher) {
    run(bencher, CompressOptions::new(Compression::None));
}

/// Parallel gzip (gzp) at the default level, on all cores and on one.
#[divan::bench(args = [0, 1], sample_count = 3, sample_size = 1)]
fn gzip(bencher: Bencher, threads: usize) {
    run(
        bencher,
        CompressOptions::new(Compression::Gzip).threads(threads),
    );
}

/// Zstd at the default level 3 with libzstd's workers, all cores and one.
#[divan::bench(args = [0, 1], sample_count = 3, sample_size = 1)]
fn zstd(bencher: Bencher, threads: usize) {
    run(
        bencher,
        CompressOptions::new(Compression::Zstd).threads(threads),
    );
}
