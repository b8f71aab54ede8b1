//! The data path, top-down: poll → decide → render → create, then watch → decide → report.
//!
//! ```text
//!  ClearML queues ──queues.get_all (one call)──▶ schedule::decide ──tasks.enqueue(k8s_scheduler)──▶
//!  pending queue ──render::render──▶ create pods ──watch──▶ lifecycle::decide ──▶ tasks.failed / update
//! ```
//!
//! Crash safety: a task is never out of a ClearML queue until its pod runs. Taking a task is one
//! atomic `tasks.enqueue` into the pending queue (the server removes it from its own queue in the
//! same call) whose status message records the origin queue; every tick launches the pending
//! tasks that have no pod for their current launch, so a launch cut short by a crash is finished by
//! the next agent. Pod names are deterministic and a pod's `clearml.ai/launch` annotation names the
//! pending entry it serves, so a retry finds (and adopts) its own pod instead of making a second.
//! The in-pod `clearml-agent execute --require-queue` dequeues the task when it starts.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use parking_lot::RwLock;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    clearml::{self, Client, TaskDoc},
    config::{AgentConfig, PENDING_QUEUE},
    health::Health,
    k8s::{self, Created, Kube, PodStore},
    lifecycle::{self, PodState, TaskStatus, Verdict},
    metrics::{Metrics, PodLabels, QueueLabels},
    render::{self, AgentParams, QueueParams, TaskParams},
    schedule::{self, QueueWork},
};

/// `status_reason` of tasks waiting in the pending queue (the Python glue's, so the UI reads the
/// same).
pub const PENDING_REASON: &str = "k8s pending scheduler";
/// Most tasks taken per tick (bounds the size of each ClearML request).
const BATCH: usize = 500;
/// Concurrent launches within a tick.
const LAUNCH_CONCURRENCY: usize = 32;
/// How many of a failed task's pod events are copied into its ClearML log.
const EVENTS_IN_LOG: usize = 20;
/// How often task statuses are re-read to notice aborts.
const STATUS_REFRESH: Duration = Duration::from_secs(2);
/// Poll interval while there is work (tasks were taken on the last tick).
const BUSY_POLL: Duration = Duration::from_millis(100);
/// How long a created pod may stay unseen by the watch before its absence means it was deleted.
const WATCH_GRACE: Duration = Duration::from_secs(60);
/// First backoff after a tick whose pod writes failed; doubles per failing tick.
const KUBE_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Cap of that backoff.
const KUBE_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// ClearML caps `get_all` results per call.
const GET_ALL_CHUNK: usize = 500;

/// The status message a moved task carries; [`origin_from_message`] reads the queue id back.
///
/// The status message is the one record of a pending task's origin queue that survives a restart
/// before its pods exist (they carry it as a label once created), so every status message the
/// agent writes while the task waits ends with this record: see [`explain_message`].
pub fn pending_message(queue_name: &str, queue_id: &str) -> String {
    format!("{ORIGIN_PREFIX}{queue_name} [{queue_id}]")
}

const ORIGIN_PREFIX: &str = "launching from queue ";

/// The status message of a pending task whose pods wait: the reason first (what the UI shows),
/// then the origin record of [`pending_message`], kept so a restarted agent still knows it.
pub fn explain_message(reason: &str, origin: Option<(&str, &str)>) -> String {
    match origin {
        Some((name, id)) => format!("K8S pending: {reason}; {}", pending_message(name, id)),
        None => format!("K8S pending: {reason}"),
    }
}

/// The origin queue id from a message ending with a [`pending_message`] (the last one, so a
/// reason quoting the phrase cannot mislead it).
pub fn origin_from_message(message: &str) -> Option<&str> {
    let rest = &message[message.rfind(ORIGIN_PREFIX)? + ORIGIN_PREFIX.len()..];
    let start = rest.rfind('[')?;
    let id = rest[start + 1..].strip_suffix(']')?;
    (!id.is_empty()).then_some(id)
}

/// A served queue, resolved in ClearML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Queue name.
    pub name: String,
    /// Queue id.
    pub id: String,
}

/// What the last tick saw, for the control API: served queues and the head of each queue.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Served queues, in config order.
    pub served: Vec<Served>,
    /// Task ids waiting in each served queue (by queue id; at most one batch each).
    pub waiting: HashMap<String, Vec<String>>,
    /// Task ids in the pending queue.
    pub pending: Vec<String>,
    /// Pending queue id.
    pub pending_queue: String,
}

/// Shared [`Snapshot`].
pub type SharedSnapshot = Arc<RwLock<Snapshot>>;

