//! One module per subcommand.

pub(crate) mod build;
pub(crate) mod ci;
pub(crate) mod executor;
pub(crate) mod export;
pub(crate) mod history;
pub(crate) mod images;
pub(crate) mod imagetools;
pub(crate) mod import;
pub(crate) mod inspect;
pub(crate) mod lint;
pub(crate) mod load;
pub(crate) mod parse;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod run;
pub(crate) mod stage_key;
pub(crate) mod store;
pub(crate) mod tag;
mod tar_ahead;

use anyhow::Context as _;
use kiln_image::document::Descriptor;
use kiln_image::{Reference, Store};

/// Parses an image reference given on the command line.
pub(crate) fn parse_reference(s: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse(s)?.with_default_tag())
}

/// What a reference names in the store, or an error saying it is not there.
pub(crate) fn resolve(store: &Store, s: &str) -> anyhow::Result<(Reference, Descriptor)> {
    let reference = parse_reference(s)?;
    let desc = store
        .resolve(&reference)
        .with_context(|| format!("looking up {}", reference.familiar()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no such image: {} (see `kiln images`)",
                reference.familiar()
            )
        })?;
    Ok((reference, desc))
}
