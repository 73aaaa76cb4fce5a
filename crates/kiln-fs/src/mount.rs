//! Finding and removing the mounts a crashed process left.
//!
//! Mounts of a crashed kiln outlive it (a mount belongs to its namespace,
//! not to a process), so they are found in `/proc/self/mountinfo`: proc(5),
//! "/proc/pid/mountinfo", one line per mount, the mount point in field 5,
//! with space, tab, newline and backslash written as octal escapes
//! (`\040`).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::UnmountFlags;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The mount points at or under `dir` (as the kernel spells it: give a
/// canonical path), deepest first: the order to unmount them in.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let text = fs_err::read(MOUNTINFO)?;
    Ok(filter_under(&parse(&text), dir))
}

/// The filesystem holding `path` (give a canonical path): its mount point
/// and type, as mountinfo names them (the deepest mount point above it).
pub fn filesystem_of(path: &Path) -> io::Result<(PathBuf, String)> {
    let text = fs_err::read(MOUNTINFO)?;
    let mut best: Option<(PathBuf, String)> = None;
    for line in text.split(|b| *b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        let Some(point) = fields.get(4) else {
            continue;
        };
        let point = PathBuf::from(OsString::from_vec(unescape(point)));
        // After the optional fields, a lone `-`, then the type.
        let fs_type = fields
            .iter()
            .position(|f| *f == b"-")
            .and_then(|i| fields.get(i + 1))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default();
        let deeper = best
            .as_ref()
            .is_none_or(|(b, _)| point.components().count() >= b.components().count());
        if path.starts_with(&point) && deeper {
            best = Some((point, fs_type));
        }
    }
    best.ok_or_else(|| io::Error::other(format!("no mount holds {}", path.display())))
}

/// Unmounts `target` (not following a final symlink), detaching it if it
/// is busy: clean-up must never leave a mount behind, and a lazy unmount
/// goes once its last user does.
pub fn unmount_or_detach(target: &Path) -> Result<(), Errno> {
    match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
        Err(Errno::BUSY) => rustix::mount::unmount(target, UnmountFlags::DETACH),
        other => other,
    }
}

fn filter_under(points: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = points
        .iter()
        .filter(|p| p.starts_with(dir))
        .cloned()
        .collect();
    // Deepest first; a path mounted over twice is listed twice and needs
    // two unmounts.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// The mount points of a mountinfo text, in its order.
fn parse(text: &[u8]) -> Vec<PathBuf> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .collect()
}

/// Undoes the kernel's `\ooo` escapes (`seq_escape` in fs/proc_namespace.c).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Whether this process lives in a user namespace other than the
/// initial one (a rootless kiln's): there `trusted.*` xattrs cannot be
/// set or read, so an overlay must be mounted with `userxattr` and its
/// lower dirs marked with `user.overlay.*` (overlayfs.rst, "Permission
/// model"). The initial namespace maps every id to itself
/// (user_namespaces(7), "/proc/[pid]/uid_map").
pub fn in_user_namespace() -> bool {
    match fs_err::read_to_string("/proc/self/uid_map") {
        Ok(map) => !is_identity_map(&map),
        // No /proc: nothing here could mount an overlay anyway.
        Err(_) => false,
    }
}

fn is_identity_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| !f.is_empty())
        .collect();
    matches!(lines.as_slice(), [f] if f.as_slice() == ["0", "0", "4294967295"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes_mount_points() {
        let text = b"22 27 0:21 / /proc rw,relatime - proc proc rw\n\
            90 27 0:50 / /var/lib/kiln/active/12-0-a\\040b/root rw - overlay kiln rw,lowerdir=x\n\
            91 90 0:51 / /var/lib/kiln/active/12-0-a\\040b/root/proc rw - proc proc rw\n\
            92 27 0:52 / /var/lib/kiln/activex rw - tmpfs t rw\n";
        let points = parse(text);
        assert_eq!(points[1], Path::new("/var/lib/kiln/active/12-0-a b/root"));
        let under = filter_under(&points, Path::new("/var/lib/kiln/active"));
        assert_eq!(
            under,
            [
                PathBuf::from("/var/lib/kiln/active/12-0-a b/root/proc"),
                PathBuf::from("/var/lib/kiln/active/12-0-a b/root"),
            ]
        );
    }

    #[test]
    fn leaves_other_backslashes() {
        assert_eq!(unescape(br"a\134b\0"), br"a\b\0");
        assert_eq!(unescape(br"tab\011"), b"tab\t");
    }

    #[test]
    fn only_the_whole_identity_map_is_the_initial_namespace() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
        assert!(!is_identity_map(
            "         0       1000          1\n         1     100000      65536\n"
        ));
        assert!(!is_identity_map(""));
    }
}
