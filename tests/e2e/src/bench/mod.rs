//! The benchmark: our agent and the official Python k8s glue, side by side, on the same work
//! against the same in-memory doubles (run by `src/bin/bench.rs`; `--quick` by
//! `tests/bench_quick.rs` in CI).
//!
//! Scenarios ([`Scenario`]): `burst` (N tasks over Q queues, enqueued at once),
//! `burst-slow-clearml` (the same burst against a ClearML double that answers like a real server,
//! a few hundred calls a second: see [`Sizes::slow_clearml`]), `steady` (a fixed
//! enqueue rate for a while), `idle` (many queues, nothing enqueued), `scale` (10,000 live pods
//! tracked by the agent) and `status` (`kubectl clearml status` / `tasks` with those pods). The
//! first four run both contenders, one after the other, each in a fresh world ([`env`]); the
//! last two are ours alone (the glue has neither a pod cache nor a status command).
//!
//! Module map: [`env`] (doubles, simulator, contender processes, measurement windows),
//! [`observe`] (enqueue→pod-created instants, percentiles), [`procstat`] (CPU and memory from
//! `/proc`), [`glue`] (the Python glue's venv, template and process), [`scenarios`] (what each
//! scenario does), [`report`] (the JSON document, the table, the targets).

pub mod env;
pub mod glue;
pub mod observe;
pub mod procstat;
pub mod report;
pub mod scenarios;

use std::{path::PathBuf, time::Duration};

use serde::Serialize;

pub use report::Report;

/// One benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// N tasks over Q queues, all enqueued at once.
    Burst,
    /// The burst against a ClearML double limited to a real server's capacity.
    BurstSlowClearml,
    /// Tasks enqueued at a fixed rate for a fixed time.
    Steady,
    /// Many queues, nothing enqueued.
    Idle,
    /// Many live pods tracked by the agent.
    Scale,
    /// Plugin `status` and `tasks` with many live pods.
    Status,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Burst,
        Scenario::BurstSlowClearml,
        Scenario::Steady,
        Scenario::Idle,
        Scenario::Scale,
        Scenario::Status,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Burst => "burst",
            Scenario::BurstSlowClearml => "burst-slow-clearml",
            Scenario::Steady => "steady",
            Scenario::Idle => "idle",
            Scenario::Scale => "scale",
            Scenario::Status => "status",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the Python glue runs it too.
    pub fn both_sides(self) -> bool {
        matches!(
            self,
            Scenario::Burst | Scenario::BurstSlowClearml | Scenario::Steady | Scenario::Idle
        )
    }
}

/// A contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Our agent binary (`clearml-k8s-agent`).
    Agent,
    /// The official Python glue (`clearml-agent`'s `K8sIntegration`).
    PythonGlue,
}

impl Side {
    /// Its column title.
    pub fn title(self) -> &'static str {
        match self {
            Side::Agent => "agent",
            Side::PythonGlue => "python glue",
        }
    }
}

/// Sizes and timings of every scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizes {
    /// burst: tasks.
    pub burst_tasks: usize,
    /// burst: queues the tasks are spread over.
    pub burst_queues: usize,
    /// steady: tasks enqueued per second.
    pub steady_rate: f64,
    /// steady: seconds of enqueueing.
    pub steady_secs: f64,
    /// steady: queues the tasks are spread over.
    pub steady_queues: usize,
    /// idle: queues served.
    pub idle_queues: usize,
    /// idle: seconds measured.
    pub idle_secs: f64,
    /// scale and status: live pods.
    pub scale_pods: usize,
    /// scale: queues the tasks are spread over.
    pub scale_queues: usize,
    /// scale: seconds measured once every pod runs.
    pub scale_secs: f64,
    /// status: runs of each plugin command.
    pub status_runs: usize,
    /// Simulated pods: creation → Running, milliseconds.
    pub start_delay_ms: u64,
    /// Simulated pods: Running → Succeeded, milliseconds.
    pub run_for_ms: u64,
    /// Our agent: seconds after the last enqueue within which every pod must exist.
    pub agent_drain_secs: f64,
    /// Python glue: seconds after the last enqueue it is given to create the pods; tasks left
    /// count as not dispatched and their latency as a lower bound.
    pub glue_drain_secs: f64,
    /// burst-slow-clearml: what the ClearML double serves (a real server's workers).
    pub slow_clearml: SlowClearml,
    /// burst-slow-clearml: the Python glue's drain time (capped: its rate is what it reached).
    pub slow_glue_drain_secs: f64,
}

/// The ClearML double's capacity in `burst-slow-clearml`: every call occupies one of `workers`
/// for `service_ms` (5 ms × 1 worker ≈ 200 calls/s, about what a real server behind MongoDB
/// answers the agent's enqueues at).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SlowClearml {
    /// Milliseconds one call occupies a worker.
    pub service_ms: u64,
    /// Workers.
    pub workers: usize,
}

impl SlowClearml {
    /// As the double's capacity model.
    pub fn capacity(&self) -> clearml_doubles::clearml::Capacity {
        clearml_doubles::clearml::Capacity {
            service_time: Duration::from_millis(self.service_ms),
            workers: self.workers,
        }
    }
}

impl Sizes {
    /// The sizes.
    pub fn full() -> Self {
        Self {
            burst_tasks: 2000,
            burst_queues: 10,
            steady_rate: 50.0,
            steady_secs: 30.0,
            steady_queues: 10,
            idle_queues: 100,
            idle_secs: 30.0,
            scale_pods: 10_000,
            scale_queues: 10,
            scale_secs: 30.0,
            status_runs: 5,
            start_delay_ms: 200,
            run_for_ms: 1000,
            agent_drain_secs: 120.0,
            glue_drain_secs: 900.0,
            slow_clearml: SlowClearml {
                service_ms: 5,
                workers: 1,
            },
            slow_glue_drain_secs: 120.0,
        }
    }

    /// Tiny sizes that still exercise every path (`--quick`, CI).
    pub fn quick() -> Self {
        Self {
            burst_tasks: 20,
            burst_queues: 2,
            steady_rate: 5.0,
            steady_secs: 2.0,
            steady_queues: 2,
            idle_queues: 10,
            idle_secs: 6.0,
            scale_pods: 100,
            scale_queues: 2,
            scale_secs: 2.0,
            status_runs: 2,
            start_delay_ms: 20,
            run_for_ms: 100,
            agent_drain_secs: 60.0,
            glue_drain_secs: 120.0,
            slow_clearml: SlowClearml {
                service_ms: 5,
                workers: 1,
            },
            slow_glue_drain_secs: 30.0,
        }
    }

    /// Simulated pod start delay.
    pub fn start_delay(&self) -> Duration {
        Duration::from_millis(self.start_delay_ms)
    }

    /// Simulated task run time.
    pub fn run_for(&self) -> Duration {
        Duration::from_millis(self.run_for_ms)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tiny sizes.
    pub quick: bool,
    /// Scenarios to run (run in [`Scenario::ALL`] order).
    pub scenarios: Vec<Scenario>,
    /// The Python glue venv's python; `None` runs our agent only.
    pub glue_python: Option<PathBuf>,
    /// Sizes and timings.
    pub sizes: Sizes,
    /// Directory for the worlds' files (logs, kubeconfigs, the glue's HOME).
    pub work_dir: PathBuf,
}

/// The workspace root (where `target/` and `tests/` are; this crate is `tests/e2e/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or(manifest.clone(), PathBuf::from)
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs the selected scenarios and returns the report (progress goes to stderr).
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    scenarios::run_all(options).await
}
