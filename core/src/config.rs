//! The agent's runtime configuration: the values document resolved into what the dispatcher needs
//! (merged per-queue templates, timeouts, identities), with the defaults the README documents.

use std::{collections::BTreeMap, time::Duration};

use crate::values::{
    FieldError, PodTemplate, QueueOrder, QueueSettings, Values, merge::merge_templates,
};

/// Default seconds between polls when idle.
pub const DEFAULT_POLL_INTERVAL: f64 = 1.0;
/// Default pending (unschedulable) timeout.
pub const DEFAULT_PENDING_TIMEOUT: u64 = 600;
/// Default TTL of succeeded pods.
pub const DEFAULT_SUCCEEDED_TTL: u64 = 300;
/// Default TTL of failed pods (kept longer, for inspection).
pub const DEFAULT_FAILED_TTL: u64 = 86_400;

/// Timeouts the lifecycle decisions depend on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// How long a pod may stay unschedulable.
    pub pending: Duration,
    /// How long a succeeded pod is kept.
    pub succeeded_ttl: Duration,
    /// How long a failed pod is kept.
    pub failed_ttl: Duration,
}

/// One served queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// `basePodTemplate ⊕ templateOverrides`.
    pub template: PodTemplate,
    /// `queueSettings`.
    pub settings: QueueSettings,
}

/// Everything the dispatcher reads from the values.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The values (without credentials), as loaded.
    pub values: Values,
    /// Served queues by name.
    pub queues: BTreeMap<String, QueueConfig>,
    /// How the served queues share each tick's takes.
    pub queue_order: QueueOrder,
    /// Namespace of task pods.
    pub task_namespace: String,
    /// The agent's ClearML worker id.
    pub worker_id: String,
    /// Poll interval when idle.
    pub poll_interval: Duration,
    /// Lifecycle timeouts.
    pub timeouts: Timeouts,
    /// Create missing queues at start.
    pub create_queues: bool,
    /// GPUs reported to the dashboard, if any.
    pub report_max_gpus: Option<u32>,
    /// Most pods of all queues together, if limited.
    pub max_pods: Option<u32>,
    /// Period of the worker's `workers.status_report` (`statusReportFrequencySeconds`).
    pub status_report_interval: Duration,
    /// Period of the dashboard report (`orchestrationDashboard.reportSeconds`).
    pub cluster_report_interval: Duration,
    /// Tasks' own multi-node requests are honoured (`multiNode.enabled`, default true).
    pub multi_node: bool,
    /// The agent logs at debug level (`debugMode`).
    pub debug: bool,
}

/// Default period of the worker status report (the Python agent's).
pub const DEFAULT_STATUS_REPORT: f64 = 30.0;
/// Default period of the dashboard report (the Python agent's).
pub const DEFAULT_CLUSTER_REPORT: u64 = 60;

impl QueueConfig {
    /// Pods one task of this queue is made of: the ranks of its `multiNode` layout, else 1.
    pub fn pods_per_task(&self) -> usize {
        match self.settings.multi_node.as_deref() {
            Some(nodes) if !nodes.is_empty() => crate::values::rules::multi_node_layout(nodes).1,
            _ => 1,
        }
    }
}

impl AgentConfig {
    /// Resolves `values` for an agent running in `agent_namespace`. Credentials in the document
    /// are refused: they belong in the Secret.
    pub fn from_values(values: &Values, agent_namespace: &str) -> Result<Self, FieldError> {
        if let Some(c) = &values.clearml
            && (c.agentk8sglue_key.is_some() || c.agentk8sglue_secret.is_some())
        {
            return Err(FieldError::new(
                "clearml",
                "credentials must not be in the agent's config; they come from the Secret (CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY)",
            ));
        }
        let a = &values.agentk8sglue;
        let mut queues = BTreeMap::new();
        for (name, q) in &a.all_queues() {
            let template = merge_templates(&a.base_pod_template, &q.template_overrides)
                .map_err(|e| FieldError::new(format!("agentk8sglue.queues.{name}"), e.message))?;
            queues.insert(
                name.clone(),
                QueueConfig {
                    template,
                    // Job mode resolved here: the queue's own setting, else the global one
                    settings: QueueSettings {
                        task_as_job: q.queue_settings.task_as_job.or(a.task_as_job),
                        ..q.queue_settings.clone()
                    },
                },
            );
        }
        let task_namespace = a
            .task_namespace
            .clone()
            .unwrap_or_else(|| agent_namespace.to_string());
        let worker_id = a
            .given_worker_id()
            .cloned()
            .unwrap_or_else(|| format!("k8s-agent:{task_namespace}"));
        // completedPodDeletionDelayMinutes is the default of both TTLs; each specific key wins
        let completed = a.completed_pod_deletion_delay_minutes.map(|m| m * 60);
        Ok(Self {
            values: values.without_secrets(),
            queues,
            queue_order: a.queue_order.unwrap_or_default(),
            worker_id,
            task_namespace,
            poll_interval: Duration::from_secs_f64(
                a.poll_interval().unwrap_or(DEFAULT_POLL_INTERVAL),
            ),
            timeouts: Timeouts {
                pending: Duration::from_secs(
                    a.pending_timeout_seconds.unwrap_or(DEFAULT_PENDING_TIMEOUT),
                ),
                succeeded_ttl: Duration::from_secs(
                    a.succeeded_pod_ttl_seconds
                        .or(completed)
                        .unwrap_or(DEFAULT_SUCCEEDED_TTL),
                ),
                failed_ttl: Duration::from_secs(
                    a.failed_pod_ttl_seconds
                        .or(completed)
                        .unwrap_or(DEFAULT_FAILED_TTL),
                ),
            },
            create_queues: a.creates_queues(),
            report_max_gpus: a.report_max_gpus(),
            max_pods: a.max_pods,
            status_report_interval: Duration::from_secs_f64(
                a.status_report_frequency_seconds
                    .unwrap_or(DEFAULT_STATUS_REPORT),
            ),
            cluster_report_interval: Duration::from_secs(
                a.report_seconds().unwrap_or(DEFAULT_CLUSTER_REPORT),
            ),
            multi_node: a.multi_node_enabled(),
            debug: a.debug_mode.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let v = Values::from_yaml("agentk8sglue:\n  queues:\n    red: {}\n").expect("values");
        let c = AgentConfig::from_values(&v, "ml").expect("config");
        assert_eq!(c.task_namespace, "ml");
        assert_eq!(c.worker_id, "k8s-agent:ml");
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(
            c.timeouts.failed_ttl,
            Duration::from_secs(DEFAULT_FAILED_TTL)
        );
        assert!(c.queues.contains_key("red"));
        assert_eq!(c.queue_order, QueueOrder::Fair, "fair unless asked");
        let v = Values::from_yaml(
            "agentk8sglue:\n  queueOrder: priority\n  queues:\n    red:\n      queueSettings:\n        priority: -2\n",
        )
        .expect("values");
        let c = AgentConfig::from_values(&v, "ml").expect("config");
        assert_eq!(c.queue_order, QueueOrder::Priority);
        assert_eq!(c.queues["red"].settings.priority, Some(-2));

        let with_secret = Values::from_yaml(include_str!(
            "../../tests/fixtures/clearml-agent-values.override.yaml"
        ))
        .expect("values");
        let e = AgentConfig::from_values(&with_secret, "ml").expect_err("secrets refused");
        assert_eq!(e.path, "clearml");
        assert!(AgentConfig::from_values(&with_secret.without_secrets(), "ml").is_ok());
    }
}
