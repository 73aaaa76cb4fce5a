//! `kiln import`: a rootfs tarball becomes a one-layer image, as
//! `docker import` does.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use kiln_image::compress::{BlobWriter, CompressOptions, decompress_detect};
use kiln_image::document::{ContainerConfig, Document, History, ImageConfig, Manifest, RootFs};
use kiln_image::media::{Compression, Format};
use kiln_image::{Platform, Store};

use super::parse_reference;
use crate::commands::pull::parse_platform;
use crate::context::Context;

/// Create an image from a root filesystem tarball (gzip, zstd or plain).
#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The tarball (`-` reads standard input).
    tarball: String,
    /// The name to give the image.
    #[arg(short, long)]
    tag: String,
    /// The platform the image declares [default: this machine's].
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
    /// A comment for the image's history.
    #[arg(short, long)]
    message: Option<String>,
    /// How the layer is compressed in the store.
    #[arg(long, value_enum, default_value_t = LayerCompression::Gzip)]
    compression: LayerCompression,
    /// Docker schema 2 media types instead of OCI.
    #[arg(long)]
    docker_media_types: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayerCompression {
    Gzip,
    Zstd,
    None,
}

pub(crate) fn run(ctx: &Context, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.tag)?;
    let store = ctx.store()?;
    let input: Box<dyn Read + Send> = if args.tarball == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(fs_err::File::open(&args.tarball)?)
    };
    let compression = match args.compression {
        LayerCompression::Gzip => Compression::Gzip,
        LayerCompression::Zstd => Compression::Zstd,
        LayerCompression::None => Compression::None,
    };
    let format = if args.docker_media_types {
        Format::Docker
    } else {
        Format::Oci
    };
    let platform = args.platform.unwrap_or_else(Platform::host);
    let comment = args
        .message
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", args.tarball));
    let digest = import(
        ctx,
        &store,
        input,
        &args.tarball,
        compression,
        format,
        &platform,
        &comment,
        &reference,
    )?;
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn import(
    ctx: &Context,
    store: &Store,
    input: Box<dyn Read + Send>,
    name: &str,
    compression: Compression,
    format: Format,
    platform: &Platform,
    comment: &str,
    reference: &kiln_image::Reference,
) -> anyhow::Result<kiln_image::Digest> {
    let (_, mut tar) = decompress_detect(input).with_context(|| format!("reading {name}"))?;
    let task = ctx.progress.start(format!("import {name}"), None);
    let ingest = store.ingest()?;
    let mut writer = BlobWriter::new(ingest, &CompressOptions::new(compression))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = tar
            .read(&mut buf)
            .with_context(|| format!("reading {name}"))?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut writer, &buf[..n])?;
        ctx.progress.update(task, writer.uncompressed_len());
    }
    let (ingest, layer) = writer.finish()?;
    if layer.uncompressed_size == 0 {
        ctx.progress.fail(task, "empty input");
        bail!("{name} is empty: not a tarball");
    }
    let blob = ingest.commit()?;
    if blob.digest != layer.digest {
        bail!(
            "internal error: the layer digest {} differs from the stored blob's {}",
            layer.digest,
            blob.digest
        );
    }
    ctx.progress.finish(task, "imported");

    let created = created_time();
    let config = ImageConfig {
        created: Some(created.clone()),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: Some(ContainerConfig::default()),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: vec![History {
            created: Some(created),
            created_by: Some(format!("kiln import {name}")),
            comment: Some(comment.to_string()),
            ..History::default()
        }],
        ..ImageConfig::default()
    };
    let config = Document::with_media_type(format.config(), config);
    let config_desc = store.put_document(&config)?;
    let layer_desc = blob.descriptor(compression.layer_media_type(format));
    let manifest = Document::new(Manifest::new(format, config_desc, vec![layer_desc]));
    let manifest_desc = store.put_document(&manifest)?.with_platform(platform);
    store.tag(reference, &manifest_desc)?;
    Ok(manifest_desc.digest)
}

/// Now, or `SOURCE_DATE_EPOCH` when set (reproducible imports).
pub(crate) fn created_time() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    kiln_image::document::rfc3339(secs)
}
