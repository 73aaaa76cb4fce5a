//! Files kiln writes for people and tools to read (a metadata file, a
//! report, a fixed Dockerfile): whole or not at all.

use std::fs::Permissions;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Writes `bytes` at `path` through a temp file beside it (named
/// `.kiln-<tag>-…`), given `permissions`, synced and renamed over it, so
/// that a reader never sees half of it. `what` names the file in errors
/// ("the metadata file").
pub(crate) fn write_whole(
    path: &Path,
    bytes: &[u8],
    permissions: Permissions,
    tag: &str,
    what: &str,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let context = || format!("writing {what}{}", path.display());
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".kiln-{tag}-"))
        .tempfile_in(dir)
        .with_context(context)?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().set_permissions(permissions))
        .and_then(|()| temp.as_file().sync_all())
        .with_context(context)?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(context)?;
    Ok(())
}
