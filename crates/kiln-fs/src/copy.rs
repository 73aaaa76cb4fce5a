//! Copying file contents without passing them through user space: a
//! reflink (`FICLONE`) shares the source's extents, `copy_file_range(2)`
//! copies inside the kernel (and reflinks too on btrfs and XFS, or copies
//! on the server over NFS). Each falls back to the next when the kernel or
//! the filesystems say no; the last resort is `read`/`write`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::io::Errno;

/// How many bytes went which way: the exporter reports it, and tests use
/// it to show the fast path was taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Shared with the source by a reflink: no data written at all.
    pub cloned: u64,
    /// Copied by `copy_file_range`, never in user space.
    pub in_kernel: u64,
    /// Read and written by this process.
    pub in_userspace: u64,
}

impl CopyStats {
    pub fn total(&self) -> u64 {
        self.cloned + self.in_kernel + self.in_userspace
    }
}

impl std::ops::AddAssign for CopyStats {
    fn add_assign(&mut self, other: CopyStats) {
        self.cloned += other.cloned;
        self.in_kernel += other.in_kernel;
        self.in_userspace += other.in_userspace;
    }
}

/// Whether `fd` is a regular file: `copy_file_range` takes nothing else
/// (a pipe, a terminal or a socket is written to the ordinary way).
pub fn is_regular_file(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file())
}

/// Copies up to `len` bytes of `src`, from `offset`, to `dst` at its
/// current position (which advances; `src`'s does not) with
/// `copy_file_range(2)`. Returns how many bytes it copied: fewer than
/// `len` when the kernel cannot do it here (another filesystem before
/// Linux 5.19's rules allow it, `O_APPEND`, not a regular file, an old
/// kernel) or `src` ends early; the caller copies the rest itself.
/// Other errors (`EIO`, `ENOSPC`) are errors.
pub fn copy_in_kernel(
    src: BorrowedFd<'_>,
    offset: u64,
    dst: BorrowedFd<'_>,
    len: u64,
) -> io::Result<u64> {
    let mut off = offset;
    let mut done = 0;
    while done < len {
        // The kernel copies at most about 2 GiB a call (MAX_RW_COUNT).
        let chunk = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut off), dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            Err(e) if cannot_copy_here(e) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// The errors that mean "not here, not this way" (copy_file_range(2),
/// ioctl_ficlone(2)), after which a user-space copy is still right;
/// a real I/O error would come back from that copy too.
fn cannot_copy_here(e: Errno) -> bool {
    matches!(
        e,
        Errno::XDEV
            | Errno::INVAL
            | Errno::NOSYS
            | Errno::OPNOTSUPP
            | Errno::BADF
            | Errno::PERM
            | Errno::TXTBSY
    )
}

/// Copies `len` bytes of `src` from `offset` into `dst` at its current
/// position: in the kernel when it can, then the rest through user space
/// (`dst` must have nothing buffered: flush a `BufWriter` first, or pass
/// it as `dst` and the file as `dst_fd`). `dst_fd` is `None` to skip the
/// kernel (the output is not a regular file, or the fast path is off).
pub fn copy_range(
    src: &File,
    offset: u64,
    len: u64,
    dst: &mut impl Write,
    dst_fd: Option<BorrowedFd<'_>>,
) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    if let Some(fd) = dst_fd {
        dst.flush()?;
        stats.in_kernel = copy_in_kernel(src.as_fd(), offset, fd, len)?;
    }
    let rest = len - stats.in_kernel;
    if rest > 0 {
        let mut src = src;
        src.seek(SeekFrom::Start(offset + stats.in_kernel))?;
        let copied = io::copy(&mut src.take(rest), dst)?;
        if copied < rest {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("source ended {} bytes early", rest - copied),
            ));
        }
        stats.in_userspace = copied;
    }
    Ok(stats)
}

