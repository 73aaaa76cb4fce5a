//! The blob pipeline of a layer: tar bytes → diffID hasher → compressor →
//! digest hasher → output, in one pass with bounded memory.
//!
//! [`BlobWriter`] is the writer end: `layer::write` (or any producer of tar
//! bytes) writes into it, and [`BlobWriter::finish`] gives back the output
//! and a [`LayerBlob`] with both digests and both sizes. [`compress`] drives it
//! from a reader. [`decompress`] and [`decompress_detect`] are the reading
//! side.
//!
//! Gzip is compressed on every core with `gzp` as pigz does: the stream is
//! cut into 1 MiB blocks, each deflated on a worker and ended with a sync
//! flush, and the blocks are written in order between one gzip header and
//! one trailer (whose CRC-32 is combined from the blocks'). The result is
//! a single standard gzip member, and its bytes depend on the data and the level,
//! not on the number of threads. Zstd uses libzstd's own workers
//! (`ZSTD_c_nbWorkers`) and writes one frame; kiln always asks for at
//! least one worker, because libzstd cuts jobs by a size derived from the
//! level alone, so the frame is the same for any worker count, while
//! single-threaded mode (0 workers) cuts blocks differently. So the same
//! tar and options give the same blob whatever the core count, and the
//! tests check it.

use std::io::{self, BufWriter, Read, Write};

use gzp::ZWriter;
use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};

use crate::digest::{Digest, HashingWriter, Sha256};
use crate::layer::LayerError;
use crate::media::Compression;

/// Gzip level when none is given. Not zlib's 6: levels are not
/// comparable across deflate implementations, and the Go peers' default
/// (klauspost/pgzip in Buildah) gives blobs the size of zlib's 4 or 5. On
/// a torch-like layer (docs/BENCHMARKS.md, scenario 4) zlib-rs at 4 comes
/// out no larger than Buildah's default, 3% larger than at 6, in half
/// the time. `compression-level=` on `--output` picks another.
/// (bench/harness.py measures scenario 4's floor at this level too.)
pub const DEFAULT_GZIP_LEVEL: i32 = 4;
/// Zstd level when none is given: libzstd's default, what BuildKit uses.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// The input block each gzip worker deflates. Without a zlib linked in,
/// gzp starts every block with an empty window, so small blocks cost
/// ratio: on a tar of /usr, 128 KiB blocks (gzp's default) came out 1.2%
/// larger than one stream, 1 MiB blocks 0.15%, at the same speed. Part of
/// the output format: changing it changes every gzip blob's digest.
const GZIP_BLOCK: usize = 1 << 20;

/// How a blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompressOptions {
    pub compression: Compression,
    /// Codec level (gzip 0..=9, zstd per libzstd, 1..=22 and negative fast
    /// levels); `None` for the default.
    pub level: Option<i32>,
    /// Compression threads; 0 for every core.
    pub threads: usize,
}

impl CompressOptions {
    pub fn new(compression: Compression) -> CompressOptions {
        CompressOptions {
            compression,
            level: None,
            threads: 0,
        }
    }

    pub fn level(mut self, level: i32) -> CompressOptions {
        self.level = Some(level);
        self
    }

    pub fn threads(mut self, threads: usize) -> CompressOptions {
        self.threads = threads;
        self
    }

    fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

/// What a layer blob is: the digests and sizes that go into a manifest
/// (`digest`, `size`) and an image config (`diff_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub compression: Compression,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as stored and pushed.
    pub digest: Digest,
    /// Bytes of the blob.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// The end of the pipeline: hashes what the compressor emits, buffered so
/// small compressor writes do not become small writes to a file.
type Sink<W> = HashingWriter<BufWriter<W>>;

enum Encoder<W: Write + Send + 'static> {
    Plain(Sink<W>),
    Gzip(ParCompress<'static, Gzip, Sink<W>>),
    Zstd(ZstdWriter<Sink<W>>),
}

/// A `Write` that turns tar bytes into a layer blob written to `W`.
///
/// Memory stays bounded whatever the size of the layer: a few compression
/// blocks per thread. Call [`BlobWriter::finish`]; dropping the writer
/// without it stops the workers and leaves an incomplete blob.
///
/// The output is owned (`'static`) because gzip's writer thread holds it
/// until the end; pass a `File` and get it back from `finish` to fsync and
/// rename it.
pub struct BlobWriter<W: Write + Send + 'static> {
    compression: Compression,
    /// Hashes the tar; unused without compression, where the blob's digest
    /// is the diffID.
    diff: Sha256,
    written: u64,
    encoder: Option<Encoder<W>>,
}

