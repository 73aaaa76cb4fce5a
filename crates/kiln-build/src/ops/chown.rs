//! `--chown`: `user[:group]` → numeric ids, with BuildKit's rules.
//!
//! These are not `USER`'s rules. BuildKit's client splits the value at the
//! first `:` (`llb.WithUser` in `client/llb/fileop.go`); each part that is
//! `root` or a decimal number is an id, anything else a name. The file op
//! then resolves (`readUser` in `solver/llbsolver/file/user_linux.go`):
//!
//! - a numeric user gives uid = gid = that number (`--chown=1000` is
//!   1000:1000, not the passwd entry's group);
//! - a user name gives the uid and primary gid of its /etc/passwd entry in
//!   the destination root;
//! - a numeric group replaces the gid; a group name is looked up in the
//!   destination's /etc/group;
//! - `user:` (empty group) is group 0, as BuildKit's empty name marshals to
//!   id 0.
//!
//! A name the files do not have is what BuildKit makes of it (Docker 26,
//! checked by the conformance suite): `readUser` leaves the id where it
//! was, so an unknown user gives root (0:0) and an unknown group keeps the
//! user's gid (`--chown=1000:nobody` is 1000:1000 without a `nobody`
//! group). Only a root without the file at all (scratch) is an error
//! (BuildKit: "invalid user index: -1"). The lookup itself is
//! [`kiln_sandbox::resolve_user`]'s, which reads the files through
//! symlinks inside the root as BuildKit's `fs.RootPath` does.

use std::path::Path;

use kiln_sandbox::SandboxError;

use super::error::CopyError;

/// A numeric owner for copied files.
pub use kiln_fs::Owner;

/// Resolves a `--chown` value against the destination root's /etc/passwd
/// and /etc/group (see the module doc for the rules).
pub fn resolve_chown(dest_root: &Path, spec: &str) -> Result<Owner, CopyError> {
    let err = |source| CopyError::Chown {
        spec: spec.to_owned(),
        source,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // Whether the file a lookup read exists in the root.
    let exists = |p: &Path| dest_root.join(p.strip_prefix("/").unwrap_or(p)).exists();
    let mut owner = match parse_id(user) {
        Some(id) => Owner { uid: id, gid: id },
        // A name: its passwd entry's uid and primary group.
        None => match kiln_sandbox::resolve_user(dest_root, user) {
            Ok(u) => Owner {
                uid: u.uid,
                gid: u.gid,
            },
            Err(SandboxError::NoSuchUser { passwd, .. }) if exists(&passwd) => Owner::ROOT,
            Err(e) => return Err(err(e)),
        },
    };
    match group {
        None => {}
        Some("") => owner.gid = 0,
        Some(g) => match parse_id(g) {
            Some(id) => owner.gid = id,
            // uid 0 needs no passwd entry: this reads /etc/group alone.
            None => match kiln_sandbox::resolve_user(dest_root, &format!("0:{g}")) {
                Ok(u) => owner.gid = u.gid,
                Err(SandboxError::NoSuchGroup { group, .. }) if exists(&group) => {}
                Err(e) => return Err(err(e)),
            },
        },
    }
    Ok(owner)
}

/// BuildKit's `parseUID`: `root`, or a decimal that fits in 32 signed bits
/// (negative values are refused here: they would wrap to ids like
/// 4294967295, which chown(2) reads as "leave unchanged").
fn parse_id(s: &str) -> Option<u32> {
    if s == "root" {
        return Some(0);
    }
    s.parse::<i32>().ok().and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        fs_err::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs_err::write(
            dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1001:\n",
        )
        .unwrap();
        dir
    }

    fn owner(uid: u32, gid: u32) -> Owner {
        Owner { uid, gid }
    }

    #[test]
    fn buildkit_rules() {
        let dir = root();
        let r = |s| resolve_chown(dir.path(), s).unwrap();
        assert_eq!(r("1000"), owner(1000, 1000));
        assert_eq!(r("33:44"), owner(33, 44));
        assert_eq!(r("root"), owner(0, 0));
        assert_eq!(r("root:5"), owner(0, 5));
        assert_eq!(r("5:root"), owner(5, 0));
        assert_eq!(r("app"), owner(1000, 1001));
        assert_eq!(r("app:staff"), owner(1000, 50));
        assert_eq!(r("app:7"), owner(1000, 7));
        assert_eq!(r("7:staff"), owner(7, 50));
        assert_eq!(r("app:"), owner(1000, 0));
    }

    #[test]
    fn unknown_names_fall_back_as_in_buildkit() {
        let dir = root();
        assert_eq!(resolve_chown(dir.path(), "ghost").unwrap(), owner(0, 0));
        assert_eq!(
            resolve_chown(dir.path(), "app:ghosts").unwrap(),
            owner(1000, 1001)
        );
        assert_eq!(
            resolve_chown(dir.path(), "1000:ghosts").unwrap(),
            owner(1000, 1000)
        );
        let empty = tempfile::tempdir().unwrap();
        let err = resolve_chown(empty.path(), "ghost").unwrap_err();
        assert_eq!(err.to_string(), "invalid --chown=ghost");
        assert!(resolve_chown(empty.path(), "app").is_err());
        assert_eq!(resolve_chown(empty.path(), "12:34").unwrap(), owner(12, 34));
    }
}
