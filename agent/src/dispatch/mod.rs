//! The data path, top-down, one module per step:
//!
//! ```text
//!  take       ClearML queues ──queues.get_all (one call)──▶ plan() ──tasks.enqueue_many(k8s_scheduler)──▶
//!             (one call per origin queue and chunk; servers before 1.17: forced tasks.enqueue,
//!             then queues.remove_task)
//!  launch     pending queue ──render──▶ create (or adopt) pods, behind a write gate (429 / backoff)
//!  reconcile  pod watch ──lifecycle::decide──▶ verdicts ──▶ tasks.failed / status message / cleanup
//!  statuses   the ClearML statuses and messages the verdicts read (one batched read per refresh)
//!             and write (one tasks.update_batch per pass)
//!  origin     the origin-queue record a pending task carries in its status message
//!  retry      disrupted tasks and stuck gangs back to the head of their queue (the retry record)
//! ```
//!
//! This module holds the loop that runs the steps, leadership and live config changes.
//!
//! Crash safety: a task is never out of a ClearML queue until its pod runs. Taking a task is one
//! atomic enqueue into the pending queue (run by the server for each id of a `tasks.enqueue_many`) (the server removes it from its own queue in the
//! same call; before ClearML server 1.17, a forced enqueue and then a removal from its own queue,
//! a task in both being pending and launched only once out: see `take.rs`) whose status message
//! records the origin queue; every tick launches the pending
//! tasks that have no pod for their current launch, so a launch cut short by a crash is finished by
//! the next agent. Pod names are deterministic and a pod's `clearml.ai/launch` annotation names the
//! pending entry it serves, so a retry finds (and adopts) its own pod instead of making a second.
//! The in-pod `clearml-agent execute --require-queue` dequeues the task when it starts.

mod files;
mod gang;
mod gate;
mod job;
mod launch;
mod origin;
mod reconcile;
mod retry;
mod statuses;
mod take;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use parking_lot::RwLock;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use clearml_agent_core::{config::AgentConfig, render::AgentParams};

pub use origin::{explain_message, origin_from_message, pending_message};
pub use retry::{record_from_message, record_from_pods};

use crate::{
    clearml::{self, Client, Served, resolve_queues},
    health::Health,
    k8s::{JobStore, Kube, PodStore},
    metrics::Metrics,
};
use gate::WriteGate;
use statuses::StatusCache;

/// `status_reason` of tasks waiting in the pending queue (the Python glue's, so the UI reads the
/// same).
pub const PENDING_REASON: &str = "k8s pending scheduler";
/// Poll interval while there is work (tasks were taken on the last tick).
const BUSY_POLL: Duration = Duration::from_millis(100);
/// How often task statuses are re-read to notice aborts.
const STATUS_REFRESH: Duration = Duration::from_secs(2);
/// ClearML caps `get_all` results per call.
const GET_ALL_CHUNK: usize = 500;

/// A queue entry as the last tick read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Task id.
    pub task: String,
    /// When the task entered the queue (the entry's `added`), if it reads as a time.
    pub added: Option<Timestamp>,
}

/// What the last tick saw, for the control API: served queues and the head of each queue.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Served queues, in config order.
    pub served: Vec<Served>,
    /// The tasks waiting in each served queue, in queue order (by queue id; at most one batch
    /// each).
    pub waiting: HashMap<String, Vec<Entry>>,
    /// The tasks in the pending queue.
    pub pending: Vec<Entry>,
    /// Pending queue id.
    pub pending_queue: String,
    /// The worker id in use (a changed `workerId` applies after a restart).
    pub worker_id: String,
    /// The task namespace in use (likewise).
    pub task_namespace: String,
    /// Tasks put back at the head of each queue since this process started (by queue name).
    pub retries: HashMap<String, u32>,
    /// Multi-node tasks held back from the take after a gang release, now (by queue id).
    pub gang_held: HashMap<String, u32>,
    /// The PodGroup API the API server serves (`scheduling.k8s.io/v1beta1` …), found at start;
    /// `None`: none, multi-node tasks use the agent's gang timeout.
    pub pod_group_api: Option<String>,
}

/// Shared [`Snapshot`].
pub type SharedSnapshot = Arc<RwLock<Snapshot>>;

