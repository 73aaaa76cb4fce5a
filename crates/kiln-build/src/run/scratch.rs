//! A step's own scratch space, outside its root: the heredoc script
//! directory and the throwaway overlays of `rw` bind mounts (BuildKit's
//! `ForceNoOutput`: the step may write, nothing is kept).
//!
//! ```text
//! <scratch>/run-<pid>-<n>/
//!   script/<name>              a `RUN <<EOF` script with a shebang
//!   bind-<i>/upper work merged an overlay over a bind source
//!   bind-<i>/file              a copy of a bind source that is a file
//!   pin-<i>                    a cache's `source=` directory, bind-mounted
//! ```
//!
//! The overlays and binds are mounted in kiln's own mount namespace and unmounted
//! when the step is over; [`sweep_scratch`] removes what a killed kiln
//! left.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_fs::OwnedDir;
use rustix::fs::{Gid, Mode, OFlags, Uid};
use rustix::mount::MountFlags;

use super::command::InlineScript;
use super::error::{RunError, io_at};

const PREFIX: &str = "run-";

/// The scratch directory of one step. [`remove`](Scratch::remove) it;
/// dropping it does the same, ignoring errors.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: OwnedDir,
    /// Overlay and bind mount points, in mount order.
    mounted: Vec<PathBuf>,
    /// The points of [`pinned_view`](Scratch::pinned_view)s.
    pins: Vec<PathBuf>,
    next: usize,
}

impl Scratch {
    pub(crate) fn create(parent: &Path) -> Result<Scratch, RunError> {
        let dir = OwnedDir::create(parent, PREFIX)?;
        Ok(Scratch {
            dir,
            mounted: Vec::new(),
            pins: Vec::new(),
            next: 0,
        })
    }

    /// A directory holding the script as a 0755 file, to mount read-only
    /// at `/dev/pipes` (BuildKit's `llb.Mkfile(name, 0755, data)` in a
    /// scratch state).
    pub(crate) fn script_dir(&mut self, script: &InlineScript) -> Result<PathBuf, RunError> {
        let dir = self.dir.path().join("script");
        fs_err::create_dir(&dir)?;
        // Readable by any USER of the step: the mount shows these modes.
        set_mode(&dir, 0o755)?;
        let file = dir.join(&script.name);
        fs_err::write(&file, script.data.as_bytes())?;
        set_mode(&file, 0o755)?;
        Ok(dir)
    }

    /// A writable view of `source` whose changes are thrown away: an
    /// overlay with a fresh upper dir for a directory, a copy for a file.
    pub(crate) fn writable_view(&mut self, source: &Path) -> Result<PathBuf, RunError> {
        let base = self.dir.path().join(format!("bind-{}", self.next));
        self.next += 1;
        fs_err::create_dir(&base)?;
        let meta = fs_err::metadata(source)?;
        if !meta.is_dir() {
            let copy = base.join("file");
            fs_err::copy(source, &copy)?;
            rustix::fs::chown(
                &copy,
                Some(Uid::from_raw(meta.uid())),
                Some(Gid::from_raw(meta.gid())),
            )
            .map_err(|e| io_at("chown", &copy)(e.into()))?;
            set_mode(&copy, meta.mode() & 0o7777)?;
            return Ok(copy);
        }
        let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
        for d in [&upper, &work, &merged] {
            fs_err::create_dir(d)?;
        }
        // overlayfs shows the upper root's own attributes as the root of
        // the mount (overlayfs.rst): give it the source's.
        rustix::fs::chown(
            &upper,
            Some(Uid::from_raw(meta.uid())),
            Some(Gid::from_raw(meta.gid())),
        )
        .map_err(|e| io_at("chown", &upper)(e.into()))?;
        set_mode(&upper, meta.mode() & 0o7777)?;
        mount_overlay(source, &upper, &work, &merged)?;
        self.mounted.push(merged.clone());
        Ok(merged)
    }

    /// `dir` bind-mounted at a new point of the scratch: a path to exactly
    /// that directory that no step can rename or turn into a symlink, for
    /// runc to mount from. The source is `/proc/self/fd/N`, which the
    /// kernel follows to the open directory, not to whatever its name
    /// means now.
    pub(crate) fn pinned_view(&mut self, dir: &OwnedFd) -> Result<PathBuf, RunError> {
        let point = self.dir.path().join(format!("pin-{}", self.next));
        self.next += 1;
        fs_err::create_dir(&point)?;
        rustix::mount::mount_bind(format!("/proc/self/fd/{}", dir.as_raw_fd()), &point).map_err(
            |e| RunError::Mount {
                what: "a cache directory",
                target: point.clone(),
                source: e.into(),
            },
        )?;
        self.mounted.push(point.clone());
        self.pins.push(point.clone());
        Ok(point)
    }

    /// Whether the directory of a [`pinned_view`](Scratch::pinned_view)
    /// has been removed since (a `mv` renamed another onto its name): the
    /// pin still shows it, but the kernel refuses to mount a removed
    /// directory from it (`ENOENT`), so runc's mount of the pin fails.
    pub(crate) fn a_pin_was_removed(&self) -> bool {
        self.pins
            .iter()
            .any(|p| rustix::fs::stat(p).is_ok_and(|st| st.st_nlink == 0))
    }

    /// Unmounts the overlays and removes the directory.
    pub(crate) fn remove(mut self) -> Result<(), RunError> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), RunError> {
        let mut first = None;
        self.pins.clear();
        for point in self.mounted.drain(..).rev() {
            if let Err(e) = unmount(&point) {
                first.get_or_insert(e);
            }
        }
        if first.is_none()
            && self.dir.path().exists()
            && let Err(e) = fs_err::remove_dir_all(self.dir.path())
        {
            first.get_or_insert(e.into());
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

/// Removes the scratch directories of kiln processes that are gone (and
/// first unmounts what they left mounted there). Returns how many.
pub fn sweep_scratch(scratch: &Path) -> Result<usize, RunError> {
    let dead = kiln_fs::abandoned(scratch, PREFIX)?;
    for dir in &dead {
        // mountinfo spells mount points canonically.
        let canonical = fs_err::canonicalize(dir)?;
        for point in kiln_fs::mounts_under(&canonical)? {
            unmount(&point)?;
        }
        fs_err::remove_dir_all(dir)?;
    }
    Ok(dead.len())
}

/// An overlay of `lower` with `upper` at `merged`, through `mount(2)`.
/// Each dir is passed as `/proc/self/fd/N` of an open descriptor: paths
/// with `,` or `:` cannot be written in overlay's options, and the magic
/// link resolves to the directory whatever its name.
fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<(), RunError> {
    let open = |p: &Path| -> Result<OwnedFd, RunError> {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at("opening", p)(e.into()).into())
    };
    let (l, u, w) = (open(lower)?, open(upper)?, open(work)?);
    let fd = |f: &OwnedFd| format!("/proc/self/fd/{}", f.as_raw_fd());
    // index=off: the lower may itself be an overlay (a stage mounted
    // read-only), which cannot give the file handles an index needs.
    let options = format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        fd(&l),
        fd(&u),
        fd(&w)
    );
    let data = CString::new(options).map_err(io::Error::other)?;
    rustix::mount::mount(
        "overlay",
        merged,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| RunError::Mount {
        what: "a writable overlay",
        target: merged.to_path_buf(),
        source: e.into(),
    })
}

/// Unmounts, detaching if busy: clean-up must never leave a mount.
fn unmount(point: &Path) -> Result<(), RunError> {
    kiln_fs::unmount_or_detach(point).map_err(|e| io_at("unmounting", point)(e.into()).into())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RunError> {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
