//! Shared health flags: readiness (caches warm, not draining) and ClearML connectivity, read by
//! `/readyz`, the control API and the status command.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

/// A ClearML failure this recent makes the connection "degraded".
const DEGRADED_WINDOW: Duration = Duration::from_secs(60);
/// This many consecutive failed calls make it "down".
const DOWN_AFTER: u32 = 10;

/// Health of this agent process.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Consecutive failed ClearML calls.
    clearml_failures: AtomicU32,
    last_failure: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    restart_needed: Mutex<Vec<String>>,
}

/// How ClearML is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// The last call succeeded.
    Ok,
    /// A call failed within the last minute (retries under way or done).
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
            if let Ok(mut t) = self.last_failure.lock() {
                *t = Some(Instant::now());
            }
        }
    }

    /// Records the last ClearML error (text without secrets).
    pub fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = error;
        }
    }

    /// Records the config changes that apply only after a restart (empty: none).
    pub fn set_restart_needed(&self, changes: Vec<String>) {
        if let Ok(mut slot) = self.restart_needed.lock() {
            *slot = changes;
        }
    }

    /// The config changes waiting for a restart.
    pub fn restart_needed(&self) -> Vec<String> {
        self.restart_needed
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The last ClearML error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|s| s.clone())
    }

    /// ClearML connectivity: down after a run of failed calls, degraded for a minute after any
    /// failure.
    pub fn clearml(&self) -> Connectivity {
        if self.clearml_failures.load(Ordering::SeqCst) >= DOWN_AFTER {
            return Connectivity::Down;
        }
        let recent = self
            .last_failure
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() < DEGRADED_WINDOW);
        if recent {
            Connectivity::Degraded
        } else {
            Connectivity::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectivity_follows_failures() {
        let h = Health::default();
        assert_eq!(h.clearml(), Connectivity::Ok);
        h.clearml_call(false);
        assert_eq!(h.clearml(), Connectivity::Degraded);
        h.clearml_call(true);
        assert_eq!(
            h.clearml(),
            Connectivity::Degraded,
            "a recent failure still shows"
        );
        for _ in 0..DOWN_AFTER {
            h.clearml_call(false);
        }
        assert_eq!(h.clearml(), Connectivity::Down);
    }
}
