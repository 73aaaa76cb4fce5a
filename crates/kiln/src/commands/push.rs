//! `kiln push`.

use std::process::ExitCode;

use clap::Args;
use kiln_registry::push_image;

use super::parse_reference;
use crate::context::Context;

/// Upload an image from the store to a registry.
#[derive(Args)]
pub(crate) struct PushArgs {
    /// The image in the store.
    image: String,
    /// Where to push it [default: the image's own name].
    destination: Option<String>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = kiln_registry::DEFAULT_CONCURRENCY)]
    concurrency: usize,
}

pub(crate) fn run(ctx: &Context, args: PushArgs) -> anyhow::Result<ExitCode> {
    let source = parse_reference(&args.image)?;
    let destination = match &args.destination {
        Some(d) => parse_reference(d)?,
        None => source.clone(),
    };
    let store = ctx.store()?;
    let client = ctx.client();
    let pushed = ctx.runtime()?.block_on(push_image(
        &client,
        &store,
        &source,
        &destination,
        args.concurrency,
    ))?;
    ctx.progress.note(
        None,
        format!(
            "{} blobs uploaded, {} already there, {} mounted",
            pushed.uploaded, pushed.existed, pushed.mounted
        ),
    );
    println!("{}: digest: {}", destination.familiar(), pushed.digest);
    Ok(ExitCode::SUCCESS)
}
