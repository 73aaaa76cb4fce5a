//! Which ids a rootless kiln's user namespace maps: the user's own id to
//! 0, and the subordinate ranges /etc/subuid and /etc/subgid give the user
//! (subuid(5): `name-or-id:first:count`, one range a line) to 1 and up, as
//! rootlesskit, Podman and Buildah map them.

use std::path::{Path, PathBuf};

/// One line of a uid_map or gid_map: `inside outside count`
/// (user_namespaces(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The user's own id as 0 and its subordinate ranges after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub ranges: Vec<IdRange>,
}

impl IdMap {
    /// Only the user's own id, as 0.
    pub fn single(id: u32) -> IdMap {
        IdMap {
            ranges: vec![IdRange {
                inside: 0,
                outside: id,
                count: 1,
            }],
        }
    }

    /// The user's id as 0, then `subordinate` ranges one after the other
    /// from 1; `None` when there are none.
    pub fn with_subordinate(id: u32, subordinate: &[(u32, u32)]) -> Option<IdMap> {
        if subordinate.is_empty() {
            return None;
        }
        let mut map = IdMap::single(id);
        let mut next = 1u32;
        for &(first, count) in subordinate {
            map.ranges.push(IdRange {
                inside: next,
                outside: first,
                count,
            });
            next = next.saturating_add(count);
        }
        Some(map)
    }

    /// How many ids the namespace has.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.count)).sum()
    }

    /// Whether it maps no id (never true of a map made here).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text written to /proc/PID/uid_map (or gid_map).
    pub fn proc_text(&self) -> String {
        self.ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
            .collect()
    }

    /// The arguments of newuidmap(1) and newgidmap(1) after the pid.
    pub fn helper_args(&self) -> Vec<String> {
        self.ranges
            .iter()
            .flat_map(|r| [r.inside, r.outside, r.count])
            .map(|n| n.to_string())
            .collect()
    }
}

/// The ranges of `text` (an /etc/subuid or /etc/subgid) for the user
/// named `name` or numbered `id`, in file order; malformed lines and
/// empty ranges are skipped, as shadow's own reader does.
pub(crate) fn subordinate_ranges(text: &str, name: Option<&str>, id: u32) -> Vec<(u32, u32)> {
    let id_text = id.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut fields = line.split(':');
            let owner = fields.next()?;
            let first: u32 = fields.next()?.trim().parse().ok()?;
            let count: u32 = fields.next()?.trim().parse().ok()?;
            if fields.next().is_some() || count == 0 {
                return None;
            }
            (Some(owner) == name || owner == id_text).then_some((first, count))
        })
        .collect()
}

/// The name /etc/passwd gives `uid` (kiln links no NSS: a user known only
/// to LDAP or similar is looked up by number in /etc/subuid).
pub(crate) fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let found: u32 = fields.next()?.parse().ok()?;
        (found == uid).then(|| name.to_owned())
    })
}

/// What a rootless kiln's user namespace maps, and how it is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// Subordinate ranges: the parent writes the maps with the setuid
    /// helpers newuidmap and newgidmap.
    Subordinate {
        uids: IdMap,
        gids: IdMap,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
    /// No ranges for this user: the child maps its own uid and gid to 0
    /// (which needs no helper), and files of any other owner are root's.
    Single { uid: u32, gid: u32 },
}

/// Where newuidmap and newgidmap usually are, after `PATH`.
const HELPER_PLACES: &[&str] = &["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// The first executable named `name` in `PATH` or the usual places.
pub(crate) fn find_helper(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(HELPER_PLACES.iter().map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| is_file(p))
}

fn is_file(path: &Path) -> bool {
    fs_err::metadata(path).is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "\
# comment
alice:100000:65536
1001:300000:1000
bob:200000:65536
alice:500000:10
broken:x:1
zero:1:0
";

    #[test]
    fn ranges_by_name_and_by_number_in_file_order() {
        assert_eq!(
            subordinate_ranges(SUBUID, Some("alice"), 1000),
            [(100000, 65536), (500000, 10)]
        );
        assert_eq!(
            subordinate_ranges(SUBUID, Some("carol"), 1001),
            [(300000, 1000)]
        );
        assert_eq!(subordinate_ranges(SUBUID, None, 1001), [(300000, 1000)]);
        assert!(subordinate_ranges(SUBUID, Some("broken"), 7).is_empty());
        assert!(subordinate_ranges(SUBUID, Some("zero"), 7).is_empty());
        assert!(subordinate_ranges("", Some("alice"), 1000).is_empty());
    }

    #[test]
    fn the_user_is_root_and_the_ranges_follow() {
        let map = IdMap::with_subordinate(1000, &[(100000, 65536), (500000, 10)]).unwrap();
        assert_eq!(
            map.proc_text(),
            "0 1000 1\n1 100000 65536\n65537 500000 10\n"
        );
        assert_eq!(
            map.helper_args(),
            [
                "0", "1000", "1", "1", "100000", "65536", "65537", "500000", "10"
            ]
        );
        assert_eq!(map.len(), 65547);
        assert_eq!(IdMap::with_subordinate(1000, &[]), None);
        assert_eq!(IdMap::single(1000).proc_text(), "0 1000 1\n");
    }

    #[test]
    fn names_come_from_passwd() {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 5), None);
    }
}