/// Fills the empty file `dst` with as much of `src` as the kernel will
/// copy: all of it by a reflink where the filesystem shares extents
/// (btrfs, XFS, bcachefs), else by `copy_file_range`; `dst`'s position
/// ends after what was copied, for the caller to write the rest (none,
/// unless the kernel refused). Never a hardlink: the copy may be written
/// to or have its mode changed without touching `src`.
pub fn copy_file_in_kernel(src: &File, dst: &File) -> io::Result<CopyStats> {
    let len = src.metadata()?.len();
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        // FICLONE leaves the position alone: the file is whole now.
        let mut dst = dst;
        dst.seek(SeekFrom::End(0))?;
        return Ok(CopyStats {
            cloned: len,
            ..CopyStats::default()
        });
    }
    Ok(CopyStats {
        in_kernel: copy_in_kernel(src.as_fd(), 0, dst.as_fd(), len)?,
        ..CopyStats::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn contents(mut f: &File) -> Vec<u8> {
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_range_lands_at_the_outputs_position_in_the_kernel() {
        let src = file_with(b"0123456789");
        let mut dst = file_with(b"head:");
        let fd = dst.try_clone().unwrap();
        let stats = copy_range(&src, 3, 4, &mut dst, Some(fd.as_fd())).unwrap();
        assert_eq!(
            stats,
            CopyStats {
                in_kernel: 4,
                ..CopyStats::default()
            }
        );
        // Both positions are where a writer expects them.
        dst.write_all(b":tail").unwrap();
        assert_eq!(contents(&dst), b"head:3456:tail");
    }

    #[test]
    fn buffered_bytes_are_written_before_the_kernel_copies() {
        let src = file_with(b"abcdef");
        let dst = tempfile::tempfile().unwrap();
        let fd = dst.try_clone().unwrap();
        let mut out = io::BufWriter::new(dst);
        out.write_all(b"<").unwrap();
        copy_range(&src, 1, 2, &mut out, Some(fd.as_fd())).unwrap();
        out.write_all(b">").unwrap();
        let dst = out.into_inner().unwrap();
        assert_eq!(contents(&dst), b"<bc>");
    }

    #[test]
    fn without_the_kernel_the_same_bytes_go_through_user_space() {
        let src = file_with(b"0123456789");
        let mut out = b"head:".to_vec();
        let stats = copy_range(&src, 3, 4, &mut out, None).unwrap();
        assert_eq!(stats.in_userspace, 4);
        assert_eq!(stats.in_kernel, 0);
        assert_eq!(out, b"head:3456");
    }

    #[test]
    fn a_pipe_falls_back_to_user_space() {
        // copy_file_range(2) takes regular files only: EINVAL for a pipe.
        let src = file_with(b"0123456789");
        let (mut reader, mut out) = io::pipe().unwrap();
        assert!(!is_regular_file(out.as_fd()));
        let fd = out.try_clone().unwrap();
        let stats = copy_range(&src, 2, 5, &mut out, Some(fd.as_fd())).unwrap();
        assert_eq!(stats.in_userspace, 5);
        drop((out, fd));
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"23456");
    }

    #[test]
    fn an_append_only_output_falls_back_to_user_space() {
        // O_APPEND outputs (`>>`) get EBADF from copy_file_range(2).
        let src = file_with(b"0123456789");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        fs_err::write(&path, b"x").unwrap();
        let mut out = std::fs::OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        let fd = out.try_clone().unwrap();
        let stats = copy_range(&src, 0, 3, &mut out, Some(fd.as_fd())).unwrap();
        assert_eq!((stats.in_kernel, stats.in_userspace), (0, 3));
        assert_eq!(fs_err::read(&path).unwrap(), b"x012");
    }

    #[test]
    fn a_short_source_is_an_error() {
        let src = file_with(b"abc");
        let mut out = Vec::new();
        let err = copy_range(&src, 1, 5, &mut out, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_whole_file_is_cloned_or_copied_in_the_kernel() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let src = file_with(&bytes);
        let mut dst = tempfile::tempfile().unwrap();
        let stats = copy_file_in_kernel(&src, &dst).unwrap();
        assert_eq!(stats.total(), bytes.len() as u64);
        assert_eq!(stats.in_userspace, 0, "{stats:?}");
        // The position is at the end, reflinked or copied.
        dst.write_all(b"!").unwrap();
        assert_eq!(contents(&dst), [&bytes[..], b"!"].concat());
    }
}
