//! How a build shows itself. The engine never prints: it sends
//! [`Event`]s, from any of its threads, to the sink of a [`Renderer`],
//! which renders them as `--progress` asks:
//!
//! - `tty`: a live view redrawn in place: each running step with a
//!   spinner, its time and its last output line; finished steps collapse
//!   to one line above it (`✔ [build 3/7] RUN make  12.3s`), a failed one
//!   with its last 20 lines of output;
//! - `plain`: BuildKit's numbered lines, for CI logs (`#5 [build 2/4] RUN
//!   make`, `#5 0.532 compiling...`, `#5 DONE 12.3s`);
//! - `json`: each event as one JSON object per line (`{"event": ...}`);
//! - `quiet`: only what failed (and the watchdog's diagnosis of a hang).
//!
//! `tty` and `plain` end with a summary table of every step (time,
//! cached or not, layer size) and the totals.
//!
//! ```ignore
//! let renderer = Renderer::new(ctx.args.progress); // stderr; `auto` decided here
//! let engine = Engine::new(store, client, runtime, executor, renderer.sink())?;
//! let result = engine.build(&request);
//! renderer.finish(); // clears the live view, prints the summary
//! ```
//!
//! While a `tty` view is live, nothing else may write to stderr: lines
//! that are not about a step go through [`Renderer::println`].

// `kiln build` wires `new`, `sink` and `finish`; the rest serves the tests
// and callers to come (a log file through `with_output`, notes).
#![allow(dead_code, reason = "an API of the CLI, partly used")]

mod plain;
mod steps;
mod summary;
pub(crate) mod text;
mod tty;

#[cfg(test)]
mod tests;

use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_build::{Event, EventSink};

use self::steps::{Status, Step, Steps};
use crate::progress::ProgressMode;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TermSize {
    pub(crate) columns: usize,
    pub(crate) rows: usize,
}

type SizeFn = Box<dyn Fn() -> Option<TermSize> + Send>;

/// Where a [`Renderer`] writes: any writer, and, for the `tty` view, a
/// way to ask the size of the terminal behind it (asked at every redraw,
/// so a resized window is followed).
pub(crate) struct Output {
    writer: Box<dyn Write + Send>,
    size: SizeFn,
    color: bool,
}

impl Output {
    /// Standard error, colored unless `NO_COLOR` is set (no-color.org).
    pub(crate) fn stderr() -> Output {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output {
            writer: Box::new(std::io::stderr()),
            size: Box::new(stderr_size),
            color,
        }
    }

    /// A writer that is not a terminal (a file, a pipe, a test buffer).
    pub(crate) fn writer(writer: impl Write + Send + 'static) -> Output {
        Output {
            writer: Box::new(writer),
            size: Box::new(|| None),
            color: false,
        }
    }

    /// A terminal of the size `size` returns, without colors.
    pub(crate) fn terminal(
        writer: impl Write + Send + 'static,
        size: impl Fn() -> Option<TermSize> + Send + 'static,
    ) -> Output {
        Output {
            writer: Box::new(writer),
            size: Box::new(size),
            color: false,
        }
    }

    /// With or without ANSI colors.
    pub(crate) fn color(mut self, color: bool) -> Output {
        self.color = color;
        self
    }

    fn size(&self) -> Option<TermSize> {
        (self.size)()
    }

    /// Writes `text` at once; a closed stderr is not worth failing a build.
    fn write(&mut self, text: &str) {
        let _ = self.writer.write_all(text.as_bytes());
        let _ = self.writer.flush();
    }

    fn lines<S: AsRef<str>>(&mut self, lines: &[S]) {
        let mut text = String::new();
        for line in lines {
            text.push_str(line.as_ref());
            text.push('\n');
        }
        self.write(&text);
    }
}

