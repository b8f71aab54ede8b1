//! Watching the Kubernetes double in-process for the pods the benchmark expects, and latency
//! statistics.
//!
//! [`PodObserver`] waits with [`KubeDouble::wait_for`], which re-runs its check on every change of
//! the store, and records the first [`Instant`] each expected `clearml-id-<task>` pod is seen.
//! Each check reads only the store's changes since the previous one (its first, every pod
//! expected), so observing costs what changed, not the number of pods.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::task::JoinHandle;

use clearml_doubles::k8s::{EventKind, KubeDouble};

/// The pod the agent and the Python glue create for `task` (single-node).
pub fn pod_name(task: &str) -> String {
    format!("clearml-id-{task}")
}

/// Records when each expected pod first exists.
pub struct PodObserver {
    join: JoinHandle<HashMap<String, Instant>>,
}

impl PodObserver {
    /// Starts watching `namespace` for the pods of `tasks`, for at most `timeout`.
    pub fn start(
        kube: Arc<KubeDouble>,
        namespace: &str,
        tasks: &[String],
        timeout: Duration,
    ) -> Self {
        let ns = namespace.to_string();
        let mut unseen: HashMap<String, String> =
            tasks.iter().map(|t| (pod_name(t), t.clone())).collect();
        let join = tokio::spawn(async move {
            let mut seen: HashMap<String, Instant> = HashMap::new();
            // resourceVersion already looked at: later checks read only the pod creations since
            let mut checked: Option<u64> = None;
            let _ = kube
                .wait_for(timeout, |view| {
                    let now = Instant::now();
                    let changes = checked.and_then(|rv| view.changes_since("pods", Some(&ns), rv));
                    checked = Some(view.resource_version());
                    match changes {
                        Some(changes) => {
                            for (kind, pod) in changes {
                                let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                                if kind == EventKind::Added
                                    && let Some(task) = unseen.remove(name)
                                {
                                    seen.insert(task, now);
                                }
                            }
                        }
                        None => unseen.retain(|pod, task| {
                            let exists = view.get("pods", &ns, pod).is_some();
                            if exists {
                                seen.insert(std::mem::take(task), now);
                            }
                            !exists
                        }),
                    }
                    unseen.is_empty().then_some(())
                })
                .await;
            seen
        });
        Self { join }
    }

    /// Waits until every pod was seen or the timeout passed; returns the first-seen instants by
    /// task id (tasks whose pod never appeared are missing).
    pub async fn finish(self) -> HashMap<String, Instant> {
        self.join.await.unwrap_or_default()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Samples that are lower bounds (tasks without a pod when observation ended).
    pub censored: usize,
    /// Which of `p50`, `p95`, `p99`, `max` fell on a lower bound (the true value is larger).
    pub lower_bounds: Vec<String>,
}

impl Latency {
    /// Nearest-rank percentiles of `samples` (duration, is a lower bound); `None` when empty.
    pub fn of(samples: &[(Duration, bool)]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<(f64, bool)> = samples
            .iter()
            .map(|(d, c)| (d.as_secs_f64() * 1e3, *c))
            .collect();
        ms.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut lower_bounds = Vec::new();
        let mut pick = |q: f64, name: &str| {
            let rank = (q * ms.len() as f64).ceil() as usize;
            let (v, censored) = ms[rank.clamp(1, ms.len()) - 1];
            if censored {
                lower_bounds.push(name.to_string());
            }
            v
        };
        let (p50_ms, p95_ms, p99_ms, max_ms) = (
            pick(0.50, "p50"),
            pick(0.95, "p95"),
            pick(0.99, "p99"),
            pick(1.0, "max"),
        );
        Some(Self {
            p50_ms,
            p95_ms,
            p99_ms,
            max_ms,
            censored: samples.iter().filter(|s| s.1).count(),
            lower_bounds,
        })
    }
}

/// Enqueue→pod-created outcome of a set of tasks.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Tasks enqueued.
    pub tasks: usize,
    /// Tasks whose pod appeared.
    pub dispatched: usize,
    /// Enqueue→pod-created per task; for a task without a pod, enqueue→end of observation,
    /// flagged as a lower bound.
    pub latencies: Vec<(Duration, bool)>,
    /// First enqueue.
    pub first_enqueue: Option<Instant>,
    /// Last pod seen.
    pub last_created: Option<Instant>,
}

impl Dispatch {
    /// Joins enqueue instants with first-seen instants; observation ended at `ended`.
    pub fn of(
        enqueued: &HashMap<String, Instant>,
        created: &HashMap<String, Instant>,
        ended: Instant,
    ) -> Self {
        let latencies: Vec<(Duration, bool)> = enqueued
            .iter()
            .map(|(t, at)| match created.get(t) {
                Some(c) => (c.saturating_duration_since(*at), false),
                None => (ended.saturating_duration_since(*at), true),
            })
            .collect();
        Self {
            tasks: enqueued.len(),
            dispatched: latencies.iter().filter(|l| !l.1).count(),
            latencies,
            first_enqueue: enqueued.values().min().copied(),
            last_created: created.values().max().copied(),
        }
    }

    /// Percentiles over every task.
    pub fn latency(&self) -> Option<Latency> {
        Latency::of(&self.latencies)
    }

    /// Seconds from the first enqueue to the last pod created.
    pub fn span_secs(&self) -> Option<f64> {
        let (a, b) = (self.first_enqueue?, self.last_created?);
        Some(b.saturating_duration_since(a).as_secs_f64())
    }

    /// Dispatched tasks per second over [`Dispatch::span_secs`].
    pub fn tasks_per_sec(&self) -> Option<f64> {
        let span = self.span_secs()?;
        (span > 0.0).then(|| self.dispatched as f64 / span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<(Duration, bool)> = (1..=100).map(|v| (ms(v), false)).collect();
        let l = Latency::of(&samples).expect("samples");
        assert_eq!(
            (l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert!(l.lower_bounds.is_empty());
        let one = Latency::of(&[(ms(7), false)]).expect("one");
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn undispatched_tasks_make_the_top_percentiles_lower_bounds() {
        let mut samples: Vec<(Duration, bool)> = (1..=98).map(|v| (ms(v), false)).collect();
        samples.push((ms(5000), true));
        samples.push((ms(5000), true));
        let l = Latency::of(&samples).expect("samples");
        assert_eq!(l.censored, 2);
        assert_eq!(l.lower_bounds, vec!["p99", "max"]);
        assert_eq!((l.p95_ms, l.p99_ms), (95.0, 5000.0));
    }

    #[test]
    fn dispatch_joins_enqueue_and_creation() {
        let t0 = Instant::now();
        let at = |pairs: &[(&str, u64)]| -> HashMap<String, Instant> {
            pairs
                .iter()
                .map(|(t, v)| (t.to_string(), t0 + ms(*v)))
                .collect()
        };
        let enq = at(&[("a", 0), ("b", 10), ("c", 20)]);
        let created = at(&[("a", 100), ("b", 210)]);
        let d = Dispatch::of(&enq, &created, t0 + ms(1020));
        assert_eq!((d.tasks, d.dispatched), (3, 2));
        let mut l = d.latencies.clone();
        l.sort();
        assert_eq!(
            l,
            vec![(ms(100), false), (ms(200), false), (ms(1000), true)]
        );
        assert!((d.span_secs().expect("span") - 0.21).abs() < 1e-9);
    }
}
