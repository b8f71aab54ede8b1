//! The write gate: one pause shared by the concurrent pod writes of a tick, so a 429's
//! `Retry-After` stops the rest of the batch at once, and an exponential backoff while a tick's
//! writes all fail, so a struggling API server sees less load, not the same load later.

use std::time::{Duration, Instant};

/// First backoff after a tick whose pod writes failed; doubles per failing tick.
const KUBE_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Cap of that backoff.
const KUBE_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The pause on pod writes, shared by the concurrent launches of a tick so one 429 stops the rest
/// of the batch at once.
#[derive(Default)]
pub(super) struct WriteGate {
    /// No pod writes before this.
    until: parking_lot::Mutex<Option<Instant>>,
    /// Consecutive ticks whose pod writes all failed.
    failures: u32,
}

impl WriteGate {
    /// Pod writes are paused (the API server asked us to wait, or writes keep failing).
    pub(super) fn paused(&self) -> bool {
        self.until.lock().is_some_and(|t| Instant::now() < t)
    }

    /// Pauses pod writes for at least `wait`.
    pub(super) fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut slot = self.until.lock();
        if slot.is_none_or(|t| t < until) {
            *slot = Some(until);
        }
    }

    /// After a tick's launches: pauses for what the API server asked (429 `Retry-After`) or the
    /// backoff of consecutive failing ticks, whichever is longer; returns that pause. A tick
    /// whose writes all failed doubles the backoff; one with a success resets it.
    pub(super) fn after_tick(&mut self, failed: u32, ok: u32, asked: Duration) -> Duration {
        if failed > 0 && ok == 0 {
            self.failures = self.failures.saturating_add(1);
        } else {
            self.failures = 0;
        }
        let wait = asked.max(backoff(self.failures));
        if !wait.is_zero() {
            self.pause(wait);
        }
        wait
    }
}

/// The pause after `failures` consecutive failing ticks: 0, then 200 ms doubling up to 10 s.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => KUBE_BACKOFF_BASE
            .saturating_mul(1 << n.min(7))
            .min(KUBE_BACKOFF_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let ms = Duration::from_millis;
        for (failures, want) in [
            (0, Duration::ZERO),
            (1, ms(200)),
            (2, ms(400)),
            (5, ms(3200)),
            (6, ms(6400)),
            (7, Duration::from_secs(10)),
            (u32::MAX, Duration::from_secs(10)),
        ] {
            assert_eq!(backoff(failures), want, "{failures} failing ticks");
        }
    }

    #[test]
    fn the_gate_pauses_for_the_longer_of_asked_and_backoff() {
        let mut gate = WriteGate::default();
        assert!(!gate.paused());
        assert_eq!(gate.after_tick(0, 3, Duration::ZERO), Duration::ZERO);
        assert!(!gate.paused(), "a clean tick does not pause");
        let asked = Duration::from_secs(1);
        assert_eq!(gate.after_tick(2, 0, asked), asked, "Retry-After wins");
        assert!(gate.paused());
        let mut gate = WriteGate::default();
        assert_eq!(
            gate.after_tick(1, 0, Duration::ZERO),
            Duration::from_millis(200)
        );
        assert_eq!(
            gate.after_tick(1, 0, Duration::ZERO),
            Duration::from_millis(400),
            "doubles while every write fails"
        );
        assert_eq!(
            gate.after_tick(1, 1, Duration::ZERO),
            Duration::ZERO,
            "a success resets it"
        );
    }
}
