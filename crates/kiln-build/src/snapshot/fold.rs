//! Folding a layer unpacked alone onto the tree of the layers below it, so
//! that the tree snapshotter can unpack a chain's layers at once, each
//! into a directory of its own, and still end with the tree that applying
//! them in order ([`Whiteouts::Apply`](kiln_image::layer::Whiteouts))
//! gives.
//!
//! The layer was unpacked with [`Whiteouts::Collect`]: its whiteouts and
//! opaque markers are a list, not names on disk. Folding carries them out
//! on the lower tree first (OCI image spec, layer.md, "Whiteouts": they
//! hide what the layers below hold, never the layer's own entries), then
//! moves the upper tree in by renames: a name only the upper has, or that
//! is not a directory on both sides, is renamed over the lower one (a
//! directory on one side only is replaced whole, as applying does); where
//! both have a directory, the walk goes inside, and the lower directory
//! takes the upper one's metadata if the layer has an entry for it (a
//! directory the unpack made as a missing parent says nothing about it).
//! Only the directories both sides have are walked, so folding a layer of
//! new packages costs a few renames, not a walk of either tree.
//!
//! [`Whiteouts::Collect`]: kiln_image::layer::Whiteouts::Collect

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kiln_fs::xattr;
use kiln_fs::{Errno, Root, is_dir, names, open_child_dir, remove_all, stat_at};
use kiln_image::layer::Collected;
use rustix::fs::{Gid, Mode, Stat, Timespec, Timestamps, Uid};

use super::SnapshotError;

/// Folds the tree `upper` (a layer unpacked alone, which said `collected`)
/// onto `lower`; what is left of `upper` is empty directories.
pub(crate) fn fold(lower: &Path, upper: &Path, collected: &Collected) -> Result<(), SnapshotError> {
    let root = Root::open(lower).map_err(SnapshotError::errno("opening", lower))?;
    let at = |rel: &[u8]| at(lower, rel);
    for path in &collected.whiteouts {
        let (parent, name) = kiln_fs::path::split(path);
        if let Some(dir) =
            real_dir(&root, parent).map_err(SnapshotError::errno("opening", &at(parent)))?
        {
            remove_all(&dir, name).map_err(SnapshotError::errno("removing", &at(path)))?;
        }
    }
    for path in &collected.opaque {
        if let Some(dir) =
            real_dir(&root, path).map_err(SnapshotError::errno("opening", &at(path)))?
        {
            for name in names(&dir).map_err(SnapshotError::errno("reading", &at(path)))? {
                remove_all(&dir, &name).map_err(SnapshotError::errno(
                    "removing",
                    &at(&kiln_fs::path::join(path, &name)),
                ))?;
            }
        }
    }
    let explicit: HashSet<&[u8]> = collected.dirs.iter().map(Vec::as_slice).collect();
    let merge = Merge {
        lower,
        upper,
        explicit: &explicit,
    };
    let open = |path: &Path| {
        rustix::fs::open(
            path,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(SnapshotError::errno("opening", path))
    };
    let (u, l) = (open(upper)?, open(lower)?);
    // Before the renames out of it change its times.
    let st = rustix::fs::fstat(&u).map_err(SnapshotError::errno("inspecting", upper))?;
    merge.dir(&u, &l, b"")?;
    if explicit.contains(&b""[..]) {
        merge.meta(&u, &st, &l, b"")?;
    }
    Ok(())
}

/// The directory `rel` of the lower tree if it is one, reached without a
/// symlink: a whiteout is about the path it spells, as applying reads it.
fn real_dir(root: &Root, rel: &[u8]) -> Result<Option<OwnedFd>, Errno> {
    match root.open_dir_no_symlinks(rel) {
        Ok(dir) => Ok(Some(dir)),
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => Ok(None),
        Err(e) => Err(e),
    }
}

struct Merge<'a> {
    lower: &'a Path,
    upper: &'a Path,
    explicit: &'a HashSet<&'a [u8]>,
}

