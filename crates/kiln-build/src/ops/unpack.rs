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
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::chown::Owner;
use super::error::CopyError;
use super::root::{self, NewDir, Root, join, split};
use super::stats::CopyStats;

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
    Ok(n == block.len() && valid_header(&block))
}

/// Go's `archive/tar` reads a first block as a header when it is not all
/// zeros (two zero blocks are an empty archive: io.EOF) and its checksum,
/// summed with unsigned or with signed bytes, matches.
fn valid_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Ok(want) = i64::from_str_radix(std::str::from_utf8(&text).unwrap_or("x"), 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want == signed
}

/// Extracts the archive `file` into the directory at `dest` (resolved,
/// inside `root`), creating it as fsutil's `MkdirAll` would.
pub(crate) fn extract(
    file: &File,
    archive: &str,
    root: &Root,
    dest: &[u8],
    new_dir: &NewDir,
    chown: Option<Owner>,
    stats: &mut CopyStats,
) -> Result<(), CopyError> {
    root.make_dir_all(dest, new_dir)
        .map_err(|e| mkdir_err(root, dest, e))?;
    let target = Root::subtree(root, dest)?;
    let bad = |reason: String| CopyError::Archive {
        archive: archive.to_owned(),
        reason,
    };
    let reader = decompress(file).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(reader);
    let mut x = Extractor {
        target: &target,
        root,
        dest,
        chown,
        dirs: Vec::new(),
        stats,
    };
    let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        x.entry(&mut entry).map_err(|e| match e {
            Failure::Copy(e) => e,
            Failure::Tar(reason) => bad(reason),
        })?;
    }
    // Times of directories last, deepest first: writing inside a
    // directory changes its mtime.
    for (rel, times) in x.dirs.iter().rev() {
        let (dir, name) = target
            .open_parent(rel)
            .map_err(|e| x.err("opening the parent of", rel, e))?;
        rustix::fs::utimensat(&dir, name, times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| x.err("setting the times of", rel, e))?;
    }
    stats.archives += 1;
    Ok(())
}

pub(crate) fn mkdir_err(root: &Root, rel: &[u8], e: Errno) -> CopyError {
    root.err("creating the directory", rel, e)
}

enum Failure {
    Copy(CopyError),
    Tar(String),
}

impl From<CopyError> for Failure {
    fn from(e: CopyError) -> Failure {
        Failure::Copy(e)
    }
}

struct Extractor<'a> {
    /// The extraction directory, as a tree of its own.
    target: &'a Root,
    root: &'a Root,
    dest: &'a [u8],
    chown: Option<Owner>,
    dirs: Vec<(Vec<u8>, Timestamps)>,
    stats: &'a mut CopyStats,
}

