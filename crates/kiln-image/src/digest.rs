//! Content addresses: `sha256:<64 hex>`, and readers/writers that hash
//! what passes through them.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::Digest as _;

/// A content digest. Only SHA-256 is produced or accepted: it is what OCI
/// registries and Docker use, and one algorithm keeps every key canonical.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

/// A string that is not a `sha256:<64 lower-case hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {value:?}: {reason}")]
pub struct DigestError {
    pub value: String,
    pub reason: &'static str,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Sha256::new();
        h.update(bytes);
        h.finish()
    }

    /// From 64 lower-case hex digits.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError {
                value: hex.to_string(),
                reason: "expected 64 lower-case hex digits",
            });
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The 64 hex digits: also the blob's file name in an OCI layout.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as `docker images` shows IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError {
                value: s.to_string(),
                reason: "missing algorithm prefix",
            });
        };
        if algorithm != "sha256" {
            return Err(DigestError {
                value: s.to_string(),
                reason: "unsupported algorithm (only sha256)",
            });
        }
        Digest::from_hex(hex).map_err(|e| DigestError {
            value: s.to_string(),
            reason: e.reason,
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental SHA-256 that also counts bytes.
#[derive(Clone, Default)]
pub struct Sha256 {
    inner: sha2::Sha256,
    len: u64,
}

impl Sha256 {
    pub fn new() -> Sha256 {
        Sha256::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.inner.finalize()),
        }
    }
}

/// Passes writes through to `inner` and hashes them.
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hash.is_empty()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, the digest and the size of what was written.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hash.len();
        (self.inner, self.hash.finish(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads through from `inner` and hashes them.
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hash: Sha256::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hash.is_empty()
    }

    /// The inner reader, the digest and the size of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        let len = self.hash.len();
        (self.inner, self.hash.finish(), len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), Digest::of(b""));
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "e3b0",
            "sha512:abcd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:zz",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_writer_and_reader_agree() {
        let data = b"hello kiln".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, d, n) = w.finish();
        assert_eq!((out, n), (data.clone(), data.len() as u64));
        let mut r = HashingReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish().1, d);
        assert_eq!(d, Digest::of(&data));
    }
}
