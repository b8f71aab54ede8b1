//! The control API (`clearml.agent.v1.AgentService`) served to `kubectl clearml`, plus the
//! standard `grpc.health.v1`. Served on 127.0.0.1 by default, so only users allowed to port-forward
//! to the agent's pod reach it.
//!
//! Queue changes are validated completely before anything is written: typed parse (errors carry
//! the field path), merge, render and a server-side dry run of the pod the queue would create.
//! Then the ConfigMap is replaced conditionally on the version read (retried on Conflict); the
//! dispatcher picks the change up from its ConfigMap watch. `tonic::Status` lives only here.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use clearml_agent_proto::v1::{
    self as pb,
    agent_service_server::{AgentService, AgentServiceServer},
};
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

use crate::{
    clearml::Client,
    config::AgentConfig,
    config_store::{ConfigStore, StoreError, Written},
    dispatch::{SharedSnapshot, create_queue},
    health::{Connectivity, Health},
    k8s::{Kube, PodStore},
    lifecycle::{self, PodState},
    render::{self, AgentParams, QueueParams, TaskParams},
    values::{FieldError, QueueValues, Values},
    yaml,
};

/// Task id used to render a queue's pod when no task is given.
const PREVIEW_TASK: &str = "00000000000000000000000000000000";
/// Read-modify-write attempts on ConfigMap conflicts.
const WRITE_ATTEMPTS: usize = 5;
/// How long a write through the control API waits for the agent to apply it.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const GPU: &str = "nvidia.com/gpu";

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
}

/// Serves the control API and gRPC health on `addr` until `shutdown`: binds now (so the port is
/// open before the agent reports ready) and returns the server, a task for the
/// [`Supervisor`](crate::runtime::Supervisor); a port that cannot be bound is that task's error.
pub fn serve(
    control: Arc<Control>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let incoming = TcpIncoming::bind(addr)
        .and_then(|incoming| Ok((incoming.local_addr()?, incoming)))
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")));
    async move {
        let (bound, incoming) = incoming?;
        tracing::info!(grpc = %bound, "control API up");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<AgentServiceServer<ControlService>>()
            .await;
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(AgentServiceServer::new(ControlService(control)))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(std::io::Error::other)
    }
}

/// The tonic service.
pub struct ControlService(Arc<Control>);

fn invalid(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Invalid { .. } => Status::failed_precondition(e.to_string()),
        StoreError::Rejected(m) => Status::invalid_argument(m),
        StoreError::Contended(_) => Status::aborted(e.to_string()),
        StoreError::Kube { .. } => Status::unavailable(e.to_string()),
    }
}

fn pod_labels(pod: &Pod) -> Option<&BTreeMap<String, String>> {
    pod.metadata.labels.as_ref()
}

fn pod_gpus(pod: &Pod) -> u32 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get(GPU))
        .filter_map(|q| q.0.parse::<u32>().ok())
        .sum()
}

fn phase_name(state: &PodState) -> &'static str {
    match state {
        PodState::Pending { .. } => "Pending",
        PodState::Running => "Running",
        PodState::Succeeded { .. } => "Succeeded",
        PodState::Failed { .. } => "Failed",
        PodState::Terminating => "Terminating",
    }
}

/// Why a pod is not running, or how it ended.
fn pod_reason(state: &PodState) -> (String, String, Option<i32>) {
    match state {
        PodState::Pending {
            waiting: Some((r, m)),
            ..
        } => (r.clone(), m.clone(), None),
        PodState::Pending {
            unschedulable: Some((m, _)),
            ..
        } => ("Unschedulable".into(), m.clone(), None),
        PodState::Pending { .. } => ("Pending".into(), String::new(), None),
        PodState::Failed {
            reason,
            message,
            exit_code,
            ..
        } => (reason.clone(), message.clone(), *exit_code),
        PodState::Succeeded { .. } => ("Completed".into(), String::new(), Some(0)),
        PodState::Running | PodState::Terminating => (String::new(), String::new(), None),
    }
}

