//! The benchmark's `--quick` mode, in CI so the benchmark never rots: every scenario runs in-process
//! at tiny sizes, our agent and (when its venv exists) the official Python glue. Only behaviour is
//! asserted, never timing: every task got exactly one pod and none was failed, the agent tracked
//! every live pod, the plugin commands ran, and the JSON report has every field.

use std::collections::BTreeSet;

use clearml_e2e::bench::{self, Options, Scenario, Side, Sizes, glue};
use serde_json::Value;

/// Fields every side of every scenario carries in the JSON (`null` where they do not apply).
const SIDE_FIELDS: &[&str] = &[
    "side",
    "window_secs",
    "tasks",
    "dispatched",
    "pod_creations",
    "one_pod_per_task",
    "tasks_failed",
    "tasks_per_sec",
    "latency",
    "clearml_requests",
    "kube_requests",
    "clearml_per_task",
    "tasks_per_clearml_call",
    "kube_per_task",
    "clearml_per_sec",
    "kube_per_sec",
    "cpu_seconds",
    "cpu_ms_per_task",
    "cpu_percent",
    "harness_cpu_seconds",
    "peak_rss_mb",
    "rss_end_mb",
    "max_processes",
    "live_pods",
    "status_cmd",
    "tasks_cmd",
    "status_cmd_direct",
    "tasks_cmd_direct",
    "clearml_calls",
    "kube_calls",
];
const TOP_FIELDS: &[&str] = &[
    "schema",
    "quick",
    "started_at",
    "machine",
    "sizes",
    "versions",
    "scenarios",
    "targets",
    "differences",
];
const LATENCY_FIELDS: &[&str] = &[
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "censored",
    "lower_bounds",
];

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn assert_fields(v: &Value, want: &[&str], what: &str) {
    let have = keys(v);
    let missing: Vec<&&str> = want.iter().filter(|f| !have.contains(**f)).collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}: {v:#}");
}

/// The venv's python, or why the glue side is left out.
fn glue_python() -> Option<std::path::PathBuf> {
    if let Some(python) = glue::installed_python() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the Python glue venv (target/glue-venv with clearml-agent {}) is missing: CI must run \
         `bash tests/scripts/ensure-venv.sh glue` before the tests (.ci/run does)",
        glue::CLEARML_AGENT_VERSION
    );
    eprintln!(
        "SKIPPING the Python glue side of the quick benchmark: no venv at target/glue-venv \
         (create it with `bash tests/scripts/ensure-venv.sh glue`, needs PyPI)"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_benchmark_runs_every_scenario() {
    let python = glue_python();
    let with_glue = python.is_some();
    let work = tempfile::tempdir().expect("work dir");
    let sizes = Sizes::quick();
    let options = Options {
        quick: true,
        scenarios: Scenario::ALL.to_vec(),
        glue_python: python,
        sizes: sizes.clone(),
        work_dir: work.path().to_path_buf(),
    };
    let report = bench::run(&options)
        .await
        .expect("the quick benchmark runs");
    let table = report.table();
    println!("{table}");

    let ran: Vec<Scenario> = report.scenarios.iter().map(|s| s.scenario).collect();
    assert_eq!(ran, Scenario::ALL.to_vec(), "every scenario ran, in order");
    for s in &report.scenarios {
        let name = s.scenario.name();
        assert!(table.contains(&format!("**{name}**")), "table shows {name}");
        assert_eq!(
            s.python_glue.is_some(),
            with_glue && s.scenario.both_sides(),
            "{name}: the glue runs burst, burst-slow-clearml, steady and idle when its venv exists"
        );
        let sides = std::iter::once(&s.agent).chain(s.python_glue.as_ref());
        for r in sides {
            let who = format!("{name}/{:?}", r.side);
            match s.scenario {
                Scenario::Burst
                | Scenario::BurstSlowClearml
                | Scenario::Steady
                | Scenario::Scale => {
                    let want = match s.scenario {
                        Scenario::Burst | Scenario::BurstSlowClearml => sizes.burst_tasks,
                        Scenario::Steady => {
                            (sizes.steady_rate * sizes.steady_secs).round() as usize
                        }
                        _ => sizes.scale_pods,
                    };
                    assert_eq!(r.tasks, Some(want), "{who}: tasks enqueued");
                    assert_eq!(r.dispatched, Some(want), "{who}: every task got a pod");
                    assert_eq!(r.pod_creations, Some(want), "{who}: one creation per task");
                    assert_eq!(r.one_pod_per_task, Some(true), "{who}");
                    assert_eq!(r.tasks_failed, Some(0), "{who}: no task was failed");
                    let latency = r.latency.as_ref().expect("latency measured");
                    assert_eq!(latency.censored, 0, "{who}: no latency is a lower bound");
                    assert!(r.clearml_requests > 0, "{who}: ClearML was called");
                }
                Scenario::Idle => {
                    assert_eq!(r.tasks, None, "{who}: nothing enqueued");
                    assert!(r.clearml_requests > 0, "{who}: the queues were polled");
                }
                Scenario::Status => {
                    for (cmd, t) in [
                        ("status", r.status_cmd),
                        ("tasks", r.tasks_cmd),
                        ("status --agent-addr", r.status_cmd_direct),
                        ("tasks --agent-addr", r.tasks_cmd_direct),
                    ] {
                        let t = t.unwrap_or_else(|| panic!("{who}: {cmd} timed"));
                        assert_eq!(t.runs, sizes.status_runs, "{who}: {cmd} runs");
                    }
                    assert!(
                        r.kube_calls.keys().any(|k| k.contains("portforward")),
                        "{who}: the plugin reached the agent through pods/portforward: {:?}",
                        r.kube_calls
                    );
                }
            }
            if matches!(s.scenario, Scenario::Scale | Scenario::Status) {
                assert_eq!(r.side, Side::Agent);
                assert_eq!(r.live_pods, Some(sizes.scale_pods), "{who}: pods tracked");
            }
            assert!(r.peak_rss_mb > 0.0, "{who}: memory read from /proc");
        }
    }
    assert!(!report.targets.is_empty(), "targets are checked");
    assert!(
        report.targets.iter().all(|t| !t.at_issue_size),
        "quick sizes never claim a target at the issue's size"
    );

    // the JSON document: every field, for every scenario and side
    let path = work.path().join("bench.json");
    report.write_json(&path).expect("JSON written");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("JSON read")).expect("JSON");
    assert_fields(&doc, TOP_FIELDS, "report");
    assert_eq!(doc["quick"], Value::Bool(true));
    let scenarios = doc["scenarios"].as_array().expect("scenarios array");
    assert_eq!(scenarios.len(), Scenario::ALL.len());
    for s in scenarios {
        assert_fields(
            s,
            &["scenario", "description", "agent", "python_glue"],
            "scenario",
        );
        let mut sides = vec![&s["agent"]];
        if !s["python_glue"].is_null() {
            sides.push(&s["python_glue"]);
        }
        for side in sides {
            assert_fields(side, SIDE_FIELDS, &format!("{} side", s["scenario"]));
            if !side["latency"].is_null() {
                assert_fields(&side["latency"], LATENCY_FIELDS, "latency");
            }
        }
    }
}
