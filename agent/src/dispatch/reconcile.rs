//! Reconciling: every task with pods gets a lifecycle verdict (pure, `lifecycle::decide`) from its
//! pods and its ClearML status, and the verdict is carried out: a pending reason written to the
//! task, a failure reported (the pods' events first, then the verdict), the pods of an aborted
//! task deleted, finished pods cleaned up after their TTL. Destructive verdicts are confirmed
//! against a fresh status read first. Pods deleted by someone else get one rule, the same before
//! and after a restart: a task still queued is launched again, one that started is failed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

use clearml_agent_core::{contract, render};

use crate::{
    k8s,
    lifecycle::{self, PodState, TaskStatus, Verdict},
    metrics::PodLabels,
};

use super::{Dispatcher, explain_message, statuses::Confirmed};

/// How many of a failed task's pod events are copied into its ClearML log.
const EVENTS_IN_LOG: usize = 20;
/// How long a created pod may stay unseen by the watch before its absence means it was deleted.
const WATCH_GRACE: Duration = Duration::from_secs(60);

impl Dispatcher {
    /// Applies the lifecycle verdict of every task with pods, and notices pods deleted by others.
    pub(super) async fn reconcile(&mut self) {
        let by_task = self.pods_and_jobs_by_task();
        // tasks put back wait for their old pods' processes to end (a finished pod's is gone)
        self.refail_settled(&by_task).await;
        self.retries.settle(|t| {
            by_task
                .get(t)
                .is_some_and(|pods| pods.iter().any(|p| !lifecycle::classify(p).is_finished()))
        });
        let mut ids: Vec<String> = by_task.keys().cloned().collect();
        ids.extend(
            self.launched
                .keys()
                .filter(|t| !by_task.contains_key(*t))
                .cloned(),
        );
        if ids.is_empty() {
            return;
        }
        let known = self.statuses.refresh(&self.clearml, &ids).await;
        let now = Timestamp::now();
        // disruptions (remembered until the task is put back) and the gang rule, per task
        let rules: HashMap<&String, _> = by_task
            .iter()
            .map(|(task, pods)| (task, self.task_rules(task, pods)))
            .collect();
        let mut verdicts: Vec<(&String, &Vec<Arc<Pod>>, Verdict)> = by_task
            .iter()
            .map(|(task, pods)| {
                let status = match self.statuses.get(task) {
                    _ if !known => TaskStatus::Unknown,
                    Some(s) => s.as_task_status(),
                    None => TaskStatus::Missing,
                };
                let verdict = self.decide_task(task, pods, &rules[task], status, now);
                (task, pods, verdict)
            })
            .collect();
        // NB: a cached status may be up to STATUS_REFRESH old (a task may have just completed);
        // confirm with a fresh read before anything destructive, one batched read for all.
        let doubtful: Vec<String> = verdicts
            .iter()
            .filter(|(_, _, v)| {
                matches!(
                    v,
                    Verdict::Fail(_)
                        | Verdict::Withdraw(_)
                        | Verdict::Retry { .. }
                        | Verdict::Release { .. }
                )
            })
            .map(|(t, _, _)| (*t).clone())
            .collect();
        if !doubtful.is_empty() {
            let fresh = self.statuses.confirm(&self.clearml, &doubtful).await;
            for (task, pods, verdict) in &mut verdicts {
                if let Some(status) = fresh.get(*task) {
                    *verdict =
                        self.decide_task(task, pods, &rules[*task], status.as_task_status(), now);
                }
            }
        }
        let mut messages: Vec<(String, String)> = Vec::new();
        for (task, pods, verdict) in verdicts {
            match verdict {
                Verdict::Wait => {}
                Verdict::Explain(msg) => {
                    // the origin record stays in the message (see `pending_message`)
                    let origin = pods.iter().find_map(|p| {
                        let id = p.metadata.labels.as_ref()?.get(contract::LABEL_QUEUE_ID)?;
                        let name = p
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(contract::ANNOTATION_QUEUE_NAME))
                            .map_or("", String::as_str);
                        Some((name, id.as_str()))
                    });
                    // written with the pass's other reasons (one `tasks.update_batch`)
                    messages.push((task.clone(), explain_message(&msg, origin)));
                }
                Verdict::Fail(reason) => {
                    let category = category_of(&reason);
                    self.fail_with_evidence(task, pods, format!("k8s agent: {reason}"), category)
                        .await;
                }
                Verdict::Retry { .. } => self.retry(task, pods).await,
                Verdict::Release {
                    pod,
                    waited,
                    message,
                } => self.release(task, pods, &pod, waited, &message).await,
                Verdict::Withdraw(why) => {
                    tracing::info!(%task, %why, "deleting pods of withdrawn task");
                    self.delete_task_pods(task, pods, false).await;
                    self.launched.remove(task);
                }
                Verdict::Cleanup => {
                    self.delete_task_pods(task, pods, true).await;
                    self.launched.remove(task);
                }
            }
        }
        self.statuses.write_messages(&self.clearml, messages).await;
        // launched tasks whose pods vanished without us deleting them (a pod the watch has not
        // shown yet is not gone, unless it stays unseen past WATCH_GRACE)
        self.unseen.retain(|t, _| !by_task.contains_key(t));
        let vanished: Vec<String> = self
            .launched
            .keys()
            .filter(|t| !by_task.contains_key(*t) && !self.deleting.contains(*t))
            .filter(|t| {
                self.unseen
                    .get(*t)
                    .is_none_or(|at| at.elapsed() > WATCH_GRACE)
            })
            .cloned()
            .collect();
        // failing is destructive: confirm the cached status first, as above (not while ClearML
        // does not answer: the tasks wait for the next pass)
        let fresh = if vanished.is_empty() || !known {
            HashMap::new()
        } else {
            self.statuses.confirm(&self.clearml, &vanished).await
        };
        // One rule, the same before and after a restart: a task still queued never started in
        // its pods, so it is launched again (a restarted agent finds its pending entry without
        // pods and launches it); a task that started is failed.
        let mut relaunched = Vec::new();
        for task in vanished {
            let status = fresh.get(&task).unwrap_or(&Confirmed::Unknown);
            if *status == Confirmed::Unknown {
                continue; // decided on the next pass, once ClearML answers
            }
            let status = match self.as_seen_by_its_pods(
                &task,
                status.as_task_status(),
                self.retries.has_seen(&task),
            ) {
                TaskStatus::Known(s) => Confirmed::Known(s.to_string()),
                _ => status.clone(),
            };
            let status = &status;
            if self.retries.has_seen(&task) && status.as_task_status().is_active() {
                // the cluster took its pods away: retried, not failed
                self.retry(&task, &[]).await;
                continue;
            }
            self.launched.remove(&task);
            self.unseen.remove(&task);
            if *status == Confirmed::Known("queued".into()) {
                tracing::info!(%task, "pods deleted outside the agent before the task started; launching again");
                relaunched.push((
                    task,
                    "WARNING",
                    "k8s agent: the task's pods were deleted outside the agent before it started; creating them again".to_string(),
                ));
            } else if status.as_task_status().is_active() {
                self.metrics.task_failed("PodDeleted");
                self.fail(
                    &task,
                    "k8s agent: the task's pod was deleted outside the agent after the task started",
                )
                .await;
            }
        }
        if !relaunched.is_empty() {
            self.changed.notify_one(); // the next tick launches them
            if let Err(error) = self
                .clearml
                .log_events(&self.cfg.worker_id, &relaunched)
                .await
            {
                tracing::debug!(%error, "cannot write task log lines");
            }
        }
        self.deleting.retain(|t| by_task.contains_key(t));
        let launched = &self.launched;
        self.retries
            .retain_seen(|t| by_task.contains_key(t) || launched.contains_key(t));
        self.statuses.retain_messages(|t| by_task.contains_key(t));
        self.statuses
            .retain_active(|t| by_task.contains_key(t) || launched.contains_key(t));
        self.unseen.retain(|t, _| self.launched.contains_key(t));
    }

    /// Fails a task with its evidence in its log first: the pods' events (scheduler and
    /// kubelet), then the verdict; then [`Self::fail`].
    pub(super) async fn fail_with_evidence(
        &mut self,
        task: &str,
        pods: &[Arc<Pod>],
        reason: String,
        category: &str,
    ) {
        self.metrics.task_failed(category);
        let task = task.to_string();
        let names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let mut lines: Vec<(String, &str, String)> = if names.is_empty() {
            Vec::new()
        } else {
            match self.kube.pod_events(&names, EVENTS_IN_LOG).await {
                Ok(events) => events
                    .iter()
                    .map(|e| {
                        let level = if e.type_.as_deref() == Some("Warning") {
                            "WARNING"
                        } else {
                            "INFO"
                        };
                        (
                            task.clone(),
                            level,
                            format!("k8s event: {}", k8s::event_line(e)),
                        )
                    })
                    .collect(),
                Err(error) => {
                    tracing::debug!(%task, %error, "cannot list the pods' events");
                    Vec::new()
                }
            }
        };
        lines.push((task.clone(), "ERROR", reason.clone()));
        let _ = self.clearml.log_events(&self.cfg.worker_id, &lines).await;
        self.fail(&task, &reason).await;
    }

    /// Removes a task from the pending queue and fails it; its live pods are deleted (finished
    /// ones are kept for their TTL).
    pub(super) async fn fail(&mut self, task: &str, reason: &str) {
        tracing::warn!(%task, %reason, "failing task");
        // NB: fail first, then dequeue. The other order loses the task if the second call fails:
        // out of every queue and still "queued". A failed task left in the pending queue is
        // removed by the next tick (it is no longer queued).
        if let Err(error) = self
            .clearml
            .fail_task(task, reason, "Changed by k8s agent")
            .await
        {
            tracing::warn!(%task, %error, "cannot fail task; it stays pending and is retried");
            return;
        }
        if let Err(error) = self
            .clearml
            .remove_from_queue(&self.pending_queue, task)
            .await
        {
            tracing::warn!(%task, %error, "cannot remove the failed task from the pending queue");
        }
        self.statuses.set(task, Confirmed::Known("failed".into()));
        let by_task = self.pods_and_jobs_by_task();
        if let Some(pods) = by_task.get(task) {
            if pods.iter().any(|p| !lifecycle::classify(p).is_finished()) {
                self.retries
                    .refail
                    .insert(task.to_string(), reason.to_string());
            }
            self.delete_task_pods(task, pods, false).await;
        }
        self.launched.remove(task);
    }

    /// A task's status as its pods' fate reads it: the in-pod agent marks its task stopped when
    /// its pod is deleted gracefully (`lifecycle::stopped_by_its_pod`), so the task is still the
    /// agent's, as if in progress, when the cluster took the pod (`disrupted`: a retry) or when
    /// someone else deleted the pod of a task this process launched or saw running (a failure
    /// to report); not when the agent deleted the pod itself, nor for a task a restarted agent
    /// only sees stopped (a task aborted in ClearML looks the same).
    pub(super) fn as_seen_by_its_pods<'a>(
        &self,
        task: &str,
        status: TaskStatus<'a>,
        disrupted: bool,
    ) -> TaskStatus<'a> {
        let signalled = lifecycle::stopped_by_its_pod(
            status,
            self.statuses.reason(task).map(String::as_str),
            self.statuses.message(task).map(String::as_str),
        );
        if signalled
            && (disrupted || (!self.deleting.contains(task) && self.statuses.was_active(task)))
        {
            TaskStatus::Known("in_progress")
        } else {
            status
        }
    }

    /// Tasks failed while their pods ran, whose pods are gone now: one whose in-pod agent marked
    /// it stopped when signalled (after the failure) is failed again with the same reason.
    async fn refail_settled(
        &mut self,
        by_task: &std::collections::BTreeMap<String, Vec<Arc<Pod>>>,
    ) {
        let settled: Vec<String> = self
            .retries
            .refail
            .keys()
            .filter(|t| {
                by_task
                    .get(*t)
                    .is_none_or(|pods| pods.iter().all(|p| lifecycle::classify(p).is_finished()))
            })
            .cloned()
            .collect();
        if settled.is_empty() {
            return;
        }
        let docs = match self
            .clearml
            .tasks(
                &settled,
                &["id", "status", "status_reason", "status_message"],
            )
            .await
        {
            Ok(docs) => docs,
            Err(error) => {
                tracing::debug!(%error, "cannot read the failed tasks' statuses; later");
                return;
            }
        };
        for task in settled {
            let Some(reason) = self.retries.refail.remove(&task) else {
                continue;
            };
            let stopped = docs.iter().find(|d| d.id == task).is_some_and(|d| {
                lifecycle::stopped_by_its_pod(
                    TaskStatus::Known(d.status.as_deref().unwrap_or_default()),
                    d.status_reason.as_deref(),
                    d.status_message.as_deref(),
                )
            });
            if stopped {
                tracing::info!(%task, "the task's pod marked it stopped when signalled; failing it again");
                if let Err(error) = self
                    .clearml
                    .fail_task(&task, &reason, "Changed by k8s agent")
                    .await
                {
                    tracing::warn!(%task, %error, "cannot fail the task again");
                    self.retries.refail.insert(task, reason);
                }
            }
        }
    }

    /// Deletes a task's pods (`all`: finished ones too) and, for a multi-node task, its
    /// rendezvous Service: whenever its pods are deleted (abort, failure, cleanup, a stale run) the
    /// Service goes too, even while finished pods are kept for their TTL. (It is also owned by rank
    /// 0, so the cluster's garbage collector removes it with that pod should this call fail.)
    pub(super) async fn delete_task_pods(&mut self, task: &str, pods: &[Arc<Pod>], all: bool) {
        if self.delete_task_job(task, pods, all).await {
            return; // Job mode (`job.rs`)
        }
        self.deleting.insert(task.to_string());
        let mut multi = false;
        for pod in pods {
            let state = lifecycle::classify(pod);
            multi |= pod
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(contract::LABEL_RANK));
            if state == PodState::Terminating || (!all && state.is_finished()) {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Err(error) = self.kube.delete_pod(&name).await {
                tracing::warn!(%task, pod = %name, %error, "cannot delete pod");
            }
        }
        if multi
            && let Err(error) = self
                .kube
                .delete_service(&render::pod_name(task, None))
                .await
        {
            tracing::warn!(%task, %error, "cannot delete rendezvous service");
        }
    }

    /// Sets the `clearml_agent_pods{queue,phase}` gauges from the pod cache.
    pub(super) fn update_pod_gauges(&self, by_task: &BTreeMap<String, Vec<Arc<Pod>>>) {
        self.metrics.pods.clear();
        for pod in by_task.values().flatten() {
            let queue = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(contract::ANNOTATION_QUEUE_NAME))
                .cloned()
                .unwrap_or_default();
            let phase = match lifecycle::classify(pod) {
                PodState::Pending { .. } => "Pending",
                PodState::Running => "Running",
                PodState::Succeeded { .. } => "Succeeded",
                PodState::Failed { .. } => "Failed",
                PodState::Terminating => "Terminating",
            };
            self.metrics
                .pods
                .get_or_create(&PodLabels {
                    queue,
                    phase: phase.into(),
                })
                .inc();
        }
    }
}

