//! Reliability: two replicas under leader election, and the agent's behaviour when the servers
//! misbehave. Each test prints its figure.

use super::*;

pub(super) fn holder(env: &Env) -> Option<String> {
    env.kube.get("leases", NS, "clearml-agent").and_then(|l| {
        l.pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

/// Two replicas: only the lease holder dispatches; SIGKILL the leader mid-run and the follower
/// takes over within the lease duration; every task gets exactly one pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_on_leader_death_without_doubles() {
    let env = Env::new(crash_sim()).await;
    let values = &values_with_gpu_queue(&["ha-one", "ha-two"], "ha-gpu");
    let mut replicas = HashMap::new();
    for name in ["replica-a", "replica-b"] {
        let mut spec = env.spec(values);
        spec.env.push(("POD_NAME".into(), name.into()));
        replicas.insert(
            name.to_string(),
            AgentProcess::start(&spec, READY)
                .await
                .expect("replica starts"),
        );
    }
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        if let Some(h) = holder(&env) {
            break h;
        }
        assert!(Instant::now() < deadline, "nobody took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let n = 200;
    let tasks: Vec<String> = (0..n)
        .map(|i| match i % 5 {
            4 => env.enqueue(&format!("ha-{i}"), "ha-gpu", GPU_TASK_IMAGE),
            k => env.enqueue(
                &format!("ha-{i}"),
                if k % 2 == 0 { "ha-one" } else { "ha-two" },
                "",
            ),
        })
        .collect();
    env.task_until(&tasks[n / 4], "a quarter done", |t| {
        t.get("status").and_then(Value::as_str) == Some("completed")
    })
    .await;
    let killed = Instant::now();
    replicas.get_mut(&leader).expect("leader process").kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    let handover = loop {
        if holder(&env).is_some_and(|h| h != leader) {
            break killed.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the follower never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    env.all_completed(&tasks, Duration::from_secs(120), "after the handover")
        .await;
    let creations = env.pod_creations();
    let waited = pods_that_waited(&env);
    println!(
        "two replicas: leader {leader} killed, handover after {handover:?}, {creations} pod creations for {n} tasks, {waited} pods waited for GPUs"
    );
    assert!(waited > 0, "no pod ever waited for GPUs");
    assert!(
        handover <= Duration::from_secs(15 + 2),
        "handover took {handover:?} (lease duration 15 s)"
    );
    assert_eq!(creations, n, "one pod per task");
}

/// (api group, resource[/subresource], verb) of every call in the request log.
fn calls(env: &Env) -> std::collections::BTreeSet<(String, String, String)> {
    env.kube
        .requests()
        .iter()
        .filter(|r| !r.resource.is_empty())
        .map(|r| {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            (r.group.clone(), resource, r.verb.clone())
        })
        .collect()
}

/// The agent's Role from `manifests/rbac.yaml`, as (group, resource, verb) triples.
fn role_rules() -> std::collections::BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../manifests/rbac.yaml"
    ))
    .expect("rbac.yaml");
    let text = text
        .replace("{{namespace}}", "clearml")
        .replace("{{version}}", "0");
    let mut out = std::collections::BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let doc = <Value as serde::Deserialize>::deserialize(doc).expect("yaml");
        if doc.get("kind").and_then(Value::as_str) != Some("Role") {
            continue;
        }
        for rule in doc["rules"].as_array().expect("rules") {
            for g in rule["apiGroups"].as_array().expect("groups") {
                for r in rule["resources"].as_array().expect("resources") {
                    for v in rule["verbs"].as_array().expect("verbs") {
                        let text = |x: &Value| x.as_str().unwrap_or_default().to_string();
                        out.insert((text(g), text(r), text(v)));
                    }
                }
            }
        }
    }
    out
}

/// Verbs the agent calls only on error or restart paths (adopting a pod or a Job after
/// `AlreadyExists` reads it; adopting a rendezvous Service reads it and sets its owner if it has not that one).
const ERROR_PATH_ONLY: &[(&str, &str, &str)] = &[
    ("", "pods", "get"),
    ("", "services", "get"),
    ("", "services", "patch"),
    // a fileMounts Secret is deleted only once stale (unused, and older than ten minutes)
    ("", "secrets", "delete"),
    ("batch", "jobs", "get"),
];

/// The Role grants exactly what the agent calls: every call recorded while the agent dispatches
/// (single and multi-node), cleans up, serves the control API and holds its lease is allowed, and
/// every granted verb is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_grants_exactly_what_the_agent_calls() {
    use clearml_agent_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
    let env = Env::new(SimOptions::default()).await;
    // a cluster with the PodGroup API: the multi-node tasks' ranks join a PodGroup
    env.kube
        .set_pod_group_api(Some(clearml_doubles::k8s::PodGroupApi::V1beta1));
    // rbac-single has fileMounts: the agent creates their Secret
    let values = "agentk8sglue:\n  createQueues: true\n  succeededPodTtlSeconds: 1\n  queues:\n    rbac-single:\n      templateOverrides:\n        fileMounts:\n          - name: pip.conf\n            folderPath: /etc\n            fileContent: x\n    rbac-multi:\n      templateOverrides:\n        resources:\n          limits:\n            nvidia.com/gpu: 2\n      queueSettings:\n        multiNode: [2, 2]\n    rbac-job:\n      queueSettings: {taskAsJob: true}\n    rbac-job-multi:\n      queueSettings: {taskAsJob: true, multiNode: [1, 1]}\n";
    env.kube
        .create("configmaps", NS, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "clearml-agent"}, "data": {"values.yaml": values}}))
        .expect("configmap");
    let mut spec = env.spec("");
    spec.config_map = Some("clearml-agent".into());
    let agent = AgentProcess::start(&spec, READY).await.expect("agent");
    let mut api = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc");
    api.add_queue(pb::AddQueueRequest {
        name: "rbac-added".into(),
        // Job mode: the added queue's Job is dry-run by the API server
        spec_json: r#"{"queueSettings": {"taskAsJob": true}}"#.into(),
        dry_run: false,
    })
    .await
    .expect("add");
    let single = env.enqueue("rbac-single-task", "rbac-single", "");
    let multi = env.enqueue("rbac-multi-task", "rbac-multi", "");
    let failing = env.enqueue("rbac-failing", "rbac-single", "sim/pull-error");
    // Job mode: the task's Job (and a multi-node one's Service), deleted after the TTL
    let job = env.enqueue("rbac-job-task", "rbac-job", "");
    let job_multi = env.enqueue("rbac-job-multi-task", "rbac-job-multi", "");
    for t in [&single, &multi, &job, &job_multi] {
        env.task_status(t, "completed").await;
    }
    env.task_status(&failing, "failed").await;
    // describe a task whose pod stays (the others are cleaned up after 1 s)
    let running = env.enqueue("rbac-running", "rbac-single", "sim/hang");
    env.task_status(&running, "in_progress").await;
    api.describe_task(pb::DescribeTaskRequest {
        id: running.clone(),
    })
    .await
    .expect("describe");
    api.render_pod(pb::RenderPodRequest {
        queue: "rbac-single".into(),
        task_id: String::new(),
    })
    .await
    .expect("render");
    for name in [
        format!("clearml-id-{single}"),
        format!("clearml-id-{multi}-0"),
    ] {
        env.pod_gone(&name).await;
    }
    // the request log, not the store: the log entry lands after the object is gone
    env.kube
        .wait_for_request(WAIT, |r| r.is("delete", "services"))
        .await
        .expect("rendezvous service deleted with the pods");
    for name in [
        format!("clearml-id-{job}"),
        format!("clearml-id-{job_multi}"),
    ] {
        env.kube
            .wait_for(WAIT, |v| v.get("jobs", NS, &name).is_none().then_some(()))
            .await
            .expect("Job deleted after its TTL");
    }
    drop(agent);

    let used = calls(&env);
    let granted = role_rules();
    println!("agent calls: {used:?}");
    let not_granted: Vec<_> = used.difference(&granted).collect();
    assert!(
        not_granted.is_empty(),
        "the agent called what its Role does not grant: {not_granted:?}"
    );
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|(g, r, v)| !ERROR_PATH_ONLY.contains(&(g.as_str(), r.as_str(), v.as_str())))
        .collect();
    assert!(
        unused.is_empty(),
        "the Role grants what the agent never calls: {unused:?}"
    );
}