impl Merge<'_> {
    /// Moves the upper directory `rel` (open as `u`) into the lower one
    /// (`l`).
    fn dir(&self, u: &OwnedFd, l: &OwnedFd, rel: &[u8]) -> Result<(), SnapshotError> {
        let upper_names =
            names(u).map_err(SnapshotError::errno("reading", &at(self.upper, rel)))?;
        for name in upper_names {
            let child = kiln_fs::path::join(rel, &name);
            let ust = stat_at(u, &name)
                .map_err(SnapshotError::errno("inspecting", &at(self.upper, &child)))?
                .ok_or_else(|| gone(&at(self.upper, &child)))?;
            let lst = stat_at(l, &name)
                .map_err(SnapshotError::errno("inspecting", &at(self.lower, &child)))?;
            match lst {
                Some(lst) if is_dir(&ust) && is_dir(&lst) => {
                    let open = |dir: &OwnedFd, base: &Path| {
                        open_child_dir(dir, &name)
                            .map_err(SnapshotError::errno("opening", &at(base, &child)))
                    };
                    let (uc, lc) = (open(u, self.upper)?, open(l, self.lower)?);
                    self.dir(&uc, &lc, &child)?;
                    if self.explicit.contains(child.as_slice()) {
                        // `ust`: taken before the renames out of it.
                        self.meta(&uc, &ust, &lc, &child)?;
                    }
                }
                other => {
                    // rename(2) replaces a non-directory, or an empty
                    // directory by a directory; a directory on one side
                    // only is replaced whole, as applying replaces it.
                    if other.is_some_and(|lst| is_dir(&lst) || is_dir(&ust)) {
                        remove_all(l, &name)
                            .map_err(SnapshotError::errno("replacing", &at(self.lower, &child)))?;
                    }
                    rustix::fs::renameat(u, &name, l, &name)
                        .map_err(SnapshotError::errno("moving", &at(self.upper, &child)))?;
                }
            }
        }
        Ok(())
    }

    /// Gives the lower directory `rel` what the layer's entry gave the upper
    /// one: its owner (as root), mode, xattrs (added, as applying adds
    /// them) and times, the times last since the renames into it changed
    /// them; `st` is the upper one's as the unpack left it.
    fn meta(&self, u: &OwnedFd, st: &Stat, l: &OwnedFd, rel: &[u8]) -> Result<(), SnapshotError> {
        let path = at(self.lower, rel);
        if rustix::process::geteuid().is_root() {
            rustix::fs::fchown(
                l,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(SnapshotError::errno("changing the owner of", &path))?;
        }
        // After the owner: chown(2) may clear set-id bits.
        rustix::fs::fchmod(l, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(SnapshotError::errno("changing the mode of", &path))?;
        let xattrs = xattr::read_fd(u, xattr::in_layer).map_err(SnapshotError::errno(
            "reading the xattrs of",
            &at(self.upper, rel),
        ))?;
        for (name, value) in xattrs {
            match xattr::set_fd(l.as_fd(), &name, &value) {
                Ok(()) => {}
                // What the unpack could set, this process can; a refusal
                // is what applying skips too.
                Err(e) if xattr::refused(e) => {}
                Err(e) => return Err(SnapshotError::errno("setting an xattr of", &path)(e)),
            }
        }
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rustix::fs::futimens(l, &times).map_err(SnapshotError::errno("setting the times of", &path))
    }
}

fn at(base: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(OsStr::from_bytes(rel))
    }
}

