//! How long-running work shows itself: an interactive view on a terminal,
//! plain lines fit for CI logs, or one JSON object per line for machines.
//!
//! Commands report through [`Progress`]; they never print progress
//! themselves. Transfers (pulls, pushes, imports, exports) report bytes,
//! the renderer adds rates and percentages.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise.
    #[default]
    Auto,
    Tty,
    Plain,
    Json,
    /// Nothing but errors.
    Quiet,
}

impl ProgressMode {
    fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        }
    }
}

/// A handle on one transfer (a blob, a layer being compressed, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TaskId(u64);

struct Task {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

struct Inner {
    mode: ProgressMode,
    multi: Option<MultiProgress>,
    tasks: HashMap<TaskId, Task>,
    next: u64,
}

/// Where commands send progress. Cheap to clone; safe to use from any thread.
#[derive(Clone)]
pub(crate) struct Progress {
    inner: Arc<Mutex<Inner>>,
}

/// How often plain mode repeats a line for a transfer that is still going.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub(crate) fn new(mode: ProgressMode) -> Progress {
        let mode = mode.resolve();
        let multi = (mode == ProgressMode::Tty)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            inner: Arc::new(Mutex::new(Inner {
                mode,
                multi,
                tasks: HashMap::new(),
                next: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere must not silence progress: take the data anyway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a transfer of `total` bytes (if known).
    pub(crate) fn start(&self, label: impl Into<String>, total: Option<u64>) -> TaskId {
        let label = label.into();
        let mut inner = self.lock();
        let id = TaskId(inner.next);
        inner.next += 1;
        let now = Instant::now();
        let bar = inner.multi.as_ref().map(|m| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {msg:40!} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {elapsed:>4}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            m.add(bar)
        });
        match inner.mode {
            ProgressMode::Plain => eprintln!(
                "{label}: started{}",
                total
                    .map(|t| format!(" ({})", human_bytes(t)))
                    .unwrap_or_default()
            ),
            ProgressMode::Json => json_line(
                &serde_json::json!({"event": "start", "task": id.0, "label": label, "total": total}),
            ),
            _ => {}
        }
        inner.tasks.insert(
            id,
            Task {
                label,
                total,
                done: 0,
                started: now,
                last_line: now,
                bar,
            },
        );
        id
    }

    /// `done` bytes of the task are through (absolute, not a delta).
    pub(crate) fn update(&self, id: TaskId, done: u64) {
        let mut inner = self.lock();
        let mode = inner.mode;
        let Some(task) = inner.tasks.get_mut(&id) else {
            return;
        };
        task.done = done;
        if let Some(bar) = &task.bar {
            bar.set_position(done);
        }
        if mode == ProgressMode::Plain && task.last_line.elapsed() >= PLAIN_EVERY {
            task.last_line = Instant::now();
            eprintln!("{}: {}", task.label, progress_text(task));
        }
    }

    /// A line about a task that is not progress: a retry, a resume.
    pub(crate) fn note(&self, id: Option<TaskId>, text: impl Into<String>) {
        let text = text.into();
        let inner = self.lock();
        let label = id
            .and_then(|id| inner.tasks.get(&id))
            .map(|t| t.label.clone());
        let line = match &label {
            Some(l) => format!("{l}: {text}"),
            None => text.clone(),
        };
        match (inner.mode, &inner.multi) {
            (ProgressMode::Tty, Some(m)) => {
                let _ = m.println(line);
            }
            (ProgressMode::Json, _) => json_line(
                &serde_json::json!({"event": "note", "task": id.map(|i| i.0), "text": text}),
            ),
            (ProgressMode::Quiet, _) => {}
            _ => eprintln!("{line}"),
        }
    }

    /// The task finished; `summary` (e.g. "exists", "mounted") is shown.
    pub(crate) fn finish(&self, id: TaskId, summary: &str) {
        let mut inner = self.lock();
        let mode = inner.mode;
        let Some(mut task) = inner.tasks.remove(&id) else {
            return;
        };
        if let Some(total) = task.total {
            task.done = task.done.max(total);
        }
        let text = format!("{summary} {}", progress_text(&task))
            .trim()
            .to_string();
        if let Some(bar) = &task.bar {
            bar.finish_and_clear();
        }
        match (mode, &inner.multi) {
            (ProgressMode::Tty, Some(m)) => {
                let _ = m.println(format!("✔ {}: {text}", task.label));
            }
            (ProgressMode::Plain, _) => eprintln!("{}: {text}", task.label),
            (ProgressMode::Json, _) => json_line(
                &serde_json::json!({"event": "done", "task": id.0, "summary": summary, "bytes": task.done}),
            ),
            _ => {}
        }
    }

    /// The task failed or was abandoned.
    pub(crate) fn fail(&self, id: TaskId, reason: &str) {
        let mut inner = self.lock();
        if let Some(task) = inner.tasks.remove(&id) {
            if let Some(bar) = &task.bar {
                bar.abandon_with_message(format!("{}: {reason}", task.label));
            }
            if inner.mode == ProgressMode::Json {
                json_line(&serde_json::json!({"event": "failed", "task": id.0, "reason": reason}));
            } else if inner.mode == ProgressMode::Plain {
                eprintln!("{}: failed: {reason}", task.label);
            }
        }
    }
}

fn json_line(v: &serde_json::Value) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{v}");
}

fn progress_text(task: &Task) -> String {
    let secs = task.started.elapsed().as_secs_f64().max(1e-3);
    let rate = task.done as f64 / secs;
    match task.total {
        Some(total) if total > 0 => format!(
            "{}/{} ({:.0}%) {}/s",
            human_bytes(task.done),
            human_bytes(total),
            task.done as f64 * 100.0 / total as f64,
            human_bytes(rate as u64)
        ),
        _ => format!("{} {}/s", human_bytes(task.done), human_bytes(rate as u64)),
    }
}

pub(crate) use kiln_fs::human_bytes;
