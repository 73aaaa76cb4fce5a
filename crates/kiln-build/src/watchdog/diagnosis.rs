//! The text kiln prints about a step it is about to kill: what the step
//! is, how long it ran and idled, what it printed last, and what each of
//! its processes is doing (state, wait channel, syscall, CPU, command
//! line, sockets), plus any cache lock it waits for.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use kiln_sandbox::{ProcessInfo, ProcessState, ProcessTree, Protocol, SocketInfo, SocketState};

use super::monitor::Breach;
use super::progress::ProgressKind;
use super::syscalls;
use crate::events::StepId;

/// Everything a diagnosis shows.
#[derive(Debug, Clone)]
pub(crate) struct Diagnosis<'a> {
    pub step: Option<StepId>,
    /// `Dockerfile:12`.
    pub place: &'a str,
    /// The instruction, on one line.
    pub command: &'a str,
    pub breach: Breach,
    /// Since the attempt started.
    pub elapsed: Duration,
    /// Since the last progress.
    pub idle: Duration,
    pub last_progress: Option<ProgressKind>,
    /// The last lines of output, oldest first.
    pub tail: &'a [String],
    pub tree: &'a ProcessTree,
    /// Who holds the cache lock the step waits for.
    pub lock_wait: Option<&'a str>,
    /// This attempt (1 for the first) and how many the step may have.
    pub attempt: u32,
    pub attempts: u32,
}

/// `step 7 (Dockerfile:12)`; a step without a number (an ONBUILD
/// trigger) is `ONBUILD step (Dockerfile:3)`.
pub(crate) fn step_label(step: Option<StepId>, place: &str) -> String {
    match step {
        Some(n) => format!("step {n} ({place})"),
        None => format!("ONBUILD step ({place})"),
    }
}

/// `step 7 (Dockerfile:12) stalled: no output, CPU or I/O for 10m0s`, or
/// `... timed out: still running after 20m0s`.
pub(crate) fn headline(step: Option<StepId>, place: &str, breach: Breach) -> String {
    let label = step_label(step, place);
    match breach {
        Breach::Stalled { limit } => format!(
            "{label} stalled: no output, CPU or I/O for {}",
            go_duration(limit)
        ),
        Breach::TimedOut { limit } => {
            format!(
                "{label} timed out: still running after {}",
                go_duration(limit)
            )
        }
    }
}

/// A duration as Go prints one (`10m0s`, `1h2m3s`, `2.5s`, `300ms`), the
/// form BuildKit's users read; to the millisecond.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let (s, frac) = (ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// A duration for people reading a diagnosis: to the tenth of a second.
fn short(d: Duration) -> String {
    go_duration(Duration::from_millis(d.as_millis() as u64 / 100 * 100))
}

/// CPU time as `ps` users read it: `0.06s`, `12.30s`, `1h2m3s`.
fn cpu(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        go_duration(Duration::from_secs(d.as_secs()))
    }
}

