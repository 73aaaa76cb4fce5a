//! Mount points that do not exist in the root.
//!
//! The kernel mounts only over an existing file or directory, so runc
//! creates missing mount points (/proc on a scratch image, /etc/resolv.conf
//! on most) in the root, and leaves them there: in an overlay root they
//! would land in the upper dir, and so in the layer. BuildKit removes them
//! after the run (`executor/stubs.go`); kiln does the same, but creates them
//! itself before the run, so it knows exactly which ones are its own:
//!
//! - each one is removed only if it is still the same inode and still empty;
//! - the directory it was created in gets its timestamps back, those from
//!   before the run if the step did not change that directory, else those
//!   from its end (so removing the stub does not show as a change either).
//!
//! What cannot be undone: in an overlay root, creating an entry in a
//! directory of a lower layer copies that directory up; it stays in the
//! upper dir with the same contents, owner, mode and times as below.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};

use kiln_fs::resolve_in_root;

/// Whether a mount point must be a directory or a file (a bind mount of a
/// file needs a file to mount over).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StubKind {
    Dir,
    File,
}

/// The stubs of one run, removed by [`Stubs::remove`] (or on drop).
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    /// In creation order: parents before children.
    created: Vec<Created>,
    parents: Vec<Parent>,
}

#[derive(Debug)]
struct Created {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// A directory of the root in which a stub was created.
#[derive(Debug)]
struct Parent {
    path: PathBuf,
    before: Times,
    after_create: Times,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Times {
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Times {
    fn of(path: &Path) -> io::Result<Self> {
        let m = fs_err::symlink_metadata(path)?;
        Ok(Self {
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }

    fn restore(&self, path: &Path) -> io::Result<()> {
        let ts = |(sec, nsec): (i64, i64)| Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        };
        let times = Timestamps {
            last_access: ts(self.atime),
            last_modification: ts(self.mtime),
        };
        utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("restoring times of {}: {e}", path.display()),
            )
        })
    }
}

impl Stubs {
    /// Creates what is missing of each mount point, in the mount order.
    /// A mount point under an earlier one lives in that mount (a tmpfs, a
    /// bind source), not in the root, and is left to runc.
    pub(crate) fn create(root: &Path, points: &[(PathBuf, StubKind)]) -> io::Result<Self> {
        let mut stubs = Self::default();
        let mut earlier: Vec<PathBuf> = Vec::new();
        for (destination, kind) in points {
            let inside = resolve_in_root(root, destination)?;
            if earlier
                .iter()
                .any(|e| inside.starts_with(e) && inside != *e)
            {
                continue;
            }
            earlier.push(inside.clone());
            stubs.create_one(root, &inside, *kind)?;
        }
        Ok(stubs)
    }

