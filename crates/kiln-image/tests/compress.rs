//! The blob pipeline: round trips per codec, outputs read by the system
//! `gzip`, `zstd` and Go's compress/gzip, digests and sizes, output that
//! does not depend on the thread count, and errors.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};

use kiln_image::Digest;
use kiln_image::compress::{self, BlobWriter, CompressOptions, LayerBlob};
use kiln_image::layer::{self, LayerError, WriteOptions};
use kiln_image::media::Compression;
use kiln_testkit::need::{Tool, need};

/// Layer-like bytes: runs of text (compressible) and of noise (not).
fn sample(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let text = b"usr/lib/python3/dist-packages/torch/nn/modules/linear.py: class Linear(Module):\n";
    while out.len() < len {
        for _ in 0..40 {
            out.extend_from_slice(text);
        }
        for _ in 0..256 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn blob(data: &[u8], opts: &CompressOptions) -> (Vec<u8>, LayerBlob) {
    compress::compress(data, Vec::new(), opts).unwrap()
}

fn check(data: &[u8], out: &[u8], b: &LayerBlob, c: Compression) {
    assert_eq!(b.compression, c);
    assert_eq!(b.diff_id, Digest::of(data));
    assert_eq!(b.digest, Digest::of(out));
    assert_eq!(b.size, out.len() as u64);
    assert_eq!(b.uncompressed_size, data.len() as u64);
    let mut back = Vec::new();
    compress::decompress(out, c)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "{c:?} round trip");
    let (sniffed, mut r) = compress::decompress_detect(out).unwrap();
    assert_eq!(sniffed, c);
    back.clear();
    r.read_to_end(&mut back).unwrap();
    assert!(back == data, "{c:?} sniffed round trip");
}

/// Pipes `input` through a command and returns its output.
fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

#[test]
fn round_trips() {
    let data = sample(3 << 20);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (out, b) = blob(&data, &CompressOptions::new(c));
        check(&data, &out, &b, c);
        if c == Compression::None {
            assert!(out == data);
            assert_eq!(b.digest, b.diff_id);
        } else {
            assert!(b.size < b.uncompressed_size / 2, "{c:?}: {b:?}");
        }
    }
    // Empty input is a valid empty blob too.
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (out, b) = blob(b"", &CompressOptions::new(c));
        check(b"", &out, &b, c);
    }
}

#[test]
fn levels() {
    let data = sample(1 << 20);
    for (c, levels) in [
        (Compression::Gzip, [0, 1, 9]),
        (Compression::Zstd, [-5, 1, 19]),
    ] {
        let mut sizes = Vec::new();
        for level in levels {
            let (out, b) = blob(&data, &CompressOptions::new(c).level(level));
            check(&data, &out, &b, c);
            sizes.push(b.size);
        }
        assert!(
            sizes[0] > sizes[2],
            "{c:?} levels change nothing: {sizes:?}"
        );
    }
    for (c, bad) in [
        (Compression::Gzip, 10),
        (Compression::Gzip, -1),
        (Compression::Zstd, 23),
    ] {
        match BlobWriter::new(Vec::new(), &CompressOptions::new(c).level(bad)) {
            Err(LayerError::InvalidLevel { level, .. }) => assert_eq!(level, bad),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("{c:?} level {bad} accepted"),
        }
    }
}

#[test]
fn parallel_gzip_is_one_standard_member() {
    let data = sample(3 << 20);
    let (out, _) = blob(&data, &CompressOptions::new(Compression::Gzip).threads(4));
    // flate2's single-member decoder stops at the end of the first member:
    // it reading everything proves there is one.
    let mut one = Vec::new();
    flate2::read::GzDecoder::new(&out[..])
        .read_to_end(&mut one)
        .unwrap();
    assert!(one == data);
    // gzip(1) reads and verifies it (CRC-32 and length of the whole).
    assert!(pipe(Command::new("gzip").arg("-dc"), &out) == data);
    // The header carries no time or name: the same data gives the same blob.
    assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
}

