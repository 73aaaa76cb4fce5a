//! From a COPY/ADD source path to the entries of the context it names, as
//! BuildKit resolves local sources (`copy.ResolveWildcards` and
//! `FollowSymlinks` in fsutil, `FollowSymlinkInScope` for symlinks).

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use kiln_dockerfile::go;
use kiln_fs::{Lookup, ResolveError, resolve_with};

use super::BuildContext;
use super::error::ContextError;
use super::glob;
use super::ignore::{Mark, read_names};
use super::stat::{EntryKind, lstat, lstat_opt, slash_text};

/// One thing a COPY/ADD source names in the build context.
///
/// Paths relative to the context root are `/`-free at the start and empty
/// for the root itself.
#[derive(Debug, Clone)]
pub struct ContextEntry {
    pub(crate) path: PathBuf,
    pub(crate) resolved: PathBuf,
    pub(crate) abs: PathBuf,
    pub(crate) kind: EntryKind,
    pub(crate) metadata: Metadata,
    pub(crate) mark: Mark,
}

impl ContextEntry {
    /// The path as the source names it, cleaned, relative to the context
    /// root (`src/main.rs`; for a wildcard, the match). A symlink among its
    /// components is kept as named: the copy is named after this path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last component of [`path`](Self::path), which names the copy when
    /// the destination is a directory; `None` for the context root.
    pub fn name(&self) -> Option<&OsStr> {
        self.path.file_name()
    }

    /// The entry's path relative to the context root once symlinks are
    /// resolved (within the context): what is read.
    pub fn resolved_path(&self) -> &Path {
        &self.resolved
    }

    /// Where the entry is on disk.
    pub fn disk_path(&self) -> &Path {
        &self.abs
    }

    /// What it is, after following symlinks: a source that names a symlink
    /// copies what the symlink points at.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// Its `lstat` (of the resolved path).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// A path looked up inside the context.
struct Found {
    rel: PathBuf,
    abs: PathBuf,
    metadata: Metadata,
    mark: Mark,
}

impl BuildContext {
    pub(crate) fn resolve_source(&self, pattern: &str) -> Result<Vec<ContextEntry>, ContextError> {
        let components = clean_source(pattern);
        let named = |comps: &[String]| comps.iter().collect::<PathBuf>();
        let Some(first) = components.iter().position(glob::has_wildcards) else {
            let path = named(&components);
            let found = self
                .follow(path.components(), true, pattern)?
                .ok_or_else(|| not_found(pattern, &path))?;
            return Ok(vec![entry(path, found)]);
        };
        let (fixed, wild) = components.split_at(first);
        if wild.iter().any(|c| !go::valid_path_pattern(c)) {
            return Err(ContextError::BadSource {
                pattern: pattern.to_owned(),
            });
        }
        // fsutil resolves the part before the first wildcard with symlinks
        // followed, then walks below it; a missing base fails the walk.
        let prefix = named(fixed);
        let base = self
            .follow(prefix.components(), true, pattern)?
            .ok_or_else(|| not_found(pattern, &prefix))?;
        let mut out = Vec::new();
        // Go walks a file as itself alone, whose relative path "." matches
        // nothing.
        if base.metadata.is_dir() {
            self.expand(&base, &prefix, wild, pattern, &mut out)?;
        }
        Ok(out)
    }

    /// The entries below the directory `dir` whose path below it matches the
    /// components of `wild`, one directory level per component, in lexical
    /// order; each match is followed if it is a symlink. A wildcard matches
    /// only what the context transfer would send; it never looks into a
    /// symlinked directory on the way (`filepath.Walk` does not).
    ///
    /// fsutil matches the whole path below `dir` at once, walking all of
    /// it; since no wildcard matches `/`, going one level per component
    /// finds the same entries without reading deeper. (Except for one
    /// quirk left out: Go lets a negated class like `[^a]` match a `/`.)
    fn expand(
        &self,
        dir: &Found,
        named: &Path,
        wild: &[String],
        pattern: &str,
        out: &mut Vec<ContextEntry>,
    ) -> Result<(), ContextError> {
        let (component, deeper) = wild.split_first().expect("a wildcard component");
        for name in read_names(&dir.abs)? {
            if go::path_match(component, name.as_bytes()) != Some(true) {
                continue;
            }
            let rel = dir.rel.join(&name);
            let abs = dir.abs.join(&name);
            let Some(metadata) = lstat_opt(&abs)? else {
                continue;
            };
            let mark = self.ignore.child(&dir.mark, &rel)?;
            let path = named.join(&name);
            if !deeper.is_empty() {
                if metadata.is_dir() && !mark.skipped {
                    let found = Found {
                        rel,
                        abs,
                        metadata,
                        mark,
                    };
                    self.expand(&found, &path, deeper, pattern, out)?;
                }
                continue;
            }
            if !self.ignore.sends(&abs, &rel, &mark, metadata.is_dir())? {
                continue;
            }
            let found = if metadata.file_type().is_symlink() {
                self.follow(rel.components(), true, pattern)?
                    .ok_or_else(|| not_found(pattern, &path))?
            } else {
                Found {
                    rel,
                    abs,
                    metadata,
                    mark,
                }
            };
            out.push(entry(path, found));
        }
        Ok(())
    }

