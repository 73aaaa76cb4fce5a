//! `USER name[:group]` → numeric ids, from the root's /etc/passwd and
//! /etc/group, with the rules BuildKit takes from runc's `libcontainer/user`
//! (`GetExecUser`) behind its `oci.GetUser`.

use std::io;
use std::path::Path;

use crate::error::SandboxError;
use crate::spec::User;
use kiln_fs::{host_path, resolve_in_root};

/// The largest id Docker accepts (`libcontainer/user`'s `maxID`).
const MAX_ID: i64 = (1 << 31) - 1;

/// Resolves a Dockerfile `USER` value against the files in `rootfs`.
///
/// - `""` is root; `uid:gid` with both numeric (or `root`) is taken as it
///   is, without reading any file and without supplementary groups.
/// - Otherwise the user is looked up in /etc/passwd: a numeric user is a uid
///   (it need not exist), a name must exist. The primary group is the
///   passwd entry's, or 0 for a uid without entry.
/// - An explicit `:group` is looked up in /etc/group (numeric: a gid that
///   need not exist) and replaces the primary group; then there are no
///   supplementary groups. Without one, every group that lists the user's
///   name is a supplementary group.
///
/// A missing /etc/passwd or /etc/group counts as empty. (runc's Go code
/// passes a nil `*os.File` there and fails numeric users on images without
/// /etc/passwd; Docker's documented intent, and kiln's, is that they work.)
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<User, SandboxError> {
    if let Some(user) = fast_path(spec) {
        return Ok(user);
    }
    let mut fields = spec.split(':');
    let user_arg = fields.next().unwrap_or_default();
    let group_arg = fields.next().unwrap_or_default();
    let uid_arg = go_atoi(user_arg);
    let gid_arg = go_atoi(group_arg);

    let passwd_path = resolve_in_root(rootfs, Path::new("/etc/passwd"))?;
    let group_path = resolve_in_root(rootfs, Path::new("/etc/group"))?;
    let passwd = read_optional(&host_path(rootfs, &passwd_path))?;
    let group = read_optional(&host_path(rootfs, &group_path))?;

    let mut user = User::root();
    let matched = parse_passwd(&passwd).find(|entry| match uid_arg {
        _ if user_arg.is_empty() => entry.uid == 0,
        Some(uid) => entry.uid == uid,
        None => entry.name == user_arg,
    });
    let mut matched_name = "";
    if let Some(entry) = &matched {
        matched_name = entry.name;
        user.uid = to_id(spec, entry.uid)?;
        user.gid = to_id(spec, entry.gid)?;
    } else if !user_arg.is_empty() {
        let Some(uid) = uid_arg else {
            return Err(SandboxError::NoSuchUser {
                name: user_arg.to_owned(),
                passwd: passwd_path,
            });
        };
        user.uid = to_id(spec, uid)?;
    }

    if group_arg.is_empty() && matched_name.is_empty() {
        return Ok(user);
    }
    let mut groups = parse_group(&group).filter(|entry| match gid_arg {
        _ if group_arg.is_empty() => entry.members.contains(&matched_name),
        Some(gid) => entry.gid == gid,
        None => entry.name == group_arg,
    });
    if group_arg.is_empty() {
        user.additional_gids = groups
            .map(|entry| to_id(spec, entry.gid))
            .collect::<Result<_, _>>()?;
    } else if let Some(entry) = groups.next() {
        user.gid = to_id(spec, entry.gid)?;
    } else {
        let Some(gid) = gid_arg else {
            return Err(SandboxError::NoSuchGroup {
                name: group_arg.to_owned(),
                group: group_path,
            });
        };
        user.gid = to_id(spec, gid)?;
    }
    Ok(user)
}

/// BuildKit's `ParseUIDGID`: both parts given, each `root` or a decimal u32.
fn fast_path(spec: &str) -> Option<User> {
    if spec.is_empty() {
        return Some(User::root());
    }
    let (uid, gid) = spec.split_once(':')?;
    let id = |s: &str| {
        if s == "root" {
            Some(0)
        } else {
            s.parse::<u32>().ok()
        }
    };
    Some(User {
        uid: id(uid)?,
        gid: id(gid)?,
        additional_gids: Vec::new(),
    })
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits.
fn go_atoi(s: &str) -> Option<i64> {
    s.parse().ok()
}

fn to_id(spec: &str, id: i64) -> Result<u32, SandboxError> {
    if (0..=MAX_ID).contains(&id) {
        Ok(id as u32)
    } else {
        Err(SandboxError::IdOutOfRange {
            spec: spec.to_owned(),
            id,
        })
    }
}

fn read_optional(path: &Path) -> io::Result<String> {
    match fs_err::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: i64,
    gid: i64,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: i64,
    members: Vec<&'a str>,
}

/// `name:password:uid:gid:gecos:home:shell` (passwd(5)); unparsable ids
/// read as 0, as in Go's `parseLine`.
fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut f = line.split(':');
            let name = f.next().unwrap_or_default();
            let _password = f.next();
            PasswdEntry {
                name,
                uid: f.next().and_then(go_atoi).unwrap_or(0),
                gid: f.next().and_then(go_atoi).unwrap_or(0),
            }
        })
}

