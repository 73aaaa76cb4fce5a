//! Where a run's stdout and stderr go.

use std::sync::Mutex;

/// Which pipe a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives a run's output as it arrives, from one reader thread per
/// stream (so calls for stdout and stderr may be concurrent).
///
/// Chunks are passed on as read, not split into lines: a progress bar that
/// redraws with `\r` is output too, and the watchdog must see it. Wrap a
/// callback in [`Lines`] for line-by-line logging.
///
/// A panic in a sink cancels the run; [`Executor::run`](crate::Executor::run)
/// cleans up and then resumes the panic on the caller's thread.
pub trait OutputSink: Sync {
    fn write(&self, stream: Stream, data: &[u8]);

    /// The stream reached end of file: the run's processes are gone or
    /// closed it.
    fn close(&self, _stream: Stream) {}
}

impl<F: Fn(Stream, &[u8]) + Sync> OutputSink for F {
    fn write(&self, stream: Stream, data: &[u8]) {
        self(stream, data)
    }
}

/// Splits output into lines (without their `\n`) and hands each to a
/// callback; a line longer than [`Lines::MAX_LINE`] is handed on in pieces so
/// that memory stays bounded, and a last line without `\n` is handed on at
/// end of file.
pub struct Lines<F> {
    callback: F,
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
}

impl<F: Fn(Stream, &[u8]) + Sync> Lines<F> {
    pub const MAX_LINE: usize = 64 * 1024;

    pub fn new(callback: F) -> Self {
        Self {
            callback,
            stdout: Mutex::new(Vec::new()),
            stderr: Mutex::new(Vec::new()),
        }
    }

    fn buffer(&self, stream: Stream) -> &Mutex<Vec<u8>> {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

impl<F: Fn(Stream, &[u8]) + Sync> OutputSink for Lines<F> {
    fn write(&self, stream: Stream, mut data: &[u8]) {
        let mut pending = lock(self.buffer(stream));
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&data[..end]);
            (self.callback)(stream, &pending);
            pending.clear();
            data = &data[end + 1..];
        }
        pending.extend_from_slice(data);
        while pending.len() >= Self::MAX_LINE {
            let rest = pending.split_off(Self::MAX_LINE);
            (self.callback)(stream, &pending);
            *pending = rest;
        }
    }

    fn close(&self, stream: Stream) {
        let mut pending = lock(self.buffer(stream));
        if !pending.is_empty() {
            (self.callback)(stream, &pending);
            pending.clear();
        }
    }
}

/// Keeps all output in memory: for tests and short commands.
#[derive(Debug, Default)]
pub struct Collect {
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
}

impl Collect {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stdout(&self) -> Vec<u8> {
        lock(&self.stdout).clone()
    }

    pub fn stderr(&self) -> Vec<u8> {
        lock(&self.stderr).clone()
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout()).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }
}

impl OutputSink for Collect {
    fn write(&self, stream: Stream, data: &[u8]) {
        let buffer = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        lock(buffer).extend_from_slice(data);
    }
}

/// A poisoned buffer still holds valid bytes; output is not worth a panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<(Stream, String)> {
        let seen = Mutex::new(Vec::new());
        let sink = Lines::new(|s: Stream, l: &[u8]| {
            lock(&seen).push((s, String::from_utf8_lossy(l).into_owned()))
        });
        for chunk in chunks {
            sink.write(Stream::Stdout, chunk);
        }
        sink.write(Stream::Stderr, b"err");
        sink.close(Stream::Stdout);
        sink.close(Stream::Stderr);
        seen.into_inner().unwrap()
    }

    #[test]
    fn lines_are_joined_across_chunks_and_flushed_at_eof() {
        let got = lines_of(&[b"he", b"llo\nwor", b"ld\n\nlast"]);
        let want = [
            (Stream::Stdout, "hello"),
            (Stream::Stdout, "world"),
            (Stream::Stdout, ""),
            (Stream::Stdout, "last"),
            (Stream::Stderr, "err"),
        ];
        let want: Vec<_> = want.iter().map(|(s, l)| (*s, l.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; Lines::<fn(Stream, &[u8])>::MAX_LINE + 10];
        let got = lines_of(&[&long]);
        assert_eq!(got[0].1.len(), Lines::<fn(Stream, &[u8])>::MAX_LINE);
        assert_eq!(got[1].1.len(), 10);
    }
}
