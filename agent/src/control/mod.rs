//! What the control API serves, without the transport: the [`Control`] state (config, pod cache,
//! the dispatcher's snapshot, the two servers), pure [`view`]s of it, and the validated
//! ConfigMap [`edit`]s. Errors are [`ControlError`]; `grpc.rs` maps them to gRPC statuses.

pub mod edit;
pub mod view;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use clearml_agent_proto::v1 as pb;
use tokio::sync::watch;

use clearml_agent_core::{
    config::AgentConfig,
    render::{AgentParams, TaskParams},
    values::FieldError,
};

use crate::{
    clearml::Client,
    config_store::{ConfigStore, StoreError},
    dispatch::{self, SharedSnapshot},
    health::{Connectivity, Health},
    k8s::{self, Kube, PodStore},
};

pub use edit::{QueueEdit, apply_edit};

/// Task id used to render a queue's pod when no task is given.
const PREVIEW_TASK: &str = "00000000000000000000000000000000";
/// How many of a task's pod events `describe task` shows.
const DESCRIBE_EVENTS: usize = 20;
/// Most task ids per `tasks.get_all` (ClearML caps the results of one call).
const TASKS_PER_READ: usize = 500;

/// Why a control request failed; each variant is one kind of gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The values (or a queue entry) are invalid: the message names the field.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// A request's input is malformed (a patch that is not JSON, …).
    #[error("{0}")]
    BadInput(String),
    /// The queue or task does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The queue already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be served in this state (values from a file, an unreadable task).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The ConfigMap read or write failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ConfigMap kept changing under the edit.
    #[error("the agent's ConfigMap kept changing; try again")]
    Contended,
    /// ClearML or the API server could not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A bug: something the agent itself produced could not be encoded.
    #[error("{0}")]
    Internal(String),
}

/// Everything the control API reads and changes.
pub struct Control {
    /// The ConfigMap (None when the agent runs from a file: changes are refused).
    pub store: Option<ConfigStore>,
    /// The config in force.
    pub cfg_rx: watch::Receiver<Arc<AgentConfig>>,
    /// The last invalid ConfigMap version's error, if the newest one is invalid.
    pub config_error: Arc<Mutex<Option<String>>>,
    /// What the dispatcher saw last.
    pub snapshot: SharedSnapshot,
    /// The agent's pods.
    pub pods: PodStore,
    /// The Job cache (Job mode).
    pub jobs: k8s::JobStore,
    /// ClearML.
    pub clearml: Client,
    /// Pod dry runs.
    pub kube: Kube,
    /// Agent identity for rendering.
    pub agent: AgentParams,
    /// Readiness and ClearML connectivity.
    pub health: Arc<Health>,
    /// Whether this replica holds the lease.
    pub leader_rx: watch::Receiver<bool>,
    /// The agent verifies the ClearML server's TLS certificate (fixed at start).
    pub agent_verifies_tls: bool,
}

impl Control {
    /// The config in force.
    pub fn cfg(&self) -> Arc<AgentConfig> {
        self.cfg_rx.borrow().clone()
    }

    /// The agent's state for `kubectl clearml status`.
    pub fn status(&self) -> pb::GetStatusResponse {
        let cfg = self.cfg();
        let state = match self.health.clearml() {
            Connectivity::Ok => pb::clearml_connection::State::Ok,
            Connectivity::Degraded => pb::clearml_connection::State::Degraded,
            Connectivity::Down => pb::clearml_connection::State::Down,
        };
        let mut last_error = self.health.last_error().unwrap_or_default();
        if let Ok(Some(e)) = self.config_error.lock().map(|g| g.clone()) {
            last_error = format!(
                "{last_error}{}invalid ConfigMap (last good config in force): {e}",
                if last_error.is_empty() { "" } else { "; " }
            );
        }
        let restart = self.health.restart_needed();
        if !restart.is_empty() {
            last_error = format!(
                "{last_error}{}restart needed: {}",
                if last_error.is_empty() { "" } else { "; " },
                restart.join("; ")
            );
        }
        let pods = self.pods.state();
        let snap = self.snapshot.read();
        let server = self.clearml.server();
        pb::GetStatusResponse {
            version: crate::VERSION.into(),
            leader: *self.leader_rx.borrow(),
            clearml: Some(pb::ClearmlConnection {
                state: state as i32,
                api_server: self.clearml.base_url().to_string(),
                last_error,
                last_success: None,
                server_version: server
                    .as_ref()
                    .map(|s| s.info.describe())
                    .unwrap_or_default(),
                take_protocol: server
                    .map(|s| s.protocol.name().to_string())
                    .unwrap_or_default(),
            }),
            queues: cfg
                .queues
                .keys()
                .map(|q| view::queue_summary(q, &cfg, &snap, &pods))
                .collect(),
            gpu_reporting: Some(pb::GpuReporting {
                max_gpus: cfg.report_max_gpus,
            }),
            // the identity in use (a changed one applies after a restart, said in last_error)
            namespace: if snap.task_namespace.is_empty() {
                cfg.task_namespace.clone()
            } else {
                snap.task_namespace.clone()
            },
            worker_id: if snap.worker_id.is_empty() {
                cfg.worker_id.clone()
            } else {
                snap.worker_id.clone()
            },
            notices: cfg
                .values
                .notices()
                .into_iter()
                .map(|n| pb::Notice {
                    path: n.path,
                    message: n.message,
                })
                .collect(),
            tls: Some(pb::TlsVerification {
                agent_verifies: self.agent_verifies_tls,
                tasks_verify: cfg.values.agentk8sglue.verifies_tls(),
            }),
            pod_group_api: snap.pod_group_api.clone().unwrap_or_default(),
        }
    }

