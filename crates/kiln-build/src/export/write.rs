//! Writing an encoded image out: an OCI layout, a docker archive, or its
//! files. (Pushing is kiln-registry's `push_descriptor`.)

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_fs::CopyStats;
use kiln_fs::tar::{ApplyOptions, Owners, Whiteouts};
use kiln_image::compress::decompress;
use kiln_image::docker_archive::{self, ArchiveImage};
use kiln_image::document::{Descriptor, Manifest};
use kiln_image::layout::{self, LayoutImage, TarAhead as LayoutAhead};
use kiln_image::media::Compression;
use kiln_image::{Platform, Reference, Store};

use super::{Dest, ExportError};
use crate::engine::BuiltImage;

/// `type=oci`: an OCI image layout holding `target`, named `name`.
/// Returns how the blob bytes were copied (in the kernel where it can).
pub fn write_oci(
    store: &Store,
    dest: &Dest,
    name: &Reference,
    target: &Descriptor,
) -> Result<CopyStats, ExportError> {
    let images = [LayoutImage::tagged(name, target.clone())];
    Ok(match dest {
        Dest::Dir(dir) => layout::write_dir(store, dir, &images)?,
        Dest::Tar(path) => write_file(path, |f| Ok(layout::write_tar(store, f, &images)?))?,
        Dest::Stdout => {
            let out = layout::write_tar(store, std::io::stdout().lock(), &images)?;
            flush_stdout(out)?
        }
    })
}

/// `type=docker`: a docker archive of `target` (for an index, its image
/// for `platform`), named `name`, loadable by `docker load`. Returns how
/// the blob bytes were copied.
pub fn write_docker(
    store: &Store,
    dest: &Dest,
    name: &Reference,
    target: &Descriptor,
    platform: &Platform,
) -> Result<CopyStats, ExportError> {
    let images = [ArchiveImage {
        target: target.clone(),
        tags: vec![name.clone()],
    }];
    match dest {
        Dest::Tar(path) => write_file(path, |f| {
            Ok(docker_archive::write(store, f, &images, platform)?)
        }),
        Dest::Stdout => flush_stdout(docker_archive::write(
            store,
            std::io::stdout().lock(),
            &images,
            platform,
        )?),
        Dest::Dir(dir) => Err(ExportError::Spec {
            spec: format!("type=docker,dest={}", dir.display()),
            reason: "a docker archive is a tar file, not a directory".into(),
        }),
    }
}

fn flush_stdout(
    (mut out, stats): (std::io::StdoutLock<'_>, CopyStats),
) -> Result<CopyStats, ExportError> {
    out.flush().map_err(|source| ExportError::Io {
        path: "<stdout>".into(),
        source,
    })?;
    Ok(stats)
}

/// `type=local`: each image's files, its layers applied in order (one
/// directory per platform, `linux_arm64`, when there are several). With
/// `epoch` (`SOURCE_DATE_EPOCH`), every file written gets that time, as
/// BuildKit's local exporter does.
pub fn write_local(
    store: &Store,
    images: &[BuiltImage],
    dir: &Path,
    epoch: Option<i64>,
) -> Result<(), ExportError> {
    let multi = images.len() > 1;
    for image in images {
        let dest = if multi {
            dir.join(image.platform.to_string().replace('/', "_"))
        } else {
            dir.to_path_buf()
        };
        fs_err::create_dir_all(&dest).map_err(|source| ExportError::Io {
            path: dest.clone(),
            source,
        })?;
        let root = kiln_fs::Root::open(&dest).map_err(|e| ExportError::Io {
            path: dest.clone(),
            source: e.into(),
        })?;
        let mut opts = ApplyOptions::layer(Whiteouts::Apply);
        opts.fixed_time = epoch;
        if !rustix::process::geteuid().is_root() {
            opts.owners = Owners::Unchanged;
        }
        let manifest = store.read_document::<Manifest>(&image.manifest)?;
        for layer in &manifest.value().layers {
            let compression = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
                ExportError::UnknownLayer {
                    digest: layer.digest.clone(),
                    media_type: layer.media_type.clone(),
                }
            })?;
            let tar =
                decompress(store.open_blob(&layer.digest)?, compression).map_err(|source| {
                    ExportError::Convert {
                        layer: layer.digest.clone(),
                        source,
                    }
                })?;
            kiln_fs::tar::apply(tar, &root, &opts).map_err(|source| ExportError::Local {
                dir: dest.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// `type=oci` to a file, begun while the build runs: the blobs of the
/// image's finished bottom layers go into a temporary file beside `path`
/// as the build makes them ([`OciTarAhead::layers`], on a thread of the
/// caller's), and [`OciTarAhead::finish`] writes the rest and puts the
/// file in place. The bytes are [`write_oci`]'s. Dropped unfinished (the
/// build failed), it removes its temporary file.
pub struct OciTarAhead {
    path: PathBuf,
    tmp: tempfile::TempPath,
    ahead: LayoutAhead,
}

impl OciTarAhead {
    pub fn create(path: &Path) -> Result<OciTarAhead, ExportError> {
        let (file, tmp) = temp_beside(path)?;
        let ahead = LayoutAhead::new(file)?;
        Ok(OciTarAhead {
            path: path.to_path_buf(),
            tmp,
            ahead,
        })
    }

    /// Writes what it can of `layers`, the image's bottom layers so far
    /// (see [`LayoutAhead::layers`]); returns how many blobs are written.
    pub fn layers(&mut self, store: &Store, layers: &[Descriptor]) -> Result<usize, ExportError> {
        Ok(self.ahead.layers(store, layers)?)
    }

    /// Writes the rest of the layout of `target`, named `name`, and puts
    /// the file at its path.
    pub fn finish(
        self,
        store: &Store,
        name: &Reference,
        target: &Descriptor,
    ) -> Result<CopyStats, ExportError> {
        let images = [LayoutImage::tagged(name, target.clone())];
        let (file, stats) = self.ahead.finish(store, &images)?;
        persist(file, self.tmp, &self.path)?;
        Ok(stats)
    }
}

/// Writes a file through a temporary name in the same directory, so a
/// failed export never leaves a half-written file under the final name.
fn write_file(
    path: &Path,
    write: impl FnOnce(fs_err::File) -> Result<(fs_err::File, CopyStats), ExportError>,
) -> Result<CopyStats, ExportError> {
    let (file, tmp) = temp_beside(path)?;
    let (file, stats) = write(file)?;
    persist(file, tmp, path)?;
    Ok(stats)
}

/// A temporary file in `path`'s directory, removed when dropped.
fn temp_beside(path: &Path) -> Result<(fs_err::File, tempfile::TempPath), ExportError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(dir)
        .map_err(|source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let (file, tmp_path) = tmp.into_parts();
    let file = fs_err::File::from_parts(file, tmp_path.to_path_buf());
    Ok((file, tmp_path))
}

/// Makes `file` durable and renames it to `path`.
fn persist(file: fs_err::File, tmp: tempfile::TempPath, path: &Path) -> Result<(), ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    file.sync_all().map_err(io)?;
    drop(file);
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
