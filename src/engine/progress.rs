//! Progress as events: the engine never prints. Front ends turn events into a bar, log lines,
//! JSON or a TUI gauge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A job started; `total` bytes of work are expected in all its steps.
    Job {
        /// `save`, `restore`, `verify`, `clone`.
        op: &'static str,
        /// Bytes of work.
        total: u64,
    },
    /// A step started (a partition, the boot area, verification).
    Step {
        /// What is being done, in plain words.
        label: String,
        /// Bytes of work in this step.
        total: u64,
    },
    /// `bytes` more bytes of work are done.
    Advance {
        /// Delta.
        bytes: u64,
    },
    /// Something the user should know; the job goes on.
    Warning(String),
    /// A plain note for the log.
    Note(String),
}

/// Receives progress events; called from worker threads.
pub trait Progress: Send + Sync {
    /// Handles one event.
    fn event(&self, ev: ProgressEvent);
}

/// Discards everything.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _ev: ProgressEvent) {}
}

/// Keeps every event (tests).
#[derive(Debug, Default)]
pub struct Collect(pub Mutex<Vec<ProgressEvent>>);

impl Progress for Collect {
    fn event(&self, ev: ProgressEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ev);
    }
}

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Asks every running job to stop at the next block (SIGINT does this).
pub fn request_cancel() {
    CANCEL.store(true, Ordering::SeqCst);
}

/// True once a stop was requested.
pub fn cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed)
}

/// Clears a stop request, so that the next job of a long-lived front end (the TUI) runs; call
/// it before starting a job, never while one runs.
pub fn reset_cancel() {
    CANCEL.store(false, Ordering::SeqCst);
}
