//! The store's lock files: kiln-fs's `flock` files (see
//! [`kiln_fs::LockFile`]), waited for with the store's patience and
//! reported through its hook, with the store's errors.

use std::path::{Path, PathBuf};

pub(crate) use kiln_fs::LockKind as Mode;

use crate::store::{LockWait, StoreError, StoreOptions};

/// A held lock; dropping it releases the lock.
pub(crate) type Guard = kiln_fs::LockFile;

/// Locks `path` (created if missing), polling until `options.lock_timeout`.
/// After `options.report_after` the wait is reported once through
/// `options.on_lock_wait`, naming the holder an exclusive holder wrote into
/// the file. An exclusive holder records itself as `pid N: <operation>`.
pub(crate) fn acquire(
    path: &Path,
    mode: Mode,
    operation: &str,
    options: &StoreOptions,
) -> Result<Guard, StoreError> {
    let report = |waited, holder| {
        if let Some(hook) = &options.on_lock_wait {
            hook(&LockWait {
                lock: path.to_path_buf(),
                holder,
                waited,
                timeout: options.lock_timeout,
            });
        }
    };
    let patience = kiln_fs::Patience {
        timeout: options.lock_timeout,
        report_after: options.report_after,
        on_wait: Some(&report),
    };
    kiln_fs::lock_waiting(path, mode, operation, &patience).map_err(|e| match e {
        kiln_fs::LockWaitError::TimedOut {
            path,
            waited,
            holder,
        } => StoreError::LockTimeout {
            path,
            waited,
            holder,
        },
        kiln_fs::LockWaitError::Io(e) => StoreError::io(path)(e),
    })
}

/// Creates a new file in `dir`, named `<pid>-<n><suffix>`, locked
/// exclusively for as long as the returned file is open: a file that is
/// not locked belongs to a dead process, and [`remove_if_abandoned`] may
/// delete it.
pub(crate) fn create_owned(
    dir: &Path,
    suffix: &str,
) -> Result<(fs_err::File, PathBuf), StoreError> {
    let file = kiln_fs::create_owned(dir, suffix)
        .map_err(StoreError::io(dir))?
        .into_file();
    let path = file.path().to_path_buf();
    Ok((file, path))
}

/// Deletes `path` if no live process holds its lock. Returns whether it
/// was deleted.
pub(crate) fn remove_if_abandoned(path: &Path) -> Result<bool, StoreError> {
    kiln_fs::remove_if_abandoned(path).map_err(StoreError::io(path))
}
