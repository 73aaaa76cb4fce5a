//! `--progress=plain`: BuildKit's numbered lines, fit for CI logs.
//!
//! ```text
//! #5 [build 2/4] RUN make
//! #5 0.532 compiling...
//! #5 ...
//!
//! #7 [app 3/3] COPY --from=build /out /app
//! #7 DONE 0.1s
//!
//! #5 [build 2/4] RUN make
//! #5 12.201 done
//! #5 layer: 2.0 GiB of tar as 1.0 GiB in 9.1s (diff 0.0s, archive 8.6s, store 0.4s, snapshot 0.1s)
//! #5 DONE 12.3s
//! ```
//!
//! As in BuildKit's printer, a step's header is printed again when its
//! output resumes after another step's, and `#N ...` marks a step left
//! unfinished for another.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kiln_build::{Event, StepId};

use super::steps::Steps;
use super::{Output, text};
use crate::progress::human_bytes;

/// How often a transfer that is still going gets a line.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A layer commit that took this long gets a line saying where the time
/// went (tar through hashers and compressor, fsync, snapshot).
const COMMIT_WORTH_TELLING_MS: u64 = 1000;

/// Headers are cut here, as BuildKit cuts vertex names (it uses 72).
const HEADER_WIDTH: usize = 120;

#[derive(Debug, Default)]
pub(super) struct Plain {
    /// The step whose lines are being printed.
    current: Option<StepId>,
    /// Something was printed (the next header gets a blank line first).
    wrote: bool,
    /// Steps whose end was printed.
    ended: HashSet<StepId>,
    /// When each transfer last got a line.
    progress: HashMap<(StepId, String), Instant>,
}

impl Plain {
    /// Makes `id` the current step, printing its header if it was not.
    fn switch(&mut self, steps: &Steps, id: StepId, lines: &mut Vec<String>) {
        if self.current == Some(id) {
            return;
        }
        self.leave_step(lines);
        lines.push(format!(
            "#{id} {}",
            text::truncate(&steps.label(id), HEADER_WIDTH)
        ));
        self.current = Some(id);
    }

    /// Another step's lines, or a line of the build's own (a warning, a
    /// note), follow: the current step's stop (`#N ...` if it goes on),
    /// then a blank line.
    fn leave_step(&mut self, lines: &mut Vec<String>) {
        if let Some(previous) = self.current.take()
            && !self.ended.contains(&previous)
        {
            lines.push(format!("#{previous} ..."));
        }
        if self.wrote || !lines.is_empty() {
            lines.push(String::new());
        }
    }

    /// The step ended: its last line, then no current step.
    fn end(&mut self, steps: &Steps, id: StepId, last: String, lines: &mut Vec<String>) {
        if !self.ended.insert(id) {
            return;
        }
        self.switch(steps, id, lines);
        lines.push(last);
        self.current = None;
    }
}

pub(super) fn event(
    plain: &mut Plain,
    steps: &Steps,
    out: &mut Output,
    event: &Event,
    now: Instant,
) {
    let mut lines = Vec::new();
    match event {
        Event::StepStarted { step } => plain.switch(steps, *step, &mut lines),
        Event::StepCached { step, .. } => {
            plain.end(steps, *step, format!("#{step} CACHED"), &mut lines)
        }
        Event::StepLog { step, line, .. } => {
            plain.switch(steps, *step, &mut lines);
            let at = steps
                .find(*step)
                .map_or(Duration::ZERO, |s| s.elapsed(now))
                .as_secs_f64();
            for piece in line.split('\n') {
                lines.push(format!("#{step} {at:.3} {}", text::printable(piece)));
            }
        }
        Event::StepProgress {
            step,
            label,
            done,
            total,
        } => {
            let complete = total.is_some_and(|t| *done >= t);
            let key = (*step, label.clone());
            let due = plain
                .progress
                .get(&key)
                .is_none_or(|last| now.saturating_duration_since(*last) >= PROGRESS_EVERY);
            if complete || due {
                plain.progress.insert(key, now);
                plain.switch(steps, *step, &mut lines);
                let elapsed = steps.find(*step).map_or(Duration::ZERO, |s| s.elapsed(now));
                let amount = match total {
                    Some(t) => format!("{} / {}", human_bytes(*done), human_bytes(*t)),
                    None => human_bytes(*done),
                };
                let done_word = if complete { " done" } else { "" };
                lines.push(format!(
                    "#{step} {label} {amount} {}{done_word}",
                    text::seconds(elapsed)
                ));
            }
        }
        Event::StepCommitted {
            step,
            size,
            compressed,
            diff_ms,
            archive_ms,
            store_ms,
            snapshot_ms,
        } => {
            // Only a commit slow enough to wonder about.
            let total = diff_ms + archive_ms + store_ms + snapshot_ms;
            if total >= COMMIT_WORTH_TELLING_MS {
                plain.switch(steps, *step, &mut lines);
                let s = |ms: &u64| text::seconds(Duration::from_millis(*ms));
                lines.push(format!(
                    "#{step} layer: {} of tar as {} in {} (diff {}, archive {}, store {}, snapshot {})",
                    human_bytes(*size),
                    human_bytes(*compressed),
                    s(&total),
                    s(diff_ms),
                    s(archive_ms),
                    s(store_ms),
                    s(snapshot_ms),
                ));
            }
        }
        Event::StepNote { step, text: note } => {
            plain.switch(steps, *step, &mut lines);
            lines.push(format!("#{step} {}", text::printable(note)));
        }
        Event::StepDone {
            step,
            duration_ms,
            cached,
            ..
        } => {
            let last = if *cached {
                format!("#{step} CACHED")
            } else {
                format!(
                    "#{step} DONE {}",
                    text::seconds(Duration::from_millis(*duration_ms))
                )
            };
            plain.end(steps, *step, last, &mut lines);
        }
        Event::StepFailed { step, reason, .. } => {
            plain.end(steps, *step, format!("#{step} ERROR: {reason}"), &mut lines);
        }
        Event::StepDiagnosis {
            step,
            text: diagnosis,
            ..
        } => {
            plain.switch(steps, *step, &mut lines);
            for line in diagnosis.lines() {
                lines.push(format!("#{step} {}", text::printable(line)));
            }
        }
        Event::StepRetry {
            step,
            attempt,
            max,
            reason,
            delay_ms,
        } => {
            plain.ended.remove(step);
            plain.switch(steps, *step, &mut lines);
            lines.push(format!(
                "#{step} RETRY {attempt}/{max} in {}: {}",
                text::seconds(Duration::from_millis(*delay_ms)),
                text::printable(reason)
            ));
        }
        Event::Warning { message, line } => {
            plain.leave_step(&mut lines);
            match line {
                Some(n) => lines.push(format!("WARNING: {message} (line {n})")),
                None => lines.push(format!("WARNING: {message}")),
            }
        }
        Event::Note { message } => {
            plain.leave_step(&mut lines);
            lines.push(text::printable(message));
        }
        _ => {}
    }
    if !lines.is_empty() {
        plain.wrote = true;
        out.lines(&lines);
    }
}
