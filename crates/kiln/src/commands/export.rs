//! `kiln export`, and the `--output` syntax it shares with `kiln build`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use kiln_image::docker_archive::{self, ArchiveImage};
use kiln_image::layout::{self, LayoutImage};
use kiln_image::media::Compression;
use kiln_image::{Platform, Reference, Store};

use super::resolve;
use crate::commands::pull::parse_platform;
use crate::context::Context;

/// Write an image from the store as an OCI layout or a docker archive.
#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The image in the store.
    image: String,
    /// `type=oci,dest=DIR|FILE.tar` or `type=docker,dest=FILE.tar` (`dest=-` for stdout).
    #[arg(short, long, value_name = "SPEC")]
    output: String,
    /// For `type=docker` and a multi-platform image: which platform [default: this machine's].
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
}

/// An `--output` as `docker buildx build` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    Oci {
        dest: Dest,
    },
    Docker {
        dest: Dest,
    },
    Local {
        dir: PathBuf,
    },
    Registry,
    /// `type=image`: tag in the store (with `push=true`, push too).
    Image {
        push: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dest {
    Dir(PathBuf),
    Tar(PathBuf),
    Stdout,
}

/// What an `--output` asks of the layers: buildx's `compression=` and
/// `compression-level=` (`None` where it does not say).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OutputCompression {
    pub(crate) compression: Option<Compression>,
    pub(crate) level: Option<i32>,
}

impl OutputCompression {
    fn is_set(&self) -> bool {
        self.compression.is_some() || self.level.is_some()
    }
}

/// Parses `type=oci,dest=out.tar` (a bare path means `type=local,dest=PATH`,
/// `-` means a tar to stdout, as buildx takes them).
pub(crate) fn parse_output(spec: &str) -> anyhow::Result<Output> {
    let (output, compression) = parse_output_with(spec)?;
    if compression.is_set() {
        bail!(
            "--output {spec}: compression= and compression-level= choose how kiln build \
             compresses the layers it makes; kiln export writes layers as they are stored"
        );
    }
    Ok(output)
}

/// [`parse_output`] for `kiln build`, which also takes the layer
/// compression from the spec.
pub(crate) fn parse_output_with(spec: &str) -> anyhow::Result<(Output, OutputCompression)> {
    let mut compression = OutputCompression::default();
    let output = parse_output_inner(spec, &mut compression)?;
    Ok((output, compression))
}

fn parse_output_inner(spec: &str, compression: &mut OutputCompression) -> anyhow::Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output::Docker { dest: Dest::Stdout }
        } else {
            Output::Local { dir: spec.into() }
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = None;
    let mut push = false;
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .with_context(|| format!("--output {spec}: {field:?} is not key=value"))?;
        match k.trim() {
            "type" => kind = Some(v.trim().to_string()),
            "dest" => dest = Some(v.trim().to_string()),
            "tar" => tar = Some(v.trim() == "true"),
            "push" => push = v.trim() == "true",
            "compression" => {
                compression.compression = Some(match v.trim() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::None,
                    "estargz" => bail!(
                        "--output {spec}: estargz is not supported (gzip, zstd, uncompressed)"
                    ),
                    other => bail!(
                        "--output {spec}: unknown compression {other:?} (gzip, zstd, uncompressed)"
                    ),
                })
            }
            "compression-level" => {
                compression.level = Some(v.trim().parse().with_context(|| {
                    format!("--output {spec}: compression-level {v:?} is not a number")
                })?)
            }
            "force-compression" => match v.trim() {
                "false" => {}
                "true" => bail!(
                    "--output {spec}: force-compression=true is not supported: kiln compresses \
                     the layers it builds as compression= says, and writes base image layers \
                     as they were pulled"
                ),
                other => bail!("--output {spec}: force-compression {other:?} is not true or false"),
            },
            // Accepted for compatibility with buildx; kiln names images with -t.
            "name" | "oci-mediatypes" | "annotation" => {}
            other => bail!("--output {spec}: unknown key {other:?}"),
        }
    }
    let dest_of = |dest: Option<String>, want_tar: bool| -> anyhow::Result<Dest> {
        let d = dest.with_context(|| format!("--output {spec}: dest= is required"))?;
        Ok(if d == "-" {
            Dest::Stdout
        } else if tar.unwrap_or(want_tar || d.ends_with(".tar")) {
            Dest::Tar(d.into())
        } else {
            Dest::Dir(d.into())
        })
    };
    match kind.as_deref() {
        Some("oci") => Ok(Output::Oci {
            dest: dest_of(dest, false)?,
        }),
        Some("docker") => match dest_of(dest, true)? {
            Dest::Dir(d) => bail!(
                "--output {spec}: a docker archive is a tar file, not a directory ({})",
                d.display()
            ),
            dest => Ok(Output::Docker { dest }),
        },
        Some("local") => Ok(Output::Local {
            dir: dest
                .with_context(|| format!("--output {spec}: dest= is required"))?
                .into(),
        }),
        Some("registry") => Ok(Output::Registry),
        Some("image") => Ok(Output::Image { push }),
        Some(other) => {
            bail!("--output {spec}: unknown type {other:?} (oci, docker, local, registry, image)")
        }
        None => bail!("--output {spec}: type= is required"),
    }
}

