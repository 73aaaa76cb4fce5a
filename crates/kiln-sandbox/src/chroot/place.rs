//! What runc would mount for a run, placed in the root instead, and taken
//! out after it (the module above lists what and how).

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use kiln_fs::{host_path, resolve_in_root};
use rustix::fs::{FileType, Mode};

use crate::error::SandboxError;
use crate::spec::{MountKind, RunSpec};

/// The device nodes of a run's /dev (runc's default devices).
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Cache directories moved into a root: whose turn it is.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    taken: Mutex<HashSet<PathBuf>>,
    freed: Condvar,
}

impl Turns {
    fn take(&self, source: &Path) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        while taken.contains(source) {
            taken = self.freed.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        taken.insert(source.to_path_buf());
    }

    fn give(&self, source: &Path) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.remove(source);
        self.freed.notify_all();
    }
}

/// One thing done to the root, undone in reverse order.
#[derive(Debug)]
enum Undo {
    /// A directory made where a parent was missing: removed if empty.
    Made(PathBuf),
    /// What was at a path, moved to `aside`: moved back.
    SetAside { path: PathBuf, aside: PathBuf },
    /// Something kiln put there: removed.
    Put(PathBuf),
    /// A directory moved in from `source`: moved back.
    MovedIn { path: PathBuf, source: PathBuf },
    /// /dev: every name not in `before` is removed.
    DevNames {
        dev: PathBuf,
        before: HashSet<OsString>,
    },
}

/// What was placed for one run.
pub(crate) struct Placed<'a> {
    root: PathBuf,
    undo: Vec<Undo>,
    turns: &'a Turns,
    aside: PathBuf,
}

