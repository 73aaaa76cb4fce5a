//! How full a filesystem is, for errors that say which one ran out.

use std::io;
use std::path::{Path, PathBuf};

/// The filesystem holding a path, and its space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// Bytes in all.
    pub total: u64,
    /// Bytes an unprivileged writer may still use.
    pub available: u64,
}

impl Space {
    /// Reads it for `path` (which must exist; symlinks are followed).
    pub fn of(path: &Path) -> io::Result<Space> {
        let stat = rustix::fs::statvfs(path).map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        })?;
        let canonical = fs_err::canonicalize(path)?;
        let (mount_point, fs_type) = crate::mount::filesystem_of(&canonical)?;
        Ok(Space {
            mount_point,
            fs_type,
            total: stat.f_blocks.saturating_mul(stat.f_frsize),
            available: stat.f_bavail.saturating_mul(stat.f_frsize),
        })
    }

    /// Less than 1% or 8 MiB left, whichever is more: what a writer that
    /// just failed on it most likely ran into.
    pub fn nearly_full(&self) -> bool {
        self.available < (self.total / 100).max(8 << 20)
    }

    /// `/mnt (ext4, 1.0 GiB, 2.0 MiB free)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {}, {} free)",
            self.mount_point.display(),
            self.fs_type,
            human_bytes(self.total),
            human_bytes(self.available)
        )
    }
}

/// A size as people read it: `1.5 MiB`, `312 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_filesystem_is_found_and_described() {
        let space = Space::of(Path::new("/")).unwrap();
        assert_eq!(space.mount_point, Path::new("/"));
        assert!(!space.fs_type.is_empty());
        assert!(space.total >= space.available);
        assert!(space.describe().starts_with("/ ("), "{}", space.describe());
    }

    #[test]
    fn a_path_is_on_its_deepest_mount() {
        // /proc is a mount of its own wherever kiln runs.
        let space = Space::of(Path::new("/proc/self")).unwrap();
        assert_eq!(space.mount_point, Path::new("/proc"));
        assert_eq!(space.fs_type, "proc");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(312), "312 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(48 << 20), "48.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        let full = Space {
            mount_point: PathBuf::from("/m"),
            fs_type: "tmpfs".into(),
            total: 48 << 20,
            available: 1 << 20,
        };
        assert!(full.nearly_full());
        assert_eq!(full.describe(), "/m (tmpfs, 48.0 MiB, 1.0 MiB free)");
        let roomy = Space {
            available: 40 << 20,
            ..full
        };
        assert!(!roomy.nearly_full());
    }
}
