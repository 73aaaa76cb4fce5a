//! A streaming tar reader: one entry at a time, data read through `Read`,
//! and no allocation that a hostile archive can make grow without bound.

use std::io::{self, Read};

use tar::{GnuExtSparseHeader, Header};

use super::{BLOCK, Kind, TarError, padding};

/// Largest PAX header or GNU long name/link accepted, as Go's archive/tar
/// (`maxSpecialFileSize`): names are bounded by PATH_MAX anyway, and a
/// larger header is an attempt to exhaust memory.
const MAX_META: u64 = 1 << 20;

/// Largest number of data segments in one sparse entry (16 bytes each).
const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

/// One entry, with PAX records, GNU long names and sparse maps applied.
#[derive(Debug)]
pub struct Entry {
    /// The name as the archive spells it (not cleaned).
    pub path: Vec<u8>,
    /// Symlink target or hardlink target, as the archive spells it.
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (may be negative) and nanoseconds.
    pub mtime: (i64, u32),
    /// A PAX `atime` record, if the archive has one.
    pub atime: Option<(i64, u32)>,
    /// The size of the file the entry describes (for a sparse file, its
    /// logical size, holes included).
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For a sparse file, the `(offset, length)` of each data segment, in
    /// order; the entry's data is these segments back to back.
    pub sparse: Option<Vec<(u64, u64)>>,
}

