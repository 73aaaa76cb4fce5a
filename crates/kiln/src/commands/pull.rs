//! `kiln pull`.

use std::process::ExitCode;

use clap::Args;
use kiln_image::Platform;
use kiln_registry::{PullOptions, pull_image};

use super::parse_reference;
use crate::context::Context;

/// Download an image from a registry into the store.
#[derive(Args)]
pub(crate) struct PullArgs {
    /// The image: name[:tag] or name@digest.
    image: String,
    /// The platform to pick from a multi-platform image [default: this machine's].
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
    /// Pull every platform of a multi-platform image.
    #[arg(long, conflicts_with = "platform")]
    all_platforms: bool,
    /// Blobs downloaded at once.
    #[arg(long, default_value_t = kiln_registry::DEFAULT_CONCURRENCY)]
    concurrency: usize,
}

pub(crate) fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s)
}

pub(crate) fn run(ctx: &Context, args: PullArgs) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.image)?;
    let store = ctx.store()?;
    let client = ctx.client();
    let options = PullOptions {
        platform: args.platform.unwrap_or_else(Platform::host),
        all_platforms: args.all_platforms,
        concurrency: args.concurrency,
        // `kiln pull` is asked for the layers.
        lazy_layers: false,
    };
    let pulled = ctx
        .runtime()?
        .block_on(pull_image(&client, &store, &reference, &options))?;
    ctx.progress.note(
        None,
        format!(
            "{} blobs downloaded, {} already in the store",
            pulled.downloaded, pulled.reused
        ),
    );
    println!("Digest: {}", pulled.registry_digest);
    println!("Status: Downloaded {}", reference.familiar());
    println!("{reference}");
    Ok(ExitCode::SUCCESS)
}
