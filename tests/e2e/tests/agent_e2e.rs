//! End-to-end tests of the agent binary against both doubles over real HTTP, with the simulator
//! playing kubelet and the in-pod clearml-agent: the seed examples, maxPods, failure reasons,
//! abort, TTL cleanup, crash-restart safety and the idle polling load.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use clearml_doubles::{
    clearml::{ClearmlDouble, NEWEST_SERVER_VERSION},
    k8s::KubeDouble,
    sim::{SimOptions, Simulator},
};
use clearml_e2e::agent::{AgentProcess, AgentSpec};
use serde_json::{Value, json};

#[path = "agent_e2e/batching.rs"]
mod batching;
#[path = "agent_e2e/chart.rs"]
mod chart;
#[path = "agent_e2e/control.rs"]
mod control;
#[path = "agent_e2e/demo.rs"]
mod demo;
#[path = "agent_e2e/doctor.rs"]
mod doctor;
#[path = "agent_e2e/gang.rs"]
mod gang;
#[path = "agent_e2e/job.rs"]
mod job;
#[path = "agent_e2e/old_server.rs"]
mod old_server;
#[path = "agent_e2e/plugin.rs"]
mod plugin;
#[path = "agent_e2e/reliability.rs"]
mod reliability;
#[path = "agent_e2e/restart.rs"]
mod restart;
#[path = "agent_e2e/retry.rs"]
mod retry;
#[path = "agent_e2e/supervision.rs"]
mod supervision;

const NS: &str = "clearml";
const READY: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);
/// The last ClearML server release before 1.17.0: its `tasks.enqueue` refuses a queued task unless
/// forced, and a forced one leaves the task in its queue, so the agent takes tasks in two steps.
const OLD_SERVER: &str = "1.16.2";

struct Env {
    clearml: Arc<ClearmlDouble>,
    kube: Arc<KubeDouble>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    _sim: Simulator,
}

impl Env {
    async fn new(sim: SimOptions) -> Self {
        Self::on_server(sim, NEWEST_SERVER_VERSION).await
    }

    /// An environment whose ClearML double plays clearml-server `version`.
    async fn on_server(sim: SimOptions, version: &str) -> Self {
        let clearml = Arc::new(ClearmlDouble::start().await.expect("clearml double"));
        clearml
            .set_server_version(version)
            .expect("a release the double knows");
        let kube = Arc::new(KubeDouble::start().await.expect("kube double"));
        kube.create(
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .expect("namespace");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig, NS).expect("kubeconfig");
        let sim = Simulator::start(
            kube.clone(),
            clearml.clone(),
            SimOptions {
                namespace: NS.into(),
                ..sim
            },
        );
        Self {
            clearml,
            kube,
            dir,
            kubeconfig,
            _sim: sim,
        }
    }

    fn spec(&self, values: &str) -> AgentSpec {
        AgentSpec {
            values: values.to_string(),
            clearml_url: self.clearml.url(),
            credentials: self.clearml.credentials(),
            kubeconfig: self.kubeconfig.clone(),
            namespace: NS.into(),
            dir: self.dir.path().to_path_buf(),
            config_map: None,
            env: Vec::new(),
        }
    }

    async fn agent(&self, values: &str) -> AgentProcess {
        AgentProcess::start(&self.spec(values), READY)
            .await
            .expect("agent starts")
    }

    fn queue(&self, name: &str) -> String {
        self.clearml
            .queue_id(name)
            .unwrap_or_else(|| panic!("queue {name} exists"))
    }

    /// Creates a task with `image` (empty: none) and enqueues it into `queue`.
    fn enqueue(&self, name: &str, queue: &str, image: &str) -> String {
        let container = if image.is_empty() {
            json!({})
        } else {
            json!({"image": image})
        };
        let task = self
            .clearml
            .create_task(name, json!({"type": "training", "container": container}))
            .expect("task created");
        self.clearml
            .enqueue(&task, &self.queue(queue))
            .expect("enqueued");
        task
    }

    fn task(&self, id: &str) -> Value {
        self.clearml.task(id).expect("task exists")
    }

