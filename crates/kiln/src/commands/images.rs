//! `kiln images`.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use kiln_image::document::ImageDocument;
use kiln_image::{DOCKER_HUB, Store};
use serde::Serialize;

use crate::context::Context;
use crate::progress::human_bytes;

/// List the images in the store.
#[derive(Args)]
pub(crate) struct ImagesArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Only the image IDs.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Serialize)]
struct Row {
    repository: String,
    tag: String,
    digest: String,
    media_type: String,
    platforms: Vec<String>,
    created: Option<String>,
    size: u64,
}

/// Bytes of the blobs an image is made of (what `docker images` calls its size).
fn image_size(store: &Store, desc: &kiln_image::document::Descriptor) -> u64 {
    let mut size = desc.size;
    if let Ok(doc) = store.read_image(desc) {
        for child in doc.children() {
            size += child.size;
            if let ImageDocument::Index(_) = doc
                && let Ok(inner) = store.read_image(child)
            {
                size += inner.children().iter().map(|d| d.size).sum::<u64>();
            }
        }
    }
    size
}

pub(crate) fn run(ctx: &Context, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let tags = store.tags()?;
    let mut rows = Vec::new();
    for (reference, desc) in &tags {
        let record = store.read(|r| r.image(&desc.digest))?;
        let repository = if reference.registry == DOCKER_HUB {
            reference
                .repository
                .strip_prefix("library/")
                .unwrap_or(&reference.repository)
                .to_string()
        } else {
            reference.name()
        };
        rows.push(Row {
            repository,
            tag: reference.tag.clone().unwrap_or_else(|| "<none>".into()),
            digest: desc.digest.to_string(),
            media_type: desc.media_type.clone(),
            platforms: record
                .as_ref()
                .map(|r| r.platforms.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            created: record.and_then(|r| r.created),
            size: image_size(&store, desc),
        });
    }
    if args.quiet {
        for row in &rows {
            println!("{}", &row.digest["sha256:".len()..][..12]);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            let mut lines = vec![[
                "REPOSITORY".to_string(),
                "TAG".into(),
                "IMAGE ID".into(),
                "CREATED".into(),
                "SIZE".into(),
                "PLATFORMS".into(),
            ]];
            for row in &rows {
                lines.push([
                    row.repository.clone(),
                    row.tag.clone(),
                    row.digest["sha256:".len()..][..12].to_string(),
                    row.created
                        .as_deref()
                        .map(ago)
                        .unwrap_or_else(|| "N/A".into()),
                    human_bytes(row.size),
                    row.platforms.join(","),
                ]);
            }
            let widths: Vec<usize> = (0..6)
                .map(|i| {
                    lines
                        .iter()
                        .map(|l| l[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for line in lines {
                let cells: Vec<String> = line
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", cells.join("   ").trim_end());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "3 days ago" from an RFC 3339 time, as `docker images` shows it.
fn ago(created: &str) -> String {
    let Some(then) = kiln_image::document::parse_rfc3339(created) else {
        return created.to_string();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secs = (now - then).max(0);
    let (n, unit) = match secs {
        s if s < 60 => return "Less than a minute ago".into(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 14 => (s / 86_400, "day"),
        s if s < 86_400 * 60 => (s / (86_400 * 7), "week"),
        s if s < 86_400 * 730 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}
