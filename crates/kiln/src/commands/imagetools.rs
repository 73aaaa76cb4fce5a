//! `kiln imagetools create` and `inspect`: indexes of images already in
//! registries, as `docker buildx imagetools` makes and shows them. The
//! merge job of a multi-platform CI build (docs/CI.md): each platform is
//! built and pushed by digest elsewhere, then combined here.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use kiln_image::document::{Annotation, ImageDocument, IndexSource, combine};
use kiln_image::{Digest, Reference};
use kiln_registry::{Repository, copy_manifest, read_index_source};

use super::parse_reference;
use crate::context::Context;
use crate::metadata::Metadata;

/// Combine and inspect images in registries (`docker buildx imagetools`).
#[derive(Subcommand)]
pub(crate) enum ImagetoolsCommand {
    Create(CreateArgs),
    Inspect(InspectArgs),
}

/// Push one index made of manifests and indexes already in registries.
///
/// An index source gives its entries, a manifest source gives itself with
/// the platform of its config. Entries are sorted by platform, then digest
/// (attestations after their image), so the same sources give the same
/// digest in any order; two images of one platform are an error. Images in
/// another repository of the destination's registry are linked there
/// (cross-repository mount), from another registry copied.
#[derive(Args)]
pub(crate) struct CreateArgs {
    /// `REPO@sha256:…` or `REPO:TAG`; a bare `sha256:…` means that digest in the one
    /// repository the command names.
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    /// Where to push the index (repeatable).
    #[arg(short, long = "tag", value_name = "REF")]
    tags: Vec<String>,
    /// Add the entries of the index at the first --tag to the sources.
    #[arg(long)]
    append: bool,
    /// `index:KEY=VALUE` (the index) or `manifest-descriptor[PLATFORM]:KEY=VALUE` (its
    /// entries) (repeatable).
    #[arg(long = "annotation", value_name = "ANNOTATION")]
    annotations: Vec<String>,
    /// Print the index instead of pushing anything.
    #[arg(long)]
    dry_run: bool,
    /// Write the index's digest, descriptor and repositories as JSON to this file.
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
}

/// Show a manifest or index in a registry.
#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The image: `REPO[:TAG]` or `REPO@sha256:…`.
    reference: String,
    /// Print the document's bytes exactly as the registry has them.
    #[arg(long)]
    raw: bool,
}

pub(crate) fn run(ctx: &Context, command: ImagetoolsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ImagetoolsCommand::Create(args) => create(ctx, args),
        ImagetoolsCommand::Inspect(args) => inspect(ctx, args),
    }
}

/// A source as given: a reference, or a digest in the one repository named.
enum Given {
    Reference(Reference),
    Digest(Digest),
}

fn parse_source(s: &str) -> anyhow::Result<Given> {
    if s.starts_with("sha256:") {
        let digest = s
            .parse()
            .map_err(|e| anyhow::anyhow!("source {s:?}: {e}"))?;
        return Ok(Given::Digest(digest));
    }
    let reference = parse_reference(s).with_context(|| format!("source {s:?}"))?;
    Ok(Given::Reference(reference))
}