impl Extractor<'_> {
    /// An I/O error, named by its path in the destination root.
    fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> CopyError {
        self.root.err(op, &join(self.dest, rel), e)
    }

    /// Opens the directory `parent` of an entry, creating what is missing
    /// (0755, root's: BuildKit's implied owner). Symlinks on the way are
    /// followed inside the extraction directory, and missing directories
    /// are created where they lead, as BuildKit's `resolveRootPath` does.
    fn parent(&self, parent: &[u8]) -> Result<OwnedFd, Errno> {
        match self.target.open_dir(parent) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let resolved = self.target.resolve(parent)?;
        self.target.make_dir_all(&resolved, &NewDir::default())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Failure> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = clean_entry(&raw)? else {
            return Ok(());
        };
        let mode = entry
            .header()
            .mode()
            .map_err(|e| Failure::Tar(e.to_string()))?
            & 0o7777;
        let owner = match self.chown {
            Some(o) => o,
            None => entry_owner(entry, &raw)?,
        };
        let times = entry_times(entry)?;
        let (parent, name) = split(&rel);
        let dir = self
            .parent(parent)
            .map_err(|e| self.err("creating the parent directories of", &rel, e))?;
        let mut existing =
            root::stat_at(&dir, name).map_err(|e| self.err("inspecting", &rel, e))?;
        let is_dir_entry = kind.is_dir();
        if let Some(st) = &existing
            && !(is_dir_entry && root::is_dir(st))
        {
            // Docker's untar: whatever is there, a symlink to a directory
            // included, is replaced unless both are directories.
            root::remove_all(&dir, name).map_err(|e| self.err("replacing", &rel, e))?;
            existing = None;
        }
        let err = |op, e| self.err(op, &rel, e);
        match kind {
            k if k.is_dir() => {
                if existing.is_none() {
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| err("creating", e))?;
                }
                let fd = open_nofollow(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| err("opening", e))?;
                fd_owner_mode(&fd, owner, mode)
                    .map_err(|e| err("setting the owner and mode of", e))?;
                self.dirs.push((rel.clone(), times));
                self.stats.dirs += 1;
            }
            k if k.is_file() || k == tar::EntryType::Continuous => {
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| err("creating", e))?;
                let mut out = File::from(fd);
                let n = io::copy(entry, &mut out).map_err(|e| CopyError::Io {
                    op: "writing",
                    root: self.root.path().to_path_buf(),
                    path: root::display(&join(self.dest, &rel)),
                    source: e,
                })?;
                let fd = OwnedFd::from(out);
                fd_owner_mode(&fd, owner, mode)
                    .map_err(|e| err("setting the owner and mode of", e))?;
                rustix::fs::futimens(&fd, &times).map_err(|e| err("setting the times of", e))?;
                self.stats.files += 1;
                self.stats.bytes += n;
            }
            k if k.is_symlink() => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                rustix::fs::symlinkat(target.as_slice(), &dir, name)
                    .map_err(|e| err("creating the symlink", e))?;
                root::chown_at(&dir, name, owner).map_err(|e| err("setting the owner of", e))?;
                rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| err("setting the times of", e))?;
                self.stats.symlinks += 1;
            }
            k if k.is_hard_link() => {
                let raw_target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let Some(target) = clean_entry(&raw_target)? else {
                    return Err(Failure::Tar(format!(
                        "hardlink {:?} targets the extraction root",
                        String::from_utf8_lossy(&raw)
                    )));
                };
                let (tparent, tname) = split(&target);
                let tdir = self
                    .target
                    .open_dir(tparent)
                    .map_err(|e| self.err("opening the parent of", &target, e))?;
                rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
                    .map_err(|e| err("creating the hardlink", e))?;
                // The link is the target's inode: BuildKit applies the
                // entry's owner, mode and times to it.
                root::chown_at(&dir, name, owner).map_err(|e| err("setting the owner of", e))?;
                let st = root::stat_at(&dir, name)
                    .map_err(|e| err("inspecting", e))?
                    .ok_or(Failure::Copy(err("inspecting", Errno::NOENT)))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                        .map_err(|e| err("setting the mode of", e))?;
                    rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| err("setting the times of", e))?;
                }
                self.stats.hardlinks += 1;
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                let header = entry.header();
                let (ft, dev) = if k.is_fifo() {
                    (FileType::Fifo, 0)
                } else {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    let ft = if k.is_block_special() {
                        FileType::BlockDevice
                    } else {
                        FileType::CharacterDevice
                    };
                    (ft, rustix::fs::makedev(major, minor))
                };
                rustix::fs::mknodat(&dir, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| err("creating", e))?;
                root::chown_at(&dir, name, owner).map_err(|e| err("setting the owner of", e))?;
                rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| err("setting the mode of", e))?;
                rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| err("setting the times of", e))?;
                if k.is_fifo() {
                    self.stats.fifos += 1;
                } else {
                    self.stats.devices += 1;
                }
            }
            k => {
                return Err(Failure::Tar(format!(
                    "unsupported tar entry {:?} type {:?}",
                    String::from_utf8_lossy(&raw),
                    char::from(k.as_byte())
                )));
            }
        }
        self.stats.entries += 1;
        Ok(())
    }
}