impl<W: Write + Send + 'static> BlobWriter<W> {
    pub fn new(out: W, opts: &CompressOptions) -> Result<BlobWriter<W>, LayerError> {
        let sink = HashingWriter::new(BufWriter::with_capacity(256 * 1024, out));
        let threads = opts.thread_count();
        let encoder = match opts.compression {
            Compression::None => Encoder::Plain(sink),
            Compression::Gzip => {
                let level = opts.level.unwrap_or(DEFAULT_GZIP_LEVEL);
                check_level(Compression::Gzip, level)?;
                let builder = ParCompressBuilder::<Gzip>::new()
                    .num_threads(threads)
                    .and_then(|b| b.buffer_size(GZIP_BLOCK))
                    .map_err(|e| compress_error("gzip", gzp_io(e)))?
                    .compression_level(flate2::Compression::new(level as u32));
                Encoder::Gzip(builder.from_writer(sink))
            }
            Compression::Zstd => {
                let level = opts.level.unwrap_or(DEFAULT_ZSTD_LEVEL);
                check_level(Compression::Zstd, level)?;
                let workers = u32::try_from(threads).unwrap_or(u32::MAX);
                let enc =
                    ZstdWriter::new(sink, level, workers).map_err(|e| compress_error("zstd", e))?;
                Encoder::Zstd(enc)
            }
        };
        Ok(BlobWriter {
            compression: opts.compression,
            diff: Sha256::new(),
            written: 0,
            encoder: Some(encoder),
        })
    }

    /// Bytes of tar written so far.
    pub fn uncompressed_len(&self) -> u64 {
        self.written
    }

    /// Ends the stream (compressor trailer, buffered bytes) and returns the
    /// output and what the blob is.
    pub fn finish(mut self) -> Result<(W, LayerBlob), LayerError> {
        let Some(encoder) = self.encoder.take() else {
            return Err(write_error(io::Error::other(
                "the blob writer failed earlier",
            )));
        };
        let sink = match encoder {
            Encoder::Plain(sink) => sink,
            Encoder::Gzip(mut enc) => enc.finish().map_err(|e| write_error(gzp_io(e)))?,
            Encoder::Zstd(enc) => enc.finish().map_err(write_error)?,
        };
        let mut sink = sink;
        sink.flush().map_err(write_error)?;
        let (buffered, digest, size) = sink.finish();
        let out = buffered
            .into_inner()
            .map_err(|e| write_error(e.into_error()))?;
        let diff_id = match self.compression {
            Compression::None => digest.clone(),
            _ => std::mem::take(&mut self.diff).finish(),
        };
        let uncompressed_size = self.written;
        Ok((
            out,
            LayerBlob {
                compression: self.compression,
                diff_id,
                digest,
                size,
                uncompressed_size,
            },
        ))
    }
}

impl<W: Write + Send + 'static> Write for BlobWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = match self.encoder.as_mut() {
            Some(Encoder::Plain(w)) => w.write(buf),
            Some(Encoder::Gzip(w)) => w.write(buf),
            Some(Encoder::Zstd(w)) => w.write(buf),
            None => return Err(io::Error::other("the blob writer failed earlier")),
        };
        let n = self.poison_on_error(r)?;
        if self.compression != Compression::None {
            self.diff.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    /// Does not end a compression block: a gzip sync flush or a zstd block
    /// end would put bytes in the blob that depend on when a caller
    /// flushed (`layer::write` flushes its buffer at the end, `compress`
    /// does not), and the same tar must give the same blob. Only an
    /// uncompressed blob's buffer is pushed out; [`BlobWriter::finish`]
    /// ends a blob.
    fn flush(&mut self) -> io::Result<()> {
        let r = match self.encoder.as_mut() {
            Some(Encoder::Plain(w)) => w.flush(),
            Some(_) => Ok(()),
            None => return Err(io::Error::other("the blob writer failed earlier")),
        };
        self.poison_on_error(r)
    }
}