    fn create_one(&mut self, root: &Path, inside: &Path, kind: StubKind) -> io::Result<()> {
        let parts: Vec<_> = inside.components().skip(1).collect();
        let mut current = root.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            let parent = current.clone();
            current.push(part);
            match fs_err::symlink_metadata(&current) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let parent_is_ours = self.created.iter().any(|c| c.path == parent);
            let before = (!parent_is_ours).then(|| Times::of(&parent)).transpose()?;
            if i + 1 == parts.len() && kind == StubKind::File {
                fs_err::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&current)?;
            } else {
                fs_err::create_dir(&current)?;
            }
            let meta = fs_err::symlink_metadata(&current)?;
            self.created.push(Created {
                path: current.clone(),
                dev: meta.dev(),
                ino: meta.ino(),
            });
            if let Some(before) = before {
                let after_create = Times::of(&parent)?;
                // One entry per directory: the times from before its first
                // stub, and from after its last.
                match self.parents.iter_mut().find(|p| p.path == parent) {
                    Some(known) => known.after_create = after_create,
                    None => self.parents.push(Parent {
                        path: parent,
                        before,
                        after_create,
                    }),
                }
            }
        }
        Ok(())
    }

    /// Removes the stubs that are still ours and empty, deepest first, and
    /// gives their directories their times back. Best effort: it goes on
    /// after an error and returns the first one.
    pub(crate) fn remove(mut self) -> io::Result<()> {
        self.remove_all()
    }

    fn remove_all(&mut self) -> io::Result<()> {
        let mut first_error = None;
        // Times as the run left them, before removing stubs changes them.
        let at_end: Vec<Option<Times>> = self
            .parents
            .iter()
            .map(|p| Times::of(&p.path).ok())
            .collect();
        for stub in self.created.drain(..).rev() {
            if let Err(e) = remove_if_unused(&stub) {
                first_error.get_or_insert(e);
            }
        }
        for (parent, at_end) in self.parents.drain(..).zip(at_end).rev() {
            let Some(at_end) = at_end else { continue };
            let times = if at_end.mtime == parent.after_create.mtime {
                parent.before
            } else {
                at_end
            };
            if let Err(e) = times.restore(&parent.path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

fn remove_if_unused(stub: &Created) -> io::Result<()> {
    let meta = match fs_err::symlink_metadata(&stub.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if (meta.dev(), meta.ino()) != (stub.dev, stub.ino) {
        return Ok(());
    }
    if meta.is_dir() {
        if fs_err::read_dir(&stub.path)?.next().is_none() {
            fs_err::remove_dir(&stub.path)?;
        }
    } else if meta.is_file() && meta.len() == 0 {
        fs_err::remove_file(&stub.path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn listing(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs_err::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    fn set_old_mtime(path: &Path) {
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        fs_err::File::open(path)
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_modified(old)
                    .set_accessed(old),
            )
            .unwrap();
    }

    #[test]
    fn missing_points_are_created_then_removed_without_trace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir(root.join("etc")).unwrap();
        fs_err::write(root.join("etc/hosts"), "mine").unwrap();
        set_old_mtime(&root.join("etc"));
        set_old_mtime(root);
        let before = (
            Times::of(root).unwrap(),
            Times::of(&root.join("etc")).unwrap(),
        );

        let points = [
            (PathBuf::from("/proc"), StubKind::Dir),
            (PathBuf::from("/dev"), StubKind::Dir),
            (PathBuf::from("/dev/shm"), StubKind::Dir),
            (PathBuf::from("/etc/resolv.conf"), StubKind::File),
            (PathBuf::from("/etc/hosts"), StubKind::File),
            (PathBuf::from("/var/cache/apt"), StubKind::Dir),
        ];
        let stubs = Stubs::create(root, &points).unwrap();
        assert_eq!(
            listing(root),
            [
                "dev",
                "etc",
                "etc/hosts",
                "etc/resolv.conf",
                "proc",
                "var",
                "var/cache",
                "var/cache/apt"
            ]
        );
        // /dev/shm lives in the /dev tmpfs, not in the root.
        assert!(!root.join("dev/shm").exists());

        stubs.remove().unwrap();
        assert_eq!(listing(root), ["etc", "etc/hosts"]);
        assert_eq!(
            fs_err::read_to_string(root.join("etc/hosts")).unwrap(),
            "mine"
        );
        // Listing the tree changed the atimes; the mtimes are as before.
        let after = (
            Times::of(root).unwrap(),
            Times::of(&root.join("etc")).unwrap(),
        );
        assert_eq!(
            (before.0.mtime, before.1.mtime),
            (after.0.mtime, after.1.mtime)
        );
    }

    #[test]
    fn stubs_the_step_used_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let stubs = Stubs::create(root, &[(PathBuf::from("/etc/hosts"), StubKind::File)]).unwrap();
        // The step wrote a file next to the stub: /etc is its now.
        fs_err::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        stubs.remove().unwrap();
        assert_eq!(listing(root), ["etc", "etc/passwd"]);
    }

    #[test]
    fn a_changed_directory_keeps_its_new_times() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir(root.join("etc")).unwrap();
        set_old_mtime(&root.join("etc"));
        let stubs = Stubs::create(root, &[(PathBuf::from("/etc/hosts"), StubKind::File)]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs_err::write(root.join("etc/new"), "").unwrap();
        let at_end = Times::of(&root.join("etc")).unwrap();
        stubs.remove().unwrap();
        assert_eq!(Times::of(&root.join("etc")).unwrap().mtime, at_end.mtime);
    }

    #[test]
    fn symlinked_destinations_are_stubbed_where_they_point() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        let stubs =
            Stubs::create(root, &[(PathBuf::from("/etc/resolv.conf"), StubKind::File)]).unwrap();
        assert!(root.join("run/resolv.conf").is_file());
        drop(stubs);
        assert_eq!(listing(root), ["etc", "etc/resolv.conf"]);
    }
}
