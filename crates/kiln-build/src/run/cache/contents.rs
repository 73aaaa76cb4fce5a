//! What a cache mount holds, in and out of a tar, for the build cache
//! outside the store (`--cache-to ...,mounts=true`, docs/CACHE.md):
//!
//! - [`tree`]: an instance's fingerprint from its metadata alone (names,
//!   types, modes, owners, sizes, inodes, mtimes and ctimes to the
//!   nanosecond), and the bytes of its files. Any write, chmod, rename or
//!   replacement changes a ctime or an inode, so an instance whose
//!   fingerprint is the one noted when its tar was last made (or restored)
//!   still has that tar's diffID, and nothing needs reading.
//! - [`archive`]: an instance as an uncompressed tar in a temporary file,
//!   hashed on the way (its diffID): kiln's layer writer, without overlay
//!   whiteouts, so the same tree gives the same bytes on every machine.
//! - [`fill`]: a tar from a [`CacheSource`] unpacked into a directory no
//!   step sees yet, checked against its diffID.
//!
//! ```text
//! <cache>/<n>.contents      {"tree", "diffID", "size"}: instance n's
//!                           fingerprint when its tar had that diffID
//! ```

use std::collections::HashSet;
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use kiln_image::layer::{self, ExtractOptions, Whiteouts, WriteOptions};
use kiln_image::{Digest, HashingWriter, Sha256};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::super::error::{RunError, io_at};

/// The version of the fingerprint: bump it when what goes in changes, so
/// that old notes stop matching.
const TREE_VERSION: &[u8] = b"kiln-cache-tree-v1";

/// Where the contents of a cache mount come from when a build first takes
/// it and finds it new or empty: a `--cache-from` (the remote cache's
/// implementation). Called from step threads.
pub(crate) trait CacheSource: Send + Sync + std::fmt::Debug {
    /// Whether there are contents for the cache `key` (a directory name
    /// under `cache-mounts/`).
    fn has(&self, key: &str) -> bool;

    /// The contents of `key` as an uncompressed tar; the message says why
    /// not (a blob gone, a registry down).
    fn open(&self, key: &str) -> Result<CacheTar, String>;
}

/// A cache mount's contents as a [`CacheSource`] gives them.
pub(crate) struct CacheTar {
    pub(crate) tar: Box<dyn Read + Send>,
    /// The tar's sha256, checked while it is unpacked.
    pub(crate) diff_id: Digest,
    /// Where it came from, for messages (`cache reg.example/app:cache`).
    pub(crate) from: String,
}

/// An instance's fingerprint and the bytes of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tree {
    pub(crate) fingerprint: Digest,
    /// Bytes of regular files (each inode once): what `du --apparent-size`
    /// counts, what `mounts-max-size` limits.
    pub(crate) size: u64,
}

/// The note kept beside an instance: its tar's diffID, valid while its
/// fingerprint is `tree`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Memo {
    pub(crate) tree: Digest,
    #[serde(rename = "diffID")]
    pub(crate) diff_id: Digest,
    pub(crate) size: u64,
}

