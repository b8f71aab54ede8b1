//! One scenario's world: fresh doubles, the task namespace, a kubeconfig, the simulator playing
//! kubelet and the in-pod agent, the ClearML queues and tasks; and the contender (our agent or the
//! Python glue) started against it. Every scenario and side gets a fresh world, so no state or
//! request count leaks from one measurement into the next.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::json;

use super::{
    Side,
    glue::{self, GlueProcess, GlueSpec},
    procstat,
};
use crate::agent::{AgentProcess, AgentSpec};
use clearml_doubles::{
    clearml::ClearmlDouble,
    k8s::KubeDouble,
    sim::{SimOptions, Simulator},
};

/// Namespace of the task pods (and of the agent).
pub const NAMESPACE: &str = "clearml";
/// Image of every benchmark task (the agent's default image, named on the task so both sides
/// render it without extra calls).
pub const TASK_IMAGE: &str = "python:3.11-slim";
/// How long a contender may take to become ready.
const READY: Duration = Duration::from_secs(120);

/// The doubles and the simulator of one measurement.
pub struct World {
    /// The ClearML double.
    pub clearml: Arc<ClearmlDouble>,
    /// The Kubernetes double.
    pub kube: Arc<KubeDouble>,
    /// Kubeconfig pointing at the Kubernetes double.
    pub kubeconfig: PathBuf,
    /// Working directory (logs, values, the glue's HOME).
    pub dir: PathBuf,
    _sim: Simulator,
}

impl World {
    /// Starts the doubles, the namespace and the simulator; `dir` must exist.
    pub async fn new(dir: PathBuf, sim: SimOptions) -> anyhow::Result<Self> {
        let clearml = Arc::new(ClearmlDouble::start().await?);
        let kube = Arc::new(KubeDouble::start().await?);
        kube.create(
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        )
        .map_err(|e| anyhow::anyhow!("namespace: {e:?}"))?;
        let kubeconfig = dir.join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig, NAMESPACE)?;
        let sim = Simulator::start(
            kube.clone(),
            clearml.clone(),
            SimOptions {
                namespace: NAMESPACE.into(),
                ..sim
            },
        );
        Ok(Self {
            clearml,
            kube,
            kubeconfig,
            dir,
            _sim: sim,
        })
    }

    /// Creates `n` queues `bench-NN`; returns (name, id) pairs.
    pub fn queues(&self, n: usize) -> anyhow::Result<Vec<(String, String)>> {
        (0..n)
            .map(|i| {
                let name = format!("bench-{i:03}");
                let id = self
                    .clearml
                    .create_queue(&name)
                    .map_err(|e| anyhow::anyhow!("queue {name}: {e}"))?;
                Ok((name, id))
            })
            .collect()
    }

    /// Creates `n` draft training tasks whose container image is `image`; returns their ids.
    pub fn tasks(&self, n: usize, image: &str) -> anyhow::Result<Vec<String>> {
        (0..n)
            .map(|i| {
                self.clearml
                    .create_task(
                        &format!("bench-task-{i}"),
                        json!({"container": {"image": image}}),
                    )
                    .map_err(|e| anyhow::anyhow!("task {i}: {e}"))
            })
            .collect()
    }

    /// Enqueues `task` into `queue` (in-process: not in the request log); returns when it is in.
    pub fn enqueue(&self, task: &str, queue: &str) -> anyhow::Result<Instant> {
        self.clearml
            .enqueue(task, queue)
            .map_err(|e| anyhow::anyhow!("enqueue {task}: {e}"))?;
        Ok(Instant::now())
    }

    /// Starts `side` serving `queues` and waits until it is ready.
    pub async fn start(
        &self,
        side: Side,
        queues: &[(String, String)],
        glue_python: Option<&PathBuf>,
    ) -> anyhow::Result<Contender> {
        let names: Vec<String> = queues.iter().map(|(n, _)| n.clone()).collect();
        match side {
            Side::Agent => {
                let mut values = String::from("agentk8sglue:\n  queues:\n");
                for name in &names {
                    values.push_str(&format!("    {name}: {{}}\n"));
                }
                let spec = AgentSpec {
                    values,
                    clearml_url: self.clearml.url(),
                    credentials: self.clearml.credentials(),
                    kubeconfig: self.kubeconfig.clone(),
                    namespace: NAMESPACE.into(),
                    dir: self.dir.clone(),
                    config_map: None,
                    env: Vec::new(),
                };
                let agent = AgentProcess::start(&spec, READY).await?;
                Ok(Contender::Agent(agent))
            }
            Side::PythonGlue => {
                let python = glue_python.context("the Python glue venv is not available")?;
                let spec = GlueSpec {
                    python: python.clone(),
                    clearml_url: self.clearml.url(),
                    credentials: self.clearml.credentials(),
                    kubeconfig: self.kubeconfig.clone(),
                    namespace: NAMESPACE.into(),
                    queues: names,
                    default_image: TASK_IMAGE.into(),
                    dir: self.dir.clone(),
                };
                let glue = GlueProcess::start(&spec, &self.clearml, READY).await?;
                Ok(Contender::Glue(glue))
            }
        }
    }

    /// ClearML status of `task`.
    fn status(&self, task: &str) -> String {
        self.clearml
            .task(task)
            .and_then(|d| d.get("status").and_then(|s| s.as_str().map(str::to_string)))
            .unwrap_or_default()
    }

    /// How many of `tasks` ClearML has as `failed`.
    pub fn failed(&self, tasks: &[&String]) -> usize {
        tasks.iter().filter(|t| self.status(t) == "failed").count()
    }

    /// Waits (up to `timeout`) until none of `tasks` is queued or in progress any more, then
    /// counts the failed ones.
    pub async fn failed_once_finished(&self, tasks: &[&String], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        while Instant::now() < deadline
            && tasks
                .iter()
                .any(|t| matches!(self.status(t).as_str(), "queued" | "in_progress"))
        {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        self.failed(tasks)
    }

    /// Successful pod creations once the request log has caught up with the `seen` pods in the
    /// store (the double logs a request after storing its object), or after 5 s: more than
    /// `seen` (a pod created twice) is returned as it is.
    pub async fn pod_creations_logged(&self, seen: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.pod_creations();
            if n >= seen || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Successful pod creations so far (dry runs excluded).
    pub fn pod_creations(&self) -> usize {
        self.kube
            .requests()
            .iter()
            .filter(|r| {
                r.is("create", "pods")
                    && (200..300).contains(&r.status)
                    && !r.params.contains_key("dryRun")
            })
            .count()
    }

    /// Counters to measure a window with.
    pub fn counters(&self) -> Counters {
        let clearml = self
            .clearml
            .requests()
            .all()
            .into_iter()
            .map(|r| r.endpoint)
            .collect();
        let kube = self
            .kube
            .requests()
            .into_iter()
            .map(|r| {
                if r.resource.is_empty() {
                    format!("{} {}", r.verb, r.path)
                } else if r.subresource.is_empty() {
                    format!("{} {}", r.verb, r.resource)
                } else {
                    format!("{} {}/{}", r.verb, r.resource, r.subresource)
                }
            })
            .collect();
        Counters { clearml, kube }
    }
}

/// The request logs as call names, in order.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    clearml: Vec<String>,
    kube: Vec<String>,
}

