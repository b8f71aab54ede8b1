//! Retries: a task whose pod the cluster took away (preempted, evicted, its node gone: see
//! `lifecycle::disruption`) goes back to the head of its origin queue, up to the queue's
//! `maxRetries`; so does a multi-node task whose ranks were not all scheduled within the gang
//! timeout (its ranks are released, and the task is held back from the take for a backoff).
//!
//! Putting a task back is one forced `tasks.enqueue` into its origin queue (the task may be in
//! progress; on ClearML server 1.17 and later the same call takes it out of the pending queue),
//! then `queues.move_task_to_front`. The task's pods are deleted right after; a new launch never
//! overlaps them: the task's next pending entry is a new launch, and a launch whose task still has
//! pods of an earlier one removes them first and waits until they are gone (`take::plan`, `stale`).
//! So one attempt runs at a time, and the enqueue needs no wait: the durable record is written
//! before anything is deleted.
//!
//! The record: the reasons of every retry so far, oldest first, travel with the task:
//! - in its status message while it waits (`K8S retried after PreemptionByScheduler, GangTimeout:
//!   back at the head of queue gpu; launching from queue gpu [ID]`), kept by the take
//!   ([`taken_message`]), which a restarted agent reads back ([`Dispatcher::recall_records`]);
//! - on its next pods, as the `clearml.ai/retries` annotation, written at creation from that
//!   message, so the count survives the task's own status writes once it runs.
//!
//! A disruption seen on a pod is remembered in memory until the task is put back, so a pod the
//! cluster deletes before the agent could act (preemption deletes the pod) is retried, not
//! failed as deleted by someone. A restarted agent that finds the disrupted pod still there
//! decides again; one whose pods all vanished while no agent ran is not noticed (as before).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use clearml_agent_core::{
    contract, kueue,
    values::{DEFAULT_GANG_TIMEOUT_SECONDS, DEFAULT_MAX_RETRIES},
};

use crate::{
    clearml::TakeProtocol,
    lifecycle::{self, Disruption, Gang},
    metrics::RetryLabels,
};

use super::{Dispatcher, GET_ALL_CHUNK, pending_message, statuses::Confirmed};

/// The reason code of a gang release.
pub const GANG_TIMEOUT: &str = "GangTimeout";
/// `status_reason` of a task put back in its queue.
const RETRY_REASON: &str = "k8s agent retry";
const RECORD_PREFIX: &str = "K8S retried after ";
/// Longest gang backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The reason codes of a status message that starts with a retry record, oldest first.
pub fn record_from_message(message: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix(RECORD_PREFIX)?;
    let end = rest.find([':', ';', '(']).unwrap_or(rest.len());
    let codes: Vec<String> = rest[..end]
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    codes
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .then_some(codes)
}

fn record_text(codes: &[String]) -> String {
    format!("{RECORD_PREFIX}{}", codes.join(", "))
}

/// The status message of a task taken from its queue: its retry record, if any, then the origin
/// record (see `origin.rs`).
/// A task's disruption (the pod and why) and its gang rule, for its verdict.
pub(super) type TaskRules = (Option<(String, Disruption)>, Option<Gang>);

pub fn taken_message(codes: Option<&[String]>, name: &str, id: &str) -> String {
    match codes {
        Some(codes) if !codes.is_empty() => {
            format!("{}; {}", record_text(codes), pending_message(name, id))
        }
        _ => pending_message(name, id),
    }
}

/// The status message of a task put back in its queue.
fn back_message(codes: &[String], name: &str, id: &str) -> String {
    format!(
        "{}: back at the head of queue {name}; {}",
        record_text(codes),
        pending_message(name, id)
    )
}