/// What the dispatcher works with: the two servers, the pod cache, the config and leadership
/// channels, and what it shares with the control API and the admin server.
pub struct Deps {
    /// ClearML.
    pub clearml: Client,
    /// Pod and Service writes.
    pub kube: Kube,
    /// The pod cache (the watch's store).
    pub pods: PodStore,
    /// The Job cache (Job mode; the watch's store).
    pub jobs: JobStore,
    /// Woken on every pod change.
    pub changed: Arc<Notify>,
    /// The config in force (the ConfigMap watch sends new versions).
    pub cfg_rx: watch::Receiver<Arc<AgentConfig>>,
    /// Identity and endpoints for rendering.
    pub agent: AgentParams,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness and the last error.
    pub health: Arc<Health>,
    /// What the last tick saw, for the control API.
    pub snapshot: SharedSnapshot,
    /// Whether this replica holds the lease.
    pub leader_rx: watch::Receiver<bool>,
    /// The ClearML API URL came from `CLEARML_API_HOST` (so `apiServerUrlReference` is not used).
    pub api_from_env: bool,
}

/// The changes from `old` to `new` that apply only after a restart, in words: the task namespace
/// and worker id (the agent's identity), and the ClearML API URL the agent and its task pods use
/// (a pod must talk to the server its task came from). The web and file server URLs and the
/// default image apply to the next launched pod; queues and their settings at once.
pub fn needs_restart(
    old: &AgentConfig,
    new: &AgentConfig,
    agent: &AgentParams,
    api_from_env: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if new.task_namespace != old.task_namespace {
        out.push(format!(
            "taskNamespace is {:?} in the values, {:?} in use",
            new.task_namespace, old.task_namespace
        ));
    }
    if new.worker_id != old.worker_id {
        out.push(format!(
            "workerId is {:?} in the values, {:?} in use",
            new.worker_id, old.worker_id
        ));
    }
    if new.values.agentk8sglue.verifies_tls() != old.values.agentk8sglue.verifies_tls() {
        out.push(format!(
            "clearmlcheckCertificate is {} in the values; the agent's own TLS verification changes at its next start (task pods follow at once)",
            new.values.agentk8sglue.verifies_tls()
        ));
    }
    let wanted = new.values.agentk8sglue.api_server_url_reference.as_deref();
    let in_use = agent.api_server.as_deref().unwrap_or_default();
    if !api_from_env && wanted != Some(in_use) {
        out.push(format!(
            "apiServerUrlReference is {} in the values; the agent and its task pods use {in_use}",
            wanted.map_or("unset".to_string(), |u| format!("{u:?}"))
        ));
    }
    out
}

/// Identity and dependencies of the dispatcher.
pub struct Dispatcher {
    clearml: Client,
    kube: Kube,
    pods: PodStore,
    jobs: JobStore,
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
    /// ClearML statuses and status messages of the tasks with pods.
    statuses: StatusCache,
    /// Project names by id (for the pods' annotations and worker ids).
    projects: HashMap<String, String>,
    /// Rotates the queue the fair order (`queueOrder: fair`) starts from.
    offset: usize,
    /// Pauses pod writes (429 Retry-After, backoff after failing ticks).
    gate: WriteGate,
    /// Waiting tasks told that their queue's `maxPods` is below their pod count.
    told_too_big: HashSet<String>,
    /// The ClearML API URL came from the environment, not the values.
    api_from_env: bool,
    /// `fileMounts` Secrets this process made exist (by name: the content's hash).
    file_secrets: std::sync::Mutex<HashSet<String>>,
    /// When to look for stale `fileMounts` Secrets next (`files.rs`).
    next_files_gc: Instant,
    /// Disruptions seen, retry records, gang backoffs.
    retries: retry::Retries,
    /// The PodGroup API the API server serves, if any (the native gang path).
    pod_group_api: Option<String>,
}

