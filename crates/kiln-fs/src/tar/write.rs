//! A tar writer whose output depends only on the entries given to it: ustar
//! headers, a PAX header in front of an entry only when a value does not fit
//! ustar (or the entry has xattrs), records in sorted key order, no user or
//! group names, no atime/ctime, and a two-block end marker as Go's
//! archive/tar writes it.

use std::io::{self, Write};

use tar::{EntryType, Header};

use super::{BLOCK, Kind, padding};

/// Largest value of an 8-byte octal field (uid, gid, device numbers).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// Longest name or link target the ustar header holds without a prefix.
const NAME_LEN: usize = 100;

/// One entry's header, as the walker produces it.
pub struct EntryHeader<'a> {
    /// The name in the archive; directories end in `/`.
    pub path: &'a [u8],
    pub kind: Kind,
    pub link: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Sorted by name.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

pub struct TarWriter<W> {
    out: W,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out, written: 0 }
    }

    /// Writes the header of an entry (with a PAX header before it when
    /// needed). The caller then writes exactly `size` bytes of data with
    /// [`TarWriter::write_data`] and calls [`TarWriter::end_data`].
    pub fn append(&mut self, h: &EntryHeader<'_>) -> io::Result<()> {
        let mut records: Vec<(&[u8], Vec<u8>)> = Vec::new();
        if h.path.len() > NAME_LEN {
            records.push((b"path", h.path.to_vec()));
        }
        if h.link.len() > NAME_LEN {
            records.push((b"linkpath", h.link.to_vec()));
        }
        if h.uid > MAX_OCTAL_8 {
            records.push((b"uid", h.uid.to_string().into_bytes()));
        }
        if h.gid > MAX_OCTAL_8 {
            records.push((b"gid", h.gid.to_string().into_bytes()));
        }
        if h.size > MAX_OCTAL_12 {
            records.push((b"size", h.size.to_string().into_bytes()));
        }
        if h.mtime < 0 || h.mtime as u64 > MAX_OCTAL_12 {
            records.push((b"mtime", h.mtime.to_string().into_bytes()));
        }
        let mut xattr_keys = Vec::with_capacity(h.xattrs.len());
        for (name, _) in h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            xattr_keys.push(key);
        }
        for (key, (_, value)) in xattr_keys.iter().zip(h.xattrs) {
            records.push((key, value.clone()));
        }
        if !records.is_empty() {
            records.sort_by(|a, b| a.0.cmp(b.0));
            let mut data = Vec::new();
            for (key, value) in &records {
                pax_record(&mut data, key, value);
            }
            let name = pax_name(h.path);
            let mut pax = ustar(&name, &[], 0o644, 0, 0, 0, data.len() as u64);
            pax.set_entry_type(EntryType::XHeader);
            pax.set_cksum();
            self.write_all(pax.as_bytes())?;
            self.write_all(&data)?;
            self.end_data(data.len() as u64)?;
        }

        // Values that need PAX records still get the best ustar encoding: a
        // truncated name, base-256 numbers (GNU), zero for negative times.
        let mtime = u64::try_from(h.mtime).unwrap_or(0);
        let mut header = ustar(h.path, h.link, h.mode, h.uid, h.gid, mtime, h.size);
        header.set_entry_type(EntryType::new(h.kind.flag()));
        if matches!(h.kind, Kind::Char | Kind::Block) {
            header.set_device_major(h.dev_major)?;
            header.set_device_minor(h.dev_minor)?;
        }
        header.set_cksum();
        self.write_all(header.as_bytes())
    }

    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data)
    }

    /// Pads the data of an entry of `size` bytes to a block.
    pub fn end_data(&mut self, size: u64) -> io::Result<()> {
        let pad = padding(size) as usize;
        self.write_all(&[0u8; BLOCK as usize][..pad])
    }

    /// Writes the end-of-archive marker; returns the output and the size of
    /// the archive.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.write_all(&[0u8; 2 * BLOCK as usize])?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }
}

fn ustar(path: &[u8], link: &[u8], mode: u32, uid: u64, gid: u64, mtime: u64, size: u64) -> Header {
    let mut h = Header::new_ustar();
    let old = h.as_old_mut();
    let n = path.len().min(NAME_LEN);
    old.name[..n].copy_from_slice(&path[..n]);
    let n = link.len().min(NAME_LEN);
    old.linkname[..n].copy_from_slice(&link[..n]);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// `<len> <key>=<value>\n`, where `<len>` counts the whole record, itself
/// included.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + digits(rest);
    if digits(len) != digits(rest) {
        len = rest + digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The PAX header's own name: `dir/PaxHeaders.0/base`, as Go's archive/tar
/// names it (readers ignore it; a fixed name keeps output reproducible where
/// GNU tar would put a process id).
fn pax_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, base) = match trimmed.iter().rposition(|b| *b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut name = dir.to_vec();
    name.extend_from_slice(b"PaxHeaders.0/");
    name.extend_from_slice(base);
    name.truncate(NAME_LEN);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value_len in 0..2000 {
            let mut out = Vec::new();
            pax_record(&mut out, b"path", &vec![b'a'; value_len]);
            let space = out.iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..space]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {value_len} bytes");
        }
    }

    #[test]
    fn pax_names() {
        assert_eq!(pax_name(b"a/b/c"), b"a/b/PaxHeaders.0/c");
        assert_eq!(pax_name(b"dir/"), b"PaxHeaders.0/dir");
        assert_eq!(pax_name(&[b'x'; 300]).len(), NAME_LEN);
    }
}
