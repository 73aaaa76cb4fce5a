//! Paths inside a root (a step's root, a stage, the context), resolved as
//! a process chrooted there would see them: containerd's `fs.RootPath`,
//! which BuildKit applies to a mount's `source` and to the working
//! directory. The resolution is kiln-fs's.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kiln_fs::{NewDir, Owner, Root};

/// Resolves `path` inside `root` and returns the host path. Symlinks are
/// followed as if `root` were `/`, `..` never climbs out of it; a missing
/// component is taken as written.
pub(crate) fn resolve(root: &Path, path: &Path) -> io::Result<PathBuf> {
    Ok(kiln_fs::host_path(
        root,
        &kiln_fs::resolve_in_root(root, path)?,
    ))
}

/// The directory `path` inside `root`, resolved as [`resolve`] does,
/// created with its missing parents (0755, kiln's) if need be, and opened:
/// the descriptor stays that directory whatever later happens to the names
/// on its way, where a path checked now and used later could meet a
/// symlink to the host swapped in meanwhile by a parallel step
/// (CVE-2024-23651). Also returns the host path the directory had.
///
/// A name that changes between the resolution and the opening (a
/// directory found, then gone or a symlink leading nowhere) is looked up
/// again, waiting a little longer each time (half a second in all): only
/// a step renaming it all that while makes this fail, and then with the
/// error, never with another directory. (A rename by `mv` in a parallel
/// step leaves the name missing for as long as that step takes to start
/// its next command: retries without a pause all fell in that gap.)
pub(crate) fn open_dir_made(root: &Path, path: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    let at = |e: kiln_fs::Errno| {
        let e = io::Error::from(e);
        let shown = kiln_fs::host_path(root, path);
        io::Error::new(e.kind(), format!("{}: {e}", shown.display()))
    };
    let tree = Root::open(root).map_err(at)?;
    let mut tries = 0;
    loop {
        let rel = tree.resolve(path.as_os_str().as_bytes()).map_err(at)?;
        match tree.make_dir_all(&rel, &NewDir::default()) {
            Ok(dir) => return Ok((dir, tree.host(&rel))),
            Err(kiln_fs::Errno::NOENT | kiln_fs::Errno::NOTDIR) if tries < 30 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(tries));
            }
            Err(e) => return Err(at(e)),
        }
    }
}

/// Creates `path` (resolved inside `root`) and its missing parents, each
/// 0755 and owned by `uid:gid`, as BuildKit's runc executor creates a
/// missing working directory (`user.MkdirAllAndChown`). Returns whether
/// anything was created.
pub(crate) fn mkdir_all_owned(root: &Path, path: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    let at = |e: kiln_fs::Errno| {
        let e = io::Error::from(e);
        let shown = kiln_fs::host_path(root, path);
        io::Error::new(e.kind(), format!("{}: {e}", shown.display()))
    };
    let tree = Root::open(root).map_err(at)?;
    let rel = tree.resolve(path.as_os_str().as_bytes()).map_err(at)?;
    if tree.lstat(&rel).map_err(at)?.is_some() {
        return Ok(false);
    }
    let new = NewDir {
        owner: Some(Owner { uid, gid }),
        ..NewDir::default()
    };
    tree.make_dir_all(&rel, &new).map_err(at)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn missing_directories_are_made_with_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("srv")).unwrap();
        symlink("/srv", root.join("data")).unwrap();
        assert!(mkdir_all_owned(root, Path::new("/data/app/sub"), 1000, 1000).unwrap());
        let made = fs_err::metadata(root.join("srv/app/sub")).unwrap();
        assert_eq!(
            (made.uid(), made.gid(), made.mode() & 0o7777),
            (1000, 1000, 0o755)
        );
        let parent = fs_err::metadata(root.join("srv/app")).unwrap();
        assert_eq!(parent.uid(), 1000);
        assert!(!mkdir_all_owned(root, Path::new("/data/app/sub"), 0, 0).unwrap());
        assert_eq!(
            resolve(root, Path::new("/data/../data/app")).unwrap(),
            root.join("srv/app")
        );
    }
}
