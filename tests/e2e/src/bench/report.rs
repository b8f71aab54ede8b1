//! The benchmark's results: the JSON document (stable field names, `null` where a figure does not
//! apply, so runs can be compared by a script), the Markdown table printed on stdout (and pasted
//! into the README), and the issue's targets checked against the figures.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, process::Command};

use serde::Serialize;

use super::{Scenario, Side, Sizes, observe::Latency};

/// Version of the JSON layout.
pub const SCHEMA: u32 = 1;

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `--quick` sizes.
    pub quick: bool,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The machine.
    pub machine: Machine,
    /// Sizes and timings used.
    pub sizes: Sizes,
    /// Versions of what ran (agent, clearml-agent, python, kubectl).
    pub versions: BTreeMap<String, String>,
    /// One entry per scenario run.
    pub scenarios: Vec<ScenarioResult>,
    /// The issue's targets, checked.
    pub targets: Vec<Target>,
    /// What differs in the work the two sides do.
    pub differences: Vec<String>,
}

/// The machine the run was taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// `uname -sr`.
    pub kernel: String,
    /// `/proc/loadavg` before the run.
    pub loadavg_before: String,
    /// `/proc/loadavg` after the run.
    pub loadavg_after: String,
}

impl Machine {
    /// Reads `/proc` and `uname` (load after the run is filled in later).
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let kernel = Command::new("uname")
            .arg("-sr")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel,
            loadavg_before: loadavg(),
            loadavg_after: String::new(),
        }
    }
}

/// The first three fields of `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One scenario's figures for both sides.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Which.
    pub scenario: Scenario,
    /// What it did, with its parameters.
    pub description: String,
    /// Our agent.
    pub agent: SideResult,
    /// The Python glue (`null` when not run).
    pub python_glue: Option<SideResult>,
}

/// Wall times of a repeated command.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// Median, ms.
    pub median_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Runs.
    pub runs: usize,
}

impl Timing {
    /// Of these wall times (ms); `None` when empty.
    pub fn of(ms: &[f64]) -> Option<Self> {
        let mut sorted = ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = *sorted.get(sorted.len().checked_sub(1)? / 2)?;
        Some(Self {
            median_ms: median,
            max_ms: *sorted.last()?,
            runs: sorted.len(),
        })
    }
}

/// One side's figures in one scenario; every field is always present (`null` when it does not
/// apply to the scenario).
#[derive(Debug, Clone, Serialize)]
pub struct SideResult {
    /// Which side.
    pub side: Side,
    /// Length of the measured window, s.
    pub window_secs: f64,
    /// Tasks enqueued.
    pub tasks: Option<usize>,
    /// Tasks whose pod was created within the window.
    pub dispatched: Option<usize>,
    /// Successful pod creations (Kubernetes request log).
    pub pod_creations: Option<usize>,
    /// Every task got exactly one pod.
    pub one_pod_per_task: Option<bool>,
    /// Tasks ClearML had as `failed` at the window's end (none should be).
    pub tasks_failed: Option<usize>,
    /// Dispatched tasks per second, first enqueue → last pod created.
    pub tasks_per_sec: Option<f64>,
    /// Enqueue → pod created, over every task (undispatched ones as lower bounds).
    pub latency: Option<Latency>,
    /// ClearML requests in the window.
    pub clearml_requests: usize,
    /// Kubernetes requests in the window.
    pub kube_requests: usize,
    /// ClearML requests per dispatched task.
    pub clearml_per_task: Option<f64>,
    /// Dispatched tasks per ClearML request (the inverse: how much one call carries).
    pub tasks_per_clearml_call: Option<f64>,
    /// Kubernetes requests per dispatched task.
    pub kube_per_task: Option<f64>,
    /// ClearML requests per second of the window.
    pub clearml_per_sec: f64,
    /// Kubernetes requests per second of the window.
    pub kube_per_sec: f64,
    /// CPU seconds in the window (the glue: with the kubectl children it waited for).
    pub cpu_seconds: Option<f64>,
    /// CPU milliseconds per dispatched task.
    pub cpu_ms_per_task: Option<f64>,
    /// CPU use over the window, % of one core.
    pub cpu_percent: Option<f64>,
    /// CPU seconds the benchmark process itself (both doubles, the simulator, the load
    /// generator) used in the window: the cost a side puts on the servers.
    pub harness_cpu_seconds: Option<f64>,
    /// Peak resident memory, MB (the glue: its process tree, sampled).
    pub peak_rss_mb: f64,
    /// Resident memory of the main process at the window's end, MB.
    pub rss_end_mb: f64,
    /// Most processes seen at once (the glue forks kubectl).
    pub max_processes: usize,
    /// Live (Running) pods the agent reported tracking (scale, status).
    pub live_pods: Option<usize>,
    /// `kubectl clearml status` wall time through the default port-forward (status).
    pub status_cmd: Option<Timing>,
    /// `kubectl clearml tasks` wall time through the default port-forward (status).
    pub tasks_cmd: Option<Timing>,
    /// `kubectl clearml status` wall time with `--agent-addr` (status).
    pub status_cmd_direct: Option<Timing>,
    /// `kubectl clearml tasks` wall time with `--agent-addr` (status).
    pub tasks_cmd_direct: Option<Timing>,
    /// ClearML requests in the window by endpoint.
    pub clearml_calls: BTreeMap<String, usize>,
    /// Kubernetes requests in the window by verb and resource.
    pub kube_calls: BTreeMap<String, usize>,
}

