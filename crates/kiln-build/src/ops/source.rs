//! What a COPY or ADD copies: paths in trees on disk, heredoc bodies and
//! downloaded files, and the expansion of wildcard source paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::io::Errno;

use super::error::CopyError;
use super::fetch::Download;
use super::root::{self, Root, TreeError, components, join};

/// Whether an entry below a copied directory is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDecision {
    /// Copy it (a directory with everything below it that the filter
    /// includes).
    Include,
    /// Skip it, and everything below it.
    Exclude,
    /// Skip the directory itself but look inside: it is created only if
    /// something below it is included, as fsutil creates the parents of an
    /// entry an exclusion pattern (`!dir/keep`) brings back. Means
    /// [`FilterDecision::Exclude`] for anything but a directory.
    Descend,
}

/// The caller's choice of entries below a copied directory: the build
/// context's `.dockerignore` and `--exclude` patterns, say.
///
/// `rel` is the entry's path relative to the copied directory (for a
/// `--parents` source, relative to its pivot), `/`-separated, without a
/// leading `/`: BuildKit matches `--exclude` patterns against exactly that
/// (`srcComponents` in fsutil's copier). The copied path itself is never
/// filtered.
pub trait EntryFilter: Send + Sync {
    fn decide(&self, rel: &Path, is_dir: bool) -> FilterDecision;
}

impl<F> EntryFilter for F
where
    F: Fn(&Path, bool) -> FilterDecision + Send + Sync,
{
    fn decide(&self, rel: &Path, is_dir: bool) -> FilterDecision {
        self(rel, is_dir)
    }
}

/// One source of a `COPY` or `ADD`, already resolved by the caller.
#[derive(Clone)]
pub struct SourceItem {
    pub(crate) kind: Kind,
}

#[derive(Clone)]
pub(crate) enum Kind {
    Tree(Tree),
    /// A heredoc: BuildKit writes it with `Mkfile(name, 0644, data)` into a
    /// scratch state and copies that file.
    Inline {
        name: String,
        data: Vec<u8>,
    },
}

#[derive(Clone)]
pub(crate) struct Tree {
    pub(crate) root: PathBuf,
    /// Cleaned, relative to `root`; empty for the root itself.
    pub(crate) path: Vec<u8>,
    /// `--parents`: the directory (relative to `root`) whose subpath is kept.
    pub(crate) pivot: Option<Vec<u8>>,
    pub(crate) filter: Option<Arc<dyn EntryFilter>>,
    pub(crate) reset_owners: bool,
    /// A downloaded URL: unpacked only on an explicit `--unpack=true`.
    pub(crate) remote: bool,
}

impl SourceItem {
    /// `path` (relative to `root`; a leading `/`, `.` and `..` are cleaned
    /// as BuildKit cleans source paths, never climbing above `root`) in the
    /// tree at `root`: the build context, another stage's root or an
    /// image's root. Symlinks on the way, the last one included, are
    /// followed inside the tree, as BuildKit copies local sources with
    /// `FollowSymlinks`.
    pub fn new(root: impl Into<PathBuf>, path: &str) -> SourceItem {
        SourceItem {
            kind: Kind::Tree(Tree {
                root: root.into(),
                path: clean(path.as_bytes()),
                pivot: None,
                filter: None,
                reset_owners: false,
                remote: false,
            }),
        }
    }

    /// A heredoc source (`COPY <<EOF /dest`): a file `name` with `data`,
    /// mode 0644 unless `--chmod`, owned by root unless `--chown`.
    pub fn inline(name: &str, data: impl Into<Vec<u8>>) -> SourceItem {
        SourceItem {
            kind: Kind::Inline {
                name: name.to_owned(),
                data: data.into(),
            },
        }
    }

    /// A file fetched by [`super::Fetcher::fetch`] (an `ADD` URL).
    pub fn downloaded(download: &Download) -> SourceItem {
        let mut item = SourceItem::new(download.dir(), download.file_name());
        if let Kind::Tree(t) = &mut item.kind {
            t.remote = true;
        }
        item
    }

    /// Entries below a copied directory go through `filter`.
    pub fn with_filter(mut self, filter: Arc<dyn EntryFilter>) -> SourceItem {
        if let Kind::Tree(t) = &mut self.kind {
            t.filter = Some(filter);
        }
        self
    }

