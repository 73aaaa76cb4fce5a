//! What the watchdog keeps of a running step: how much it printed, its
//! last lines, and the cache lock it waits for.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_sandbox::Stream;

use crate::run::StepObserver;

/// How many lines of output a diagnosis shows.
pub const TAIL_LINES: usize = 20;

/// The longest a kept line may be, in bytes; longer ones keep their end
/// (where a `\r` progress bar shows its latest state).
const MAX_LINE: usize = 4096;

/// Records a step for its watchdog; give it to the RUN executor as its
/// [`StepObserver`]. One per attempt.
#[derive(Debug, Default)]
pub(crate) struct StepRecorder {
    bytes: AtomicU64,
    milestones: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Complete lines, both streams in arrival order, the last
    /// [`TAIL_LINES`] of them.
    lines: VecDeque<String>,
    /// What came after the last newline, per stream.
    partial: [Vec<u8>; 2],
    lock_wait: Option<String>,
}

impl StepRecorder {
    pub(crate) fn new() -> StepRecorder {
        StepRecorder::default()
    }

    /// Bytes of output so far, both streams.
    pub(crate) fn output_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Cache locks granted after a wait, so far.
    pub(crate) fn milestones(&self) -> u64 {
        self.milestones.load(Ordering::Relaxed)
    }

    /// The last lines of output, oldest first, as a terminal would show
    /// them (a line redrawn with `\r` shows its last state); an unfinished
    /// last line (a prompt) is included.
    pub(crate) fn tail(&self) -> Vec<String> {
        let inner = self.lock();
        let mut out: Vec<String> = inner.lines.iter().cloned().collect();
        for partial in &inner.partial {
            let text = shown(partial);
            if !text.is_empty() {
                out.push(text);
            }
        }
        let skip = out.len().saturating_sub(TAIL_LINES);
        out.drain(..skip);
        out
    }

    /// Who holds the cache lock the step waits for, while it waits.
    pub(crate) fn lock_note(&self) -> Option<String> {
        self.lock().lock_wait.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain text: a panic elsewhere cannot leave it torn.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StepObserver for StepRecorder {
    fn output(&self, stream: Stream, mut data: &[u8]) {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut inner = self.lock();
        let inner = &mut *inner;
        let slot = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            inner.partial[slot].extend_from_slice(&data[..end]);
            let line = shown(&inner.partial[slot]);
            inner.partial[slot].clear();
            inner.lines.push_back(line);
            if inner.lines.len() > TAIL_LINES {
                inner.lines.pop_front();
            }
            data = &data[end + 1..];
        }
        let partial = &mut inner.partial[slot];
        partial.extend_from_slice(data);
        if partial.len() > MAX_LINE {
            partial.drain(..partial.len() - MAX_LINE);
        }
    }

    fn lock_wait(&self, note: &str) {
        self.lock().lock_wait = Some(note.to_string());
    }

    fn lock_done(&self) {
        self.lock().lock_wait = None;
        self.milestones.fetch_add(1, Ordering::Relaxed);
    }
}

/// A line as a terminal shows it: what follows its last `\r` (ignoring a
/// trailing one, as in `\r\n`), at most [`MAX_LINE`] bytes of its end.
fn shown(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = line.iter().rposition(|&b| b == b'\r').map_or(0, |i| i + 1);
    let line = &line[start..];
    let line = &line[line.len().saturating_sub(MAX_LINE)..];
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_counts_every_byte() {
        let r = StepRecorder::new();
        for i in 0..30 {
            r.output(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        r.output(Stream::Stderr, b"progress 10%\rprogress 20%\rprogress 3");
        r.output(Stream::Stderr, b"0%");
        let tail = r.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[0], "line 11");
        assert_eq!(tail[18], "line 29");
        assert_eq!(tail[19], "progress 30%");
        assert_eq!(
            r.output_bytes(),
            (0..30)
                .map(|i| format!("line {i}\n").len() as u64)
                .sum::<u64>()
                + 38
        );
    }

    #[test]
    fn crlf_lines_and_lock_waits() {
        let r = StepRecorder::new();
        r.output(Stream::Stdout, b"a\r\nb\r\n");
        assert_eq!(r.tail(), ["a", "b"]);
        r.lock_wait("held by build x");
        assert_eq!(r.lock_note().as_deref(), Some("held by build x"));
        assert_eq!(r.milestones(), 0);
        r.lock_done();
        assert_eq!(r.lock_note(), None);
        assert_eq!(r.milestones(), 1);
    }
}
