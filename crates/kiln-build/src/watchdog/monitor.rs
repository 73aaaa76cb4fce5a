//! The decision: is the step still within its limits? Pure: fed
//! observations with their times, so tests script them.

use std::time::Duration;

use super::policy::Limits;
use super::progress::{Activity, Observation, ProgressKind};

/// A limit the step went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    /// No progress for `limit` (the stall timeout).
    Stalled { limit: Duration },
    /// Still running after `limit` (the step timeout).
    TimedOut { limit: Duration },
}

impl Breach {
    /// What the events call it.
    pub(crate) fn hang(self) -> crate::events::Hang {
        match self {
            Breach::Stalled { .. } => crate::events::Hang::Stalled,
            Breach::TimedOut { .. } => crate::events::Hang::TimedOut,
        }
    }
}

/// Tracks one attempt of one step: when it last made progress, and
/// whether it is past a limit. Times are offsets from the attempt's start.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    limits: Limits,
    last: Activity,
    last_at: Duration,
    last_progress: Duration,
    last_kind: Option<ProgressKind>,
}

impl Monitor {
    /// A monitor for an attempt that starts now (offset zero), before
    /// anything of it runs.
    pub(crate) fn new(limits: Limits) -> Monitor {
        Monitor {
            limits,
            last: Activity::default(),
            last_at: Duration::ZERO,
            last_progress: Duration::ZERO,
            last_kind: None,
        }
    }

    /// Takes in a look at the step `at` after its start and says whether it
    /// is past a limit. The step timeout is checked first: a step past it
    /// is over, busy or not.
    pub(crate) fn observe(
        &mut self,
        at: Duration,
        observation: &Observation<'_>,
    ) -> Option<Breach> {
        let now = Activity::of(observation);
        let interval = at.saturating_sub(self.last_at);
        if let Some(kind) = now.progress_since(&self.last, interval) {
            self.last_progress = at;
            self.last_kind = Some(kind);
        }
        self.last = now;
        self.last_at = at;
        self.check(at)
    }

    /// The limits against the clock alone, without a new look.
    pub(crate) fn check(&self, at: Duration) -> Option<Breach> {
        if let Some(limit) = self.limits.timeout
            && at >= limit
        {
            return Some(Breach::TimedOut { limit });
        }
        if let Some(limit) = self.limits.stall
            && self.idle(at) >= limit
        {
            return Some(Breach::Stalled { limit });
        }
        None
    }

    /// How long the step has gone without progress, `at` after its start.
    pub(crate) fn idle(&self, at: Duration) -> Duration {
        at.saturating_sub(self.last_progress)
    }

    /// What the last progress was, if there was any.
    pub(crate) fn last_progress_kind(&self) -> Option<ProgressKind> {
        self.last_kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_sandbox::{
        IoCounters, ProcessInfo, ProcessState, ProcessTree, Protocol, SocketInfo, SocketState,
    };

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn process(pid: u32, cpu_ms: u64, io: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            ns_pid: Some(pid - 99),
            ppid: if pid == 100 { 1 } else { 100 },
            state: ProcessState::Sleeping,
            comm: "sh".into(),
            cmdline: vec!["/bin/sh".into()],
            wchan: Some("do_wait".into()),
            syscall: None,
            threads: 1,
            user_time: Duration::from_millis(cpu_ms),
            system_time: Duration::ZERO,
            reaped_children_time: Duration::ZERO,
            io: Some(IoCounters {
                rchar: io,
                ..IoCounters::default()
            }),
            sockets: Vec::new(),
        }
    }

    fn tree(processes: Vec<ProcessInfo>) -> ProcessTree {
        ProcessTree {
            processes,
            ..ProcessTree::default()
        }
    }

    /// Feeds `(time, tree, output bytes)` and returns the verdict of each.
    fn script(limits: Limits, steps: &[(f64, ProcessTree, u64)]) -> Vec<Option<Breach>> {
        let mut m = Monitor::new(limits);
        steps
            .iter()
            .map(|(at, tree, out)| {
                m.observe(
                    secs(*at),
                    &Observation {
                        tree,
                        output_bytes: *out,
                        milestones: 0,
                    },
                )
            })
            .collect()
    }

    const STALL_3S: Limits = Limits {
        timeout: None,
        stall: Some(Duration::from_secs(3)),
    };

    #[test]
    fn a_sleeping_tree_stalls() {
        let idle = || tree(vec![process(100, 10, 500), process(101, 0, 0)]);
        let got = script(
            STALL_3S,
            &[
                (1.0, idle(), 0),
                (2.0, idle(), 0),
                (3.0, idle(), 0),
                (4.0, idle(), 0),
            ],
        );
        // The tree appearing at 1s is progress; 3s of nothing after it is a stall.
        assert_eq!(got[..3], [None, None, None]);
        assert_eq!(
            got[3],
            Some(Breach::Stalled {
                limit: Duration::from_secs(3)
            })
        );
    }