/// Identity and dependencies of the dispatcher.
pub struct Dispatcher {
    clearml: Client,
    kube: Kube,
    pods: PodStore,
    changed: Arc<Notify>,
    cfg: AgentConfig,
    cfg_rx: watch::Receiver<Arc<AgentConfig>>,
    leader_rx: watch::Receiver<bool>,
    snapshot: SharedSnapshot,
    agent: AgentParams,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    served: Vec<Served>,
    pending_queue: String,
    /// Origin queue id of the pending tasks this process moved or launched (a restarted agent
    /// reads it from the pods' queue label, else from the status message).
    origin: HashMap<String, String>,
    /// Tasks whose pods this process created or adopted, with the launch id they serve.
    launched: HashMap<String, String>,
    /// Launched tasks whose pods the watch has not shown yet, and when they were launched: a
    /// pod the create call returned can reach the store after the next reconcile.
    unseen: HashMap<String, Instant>,
    /// Tasks whose pods this process is deleting.
    deleting: HashSet<String>,
    /// The status message ClearML holds for each task with pods, as last read (every status
    /// refresh) or written: a reason is written only when it differs, so a restart rewrites
    /// nothing.
    explained: HashMap<String, String>,
    /// Task statuses as last read (`Unknown` where the reply could not be read: a task must never
    /// look deleted because of a reply the agent could not read), and when they were read.
    statuses: HashMap<String, Confirmed>,
    statuses_read: Option<Instant>,
    projects: HashMap<String, String>,
    offset: usize,
    /// No pod writes before this (429 Retry-After, or backoff after failed writes); shared by
    /// the concurrent launches of a tick, so one 429 stops the rest of the batch at once.
    kube_pause: parking_lot::Mutex<Option<Instant>>,
    /// Consecutive ticks whose pod writes failed.
    kube_failures: u32,
}

/// Outcome of one launch attempt, applied to the dispatcher's state after the concurrent batch.
enum Launch {
    Created {
        task: String,
        launch_id: String,
        queue: String,
        origin: String,
    },
    Adopted {
        task: String,
        launch_id: String,
        origin: String,
    },
    Retry {
        task: String,
        why: String,
        retry_after: Option<Duration>,
    },
    /// Pod writes are paused; the task stays pending for a later tick.
    Paused,
    Failed {
        task: String,
        reason: String,
        category: &'static str,
    },
    Skipped,
}

