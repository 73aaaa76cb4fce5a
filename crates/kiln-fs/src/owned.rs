//! Directories a process makes for its own temporary files, named after it
//! (`<prefix><pid>-<n>`), so that whoever comes after a crash can tell the
//! ones whose process is gone and remove them.
//!
//! A process is gone when `/proc/<pid>` is. A pid reused since only delays
//! a removal until that process ends; no live process's directory is ever
//! taken for a dead one's.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A directory of this process's, mode 0700 (its contents may be secrets),
/// removed with everything in it when dropped (unless [left](OwnedDir::leave)).
#[derive(Debug)]
pub struct OwnedDir {
    path: PathBuf,
    left: AtomicBool,
}

impl OwnedDir {
    /// Creates `<parent>/<prefix><pid>-<n>` (and `parent` if missing).
    pub fn create(parent: &Path, prefix: &str) -> io::Result<OwnedDir> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        fs_err::create_dir_all(parent)?;
        loop {
            let path = parent.join(format!(
                "{prefix}{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            // 0700 from the start: nobody else can reach what goes in.
            match rustix::fs::mkdir(&path, rustix::fs::Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    // Explicitly too: the umask must not decide.
                    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
                    return Ok(OwnedDir {
                        path,
                        left: AtomicBool::new(false),
                    });
                }
                // Left by an earlier process with our pid.
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => {
                    let e = io::Error::from(e);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", path.display()),
                    ));
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps it when dropped: it goes with the container this process runs
    /// in, or to the sweep of whoever comes after this process ends.
    pub fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
    }

    /// Removes it now, reporting a failure (dropping it ignores them).
    pub fn remove(self) -> io::Result<()> {
        let path = self.path.clone();
        std::mem::forget(self);
        remove_tree(&path)
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        if *self.left.get_mut() {
            return;
        }
        let _ = remove_tree(&self.path);
    }
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs_err::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The directories under `parent` that [`OwnedDir::create`] named with
/// `prefix` for processes that are gone (never this one's), for callers
/// that must undo more than files first (unmount what is mounted there).
pub fn abandoned(parent: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let entries = match fs_err::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|s| s.strip_prefix(prefix))
            .and_then(|s| s.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Removes the [`abandoned`] directories; returns how many.
pub fn sweep(parent: &Path, prefix: &str) -> io::Result<usize> {
    let dead = abandoned(parent, prefix)?;
    for dir in &dead {
        remove_tree(dir)?;
    }
    Ok(dead.len())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_dead_process_dirs_are_swept_and_ours_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = OwnedDir::create(tmp.path(), "run-").unwrap();
        fs_err::write(ours.path().join("f"), "x").unwrap();
        assert_eq!(fs_err::metadata(ours.path()).unwrap().mode() & 0o777, 0o700);
        // A pid above pid_max belongs to nobody.
        let dead = tmp.path().join("run-4194305-0");
        fs_err::create_dir_all(dead.join("sub")).unwrap();
        let other = tmp.path().join("cache-4194305-0");
        fs_err::create_dir(&other).unwrap();
        assert_eq!(abandoned(tmp.path(), "run-").unwrap(), vec![dead.clone()]);
        assert_eq!(sweep(tmp.path(), "run-").unwrap(), 1);
        assert!(!dead.exists() && other.exists() && ours.path().exists());
        let path = ours.path().to_path_buf();
        drop(ours);
        assert!(!path.exists());
        assert_eq!(sweep(&tmp.path().join("missing"), "run-").unwrap(), 0);
    }

    #[test]
    fn names_are_unique_within_the_process() {
        let tmp = tempfile::tempdir().unwrap();
        let a = OwnedDir::create(tmp.path(), "x-").unwrap();
        let b = OwnedDir::create(tmp.path(), "x-").unwrap();
        assert_ne!(a.path(), b.path());
        b.remove().unwrap();
        assert!(a.path().exists());
    }
}
