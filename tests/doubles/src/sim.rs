//! A cluster simulator for end-to-end tests, the benchmark and the demo: it plays the scheduler,
//! the kubelet and the in-pod `clearml-agent execute --require-queue` for every pod the agent
//! creates in one namespace of the Kubernetes double, talking to the ClearML double the way the
//! real in-pod agent does (`tasks.dequeue` with `new_status: in_progress`, `tasks.started`, then
//! `tasks.completed`; an abort is noticed and the task left alone).
//!
//! What a pod does is chosen from its image, so a test picks a behaviour by setting the task's
//! `container.image`:
//!
//! | image | behaviour |
//! |---|---|
//! | `sim/pull-error` | waits in `ErrImagePull` (kubelet event `Warning Failed`) |
//! | `sim/config-error` | waits in `CreateContainerConfigError` (kubelet event `Warning Failed`) |
//! | `sim/unschedulable` | `PodScheduled=False/Unschedulable` (scheduler event `Warning FailedScheduling`) |
//! | `sim/slow-pull` | scheduled, then waits in `ContainerCreating` while "pulling" (event `Normal Pulling`) |
//! | `sim/sleep-N` | starts the task, runs N ms, completes it, exits 0 |
//! | `sim/oom` | starts the task, then is OOM-killed (exit 137) |
//! | `sim/exit-N` | starts the task, then exits with code N |
//! | `sim/hang` | starts the task and keeps running |
//! | `sim/no-start` | exits 0 without running the task |
//! | anything else | starts the task, runs `run_for`, completes it, exits 0 |
//!
//! A pod with scheduling gates (Kueue's admission gate: `KubeDouble::set_kueue_webhook`) is left
//! `SchedulingGated` until they are removed (`KubeDouble::admit_kueue_pod`).
//!
//! A pod signalled while it runs (a graceful deletion: `KubeDouble::preempt_pod`, `evict_pod`, or
//! deleted) plays its in-pod `clearml-agent execute --full-monitoring`, the container's PID 1: it
//! marks its task stopped (`tasks.stopped`, not forced: reason `user abort`, message `Changed by
//! clearml-agent <worker>`), as the real one does on SIGTERM, then reports nothing more. A pod
//! failed by the kubelet (`kubelet_evict_pod`) reports nothing: its process was killed.
//!
//! With [`SimOptions::gpus`] set, the cluster has that many `nvidia.com/gpu` and a pod asking for
//! GPUs (its containers' limits) is bound only when they are free: until then it is
//! `Unschedulable` with the scheduler's `Insufficient nvidia.com/gpu` message, and it is bound
//! (in arrival order, smaller pods passing larger ones as the real scheduler lets them) as soon as
//! pods holding GPUs finish or are deleted. Bound pods that have not finished hold their GPUs,
//! terminating ones included, as on a real node.
//!
//! A pod in a gang PodGroup (`spec.schedulingGroup.podGroupName`, the PodGroup API switched on
//! with `KubeDouble::set_pod_group_api`) follows kube-scheduler's GangScheduling plugin: it stays
//! `Pending` with no `PodScheduled` condition while its PodGroup does not exist or fewer than
//! `minCount` pods of the group exist (PreEnqueue rejections are not written to the pod; KEP-5501
//! would add that behind a gate); then the group's waiting pods are placed in one pod group
//! cycle, each in turn on the free GPUs: if fewer than `minCount` can be placed none is bound,
//! each pod gets `PodScheduled=False/Unschedulable` and a `FailedScheduling` event (a pod that
//! fitted, or was not tried: [`gang_unschedulable_message`], the plugin's `PlacementFeasible`
//! wording; a pod that did not fit: [`INSUFFICIENT_GPU`], its own filter verdict, as
//! `submitPodGroupAlgorithmResult` passes it), and the PodGroup's scheduled condition goes
//! `False/Unschedulable` with the gang message; else they bind together and the condition goes
//! `True/Scheduled` (never back to `False`). Whether kube-scheduler appends other reasons to the
//! group message is not shown by the source read; the double does not. A `basic` PodGroup
//! schedules pod by pod; group preemption is not reproduced. Job-mode pods get the rule from the
//! template's `schedulingGroup`.
//!
//! The task a pod serves is its `clearml-task-id` label; a pod without that label (the Python
//! glue's before 2026) serves the task its name carries (`clearml-id-<task>`). Pods that serve no
//! task (the agent's own pod) are left alone.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::{
    sync::{Notify, oneshot},
    task::JoinHandle,
};

