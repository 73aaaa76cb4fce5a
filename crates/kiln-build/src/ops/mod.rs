//! The file operations behind `COPY` and `ADD`, with BuildKit's semantics.
//!
//! The executor resolves everything first and calls [`copy`] with plain
//! data: the sources as [`SourceItem`]s (a path in a tree on disk, a heredoc
//! body, or a [`Download`]), the destination root (the merged directory of
//! the step's overlay snapshot), the destination as written, the stage's
//! `WORKDIR`, and [`CopyOptions`] (`--chown` already resolved with
//! [`resolve_chown`] against the destination root, `--chmod` parsed with
//! [`Chmod::parse`]). How sources are found (context transfer,
//! `.dockerignore`, another stage's snapshot) is the caller's: a tree is
//! any directory, and a filter ([`EntryFilter`]) decides what below a
//! copied directory goes in. [`expand_source`] expands wildcards in a
//! tree as BuildKit does; [`Fetcher`] downloads `ADD` URLs.
//!
//! ```no_run
//! use kiln_build::{Chmod, CopyOptions, copy_sources, expand_source, resolve_chown};
//!
//! # fn main() -> Result<(), kiln_build::CopyError> {
//! let context = std::path::Path::new("/tmp/context");
//! let merged = std::path::Path::new("/var/lib/kiln/steps/7/merged");
//! // COPY --chown=app:staff --chmod=u+x bin/* ./tools/
//! let mut sources = Vec::new();
//! for item in expand_source(context, "bin/*", false)? {
//!     sources.push(item.reset_owners());
//! }
//! let opts = CopyOptions::copy()
//!     .chown(resolve_chown(merged, "app:staff")?)
//!     .chmod(Chmod::parse("u+x")?);
//! let stats = copy_sources(&sources, merged, "./tools/", "/app", &opts)?;
//! println!("{} files, {} bytes", stats.files, stats.bytes);
//! # Ok(()) }
//! ```
//!
//! # Semantics
//!
//! BuildKit's Dockerfile frontend (`dispatchCopy`) turns each source into
//! a file-op copy (`solver/llbsolver/file/backend.go`, `docopy`), carried out
//! by `tonistiigi/fsutil/copy`. kiln follows current BuildKit, checked
//! against Docker 26's BuildKit where that is older (the tests build the
//! same Dockerfiles with `docker buildx` and compare the trees):
//!
//! - The destination is relative to `WORKDIR`. A trailing `/` (or a last
//!   component `.`) makes it a directory, created if missing; otherwise
//!   its parent is created. Created directories are 0755, owned by the
//!   `--chown` owner (fsutil's `MkdirAll` with the chowner), root's
//!   otherwise.
//! - Symlinks in the destination path resolve inside the destination root
//!   (containerd's `fs.RootPath`), the last component included.
//! - A directory source copies its contents. A non-directory source onto
//!   an existing directory goes inside it, under the source's own name
//!   (the matched name, not a symlink's target); otherwise it becomes the
//!   destination path. See `tree.rs` for modes, owners, times, links and
//!   conflicts.
//! - A source path that is a symlink is followed inside its tree
//!   (`FollowSymlinks`); symlinks below it are copied as symlinks.
//! - Several sources need a directory destination: a trailing `/` or an
//!   existing directory. Otherwise kiln fails with the classic builder's
//!   "When using COPY with more than one source file, the destination must
//!   be a directory and end with a /", where BuildKit would let each source
//!   overwrite the last (moby/buildkit#1853, open).
//! - `ADD` extracts local tar archives (`unpack.rs`); `--unpack=false`
//!   turns that off, `--unpack=true` extends it to downloads.
//! - `--link` changes how the result is layered, not what is copied:
//!   [`copy`] does the same either way (the caller copies into an empty
//!   snapshot for it).

mod chmod;
mod chown;
mod error;
mod fetch;
mod root;
mod source;
mod stats;
mod tree;
mod unpack;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use rustix::fs::Timespec;
use rustix::io::Errno;

