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
    let Some(then) = parse_rfc3339(created) else {
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

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 3600 + tz[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123456789Z"),
            Some(1_709_208_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
