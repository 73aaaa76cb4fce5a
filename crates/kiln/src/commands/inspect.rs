//! `kiln inspect`.

use std::process::ExitCode;

use clap::Args;
use kiln_image::Platform;
use kiln_image::document::{Descriptor, ImageConfig, ImageDocument};
use serde_json::{Value, json};

use super::resolve;
use crate::commands::pull::parse_platform;
use crate::context::Context;

/// Show an image's manifest and config as JSON.
#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The image in the store.
    image: String,
    /// For a multi-platform image, show only this platform.
    #[arg(long, value_parser = parse_platform)]
    platform: Option<Platform>,
}

fn document_json(bytes: &[u8]) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(bytes)?)
}

fn manifest_entry(store: &kiln_image::Store, desc: &Descriptor) -> anyhow::Result<Value> {
    let doc = store.read_image(desc)?;
    let ImageDocument::Manifest(manifest) = &doc else {
        anyhow::bail!("{} is not a manifest", desc.digest);
    };
    let config = store.read_document::<ImageConfig>(&manifest.value().config)?;
    Ok(json!({
        "Descriptor": desc,
        "Manifest": document_json(manifest.bytes())?,
        "Config": document_json(config.bytes())?,
    }))
}

pub(crate) fn run(ctx: &Context, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let (reference, desc) = resolve(&store, &args.image)?;
    let doc = store.read_image(&desc)?;
    let mut out = match (&doc, &args.platform) {
        (ImageDocument::Manifest(_), _) => manifest_entry(&store, &desc)?,
        (ImageDocument::Index(_), Some(platform)) => {
            let manifest = store.select_manifest(&desc, platform)?;
            manifest_entry(&store, &manifest.descriptor())?
        }
        (ImageDocument::Index(index), None) => {
            let mut manifests = Vec::new();
            for child in &index.value().manifests {
                // A partial pull has some platforms only.
                if store.contains(&child.digest)? {
                    manifests.push(manifest_entry(&store, child)?);
                } else {
                    manifests.push(json!({ "Descriptor": child, "Missing": true }));
                }
            }
            json!({
                "Descriptor": desc,
                "Index": document_json(index.bytes())?,
                "Manifests": manifests,
            })
        }
    };
    if let Value::Object(map) = &mut out {
        map.insert("Reference".into(), json!(reference.to_string()));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