/// The retry record the pods of a launch carry (the longest, should they differ).
pub fn record_from_pods(pods: &[Arc<Pod>]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| {
            p.metadata
                .annotations
                .as_ref()?
                .get(contract::ANNOTATION_RETRIES)
        })
        .map(|a| {
            a.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .max_by_key(Vec::len)
        .unwrap_or_default()
}

/// Writes the retry record of the task being launched (from its status message, else from
/// memory) on its pods.
pub fn annotate(pods: &mut [Pod], codes: Option<&[String]>) {
    let Some(codes) = codes.filter(|c| !c.is_empty()) else {
        return;
    };
    for pod in pods {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(contract::ANNOTATION_RETRIES.into(), codes.join(","));
    }
}

/// Retries caused by disruptions (gang releases are bounded by the pending timeout instead).
pub fn disruptions(codes: &[String]) -> usize {
    codes.iter().filter(|c| *c != GANG_TIMEOUT).count()
}

/// Gang releases so far.
pub fn gang_releases(codes: &[String]) -> u32 {
    codes.iter().filter(|c| *c == GANG_TIMEOUT).count() as u32
}

/// How long a task is held back from the take after its `releases`-th gang release: the gang
/// timeout, doubled at every release, at most [`MAX_BACKOFF`].
pub fn backoff(timeout: Duration, releases: u32) -> Duration {
    let factor = 1u32 << releases.saturating_sub(1).min(16);
    timeout.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A disruption seen on a task's pod, remembered until the task is put back.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pod: String,
    why: Disruption,
    /// Origin queue `(name, id)`, from the pods.
    origin: Option<(String, String)>,
    /// The retry record of the disrupted launch.
    prior: Vec<String>,
}

/// What the dispatcher remembers of retries.
#[derive(Default)]
pub(super) struct Retries {
    /// Disruptions seen on pods of tasks not yet put back.
    seen: HashMap<String, Seen>,
    /// Records of tasks put back, until their next pods carry them (read by the take).
    records: HashMap<String, Vec<String>>,
    /// Tasks held back from the take until then (gang backoff).
    not_before: HashMap<String, Instant>,
    /// Tasks put back (a retry or a gang release) whose old pods still run: held back from the
    /// take until those are gone, since the in-pod agent answers their SIGTERM by marking its
    /// task stopped, which must not land on the next launch (see `lifecycle::stopped_by_its_pod`).
    settling: std::collections::HashSet<String>,
    /// Tasks the agent failed while their pods still ran, with the reason: the in-pod agent's
    /// answer to the pods' SIGTERM (`tasks.stopped`) may land on the failed task, and is undone
    /// once the pods are gone.
    pub(super) refail: HashMap<String, String>,
    /// The records of the tasks waiting when this process started dispatching were read.
    recalled: bool,
}

impl Retries {
    /// Forgets what a leader needs (leadership lost).
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// The status message the take writes for `task`.
    pub(super) fn taken_message(&self, task: &str, name: &str, id: &str) -> String {
        taken_message(self.records.get(task).map(Vec::as_slice), name, id)
    }

    /// The record of a task put back (or recalled), if this process knows it.
    pub(super) fn record(&self, task: &str) -> Option<Vec<String>> {
        self.records.get(task).cloned()
    }

    /// The task's pods now carry its record.
    pub(super) fn launched(&mut self, task: &str) {
        self.records.remove(task);
    }

    /// Takes the tasks in backoff out of the waiting lists (they keep their place in ClearML);
    /// returns how many were held back from each list.
    pub(super) fn hold_back(&mut self, waiting: &mut [Vec<String>]) -> Vec<u32> {
        let now = Instant::now();
        self.not_before.retain(|_, t| *t > now);
        waiting
            .iter_mut()
            .map(|tasks| {
                let before = tasks.len();
                tasks.retain(|t| !self.not_before.contains_key(t));
                let gangs = (before - tasks.len()) as u32;
                tasks.retain(|t| !self.settling.contains(t));
                gangs
            })
            .collect()
    }

    /// Forgets the disruptions of tasks `keep` rejects (no pods, not launched).
    pub(super) fn retain_seen(&mut self, keep: impl Fn(&str) -> bool) {
        self.seen.retain(|t, _| keep(t));
    }

    /// Lets the take have the tasks put back whose old pods are gone (`with_pods` rejects them).
    pub(super) fn settle(&mut self, with_pods: impl Fn(&str) -> bool) {
        self.settling.retain(|t| with_pods(t));
    }

    /// Whether a disruption was seen on a pod of `task` that is not put back yet.
    pub(super) fn has_seen(&self, task: &str) -> bool {
        self.seen.contains_key(task)
    }
}

/// When the last of `pods` was bound (its `PodScheduled=True` condition's transition).
fn last_bound(pods: &[Arc<Pod>]) -> Option<k8s_openapi::jiff::Timestamp> {
    pods.iter()
        .filter_map(|p| {
            p.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "True")?
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
        })
        .max()
}