/// An object as a YAML manifest, with its `apiVersion` and `kind`.
fn manifest_yaml<K: serde::Serialize + k8s_openapi::Resource>(obj: &K) -> Result<String, Status> {
    let mut v = serde_json::to_value(obj).map_err(|e| Status::internal(e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), K::API_VERSION.into());
        m.insert("kind".into(), K::KIND.into());
    }
    yaml::to_string(&v).map_err(|e| Status::internal(e.to_string()))
}

fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

impl Control {
    fn cfg(&self) -> Arc<AgentConfig> {
        self.cfg_rx.borrow().clone()
    }

    fn store(&self) -> Result<&ConfigStore, Status> {
        self.store.as_ref().ok_or_else(|| {
            Status::failed_precondition("the agent reads its values from a file, not a ConfigMap; edit the file and restart it")
        })
    }

    /// Pods of the store grouped by task id.
    fn pods_by_task(&self) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut out: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in self.pods.state() {
            if let Some(task) = pod_labels(&pod).and_then(|l| l.get(render::LABEL_TASK_ID)) {
                out.entry(task.clone()).or_default().push(pod.clone());
            }
        }
        out
    }

    fn queue_summary(&self, name: &str, cfg: &AgentConfig) -> pb::QueueSummary {
        let snap = self.snapshot.read();
        let id = snap
            .served
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let waiting = snap.waiting.get(&id).map_or(0, Vec::len) as u32;
        drop(snap);
        let (mut pending, mut running, mut gpus) = (0, 0, 0);
        for pod in self.pods.state() {
            if pod_labels(&pod).and_then(|l| l.get(render::LABEL_QUEUE_ID)) != Some(&id)
                || id.is_empty()
            {
                continue;
            }
            match lifecycle::classify(&pod) {
                PodState::Pending { .. } => pending += 1,
                PodState::Running => running += 1,
                _ => continue,
            }
            gpus += pod_gpus(&pod);
        }
        pb::QueueSummary {
            name: name.to_string(),
            id,
            waiting,
            pods_pending: pending,
            pods_running: running,
            max_pods: cfg.queues.get(name).and_then(|q| q.settings.max_pods),
            gpus_requested: gpus,
        }
    }

    fn queue_view(&self, name: &str, cfg: &AgentConfig) -> Result<pb::Queue, Status> {
        let entry = cfg
            .values
            .agentk8sglue
            .queues
            .get(name)
            .ok_or_else(|| Status::not_found(format!("queue {name:?} is not configured")))?;
        let summary = self.queue_summary(name, cfg);
        Ok(pb::Queue {
            name: name.to_string(),
            id: summary.id.clone(),
            spec_json: serde_json::to_string(entry).map_err(|e| Status::internal(e.to_string()))?,
            summary: Some(summary),
        })
    }

    /// Validates a whole new values document; with `queue`, also renders that queue's pod and
    /// has the API server dry-run it.
    async fn validate(&self, values: Values, queue: Option<&str>) -> Result<Values, Status> {
        let doc = serde_json::to_value(&values).map_err(|e| Status::internal(e.to_string()))?;
        let values = Values::from_json(doc).map_err(invalid)?;
        let cfg = AgentConfig::from_values(&values, &self.agent.namespace).map_err(invalid)?;
        if let Some(name) = queue {
            let preview = TaskParams {
                id: PREVIEW_TASK.into(),
                name: "preview".into(),
                ..Default::default()
            };
            for pod in self.render(&cfg, name, &preview)?.pods {
                self.kube.dry_run_pod(&pod).await.map_err(|e| {
                    Status::invalid_argument(format!(
                        "agentk8sglue.queues.{name}: the Kubernetes API server refused the queue's pod: {}",
                        e.message()
                    ))
                })?;
            }
        }
        Ok(values)
    }

    fn render(
        &self,
        cfg: &AgentConfig,
        queue: &str,
        task: &TaskParams,
    ) -> Result<render::Rendered, Status> {
        let q = cfg
            .queues
            .get(queue)
            .ok_or_else(|| Status::not_found(format!("queue {queue:?} is not configured")))?;
        let id = self
            .snapshot
            .read()
            .served
            .iter()
            .find(|s| s.name == queue)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let mut agent = self.agent.clone();
        agent.default_image = cfg.values.agentk8sglue.default_image.clone();
        let params = QueueParams {
            name: queue,
            id: &id,
            template: &q.template,
            settings: &q.settings,
        };
        render::render(&agent, &params, task).map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// Read → change → validate → conditional write, retried on Conflict.
    async fn change(
        &self,
        dry_run: bool,
        queue: Option<&str>,
        mut edit: impl FnMut(&mut Values) -> Result<(), Status>,
    ) -> Result<Values, Status> {
        let store = self.store()?;
        for _ in 0..WRITE_ATTEMPTS {
            let (mut values, cm) = store.read().await.map_err(store_status)?;
            edit(&mut values)?;
            let values = self.validate(values, queue).await?;
            if dry_run {
                return Ok(values);
            }
            match store.write(cm, &values).await.map_err(store_status)? {
                Written::Done => {
                    self.applied(&values).await;
                    return Ok(values);
                }
                Written::Conflict => continue,
            }
        }
        Err(Status::aborted(
            "the agent's ConfigMap kept changing; try again",
        ))
    }

    /// Waits (briefly) until the ConfigMap watch has applied `values`, so a read right after a
    /// write sees it (`queues remove x` then `queues get x` says not found). The write is done
    /// either way: if another edit lands first, the wait just ends at its limit.
    async fn applied(&self, values: &Values) {
        let Ok(want) = AgentConfig::from_values(values, &self.agent.namespace) else {
            return;
        };
        let mut rx = self.cfg_rx.clone();
        let seen = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|c| **c == want)).await;
        if seen.is_err() {
            tracing::debug!("the written values were not applied within {APPLY_WAIT:?}");
        }
    }

    /// Creates the queue in ClearML when `createQueues` is on; returns its id if known.
    async fn ensure_clearml_queue(&self, values: &Values, name: &str) -> Result<String, Status> {
        if !values.agentk8sglue.create_queues {
            return Ok(String::new());
        }
        create_queue(&self.clearml, name, &[]).await.map_err(|e| {
            Status::unavailable(format!(
                "queue saved, but creating it in ClearML failed: {e}"
            ))
        })
    }

    /// The queue as saved (creating it in ClearML unless this was a dry run).
    async fn saved_queue(
        &self,
        values: &Values,
        name: &str,
        dry_run: bool,
    ) -> Result<pb::Queue, Status> {
        let id = if dry_run {
            String::new()
        } else {
            self.ensure_clearml_queue(values, name).await?
        };
        self.queue_after(values, name, id)
    }

    fn queue_after(&self, values: &Values, name: &str, id: String) -> Result<pb::Queue, Status> {
        let cfg = AgentConfig::from_values(values, &self.agent.namespace).map_err(invalid)?;
        let mut q = self.queue_view(name, &cfg)?;
        if q.id.is_empty() {
            q.id = id.clone();
            if let Some(s) = q.summary.as_mut() {
                s.id = id;
            }
        }
        Ok(q)
    }

    fn task_summaries(&self) -> Vec<pb::TaskSummary> {
        let cfg = self.cfg();
        let mut out = Vec::new();
        let by_task = self.pods_by_task();
        for (task, pods) in &by_task {
            out.push(summarize(task, pods));
        }
        let snap = self.snapshot.read();
        for served in &snap.served {
            let live = self
                .pods
                .state()
                .iter()
                .filter(|p| {
                    pod_labels(p).and_then(|l| l.get(render::LABEL_QUEUE_ID)) == Some(&served.id)
                })
                .filter(|p| !lifecycle::classify(p).is_finished())
                .count();
            let limit = cfg
                .queues
                .get(&served.name)
                .and_then(|q| q.settings.max_pods);
            for task in snap.waiting.get(&served.id).into_iter().flatten() {
                let reason = match limit {
                    Some(max) if live >= max as usize => {
                        format!(
                            "waiting in ClearML queue {}: maxPods reached ({live}/{max} pods)",
                            served.name
                        )
                    }
                    _ => format!("waiting in ClearML queue {}", served.name),
                };
                out.push(pb::TaskSummary {
                    id: task.clone(),
                    queue: served.name.clone(),
                    phase: "Queued".into(),
                    pending_reason: reason,
                    ..Default::default()
                });
            }
        }
        for task in &snap.pending {
            if !by_task.contains_key(task) {
                out.push(pb::TaskSummary {
                    id: task.clone(),
                    phase: "Launching".into(),
                    pending_reason: "taken by the agent; its pod is being created".into(),
                    ..Default::default()
                });
            }
        }
        out
    }
}

