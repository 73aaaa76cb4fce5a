//! A window on a running step for whoever watches it (the watchdog): its
//! output as raw bytes, and its waits for `locked` cache mounts.

use kiln_sandbox::{OutputSink, Stream};

/// Watches one `RUN` step from inside [`run_step`](super::run_step). Called
/// from the sandbox's reader threads and the step's own thread: keep it
/// quick and never block.
pub trait StepObserver: Sync {
    /// A chunk of output as the sandbox read it, before it is split into
    /// lines: a progress bar that only redraws with `\r` is output too.
    fn output(&self, _stream: Stream, _data: &[u8]) {}

    /// The step waits for a `locked` cache mount that someone else holds;
    /// `note` says who (the text of the `StepNote` it emits). Called when
    /// the wait starts and at every note after; [`StepObserver::lock_done`]
    /// when it ends either way.
    fn lock_wait(&self, _note: &str) {}

    fn lock_done(&self) {}
}

/// An [`OutputSink`] that shows every chunk to an observer first.
pub(crate) struct Observed<'a, S> {
    pub(crate) inner: S,
    pub(crate) observer: Option<&'a dyn StepObserver>,
}

impl<S: OutputSink> OutputSink for Observed<'_, S> {
    fn write(&self, stream: Stream, data: &[u8]) {
        if let Some(observer) = self.observer {
            observer.output(stream, data);
        }
        self.inner.write(stream, data);
    }

    fn close(&self, stream: Stream) {
        self.inner.close(stream);
    }
}
