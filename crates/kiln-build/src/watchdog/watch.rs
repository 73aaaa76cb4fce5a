//! The watchdog's thread: looks at a running step every second, and when
//! it is past a limit, reports a diagnosis and then cancels it.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use kiln_sandbox::RunControl;

use super::diagnosis::Diagnosis;
use super::monitor::{Breach, Monitor};
use super::policy::Limits;
use super::progress::Observation;
use super::recorder::StepRecorder;
use crate::events::{Event, EventSink, StepId};

/// How often a running step is looked at: /proc is cheap to read, and a
/// limit is then met to within a second.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One attempt of one step under watch.
pub(crate) struct StepWatch<'a> {
    pub step: Option<StepId>,
    /// `Dockerfile:12`.
    pub place: &'a str,
    /// The instruction, on one line.
    pub command: &'a str,
    pub limits: Limits,
    pub attempt: u32,
    pub attempts: u32,
    pub control: &'a RunControl,
    pub recorder: &'a StepRecorder,
    /// Where the diagnosis goes, as [`Event::StepDiagnosis`].
    pub events: &'a EventSink,
    pub sample_every: Duration,
}

impl StepWatch<'_> {
    /// Runs `body` (the step; it must end once `control` is cancelled)
    /// while a thread watches it. When the step goes past a limit the
    /// thread emits the diagnosis and only then cancels the run; the
    /// breach is returned with the body's result.
    pub(crate) fn run<T>(&self, body: impl FnOnce() -> T) -> (T, Option<Breach>) {
        if self.limits.is_unlimited() {
            return (body(), None);
        }
        let done = Signal::default();
        std::thread::scope(|s| {
            let watcher = s.spawn(|| self.watch(&done));
            let value = body();
            done.set();
            // The watcher only reads /proc and emits: it cannot hang.
            let breach = watcher.join().unwrap_or(None);
            (value, breach)
        })
    }

    fn watch(&self, done: &Signal) -> Option<Breach> {
        let started = Instant::now();
        let mut monitor = Monitor::new(self.limits);
        loop {
            if done.wait(self.sample_every) {
                return None;
            }
            let tree = self.control.snapshot();
            let at = started.elapsed();
            let observation = Observation {
                tree: &tree,
                output_bytes: self.recorder.output_bytes(),
                milestones: self.recorder.milestones(),
            };
            let Some(breach) = monitor.observe(at, &observation) else {
                continue;
            };
            let tail = self.recorder.tail();
            let lock_wait = self.recorder.lock_note();
            let text = Diagnosis {
                step: self.step,
                place: self.place,
                command: self.command,
                breach,
                elapsed: at,
                idle: monitor.idle(at),
                last_progress: monitor.last_progress_kind(),
                tail: &tail,
                tree: &tree,
                lock_wait: lock_wait.as_deref(),
                attempt: self.attempt,
                attempts: self.attempts,
            }
            .render();
            // Told first, killed after: the tree above is what hung.
            (self.events)(Event::StepDiagnosis {
                step: self.step.unwrap_or(0),
                hang: breach.hang(),
                text,
            });
            self.control.cancel();
            return Some(breach);
        }
    }
}

/// A flag a thread can wait on with a timeout.
#[derive(Default)]
struct Signal {
    set: Mutex<bool>,
    changed: Condvar,
}

impl Signal {
    fn set(&self) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    /// Waits up to `timeout`; true once set.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |set| !*set)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_step_that_never_starts_is_diagnosed_then_cancelled() {
        let control = RunControl::new();
        let recorder = StepRecorder::new();
        let seen: Arc<Mutex<Vec<(Event, bool)>>> = Arc::default();
        let events: EventSink = {
            let seen = seen.clone();
            let control = control.clone();
            Arc::new(move |e| seen.lock().unwrap().push((e, control.is_cancelled())))
        };
        let watch = StepWatch {
            step: Some(3),
            place: "Dockerfile:2",
            command: "RUN sleep infinity",
            limits: Limits {
                timeout: None,
                stall: Some(Duration::from_millis(200)),
            },
            attempt: 1,
            attempts: 1,
            control: &control,
            recorder: &recorder,
            events: &events,
            sample_every: Duration::from_millis(50),
        };
        // The body stands for a run: it ends when cancelled.
        let (cancelled, breach) = watch.run(|| control.wait_cancelled(Duration::from_secs(60)));
        assert!(cancelled);
        assert_eq!(
            breach,
            Some(Breach::Stalled {
                limit: Duration::from_millis(200)
            })
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (Event::StepDiagnosis { step, hang, text }, cancelled_then) = &seen[0] else {
            panic!("{seen:?}");
        };
        assert_eq!((*step, *hang), (3, crate::events::Hang::Stalled));
        assert!(!cancelled_then, "the diagnosis comes before the kill");
        assert!(text.starts_with("step 3 (Dockerfile:2) stalled"), "{text}");
    }

    #[test]
    fn a_quick_step_is_left_alone() {
        let control = RunControl::new();
        let recorder = StepRecorder::new();
        let events: EventSink = Arc::new(|e| panic!("unexpected {e:?}"));
        let watch = StepWatch {
            step: Some(1),
            place: "Dockerfile:2",
            command: "RUN true",
            limits: Limits {
                timeout: Some(Duration::from_secs(60)),
                stall: Some(Duration::from_secs(60)),
            },
            attempt: 1,
            attempts: 1,
            control: &control,
            recorder: &recorder,
            events: &events,
            sample_every: SAMPLE_EVERY,
        };
        let (value, breach) = watch.run(|| 42);
        assert_eq!((value, breach), (42, None));
        assert!(!control.is_cancelled());
    }
}