/// One of the issue's targets.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub name: String,
    /// The goal, as text.
    pub goal: String,
    /// The figure.
    pub value: Option<f64>,
    /// Met.
    pub met: Option<bool>,
    /// Measured at the issue's sizes (false under `--quick` or smaller flags).
    pub at_issue_size: bool,
}

const MB: f64 = 1e6;

/// Bytes as MB.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

type Cell = fn(&SideResult) -> Option<(f64, String)>;

fn plain(v: Option<f64>) -> Option<(f64, String)> {
    v.map(|v| (v, num(v)))
}

fn count(v: Option<usize>) -> Option<(f64, String)> {
    v.map(|v| (v as f64, v.to_string()))
}

fn latency(r: &SideResult, pick: fn(&Latency) -> f64, name: &str) -> Option<(f64, String)> {
    let l = r.latency.as_ref()?;
    let v = pick(l);
    let mark = if l.lower_bounds.iter().any(|b| b == name) {
        ">"
    } else {
        ""
    };
    Some((v, format!("{mark}{}", num(v))))
}

fn dispatch_rows() -> Vec<(&'static str, Better, Cell)> {
    vec![
        ("tasks with a pod", Better::Neither, |r| {
            Some((
                r.dispatched? as f64,
                format!("{}/{}", r.dispatched?, r.tasks?),
            ))
        }),
        ("exactly one pod per task", Better::Neither, |r| {
            let ok = r.one_pod_per_task?;
            Some((
                f64::from(u8::from(ok)),
                if ok { "yes" } else { "NO" }.into(),
            ))
        }),
        ("tasks failed", Better::Neither, |r| count(r.tasks_failed)),
        ("tasks/s, enqueue → pod created", Better::Higher, |r| {
            plain(r.tasks_per_sec)
        }),
        ("latency p50, ms", Better::Lower, |r| {
            latency(r, |l| l.p50_ms, "p50")
        }),
        ("latency p95, ms", Better::Lower, |r| {
            latency(r, |l| l.p95_ms, "p95")
        }),
        ("latency p99, ms", Better::Lower, |r| {
            latency(r, |l| l.p99_ms, "p99")
        }),
        ("ClearML calls per task", Better::Lower, |r| {
            plain(r.clearml_per_task)
        }),
        ("tasks per ClearML call", Better::Higher, |r| {
            plain(r.tasks_per_clearml_call)
        }),
        ("Kubernetes requests per task", Better::Lower, |r| {
            plain(r.kube_per_task)
        }),
        ("CPU ms per task", Better::Lower, |r| {
            plain(r.cpu_ms_per_task)
        }),
        ("doubles + simulator CPU ms per task", Better::Lower, |r| {
            let d = r.dispatched.filter(|d| *d > 0)? as f64;
            plain(r.harness_cpu_seconds.map(|c| c * 1e3 / d))
        }),
        ("peak RSS, MB", Better::Lower, |r| {
            plain(Some(r.peak_rss_mb))
        }),
    ]
}