impl Diagnosis<'_> {
    /// The text, several lines, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", headline(self.step, self.place, self.breach));
        let _ = writeln!(out, "  {}", self.command);
        let progress = match self.last_progress {
            Some(kind) => format!(
                "last progress ({}) {} ago",
                kind_name(kind),
                short(self.idle)
            ),
            None => "no progress since it started".to_string(),
        };
        let _ = writeln!(
            out,
            "  attempt {} of {}, running for {}, {progress}",
            self.attempt,
            self.attempts,
            short(self.elapsed)
        );
        if let Some(note) = self.lock_wait {
            let _ = writeln!(out, "  {note}");
        }
        if self.tail.is_empty() {
            let _ = writeln!(out, "  output: none");
        } else {
            match self.tail.len() {
                1 => out.push_str("  last line of output:\n"),
                n => {
                    let _ = writeln!(out, "  last {n} lines of output:");
                }
            }
            for line in self.tail {
                let _ = writeln!(out, "    | {}", clip(line, 200));
            }
        }
        self.render_tree(&mut out);
        let then = if self.attempt < self.attempts {
            format!("retry (attempt {} of {})", self.attempt + 1, self.attempts)
        } else {
            "fail the build".to_string()
        };
        let _ = writeln!(
            out,
            "  next: kill the process tree, remove the step's mounts, {then}"
        );
        out
    }

    fn render_tree(&self, out: &mut String) {
        let processes = &self.tree.processes;
        if processes.is_empty() {
            let why = if self.lock_wait.is_some() {
                "its command has not started"
            } else {
                "no process is running"
            };
            let _ = writeln!(out, "  process tree: empty ({why})");
            return;
        }
        let total: Duration = processes.iter().map(ProcessInfo::cpu_time).sum();
        let _ = writeln!(
            out,
            "  process tree ({} process{}, {} CPU in all):",
            processes.len(),
            if processes.len() == 1 { "" } else { "es" },
            cpu(total)
        );
        let _ = writeln!(
            out,
            "    {:>8} {:>6}  {:<10} {:>7}  {:<22} {:<16} COMMAND",
            "PID", "NSPID", "STATE", "CPU", "WAIT CHANNEL", "SYSCALL"
        );
        // Parents before children, each child under its parent.
        let pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
        let mut children: HashMap<u32, Vec<&ProcessInfo>> = HashMap::new();
        let mut roots = Vec::new();
        for p in processes {
            if pids.contains(&p.ppid) {
                children.entry(p.ppid).or_default().push(p);
            } else {
                roots.push(p);
            }
        }
        let mut stack: Vec<(&ProcessInfo, usize)> =
            roots.into_iter().rev().map(|p| (p, 0)).collect();
        while let Some((p, depth)) = stack.pop() {
            let command = if p.cmdline.is_empty() {
                format!("[{}]", p.comm)
            } else {
                p.cmdline.join(" ")
            };
            let indent = if depth == 0 {
                String::new()
            } else {
                format!("{}\\_ ", "   ".repeat(depth - 1))
            };
            let _ = writeln!(
                out,
                "    {:>8} {:>6}  {:<10} {:>7}  {:<22} {:<16} {indent}{}",
                p.pid,
                p.ns_pid.map_or("-".to_string(), |n| n.to_string()),
                state_name(p.state),
                cpu(p.cpu_time()),
                clip(p.wchan.as_deref().unwrap_or("-"), 22),
                p.syscall.map_or("-".to_string(), syscalls::name),
                clip(&command, 160),
            );
            let pad =
                " ".repeat(4 + 8 + 1 + 6 + 2 + 10 + 1 + 7 + 2 + 22 + 1 + 16 + 1 + indent.len());
            for socket in &p.sockets {
                let _ = writeln!(out, "{pad}{}", socket_text(socket));
            }
            if let Some(kids) = children.get(&p.pid) {
                stack.extend(kids.iter().rev().map(|c| (*c, depth + 1)));
            }
        }
    }
}

/// `tcp 10.0.0.2:51234 -> 93.184.216.34:443 ESTABLISHED send-q 0 recv-q 0`.
fn socket_text(s: &SocketInfo) -> String {
    let proto = match s.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let remote = if is_unspecified(&s.remote) {
        String::new()
    } else {
        format!(" -> {}", s.remote)
    };
    format!(
        "{proto} {}{remote} {} send-q {} recv-q {}",
        s.local,
        socket_state(s.state),
        s.tx_queue,
        s.rx_queue
    )
}

fn is_unspecified(addr: &SocketAddr) -> bool {
    addr.ip().is_unspecified() && addr.port() == 0
}

/// As `ss` names them.
fn socket_state(state: SocketState) -> String {
    match state {
        SocketState::Established => "ESTABLISHED".into(),
        SocketState::SynSent => "SYN-SENT".into(),
        SocketState::SynRecv => "SYN-RECV".into(),
        SocketState::FinWait1 => "FIN-WAIT-1".into(),
        SocketState::FinWait2 => "FIN-WAIT-2".into(),
        SocketState::TimeWait => "TIME-WAIT".into(),
        SocketState::Close => "UNCONN".into(),
        SocketState::CloseWait => "CLOSE-WAIT".into(),
        SocketState::LastAck => "LAST-ACK".into(),
        SocketState::Listen => "LISTEN".into(),
        SocketState::Closing => "CLOSING".into(),
        SocketState::NewSynRecv => "NEW-SYN-RECV".into(),
        SocketState::Unknown(code) => format!("state {code:#x}"),
    }
}

fn state_name(state: ProcessState) -> String {
    match state {
        ProcessState::Running => "running".into(),
        ProcessState::Sleeping => "sleeping".into(),
        ProcessState::DiskSleep => "disk-sleep".into(),
        ProcessState::Stopped => "stopped".into(),
        ProcessState::TracingStop => "traced".into(),
        ProcessState::Zombie => "zombie".into(),
        ProcessState::Dead => "dead".into(),
        ProcessState::Idle => "idle".into(),
        ProcessState::Other(c) => c.to_string(),
    }
}

fn kind_name(kind: ProgressKind) -> &'static str {
    match kind {
        ProgressKind::Output => "output",
        ProgressKind::Cpu => "CPU",
        ProgressKind::Io => "I/O",
        ProgressKind::Network => "network",
        ProgressKind::Milestone => "started",
    }
}

