//! Job mode (`taskAsJob`): a task's `batch/v1` Job, from exactly the pod(s) [`super::render`]
//! makes. The Job is named like the bare pod (`clearml-id-<task>`), carries the pod's labels and
//! annotations (so its pods, which the Job controller makes from the template, carry the task,
//! queue and launch records the watch and a restarted agent read), and its template is the
//! rendered pod without name and namespace.
//!
//! - single-node: `completions: 1`, `parallelism: 1`;
//! - multi-node: an Indexed Job (`completions` = `parallelism` = ranks); a pod's rank is its
//!   completion index (the controller's `batch.kubernetes.io/job-completion-index` annotation,
//!   read through the downward API as `NODE_RANK`), so the template has no per-rank literal; the
//!   rendezvous Service selects the index-0 pod by the controller's label of the same name
//!   (Kubernetes 1.28 and later);
//! - `backoffLimit: 0` and a `podFailurePolicy` that fails the Job at once (`FailJob`) on any pod
//!   failure: a pod the cluster took away (`DisruptionTarget`: preemption, eviction, node drain)
//!   is not replaced by the Job controller, since a replacement would run
//!   `clearml-agent execute --require-queue` on a task that is no longer queued (its first pod
//!   started it, and its in-pod agent marks it stopped on the cluster's SIGTERM); the agent puts
//!   the task back at the head of its queue instead, as for bare pods; a non-zero exit fails the
//!   task;
//! - `ttlSecondsAfterFinished`: the longer of the succeeded and failed TTLs. The agent deletes a
//!   finished Job itself after its outcome's TTL (as it does bare pods); the Job's own TTL is the
//!   backstop that removes it while no agent runs, never before the agent would;
//! - `activeDeadlineSeconds` from `queueSettings.activeDeadlineSeconds`.

use k8s_openapi::api::{
    batch::v1::{
        Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
        PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
    },
    core::v1::{EnvVarSource, ObjectFieldSelector, PodTemplateSpec, Service},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{AgentParams, QueueParams, RenderError, TaskParams, pod_name, render};
use crate::{
    config::Timeouts,
    contract::{JOB_COMPLETION_INDEX, LABEL_RANK, LABEL_TASK_ID},
};

/// What one Job-mode launch creates.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedJob {
    /// The task's Job.
    pub job: Job,
    /// The headless Service of a multi-node task's index-0 pod (owned by the Job at launch).
    pub service: Option<Service>,
    /// Container arguments that have no pod equivalent and were ignored.
    pub warnings: Vec<String>,
    /// The Secrets the pods mount (`fileMounts`), to exist before the Job.
    pub secrets: Vec<k8s_openapi::api::core::v1::Secret>,
}

/// Whether a queue's tasks run as Jobs (its `taskAsJob`, resolved with the global key by the
/// core's config).
pub fn is_job_mode(queue: &QueueParams<'_>) -> bool {
    queue.settings.task_as_job == Some(true)
}

/// The Job's name for a task (the bare pod's name).
pub fn job_name(task_id: &str) -> String {
    pod_name(task_id, None)
}

/// The `ttlSecondsAfterFinished` of a task's Job: the longer TTL, capped to what the field holds.
pub fn job_ttl_seconds(t: &Timeouts) -> i32 {
    let secs = t.succeeded_ttl.max(t.failed_ttl).as_secs();
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// `NODE_RANK` read from the pod's completion-index annotation.
fn rank_from_index() -> EnvVarSource {
    EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: format!("metadata.annotations['{JOB_COMPLETION_INDEX}']"),
        }),
        ..Default::default()
    }
}

/// Renders the Job of one task launched from one queue (Job mode).
pub fn render_job(
    agent: &AgentParams,
    queue: &QueueParams<'_>,
    task: &TaskParams,
    timeouts: &Timeouts,
) -> Result<RenderedJob, RenderError> {
    let rendered = render(agent, queue, task)?;
    let ranks = rendered.pods.len();
    let multi = rendered.service.is_some();
    let Some(mut pod) = rendered.pods.into_iter().next() else {
        return Err(RenderError::Template {
            queue: queue.name.into(),
            message: "renders no pod".into(),
        });
    };
    let name = job_name(&task.id);
    let mut labels = pod.metadata.labels.take().unwrap_or_default();
    labels.remove(LABEL_RANK);
    let annotations = pod.metadata.annotations.take().unwrap_or_default();
    let mut spec = pod.spec.take().unwrap_or_default();
    if multi {
        // rank 0's literals become the completion index: NODE_RANK from the annotation, and the
        // worker id suffixed with it (`$(NODE_RANK)` expands variables defined before it)
        for container in &mut spec.containers {
            let env = container.env.get_or_insert_with(Vec::new);
            let worker = env
                .iter()
                .position(|e| e.name == "CLEARML_WORKER_ID")
                .map(|i| env.remove(i));
            if let Some(rank) = env.iter_mut().find(|e| e.name == "NODE_RANK") {
                rank.value = None;
                rank.value_from = Some(rank_from_index());
            }
            if let Some(mut worker) = worker {
                worker.value = worker.value.map(|w| format!("{w}:$(NODE_RANK)"));
                env.push(worker);
            }
        }
    }
    let ranks = i32::try_from(ranks).unwrap_or(i32::MAX);
    // through Kueue: its batch/v1 integration admits a Job by unsuspending it; the queue-name
    // label is on the Job (Kueue's pod integration leaves a managed Job's pods alone)
    let mut job_labels = labels.clone();
    let kueue = queue.settings.kueue.as_ref();
    if let Some(k) = kueue {
        job_labels.insert(crate::kueue::LABEL_QUEUE_NAME.into(), k.local_queue.clone());
    }
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(agent.namespace.clone()),
            labels: Some(job_labels),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completions: Some(ranks),
            parallelism: Some(ranks),
            completion_mode: Some(if multi { "Indexed" } else { "NonIndexed" }.into()),
            backoff_limit: Some(0),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: Some("True".into()),
                        }]),
                        on_exit_codes: None,
                    },
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: None,
                            operator: "NotIn".into(),
                            values: vec![0],
                        }),
                        on_pod_conditions: None,
                    },
                ],
            }),
            ttl_seconds_after_finished: Some(job_ttl_seconds(timeouts)),
            active_deadline_seconds: queue.settings.active_deadline_seconds,
            suspend: kueue.map(|_| true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        }),
        status: None,
    };
    let service = rendered.service.map(|mut svc| {
        if let Some(selector) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
            selector.remove(LABEL_RANK);
            selector.insert(JOB_COMPLETION_INDEX.into(), "0".into());
            debug_assert!(selector.contains_key(LABEL_TASK_ID));
        }
        if let Some(l) = svc.metadata.labels.as_mut() {
            l.remove(LABEL_RANK);
        }
        svc
    });
    Ok(RenderedJob {
        job,
        service,
        warnings: rendered.warnings,
        secrets: rendered.secrets,
    })
}

#[cfg(test)]
mod tests;
