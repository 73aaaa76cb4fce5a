//! The one algorithm that resolves a path inside a root, whatever the tree
//! is made of: a directory on disk ([`crate::Root::resolve`]) or the build
//! context as `.dockerignore` lets it be seen.
//!
//! It is containerd's `fs.RootPath` and moby's `FollowSymlinkInScope`:
//! symlinks are followed as if the root were `/` (an absolute target starts
//! again from the root), `..` never climbs above the root, and a component
//! that is not there is taken as written, with everything below it, until a
//! `..` climbs back above it. Everything that looks at a tree is the
//! caller's [`Lookup`]; this module only decides what to look at next.

use std::collections::VecDeque;

use crate::path::components;

/// The most symlinks one resolution follows: Linux's own limit
/// (`MAXSYMLINKS`, path_resolution(7)), which `openat2(2)` applies too, so
/// a path resolves the same through the kernel and through this module.
pub const MAX_SYMLINKS: usize = 40;

/// What the caller found at one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Something is there and is taken as it is (not a symlink, or a
    /// symlink the caller does not follow here). `T` is the caller's note
    /// about it.
    Found(T),
    /// A symlink to follow, with its target as stored.
    Link(Vec<u8>),
    /// Nothing the caller can see is there. It and what follows it are
    /// taken as written, and not looked up, until a `..` climbs back above
    /// it.
    Missing(T),
}

/// One component of a resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component<T> {
    pub name: Vec<u8>,
    /// The caller's note, `None` for components below a missing one (never
    /// looked up).
    pub note: Option<T>,
}

/// A resolved path: symlink-free components from the root down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<T> {
    pub components: Vec<Component<T>>,
    /// Whether some component was not there: the path names nothing yet.
    pub missing: bool,
}

impl<T> Resolved<T> {
    /// The resolved path, `a/b/c` (empty for the root).
    pub fn path(&self) -> Vec<u8> {
        let names: Vec<&[u8]> = self.components.iter().map(|c| c.name.as_slice()).collect();
        names.join(&b'/')
    }
}

/// Why a resolution stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError<E> {
    /// More than [`MAX_SYMLINKS`] symlinks (a loop, most likely).
    TooManyLinks,
    /// The caller's lookup failed.
    Lookup(E),
}

/// Resolves `path` (absolute or relative, both from the root) component by
/// component. `lookup(parents, name, last)` is asked about `name` inside
/// the already resolved `parents`; `last` says whether it is the final
/// component, for callers that do not follow a final symlink.
pub fn resolve_with<T, E>(
    path: &[u8],
    mut lookup: impl FnMut(&[Component<T>], &[u8], bool) -> Result<Lookup<T>, E>,
) -> Result<Resolved<T>, ResolveError<E>> {
    let mut pending: VecDeque<Vec<u8>> = components(path).map(<[u8]>::to_vec).collect();
    let mut resolved: Vec<Component<T>> = Vec::new();
    // From this index on, `resolved` names what is not there.
    let mut missing_from: Option<usize> = None;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == b".." {
            resolved.pop();
            if missing_from.is_some_and(|m| resolved.len() <= m) {
                missing_from = None;
            }
            continue;
        }
        if missing_from.is_some() {
            resolved.push(Component { name, note: None });
            continue;
        }
        match lookup(&resolved, &name, pending.is_empty()).map_err(ResolveError::Lookup)? {
            Lookup::Found(note) => resolved.push(Component {
                name,
                note: Some(note),
            }),
            Lookup::Missing(note) => {
                missing_from = Some(resolved.len());
                resolved.push(Component {
                    name,
                    note: Some(note),
                });
            }
            Lookup::Link(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::TooManyLinks);
                }
                if target.starts_with(b"/") {
                    resolved.clear();
                }
                for (i, part) in components(&target).enumerate() {
                    pending.insert(i, part.to_vec());
                }
            }
        }
    }
    Ok(Resolved {
        components: resolved,
        missing: missing_from.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A tree as a map from resolved paths to what is there.
    fn tree(entries: &[(&str, Option<&str>)]) -> HashMap<Vec<u8>, Option<Vec<u8>>> {
        entries
            .iter()
            .map(|(p, link)| (p.as_bytes().to_vec(), link.map(|l| l.as_bytes().to_vec())))
            .collect()
    }

    fn run(t: &HashMap<Vec<u8>, Option<Vec<u8>>>, path: &str) -> Result<(String, bool), String> {
        let r = resolve_with(path.as_bytes(), |parents, name, _last| {
            let mut p: Vec<&[u8]> = parents.iter().map(|c| c.name.as_slice()).collect();
            p.push(name);
            Ok::<_, ()>(match t.get(&p.join(&b'/')) {
                None => Lookup::Missing(()),
                Some(None) => Lookup::Found(()),
                Some(Some(target)) => Lookup::Link(target.clone()),
            })
        });
        match r {
            Ok(r) => Ok((String::from_utf8(r.path()).unwrap(), r.missing)),
            Err(ResolveError::TooManyLinks) => Err("loop".into()),
            Err(ResolveError::Lookup(())) => Err("lookup".into()),
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tree(&[
            ("usr", None),
            ("usr/lib", None),
            ("lib", Some("/usr/lib")),
            ("up", Some("../../../../usr")),
            ("etc", None),
            ("etc/resolv.conf", Some("../../run/stub")),
        ]);
        assert_eq!(run(&t, "/lib/x").unwrap(), ("usr/lib/x".into(), true));
        assert_eq!(run(&t, "up/lib").unwrap(), ("usr/lib".into(), false));
        assert_eq!(run(&t, "/../..").unwrap(), ("".into(), false));
        assert_eq!(
            run(&t, "/etc/resolv.conf").unwrap(),
            ("run/stub".into(), true)
        );
    }

    #[test]
    fn a_missing_component_is_kept_until_dot_dot_climbs_out() {
        let t = tree(&[("usr", None), ("lib", Some("usr"))]);
        // Below a missing name nothing is looked up: `lib` stays as written.
        assert_eq!(run(&t, "gone/lib").unwrap(), ("gone/lib".into(), true));
        // Climbing back out looks things up again, `lib` is followed.
        assert_eq!(run(&t, "gone/../lib").unwrap(), ("usr".into(), false));
    }

    #[test]
    fn loops_stop_at_the_kernel_limit() {
        let t = tree(&[("a", Some("b")), ("b", Some("a"))]);
        assert_eq!(run(&t, "a"), Err("loop".into()));
        // A chain of exactly MAX_SYMLINKS links resolves.
        let mut entries: Vec<(String, Option<String>)> = (0..MAX_SYMLINKS)
            .map(|i| (format!("l{i}"), Some(format!("l{}", i + 1))))
            .collect();
        entries.push((format!("l{MAX_SYMLINKS}"), None));
        let t: HashMap<Vec<u8>, Option<Vec<u8>>> = entries
            .into_iter()
            .map(|(p, l)| (p.into_bytes(), l.map(String::into_bytes)))
            .collect();
        assert_eq!(run(&t, "l0").unwrap(), (format!("l{MAX_SYMLINKS}"), false));
    }
}
