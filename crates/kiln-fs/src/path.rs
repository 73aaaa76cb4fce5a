//! Paths inside a tree as bytes: `a/b/c`, no leading `/`, the empty path
//! for the tree's top. Names on Linux are bytes, and tar entries, overlay
//! whiteouts and Dockerfile paths are all compared as bytes.

/// The components of `path` that name something: empty and `.` components
/// and a leading `/` dropped, `..` kept.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Splits a cleaned path into its parent and last component.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `parent/name` (or `name` at the top).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        p.extend_from_slice(parent);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Every proper ancestor of a cleaned path, nearest first (`a/b/c` gives
/// `a/b`, then `a`).
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let i = rest.iter().rposition(|b| *b == b'/')?;
        rest = &rest[..i];
        Some(rest)
    })
}

/// A cleaned path as the build shows it: `/a/b`.
pub fn display(rel: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

/// Why an archive entry's name cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    /// It holds a NUL byte, which no path can.
    Nul,
    /// Its `..` components climb above the top.
    Escapes,
}

/// Cleans an archive entry name into `a/b/c` form: no empty, `.` or `..`
/// components, no leading or trailing slash; the empty result is the top.
///
/// A leading `/` is dropped: archives are read relative to where they are
/// applied, as Docker, containerd, BuildKit and GNU tar (without `-P`) read
/// absolute names. `..` may only climb back up what the name went down
/// (`a/../b` is `b`); a name that climbs above the top is refused rather
/// than clamped, as Docker refuses it ("breakout") and BuildKit
/// (`cleanRootTarPath`, "outside extraction root"): no honest tool writes
/// one.
pub fn clean_entry_name(raw: &[u8]) -> Result<Vec<u8>, BadName> {
    if raw.contains(&0) {
        return Err(BadName::Nul);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in components(raw) {
        if part == b".." {
            if parts.pop().is_none() {
                return Err(BadName::Escapes);
            }
        } else {
            parts.push(part);
        }
    }
    Ok(parts.join(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_cleaned_or_refused() {
        assert_eq!(clean_entry_name(b"./usr/bin/").unwrap(), b"usr/bin");
        assert_eq!(clean_entry_name(b"/etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean_entry_name(b"a/../b").unwrap(), b"b");
        assert_eq!(clean_entry_name(b"./").unwrap(), b"");
        assert_eq!(clean_entry_name(b"../x"), Err(BadName::Escapes));
        assert_eq!(clean_entry_name(b"a/../../x"), Err(BadName::Escapes));
        assert_eq!(clean_entry_name(b"/../x"), Err(BadName::Escapes));
        assert_eq!(clean_entry_name(b"a\0b"), Err(BadName::Nul));
    }

    #[test]
    fn splits_joins_and_ancestors() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, vec![&b"a/b"[..], &b"a"[..]]);
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
        let c: Vec<&[u8]> = components(b"/a/./b//../c/").collect();
        assert_eq!(c, vec![&b"a"[..], b"b", b"..", b"c"]);
        assert_eq!(display(b"a/b"), "/a/b");
    }
}