impl<'a> Placed<'a> {
    pub(crate) fn place(spec: &RunSpec, turns: &'a Turns) -> Result<Placed<'a>, SandboxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let parent = spec.rootfs.parent().unwrap_or(Path::new("/"));
        let aside = parent.join(format!(
            ".kiln-aside-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut placed = Placed {
            root: spec.rootfs.clone(),
            undo: Vec::new(),
            turns,
            aside,
        };
        match placed.place_all(spec) {
            Ok(()) => Ok(placed),
            Err(e) => {
                let _ = placed.remove();
                Err(e)
            }
        }
    }

    fn place_all(&mut self, spec: &RunSpec) -> Result<(), SandboxError> {
        fs_err::create_dir(&self.aside)?;
        let root = &spec.rootfs;
        // runc's mount points, kept as directories (see runc/mod.rs).
        for top in ["proc", "dev", "sys"] {
            let path = root.join(top);
            if fs_err::symlink_metadata(&path).is_err() {
                fs_err::create_dir(&path)?;
                std::os::unix::fs::chown(&path, Some(0), Some(0))?;
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let dev = host_path(root, &resolve_in_root(root, Path::new("/dev"))?);
        if dev.is_dir() {
            let before = fs_err::read_dir(&dev)?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            self.undo.push(Undo::DevNames {
                dev: dev.clone(),
                before,
            });
            for (name, major, minor) in DEVICES {
                let path = dev.join(name);
                if fs_err::symlink_metadata(&path).is_ok() {
                    continue;
                }
                // Without CAP_MKNOD the step goes without it.
                let _ = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    FileType::CharacterDevice,
                    Mode::from_raw_mode(0o666),
                    rustix::fs::makedev(*major, *minor),
                );
                let _ = fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
            }
            let shm = dev.join("shm");
            if fs_err::symlink_metadata(&shm).is_err() {
                fs_err::create_dir(&shm)?;
                fs_err::set_permissions(&shm, std::fs::Permissions::from_mode(0o1777))?;
            }
        }

        let etc = [
            (
                "/etc/resolv.conf",
                spec.etc.resolv_conf.clone().map(Content::Copy),
            ),
            ("/etc/hosts", spec.etc.hosts.clone().map(Content::Copy)),
            (
                "/etc/hostname",
                spec.etc
                    .hostname
                    .then(|| Content::Text(format!("{}\n", spec.hostname))),
            ),
        ];
        for (path, content) in etc {
            if let Some(content) = content {
                let host = self.make_room(root, Path::new(path))?;
                content.write(&host)?;
                self.undo.push(Undo::Put(host));
            }
        }

        let mut mounts: Vec<_> = spec.mounts.iter().collect();
        mounts.sort_by_key(|m| m.destination.components().count());
        for mount in mounts {
            let host = self.make_room(root, &mount.destination)?;
            match &mount.kind {
                MountKind::Bind { source, readonly } => {
                    let meta = fs_err::metadata(source)?;
                    if meta.is_dir() && !readonly {
                        self.turns.take(source);
                        match std::fs::rename(source, &host) {
                            Ok(()) => {
                                self.undo.push(Undo::MovedIn {
                                    path: host,
                                    source: source.clone(),
                                });
                                continue;
                            }
                            Err(e)
                                if e.raw_os_error()
                                    == Some(rustix::io::Errno::XDEV.raw_os_error()) =>
                            {
                                self.turns.give(source);
                            }
                            Err(e) => {
                                self.turns.give(source);
                                return Err(io::Error::new(
                                    e.kind(),
                                    format!("moving {} into the step: {e}", source.display()),
                                )
                                .into());
                            }
                        }
                    }
                    self.undo.push(Undo::Put(host.clone()));
                    copy_tree(source, &host)?;
                }
                MountKind::Tmpfs { mode, .. } => {
                    self.undo.push(Undo::Put(host.clone()));
                    fs_err::create_dir(&host)?;
                    let mode = mode.unwrap_or(0o1777);
                    fs_err::set_permissions(&host, std::fs::Permissions::from_mode(mode))?;
                }
            }
        }
        Ok(())
    }

    /// Resolves `inside` in the root, makes its missing parents, and sets
    /// aside what is there: returns the free host path.
    fn make_room(&mut self, root: &Path, inside: &Path) -> Result<PathBuf, SandboxError> {
        let resolved = resolve_in_root(root, inside)?;
        let host = host_path(root, &resolved);
        let mut missing = Vec::new();
        let mut dir = host.parent();
        while let Some(d) = dir {
            if d == root || fs_err::symlink_metadata(d).is_ok() {
                break;
            }
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            fs_err::create_dir(&d)?;
            self.undo.push(Undo::Made(d));
        }
        if fs_err::symlink_metadata(&host).is_ok() {
            let aside = self.aside.join(self.undo.len().to_string());
            fs_err::rename(&host, &aside)?;
            self.undo.push(Undo::SetAside {
                path: host.clone(),
                aside,
            });
        }
        Ok(host)
    }

    /// Takes everything out again, in reverse order; the first error is
    /// returned after all of it was tried.
    pub(crate) fn remove(mut self) -> Result<(), SandboxError> {
        let mut first: Option<io::Error> = None;
        while let Some(undo) = self.undo.pop() {
            if let Err(e) = self.undo_one(undo) {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = remove_all(&self.aside) {
            first.get_or_insert(e);
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e.into()),
        }
    }

    /// `path` (under the root) as it is to be reached now that the step
    /// has run: its parent resolved again inside the root. A step may have
    /// made any directory above it a symlink, to `/` or anywhere on the
    /// host (the CVE-2024-23652 class): followed from outside, a removal
    /// would delete the host's files. The step's processes are all gone by
    /// now, so nothing changes between this and the use.
    fn anchored(&self, path: &Path) -> io::Result<PathBuf> {
        let Ok(inside) = path.strip_prefix(&self.root) else {
            return Ok(path.to_path_buf());
        };
        let (Some(parent), Some(name)) = (inside.parent(), inside.file_name()) else {
            return Ok(path.to_path_buf());
        };
        let parent = resolve_in_root(&self.root, &Path::new("/").join(parent))?;
        Ok(host_path(&self.root, &parent).join(name))
    }

    fn undo_one(&self, undo: Undo) -> io::Result<()> {
        let undo = match undo {
            Undo::Made(dir) => Undo::Made(self.anchored(&dir)?),
            Undo::SetAside { path, aside } => Undo::SetAside {
                path: self.anchored(&path)?,
                aside,
            },
            Undo::Put(path) => Undo::Put(self.anchored(&path)?),
            Undo::MovedIn { path, source } => Undo::MovedIn {
                path: self.anchored(&path)?,
                source,
            },
            Undo::DevNames { dev, before } => Undo::DevNames {
                dev: self.anchored(&dev)?,
                before,
            },
        };
        match undo {
            Undo::Made(dir) => match fs_err::remove_dir(&dir) {
                // Something the step put there keeps it.
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
            Undo::SetAside { path, aside } => {
                remove_all(&path)?;
                fs_err::rename(&aside, &path)
            }
            Undo::Put(path) => remove_all(&path),
            Undo::MovedIn { path, source } => {
                let result = if fs_err::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    fs_err::rename(&path, &source)
                } else {
                    // The step removed it: the cache starts empty next time.
                    remove_all(&path).and_then(|()| fs_err::create_dir(&source))
                };
                self.turns.give(&source);
                result
            }
            Undo::DevNames { dev, before } => {
                // Not a directory any more (a symlink the step made): what
                // it leads to is not kiln's to clean.
                if !fs_err::symlink_metadata(&dev).is_ok_and(|m| m.is_dir()) {
                    return Ok(());
                }
                for entry in fs_err::read_dir(&dev)?.flatten() {
                    if !before.contains(&entry.file_name()) {
                        remove_all(&entry.path())?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl Drop for Placed<'_> {
    fn drop(&mut self) {
        while let Some(undo) = self.undo.pop() {
            let _ = self.undo_one(undo);
        }
        let _ = remove_all(&self.aside);
    }
}

enum Content {
    Copy(PathBuf),
    Text(String),
}

impl Content {
    fn write(&self, path: &Path) -> io::Result<()> {
        let bytes = match self {
            Content::Copy(source) => fs_err::read(source)?,
            Content::Text(text) => text.clone().into_bytes(),
        };
        fs_err::write(path, bytes)?;
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o644))
    }
}

/// Copies `src` to the new path `dst`: directories, files, symlinks, with
/// modes, and owners where kiln may set them.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs_err::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(src)?, dst)?;
    } else if meta.is_dir() {
        fs_err::create_dir(dst)?;
        for entry in fs_err::read_dir(src)?.flatten() {
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        fs_err::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if meta.is_file() {
        fs_err::copy(src, dst)?;
    } else {
        // Devices, fifos and sockets are not what a mount source holds.
        return Ok(());
    }
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    Ok(())
}

fn remove_all(path: &Path) -> io::Result<()> {
    match fs_err::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(path),
        Ok(_) => fs_err::remove_file(path),
    }
}
