//! Job mode's lifecycle decisions (pure): a task's verdict from its Job's conditions and its
//! pods, with the same verdicts and reasons as for bare pods. The pods carry the evidence (an
//! image pull error, an OOM kill, an exit code), so the pod rules of [`super::decide`] apply to
//! them, with what the Job adds:
//!
//! - a pod the cluster took away (`DisruptionTarget`) while the Job goes on is not the task's
//!   failure: the Job's `podFailurePolicy` ignores it and a new pod replaces it;
//! - `DeadlineExceeded` fails the task (the Job controller deletes its running pods itself);
//! - a failed Job whose pods are gone (deleted by someone) fails the task with the Job's reason;
//! - a suspended Job (waiting for admission, e.g. by Kueue) explains why nothing runs;
//! - a finished Job without pods is cleaned up after its outcome's TTL;
//! - a Job being deleted: wait.

use std::time::Duration;

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    jiff::Timestamp,
};

use super::{PodState, TaskStatus, Timeouts, Verdict, classify, decide as decide_pods};

/// A condition of the Job that holds (`status: True`): `(reason, message, since)`.
fn condition<'a>(job: &'a Job, ty: &str) -> Option<(&'a str, &'a str, Option<Timestamp>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty && c.status == "True")
        .map(|c| {
            (
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default(),
                c.last_transition_time.as_ref().map(|t| t.0),
            )
        })
}

/// The pod was taken by the cluster (preemption, eviction, node drain).
pub fn disrupted(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        })
}

/// Whether the Job is finished or finishing: `Complete` or `Failed`, or the controller's
/// decision before its pods have stopped (`SuccessCriteriaMet`, `FailureTarget`).
pub fn is_finished(job: &Job) -> bool {
    ["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"]
        .iter()
        .any(|ty| condition(job, ty).is_some())
}

/// Whether a pod belongs to a Job (its controller is one).
pub fn owned_by_a_job(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && o.controller == Some(true))
}