/// Origin queue `(name, id)` of a task's pods (their labels and annotations).
fn origin_of(pods: &[Arc<Pod>]) -> Option<(String, String)> {
    pods.iter().find_map(|p| {
        let id = p.metadata.labels.as_ref()?.get(contract::LABEL_QUEUE_ID)?;
        let name = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(contract::ANNOTATION_QUEUE_NAME))
            .cloned()
            .unwrap_or_default();
        Some((name, id.clone()))
    })
}

impl Dispatcher {
    /// Takes the gangs in backoff out of the served queues' waiting lists (same order as the
    /// served queues) and tells `status` how many each queue holds back.
    pub(super) fn hold_back_gangs(&mut self, waiting: &mut [Vec<String>]) {
        let held = self.retries.hold_back(waiting);
        let mut snap = self.snapshot.write();
        snap.gang_held = self
            .served
            .iter()
            .zip(held)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| (s.id.clone(), n))
            .collect();
    }

    /// What a task's verdict needs beyond its pods: a disruption of one of them (remembered
    /// until the task is put back), and the gang rule when it applies (a multi-node task of a
    /// queue not managed by Kueue).
    pub(super) fn task_rules(&mut self, task: &str, pods: &[Arc<Pod>]) -> TaskRules {
        // Job mode too: the Job fails on a pod the cluster took (podFailurePolicy FailJob) and the
        // task is put back as for bare pods; an Indexed Job's ranks (their completion index) get
        // the gang rule below
        let job_mode = pods.iter().any(|p| lifecycle::job::owned_by_a_job(p));
        let disrupted = pods.iter().find_map(|p| {
            let why = lifecycle::disruption(p)?;
            Some((p.metadata.name.clone().unwrap_or_default(), why))
        });
        let origin = origin_of(pods);
        if let Some((pod, why)) = &disrupted {
            self.retries
                .seen
                .entry(task.to_string())
                .or_insert_with(|| Seen {
                    pod: pod.clone(),
                    why: why.clone(),
                    origin: origin.clone(),
                    prior: record_from_pods(pods),
                });
        }
        let multi = pods.iter().any(|p| {
            p.metadata.labels.as_ref().is_some_and(|l| {
                l.contains_key(contract::LABEL_RANK)
                    || (job_mode && l.contains_key(contract::JOB_COMPLETION_INDEX))
            })
        });
        // Kueue admits a pod group whole: no gang rule of the agent's
        let through_kueue = pods.iter().any(|p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(kueue::LABEL_QUEUE_NAME))
        });
        let settings = origin
            .as_ref()
            .and_then(|(name, _)| self.cfg.queues.get(name))
            .map(|q| &q.settings);
        // the native path (ranks in a PodGroup): the scheduler binds all or none, so the agent's
        // rule only backs it up where some ranks got bound while others wait (a scheduler
        // without the GangScheduling plugin)
        let in_pod_group = pods
            .iter()
            .any(|p| clearml_agent_core::gang::group_of(p).is_some());
        let some_bound = pods
            .iter()
            .any(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()));
        let gang = (multi
            && !through_kueue
            && settings.is_none_or(|s| s.kueue.is_none())
            && (!in_pod_group || some_bound))
            .then(|| {
                let timeout = Duration::from_secs(
                    settings
                        .and_then(|s| s.gang_timeout_seconds)
                        .unwrap_or(DEFAULT_GANG_TIMEOUT_SECONDS),
                );
                Gang {
                    timeout,
                    waited_before: timeout.saturating_mul(gang_releases(&record_from_pods(pods))),
                    bound_since: in_pod_group.then(|| last_bound(pods)).flatten(),
                }
            });
        (disrupted, gang)
    }

    fn max_retries(&self, queue_name: &str) -> u32 {
        self.cfg
            .queues
            .get(queue_name)
            .and_then(|q| q.settings.max_retries)
            .unwrap_or(DEFAULT_MAX_RETRIES)
    }

    /// Whether `task` was put back already since the launch whose record is `prior` (its status
    /// message holds a longer record): then only its pods are left to delete.
    fn put_back_already(&self, task: &str, prior: &[String]) -> bool {
        // this process put it back and its old pods are still there (their in-pod agent may have
        // overwritten the message since), or the message says so
        self.retries.settling.contains(task)
            || self
                .statuses
                .message(task)
                .and_then(|m| record_from_message(m))
                .is_some_and(|codes| codes.len() > prior.len())
    }

    /// Carries out a retry for a disruption seen on `task` (its pods `pods`, possibly none left):
    /// back to the head of its queue, or failed past `maxRetries`.
    pub(super) async fn retry(&mut self, task: &str, pods: &[Arc<Pod>]) {
        let Some(seen) = self.retries.seen.get(task).cloned() else {
            return;
        };
        if self.put_back_already(task, &seen.prior) {
            self.retries.seen.remove(task);
            self.forget_launch(task, pods).await;
            return;
        }
        let Some((name, id)) = seen.origin.clone() else {
            self.retries.seen.remove(task);
            self.metrics.task_failed("Disrupted");
            let reason = format!(
                "k8s agent: pod {} was taken away by the cluster ({}) and the task's queue is unknown, so it cannot go back to it",
                seen.pod,
                seen.why.describe()
            );
            self.fail_with_evidence(task, pods, reason, "Disrupted")
                .await;
            return;
        };
        let max = self.max_retries(&name);
        let done = disruptions(&seen.prior);
        if done >= max as usize {
            self.retries.seen.remove(task);
            let reason = format!(
                "k8s agent: pod {} was taken away by the cluster ({}); the task was retried {done} times already (queueSettings.maxRetries {max})",
                seen.pod,
                seen.why.describe()
            );
            self.fail_with_evidence(task, pods, reason, "Disrupted")
                .await;
            return;
        }
        let mut codes = seen.prior.clone();
        codes.push(seen.why.code.clone());
        let line = format!(
            "k8s agent: pod {} was taken away by the cluster ({}); retry {} of {max} (queueSettings.maxRetries): the task goes back to the head of queue {name}",
            seen.pod,
            seen.why.describe(),
            done + 1
        );
        if self.put_back(task, &name, &id, codes, line).await {
            self.retries.seen.remove(task);
            self.retries.settling.insert(task.to_string());
            self.forget_launch(task, pods).await;
        }
    }

    /// Releases every rank of a multi-node task whose rank `pod` waited `waited` unscheduled
    /// past the gang timeout: back to the head of its queue, held back from the take for a
    /// backoff.
    pub(super) async fn release(
        &mut self,
        task: &str,
        pods: &[Arc<Pod>],
        pod: &str,
        waited: Duration,
        message: &str,
    ) {
        let prior = record_from_pods(pods);
        if self.put_back_already(task, &prior) {
            self.forget_launch(task, pods).await;
            return;
        }
        let Some((name, id)) = origin_of(pods) else {
            return;
        };
        let timeout = self
            .cfg
            .queues
            .get(&name)
            .and_then(|q| q.settings.gang_timeout_seconds)
            .unwrap_or(DEFAULT_GANG_TIMEOUT_SECONDS);
        let mut codes = prior;
        codes.push(GANG_TIMEOUT.to_string());
        let releases = gang_releases(&codes);
        let wait = backoff(Duration::from_secs(timeout), releases);
        let line = format!(
            "k8s agent: rank {pod} of this multi-node task was not scheduled within {timeout}s (queueSettings.gangTimeoutSeconds; it waited {}s): {message}; releasing every rank so they hold nothing: the task goes back to the head of queue {name} and is taken again in {}s (release {releases})",
            waited.as_secs(),
            wait.as_secs()
        );
        if self.put_back(task, &name, &id, codes, line).await {
            self.retries
                .not_before
                .insert(task.to_string(), Instant::now() + wait);
            self.retries.settling.insert(task.to_string());
            self.forget_launch(task, pods).await;
        }
    }

    /// The launch of a task put back is over: its pods go (and its Service), it is no longer
    /// launched by this process.
    async fn forget_launch(&mut self, task: &str, pods: &[Arc<Pod>]) {
        let was_launched = self.launched.remove(task).is_some();
        self.unseen.remove(task);
        let live = pods.iter().any(|p| {
            let state = lifecycle::classify(p);
            state != lifecycle::PodState::Terminating && !state.is_finished()
        });
        // a pod the kubelet evicted stays (Failed) and would be seen disrupted again once the
        // in-pod agent's answer has overwritten the record in the status message: it goes too
        let kept = pods
            .iter()
            .any(|p| lifecycle::classify(p).is_finished() && lifecycle::disruption(p).is_some());
        if live || kept {
            self.delete_task_pods(task, pods, kept).await;
        }
        if was_launched || live {
            // the next tick may take the task again (its old pods wait out their deletion)
            self.changed.notify_one();
        }
    }

    /// Puts `task` back at the head of its queue with its retry record `codes`: one forced
    /// `tasks.enqueue` (the record in its status message; before ClearML server 1.17, then out of
    /// the pending queue), then `queues.move_task_to_front`. The log line goes to the task's
    /// console. False when the enqueue failed (tried again on the next pass).
    async fn put_back(
        &mut self,
        task: &str,
        name: &str,
        id: &str,
        codes: Vec<String>,
        line: String,
    ) -> bool {
        let message = back_message(&codes, name, id);
        if let Err(error) = self
            .clearml
            .enqueue(task, id, RETRY_REASON, &message, true)
            .await
        {
            tracing::warn!(%task, queue = %name, %error, "cannot put the task back in its queue; trying again");
            return false;
        }
        if self.clearml.take_protocol() == TakeProtocol::EnqueueThenRemove
            && let Err(error) = self
                .clearml
                .remove_from_queue(&self.pending_queue, task)
                .await
        {
            // in both queues means pending: the next tick finishes it as a take cut short
            tracing::warn!(%task, %error, "cannot remove the task put back from the pending queue");
        }
        if let Err(error) = self
            .clearml
            .call_value(
                "queues.move_task_to_front",
                &json!({"queue": id, "task": task}),
            )
            .await
        {
            tracing::warn!(%task, queue = %name, %error, "the task is back in its queue, but not at its head");
        }
        let reason = codes.last().cloned().unwrap_or_default();
        tracing::info!(%task, queue = %name, %reason, retries = codes.len(), "task put back at the head of its queue");
        self.metrics
            .task_retries
            .get_or_create(&RetryLabels {
                queue: name.to_string(),
                reason,
            })
            .inc();
        *self
            .snapshot
            .write()
            .retries
            .entry(name.to_string())
            .or_default() += 1;
        self.statuses.set(task, Confirmed::Known("queued".into()));
        self.statuses.set_message(task, message);
        self.retries.records.insert(task.to_string(), codes);
        if let Err(error) = self
            .clearml
            .log_events(&self.cfg.worker_id, &[(task.to_string(), "WARNING", line)])
            .await
        {
            tracing::debug!(%task, %error, "cannot write the retry to the task's log");
        }
        true
    }

    /// Once per leadership: reads the retry records of the tasks waiting in the served queues
    /// (a task put back by an earlier agent keeps its record when taken).
    pub(super) async fn recall_records(&mut self, waiting: &[Vec<String>]) {
        if self.retries.recalled {
            return;
        }
        let ids: Vec<String> = waiting.iter().flatten().cloned().collect();
        for chunk in ids.chunks(GET_ALL_CHUNK) {
            match self.clearml.tasks(chunk, &["id", "status_message"]).await {
                Ok(docs) => {
                    for doc in docs {
                        if let Some(codes) =
                            doc.status_message.as_deref().and_then(record_from_message)
                        {
                            self.retries.records.entry(doc.id).or_insert(codes);
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot read the retry records of waiting tasks yet");
                    return;
                }
            }
        }
        self.retries.recalled = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn the_record_roundtrips_through_every_message() {
        for codes in [
            s(&["PreemptionByScheduler"]),
            s(&["Evicted", GANG_TIMEOUT, "DeletionByPodGC"]),
        ] {
            let back = back_message(&codes, "gpu [a]", "q1");
            assert_eq!(record_from_message(&back), Some(codes.clone()), "{back}");
            assert_eq!(super::super::origin_from_message(&back), Some("q1"));
            let taken = taken_message(Some(&codes), "gpu", "q2");
            assert_eq!(record_from_message(&taken), Some(codes.clone()), "{taken}");
            assert_eq!(super::super::origin_from_message(&taken), Some("q2"));
        }
        assert_eq!(taken_message(None, "gpu", "q"), pending_message("gpu", "q"));
        assert_eq!(
            taken_message(Some(&[]), "gpu", "q"),
            pending_message("gpu", "q")
        );
        for other in [
            "",
            "launching from queue gpu [q]",
            "K8S pending: pod p is unschedulable: x; launching from queue gpu [q]",
            "K8S retried after : x",
            "K8S retried after a b; x",
        ] {
            assert_eq!(record_from_message(other), None, "{other}");
        }
    }

    #[test]
    fn counts_and_backoff() {
        let codes = s(&[
            "Evicted",
            GANG_TIMEOUT,
            GANG_TIMEOUT,
            "PreemptionByScheduler",
        ]);
        assert_eq!(disruptions(&codes), 2);
        assert_eq!(gang_releases(&codes), 2);
        let t = Duration::from_secs(120);
        assert_eq!(backoff(t, 1), t);
        assert_eq!(backoff(t, 2), t * 2);
        assert_eq!(backoff(t, 3), t * 4);
        assert_eq!(backoff(t, 30), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(1), 0), Duration::from_secs(1));
    }

    #[test]
    fn pods_carry_the_record_of_their_launch() {
        let mut pods: Vec<Pod> = vec![Pod::default(), Pod::default()];
        annotate(
            &mut pods,
            record_from_message("launching from queue gpu [q]").as_deref(),
        );
        annotate(&mut pods, Some(&[]));
        assert!(pods.iter().all(|p| p.metadata.annotations.is_none()));
        let taken = taken_message(Some(&s(&["Evicted", GANG_TIMEOUT])), "gpu", "q");
        annotate(&mut pods, record_from_message(&taken).as_deref());
        let pods: Vec<Arc<Pod>> = pods.into_iter().map(Arc::new).collect();
        assert_eq!(record_from_pods(&pods), s(&["Evicted", GANG_TIMEOUT]));
        assert!(record_from_pods(&[]).is_empty());
    }
}