/// A task's summary from its pods.
fn summarize(task: &str, pods: &[Arc<Pod>]) -> pb::TaskSummary {
    let states: Vec<PodState> = pods.iter().map(|p| lifecycle::classify(p)).collect();
    let phase = if states.iter().any(|s| matches!(s, PodState::Failed { .. })) {
        "Failed"
    } else if states.iter().any(|s| matches!(s, PodState::Pending { .. })) {
        "Pending"
    } else if states.contains(&PodState::Terminating) {
        "Terminating"
    } else if states
        .iter()
        .all(|s| matches!(s, PodState::Succeeded { .. }))
    {
        "Succeeded"
    } else {
        "Running"
    };
    let pending_reason = states
        .iter()
        .zip(pods)
        .find_map(|(s, p)| match s {
            PodState::Pending { .. } => {
                let (reason, message, _) = pod_reason(s);
                let name = p.metadata.name.clone().unwrap_or_default();
                Some(if message.is_empty() {
                    format!("pod {name}: {reason}")
                } else {
                    format!("pod {name}: {reason}: {message}")
                })
            }
            _ => None,
        })
        .unwrap_or_default();
    let first = &pods[0];
    let ann = first.metadata.annotations.as_ref();
    pb::TaskSummary {
        id: task.to_string(),
        name: ann
            .and_then(|a| a.get(render::ANNOTATION_TASK_NAME))
            .cloned()
            .unwrap_or_default(),
        queue: ann
            .and_then(|a| a.get(render::ANNOTATION_QUEUE_NAME))
            .cloned()
            .unwrap_or_default(),
        phase: phase.into(),
        pods: pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect(),
        pending_reason,
        created: first
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| timestamp(t.0)),
    }
}

