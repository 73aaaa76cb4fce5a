//! Entry names as paths inside the layer root.

/// Cleans a tar entry name into `a/b/c` form: no empty, `.` or `..`
/// components, no leading or trailing slash. The empty result is the layer
/// root itself.
///
/// A leading `/` is dropped: layer tars are rooted at the layer root, and
/// Docker, containerd and GNU tar (without `-P`) all read absolute names so.
/// `..` may only climb back up what the name went down (`a/../b` is `b`);
/// a name that climbs above the root is refused rather than clamped, as
/// Docker refuses it ("breakout"): such a name is never written by an honest
/// tool.
pub(crate) fn clean(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("climbs out of the layer root with ..");
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join(&b'/'))
}

/// Splits a cleaned path into its parent and last component.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `parent/name` (or `name` at the root).
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
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
pub(crate) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let i = rest.iter().rposition(|b| *b == b'/')?;
        rest = &rest[..i];
        Some(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        assert_eq!(clean(b"./usr/bin/").unwrap(), b"usr/bin");
        assert_eq!(clean(b"/etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean(b"a/../b").unwrap(), b"b");
        assert_eq!(clean(b"./").unwrap(), b"");
        assert!(clean(b"../x").is_err());
        assert!(clean(b"a/../../x").is_err());
        assert!(clean(b"/../x").is_err());
        assert!(clean(b"a\0b").is_err());
    }

    #[test]
    fn splits_and_ancestors() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, vec![&b"a/b"[..], &b"a"[..]]);
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
    }
}
