//! `kiln load`: an OCI layout (directory or tar) or a docker archive
//! (`docker save` output, possibly compressed) into the store.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use kiln_image::compress::decompress_detect;
use kiln_image::docker_archive;
use kiln_image::layout::{self, LayoutImage};
use kiln_image::media::Format;
use kiln_image::{Reference, Store};

use crate::context::Context;

/// Load images from an OCI layout or a docker archive.
#[derive(Args)]
pub(crate) struct LoadArgs {
    /// A directory with an OCI layout, or a tar file (`-` for standard input).
    input: String,
}

/// Which kind of archive a tar is, from its top-level names.
enum Kind {
    DockerArchive,
    OciLayout,
}

fn sniff(file: &mut fs_err::File, name: &str) -> anyhow::Result<Kind> {
    let (mut manifest, mut layout) = (false, false);
    {
        let (_, tar) = decompress_detect(&mut *file).with_context(|| format!("reading {name}"))?;
        let mut archive = tar::Archive::new(tar);
        for entry in archive
            .entries()
            .with_context(|| format!("{name} is not a tar archive"))?
        {
            let entry = entry.with_context(|| format!("reading {name}"))?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            manifest |= path == "manifest.json";
            layout |= path == "oci-layout";
        }
    }
    file.seek(SeekFrom::Start(0))?;
    // `docker save` from Docker 25+ writes both: prefer its manifest.json,
    // which carries the tags.
    match (manifest, layout) {
        (true, _) => Ok(Kind::DockerArchive),
        (false, true) => Ok(Kind::OciLayout),
        (false, false) => bail!(
            "{name} is neither a docker archive (no manifest.json) nor an OCI layout (no oci-layout)"
        ),
    }
}

/// The reference a layout entry names, if it names a whole one.
fn layout_reference(image: &LayoutImage) -> Option<Reference> {
    image
        .reference
        .clone()
        .or_else(|| image.name.as_deref().and_then(|n| Reference::parse(n).ok()))
}

fn tag_layout_images(store: &Store, images: &[LayoutImage]) -> anyhow::Result<()> {
    for image in images {
        match layout_reference(image) {
            Some(reference) => {
                store.tag(&reference, &image.target)?;
                println!("Loaded image: {}", reference.familiar());
            }
            None => println!("Loaded image ID: {}", image.target.digest),
        }
    }
    Ok(())
}

pub(crate) fn run(ctx: &Context, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let path = Path::new(&args.input);
    if path.is_dir() {
        if !path.join("oci-layout").exists() {
            bail!(
                "{} is a directory without an oci-layout file: not an OCI layout",
                path.display()
            );
        }
        let images = layout::read_dir(&store, path)?;
        tag_layout_images(&store, &images)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Standard input is read twice (sniff, then load): spool it first.
    let (mut file, _spool) = if args.input == "-" {
        let spool = tempfile::NamedTempFile::new_in(store.root())
            .context("creating a spool file in the store")?;
        let mut file = fs_err::File::from_parts(spool.reopen()?, spool.path().to_path_buf());
        std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading standard input")?;
        file.seek(SeekFrom::Start(0))?;
        (file, Some(spool))
    } else {
        (fs_err::File::open(path)?, None)
    };
    let task = ctx.progress.start(
        format!("load {}", args.input),
        file.metadata().ok().map(|m| m.len()),
    );
    let kind = sniff(&mut file, &args.input)?;
    let (_, tar) = decompress_detect(&mut file as &mut (dyn Read + Send))?;
    match kind {
        Kind::DockerArchive => {
            let loaded = docker_archive::read(&store, tar, Format::Oci)?;
            ctx.progress.finish(task, "loaded");
            for image in loaded {
                if image.tags.is_empty() {
                    println!("Loaded image ID: {}", image.manifest.digest);
                }
                for tag in &image.tags {
                    store.tag(tag, &image.manifest)?;
                    println!("Loaded image: {}", tag.familiar());
                }
            }
        }
        Kind::OciLayout => {
            let images = layout::read_tar(&store, tar)?;
            ctx.progress.finish(task, "loaded");
            tag_layout_images(&store, &images)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
