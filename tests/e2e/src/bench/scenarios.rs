//! What each scenario does, side by side: set up a fresh world, start the contender, open a
//! measurement window, apply the load, close the window, turn the figures into a
//! [`SideResult`].
//!
//! - burst / burst-slow-clearml / steady: tasks are created (not measured), then enqueued (all at once, or at a fixed
//!   rate) while [`PodObserver`] records when each pod appears; the window ends when the last
//!   pod appears or the drain time runs out. burst-slow-clearml sets the ClearML double's
//!   capacity model before the contender starts (its start-up is served at that pace too; the
//!   load generator's in-process calls are not).
//! - idle: the contender serves many empty queues for a fixed time.
//! - scale: tasks whose simulated pods keep running (`sim/hang`) are dispatched; once every pod
//!   runs and the agent's `/metrics` counts them all, the window measures the agent holding them.
//! - status: `kubectl clearml status` and `tasks` against that agent, timed (after one untimed
//!   warm-up run each).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use super::{
    Options, Report, Scenario, Side, Sizes,
    env::{self, Contender, Measured, NAMESPACE, TASK_IMAGE, Window, World},
    observe::{Dispatch, PodObserver},
    procstat,
    report::{self, Machine, ScenarioResult, SideResult, Timing, mb},
};
use crate::agent::plugin_binary;
use clearml_doubles::sim::SimOptions;

/// Image whose simulated pods start their task and keep running.
const HANG_IMAGE: &str = "sim/hang";

/// Per-run settings shared by the scenarios.
struct Ctx<'a> {
    options: &'a Options,
    ticks: f64,
}

impl Ctx<'_> {
    fn sizes(&self) -> &Sizes {
        &self.options.sizes
    }

    /// A fresh directory for one world.
    fn dir(&self, scenario: Scenario, side: Side) -> anyhow::Result<PathBuf> {
        let name = format!("{}-{}", scenario.name(), side.title().replace(' ', "-"));
        let dir = self.options.work_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn sim(&self) -> SimOptions {
        SimOptions {
            namespace: NAMESPACE.into(),
            start_delay: self.sizes().start_delay(),
            run_for: self.sizes().run_for(),
            gpus: None,
        }
    }

    async fn world(&self, scenario: Scenario, side: Side) -> anyhow::Result<World> {
        World::new(self.dir(scenario, side)?, self.sim()).await
    }
}

/// Runs the selected scenarios.
pub async fn run_all(options: &Options) -> anyhow::Result<Report> {
    let ctx = Ctx {
        options,
        ticks: procstat::clock_ticks(),
    };
    if !procstat::supported() {
        bail!("the benchmark reads /proc/<pid>/stat and task children: Linux only");
    }
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut machine = Machine::probe();
    let mut versions =
        BTreeMap::from([("agent".to_string(), env!("CARGO_PKG_VERSION").to_string())]);
    if let Some(python) = &options.glue_python {
        versions.extend(env::glue_versions(python));
    }
    let mut selected = options.scenarios.clone();
    selected.sort();
    selected.dedup();
    let mut results = Vec::new();
    let mut live: Option<Live> = None;
    for scenario in selected {
        let description = describe(scenario, ctx.sizes());
        eprintln!("== {}: {description}", scenario.name());
        let (agent, python_glue) = match scenario {
            Scenario::Burst | Scenario::BurstSlowClearml | Scenario::Steady | Scenario::Idle => {
                let agent = side(&ctx, scenario, Side::Agent).await?;
                let glue = match options.glue_python {
                    Some(_) => Some(side(&ctx, scenario, Side::PythonGlue).await?),
                    None => None,
                };
                (agent, glue)
            }
            Scenario::Scale => {
                let (result, kept) = scale(&ctx).await?;
                live = Some(kept);
                (result, None)
            }
            Scenario::Status => {
                let kept = match live.take() {
                    Some(l) => l,
                    None => live_pods(&ctx, Scenario::Status).await?.0,
                };
                let result = status(&ctx, &kept).await?;
                kept.contender.stop();
                (result, None)
            }
        };
        results.push(ScenarioResult {
            scenario,
            description,
            agent,
            python_glue,
        });
    }
    if let Some(l) = live {
        l.contender.stop();
    }
    machine.loadavg_after = report::loadavg();
    let mut report = Report {
        schema: report::SCHEMA,
        quick: options.quick,
        started_at,
        machine,
        sizes: options.sizes.clone(),
        versions,
        scenarios: results,
        targets: Vec::new(),
        differences: differences(options),
    };
    report.targets = report::targets(&report);
    Ok(report)
}

