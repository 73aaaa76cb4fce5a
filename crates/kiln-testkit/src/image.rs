//! Test content: random blobs (in memory or written to a file, for sizes
//! that should not sit in memory twice), and a small real image (a gzipped
//! tar layer, an OCI config and manifest) that tools such as skopeo accept,
//! with an OCI layout writer.

use std::io::{self, Write};
use std::path::Path;

use kiln_image::{Digest, media};
use rand::{RngCore, SeedableRng};
use serde_json::json;

/// `len` pseudo-random (incompressible) bytes, the same for the same seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// Writes `len` incompressible bytes to `path` in bounded memory, the same
/// for the same seed; returns their digest. Fast in debug builds too (for
/// blobs of hundreds of MB): one random MiB, rotated differently for each
/// MiB written, hashed with ring's assembly SHA-256.
pub fn write_random_file(path: &Path, len: u64, seed: u64) -> io::Result<Digest> {
    const BLOCK: usize = 1 << 20;
    let block = random_bytes(BLOCK, seed);
    let mut out = io::BufWriter::with_capacity(BLOCK, fs_err::File::create(path)?);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = len;
    let mut i = 0usize;
    while left > 0 {
        // 4099 is prime: every MiB of the file differs from the others.
        let rotation = i.wrapping_mul(4099) % BLOCK;
        for part in [&block[rotation..], &block[..rotation]] {
            let n = usize::try_from(left.min(part.len() as u64)).unwrap_or(part.len());
            out.write_all(&part[..n])?;
            hash.update(&part[..n]);
            left -= n as u64;
        }
        i += 1;
    }
    out.flush()?;
    Ok(digest_from_ring(hash.finish()))
}

/// The digest of a file, computed fast in debug builds too.
pub fn sha256_file(path: &Path) -> io::Result<Digest> {
    let mut file = fs_err::File::open(path)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            return Ok(digest_from_ring(hash.finish()));
        }
        hash.update(&buf[..n]);
    }
}

fn digest_from_ring(d: ring::digest::Digest) -> Digest {
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Digest::from_hex(&hex).expect("64 hex digits")
}

/// A blob with its media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: Digest::of(&bytes),
            bytes,
        }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The OCI descriptor (`mediaType`, `digest`, `size`).
    pub fn descriptor(&self) -> serde_json::Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.size(),
        })
    }
}

/// A single-platform OCI image with one layer.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub layer: Blob,
    /// The digest of the uncompressed layer tar.
    pub diff_id: Digest,
    pub config: Blob,
    pub manifest: Blob,
}

impl TestImage {
    /// An image whose layer holds `files` (path, contents), regular files
    /// with mode 0644 and mtime 0; its command is `/hello`.
    pub fn new(files: &[(&str, &[u8])]) -> TestImage {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, contents) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, *contents)
                .expect("tar in memory");
        }
        let tar = tar.into_inner().expect("tar in memory");
        let diff_id = Digest::of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip in memory");
        let layer = Blob::new(media::OCI_LAYER_GZIP, gz.finish().expect("gzip in memory"));
        let config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/hello"], "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "kiln-testkit"}],
        });
        let config = Blob::new(media::OCI_CONFIG, config.to_string().into_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        });
        let manifest = Blob::new(media::OCI_MANIFEST, manifest.to_string().into_bytes());
        TestImage {
            layer,
            diff_id,
            config,
            manifest,
        }
    }

    /// A small default image: `/hello` and `/etc/kiln-test`.
    pub fn small() -> TestImage {
        TestImage::new(&[
            ("hello", b"#!/bin/sh\necho hello from kiln\n"),
            ("etc/kiln-test", b"kiln testkit image\n"),
        ])
    }

    /// Writes the image as an OCI image layout at `dir` (created if
    /// needed), its manifest tagged `tag` in `index.json`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) -> io::Result<()> {
        let blobs = dir.join("blobs").join("sha256");
        fs_err::create_dir_all(&blobs)?;
        for blob in [&self.layer, &self.config, &self.manifest] {
            fs_err::write(blobs.join(blob.digest.hex()), &blob.bytes)?;
        }
        fs_err::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut descriptor = self.manifest.descriptor();
        descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [descriptor],
        });
        fs_err::write(dir.join("index.json"), index.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_deterministic_and_consistent() {
        let a = TestImage::small();
        let b = TestImage::small();
        assert_eq!(a.manifest, b.manifest);
        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest.bytes).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], a.layer.digest.to_string());
        assert_eq!(random_bytes(64, 1), random_bytes(64, 1));
        assert_ne!(random_bytes(64, 1), random_bytes(64, 2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let digest = write_random_file(&path, (3 << 20) + 5, 9).unwrap();
        let bytes = fs_err::read(&path).unwrap();
        assert_eq!(bytes.len(), (3 << 20) + 5);
        assert_eq!(digest, Digest::of(&bytes));
        assert_eq!(sha256_file(&path).unwrap(), digest);
        assert_ne!(bytes[..1 << 20], bytes[1 << 20..2 << 20]);
        a.write_oci_layout(&dir.path().join("layout"), "v1")
            .unwrap();
        assert!(dir.path().join("layout/index.json").is_file());
    }
}
