//! Pure lifecycle decisions: from a task's pods (as the watch cache holds them) and the task's
//! ClearML status, what the agent must do now. No I/O; the reconciler in `dispatch` executes the
//! verdict, and because it re-runs on every pod change and on a timer, the decisions are
//! level-triggered: a lost call is simply decided again.

use std::time::Duration;

use clearml_agent_core::kueue;
use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod},
    jiff::Timestamp,
};

/// Container waiting reasons that will not resolve on their own: the pod is deleted and the task
/// failed with the reason (the Python glue waits for ever on most of them).
pub const FATAL_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// What a pod is doing, as far as the task is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// Not running yet; `waiting` is a container's waiting reason and message, `unschedulable`
    /// the scheduler's message and since when.
    Pending {
        /// Container waiting `(reason, message)`.
        waiting: Option<(String, String)>,
        /// `PodScheduled=False/Unschedulable` `(message, since)`.
        unschedulable: Option<(String, Option<Timestamp>)>,
    },
    /// Running.
    Running,
    /// Exited 0.
    Succeeded {
        /// When the last container finished.
        finished: Option<Timestamp>,
    },
    /// Failed: a container's terminated reason and exit code, or the pod's own reason (Evicted).
    Failed {
        /// `OOMKilled`, `Error`, `Evicted`, …
        reason: String,
        /// Message, possibly empty.
        message: String,
        /// Exit code of the first failed container.
        exit_code: Option<i32>,
        /// When it finished.
        finished: Option<Timestamp>,
    },
    /// Being deleted.
    Terminating,
}

impl PodState {
    /// Pending or Running (counts against `maxPods`).
    pub fn is_live(&self) -> bool {
        matches!(self, PodState::Pending { .. } | PodState::Running)
    }

    /// Succeeded or Failed.
    pub fn is_finished(&self) -> bool {
        matches!(self, PodState::Succeeded { .. } | PodState::Failed { .. })
    }
}

fn container_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

/// Classifies one pod from its status.
pub fn classify(pod: &Pod) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let finished = container_statuses(pod)
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    match phase {
        "Running" => PodState::Running,
        "Succeeded" => PodState::Succeeded { finished },
        "Failed" => {
            let failed = container_statuses(pod).find_map(|c| {
                let t = c.state.as_ref()?.terminated.as_ref()?;
                (t.exit_code != 0).then(|| {
                    (
                        t.reason.clone().unwrap_or_else(|| "Error".into()),
                        t.message.clone(),
                        t.exit_code,
                    )
                })
            });
            let (reason, message, exit_code) = match failed {
                // a termination message file usually ends in a newline
                Some((reason, message, code)) => (
                    reason,
                    message.unwrap_or_default().trim().to_string(),
                    Some(code),
                ),
                None => (
                    status
                        .and_then(|s| s.reason.clone())
                        .unwrap_or_else(|| "Failed".into()),
                    status.and_then(|s| s.message.clone()).unwrap_or_default(),
                    None,
                ),
            };
            PodState::Failed {
                reason,
                message,
                exit_code,
                finished,
            }
        }
        _ => {
            let waiting = container_statuses(pod)
                .find_map(|c| {
                    let w = c.state.as_ref()?.waiting.as_ref()?;
                    Some((
                        w.reason.clone().unwrap_or_default(),
                        w.message.clone().unwrap_or_default(),
                    ))
                })
                .or_else(|| gated(pod));
            let unschedulable = status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
                .map(|c| {
                    (
                        c.message.clone().unwrap_or_default(),
                        c.last_transition_time.as_ref().map(|t| t.0),
                    )
                });
            PodState::Pending {
                waiting,
                unschedulable,
            }
        }
    }
}

/// Reason of a pod held by scheduling gates (the scheduler's word for it).
pub const SCHEDULING_GATED: &str = "SchedulingGated";

/// A pod held by scheduling gates: `(SchedulingGated, why)`; Kueue's admission gate says which
/// LocalQueue admits it.
fn gated(pod: &Pod) -> Option<(String, String)> {
    let gates = pod.spec.as_ref()?.scheduling_gates.as_ref()?;
    if gates.is_empty() {
        return None;
    }
    let message = if gates.iter().any(|g| g.name == kueue::ADMISSION_GATE) {
        let local_queue = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(kueue::LABEL_QUEUE_NAME))
            .map_or("(none)", String::as_str);
        kueue::waiting_message(local_queue)
    } else {
        let names: Vec<&str> = gates.iter().map(|g| g.name.as_str()).collect();
        format!(
            "waiting for its scheduling gates to be removed: {}",
            names.join(", ")
        )
    };
    Some((SCHEDULING_GATED.into(), message))
}

/// A task's ClearML status as the reconciler last read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus<'a> {
    /// Read succeeded.
    Known(&'a str),
    /// The task does not exist (deleted in ClearML).
    Missing,
    /// Not read (ClearML unreachable): only decisions that need no status are taken.
    Unknown,
}

impl TaskStatus<'_> {
    /// Queued or in progress: a task whose pod's fate decides its status.
    pub fn is_active(&self) -> bool {
        matches!(self, TaskStatus::Known("queued" | "in_progress"))
    }

    /// Aborted, reset or otherwise taken away from its pods by a user.
    pub fn is_withdrawn(&self) -> bool {
        matches!(
            self,
            TaskStatus::Known("stopped" | "closed" | "published" | "created") | TaskStatus::Missing
        )
    }
}

