//! Converting one layer blob: decompressed, its tar copied entry by entry
//! when its file times are clamped (BuildKit's `rewrite-timestamp`),
//! compressed again, into the store. Streamed: memory does not grow with
//! the layer.

use std::io::{self, Read, Write};

use kiln_fs::tar::{EntryHeader, Kind, TarReader, TarWriter};
use kiln_image::compress::{BlobWriter, CompressOptions, decompress};
use kiln_image::document::Descriptor;
use kiln_image::media::Compression;
use kiln_image::{Digest, LayerError, Store};

use super::ExportError;

/// What a layer becomes.
pub(crate) struct Conversion {
    pub(crate) compression: Compression,
    pub(crate) level: Option<i32>,
    /// Entry mtimes later than this are set to it.
    pub(crate) clamp_mtime: Option<i64>,
}

/// The converted layer: its blob (media type in OCI form) and diffID.
pub(crate) struct Converted {
    pub(crate) descriptor: Descriptor,
    pub(crate) diff_id: Digest,
}

pub(crate) fn convert(
    store: &Store,
    layer: &Descriptor,
    have: Compression,
    to: &Conversion,
) -> Result<Converted, ExportError> {
    let layer_err = |source| ExportError::Convert {
        layer: layer.digest.clone(),
        source,
    };
    let blob = store.open_blob(&layer.digest)?;
    let tar = decompress(blob, have).map_err(layer_err)?;
    let mut opts = CompressOptions::new(to.compression);
    if let Some(level) = to.level {
        opts = opts.level(level);
    }
    let mut out = BlobWriter::new(store.ingest()?, &opts).map_err(layer_err)?;
    match to.clamp_mtime {
        None => copy(tar, &mut out).map_err(|source| layer_err(LayerError::Read { source }))?,
        Some(epoch) => clamp_times(tar, &mut out, epoch).map_err(|e| match e {
            Clamp::Tar(source) => ExportError::Tar {
                layer: layer.digest.clone(),
                source,
            },
            Clamp::Write(source) => layer_err(LayerError::Write { source }),
        })?,
    }
    let (ingest, info) = out.finish().map_err(layer_err)?;
    let stored = ingest.commit()?;
    debug_assert_eq!(stored.digest, info.digest);
    Ok(Converted {
        descriptor: Descriptor::new(
            to.compression
                .layer_media_type(kiln_image::media::Format::Oci),
            info.digest,
            info.size,
        ),
        diff_id: info.diff_id,
    })
}

fn copy(mut from: impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

enum Clamp {
    Tar(kiln_fs::tar::TarError),
    Write(io::Error),
}

/// Copies a layer tar with every mtime later than `epoch` set to it.
/// Entries are written again by kiln's tar writer (whole seconds; a sparse
/// file's holes as zeros), so the bytes are those a kiln commit of the
/// same tree at that time would have.
fn clamp_times(tar: impl Read, out: &mut impl Write, epoch: i64) -> Result<(), Clamp> {
    let mut reader = TarReader::new(tar);
    let mut writer = TarWriter::new(out);
    let mut buf = vec![0u8; 1 << 20];
    while let Some(e) = reader.next_entry().map_err(Clamp::Tar)? {
        let kind = match e.kind {
            // Types kiln does not write are kept as files would be: there
            // are none in a layer kiln or Docker wrote.
            Kind::Other(_) => Kind::File,
            k => k,
        };
        let size = if kind == Kind::File { e.size } else { 0 };
        writer
            .append(&EntryHeader {
                path: &e.path,
                kind,
                link: &e.link,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime.0.min(epoch),
                size,
                dev_major: e.dev_major,
                dev_minor: e.dev_minor,
                xattrs: &e.xattrs,
            })
            .map_err(Clamp::Write)?;
        if kind != Kind::File {
            continue;
        }
        // A sparse file's data is its segments back to back: the holes
        // between them are written as zeros.
        let segments = e.sparse.clone().unwrap_or_else(|| vec![(0, e.size)]);
        let mut at = 0u64;
        for (offset, len) in segments {
            zeros(&mut writer, offset - at).map_err(Clamp::Write)?;
            let mut left = len;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = reader
                    .read(&mut buf[..want])
                    .map_err(|source| Clamp::Tar(kiln_fs::tar::TarError::Read { source }))?;
                if n == 0 {
                    return Err(Clamp::Tar(kiln_fs::tar::TarError::Truncated {
                        entry: e.name(),
                        source: io::ErrorKind::UnexpectedEof.into(),
                    }));
                }
                writer.write_data(&buf[..n]).map_err(Clamp::Write)?;
                left -= n as u64;
            }
            at = offset + len;
        }
        zeros(&mut writer, e.size - at).map_err(Clamp::Write)?;
        writer.end_data(e.size).map_err(Clamp::Write)?;
    }
    reader.drain().map_err(Clamp::Tar)?;
    writer.finish().map_err(Clamp::Write)?;
    Ok(())
}

fn zeros<W: Write>(w: &mut TarWriter<W>, mut n: u64) -> io::Result<()> {
    let block = [0u8; 64 * 1024];
    while n > 0 {
        let k = block.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        w.write_data(&block[..k])?;
        n -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, Kind, i64, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (path, kind, mtime, data) in entries {
            w.append(&EntryHeader {
                path: path.as_bytes(),
                kind: *kind,
                link: b"",
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: *mtime,
                size: data.len() as u64,
                dev_major: 0,
                dev_minor: 0,
                xattrs: &[],
            })
            .unwrap();
            if !data.is_empty() {
                w.write_data(data).unwrap();
                w.end_data(data.len() as u64).unwrap();
            }
        }
        w.finish().unwrap().0
    }

    #[test]
    fn later_times_are_clamped_earlier_ones_kept() {
        let input = tar(&[
            ("d/", Kind::Dir, 2_000_000_000, b""),
            ("d/new", Kind::File, 1_800_000_000, b"new"),
            ("d/old", Kind::File, 1_000_000_000, b"old"),
        ]);
        let mut out = Vec::new();
        clamp_times(input.as_slice(), &mut out, 1_700_000_000)
            .map_err(|_| "clamp failed")
            .unwrap();
        let want = tar(&[
            ("d/", Kind::Dir, 1_700_000_000, b""),
            ("d/new", Kind::File, 1_700_000_000, b"new"),
            ("d/old", Kind::File, 1_000_000_000, b"old"),
        ]);
        assert_eq!(out, want, "the bytes a commit at that time would write");
    }
}
