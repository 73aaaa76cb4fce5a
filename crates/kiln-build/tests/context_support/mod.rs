//! Building context trees on disk for the context tests.

#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_build::{BuildContext, ContextEntry, CopyFilter, HashMemo};

/// A context directory in a temp dir, with a Dockerfile at its root.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let tree = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        tree.file("Dockerfile", "FROM scratch\n");
        tree
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes a file (mode 0644), creating its directories.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> &Tree {
        let p = self.path(rel);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(&p, content).unwrap();
        self.chmod(rel, 0o644)
    }

    pub fn dir(&self, rel: &str) -> &Tree {
        fs_err::create_dir_all(self.path(rel)).unwrap();
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Tree {
        let p = self.path(rel);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
        self
    }

    pub fn chmod(&self, rel: &str, mode: u32) -> &Tree {
        fs_err::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn ignore(&self, text: &str) -> &Tree {
        self.file(".dockerignore", text)
    }

    pub fn open(&self) -> BuildContext {
        BuildContext::open(self.root(), &self.path("Dockerfile")).unwrap()
    }
}

/// The `path()`s of resolved entries, `/`-separated.
pub fn paths(entries: &[ContextEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect()
}

/// What a COPY of `source` (no filter) walks, as paths below each entry,
/// prefixed with the entry's path: `src`, `src/a`, ...
pub fn walked(ctx: &BuildContext, source: &str) -> Vec<String> {
    walked_with(ctx, source, &CopyFilter::all())
}

pub fn walked_with(ctx: &BuildContext, source: &str, filter: &CopyFilter) -> Vec<String> {
    let mut out = Vec::new();
    for entry in ctx.resolve(source).unwrap() {
        for item in ctx.walk(&entry, filter) {
            let item = item.unwrap();
            out.push(item.context_path().to_string_lossy().into_owned());
        }
    }
    out
}

/// Sets a file's mtime (seconds since the epoch), leaving its content.
pub fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsecs,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A racy window short enough for tests, and the pause that gets a fresh
/// file's ctime past it.
pub const WINDOW: Duration = Duration::from_millis(50);

pub fn age() {
    std::thread::sleep(WINDOW * 3);
}

pub fn memo() -> HashMemo {
    HashMemo::in_memory().with_racy_window(WINDOW)
}

pub fn sources(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}