    /// `COPY --parents`: the path's directories below `pivot` (relative to
    /// the root, empty for the root) are recreated under the destination.
    /// The pivot is what BuildKit reads from `/./` in the source path
    /// (`a/./b/c` keeps `b/c`), the root without one.
    pub fn with_parents(mut self, pivot: &str) -> SourceItem {
        if let Kind::Tree(t) = &mut self.kind {
            t.pivot = Some(clean(pivot.as_bytes()));
        }
        self
    }

    /// Copied entries belong to root (0:0) rather than to their owners in
    /// the tree: what the build context gets, since BuildKit's context
    /// transfer resets owners; `--from` sources keep theirs.
    pub fn reset_owners(mut self) -> SourceItem {
        if let Kind::Tree(t) = &mut self.kind {
            t.reset_owners = true;
        }
        self
    }

    pub(crate) fn has_parents(&self) -> bool {
        matches!(&self.kind, Kind::Tree(t) if t.pivot.is_some())
    }
}

impl fmt::Debug for SourceItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Tree(t) => f
                .debug_struct("SourceItem")
                .field("root", &t.root)
                .field("path", &String::from_utf8_lossy(&t.path))
                .field("pivot", &t.pivot.as_deref().map(String::from_utf8_lossy))
                .field("filter", &t.filter.is_some())
                .field("reset_owners", &t.reset_owners)
                .field("remote", &t.remote)
                .finish(),
            Kind::Inline { name, data } => f
                .debug_struct("SourceItem")
                .field("inline", name)
                .field("bytes", &data.len())
                .finish(),
        }
    }
}

/// Expands a source path of a COPY or ADD in the tree at `root` into the
/// items it names, as BuildKit's `copy.ResolveWildcards` does.
///
/// Without a wildcard (`*`, `?`, `[`, not escaped with `\`), the path is
/// one item, whether or not it exists ([`copy_sources`](super::copy_sources) reports a missing
/// one). With one, the path is cut before its first component that has a
/// wildcard; the part before it is resolved in the tree (symlinks
/// followed), and the entries below it whose relative path matches the
/// rest with Go's `filepath.Match` are the items, in lexical order (a
/// matched directory is not looked into). No match is no item: current
/// BuildKit sets `AllowEmptyWildcard` for Dockerfile sources.
///
/// `parents` (`COPY --parents`) splits the path at its first `/./` into a
/// pivot and the rest (no `/./`: the pivot is the root); the items then
/// keep their path below the pivot.
pub fn expand_source(root: &Path, path: &str, parents: bool) -> Result<Vec<SourceItem>, CopyError> {
    let (pivot, rest) = match parents {
        true => match path.split_once("/./") {
            Some((pivot, rest)) => (Some(pivot), rest),
            None => (Some(""), path),
        },
        false => (None, path),
    };
    let full = match pivot {
        Some(p) => join(&clean(p.as_bytes()), &clean(rest.as_bytes())),
        None => clean(rest.as_bytes()),
    };
    let item = |p: &[u8]| {
        let mut item = SourceItem::new(root, &String::from_utf8_lossy(p));
        if let Kind::Tree(t) = &mut item.kind {
            t.path = p.to_vec();
        }
        match pivot {
            Some(pv) => item.with_parents(pv),
            None => item,
        }
    };
    let comps: Vec<&[u8]> = components(&full).collect();
    let Some(first) = comps.iter().position(has_wildcards) else {
        return Ok(vec![item(&full)]);
    };
    let tree = root::open(root)?;
    let fixed = comps[..first].join(&b'/');
    let base = tree
        .resolve(&fixed)
        .map_err(|e| tree.err("resolving", &fixed, e))?;
    let pattern = comps[first..].join(&b'/');
    let depth = comps.len() - first;
    let mut matches = Vec::new();
    let dir = match tree.open_dir(&base) {
        Ok(fd) => fd,
        // Go's filepath.Walk reports a missing base to its callback, which
        // ResolveWildcards returns as the error: BuildKit fails with "not
        // found" there too.
        Err(Errno::NOENT | Errno::NOTDIR) => {
            return Err(CopyError::SourceNotFound {
                root: root.to_path_buf(),
                path: root::display(&fixed),
            });
        }
        Err(e) => return Err(tree.err("opening", &base, e)),
    };
    walk(&tree, dir, &base, b"", &pattern, depth, &mut matches)?;
    Ok(matches.iter().map(|m| item(m)).collect())
}