async fn clearml_state(
    api: &mut clearml_agent_proto::v1::agent_service_client::AgentServiceClient<
        tonic::transport::Channel,
    >,
) -> i32 {
    api.get_status(clearml_agent_proto::v1::GetStatusRequest {})
        .await
        .map(|r| r.into_inner().clearml.map(|c| c.state).unwrap_or_default())
        .unwrap_or_default()
}

/// Waits until every task is completed, sampling the agent's ClearML state meanwhile; returns the
/// states seen.
async fn drain(
    env: &Env,
    tasks: &[String],
    api: &mut clearml_agent_proto::v1::agent_service_client::AgentServiceClient<
        tonic::transport::Channel,
    >,
    limit: Duration,
) -> std::collections::BTreeSet<i32> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + limit;
    loop {
        seen.insert(clearml_state(api).await);
        let done = env.completed(tasks);
        if done == tasks.len() {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "only {done}/{} tasks completed",
            tasks.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// About 20% of Kubernetes writes fail from now on: 10% answered 500, 11% answered 429 with
/// `Retry-After: 1`.
fn inject_kube_write_faults(env: &Env) {
    use clearml_doubles::k8s::{Fault, RequestMatch};
    let writes = || RequestMatch::any().verbs(&["create", "update", "patch", "delete"]);
    env.kube.inject_rate(writes(), Fault::Status(500), 0.1);
    env.kube.inject_rate(
        writes(),
        Fault::TooManyRequests {
            retry_after_seconds: 1,
        },
        0.11,
    );
}

fn assert_exactly_once(env: &Env, tasks: &[String], queues: &[&str]) {
    assert_eq!(env.pod_creations(), tasks.len(), "one pod per task");
    for q in queues.iter().chain(["k8s_scheduler"].iter()) {
        assert!(
            env.clearml.queue_entries(&env.queue(q)).is_empty(),
            "queue {q} not drained"
        );
    }
}

/// 20% of ClearML calls fail (a 500, a connection closed before or after the server acted, or a
/// 2 s delay) and every token expires mid-run: every task still gets exactly one pod, none is
/// stuck, and the agent's status says "degraded" meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_faults_and_token_expiry_lose_and_double_nothing() {
    use clearml_agent_proto::v1::{
        agent_service_client::AgentServiceClient, clearml_connection::State,
    };
    use clearml_doubles::clearml::Chaos;
    let env = Env::new(fast_sim()).await;
    let queues = ["chaos-a", "chaos-b", "chaos-c", "chaos-d"];
    let values = values_for(&queues);
    let agent = env.agent(&values).await;
    let mut api = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc");
    let before = env.clearml.requests().all().len();
    env.clearml.faults().set_chaos(Some(Chaos {
        rate: 0.2,
        delay: Duration::from_secs(2),
    }));
    let n = 500;
    let mut tasks: Vec<String> = (0..n / 2)
        .map(|i| env.enqueue(&format!("chaos-{i}"), queues[i % 4], ""))
        .collect();
    env.task_until(&tasks[n / 5], "a fifth done", |t| {
        t.get("status").and_then(Value::as_str) == Some("completed")
    })
    .await;
    // every token expires; the second half can only be taken after logging in again
    env.clearml.faults().expire_tokens();
    tasks.extend((n / 2..n).map(|i| env.enqueue(&format!("chaos-{i}"), queues[i % 4], "")));
    let started = Instant::now();
    let states = drain(&env, &tasks, &mut api, Duration::from_secs(300)).await;
    env.clearml.faults().set_chaos(None);
    let log = env.clearml.requests().all();
    let log = &log[before..];
    let faults = log
        .iter()
        .filter(|r| r.result_code == 500 || r.result_code == 0)
        .count();
    let relogins = log.iter().filter(|r| r.endpoint == "auth.login").count();
    println!(
        "ClearML chaos: {n} tasks, {} ClearML calls, {faults} failed by injection (500 or dropped), {relogins} logins after the start, drained {:?} after the token expiry; states seen {states:?}",
        log.len(),
        started.elapsed()
    );
    assert_exactly_once(&env, &tasks, &queues);
    assert!(
        states.contains(&(State::Degraded as i32)),
        "status never said degraded: {states:?}"
    );
    assert!(
        relogins >= 1,
        "the agent logged in again after the tokens expired"
    );
}

/// ClearML unreachable for 60 s, then back: the agent keeps running, says "down", and resumes
/// without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearml_outage_of_a_minute_is_survived() {
    use clearml_agent_proto::v1::{
        agent_service_client::AgentServiceClient, clearml_connection::State,
    };
    let env = Env::new(fast_sim()).await;
    let values = &values_for(&["outage-a", "outage-b"]);
    let mut agent = env.agent(values).await;
    let mut api = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc");
    let first: Vec<String> = (0..50)
        .map(|i| {
            env.enqueue(
                &format!("before-{i}"),
                if i % 2 == 0 { "outage-a" } else { "outage-b" },
                "",
            )
        })
        .collect();
    env.task_until(&first[10], "some done", |t| {
        t.get("status").and_then(Value::as_str) == Some("completed")
    })
    .await;
    env.clearml.faults().drop_next("*", usize::MAX / 2);
    let down_at = Instant::now();
    let mut states = std::collections::BTreeSet::new();
    while down_at.elapsed() < Duration::from_secs(60) {
        states.insert(clearml_state(&mut api).await);
        assert!(
            agent.wait_ready(Duration::from_secs(5)).await.is_ok(),
            "the agent stays up during the outage"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during: Vec<String> = (0..50)
        .map(|i| {
            env.enqueue(
                &format!("during-{i}"),
                if i % 2 == 0 { "outage-a" } else { "outage-b" },
                "",
            )
        })
        .collect();
    env.clearml.faults().clear();
    let back = Instant::now();
    let all: Vec<String> = first.iter().chain(&during).cloned().collect();
    drain(&env, &all, &mut api, Duration::from_secs(120)).await;
    println!(
        "ClearML outage: 60 s down (states seen {states:?}), every task done {:?} after it came back",
        back.elapsed()
    );
    assert!(
        states.contains(&(State::Down as i32)),
        "status never said down: {states:?}"
    );
    assert_exactly_once(&env, &all, &["outage-a", "outage-b"]);
}

/// 20% of Kubernetes writes fail (a 500, or a 429 with `Retry-After: 1`), watches are cut every
/// 2 s and the watch history compacted every 5 s (410 Gone → relist): one pod per task, nothing
/// stuck, 429s honoured and no tight retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_faults_and_watch_cuts_lose_and_double_nothing() {
    let env = Env::new(fast_sim()).await;
    let queues = ["kfault-a", "kfault-b"];
    let values = &values_for(&["kfault-a", "kfault-b"]);
    let _agent = env.agent(values).await;
    inject_kube_write_faults(&env);
    // a short watch history: a watch resumed after a cut finds its resourceVersion gone unless
    // nothing changed meanwhile (410 Gone → relist)
    env.kube.set_history_limit(2);
    let kube = env.kube.clone();
    let chaos = tokio::spawn(async move {
        for i in 0u64.. {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // compact first, so the watch's resume finds its resourceVersion gone (410 → relist)
            if i % 3 == 2 {
                kube.compact_history();
            }
            kube.cut_watches();
        }
    });
    let n = 500;
    let tasks: Vec<String> = (0..n)
        .map(|i| env.enqueue(&format!("kfault-{i}"), queues[i % 2], ""))
        .collect();
    let started = Instant::now();
    env.all_completed(&tasks, Duration::from_secs(300), "under Kubernetes faults")
        .await;
    chaos.abort();
    env.kube.clear_faults();
    let log = env.kube.requests();
    let creates: Vec<_> = log.iter().filter(|r| r.is("create", "pods")).collect();
    let throttled: Vec<_> = creates
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.at)
        .collect();
    let failed = creates.iter().filter(|r| r.status == 500).count();
    let relists = log.iter().filter(|r| r.is("list", "pods")).count();
    // after a 429 the agent waits the second it was asked to (250 ms of slack for requests
    // already in flight when the 429 arrived; a client that ignores Retry-After retries within
    // milliseconds)
    let early = creates
        .iter()
        .filter(|r| {
            throttled.iter().any(|t| {
                r.at > *t + Duration::from_millis(250) && r.at < *t + Duration::from_millis(950)
            })
        })
        .count();
    println!(
        "Kubernetes faults: {n} tasks in {:?}; {} pod create requests ({failed} answered 500, {} answered 429), {early} sent too early after a 429, {relists} pod lists (relists after cut watches)",
        started.elapsed(),
        creates.len(),
        throttled.len()
    );
    assert_exactly_once(&env, &tasks, &queues);
    assert!(!throttled.is_empty() && failed > 0, "faults were injected");
    assert_eq!(early, 0, "pod creates within a 429's Retry-After");
    assert!(
        creates.len() <= 2 * n,
        "too many create attempts: {} for {n} tasks",
        creates.len()
    );
    assert!(relists >= 2, "the watch relisted after cuts");
}