    #[test]
    fn silent_cpu_work_is_progress_and_housekeeping_ticks_are_not() {
        let busy = |t: u64| tree(vec![process(100, 0, 0), process(101, t * 1000, 0)]);
        let got = script(
            STALL_3S,
            &(1..=8).map(|t| (t as f64, busy(t), 0)).collect::<Vec<_>>(),
        );
        assert!(got.iter().all(Option::is_none), "{got:?}");

        // One 10 ms tick every second is below the floor.
        let ticking = |t: u64| tree(vec![process(100, t * 10, 0)]);
        let got = script(
            STALL_3S,
            &(1..=5)
                .map(|t| (t as f64, ticking(t), 0))
                .collect::<Vec<_>>(),
        );
        assert!(got[4].is_some(), "{got:?}");
    }

    #[test]
    fn output_and_io_are_progress() {
        let same = || tree(vec![process(100, 0, 7)]);
        let printing = script(
            STALL_3S,
            &(1..=8)
                .map(|t| (t as f64, same(), t * 10))
                .collect::<Vec<_>>(),
        );
        assert!(printing.iter().all(Option::is_none), "{printing:?}");
        let reading = script(
            STALL_3S,
            &(1..=8)
                .map(|t| (t as f64, tree(vec![process(100, 0, t * 4096)]), 0))
                .collect::<Vec<_>>(),
        );
        assert!(reading.iter().all(Option::is_none), "{reading:?}");
    }

    #[test]
    fn new_processes_bring_no_io_progress() {
        // A shell loop starting a fresh `sleep` (which read its libraries)
        // every second.
        let got = script(
            STALL_3S,
            &(1..=5)
                .map(|t| {
                    let sleeper = process(200 + t as u32, 0, 8192);
                    (t as f64, tree(vec![process(100, 0, 64), sleeper]), 0)
                })
                .collect::<Vec<_>>(),
        );
        assert!(got[4].is_some(), "{got:?}");
    }

    #[test]
    fn socket_changes_are_progress_and_a_silent_connection_is_not() {
        let with_socket = |rx: u64| {
            let mut p = process(100, 0, 0);
            p.sockets = vec![SocketInfo {
                inode: 42,
                protocol: Protocol::Tcp,
                local: "127.0.0.1:50000".parse().unwrap(),
                remote: "127.0.0.1:8080".parse().unwrap(),
                state: SocketState::Established,
                tx_queue: 0,
                rx_queue: rx,
            }];
            tree(vec![p])
        };
        let moving = script(
            STALL_3S,
            &(1..=6)
                .map(|t| (t as f64, with_socket(t * 100), 0))
                .collect::<Vec<_>>(),
        );
        assert!(moving.iter().all(Option::is_none), "{moving:?}");
        let stuck = script(
            STALL_3S,
            &(1..=5)
                .map(|t| (t as f64, with_socket(0), 0))
                .collect::<Vec<_>>(),
        );
        assert!(stuck[4].is_some(), "{stuck:?}");
    }

    #[test]
    fn a_lock_wait_counts_toward_the_stall_and_the_grant_resets_it() {
        let empty = ProcessTree::default();
        let mut m = Monitor::new(STALL_3S);
        let look = |milestones| Observation {
            tree: &empty,
            output_bytes: 0,
            milestones,
        };
        assert_eq!(m.observe(secs(1.0), &look(0)), None);
        assert_eq!(m.observe(secs(2.5), &look(1)), None, "lock granted");
        assert_eq!(m.idle(secs(2.5)), Duration::ZERO);
        assert_eq!(m.last_progress_kind(), Some(ProgressKind::Milestone));
        assert!(m.observe(secs(5.5), &look(1)).is_some());
        // Waiting from the start, with no grant: the wait is the stall.
        let mut m = Monitor::new(STALL_3S);
        assert_eq!(m.observe(secs(2.0), &look(0)), None);
        assert!(m.observe(secs(3.0), &look(0)).is_some());
    }

    #[test]
    fn the_step_timeout_wins_over_progress() {
        let limits = Limits {
            timeout: Some(Duration::from_secs(5)),
            stall: Some(Duration::from_secs(3)),
        };
        let got = script(
            limits,
            &(1..=6)
                .map(|t| (t as f64, tree(vec![process(100, t * 1000, 0)]), t))
                .collect::<Vec<_>>(),
        );
        assert_eq!(got[3], None);
        assert_eq!(
            got[4],
            Some(Breach::TimedOut {
                limit: Duration::from_secs(5)
            })
        );
    }
}