impl Dispatcher {
    /// Resolves (and with `createQueues`, creates) the served queues and the pending queue, and
    /// registers the worker.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        clearml: Client,
        kube: Kube,
        pods: PodStore,
        changed: Arc<Notify>,
        cfg_rx: watch::Receiver<Arc<AgentConfig>>,
        agent: AgentParams,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        snapshot: SharedSnapshot,
        leader_rx: watch::Receiver<bool>,
    ) -> Result<Self, clearml::Error> {
        let cfg = (**cfg_rx.borrow()).clone();
        let (served, pending_queue) = resolve_queues(&clearml, &cfg).await?;
        let ids: Vec<String> = served.iter().map(|s| s.id.clone()).collect();
        clearml.register_worker(&cfg.worker_id, &ids, 600).await?;
        tracing::info!(worker = %cfg.worker_id, queues = served.len(), "registered with ClearML");
        {
            let mut snap = snapshot.write();
            snap.served = served.clone();
            snap.pending_queue = pending_queue.clone();
        }
        Ok(Self {
            clearml,
            kube,
            pods,
            changed,
            cfg,
            cfg_rx,
            leader_rx,
            snapshot,
            agent,
            metrics,
            health,
            served,
            pending_queue,
            origin: HashMap::new(),
            launched: HashMap::new(),
            unseen: HashMap::new(),
            deleting: HashSet::new(),
            explained: HashMap::new(),
            statuses: HashMap::new(),
            statuses_read: None,
            projects: HashMap::new(),
            offset: 0,
            kube_pause: parking_lot::Mutex::new(None),
            kube_failures: 0,
        })
    }

    /// Applies a new config from the ConfigMap: re-resolves (and creates) queues and re-registers.
    /// Identity settings (task namespace, worker id) need a restart and are kept.
    async fn apply_config(&mut self, new: Arc<AgentConfig>) -> Result<(), clearml::Error> {
        let mut cfg = (*new).clone();
        if cfg.task_namespace != self.cfg.task_namespace || cfg.worker_id != self.cfg.worker_id {
            tracing::warn!("taskNamespace and workerId changes take effect after a restart");
            cfg.task_namespace = self.cfg.task_namespace.clone();
            cfg.worker_id = self.cfg.worker_id.clone();
        }
        let (served, pending) = resolve_queues(&self.clearml, &cfg).await?;
        let ids: Vec<String> = served.iter().map(|s| s.id.clone()).collect();
        self.clearml
            .register_worker(&cfg.worker_id, &ids, 600)
            .await?;
        tracing::info!(queues = served.len(), "config applied");
        self.served = served;
        self.pending_queue = pending;
        self.agent.default_image = cfg.values.agentk8sglue.default_image.clone();
        self.cfg = cfg;
        let mut snap = self.snapshot.write();
        snap.served = self.served.clone();
        snap.pending_queue = self.pending_queue.clone();
        Ok(())
    }

    /// Pod writes are paused (the API server asked us to wait, or writes keep failing).
    fn paused(&self) -> bool {
        self.kube_pause.lock().is_some_and(|t| Instant::now() < t)
    }

    /// Pauses pod writes for at least `wait`.
    fn pause_writes(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut slot = self.kube_pause.lock();
        if slot.is_none_or(|t| t < until) {
            *slot = Some(until);
        }
    }

    /// Ids of the served queues.
    pub fn queue_ids(&self) -> Vec<String> {
        self.served.iter().map(|s| s.id.clone()).collect()
    }

    /// Runs until `shutdown`: a tick finishes its launches before the loop ends (drain).
    pub async fn run(mut self, shutdown: CancellationToken) {
        if tokio::select! {
            biased;
            _ = shutdown.cancelled() => true,
            r = self.pods.wait_until_ready() => r.is_err(),
        } {
            return;
        }
        self.health.set_ready(true);
        tracing::info!(
            pods = self.pods.state().len(),
            "pod cache warm; dispatching"
        );
        let mut next_poll = Instant::now();
        loop {
            // Side effects only while holding the lease; a follower keeps its caches warm.
            if !*self.leader_rx.borrow_and_update() {
                tracing::info!("not the leader; waiting for the lease");
                self.launched.clear();
                self.origin.clear();
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    r = self.leader_rx.changed() => if r.is_err() { break },
                }
                if *self.leader_rx.borrow() {
                    tracing::info!("acquired the lease; dispatching");
                    next_poll = Instant::now();
                }
                continue;
            }
            if self.cfg_rx.has_changed().unwrap_or(false) {
                let new = self.cfg_rx.borrow_and_update().clone();
                if let Err(error) = self.apply_config(new).await {
                    tracing::warn!(%error, "cannot apply the new config yet; retrying");
                    self.cfg_rx.mark_changed();
                }
                next_poll = Instant::now();
            }
            let now = Instant::now();
            if now >= next_poll {
                let busy = match self.tick().await {
                    Ok(n) => {
                        self.health.set_last_error(None);
                        n > 0
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatch tick failed");
                        self.health.set_last_error(Some(e.to_string()));
                        false
                    }
                };
                next_poll = Instant::now()
                    + if busy {
                        BUSY_POLL
                    } else {
                        self.cfg.poll_interval
                    };
            }
            self.reconcile().await;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.changed.notified() => {}
                r = self.leader_rx.changed() => if r.is_err() {
                    tracing::error!("leader election stopped; no longer dispatching");
                    break;
                },
                // NB: changed() marks the version seen; mark it again for the check at the top
                _ = self.cfg_rx.changed() => self.cfg_rx.mark_changed(),
                _ = tokio::time::sleep_until(next_poll.min(Instant::now() + STATUS_REFRESH).into()) => {}
            }
        }
        self.health.set_ready(false);
        if *self.leader_rx.borrow()
            && let Err(error) = self.clearml.unregister_worker(&self.cfg.worker_id).await
        {
            tracing::warn!(%error, "cannot unregister the worker");
        }
        tracing::info!("dispatcher stopped");
    }

    /// Pods of the store grouped by task id.
    fn pods_by_task(&self) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut out: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in self.pods.state() {
            if let Some(task) = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(render::LABEL_TASK_ID))
            {
                out.entry(task.clone()).or_default().push(pod.clone());
            }
        }
        out
    }

    /// One dispatch pass; returns how many tasks were taken from served queues.
    async fn tick(&mut self) -> Result<usize, clearml::Error> {
        if self.paused() {
            return Ok(0); // pod writes paused: take nothing we could not launch
        }
        let mut ids = self.queue_ids();
        ids.push(self.pending_queue.clone());
        let docs = self.clearml.queue_entries(&ids, BATCH).await?;
        let by_task = self.pods_by_task();
        self.update_pod_gauges(&by_task);

        // live pods per queue id, plus pending tasks without a pod yet (in flight)
        let mut used: HashMap<String, usize> = HashMap::new();
        for pods in by_task.values() {
            for pod in pods {
                if !lifecycle::classify(pod).is_finished()
                    && let Some(q) = pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(render::LABEL_QUEUE_ID))
                {
                    *used.entry(q.clone()).or_default() += 1;
                }
            }
        }
        let pending = docs.iter().find(|d| d.id == self.pending_queue);
        let entries = pending.map(|d| d.entries.as_slice()).unwrap_or_default();
        // origins are kept while a task is pending or launched
        self.origin
            .retain(|t, _| self.launched.contains_key(t) || entries.iter().any(|e| e.task == *t));
        let mut to_launch: Vec<(String, String)> = Vec::new(); // (task, launch id)
        for entry in entries {
            let launch_id = entry.added.clone().unwrap_or_default();
            let pods = by_task
                .get(&entry.task)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let current = pods
                .iter()
                .any(|p| launch_of(p) == Some(launch_id.as_str()));
            if pods.is_empty()
                && let Some(origin) = self.origin.get(&entry.task)
            {
                *used.entry(origin.clone()).or_default() += 1; // in flight, no pod counted yet
            }
            if self.launched.get(&entry.task) == Some(&launch_id) {
                continue;
            }
            // Pods of this launch but not known as launched (a restart, or a launch cut short
            // between ranks): launch again, which adopts the existing pods and creates the rest.
            if !current && !pods.is_empty() {
                // Pods of an earlier run of this task (re-enqueued): remove them first.
                self.delete_task_pods(&entry.task, pods, true).await;
                continue;
            }
            to_launch.push((entry.task.clone(), launch_id));
        }

        // decide
        let waiting: Vec<Vec<String>> = self
            .served
            .iter()
            .map(|s| {
                docs.iter()
                    .find(|d| d.id == s.id)
                    .map(|d| d.entries.iter().map(|e| e.task.clone()).collect())
                    .unwrap_or_default()
            })
            .collect();
        let work: Vec<QueueWork<'_>> = self
            .served
            .iter()
            .zip(&waiting)
            .map(|(s, w)| QueueWork {
                waiting: w,
                free: self
                    .cfg
                    .queues
                    .get(&s.name)
                    .and_then(|q| q.settings.max_pods)
                    .map(|m| (m as usize).saturating_sub(used.get(&s.id).copied().unwrap_or(0))),
            })
            .collect();
        {
            let mut snap = self.snapshot.write();
            snap.waiting = self
                .served
                .iter()
                .zip(&waiting)
                .map(|(s, w)| (s.id.clone(), w.clone()))
                .collect();
            snap.pending = pending
                .map(|d| d.entries.iter().map(|e| e.task.clone()).collect())
                .unwrap_or_default();
        }
        let picks = schedule::decide(&work, BATCH.saturating_sub(to_launch.len()), self.offset);
        self.offset = self.offset.wrapping_add(1);

        // move the picks into the pending queue (atomic per task)
        let moved = stream::iter(picks)
            .map(|(qi, task)| {
                let s = &self.served[qi];
                let clearml = &self.clearml;
                let pending = &self.pending_queue;
                async move {
                    let r = clearml
                        .enqueue(
                            &task,
                            pending,
                            PENDING_REASON,
                            &pending_message(&s.name, &s.id),
                        )
                        .await;
                    (task, s.id.clone(), r)
                }
            })
            .buffer_unordered(LAUNCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut taken = 0;
        for (task, queue, result) in moved {
            match result {
                Ok(()) => {
                    taken += 1;
                    self.origin.insert(task.clone(), queue);
                }
                Err(e) => {
                    tracing::warn!(%task, error = %e, "cannot move task to the pending queue; it stays in its queue");
                }
            }
        }
        // launch what is pending: the tasks just moved get their entry's id on the next read, so
        // read the pending queue's entries again only when something was moved
        if taken > 0 {
            let again = self
                .clearml
                .queue_entries(std::slice::from_ref(&self.pending_queue), BATCH)
                .await?;
            let known: HashSet<String> = to_launch.iter().map(|(t, _)| t.clone()).collect();
            for entry in again.iter().flat_map(|d| d.entries.iter()) {
                if !known.contains(&entry.task)
                    && !self.launched.contains_key(&entry.task)
                    && !by_task.contains_key(&entry.task)
                {
                    to_launch.push((entry.task.clone(), entry.added.clone().unwrap_or_default()));
                }
            }
        }
        self.launch(to_launch).await?;
        Ok(taken)
    }

    /// Renders and creates the pods of pending tasks.
    async fn launch(&mut self, tasks: Vec<(String, String)>) -> Result<(), clearml::Error> {
        if tasks.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = tasks.iter().map(|(t, _)| t.clone()).collect();
        let mut docs: HashMap<String, TaskDoc> = HashMap::new();
        let mut unread: HashSet<String> = HashSet::new();
        let fields = [
            "id",
            "name",
            "project",
            "status",
            "status_message",
            "container",
            "execution.queue",
            "hyperparams.properties",
        ];
        for chunk in ids.chunks(GET_ALL_CHUNK) {
            match self.clearml.tasks(chunk, &fields).await {
                Ok(found) => docs.extend(found.into_iter().map(|d| (d.id.clone(), d))),
                // A reply that cannot be read as a whole: read the tasks one by one, so one
                // bad document holds back only its own task.
                Err(clearml::Error::Decode { .. }) if chunk.len() > 1 => {
                    for task in chunk {
                        match self
                            .clearml
                            .tasks(std::slice::from_ref(task), &fields)
                            .await
                        {
                            Ok(found) => docs.extend(found.into_iter().map(|d| (d.id.clone(), d))),
                            Err(error) => {
                                tracing::warn!(%task, %error, "cannot read the pending task; it stays pending");
                                unread.insert(task.clone());
                            }
                        }
                    }
                }
                Err(clearml::Error::Decode { .. }) => {
                    unread.extend(chunk.iter().cloned());
                }
                Err(e) => return Err(e),
            }
        }
        self.resolve_projects(docs.values()).await;

        let mut by_task = self.pods_by_task();
        let this = &*self;
        let outcomes = stream::iter(tasks)
            .filter(|(task, _)| std::future::ready(!unread.contains(task)))
            .map(|(task, launch_id)| {
                let doc = docs.get(&task).cloned();
                // the pods this launch already has (a restart, or a launch cut short)
                let existing: Vec<Arc<Pod>> = by_task
                    .remove(&task)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| launch_of(p) == Some(launch_id.as_str()))
                    .collect();
                async move { this.launch_one(task, launch_id, doc, existing).await }
            })
            .buffer_unordered(LAUNCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut logs = Vec::new();
        let (mut write_failures, mut writes_ok, mut asked_wait) = (0u32, 0u32, Duration::ZERO);
        for outcome in outcomes {
            match outcome {
                Launch::Created {
                    task,
                    launch_id,
                    queue,
                    origin,
                } => {
                    writes_ok += 1;
                    self.metrics
                        .tasks_dispatched
                        .get_or_create(&QueueLabels {
                            queue: queue.clone(),
                        })
                        .inc();
                    logs.push((
                        task.clone(),
                        "INFO",
                        format!(
                            "k8s agent {}: pod created from queue {queue}",
                            self.cfg.worker_id
                        ),
                    ));
                    self.origin.insert(task.clone(), origin);
                    self.unseen.insert(task.clone(), Instant::now());
                    self.launched.insert(task, launch_id);
                }
                Launch::Adopted {
                    task,
                    launch_id,
                    origin,
                } => {
                    self.origin.insert(task.clone(), origin);
                    self.unseen.insert(task.clone(), Instant::now());
                    self.launched.insert(task, launch_id);
                }
                Launch::Retry {
                    task,
                    why,
                    retry_after,
                } => {
                    tracing::info!(%task, %why, "launch deferred");
                    write_failures += 1;
                    if let Some(wait) = retry_after {
                        asked_wait = asked_wait.max(wait);
                    }
                }
                Launch::Failed {
                    task,
                    reason,
                    category,
                } => {
                    self.metrics.task_failed(category);
                    self.fail(&task, &reason).await;
                    logs.push((task, "ERROR", reason));
                }
                Launch::Skipped | Launch::Paused => {}
            }
        }
        // Back off pod writes: as long as the API server asked (429 Retry-After), and
        // exponentially while writes keep failing, so a struggling API server is not hammered.
        // A tick whose writes all failed doubles the pause; one with successes resets it.
        if write_failures > 0 && writes_ok == 0 {
            self.kube_failures = self.kube_failures.saturating_add(1);
        } else {
            self.kube_failures = 0;
        }
        let backoff = match self.kube_failures {
            0 => Duration::ZERO,
            n => KUBE_BACKOFF_BASE
                .saturating_mul(1 << n.min(7))
                .min(KUBE_BACKOFF_MAX),
        };
        let wait = asked_wait.max(backoff);
        if !wait.is_zero() {
            tracing::info!(failures = write_failures, ?wait, "pausing pod creation");
            self.pause_writes(wait);
        }
        if let Err(error) = self.clearml.log_events(&self.cfg.worker_id, &logs).await {
            tracing::debug!(%error, "cannot write task log lines");
        }
        Ok(())
    }

    /// Launches one pending task: renders its pods and creates those of `existing` (the pods of
    /// this launch already in the cache) lacks, so adopting a complete launch writes nothing.
    async fn launch_one(
        &self,
        task: String,
        launch_id: String,
        doc: Option<TaskDoc>,
        existing: Vec<Arc<Pod>>,
    ) -> Launch {
        let Some(doc) = doc else {
            // deleted in ClearML: drop its entry
            let _ = self
                .clearml
                .remove_from_queue(&self.pending_queue, &task)
                .await;
            return Launch::Skipped;
        };
        if let Some(why) = &doc.unreadable
            && doc.status.as_deref().is_none_or(|s| s == "queued")
        {
            return Launch::Failed {
                task,
                reason: format!(
                    "k8s agent: cannot read this task's document from ClearML ({why}); fix the task and enqueue it again"
                ),
                category: "UnreadableTask",
            };
        }
        if doc.status.as_deref() != Some("queued") {
            tracing::info!(%task, status = ?doc.status, "pending task is no longer queued; not launching");
            let _ = self
                .clearml
                .remove_from_queue(&self.pending_queue, &task)
                .await;
            return Launch::Skipped;
        }
        // The origin queue: this process's memory, else the pods' label (they carry it from
        // creation), else the status message (every message written while pending ends with it).
        let origin = self
            .origin
            .get(&task)
            .cloned()
            .or_else(|| {
                existing
                    .iter()
                    .find_map(|p| p.metadata.labels.as_ref()?.get(render::LABEL_QUEUE_ID))
                    .cloned()
            })
            .or_else(|| {
                doc.status_message
                    .as_deref()
                    .and_then(origin_from_message)
                    .map(str::to_string)
            });
        let Some(origin) = origin else {
            return Launch::Failed {
                task,
                reason: "k8s agent: cannot tell which queue this pending task came from (its status message was overwritten and it has no pods); enqueue it again".into(),
                category: "LostOrigin",
            };
        };
        let Some(served) = self.served.iter().find(|s| s.id == origin) else {
            // the queue is no longer served: give the task back to it, in front
            let _ = self.clearml.enqueue(&task, &origin, "", "").await;
            return Launch::Skipped;
        };
        let Some(qcfg) = self.cfg.queues.get(&served.name) else {
            return Launch::Skipped;
        };
        let container = doc.container.clone().unwrap_or_default();
        let project = doc.project.clone().unwrap_or_default();
        let params = TaskParams {
            id: task.clone(),
            name: doc.name.clone().unwrap_or_default(),
            project: self.projects.get(&project).cloned().unwrap_or(project),
            image: container.image.unwrap_or_default(),
            arguments: container.arguments.unwrap_or_default(),
            setup_shell_script: container.setup_shell_script.unwrap_or_default(),
            launch_id: launch_id.clone(),
        };
        // A task's own multi-node request (user properties) overrides the queue's multiNode.
        let mut settings = qcfg.settings.clone();
        match render::multi_node_request(doc.hyperparams.as_ref()) {
            Ok(Some(nodes)) => settings.multi_node = Some(nodes),
            Ok(None) => {}
            Err(e) => {
                return Launch::Failed {
                    task,
                    reason: format!("k8s agent: {e}"),
                    category: "Render",
                };
            }
        }
        let queue = QueueParams {
            name: &served.name,
            id: &served.id,
            template: &qcfg.template,
            settings: &settings,
        };
        let rendered = match render::render(&self.agent, &queue, &params) {
            Ok(r) => r,
            Err(e) => {
                return Launch::Failed {
                    task,
                    reason: format!("k8s agent: {e}"),
                    category: "Render",
                };
            }
        };
        let missing: Vec<&Pod> = rendered
            .pods
            .iter()
            .filter(|pod| {
                !existing
                    .iter()
                    .any(|e| e.metadata.name == pod.metadata.name)
            })
            .collect();
        if missing.is_empty() {
            return Launch::Adopted {
                task,
                launch_id,
                origin,
            };
        }
        for w in &rendered.warnings {
            tracing::info!(%task, warning = %w, "task container argument ignored");
        }
        if let Some(svc) = &rendered.service
            && let Err(e) = self.kube.create_service(svc).await
        {
            return if e.is_permanent() {
                Launch::Failed {
                    task,
                    reason: format!("k8s agent: {e}"),
                    category: "Create",
                }
            } else {
                Launch::Retry {
                    task,
                    retry_after: e.retry_after(),
                    why: e.to_string(),
                }
            };
        }
        let mut adopted = true;
        for pod in missing {
            if self.paused() {
                return Launch::Paused;
            }
            let started = Instant::now();
            let result = self.kube.create_pod(pod).await;
            self.metrics
                .kube_latency
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(Created::New) => adopted = false,
                Ok(Created::Exists(existing)) => {
                    let same_task = existing
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(render::LABEL_TASK_ID))
                        .is_some_and(|t| *t == task);
                    if !same_task {
                        return Launch::Failed {
                            task,
                            reason: format!(
                                "k8s agent: a pod named {} already exists and belongs to something else",
                                existing.metadata.name.clone().unwrap_or_default()
                            ),
                            category: "NameTaken",
                        };
                    }
                    if launch_of(&existing) != Some(launch_id.as_str()) {
                        // left from an earlier run: removed by the next tick, then launched
                        return Launch::Retry {
                            task,
                            why: "a pod of an earlier run still exists".into(),
                            retry_after: None,
                        };
                    }
                }
                Err(e) if e.is_permanent() => {
                    return Launch::Failed {
                        task,
                        reason: format!("k8s agent: the pod was refused: {}", e.message()),
                        category: "Create",
                    };
                }
                Err(e) => {
                    if let Some(wait) = e.retry_after() {
                        self.pause_writes(wait); // stops the rest of this batch too
                    }
                    return Launch::Retry {
                        task,
                        retry_after: e.retry_after(),
                        why: e.to_string(),
                    };
                }
            }
        }
        if adopted {
            Launch::Adopted {
                task,
                launch_id,
                origin,
            }
        } else {
            Launch::Created {
                task,
                launch_id,
                queue: served.name.clone(),
                origin,
            }
        }
    }

    async fn resolve_projects<'a>(&mut self, docs: impl Iterator<Item = &'a TaskDoc>) {
        let unknown: Vec<String> = docs
            .filter_map(|d| d.project.clone())
            .filter(|p| !p.is_empty() && !self.projects.contains_key(p))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if unknown.is_empty() {
            return;
        }
        let body = json!({"id": unknown, "only_fields": ["id", "name"], "search_hidden": true});
        match self.clearml.call_value("projects.get_all", &body).await {
            Ok(data) => {
                for p in data
                    .get("projects")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let (Some(id), Some(name)) = (
                        p.get("id").and_then(|v| v.as_str()),
                        p.get("name").and_then(|v| v.as_str()),
                    ) {
                        self.projects.insert(id.to_string(), name.to_string());
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "cannot resolve project names"),
        }
    }

    /// Removes a task from the pending queue and fails it; its live pods are deleted (finished
    /// ones are kept for their TTL).
    async fn fail(&mut self, task: &str, reason: &str) {
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
        self.statuses
            .insert(task.to_string(), Confirmed::Known("failed".into()));
        let by_task = self.pods_by_task();
        if let Some(pods) = by_task.get(task) {
            self.delete_task_pods(task, pods, false).await;
        }
        self.launched.remove(task);
    }

    /// Deletes a task's pods (`all`: finished ones too) and its rendezvous Service.
    async fn delete_task_pods(&mut self, task: &str, pods: &[Arc<Pod>], all: bool) {
        self.deleting.insert(task.to_string());
        let mut multi = false;
        for pod in pods {
            let state = lifecycle::classify(pod);
            multi |= pod
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(render::LABEL_RANK));
            if state == PodState::Terminating || (!all && state.is_finished()) {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Err(error) = self.kube.delete_pod(&name).await {
                tracing::warn!(%task, pod = %name, %error, "cannot delete pod");
            }
        }
        if multi
            && all
            && let Err(error) = self
                .kube
                .delete_service(&render::pod_name(task, None))
                .await
        {
            tracing::warn!(%task, %error, "cannot delete rendezvous service");
        }
    }

    /// The statuses of one chunk of tasks as ClearML has them now: a task absent from the reply is
    /// `Missing`, one whose document could not be read `Unknown`. The status messages read
    /// refresh [`Self::explained`].
    async fn read_statuses(
        &mut self,
        chunk: &[String],
    ) -> Result<HashMap<String, Confirmed>, clearml::Error> {
        let docs = self
            .clearml
            .tasks(chunk, &["id", "status", "status_message"])
            .await?;
        let mut read: HashMap<String, Confirmed> = chunk
            .iter()
            .map(|t| (t.clone(), Confirmed::Missing))
            .collect();
        for d in docs {
            let status = match (d.status, d.unreadable) {
                (Some(s), None) => Confirmed::Known(s),
                _ => Confirmed::Unknown,
            };
            if let Some(message) = d.status_message {
                self.explained.insert(d.id.clone(), message);
            }
            read.insert(d.id, status);
        }
        Ok(read)
    }

    /// Reads the ClearML status of `tasks` if the cached copy is stale.
    async fn refresh_statuses(&mut self, tasks: &[String]) -> bool {
        if self
            .statuses_read
            .is_some_and(|t| t.elapsed() < STATUS_REFRESH)
        {
            return true;
        }
        let mut fresh = HashMap::new();
        for chunk in tasks.chunks(GET_ALL_CHUNK) {
            match self.read_statuses(chunk).await {
                Ok(read) => fresh.extend(read),
                Err(error) => {
                    tracing::warn!(%error, "cannot read task statuses");
                    return false;
                }
            }
        }
        self.statuses = fresh;
        self.statuses_read = Some(Instant::now());
        true
    }

    /// Fresh statuses of `tasks` (read in chunks, bypassing the cache; statuses read update it).
    async fn confirm_statuses(&mut self, tasks: &[String]) -> HashMap<String, Confirmed> {
        let mut fresh = HashMap::new();
        for chunk in tasks.chunks(GET_ALL_CHUNK) {
            match self.read_statuses(chunk).await {
                Ok(read) => {
                    for (task, status) in read {
                        if matches!(status, Confirmed::Known(_)) {
                            self.statuses.insert(task.clone(), status.clone());
                        }
                        fresh.insert(task, status);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot confirm task statuses");
                    fresh.extend(chunk.iter().map(|t| (t.clone(), Confirmed::Unknown)));
                }
            }
        }
        fresh
    }

    /// Applies the lifecycle verdict of every task with pods, and notices pods deleted by others.
    async fn reconcile(&mut self) {
        let by_task = self.pods_by_task();
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
        let known = self.refresh_statuses(&ids).await;
        let now = Timestamp::now();
        let mut verdicts: Vec<(&String, &Vec<Arc<Pod>>, Verdict)> = by_task
            .iter()
            .map(|(task, pods)| {
                let status = match self.statuses.get(task) {
                    _ if !known => TaskStatus::Unknown,
                    Some(s) => s.as_task_status(),
                    None => TaskStatus::Missing,
                };
                let verdict = decide_pods(pods, status, now, &self.cfg.timeouts);
                (task, pods, verdict)
            })
            .collect();
        // NB: a cached status may be up to STATUS_REFRESH old (a task may have just completed);
        // confirm with a fresh read before anything destructive, one batched read for all.
        let doubtful: Vec<String> = verdicts
            .iter()
            .filter(|(_, _, v)| matches!(v, Verdict::Fail(_) | Verdict::Withdraw(_)))
            .map(|(t, _, _)| (*t).clone())
            .collect();
        if !doubtful.is_empty() {
            let fresh = self.confirm_statuses(&doubtful).await;
            for (task, pods, verdict) in &mut verdicts {
                if let Some(status) = fresh.get(*task) {
                    *verdict = decide_pods(pods, status.as_task_status(), now, &self.cfg.timeouts);
                }
            }
        }
        for (task, pods, verdict) in verdicts {
            match verdict {
                Verdict::Wait => {}
                Verdict::Explain(msg) => {
                    // the origin record stays in the message (see `pending_message`)
                    let origin = pods.iter().find_map(|p| {
                        let id = p.metadata.labels.as_ref()?.get(render::LABEL_QUEUE_ID)?;
                        let name = p
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(render::ANNOTATION_QUEUE_NAME))
                            .map_or("", String::as_str);
                        Some((name, id.as_str()))
                    });
                    let text = explain_message(&msg, origin);
                    if self.explained.get(task) != Some(&text) {
                        match self.clearml.set_status_message(task, &text).await {
                            Ok(()) => {
                                self.explained.insert(task.clone(), text);
                            }
                            Err(error) => {
                                tracing::warn!(%task, %error, "cannot write pending reason")
                            }
                        }
                    }
                }
                Verdict::Fail(reason) => {
                    self.metrics.task_failed(category_of(&reason));
                    let reason = format!("k8s agent: {reason}");
                    // the evidence goes to the task's log before anything is deleted: the
                    // pods' events (scheduler and kubelet), then the verdict
                    let names: Vec<String> = pods
                        .iter()
                        .filter_map(|p| p.metadata.name.clone())
                        .collect();
                    let mut lines: Vec<(String, &str, String)> =
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
                        };
                    lines.push((task.clone(), "ERROR", reason.clone()));
                    let _ = self.clearml.log_events(&self.cfg.worker_id, &lines).await;
                    self.fail(task, &reason).await;
                }
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
            self.confirm_statuses(&vanished).await
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
        self.explained.retain(|t, _| by_task.contains_key(t));
        self.unseen.retain(|t, _| self.launched.contains_key(t));
    }

    fn update_pod_gauges(&self, by_task: &BTreeMap<String, Vec<Arc<Pod>>>) {
        self.metrics.pods.clear();
        for pod in by_task.values().flatten() {
            let queue = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(render::ANNOTATION_QUEUE_NAME))
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

/// The launch id a pod serves.
/// A task's status as read, owned (see [`TaskStatus`]).
#[derive(Debug, Clone, PartialEq)]
enum Confirmed {
    Known(String),
    Missing,
    Unknown,
}

impl Confirmed {
    fn as_task_status(&self) -> TaskStatus<'_> {
        match self {
            Confirmed::Known(s) => TaskStatus::Known(s),
            Confirmed::Missing => TaskStatus::Missing,
            Confirmed::Unknown => TaskStatus::Unknown,
        }
    }
}

/// The lifecycle verdict for a task's pods.
fn decide_pods(
    pods: &[Arc<Pod>],
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
    lifecycle::decide(&states, status, now, timeouts)
}

fn launch_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(render::ANNOTATION_LAUNCH)
        .map(String::as_str)
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
        ("failed:", "PodFailed"),
    ] {
        if reason.contains(needle) {
            return category;
        }
    }
    "Other"
}