/// The SIGKILL test with the faults on: 20 random kills while 20% of ClearML calls and 20% of
/// Kubernetes writes fail. Nothing lost, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_rounds_with_faults_loses_and_doubles_nothing() {
    sigkill_twenty_rounds_with_faults(NEWEST_SERVER_VERSION).await;
}

/// The same against a server before 1.17.0 (tasks taken in two calls, either of which may fail
/// or be cut short by a kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_rounds_with_faults_loses_and_doubles_nothing_before_1_17() {
    sigkill_twenty_rounds_with_faults(OLD_SERVER).await;
}

async fn sigkill_twenty_rounds_with_faults(version: &str) {
    use clearml_doubles::clearml::Chaos;
    let env = Env::on_server(crash_sim(), version).await;
    let queues = ["kill-a", "kill-b", "kill-c", "kill-gpu"];
    let values = &values_with_gpu_queue(&queues[..3], "kill-gpu");
    let mut agent = env.agent(values).await;
    env.clearml.faults().set_chaos(Some(Chaos {
        rate: 0.2,
        delay: Duration::from_millis(500),
    }));
    inject_kube_write_faults(&env);
    let n = 500;
    let mut tasks = Vec::new();
    let mut kills = 0;
    let mut left_halfway = 0;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        // keep work flowing while the kills happen: 25 new tasks per round
        if tasks.len() < n {
            let start = tasks.len();
            tasks.extend((start..(start + 25).min(n)).map(|i| {
                if i % 5 == 4 {
                    env.enqueue(&format!("kill-{i}"), "kill-gpu", GPU_TASK_IMAGE)
                } else {
                    env.enqueue(&format!("kill-{i}"), queues[i % 3], "")
                }
            }));
        }
        let done = env.completed(&tasks);
        if done == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done}/{n} completed after {kills} kills:\n{}",
            stuck_report(&env, &tasks)
        );
        if kills < 20 {
            tokio::time::sleep(Duration::from_millis(rand_between(100, 900))).await;
            agent.kill();
            kills += 1;
            left_halfway += halfway(&env, &queues);
            agent = env.agent(values).await;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    env.clearml.faults().set_chaos(None);
    env.kube.clear_faults();
    let creations = env.pod_creations();
    let waited = pods_that_waited(&env);
    println!(
        "SIGKILL with faults (server {version}): {n} tasks, {kills} kills ({left_halfway} tasks left in both queues by them), {creations} pod creations, {waited} pods waited for GPUs"
    );
    if !takes_in_two_steps(version) {
        assert_eq!(left_halfway, 0, "a one-call move left a task in two queues");
    }
    assert_eq!(kills, 20);
    assert!(waited > 0, "no pod ever waited for GPUs");
    assert_take_protocol(&env, version, n);
    let lost_origin = env
        .clearml
        .tasks()
        .iter()
        .filter(|t| s(t, "/status_reason").contains("cannot tell which queue"))
        .count();
    assert_eq!(lost_origin, 0, "tasks failed for a lost origin");
    assert_exactly_once(&env, &tasks, &queues);
}