#[tonic::async_trait]
impl AgentService for ControlService {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let c = &self.0;
        let cfg = c.cfg();
        let state = match c.health.clearml() {
            Connectivity::Ok => pb::clearml_connection::State::Ok,
            Connectivity::Degraded => pb::clearml_connection::State::Degraded,
            Connectivity::Down => pb::clearml_connection::State::Down,
        };
        let mut last_error = c.health.last_error().unwrap_or_default();
        if let Ok(Some(e)) = c.config_error.lock().map(|g| g.clone()) {
            last_error = format!(
                "{last_error}{}invalid ConfigMap (last good config in force): {e}",
                if last_error.is_empty() { "" } else { "; " }
            );
        }
        Ok(Response::new(pb::GetStatusResponse {
            version: crate::VERSION.into(),
            leader: *c.leader_rx.borrow(),
            clearml: Some(pb::ClearmlConnection {
                state: state as i32,
                api_server: c.clearml.base_url().to_string(),
                last_error,
                last_success: None,
            }),
            queues: cfg
                .queues
                .keys()
                .map(|q| c.queue_summary(q, &cfg))
                .collect(),
            gpu_reporting: Some(pb::GpuReporting {
                max_gpus: cfg.report_max_gpus,
            }),
            namespace: cfg.task_namespace.clone(),
            worker_id: cfg.worker_id.clone(),
        }))
    }

    async fn list_queues(
        &self,
        _: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let cfg = self.0.cfg();
        let queues = cfg
            .queues
            .keys()
            .map(|q| self.0.queue_view(q, &cfg))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn get_queue(
        &self,
        req: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let cfg = self.0.cfg();
        Ok(Response::new(
            self.0.queue_view(&req.into_inner().name, &cfg)?,
        ))
    }

    async fn add_queue(
        &self,
        req: Request<pb::AddQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let pb::AddQueueRequest {
            name,
            spec_json,
            dry_run,
        } = req.into_inner();
        let spec: Value = if spec_json.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            yaml::from_str(&spec_json)
                .map_err(|e| Status::invalid_argument(format!("agentk8sglue.queues.{name}: {e}")))?
        };
        let entry = QueueValues::from_json(&name, spec).map_err(invalid)?;
        let values = self
            .0
            .change(dry_run, Some(&name), |values| {
                if values.agentk8sglue.queues.contains_key(&name) {
                    return Err(Status::already_exists(format!(
                        "queue {name:?} is already configured; use patch"
                    )));
                }
                values
                    .agentk8sglue
                    .queues
                    .insert(name.clone(), entry.clone());
                Ok(())
            })
            .await?;
        Ok(Response::new(
            self.0.saved_queue(&values, &name, dry_run).await?,
        ))
    }

    async fn patch_queue(
        &self,
        req: Request<pb::PatchQueueRequest>,
    ) -> Result<Response<pb::Queue>, Status> {
        let pb::PatchQueueRequest {
            name,
            patch_type,
            patch,
            dry_run,
        } = req.into_inner();
        let patch_doc: Value = yaml::from_str(&patch)
            .map_err(|e| Status::invalid_argument(format!("the patch is not JSON or YAML: {e}")))?;
        let kind = pb::PatchType::try_from(patch_type).unwrap_or(pb::PatchType::Unspecified);
        let json_patch: Option<json_patch::Patch> = match kind {
            pb::PatchType::Json => {
                Some(serde_json::from_value(patch_doc.clone()).map_err(|e| {
                    Status::invalid_argument(format!("not a JSON patch (RFC 6902): {e}"))
                })?)
            }
            pb::PatchType::Merge | pb::PatchType::Unspecified => None,
        };
        let values = self
            .0
            .change(dry_run, Some(&name), |values| {
                let current = values.agentk8sglue.queues.get(&name).ok_or_else(|| {
                    Status::not_found(format!("queue {name:?} is not configured"))
                })?;
                let mut doc =
                    serde_json::to_value(current).map_err(|e| Status::internal(e.to_string()))?;
                match &json_patch {
                    Some(p) => json_patch::patch(&mut doc, p).map_err(|e| {
                        Status::invalid_argument(format!("agentk8sglue.queues.{name}: {e}"))
                    })?,
                    None => json_patch::merge(&mut doc, &patch_doc),
                }
                let entry = QueueValues::from_json(&name, doc).map_err(invalid)?;
                values.agentk8sglue.queues.insert(name.clone(), entry);
                Ok(())
            })
            .await?;
        Ok(Response::new(
            self.0.saved_queue(&values, &name, dry_run).await?,
        ))
    }

    async fn remove_queue(
        &self,
        req: Request<pb::RemoveQueueRequest>,
    ) -> Result<Response<pb::RemoveQueueResponse>, Status> {
        let name = req.into_inner().name;
        self.0
            .change(false, None, |values| {
                values
                    .agentk8sglue
                    .queues
                    .remove(&name)
                    .map(drop)
                    .ok_or_else(|| Status::not_found(format!("queue {name:?} is not configured")))
            })
            .await?;
        Ok(Response::new(pb::RemoveQueueResponse {}))
    }

    async fn set_gpu_reporting(
        &self,
        req: Request<pb::SetGpuReportingRequest>,
    ) -> Result<Response<pb::GpuReporting>, Status> {
        let max = req.into_inner().max_gpus;
        self.0
            .change(false, None, |values| {
                values.agentk8sglue.dashboard_report_max_gpu = max;
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::GpuReporting { max_gpus: max }))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let queue = req.into_inner().queue;
        let tasks = self
            .0
            .task_summaries()
            .into_iter()
            .filter(|t| queue.is_empty() || t.queue == queue)
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn describe_task(
        &self,
        req: Request<pb::DescribeTaskRequest>,
    ) -> Result<Response<pb::TaskDetail>, Status> {
        let c = &self.0;
        let id = req.into_inner().id;
        let doc = c
            .clearml
            .tasks(
                std::slice::from_ref(&id),
                &["id", "name", "status", "status_reason", "status_message"],
            )
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .into_iter()
            .next();
        let mut summary = c
            .task_summaries()
            .into_iter()
            .find(|t| t.id == id)
            .or_else(|| {
                doc.as_ref().map(|d| pb::TaskSummary {
                    id: id.clone(),
                    phase: d.status.clone().unwrap_or_default(),
                    pending_reason: d.status_reason.clone().unwrap_or_default(),
                    ..Default::default()
                })
            })
            .ok_or_else(|| {
                Status::not_found(format!("task {id} is not known to ClearML or this agent"))
            })?;
        if let Some(d) = &doc
            && summary.name.is_empty()
        {
            summary.name = d.name.clone().unwrap_or_default();
        }
        let pods: Vec<Arc<Pod>> = c.pods_by_task().remove(&id).unwrap_or_default();
        let details = pods
            .iter()
            .map(|p| {
                let state = lifecycle::classify(p);
                let (reason, message, exit_code) = pod_reason(&state);
                pb::PodDetail {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    phase: phase_name(&state).into(),
                    node: p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    reason,
                    message,
                    exit_code,
                    rank: pod_labels(p)
                        .and_then(|l| l.get(render::LABEL_RANK))
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                }
            })
            .collect::<Vec<_>>();
        let names: Vec<String> = details.iter().map(|p| p.name.clone()).collect();
        let events = match c.kube.pod_events(&names, 20).await {
            Ok(events) => events
                .into_iter()
                .map(|e| pb::Event {
                    last_seen: crate::k8s::event_time(&e).map(timestamp),
                    object: e.involved_object.name.unwrap_or_default(),
                    reason: e.reason.unwrap_or_default(),
                    message: e.message.unwrap_or_default(),
                    r#type: e.type_.unwrap_or_default(),
                    count: e.count.unwrap_or(1).max(0) as u32,
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "cannot list events");
                Vec::new()
            }
        };
        Ok(Response::new(pb::TaskDetail {
            task: Some(summary),
            pods: details,
            events,
        }))
    }

    async fn render_pod(
        &self,
        req: Request<pb::RenderPodRequest>,
    ) -> Result<Response<pb::RenderPodResponse>, Status> {
        let c = &self.0;
        let pb::RenderPodRequest { queue, task_id } = req.into_inner();
        let cfg = c.cfg();
        let task = if task_id.is_empty() {
            TaskParams {
                id: PREVIEW_TASK.into(),
                name: "preview".into(),
                ..Default::default()
            }
        } else {
            let fields = ["id", "name", "project", "container"];
            let doc = c
                .clearml
                .tasks(std::slice::from_ref(&task_id), &fields)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
                .into_iter()
                .next()
                .ok_or_else(|| Status::not_found(format!("task {task_id} not found in ClearML")))?;
            if let Some(why) = &doc.unreadable {
                return Err(Status::failed_precondition(format!(
                    "task {task_id}: cannot read its document from ClearML ({why})"
                )));
            }
            let container = doc.container.unwrap_or_default();
            TaskParams {
                id: task_id.clone(),
                name: doc.name.unwrap_or_default(),
                project: doc.project.unwrap_or_default(),
                image: container.image.unwrap_or_default(),
                arguments: container.arguments.unwrap_or_default(),
                setup_shell_script: container.setup_shell_script.unwrap_or_default(),
                launch_id: String::new(),
            }
        };
        let rendered = c.render(&cfg, &queue, &task)?;
        let mut docs = Vec::new();
        for pod in &rendered.pods {
            c.kube.dry_run_pod(pod).await.map_err(|e| {
                Status::invalid_argument(format!(
                    "the Kubernetes API server refused the pod: {}",
                    e.message()
                ))
            })?;
            docs.push(manifest_yaml(pod)?);
        }
        if let Some(svc) = &rendered.service {
            docs.push(manifest_yaml(svc)?);
        }
        Ok(Response::new(pb::RenderPodResponse {
            manifests_yaml: docs,
        }))
    }
}