impl<W: Write + Send + 'static> BlobWriter<W> {
    /// After an error the encoder is dropped and never called again: gzp
    /// has already torn its pipeline down and would panic on the next call
    /// (its `Drop` then does nothing).
    fn poison_on_error<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if r.is_err() {
            self.encoder = None;
        }
        r
    }
}

impl<W: Write + Send + 'static> Drop for BlobWriter<W> {
    fn drop(&mut self) {
        // gzp's own Drop finishes the stream and panics if that fails (a
        // closed output, say); finishing here and ignoring the outcome stops
        // its threads quietly. The blob is incomplete either way.
        if let Some(Encoder::Gzip(mut enc)) = self.encoder.take() {
            let _ = enc.finish();
        }
    }
}

/// One zstd frame written to `out`, compressed by libzstd's workers.
///
/// Not `zstd::stream::write::Encoder`: it starts a new frame whenever
/// `ZSTD_compressStream2` returns 0, which with workers (nbWorkers >= 1)
/// also means "nothing left to flush right now", so its output splits
/// into frames at points that depend on thread timing and the same tar
/// gives different blobs.
struct ZstdWriter<W: Write> {
    enc: zstd::stream::raw::Encoder<'static>,
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> ZstdWriter<W> {
    fn new(out: W, level: i32, workers: u32) -> io::Result<ZstdWriter<W>> {
        use zstd::stream::raw::CParameter;
        let mut enc = zstd::stream::raw::Encoder::new(level)?;
        enc.set_parameter(CParameter::NbWorkers(workers.max(1)))?;
        enc.set_parameter(CParameter::ChecksumFlag(true))?;
        Ok(ZstdWriter {
            enc,
            out,
            buf: vec![0; zstd::zstd_safe::CCtx::out_size()],
        })
    }

    fn finish(mut self) -> io::Result<W> {
        use zstd::stream::raw::{Operation, OutBuffer};
        loop {
            let mut output = OutBuffer::around(&mut self.buf[..]);
            let remaining = self.enc.finish(&mut output, false)?;
            let n = output.pos();
            self.out.write_all(&self.buf[..n])?;
            if remaining == 0 {
                return Ok(self.out);
            }
        }
    }
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(data);
        // With workers, a call may take input without producing output or
        // the other way round; loop until all of `data` is taken.
        while input.pos < data.len() {
            let mut output = OutBuffer::around(&mut self.buf[..]);
            self.enc.run(&mut input, &mut output)?;
            let n = output.pos();
            self.out.write_all(&self.buf[..n])?;
        }
        Ok(data.len())
    }

    /// Not a zstd flush (see [`BlobWriter::flush`]).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compresses the tar read from `tar` into `out`.
pub fn compress<W: Write + Send + 'static>(
    mut tar: impl Read,
    out: W,
    opts: &CompressOptions,
) -> Result<(W, LayerBlob), LayerError> {
    let mut blob = BlobWriter::new(out, opts)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match tar.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(LayerError::Read { source }),
        };
        blob.write_all(&buf[..n]).map_err(write_error)?;
    }
    blob.finish()
}

/// A reader of the uncompressed bytes of a blob compressed with
/// `compression`. Gzip blobs may hold several members (pigz, some
/// registries' re-compressions); all are read. Zstd windows up to libzstd's
/// default limit (128 MiB) are accepted, which bounds the memory a blob can
/// demand.
pub fn decompress<'a>(
    reader: impl Read + Send + 'a,
    compression: Compression,
) -> Result<Box<dyn Read + Send + 'a>, LayerError> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(256 * 1024, reader),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(reader).map_err(|source| {
                LayerError::Decompress {
                    codec: "zstd",
                    source,
                }
            })?)
        }
    })
}

