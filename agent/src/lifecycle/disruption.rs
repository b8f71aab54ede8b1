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

/// The status message of the in-pod `clearml-agent` when it changes its task's status.
pub const IN_POD_AGENT_STOPPED: &str = "Changed by clearml-agent";
/// The status reason the in-pod `clearml-agent` gives when signalled (an abort from ClearML
/// gives `task was stopped by tasks.stop` instead).
pub const IN_POD_AGENT_SIGNALLED: &str = "user abort";

/// Whether `status` (with its status `reason` and `message`) is the in-pod agent's answer to a
/// SIGTERM: `clearml-agent execute --full-monitoring`, the task container's PID 1, calls
/// `tasks.stopped` (reason `user abort`, message `Changed by clearml-agent <worker>`) when its
/// pod is deleted gracefully, whoever deleted it (clearml-agent
/// `Worker.handle_task_process_termination`). A preempted or evicted pod's task is then still
/// the agent's to put back, and a pod someone else deleted still fails its task saying so; only
/// an abort from ClearML withdraws it.
pub fn stopped_by_its_pod(
    status: TaskStatus<'_>,
    reason: Option<&str>,
    message: Option<&str>,
) -> bool {
    status == TaskStatus::Known("stopped")
        && reason == Some(IN_POD_AGENT_SIGNALLED)
        && message.is_some_and(|m| m.starts_with(IN_POD_AGENT_STOPPED))
}