fn gone(path: &Path) -> SnapshotError {
    SnapshotError::errno("inspecting", path)(Errno::NOENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    use kiln_fs::tar::{EntryHeader, Kind, TarWriter};
    use kiln_image::layer::{self, ExtractOptions, Whiteouts};

    use super::*;

    /// Archive times; a directory with a later mtime was made by the unpack
    /// itself (a missing parent), at whatever time it ran.
    const T: i64 = 1_600_000_000;

    struct E {
        path: &'static str,
        kind: Kind,
        link: &'static str,
        mode: u32,
        uid: u64,
        data: &'static str,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    }

    fn e(path: &'static str, kind: Kind) -> E {
        let mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
        E {
            path,
            kind,
            link: "",
            mode,
            uid: 0,
            data: "",
            xattrs: Vec::new(),
        }
    }
    fn dir(path: &'static str) -> E {
        e(path, Kind::Dir)
    }
    fn file(path: &'static str, data: &'static str) -> E {
        E {
            data,
            ..e(path, Kind::File)
        }
    }
    fn symlink(path: &'static str, to: &'static str) -> E {
        E {
            link: to,
            ..e(path, Kind::Symlink)
        }
    }
    fn hardlink(path: &'static str, to: &'static str) -> E {
        E {
            link: to,
            ..e(path, Kind::Link)
        }
    }

    fn tar(entries: &[E]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (i, x) in entries.iter().enumerate() {
            w.append(&EntryHeader {
                path: x.path.as_bytes(),
                kind: x.kind,
                link: x.link.as_bytes(),
                mode: x.mode,
                uid: x.uid,
                gid: x.uid,
                mtime: T + i as i64,
                size: x.data.len() as u64,
                dev_major: 0,
                dev_minor: 0,
                xattrs: &x.xattrs,
            })
            .unwrap();
            if !x.data.is_empty() {
                w.write_data(x.data.as_bytes()).unwrap();
                w.end_data(x.data.len() as u64).unwrap();
            }
        }
        w.finish().unwrap().0
    }

    /// Three layers that replace, hide and re-make names across layers:
    /// whiteouts of files and directories, opaque directories, one through
    /// a symlink (which hides nothing), directories over files and back,
    /// hardlinks split by a later layer, a directory's metadata and xattrs
    /// changed by an entry over it, missing parents made by the unpack.
    fn layers() -> Vec<Vec<u8>> {
        let xattr =
            |name: &str, value: &str| vec![(name.as_bytes().to_vec(), value.as_bytes().to_vec())];
        let base = tar(&[
            dir("./"),
            dir("a/"),
            file("a/keep", "k"),
            file("a/gone", "g"),
            dir("a/sub/"),
            file("a/sub/x", "x"),
            dir("b/"),
            file("b/y", "y"),
            dir("b/z/"),
            file("b/z/w", "w"),
            symlink("c", "a"),
            file("d", "d"),
            file("h1", "h"),
            hardlink("h2", "h1"),
            E {
                xattrs: xattr("user.one", "1"),
                ..dir("e/")
            },
            file("e/old", "o"),
        ]);
        let middle = tar(&[
            e("a/.wh.gone", Kind::File),
            E {
                mode: 0o750,
                uid: 5,
                ..dir("b/")
            },
            e("b/.wh..wh..opq", Kind::File),
            file("b/new", "n"),
            e("c/.wh.keep", Kind::File),
            dir("d/"),
            file("d/f", "f"),
            E {
                mode: 0o700,
                uid: 7,
                xattrs: xattr("user.two", "2"),
                ..dir("e/")
            },
            file("e/new", "n"),
            file("f/g/h", "deep"),
            file("h1", "H"),
            file("a/sub", "now a file"),
        ]);
        let top = tar(&[
            E {
                mode: 0o700,
                ..dir("./")
            },
            e(".wh.d", Kind::File),
            e("b/.wh.new", Kind::File),
            e("e/.wh.old", Kind::File),
            dir("a/sub/"),
            file("a/sub/y", "y"),
            e("f/.wh..wh..opq", Kind::File),
            file("f/again", "a"),
            file("i1", "i"),
            hardlink("i2", "i1"),
        ]);
        vec![base, middle, top]
    }

    /// A tree as `path → kind, mode, owner, links, xattrs, mtime, data`.
    fn describe(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            let me = fs_err::symlink_metadata(dir).unwrap();
            let rel = dir
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let xattrs =
                xattr::read_path(dir.as_os_str().as_bytes(), |n| n.starts_with(b"user.")).unwrap();
            let xattrs: Vec<String> = xattrs
                .iter()
                .map(|(n, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect();
            let mtime = if me.mtime() < T + 1_000 {
                me.mtime()
            } else {
                0
            };
            out.insert(
                format!("{rel}/"),
                format!(
                    "{:o} {}:{} {xattrs:?} {mtime}",
                    me.mode(),
                    me.uid(),
                    me.gid()
                ),
            );
            for entry in fs_err::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let m = fs_err::symlink_metadata(&path).unwrap();
                if m.is_dir() {
                    walk(root, &path, out);
                    continue;
                }
                let data = if m.file_type().is_symlink() {
                    format!("-> {}", fs_err::read_link(&path).unwrap().display())
                } else {
                    fs_err::read_to_string(&path).unwrap()
                };
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(
                    rel,
                    format!(
                        "{:o} {}:{} n{} {} {data}",
                        m.mode(),
                        m.uid(),
                        m.gid(),
                        m.nlink(),
                        m.mtime()
                    ),
                );
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    #[test]
    fn folding_layers_unpacked_alone_gives_the_tree_applying_them_in_order_does() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = layers();

        let in_order = tmp.path().join("in-order");
        fs_err::create_dir(&in_order).unwrap();
        for l in &layers {
            layer::extract(&l[..], &in_order, &ExtractOptions::new(Whiteouts::Apply)).unwrap();
        }

        let mut dirs = Vec::new();
        let mut collected = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let dir = tmp.path().join(format!("alone-{i}"));
            fs_err::create_dir(&dir).unwrap();
            let stats =
                layer::extract(&l[..], &dir, &ExtractOptions::new(Whiteouts::Collect)).unwrap();
            collected.push(stats.collected);
            dirs.push(dir);
        }
        assert_eq!(
            collected[1].whiteouts,
            [b"a/gone".to_vec(), b"c/keep".to_vec()]
        );
        assert_eq!(collected[1].opaque, [b"b".to_vec()]);
        assert!(collected[1].dirs.contains(&b"e".to_vec()));
        assert!(
            !collected[1].dirs.contains(&b"f".to_vec()),
            "f is a missing parent"
        );
        for (upper, c) in dirs.iter().zip(&collected).skip(1) {
            fold(&dirs[0], upper, c).unwrap();
        }

        let want = describe(&in_order);
        assert_eq!(describe(&dirs[0]), want);
        // The cases are there: what each layer hid is gone, what it
        // could not reach is not.
        assert!(want.contains_key("a/keep") && !want.contains_key("a/gone"));
        assert!(
            !want.contains_key("b/y") && !want.contains_key("b/new") && !want.contains_key("d/")
        );
        assert!(want["h2"].ends_with(" h") && want["h1"].ends_with(" H"));
        assert!(want["i2"].contains(" n2 "));
        assert!(want["e/"].contains("user.one") && want["e/"].contains("user.two"));
        for upper in &dirs[1..] {
            let left: Vec<_> = walkdir(upper).into_iter().filter(|p| !p.is_dir()).collect();
            assert_eq!(
                left,
                Vec::<PathBuf>::new(),
                "only directories are left in {}",
                upper.display()
            );
        }
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if fs_err::symlink_metadata(&path).unwrap().is_dir() {
                out.extend(walkdir(&path));
            }
            out.push(path);
        }
        out
    }
}