/// At most `max` characters, with `…` for the rest.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_sandbox::IoCounters;

    #[test]
    fn durations_read_as_go_prints_them() {
        let d = |ms| go_duration(Duration::from_millis(ms));
        assert_eq!(d(0), "0s");
        assert_eq!(d(300), "300ms");
        assert_eq!(d(3000), "3s");
        assert_eq!(d(2500), "2.5s");
        assert_eq!(d(600_000), "10m0s");
        assert_eq!(d(3_723_000), "1h2m3s");
        assert_eq!(d(3_600_000), "1h0m0s");
    }

    fn process(
        pid: u32,
        ppid: u32,
        ns: u32,
        cmd: &[&str],
        wchan: &str,
        syscall: i64,
    ) -> ProcessInfo {
        ProcessInfo {
            pid,
            ns_pid: Some(ns),
            ppid,
            state: ProcessState::Sleeping,
            comm: cmd[0].rsplit('/').next().unwrap().to_string(),
            cmdline: cmd.iter().map(|s| s.to_string()).collect(),
            wchan: Some(wchan.to_string()),
            syscall: Some(syscall),
            threads: 1,
            user_time: Duration::from_millis(10),
            system_time: Duration::from_millis(20),
            reaped_children_time: Duration::ZERO,
            io: Some(IoCounters::default()),
            sockets: Vec::new(),
        }
    }

    #[test]
    fn a_stalled_client_names_its_peer() {
        let mut client = process(
            812350,
            812345,
            7,
            &["nc", "127.0.0.1", "40123"],
            "sk_wait_data",
            45,
        );
        client.sockets.push(SocketInfo {
            inode: 9,
            protocol: Protocol::Tcp,
            local: "127.0.0.1:51234".parse().unwrap(),
            remote: "127.0.0.1:40123".parse().unwrap(),
            state: SocketState::Established,
            tx_queue: 0,
            rx_queue: 0,
        });
        let tree = ProcessTree {
            processes: vec![
                process(
                    812345,
                    812300,
                    1,
                    &["/bin/sh", "-c", "nc 127.0.0.1 40123"],
                    "do_wait",
                    61,
                ),
                client,
            ],
            ..ProcessTree::default()
        };
        let tail = vec!["connecting".to_string()];
        let text = Diagnosis {
            step: Some(7),
            place: "Dockerfile:12",
            command: "RUN nc 127.0.0.1 40123",
            breach: Breach::Stalled {
                limit: Duration::from_secs(3),
            },
            elapsed: Duration::from_millis(4050),
            idle: Duration::from_millis(3020),
            last_progress: Some(ProgressKind::Milestone),
            tail: &tail,
            tree: &tree,
            lock_wait: None,
            attempt: 1,
            attempts: 2,
        }
        .render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "step 7 (Dockerfile:12) stalled: no output, CPU or I/O for 3s"
        );
        assert_eq!(lines[1], "  RUN nc 127.0.0.1 40123");
        assert_eq!(
            lines[2],
            "  attempt 1 of 2, running for 4s, last progress (started) 3s ago"
        );
        assert_eq!(lines[3], "  last line of output:");
        assert_eq!(lines[4], "    | connecting");
        assert_eq!(lines[5], "  process tree (2 processes, 0.06s CPU in all):");
        assert!(
            lines[6].trim_start().starts_with("PID  NSPID  STATE"),
            "{text}"
        );
        assert!(
            lines[7].contains("do_wait") && lines[7].contains("wait4"),
            "{text}"
        );
        #[cfg(target_arch = "x86_64")]
        assert!(lines[8].contains("recvfrom"), "{text}");
        assert!(lines[8].ends_with("\\_ nc 127.0.0.1 40123"), "{text}");
        assert!(
            lines[9].trim().starts_with(
                "tcp 127.0.0.1:51234 -> 127.0.0.1:40123 ESTABLISHED send-q 0 recv-q 0"
            ),
            "{text}"
        );
        assert_eq!(
            lines[10],
            "  next: kill the process tree, remove the step's mounts, retry (attempt 2 of 2)"
        );
    }

    #[test]
    fn a_lock_wait_has_no_tree_yet() {
        let tree = ProcessTree::default();
        let text = Diagnosis {
            step: None,
            place: "Dockerfile:3",
            command: "RUN make",
            breach: Breach::TimedOut {
                limit: Duration::from_secs(1200),
            },
            elapsed: Duration::from_secs(1200),
            idle: Duration::from_secs(1200),
            last_progress: None,
            tail: &[],
            tree: &tree,
            lock_wait: Some("waiting for cache mount /cache (id \"x\", sharing=locked): held by build b (pid 9)"),
            attempt: 1,
            attempts: 1,
        }
        .render();
        assert!(
            text.starts_with("ONBUILD step (Dockerfile:3) timed out: still running after 20m0s\n"),
            "{text}"
        );
        assert!(text.contains("no progress since it started"), "{text}");
        assert!(
            text.contains("\n  waiting for cache mount /cache"),
            "{text}"
        );
        assert!(text.contains("output: none"), "{text}");
        assert!(
            text.contains("process tree: empty (its command has not started)"),
            "{text}"
        );
        assert!(text.ends_with(", fail the build\n"), "{text}");
    }
}