impl Dispatcher {
    /// Resolves (and with `createQueues`, creates) the served queues and the pending queue, and
    /// registers the worker.
    pub async fn start(deps: Deps) -> Result<Self, clearml::Error> {
        let Deps {
            clearml,
            kube,
            pods,
            jobs,
            changed,
            cfg_rx,
            agent,
            metrics,
            health,
            snapshot,
            leader_rx,
            api_from_env,
        } = deps;
        let cfg = (**cfg_rx.borrow()).clone();
        let (served, pending_queue) = resolve_queues(&clearml, &cfg).await?;
        let ids: Vec<String> = served.iter().map(|s| s.id.clone()).collect();
        clearml.register_worker(&cfg.worker_id, &ids, 600).await?;
        tracing::info!(worker = %cfg.worker_id, queues = served.len(), "registered with ClearML");
        // which gang path multi-node tasks can take: discovery, once (a cluster upgrade that
        // starts serving the PodGroup API takes effect at the agent's next start)
        let pod_group_api = match kube.pod_group_api().await {
            Ok(api) => api,
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether the cluster serves the PodGroup API; multi-node tasks use the agent's gang timeout");
                None
            }
        };
        tracing::info!(pod_group_api = ?pod_group_api, "gang scheduling");
        {
            let mut snap = snapshot.write();
            snap.served = served.clone();
            snap.pending_queue = pending_queue.clone();
            snap.worker_id = cfg.worker_id.clone();
            snap.task_namespace = cfg.task_namespace.clone();
            snap.pod_group_api = pod_group_api.clone();
        }
        Ok(Self {
            clearml,
            kube,
            pods,
            jobs,
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
            statuses: StatusCache::default(),
            projects: HashMap::new(),
            offset: 0,
            gate: WriteGate::default(),
            told_too_big: HashSet::new(),
            api_from_env,
            file_secrets: Default::default(),
            next_files_gc: Instant::now(),
            retries: retry::Retries::default(),
            pod_group_api,
        })
    }

    /// Applies a new config from the ConfigMap: re-resolves (and creates) queues and re-registers.
    /// Identity settings (task namespace, worker id) need a restart and are kept.
    async fn apply_config(&mut self, new: Arc<AgentConfig>) -> Result<(), clearml::Error> {
        let mut cfg = (*new).clone();
        let restart = needs_restart(&self.cfg, &cfg, &self.agent, self.api_from_env);
        for what in &restart {
            tracing::warn!(%what, "this change takes effect after a restart");
        }
        self.health.set_restart_needed(restart);
        cfg.task_namespace = self.cfg.task_namespace.clone();
        cfg.worker_id = self.cfg.worker_id.clone();
        let (served, pending) = resolve_queues(&self.clearml, &cfg).await?;
        let ids: Vec<String> = served.iter().map(|s| s.id.clone()).collect();
        self.clearml
            .register_worker(&cfg.worker_id, &ids, 600)
            .await?;
        tracing::info!(queues = served.len(), "config applied");
        self.served = served;
        self.pending_queue = pending;
        // applied to the next launched pod
        self.agent.apply_document(&cfg.values);
        self.cfg = cfg;
        let mut snap = self.snapshot.write();
        snap.served = self.served.clone();
        snap.pending_queue = self.pending_queue.clone();
        Ok(())
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
            r = async { (self.pods.wait_until_ready().await, self.jobs.wait_until_ready().await) } => r.0.is_err() || r.1.is_err(),
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
                self.retries.clear();
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
            if Instant::now() >= self.next_files_gc {
                self.collect_file_secrets().await;
                self.next_files_gc = Instant::now() + files::FILES_GC_PERIOD;
            }
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
}

#[cfg(test)]
mod tests {
    use clearml_agent_core::values::Values;

    use super::*;

    fn cfg(extra: &str) -> AgentConfig {
        let text = format!(
            "agentk8sglue:\n  apiServerUrlReference: https://api.example\n{extra}  queues:\n    qqq: {{}}\n"
        );
        AgentConfig::from_values(&Values::from_yaml(&text).expect("values"), "ns").expect("cfg")
    }

    #[test]
    fn what_needs_a_restart() {
        let agent = AgentParams {
            api_server: Some("https://api.example".into()),
            ..Default::default()
        };
        let cases = [
            ("nothing changed", "", false, 0, ""),
            (
                "file server: live",
                "  fileServerUrlReference: https://files\n",
                false,
                0,
                "",
            ),
            (
                "default image: live",
                "  defaultImage: busybox\n",
                false,
                0,
                "",
            ),
            (
                "task namespace (the worker id kept)",
                "  taskNamespace: other\n  workerId: k8s-agent:ns\n",
                false,
                1,
                "taskNamespace",
            ),
            ("worker id", "  workerId: w2\n", false, 1, "workerId"),
            (
                "the agent's TLS verification (task pods follow at once)",
                "  clearmlcheckCertificate: false\n",
                false,
                1,
                "clearmlcheckCertificate",
            ),
            (
                "two at once",
                "  taskNamespace: other\n  workerId: w2\n",
                false,
                2,
                "in the values",
            ),
        ];
        let old = cfg("");
        for (what, extra, from_env, n, word) in cases {
            let got = needs_restart(&old, &cfg(extra), &agent, from_env);
            assert_eq!(got.len(), n, "{what}: {got:?}");
            assert!(got.iter().all(|g| g.contains(word)), "{what}: {got:?}");
        }
        let moved = |url: &str| {
            let text = format!("agentk8sglue:\n  apiServerUrlReference: {url}\n");
            AgentConfig::from_values(&Values::from_yaml(&text).expect("values"), "ns").expect("cfg")
        };
        let got = needs_restart(&old, &moved("https://new.example"), &agent, false);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("https://new.example") && got[0].contains("https://api.example"));
        assert!(
            needs_restart(&old, &moved("https://new.example"), &agent, true).is_empty(),
            "CLEARML_API_HOST wins over the values: nothing to restart for"
        );
    }
}