/// The scenario's one-line description with its parameters.
pub fn describe(scenario: Scenario, s: &Sizes) -> String {
    let pods = format!(
        "simulated pods go Running {} ms after creation",
        s.start_delay_ms
    );
    match scenario {
        Scenario::Burst => format!(
            "{} tasks over {} queues, all enqueued at once; {pods} and Succeeded {} ms later",
            s.burst_tasks, s.burst_queues, s.run_for_ms
        ),
        Scenario::BurstSlowClearml => format!(
            "{} tasks over {} queues, all enqueued at once, against a ClearML that serves {:.0} calls/s \
             ({} worker{} × {} ms a call); {pods} and Succeeded {} ms later",
            s.burst_tasks,
            s.burst_queues,
            s.slow_clearml.capacity().calls_per_sec(),
            s.slow_clearml.workers,
            if s.slow_clearml.workers == 1 { "" } else { "s" },
            s.slow_clearml.service_ms,
            s.run_for_ms
        ),
        Scenario::Steady => format!(
            "{} tasks/s for {} s ({} tasks) over {} queues; {pods} and Succeeded {} ms later",
            s.steady_rate,
            s.steady_secs,
            steady_tasks(s),
            s.steady_queues,
            s.run_for_ms
        ),
        Scenario::Idle => format!(
            "{} queues served, nothing enqueued, {} s measured",
            s.idle_queues, s.idle_secs
        ),
        Scenario::Scale => format!(
            "{} tasks over {} queues enqueued at once, their pods keep running; {} s measured once \
             the agent tracks every pod as Running (agent only: the glue keeps no pod state)",
            s.scale_pods, s.scale_queues, s.scale_secs
        ),
        Scenario::Status => format!(
            "`kubectl clearml status` and `kubectl clearml tasks` (table output; through the \
             default port-forward to the agent's pod, and with --agent-addr straight to its gRPC \
             port) with {} live pods, {} timed runs each after a warm-up run (agent only: the glue \
             has no such command)",
            s.scale_pods, s.status_runs
        ),
    }
}

fn steady_tasks(s: &Sizes) -> usize {
    (s.steady_rate * s.steady_secs).round() as usize
}

/// One side of burst, steady or idle.
async fn side(ctx: &Ctx<'_>, scenario: Scenario, side: Side) -> anyhow::Result<SideResult> {
    eprintln!("   {} …", side.title());
    let s = ctx.sizes();
    let drain = match side {
        Side::Agent => s.agent_drain_secs,
        Side::PythonGlue => s.glue_drain_secs,
    };
    let result = match scenario {
        Scenario::Burst => {
            let load = Load {
                tasks: s.burst_tasks,
                queues: s.burst_queues,
                image: TASK_IMAGE,
                rate: None,
                drain,
                capacity: None,
            };
            let run = dispatch(ctx, scenario, side, &load).await?;
            let result = dispatch_result(side, &run);
            run.contender.stop();
            result
        }
        Scenario::BurstSlowClearml => {
            let load = Load {
                tasks: s.burst_tasks,
                queues: s.burst_queues,
                image: TASK_IMAGE,
                rate: None,
                drain: match side {
                    Side::Agent => drain,
                    Side::PythonGlue => drain.min(s.slow_glue_drain_secs),
                },
                capacity: Some(s.slow_clearml.capacity()),
            };
            let run = dispatch(ctx, scenario, side, &load).await?;
            let result = dispatch_result(side, &run);
            run.contender.stop();
            result
        }
        Scenario::Steady => {
            let load = Load {
                tasks: steady_tasks(s),
                queues: s.steady_queues,
                image: TASK_IMAGE,
                rate: Some(s.steady_rate),
                drain,
                capacity: None,
            };
            let run = dispatch(ctx, scenario, side, &load).await?;
            let result = dispatch_result(side, &run);
            run.contender.stop();
            result
        }
        _ => idle(ctx, side).await?,
    };
    eprintln!("   {} done in {:.1} s", side.title(), result.window_secs);
    Ok(result)
}