use crate::{
    clearml::ClearmlDouble,
    k8s::{EventKind, KubeDouble, gang_min_count, is_gated, pod_group_name},
};

/// What one simulated pod does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Start the task, run, complete it, exit 0.
    Succeed,
    /// Start the task, then exit with this code (`Error`).
    Exit(i32),
    /// Start the task, then OOM-killed.
    Oom,
    /// Start the task and keep running.
    Hang,
    /// Exit 0 without touching the task.
    NoStart,
    /// Container waits with this reason and message.
    Waiting(String, String),
    /// Unschedulable with this message.
    Unschedulable(String),
    /// Scheduled; the image is being pulled for ever (`ContainerCreating`).
    Pulling,
    /// Start the task, run this long, complete it, exit 0.
    SucceedAfter(Duration),
}

impl Behaviour {
    /// The behaviour a pod's image asks for (see the module table).
    pub fn from_image(image: &str) -> Self {
        match image {
            "sim/pull-error" => Behaviour::Waiting(
                "ErrImagePull".into(),
                "rpc error: code = NotFound desc = failed to pull and unpack image \"sim/pull-error\": not found".into(),
            ),
            "sim/config-error" => {
                Behaviour::Waiting("CreateContainerConfigError".into(), "secret \"missing\" not found".into())
            }
            "sim/unschedulable" => Behaviour::Unschedulable(
                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.".into(),
            ),
            "sim/oom" => Behaviour::Oom,
            "sim/hang" => Behaviour::Hang,
            "sim/no-start" => Behaviour::NoStart,
            "sim/slow-pull" => Behaviour::Pulling,
            other => {
                if let Some(code) = other.strip_prefix("sim/exit-").and_then(|c| c.parse().ok()) {
                    Behaviour::Exit(code)
                } else if let Some(ms) = other.strip_prefix("sim/sleep-").and_then(|c| c.parse().ok()) {
                    Behaviour::SucceedAfter(Duration::from_millis(ms))
                } else {
                    Behaviour::Succeed
                }
            }
        }
    }
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Namespace whose pods are simulated.
    pub namespace: String,
    /// Time from pod creation to Running.
    pub start_delay: Duration,
    /// Time a `Succeed` task runs.
    pub run_for: Duration,
    /// `nvidia.com/gpu` the cluster has (`None`: pods never wait for capacity).
    pub gpus: Option<u64>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            namespace: "clearml".into(),
            start_delay: Duration::from_millis(20),
            run_for: Duration::from_millis(50),
            gpus: None,
        }
    }
}

/// A running simulator; dropping it stops it.
pub struct Simulator {
    join: JoinHandle<()>,
    scheduler: Option<JoinHandle<()>>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.join.abort();
        if let Some(s) = &self.scheduler {
            s.abort();
        }
    }
}

/// The scheduler's message for a pod that asks for more GPUs than are free (worded as
/// kube-scheduler words it for a one-node cluster).
pub const INSUFFICIENT_GPU: &str = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";

/// The message of a gang that cannot be placed whole: the GangScheduling plugin's
/// `PlacementFeasible` wording (kube-scheduler, `gangscheduling.go`), which the pod group
/// scheduling cycle writes on the PodGroup's condition and on the pods that would have fit.
pub fn gang_unschedulable_message(min_count: i64, scheduled: i64, remaining: i64) -> String {
    format!(
        "minCount ({min_count}) cannot be satisfied: {scheduled} scheduled, {remaining} remaining"
    )
}

/// A pod waiting to be bound (for GPUs, or for its gang).
struct Waiter {
    name: String,
    gpus: u64,
    /// `spec.schedulingGroup.podGroupName`.
    group: Option<String>,
    /// Marked `Unschedulable` already.
    told: bool,
    /// `true` once bound, `false` if the pod was deleted first.
    bound: oneshot::Sender<bool>,
}

/// What the scheduler decided for one waiter in a pass.
enum Verdict {
    Bind,
    Unschedulable(String),
}

/// The scheduler for pods that cannot simply be bound at once: GPU capacity (with
/// [`SimOptions::gpus`]) and the GangScheduling plugin's rule for pods in a gang PodGroup. One
/// loop binds waiting pods whenever the store changes (pods finishing or deleted free their
/// GPUs; a PodGroup or a gang's pods appearing).
struct GpuScheduler {
    /// `None`: GPUs are never short.
    capacity: Option<u64>,
    queue: Mutex<VecDeque<Waiter>>,
    arrived: Notify,
}

