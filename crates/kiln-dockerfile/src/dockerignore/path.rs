//! Go's lexical path functions (`path/filepath` on Unix), which decide what
//! a pattern and its parent directories look like before anything is matched.

/// The shortest path equivalent to `path` by purely lexical processing, as
/// Go's `filepath.Clean` on Unix computes it: repeated `/` become one, `.`
/// elements go, `..` removes the element before it (and is dropped right
/// after the root), a trailing `/` goes, and an empty result is `.`.
///
/// No file system is consulted, so `a/link/..` is `a` even when `link` is a
/// symbolic link. `.dockerignore` patterns are cleaned this way, which is why
/// `docs/`, `./docs` and `docs//` all mean `docs`.
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    // Elements kept so far; `..` stays only where nothing real precedes it.
    let mut kept: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => match kept.last() {
                Some(&last) if last != ".." => {
                    kept.pop();
                }
                // `/..` is `/`: there is nothing above the root to go to.
                _ if rooted => {}
                _ => kept.push(".."),
            },
            real => kept.push(real),
        }
    }
    let joined = kept.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir` on Unix: everything before the last `/`, cleaned.
/// `a/b/` has the directory `a/b` (not `a`), `a` has `.`, `/a` has `/`.
pub(crate) fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(slash) => clean_path(&path[..=slash]),
        None => ".".to_owned(),
    }
}

/// The directories above a path whose [`dir`] is `parent`, outermost first,
/// in the form upstream matches them: `parent` split at `/`, re-joined one
/// element more each time. For `/a/b` that is `""`, `/a`, `/a/b`.
pub(crate) fn ancestors(parent: &str) -> impl Iterator<Item = &str> {
    parent
        .match_indices('/')
        .map(|(slash, _)| &parent[..slash])
        .chain(std::iter::once(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        // Cases from Go's path/filepath cleantests (Unix).
        let cases = [
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("", "."),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
            ("!docs/", "!docs"),
            ("! /x", "! /x"),
        ];
        for (input, want) in cases {
            assert_eq!(clean_path(input), want, "clean_path({input:?})");
        }
    }

    #[test]
    fn dir_matches_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("/.", "/"),
            ("/", "/"),
            ("////", "/"),
            ("/foo", "/"),
            ("x/", "x"),
            ("abc", "."),
            ("abc/def", "abc"),
            ("a/b/.x", "a/b"),
            ("a/b/c.", "a/b"),
            ("a/b/c.x", "a/b"),
            ("dir/file/", "dir/file"),
        ];
        for (input, want) in cases {
            assert_eq!(dir(input), want, "dir({input:?})");
        }
    }

    #[test]
    fn ancestors_split_like_strings_split() {
        assert_eq!(
            ancestors("a/b/c").collect::<Vec<_>>(),
            ["a", "a/b", "a/b/c"]
        );
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["", "/"]);
        assert_eq!(
            ancestors("/any/path").collect::<Vec<_>>(),
            ["", "/any", "/any/path"]
        );
        assert_eq!(ancestors("a").collect::<Vec<_>>(), ["a"]);
    }
}