/// What the tasks that did not complete look like, in ClearML and in the cluster.
fn stuck_report(env: &Env, tasks: &[String]) -> String {
    let mut out = String::new();
    for t in tasks
        .iter()
        .filter(|t| env.status(t) != "completed")
        .take(20)
    {
        let task = env.task(t);
        let pod = env.kube.get("pods", NS, &format!("clearml-id-{t}"));
        out.push_str(&format!(
            "{t}: status={} reason={:?} message={:?} queue={} pod={}\n",
            s(&task, "/status"),
            s(&task, "/status_reason"),
            s(&task, "/status_message"),
            s(&task, "/execution/queue"),
            pod.map(|p| format!(
                "{} launch={}",
                s(&p, "/status/phase"),
                s(&p, "/metadata/annotations/clearml.ai~1launch")
            ))
            .unwrap_or_else(|| "none".into()),
        ));
    }
    out
}

/// ClearML replies the agent does not expect never crash it: a task whose document does not fit
/// (a wrong-typed field, no status) is failed with the field named; a reply that cannot be
/// attributed to a task holds back only that task (read one by one) until it is readable; HTML
/// pages (502 and 200) and a body over the size cap fail one tick, and dispatch goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_clearml_replies_fail_or_hold_back_one_task_with_a_reason() {
    use clearml_doubles::clearml::RawReply;
    let env = Env::new(fast_sim()).await;
    let mut agent = env.agent(&values_for(&["odd"])).await;
    let started = Instant::now();
    let mut phases = Vec::new();
    let create = |name: &str| {
        env.clearml
            .create_task(name, json!({"type": "training"}))
            .expect("task created")
    };
    let (wrong, no_status, no_id) = (create("wrong-type"), create("no-status"), create("no-id"));
    let fine: Vec<String> = (0..4).map(|i| create(&format!("fine-{i}"))).collect();
    let corrupt = {
        let (wrong, no_status, no_id) = (wrong.clone(), no_status.clone(), no_id.clone());
        move |data: &mut Value| {
            for t in data
                .get_mut("tasks")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let id = t.get("id").and_then(Value::as_str).unwrap_or_default();
                if id == wrong {
                    t["container"] = json!("ubuntu:22.04"); // an object in the real schema
                } else if id == no_status {
                    if let Some(o) = t.as_object_mut() {
                        o.remove("status");
                    }
                } else if id == no_id
                    && let Some(o) = t.as_object_mut()
                {
                    o.remove("id");
                }
            }
        }
    };
    env.clearml
        .faults()
        .rewrite_replies("tasks.get_all", Some(Arc::new(corrupt)));
    let odd = env.queue("odd");
    for t in [&wrong, &no_status, &no_id].into_iter().chain(&fine[..2]) {
        env.clearml.enqueue(t, &odd).expect("enqueued");
    }
    for (task, field) in [
        (
            &wrong,
            "container: invalid type: string, expected an object",
        ),
        (&no_status, "status: missing"),
    ] {
        let t = env.task_status(task, "failed").await;
        assert!(
            s(&t, "/status_reason").contains(field),
            "the reason names {field:?}: {t:#}"
        );
        assert!(
            !s(&t, "/status_reason").contains("ubuntu:22.04"),
            "the task's own data is not echoed: {t:#}"
        );
    }
    env.all_completed(&fine[..2], WAIT, "next to unreadable documents")
        .await;
    let pending = env.queue("k8s_scheduler");
    assert_eq!(
        env.clearml.queue_entries(&pending),
        vec![no_id.clone()],
        "the task that cannot be told apart stays pending, untouched"
    );
    assert_eq!(env.status(&no_id), "queued");
    let log = agent.log_text();
    assert!(
        log.contains("unreadable part of a ClearML reply") && log.contains("container"),
        "the agent logs the reason:\n{log}"
    );

    phases.push(started.elapsed());
    // readable again: the held-back task runs
    env.clearml.faults().rewrite_replies("tasks.get_all", None);
    env.all_completed(std::slice::from_ref(&no_id), WAIT, "once readable")
        .await;

    phases.push(started.elapsed());
    // replies that are not the envelope at all
    let faults = env.clearml.faults();
    let cap = clearml_agent::clearml::DEFAULT_MAX_REPLY_BYTES;
    faults.raw_reply_next("queues.get_all", 2, RawReply::html(502));
    faults.raw_reply_next("queues.get_all", 1, RawReply::html(200));
    faults.raw_reply_next("queues.get_all", 1, RawReply::huge(cap + 1024));
    faults.raw_reply_next("tasks.get_all", 1, RawReply::html(200));
    for t in &fine[2..] {
        env.clearml.enqueue(t, &odd).expect("enqueued");
    }
    env.all_completed(&fine[2..], WAIT, "after HTML pages and a huge body")
        .await;
    phases.push(started.elapsed());
    agent
        .wait_ready(Duration::from_secs(5))
        .await
        .expect("the agent is still up");
    let log = agent.log_text();
    assert!(
        log.contains("byte limit"),
        "the oversized reply is named in the log:\n{log}"
    );
    assert_eq!(
        env.clearml
            .requests()
            .calls_with_code("queues.get_all", 502),
        2,
        "both proxy pages were served"
    );
    let done: Vec<String> = fine.iter().chain([&no_id]).cloned().collect();
    assert_eq!(
        env.pod_creations(),
        done.len(),
        "one pod per runnable task, none for the failed"
    );
    for t in [&wrong, &no_status] {
        assert!(
            env.kube
                .get("pods", NS, &format!("clearml-id-{t}"))
                .is_none()
        );
    }
    println!(
        "Unexpected ClearML replies: 3 malformed task documents (2 failed naming the field, 1 held back until readable, then run), 2 HTML 502 + 2 HTML 200 pages + 1 body of {} bytes over the cap survived; {} tasks completed with one pod each; phases {:?}",
        cap + 1024,
        done.len(),
        phases
    );
}
