//! Pods the cluster took away, and multi-node tasks that cannot start whole (pure). A task whose
//! pod was preempted, evicted or lost with its node did nothing wrong: it goes back to the head
//! of its queue (`dispatch/retry.rs`) instead of failing. So does a multi-node task whose ranks
//! are not all scheduled within the gang timeout: its ranks are released so they hold nothing.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

use super::{PodState, TaskStatus, Timeouts, Verdict, decide};

/// The `DisruptionTarget` reasons Kubernetes writes (`k8s.io/api/core/v1`, `PodReason*`):
/// preemption by the scheduler, the eviction API (drains, PDB-aware evictions), the taint
/// manager (NoExecute taints, e.g. a node not ready), the kubelet (node-pressure eviction,
/// graceful node shutdown) and the pod garbage collector (pods of a deleted node).
pub const DISRUPTION_REASONS: &[&str] = &[
    "PreemptionByScheduler",
    "EvictionByEvictionAPI",
    "DeletionByTaintManager",
    "TerminationByKubelet",
    "DeletionByPodGC",
];

/// Why the cluster took a pod away: a reason code (`PreemptionByScheduler`, …, or `Evicted`)
/// and the message Kubernetes wrote with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disruption {
    /// Reason code.
    pub code: String,
    /// Message, possibly empty.
    pub message: String,
}

impl Disruption {
    /// `code: message` (or the code alone).
    pub fn describe(&self) -> String {
        if self.message.is_empty() {
            self.code.clone()
        } else {
            format!("{}: {}", self.code, self.message)
        }
    }
}

/// Whether the cluster is taking or took `pod` away: its `DisruptionTarget` condition is True
/// (set before the pod is deleted, so it is seen while the pod terminates), or the kubelet
/// evicted it (phase `Failed`, reason `Evicted`, as kubelets before the condition write it).
pub fn disruption(pod: &Pod) -> Option<Disruption> {
    let status = pod.status.as_ref()?;
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    {
        return Some(Disruption {
            code: c
                .reason
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "DisruptionTarget".into()),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    (status.phase.as_deref() == Some("Failed") && status.reason.as_deref() == Some("Evicted")).then(
        || Disruption {
            code: "Evicted".into(),
            message: status.message.clone().unwrap_or_default(),
        },
    )
}

/// The gang rule of a multi-node task the agent itself enforces (no PodGroup, not Kueue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gang {
    /// `queueSettings.gangTimeoutSeconds`.
    pub timeout: Duration,
    /// Time its ranks already waited in earlier launches released by this rule (counted
    /// against the pending timeout: the task fails once the total passes it).
    pub waited_before: Duration,
}

/// [`decide`] for a task that may have been disrupted (`disrupted`: a pod's name and why) or is
/// a multi-node task under the agent's gang rule (`gang`):
/// - a disrupted task still queued or in progress is retried ([`Verdict::Retry`]), whatever its
///   other pods do; one withdrawn in ClearML is withdrawn as before;
/// - a gang whose rank waited unscheduled longer than the gang timeout is released
///   ([`Verdict::Release`]), unless its total wait passed the pending timeout: it then fails with
///   the scheduler's message, as a single pod does.
pub fn decide_task(
    pods: &[(&str, PodState)],
    disrupted: Option<(&str, &Disruption)>,
    gang: Option<Gang>,
    task: TaskStatus<'_>,
    now: Timestamp,
    t: &Timeouts,
) -> Verdict {
    if let Some((pod, why)) = disrupted
        && task.is_active()
    {
        return Verdict::Retry {
            pod: pod.to_string(),
            why: why.clone(),
        };
    }
    let verdict = decide(pods, task, now, t);
    let Some(gang) = gang else {
        return verdict;
    };
    if !matches!(verdict, Verdict::Explain(_) | Verdict::Fail(_)) || !task.is_active() {
        return verdict;
    }
    for (name, state) in pods {
        if let PodState::Pending {
            unschedulable: Some((message, Some(since))),
            ..
        } = state
        {
            let waited = Duration::try_from(now.duration_since(*since)).unwrap_or_default();
            let total = waited + gang.waited_before;
            if total > t.pending {
                return Verdict::Fail(format!(
                    "pod {name} unschedulable for {}s in total (pending timeout {}s; the ranks were released and launched again meanwhile): {message}",
                    total.as_secs(),
                    t.pending.as_secs()
                ));
            }
            if waited > gang.timeout {
                return Verdict::Release {
                    pod: name.to_string(),
                    waited,
                    message: message.clone(),
                };
            }
        }
    }
    verdict
}