/// The size of the terminal on stderr, or `$COLUMNS`/`$LINES`.
fn stderr_size() -> Option<TermSize> {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(ws) if ws.ws_col > 0 && ws.ws_row > 0 => Some(TermSize {
            columns: usize::from(ws.ws_col),
            rows: usize::from(ws.ws_row),
        }),
        _ => {
            let var = |name| std::env::var(name).ok()?.trim().parse::<usize>().ok();
            Some(TermSize {
                columns: var("COLUMNS")?,
                rows: var("LINES").unwrap_or(24),
            })
        }
    }
}

/// `--progress` once `auto` is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tty,
    Plain,
    Json,
    Quiet,
}

impl Mode {
    fn of(mode: ProgressMode, terminal: bool) -> Mode {
        match mode {
            ProgressMode::Auto if terminal => Mode::Tty,
            ProgressMode::Auto | ProgressMode::Plain => Mode::Plain,
            ProgressMode::Tty => Mode::Tty,
            ProgressMode::Json => Mode::Json,
            ProgressMode::Quiet => Mode::Quiet,
        }
    }
}

/// How often the `tty` view redraws (spinners, elapsed times, last lines).
const TICK: Duration = Duration::from_millis(100);

/// Renders the events of one build. Make one per build; hand
/// [`Renderer::sink`] to the engine; call [`Renderer::finish`] when the
/// build returns (dropping the view does it too).
pub(crate) struct Renderer {
    shared: Arc<Shared>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled by `finish`, so the ticker stops at once.
    finished: Condvar,
}

struct State {
    mode: Mode,
    out: Output,
    steps: Steps,
    /// The first event.
    start: Option<Instant>,
    plain: plain::Plain,
    screen: tty::Screen,
    image: Option<String>,
    build_time: Option<Duration>,
    finished: bool,
}

impl Renderer {
    /// Renders to standard error; `auto` is `tty` when stderr is a terminal.
    pub(crate) fn new(mode: ProgressMode) -> Renderer {
        let mode = Mode::of(mode, std::io::stderr().is_terminal());
        let view = Renderer::build(mode, Output::stderr());
        if mode == Mode::Tty {
            let weak = Arc::downgrade(&view.shared);
            let ticker = std::thread::Builder::new()
                .name("kiln-progress".into())
                .spawn(move || tick_until_finished(&weak))
                .ok();
            *lock(&view.ticker) = ticker;
        }
        view
    }

    /// Renders to `out`. `auto` is `tty` if `out` has a size. No thread
    /// redraws the `tty` view: it is drawn when events arrive that change
    /// more than a running step's line, and by [`Renderer::redraw`].
    pub(crate) fn with_output(mode: ProgressMode, out: Output) -> Renderer {
        let mode = Mode::of(mode, out.size().is_some());
        Renderer::build(mode, out)
    }

    fn build(mode: Mode, out: Output) -> Renderer {
        let state = State {
            mode,
            out,
            steps: Steps::default(),
            start: None,
            plain: plain::Plain::default(),
            screen: tty::Screen::default(),
            image: None,
            build_time: None,
            finished: false,
        };
        Renderer {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                finished: Condvar::new(),
            }),
            ticker: Mutex::new(None),
        }
    }

    /// What the engine sends its events to; callable from any thread.
    pub(crate) fn sink(&self) -> EventSink {
        let shared = Arc::clone(&self.shared);
        Arc::new(move |event| shared.lock().handle(event, Instant::now()))
    }

    /// Renders one event.
    pub(crate) fn handle(&self, event: Event) {
        self.handle_at(event, Instant::now());
    }

    fn handle_at(&self, event: Event, now: Instant) {
        self.shared.lock().handle(event, now);
    }

    /// [`Renderer::println`] as a callback, for other threads.
    pub(crate) fn notes(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let shared = Arc::clone(&self.shared);
        Arc::new(move |line| println_to(&shared, line))
    }

    /// A line that is not about a step (a lock wait, a notice), printed
    /// above the live view; nothing in `quiet` and `json` modes.
    pub(crate) fn println(&self, line: &str) {
        println_to(&self.shared, line);
    }

    /// Redraws the `tty` view now (the ticker's job, for views made with
    /// [`Renderer::with_output`]).
    pub(crate) fn redraw(&self) {
        self.redraw_at(Instant::now());
    }

    fn redraw_at(&self, now: Instant) {
        self.shared.lock().redraw(now);
    }

    /// Ends the view: stops redrawing, clears the live part, and prints
    /// the summary (`tty`, `plain`) unless it was printed when the build
    /// reported its end. Later calls do nothing.
    pub(crate) fn finish(&self) {
        self.finish_at(Instant::now());
    }

    fn finish_at(&self, now: Instant) {
        self.shared.lock().finish(now);
        self.shared.finished.notify_all();
        if let Some(ticker) = lock(&self.ticker).take() {
            let _ = ticker.join();
        }
    }
}