impl Entry {
    /// The name for messages.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Reads entries from a tar stream.
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    offset: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    finished: bool,
    scratch: Vec<u8>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            finished: false,
            scratch: Vec::new(),
        }
    }

    /// Bytes consumed from the stream so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next entry, or `None` at the end-of-archive marker (or at the end
    /// of the stream, which Go's reader also accepts in its place). The data
    /// of the previous entry is skipped if it was not read.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;

        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let at = self.offset;
            let mut block = [0u8; BLOCK as usize];
            let n = self.fill(&mut block)?;
            let pending = pax.is_some() || long_name.is_some() || long_link.is_some();
            if n == 0 || block.iter().all(|b| *b == 0) {
                if n != 0 && n < block.len() {
                    return Err(malformed(at, "truncated end-of-archive block"));
                }
                if pending {
                    return Err(malformed(at, "archive ends after an extension header"));
                }
                self.finished = true;
                return Ok(None);
            }
            if n < block.len() {
                return Err(malformed(at, "truncated header"));
            }
            verify_checksum(&block).map_err(|reason| malformed(at, reason))?;

            let size = numeric(&block[124..136])
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| malformed(at, "invalid size field"))?;
            match block[156] {
                b'x' => {
                    let data = self.read_meta(size, at, "pax header")?;
                    // A later PAX header replaces an earlier one, as in Go's reader.
                    pax = Some(Pax::parse(&data).map_err(|reason| malformed(at, reason))?);
                }
                // Global headers (git archive's commit comment) change nothing
                // kiln extracts; Docker and containerd ignore them too.
                b'g' => {
                    self.read_meta(size, at, "pax global header")?;
                }
                b'L' => long_name = Some(trim_nul(self.read_meta(size, at, "GNU long name")?)),
                b'K' => long_link = Some(trim_nul(self.read_meta(size, at, "GNU long link")?)),
                _ => {
                    return self
                        .entry(at, &block, size, pax, long_name, long_link)
                        .map(Some);
                }
            }
        }
    }

    /// Reads to the end of the stream (the end-of-archive blocks and any
    /// trailing bytes), so a hashing reader underneath sees every byte.
    pub fn drain(&mut self) -> Result<(), TarError> {
        self.remaining = 0;
        self.padding = 0;
        self.finished = true;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(64 * 1024, 0);
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.offset += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(TarError::Read { source }),
            }
        }
        self.scratch = buf;
        Ok(())
    }

    fn entry(
        &mut self,
        at: u64,
        block: &[u8; BLOCK as usize],
        header_size: u64,
        pax: Option<Pax>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, TarError> {
        let header = Header::from_byte_slice(block);
        let pax = pax.unwrap_or_default();
        let has_devices = header.as_ustar().is_some() || header.as_gnu().is_some();

        let mut path = match (pax.path, long_name) {
            (Some(p), _) => p,
            (None, Some(l)) => l,
            (None, None) => header.path_bytes().into_owned(),
        };
        let link = match (pax.linkpath, long_link) {
            (Some(l), _) => l,
            (None, Some(l)) => l,
            (None, None) => header
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
        };
        let field = |range: std::ops::Range<usize>, what: &'static str| {
            numeric(&block[range]).ok_or_else(|| malformed(at, what))
        };
        let unsigned =
            |v: i64, what: &'static str| u64::try_from(v).map_err(|_| malformed(at, what));
        let mode = field(100..108, "invalid mode field")?;
        let uid = match pax.uid {
            Some(uid) => uid,
            None => unsigned(field(108..116, "invalid uid field")?, "negative uid")?,
        };
        let gid = match pax.gid {
            Some(gid) => gid,
            None => unsigned(field(116..124, "invalid gid field")?, "negative gid")?,
        };
        let mtime = match pax.mtime {
            Some(t) => t,
            None => (field(136..148, "invalid mtime field")?, 0),
        };
        let (dev_major, dev_minor) = if has_devices {
            let major = field(329..337, "invalid device major field")?;
            let minor = field(337..345, "invalid device minor field")?;
            (
                u32::try_from(major).map_err(|_| malformed(at, "device major out of range"))?,
                u32::try_from(minor).map_err(|_| malformed(at, "device minor out of range"))?,
            )
        } else {
            (0, 0)
        };

        let flag = block[156];
        let kind = match flag {
            b'0' | b'7' | b'S' => Kind::File,
            // Pre-POSIX archives mark directories with a trailing slash only.
            b'\0' if path.ends_with(b"/") => Kind::Dir,
            b'\0' => Kind::File,
            b'1' => Kind::Link,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => Kind::Other(other),
        };
        let mut data = pax.size.unwrap_or(header_size);
        if kind.header_only() {
            data = 0;
        }
        self.remaining = data;
        self.padding = padding(data);

        let mut size = data;
        let mut sparse = None;
        if flag == b'S' {
            let (segments, real) = self.gnu_sparse_map(at, header)?;
            sparse = Some(segments);
            size = real;
        } else if let Some(version) = pax.sparse.version() {
            if let Some(name) = pax.sparse.name {
                path = name;
            }
            let real = pax
                .sparse
                .real_size
                .ok_or_else(|| malformed(at, "sparse file without a real size"))?;
            let segments = match version {
                SparseVersion::V0 => pairs(&pax.sparse.map).map_err(|r| malformed(at, r))?,
                SparseVersion::V1 => self.pax_sparse_map_v1(at)?,
            };
            sparse = Some(segments);
            size = real;
        }
        if let Some(segments) = &sparse {
            check_sparse(segments, size, self.remaining).map_err(|r| malformed(at, r))?;
        }

        Ok(Entry {
            path,
            link,
            kind,
            mode: (mode as u32) & 0o7777,
            uid,
            gid,
            mtime,
            atime: pax.atime,
            size,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
            sparse,
        })
    }

    /// The sparse map of an old-GNU `S` entry: four segments in the header,
    /// more in extension blocks that follow it.
    fn gnu_sparse_map(
        &mut self,
        at: u64,
        header: &Header,
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let gnu = header
            .as_gnu()
            .ok_or_else(|| malformed(at, "sparse entry without a GNU header"))?;
        let bad = |_| malformed(at, "invalid sparse map");
        let mut segments = Vec::new();
        for s in gnu.sparse.iter().filter(|s| !s.is_empty()) {
            segments.push((s.offset().map_err(bad)?, s.length().map_err(bad)?));
        }
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = GnuExtSparseHeader::new();
            // Extension blocks sit between the header and the data: they are
            // not part of the data size.
            let n = self.fill(ext.as_mut_bytes())?;
            if n < BLOCK as usize {
                return Err(malformed(at, "truncated sparse extension header"));
            }
            for s in ext.sparse().iter().filter(|s| !s.is_empty()) {
                segments.push((s.offset().map_err(bad)?, s.length().map_err(bad)?));
            }
            if segments.len() > MAX_SPARSE_SEGMENTS {
                return Err(malformed(at, "too many sparse segments"));
            }
            extended = ext.is_extended();
        }
        let real = gnu.real_size().map_err(bad)?;
        Ok((segments, real))
    }

    /// The map of a PAX sparse file format 1.0: decimal numbers, one a line,
    /// at the start of the data (segment count, then offset and length
    /// pairs), padded to a block.
    fn pax_sparse_map_v1(&mut self, at: u64) -> Result<Vec<(u64, u64)>, TarError> {
        let mut numbers: Vec<u64> = Vec::new();
        let mut wanted: Option<usize> = None;
        let mut current: Option<u64> = None;
        let mut block = [0u8; BLOCK as usize];
        'blocks: loop {
            if self.remaining < BLOCK {
                return Err(malformed(at, "truncated sparse map"));
            }
            let n = self.fill_data(&mut block)?;
            if n < block.len() {
                return Err(malformed(at, "truncated sparse map"));
            }
            for &b in &block {
                match b {
                    b'0'..=b'9' => {
                        let v = current.unwrap_or(0);
                        current = Some(
                            v.checked_mul(10)
                                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                                .ok_or_else(|| malformed(at, "sparse map number overflows"))?,
                        );
                    }
                    b'\n' => {
                        let v = current
                            .take()
                            .ok_or_else(|| malformed(at, "empty sparse map number"))?;
                        match wanted {
                            None => {
                                let count = usize::try_from(v)
                                    .ok()
                                    .filter(|c| *c <= MAX_SPARSE_SEGMENTS)
                                    .ok_or_else(|| malformed(at, "too many sparse segments"))?;
                                wanted = Some(count * 2);
                            }
                            Some(_) => numbers.push(v),
                        }
                        if wanted == Some(numbers.len()) {
                            break 'blocks;
                        }
                    }
                    _ => return Err(malformed(at, "invalid byte in sparse map")),
                }
            }
        }
        pairs(&numbers).map_err(|r| malformed(at, r))
    }

    fn read_meta(&mut self, size: u64, at: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > MAX_META {
            return Err(malformed(
                at,
                format!("{what} of {size} bytes exceeds the {MAX_META}-byte limit"),
            ));
        }
        let mut data = vec![0u8; size as usize];
        self.remaining = size;
        let n = self.fill_data(&mut data)?;
        if n < data.len() {
            return Err(malformed(at, format!("truncated {what}")));
        }
        self.skip(padding(size))?;
        Ok(data)
    }

    /// Reads as much of `buf` as the stream holds; fewer bytes only at its end.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.offset += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(TarError::Read { source }),
            }
        }
        Ok(n)
    }

    /// `fill`, from the current entry's data.
    fn fill_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let len = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.fill(&mut buf[..len])?;
        self.remaining -= n as u64;
        Ok(n)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        if n == 0 {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(64 * 1024, 0);
        let at = self.offset;
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let got = self.fill(&mut buf[..want])?;
            if got == 0 {
                self.scratch = buf;
                return Err(malformed(at, "archive ends inside an entry"));
            }
            n -= got as u64;
        }
        self.scratch = buf;
        Ok(())
    }
}

