//! Shared health flags: readiness (caches warm, not draining) and ClearML connectivity, read by
//! `/readyz`, the control API and the status command.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU32, Ordering},
};

/// Health of this agent process.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Consecutive failed ClearML calls.
    clearml_failures: AtomicU32,
    last_error: Mutex<Option<String>>,
}

/// How ClearML is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// The last call succeeded.
    Ok,
    /// Some recent calls failed (retries under way).
    Degraded,
    /// Many consecutive calls failed.
    Down,
}

impl Health {
    /// Marks the agent ready (caches warm) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready to serve.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Records one ClearML attempt.
    pub fn clearml_call(&self, ok: bool) {
        if ok {
            self.clearml_failures.store(0, Ordering::SeqCst);
        } else {
            self.clearml_failures.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Records the last ClearML error (text without secrets).
    pub fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = error;
        }
    }

    /// The last ClearML error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|s| s.clone())
    }

    /// ClearML connectivity from the run of failed calls.
    pub fn clearml(&self) -> Connectivity {
        match self.clearml_failures.load(Ordering::SeqCst) {
            0 => Connectivity::Ok,
            1..=9 => Connectivity::Degraded,
            _ => Connectivity::Down,
        }
    }
}
