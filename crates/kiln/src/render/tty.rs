//! `--progress=tty`: a live view at the bottom of the terminal, redrawn in
//! place, with finished steps printed once above it, where they scroll
//! away as terminal output does:
//!
//! ```text
//! ✔ [build 1/4] FROM docker.io/library/golang:1.22            CACHED
//! ✔ [build 2/4] COPY . /src                                     0.2s
//! [+] Building 14.1s (2/6)
//! ⠹ [build 3/4] RUN go build ./...                             12.3s
//!     compile: github.com/x/y
//! ⠹ [app 2/3] RUN apt-get install -y ca-certificates            3.2s
//!     Unpacking ca-certificates (20230311) ...
//! ```
//!
//! The live part is at most as tall as the terminal (minus one row), and
//! no line of it is wider than the terminal (minus one column): a
//! wrapped or scrolled-out line would put the cursor somewhere the next
//! redraw does not expect. Only ANSI sequences every terminal has are
//! used: cursor up, erase below.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kiln_build::{Event, StepId};

use super::steps::{Status, Step, Steps};
use super::{Output, TermSize, failure_block, text};

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// When the terminal's size is unknown.
const DEFAULT_SIZE: TermSize = TermSize {
    columns: 80,
    rows: 24,
};

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const BLUE: &str = "\x1b[34m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// What is on the screen.
#[derive(Debug, Default)]
pub(super) struct Screen {
    /// Lines of the live part drawn last (the cursor is on the line below).
    live: usize,
    /// Lines to print above the live part at the next draw.
    pending: Vec<String>,
    /// Steps whose final line was printed.
    committed: HashSet<StepId>,
}

impl Screen {
    pub(super) fn commit(&mut self, lines: Vec<String>) {
        self.pending.extend(lines);
    }

    /// Takes in an event; true if the screen must be redrawn now (a line
    /// is to be printed above the live part), not only at the next tick.
    pub(super) fn event(
        &mut self,
        steps: &Steps,
        event: &Event,
        size: Option<TermSize>,
        color: bool,
    ) -> bool {
        let columns = size.unwrap_or(DEFAULT_SIZE).columns;
        match event {
            Event::StepCached { step, .. }
            | Event::StepDone { step, .. }
            | Event::StepFailed { step, .. } => {
                let Some(s) = steps.find(*step) else {
                    return false;
                };
                if !self.committed.insert(*step) {
                    return false;
                }
                let mut lines = vec![final_line(steps, s, columns, color)];
                if s.status == Status::Failed {
                    lines.extend(failure_block(steps, s).into_iter().map(|l| {
                        if color && l.starts_with("ERROR") {
                            format!("{RED}{l}{RESET}")
                        } else {
                            l
                        }
                    }));
                }
                self.commit(lines);
                true
            }
            Event::StepDiagnosis {
                text: diagnosis, ..
            } => {
                let mut lines = diagnosis.lines().map(text::printable);
                let headline = lines.next().unwrap_or_default();
                let mut block = vec![paint(color, YELLOW, &format!("! {headline}"))];
                block.extend(lines);
                self.commit(block);
                true
            }
            Event::StepRetry {
                step,
                attempt,
                max,
                reason,
                delay_ms,
            } => {
                self.committed.remove(step);
                let line = format!(
                    "↻ {}: attempt {attempt}/{max} in {}: {}",
                    steps.label(*step),
                    text::seconds(Duration::from_millis(*delay_ms)),
                    text::printable(reason)
                );
                self.commit(vec![paint(color, YELLOW, &line)]);
                true
            }
            Event::Warning { message, line } => {
                let text = match line {
                    Some(n) => format!("WARNING: {message} (line {n})"),
                    None => format!("WARNING: {message}"),
                };
                self.commit(vec![paint(color, YELLOW, &text)]);
                true
            }
            Event::Note { message } => {
                self.commit(vec![text::printable(message)]);
                true
            }
            _ => false,
        }
    }