/// Runs `consume` on the bytes of `reader`, which a thread of its own
/// reads (decompresses, hashes: whatever `reader` does) up to
/// [`READ_AHEAD`] bytes ahead. Unpacking a layer is then gunzip and SHA-256
/// on one core and creating files on another, instead of one after the
/// other on one. Returns what `consume` returned and `reader`, once the
/// thread stopped: at the end of the stream, at its first read error
/// (which `consume` reads in its place, as it would have from `reader`),
/// or when `consume` returned without reading to the end (the thread's
/// next chunk then has nowhere to go; `reader` is left past what
/// `consume` read, by up to [`READ_AHEAD`] and two 256 KiB chunks).
pub fn read_ahead<R: Read + Send, T>(
    mut reader: R,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> (T, R) {
    const CHUNK: usize = 256 * 1024;
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD / CHUNK);
    std::thread::scope(|s| {
        let reading = s.spawn(move || {
            loop {
                let mut chunk = vec![0; CHUNK];
                let mut n = 0;
                let result = loop {
                    match reader.read(&mut chunk[n..]) {
                        Ok(0) => break Ok(()),
                        Ok(k) => {
                            n += k;
                            if n == chunk.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                chunk.truncate(n);
                let end = n < CHUNK || result.is_err();
                if n > 0 && tx.send(Ok(chunk)).is_err() {
                    break;
                }
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                }
                if end {
                    break;
                }
            }
            reader
        });
        let mut chunks = Chunks {
            rx,
            chunk: Vec::new(),
            at: 0,
            failed: false,
        };
        let out = consume(&mut chunks);
        // The thread blocked on a full channel wakes up to a closed one.
        drop(chunks);
        let reader = match reading.join() {
            Ok(reader) => reader,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (out, reader)
    })
}

/// How far [`read_ahead`]'s thread may get ahead of its consumer.
pub const READ_AHEAD: usize = 4 << 20;

/// The consumer's end of [`read_ahead`].
struct Chunks {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    /// The thread sent an error (and stopped): the stream ends in error,
    /// however often it is read.
    failed: bool,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.failed {
                return Err(io::Error::other("an earlier read of this stream failed"));
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                // The thread stopped after the last byte (or an error
                // it already sent).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Sniffs the compression from the first bytes of `reader` (see
/// [`Compression::detect`]) and returns it with a reader of the
/// uncompressed bytes.
pub fn decompress_detect<'a>(
    mut reader: impl Read + Send + 'a,
) -> Result<(Compression, Box<dyn Read + Send + 'a>), LayerError> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(LayerError::Read { source }),
        }
    }
    let compression = Compression::detect(&head[..n]);
    let whole = io::Cursor::new(head).take(n as u64).chain(reader);
    Ok((compression, decompress(whole, compression)?))
}

/// Checks a level for a codec: gzip 0..=9, zstd as libzstd allows
/// (negative fast levels to 22). Uncompressed takes any (it has none).
pub fn check_level(compression: Compression, level: i32) -> Result<(), LayerError> {
    let (codec, min, max) = match compression {
        Compression::None => return Ok(()),
        Compression::Gzip => ("gzip", 0, 9),
        Compression::Zstd => {
            let range = zstd::compression_level_range();
            ("zstd", *range.start(), *range.end())
        }
    };
    if (min..=max).contains(&level) {
        Ok(())
    } else {
        Err(LayerError::InvalidLevel {
            codec,
            level,
            min,
            max,
        })
    }
}

fn gzp_io(e: gzp::GzpError) -> io::Error {
    match e {
        gzp::GzpError::Io(e) => e,
        e => io::Error::other(e),
    }
}

fn compress_error(codec: &'static str, source: io::Error) -> LayerError {
    LayerError::Compress { codec, source }
}

fn write_error(source: io::Error) -> LayerError {
    LayerError::Write { source }
}