/// What the scheduler reads from the store in one pass.
struct Snapshot {
    used: u64,
    present: HashSet<String>,
    /// PodGroup name → gang minCount (`None`: `basic` policy).
    groups: HashMap<String, Option<i64>>,
    /// PodGroup name → its pods (not being deleted), and how many of them are bound.
    members: HashMap<String, (i64, i64)>,
}

impl GpuScheduler {
    /// Waits until `name` is bound (`true`) or deleted (`false`).
    async fn schedule(&self, name: &str, gpus: u64, group: Option<String>) -> bool {
        let (tx, rx) = oneshot::channel();
        self.queue.lock().push_back(Waiter {
            name: name.to_string(),
            gpus,
            group,
            told: false,
            bound: tx,
        });
        self.arrived.notify_one();
        rx.await.unwrap_or(false)
    }

    fn snapshot(kube: &KubeDouble, ns: &str) -> Snapshot {
        kube.snapshot(|view| {
            let pods = view.list("pods", Some(ns));
            let bound = |p: &Value| p.pointer("/spec/nodeName").is_some();
            let used = pods
                .iter()
                .filter(|p| {
                    bound(p)
                        && !matches!(
                            p.pointer("/status/phase").and_then(Value::as_str),
                            Some("Succeeded" | "Failed")
                        )
                })
                .map(|p| gpu_request(p))
                .sum();
            let present = pods
                .iter()
                .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect();
            let mut members: HashMap<String, (i64, i64)> = HashMap::new();
            for p in pods
                .iter()
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            {
                if let Some(g) = pod_group_name(p) {
                    let e = members.entry(g.to_string()).or_default();
                    e.0 += 1;
                    if bound(p) {
                        e.1 += 1;
                    }
                }
            }
            let groups = view
                .list("podgroups", Some(ns))
                .into_iter()
                .filter_map(|g| {
                    let name = g.pointer("/metadata/name").and_then(Value::as_str)?;
                    Some((name.to_string(), gang_min_count(g)))
                })
                .collect();
            Snapshot {
                used,
                present,
                groups,
                members,
            }
        })
    }