/// The current entry's data (for a sparse file, its segments back to back).
impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let len = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside an entry",
            ));
        }
        self.remaining -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }
}

fn malformed(offset: u64, reason: impl Into<String>) -> TarError {
    TarError::Malformed {
        offset,
        reason: reason.into(),
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Whether a first block is a tar header Go's `archive/tar` would read: not
/// all zeros (two zero blocks are an empty archive) and with a checksum
/// that matches. BuildKit's test for "is this file an archive to unpack".
pub fn looks_like_header(block: &[u8; BLOCK as usize]) -> bool {
    !block.iter().all(|b| *b == 0) && verify_checksum(block).is_ok()
}

/// Accepts the unsigned sum of POSIX and the signed sum some historic tars
/// wrote, as GNU tar and Go do.
fn verify_checksum(block: &[u8; BLOCK as usize]) -> Result<(), &'static str> {
    let stored = numeric(&block[148..156]).ok_or("invalid checksum field")?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || stored == signed {
        Ok(())
    } else {
        Err("header checksum mismatch")
    }
}

/// A numeric header field: octal text padded with spaces or NULs, or GNU
/// base-256 (top bit of the first byte set; two's complement when the next
/// bit is set too), as Go's `parseNumeric`.
fn numeric(field: &[u8]) -> Option<i64> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        let inv = if first & 0x40 != 0 { 0xff } else { 0x00 };
        let mut x: u64 = 0;
        for (i, &c) in field.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return None;
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 != 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    let text = field
        .iter()
        .position(|b| *b != b' ' && *b != 0)
        .map(|start| {
            let end = field
                .iter()
                .rposition(|b| *b != b' ' && *b != 0)
                .unwrap_or(start);
            &field[start..=end]
        })
        .unwrap_or(&[]);
    if text.is_empty() {
        return Some(0);
    }
    let mut v: i64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(v)
}

