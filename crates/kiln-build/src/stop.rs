//! A stop flag (the build's cancel, a second Ctrl-C) checked by long
//! reads and writes: a COPY's copy, an ADD's archive, a layer's blob.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `stop`, if any, is set.
pub(crate) fn stopped(stop: Option<&AtomicBool>) -> bool {
    stop.is_some_and(|s| s.load(Ordering::Relaxed))
}

/// A reader or writer that fails once `stop` is set: what reads or
/// writes through it ends at its next call (the caller tells that failure
/// from others with [`stopped`]).
pub(crate) struct Stoppable<'a, T> {
    pub(crate) inner: T,
    pub(crate) stop: Option<&'a AtomicBool>,
}

impl<T> Stoppable<'_, T> {
    fn check(&self) -> io::Result<()> {
        if stopped(self.stop) {
            return Err(io::Error::other("stopped: the build was cancelled"));
        }
        Ok(())
    }
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl<W: Write> Write for Stoppable<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
