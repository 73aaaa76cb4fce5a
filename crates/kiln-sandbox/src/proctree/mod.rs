//! The process tree of a run, read from /proc: what the watchdog looks at
//! to tell a busy step from a hung one.
//!
//! The tree is the run's first process and its descendants, found through
//! the parent pids of every process on the host. In a pid namespace every
//! orphan is re-parented to the namespace's init, so this is exactly the
//! namespace's processes, plus any nested namespace a step makes itself.

mod net;
mod stat;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

pub use self::net::{Protocol, SocketInfo, SocketState};
pub(crate) use self::stat::Stat;

use crate::control::InitProcess;

/// The processes of one run at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessTree {
    /// The first process first, then its descendants breadth-first.
    pub processes: Vec<ProcessInfo>,
    pub totals: Totals,
}

/// One process (thread group) of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host pid.
    pub pid: u32,
    /// Pid inside the run (1 for the first process).
    pub ns_pid: Option<u32>,
    /// Host pid of the parent.
    pub ppid: u32,
    pub state: ProcessState,
    /// The executable's name as the kernel keeps it (15 bytes at most).
    pub comm: String,
    /// Empty for zombies and kernel-side exits.
    pub cmdline: Vec<String>,
    /// The kernel function a sleeping process waits in (`wchan`), e.g.
    /// `hrtimer_nanosleep`, `pipe_read`, `futex_wait_queue`.
    pub wchan: Option<String>,
    /// The number of the syscall it is blocked in (`/proc/<pid>/syscall`,
    /// numbered for the host's architecture).
    pub syscall: Option<i64>,
    pub threads: u32,
    pub user_time: Duration,
    pub system_time: Duration,
    /// CPU time of children it has reaped (`cutime + cstime`).
    pub reaped_children_time: Duration,
    /// `None` when `/proc/<pid>/io` could not be read (the process ended).
    pub io: Option<IoCounters>,
    /// Its open TCP and UDP sockets.
    pub sockets: Vec<SocketInfo>,
}

impl ProcessInfo {
    /// User plus system time.
    pub fn cpu_time(&self) -> Duration {
        self.user_time + self.system_time
    }
}

/// `/proc/<pid>/state` letters (proc(5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessState {
    Running,
    Sleeping,
    /// Uninterruptible sleep, usually I/O: `D`.
    DiskSleep,
    Stopped,
    TracingStop,
    Zombie,
    Dead,
    Idle,
    Other(char),
}

impl ProcessState {
    fn from_code(code: char) -> Self {
        match code {
            'R' => Self::Running,
            'S' => Self::Sleeping,
            'D' => Self::DiskSleep,
            'T' => Self::Stopped,
            't' => Self::TracingStop,
            'Z' => Self::Zombie,
            'X' | 'x' => Self::Dead,
            'I' => Self::Idle,
            other => Self::Other(other),
        }
    }
}

/// `/proc/<pid>/io` (proc(5)); bytes and syscall counts since the process
/// started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoCounters {
    /// Bytes passed to read-like syscalls (files, pipes, sockets).
    pub rchar: u64,
    /// Bytes passed to write-like syscalls.
    pub wchar: u64,
    pub syscr: u64,
    pub syscw: u64,
    /// Bytes fetched from storage.
    pub read_bytes: u64,
    /// Bytes sent to storage.
    pub write_bytes: u64,
    pub cancelled_write_bytes: u64,
}

impl IoCounters {
    fn add(&mut self, other: &Self) {
        self.rchar += other.rchar;
        self.wchar += other.wchar;
        self.syscr += other.syscr;
        self.syscw += other.syscw;
        self.read_bytes += other.read_bytes;
        self.write_bytes += other.write_bytes;
        self.cancelled_write_bytes += other.cancelled_write_bytes;
    }
}

/// Sums over the tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Totals {
    pub processes: usize,
    /// CPU time of the live processes.
    pub cpu_time: Duration,
    /// Plus the time of children they reaped: it only grows while the run
    /// lasts (a process that exits moves its time to the parent that reaps
    /// it), so a watchdog can compare two snapshots.
    pub cpu_time_with_reaped: Duration,
    /// I/O of the live processes (it drops when one exits).
    pub io: IoCounters,
}

