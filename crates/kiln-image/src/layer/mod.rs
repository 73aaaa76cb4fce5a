//! The layer codec: a directory diff ⇄ an uncompressed layer tar.
//!
//! - [`extract`] applies a layer tar to a directory, either as an overlayfs
//!   lower dir of its own ([`Whiteouts::Overlay`]) or flattened onto a
//!   root filesystem ([`Whiteouts::Apply`]), through kiln-fs's one
//!   extractor, which is safe against hostile archives: every lookup stays
//!   inside the destination, and no symlink from the archive is followed
//!   when a file is created.
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
mod walk;

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

pub use error::LayerError;
use kiln_fs::tar::{ApplyOptions, Owners};

use crate::Digest;
pub use kiln_fs::tar::{ApplyStats, Collected, Whiteouts};
pub use walk::write;

/// How [`extract`] writes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExtractOptions {
    pub whiteouts: Whiteouts,
    /// Give files the owner and group the layer says (numeric ids). Needs
    /// CAP_CHOWN; without it files belong to the extracting user. Defaults
    /// to whether the process runs as root.
    pub chown: bool,
}

impl ExtractOptions {
    pub fn new(whiteouts: Whiteouts) -> ExtractOptions {
        ExtractOptions {
            whiteouts,
            chown: rustix::process::geteuid().is_root(),
        }
    }
}

/// Applies the uncompressed layer tar read from `reader` to `dest`, which
/// must exist: [`kiln_fs::tar::apply`] with a layer's rules (Docker's:
/// whiteouts as `opts.whiteouts` says, xattrs applied, the layer's `./`
/// entry giving `dest` its metadata, missing parents made along the path as
/// written). No entry can read or write outside `dest`. The whole stream is
/// read, so a hashing reader underneath sees the layer's diffID.
pub fn extract(
    reader: impl Read,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ApplyStats, LayerError> {
    let root =
        kiln_fs::Root::open(dest).map_err(|e| LayerError::io("opening", dest, error::errno(e)))?;
    let mut apply = ApplyOptions::layer(opts.whiteouts);
    apply.owners = if opts.chown {
        Owners::of_archive()
    } else {
        Owners::Unchanged
    };
    Ok(kiln_fs::tar::apply(reader, &root, &apply)?)
}

/// [`extract`] of a layer stream (a decompressing reader, say) read on a
/// thread of its own ([`crate::compress::read_ahead`]: gunzip on one core,
/// the files and the hash on another). Returns what it did and the SHA-256
/// of every byte of the stream, trailing bytes included: the diffID, for
/// the caller to check against the one it expects.
pub fn extract_hashed(
    reader: impl Read + Send,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<(ApplyStats, Digest), LayerError> {
    let (extracted, _) = crate::compress::read_ahead(reader, |stream| {
        let mut hashing = crate::HashingReader::new(stream);
        // Reads to the end of the stream.
        let stats = extract(&mut hashing, dest, opts)?;
        Ok((stats, hashing.finish().1))
    });
    extracted
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