    fn status(&self, id: &str) -> String {
        self.task(id)
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    async fn pod(&self, task: &str) -> Value {
        let name = format!("clearml-id-{task}");
        self.kube
            .wait_for(WAIT, |v| v.get("pods", NS, &name).cloned())
            .await
            .unwrap_or_else(|_| panic!("pod {name} created"))
    }

    async fn pod_gone(&self, name: &str) {
        self.kube
            .wait_for(WAIT, |v| v.get("pods", NS, name).is_none().then_some(()))
            .await
            .unwrap_or_else(|_| panic!("pod {name} deleted"));
    }

    /// Waits until the task's status satisfies `pred`.
    async fn task_until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            let t = self.task(id);
            if pred(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "task {id}: {what} not reached; task is {t:#}"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// How many of `tasks` are completed.
    fn completed(&self, tasks: &[String]) -> usize {
        tasks
            .iter()
            .filter(|t| self.status(t) == "completed")
            .count()
    }

    /// Waits (up to `limit`) until every task is completed; `context` explains a timeout.
    async fn all_completed(&self, tasks: &[String], limit: Duration, context: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let done = self.completed(tasks);
            if done == tasks.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {done}/{} completed {context}",
                tasks.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn task_status(&self, id: &str, status: &str) -> Value {
        self.task_until(id, &format!("status {status}"), |t| {
            t.get("status").and_then(Value::as_str) == Some(status)
        })
        .await
    }

    /// Successful pod creations so far (a second creation for a task would need its first pod
    /// gone, which nothing here does, so this counts launches).
    fn pod_creations(&self) -> usize {
        self.kube
            .requests()
            .iter()
            .filter(|r| r.is("create", "pods") && (200..300).contains(&r.status))
            .count()
    }
}

/// A simulator whose pods start and finish within milliseconds (throughput and fault tests).
fn fast_sim() -> SimOptions {
    SimOptions {
        start_delay: Duration::from_millis(5),
        run_for: Duration::from_millis(5),
        ..Default::default()
    }
}

/// Values serving `queues` (created in ClearML), keeping succeeded pods for an hour so every pod
/// creation stays visible to the exactly-once checks.
fn values_for(queues: &[&str]) -> String {
    let mut values = String::from(
        "agentk8sglue:\n  createQueues: true\n  succeededPodTtlSeconds: 3600\n  queues:\n",
    );
    for q in queues {
        values.push_str(&format!("    {q}: {{}}\n"));
    }
    values
}

/// GPUs of the simulated cluster in the crash suites, where one task in five asks for one: pods
/// wait for capacity whenever more GPU tasks are live, so agents die with pods waiting.
const CRASH_GPUS: u64 = 4;
/// Image of those GPU tasks: they run long enough for the next ones to wait.
const GPU_TASK_IMAGE: &str = "sim/sleep-300";

/// `fast_sim` on a cluster of [`CRASH_GPUS`] GPUs.
fn crash_sim() -> SimOptions {
    SimOptions {
        gpus: Some(CRASH_GPUS),
        ..fast_sim()
    }
}

/// `values_for(queues)` plus `gpu_queue`, whose pods ask for one GPU each.
fn values_with_gpu_queue(queues: &[&str], gpu_queue: &str) -> String {
    let mut values = values_for(queues);
    values.push_str(&format!(
        "    {gpu_queue}:\n      templateOverrides:\n        resources:\n          limits:\n            nvidia.com/gpu: 1\n"
    ));
    values
}

/// Pods that waited for GPUs at some point (the scheduler's `FailedScheduling` events).
fn pods_that_waited(env: &Env) -> usize {
    env.kube
        .list("events", Some(NS))
        .iter()
        .filter(|e| s(e, "/reason") == "FailedScheduling")
        .count()
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn env_var<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod.pointer("/spec/containers/0/env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_pod_template_example_red_blue_green() {
    let env = Env::new(SimOptions::default()).await;
    let values = fixture("custom-pod-template.yaml");
    let _agent = env.agent(&values).await;
    let cases = [
        ("red", "red", "1Gi"),
        ("blue", "blue", "1Gi"),
        ("green", "green", "2Gi"),
    ];
    let mut tasks = Vec::new();
    for (queue, _, _) in cases {
        tasks.push(env.enqueue(&format!("task-{queue}"), queue, ""));
    }
    for ((queue, team, memory), task) in cases.iter().zip(&tasks) {
        let pod = env.pod(task).await;
        assert_eq!(s(&pod, "/metadata/labels/team"), *team, "{queue}");
        assert_eq!(
            s(&pod, "/spec/containers/0/resources/limits/memory"),
            *memory,
            "{queue}"
        );
        assert_eq!(s(&pod, "/metadata/labels/clearml-agent-queue-name"), *queue);
        assert_eq!(s(&pod, "/spec/restartPolicy"), "Never");
        assert_eq!(
            pod.pointer("/spec/automountServiceAccountToken"),
            Some(&json!(false))
        );
        if *queue == "green" {
            assert_eq!(s(&pod, "/metadata/annotations/example"), "example value");
            assert_eq!(env_var(&pod, "MY_ENV"), Some("my_value"));
        } else {
            assert_eq!(env_var(&pod, "MY_ENV"), None);
        }
        // credentials only by reference
        let creds = pod.to_string();
        assert!(
            !creds.contains(&env.clearml.credentials().1),
            "secret leaked into the pod"
        );
    }
    for task in &tasks {
        let t = env.task_status(task, "completed").await;
        assert!(t.get("execution").and_then(|e| e.get("queue")).is_some());
    }
    let pending = env.queue("k8s_scheduler");
    assert!(
        env.clearml.queue_entries(&pending).is_empty(),
        "nothing left pending"
    );
}

/// The GPU, shared-memory and queueSettings examples, served by one agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_shared_memory_and_queue_settings_examples() {
    let env = Env::new(SimOptions::default()).await;
    let mut queues = serde_json::Map::new();
    for f in [
        "gpu-queues.yaml",
        "gpus-with-shared-memory.yaml",
        "queue-settings.yaml",
    ] {
        let doc: Value = serde_yaml::from_str(&fixture(f)).expect("yaml");
        for (k, v) in doc
            .pointer("/agentk8sglue/queues")
            .and_then(Value::as_object)
            .expect("queues")
        {
            queues.insert(k.clone(), v.clone());
        }
    }
    let values =
        serde_yaml::to_string(&json!({"agentk8sglue": {"createQueues": true, "queues": queues}}))
            .expect("yaml");
    let _agent = env.agent(&values).await;

    let one = env.enqueue("one-gpu", "1xGPU", "");
    let two = env.enqueue("two-gpu", "2xGPU", "");
    let shm = env.enqueue("shm", "GPUs_with_shared_memory", "");
    let multi = env.enqueue("multi", "exampleQueue", "");

    assert_eq!(
        s(
            &env.pod(&one).await,
            "/spec/containers/0/resources/limits/nvidia.com~1gpu"
        ),
        "1"
    );
    assert_eq!(
        s(
            &env.pod(&two).await,
            "/spec/containers/0/resources/limits/nvidia.com~1gpu"
        ),
        "2"
    );
    let p = env.pod(&shm).await;
    assert_eq!(
        s(&p, "/spec/containers/0/resources/limits/nvidia.com~1gpu"),
        "2"
    );
    assert_eq!(env_var(&p, "VLLM_SKIP_P2P_CHECK"), Some("1"));
    assert_eq!(s(&p, "/spec/volumes/0/emptyDir/medium"), "Memory");
    assert_eq!(s(&p, "/spec/volumes/0/emptyDir/sizeLimit"), "32Gi");
    assert_eq!(
        s(&p, "/spec/containers/0/volumeMounts/0/mountPath"),
        "/dev/shm"
    );

    // exampleQueue: multiNode [4, 2] → 3 pods of 2 GPUs, python:3.10, the worker-id template
    let ranks = env
        .kube
        .wait_for(WAIT, |v| {
            let pods: Vec<Value> = (0..3)
                .filter_map(|r| {
                    v.get("pods", NS, &format!("clearml-id-{multi}-{r}"))
                        .cloned()
                })
                .collect();
            (pods.len() == 3).then_some(pods)
        })
        .await
        .expect("three rank pods");
    for (rank, pod) in ranks.iter().enumerate() {
        assert_eq!(s(pod, "/spec/containers/0/image"), "python:3.10");
        assert_eq!(
            s(pod, "/spec/containers/0/resources/limits/nvidia.com~1gpu"),
            "2"
        );
        assert_eq!(env_var(pod, "NODE_RANK"), Some(rank.to_string().as_str()));
        assert_eq!(env_var(pod, "WORLD_SIZE"), Some("6"));
    }
    assert_eq!(
        env_var(&ranks[0], "CLEARML_WORKER_ID"),
        Some(format!("k8s:myGroup:{multi}").as_str())
    );
    assert!(
        env.kube
            .get("services", NS, &format!("clearml-id-{multi}"))
            .is_some(),
        "rendezvous service"
    );
    // a task's own multi-node request (user properties) on a queue without multiNode
    let per_task = env
        .clearml
        .create_task(
            "per-task-multi",
            json!({"type": "training", "hyperparams": {"properties": {"multi_node_request": {
                "section": "properties", "name": "multi_node_request", "value": "[2, 2]"}}}}),
        )
        .expect("task");
    env.clearml
        .enqueue(&per_task, &env.queue("2xGPU"))
        .expect("enqueue");
    let per_task_pods = env
        .kube
        .wait_for(WAIT, |v| {
            let pods: Vec<Value> = (0..2)
                .filter_map(|r| {
                    v.get("pods", NS, &format!("clearml-id-{per_task}-{r}"))
                        .cloned()
                })
                .collect();
            (pods.len() == 2).then_some(pods)
        })
        .await
        .expect("two rank pods for [2, 2]");
    assert_eq!(env_var(&per_task_pods[1], "NODE_RANK"), Some("1"));
    assert_eq!(env_var(&per_task_pods[0], "WORLD_SIZE"), Some("4"));
    for task in [&one, &two, &shm, &multi, &per_task] {
        env.task_status(task, "completed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pods_keeps_the_rest_queued_in_order() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  queues:\n    limited:\n      queueSettings:\n        maxPods: 2\n";
    let _agent = env.agent(values).await;
    let tasks: Vec<String> = (0..5)
        .map(|i| env.enqueue(&format!("task-{i}"), "limited", "sim/hang"))
        .collect();
    for t in &tasks[..2] {
        env.task_status(t, "in_progress").await;
    }
    let queue = env.queue("limited");
    // a few more ticks at the limit: still exactly two pods, the rest in FIFO order
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        let pods = env.kube.list("pods", Some(NS)).len();
        assert!(pods <= 2, "maxPods exceeded: {pods} pods");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.clearml.queue_entries(&queue), tasks[2..].to_vec());
    // one finishes → the next in line starts
    let done = format!("clearml-id-{}", tasks[0]);
    env.clearml
        .call("tasks.completed", json!({"task": tasks[0], "force": true}))
        .expect("completed");
    env.kube.set_pod_succeeded(NS, &done).expect("succeeded");
    env.task_status(&tasks[2], "in_progress").await;
    assert_eq!(env.clearml.queue_entries(&queue), tasks[3..].to_vec());
}

/// The open-source chart's keys: `queue` (several names), `createQueueIfNotExists` and
/// `defaultContainerImage` serve and create the queues and set the image of tasks that name none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_source_chart_queue_keys_serve_their_queues() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueueIfNotExists: true\n  queue: \"chart-one,chart-two\"\n  defaultContainerImage: registry.example/chart-default:1\n";
    let _agent = env.agent(values).await;
    for (name, queue) in [("first", "chart-one"), ("second", "chart-two")] {
        let task = env.enqueue(name, queue, "");
        let pod = env.pod(&task).await;
        assert_eq!(
            s(&pod, "/spec/containers/0/image"),
            "registry.example/chart-default:1",
            "{queue}"
        );
        env.task_status(&task, "completed").await;
    }
}

/// Waits until the agent has polled `n` more times (a condition on the ClearML request log).
async fn polls(env: &Env, n: usize) {
    let start = env.clearml.requests().calls("queues.get_all");
    let deadline = Instant::now() + WAIT;
    while env.clearml.requests().calls("queues.get_all") < start + n {
        assert!(Instant::now() < deadline, "the agent stopped polling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed's queue-settings example (`maxPods: 10`, `multiNode: [4, 2]`: 3 pods per task):
/// `maxPods` counts pods, so 3 tasks (9 pods) run and the rest wait in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pods_counts_the_pods_of_multi_node_tasks() {
    let env = Env::new(SimOptions::default()).await;
    let _agent = env.agent(&fixture("queue-settings.yaml")).await;
    let tasks: Vec<String> = (0..5)
        .map(|i| env.enqueue(&format!("multi-{i}"), "exampleQueue", "sim/hang"))
        .collect();
    for t in &tasks[..3] {
        env.task_status(t, "in_progress").await;
    }
    polls(&env, 3).await;
    let queue = env.queue("exampleQueue");
    assert_eq!(
        env.kube.list("pods", Some(NS)).len(),
        9,
        "3 tasks of 3 pods"
    );
    assert_eq!(env.clearml.queue_entries(&queue), tasks[3..].to_vec());
    // one is aborted → its 3 pods go → the next in line starts, still 9 pods
    env.clearml
        .call("tasks.stop", json!({"task": tasks[0]}))
        .expect("stop");
    env.task_status(&tasks[3], "in_progress").await;
    polls(&env, 2).await;
    let live: Vec<Value> = env
        .kube
        .list("pods", Some(NS))
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    assert_eq!(live.len(), 9, "maxPods 10 holds 3 tasks of 3 pods");
    assert_eq!(env.clearml.queue_entries(&queue), tasks[4..].to_vec());
}

/// A queue whose tasks need more pods than its `maxPods` keeps them queued, saying why in the
/// task's status message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_bigger_than_max_pods_stays_queued_with_the_reason() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  queues:\n    small:\n      queueSettings:\n        maxPods: 2\n        multiNode: [4, 2]\n";
    let _agent = env.agent(values).await;
    let task = env.enqueue("big", "small", "sim/hang");
    let t = env
        .task_until(&task, "a reason naming both numbers", |t| {
            s(t, "/status_message").contains("needs 3 pods")
        })
        .await;
    assert!(s(&t, "/status_message").contains("maxPods is 2"), "{t:#}");
    assert_eq!(s(&t, "/status"), "queued");
    assert_eq!(env.clearml.queue_entries(&env.queue("small")), vec![task]);
    assert!(env.kube.list("pods", Some(NS)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_with_their_reason() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  pendingTimeoutSeconds: 2\n  queues:\n    fail-queue: {}\n";
    let _agent = env.agent(values).await;
    let cases = [
        ("sim/pull-error", "ErrImagePull", false),
        ("sim/config-error", "CreateContainerConfigError", false),
        ("sim/oom", "OOMKilled (exit code 137)", true),
        ("sim/exit-3", "worker execution exit code 3", true),
        ("sim/no-start", "without starting the task", true),
        ("sim/unschedulable", "unschedulable for", false),
    ];
    let tasks: Vec<String> = cases
        .iter()
        .map(|(img, _, _)| env.enqueue(img, "fail-queue", img))
        .collect();
    let unsched = &tasks[5];
    env.task_until(unsched, "a pending explanation", |t| {
        t.get("status_message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.contains("unschedulable: 0/3 nodes"))
    })
    .await;
    for ((image, reason, pod_kept), task) in cases.iter().zip(&tasks) {
        let t = env.task_status(task, "failed").await;
        let got = t
            .get("status_reason")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(
            got.contains(reason),
            "{image}: reason {got:?} lacks {reason:?}"
        );
        let name = format!("clearml-id-{task}");
        if *pod_kept {
            assert!(
                env.kube.get("pods", NS, &name).is_some(),
                "{image}: failed pod kept for inspection"
            );
        } else {
            env.pod_gone(&name).await;
        }
        assert!(
            !env.clearml
                .queue_entries(&env.queue("k8s_scheduler"))
                .contains(task),
            "{image}: left pending"
        );
    }
    // the pods' events (kubelet, scheduler) reach the task's log before the verdict
    let log_of = |task: &str| -> Vec<(String, String)> {
        env.clearml
            .events()
            .iter()
            .filter(|e| s(e, "/task") == task)
            .map(|e| (s(e, "/level").to_string(), s(e, "/msg").to_string()))
            .collect()
    };
    for (task, event) in [
        (&tasks[0], "k8s event: Warning Failed on clearml-id-"),
        (
            &tasks[5],
            "k8s event: Warning FailedScheduling on clearml-id-",
        ),
    ] {
        let log = log_of(task);
        let at = log
            .iter()
            .position(|(level, msg)| level == "WARNING" && msg.starts_with(event))
            .unwrap_or_else(|| panic!("task {task}: no {event:?} line in {log:#?}"));
        let verdict = log
            .iter()
            .position(|(level, msg)| level == "ERROR" && msg.starts_with("k8s agent: "))
            .unwrap_or_else(|| panic!("task {task}: no verdict in {log:#?}"));
        assert!(at < verdict, "events come first: {log:#?}");
    }
    assert!(
        log_of(&tasks[0])
            .iter()
            .any(|(_, msg)| msg.contains("Failed to pull image \"sim/pull-error\"")),
        "the kubelet's words are kept"
    );

    // deleted by someone else
    let victim = env.enqueue("victim", "fail-queue", "sim/hang");
    env.task_status(&victim, "in_progress").await;
    env.kube
        .delete("pods", NS, &format!("clearml-id-{victim}"))
        .expect("delete");
    let t = env.task_status(&victim, "failed").await;
    assert!(
        s(&t, "/status_reason").contains("deleted outside the agent"),
        "{t:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_deletes_the_pods_and_ttl_cleans_finished_ones() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  succeededPodTtlSeconds: 1\n  queues:\n    abortable: {}\n";
    let _agent = env.agent(values).await;
    let running = env.enqueue("running", "abortable", "sim/hang");
    let pending = env.enqueue("pending", "abortable", "sim/unschedulable");
    let finished = env.enqueue("finished", "abortable", "");
    env.task_status(&running, "in_progress").await;
    env.pod(&pending).await;
    for t in [&running, &pending] {
        env.clearml
            .call("tasks.stop", json!({"task": t}))
            .expect("stop");
    }
    env.pod_gone(&format!("clearml-id-{running}")).await;
    env.pod_gone(&format!("clearml-id-{pending}")).await;
    assert_eq!(env.status(&running), "stopped");
    env.task_status(&finished, "completed").await;
    env.pod_gone(&format!("clearml-id-{finished}")).await;
}

/// A multi-node task's rendezvous Service is owned by its rank-0 pod (so the cluster's garbage
/// collector removes it with the pods) and the agent deletes it whenever it deletes the task's
/// pods: on abort and on failure. A launch cut short after rank 0 (the Service's create failed)
/// is finished by the next tick: rank 0 is adopted, not created twice; a Service of the task left
/// without an owner (an older agent) is adopted and given its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_rendezvous_service_is_owned_by_rank_0_and_deleted_with_the_pods() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  queues:\n    multi:\n      queueSettings:\n        multiNode: [2, 2]\n";
    let _agent = env.agent(values).await;
    let ranks = |task: &str| [0, 1].map(|r| format!("clearml-id-{task}-{r}"));
    let service = |task: &str| format!("clearml-id-{task}");
    let launched = |task: String| {
        let env = &env;
        async move {
            env.kube
                .wait_for(WAIT, |v| {
                    let pods: Vec<Value> = ranks(&task)
                        .iter()
                        .filter_map(|n| v.get("pods", NS, n).cloned())
                        .collect();
                    let svc = v.get("services", NS, &service(&task)).cloned();
                    (pods.len() == 2).then_some(pods).zip(svc)
                })
                .await
                .unwrap_or_else(|_| panic!("task {task}: two rank pods and a Service"))
        }
    };

    // the first Service create fails once: the launch is retried and adopts its rank 0
    env.kube.inject(
        clearml_doubles::k8s::RequestMatch::any()
            .verb("create")
            .resource("services"),
        clearml_doubles::k8s::Fault::Status(500),
        1,
    );
    let pending = env.enqueue("multi-pending", "multi", "sim/unschedulable");
    let owned_by_rank_0 = |(pods, svc): (Vec<Value>, Value)| {
        assert_eq!(
            svc.pointer("/metadata/ownerReferences"),
            Some(&json!([{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": s(&pods[0], "/metadata/name"),
                "uid": s(&pods[0], "/metadata/uid"),
            }])),
            "the Service is owned by rank 0: {svc:#}"
        );
    };
    owned_by_rank_0(launched(pending.clone()).await);
    assert_eq!(
        env.kube
            .requests()
            .iter()
            .filter(|r| r.is("create", "services") && r.status >= 500)
            .count(),
        1,
        "the injected fault was hit"
    );

    // a Service of the task without an owner (left by an older agent): adopted, owner set
    let unowned = env
        .clearml
        .create_task(
            "multi-unowned",
            json!({"type": "training", "container": {"image": "sim/unschedulable"}}),
        )
        .expect("task created");
    env.kube
        .create(
            "services",
            NS,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service(&unowned), "labels": {"clearml-task-id": unowned}},
                "spec": {"clusterIP": "None", "ports": [{"port": 29500}]}}),
        )
        .expect("service");
    env.clearml
        .enqueue(&unowned, &env.queue("multi"))
        .expect("enqueued");
    owned_by_rank_0(launched(unowned.clone()).await);

    let running = env.enqueue("multi-running", "multi", "sim/hang");
    let failing = env.enqueue("multi-failing", "multi", "sim/pull-error");
    for task in [&running, &failing] {
        launched(task.clone()).await;
    }
    env.task_status(&running, "in_progress").await;
    // abort (a running and a pending task) and failure (an image that cannot be pulled)
    for task in [&running, &pending, &unowned] {
        env.clearml
            .call("tasks.stop", json!({"task": task}))
            .expect("stop");
    }
    env.task_status(&failing, "failed").await;
    for task in [&running, &pending, &unowned, &failing] {
        for pod in ranks(task) {
            env.pod_gone(&pod).await;
        }
        let name = service(task);
        env.kube
            .wait_for(WAIT, |v| {
                v.get("services", NS, &name).is_none().then_some(())
            })
            .await
            .unwrap_or_else(|_| panic!("Service {name} left behind"));
    }
    // (the request log, read last: its entries land after the objects)
    assert_eq!(
        env.pod_creations(),
        8,
        "two ranks for each of four tasks, each created once (rank 0 of the retried launch adopted)"
    );
}

/// Kill the agent with SIGKILL at random moments while 500 tasks flow, one in five waiting for
/// GPUs; every task must get exactly one pod and finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    sigkill_at_random_moments(NEWEST_SERVER_VERSION).await;
}

/// The same against a server before 1.17.0, where a task is taken in two calls (a forced
/// `tasks.enqueue`, then `queues.remove_task`) and a kill can fall between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_doubles_nothing_before_1_17() {
    sigkill_at_random_moments(OLD_SERVER).await;
}

/// Whether tasks are taken from their queue in two calls on this release.
fn takes_in_two_steps(version: &str) -> bool {
    version == OLD_SERVER
}

/// Asserts that the agent took every task in two calls (a forced enqueue into the pending queue,
/// then a removal from its own queue) on an old server, and in one call on a new one.
fn assert_take_protocol(env: &Env, version: &str, tasks: usize) {
    // every request, whatever its answer: with faults injected, a removal whose reply was lost
    // is answered 703 when retried
    let removals = env.clearml.calls("queues.remove_task");
    if takes_in_two_steps(version) {
        assert!(
            removals >= tasks,
            "{version}: {removals} removal requests for {tasks} tasks"
        );
    } else {
        assert!(
            removals < tasks / 10,
            "{version}: the server moves; yet {removals} removal requests for {tasks} tasks"
        );
        // moved in batches: `tasks.enqueue_many`, a single `tasks.enqueue` only to give a task
        // back to a queue no longer served
        let (many, single) = (
            env.clearml.calls("tasks.enqueue_many"),
            env.clearml.calls("tasks.enqueue"),
        );
        assert!(
            many > 0 && single < tasks / 10,
            "{version}: {many} enqueue_many and {single} enqueue requests for {tasks} tasks"
        );
    }
}

/// Tasks in the pending queue and still in one of `queues` (a take cut short between its two
/// calls, on a server before 1.17.0).
fn halfway(env: &Env, queues: &[&str]) -> usize {
    let pending = env.clearml.queue_entries(&env.queue("k8s_scheduler"));
    queues
        .iter()
        .flat_map(|q| env.clearml.queue_entries(&env.queue(q)))
        .filter(|t| pending.contains(t))
        .count()
}

async fn sigkill_at_random_moments(version: &str) {
    let env = Env::on_server(crash_sim(), version).await;
    let queues = ["q-alpha", "q-bravo", "q-charlie", "q-delta", "q-gpu"];
    let values = values_with_gpu_queue(&queues[..4], "q-gpu");
    let mut agent = env.agent(&values).await;
    let n = 500;
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(if i % 5 == 4 {
            env.enqueue(&format!("chaos-{i}"), "q-gpu", GPU_TASK_IMAGE)
        } else {
            env.enqueue(&format!("chaos-{i}"), queues[i % 4], "")
        });
    }
    let mut kills = 0;
    let mut left_halfway = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let done = env.completed(&tasks);
        if done == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done}/{n} tasks completed after {kills} kills"
        );
        if kills < 10 {
            let wait = Duration::from_millis(rand_between(50, 600));
            tokio::time::sleep(wait).await;
            agent.kill();
            kills += 1;
            left_halfway += halfway(&env, &queues);
            agent = env.agent(&values).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let pods: BTreeMap<String, usize> = env
        .kube
        .list("pods", Some(NS))
        .iter()
        .map(|p| (s(p, "/metadata/labels/clearml-task-id").to_string(), 1))
        .collect();
    let total = env.pod_creations();
    let waited = pods_that_waited(&env);
    println!(
        "sigkill test (server {version}): {n} tasks, {kills} kills ({left_halfway} tasks left in both queues by them), {total} pod creations, {} pods, {waited} pods waited for GPUs",
        pods.len()
    );
    if !takes_in_two_steps(version) {
        assert_eq!(left_halfway, 0, "a one-call move left a task in two queues");
    }
    assert!(waited > 0, "no pod ever waited for GPUs");
    assert_take_protocol(&env, version, n);
    for t in &tasks {
        assert!(pods.contains_key(t), "task {t} has no pod");
    }
    assert_eq!(total, n, "pod creations (one per task): {total}");
    for q in queues.iter().chain(["k8s_scheduler"].iter()) {
        assert!(
            env.clearml.queue_entries(&env.queue(q)).is_empty(),
            "queue {q} not drained"
        );
    }
}

