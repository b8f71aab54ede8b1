//! Launching pending tasks: read their documents (one batched `tasks.get_all`), render their pods
//! from the origin queue's template and create the pods the launch still lacks (adopting those it
//! has; a multi-node task's rendezvous Service right after rank 0, owned by it), behind a write gate that pauses every pod write for a 429's `Retry-After` and backs off
//! while a tick's writes all fail.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, Service};

use clearml_agent_core::{
    contract,
    render::{self, QueueParams},
};

use crate::{
    clearml::{self, TakeProtocol, TaskDoc},
    k8s::{self, Created, Ensured, launch_of},
    metrics::QueueLabels,
};

use super::{Dispatcher, GET_ALL_CHUNK, origin_from_message, retry};

/// Concurrent launches (and moves) within a tick.
pub(super) const LAUNCH_CONCURRENCY: usize = 32;

/// Outcome of one launch attempt, applied to the dispatcher's state after the concurrent batch.
pub(super) enum Launch {
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

impl Launch {
    /// A launch that got every object it needs: `adopted` if none had to be created.
    pub(super) fn done(
        adopted: bool,
        task: String,
        launch_id: String,
        queue: &str,
        origin: String,
    ) -> Self {
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
                queue: queue.to_string(),
                origin,
            }
        }
    }
}

