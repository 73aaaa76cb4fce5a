//! The rules that need the build context: KL110 (no ignore file, heavy
//! paths sent) and BuildKit's CopyIgnoredFile. Both read the context
//! sources of the stages the build needs ([`ContextRead`], expanded as
//! the build expands them) and the [`Context`] the caller gathered.

use kiln_dockerfile::dockerignore::{PatternMatcher, clean_path};
use kiln_dockerfile::go;

use super::{Hit, hit};
use crate::context::{Context, HEAVY_MIN_BYTES, human_bytes};

/// One instruction that reads the build context: a `COPY` without
/// `--from`, an `ADD`, a `RUN --mount=type=bind` without `from`.
#[derive(Debug, Clone)]
pub(crate) struct ContextRead {
    pub(crate) line: usize,
    pub(crate) kind: ReadKind,
    /// Its context sources as the build expands them (URLs and git
    /// sources left out).
    pub(crate) sources: Vec<String>,
    /// `--exclude` patterns.
    pub(crate) excludes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadKind {
    Copy,
    Add,
    Bind,
}

impl ReadKind {
    /// How messages name the instruction that reads `source`.
    fn reading(self, source: &str) -> String {
        match self {
            ReadKind::Copy => format!("COPY {source}"),
            ReadKind::Add => format!("ADD {source}"),
            ReadKind::Bind => format!("RUN --mount=type=bind,source={source}"),
        }
    }
}

/// Whether a COPY/ADD source is not a context path: an http(s) URL or a
/// git source (BuildKit's `isHTTPSource`, `isGitSource`).
pub(crate) fn remote_source(source: &str) -> bool {
    ["http://", "https://", "git@", "git://", "ssh://"]
        .iter()
        .any(|p| source.starts_with(p))
}

/// BuildKit's CopyIgnoredFile (dockerfile2llb `validateCopySourcePath`):
/// with an ignore file of at least one pattern and no `!` exception, a
/// COPY/ADD source that the patterns exclude (it, or a directory above it)
/// is reported at its instruction. The context root (`.`, `/`) counts only
/// when a pattern excludes every entry at the root (`*`, `**`, `**/*`).
/// BuildKit gives up on files with exceptions, "too difficult to
/// statically determine", and so does this.
pub(crate) fn copy_ignored(reads: &[ContextRead], patterns: &PatternMatcher, out: &mut Vec<Hit>) {
    if patterns.patterns().is_empty() || patterns.exclusions() {
        return;
    }
    let root_ignored = patterns
        .patterns()
        .iter()
        .any(|p| !p.is_exclusion() && matches!(p.cleaned(), "*" | "**" | "**/*"));
    for read in reads.iter().filter(|r| r.kind != ReadKind::Bind) {
        let verb = if read.kind == ReadKind::Add {
            "Add"
        } else {
            "Copy"
        };
        for source in &read.sources {
            let src = clean_path(source);
            if (src == "." || src == "/") && !root_ignored {
                continue;
            }
            // An invalid pattern fails the build's transfer, which says why.
            if patterns.matches_or_parent_matches(&src).unwrap_or(false) {
                out.push(hit(
                    "CopyIgnoredFile",
                    read.line,
                    format!(
                        "Attempting to {verb} file {} that is excluded by .dockerignore",
                        go::quote(&src)
                    ),
                ));
            }
        }
    }
}

/// KL110: a Dockerfile that reads its context with no ignore file, and the
/// heavy paths (`.git`, `node_modules`, `__pycache__`, weights) a context
/// source sends without naming them: `COPY . /app` sends `.git` and copies
/// it into the image, while `COPY models/llama.safetensors /m/` asked for
/// its file. BuildKit sends only what the sources name (and everything
/// below), so a heavy path that no source reaches is not reported.
pub(crate) fn context_size(reads: &[ContextRead], context: &Context, out: &mut Vec<Hit>) {
    let Some(first) = reads.first() else {
        return;
    };
    if context.ignore.is_none() {
        out.push(hit(
            "KL110",
            first.line,
            format!(
                "no .dockerignore: the build reads a context of {} in {} files with nothing left out; list what the image does not need (.git, build output, caches, weights) in .dockerignore",
                human_bytes(context.bytes),
                context.files
            ),
        ));
    }
    for heavy in context.heavy.iter().filter(|h| h.bytes >= HEAVY_MIN_BYTES) {
        if reads
            .iter()
            .flat_map(|r| &r.sources)
            .any(|s| names(&relative(s), &heavy.path))
        {
            continue;
        }
        let Some((read, source)) = reads.iter().find_map(|r| {
            r.sources
                .iter()
                .find(|s| sends(&relative(s), &r.excludes, &heavy.path))
                .map(|s| (r, s))
        }) else {
            continue;
        };
        out.push(hit(
            "KL110",
            read.line,
            format!(
                "{} ({}, {}) is sent by {} though no instruction names it; add it to .dockerignore",
                heavy.path,
                heavy.kind.describe(),
                human_bytes(heavy.bytes),
                read.kind.reading(source)
            ),
        ));
    }
}

/// A source as a path relative to the context root, cleaned: `./a/` and
/// `/a` are `a`, `.` and `/` are empty.
fn relative(source: &str) -> String {
    let clean = clean_path(source);
    let rel = clean.trim_start_matches('/');
    if rel == "." {
        String::new()
    } else {
        rel.to_string()
    }
}

fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Whether `pattern` (Go's `filepath.Match`) matches `path` or one of the
/// directories above it.
fn matches_at_or_above(pattern: &str, path: &str) -> bool {
    let depth = pattern.split('/').count();
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() >= depth
        && go::path_match(pattern, parts[..depth].join("/").as_bytes()).unwrap_or(false)
}

/// Whether the source `rel` sends `path`: it is the root, `path`, a
/// directory above it, or a wildcard matching one of those; and no
/// `--exclude` pattern of its instruction leaves it out.
fn sends(rel: &str, excludes: &[String], path: &str) -> bool {
    let below = if rel.is_empty() {
        Some(path)
    } else if has_wildcard(rel) {
        matches_at_or_above(rel, path).then_some(path)
    } else if path == rel {
        Some("")
    } else {
        path.strip_prefix(rel).and_then(|r| r.strip_prefix('/'))
    };
    let Some(below) = below else {
        return false;
    };
    // `--exclude` patterns match the paths below the source.
    !excludes.iter().any(|e| {
        let e = relative(e);
        !below.is_empty() && (matches_at_or_above(&e, below) || matches_at_or_above(&e, path))
    })
}

/// Whether the source `rel` asks for `path` itself: it is `path` or a path
/// below it, or a wildcard whose last part is not a bare `*` matching it
/// (`COPY *.safetensors /m/` names its weights, `COPY * /app/` does not).
fn names(rel: &str, path: &str) -> bool {
    if rel.is_empty() {
        return false;
    }
    if has_wildcard(rel) {
        let last = rel.rsplit('/').next().unwrap_or(rel);
        return !matches!(last, "*" | "**") && matches_at_or_above(rel, path);
    }
    rel == path || rel.strip_prefix(path).is_some_and(|r| r.starts_with('/'))
}