fn idle_rows() -> Vec<(&'static str, Better, Cell)> {
    vec![
        ("ClearML requests/s", Better::Lower, |r| {
            plain(Some(r.clearml_per_sec))
        }),
        ("Kubernetes requests/s", Better::Lower, |r| {
            plain(Some(r.kube_per_sec))
        }),
        ("CPU, % of a core", Better::Lower, |r| plain(r.cpu_percent)),
        ("doubles + simulator CPU, % of a core", Better::Lower, |r| {
            plain(r.harness_cpu_seconds.map(|c| c / r.window_secs * 100.0))
        }),
        ("RSS at the end, MB", Better::Lower, |r| {
            plain(Some(r.rss_end_mb))
        }),
        ("peak RSS, MB", Better::Lower, |r| {
            plain(Some(r.peak_rss_mb))
        }),
        ("processes (max)", Better::Lower, |r| {
            count(Some(r.max_processes))
        }),
    ]
}

fn scale_rows() -> Vec<(&'static str, Better, Cell)> {
    vec![
        ("tasks with a pod", Better::Neither, |r| {
            Some((
                r.dispatched? as f64,
                format!("{}/{}", r.dispatched?, r.tasks?),
            ))
        }),
        ("tasks failed", Better::Neither, |r| count(r.tasks_failed)),
        ("live pods tracked", Better::Neither, |r| count(r.live_pods)),
        ("tasks/s, enqueue → pod created", Better::Higher, |r| {
            plain(r.tasks_per_sec)
        }),
        ("ClearML calls per task (dispatch)", Better::Lower, |r| {
            plain(r.clearml_per_task)
        }),
        ("tasks per ClearML call (dispatch)", Better::Higher, |r| {
            plain(r.tasks_per_clearml_call)
        }),
        (
            "ClearML requests/s with the pods live",
            Better::Lower,
            |r| plain(Some(r.clearml_per_sec)),
        ),
        (
            "Kubernetes requests/s with the pods live",
            Better::Lower,
            |r| plain(Some(r.kube_per_sec)),
        ),
        ("CPU with the pods live, % of a core", Better::Lower, |r| {
            plain(r.cpu_percent)
        }),
        ("RSS with the pods live, MB", Better::Lower, |r| {
            plain(Some(r.rss_end_mb))
        }),
        ("peak RSS, MB", Better::Lower, |r| {
            plain(Some(r.peak_rss_mb))
        }),
    ]
}

fn status_rows() -> Vec<(&'static str, Better, Cell)> {
    vec![
        ("live pods", Better::Neither, |r| count(r.live_pods)),
        ("`status`, port-forward: median ms", Better::Lower, |r| {
            plain(r.status_cmd.map(|t| t.median_ms))
        }),
        ("`status`, port-forward: max ms", Better::Lower, |r| {
            plain(r.status_cmd.map(|t| t.max_ms))
        }),
        ("`tasks`, port-forward: median ms", Better::Lower, |r| {
            plain(r.tasks_cmd.map(|t| t.median_ms))
        }),
        ("`tasks`, port-forward: max ms", Better::Lower, |r| {
            plain(r.tasks_cmd.map(|t| t.max_ms))
        }),
        ("`status`, --agent-addr: median ms", Better::Lower, |r| {
            plain(r.status_cmd_direct.map(|t| t.median_ms))
        }),
        ("`tasks`, --agent-addr: median ms", Better::Lower, |r| {
            plain(r.tasks_cmd_direct.map(|t| t.median_ms))
        }),
    ]
}