/// Timeouts the decisions depend on (resolved from the values by the core's config).
pub use clearml_agent_core::config::Timeouts;

/// What to do with one task and its pods.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing to do now.
    Wait,
    /// Tell the user why the task is not running yet (written only when it changed).
    Explain(String),
    /// Fail the task with this reason; delete its live pods (finished pods are kept for the TTL).
    Fail(String),
    /// The task was aborted or reset in ClearML: delete its live pods.
    Withdraw(String),
    /// The finished pods outlived their TTL: delete them.
    Cleanup,
    /// The cluster took pod `pod` away (`why`): the task goes back to the head of its queue
    /// once all its pods are gone (see [`decide_task`]).
    Retry {
        /// The disrupted pod.
        pod: String,
        /// Why.
        why: Disruption,
    },
    /// A multi-node task's rank `pod` waited `waited` unscheduled (the scheduler's `message`),
    /// past the gang timeout: release every rank, back to the head of its queue.
    Release {
        /// The unscheduled rank.
        pod: String,
        /// How long it waited.
        waited: Duration,
        /// The scheduler's message.
        message: String,
    },
}

/// Decides for one task from its pods `(name, state)` at time `now`.
pub fn decide(
    pods: &[(&str, PodState)],
    task: TaskStatus<'_>,
    now: Timestamp,
    t: &Timeouts,
) -> Verdict {
    if pods.is_empty() || pods.iter().any(|(_, s)| *s == PodState::Terminating) {
        return Verdict::Wait;
    }
    let any_live = pods.iter().any(|(_, s)| s.is_live());
    if any_live && task.is_withdrawn() {
        let why = match task {
            TaskStatus::Known(status) => format!("task is {status} in ClearML"),
            _ => "task no longer exists in ClearML".to_string(),
        };
        return Verdict::Withdraw(why);
    }
    for (name, state) in pods {
        if let PodState::Pending {
            waiting: Some((reason, message)),
            ..
        } = state
            && FATAL_WAITING_REASONS.contains(&reason.as_str())
        {
            return fail_or_withdraw(task, format!("pod {name}: {reason}: {message}"));
        }
    }
    for (name, state) in pods {
        if let PodState::Failed {
            reason,
            message,
            exit_code,
            ..
        } = state
            && task.is_active()
        {
            let code = exit_code
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default();
            let msg = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            return Verdict::Fail(format!("pod {name} failed: {reason}{code}{msg}"));
        }
    }
    if task == TaskStatus::Known("queued")
        && pods
            .iter()
            .all(|(_, s)| matches!(s, PodState::Succeeded { .. }))
    {
        return Verdict::Fail("pod exited without starting the task (the image's entrypoint did not run clearml-agent)".into());
    }
    // a rank of a PodGroup the scheduler could place is told only the gang's count ("minCount
    // (3) cannot be satisfied: …"); the rank that does not fit names what is short: say that one
    let (gang_only, short): (Vec<_>, Vec<_>) = pods.iter().partition(|(_, s)| {
        matches!(s, PodState::Pending { unschedulable: Some((m, _)), .. } if m.starts_with("minCount ("))
    });
    for (name, state) in short.into_iter().chain(gang_only) {
        if let PodState::Pending {
            unschedulable: Some((message, since)),
            ..
        } = state
        {
            let waited = since
                .map(|s| Duration::try_from(now.duration_since(s)).unwrap_or_default())
                .unwrap_or_default();
            if waited > t.pending && task.is_active() {
                return Verdict::Fail(format!(
                    "pod {name} unschedulable for {}s (pending timeout {}s): {message}",
                    waited.as_secs(),
                    t.pending.as_secs()
                ));
            }
            return Verdict::Explain(format!("pod {name} is unschedulable: {message}"));
        }
    }
    for (name, state) in pods {
        if let PodState::Pending {
            waiting: Some((reason, message)),
            ..
        } = state
            && !reason.is_empty()
            && reason != "ContainerCreating"
            && reason != "PodInitializing"
        {
            if reason == SCHEDULING_GATED {
                return Verdict::Explain(format!("pod {name}: {message}"));
            }
            let msg = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            return Verdict::Explain(format!("pod {name} is waiting: {reason}{msg}"));
        }
    }
    if pods.iter().all(|(_, s)| s.is_finished()) {
        let expired = pods.iter().all(|(_, s)| {
            let (finished, ttl) = match s {
                PodState::Succeeded { finished } => (finished, t.succeeded_ttl),
                PodState::Failed { finished, .. } => (finished, t.failed_ttl),
                _ => return false,
            };
            finished.is_none_or(|f| {
                Duration::try_from(now.duration_since(f)).unwrap_or_default() >= ttl
            })
        });
        if expired {
            return Verdict::Cleanup;
        }
    }
    Verdict::Wait
}

fn fail_or_withdraw(task: TaskStatus<'_>, reason: String) -> Verdict {
    if matches!(task, TaskStatus::Known(_)) && !task.is_active() {
        Verdict::Withdraw(reason)
    } else {
        Verdict::Fail(reason)
    }
}

mod disruption;

pub use disruption::{
    DISRUPTION_REASONS, Disruption, Gang, IN_POD_AGENT_SIGNALLED, IN_POD_AGENT_STOPPED,
    decide_task, disruption, stopped_by_its_pod,
};
pub mod job;

#[cfg(test)]
mod tests;