/// The load of a dispatch scenario.
struct Load {
    tasks: usize,
    queues: usize,
    image: &'static str,
    /// Tasks per second; `None`: all at once.
    rate: Option<f64>,
    /// Seconds after the last enqueue within which the pods may appear.
    drain: f64,
    /// The ClearML double's capacity model (none: it answers at once).
    capacity: Option<clearml_doubles::clearml::Capacity>,
}

/// A finished dispatch measurement whose world and contender are still up.
struct Run {
    world: World,
    contender: Contender,
    dispatch: Dispatch,
    creations: usize,
    failed: usize,
    measured: Measured,
}

async fn dispatch(
    ctx: &Ctx<'_>,
    scenario: Scenario,
    side: Side,
    load: &Load,
) -> anyhow::Result<Run> {
    let world = ctx.world(scenario, side).await?;
    let queues = world.queues(load.queues)?;
    let tasks = world.tasks(load.tasks, load.image)?;
    world.clearml.set_capacity(load.capacity);
    let contender = world
        .start(side, &queues, ctx.options.glue_python.as_ref())
        .await?;
    let arrival = load.rate.map_or(0.0, |r| load.tasks as f64 / r);
    let observer = PodObserver::start(
        world.kube.clone(),
        NAMESPACE,
        &tasks,
        Duration::from_secs_f64(arrival + load.drain),
    );
    let window = Window::open(&world, &contender, ctx.ticks);
    let mut enqueued: HashMap<String, Instant> = HashMap::with_capacity(tasks.len());
    let mut tick = load.rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    for (i, task) in tasks.iter().enumerate() {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let at = world.enqueue(task, &queues[i % queues.len()].1)?;
        enqueued.insert(task.clone(), at);
    }
    let created = observer.finish().await;
    let ended = Instant::now();
    let measured = window.close(&world);
    let dispatch = Dispatch::of(&enqueued, &created, ended);
    if dispatch.dispatched < dispatch.tasks {
        eprintln!(
            "   {}: {} of {} tasks got no pod within the drain time; log tail:\n{}",
            side.title(),
            dispatch.tasks - dispatch.dispatched,
            dispatch.tasks,
            contender.log_tail(15)
        );
    }
    let with_pod: Vec<&String> = tasks.iter().filter(|t| created.contains_key(*t)).collect();
    let failed = if load.image == HANG_IMAGE {
        world.failed(&with_pod)
    } else {
        // every simulated task ends: see whether any was failed on its way
        let ends = ctx.sizes().start_delay() + ctx.sizes().run_for() + Duration::from_secs(30);
        world.failed_once_finished(&with_pod, ends).await
    };
    // the double logs a request after its object is stored: a pod just seen may not be logged yet
    let creations = world.pod_creations_logged(with_pod.len()).await;
    Ok(Run {
        world,
        contender,
        dispatch,
        creations,
        failed,
        measured,
    })
}

