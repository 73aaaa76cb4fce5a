//! `kiln tag` and `kiln rmi`.

use std::process::ExitCode;

use clap::Args;

use super::{parse_reference, resolve};
use crate::context::Context;

/// Give an image in the store another name.
#[derive(Args)]
pub(crate) struct TagArgs {
    /// The image (name[:tag] or name@digest).
    source: String,
    /// The new name.
    target: String,
}

/// Remove names from images; their blobs go at the next `kiln prune`.
#[derive(Args)]
pub(crate) struct RmiArgs {
    #[arg(required = true)]
    images: Vec<String>,
}

pub(crate) fn run_tag(ctx: &Context, args: TagArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let (_, desc) = resolve(&store, &args.source)?;
    let target = parse_reference(&args.target)?;
    store.tag(&target, &desc)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_rmi(ctx: &Context, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let mut failed = false;
    for name in &args.images {
        let reference = parse_reference(name)?;
        match store.untag(&reference)? {
            Some(desc) => println!("Untagged: {} ({})", reference.familiar(), desc.digest),
            None => {
                eprintln!("error: no such image: {}", reference.familiar());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