/// Calls made between two [`Counters`] snapshots.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    /// ClearML requests by endpoint.
    pub clearml: BTreeMap<String, usize>,
    /// Kubernetes requests by `verb resource`.
    pub kube: BTreeMap<String, usize>,
}

impl Calls {
    /// Calls in `after` that were not in `before` (logs only grow).
    pub fn between(before: &Counters, after: &Counters) -> Self {
        let tally = |from: usize, calls: &[String]| {
            let mut out = BTreeMap::new();
            for c in calls.iter().skip(from) {
                *out.entry(c.clone()).or_insert(0) += 1;
            }
            out
        };
        Self {
            clearml: tally(before.clearml.len(), &after.clearml),
            kube: tally(before.kube.len(), &after.kube),
        }
    }

    /// Total ClearML requests.
    pub fn clearml_total(&self) -> usize {
        self.clearml.values().sum()
    }

    /// Total Kubernetes requests.
    pub fn kube_total(&self) -> usize {
        self.kube.values().sum()
    }
}

/// A running contender.
pub enum Contender {
    /// Our agent binary.
    Agent(AgentProcess),
    /// The Python glue.
    Glue(GlueProcess),
}

impl Contender {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        match self {
            Contender::Agent(a) => a.pid(),
            Contender::Glue(g) => g.pid(),
        }
    }

    /// The tail of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            Contender::Agent(a) => super::tail(&a.log_text(), lines),
            Contender::Glue(g) => g.log_tail(lines),
        }
    }

    /// Stops it (SIGKILL: nothing of its shutdown is measured).
    pub fn stop(self) {
        match self {
            Contender::Agent(mut a) => a.kill(),
            Contender::Glue(mut g) => g.kill(),
        }
    }
}

/// Resource use and calls of a contender over a window.
pub struct Window {
    started: Instant,
    cpu0: f64,
    harness_cpu0: f64,
    counters: Counters,
    ticks: f64,
    pid: u32,
    sampler: procstat::Sampler,
}

/// What a [`Window`] measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Window length.
    pub secs: f64,
    /// CPU seconds the contender (and the children it waited for) used in the window.
    pub cpu_secs: Option<f64>,
    /// CPU seconds of this process (doubles, simulator, load generator) in the window.
    pub harness_cpu_secs: Option<f64>,
    /// Memory peak and end.
    pub memory: procstat::MemoryPeak,
    /// Calls in the window.
    pub calls: Calls,
}

impl Window {
    /// Opens a window on `contender`.
    pub fn open(world: &World, contender: &Contender, ticks: f64) -> Self {
        let pid = contender.pid();
        Self {
            started: Instant::now(),
            cpu0: procstat::cpu_seconds(pid, ticks).unwrap_or(f64::NAN),
            harness_cpu0: procstat::cpu_seconds(std::process::id(), ticks).unwrap_or(f64::NAN),
            counters: world.counters(),
            ticks,
            pid,
            sampler: procstat::Sampler::start(pid),
        }
    }

    /// Closes the window (the contender must still be running).
    pub fn close(self, world: &World) -> Measured {
        let secs = self.started.elapsed().as_secs_f64();
        let cpu = procstat::cpu_seconds(self.pid, self.ticks).map(|c| c - self.cpu0);
        let harness =
            procstat::cpu_seconds(std::process::id(), self.ticks).map(|c| c - self.harness_cpu0);
        let memory = self.sampler.finish();
        let after = world.counters();
        Measured {
            secs,
            cpu_secs: cpu.filter(|c| c.is_finite()),
            harness_cpu_secs: harness.filter(|c| c.is_finite()),
            memory,
            calls: Calls::between(&self.counters, &after),
        }
    }
}

/// Reads the glue's versions for the report.
pub fn glue_versions(python: &std::path::Path) -> BTreeMap<String, String> {
    let (py, kubectl) = glue::versions(python);
    BTreeMap::from([
        ("clearml_agent".into(), glue::CLEARML_AGENT_VERSION.into()),
        ("python".into(), py),
        ("kubectl".into(), kubectl),
    ])
}
