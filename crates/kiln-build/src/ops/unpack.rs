//! `ADD archive.tar.gz /dest/`: local tar archives are extracted, not
//! copied.
//!
//! What counts as an archive is BuildKit's `isArchivePath`
//! (`solver/llbsolver/file/unpack.go`): a regular file that, once
//! decompressed by content (gzip, bzip2, xz, zstd or none, as
//! `archiveutil.DecompressStream` sniffs it, never by its name), starts
//! with a tar header Go's `archive/tar` accepts. Anything else (a gzip of a
//! non-tar, an empty file) is copied as it is.
//!
//! The extraction follows current BuildKit's `applyRootArchive`
//! (`unpack_root.go`):
//!
//! - the destination is a directory, created if missing (0755, with the
//!   `--chown` owner), never a file named after the archive;
//! - names are cleaned; one that climbs out of the destination is an error
//!   ("archive path ... is outside extraction root"), and every lookup on
//!   the way resolves inside the destination (`openat2` `RESOLVE_IN_ROOT`),
//!   so symlinks from the archive or already there cannot lead out;
//! - an entry replaces what is at its name, except that a directory merges
//!   into a directory; missing parents are created 0755, owned by root;
//! - owners come from the archive, or all from `--chown` when given (as
//!   go-archive's `ChownOpts` do); `--chmod` does not apply;
//! - modes (set-id and sticky bits included) and times come from the
//!   archive; directories get theirs once everything inside is written;
//! - whiteout names (`.wh.*`) are plain files here: an ADD archive is not a
//!   layer;
//! - PAX xattrs are not applied (BuildKit's extractor ignores them).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::sync::atomic::AtomicBool;

use kiln_fs::tar::{self, ApplyOptions, TarError};
use rustix::io::Errno;

use super::chown::Owner;
use super::error::CopyError;
use super::root::{self, NewDir, Root, TreeError, join};
use super::stats::CopyStats;
use crate::stop::{Stoppable, stopped};

/// The compression of an archive, sniffed from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn sniff(head: &[u8]) -> Codec {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Codec::Gzip
    } else if head.starts_with(b"BZh") {
        Codec::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Codec::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Codec::Zstd
    } else {
        Codec::None
    }
}

/// A reader of the decompressed bytes of `file`, from its start.
fn decompress<'a>(file: &'a File) -> io::Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let codec = sniff(reader.fill_buf()?);
    Ok(match codec {
        Codec::None => Box::new(reader),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Codec::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
        Codec::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(reader)),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    })
}

/// Whether `file` (a regular file) is an archive to extract; rewinds it.
pub(crate) fn is_archive(file: &mut File) -> io::Result<bool> {
    file.rewind()?;
    let mut block = [0u8; 512];
    let mut n = 0;
    // Errors while decompressing mean "not an archive", as in BuildKit.
    if let Ok(mut r) = decompress(file) {
        while n < block.len() {
            match r.read(&mut block[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    }
    file.rewind()?;
    Ok(n == block.len() && tar::looks_like_header(&block))
}

/// Extracts the archive `file` into the directory at `dest` (resolved,
/// inside `root`), creating it as fsutil's `MkdirAll` would: kiln-fs's one
/// extractor with `ADD`'s rules ([`ApplyOptions::add_archive`]). Once
/// `stop` is set, the archive reads no further and the extraction ends
/// with [`CopyError::Stopped`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn extract(
    file: &File,
    archive: &str,
    root: &Root,
    dest: &[u8],
    new_dir: &NewDir,
    chown: Option<Owner>,
    stop: Option<&AtomicBool>,
    stats: &mut CopyStats,
) -> Result<(), CopyError> {
    root.make_dir_all(dest, new_dir)
        .map_err(|e| mkdir_err(root, dest, e))?;
    let target = root::subtree(root, dest)?;
    let reader = decompress(file).map_err(|e| CopyError::Archive {
        archive: archive.to_owned(),
        source: TarError::Read { source: e },
    })?;
    let reader = Stoppable {
        inner: reader,
        stop,
    };
    let done =
        tar::apply(reader, &target, &ApplyOptions::add_archive(chown)).map_err(|e| match e {
            // Whatever the read's failure looked like to the extractor.
            _ if stopped(stop) => CopyError::Stopped,
            TarError::Escape { path } => CopyError::ArchiveEscape { entry: path },
            // Named as the build sees it: inside the destination root.
            TarError::Io {
                op, rel, source, ..
            } => CopyError::Io {
                op,
                root: root.path().to_path_buf(),
                path: root::display(&join(dest, &rel)),
                source,
            },
            e => CopyError::Archive {
                archive: archive.to_owned(),
                source: e,
            },
        })?;
    stats.entries += done.entries;
    stats.files += done.files;
    stats.dirs += done.dirs;
    stats.symlinks += done.symlinks;
    stats.hardlinks += done.hardlinks;
    stats.devices += done.devices;
    stats.fifos += done.fifos;
    stats.bytes += done.bytes;
    stats.archives += 1;
    Ok(())
}

pub(crate) fn mkdir_err(root: &Root, rel: &[u8], e: Errno) -> CopyError {
    root.err("creating the directory", rel, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(&[0x1f, 0x8b, 0x08, 0]), Codec::Gzip);
        assert_eq!(sniff(b"BZh91AY"), Codec::Bzip2);
        assert_eq!(sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]), Codec::Xz);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Codec::Zstd);
        assert_eq!(sniff(b"hello"), Codec::None);
    }
}
