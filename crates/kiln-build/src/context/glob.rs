//! Which part of a COPY/ADD source path is a pattern: fsutil's rule. What a
//! pattern matches is Go's `path/filepath.Match`
//! ([`kiln_dockerfile::go::path_match`]). Used for the build context
//! (`context/`) and for trees of stages and images (`ops::source`).

/// Whether a path component has a wildcard: an unescaped `*`, `?` or `[`
/// (fsutil's `containsWildcards`; `\` hides the byte after it).
pub(crate) fn has_wildcards(component: impl AsRef<[u8]>) -> bool {
    let bytes = component.as_ref();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_unescaped_stars_questions_and_brackets() {
        assert!(has_wildcards("*.txt"));
        assert!(has_wildcards("a?"));
        assert!(has_wildcards("[ab]"));
        assert!(has_wildcards("a\\\\*"));
        assert!(!has_wildcards("a\\*b"));
        assert!(!has_wildcards("a\\[b"));
        assert!(!has_wildcards("plain"));
        assert!(!has_wildcards("a]b"));
    }
}