fn rand_between(lo: u64, hi: u64) -> u64 {
    lo + rand::random::<u64>() % (hi - lo)
}

/// 100 idle queues cost one ClearML poll per interval, not one call per queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_load_is_bounded_with_100_queues() {
    let env = Env::new(SimOptions::default()).await;
    let mut values = String::from("agentk8sglue:\n  createQueues: true\n  queues:\n");
    for i in 0..100 {
        values.push_str(&format!("    idle-{i:03}: {{}}\n"));
    }
    let _agent = env.agent(&values).await;
    let before = env.clearml.requests().all().len();
    let window = Duration::from_secs(5);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let calls = env.clearml.requests().all().len() - before;
    let per_sec = calls as f64 / start.elapsed().as_secs_f64();
    println!(
        "idle load: {calls} ClearML calls in {:?} with 100 queues = {per_sec:.2}/s",
        start.elapsed()
    );
    assert!(
        per_sec <= 2.0,
        "idle polling too chatty: {per_sec:.2} calls/s"
    );
}

/// `dashboardReportMaxGpu` reaches ClearML, the worker is registered while running and
/// unregistered on SIGTERM, and `/metrics` counts what was dispatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_metrics_and_clean_shutdown() {
    let env = Env::new(SimOptions::default()).await;
    let mut values = fixture("dashboard-report-max-gpu.yaml");
    values.push_str("  createQueues: true\n  queues:\n    metered: {}\n");
    let mut agent = env.agent(&values).await;
    let worker = "k8s-agent:clearml";
    let has_worker = |env: &Env| {
        env.clearml
            .workers()
            .iter()
            .any(|w| w.get("id").and_then(Value::as_str) == Some(worker))
    };
    assert!(
        has_worker(&env),
        "worker registered: {:#?}",
        env.clearml.workers()
    );
    let task = env.enqueue("metered-task", "metered", "");
    env.task_status(&task, "completed").await;

    let deadline = Instant::now() + WAIT;
    while !env
        .clearml
        .cluster_reports()
        .iter()
        .any(|r| r.body.pointer("/properties/max_gpus") == Some(&json!(2)))
    {
        assert!(
            Instant::now() < deadline,
            "no cluster report with max_gpus 2: {:?}",
            env.clearml.cluster_reports()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = agent.metrics().await.expect("metrics");
    assert!(
        metrics.contains("clearml_agent_tasks_dispatched_total{queue=\"metered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clearml_agent_clearml_request_duration_seconds"),
        "{metrics}"
    );

    let status = agent
        .terminate(Duration::from_secs(20))
        .expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(!has_worker(&env), "worker unregistered on shutdown");
}
