//! Table-driven tests of pod classification and per-task verdicts, on pod statuses shaped like
//! the ones a kubelet and scheduler write.

use serde_json::{Value, json};

use super::*;

fn pod(status: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "task"}]}, "status": status}))
        .expect("pod")
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn waiting(reason: &str, message: &str) -> Pod {
    pod(
        json!({"phase": "Pending", "containerStatuses": [{"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}}}]}),
    )
}

fn unschedulable(since: &str) -> Pod {
    pod(
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", "lastTransitionTime": since}]}),
    )
}

fn terminated(phase: &str, reason: &str, code: i32, finished: &str) -> Pod {
    pod(
        json!({"phase": phase, "containerStatuses": [{"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"reason": reason, "exitCode": code, "finishedAt": finished}}}]}),
    )
}

/// A container that failed with a termination message, as the task bootstrap writes one (the
/// kubelet copies the file verbatim, trailing newline included).
fn terminated_with_message(code: i32, message: &str) -> Pod {
    pod(
        json!({"phase": "Failed", "containerStatuses": [{"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"reason": "Error", "exitCode": code, "message": message, "finishedAt": "2026-01-01T00:59:00Z"}}}]}),
    )
}

const BOOTSTRAP_MESSAGE: &str = "clearml bootstrap: python3 is missing and could not be installed: the image has no package manager (apt-get, dnf, microdnf, yum or apk)";

const T: Timeouts = Timeouts {
    pending: Duration::from_secs(600),
    succeeded_ttl: Duration::from_secs(300),
    failed_ttl: Duration::from_secs(86400),
};

#[test]
fn classify_table() {
    let cases = [
        (
            "no status yet",
            pod(Value::Null),
            PodState::Pending {
                waiting: None,
                unschedulable: None,
            },
        ),
        (
            "running",
            pod(json!({"phase": "Running"})),
            PodState::Running,
        ),
        (
            "image pull backoff",
            waiting("ImagePullBackOff", "Back-off pulling image \"nope\""),
            PodState::Pending {
                waiting: Some((
                    "ImagePullBackOff".into(),
                    "Back-off pulling image \"nope\"".into(),
                )),
                unschedulable: None,
            },
        ),
        (
            "oom killed",
            terminated("Failed", "OOMKilled", 137, "2026-01-01T00:00:00Z"),
            PodState::Failed {
                reason: "OOMKilled".into(),
                message: String::new(),
                exit_code: Some(137),
                finished: Some(ts("2026-01-01T00:00:00Z")),
            },
        ),
        (
            "evicted (pod-level reason)",
            pod(
                json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
            ),
            PodState::Failed {
                reason: "Evicted".into(),
                message: "The node was low on resource: memory.".into(),
                exit_code: None,
                finished: None,
            },
        ),
        (
            "termination message, trimmed",
            terminated_with_message(127, &format!("{BOOTSTRAP_MESSAGE}\n")),
            PodState::Failed {
                reason: "Error".into(),
                message: BOOTSTRAP_MESSAGE.into(),
                exit_code: Some(127),
                finished: Some(ts("2026-01-01T00:59:00Z")),
            },
        ),
        (
            "succeeded",
            terminated("Succeeded", "Completed", 0, "2026-01-01T00:00:00Z"),
            PodState::Succeeded {
                finished: Some(ts("2026-01-01T00:00:00Z")),
            },
        ),
    ];
    for (what, pod, want) in cases {
        assert_eq!(classify(&pod), want, "{what}");
    }
    let mut deleting = pod(json!({"phase": "Running"}));
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts("2026-01-01T00:00:00Z")),
    );
    assert_eq!(classify(&deleting), PodState::Terminating);
}

#[test]
fn verdict_table() {
    let now = ts("2026-01-01T01:00:00Z");
    let queued = TaskStatus::Known("queued");
    let running = TaskStatus::Known("in_progress");
    let cases: Vec<(&str, Vec<Pod>, TaskStatus<'_>, Verdict)> = vec![
        ("no pods", vec![], queued, Verdict::Wait),
        ("running pod, running task", vec![pod(json!({"phase": "Running"}))], running, Verdict::Wait),
        ("aborted while running", vec![pod(json!({"phase": "Running"}))], TaskStatus::Known("stopped"), Verdict::Withdraw("task is stopped in ClearML".into())),
        ("reset while pending", vec![pod(Value::Null)], TaskStatus::Known("created"), Verdict::Withdraw("task is created in ClearML".into())),
        ("deleted in ClearML", vec![pod(json!({"phase": "Running"}))], TaskStatus::Missing, Verdict::Withdraw("task no longer exists in ClearML".into())),
        ("ClearML unreachable: no abort guess", vec![pod(json!({"phase": "Running"}))], TaskStatus::Unknown, Verdict::Wait),
        (
            "image pull error fails the task",
            vec![waiting("ErrImagePull", "manifest unknown")],
            queued,
            Verdict::Fail("pod p: ErrImagePull: manifest unknown".into()),
        ),
        (
            "config error fails the task",
            vec![waiting("CreateContainerConfigError", "secret \"x\" not found")],
            queued,
            Verdict::Fail("pod p: CreateContainerConfigError: secret \"x\" not found".into()),
        ),
        (
            "oom killed fails an in-progress task",
            vec![terminated("Failed", "OOMKilled", 137, "2026-01-01T00:59:00Z")],
            running,
            Verdict::Fail("pod p failed: OOMKilled (exit code 137)".into()),
        ),
        (
            "the task bootstrap's termination message is the failure reason (the task is still queued)",
            vec![terminated_with_message(127, &format!("{BOOTSTRAP_MESSAGE}\n"))],
            queued,
            Verdict::Fail(format!("pod p failed: Error (exit code 127): {BOOTSTRAP_MESSAGE}")),
        ),
        (
            "a failed pod of a completed task is only kept",
            vec![terminated("Failed", "Error", 1, "2026-01-01T00:59:00Z")],
            TaskStatus::Known("completed"),
            Verdict::Wait,
        ),
        (
            "succeeded pod but task never started",
            vec![terminated("Succeeded", "Completed", 0, "2026-01-01T00:59:00Z")],
            queued,
            Verdict::Fail("pod exited without starting the task (the image's entrypoint did not run clearml-agent)".into()),
        ),
        (
            "unschedulable within the timeout is explained",
            vec![unschedulable("2026-01-01T00:55:00Z")],
            queued,
            Verdict::Explain("pod p is unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()),
        ),
        (
            "unschedulable past the timeout fails",
            vec![unschedulable("2026-01-01T00:40:00Z")],
            queued,
            Verdict::Fail("pod p unschedulable for 1200s (pending timeout 600s): 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()),
        ),
        ("container creating is not noise-reported", vec![waiting("ContainerCreating", "")], queued, Verdict::Wait),
        ("succeeded pod within TTL is kept", vec![terminated("Succeeded", "Completed", 0, "2026-01-01T00:58:00Z")], TaskStatus::Known("completed"), Verdict::Wait),
        ("succeeded pod past TTL is cleaned", vec![terminated("Succeeded", "Completed", 0, "2026-01-01T00:50:00Z")], TaskStatus::Known("completed"), Verdict::Cleanup),
        ("failed pod is kept longer", vec![terminated("Failed", "Error", 1, "2026-01-01T00:50:00Z")], TaskStatus::Known("failed"), Verdict::Wait),
        ("failed pod past its TTL is cleaned", vec![terminated("Failed", "Error", 1, "2025-12-30T00:00:00Z")], TaskStatus::Known("failed"), Verdict::Cleanup),
    ];
    for (what, pods, task, want) in cases {
        let states: Vec<(&str, PodState)> = pods.iter().map(|p| ("p", classify(p))).collect();
        assert_eq!(decide(&states, task, now, &T), want, "{what}");
    }
}

#[test]
fn multi_node_a_failed_rank_fails_the_task() {
    let now = ts("2026-01-01T01:00:00Z");
    let states = vec![
        ("r0", classify(&pod(json!({"phase": "Running"})))),
        (
            "r1",
            classify(&terminated("Failed", "Error", 3, "2026-01-01T00:59:00Z")),
        ),
    ];
    assert_eq!(
        decide(&states, TaskStatus::Known("in_progress"), now, &T),
        Verdict::Fail("pod r1 failed: Error (exit code 3)".into())
    );
}

/// A PodGroup that cannot be placed: the ranks that fit are told only the gang's count, the rank
/// that does not fit names the shortage; the task is explained with the latter, whatever its rank.
#[test]
fn a_gang_is_explained_by_the_rank_that_does_not_fit() {
    let now = ts("2026-01-01T01:00:00Z");
    let gang_only = |since: &str| {
        pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "minCount (3) cannot be satisfied: 1 scheduled, 1 remaining", "lastTransitionTime": since}]}),
        )
    };
    let states = vec![
        ("r0", classify(&gang_only("2026-01-01T00:59:00Z"))),
        ("r1", classify(&gang_only("2026-01-01T00:59:00Z"))),
        ("r2", classify(&unschedulable("2026-01-01T00:59:00Z"))),
    ];
    assert_eq!(
        decide(&states, TaskStatus::Known("queued"), now, &T),
        Verdict::Explain(
            "pod r2 is unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
                .into()
        )
    );
    assert_eq!(
        decide(&states[..2], TaskStatus::Known("queued"), now, &T),
        Verdict::Explain(
            "pod r0 is unschedulable: minCount (3) cannot be satisfied: 1 scheduled, 1 remaining"
                .into()
        ),
        "only the gang's count: said as it is"
    );
}