/// Reads the tree of `init`; empty if `init` is gone (or its pid reused).
pub(crate) fn snapshot(init: InitProcess) -> ProcessTree {
    if !init.is_alive() {
        return ProcessTree::default();
    }
    let all = all_processes();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, stat) in &all {
        children.entry(stat.ppid).or_default().push(pid);
    }
    let mut order = Vec::new();
    let mut queue = VecDeque::from([init.pid]);
    while let Some(pid) = queue.pop_front() {
        order.push(pid);
        queue.extend(children.get(&pid).into_iter().flatten());
    }

    let mut tables = SocketTables::default();
    let processes: Vec<ProcessInfo> = order
        .into_iter()
        .filter_map(|pid| Some(process_info(pid, all.get(&pid)?.clone(), &mut tables)))
        .collect();
    let mut totals = Totals {
        processes: processes.len(),
        ..Totals::default()
    };
    for p in &processes {
        totals.cpu_time += p.cpu_time();
        totals.cpu_time_with_reaped += p.cpu_time() + p.reaped_children_time;
        if let Some(io) = &p.io {
            totals.io.add(io);
        }
    }
    ProcessTree { processes, totals }
}

pub(crate) fn read_stat(pid: u32) -> Option<Stat> {
    let text = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat::parse_stat(&text)
}

/// Every process of the host, by pid (processes that end while the scan
/// runs are left out).
fn all_processes() -> BTreeMap<u32, Stat> {
    let Ok(entries) = fs_err::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

fn process_info(pid: u32, stat: Stat, tables: &mut SocketTables) -> ProcessInfo {
    let dir = format!("/proc/{pid}");
    let read = |name: &str| fs_err::read_to_string(format!("{dir}/{name}")).ok();
    let ticks = |t: u64| ticks_to_duration(t);
    ProcessInfo {
        pid,
        ns_pid: read("status").and_then(|s| stat::parse_ns_pid(&s)),
        ppid: stat.ppid,
        state: stat.state,
        cmdline: fs_err::read(format!("{dir}/cmdline"))
            .map(|b| stat::parse_cmdline(&b))
            .unwrap_or_default(),
        wchan: read("wchan").and_then(|s| stat::parse_wchan(&s)),
        syscall: read("syscall").and_then(|s| stat::parse_syscall(&s)),
        threads: stat.threads,
        user_time: ticks(stat.utime),
        system_time: ticks(stat.stime),
        reaped_children_time: ticks(stat.cutime + stat.cstime),
        io: read("io").map(|s| stat::parse_io(&s)),
        sockets: tables.sockets_of(pid),
        comm: stat.comm,
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    static HZ: OnceLock<u64> = OnceLock::new();
    let hz = *HZ.get_or_init(|| rustix::param::clock_ticks_per_second().max(1));
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

/// Socket tables by network namespace: each is read once per snapshot.
#[derive(Default)]
struct SocketTables {
    by_netns: HashMap<String, HashMap<u64, SocketInfo>>,
}

impl SocketTables {
    fn sockets_of(&mut self, pid: u32) -> Vec<SocketInfo> {
        let inodes = socket_inodes(pid);
        if inodes.is_empty() {
            return Vec::new();
        }
        // /proc/<pid>/net shows the tables of the process's own namespace.
        let Ok(netns) = fs_err::read_link(format!("/proc/{pid}/ns/net")) else {
            return Vec::new();
        };
        let table = self
            .by_netns
            .entry(netns.to_string_lossy().into_owned())
            .or_insert_with(|| read_tables(pid));
        inodes
            .iter()
            .filter_map(|inode| table.get(inode).cloned())
            .collect()
    }
}

fn read_tables(pid: u32) -> HashMap<u64, SocketInfo> {
    let files = [
        ("tcp", Protocol::Tcp),
        ("tcp6", Protocol::Tcp),
        ("udp", Protocol::Udp),
        ("udp6", Protocol::Udp),
    ];
    files
        .into_iter()
        .filter_map(|(name, proto)| {
            let text = fs_err::read_to_string(format!("/proc/{pid}/net/{name}")).ok()?;
            Some(net::parse_table(&text, proto))
        })
        .flatten()
        .map(|s| (s.inode, s))
        .collect()
}

/// Inodes of the sockets among a process's open files
/// (`/proc/<pid>/fd/N -> socket:[inode]`).
fn socket_inodes(pid: u32) -> Vec<u64> {
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = fs_err::read_dir(Path::new(&dir)) else {
        return Vec::new();
    };
    let mut inodes: Vec<u64> = entries
        .filter_map(|e| {
            let target = std::fs::read_link(e.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert() {
        let hz = rustix::param::clock_ticks_per_second();
        assert_eq!(ticks_to_duration(hz * 3), Duration::from_secs(3));
    }

    #[test]
    fn own_process_reads_completely() {
        let me = InitProcess::probe(std::process::id()).unwrap();
        let tree = snapshot(me);
        let first = &tree.processes[0];
        assert_eq!(first.pid, std::process::id());
        assert!(!first.cmdline.is_empty());
        assert!(first.io.is_some());
        assert!(first.threads >= 1);
        assert_eq!(tree.totals.processes, tree.processes.len());
    }
}