/// Writes `target` (named `reference`) to an OCI or docker output.
pub(crate) fn write_image(
    store: &Store,
    output: &Output,
    reference: &Reference,
    target: &kiln_image::document::Descriptor,
    platform: &Platform,
) -> anyhow::Result<()> {
    match output {
        Output::Oci { dest } => {
            let images = [LayoutImage::tagged(reference, target.clone())];
            match dest {
                Dest::Dir(dir) => layout::write_dir(store, dir, &images)?,
                Dest::Tar(path) => write_file(path, |f| Ok(layout::write_tar(store, f, &images)?))?,
                Dest::Stdout => {
                    let out = layout::write_tar(store, std::io::stdout().lock(), &images)?;
                    drop(out);
                }
            }
        }
        Output::Docker { dest } => {
            let images = [ArchiveImage {
                target: target.clone(),
                tags: vec![reference.clone()],
            }];
            match dest {
                Dest::Tar(path) => write_file(path, |f| {
                    Ok(docker_archive::write(store, f, &images, platform)?)
                })?,
                Dest::Stdout => {
                    let mut out =
                        docker_archive::write(store, std::io::stdout().lock(), &images, platform)?;
                    out.flush()?;
                }
                Dest::Dir(_) => unreachable!("parse_output refuses it"),
            }
        }
        other => bail!("{other:?} is not an image file output"),
    }
    Ok(())
}

/// Writes a file through a temporary name in the same directory, so a
/// failed export never leaves a half-written file under the final name.
fn write_file(
    path: &PathBuf,
    write: impl FnOnce(fs_err::File) -> anyhow::Result<fs_err::File>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-export-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let (file, tmp_path) = tmp.into_parts();
    let file = fs_err::File::from_parts(file, tmp_path.to_path_buf());
    let file = write(file)?;
    file.sync_all()?;
    drop(file);
    tmp_path
        .persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

pub(crate) fn run(ctx: &Context, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let output = parse_output(&args.output)?;
    let store = ctx.store()?;
    let (reference, target) = resolve(&store, &args.image)?;
    let platform = args.platform.unwrap_or_else(Platform::host);
    match &output {
        Output::Oci { .. } | Output::Docker { .. } => {
            write_image(&store, &output, &reference, &target, &platform)?
        }
        _ => bail!("kiln export writes type=oci or type=docker outputs"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildx() {
        assert_eq!(
            parse_output("type=oci,dest=out").unwrap(),
            Output::Oci {
                dest: Dest::Dir("out".into())
            }
        );
        assert_eq!(
            parse_output("type=oci,dest=out.tar").unwrap(),
            Output::Oci {
                dest: Dest::Tar("out.tar".into())
            }
        );
        assert_eq!(
            parse_output("type=oci,dest=o,tar=true").unwrap(),
            Output::Oci {
                dest: Dest::Tar("o".into())
            }
        );
        assert_eq!(
            parse_output("type=docker,dest=i.tar").unwrap(),
            Output::Docker {
                dest: Dest::Tar("i.tar".into())
            }
        );
        assert_eq!(
            parse_output("type=docker,dest=i").unwrap(),
            Output::Docker {
                dest: Dest::Tar("i".into())
            }
        );
        assert_eq!(
            parse_output("type=local,dest=d").unwrap(),
            Output::Local { dir: "d".into() }
        );
        assert_eq!(
            parse_output("out").unwrap(),
            Output::Local { dir: "out".into() }
        );
        assert_eq!(
            parse_output("-").unwrap(),
            Output::Docker { dest: Dest::Stdout }
        );
        assert_eq!(
            parse_output("type=image,push=true").unwrap(),
            Output::Image { push: true }
        );
        assert!(parse_output("type=nope,dest=x").is_err());
        assert!(parse_output("type=oci").is_err());
        assert!(parse_output("type=oci,dest=x,bogus=1").is_err());
    }

    #[test]
    fn compression_in_an_output_is_for_build_only() {
        let (output, c) =
            parse_output_with("type=registry,compression=zstd,compression-level=9").unwrap();
        assert_eq!(output, Output::Registry);
        assert_eq!(
            c,
            OutputCompression {
                compression: Some(Compression::Zstd),
                level: Some(9),
            }
        );
        let (_, c) = parse_output_with("type=oci,dest=o.tar,force-compression=false").unwrap();
        assert_eq!(c, OutputCompression::default());
        for bad in [
            "type=oci,dest=o,compression=brotli",
            "type=oci,dest=o,compression=estargz",
            "type=oci,dest=o,compression-level=high",
            "type=oci,dest=o,compression=zstd,force-compression=true",
        ] {
            assert!(parse_output_with(bad).is_err(), "{bad}");
        }
        let err = parse_output("type=oci,dest=o,compression=gzip").unwrap_err();
        assert!(err.to_string().contains("kiln export"), "{err}");
    }
}