fn per(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Figures every window has.
fn base_result(side: Side, m: &Measured) -> SideResult {
    let (c, k) = (m.calls.clearml_total(), m.calls.kube_total());
    SideResult {
        side,
        window_secs: m.secs,
        tasks: None,
        dispatched: None,
        pod_creations: None,
        one_pod_per_task: None,
        tasks_failed: None,
        tasks_per_sec: None,
        latency: None,
        clearml_requests: c,
        kube_requests: k,
        clearml_per_task: None,
        tasks_per_clearml_call: None,
        kube_per_task: None,
        clearml_per_sec: c as f64 / m.secs,
        kube_per_sec: k as f64 / m.secs,
        cpu_seconds: m.cpu_secs,
        cpu_ms_per_task: None,
        cpu_percent: m.cpu_secs.map(|c| c / m.secs * 100.0),
        harness_cpu_seconds: m.harness_cpu_secs,
        peak_rss_mb: mb(m.memory.peak_rss_bytes),
        rss_end_mb: mb(m.memory.final_rss_bytes),
        max_processes: m.memory.max_processes,
        live_pods: None,
        status_cmd: None,
        tasks_cmd: None,
        status_cmd_direct: None,
        tasks_cmd_direct: None,
        clearml_calls: m.calls.clearml.clone(),
        kube_calls: m.calls.kube.clone(),
    }
}

fn dispatch_result(side: Side, run: &Run) -> SideResult {
    let (d, m, creations) = (&run.dispatch, &run.measured, run.creations);
    let mut r = base_result(side, m);
    r.tasks = Some(d.tasks);
    r.dispatched = Some(d.dispatched);
    r.pod_creations = Some(creations);
    r.one_pod_per_task = Some(d.dispatched == d.tasks && creations == d.tasks);
    r.tasks_failed = Some(run.failed);
    r.tasks_per_sec = d.tasks_per_sec();
    r.latency = d.latency();
    r.clearml_per_task = per(r.clearml_requests, d.dispatched);
    r.tasks_per_clearml_call = per(d.dispatched, r.clearml_requests);
    r.kube_per_task = per(r.kube_requests, d.dispatched);
    r.cpu_ms_per_task = m
        .cpu_secs
        .and_then(|c| (d.dispatched > 0).then(|| c * 1e3 / d.dispatched as f64));
    r
}

async fn idle(ctx: &Ctx<'_>, side: Side) -> anyhow::Result<SideResult> {
    let s = ctx.sizes();
    let world = ctx.world(Scenario::Idle, side).await?;
    let queues = world.queues(s.idle_queues)?;
    let contender = world
        .start(side, &queues, ctx.options.glue_python.as_ref())
        .await?;
    let window = Window::open(&world, &contender, ctx.ticks);
    // A fixed-length measurement, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs_f64(s.idle_secs)).await;
    let measured = window.close(&world);
    contender.stop();
    Ok(base_result(side, &measured))
}

/// An agent holding many running pods (for scale and status).
struct Live {
    world: World,
    contender: Contender,
    pods: usize,
}

/// Dispatches `scale_pods` never-ending tasks and waits until the agent tracks them all.
async fn live_pods(ctx: &Ctx<'_>, scenario: Scenario) -> anyhow::Result<(Live, SideResult)> {
    let s = ctx.sizes();
    let load = Load {
        tasks: s.scale_pods,
        queues: s.scale_queues,
        image: HANG_IMAGE,
        rate: None,
        drain: s.agent_drain_secs,
        capacity: None,
    };
    let run = dispatch(ctx, scenario, Side::Agent, &load).await?;
    let result = dispatch_result(Side::Agent, &run);
    let deadline = Duration::from_secs_f64(s.agent_drain_secs);
    let n = s.scale_pods;
    run.world
        .kube
        .wait_for(deadline, |v| {
            let running = v
                .list("pods", Some(NAMESPACE))
                .into_iter()
                .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
                .count();
            (running >= n).then_some(())
        })
        .await
        .with_context(|| format!("{n} simulated pods never all ran"))?;
    let tracked = tracked_running(&run.contender, n, deadline).await?;
    Ok((
        Live {
            world: run.world,
            contender: run.contender,
            pods: tracked,
        },
        result,
    ))
}

/// Polls the agent's `/metrics` until it counts `n` Running pods; returns its count.
async fn tracked_running(
    contender: &Contender,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let Contender::Agent(agent) = contender else {
        bail!("only our agent exposes /metrics");
    };
    let deadline = Instant::now() + timeout;
    loop {
        let text = agent.metrics().await.unwrap_or_default();
        let running: f64 = text
            .lines()
            .filter(|l| l.starts_with("clearml_agent_pods{") && l.contains("phase=\"Running\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let running = running as usize;
        if running >= n {
            return Ok(running);
        }
        if Instant::now() > deadline {
            bail!("the agent tracks {running} Running pods, not {n}, after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scale(ctx: &Ctx<'_>) -> anyhow::Result<(SideResult, Live)> {
    eprintln!("   agent …");
    let (live, dispatched) = live_pods(ctx, Scenario::Scale).await?;
    let window = Window::open(&live.world, &live.contender, ctx.ticks);
    // A fixed-length measurement, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs_f64(ctx.sizes().scale_secs)).await;
    let measured = window.close(&live.world);
    let mut r = base_result(Side::Agent, &measured);
    r.tasks = dispatched.tasks;
    r.dispatched = dispatched.dispatched;
    r.pod_creations = dispatched.pod_creations;
    r.one_pod_per_task = dispatched.one_pod_per_task;
    r.tasks_failed = dispatched.tasks_failed;
    r.tasks_per_sec = dispatched.tasks_per_sec;
    r.clearml_per_task = dispatched.clearml_per_task;
    r.tasks_per_clearml_call = dispatched.tasks_per_clearml_call;
    r.latency = dispatched.latency;
    r.peak_rss_mb = r.peak_rss_mb.max(dispatched.peak_rss_mb);
    r.live_pods = Some(live.pods);
    eprintln!("   agent done");
    Ok((r, live))
}

/// Port of the agent's gRPC API in its pod (the plugin's `render::GRPC_PORT`).
const AGENT_GRPC_PORT: u16 = 9090;
/// The agent's pod as the Kubernetes double plays it for the plugin's port-forward.
const AGENT_POD: &str = "clearml-agent-bench-0";

/// Runs the plugin once (through `--agent-addr` if given, else its default port-forward to the
/// agent's pod); returns its wall time in ms and its stdout.
async fn plugin(
    kubeconfig: &std::path::Path,
    agent_addr: Option<&str>,
    cmd: &str,
) -> anyhow::Result<(f64, String)> {
    let bin = plugin_binary()?;
    let mut command = tokio::process::Command::new(bin);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", NAMESPACE]);
    if let Some(addr) = agent_addr {
        command.args(["--agent-addr", addr]);
    }
    let started = Instant::now();
    let out = command.arg(cmd).kill_on_drop(true).output().await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "kubectl clearml {cmd} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((ms, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Makes the agent reachable like in a cluster: a Running pod labelled as the agent whose gRPC
/// port the double's `pods/portforward` connects to the agent process.
fn expose_agent(world: &World, grpc: &str) -> anyhow::Result<()> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": AGENT_POD, "labels": {"app.kubernetes.io/name": "clearml-agent"}},
        "spec": {"containers": [{"name": "agent", "image": "clearml-k8s-agent:bench"}]},
    });
    world
        .kube
        .create("pods", NAMESPACE, pod)
        .map_err(|e| anyhow::anyhow!("agent pod: {e:?}"))?;
    world
        .kube
        .set_pod_running(NAMESPACE, AGENT_POD)
        .map_err(|e| anyhow::anyhow!("agent pod running: {e:?}"))?;
    let target = grpc.parse().context("the agent's gRPC address")?;
    world
        .kube
        .set_port_forward_target(NAMESPACE, AGENT_POD, AGENT_GRPC_PORT, target);
    Ok(())
}

async fn status(ctx: &Ctx<'_>, live: &Live) -> anyhow::Result<SideResult> {
    eprintln!("   agent …");
    let Contender::Agent(agent) = &live.contender else {
        bail!("status runs against our agent");
    };
    let addr = agent.grpc_url.trim_start_matches("http://").to_string();
    expose_agent(&live.world, &addr)?;
    let kc = live.world.kubeconfig.clone();
    let window = Window::open(&live.world, &live.contender, ctx.ticks);
    let mut times: BTreeMap<(&str, bool), Vec<f64>> = BTreeMap::new();
    for cmd in ["status", "tasks"] {
        for direct in [false, true] {
            let via = direct.then_some(addr.as_str());
            let (_, warm) = plugin(&kc, via, cmd).await?;
            if cmd == "tasks" && warm.lines().count() < live.pods {
                bail!(
                    "`kubectl clearml tasks` listed {} lines for {} live pods",
                    warm.lines().count(),
                    live.pods
                );
            }
            for _ in 0..ctx.sizes().status_runs {
                let (ms, _) = plugin(&kc, via, cmd).await?;
                times.entry((cmd, direct)).or_default().push(ms);
            }
        }
    }
    let measured = window.close(&live.world);
    let mut r = base_result(Side::Agent, &measured);
    r.live_pods = Some(live.pods);
    let timing = |cmd, direct| times.get(&(cmd, direct)).and_then(|t| Timing::of(t));
    r.status_cmd = timing("status", false);
    r.tasks_cmd = timing("tasks", false);
    r.status_cmd_direct = timing("status", true);
    r.tasks_cmd_direct = timing("tasks", true);
    eprintln!("   agent done");
    Ok(r)
}

/// What differs in the work the two sides do (printed under the table and kept in the JSON).
fn differences(options: &Options) -> Vec<String> {
    let mut out = vec![
        "Polling: the glue asks each queue in turn (`queues.get_next_task`, one call per queue) \
         and sleeps 5 s when all are empty (its default `CLEARML_AGENT_QUEUE_POLL_FREQ_SEC`, kept); \
         the agent reads every served queue and the pending queue with one `queues.get_all` per \
         tick, every 1 s when idle and every 100 ms while tasks keep coming."
            .to_string(),
        "Launching: the glue takes one task per loop and launches it before the next: \
         `queues.get_next_task`, `events.add_batch`, `workers.status_report` ×2, `tasks.get_all` ×2, \
         `tasks.stop` + `queues.remove_task` + `tasks.enqueue` into `k8s_scheduler` (the open-source \
         server's path), `queues.get_by_id`, `tasks.edit_hyper_params`, and `kubectl apply` (GETs of \
         `/openapi/v3`, the namespace and the pod, then the POST); after each launch it polls \
         again from the first queue. The agent takes up to 500 tasks per tick: one `tasks.enqueue_many` per origin queue \
         (up to 100 tasks each) into `k8s_scheduler` (atomic, no stop/remove), one `tasks.get_all` \
         and one `events.add_batch` per batch, pending reasons of a pass in one \
         `tasks.update_batch`, and creates up to 32 pods at once."
            .to_string(),
        "Kubernetes: the glue forks `kubectl` for every call (a `get pods` each loop, a `delete` of \
         finished pods at most once a second, an `apply` per task, a `get` of Pending pods every 5 s \
         plus one `get` per Pending pod); the agent keeps one pod watch open (counted once, when it \
         starts) and only writes."
            .to_string(),
        "Finished pods: the glue deletes them as soon as it sees them; the agent keeps Succeeded \
         pods 300 s and Failed ones a day (so they can be inspected), and re-reads the ClearML \
         status of the tasks of live pods every 2 s to notice aborts."
            .to_string(),
        "Pods: the same image, ClearML hosts and credential Secret references; the glue adds its \
         `clearml.conf` and start script base64-encoded in the container args, the agent a shorter \
         start command, the task's name/project as annotations and a launch id."
            .to_string(),
        "Measurement: CPU from /proc/<pid>/stat (the glue's includes the `kubectl` and `bash` children \
         it waited for); peak RSS is the process's VmHWM, for the glue the larger of that and its \
         process tree's summed RSS sampled every 50 ms (short-lived `kubectl`s can be missed). \
         Both sides talk over loopback to the same doubles, which run in the benchmark process \
         together with the simulated kubelet and the load generator, on the same cores."
            .to_string(),
        "burst-slow-clearml: every HTTP call to the ClearML double (either side's, any \
         endpoint) waits for a free worker and holds it for the service time, as a real server's \
         few worker processes in front of MongoDB do; the load generator's in-process enqueues are \
         not limited. The glue's run there is capped (its rate is what it reached by then)."
            .to_string(),
        "Pod creation is observed in-process on the Kubernetes double's store (woken on every \
         change); latency is enqueue → pod object stored. Tasks without a pod when a side's drain \
         time ran out count as not dispatched; their latency enters the percentiles as a lower \
         bound (marked >)."
            .to_string(),
    ];
    if options.glue_python.is_some() {
        out.push(format!(
            "Python glue: clearml-agent {} from PyPI, `K8sIntegration(template_yaml, namespace)` + \
             `k8s_daemon(queues)` run unmodified by tests/py/glue_launcher.py; its pods carry no \
             `clearml-task-id` label in this version, so the simulator reads the task id from the \
             pod name.",
            super::glue::CLEARML_AGENT_VERSION
        ));
    } else {
        out.push("The Python glue was not run (--no-python or no venv).".to_string());
    }
    out
}
