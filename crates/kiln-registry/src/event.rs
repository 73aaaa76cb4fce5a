//! What the client reports while it works: retries, resumes, progress.
//! The engine never prints; the CLI renders these.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Operation;

/// Something worth telling the user about an operation in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An attempt failed in a way that may pass; the next one starts after `delay`.
    /// `attempt` counts the failed attempts in a row (1 for the first retry).
    Retry {
        operation: Operation,
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// A transfer goes on from `offset` after an interruption, instead of
    /// starting over.
    Resume { operation: Operation, offset: u64 },
    /// A transfer starts over from byte zero (a server that ignores `Range`,
    /// an upload session the registry dropped, a digest mismatch).
    Restart {
        operation: Operation,
        reason: String,
    },
    /// Bytes moved so far, at most every [`PROGRESS_STEP`] bytes and at the end.
    Progress {
        operation: Operation,
        bytes: u64,
        total: Option<u64>,
    },
    /// The blob was already in the repository: nothing was uploaded.
    BlobExists { operation: Operation },
    /// The blob was mounted from another repository of the same registry.
    Mounted { operation: Operation, from: String },
    /// A pull of `image` (familiar form) did not come from `mirror`
    /// (`reason`); the next mirror, or the image's own registry, is next.
    MirrorFailed {
        image: String,
        mirror: String,
        reason: String,
    },
    /// A pull of `image` came from `mirror`, as `from`.
    Mirrored {
        image: String,
        mirror: String,
        from: String,
    },
}

/// How often [`Event::Progress`] is reported.
pub const PROGRESS_STEP: u64 = 1 << 20;

/// Receives every [`Event`]. Called from the client's tasks: keep it quick.
pub type EventHandler = Arc<dyn Fn(&Event) + Send + Sync>;

/// Reports progress of one transfer, throttled to [`PROGRESS_STEP`].
pub(crate) struct Progress {
    operation: Operation,
    total: Option<u64>,
    handler: Option<EventHandler>,
    last: AtomicU64,
}

impl Progress {
    pub(crate) fn new(
        operation: Operation,
        total: Option<u64>,
        handler: Option<EventHandler>,
    ) -> Progress {
        Progress {
            operation,
            total,
            handler,
            last: AtomicU64::new(u64::MAX),
        }
    }

    /// `bytes` of the whole transfer are done (they may go back after a retry).
    pub(crate) fn report(&self, bytes: u64) {
        let Some(handler) = &self.handler else { return };
        let last = self.last.load(Ordering::Relaxed);
        let due = last == u64::MAX
            || bytes < last
            || bytes - last >= PROGRESS_STEP
            || (Some(bytes) == self.total && bytes != last);
        if due {
            self.last.store(bytes, Ordering::Relaxed);
            handler(&Event::Progress {
                operation: self.operation.clone(),
                bytes,
                total: self.total,
            });
        }
    }
}
