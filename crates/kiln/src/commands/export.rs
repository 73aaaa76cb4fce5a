//! `kiln export`: an image from the store as an OCI layout or a docker
//! archive, in the encoding `--output` asks for (kiln-build's exporters).

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use kiln_build::{Encoding, Output, OutputKind};
use kiln_image::Platform;

use super::resolve;
use crate::commands::pull::parse_platform;
use crate::context::Context;

/// Write an image from the store as an OCI layout or a docker archive.
#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The image in the store.
    image: String,
    /// `type=oci,dest=DIR|FILE.tar` or `type=docker,dest=FILE.tar` (`dest=-` for stdout),
    /// with buildx's `compression=`, `compression-level=` and `oci-mediatypes=`.
    #[arg(short, long, value_name = "SPEC")]
    output: String,
    /// For `type=docker` and a multi-platform image: which platform [default: this machine's].
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
}

pub(crate) fn run(ctx: &Context, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let output = Output::parse(&args.output)?;
    if !matches!(
        output.kind,
        OutputKind::Oci { .. } | OutputKind::Docker { .. }
    ) {
        bail!("kiln export writes type=oci or type=docker outputs");
    }
    let store = ctx.store()?;
    let runtime = ctx.runtime()?;
    ctx.fetch_layers(&store, &runtime);
    let (reference, target) = resolve(&store, &args.image)?;
    let platform = args.platform.unwrap_or_else(Platform::host);
    // Layers stay as they are stored unless the output asks otherwise: an
    // exported image has no "built" layers, so every layer it names is
    // converted to what `compression=` says.
    let asked = output.compression.is_some()
        || output.level.is_some()
        || output.oci_media_types.is_some()
        || output.rewrite_timestamp;
    let target = if asked {
        let images = kiln_build::stored_images(&store, &target)?;
        let mut stored = Encoding::default();
        if let Some(first) = images.first() {
            stored.format = if first.manifest.media_type == kiln_image::media::DOCKER_MANIFEST {
                kiln_image::media::Format::Docker
            } else {
                kiln_image::media::Format::Oci
            };
        }
        let mut encoding = output.encoding(&stored);
        encoding.force = true;
        if let Some(level) = encoding.level {
            kiln_image::compress::check_level(encoding.compression, level)?;
        }
        kiln_build::encode_image(&store, &target, &images, &encoding)?.0
    } else {
        target
    };
    match &output.kind {
        OutputKind::Oci { dest } => {
            kiln_build::write_oci(&store, dest, &reference, &target)?;
        }
        OutputKind::Docker { dest } => {
            kiln_build::write_docker(&store, dest, &reference, &target, &platform)?;
        }
        _ => unreachable!("checked above"),
    }
    Ok(ExitCode::SUCCESS)
}
