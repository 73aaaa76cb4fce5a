//! Paths inside a root, resolved as the process inside will see them.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` as seen inside `root` and returns it as an absolute path
/// inside the root (join it to `root` for the host path).
///
/// Symlinks are followed as if `root` were `/`, and `..` never climbs out of
/// it: the rules of runc's `filepath-securejoin`, which runc applies to mount
/// destinations and BuildKit to /etc/passwd. A missing component ends the
/// resolution there; the rest of the path is taken as it is, which is where
/// runc would create it.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(path);
    let mut resolved = PathBuf::from("/");
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
        let host = host_path(root, &candidate);
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
                    resolved = PathBuf::from("/");
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
    Ok(resolved)
}

/// `root` joined with an absolute in-root path.
pub(crate) fn host_path(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
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
    use std::os::unix::fs::symlink;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        fs_err::create_dir_all(dir.path().join("usr/lib")).unwrap();
        dir
    }

    #[test]
    fn plain_paths_stay_as_they_are() {
        let dir = root();
        let got = resolve_in_root(dir.path(), Path::new("/etc/./hosts")).unwrap();
        assert_eq!(got, Path::new("/etc/hosts"));
    }

    #[test]
    fn dot_dot_stops_at_the_root() {
        let dir = root();
        let got = resolve_in_root(dir.path(), Path::new("/../../etc/../../usr")).unwrap();
        assert_eq!(got, Path::new("/usr"));
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let dir = root();
        symlink("/usr/lib", dir.path().join("lib")).unwrap();
        let got = resolve_in_root(dir.path(), Path::new("/lib/x")).unwrap();
        assert_eq!(got, Path::new("/usr/lib/x"));
    }

    #[test]
    fn relative_symlinks_cannot_escape() {
        let dir = root();
        symlink(
            "../../../../run/stub-resolv.conf",
            dir.path().join("etc/resolv.conf"),
        )
        .unwrap();
        let got = resolve_in_root(dir.path(), Path::new("/etc/resolv.conf")).unwrap();
        assert_eq!(got, Path::new("/run/stub-resolv.conf"));
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let dir = root();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(resolve_in_root(dir.path(), Path::new("/a")).is_err());
    }
}
