//! A restart is a no-op for a steady cluster: with tasks in every situation (waiting in their
//! queue at maxPods, pods unschedulable for GPUs, pulling, running, a multi-node task with one
//! rank bound and one not, pods succeeded and failed within their TTL, an aborted task whose pod
//! is still terminating), SIGTERM + start, SIGKILL + start and a leader handover change nothing:
//! no task changes in ClearML, no pod is created or deleted, every pending task keeps the origin
//! record in its status message. The request logs of both doubles say so.

use super::*;
use clearml_agent::dispatch::origin_from_message;

/// The cluster has 8 GPUs: three `gpu` tasks hold 6, the multi-node task (2 ranks of 2 GPUs) gets
/// one rank bound, the next two `gpu` tasks wait for GPUs, and the sixth waits in its queue
/// (`maxPods: 5`).
const VALUES: &str = "\
agentk8sglue:
  createQueues: true
  succeededPodTtlSeconds: 3600
  queues:
    gpu:
      templateOverrides:
        resources:
          limits:
            nvidia.com/gpu: 2
      queueSettings:
        maxPods: 5
    multi:
      queueSettings:
        multiNode: [2, 2]
    cpu: {}
";

/// What a restart must not change: every task's ClearML state, every queue's entries, every pod.
#[derive(Debug, PartialEq)]
struct World {
    tasks: BTreeMap<String, (String, String, String)>,
    queues: BTreeMap<String, Vec<String>>,
    pods: BTreeMap<String, (String, String, bool)>,
}

fn world(env: &Env, tasks: &[(&str, String)]) -> World {
    let tasks = tasks
        .iter()
        .map(|(what, id)| {
            let t = env.task(id);
            (
                format!("{what} {id}"),
                (
                    s(&t, "/status").to_string(),
                    s(&t, "/status_message").to_string(),
                    s(&t, "/status_reason").to_string(),
                ),
            )
        })
        .collect();
    let queues = ["gpu", "multi", "cpu", "k8s_scheduler"]
        .iter()
        .map(|q| (q.to_string(), env.clearml.queue_entries(&env.queue(q))))
        .collect();
    let pods = env
        .kube
        .list("pods", Some(NS))
        .iter()
        .map(|p| {
            (
                s(p, "/metadata/name").to_string(),
                (
                    s(p, "/metadata/uid").to_string(),
                    s(p, "/status/phase").to_string(),
                    p.pointer("/metadata/deletionTimestamp").is_some(),
                ),
            )
        })
        .collect();
    World {
        tasks,
        queues,
        pods,
    }
}

fn pods_of(env: &Env, task: &str) -> Vec<Value> {
    env.kube
        .list("pods", Some(NS))
        .into_iter()
        .filter(|p| s(p, "/metadata/labels/clearml-task-id") == task)
        .collect()
}

fn message_has(t: &Value, needle: &str) -> bool {
    s(t, "/status_message").contains(needle)
}

/// Builds the steady cluster; returns the tasks by situation.
async fn steady_cluster(env: &Env) -> Vec<(&'static str, String)> {
    let mut tasks = Vec::new();
    // running: three gpu tasks hold 6 of the 8 GPUs
    for i in 0..3 {
        let t = env.enqueue(&format!("running-{i}"), "gpu", "sim/hang");
        env.task_status(&t, "in_progress").await;
        tasks.push(("running", t));
    }
    // multi-node: one rank gets the 2 free GPUs, the other waits
    let multi = env.enqueue("multi", "multi", "sim/hang");
    env.kube
        .wait_for(WAIT, |v| {
            let pods: Vec<&Value> = v
                .list("pods", Some(NS))
                .into_iter()
                .filter(|p| s(p, "/metadata/labels/clearml-task-id") == multi)
                .collect();
            let bound = pods
                .iter()
                .filter(|p| p.pointer("/spec/nodeName").is_some())
                .count();
            (pods.len() == 2 && bound == 1).then_some(())
        })
        .await
        .expect("one rank of the multi-node task bound, one not");
    env.task_until(&multi, "an unschedulable reason", |t| {
        message_has(t, "Insufficient nvidia.com/gpu")
    })
    .await;
    tasks.push(("multi-node, one rank waiting", multi));
    // waiting for GPUs: two more gpu tasks; the queue is then at maxPods
    for i in 0..2 {
        let t = env.enqueue(&format!("unschedulable-{i}"), "gpu", "sim/hang");
        env.task_until(&t, "an unschedulable reason", |t| {
            message_has(t, "Insufficient nvidia.com/gpu")
        })
        .await;
        tasks.push(("unschedulable", t));
    }
    let capped = env.enqueue("capped", "gpu", "sim/hang");
    tasks.push(("waiting in its queue (maxPods)", capped.clone()));
    // pulling its image
    let pulling = env.enqueue("pulling", "cpu", "sim/slow-pull");
    env.kube
        .wait_for(WAIT, |v| {
            v.get("pods", NS, &format!("clearml-id-{pulling}"))
                .filter(|p| {
                    s(p, "/status/containerStatuses/0/state/waiting/reason") == "ContainerCreating"
                })
                .map(drop)
        })
        .await
        .expect("pod pulling");
    tasks.push(("pulling", pulling));
    // finished within their TTL
    let succeeded = env.enqueue("succeeded", "cpu", "");
    env.task_status(&succeeded, "completed").await;
    tasks.push(("succeeded", succeeded));
    let failed = env.enqueue("failed", "cpu", "sim/exit-3");
    env.task_status(&failed, "failed").await;
    env.kube
        .wait_for(WAIT, |v| {
            v.get("pods", NS, &format!("clearml-id-{failed}"))
                .filter(|p| s(p, "/status/phase") == "Failed")
                .map(drop)
        })
        .await
        .expect("failed pod");
    tasks.push(("failed", failed));
    // aborted in ClearML, its pod still terminating
    let aborted = env.enqueue("aborted", "cpu", "sim/hang");
    env.task_status(&aborted, "in_progress").await;
    env.kube.hold_deletions(true).await;
    env.clearml
        .call("tasks.stop", json!({"task": aborted}))
        .expect("stop");
    env.kube
        .wait_for(WAIT, |v| {
            v.get("pods", NS, &format!("clearml-id-{aborted}"))
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_some())
                .map(drop)
        })
        .await
        .expect("aborted task's pod terminating");
    // signalled, its in-pod agent marks the task stopped too, as the real one does
    env.task_until(&aborted, "the in-pod agent's answer to SIGTERM", |t| {
        s(t, "/status_reason") == "user abort"
    })
    .await;
    tasks.push(("aborted, pod terminating", aborted));
    // the queue at maxPods keeps the sixth task
    assert_eq!(
        env.clearml.queue_entries(&env.queue("gpu")),
        vec![capped],
        "the sixth gpu task waits in its queue"
    );
    tasks
}

