//! What a copy did.

/// Counts of what [`copy_sources`](super::copy_sources) wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyStats {
    /// Entries written (files, directories, links, special files), archive
    /// entries included; directories that already existed and were merged
    /// into count too.
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Names written as hardlinks to a file written before in the same
    /// source (or the same archive).
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Local archives extracted (`ADD`).
    pub archives: u64,
    /// Xattrs the destination refused, which BuildKit skips too.
    pub xattrs_skipped: u64,
}