/// Resolves the configured queues (creating missing ones with `createQueues`) and the pending
/// queue (always created when missing, hidden with the `k8s-glue` system tag).
async fn resolve_queues(
    clearml: &Client,
    cfg: &AgentConfig,
) -> Result<(Vec<Served>, String), clearml::Error> {
    let mut names: Vec<String> = cfg.queues.keys().cloned().collect();
    names.push(PENDING_QUEUE.to_string());
    let found = clearml.queues_by_name(&names).await?;
    let mut by_name: HashMap<String, String> = found.into_iter().map(|q| (q.name, q.id)).collect();
    if !by_name.contains_key(PENDING_QUEUE) {
        let id = create_queue(clearml, PENDING_QUEUE, &["k8s-glue"]).await?;
        by_name.insert(PENDING_QUEUE.to_string(), id);
    }
    let mut served = Vec::new();
    for name in cfg.queues.keys() {
        match by_name.get(name) {
            Some(id) => served.push(Served {
                name: name.clone(),
                id: id.clone(),
            }),
            None if cfg.create_queues => {
                let id = create_queue(clearml, name, &[]).await?;
                tracing::info!(queue = %name, %id, "created ClearML queue");
                served.push(Served {
                    name: name.clone(),
                    id,
                });
            }
            None => {
                tracing::warn!(queue = %name, "queue does not exist in ClearML and createQueues is off; not served")
            }
        }
    }
    let pending = by_name.get(PENDING_QUEUE).cloned().unwrap_or_default();
    Ok((served, pending))
}