/// The lifecycle verdict for a task's pods, with its disruption and gang rule.
pub(super) fn decide_pods(
    pods: &[Arc<Pod>],
    (disrupted, gang): &(
        Option<(String, lifecycle::Disruption)>,
        Option<lifecycle::Gang>,
    ),
    status: TaskStatus<'_>,
    now: Timestamp,
    timeouts: &lifecycle::Timeouts,
) -> Verdict {
    let names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    let states: Vec<(&str, PodState)> = names
        .iter()
        .map(String::as_str)
        .zip(pods.iter().map(|p| lifecycle::classify(p)))
        .collect();
    lifecycle::decide_task(
        &states,
        disrupted.as_ref().map(|(pod, why)| (pod.as_str(), why)),
        *gang,
        status,
        now,
        timeouts,
    )
}

/// Metric category of a failure reason.
fn category_of(reason: &str) -> &'static str {
    for (needle, category) in [
        ("ImagePull", "ImagePull"),
        ("ErrImage", "ImagePull"),
        ("InvalidImageName", "ImagePull"),
        ("CreateContainer", "ContainerConfig"),
        ("OOMKilled", "OOMKilled"),
        ("unschedulable", "Unschedulable"),
        ("Evicted", "Evicted"),
        ("without starting", "NotStarted"),
        // the task bootstrap's termination message: a tool missing, a hook failed
        ("clearml bootstrap:", "Bootstrap"),
        ("failed:", "PodFailed"),
    ] {
        if reason.contains(needle) {
            return category;
        }
    }
    "Other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_categories() {
        assert_eq!(category_of("pod p: ImagePullBackOff: x"), "ImagePull");
        assert_eq!(
            category_of("pod p failed: OOMKilled (exit code 137)"),
            "OOMKilled"
        );
        assert_eq!(category_of("pod p unschedulable for 700s"), "Unschedulable");
        assert_eq!(
            category_of("pod p failed: Error (exit code 1)"),
            "PodFailed"
        );
        assert_eq!(
            category_of(
                "pod p failed: Error (exit code 127): clearml bootstrap: python3 is missing and could not be installed: the image has no package manager (apt-get, dnf, microdnf, yum or apk)"
            ),
            "Bootstrap"
        );
    }
}