/// BuildKit's `cleanRootTarPath`: leading `/` dropped, cleaned; `None` for
/// the extraction root itself (skipped), an error for a name that climbs
/// out of it.
fn clean_entry(raw: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
    if raw.contains(&0) {
        return Err(Failure::Tar("entry name contains a NUL byte".into()));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in root::components(raw) {
        if c == b".." {
            if parts.pop().is_none() {
                return Err(Failure::Copy(CopyError::ArchiveEscape {
                    entry: String::from_utf8_lossy(raw).into_owned(),
                }));
            }
        } else {
            parts.push(c);
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join(&b'/')))
}

/// The entry's owner as Go's archive/tar reads it (BuildKit's): a PAX
/// `uid`/`gid` record wins over the header's field; an empty field (all
/// NULs or spaces, as many tar writers leave it) is 0; a field with its
/// high bit set is base-256.
fn entry_owner<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Owner, Failure> {
    let header = entry.header().as_old();
    let mut uid = numeric_field(&header.uid);
    let mut gid = numeric_field(&header.gid);
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let value = || ext.value().ok().and_then(|v| v.parse::<u64>().ok());
            match ext.key() {
                Ok("uid") => uid = value(),
                Ok("gid") => gid = value(),
                _ => {}
            }
        }
    }
    Ok(Owner {
        uid: id(uid, raw)?,
        gid: id(gid, raw)?,
    })
}

/// A tar header's numeric field, as Go's `parseNumeric` reads it.
fn numeric_field(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256: the first byte's high bit marks it, the rest is
        // big-endian; negative values (0xff first) are not owners.
        if field[0] == 0xff {
            return None;
        }
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn id(v: Option<u64>, raw: &[u8]) -> Result<u32, Failure> {
    match v {
        // -1 means "leave unchanged" to chown(2).
        Some(v) if v < u64::from(u32::MAX) => Ok(v as u32),
        _ => Err(Failure::Tar(format!(
            "entry {:?}: owner id out of range",
            String::from_utf8_lossy(raw)
        ))),
    }
}

/// The entry's (atime, mtime): BuildKit's `rootHeaderTimes` (atime is the
/// later of the two; PAX times override the header's; out-of-range times
/// are the epoch).
fn entry_times<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Timestamps, Failure> {
    let mut mtime = (entry.header().mtime().unwrap_or(0) as i64, 0u32);
    let mut atime = None;
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            match ext.key() {
                Ok("mtime") => {
                    if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                        mtime = t;
                    }
                }
                Ok("atime") => atime = ext.value().ok().and_then(parse_pax_time),
                _ => {}
            }
        }
    }
    let atime = atime.filter(|a| *a > mtime).unwrap_or(mtime);
    let ts = |(s, ns): (i64, u32)| Timespec {
        tv_sec: s.max(0),
        tv_nsec: if s < 0 { 0 } else { ns.into() },
    };
    Ok(Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    })
}

/// A PAX time: decimal seconds with an optional fraction.
fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((secs, digits.parse().ok()?))
}

fn open_nofollow(dir: impl AsFd, name: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Owner before mode: chown(2) clears set-id bits.
fn fd_owner_mode(fd: impl AsFd, owner: Owner, mode: u32) -> Result<(), Errno> {
    let fd = fd.as_fd();
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
    )?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
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

    #[test]
    fn numeric_fields_as_go_reads_them() {
        assert_eq!(numeric_field(&[0; 8]), Some(0));
        assert_eq!(numeric_field(b"       \0"), Some(0));
        assert_eq!(numeric_field(b"0001750\0"), Some(1000));
        assert_eq!(numeric_field(b" 1750 \0\0"), Some(1000));
        assert_eq!(numeric_field(&[0x80, 0, 0, 0, 0, 0, 0x10, 0]), Some(4096));
        assert_eq!(numeric_field(&[0xff; 8]), None);
        assert_eq!(numeric_field(b"12x\0\0\0\0\0"), None);
    }

    #[test]
    fn entry_names() {
        let c = |s: &str| match clean_entry(s.as_bytes()) {
            Ok(v) => Ok(v.map(|v| String::from_utf8(v).unwrap())),
            Err(_) => Err(()),
        };
        assert_eq!(c("/a/./b/"), Ok(Some("a/b".into())));
        assert_eq!(c("./"), Ok(None));
        assert_eq!(c("a/../b"), Ok(Some("b".into())));
        assert!(c("../x").is_err());
        assert!(c("a/../../x").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
