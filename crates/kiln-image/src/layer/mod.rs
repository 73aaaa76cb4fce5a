//! The layer codec: a directory diff ⇄ an uncompressed layer tar.
//!
//! - [`extract`] applies a layer tar to a directory, either as an overlayfs
//!   lower dir of its own ([`WhiteoutMode::Overlay`]) or flattened onto a
//!   root filesystem ([`WhiteoutMode::Apply`]). It is safe against hostile
//!   archives: every lookup is resolved by the kernel inside the
//!   destination (`openat2(RESOLVE_IN_ROOT)`), and no symlink from the
//!   archive is followed when a file is created.
//! - [`write`] turns a directory (an overlay upper dir after a step) into a
//!   layer tar whose bytes depend only on the tree: the same tree gives the
//!   same diffID on every machine.
//!
//! Compression and the digests of the blob are [`crate::compress`]'s.
//!
//! ```no_run
//! use kiln_image::compress::{BlobWriter, CompressOptions};
//! use kiln_image::layer::{self, WriteOptions};
//! use kiln_image::media::Compression;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upper dir after a step → a gzip blob, in one pass.
//! let out = fs_err::File::create("/var/lib/kiln/ingest/blob")?;
//! let mut blob = BlobWriter::new(out, &CompressOptions::new(Compression::Gzip))?;
//! layer::write("/var/lib/kiln/upper".as_ref(), &mut blob, &WriteOptions::default())?;
//! let (_file, info) = blob.finish()?;
//! println!("diffID {} digest {} ({} bytes)", info.diff_id, info.digest, info.size);
//! # Ok(()) }
//! ```

mod error;
mod extract;
mod path;
mod root;
mod tar;
mod walk;
mod whiteout;
mod xattr;

use std::collections::HashSet;
use std::sync::Arc;

pub use error::LayerError;
pub use extract::extract;
pub use walk::write;

/// How whiteouts in a layer are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhiteoutMode {
    /// Keep them, in overlayfs's format: `.wh.NAME` becomes a character
    /// device 0/0 named `NAME`, `.wh..wh..opq` becomes the xattr
    /// `trusted.overlay.opaque=y` on its directory. For a layer unpacked into
    /// a directory of its own and stacked as an overlay lower dir.
    Overlay,
    /// Carry them out: delete from the destination what they name. For
    /// flattening layers, in order, into one root filesystem.
    Apply,
}

/// How [`extract`] writes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExtractOptions {
    pub whiteouts: WhiteoutMode,
    /// Give files the owner and group the layer says (numeric ids). Needs
    /// CAP_CHOWN; without it files belong to the extracting user. Defaults
    /// to whether the process runs as root.
    pub chown: bool,
}

impl ExtractOptions {
    pub fn new(whiteouts: WhiteoutMode) -> ExtractOptions {
        ExtractOptions {
            whiteouts,
            chown: rustix::process::geteuid().is_root(),
        }
    }
}

/// What [`extract`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExtractStats {
    /// Entries created or updated (whiteouts not included).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    /// `.wh.NAME` entries.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaque_dirs: u64,
    /// Paths deleted by whiteouts ([`WhiteoutMode::Apply`]).
    pub removed: u64,
    /// Xattrs the destination refused (EPERM, EOPNOTSUPP), as Docker skips
    /// them.
    pub xattrs_skipped: u64,
    /// Bytes of file content written (sparse holes not included).
    pub bytes: u64,
    /// Bytes of tar read.
    pub tar_bytes: u64,
}

/// How [`write`] archives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Clamp every mtime to at most this time (seconds since the epoch):
    /// the value of SOURCE_DATE_EPOCH, which the caller reads and validates
    /// (reproducible-builds.org/specs/source-date-epoch).
    pub epoch: Option<i64>,
    /// The directory is an overlayfs upper dir: its whiteout devices and
    /// opaque directories become OCI whiteouts. On by default.
    pub overlay_upper: bool,
    /// Names (relative to the directory, as in the archive but without a
    /// directory's trailing `/`; for a whiteout device, the name it hides)
    /// left out of the layer, with everything under them. For a differ
    /// that knows an entry of an upper dir is no change (a directory
    /// overlayfs copied up but nothing changed). Empty by default.
    pub exclude: Arc<HashSet<Vec<u8>>>,
}

impl Default for WriteOptions {
    fn default() -> WriteOptions {
        WriteOptions {
            epoch: None,
            overlay_upper: true,
            exclude: Arc::default(),
        }
    }
}

/// Whether [`write`] puts the xattr `name` into a layer (file capabilities,
/// POSIX ACLs, `user.*`, `trusted.*` other than overlayfs's own): what a
/// differ must compare to know whether two entries archive the same.
pub fn keeps_xattr(name: &[u8]) -> bool {
    xattr::keep_on_write(name)
}

/// What [`write`] archived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerStats {
    /// Tar entries written (PAX headers not counted).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub fifos: u64,
    /// Overlay whiteout devices written as `.wh.NAME`.
    pub whiteouts: u64,
    /// Opaque directories written with `.wh..wh..opq`.
    pub opaque_dirs: u64,
    /// Sockets, which a tar cannot hold (Docker skips them too).
    pub sockets_skipped: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Bytes of tar written.
    pub tar_bytes: u64,
}