    async fn run(self: Arc<Self>, kube: Arc<KubeDouble>, ns: String) {
        loop {
            if self.queue.lock().is_empty() {
                self.arrived.notified().await;
            }
            let rv = kube.resource_version();
            let snap = Self::snapshot(&kube, &ns);
            let mut free = self
                .capacity
                .map_or(u64::MAX, |c| c.saturating_sub(snap.used));
            let mut unschedulable: Vec<(String, String)> = Vec::new();
            let mut group_verdicts: Vec<(String, Option<String>)> = Vec::new();
            {
                let mut queue = self.queue.lock();
                let mut pending: VecDeque<Waiter> = std::mem::take(&mut *queue);
                let mut keep = VecDeque::new();
                while let Some(w) = pending.pop_front() {
                    if !snap.present.contains(&w.name) {
                        let _ = w.bound.send(false);
                        continue;
                    }
                    let gang = w.group.as_ref().map(|g| (g.clone(), snap.groups.get(g)));
                    let min = match gang {
                        // PreEnqueue: the PodGroup does not exist yet
                        Some((_, None)) => {
                            keep.push_back(w);
                            continue;
                        }
                        Some((g, Some(Some(min)))) => Some((g, *min)),
                        // no group, or a `basic` one: pod by pod
                        _ => None,
                    };
                    let Some((group, min)) = min else {
                        let verdict = if w.gpus <= free {
                            free -= w.gpus;
                            Verdict::Bind
                        } else {
                            Verdict::Unschedulable(INSUFFICIENT_GPU.to_string())
                        };
                        Self::settle(&kube, &ns, w, verdict, &mut keep, &mut unschedulable);
                        continue;
                    };
                    let (count, already_bound) =
                        snap.members.get(&group).copied().unwrap_or_default();
                    // PreEnqueue: fewer than minCount pods of the gang exist
                    let mut gang_waiters = vec![w];
                    let mut rest = VecDeque::new();
                    for o in pending.drain(..) {
                        if o.group.as_deref() == Some(group.as_str()) {
                            gang_waiters.push(o);
                        } else {
                            rest.push_back(o);
                        }
                    }
                    pending = rest;
                    if count < min {
                        keep.extend(gang_waiters);
                        continue;
                    }
                    // one pod group scheduling cycle: pods evaluated in turn on the free GPUs
                    let n = gang_waiters.len() as i64;
                    let mut trial = free;
                    let mut fits = Vec::with_capacity(gang_waiters.len());
                    let (mut scheduled, mut failed) = (already_bound, 0);
                    let mut infeasible = None;
                    for gw in &gang_waiters {
                        if infeasible.is_some() {
                            fits.push(None);
                            continue;
                        }
                        if gw.gpus <= trial {
                            trial -= gw.gpus;
                            scheduled += 1;
                            fits.push(Some(true));
                        } else {
                            failed += 1;
                            fits.push(Some(false));
                        }
                        let remaining = n - (scheduled - already_bound) - failed;
                        if scheduled + remaining < min {
                            infeasible =
                                Some(gang_unschedulable_message(min, scheduled, remaining));
                        }
                    }
                    match infeasible {
                        None => {
                            free = trial;
                            for (gw, fit) in gang_waiters.into_iter().zip(fits) {
                                let verdict = if fit == Some(true) {
                                    Verdict::Bind
                                } else {
                                    Verdict::Unschedulable(INSUFFICIENT_GPU.to_string())
                                };
                                Self::settle(
                                    &kube,
                                    &ns,
                                    gw,
                                    verdict,
                                    &mut keep,
                                    &mut unschedulable,
                                );
                            }
                            group_verdicts.push((group, None));
                        }
                        Some(message) => {
                            for (gw, fit) in gang_waiters.into_iter().zip(fits) {
                                let why = if fit == Some(false) {
                                    INSUFFICIENT_GPU.to_string()
                                } else {
                                    message.clone()
                                };
                                let verdict = Verdict::Unschedulable(why);
                                Self::settle(
                                    &kube,
                                    &ns,
                                    gw,
                                    verdict,
                                    &mut keep,
                                    &mut unschedulable,
                                );
                            }
                            group_verdicts.push((group, Some(message)));
                        }
                    }
                }
                keep.extend(pending);
                *queue = keep;
            }
            for (name, message) in unschedulable {
                let _ = kube.record_pod_event(
                    &ns,
                    &name,
                    "Warning",
                    "FailedScheduling",
                    &message,
                    "default-scheduler",
                );
                let _ = kube.set_pod_unschedulable(&ns, &name, &message);
            }
            for (group, failure) in group_verdicts {
                let _ = match failure {
                    None => kube.set_pod_group_scheduled(&ns, &group, true, "Scheduled", ""),
                    Some(m) => {
                        kube.set_pod_group_scheduled(&ns, &group, false, "Unschedulable", &m)
                    }
                };
            }
            // wait for a change to the store (a pod finished or went) or a new waiter
            tokio::select! {
                _ = kube.wait_for(Duration::from_secs(3600), |view| {
                    (view.resource_version() > rv).then_some(())
                }) => {}
                _ = self.arrived.notified() => {}
            }
        }
    }

    /// Carries out a verdict: binds (the pod leaves the queue) or keeps the pod waiting,
    /// reporting it unschedulable the first time.
    fn settle(
        kube: &KubeDouble,
        ns: &str,
        mut w: Waiter,
        verdict: Verdict,
        keep: &mut VecDeque<Waiter>,
        unschedulable: &mut Vec<(String, String)>,
    ) {
        match verdict {
            Verdict::Bind => {
                let ok = kube
                    .set_pod_waiting(ns, &w.name, "ContainerCreating", "")
                    .is_ok();
                let _ = w.bound.send(ok);
            }
            Verdict::Unschedulable(message) => {
                if !w.told {
                    w.told = true;
                    unschedulable.push((w.name.clone(), message));
                }
                keep.push_back(w);
            }
        }
    }
}

/// GPUs a pod asks for: the sum of its containers' `nvidia.com/gpu` limits.
fn gpu_request(pod: &Value) -> u64 {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/resources/limits/nvidia.com~1gpu"))
        .filter_map(|v| match v {
            Value::String(s) => s.parse().ok(),
            other => other.as_u64(),
        })
        .sum()
}

