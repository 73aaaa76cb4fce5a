//! Writing a blob: a locked temp file under `ingest/`, hashed while it is
//! written, checked, fsynced and renamed into `blobs/sha256/`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::store::{Store, StoreError, lock};
use crate::{Digest, HashingWriter};

/// A blob that is in the store: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

impl BlobInfo {
    /// A descriptor of this blob with `media_type`.
    pub fn descriptor(&self, media_type: impl Into<String>) -> crate::document::Descriptor {
        crate::document::Descriptor::new(media_type, self.digest.clone(), self.size)
    }
}

/// A blob being written. Write the content, then [`Ingest::commit`]; until
/// then nothing is visible under `blobs/`, and dropping the ingest deletes
/// its temp file. The temp file is locked while the ingest lives, so a
/// store opened by another process knows it is not abandoned.
pub struct Ingest {
    store: Store,
    out: Option<HashingWriter<BufWriter<fs_err::File>>>,
    temp: PathBuf,
    expected: Option<Digest>,
    expected_size: Option<u64>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("temp", &self.temp)
            .field("expected", &self.expected)
            .field("written", &self.written())
            .finish()
    }
}

impl Ingest {
    pub(crate) fn new(
        store: Store,
        expected: Option<Digest>,
        expected_size: Option<u64>,
    ) -> Result<Ingest, StoreError> {
        let (file, temp) = lock::create_owned(&store.ingest_dir(), ".partial")?;
        Ok(Ingest {
            store,
            out: Some(HashingWriter::new(BufWriter::with_capacity(1 << 20, file))),
            temp,
            expected,
            expected_size,
        })
    }

    /// The temp file the bytes go to (under `ingest/`) until the commit.
    pub fn path(&self) -> &std::path::Path {
        &self.temp
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.as_ref().map_or(0, HashingWriter::len)
    }

    /// Checks the content against the expected digest and size, makes it
    /// durable and moves it into place. On a mismatch the temp file is
    /// deleted and nothing is stored.
    pub fn commit(mut self) -> Result<BlobInfo, StoreError> {
        let out = self.out.take().expect("an ingest is committed once");
        let (buffered, digest, size) = out.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| StoreError::io(&self.temp)(e.into_error()))?;
        if let Some(expected) = self.expected_size
            && expected != size
        {
            return Err(StoreError::SizeMismatch {
                what: self
                    .expected
                    .as_ref()
                    .map_or_else(|| "blob".to_string(), Digest::to_string),
                expected,
                actual: size,
            });
        }
        if let Some(expected) = &self.expected
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
                size,
            });
        }
        file.sync_all().map_err(StoreError::io(&self.temp))?;
        // Read-only, as an OCI layout's blobs are: content never changes.
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o444))
                .map_err(StoreError::io(&self.temp))?;
        }
        self.store.publish(&self.temp, &digest)?;
        // The temp path is gone now; keep Drop from touching it.
        self.temp = PathBuf::new();
        drop(file);
        Ok(BlobInfo { digest, size })
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest already committed"))?;
        if let Some(limit) = self.expected_size
            && out.len() + buf.len() as u64 > limit
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: more than the expected {limit} bytes",
                    self.expected
                        .as_ref()
                        .map_or_else(|| "blob".to_string(), Digest::to_string)
                ),
            ));
        }
        out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            // Still locked by our open file, so no cleaner is racing us.
            let _ = fs_err::remove_file(&self.temp);
        }
    }
}
