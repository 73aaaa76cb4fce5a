//! What counts as progress: the comparison of two looks at a step.
//!
//! A step makes progress when, between two samples, it
//!
//! - printed anything (raw bytes, so a `\r` progress bar counts);
//! - used CPU: user + system time of its processes, plus the time of the
//!   children they reaped (a finished `gcc` moves its time to its `make`),
//!   of at least [`MIN_CPU_SHARE`] of the wall time between the samples;
//! - did I/O: `rchar`/`wchar` (read-like and write-like syscalls, so files,
//!   pipes and sockets) or storage `read_bytes`/`write_bytes` of a process
//!   that was there at both samples;
//! - changed its sockets: one opened or closed, a state change, or a send
//!   or receive queue that moved, in a process sampled before;
//! - started its first process (the step's own setup, and any cache-lock
//!   wait before it, is over), or got a cache lock it waited for.
//!
//! Counters are compared per process, because sums over the tree drop when
//! a process exits. Only the CPU of a process first seen in this sample
//! counts, not its I/O or sockets: exec and the dynamic loader read files,
//! so a shell loop that runs `sleep 1` (or `nc -z host 80`) forever would
//! otherwise look busy; a process that lives long enough to be sampled
//! twice and reads, writes or connects does count.

use std::collections::HashMap;
use std::time::Duration;

use kiln_sandbox::{ProcessInfo, ProcessTree, SocketState};

/// The least CPU, as a share of one CPU over the sampling interval, that
/// counts as progress. A hung JVM or a Python interpreter with a
/// housekeeping thread still gets a clock tick now and then (times are in
/// 10 ms ticks); work that matters uses a good part of a CPU. At the
/// default one-second sampling this is two ticks.
pub(crate) const MIN_CPU_SHARE: f64 = 0.02;

/// What made a step count as progressing, for tests and for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ProgressKind {
    Output,
    Cpu,
    Io,
    Network,
    /// The first process started, or a cache lock was granted.
    Milestone,
}

/// One look at a step: its process tree, how many bytes it has printed so
/// far, and how many milestones (cache locks granted) it has passed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observation<'a> {
    pub tree: &'a ProcessTree,
    pub output_bytes: u64,
    pub milestones: u64,
}

/// What is kept of an observation to compare the next one with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity {
    output_bytes: u64,
    milestones: u64,
    running: bool,
    processes: HashMap<u32, Counters>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Counters {
    /// CPU time, its reaped children's included.
    cpu: Duration,
    /// `None` when `/proc/<pid>/io` was unreadable.
    io: Option<u64>,
    /// `(inode, state, tx queue, rx queue)`, sorted.
    sockets: Vec<(u64, SocketState, u64, u64)>,
}

impl Counters {
    fn of(p: &ProcessInfo) -> Counters {
        let mut sockets: Vec<_> = p
            .sockets
            .iter()
            .map(|s| (s.inode, s.state, s.tx_queue, s.rx_queue))
            .collect();
        sockets.sort_by_key(|s| s.0);
        Counters {
            cpu: p.cpu_time() + p.reaped_children_time,
            io: p.io.map(|io| {
                io.rchar
                    .saturating_add(io.wchar)
                    .saturating_add(io.read_bytes)
                    .saturating_add(io.write_bytes)
            }),
            sockets,
        }
    }
}

impl Activity {
    pub(crate) fn of(observation: &Observation<'_>) -> Activity {
        Activity {
            output_bytes: observation.output_bytes,
            milestones: observation.milestones,
            running: !observation.tree.processes.is_empty(),
            processes: observation
                .tree
                .processes
                .iter()
                .map(|p| (p.pid, Counters::of(p)))
                .collect(),
        }
    }

    /// Whether `self` made progress since `before`, `interval` earlier;
    /// the first kind found when it did.
    pub(crate) fn progress_since(
        &self,
        before: &Activity,
        interval: Duration,
    ) -> Option<ProgressKind> {
        if self.output_bytes > before.output_bytes {
            return Some(ProgressKind::Output);
        }
        if self.milestones > before.milestones || (self.running && !before.running) {
            return Some(ProgressKind::Milestone);
        }
        let mut cpu = Duration::ZERO;
        let mut io = false;
        let mut network = false;
        for (pid, now) in &self.processes {
            match before.processes.get(pid) {
                Some(then) => {
                    cpu += now.cpu.saturating_sub(then.cpu);
                    io |= matches!((now.io, then.io), (Some(a), Some(b)) if a > b);
                    network |= now.sockets != then.sockets;
                }
                None => cpu += now.cpu,
            }
        }
        if !cpu.is_zero() && cpu.as_secs_f64() >= interval.as_secs_f64() * MIN_CPU_SHARE {
            return Some(ProgressKind::Cpu);
        }
        if io {
            return Some(ProgressKind::Io);
        }
        if network {
            return Some(ProgressKind::Network);
        }
        None
    }
}