impl Simulator {
    /// Starts simulating every pod that appears in `options.namespace`.
    pub fn start(kube: Arc<KubeDouble>, clearml: Arc<ClearmlDouble>, options: SimOptions) -> Self {
        let gpus = Arc::new(GpuScheduler {
            capacity: options.gpus,
            queue: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
        });
        let scheduler = Some(tokio::spawn(
            gpus.clone().run(kube.clone(), options.namespace.clone()),
        ));
        let join = tokio::spawn(async move {
            let mut seen: HashSet<String> = HashSet::new();
            // resourceVersion already looked at: later checks read only the changes since
            // (creations), not every pod, so a check costs what changed, not the pod count
            let mut checked: Option<u64> = None;
            loop {
                let ns = options.namespace.clone();
                let fresh = kube
                    .wait_for(Duration::from_secs(24 * 3600), |view| {
                        let candidates: Vec<&Value> = match checked
                            .and_then(|rv| view.changes_since("pods", Some(&ns), rv))
                        {
                            Some(changes) => changes
                                .into_iter()
                                .filter(|(kind, _)| *kind == EventKind::Added)
                                .map(|(_, pod)| pod)
                                .collect(),
                            None => view.list("pods", Some(&ns)),
                        };
                        checked = Some(view.resource_version());
                        let pods: Vec<Value> = candidates
                            .into_iter()
                            .filter(|p| !seen.contains(uid(p)))
                            .cloned()
                            .collect();
                        (!pods.is_empty()).then_some(pods)
                    })
                    .await;
                let Ok(fresh) = fresh else { continue };
                for pod in fresh {
                    seen.insert(uid(&pod).to_string());
                    let (kube, clearml, opts) = (kube.clone(), clearml.clone(), options.clone());
                    let gpus = gpus.clone();
                    tokio::spawn(async move { run_pod(&kube, &clearml, &opts, &gpus, &pod).await });
                }
            }
        });
        Self { join, scheduler }
    }
}

fn uid(pod: &Value) -> &str {
    pod.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether the pod `name` (uid `uid`) still runs: not deleted, not being deleted, not ended.
fn still_running(kube: &KubeDouble, ns: &str, name: &str, uid: &str) -> bool {
    kube.get("pods", ns, name).is_some_and(|p| {
        p.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid)
            && p.pointer("/metadata/deletionTimestamp").is_none()
            && !matches!(
                p.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            )
    })
}

/// Waits until the pod is signalled (a graceful deletion: `deletionTimestamp` set), gone or
/// finished, at most `limit` (`None`: no limit); true if that happened.
async fn signalled(
    kube: &KubeDouble,
    ns: &str,
    name: &str,
    uid: &str,
    limit: Option<Duration>,
) -> bool {
    kube.wait_for(
        limit.unwrap_or(Duration::from_secs(24 * 3600)),
        |view| match view.get("pods", ns, name) {
            Some(p) if p.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid) => {
                let ended = p.pointer("/metadata/deletionTimestamp").is_some()
                    || matches!(
                        p.pointer("/status/phase").and_then(Value::as_str),
                        Some("Succeeded" | "Failed")
                    );
                ended.then_some(())
            }
            _ => Some(()),
        },
    )
    .await
    .is_ok()
}

/// What the in-pod `clearml-agent execute --full-monitoring` (the container's PID 1) does on the
/// SIGTERM of a graceful deletion, the cluster's or anyone's: its `Sigterm` ends the run as
/// interrupted and `handle_task_process_termination` calls `tasks.stopped` (not forced) with
/// reason `user abort` and message `Changed by clearml-agent <worker>` (clearml-agent
/// `commands/worker.py`). The server refuses it unless the task may go to `stopped`.
fn answer_sigterm(clearml: &ClearmlDouble, task: &str, pod: &Value) {
    let worker = pod
        .pointer("/spec/containers/0/env")
        .and_then(Value::as_array)
        .and_then(|env| {
            env.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some("CLEARML_WORKER_ID"))
        })
        .and_then(|e| e.get("value").and_then(Value::as_str))
        .unwrap_or("k8s");
    let _ = clearml.call(
        "tasks.stopped",
        json!({"task": task, "status_reason": "user abort", "status_message": format!("Changed by clearml-agent {worker}")}),
    );
}

fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// The task id in a pod name `clearml-id-<task>` (or `clearml-id-<task>-<rank>`).
fn task_from_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("clearml-id-")?;
    let task = rest.split('-').next().unwrap_or(rest);
    (!task.is_empty()).then_some(task)
}