/// The gang rule of a multi-node task the agent itself enforces (no PodGroup, not Kueue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gang {
    /// `queueSettings.gangTimeoutSeconds`.
    pub timeout: Duration,
    /// Time its ranks already waited in earlier launches released by this rule (counted
    /// against the pending timeout: the task fails once the total passes it).
    pub waited_before: Duration,
    /// On the native path (ranks in a PodGroup) the rule only backs up the scheduler: it acts
    /// on a partial binding, timed from the last rank bound (the scheduler binds a group's pods
    /// one API call each, so a group binding whole is briefly partial). `None`: the agent's own
    /// rule, timed from when a rank became unschedulable.
    pub bound_since: Option<Timestamp>,
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
            let partial_for = match gang.bound_since {
                Some(bound) => Duration::try_from(now.duration_since(bound)).unwrap_or_default(),
                None => waited,
            };
            if partial_for.min(waited) > gang.timeout {
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(status: Value, deleting: bool) -> Pod {
        let mut meta = json!({"name": "p"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-01-01T01:00:30Z");
        }
        serde_json::from_value(
            json!({"metadata": meta, "spec": {"containers": [{"name": "task"}]}, "status": status}),
        )
        .expect("pod")
    }

    fn target(reason: &str, message: &str) -> Value {
        json!({"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
               "lastTransitionTime": "2026-01-01T01:00:00Z"})
    }

    fn terminated(code: i32, reason: &str) -> Value {
        json!([{"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"reason": reason, "exitCode": code}}}])
    }

    #[test]
    fn a_task_stopped_by_its_signalled_pod_is_told_apart() {
        let by_agent = Some("Changed by clearml-agent k8s-agent:clearml:abc");
        for (what, status, reason, message, want) in [
            ("signalled", "stopped", Some("user abort"), by_agent, true),
            (
                "aborted from ClearML",
                "stopped",
                Some("task was stopped by tasks.stop"),
                by_agent,
                false,
            ),
            (
                "stopped by someone else",
                "stopped",
                Some("user abort"),
                Some("stopped by a user"),
                false,
            ),
            ("no message", "stopped", Some("user abort"), None, false),
            (
                "still running",
                "in_progress",
                Some("user abort"),
                by_agent,
                false,
            ),
            ("failed", "failed", Some("user abort"), by_agent, false),
        ] {
            assert_eq!(
                stopped_by_its_pod(TaskStatus::Known(status), reason, message),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn what_counts_as_a_disruption() {
        let preempting = "default-scheduler: preempting to accommodate a higher priority pod";
        let cases = [
            (
                "preempted, terminating",
                pod(
                    json!({"phase": "Running", "conditions": [target("PreemptionByScheduler", preempting)]}),
                    true,
                ),
                Some(("PreemptionByScheduler", preempting)),
            ),
            (
                "evicted through the API, then killed (exit 143)",
                pod(
                    json!({"phase": "Failed", "conditions": [target("EvictionByEvictionAPI", "Eviction API: evicting")],
                           "containerStatuses": terminated(143, "Error")}),
                    true,
                ),
                Some(("EvictionByEvictionAPI", "Eviction API: evicting")),
            ),
            (
                "node gone: pod GC",
                pod(
                    json!({"phase": "Running", "conditions": [target("DeletionByPodGC", "PodGC: node no longer exists")]}),
                    true,
                ),
                Some(("DeletionByPodGC", "PodGC: node no longer exists")),
            ),
            (
                "kubelet eviction without the condition (older kubelets)",
                pod(
                    json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory.",
                           "containerStatuses": terminated(137, "Error")}),
                    false,
                ),
                Some(("Evicted", "The node was low on resource: memory.")),
            ),
            (
                "condition False",
                pod(
                    json!({"phase": "Running", "conditions": [{"type": "DisruptionTarget", "status": "False"}]}),
                    false,
                ),
                None,
            ),
            (
                "OOMKilled is the task's own",
                pod(
                    json!({"phase": "Failed", "containerStatuses": terminated(137, "OOMKilled")}),
                    false,
                ),
                None,
            ),
            (
                "exit 1 is the task's own",
                pod(
                    json!({"phase": "Failed", "containerStatuses": terminated(1, "Error")}),
                    false,
                ),
                None,
            ),
            (
                "deleted by someone, no condition",
                pod(json!({"phase": "Running"}), true),
                None,
            ),
            ("no status", pod(Value::Null, false), None),
        ];
        for (what, pod, want) in cases {
            let got = disruption(&pod);
            let got = got.as_ref().map(|d| (d.code.as_str(), d.message.as_str()));
            assert_eq!(got, want, "{what}");
        }
    }

    const T: Timeouts = Timeouts {
        pending: Duration::from_secs(600),
        succeeded_ttl: Duration::from_secs(300),
        failed_ttl: Duration::from_secs(86400),
    };

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn unschedulable(since: &str) -> PodState {
        PodState::Pending {
            waiting: None,
            unschedulable: Some(("0/1 nodes are available".into(), Some(ts(since)))),
        }
    }

    #[test]
    fn retries_and_gang_releases() {
        let now = ts("2026-01-01T01:10:00Z");
        let why = Disruption {
            code: "PreemptionByScheduler".into(),
            message: String::new(),
        };
        let agent_rule = Gang {
            timeout: Duration::from_secs(120),
            waited_before: Duration::ZERO,
            bound_since: None,
        };
        let gang = Some(agent_rule);
        // the native path's backstop: a partial binding timed from the last rank bound
        let bound = |at: &str| {
            Some(Gang {
                bound_since: Some(ts(at)),
                ..agent_rule
            })
        };
        let oom = PodState::Failed {
            reason: "OOMKilled".into(),
            message: String::new(),
            exit_code: Some(137),
            finished: None,
        };
        let retry = Verdict::Retry {
            pod: "p-1".into(),
            why: why.clone(),
        };
        /// What, the pods, disrupted (`p-1`), the gang rule, the task's status, the verdict.
        type Case<'a> = (
            &'a str,
            Vec<(&'a str, PodState)>,
            bool,
            Option<Gang>,
            TaskStatus<'a>,
            Verdict,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "disrupted, running: retried",
                vec![("p-0", PodState::Running), ("p-1", PodState::Terminating)],
                true,
                None,
                TaskStatus::Known("in_progress"),
                retry.clone(),
            ),
            (
                "disrupted, not started: retried",
                vec![("p-1", PodState::Terminating)],
                true,
                None,
                TaskStatus::Known("queued"),
                retry.clone(),
            ),
            (
                "disrupted, aborted meanwhile: not retried",
                vec![("p-0", PodState::Running), ("p-1", PodState::Terminating)],
                true,
                None,
                TaskStatus::Known("stopped"),
                Verdict::Wait,
            ),
            (
                "disrupted, ClearML unreachable: wait",
                vec![("p-1", PodState::Terminating)],
                true,
                None,
                TaskStatus::Unknown,
                Verdict::Wait,
            ),
            (
                "OOMKilled: failed, never retried",
                vec![("p-0", oom)],
                false,
                None,
                TaskStatus::Known("in_progress"),
                Verdict::Fail("pod p-0 failed: OOMKilled (exit code 137)".into()),
            ),
            (
                "gang: a rank unscheduled past the gang timeout: released",
                vec![("p-0", PodState::Running), ("p-1", unschedulable("2026-01-01T01:07:00Z"))],
                false,
                gang,
                TaskStatus::Known("in_progress"),
                Verdict::Release {
                    pod: "p-1".into(),
                    waited: Duration::from_secs(180),
                    message: "0/1 nodes are available".into(),
                },
            ),
            (
                "gang: within the gang timeout: explained",
                vec![("p-0", PodState::Running), ("p-1", unschedulable("2026-01-01T01:09:00Z"))],
                false,
                gang,
                TaskStatus::Known("in_progress"),
                Verdict::Explain("pod p-1 is unschedulable: 0/1 nodes are available".into()),
            ),
            (
                "gang: the total wait passed the pending timeout: failed",
                vec![("p-0", PodState::Running), ("p-1", unschedulable("2026-01-01T01:09:00Z"))],
                false,
                Some(Gang {
                    timeout: Duration::from_secs(120),
                    waited_before: Duration::from_secs(600),
                    bound_since: None,
                }),
                TaskStatus::Known("in_progress"),
                Verdict::Fail("pod p-1 unschedulable for 660s in total (pending timeout 600s; the ranks were released and launched again meanwhile): 0/1 nodes are available".into()),
            ),
            (
                "pod group: a rank bound just now (the group binding pod by pod): explained",
                vec![("p-0", PodState::Running), ("p-1", unschedulable("2026-01-01T01:07:00Z"))],
                false,
                bound("2026-01-01T01:09:59Z"),
                TaskStatus::Known("in_progress"),
                Verdict::Explain("pod p-1 is unschedulable: 0/1 nodes are available".into()),
            ),
            (
                "pod group: partial past the gang timeout (no gang plugin): released",
                vec![("p-0", PodState::Running), ("p-1", unschedulable("2026-01-01T01:07:00Z"))],
                false,
                bound("2026-01-01T01:07:30Z"),
                TaskStatus::Known("in_progress"),
                Verdict::Release {
                    pod: "p-1".into(),
                    waited: Duration::from_secs(180),
                    message: "0/1 nodes are available".into(),
                },
            ),
            (
                "no gang rule (Kueue or one pod): the pending timeout alone",
                vec![("p-0", PodState::Running), ("p-1", unschedulable("2026-01-01T01:07:00Z"))],
                false,
                None,
                TaskStatus::Known("in_progress"),
                Verdict::Explain("pod p-1 is unschedulable: 0/1 nodes are available".into()),
            ),
        ];
        for (what, pods, disrupted, gang, status, want) in cases {
            let d = disrupted.then_some(("p-1", &why));
            assert_eq!(decide_task(&pods, d, gang, status, now, &T), want, "{what}");
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use serde_json::json;

    use super::super::*;

    #[test]
    fn gated_pods_say_what_holds_them() {
        let pod = |labels: serde_json::Value, gates: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "labels": labels},
                "spec": {"containers": [{"name": "task"}], "schedulingGates": gates},
                "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}
            }))
            .expect("pod")
        };
        let kueue = pod(
            json!({"kueue.x-k8s.io/queue-name": "team-a"}),
            json!([{"name": "kueue.x-k8s.io/admission"}]),
        );
        let other = pod(json!({}), json!([{"name": "example.com/wait"}]));
        let t = Timeouts {
            pending: Duration::from_secs(600),
            succeeded_ttl: Duration::from_secs(300),
            failed_ttl: Duration::from_secs(86400),
        };
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().expect("ts");
        for (pod, want) in [
            (
                &kueue,
                "pod p: waiting for Kueue admission in LocalQueue team-a",
            ),
            (
                &other,
                "pod p: waiting for its scheduling gates to be removed: example.com/wait",
            ),
        ] {
            let state = classify(pod);
            assert!(state.is_live(), "a gated pod counts against maxPods");
            let verdict = decide(&[("p", state)], TaskStatus::Known("queued"), now, &t);
            assert_eq!(verdict, Verdict::Explain(want.into()));
        }
    }
}
