//! kiln's filesystem boundary: everything that keeps a path inside a root,
//! writes an archive onto a directory, or coordinates processes through
//! files is written once, here, so that a fix to an escape or a race lands
//! in one place.
//!
//! - [`Root`]: a directory tree as a descriptor that lookups cannot leave
//!   (`openat2` with `RESOLVE_IN_ROOT`, or the same rules walked by hand
//!   where the kernel lacks it); [`resolve_in_root`] for the path-level
//!   answer (mount destinations, working directories).
//! - [`resolve_with`]: the one resolution algorithm (containerd's
//!   `fs.RootPath`), for trees that are not plain directories, such as a
//!   build context seen through `.dockerignore`.
//! - [`tar`]: the tar reader and writer, and [`tar::apply`], the one
//!   extractor, for image layers (with whiteouts) and `ADD` archives.
//! - [`xattr`]: extended attributes without following symlinks, and which
//!   ones an image carries.
//! - [`lock`](LockFile): `flock` files whose holder is alive, with notes.
//! - [`OwnedDir`]: temporary directories named after their process, and the
//!   sweep of those whose process is gone; [`mounts_under`] and
//!   [`unmount_or_detach`] for the mounts a dead process left in them.
//! - [`path`]: byte paths inside a tree (`a/b/c`).
//! - [`copy_range`] and [`copy_file_in_kernel`]: file contents copied without
//!   passing through user space (reflink, `copy_file_range`), falling
//!   back to `read`/`write` where the kernel says no.
//!
//! Syscall-level operations report [`Errno`] (rustix's, re-exported: the
//! workspace builds one rustix); the rest report errors that name their
//! path.

mod copy;
mod lock;
mod mount;
mod owned;
pub mod path;
mod resolve;
mod root;
mod space;
pub mod tar;
pub mod xattr;

pub use copy::{CopyStats, copy_file_in_kernel, copy_in_kernel, copy_range, is_regular_file};
pub use lock::{
    LockFile, LockKind, LockWaitError, Patience, Probe, create_owned, holder_note, lock, lock_path,
    lock_waiting, probe, read_note, remove_if_abandoned, try_lock,
};
pub use mount::{filesystem_of, in_user_namespace, mounts_under, unmount_or_detach};
pub use owned::{OwnedDir, abandoned, sweep};
pub use resolve::{Component, Lookup, MAX_SYMLINKS, ResolveError, Resolved, resolve_with};
pub use root::{
    NewDir, Owner, Resolution, Root, chown_at, host_path, is_dir, names, open_child_dir,
    remove_all, resolve_in_root, stamps, stat_at, typed_names,
};
pub use rustix::io::Errno;
pub use space::{Space, human_bytes};