    /// One configured queue with its counts.
    pub fn queue(&self, name: &str, cfg: &AgentConfig) -> Result<pb::Queue, ControlError> {
        let all = cfg.values.agentk8sglue.all_queues();
        let entry = all
            .get(name)
            .ok_or_else(|| ControlError::NotFound(format!("queue {name:?} is not configured")))?;
        let summary = view::queue_summary(name, cfg, &self.snapshot.read(), &self.pods.state());
        Ok(pb::Queue {
            name: name.to_string(),
            id: summary.id.clone(),
            spec_json: serde_json::to_string(entry)
                .map_err(|e| ControlError::Internal(e.to_string()))?,
            summary: Some(summary),
        })
    }

    /// Every configured queue.
    pub fn queues(&self) -> Result<Vec<pb::Queue>, ControlError> {
        let cfg = self.cfg();
        cfg.queues.keys().map(|q| self.queue(q, &cfg)).collect()
    }

    /// Every task the agent knows, optionally of one queue. The names of the tasks without pods
    /// (waiting in a queue, being launched) are read from ClearML, one batched read.
    pub async fn tasks(&self, queue: &str) -> Vec<pb::TaskSummary> {
        let mut rows: Vec<pb::TaskSummary> = self
            .summaries()
            .into_iter()
            .filter(|t| queue.is_empty() || t.queue == queue)
            .collect();
        let names = self.task_names(&view::unnamed(&rows)).await;
        view::fill_names(&mut rows, &names);
        rows
    }

    /// Every task the agent knows, named as far as its pods tell.
    fn summaries(&self) -> Vec<pb::TaskSummary> {
        let by_task = k8s::pods_by_task(&self.pods);
        view::task_summaries(&self.cfg(), &self.snapshot.read(), &by_task)
    }

    /// The names of `ids` as ClearML has them (`tasks.get_all`, only id and name); what cannot
    /// be read is left out (the tasks are listed without a name).
    async fn task_names(&self, ids: &[String]) -> HashMap<String, String> {
        let mut names = HashMap::new();
        for chunk in ids.chunks(TASKS_PER_READ) {
            match self.clearml.tasks(chunk, &["id", "name"]).await {
                Ok(docs) => names.extend(
                    docs.into_iter()
                        .filter_map(|d| Some((d.id, d.name.filter(|n| !n.is_empty())?))),
                ),
                Err(error) => {
                    tracing::debug!(%error, "cannot read the names of waiting tasks");
                    break;
                }
            }
        }
        names
    }

    /// A task, its pods and their events: why it is pending, or how it ended.
    pub async fn describe(&self, id: &str) -> Result<pb::TaskDetail, ControlError> {
        let doc = self
            .clearml
            .tasks(
                &[id.to_string()],
                &["id", "name", "status", "status_reason", "status_message"],
            )
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?
            .into_iter()
            .next();
        let mut summary = self
            .summaries()
            .into_iter()
            .find(|t| t.id == id)
            .or_else(|| {
                doc.as_ref().map(|d| pb::TaskSummary {
                    id: id.to_string(),
                    phase: d.status.clone().unwrap_or_default(),
                    pending_reason: d.status_reason.clone().unwrap_or_default(),
                    ..Default::default()
                })
            })
            .ok_or_else(|| {
                ControlError::NotFound(format!("task {id} is not known to ClearML or this agent"))
            })?;
        if let Some(d) = &doc
            && summary.name.is_empty()
        {
            summary.name = d.name.clone().unwrap_or_default();
        }
        let pods = k8s::pods_by_task(&self.pods).remove(id).unwrap_or_default();
        let details: Vec<pb::PodDetail> = pods.iter().map(|p| view::pod_detail(p)).collect();
        let names: Vec<String> = details.iter().map(|p| p.name.clone()).collect();
        let events = match self.kube.pod_events(&names, DESCRIBE_EVENTS).await {
            Ok(events) => events.into_iter().map(view::event).collect(),
            Err(error) => {
                tracing::debug!(%error, "cannot list events");
                Vec::new()
            }
        };
        // the retries so far: the status message's record while the task waits, else its pods'
        let retries = doc
            .as_ref()
            .and_then(|d| d.status_message.as_deref())
            .and_then(dispatch::record_from_message)
            .unwrap_or_else(|| dispatch::record_from_pods(&pods));
        let pod_group_api = self.snapshot.read().pod_group_api.clone();
        let gang = view::gang_path(
            &self.cfg(),
            pod_group_api.as_deref(),
            &summary.queue,
            pods.len(),
        );
        Ok(pb::TaskDetail {
            task: Some(summary),
            pods: details,
            events,
            retries,
            gang,
            job: k8s::jobs_by_task(&self.jobs)
                .remove(id)
                .map(|j| view::job_detail(&j)),
        })
    }

    /// The render parameters of `task_id` as ClearML has it (a placeholder task when empty).
    async fn preview_task(&self, task_id: &str) -> Result<TaskParams, ControlError> {
        if task_id.is_empty() {
            return Ok(TaskParams {
                id: PREVIEW_TASK.into(),
                name: "preview".into(),
                ..Default::default()
            });
        }
        let doc = self
            .clearml
            .tasks(
                &[task_id.to_string()],
                &["id", "name", "project", "container"],
            )
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ControlError::NotFound(format!("task {task_id} not found in ClearML"))
            })?;
        if let Some(why) = &doc.unreadable {
            return Err(ControlError::FailedPrecondition(format!(
                "task {task_id}: cannot read its document from ClearML ({why})"
            )));
        }
        Ok(doc.render_params("", &Default::default()))
    }
}
