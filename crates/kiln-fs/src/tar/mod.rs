//! Tar, the one format kiln reads and writes trees in: layers, `ADD`
//! archives, build contexts. A streaming reader with bounded memory, a
//! writer that emits the same bytes for the same entries, and [`apply`],
//! the one place an archive is written onto a directory.
//!
//! The `tar` crate supplies the header block codec (field offsets, ustar
//! prefixes, checksums); the entry loops are ours because `tar::Archive`
//! reads PAX headers and GNU long names of any size into memory, splits PAX
//! records at newlines (which breaks binary xattr values such as
//! `security.capability`), and expands sparse holes into zero bytes.

mod apply;
mod error;
mod read;
pub mod whiteout;
mod write;

pub use apply::{
    ApplyOptions, ApplyStats, Collected, MissingParents, Owners, TopEntry, Whiteouts, apply,
};
pub use error::TarError;
pub use read::{Entry, TarReader, looks_like_header};
pub use write::{EntryHeader, TarWriter};

/// The size of a tar block: headers are one block, data is padded to blocks.
pub const BLOCK: u64 = 512;

/// What a tar entry creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Link,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// A type flag kiln does not extract; its data is skipped.
    Other(u8),
}

impl Kind {
    /// The POSIX ustar type flag.
    pub fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Link => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
            Kind::Other(flag) => flag,
        }
    }

    /// Types whose size field does not describe data that follows the header.
    /// Go's archive/tar (and so Docker and containerd) reads no data for
    /// these whatever the size field says; kiln reads the same entries.
    pub fn header_only(self) -> bool {
        matches!(
            self,
            Kind::Link | Kind::Symlink | Kind::Char | Kind::Block | Kind::Dir | Kind::Fifo
        )
    }
}

/// Padding that follows `size` bytes of data.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use super::*;

    /// An entry of 9 GiB (over ustar's 8 GiB size field) with an id over
    /// ustar's 8-byte field and a negative mtime: written with PAX records,
    /// read back, and its data skipped without being held.
    #[test]
    fn huge_values_round_trip() {
        let size = 9u64 << 30;
        let mut w = TarWriter::new(Vec::new());
        w.append(&EntryHeader {
            path: b"big",
            kind: Kind::File,
            link: b"",
            mode: 0o644,
            uid: 1 << 32,
            gid: 7,
            mtime: -5,
            size,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        })
        .unwrap();
        let (header, _) = w.finish().unwrap();
        let header = &header[..header.len() - 1024];
        let pax = String::from_utf8_lossy(&header[512..1024]);
        assert!(
            pax.contains("size=9663676416\n") && pax.contains("uid=4294967296\n"),
            "{pax}"
        );
        assert!(pax.contains("mtime=-5\n"), "{pax}");

        let data = io::repeat(0).take(size + padding(size));
        let stream = header.chain(data).chain(&[0u8; 1024][..]);
        let mut r = TarReader::new(stream);
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.size, e.uid, e.gid, e.mtime), (size, 1 << 32, 7, (-5, 0)));
        assert!(r.next_entry().unwrap().is_none());
        r.drain().unwrap();
        assert_eq!(r.offset(), 1024 + 512 + size + 1024);
    }
}