    /// Looks `path` (relative, from the context root) up as BuildKit's
    /// `FollowSymlinkInScope` does (kiln-fs's [`resolve_with`]), in the
    /// tree the transfer sends: `..` never climbs above the root, a
    /// symlink's target is read relative to the root when absolute (as
    /// inside a chroot), and the last component is followed only with
    /// `follow_final`. Entries the ignore file hides do not exist, so a
    /// hidden symlink is not followed and a path through it leads nowhere.
    /// `None` when nothing visible is there.
    fn follow<'p>(
        &self,
        path: impl Iterator<Item = Component<'p>>,
        follow_final: bool,
        pattern: &str,
    ) -> Result<Option<Found>, ContextError> {
        let wanted: Vec<OsString> = path.filter_map(component_name).collect();
        let wanted: Vec<&[u8]> = wanted.iter().map(|c| c.as_bytes()).collect();
        let resolved = resolve_with(&wanted.join(&b'/'), |parents, name, last| {
            let rel: PathBuf = parents
                .iter()
                .map(|c| OsStr::from_bytes(&c.name))
                .chain([OsStr::from_bytes(name)])
                .collect();
            let parent = parents
                .last()
                .and_then(|c| c.note.clone())
                .unwrap_or_default();
            let mark = self.ignore.child(&parent, &rel)?;
            let abs = self.root.join(&rel);
            let Some(metadata) = lstat_opt(&abs)? else {
                return Ok(Lookup::Missing(mark));
            };
            if metadata.file_type().is_symlink() && (follow_final || !last) {
                // A symlink the ignore file hides is not there to follow.
                if mark.excluded {
                    return Ok(Lookup::Missing(mark));
                }
                let target =
                    fs_err::read_link(&abs).map_err(ContextError::io("reading symlink", &abs))?;
                return Ok(Lookup::Link(target.into_os_string().into_vec()));
            }
            // Nothing below a directory the transfer skips is sent.
            if mark.skipped && !last {
                return Ok(Lookup::Missing(mark));
            }
            Ok(Lookup::Found(mark))
        });
        let resolved = match resolved {
            Ok(r) => r,
            Err(ResolveError::TooManyLinks) => {
                return Err(ContextError::TooManySymlinks {
                    pattern: pattern.to_owned(),
                });
            }
            Err(ResolveError::Lookup(e)) => return Err(e),
        };
        if resolved.missing {
            return Ok(None);
        }
        let rel: PathBuf = resolved
            .components
            .iter()
            .map(|c| OsStr::from_bytes(&c.name))
            .collect();
        let mark = resolved
            .components
            .last()
            .and_then(|c| c.note.clone())
            .unwrap_or_default();
        let abs = self.root.join(&rel);
        let metadata = lstat(&abs)?;
        if !self.ignore.sends(&abs, &rel, &mark, metadata.is_dir())? {
            return Ok(None);
        }
        Ok(Some(Found {
            rel,
            abs,
            metadata,
            mark,
        }))
    }

    /// Whether the ignore file hides the context path `path` (relative to
    /// the root, `/`-separated, not resolving symlinks): it and everything
    /// below it when it is an excluded directory that no exception reaches
    /// into, or an excluded entry that is not a directory with something
    /// sent below it.
    pub(crate) fn hides(&self, path: &str) -> Result<bool, ContextError> {
        let rel: PathBuf = clean_source(path).iter().collect();
        let mark = self.ignore.mark(&rel)?;
        if !mark.excluded {
            return Ok(false);
        }
        let abs = self.root.join(&rel);
        let is_dir = lstat_opt(&abs)?.is_some_and(|m| m.is_dir());
        Ok(!self.ignore.sends(&abs, &rel, &mark, is_dir)?)
    }
}

fn entry(path: PathBuf, found: Found) -> ContextEntry {
    ContextEntry {
        path,
        kind: EntryKind::of(found.metadata.file_type()),
        resolved: found.rel,
        abs: found.abs,
        metadata: found.metadata,
        mark: found.mark,
    }
}

fn not_found(pattern: &str, path: &Path) -> ContextError {
    ContextError::NotFound {
        pattern: pattern.to_owned(),
        path: format!("/{}", slash_text(path)),
    }
}

/// A component as a name to look up: `..` kept (it climbs), `.` and the
/// root dropped (the root is where every lookup starts).
fn component_name(c: Component<'_>) -> Option<OsString> {
    match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    }
}

/// A source path as BuildKit cleans it before anything else
/// (`path.Join("/", src)`): relative to the context root, `.` and empty
/// components dropped, `..` applied lexically and stopped at the root.
/// Backslashes are kept: they escape wildcards.
pub(crate) fn clean_source(source: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in source.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => out.push(name.to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean_source;

    #[test]
    fn sources_are_cleaned_inside_the_root() {
        let cases: &[(&str, &[&str])] = &[
            (".", &[]),
            ("/", &[]),
            ("./a/b/", &["a", "b"]),
            ("/a//b/.", &["a", "b"]),
            ("../../etc/passwd", &["etc", "passwd"]),
            ("a/../../b", &["b"]),
            ("a\\*b/*.txt", &["a\\*b", "*.txt"]),
        ];
        for &(source, want) in cases {
            assert_eq!(clean_source(source), want, "{source:?}");
        }
    }
}