/// The records of a PAX extended header that kiln uses.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    atime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: SparsePax,
}

/// GNU's sparse-file records (formats 0.0, 0.1 and 1.0 of GNU tar's manual,
/// "Storing Sparse Files").
#[derive(Default)]
struct SparsePax {
    major: Option<Vec<u8>>,
    minor: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    real_size: Option<u64>,
    /// Offsets and lengths from `GNU.sparse.map` (0.1) or the repeated
    /// `GNU.sparse.offset`/`GNU.sparse.numbytes` records (0.0).
    map: Vec<u64>,
    has_map: bool,
}

enum SparseVersion {
    V0,
    V1,
}

impl SparsePax {
    /// As Go's `readGNUSparsePAXHeaders`.
    fn version(&self) -> Option<SparseVersion> {
        match (self.major.as_deref(), self.minor.as_deref()) {
            (Some(b"0"), Some(b"0" | b"1")) => Some(SparseVersion::V0),
            (Some(b"1"), Some(b"0")) => Some(SparseVersion::V1),
            (None, None) if self.has_map => Some(SparseVersion::V0),
            _ => None,
        }
    }
}

impl Pax {
    /// Parses `"<len> <key>=<value>\n"` records by their length prefix, so
    /// values may hold any byte (POSIX pax, "pax Extended Header").
    fn parse(mut data: &[u8]) -> Result<Pax, String> {
        let mut pax = Pax::default();
        while !data.is_empty() {
            // GNU tar and Go stop at NUL padding after the last record.
            if data[0] == 0 {
                break;
            }
            let space = data
                .iter()
                .position(|b| *b == b' ')
                .ok_or("pax record without a length")?;
            let len = decimal(&data[..space]).ok_or("invalid pax record length")?;
            let len = usize::try_from(len).map_err(|_| "invalid pax record length")?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err("invalid pax record length".into());
            }
            let record = &data[space + 1..len - 1];
            data = &data[len..];
            let eq = record
                .iter()
                .position(|b| *b == b'=')
                .ok_or("pax record without '='")?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            let number = || decimal(value).ok_or_else(|| format!("invalid pax {}", lossy(key)));
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => pax.size = Some(number()?),
                b"uid" => pax.uid = Some(number()?),
                b"gid" => pax.gid = Some(number()?),
                b"mtime" => pax.mtime = Some(pax_time(value).ok_or("invalid pax mtime")?),
                // Go's reader ignores a malformed atime rather than fail.
                b"atime" => pax.atime = pax_time(value),
                b"GNU.sparse.major" => pax.sparse.major = Some(value.to_vec()),
                b"GNU.sparse.minor" => pax.sparse.minor = Some(value.to_vec()),
                b"GNU.sparse.name" => pax.sparse.name = Some(value.to_vec()),
                b"GNU.sparse.size" | b"GNU.sparse.realsize" => {
                    pax.sparse.real_size = Some(number()?);
                }
                b"GNU.sparse.map" => {
                    pax.sparse.has_map = true;
                    pax.sparse.map.clear();
                    if !value.is_empty() {
                        for n in value.split(|b| *b == b',') {
                            pax.sparse
                                .map
                                .push(decimal(n).ok_or("invalid GNU.sparse.map")?);
                        }
                    }
                }
                b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                    // Format 0.0 repeats these two keys, in order, one pair
                    // per segment.
                    let expect_offset = pax.sparse.map.len().is_multiple_of(2);
                    if expect_offset != (key == b"GNU.sparse.offset") {
                        return Err("GNU.sparse.offset and numbytes out of order".into());
                    }
                    pax.sparse.has_map = true;
                    pax.sparse.map.push(number()?);
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        pax.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
            if pax.sparse.map.len() > 2 * MAX_SPARSE_SEGMENTS {
                return Err("too many sparse segments".into());
            }
        }
        Ok(pax)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `[-]seconds[.fraction]`, as POSIX pax time records.
fn pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, v) = match v.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = match v.iter().position(|b| *b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(decimal(secs)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !neg {
        return Some((secs, nanos));
    }
    // -1.25 is 1.25 seconds before the epoch: (-2, 0.75).
    if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

fn pairs(numbers: &[u64]) -> Result<Vec<(u64, u64)>, &'static str> {
    if !numbers.len().is_multiple_of(2) {
        return Err("odd number of values in sparse map");
    }
    Ok(numbers.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// Segments must be in order, not overlap, fit in the file, and add up to
/// the data the archive holds for the entry.
fn check_sparse(segments: &[(u64, u64)], size: u64, data: u64) -> Result<(), &'static str> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(offset, len) in segments {
        if offset < end {
            return Err("sparse segments out of order or overlapping");
        }
        end = offset.checked_add(len).ok_or("sparse segment overflows")?;
        if end > size {
            return Err("sparse segment beyond the file size");
        }
        total = total.checked_add(len).ok_or("sparse segments overflow")?;
    }
    if total != data {
        return Err("sparse segments do not match the entry's data size");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"0000644\0"), Some(0o644));
        assert_eq!(numeric(b"  644 \0\0"), Some(0o644));
        assert_eq!(numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(numeric(b"0008"), None);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(numeric(&big), Some(1 << 40));
        // -1 in base-256.
        assert_eq!(numeric(&[0xff; 12]), Some(-1));
    }

    #[test]
    fn pax_records_hold_binary_values() {
        let mut data = Vec::new();
        let value = b"\x01\x00\x00\x02\x0a\x00\x00\x00";
        let body_len = "SCHILY.xattr.security.capability=".len() + value.len() + 1;
        let len = body_len + 3;
        data.extend_from_slice(format!("{len} SCHILY.xattr.security.capability=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
        data.extend_from_slice(b"16 path=a/b/c/d\n");
        let pax = Pax::parse(&data).unwrap();
        assert_eq!(
            pax.xattrs,
            vec![(b"security.capability".to_vec(), value.to_vec())]
        );
        assert_eq!(pax.path.as_deref(), Some(&b"a/b/c/d"[..]));
        assert!(Pax::parse(b"99 path=x\n").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(pax_time(b"12x"), None);
    }

    #[test]
    fn sparse_maps_are_checked() {
        assert!(check_sparse(&[(0, 10), (20, 5)], 30, 15).is_ok());
        assert!(check_sparse(&[(20, 5), (0, 10)], 30, 15).is_err());
        assert!(check_sparse(&[(0, 10), (5, 10)], 30, 20).is_err());
        assert!(check_sparse(&[(0, 10)], 5, 10).is_err());
        assert!(check_sparse(&[(0, 10)], 10, 11).is_err());
        assert!(check_sparse(&[(u64::MAX, 10)], u64::MAX, 10).is_err());
    }
}