/// Walks `dir` (never following a symlink) for its [`Tree`]. A name that
/// goes away during the walk is left out: the fingerprint then differs
/// from any noted one, which only costs a read.
pub(crate) fn tree(dir: &Path) -> Result<Tree, RunError> {
    let top = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at("opening", dir)(e.into()))?;
    let mut hash = Sha256::new();
    field(&mut hash, TREE_VERSION);
    let mut size = 0u64;
    let mut links = HashSet::new();
    let mut stack = vec![frame(dir, top, Vec::new())?];
    while let Some((fd, rel, names)) = stack.last_mut() {
        let Some(name) = names.next() else {
            stack.pop();
            continue;
        };
        let rel = kiln_fs::path::join(rel, &name);
        let path = || dir.join(String::from_utf8_lossy(&rel).as_ref());
        let st = match rustix::fs::statat(&*fd, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_at("inspecting", &path())(e.into()).into()),
        };
        field(&mut hash, &rel);
        let numbers = [
            u64::from(st.st_mode),
            u64::from(st.st_uid),
            u64::from(st.st_gid),
            st.st_size as u64,
            st.st_ino,
            st.st_nlink,
            st.st_rdev,
            st.st_mtime as u64,
            st.st_mtime_nsec as u64,
            st.st_ctime as u64,
            st.st_ctime_nsec as u64,
        ];
        for n in numbers {
            hash.update(&n.to_be_bytes());
        }
        match FileType::from_raw_mode(st.st_mode) {
            // Each inode once.
            FileType::RegularFile if st.st_nlink < 2 || links.insert((st.st_dev, st.st_ino)) => {
                size += st.st_size as u64;
            }
            FileType::Directory => {
                let sub = match rustix::fs::openat(
                    &*fd,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(sub) => sub,
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(io_at("opening", &path())(e.into()).into()),
                };
                let next = frame(&path(), sub, rel)?;
                stack.push(next);
            }
            _ => {}
        }
    }
    Ok(Tree {
        fingerprint: hash.finish(),
        size,
    })
}

type Frame = (OwnedFd, Vec<u8>, std::vec::IntoIter<Vec<u8>>);

fn frame(path: &Path, fd: OwnedFd, rel: Vec<u8>) -> Result<Frame, RunError> {
    let names = kiln_fs::names(&fd).map_err(|e| io_at("reading", path)(e.into()))?;
    Ok((fd, rel, names.into_iter()))
}

/// Length-prefixed, so that no two sequences of names hash alike.
fn field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update(&(bytes.len() as u64).to_be_bytes());
    hash.update(bytes);
}

fn memo_path(cache: &Path, n: u32) -> PathBuf {
    cache.join(format!("{n}.contents"))
}

