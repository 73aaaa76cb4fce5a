//! What `from=` of a bind or cache mount names: the build context, a
//! stage, an image. The engine knows them; the step only needs a
//! directory to read and a key that names its contents.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::RunError;

/// Resolves the `from=` of `RUN --mount` to a read-only directory.
/// Implemented by the engine (context directory, stage snapshots mounted
/// with [`Snapshotter::mount_readonly`](crate::Snapshotter::mount_readonly),
/// images); [`DirSources`] is a plain one.
pub trait MountSources: Sync {
    /// `from` as written (`None`: the build context). Called once per
    /// mount; the returned source lives until the step is over.
    fn resolve(&self, from: Option<&str>) -> Result<MountSource, RunError>;
}

/// A directory a mount reads from, kept available as long as this value
/// lives (a read-only snapshot mount can ride along as its guard).
pub struct MountSource {
    root: PathBuf,
    key: String,
    _guard: Option<Box<dyn Any + Send>>,
}

impl fmt::Debug for MountSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountSource")
            .field("root", &self.root)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl MountSource {
    /// `root`, whose contents `key` names (a stage's cache key or chain
    /// ID, an image's digest, a context digest): a cache mount seeded from
    /// it is a different cache when the key changes.
    pub fn new(root: impl Into<PathBuf>, key: impl Into<String>) -> MountSource {
        MountSource {
            root: root.into(),
            key: key.into(),
            _guard: None,
        }
    }

    /// Keeps `guard` (e.g. a [`ReadOnlyMount`](crate::snapshot::ReadOnlyMount))
    /// alive until the step no longer needs the directory.
    pub fn with_guard(mut self, guard: impl Any + Send) -> MountSource {
        self._guard = Some(Box::new(guard));
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Plain directories: the context, and named stages or images (names
/// matched case-insensitively, as stage names are). Keys are the paths.
#[derive(Debug, Clone)]
pub struct DirSources {
    context: PathBuf,
    named: BTreeMap<String, PathBuf>,
}

impl DirSources {
    pub fn new(context: impl Into<PathBuf>) -> DirSources {
        DirSources {
            context: context.into(),
            named: BTreeMap::new(),
        }
    }

    /// `from=name` reads `dir`.
    pub fn with(mut self, name: &str, dir: impl Into<PathBuf>) -> DirSources {
        self.named.insert(name.to_lowercase(), dir.into());
        self
    }
}

impl MountSources for DirSources {
    fn resolve(&self, from: Option<&str>) -> Result<MountSource, RunError> {
        let dir = match from {
            None => &self.context,
            Some(name) => self
                .named
                .get(&name.to_lowercase())
                .ok_or_else(|| RunError::mount_from(name, "no such stage or image"))?,
        };
        Ok(MountSource::new(dir, format!("dir:{}", dir.display())))
    }
}