pub use chmod::Chmod;
pub use chown::{Owner, resolve_chown};
pub use error::CopyError;
pub(crate) use fetch::Download;
pub use fetch::Fetcher;
pub(crate) use source::EntryFilter;
pub use source::{FilterDecision, SourceItem, expand_source};
pub use stats::CopyStats;

use root::{NewDir, Root, TreeError, join, split};
use source::{Kind, Tree, clean};
use tree::{Copier, Policy, Src};

/// Which instruction a copy carries out: it decides whether local archives
/// are unpacked by default and how errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    Copy,
    Add,
}

impl Instruction {
    fn name(self) -> &'static str {
        match self {
            Instruction::Copy => "COPY",
            Instruction::Add => "ADD",
        }
    }
}

/// The flags of a `COPY` or `ADD`, resolved.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOptions {
    pub instruction: Instruction,
    /// `--chown`, resolved against the destination root ([`resolve_chown`]).
    pub chown: Option<Owner>,
    /// `--chmod`: applied to every copied entry (directories too), not to
    /// the destination directory itself nor to extracted archives.
    pub chmod: Option<Chmod>,
    /// `--unpack` as given: `None` unpacks local archives for `ADD` only,
    /// and never downloads.
    pub unpack: Option<bool>,
    /// Every time the copy sets (BuildKit's `WithCreatedTime`, which the
    /// frontend sets from SOURCE_DATE_EPOCH).
    pub created_time: Option<SystemTime>,
    /// `--link`: no effect here (see the module doc); kept so the options
    /// say what the instruction said.
    pub link: bool,
    /// Once set, the copy stops with [`CopyError::Stopped`]: before the
    /// next entry, or within 64 MiB of a file (the build's cancel).
    pub stop: Option<Arc<AtomicBool>>,
}

impl CopyOptions {
    pub fn copy() -> CopyOptions {
        CopyOptions::new(Instruction::Copy)
    }

    pub fn add() -> CopyOptions {
        CopyOptions::new(Instruction::Add)
    }

    pub fn new(instruction: Instruction) -> CopyOptions {
        CopyOptions {
            instruction,
            chown: None,
            chmod: None,
            unpack: None,
            created_time: None,
            link: false,
            stop: None,
        }
    }

    pub fn stopping_on(mut self, stop: Arc<AtomicBool>) -> CopyOptions {
        self.stop = Some(stop);
        self
    }

    pub fn chown(mut self, owner: Owner) -> CopyOptions {
        self.chown = Some(owner);
        self
    }

    pub fn chmod(mut self, chmod: Chmod) -> CopyOptions {
        self.chmod = Some(chmod);
        self
    }

    pub fn unpack(mut self, unpack: bool) -> CopyOptions {
        self.unpack = Some(unpack);
        self
    }

    pub fn created_time(mut self, time: SystemTime) -> CopyOptions {
        self.created_time = Some(time);
        self
    }

    pub fn link(mut self, link: bool) -> CopyOptions {
        self.link = link;
        self
    }
}

