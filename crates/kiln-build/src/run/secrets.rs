//! Build secrets (`--secret id=..,src=..` / `env=..`) and how a step sees
//! them: a file bind-mounted read-only from outside the root, or a
//! variable. Their bytes never touch the root, so never a layer; the cache
//! key sees only a secret's id and target (see `key.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs_err::os::unix::fs::OpenOptionsExt;
use kiln_fs::OwnedDir;
use rustix::fs::{Gid, Mode, Uid};

use super::error::{RunError, io_at};

/// Secret directories are kiln-fs's [`OwnedDir`]s, `<PREFIX><pid>-<n>`:
/// the pid tells a sweep whose they are.
const PREFIX: &str = "kiln-secrets-";

/// Secrets by id. Cheap to clone; `Debug` shows the ids only.
#[derive(Clone, Default)]
pub struct Secrets {
    by_id: BTreeMap<String, Arc<[u8]>>,
    dir: Option<PathBuf>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("ids", &self.by_id.keys().collect::<Vec<_>>())
            .field("dir", &self.dir)
            .finish()
    }
}

impl Secrets {
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds (or replaces) a secret.
    pub fn insert(&mut self, id: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.by_id.insert(id.into(), Arc::from(bytes.into()));
    }

    /// [`insert`](Secrets::insert), by value.
    pub fn with(mut self, id: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Secrets {
        self.insert(id, bytes);
        self
    }

    /// `--secret id=ID,src=PATH`: the file's bytes, read now.
    pub fn insert_file(&mut self, id: impl Into<String>, path: &Path) -> Result<(), RunError> {
        let bytes = fs_err::read(path)?;
        self.insert(id, bytes);
        Ok(())
    }

    /// `--secret id=ID,env=VAR`: the variable's value, read now.
    pub fn insert_env(&mut self, id: impl Into<String>, var: &str) -> Result<(), RunError> {
        let id = id.into();
        let Some(value) = std::env::var_os(var) else {
            return Err(RunError::SecretSource {
                id,
                reason: format!("environment variable {var} is not set"),
            });
        };
        self.insert(id, std::os::unix::ffi::OsStringExt::into_vec(value));
        Ok(())
    }

    /// Where secret files are written for the length of a step, in a
    /// private 0700 directory of their own. By default /dev/shm when it is
    /// a tmpfs (the bytes then never reach a disk), else the temp dir.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Secrets {
        self.dir = Some(dir.into());
        self
    }

    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.by_id.get(id).map(|b| &b[..])
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn staging_parent(&self) -> PathBuf {
        if let Some(dir) = &self.dir {
            return dir.clone();
        }
        let shm = Path::new("/dev/shm");
        // TMPFS_MAGIC (linux/magic.h).
        let on_tmpfs = rustix::fs::statfs(shm).is_ok_and(|s| s.f_type as u64 == 0x0102_1994);
        if on_tmpfs {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    }

    /// Removes the secret directories of kiln processes that are gone
    /// from where this `Secrets` stages them: a killed kiln leaves them,
    /// secrets inside. Returns how many it removed.
    pub fn sweep(&self) -> Result<usize, RunError> {
        let parent = self.staging_parent();
        Ok(kiln_fs::sweep(&parent, PREFIX).map_err(io_at("sweeping", &parent))?)
    }

    /// A directory for one step's secret files, removed when dropped.
    pub(crate) fn stage(&self) -> Result<Staged, RunError> {
        let parent = self.staging_parent();
        // 0700: only root can reach the files, whatever their own modes;
        // the step sees each file through its bind mount.
        let dir = OwnedDir::create(&parent, PREFIX)
            .map_err(io_at("creating a secrets directory in", &parent))?;
        Ok(Staged { dir, next: 0 })
    }
}

/// The secret files of one step.
#[derive(Debug)]
pub(crate) struct Staged {
    dir: OwnedDir,
    next: usize,
}

impl Staged {
    /// Writes one secret as a file with BuildKit's ownership and mode
    /// (`SecretOpt`: uid, gid, mode & 0777; 0400 root's by default) and
    /// returns its host path.
    pub(crate) fn write(
        &mut self,
        bytes: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<PathBuf, RunError> {
        let path = self.dir.path().join(format!("secret-{}", self.next));
        self.next += 1;
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        rustix::fs::fchown(
            file.file(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| io_at("chown", &path)(e.into()))?;
        rustix::fs::fchmod(file.file(), Mode::from_raw_mode(mode & 0o777))
            .map_err(|e| io_at("chmod", &path)(e.into()))?;
        Ok(path)
    }

    /// Removes the files, reporting errors (dropping ignores them).
    pub(crate) fn remove(self) -> Result<(), RunError> {
        let path = self.dir.path().to_path_buf();
        self.dir.remove().map_err(io_at("removing", &path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secrets = Secrets::new().with("token", "hunter2");
        let shown = format!("{secrets:?}");
        assert!(shown.contains("token"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn staged_files_are_private_and_go_away() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = Secrets::new().with("a", "x").with_dir(tmp.path());
        let mut staged = secrets.stage().unwrap();
        let dir = staged.dir.path().to_path_buf();
        assert_eq!(fs_err::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = staged.write(b"x", 0, 0, 0o400).unwrap();
        assert_eq!(fs_err::read(&file).unwrap(), b"x");
        assert_eq!(fs_err::metadata(&file).unwrap().mode() & 0o7777, 0o400);
        staged.remove().unwrap();
        assert!(!dir.exists());
    }
}