fn ratio(better: Better, agent: f64, glue: f64) -> String {
    let r = match better {
        Better::Higher => agent / glue,
        Better::Lower => glue / agent,
        Better::Neither => return String::new(),
    };
    if r.is_infinite() && r > 0.0 {
        return "∞".into();
    }
    if !r.is_finite() || r <= 0.0 {
        return "—".into();
    }
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

impl Report {
    /// The Markdown table: one section per scenario, then the targets and the differences.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Machine: {} CPUs ({}), {} GiB, {}; load average {} before, {} after.{}\n",
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.loadavg_before,
            m.loadavg_after,
            if self.quick {
                " QUICK sizes: not comparable with a full run."
            } else {
                ""
            }
        );
        if !self.versions.is_empty() {
            let v: Vec<String> = self
                .versions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "Versions: {}.\n", v.join(", "));
        }
        for s in &self.scenarios {
            let rows = match s.scenario {
                Scenario::Burst | Scenario::BurstSlowClearml | Scenario::Steady => dispatch_rows(),
                Scenario::Idle => idle_rows(),
                Scenario::Scale => scale_rows(),
                Scenario::Status => status_rows(),
            };
            let _ = writeln!(out, "**{}**: {}\n", s.scenario.name(), s.description);
            let glue = s.python_glue.as_ref();
            if glue.is_some() {
                let _ = writeln!(
                    out,
                    "| metric | agent | python glue | agent advantage |\n|---|---:|---:|---:|"
                );
            } else {
                let _ = writeln!(out, "| metric | agent |\n|---|---:|");
            }
            for (label, better, cell) in rows {
                let a = cell(&s.agent);
                let a_text = a.as_ref().map_or("—".to_string(), |x| x.1.clone());
                match glue {
                    Some(g) => {
                        let b = cell(g);
                        let b_text = b.as_ref().map_or("—".to_string(), |x| x.1.clone());
                        let r = match (&a, &b) {
                            (Some(a), Some(b)) => ratio(better, a.0, b.0),
                            _ => String::new(),
                        };
                        let _ = writeln!(out, "| {label} | {a_text} | {b_text} | {r} |");
                    }
                    None => {
                        let _ = writeln!(out, "| {label} | {a_text} |");
                    }
                }
            }
            let _ = writeln!(out);
        }
        if !self.targets.is_empty() {
            let _ = writeln!(
                out,
                "**Targets**\n\n| target | goal | measured | met |\n|---|---|---:|---|"
            );
            for t in &self.targets {
                let met = match (t.met, t.at_issue_size) {
                    (Some(true), true) => "yes",
                    (Some(false), true) => "**no**",
                    (Some(true), false) => "yes (not at the issue's size)",
                    (Some(false), false) => "no (not at the issue's size)",
                    (None, _) => "not measured",
                };
                let v = t.value.map_or("—".into(), num);
                let _ = writeln!(out, "| {} | {} | {v} | {met} |", t.name, t.goal);
            }
            let _ = writeln!(out);
        }
        if !self.differences.is_empty() {
            let _ = writeln!(out, "**What differs in the work each side does**\n");
            for d in &self.differences {
                let _ = writeln!(out, "- {d}");
            }
        }
        out
    }

    /// Writes the JSON document to `path` (creating its directory).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }

    /// The result of `scenario`, if it ran.
    pub fn scenario(&self, scenario: Scenario) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.scenario == scenario)
    }
}