/// `filepath.Walk` below `dir` (at `rel` in the tree, `sub` below the
/// walk's base), collecting what matches `pattern`. Go walks the whole
/// tree; a match of a pattern with `depth` components has exactly that
/// many (wildcards never match `/`), so the walk stops there.
fn walk(
    tree: &Root,
    dir: std::os::fd::OwnedFd,
    rel: &[u8],
    sub: &[u8],
    pattern: &[u8],
    depth: usize,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), CopyError> {
    let names = root::names(&dir).map_err(|e| tree.err("reading", rel, e))?;
    for name in names {
        let child_sub = join(sub, &name);
        let child_rel = join(rel, &name);
        let st = root::stat_at(&dir, &name).map_err(|e| tree.err("inspecting", &child_rel, e))?;
        let Some(st) = st else { continue };
        if glob_match(pattern, &child_sub) {
            out.push(child_rel);
            continue;
        }
        let level = components(&child_sub).count();
        if root::is_dir(&st) && level < depth {
            let fd = rustix::fs::openat(
                &dir,
                name.as_slice(),
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| tree.err("opening", &child_rel, e))?;
            walk(tree, fd, &child_rel, &child_sub, pattern, depth, out)?;
        }
    }
    Ok(())
}

/// A source path cleaned as BuildKit's `system.NormalizePath("/", p)`
/// cleans it, relative: `/a/./b/../c/` is `a/c`; `..` stops at the top.
pub(crate) fn clean(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in components(path) {
        if c == b".." {
            parts.pop();
        } else {
            parts.push(c);
        }
    }
    parts.join(&b'/')
}

pub(crate) use crate::context::glob::has_wildcards;

/// Go's `path/filepath.Match` on Unix ([`kiln_dockerfile::go::path_match`]). A
/// malformed pattern matches nothing (ResolveWildcards ignores
/// `ErrBadPattern`).
pub(crate) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    kiln_dockerfile::go::path_match(pattern, name).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        // Cases from Go's path/filepath match_test.go.
        assert!(m("abc", "abc"));
        assert!(m("*", "abc"));
        assert!(m("*c", "abc"));
        assert!(!m("a*", "ab/c"));
        assert!(m("a*/b", "abc/b"));
        assert!(!m("a*/b", "a/c/b"));
        assert!(m("a*b*c*d*e*/f", "axbxcxdxe/f"));
        assert!(m("a*b*c*d*e*/f", "axbxcxdxexxx/f"));
        assert!(!m("a*b*c*d*e*/f", "axbxcxdxe/xxx/f"));
        assert!(!m("a*b*c*d*e*/f", "axbxcxdxexxx/fff"));
        assert!(m("a*b?c*x", "abxbbxdbxebxczzx"));
        assert!(!m("a*b?c*x", "abxbbxdbxebxczzy"));
        assert!(m("ab[c]", "abc"));
        assert!(m("ab[b-d]", "abc"));
        assert!(!m("ab[e-g]", "abc"));
        assert!(!m("ab[^c]", "abc"));
        assert!(!m("ab[^b-d]", "abc"));
        assert!(m("ab[^e-g]", "abc"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "ab"));
        assert!(m("a?b", "a☺b"));
        assert!(m("a[^a]b", "a☺b"));
        assert!(!m("a???b", "a☺b"));
        assert!(m("[a-ζ]*", "α"));
        assert!(!m("*[a-ζ]", "A"));
        assert!(!m("a?b", "a/b"));
        assert!(!m("a*b", "a/b"));
        assert!(m("[\\]a]", "]"));
        assert!(m("[\\-]", "-"));
        assert!(m("[x\\-]", "x"));
        assert!(!m("[\\-x]", "a"));
        // Malformed patterns match nothing.
        assert!(!m("[]a]", "]"));
        assert!(!m("[-]", "-"));
        assert!(!m("[x-]", "x"));
        assert!(!m("[", "a"));
        assert!(!m("[^", "a"));
        assert!(!m("a[", "a"));
        assert!(m("*x", "xxx"));
    }

    #[test]
    fn cleaning_and_wildcards() {
        assert_eq!(clean(b"/a/./b/../c/"), b"a/c");
        assert_eq!(clean(b"../../x"), b"x");
        assert_eq!(clean(b"."), b"");
        assert!(has_wildcards(b"a*"));
        assert!(!has_wildcards(b"a\\*"));
        assert!(has_wildcards(b"[ab]"));
    }
}
