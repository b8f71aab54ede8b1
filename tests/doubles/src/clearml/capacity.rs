//! The capacity model: a real ClearML server is a Python service in front of MongoDB with a few
//! worker processes, shared with every SDK client and UI user, answering a few hundred calls a
//! second. Against the double, which answers in microseconds, an agent's number of calls is
//! invisible; with a [`Capacity`] set every HTTP call (whatever its endpoint) waits for one of
//! `workers` free workers, occupies it for `service_time`, and is then served, so the double
//! answers at most `workers / service_time` calls per second (5 ms × 1 worker ≈ 200 calls/s) and
//! calls queue up beyond that. In-process [`super::ClearmlDouble::call`]s (test seeding, the
//! benchmark's load) bypass it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How much the double serves: `workers` calls at once, each taking `service_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Time one call occupies a worker.
    pub service_time: Duration,
    /// Calls served at once (at least 1).
    pub workers: usize,
}

impl Capacity {
    /// Calls per second at most.
    pub fn calls_per_sec(&self) -> f64 {
        let secs = self.service_time.as_secs_f64();
        if secs == 0.0 {
            return f64::INFINITY;
        }
        self.workers.max(1) as f64 / secs
    }
}

/// The workers of a [`Capacity`] in force.
#[derive(Debug, Clone)]
pub(crate) struct Workers {
    capacity: Capacity,
    free: Arc<Semaphore>,
}

impl Workers {
    pub(crate) fn new(capacity: Capacity) -> Self {
        Self {
            capacity,
            free: Arc::new(Semaphore::new(capacity.workers.max(1))),
        }
    }

    pub(crate) fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Waits for a free worker and spends the service time on it; the call is served while the
    /// returned permit is held.
    pub(crate) async fn serve(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.free.clone().acquire_owned().await.ok()?;
        if !self.capacity.service_time.is_zero() {
            tokio::time::sleep(self.capacity.service_time).await;
        }
        Some(permit)
    }
}