/// Copies `sources`, in order, to `dest` (as written in the Dockerfile,
/// relative to `workdir` unless absolute) inside `dest_root`. See the
/// module doc for the semantics.
pub fn copy_sources(
    sources: &[SourceItem],
    dest_root: &Path,
    dest: &str,
    workdir: &str,
    opts: &CopyOptions,
) -> Result<CopyStats, CopyError> {
    let root = root::open(dest_root)?;
    let abs = if dest.starts_with('/') {
        dest.to_owned()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    // fsutil's `Copy`: `filepath.Split(dst)`; an empty or `.` last part
    // makes the destination itself a directory to create.
    let last = abs.rsplit('/').next().unwrap_or_default();
    let dir_hint = last.is_empty() || last == ".";
    let dest_rel = clean(abs.as_bytes());
    let ensure_rel = if dir_hint {
        dest_rel.clone()
    } else {
        clean(split(abs.as_bytes()).0)
    };

    let time = opts.created_time.map(|t| {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos().into(),
        }
    });
    let policy = Policy {
        chown: opts.chown,
        chmod: opts.chmod.as_ref(),
        time,
        stop: opts.stop.as_deref(),
    };
    let new_dir = NewDir {
        owner: opts.chown,
        time,
        ..NewDir::default()
    };

    // Several sources onto a path that is not a directory: an error, but
    // only once a source is not an archive to unpack (archives unpack into
    // the destination as a directory, so `ADD *.tar /dest` works as in
    // BuildKit).
    let mut not_a_dir = None;
    if sources.len() > 1 && !dir_hint && !sources.iter().all(SourceItem::has_parents) {
        let resolved = root
            .resolve(&dest_rel)
            .map_err(|e| root.err("resolving", &dest_rel, e))?;
        let is_dir = root
            .lstat(&resolved)
            .map_err(|e| root.err("inspecting", &resolved, e))?
            .is_some_and(|st| root::is_dir(&st));
        if !is_dir {
            not_a_dir = Some(CopyError::DestinationNotDirectory {
                command: opts.instruction.name(),
                dest: dest.to_owned(),
            });
        }
    }

    let mut stats = CopyStats::default();
    let mut cx = Cx {
        root: &root,
        policy: &policy,
        new_dir: &new_dir,
        dest_rel: &dest_rel,
        ensure_rel: &ensure_rel,
        stats: &mut stats,
        not_a_dir,
    };
    for item in sources {
        match &item.kind {
            Kind::Tree(t) => {
                let unpack = if t.remote {
                    opts.unpack == Some(true)
                } else {
                    opts.unpack.unwrap_or(opts.instruction == Instruction::Add)
                };
                cx.tree(t, unpack)?;
            }
            Kind::Inline { name, data } => cx.inline(name, data)?,
        }
    }
    Ok(stats)
}

/// One copy's destination and policy.
struct Cx<'a> {
    root: &'a Root,
    policy: &'a Policy<'a>,
    new_dir: &'a NewDir,
    dest_rel: &'a [u8],
    ensure_rel: &'a [u8],
    stats: &'a mut CopyStats,
    /// The error for a source that is not an unpacked archive, when there
    /// are several sources and the destination is not a directory.
    not_a_dir: Option<CopyError>,
}

