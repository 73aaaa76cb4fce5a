//! Parsers for the per-process files of proc(5).

use super::{IoCounters, ProcessState};

/// The fields of `/proc/<pid>/stat` the tree needs; times in clock ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) comm: String,
    pub(crate) state: ProcessState,
    pub(crate) ppid: u32,
    pub(crate) utime: u64,
    pub(crate) stime: u64,
    pub(crate) cutime: u64,
    pub(crate) cstime: u64,
    pub(crate) threads: u32,
    pub(crate) start_time: u64,
}

/// `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so
/// the fields after it are found from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Field n of proc(5) is at index n - 3 from here (field 3 is the state).
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(Stat {
        comm,
        state: ProcessState::from_code(f.first()?.chars().next()?),
        ppid: u32::try_from(num(4)?).ok()?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
        threads: u32::try_from(num(20)?).ok()?,
        start_time: num(22)?,
    })
}

/// `/proc/<pid>/io`: `name: value` lines.
pub(crate) fn parse_io(text: &str) -> IoCounters {
    let mut io = IoCounters::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let Ok(value) = value.trim().parse() else {
            continue;
        };
        match name {
            "rchar" => io.rchar = value,
            "wchar" => io.wchar = value,
            "syscr" => io.syscr = value,
            "syscw" => io.syscw = value,
            "read_bytes" => io.read_bytes = value,
            "write_bytes" => io.write_bytes = value,
            "cancelled_write_bytes" => io.cancelled_write_bytes = value,
            _ => {}
        }
    }
    io
}

/// The pid in the innermost namespace: the last field of `NSpid:` in
/// `/proc/<pid>/status`.
pub(crate) fn parse_ns_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// `/proc/<pid>/syscall`: the number of the syscall the process is blocked
/// in; "running", or -1 for a process blocked outside a syscall, give none.
pub(crate) fn parse_syscall(text: &str) -> Option<i64> {
    let nr: i64 = text.split_whitespace().next()?.parse().ok()?;
    (nr >= 0).then_some(nr)
}

/// `/proc/<pid>/wchan`: a kernel symbol, or "0" when the process runs.
pub(crate) fn parse_wchan(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text != "0").then(|| text.to_owned())
}

/// `/proc/<pid>/cmdline`: NUL-separated arguments.
pub(crate) fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_tricky_comm() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 2 0 987654 1000 200 18446744073709551615\n";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.comm, "a) b (c)");
        assert_eq!(stat.state, ProcessState::Sleeping);
        assert_eq!(stat.ppid, 1);
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (7, 3, 11, 13)
        );
        assert_eq!(stat.threads, 2);
        assert_eq!(stat.start_time, 987654);
    }

    #[test]
    fn io_counters() {
        let io = parse_io(
            "rchar: 7088\nwchar: 5\nsyscr: 10\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 0\ncancelled_write_bytes: 0\n",
        );
        assert_eq!(
            (io.rchar, io.wchar, io.syscr, io.read_bytes),
            (7088, 5, 10, 4096)
        );
    }

    #[test]
    fn small_files() {
        assert_eq!(parse_ns_pid("Name:\tsh\nNSpid:\t31337\t1\n"), Some(1));
        assert_eq!(parse_syscall("230 0x0 0x0 0x7fff 0x0\n"), Some(230));
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7fff 0x7fff\n"), None);
        assert_eq!(
            parse_wchan("hrtimer_nanosleep"),
            Some("hrtimer_nanosleep".into())
        );
        assert_eq!(parse_wchan("0"), None);
        assert_eq!(parse_cmdline(b"sleep\x00100\x00"), ["sleep", "100"]);
        assert!(parse_cmdline(b"").is_empty());
    }
}
