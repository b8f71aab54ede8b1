//! Prometheus metrics of the agent (served on `/metrics`): tasks dispatched and failed by reason,
//! pods per queue and phase, and ClearML call latency and failures per endpoint.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::clearml::CallObserver;

/// Labels `queue`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Queue name.
    pub queue: String,
}

/// Labels `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Failure category.
    pub reason: String,
}

/// Labels `queue`, `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// Queue name.
    pub queue: String,
    /// Why: a disruption reason (`PreemptionByScheduler`, `Evicted`, …) or `GangTimeout`.
    pub reason: String,
}

/// Labels `queue`, `phase`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    /// Queue name.
    pub queue: String,
    /// Pod phase (Pending, Running, Succeeded, Failed, Terminating).
    pub phase: String,
}

/// Labels `endpoint`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `service.action`.
    pub endpoint: String,
}

/// Every metric family of the agent.
pub struct Metrics {
    registry: Registry,
    /// Tasks whose pods were created.
    pub tasks_dispatched: Family<QueueLabels, Counter>,
    /// Tasks the agent failed, by reason category.
    pub tasks_failed: Family<ReasonLabels, Counter>,
    /// Pods the agent tracks.
    pub pods: Family<PodLabels, Gauge>,
    /// ClearML request latency.
    pub clearml_latency: Family<EndpointLabels, Histogram>,
    /// ClearML requests that failed (transport, 5xx, 429).
    pub clearml_errors: Family<EndpointLabels, Counter>,
    /// Kubernetes write latency (create/delete).
    pub kube_latency: Histogram,
    /// Tasks put back at the head of their queue (a disruption, or a gang not scheduled whole).
    pub task_retries: Family<RetryLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("clearml_agent");
        let tasks_dispatched = Family::<QueueLabels, Counter>::default();
        let tasks_failed = Family::<ReasonLabels, Counter>::default();
        let pods = Family::<PodLabels, Gauge>::default();
        let clearml_latency = Family::<EndpointLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let clearml_errors = Family::<EndpointLabels, Counter>::default();
        let kube_latency = latency_histogram();
        let task_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "tasks_dispatched",
            "Tasks whose pods were created",
            tasks_dispatched.clone(),
        );
        registry.register(
            "tasks_failed",
            "Tasks failed by the agent, by reason",
            tasks_failed.clone(),
        );
        registry.register(
            "pods",
            "Pods tracked by the agent, by queue and phase",
            pods.clone(),
        );
        registry.register(
            "clearml_request_duration_seconds",
            "ClearML request latency",
            clearml_latency.clone(),
        );
        registry.register(
            "clearml_request_errors",
            "ClearML requests that failed",
            clearml_errors.clone(),
        );
        registry.register(
            "kubernetes_write_duration_seconds",
            "Kubernetes create/delete latency",
            kube_latency.clone(),
        );
        registry.register(
            "task_retries",
            "Tasks put back at the head of their queue, by queue and reason",
            task_retries.clone(),
        );
        Arc::new(Self {
            registry,
            tasks_dispatched,
            tasks_failed,
            pods,
            clearml_latency,
            clearml_errors,
            kube_latency,
            task_retries,
        })
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = encode(&mut out, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }

    /// Counts a failed task under its reason category.
    pub fn task_failed(&self, reason: &str) {
        self.tasks_failed
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// Feeds ClearML call outcomes into the metrics.
pub struct ClearmlObserver(pub Arc<Metrics>, pub Arc<crate::health::Health>);

impl CallObserver for ClearmlObserver {
    fn observe(&self, endpoint: &'static str, elapsed: Duration, ok: bool) {
        let labels = EndpointLabels {
            endpoint: endpoint.to_string(),
        };
        self.0
            .clearml_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.0.clearml_errors.get_or_create(&labels).inc();
        }
        self.1.clearml_call(ok);
    }
}