impl Cx<'_> {
    fn mkdir_all(&self, rel: &[u8]) -> Result<(), CopyError> {
        self.root
            .make_dir_all(rel, self.new_dir)
            .map(drop)
            .map_err(|e| unpack::mkdir_err(self.root, rel, e))
    }

    fn resolve(&self, rel: &[u8]) -> Result<Vec<u8>, CopyError> {
        self.root
            .resolve(rel)
            .map_err(|e| self.root.err("resolving", rel, e))
    }

    /// fsutil's `Copy` up to the copy itself: the destination's directory
    /// is ensured, then `prepareTargetDir` picks the target (inside an
    /// existing directory for a non-directory source) and creates what it
    /// needs.
    fn target(&self, src_is_dir: bool, base: &[u8]) -> Result<Vec<u8>, CopyError> {
        let ensure = self.resolve(self.ensure_rel)?;
        self.mkdir_all(&ensure)?;
        let target = self.resolve(self.dest_rel)?;
        let existing = self
            .root
            .lstat(&target)
            .map_err(|e| self.root.err("inspecting", &target, e))?;
        let dest_is_dir = existing.as_ref().is_some_and(root::is_dir);
        let target = if !src_is_dir && dest_is_dir {
            join(&target, base)
        } else {
            target
        };
        if src_is_dir && existing.is_none() {
            self.mkdir_all(&target)?;
        } else {
            self.mkdir_all(split(&target).0)?;
        }
        Ok(target)
    }

    fn tree(&mut self, t: &Tree, unpack: bool) -> Result<(), CopyError> {
        let src_root = root::open(&t.root)?;
        let not_found = |path: &[u8]| CopyError::SourceNotFound {
            root: t.root.clone(),
            path: root::display(path),
        };
        // With --parents the pivot is followed, the path below it is not.
        let (followed, rest) = match &t.pivot {
            Some(pivot) => {
                let rest = t
                    .path
                    .strip_prefix(pivot.as_slice())
                    .filter(|r| pivot.is_empty() || r.is_empty() || r.starts_with(b"/"))
                    .ok_or_else(|| not_found(&t.path))?;
                (pivot.as_slice(), Some(clean(rest)))
            }
            None => (t.path.as_slice(), None),
        };
        let resolved = src_root
            .resolve(followed)
            .map_err(|e| src_root.err("resolving", followed, e))?;
        let (dir, name) = match src_root.open_parent(&resolved) {
            Ok(x) => x,
            Err(Errno::NOENT | Errno::NOTDIR) => return Err(not_found(followed)),
            Err(e) => return Err(src_root.err("opening the parent of", &resolved, e)),
        };
        let st = root::stat_at(&dir, name)
            .map_err(|e| src_root.err("inspecting", &resolved, e))?
            // A symlink left after resolution leads nowhere.
            .filter(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Symlink
            })
            .ok_or_else(|| not_found(followed))?;
        let src = Src {
            dir: &dir,
            name,
            st,
        };
        let is_dir = root::is_dir(&st);

        if let Some(rest) = rest {
            if !is_dir {
                return Err(not_found(followed));
            }
            let target = self.target(true, b"")?;
            let mut copier = Copier::new(self.root, &t.root, self.policy, self.stats);
            copier.reset_owners = t.reset_owners;
            copier.filter = t.filter.clone();
            return copier.copy_with_parents(&src, &resolved, &rest, &target);
        }

        if unpack
            && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        {
            let fd = rustix::fs::openat(
                &dir,
                name,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| src_root.err("opening", &resolved, e))?;
            let mut file = File::from(fd);
            let archive = unpack::is_archive(&mut file).map_err(|e| CopyError::Io {
                op: "reading",
                root: t.root.clone(),
                path: root::display(&resolved),
                source: e,
            })?;
            if archive {
                let dest = self.resolve(self.dest_rel)?;
                // `--chown` does not reach what an archive unpacks: its
                // members keep the tar's owners (Docker 26's BuildKit,
                // checked by the conformance suite); only the directories
                // made for the destination are the --chown owner's.
                return unpack::extract(
                    &file,
                    &root::display(&t.path),
                    self.root,
                    &dest,
                    self.new_dir,
                    None,
                    self.policy.stop,
                    self.stats,
                );
            }
        }

        if let Some(e) = self.not_a_dir.take() {
            return Err(e);
        }
        let base = split(&t.path).1;
        let target = self.target(is_dir, base)?;
        let mut copier = Copier::new(self.root, &t.root, self.policy, self.stats);
        copier.reset_owners = t.reset_owners;
        copier.filter = t.filter.clone();
        // BuildKit's context transfer does not carry the context root's
        // own times: `COPY . /dest/` leaves /dest with the copy's time.
        copier.fresh_top = t.reset_owners && resolved.is_empty();
        if is_dir {
            copier.copy_dir_contents(&src, &resolved, &target)
        } else {
            copier.copy_leaf(&src, &resolved, &target)
        }
    }

    fn inline(&mut self, name: &str, data: &[u8]) -> Result<(), CopyError> {
        if let Some(e) = self.not_a_dir.take() {
            return Err(e);
        }
        let cleaned = clean(name.as_bytes());
        let target = self.target(false, split(&cleaned).1)?;
        tree::write_inline(self.root, self.policy, data, &target, self.stats)
    }
}

/// Creates `dir` (absolute in the tree at `root`) and its missing parents,
/// mode `mode`, owned by `owner` — BuildKit's `llb.Mkdir(dir, 0755,
/// WithParents(true), WithUser(...))` for WORKDIR. Symlinks on the way
/// resolve inside the tree; existing directories are left as they are.
pub(crate) fn mkdir_all(
    root: &Path,
    dir: &str,
    mode: u32,
    owner: (u32, u32),
) -> Result<(), CopyError> {
    let tree = root::open(root)?;
    let rel = source::clean(dir.as_bytes());
    let new = root::NewDir {
        mode,
        owner: Some(Owner {
            uid: owner.0,
            gid: owner.1,
        }),
        time: None,
    };
    tree.make_dir_all(&rel, &new)
        .map_err(|e| tree.err("creating", &rel, e))?;
    Ok(())
}
