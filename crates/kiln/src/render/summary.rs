//! The table printed when a build ends: every step, what it cost, what
//! it made; then the totals.
//!
//! ```text
//! STEP  STAGE  INSTRUCTION              TIME  STATUS      LAYER
//! #1    build  FROM golang:1.22            -  CACHED          -
//! #2    build  RUN go build ./...      12.3s  run      12.1 MiB
//! #3    app    COPY --from=build /o…    0.1s  run       3.0 MiB
//! #4    app    CMD ["/app/server"]         -  config          -
//! 4 steps: 2 run, 1 cached, 1 config only in 14.1s
//! image sha256:3f1c…
//! ```

use std::time::Duration;

use super::steps::{Status, Steps};
use super::text;
use crate::progress::human_bytes;

/// The width laid out for when the output is not a terminal.
pub(super) const PLAIN_WIDTH: usize = 120;

/// The instruction column never gets narrower than this (the table may
/// then be wider than the terminal) nor wider than this.
const INSTRUCTION_MIN: usize = 20;
const INSTRUCTION_MAX: usize = 60;

pub(super) fn render(
    steps: &Steps,
    image: Option<&str>,
    total: Duration,
    columns: usize,
) -> Vec<String> {
    let mut rows: Vec<[String; 6]> = Vec::new();
    let (mut run, mut cached, mut config, mut failed, mut not_run) = (0, 0, 0, 0, 0);
    for step in steps.iter() {
        let (time, status) = match step.status {
            Status::Cached => {
                cached += 1;
                ("-".to_string(), "CACHED")
            }
            Status::Done => {
                run += 1;
                (text::duration(step.duration.unwrap_or_default()), "run")
            }
            Status::Config => {
                config += 1;
                ("-".to_string(), "config")
            }
            Status::Failed => {
                failed += 1;
                (text::duration(step.duration.unwrap_or_default()), "FAILED")
            }
            Status::Running => {
                not_run += 1;
                ("-".to_string(), "stopped")
            }
            Status::Pending => {
                not_run += 1;
                ("-".to_string(), "not run")
            }
        };
        rows.push([
            format!("#{}", step.id),
            steps.stage_name(step),
            step.text.clone(),
            time,
            status.to_string(),
            step.layer_size.map_or_else(|| "-".to_string(), human_bytes),
        ]);
    }
    let header = ["STEP", "STAGE", "INSTRUCTION", "TIME", "STATUS", "LAYER"].map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(text::width(cell));
        }
    }
    let others: usize = widths
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, w)| w + 2)
        .sum();
    widths[2] = widths[2]
        .min(columns.saturating_sub(others + 1))
        .clamp(INSTRUCTION_MIN, INSTRUCTION_MAX);

    let mut lines = vec![String::new()];
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| match i {
                // Times and sizes right-aligned, so their units line up.
                3 | 5 => format!("{}{cell}", " ".repeat(w.saturating_sub(text::width(cell)))),
                2 => text::pad(&text::truncate(cell, w), w),
                _ => text::pad(cell, w),
            })
            .collect();
        lines.push(cells.join("  ").trim_end().to_string());
    }

    let noun = if steps.len() == 1 { "step" } else { "steps" };
    let mut totals = format!("{} {noun}: {run} run, {cached} cached", steps.len());
    if config > 0 {
        totals.push_str(&format!(", {config} config only"));
    }
    if failed > 0 {
        totals.push_str(&format!(", {failed} failed"));
    }
    if not_run > 0 {
        totals.push_str(&format!(", {not_run} not run"));
    }
    totals.push_str(&format!(" in {}", text::duration(total)));
    lines.push(totals);
    if let Some(image) = image {
        lines.push(format!("image {image}"));
    }
    lines
}
