//! Where pulled blobs go and where pushed blobs come from. Both are sync
//! (the content store writes files); the client calls them with chunks of
//! at most a few hundred KiB.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Receives a blob being pulled, in order. After an interruption the
/// client resumes at [`written`](BlobSink::written); when it must start over
/// it calls [`reset`](BlobSink::reset).
pub trait BlobSink {
    /// Appends `bytes`. Should not block for long (a page-cache write is fine).
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Bytes written since creation or the last reset.
    fn written(&self) -> u64;
    /// Drops everything written so far.
    fn reset(&mut self) -> io::Result<()>;
}

/// A blob to push, readable from any offset (a resumed upload starts in the
/// middle).
pub trait BlobSource: Sync {
    fn size(&self) -> u64;
    /// A reader positioned at `offset`. It is read on a blocking thread.
    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + Send>>;
}

impl BlobSink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.len() as u64
    }

    fn reset(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

impl<S: BlobSink + ?Sized> BlobSink for &mut S {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).write(bytes)
    }

    fn written(&self) -> u64 {
        (**self).written()
    }

    fn reset(&mut self) -> io::Result<()> {
        (**self).reset()
    }
}

impl BlobSource for Bytes {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o <= self.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset past the end"))?;
        Ok(Box::new(io::Cursor::new(self.slice(start..))))
    }
}

/// A file being written as a [`BlobSink`].
#[derive(Debug)]
pub struct FileSink {
    file: fs_err::File,
    written: u64,
}

impl FileSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl Into<PathBuf>) -> io::Result<FileSink> {
        Ok(FileSink {
            file: fs_err::File::create(path)?,
            written: 0,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Flushes and returns the file.
    pub fn into_file(mut self) -> io::Result<fs_err::File> {
        self.file.flush()?;
        Ok(self.file)
    }
}

impl BlobSink for FileSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.written = 0;
        Ok(())
    }
}

/// A file to push, as a [`BlobSource`]. Its size is taken when it is opened;
/// the file must not change while it is pushed.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    size: u64,
}

impl FileSource {
    pub fn open(path: impl Into<PathBuf>) -> io::Result<FileSource> {
        let path = path.into();
        let size = fs_err::metadata(&path)?.len();
        Ok(FileSource { path, size })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BlobSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn open_at(&self, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut file = fs_err::File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_resets_and_source_reads_from_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let mut sink = FileSink::create(&path).unwrap();
        sink.write(b"garbage").unwrap();
        sink.reset().unwrap();
        sink.write(b"hello ").unwrap();
        sink.write(b"world").unwrap();
        assert_eq!(sink.written(), 11);
        drop(sink.into_file().unwrap());
        let source = FileSource::open(&path).unwrap();
        assert_eq!(source.size(), 11);
        let mut rest = String::new();
        source
            .open_at(6)
            .unwrap()
            .read_to_string(&mut rest)
            .unwrap();
        assert_eq!(rest, "world");

        let bytes = Bytes::from_static(b"hello world");
        let mut rest = Vec::new();
        bytes.open_at(6).unwrap().read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"world");
        assert!(bytes.open_at(12).is_err());
    }
}
