//! Walking what a COPY copies from one source entry: the entry, then
//! everything below it that the context transfer sends and the COPY's
//! filter selects, depth first, each directory's names in byte order.
//!
//! Two rules decide whether a directory appears, both BuildKit's:
//! - the transfer sends an excluded directory only if it sends something
//!   below it (fsutil's walker, for `!` exceptions under an excluded
//!   directory);
//! - the copier creates a directory the filter does not select only when
//!   it copies something below it (fsutil's copier, `createParentDirs`).
//!
//! So a directory may be known to appear only after some of its contents
//! were read: it waits on a stack and comes out, before what is below it,
//! the moment it is known. Directories that nothing below can change are
//! skipped without being read: an excluded one no exception reaches into,
//! or one an `--exclude` pattern leaves out for good.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::BuildContext;
use super::error::ContextError;
use super::ignore::{Mark, read_names};
use super::resolve::ContextEntry;
use super::select::{Choice, CopyFilter};
use super::stat::{EntryKind, lstat_opt};

/// One entry a COPY of a source copies.
#[derive(Debug, Clone)]
pub struct WalkEntry {
    rel: PathBuf,
    path: PathBuf,
    abs: PathBuf,
    kind: EntryKind,
    metadata: Metadata,
}

impl WalkEntry {
    /// The path below the copied source (what `--exclude` and `--parents`
    /// patterns match, and where the entry goes below the destination);
    /// empty for the source itself.
    pub fn rel_path(&self) -> &Path {
        &self.rel
    }

    /// Whether this is the source itself.
    pub fn is_root(&self) -> bool {
        self.rel.as_os_str().is_empty()
    }

    /// The path relative to the context root (symlinks resolved for the
    /// source itself; below it nothing is followed).
    pub fn context_path(&self) -> &Path {
        &self.path
    }

    /// Where the entry is on disk.
    pub fn disk_path(&self) -> &Path {
        &self.abs
    }

    /// What it is; a symlink below a source is copied as a symlink.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// Its `lstat`.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// The entries a COPY takes from one source entry, in order (see
/// [`BuildContext::walk`]). Stops after the first error.
pub struct Walk<'a> {
    ctx: &'a BuildContext,
    entry: &'a ContextEntry,
    filter: &'a CopyFilter,
    walked: Option<&'a AtomicU64>,
    started: bool,
    done: bool,
    stack: Vec<Frame>,
    ready: VecDeque<WalkEntry>,
}

/// A directory being read.
struct Frame {
    abs: PathBuf,
    path: PathBuf,
    rel: PathBuf,
    names: std::vec::IntoIter<OsString>,
    mark: Mark,
    choice: Choice,
    /// The transfer sends it: it is not excluded, or something below it
    /// was found that is sent.
    sent: bool,
    /// Its own entry, until it is known to be copied.
    waiting: Option<WalkEntry>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(
        ctx: &'a BuildContext,
        entry: &'a ContextEntry,
        filter: &'a CopyFilter,
        walked: Option<&'a AtomicU64>,
    ) -> Walk<'a> {
        Walk {
            ctx,
            entry,
            filter,
            walked,
            started: false,
            done: false,
            stack: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    fn tally(&self) {
        if let Some(walked) = self.walked {
            walked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The source itself is always copied (resolving it checked that the
    /// transfer sends it), and never filtered.
    fn start(&mut self) -> Result<(), ContextError> {
        let e = self.entry;
        self.tally();
        self.ready.push_back(WalkEntry {
            rel: PathBuf::new(),
            path: e.resolved.clone(),
            abs: e.abs.clone(),
            kind: e.kind,
            metadata: e.metadata.clone(),
        });
        if e.kind == EntryKind::Dir {
            self.stack.push(Frame {
                names: read_names(&e.abs)?.into_iter(),
                abs: e.abs.clone(),
                path: e.resolved.clone(),
                rel: PathBuf::new(),
                mark: e.mark.clone(),
                choice: Choice {
                    selected: true,
                    ..Choice::default()
                },
                sent: true,
                waiting: None,
            });
        }
        Ok(())
    }

    fn visit(&mut self, name: OsString) -> Result<(), ContextError> {
        let top = self.stack.last().expect("a directory being read");
        let abs = top.abs.join(&name);
        let path = top.path.join(&name);
        let rel = top.rel.join(&name);
        // Gone since the directory was listed: as if it never was.
        let Some(metadata) = lstat_opt(&abs)? else {
            return Ok(());
        };
        if let Some(walked) = self.walked {
            walked.fetch_add(1, Ordering::Relaxed);
        }
        let kind = EntryKind::of(metadata.file_type());
        let is_dir = kind == EntryKind::Dir;
        let mark = self.ctx.ignore.child(&top.mark, &path)?;
        if mark.excluded && (!is_dir || mark.skipped) {
            return Ok(());
        }
        let choice = self.filter.choose(&rel, &top.choice)?;
        if is_dir && choice.prune {
            // Nothing below is copied, but the directory being sent may
            // still make a waiting parent copied.
            if !mark.excluded
                || (self.parent_waits_for_sent()
                    && self.ctx.ignore.sends_below(&abs, &path, &mark)?)
            {
                self.found_sent();
            }
            return Ok(());
        }
        let entry = WalkEntry {
            rel: rel.clone(),
            path: path.clone(),
            abs: abs.clone(),
            kind,
            metadata,
        };
        if is_dir {
            let names = read_names(&abs)?.into_iter();
            self.stack.push(Frame {
                abs,
                path,
                rel,
                names,
                sent: !mark.excluded,
                mark,
                choice,
                waiting: Some(entry),
            });
            if self.stack.last().is_some_and(|f| f.sent) {
                self.found_sent();
            }
            return Ok(());
        }
        self.found_sent();
        if choice.selected {
            self.release(self.stack.len());
            self.ready.push_back(entry);
        }
        Ok(())
    }

    /// Something at the top of the stack is sent, so every directory on
    /// the stack is: those the filter selects are copied now, with the
    /// directories above them.
    fn found_sent(&mut self) {
        for frame in &mut self.stack {
            frame.sent = true;
        }
        if let Some(deepest) = self.stack.iter().rposition(|f| f.choice.selected) {
            self.release(deepest + 1);
        }
    }

    /// Copies the waiting directories among the first `depth` on the stack.
    fn release(&mut self, depth: usize) {
        for frame in &mut self.stack[..depth] {
            if let Some(entry) = frame.waiting.take() {
                self.ready.push_back(entry);
            }
        }
    }

    /// Whether a selected directory on the stack waits to learn that the
    /// transfer sends it.
    fn parent_waits_for_sent(&self) -> bool {
        self.stack.iter().any(|f| !f.sent && f.choice.selected)
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<WalkEntry, ContextError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Some(Ok(entry));
            }
            if self.done {
                return None;
            }
            let step = if !self.started {
                self.started = true;
                self.start()
            } else {
                let Some(top) = self.stack.last_mut() else {
                    self.done = true;
                    continue;
                };
                match top.names.next() {
                    Some(name) => self.visit(name),
                    None => {
                        self.stack.pop();
                        Ok(())
                    }
                }
            };
            if let Err(e) = step {
                self.done = true;
                self.ready.clear();
                return Some(Err(e));
            }
        }
    }
}