/// The in-pod agent's start: dequeue from the pending queue (abort if not queued), then started.
fn start_task(clearml: &ClearmlDouble, task: &str) -> bool {
    let dequeued = clearml.call(
        "tasks.dequeue",
        json!({"task": task, "new_status": "in_progress"}),
    );
    let updated = dequeued
        .as_ref()
        .ok()
        .and_then(|d| d.get("updated"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if updated < 1 {
        return false;
    }
    clearml
        .call(
            "tasks.started",
            json!({"task": task, "force": true, "status_reason": "starting execution soon"}),
        )
        .is_ok()
}

async fn run_pod(
    kube: &KubeDouble,
    clearml: &ClearmlDouble,
    opts: &SimOptions,
    scheduler: &GpuScheduler,
    pod: &Value,
) {
    let ns = opts.namespace.as_str();
    let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) else {
        return;
    };
    let image = pod
        .pointer("/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let task = label(pod, "clearml-task-id")
        .or_else(|| task_from_name(name))
        .unwrap_or_default()
        .to_string();
    if task.is_empty() {
        return; // not a task pod (e.g. the agent's own pod): left as it is
    }
    // Multi-node: only rank 0 drives the ClearML task.
    // (a Job's pods: the completion index the Job controller gives them)
    let rank = label(pod, "clearml-rank")
        .or_else(|| label(pod, "batch.kubernetes.io/job-completion-index"));
    let drives_task = !task.is_empty() && rank.is_none_or(|r| r == "0");
    tokio::time::sleep(opts.start_delay).await;
    // the scheduler leaves a gated pod alone until its gates are removed (Kueue's admission)
    if kube.get("pods", ns, name).is_some_and(|p| is_gated(&p)) {
        let _ = kube.set_pod_scheduling_gated(ns, name);
        let pod_uid = uid(pod).to_string();
        let released = kube
            .wait_for(Duration::from_secs(24 * 3600), |view| {
                match view.get("pods", ns, name) {
                    Some(p)
                        if p.pointer("/metadata/uid").and_then(Value::as_str) == Some(&pod_uid) =>
                    {
                        (!is_gated(p)).then_some(true)
                    }
                    _ => Some(false),
                }
            })
            .await;
        if !matches!(released, Ok(true)) {
            return; // deleted while gated
        }
    }
    let behaviour = Behaviour::from_image(image);
    let wants = gpu_request(pod);
    let group = pod_group_name(pod).map(str::to_string);
    let waits = group.is_some() || (scheduler.capacity.is_some() && wants > 0);
    if waits
        && !matches!(behaviour, Behaviour::Unschedulable(_))
        && !scheduler.schedule(name, wants, group).await
    {
        return; // deleted before it could be bound
    }
    let result = match &behaviour {
        Behaviour::Pulling => {
            let _ = kube.record_pod_event(
                ns,
                name,
                "Normal",
                "Pulling",
                &format!("Pulling image {image:?}"),
                "kubelet",
            );
            kube.set_pod_waiting(ns, name, "ContainerCreating", "")
        }
        Behaviour::Waiting(reason, message) => {
            // the kubelet's events, worded as it words them
            let event = if reason == "ErrImagePull" {
                format!("Failed to pull image {image:?}: {message}")
            } else {
                format!("Error: {message}")
            };
            let _ = kube.record_pod_event(ns, name, "Warning", "Failed", &event, "kubelet");
            kube.set_pod_waiting(ns, name, reason, message)
        }
        Behaviour::Unschedulable(message) => {
            let _ = kube.record_pod_event(
                ns,
                name,
                "Warning",
                "FailedScheduling",
                message,
                "default-scheduler",
            );
            kube.set_pod_unschedulable(ns, name, message)
        }
        Behaviour::NoStart => match kube.set_pod_running(ns, name) {
            Ok(()) => kube.set_pod_succeeded(ns, name),
            Err(e) => Err(e),
        },
        Behaviour::Succeed
        | Behaviour::SucceedAfter(_)
        | Behaviour::Exit(_)
        | Behaviour::Oom
        | Behaviour::Hang => {
            if kube.set_pod_running(ns, name).is_err() {
                return; // deleted meanwhile
            }
            if drives_task && !start_task(clearml, &task) {
                // `--require-queue`: "Execution required enqueued task, but task … is not queued"
                let _ = kube.set_pod_failed(ns, name, 1, "Error");
                return;
            }
            match behaviour {
                Behaviour::Hang => {
                    if signalled(kube, ns, name, uid(pod), None).await && drives_task {
                        answer_sigterm(clearml, &task, pod);
                    }
                    return;
                }
                Behaviour::Oom => kube.set_pod_oom_killed(ns, name),
                Behaviour::Exit(code) => {
                    if drives_task {
                        let _ = clearml.call(
                            "tasks.failed",
                            json!({"task": task, "force": true, "status_reason": format!("worker execution exit code {code}")}),
                        );
                    }
                    kube.set_pod_failed(ns, name, code, "Error")
                }
                _ => {
                    let run_for = match behaviour {
                        Behaviour::SucceedAfter(d) => d,
                        _ => opts.run_for,
                    };
                    if signalled(kube, ns, name, uid(pod), Some(run_for)).await {
                        // taken away meanwhile (preempted, evicted, deleted): a graceful
                        // deletion signals the in-pod agent, which answers; a pod gone at once
                        // (or failed by the kubelet) reports nothing
                        if drives_task && kube.get("pods", ns, name).is_some() {
                            answer_sigterm(clearml, &task, pod);
                        }
                        return;
                    }
                    if !still_running(kube, ns, name, uid(pod)) {
                        return;
                    }
                    if drives_task {
                        let status = clearml.task(&task).and_then(|t| t.get("status").cloned());
                        if status.as_ref().and_then(Value::as_str) == Some("in_progress") {
                            let _ = clearml.call(
                                "tasks.completed",
                                json!({"task": task, "status_reason": "worker execution done"}),
                            );
                        }
                    }
                    kube.set_pod_succeeded(ns, name)
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(
            pod = name,
            ?error,
            "simulated pod gone before its next state"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use serde_json::{Value, json};

    use super::*;
    use crate::k8s::PodGroupApi;

    const NS: &str = "default";
    const WAIT: Duration = Duration::from_secs(10);

    /// A pod that never drives a task (rank ≠ 0) and keeps running once bound.
    fn pod(name: &str, gpus: u64, group: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": NS,
                "labels": {"clearml-task-id": "t", "clearml-rank": "1"}},
            "spec": {"containers": [{"name": "c", "image": "sim/hang"}]}});
        if gpus > 0 {
            p["spec"]["containers"][0]["resources"] =
                json!({"limits": {"nvidia.com/gpu": gpus.to_string()}});
        }
        if let Some(g) = group {
            p["spec"]["schedulingGroup"] = json!({"podGroupName": g});
        }
        p
    }

    fn gang(name: &str, min: i64) -> Value {
        json!({"metadata": {"name": name, "namespace": NS},
            "spec": {"schedulingPolicy": {"gang": {"minCount": min}}}})
    }

    async fn start(gpus: Option<u64>) -> (Arc<KubeDouble>, Simulator) {
        let kube = Arc::new(KubeDouble::start().await.expect("kube"));
        kube.set_pod_group_api(Some(PodGroupApi::V1alpha2));
        let clearml = Arc::new(ClearmlDouble::start().await.expect("clearml"));
        let options = SimOptions {
            namespace: NS.into(),
            start_delay: Duration::from_millis(1),
            gpus,
            ..Default::default()
        };
        let sim = Simulator::start(kube.clone(), clearml, options);
        (kube, sim)
    }

    fn bound(kube: &KubeDouble, name: &str) -> bool {
        kube.get("pods", NS, name)
            .is_some_and(|p| p.pointer("/spec/nodeName").is_some())
    }

    async fn wait_bound(kube: &KubeDouble, names: &[&str]) {
        kube.wait_for(WAIT, |v| {
            names
                .iter()
                .all(|n| {
                    v.get("pods", NS, n)
                        .is_some_and(|p| p.pointer("/spec/nodeName").is_some())
                })
                .then_some(())
        })
        .await
        .expect("bound");
    }

    /// The `(status, reason, message)` of an object's condition of type `ty`.
    fn condition_of(obj: &Value, ty: &str) -> Option<(String, String, String)> {
        obj.pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c["type"] == ty)
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("status"), s("reason"), s("message"))
            })
    }

    fn scheduled_condition(p: &Value) -> Option<(String, String, String)> {
        condition_of(p, "PodScheduled")
    }

    fn group_condition(pg: &Value) -> Option<(String, String, String)> {
        condition_of(pg, "PodGroupScheduled")
    }

    #[tokio::test]
    async fn gang_binds_whole_or_not_at_all() {
        let (kube, _sim) = start(Some(4)).await;
        kube.create("pods", NS, pod("holder", 2, None))
            .expect("holder");
        wait_bound(&kube, &["holder"]).await;
        kube.create("podgroups", NS, gang("g", 3)).expect("group");
        let ranks = ["g-0", "g-1", "g-2"];
        for r in ranks {
            kube.create("pods", NS, pod(r, 1, Some("g"))).expect("rank");
        }
        let message = gang_unschedulable_message(3, 2, 0);
        kube.wait_for(WAIT, |v| {
            ranks
                .iter()
                .all(|r| v.get("pods", NS, r).and_then(scheduled_condition).is_some())
                .then_some(())
        })
        .await
        .expect("reported");
        let mut messages = Vec::new();
        for r in ranks {
            assert!(!bound(&kube, r), "{r} bound while the gang does not fit");
            let (status, reason, msg) = kube
                .get("pods", NS, r)
                .and_then(|p| scheduled_condition(&p))
                .expect("cond");
            assert_eq!(
                (status.as_str(), reason.as_str()),
                ("False", "Unschedulable")
            );
            messages.push(msg);
        }
        assert_eq!(
            messages,
            vec![
                message.clone(),
                message.clone(),
                INSUFFICIENT_GPU.to_string()
            ]
        );
        let events = kube.list("events", Some(NS));
        for r in ranks {
            assert!(
                events
                    .iter()
                    .any(|e| e["involvedObject"]["name"] == r && e["reason"] == "FailedScheduling")
            );
        }
        let cond = kube
            .wait_for(WAIT, |v| {
                v.get("podgroups", NS, "g").and_then(group_condition)
            })
            .await
            .expect("group cond");
        assert_eq!(
            Some(cond),
            Some(("False".into(), "Unschedulable".into(), message))
        );
        kube.delete("pods", NS, "holder").expect("free GPUs");
        wait_bound(&kube, &ranks).await;
        let cond = kube
            .wait_for(WAIT, |v| {
                v.get("podgroups", NS, "g")
                    .and_then(group_condition)
                    .filter(|c| c.0 == "True")
            })
            .await
            .expect("group scheduled");
        assert_eq!(cond.1, "Scheduled");
    }

    #[tokio::test]
    async fn gang_waits_for_its_pod_group_and_quorum() {
        let (kube, _sim) = start(None).await;
        // the PodGroup does not exist yet
        kube.create("pods", NS, pod("a-0", 0, Some("a")))
            .expect("rank");
        kube.create("pods", NS, pod("a-1", 0, Some("a")))
            .expect("rank");
        kube.create("pods", NS, pod("plain-1", 0, None))
            .expect("plain");
        wait_bound(&kube, &["plain-1"]).await;
        for r in ["a-0", "a-1"] {
            assert!(!bound(&kube, r));
            // a PreEnqueue rejection writes no condition
            assert_eq!(
                kube.get("pods", NS, r)
                    .and_then(|p| scheduled_condition(&p)),
                None
            );
        }
        kube.create("podgroups", NS, gang("a", 2)).expect("group");
        wait_bound(&kube, &["a-0", "a-1"]).await;

        // fewer than minCount pods
        kube.create("podgroups", NS, gang("b", 2)).expect("group");
        kube.create("pods", NS, pod("b-0", 0, Some("b")))
            .expect("rank");
        kube.create("pods", NS, pod("plain-2", 0, None))
            .expect("plain");
        wait_bound(&kube, &["plain-2"]).await;
        assert!(!bound(&kube, "b-0"));
        kube.create("pods", NS, pod("b-1", 0, Some("b")))
            .expect("rank");
        wait_bound(&kube, &["b-0", "b-1"]).await;

        // basic policy: pod by pod
        kube.create(
            "podgroups",
            NS,
            json!({"metadata": {"name": "c", "namespace": NS},
            "spec": {"schedulingPolicy": {"basic": {}}}}),
        )
        .expect("group");
        kube.create("pods", NS, pod("c-0", 0, Some("c")))
            .expect("rank");
        wait_bound(&kube, &["c-0"]).await;
    }
}