/// `name:password:gid:member,member` (group(5)).
fn parse_group(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut f = line.split(':');
            let name = f.next().unwrap_or_default();
            let _password = f.next();
            let gid = f.next().and_then(go_atoi).unwrap_or(0);
            let members = f
                .next()
                .filter(|m| !m.is_empty())
                .map(|m| m.split(',').collect())
                .unwrap_or_default();
            GroupEntry { name, gid, members }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          daemon:x:1:1::/:/bin/false\n\
                          app:x:1000:1000:App:/home/app:/bin/sh\n\
                          app:x:1001:1001:shadowed duplicate::\n\
                          nobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
                         wheel:x:10:root,app\n\
                         app:x:1000:\n\
                         audio:x:29:daemon,app\n\
                         staff:x:50:\n";

    fn rootfs(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            fs_err::write(dir.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            fs_err::write(dir.path().join("etc/group"), g).unwrap();
        }
        dir
    }

    fn user(uid: u32, gid: u32, additional_gids: &[u32]) -> User {
        User {
            uid,
            gid,
            additional_gids: additional_gids.to_vec(),
        }
    }

    fn resolve(spec: &str) -> Result<User, SandboxError> {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        resolve_user(dir.path(), spec)
    }

    #[test]
    fn empty_is_root_without_groups() {
        assert_eq!(resolve("").unwrap(), User::root());
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        assert_eq!(resolve("app").unwrap(), user(1000, 1000, &[10, 29]));
    }

    #[test]
    fn first_passwd_entry_wins() {
        assert_eq!(resolve("app").unwrap().uid, 1000);
    }

    #[test]
    fn numeric_user_is_looked_up_as_a_uid() {
        assert_eq!(resolve("1000").unwrap(), user(1000, 1000, &[10, 29]));
    }

    #[test]
    fn numeric_user_without_entry_gets_gid_zero() {
        assert_eq!(resolve("4242").unwrap(), user(4242, 0, &[]));
    }

    #[test]
    fn both_numeric_skips_the_files() {
        assert_eq!(resolve("1000:50").unwrap(), user(1000, 50, &[]));
        assert_eq!(resolve("root:root").unwrap(), user(0, 0, &[]));
    }

    #[test]
    fn explicit_group_replaces_primary_and_drops_supplementary() {
        assert_eq!(resolve("app:staff").unwrap(), user(1000, 50, &[]));
        assert_eq!(resolve("app:777").unwrap(), user(1000, 777, &[]));
    }

    #[test]
    fn root_by_name_gets_its_groups() {
        assert_eq!(resolve("root").unwrap(), user(0, 0, &[10]));
    }

    #[test]
    fn missing_user_is_an_error() {
        let err = resolve("ghost").unwrap_err();
        assert!(matches!(err, SandboxError::NoSuchUser { ref name, .. } if name == "ghost"));
        assert_eq!(err.to_string(), "unable to find user ghost in /etc/passwd");
    }

    #[test]
    fn missing_group_is_an_error() {
        let err = resolve("app:ghosts").unwrap_err();
        assert!(matches!(err, SandboxError::NoSuchGroup { ref name, .. } if name == "ghosts"));
    }

    #[test]
    fn out_of_range_ids_are_errors() {
        assert!(matches!(
            resolve("-1"),
            Err(SandboxError::IdOutOfRange { id: -1, .. })
        ));
        assert!(matches!(
            resolve("app:2147483648"),
            Err(SandboxError::IdOutOfRange { .. })
        ));
    }

    #[test]
    fn numeric_ids_work_without_passwd_or_group() {
        let dir = rootfs(None, None);
        assert_eq!(
            resolve_user(dir.path(), "1000").unwrap(),
            user(1000, 0, &[])
        );
        assert!(resolve_user(dir.path(), "1000:staff").is_err());
        assert_eq!(
            resolve_user(dir.path(), "1000:5").unwrap(),
            user(1000, 5, &[])
        );
        assert!(matches!(
            resolve_user(dir.path(), "app"),
            Err(SandboxError::NoSuchUser { .. })
        ));
    }

    #[test]
    fn passwd_is_read_through_symlinks_inside_the_root() {
        let dir = rootfs(None, None);
        fs_err::create_dir_all(dir.path().join("usr/etc")).unwrap();
        fs_err::write(dir.path().join("usr/etc/passwd"), PASSWD).unwrap();
        std::os::unix::fs::symlink("/usr/etc/passwd", dir.path().join("etc/passwd")).unwrap();
        assert_eq!(
            resolve_user(dir.path(), "app").unwrap(),
            user(1000, 1000, &[])
        );
    }
}