fn println_to(shared: &Shared, line: &str) {
    let mut state = shared.lock();
    match state.mode {
        Mode::Plain => state.out.lines(&[line]),
        Mode::Tty => {
            let now = Instant::now();
            state.screen.commit(vec![line.to_string()]);
            state.redraw(now);
        }
        Mode::Json | Mode::Quiet => {}
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn tick_until_finished(shared: &Weak<Shared>) {
    while let Some(shared) = shared.upgrade() {
        let state = shared.lock();
        if state.finished {
            return;
        }
        let (mut state, _) = shared
            .finished
            .wait_timeout(state, TICK)
            .unwrap_or_else(|e| e.into_inner());
        if state.finished {
            return;
        }
        state.redraw(Instant::now());
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// A panic in one engine thread must not silence the others' progress.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn handle(&mut self, event: Event, now: Instant) {
        if self.mode == Mode::Json {
            // The event as the engine made it, whatever state it finds.
            if let Ok(line) = serde_json::to_string(&event) {
                self.out.lines(&[line]);
            }
            return;
        }
        if self.finished {
            return;
        }
        self.start.get_or_insert(now);
        self.update(&event, now);
        match self.mode {
            Mode::Plain => plain::event(&mut self.plain, &self.steps, &mut self.out, &event, now),
            Mode::Tty => {
                let size = self.out.size();
                if self.screen.event(&self.steps, &event, size, self.out.color) {
                    self.redraw(now);
                }
            }
            Mode::Quiet => match &event {
                Event::StepFailed { step, .. } => {
                    if let Some(s) = self.steps.find(*step) {
                        let block = failure_block(&self.steps, s);
                        self.out.lines(&block);
                    }
                }
                // Why a step is about to be killed: what a hang was.
                Event::StepDiagnosis { text, .. } => {
                    let lines: Vec<&str> = text.lines().collect();
                    self.out.lines(&lines);
                }
                _ => {}
            },
            Mode::Json => {}
        }
        if let Event::BuildDone { .. } = &event {
            self.finish(now);
        }
    }

    /// The model, before any view looks at the event.
    fn update(&mut self, event: &Event, now: Instant) {
        match event {
            Event::BuildStarted { platforms, .. } => self.steps.platforms = platforms.clone(),
            Event::StepPlanned {
                step,
                stage,
                platform,
                text,
                ..
            } => self
                .steps
                .plan(*step, stage.clone(), platform.clone(), text.clone(), now),
            Event::StepCached { step, .. } => {
                let s = self.steps.get(*step, now);
                s.status = Status::Cached;
                s.duration.get_or_insert(Duration::ZERO);
            }
            Event::StepStarted { step } => {
                let s = self.steps.get(*step, now);
                s.status = Status::Running;
                s.since = now;
            }
            Event::StepLog { step, line, .. } => {
                let s = self.steps.get(*step, now);
                let at = s.elapsed(now);
                for piece in line.split('\n') {
                    s.push_line(at, text::printable(piece));
                }
            }
            Event::StepProgress {
                step,
                label,
                done,
                total,
            } => {
                self.steps.get(*step, now).status_line = Some(progress_text(label, *done, *total));
            }
            Event::StepNote { step, text } => {
                self.steps.get(*step, now).status_line = Some(text::printable(text));
            }
            Event::StepDone {
                step,
                duration_ms,
                cached,
                layer_size,
                config_only,
                ..
            } => {
                let s = self.steps.get(*step, now);
                s.status = if *cached || s.status == Status::Cached {
                    Status::Cached
                } else if *config_only {
                    Status::Config
                } else {
                    Status::Done
                };
                s.duration = Some(Duration::from_millis(*duration_ms));
                s.layer_size = *layer_size;
            }
            Event::StepFailed {
                step,
                duration_ms,
                reason,
                ..
            } => {
                let s = self.steps.get(*step, now);
                s.status = Status::Failed;
                s.duration = Some(Duration::from_millis(*duration_ms));
                s.reason = Some(reason.clone());
            }
            Event::StepRetry {
                step,
                attempt,
                max,
                reason,
                ..
            } => {
                let s = self.steps.get(*step, now);
                s.status = Status::Running;
                s.duration = None;
                let at = s.elapsed(now);
                s.push_line(
                    at,
                    format!(
                        "--- attempt {attempt}/{max}, after: {}",
                        text::printable(reason)
                    ),
                );
            }
            Event::BuildDone { image, duration_ms } => {
                self.image = image.clone();
                self.build_time = Some(Duration::from_millis(*duration_ms));
            }
            Event::Warning { .. } => {}
            _ => {}
        }
    }

    fn redraw(&mut self, now: Instant) {
        if self.mode != Mode::Tty || self.finished {
            return;
        }
        let start = self.start.unwrap_or(now);
        let size = self.out.size();
        self.screen
            .draw(&self.steps, &mut self.out, size, start, now, false);
    }

    fn finish(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        match self.mode {
            Mode::Tty => {
                let start = self.start.unwrap_or(now);
                let size = self.out.size();
                self.screen
                    .draw(&self.steps, &mut self.out, size, start, now, true);
            }
            Mode::Plain => {
                let mut lines = Vec::new();
                for step in self.steps.iter().filter(|s| s.status == Status::Failed) {
                    lines.push(String::new());
                    lines.extend(failure_block(&self.steps, step));
                }
                self.out.lines(&lines);
            }
            Mode::Json | Mode::Quiet => {}
        }
        self.finished = true;
        if matches!(self.mode, Mode::Tty | Mode::Plain) && self.steps.len() > 0 {
            let columns = self.out.size().map_or(summary::PLAIN_WIDTH, |s| s.columns);
            let total = self
                .build_time
                .unwrap_or_else(|| now.saturating_duration_since(self.start.unwrap_or(now)));
            let lines = summary::render(&self.steps, self.image.as_deref(), total, columns);
            self.out.lines(&lines);
        }
    }
}

/// BuildKit's report of a failed step: its last lines, framed.
///
/// ```text
/// ------
///  > [build 3/4] RUN make:
/// 0.532 cc -c main.c
/// 0.611 main.c:1: error: ...
/// ------
/// ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2
/// ```
fn failure_block(steps: &Steps, step: &Step) -> Vec<String> {
    let mut lines = vec![
        "------".to_string(),
        format!(" > {}:", steps.label(step.id)),
    ];
    for (at, line) in &step.tail {
        lines.push(format!("{:.3} {line}", at.as_secs_f64()));
    }
    lines.push("------".to_string());
    if let Some(reason) = &step.reason {
        lines.push(format!("ERROR: {reason}"));
    }
    lines
}

/// `layer sha256:0123… 12.0 MiB / 40.0 MiB`.
fn progress_text(label: &str, done: u64, total: Option<u64>) -> String {
    use crate::progress::human_bytes;
    match total {
        Some(total) => format!("{label} {} / {}", human_bytes(done), human_bytes(total)),
        None => format!("{label} {}", human_bytes(done)),
    }
}