/// Creates a queue, or reads back the id of one created concurrently.
pub async fn create_queue(
    clearml: &Client,
    name: &str,
    tags: &[&str],
) -> Result<String, clearml::Error> {
    match clearml.create_queue(name, tags).await {
        Ok(id) => Ok(id),
        // created concurrently by someone else: read it back
        Err(e) if e.is_api(400, clearml::subcode::NOT_UNIQUE) => {
            let found = clearml.queues_by_name(&[name.to_string()]).await?;
            found.into_iter().next().map(|q| q.id).ok_or(e)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_roundtrips_through_the_status_message() {
        for (name, id) in [("red", "abc123"), ("my [weird] queue", "f00")] {
            assert_eq!(origin_from_message(&pending_message(name, id)), Some(id));
        }
        assert_eq!(origin_from_message("K8S pending: x"), None);
        assert_eq!(origin_from_message(""), None);
        assert_eq!(origin_from_message("launching from queue red []"), None);
    }

    /// A pending reason never overwrites the origin record (a restarted agent reads it back),
    /// whatever the reason says, even when it quotes the record's own words.
    #[test]
    fn pending_reasons_keep_the_origin_record() {
        let cases = [
            (
                "pod clearml-id-t is unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                ("gpu", "q1"),
            ),
            ("pod p is waiting: ContainerCreating", ("a [b]", "q2")),
            ("launching from queue evil [zzz]", ("red", "q3")),
            ("", ("red", "q4")),
        ];
        for (reason, (name, id)) in cases {
            let message = explain_message(reason, Some((name, id)));
            assert!(message.starts_with("K8S pending: "), "{message}");
            assert!(message.contains(reason), "{message}");
            assert_eq!(origin_from_message(&message), Some(id), "{message}");
        }
        assert_eq!(origin_from_message(&explain_message("x", None)), None);
    }

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
    }
}
