//! `kiln store verify`: every blob re-hashed, every index entry followed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::document::Descriptor;
use crate::media;
use crate::store::{Store, StoreError, lease, lock::Mode};
use crate::{Digest, HashingReader};

/// What `verify` checked and what it found wrong.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub blobs: usize,
    pub bytes: u64,
    pub tags: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The content does not hash to its name: flipped bits, a truncated
    /// or overwritten file.
    CorruptBlob {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    /// A file under `blobs/sha256` whose name is not a digest.
    StrayFile { path: PathBuf },
    /// Something points at a blob the store does not have.
    MissingBlob {
        digest: Digest,
        referenced_by: String,
    },
    /// A blob's size differs from its descriptor's.
    SizeMismatch {
        digest: Digest,
        path: PathBuf,
        expected: u64,
        actual: u64,
        referenced_by: String,
    },
    /// A manifest or index that does not parse as its media type says.
    BadDocument {
        digest: Digest,
        path: PathBuf,
        reason: String,
    },
    /// The index file itself, or one of its records.
    Index { path: PathBuf, reason: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptBlob {
                path,
                expected,
                actual,
                size,
            } => write!(
                f,
                "{}: content hashes to {actual} ({size} bytes), not {expected}",
                path.display()
            ),
            Problem::StrayFile { path } => {
                write!(
                    f,
                    "{}: not a blob (name is not a sha256 digest)",
                    path.display()
                )
            }
            Problem::MissingBlob {
                digest,
                referenced_by,
            } => write!(f, "{digest}: missing, referenced by {referenced_by}"),
            Problem::SizeMismatch {
                digest,
                path,
                expected,
                actual,
                referenced_by,
            } => write!(
                f,
                "{} ({digest}): {actual} bytes, but {referenced_by} says {expected}",
                path.display()
            ),
            Problem::BadDocument {
                digest,
                path,
                reason,
            } => write!(f, "{} ({digest}): {reason}", path.display()),
            Problem::Index { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

/// Runs under the gc lock (shared): blobs are never deleted while they are
/// checked, and writers carry on.
pub(crate) fn verify(store: &Store) -> Result<VerifyReport, StoreError> {
    let _gc = store.gc_lock(Mode::Shared, "verify")?;
    let mut report = VerifyReport::default();
    let index_path = store.index_path();

    // The index: redb's page checksums, then every record decoded.
    let index = store.with_index("verify", |db| {
        let intact = db.check_integrity()?;
        let records = db.read(|r| {
            Ok((
                r.tags()?,
                r.images()?,
                r.snapshots()?,
                r.cache_entries()?,
                r.all_blob_sources()?,
            ))
        });
        Ok((intact, records))
    });
    let (tags, images, snapshots, cache, sources) = match index {
        Ok((intact, records)) => {
            if !intact {
                report.problems.push(Problem::Index {
                    path: index_path.clone(),
                    reason: "damaged; redb repaired it".to_string(),
                });
            }
            match records {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(Problem::Index {
                        path: index_path.clone(),
                        reason: e.to_string(),
                    });
                    Default::default()
                }
            }
        }
        Err(e @ StoreError::LockTimeout { .. }) => return Err(e),
        Err(e) => {
            report.problems.push(Problem::Index {
                path: index_path.clone(),
                reason: e.to_string(),
            });
            Default::default()
        }
    };
    report.tags = tags.len();

    // Every blob, re-hashed.
    let mut good: HashMap<Digest, u64> = HashMap::new();
    let mut corrupt: HashSet<Digest> = HashSet::new();
    for path in lease::list(&store.blobs_dir())? {
        let Some(expected) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| Digest::from_hex(n).ok())
        else {
            report.problems.push(Problem::StrayFile { path });
            continue;
        };
        let file = match fs_err::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        let mut reader = HashingReader::new(file);
        io::copy(&mut reader, &mut io::sink()).map_err(StoreError::io(&path))?;
        let (_, actual, size) = reader.finish();
        report.blobs += 1;
        report.bytes += size;
        if actual == expected {
            good.insert(expected, size);
        } else {
            report.problems.push(Problem::CorruptBlob {
                path,
                expected: expected.clone(),
                actual,
                size,
            });
            corrupt.insert(expected);
        }
    }

    // Everything the index points at.
    let remote: HashSet<String> = sources.into_iter().map(|(k, _)| k).collect();
    let mut checker = Checker {
        store,
        good: &good,
        corrupt: &corrupt,
        remote: &remote,
        walked: HashSet::new(),
        problems: &mut report.problems,
    };
    for (reference, target) in &tags {
        checker.descriptor(target, &format!("tag {reference}"));
    }
    for (key, record) in &cache {
        let by = format!("cache key {key}");
        if let Some(layer) = &record.layer {
            checker.descriptor(layer, &by);
        }
        if let Some(config) = &record.config {
            checker.digest(config, &by);
        }
    }
    for (chain_id, record) in &snapshots {
        if let Some(layer) = &record.layer {
            checker.digest(layer, &format!("snapshot {chain_id}"));
        }
    }
    for (digest, _) in &images {
        checker.digest(digest, "an image record");
    }
    Ok(report)
}

struct Checker<'a> {
    store: &'a Store,
    good: &'a HashMap<Digest, u64>,
    corrupt: &'a HashSet<Digest>,
    /// Blobs with a known source: a layer among them may be absent (it is
    /// fetched when read).
    remote: &'a HashSet<String>,
    walked: HashSet<Digest>,
    problems: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    /// Whether the blob is there and sound; reports it if not.
    fn digest(&mut self, digest: &Digest, referenced_by: &str) -> bool {
        if self.corrupt.contains(digest) {
            return false; // reported with the blobs
        }
        if !self.good.contains_key(digest) {
            self.problems.push(Problem::MissingBlob {
                digest: digest.clone(),
                referenced_by: referenced_by.to_string(),
            });
            return false;
        }
        true
    }

    fn descriptor(&mut self, d: &Descriptor, referenced_by: &str) {
        if !self.good.contains_key(&d.digest) && !d.urls.is_empty() {
            return; // a foreign layer, fetched from its URLs when needed
        }
        let is_document = media::is_manifest(&d.media_type) || media::is_index(&d.media_type);
        if !self.good.contains_key(&d.digest)
            && !self.corrupt.contains(&d.digest)
            && !is_document
            && self.remote.contains(&d.digest.to_string())
        {
            return; // in a registry, fetched when it is read
        }
        if !self.digest(&d.digest, referenced_by) {
            return;
        }
        let actual = self.good[&d.digest];
        if actual != d.size {
            self.problems.push(Problem::SizeMismatch {
                digest: d.digest.clone(),
                path: self.store.blob_path(&d.digest),
                expected: d.size,
                actual,
                referenced_by: referenced_by.to_string(),
            });
            return;
        }
        if !is_document || !self.walked.insert(d.digest.clone()) {
            return;
        }
        match self.store.read_image(d) {
            Ok(doc) => {
                let by = format!("{} {}", short_kind(&d.media_type), d.digest);
                for child in doc.children() {
                    self.descriptor(child, &by);
                }
            }
            Err(e) => self.problems.push(Problem::BadDocument {
                digest: d.digest.clone(),
                path: self.store.blob_path(&d.digest),
                reason: e.to_string(),
            }),
        }
    }
}

fn short_kind(media_type: &str) -> &'static str {
    if media::is_index(media_type) {
        "index"
    } else {
        "manifest"
    }
}
