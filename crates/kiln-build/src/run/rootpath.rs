//! Paths inside a root (a step's root, a stage, the context), resolved as
//! a process chrooted there would see them: containerd's `fs.RootPath`,
//! which BuildKit applies to a mount's `source` and to the working
//! directory.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Gid, Mode, Uid};

use super::error::io_at;

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` inside `root` and returns the host path. Symlinks are
/// followed as if `root` were `/`, `..` never climbs out of it; a missing
/// component ends the resolution and the rest is taken as written.
pub(crate) fn resolve(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(path);
    let mut resolved = PathBuf::new();
    let mut links = 0;
    let mut missing = false;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        if missing {
            resolved = candidate;
            continue;
        }
        let host = root.join(&candidate);
        match fs_err::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other(format!(
                        "{}: too many levels of symbolic links",
                        host.display()
                    )));
                }
                let target = fs_err::read_link(&host)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for (i, part) in components(&target).into_iter().enumerate() {
                    pending.insert(i, part);
                }
            }
            Ok(_) => resolved = candidate,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing = true;
                resolved = candidate;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(root.join(resolved))
}

/// Creates `path` (resolved inside `root`) and its missing parents, each
/// 0755 and owned by `uid:gid`, as BuildKit's runc executor creates a
/// missing working directory (`user.MkdirAllAndChown`). Returns whether
/// anything was created.
pub(crate) fn mkdir_all_owned(root: &Path, path: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    let host = resolve(root, path)?;
    let mut missing = Vec::new();
    let mut at = host.as_path();
    while !at.exists() {
        if at == root {
            break;
        }
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for dir in missing.iter().rev() {
        fs_err::create_dir(dir)?;
        // Explicitly: the umask must not decide the mode.
        rustix::fs::chmod(dir, Mode::from_raw_mode(0o755))
            .map_err(|e| io_at("chmod", dir)(e.into()))?;
        rustix::fs::chown(dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| io_at("chown", dir)(e.into()))?;
    }
    Ok(!missing.is_empty())
}

/// The normal and `..` components of a path (`.` and `/` dropped).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/usr/lib", root.join("lib")).unwrap();
        symlink("../../../../usr", root.join("up")).unwrap();
        assert_eq!(
            resolve(root, Path::new("/lib/x")).unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            resolve(root, Path::new("up/lib")).unwrap(),
            root.join("usr/lib")
        );
        assert_eq!(
            resolve(root, Path::new("/../..")).unwrap(),
            root.to_path_buf()
        );
    }

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
    }
}