#[test]
fn go_reads_parallel_gzip() {
    let Some(go) = need(Tool::Go) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Multistream(false): Go must find exactly one member holding it all.
    fs_err::write(
        tmp.path().join("main.go"),
        r#"package main

import (
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

func main() {
	r, err := gzip.NewReader(os.Stdin)
	if err != nil {
		panic(err)
	}
	r.Multistream(false)
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		panic(err)
	}
	if n, _ := io.Copy(io.Discard, os.Stdin); n != 0 {
		panic("bytes after the first member")
	}
	fmt.Printf("sha256:%x", h.Sum(nil))
}
"#,
    )
    .unwrap();
    let data = sample(2 << 20);
    let (out, b) = blob(&data, &CompressOptions::new(Compression::Gzip).threads(2));
    let got = pipe(
        Command::new(go)
            .arg("run")
            .arg(tmp.path().join("main.go"))
            .env("GOCACHE", tmp.path().join("cache"))
            .env("GO111MODULE", "off"),
        &out,
    );
    assert_eq!(String::from_utf8(got).unwrap(), b.diff_id.to_string());
}

#[test]
fn zstd_cli_reads_zstd() {
    let Some(zstd) = need(Tool::Zstd) else {
        return;
    };
    let data = sample(2 << 20);
    let (out, _) = blob(&data, &CompressOptions::new(Compression::Zstd).threads(2));
    assert!(pipe(Command::new(zstd).args(["-dc", "--no-progress"]), &out) == data);
}

#[test]
fn output_does_not_depend_on_threads() {
    // Enough data for several gzip blocks (1 MiB) and zstd jobs (4 windows
    // of 512 KiB at level 1), at fast levels: the test profile is
    // unoptimised.
    for (c, len) in [(Compression::Gzip, 5 << 20), (Compression::Zstd, 12 << 20)] {
        let data = sample(len);
        let one = blob(&data, &CompressOptions::new(c).level(1).threads(1)).0;
        for threads in [2, 3, 8] {
            let many = blob(&data, &CompressOptions::new(c).level(1).threads(threads)).0;
            assert!(one == many, "{c:?} with {threads} threads differs from 1");
        }
    }
}

#[test]
fn layer_write_streams_into_a_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs_err::create_dir_all(dir.join("usr/lib")).unwrap();
    fs_err::write(dir.join("usr/lib/data"), sample(3 << 20)).unwrap();
    fs_err::write(dir.join("usr/readme"), b"hello").unwrap();
    let mut plain = Vec::new();
    layer::write(dir, &mut plain, &WriteOptions::default()).unwrap();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let mut w = BlobWriter::new(Vec::new(), &CompressOptions::new(c)).unwrap();
        let stats = layer::write(dir, &mut w, &WriteOptions::default()).unwrap();
        assert_eq!(w.uncompressed_len(), stats.tar_bytes);
        let (out, b) = w.finish().unwrap();
        check(&plain, &out, &b, c);
        // Streaming and compressing the finished tar give the same blob:
        // the writer's final flush must not end a compression block.
        assert!(blob(&plain, &CompressOptions::new(c)).0 == out, "{c:?}");
    }
}

/// Regression: `zstd::stream::write::Encoder` starts a new frame whenever
/// libzstd's workers happen to have flushed everything, so blobs split into
/// frames at timing-dependent points.
#[test]
fn zstd_blob_is_one_frame() {
    let data = sample(12 << 20);
    let opts = CompressOptions::new(Compression::Zstd).level(1).threads(2);
    let mut w = BlobWriter::new(Vec::new(), &opts).unwrap();
    // Writes of every size, some of them ending exactly on job boundaries.
    let mut rest = &data[..];
    let mut step = 1usize;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        w.write_all(&rest[..n]).unwrap();
        w.flush().unwrap();
        rest = &rest[n..];
        step = (step * 3) % (1 << 20) + 1;
    }
    let (out, _) = w.finish().unwrap();
    let first = zstd::zstd_safe::find_frame_compressed_size(&out).unwrap();
    assert_eq!(first, out.len(), "more than one zstd frame");
    assert!(out == blob(&data, &opts).0);
}