/// Checks the issue's targets against the figures of `report`.
pub fn targets(report: &Report) -> Vec<Target> {
    let full = Sizes::full();
    let sz = &report.sizes;
    let mut out = Vec::new();
    let mut push = |name: &str, goal: &str, value: Option<f64>, ok: fn(f64) -> bool, at: bool| {
        out.push(Target {
            name: name.into(),
            goal: goal.into(),
            value,
            met: value.map(ok),
            at_issue_size: at && !report.quick,
        });
    };
    if let Some(b) = report.scenario(Scenario::Burst) {
        let at = sz.burst_tasks >= full.burst_tasks;
        push(
            "burst: agent tasks/s",
            "≥ 500",
            b.agent.tasks_per_sec,
            |v| v >= 500.0,
            at,
        );
        let vs = b
            .python_glue
            .as_ref()
            .and_then(|g| Some(b.agent.tasks_per_sec? / g.tasks_per_sec?));
        push(
            "burst: agent vs python glue tasks/s",
            "≥ 100×",
            vs,
            |v| v >= 100.0,
            at,
        );
    }
    if let Some(b) = report.scenario(Scenario::BurstSlowClearml) {
        let at = sz.burst_tasks >= full.burst_tasks && sz.slow_clearml == full.slow_clearml;
        push(
            "burst-slow-clearml: agent tasks/s",
            "≥ 500",
            b.agent.tasks_per_sec,
            |v| v >= 500.0,
            at,
        );
        push(
            "burst-slow-clearml: agent ClearML calls per task",
            "≤ 0.1",
            b.agent.clearml_per_task,
            |v| v <= 0.1,
            at,
        );
    }
    if let Some(s) = report.scenario(Scenario::Steady) {
        let at = sz.steady_rate >= full.steady_rate && sz.steady_secs >= full.steady_secs;
        let l = s.agent.latency.as_ref();
        push(
            "steady: agent latency p50",
            "≤ 300 ms",
            l.map(|l| l.p50_ms),
            |v| v <= 300.0,
            at,
        );
        push(
            "steady: agent latency p99",
            "≤ 1000 ms",
            l.map(|l| l.p99_ms),
            |v| v <= 1000.0,
            at,
        );
    }
    if let Some(i) = report.scenario(Scenario::Idle) {
        let at = sz.idle_queues >= full.idle_queues && sz.idle_secs >= full.idle_secs;
        push(
            "idle: agent ClearML requests/s",
            "≤ 2 with 100 queues",
            Some(i.agent.clearml_per_sec),
            |v| v <= 2.0,
            at,
        );
        push(
            "idle: agent peak RSS, MB",
            "≤ 40 with 100 queues",
            Some(i.agent.peak_rss_mb),
            |v| v <= 40.0,
            at,
        );
    }
    if let Some(s) = report.scenario(Scenario::Scale) {
        let at = sz.scale_pods >= full.scale_pods;
        push(
            "scale: agent peak RSS, MB",
            "≤ 200 with 10,000 live pods",
            Some(s.agent.peak_rss_mb),
            |v| v <= 200.0,
            at,
        );
    }
    if let Some(s) = report.scenario(Scenario::Status) {
        let at = sz.scale_pods >= full.scale_pods;
        push(
            "status: `kubectl clearml status` (port-forward), median",
            "≤ 200 ms with 10,000 pods",
            s.agent.status_cmd.map(|t| t.median_ms),
            |v| v <= 200.0,
            at,
        );
        push(
            "status: `kubectl clearml tasks` (port-forward), median",
            "≤ 200 ms with 10,000 pods",
            s.agent.tasks_cmd.map(|t| t.median_ms),
            |v| v <= 200.0,
            at,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_median_and_max() {
        let t = Timing::of(&[30.0, 10.0, 20.0]).expect("runs");
        assert_eq!((t.median_ms, t.max_ms, t.runs), (20.0, 30.0, 3));
        let even = Timing::of(&[4.0, 1.0]).expect("runs");
        assert_eq!(even.median_ms, 1.0);
        assert!(Timing::of(&[]).is_none());
    }

    #[test]
    fn ratio_points_to_the_better_side() {
        assert_eq!(ratio(Better::Higher, 500.0, 5.0), "100×");
        assert_eq!(ratio(Better::Lower, 2.0, 5.0), "2.5×");
        assert_eq!(ratio(Better::Lower, 0.0, 5.0), "∞");
        assert_eq!(ratio(Better::Lower, 0.0, 0.0), "—");
        assert_eq!(ratio(Better::Neither, 1.0, 2.0), "");
    }
}