impl Dispatcher {
    /// Renders and creates the pods of pending tasks.
    pub(super) async fn launch(
        &mut self,
        tasks: Vec<(String, String)>,
    ) -> Result<(), clearml::Error> {
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
            "user",
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

        let mut by_task = k8s::pods_by_task(&self.pods);
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
                    self.retries.launched(&task);
                    self.statuses.mark_active(&task);
                    self.launched.insert(task, launch_id);
                }
                Launch::Adopted {
                    task,
                    launch_id,
                    origin,
                } => {
                    self.origin.insert(task.clone(), origin);
                    self.unseen.insert(task.clone(), Instant::now());
                    self.statuses.mark_active(&task);
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
        let wait = self.gate.after_tick(write_failures, writes_ok, asked_wait);
        if !wait.is_zero() {
            tracing::info!(failures = write_failures, ?wait, "pausing pod creation");
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
                    .find_map(|p| p.metadata.labels.as_ref()?.get(contract::LABEL_QUEUE_ID))
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
            self.give_back(&task, &origin, &doc).await;
            return Launch::Skipped;
        };
        let Some(qcfg) = self.cfg.queues.get(&served.name) else {
            return Launch::Skipped;
        };
        let params = doc.render_params(&launch_id, &self.projects);
        // A task's own multi-node request (user properties) overrides the queue's multiNode.
        // (unless `multiNode.enabled: false`)
        let mut settings = qcfg.settings.clone();
        let request = match self.cfg.multi_node {
            true => render::multi_node_request(doc.hyperparams.as_ref()),
            false => Ok(None),
        };
        match request {
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
        // the retries so far (the take's message carries them) stay with the task on its pods
        let record = doc
            .status_message
            .as_deref()
            .and_then(retry::record_from_message)
            .or_else(|| self.retries.record(&task));
        if render::job::is_job_mode(&queue) {
            // One attempt at a time: a Job's pods have the controller's random names, so pods of
            // an earlier launch (a released gang's, say, whose Job is gone while the garbage
            // collector still stops them) must be gone before this launch's Job makes new ones.
            let stale: Vec<&Arc<Pod>> = existing
                .iter()
                .filter(|p| launch_of(p) != Some(launch_id.as_str()))
                .collect();
            if !stale.is_empty() {
                for pod in stale {
                    if pod.metadata.deletion_timestamp.is_none()
                        && let Some(name) = &pod.metadata.name
                        && let Err(error) = self.kube.delete_pod(name).await
                    {
                        tracing::warn!(%task, pod = %name, %error, "cannot delete a pod of an earlier run");
                    }
                }
                return Launch::Retry {
                    task,
                    why: "pods of an earlier run are still stopping".into(),
                    retry_after: None,
                };
            }
            return self
                .launch_job(task, launch_id, origin, &queue, record.as_deref(), &params)
                .await;
        }
        let mut rendered = match render::render(&self.agent, &queue, &params) {
            Ok(r) => r,
            Err(e) => {
                return Launch::Failed {
                    task,
                    reason: format!("k8s agent: {e}"),
                    category: "Render",
                };
            }
        };
        retry::annotate(&mut rendered.pods, record.as_deref());
        // through Kueue: its queue-name label, and the ranks one pod group of this launch
        if let Some(kueue) = &settings.kueue {
            clearml_agent_core::kueue::submit(
                &mut rendered.pods,
                &kueue.local_queue,
                &render::pod_name(&task, None),
                &launch_id,
            );
        }
        // the native gang path: the ranks join this launch's PodGroup (created once they exist)
        let group = match self.pod_group_for(&task, &launch_id, &queue, rendered.pods.len()) {
            Ok(group) => group,
            Err(outcome) => return outcome,
        };
        if let Some(group) = &group {
            clearml_agent_core::gang::join(&mut rendered.pods, &group.name);
        }
        if rendered.service.is_none()
            && rendered.pods.iter().all(|pod| {
                existing
                    .iter()
                    .any(|e| e.metadata.name == pod.metadata.name)
            })
        {
            return Launch::Adopted {
                task,
                launch_id,
                origin,
            };
        }
        for w in &rendered.warnings {
            tracing::info!(%task, warning = %w, "task container argument ignored");
        }
        // the Secrets the pods mount (fileMounts) exist before the pods
        for secret in &rendered.secrets {
            if let Err(outcome) = self.ensure_secret(&task, secret).await {
                return outcome;
            }
        }
        // Rank 0 first (render lists the pods by rank), then the rendezvous Service owned by it
        // (the cluster deletes it with rank 0 should the agent not), then the other ranks. A retry
        // of a launch cut short adopts what exists and creates the rest in the same order.
        let mut adopted = true;
        let mut owners = Vec::new();
        for (i, pod) in rendered.pods.iter().enumerate() {
            let had = existing
                .iter()
                .find(|e| e.metadata.name == pod.metadata.name);
            let created = match had {
                Some(_) => None,
                None => match self.create_pod(&task, &launch_id, pod).await {
                    Ok(created) => {
                        adopted = false;
                        Some(created)
                    }
                    Err(outcome) => return outcome,
                },
            };
            if let Some(p) = created.as_ref().or(had.map(|p| p.as_ref()))
                && let (Some(name), Some(uid)) = (&p.metadata.name, &p.metadata.uid)
            {
                owners.push(clearml_agent_core::gang::owner("v1", "Pod", name, uid));
            }
            if i == 0
                && let Some(svc) = &rendered.service
                && let Some(rank0) = created.as_ref().or(had.map(|p| p.as_ref()))
                && let Err(outcome) = self.ensure_service(&task, svc, rank0, had.is_some()).await
            {
                return outcome;
            }
        }
        // every rank exists: their PodGroup lets the scheduler bind them (all or none)
        if let Some(group) = &group
            && let Err(outcome) = self
                .ensure_pod_group(&task, group, rendered.pods.len(), owners)
                .await
        {
            return outcome;
        }
        Launch::done(adopted, task, launch_id, &served.name, origin)
    }

    /// Creates one pod of a launch; returns it as the API server holds it (created now, or the
    /// same launch's pod found under its name), else what the launch comes to.
    async fn create_pod(&self, task: &str, launch_id: &str, pod: &Pod) -> Result<Pod, Launch> {
        if self.gate.paused() {
            return Err(Launch::Paused);
        }
        let started = Instant::now();
        let result = self.kube.create_pod(pod).await;
        self.metrics
            .kube_latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Created::New(created)) => Ok(*created),
            Ok(Created::Exists(existing)) => {
                let same_task = existing
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(contract::LABEL_TASK_ID))
                    .is_some_and(|t| t == task);
                if !same_task {
                    return Err(Launch::Failed {
                        task: task.to_string(),
                        reason: format!(
                            "k8s agent: a pod named {} already exists and belongs to something else",
                            existing.metadata.name.clone().unwrap_or_default()
                        ),
                        category: "NameTaken",
                    });
                }
                if launch_of(&existing) != Some(launch_id) {
                    // left from an earlier run: removed by the next tick, then launched
                    return Err(Launch::Retry {
                        task: task.to_string(),
                        why: "a pod of an earlier run still exists".into(),
                        retry_after: None,
                    });
                }
                Ok(*existing)
            }
            Err(e) if e.is_permanent() => Err(Launch::Failed {
                task: task.to_string(),
                reason: format!("k8s agent: the pod was refused: {}", e.message()),
                category: "Create",
            }),
            Err(e) => Err(self.retry_later(task, &e)),
        }
    }

    /// Makes a `fileMounts` Secret exist, once per process and content (its name is the content's
    /// hash): an agent restart creates it again if it was deleted meanwhile.
    pub(super) async fn ensure_secret(
        &self,
        task: &str,
        secret: &k8s_openapi::api::core::v1::Secret,
    ) -> Result<(), Launch> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        if self.file_secrets.lock().is_ok_and(|s| s.contains(&name)) {
            return Ok(());
        }
        if self.gate.paused() {
            return Err(Launch::Paused);
        }
        match self.kube.ensure_secret(secret).await {
            Ok(()) => {
                if let Ok(mut s) = self.file_secrets.lock() {
                    s.insert(name);
                }
                Ok(())
            }
            Err(e) if e.is_permanent() => Err(Launch::Failed {
                task: task.to_string(),
                reason: format!(
                    "k8s agent: the Secret with the queue's fileMounts was refused: {}",
                    e.message()
                ),
                category: "Create",
            }),
            Err(e) => Err(self.retry_later(task, &e)),
        }
    }

    /// A write the API server may accept later (5xx, 429, transport): the task stays pending,
    /// and a 429's `Retry-After` pauses the rest of this tick's writes too.
    pub(super) fn retry_later(&self, task: &str, e: &k8s::Error) -> Launch {
        if let Some(wait) = e.retry_after() {
            self.gate.pause(wait);
        }
        Launch::Retry {
            task: task.to_string(),
            retry_after: e.retry_after(),
            why: e.to_string(),
        }
    }

    /// A pending task whose queue is no longer served goes back to that queue (a failure is
    /// retried on the next tick: the task stays pending meanwhile).
    async fn give_back(&self, task: &str, origin: &str, doc: &TaskDoc) {
        let result = match self.clearml.take_protocol() {
            TakeProtocol::Move => {
                let r = self.clearml.enqueue(task, origin, "", "", false).await;
                if let Err(e) = &r
                    && e.is_same_status_refusal()
                {
                    self.clearml.note_move_refused();
                }
                r
            }
            TakeProtocol::EnqueueThenRemove => self.give_back_in_two_steps(task, origin, doc).await,
        };
        match result {
            Ok(()) => {
                tracing::info!(%task, queue = %origin, "queue no longer served; task given back to it")
            }
            Err(error) => {
                tracing::warn!(%task, queue = %origin, %error, "cannot give the task back to its queue, no longer served; retrying")
            }
        }
    }

    /// Makes the multi-node rendezvous Service `svc` exist, owned by the task's rank-0 pod `rank0`
    /// (as the API server holds it). `adopting`: rank 0 was there before this launch attempt, so
    /// the Service most likely is too; it is read first and written only if missing or not owned.
    async fn ensure_service(
        &self,
        task: &str,
        svc: &Service,
        rank0: &Pod,
        adopting: bool,
    ) -> Result<(), Launch> {
        let Some(owner) = k8s::owned_by(rank0) else {
            return Err(Launch::Retry {
                task: task.to_string(),
                why: "rank 0 has no uid yet".into(),
                retry_after: None,
            });
        };
        let mut svc = svc.clone();
        svc.metadata.owner_references = Some(vec![owner]);
        match self.kube.ensure_service(&svc, adopting).await {
            Ok(Ensured::Ready) => Ok(()),
            Ok(Ensured::Taken(existing)) => Err(Launch::Failed {
                task: task.to_string(),
                reason: format!(
                    "k8s agent: a Service named {} already exists and belongs to something else",
                    existing.metadata.name.clone().unwrap_or_default()
                ),
                category: "NameTaken",
            }),
            Err(e) if e.is_permanent() => Err(Launch::Failed {
                task: task.to_string(),
                reason: format!("k8s agent: {e}"),
                category: "Create",
            }),
            Err(e) => Err(self.retry_later(task, &e)),
        }
    }

    /// Servers before 1.17.0: back into its queue with a forced `tasks.enqueue` (unless it is
    /// there already: a give-back or a take cut short), keeping the status message so the origin
    /// record survives a crash in between; then out of the pending queue. Each step is skipped
    /// or harmless when repeated.
    async fn give_back_in_two_steps(
        &self,
        task: &str,
        origin: &str,
        doc: &TaskDoc,
    ) -> Result<(), clearml::Error> {
        let back = doc.execution.as_ref().and_then(|e| e.queue.as_deref()) == Some(origin)
            || self.clearml.queue_contains(origin, task).await?;
        if !back {
            let message = doc.status_message.as_deref().unwrap_or_default();
            self.clearml
                .enqueue(task, origin, "", message, true)
                .await?;
        }
        self.clearml
            .remove_from_queue(&self.pending_queue, task)
            .await
    }

    /// Learns the names of the tasks' projects not known yet (one `projects.get_all`).
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
        match self.clearml.project_names(&unknown).await {
            Ok(names) => self.projects.extend(names),
            Err(error) => tracing::debug!(%error, "cannot resolve project names"),
        }
    }
}