#[test]
fn detects_by_magic() {
    assert!(matches!(
        compress::decompress_detect(&b"abc"[..]),
        Ok((Compression::None, _))
    ));
    let (c, mut r) = compress::decompress_detect(&b""[..]).unwrap();
    assert_eq!(c, Compression::None);
    assert_eq!(r.read(&mut [0; 4]).unwrap(), 0);
    // A reader that hands out one byte at a time still gets sniffed.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let (out, _) = blob(b"trickle", &CompressOptions::new(Compression::Zstd));
    let (c, mut r) = compress::decompress_detect(Trickle(&out)).unwrap();
    assert_eq!(c, Compression::Zstd);
    let mut back = Vec::new();
    r.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"trickle");
}

#[test]
fn corrupt_blobs_fail_to_read() {
    let data = sample(1 << 20);
    for c in [Compression::Gzip, Compression::Zstd] {
        let (mut out, _) = blob(&data, &CompressOptions::new(c));
        let mid = out.len() / 2;
        out[mid] ^= 0xff;
        let mut back = Vec::new();
        let r = compress::decompress(&out[..], c)
            .unwrap()
            .read_to_end(&mut back);
        assert!(
            r.is_err() || back != data,
            "{c:?}: corruption went unnoticed"
        );
    }
}

/// An output that fails after `left` bytes.
struct Failing {
    left: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_are_reported_not_panicked() {
    let data = sample(8 << 20);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let r = compress::compress(&data[..], Failing { left: 1000 }, &CompressOptions::new(c));
        match r {
            Err(LayerError::Write { source }) => {
                assert_eq!(source.kind(), io::ErrorKind::StorageFull, "{c:?}")
            }
            Err(e) => panic!("{c:?}: {e:?}"),
            Ok(_) => panic!("{c:?}: the failing output went unnoticed"),
        }
        // Dropped half-way: no panic from the gzip workers.
        let mut w = BlobWriter::new(Failing { left: 10 }, &CompressOptions::new(c)).unwrap();
        let _ = w.write_all(&data);
        drop(w);
    }
}

#[test]
fn read_ahead_hands_over_every_byte_and_the_reader() {
    let data = sample(9 << 20);
    let (gz, b) = blob(&data, &CompressOptions::new(Compression::Gzip));
    let inflating =
        kiln_image::HashingReader::new(compress::decompress(&gz[..], Compression::Gzip).unwrap());
    // Small, odd reads on the consumer's side, as a tar parser makes.
    let (back, hashing) = compress::read_ahead(inflating, |r| {
        let mut back = Vec::new();
        let mut buf = [0u8; 511];
        loop {
            match r.read(&mut buf).unwrap() {
                0 => break back,
                n => back.extend_from_slice(&buf[..n]),
            }
        }
    });
    assert!(back == data, "read_ahead changed the bytes");
    let (_, diff_id, len) = hashing.finish();
    assert_eq!((diff_id, len), (b.diff_id, data.len() as u64));
}

/// A reader that gives `good` bytes, then fails.
struct Breaking {
    good: usize,
    read: usize,
}

impl Read for Breaking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read == self.good {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt deflate stream",
            ));
        }
        let n = buf.len().min(self.good - self.read);
        buf[..n].fill(7);
        self.read += n;
        Ok(n)
    }
}

#[test]
fn read_ahead_passes_the_readers_error_on() {
    let good = 3 * (1 << 20) + 17;
    let ((got, first, again), _) = compress::read_ahead(Breaking { good, read: 0 }, |r| {
        let mut got = 0;
        let mut buf = vec![0u8; 100_000];
        let first = loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("an error read as the end of the stream"),
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        (got, first, r.read(&mut buf))
    });
    assert_eq!(got, good, "bytes before the error were lost");
    assert_eq!(first.kind(), io::ErrorKind::InvalidData);
    assert_eq!(first.to_string(), "corrupt deflate stream");
    assert!(again.is_err(), "a failed stream read as ended: {again:?}");
}

#[test]
fn read_ahead_stops_when_the_consumer_does() {
    // Far more than fits ahead: the thread must stop, not read it all.
    let endless = io::repeat(1).take(1 << 40);
    let (n, rest) = compress::read_ahead(endless, |r| {
        let mut buf = vec![0u8; 1000];
        r.read_exact(&mut buf).unwrap();
        buf.len()
    });
    assert_eq!(n, 1000);
    let read = (1u64 << 40) - rest.limit();
    assert!(
        read <= (compress::READ_AHEAD + (1 << 20)) as u64,
        "read {read} bytes ahead of a consumer that took 1000"
    );
}