/// Each source's reference: a bare digest takes the only repository the
/// tags and sources name, as buildx infers it.
fn resolve_sources(
    given: Vec<(String, Given)>,
    tags: &[Reference],
) -> anyhow::Result<Vec<(String, Reference)>> {
    let repositories: BTreeSet<String> = tags
        .iter()
        .map(Reference::name)
        .chain(given.iter().filter_map(|(_, g)| match g {
            Given::Reference(r) => Some(r.name()),
            Given::Digest(_) => None,
        }))
        .collect();
    let only = match repositories.len() {
        1 => Some(repositories.iter().next().expect("one")),
        _ => None,
    };
    given
        .into_iter()
        .map(|(written, g)| match g {
            Given::Reference(r) => Ok((written, r)),
            Given::Digest(digest) => {
                let Some(repository) = only else {
                    bail!(
                        "source {written}: a bare digest needs one repository to be in, and the \
                         command names {}: give REPO@{digest}",
                        if repositories.is_empty() {
                            "none".to_string()
                        } else {
                            repositories.iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    )
                };
                let mut r = Reference::parse(repository)?;
                r.digest = Some(digest);
                Ok((r.familiar(), r))
            }
        })
        .collect()
}

fn create(ctx: &Context, args: CreateArgs) -> anyhow::Result<ExitCode> {
    if !args.dry_run && args.tags.is_empty() {
        bail!("nowhere to push the index: give -t/--tag, or --dry-run to print it");
    }
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| parse_reference(t))
        .collect::<anyhow::Result<_>>()?;
    let mut given = Vec::new();
    let appended = args.append.then(|| args.tags.first()).flatten();
    if let Some(first) = appended {
        given.push((first.clone(), Given::Reference(tags[0].clone())));
    }
    for s in &args.sources {
        given.push((s.clone(), parse_source(s)?));
    }
    let sources = resolve_sources(given, &tags)?;
    let annotations: Vec<Annotation> = args
        .annotations
        .iter()
        .map(|a| Annotation::parse(a))
        .collect::<Result<_, _>>()?;

    let runtime = ctx.runtime()?;
    let client = ctx.client();
    let read: Vec<(Reference, IndexSource)> = runtime.block_on(async {
        let mut read = Vec::new();
        for (written, reference) in &sources {
            // The registry's errors name the reference already.
            let result = read_index_source(&client, reference, written).await;
            let source = match appended {
                Some(tag) if tag == written => {
                    result.with_context(|| format!("--append reads the index at {tag}"))?
                }
                _ => result?,
            };
            read.push((reference.clone(), source));
        }
        anyhow::Ok(read)
    })?;
    let documents: Vec<IndexSource> = read.iter().map(|(_, s)| s.clone()).collect();
    let index = combine(&documents, &annotations)?;
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        out.write_all(index.bytes())?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }

    runtime.block_on(async {
        // Each destination repository gets the images once, however many
        // of its tags are pushed.
        let mut done: BTreeSet<String> = BTreeSet::new();
        for tag in &tags {
            let to = Repository::of(tag);
            if done.insert(tag.name()) {
                for (reference, source) in &read {
                    let from = Repository::of(reference);
                    if from == to {
                        continue;
                    }
                    let entries = match &source.document {
                        ImageDocument::Manifest(m) => vec![m.descriptor()],
                        ImageDocument::Index(i) => i.value().manifests.clone(),
                    };
                    for entry in &entries {
                        let copied = copy_manifest(&client, &from, &to, entry)
                            .await
                            .with_context(|| {
                                format!(
                                    "copying {} from {} to {}",
                                    entry.digest,
                                    source.name,
                                    tag.familiar()
                                )
                            })?;
                        ctx.progress.note(
                            None,
                            format!(
                                "copied {} from {} to {}: {} blobs mounted, {} uploaded, {} already there",
                                entry.digest,
                                source.name,
                                tag.name(),
                                copied.mounted,
                                copied.uploaded,
                                copied.existed
                            ),
                        );
                    }
                }
            }
            let digest = client
                .put_manifest(
                    tag,
                    index.media_type(),
                    bytes::Bytes::copy_from_slice(index.bytes()),
                )
                .await
                .with_context(|| format!("pushing the index to {}", tag.familiar()))?;
            ctx.progress
                .note(None, format!("pushed {}: digest: {digest}", tag.familiar()));
        }
        anyhow::Ok(())
    })?;

    if let Some(path) = &args.metadata_file {
        let repositories: Vec<String> = tags
            .iter()
            .map(Reference::name)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Metadata::of_index(&index.descriptor(), &repositories).write(path)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(ctx: &Context, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.reference)?;
    let client = ctx.client();
    // The registry's errors name the reference.
    let fetched = ctx.runtime()?.block_on(client.get_manifest(&reference))?;
    let mut out = std::io::stdout().lock();
    if args.raw {
        // The bytes alone, no newline: their sha256 is the digest.
        out.write_all(&fetched.bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let document = ImageDocument::parse(&fetched.media_type, fetched.bytes.to_vec())
        .with_context(|| format!("inspecting {}", reference.familiar()))?;
    out.write_all(summary(&reference, &fetched.media_type, &fetched.digest, &document).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// What buildx's `imagetools inspect` prints without `--format`: name,
/// media type and digest, and an index's entries with their platforms.
fn summary(
    reference: &Reference,
    media_type: &str,
    digest: &Digest,
    doc: &ImageDocument,
) -> String {
    let mut out = aligned(&[
        ("Name:", reference.to_string()),
        ("MediaType:", media_type.to_string()),
        ("Digest:", digest.to_string()),
    ]);
    let ImageDocument::Index(index) = doc else {
        return out;
    };
    out += &aligned(&[("", String::new()), ("Manifests:", String::new())]);
    let mut rows: Vec<(&str, String)> = Vec::new();
    for (i, m) in index.value().manifests.iter().enumerate() {
        if i > 0 {
            rows.push(("", String::new()));
        }
        let name = Reference {
            digest: Some(m.digest.clone()),
            ..reference.clone()
        };
        rows.push(("  Name:", name.to_string()));
        rows.push(("  MediaType:", m.media_type.clone()));
        if let Some(p) = &m.platform {
            rows.push(("  Platform:", p.normalized().to_string()));
            if let Some(v) = &p.os_version {
                rows.push(("  OSVersion:", v.clone()));
            }
            if !p.os_features.is_empty() {
                rows.push(("  OSFeatures:", p.os_features.join(", ")));
            }
        }
        if !m.urls.is_empty() {
            rows.push(("  URLs:", m.urls.join(", ")));
        }
        if !m.annotations.is_empty() {
            rows.push(("  Annotations:", String::new()));
            out += &aligned(&rows);
            rows.clear();
            let keys: Vec<(String, String)> = m
                .annotations
                .iter()
                .map(|(k, v)| (format!("    {k}:"), v.clone()))
                .collect();
            let keys: Vec<(&str, String)> =
                keys.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            out += &aligned(&keys);
        }
    }
    out += &aligned(&rows);
    out
}

/// Rows of `label value`, the values in one column (Go's tabwriter with
/// a padding of one, as buildx prints).
fn aligned(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(label, value)| format!("{label:width$}{value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::document::{Descriptor, Document, Index};
    use kiln_image::media::{self, Format};

    #[test]
    fn a_bare_digest_takes_the_only_repository_named() {
        let tag = parse_reference("localhost:5000/app:multi").unwrap();
        let d = Digest::of(b"x");
        let given = vec![
            (d.to_string(), Given::Digest(d.clone())),
            (
                "localhost:5000/app@".to_string() + &d.to_string(),
                parse_source(&format!("localhost:5000/app@{d}")).unwrap(),
            ),
        ];
        let resolved = resolve_sources(given, std::slice::from_ref(&tag)).unwrap();
        assert_eq!(resolved[0].1.to_string(), format!("localhost:5000/app@{d}"));
        // Two repositories: which one is meant cannot be told.
        let other = parse_reference("localhost:5000/other:1").unwrap();
        let err = resolve_sources(
            vec![(d.to_string(), Given::Digest(d.clone()))],
            &[tag, other],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("localhost:5000/app, localhost:5000/other"),
            "{err}"
        );
        assert!(parse_source("sha256:nothex").is_err());
    }

    #[test]
    fn the_summary_reads_like_buildx() {
        let reference = parse_reference("localhost:5000/app:multi").unwrap();
        let child = Descriptor::new(media::OCI_MANIFEST, Digest::of(b"m"), 10)
            .with_platform(&kiln_image::Platform::parse("linux/arm/v7").unwrap());
        let index = Document::new(Index::new(Format::Oci, vec![child]));
        let text = summary(
            &reference,
            index.media_type(),
            index.digest(),
            &ImageDocument::Index(index.clone()),
        );
        let expected = format!(
            "Name:      localhost:5000/app:multi\n\
             MediaType: application/vnd.oci.image.index.v1+json\n\
             Digest:    {}\n           \nManifests: \n\
             \x20 Name:      localhost:5000/app:multi@{}\n\
             \x20 MediaType: application/vnd.oci.image.manifest.v1+json\n\
             \x20 Platform:  linux/arm/v7\n",
            index.digest(),
            Digest::of(b"m")
        );
        assert_eq!(text, expected);
    }
}
