//! The caller's handle on one run: cancel it, see its processes.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::proctree::{self, ProcessTree};

/// The first process of a run, as the host sees it: the process runc
/// started, pid 1 of the run's pid namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InitProcess {
    /// Host pid.
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22):
    /// with the pid, it names the process even after the pid is reused.
    pub start_time: u64,
}

impl InitProcess {
    /// Reads the start time of the live process `pid`.
    pub fn probe(pid: u32) -> Option<Self> {
        let stat = proctree::read_stat(pid)?;
        Some(Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// The process still exists (a zombie counts) and is the same one.
    pub fn is_alive(&self) -> bool {
        Self::probe(self.pid).is_some_and(|now| now == *self)
    }
}

/// The caller's handle on a run, shared with the executor. Clone it to
/// other threads (a watchdog, a signal handler, an async task); make a new
/// one for each run.
///
/// The executor reports the run's progress through [`set_running`] (or
/// [`report_tree`]) and [`set_finished`], and watches [`is_cancelled`].
///
/// [`set_running`]: RunControl::set_running
/// [`report_tree`]: RunControl::report_tree
/// [`set_finished`]: RunControl::set_finished
/// [`is_cancelled`]: RunControl::is_cancelled
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) cancelled: bool,
    phase: Phase,
}

#[derive(Clone, Debug, Default)]
enum Phase {
    #[default]
    Pending,
    Running(InitProcess),
    /// Running, with processes the host's /proc does not show: the tree
    /// is the executor's word.
    Reported(ProcessTree),
    Finished,
}

impl RunControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `other` is a clone of this control (the same run).
    pub fn same_as(&self, other: &RunControl) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Ends the run: its whole process tree is killed. Never blocks; may be
    /// called before the run starts (it then ends as soon as it starts) and
    /// any number of times.
    pub fn cancel(&self) {
        self.lock().cancelled = true;
        self.inner.changed.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// The run's first process, while it runs (as a host process).
    pub fn init(&self) -> Option<InitProcess> {
        match self.lock().phase {
            Phase::Running(init) => Some(init),
            Phase::Pending | Phase::Reported(_) | Phase::Finished => None,
        }
    }

    /// The run is over and cleaned up.
    pub fn is_finished(&self) -> bool {
        matches!(self.lock().phase, Phase::Finished)
    }

    /// Waits until the run's first process exists (or the run is over, or
    /// `timeout` passed); `None` too for a run that is not host processes.
    pub fn wait_started(&self, timeout: Duration) -> Option<InitProcess> {
        let state = self.wait_until(timeout, |s| !matches!(s.phase, Phase::Pending));
        match state.phase {
            Phase::Running(init) => Some(init),
            Phase::Pending | Phase::Reported(_) | Phase::Finished => None,
        }
    }

    /// The processes of the run right now; empty before it starts and after
    /// it ends. Reads /proc (a few files per process of the host), or
    /// returns what the executor last reported.
    pub fn snapshot(&self) -> ProcessTree {
        let init = match &self.lock().phase {
            Phase::Running(init) => *init,
            Phase::Reported(tree) => return tree.clone(),
            Phase::Pending | Phase::Finished => return ProcessTree::default(),
        };
        proctree::snapshot(init)
    }

    /// For executors: the run's first process now exists.
    pub fn set_running(&self, init: InitProcess) {
        self.lock().phase = Phase::Running(init);
        self.inner.changed.notify_all();
    }

    /// For executors whose processes this host's /proc does not show (a
    /// VM, another machine, a test's fake): the run is running, and `tree`
    /// is what [`snapshot`](Self::snapshot) returns until the next report
    /// or the end of the run.
    pub fn report_tree(&self, tree: ProcessTree) {
        self.lock().phase = Phase::Reported(tree);
        self.inner.changed.notify_all();
    }

    /// For executors: the run is over and nothing of it remains.
    pub fn set_finished(&self) {
        self.lock().phase = Phase::Finished;
        self.inner.changed.notify_all();
    }

    /// For executors: a guard that calls [`set_finished`](RunControl::set_finished)
    /// when dropped, on every way out of a run, unwinding included.
    pub(crate) fn finish_on_drop(&self) -> FinishOnDrop<'_> {
        FinishOnDrop(self)
    }

    /// For executors: waits up to `timeout` for a cancel; true if cancelled.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.cancelled).cancelled
    }

    /// Wakes whoever waits in [`wait_until`](Self::wait_until) so it
    /// re-checks its condition (which may look beyond the state).
    pub(crate) fn wake(&self) {
        drop(self.lock());
        self.inner.changed.notify_all();
    }

    /// Waits until `done` holds or `timeout` passed; returns the state.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.inner.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain flags: a panic elsewhere cannot leave it torn.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See [`RunControl::finish_on_drop`].
pub(crate) struct FinishOnDrop<'a>(&'a RunControl);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wakes_a_waiter() {
        let control = RunControl::new();
        let waiter = {
            let control = control.clone();
            std::thread::spawn(move || control.wait_cancelled(Duration::from_secs(60)))
        };
        control.cancel();
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn snapshot_is_empty_unless_running() {
        let control = RunControl::new();
        assert!(control.snapshot().processes.is_empty());
        control.set_finished();
        assert!(control.is_finished());
        assert_eq!(control.wait_started(Duration::from_secs(1)), None);
        assert!(control.snapshot().processes.is_empty());
    }

    #[test]
    fn a_reported_tree_is_the_snapshot_until_the_end() {
        let control = RunControl::new();
        let tree = ProcessTree {
            processes: vec![crate::ProcessInfo {
                pid: 7,
                ns_pid: Some(1),
                ppid: 0,
                state: crate::ProcessState::Sleeping,
                comm: "sleep".into(),
                cmdline: vec!["sleep".into(), "infinity".into()],
                wchan: Some("hrtimer_nanosleep".into()),
                syscall: None,
                threads: 1,
                user_time: Duration::ZERO,
                system_time: Duration::ZERO,
                reaped_children_time: Duration::ZERO,
                io: None,
                sockets: Vec::new(),
            }],
            ..ProcessTree::default()
        };
        control.report_tree(tree.clone());
        assert_eq!(control.snapshot(), tree);
        assert_eq!(control.init(), None, "no host process to name");
        control.set_finished();
        assert!(control.snapshot().processes.is_empty());
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let me = InitProcess::probe(std::process::id()).unwrap();
        assert!(me.is_alive());
        let other = InitProcess {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
    }
}