/// Instance `n`'s note; `None` if it has none or it cannot be read.
pub(crate) fn read_memo(cache: &Path, n: u32) -> Option<Memo> {
    let bytes = fs_err::read(memo_path(cache, n)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Replaces instance `n`'s note (written beside, then renamed: a reader
/// sees the old note or the new one). Call it holding the instance alone.
pub(crate) fn write_memo(cache: &Path, n: u32, memo: &Memo) -> Result<(), RunError> {
    let path = memo_path(cache, n);
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{n}.contents."))
        .tempfile_in(cache)
        .map_err(io_at("creating a file in", cache))?;
    let json = serde_json::to_vec(memo).map_err(io::Error::other)?;
    temp.write_all(&json)
        .map_err(io_at("writing", temp.path()))?;
    temp.persist(&path)
        .map_err(|e| io_at("renaming into place", &path)(e.error))?;
    Ok(())
}

/// `dir` as an uncompressed tar in a temporary file under `scratch` (gone
/// when the file is closed, even after a crash), rewound, with its
/// diffID and length. Sockets are left out, as in a layer; a file named
/// `.wh.*` is refused (every reader would take it for a whiteout).
pub(crate) fn archive(
    dir: &Path,
    id: &str,
    scratch: &Path,
) -> Result<(std::fs::File, Digest, u64), RunError> {
    fs_err::create_dir_all(scratch)?;
    let file =
        tempfile::tempfile_in(scratch).map_err(io_at("creating a temporary file in", scratch))?;
    let mut out = HashingWriter::new(file);
    let mut opts = WriteOptions::default();
    opts.overlay_upper = false;
    layer::write(dir, &mut out, &opts).map_err(|source| RunError::CacheArchive {
        id: id.to_string(),
        source,
    })?;
    let (mut file, diff_id, len) = out.finish();
    file.rewind()
        .map_err(io_at("rewinding the archive of", dir))?;
    Ok((file, diff_id, len))
}

/// Unpacks `tar` into `dir` (empty; files get the owners the tar says when
/// running as root) and reads the result's note. The whole tar is read,
/// so a tar that is not what its diffID says is an error, and `dir` is
/// then the caller's to throw away.
pub(crate) fn fill(tar: CacheTar, dir: &Path) -> Result<Memo, String> {
    let (_, diff_id) = layer::extract_hashed(tar.tar, dir, &ExtractOptions::new(Whiteouts::Apply))
        .map_err(|e| crate::engine::with_causes(&e))?;
    if diff_id != tar.diff_id {
        return Err(format!(
            "its contents are {diff_id}, not the {} the cache names",
            tar.diff_id
        ));
    }
    let tree = tree(dir).map_err(|e| crate::engine::with_causes(&e))?;
    Ok(Memo {
        tree: tree.fingerprint,
        diff_id,
        size: tree.size,
    })
}

/// Whether `dir` has no entries (a missing or unreadable one counts as
/// not empty: it is not ours to fill).
pub(crate) fn is_empty_dir(dir: &Path) -> bool {
    fs_err::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_changes_with_any_write_and_only_then() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs_err::create_dir_all(dir.join("a/b")).unwrap();
        fs_err::write(dir.join("a/b/f"), "12345").unwrap();
        fs_err::write(dir.join("g"), "xy").unwrap();
        std::os::unix::fs::symlink("a/b/f", dir.join("link")).unwrap();
        let first = tree(dir).unwrap();
        assert_eq!(first.size, 7);
        assert_eq!(tree(dir).unwrap(), first, "nothing changed");

        // The same bytes written again still touch the ctime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs_err::write(dir.join("a/b/f"), "12345").unwrap();
        let rewritten = tree(dir).unwrap();
        assert_ne!(rewritten.fingerprint, first.fingerprint);
        assert_eq!(rewritten.size, 7);
        fs_err::hard_link(dir.join("g"), dir.join("h")).unwrap();
        let linked = tree(dir).unwrap();
        assert_ne!(linked.fingerprint, rewritten.fingerprint);
        assert_eq!(linked.size, 7, "a hardlinked file counts once");
    }

    #[test]
    fn an_archive_fills_a_directory_with_the_same_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs_err::create_dir_all(src.join("pip/http")).unwrap();
        fs_err::write(src.join("pip/http/blob"), vec![7u8; 70_000]).unwrap();
        std::os::unix::fs::symlink("http/blob", src.join("pip/latest")).unwrap();
        let (file, diff_id, len) = archive(&src, "pip", tmp.path()).unwrap();
        assert!(len > 70_000);
        let dest = tmp.path().join("dest");
        fs_err::create_dir(&dest).unwrap();
        let memo = fill(
            CacheTar {
                tar: Box::new(file),
                diff_id: diff_id.clone(),
                from: "test".into(),
            },
            &dest,
        )
        .unwrap();
        assert_eq!(memo.diff_id, diff_id);
        assert_eq!(memo.size, 70_000);
        assert_eq!(memo.tree, tree(&dest).unwrap().fingerprint);
        assert_eq!(fs_err::read(dest.join("pip/latest")).unwrap().len(), 70_000);
        // The same tree archives to the same bytes.
        let (_, again, _) = archive(&dest, "pip", tmp.path()).unwrap();
        assert_eq!(again, diff_id);

        // A tar that is not what its diffID says is refused.
        let (file, _, _) = archive(&src, "pip", tmp.path()).unwrap();
        let other = tmp.path().join("other");
        fs_err::create_dir(&other).unwrap();
        let err = fill(
            CacheTar {
                tar: Box::new(file),
                diff_id: Digest::of(b"something else"),
                from: "test".into(),
            },
            &other,
        )
        .unwrap_err();
        assert!(err.contains("not the"), "{err}");
    }

    #[test]
    fn memos_round_trip_and_a_missing_one_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_memo(tmp.path(), 0), None);
        let memo = Memo {
            tree: Digest::of(b"t"),
            diff_id: Digest::of(b"d"),
            size: 3,
        };
        write_memo(tmp.path(), 0, &memo).unwrap();
        assert_eq!(read_memo(tmp.path(), 0), Some(memo));
        let text = fs_err::read_to_string(tmp.path().join("0.contents")).unwrap();
        assert!(text.contains(r#""diffID""#), "{text}");
    }
}