/// Decides for one task run as a Job (`job`: as the cache holds it, `None` once it is gone while
/// its pods are still there) from its pods at time `now`.
pub fn decide(
    job: Option<&Job>,
    pods: &[&Pod],
    task: TaskStatus<'_>,
    now: Timestamp,
    t: &Timeouts,
) -> Verdict {
    if job.is_some_and(|j| j.metadata.deletion_timestamp.is_some()) {
        return Verdict::Wait;
    }
    let name = job
        .and_then(|j| j.metadata.name.as_deref())
        .unwrap_or_default();
    let failed = job.and_then(|j| condition(j, "Failed").or(condition(j, "FailureTarget")));
    // while the Job goes on, the pods it ignores (and replaces) do not count
    let names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    let states: Vec<(&str, PodState)> = pods
        .iter()
        .zip(&names)
        .filter(|(p, _)| failed.is_some() || !disrupted(p))
        .map(|(p, n)| (n.as_str(), classify(p)))
        .collect();
    if let Some((reason, message, _)) = failed
        && task.is_active()
    {
        if reason == "DeadlineExceeded" {
            let limit = job
                .and_then(|j| j.spec.as_ref()?.active_deadline_seconds)
                .map(|s| format!(" ({s}s)"))
                .unwrap_or_default();
            return Verdict::Fail(format!(
                "job {name} ran longer than its active deadline{limit}: {message}"
            ));
        }
        // the failed pod's own reason when it is there, as for bare pods
        let verdict = decide_pods(&states, task, now, t);
        if matches!(verdict, Verdict::Fail(_)) {
            return verdict;
        }
        if states.iter().all(|(_, s)| !s.is_live()) {
            return Verdict::Fail(format!("job {name} failed: {reason}: {message}"));
        }
        return verdict;
    }
    if states.is_empty() {
        let Some(job) = job else {
            return Verdict::Wait;
        };
        if task.is_withdrawn() && !is_finished(job) {
            // aborted before the Job had pods (suspended, or just created)
            let why = match task {
                TaskStatus::Known(status) => format!("task is {status} in ClearML"),
                _ => "task no longer exists in ClearML".to_string(),
            };
            return Verdict::Withdraw(why);
        }
        if condition(job, "Suspended").is_some() {
            return Verdict::Explain(format!("job {name} is suspended (waiting to be admitted)"));
        }
        let finished = condition(job, "Complete")
            .map(|c| (c, t.succeeded_ttl))
            .or_else(|| condition(job, "Failed").map(|c| (c, t.failed_ttl)));
        if let Some(((_, _, since), ttl)) = finished {
            let waited = since
                .map(|s| Duration::try_from(now.duration_since(s)).unwrap_or_default())
                .unwrap_or(ttl);
            if waited >= ttl {
                return Verdict::Cleanup;
            }
        }
        return Verdict::Wait;
    }
    decide_pods(&states, task, now, t)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::{
            batch::v1::{JobCondition, JobSpec, JobStatus},
            core::v1::{
                ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
                PodCondition, PodStatus,
            },
        },
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    };

    use super::*;

    const T: Timeouts = Timeouts {
        pending: Duration::from_secs(600),
        succeeded_ttl: Duration::from_secs(300),
        failed_ttl: Duration::from_secs(3600),
    };

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("time")
    }

    fn job(conditions: &[(&str, &str, &str)], since: i64) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("clearml-id-t".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                active_deadline_seconds: Some(60),
                ..Default::default()
            }),
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(ty, reason, message)| JobCondition {
                            type_: (*ty).into(),
                            status: "True".into(),
                            reason: Some((*reason).into()),
                            message: Some((*message).into()),
                            last_transition_time: Some(Time(at(since))),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn pod(phase: &str, container: ContainerState, disrupted: bool) -> Pod {
        let mut conditions = vec![];
        if disrupted {
            conditions.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("PreemptionByScheduler".into()),
                ..Default::default()
            });
        }
        Pod {
            metadata: ObjectMeta {
                name: Some("clearml-id-t-x7k2p".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(conditions),
                container_statuses: Some(vec![ContainerStatus {
                    name: "task".into(),
                    state: Some(container),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn exited(code: i32, reason: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                finished_at: Some(Time(at(0))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some("not found".into()),
            }),
            ..Default::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(Default::default()),
            ..Default::default()
        }
    }

    #[test]
    fn job_verdicts_read_like_bare_pod_verdicts() {
        let active = TaskStatus::Known("in_progress");
        let none = job(&[], 0);
        let fail_job = job(
            &[
                (
                    "FailureTarget",
                    "PodFailurePolicy",
                    "Container task for pod …",
                ),
                ("Failed", "PodFailurePolicy", "Container task for pod …"),
            ],
            0,
        );
        let deadline = job(
            &[(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )],
            0,
        );
        let backoff = job(
            &[(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )],
            0,
        );
        let complete = job(&[("Complete", "CompletionsReached", "")], 0);
        let suspended = job(&[("Suspended", "JobSuspended", "Job suspended")], 0);
        let oom = pod("Failed", exited(137, "OOMKilled"), false);
        let exit1 = pod("Failed", exited(1, "Error"), false);
        let preempted = pod("Failed", exited(137, "Error"), true);
        let pulling = pod("Pending", waiting("ErrImagePull"), false);
        let ok = pod("Succeeded", exited(0, "Completed"), false);
        let run = pod("Running", running(), false);
        type Case<'a> = (
            &'a str,
            Option<&'a Job>,
            Vec<&'a Pod>,
            TaskStatus<'a>,
            i64,
            Verdict,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "an image pull error from the pod, as for bare pods",
                Some(&none),
                vec![&pulling],
                active,
                1,
                Verdict::Fail("pod clearml-id-t-x7k2p: ErrImagePull: not found".into()),
            ),
            (
                "OOMKilled from the pod behind PodFailurePolicy",
                Some(&fail_job),
                vec![&oom],
                active,
                1,
                Verdict::Fail("pod clearml-id-t-x7k2p failed: OOMKilled (exit code 137)".into()),
            ),
            (
                "a non-zero exit",
                Some(&fail_job),
                vec![&exit1],
                active,
                1,
                Verdict::Fail("pod clearml-id-t-x7k2p failed: Error (exit code 1)".into()),
            ),
            (
                "a preempted pod while the Job goes on: not a failure",
                Some(&none),
                vec![&preempted],
                active,
                1,
                Verdict::Wait,
            ),
            (
                "a preempted pod and its replacement running",
                Some(&none),
                vec![&preempted, &run],
                active,
                1,
                Verdict::Wait,
            ),
            (
                "the deadline",
                Some(&deadline),
                vec![],
                active,
                1,
                Verdict::Fail(
                    "job clearml-id-t ran longer than its active deadline (60s): Job was active longer than specified deadline".into(),
                ),
            ),
            (
                "a failed Job whose pods are gone",
                Some(&backoff),
                vec![],
                active,
                1,
                Verdict::Fail(
                    "job clearml-id-t failed: BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
                ),
            ),
            (
                "suspended: explained",
                Some(&suspended),
                vec![],
                TaskStatus::Known("queued"),
                1,
                Verdict::Explain("job clearml-id-t is suspended (waiting to be admitted)".into()),
            ),
            (
                "succeeded pod within its TTL",
                Some(&complete),
                vec![&ok],
                TaskStatus::Known("completed"),
                10,
                Verdict::Wait,
            ),
            (
                "succeeded pod past its TTL",
                Some(&complete),
                vec![&ok],
                TaskStatus::Known("completed"),
                301,
                Verdict::Cleanup,
            ),
            (
                "a complete Job without pods past the TTL",
                Some(&complete),
                vec![],
                TaskStatus::Known("completed"),
                301,
                Verdict::Cleanup,
            ),
            (
                "a failed Job without pods within the failed TTL",
                Some(&backoff),
                vec![],
                TaskStatus::Known("failed"),
                301,
                Verdict::Wait,
            ),
            (
                "aborted in ClearML: withdraw",
                Some(&none),
                vec![&run],
                TaskStatus::Known("stopped"),
                1,
                Verdict::Withdraw("task is stopped in ClearML".into()),
            ),
            (
                "aborted while suspended: the Job goes",
                Some(&suspended),
                vec![],
                TaskStatus::Known("stopped"),
                1,
                Verdict::Withdraw("task is stopped in ClearML".into()),
            ),
            (
                "the Job gone, its pods not yet",
                None,
                vec![&run],
                active,
                1,
                Verdict::Wait,
            ),
        ];
        for (what, job, pods, task, now, want) in cases {
            assert_eq!(decide(job, &pods, task, at(now), &T), want, "{what}");
        }
    }

    #[test]
    fn a_job_is_finished_once_the_controller_has_decided() {
        for (conditions, want) in [
            (vec![], false),
            (vec![("Suspended", "JobSuspended", "")], false),
            (vec![("FailureTarget", "PodFailurePolicy", "")], true),
            (vec![("SuccessCriteriaMet", "CompletionsReached", "")], true),
            (vec![("Complete", "CompletionsReached", "")], true),
            (vec![("Failed", "DeadlineExceeded", "")], true),
        ] {
            assert_eq!(is_finished(&job(&conditions, 0)), want, "{conditions:?}");
        }
    }
}
