//! Processes a test left behind, found by a marker in their command line.
//!
//! Tests run concurrently (nextest runs every test in its own process, with
//! the test's name in its arguments), so a marker must be unique to one
//! test across the whole suite: an odd number (`sleep 86421`) or a word no
//! test name contains.

/// Live processes, other than this one, whose command line contains
/// `marker`, as `"pid: cmdline"`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = fs_err::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = fs_err::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Panics, listing them, if processes with `marker` are alive.
pub fn assert_no_process(marker: &str) {
    let left = processes_with(marker);
    assert!(left.is_empty(), "processes left: {left:#?}");
}