/// Waits until the agent leading now has polled a few times and re-read the statuses (the
/// status refresh runs every 2 s): long enough for any verdict it would reach to be acted on.
async fn settle(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.clearml.requests().calls("queues.get_all") < 6
        || env.clearml.requests().calls("tasks.get_all") < 3
    {
        assert!(Instant::now() < deadline, "the agent never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// ClearML calls a restarted agent may make in a steady cluster: reads and its worker's
/// registration. Anything else would change a task or a queue.
const QUIET_CLEARML: &[&str] = &[
    "auth.login",
    "server.info",
    "queues.get_all",
    "tasks.get_all",
    "projects.get_all",
    "workers.register",
    "workers.status_report",
    "workers.cluster_report",
];

/// Runs `restart` on a steady cluster, its ClearML double playing clearml-server `version`, and
/// checks that it changed nothing.
async fn restart_changes_nothing(
    what: &str,
    version: &str,
    restart: impl AsyncFnOnce(&Env, AgentProcess) -> Vec<AgentProcess>,
) {
    let what = &format!("{what} (server {version})");
    let env = Env::on_server(
        SimOptions {
            gpus: Some(8),
            ..SimOptions::default()
        },
        version,
    )
    .await;
    let mut spec = env.spec(VALUES);
    spec.env.push(("POD_NAME".into(), "replica-a".into()));
    let agent = AgentProcess::start(&spec, READY)
        .await
        .expect("agent starts");
    let tasks = steady_cluster(&env).await;
    let before = world(&env, &tasks);
    for (what, id) in &tasks {
        let t = env.task(id);
        if env
            .clearml
            .queue_entries(&env.queue("k8s_scheduler"))
            .contains(id)
        {
            assert!(
                origin_from_message(s(&t, "/status_message")).is_some(),
                "{what} {id}: the status message has no origin record before the restart: {t:#}"
            );
        }
    }

    let _agents = restart(&env, agent).await;
    settle(&env).await;

    let after = world(&env, &tasks);
    for ((task, b), (_, a)) in before.tasks.iter().zip(&after.tasks) {
        assert_eq!(
            b, a,
            "{what}: task {task} changed (status, message, reason)"
        );
    }
    assert_eq!(before.queues, after.queues, "{what}: queue entries changed");
    assert_eq!(before.pods, after.pods, "{what}: pods changed");
    for id in after.queues.get("k8s_scheduler").into_iter().flatten() {
        let t = env.task(id);
        assert!(
            origin_from_message(s(&t, "/status_message")).is_some(),
            "{what}: {id} lost its origin record: {t:#}"
        );
    }
    let writes: Vec<String> = env
        .kube
        .requests()
        .iter()
        .filter(|r| {
            ["create", "update", "patch", "delete", "deletecollection"].contains(&r.verb.as_str())
                && r.resource != "leases"
        })
        .map(|r| format!("{} {}/{} {}", r.verb, r.resource, r.subresource, r.name))
        .collect();
    assert!(
        writes.is_empty(),
        "{what}: Kubernetes writes after the restart: {writes:?}"
    );
    let calls: Vec<String> = env
        .clearml
        .requests()
        .all()
        .into_iter()
        .map(|r| r.endpoint)
        .filter(|e| !QUIET_CLEARML.contains(&e.as_str()))
        .collect();
    assert!(
        calls.is_empty(),
        "{what}: ClearML writes after the restart: {calls:?}"
    );
    println!(
        "{what}: {} tasks in every situation, {} pods: nothing changed",
        tasks.len(),
        after.pods.len()
    );
    env.kube.hold_deletions(false).await;
}

/// Forgets both request logs: what is logged from here on is the new agent's.
fn clear_logs(env: &Env) {
    env.kube.clear_requests();
    env.clearml.requests().clear();
}

async fn sigterm_and_start(version: &str) {
    restart_changes_nothing("SIGTERM + start", version, async |env: &Env, mut agent| {
        agent
            .terminate(Duration::from_secs(30))
            .expect("agent exits on SIGTERM");
        clear_logs(env);
        vec![env.agent(VALUES).await]
    })
    .await;
}

async fn sigkill_and_start(version: &str) {
    restart_changes_nothing("SIGKILL + start", version, async |env: &Env, mut agent| {
        agent.kill();
        clear_logs(env);
        vec![env.agent(VALUES).await]
    })
    .await;
}

async fn leader_handover(version: &str) {
    restart_changes_nothing("leader handover", version, async |env: &Env, mut leader| {
        let mut spec = env.spec(VALUES);
        spec.env.push(("POD_NAME".into(), "replica-b".into()));
        let follower = AgentProcess::start(&spec, READY)
            .await
            .expect("follower starts");
        leader.kill();
        clear_logs(env);
        let deadline = Instant::now() + Duration::from_secs(60);
        while reliability::holder(env).as_deref() != Some("replica-b") {
            assert!(
                Instant::now() < deadline,
                "the follower never took the lease"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        vec![follower]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_start_changes_nothing() {
    sigterm_and_start(NEWEST_SERVER_VERSION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_start_changes_nothing() {
    sigkill_and_start(NEWEST_SERVER_VERSION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_handover_changes_nothing() {
    leader_handover(NEWEST_SERVER_VERSION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_start_changes_nothing_before_1_17() {
    sigterm_and_start(OLD_SERVER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_start_changes_nothing_before_1_17() {
    sigkill_and_start(OLD_SERVER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_handover_changes_nothing_before_1_17() {
    leader_handover(OLD_SERVER).await;
}

/// A pending task whose pods someone else deleted is launched again, whether the agent saw it
/// happen or was down at the time (one rule); a task that had started is failed (agent_e2e's
/// failure test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_task_whose_pods_were_deleted_is_launched_again_with_or_without_a_restart() {
    let env = Env::new(SimOptions {
        gpus: Some(2),
        ..SimOptions::default()
    })
    .await;
    let mut agent = env.agent(VALUES).await;
    let holder = env.enqueue("holder", "gpu", "sim/hang");
    env.task_status(&holder, "in_progress").await;
    let mut waiting = Vec::new();
    for i in 0..2 {
        let t = env.enqueue(&format!("waiting-{i}"), "gpu", "sim/sleep-100");
        env.task_until(&t, "an unschedulable reason", |t| {
            message_has(t, "Insufficient nvidia.com/gpu")
        })
        .await;
        waiting.push(t);
    }
    let uid = |task: &str| {
        pods_of(&env, task)
            .first()
            .map(|p| s(p, "/metadata/uid").to_string())
    };
    let relaunched = async |task: &str, old: &str| {
        env.kube
            .wait_for(WAIT, |v| {
                v.get("pods", NS, &format!("clearml-id-{task}"))
                    .filter(|p| s(p, "/metadata/uid") != old)
                    .map(drop)
            })
            .await
            .unwrap_or_else(|_| panic!("task {task} launched again"));
    };

    // seen by the agent
    let old = uid(&waiting[0]).expect("pod");
    env.kube
        .delete("pods", NS, &format!("clearml-id-{}", waiting[0]))
        .expect("delete");
    relaunched(&waiting[0], &old).await;

    // while the agent is down
    agent.kill();
    let old = uid(&waiting[1]).expect("pod");
    env.kube
        .delete("pods", NS, &format!("clearml-id-{}", waiting[1]))
        .expect("delete");
    env.pod_gone(&format!("clearml-id-{}", waiting[1])).await;
    agent = env.agent(VALUES).await;
    relaunched(&waiting[1], &old).await;

    for t in &waiting {
        let task = env.task(t);
        assert_eq!(s(&task, "/status"), "queued", "{task:#}");
        assert!(
            env.clearml
                .queue_entries(&env.queue("k8s_scheduler"))
                .contains(t),
            "{t} still pending"
        );
    }
    let logged = env
        .clearml
        .events()
        .iter()
        .filter(|e| s(e, "/task") == waiting[0] && s(e, "/msg").contains("creating them again"))
        .count();
    assert_eq!(logged, 1, "the relaunch is in the task's log");
    // once the GPUs free, both run to completion, one pod each since the relaunch
    env.clearml
        .call("tasks.stop", json!({"task": holder}))
        .expect("stop");
    for t in &waiting {
        env.task_status(t, "completed").await;
    }
    drop(agent);
}
