//! Reliability: two replicas under leader election, and the agent's behaviour when the servers
//! misbehave. Each test prints its figure.

use super::*;

fn holder(env: &Env) -> Option<String> {
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
    let env = Env::new(SimOptions {
        start_delay: Duration::from_millis(5),
        run_for: Duration::from_millis(5),
        ..Default::default()
    })
    .await;
    let values = "agentk8sglue:\n  createQueues: true\n  succeededPodTtlSeconds: 3600\n  queues:\n    ha-one: {}\n    ha-two: {}\n";
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
        .map(|i| {
            env.enqueue(
                &format!("ha-{i}"),
                if i % 2 == 0 { "ha-one" } else { "ha-two" },
                "",
            )
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
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = tasks
            .iter()
            .filter(|t| env.status(t) == "completed")
            .count();
        if done == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done}/{n} completed after the handover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let creations = env.pod_creations();
    println!(
        "two replicas: leader {leader} killed, handover after {handover:?}, {creations} pod creations for {n} tasks"
    );
    assert!(
        handover <= Duration::from_secs(15 + 2),
        "handover took {handover:?} (lease duration 15 s)"
    );
    assert_eq!(creations, n, "one pod per task");
}