    /// Replaces the live part with the current frame (with nothing if
    /// `last`), printing the pending lines above it. One write, so the
    /// terminal never shows half a frame.
    pub(super) fn draw(
        &mut self,
        steps: &Steps,
        out: &mut Output,
        size: Option<TermSize>,
        start: Instant,
        now: Instant,
        last: bool,
    ) {
        let size = size.unwrap_or(DEFAULT_SIZE);
        let frame = if last {
            Vec::new()
        } else {
            frame(steps, size, start, now, out.color)
        };
        let mut buf = String::new();
        if self.live > 0 {
            // Back to the first column of the first live line.
            buf.push_str(&format!("\r\x1b[{}A", self.live));
        }
        // Erase from the cursor to the end of the screen.
        buf.push_str("\x1b[J");
        for line in self.pending.drain(..).chain(frame.iter().cloned()) {
            buf.push_str(&line);
            buf.push('\n');
        }
        self.live = frame.len();
        out.write(&buf);
    }
}

/// The one line a finished step collapses to.
fn final_line(steps: &Steps, step: &Step, columns: usize, color: bool) -> String {
    let (icon, icon_color, right) = match step.status {
        Status::Cached => ('✔', BLUE, "CACHED".to_string()),
        Status::Config => ('✔', GREEN, "config".to_string()),
        Status::Failed => (
            '✘',
            RED,
            format!("ERROR {}", text::seconds(step.duration.unwrap_or_default())),
        ),
        _ => ('✔', GREEN, text::seconds(step.duration.unwrap_or_default())),
    };
    let (label, gap) = fit(&steps.label(step.id), &right, columns);
    format!(
        "{} {label}{gap}{}",
        paint(color, icon_color, &icon.to_string()),
        paint(color && step.status == Status::Failed, RED, &right)
    )
}

/// The live part: a header, each running step with its last line.
pub(super) fn frame(
    steps: &Steps,
    size: TermSize,
    start: Instant,
    now: Instant,
    color: bool,
) -> Vec<String> {
    let elapsed = now.saturating_duration_since(start);
    let spin = SPINNER[(elapsed.as_millis() / 100 % SPINNER.len() as u128) as usize];
    let finished = steps.iter().filter(|s| s.status.is_finished()).count();
    let header = format!(
        "[+] Building {} ({finished}/{})",
        text::seconds(elapsed),
        steps.len()
    );
    let mut lines = vec![text::truncate(&header, size.columns.saturating_sub(1))];

    let running: Vec<&Step> = steps
        .iter()
        .filter(|s| s.status == Status::Running)
        .collect();
    // Rows for steps: the terminal's, less the header and a spare row.
    let budget = size.rows.saturating_sub(2).max(1);
    let (shown, more) = if running.len() <= budget {
        (running.len(), 0)
    } else {
        (
            budget.saturating_sub(1),
            running.len() - budget.saturating_sub(1),
        )
    };
    // Last lines for as many steps as the rows allow, oldest step first.
    let mut spare = budget.saturating_sub(shown + usize::from(more > 0));
    for step in &running[..shown] {
        let right = text::seconds(step.elapsed(now));
        let (label, gap) = fit(&steps.label(step.id), &right, size.columns);
        lines.push(format!(
            "{} {label}{gap}{right}",
            paint(color, BLUE, &spin.to_string())
        ));
        if let Some(last) = &step.status_line
            && spare > 0
        {
            spare -= 1;
            let last = text::truncate(last, size.columns.saturating_sub(5));
            lines.push(paint(color, DIM, &format!("    {last}")));
        }
    }
    if more > 0 {
        lines.push(format!("  … and {more} more running"));
    }
    lines
}

/// `label` cut so that `label`, spaces and `right` fill the line
/// (`columns` less one, and the two columns of the icon before it).
fn fit(label: &str, right: &str, columns: usize) -> (String, String) {
    let room = columns.saturating_sub(1 + 2 + text::width(right) + 1);
    let label = text::truncate(label, room);
    let gap = " ".repeat(1 + room.saturating_sub(text::width(&label)));
    (label, gap)
}

fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("{code}{s}{RESET}")
    } else {
        s.to_string()
    }
}
