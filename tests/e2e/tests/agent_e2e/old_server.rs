//! ClearML servers before 1.17.0: the agent reads the server's version at start, takes tasks in
//! two calls there (a forced `tasks.enqueue` into the pending queue, then `queues.remove_task`
//! from the task's queue), treats a task found in both as pending and launches it only once it is
//! out of its queue, and never enqueues a task into the pending queue twice (even when its read of
//! that queue does not show it); a server too old for that is refused at start; a server whose version says it
//! moves but that refuses to is taken in two steps all the same. (The crash suites run on both
//! kinds of server: `sigkill_*_before_1_17`, `restart::*_before_1_17`.)

use super::*;

const VALUES: &str = "agentk8sglue:\n  createQueues: true\n  succeededPodTtlSeconds: 3600\n  queues:\n    halfway: {}\n";

/// Waits until the agent has polled `n` more times than it had when called.
async fn polls(env: &Env, n: usize) {
    let target = env.clearml.calls("queues.get_all") + n;
    let deadline = Instant::now() + WAIT;
    while env.clearml.calls("queues.get_all") < target {
        assert!(Instant::now() < deadline, "the agent stopped polling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tasks of `tasks` in queue `name`.
fn in_queue(env: &Env, name: &str, tasks: &[String]) -> usize {
    let entries = env.clearml.queue_entries(&env.queue(name));
    tasks.iter().filter(|t| entries.contains(t)).count()
}

/// A take cut short between its two calls (`queues.remove_task` unavailable, then the agent
/// killed) leaves the tasks in both queues: no pod is created while they are still in their own
/// queue, no agent takes them again, and once the removal works the next tick finishes the move
/// and launches each task once. `status` names the server and the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_cut_short_is_finished_and_launched_once_out_of_its_queue() {
    use clearml_agent_proto::v1::{GetStatusRequest, agent_service_client::AgentServiceClient};
    let env = Env::on_server(fast_sim(), OLD_SERVER).await;
    env.clearml.faults().disable_endpoint("queues.remove_task");
    let mut agent = env.agent(VALUES).await;
    let tasks: Vec<String> = (0..3)
        .map(|i| env.enqueue(&format!("halfway-{i}"), "halfway", ""))
        .collect();
    let deadline = Instant::now() + WAIT;
    while in_queue(&env, "k8s_scheduler", &tasks) < tasks.len() {
        assert!(
            Instant::now() < deadline,
            "the tasks were never enqueued into k8s_scheduler"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        in_queue(&env, "halfway", &tasks),
        3,
        "still in their own queue"
    );
    for t in &tasks {
        let task = env.task(t);
        assert_eq!(s(&task, "/status"), "queued");
        assert_eq!(s(&task, "/execution/queue"), env.queue("k8s_scheduler"));
        assert!(
            clearml_agent::dispatch::origin_from_message(s(&task, "/status_message"))
                == Some(env.queue("halfway").as_str()),
            "the origin is recorded: {task:#}"
        );
    }
    let status = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc")
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let clearml = status.clearml.expect("clearml connection");
    assert_eq!(clearml.server_version, "1.16.2 (API 2.30)");
    assert_eq!(clearml.take_protocol, "enqueue-then-remove");

    let enqueues = env.clearml.calls("tasks.enqueue");
    polls(&env, 5).await;
    assert_eq!(env.pod_creations(), 0, "launched while still in its queue");
    // a new agent finds them in both queues: pending, not taken again, not launched yet
    agent.kill();
    let _agent = env.agent(VALUES).await;
    polls(&env, 5).await;
    assert_eq!(env.pod_creations(), 0, "launched while still in its queue");
    assert_eq!(
        env.clearml.calls("tasks.enqueue"),
        enqueues,
        "a task moved halfway was enqueued again"
    );
    assert_eq!(in_queue(&env, "halfway", &tasks), 3);

    env.clearml.faults().enable_endpoint("queues.remove_task");
    env.all_completed(&tasks, WAIT, "once the removal works")
        .await;
    assert_eq!(env.pod_creations(), tasks.len(), "one pod per task");
    for q in ["halfway", "k8s_scheduler"] {
        assert_eq!(in_queue(&env, q, &tasks), 0, "{q} drained");
    }
    println!(
        "take cut short (server {OLD_SERVER}): {} tasks in both queues across a SIGKILL, {} pod creations once out of their queue, no second enqueue",
        tasks.len(),
        env.pod_creations()
    );
}

/// A server before 1.1.0 does not read `tasks.enqueue`'s `force`: no take is safe there, and the
/// agent refuses to start, naming the version it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_too_old_for_a_safe_take_is_refused_at_start() {
    let env = Env::on_server(SimOptions::default(), "1.0.2").await;
    let mut agent = AgentProcess::spawn(&env.spec(VALUES)).expect("agent starts");
    let status = agent.wait_exit(WAIT).expect("the agent exits by itself");
    let log = agent.log_text();
    assert!(!status.success(), "exit status {status}:\n{log}");
    assert!(
        log.contains("ClearML server 1.0.2 (API 2.13) is too old")
            && log.contains("needs server 1.1.0 or newer"),
        "the log names the server's version and the minimum:\n{log}"
    );
    assert_eq!(env.clearml.calls("tasks.enqueue"), 0);
    assert_eq!(env.clearml.calls("workers.register"), 0);
}

/// A server whose `server.info` says 1.17.0 but whose `tasks.enqueue` does not move a queued task
/// (as an Enterprise server before 3.22.3 answers): the first move is refused, and from then on
/// the agent takes tasks in two steps; every task runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_to_move_gets_the_two_step_take() {
    let env = Env::on_server(fast_sim(), OLD_SERVER).await;
    env.clearml.faults().rewrite_replies(
        "server.info",
        Some(Arc::new(|data: &mut Value| {
            data["version"] = json!("1.17.0");
            data["api_version"] = json!("2.31");
        })),
    );
    let agent = env.agent(VALUES).await;
    let tasks: Vec<String> = (0..20)
        .map(|i| env.enqueue(&format!("refused-{i}"), "halfway", ""))
        .collect();
    env.all_completed(&tasks, WAIT, "after the refused move")
        .await;
    // the move is refused per id inside `tasks.enqueue_many` (a 200 reply), or by a single
    // `tasks.enqueue` (400)
    let refusals = env.clearml.requests().calls_with_code("tasks.enqueue", 400)
        + env.clearml.calls("tasks.enqueue_many");
    println!(
        "refused move: {refusals} refused tasks.enqueue, then {} tasks taken in two steps, {} pod creations",
        tasks.len(),
        env.pod_creations()
    );
    assert!(refusals >= 1, "the first move was refused");
    assert_eq!(env.pod_creations(), tasks.len(), "one pod per task");
    for q in ["halfway", "k8s_scheduler"] {
        assert_eq!(in_queue(&env, q, &tasks), 0, "{q} drained");
    }
    assert!(
        agent
            .log_text()
            .contains("taking tasks in two steps from now on"),
        "the fallback is logged:\n{}",
        agent.log_text()
    );
}

/// A take cut short whose task the tick's read of `k8s_scheduler` does not show (that read stops
/// at 500 entries; the task is at the back): the agent sees the task only in its own queue, finds
/// its `execution.queue` is `k8s_scheduler` already, and finishes the move without enqueueing it
/// again (a second enqueue would be answered 706, on which the server wipes the status message
/// that records the task's origin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_cut_short_beyond_the_pending_read_is_not_enqueued_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::on_server(fast_sim(), OLD_SERVER).await;
    let _agent = env.agent(VALUES).await;
    let (own, pending) = (env.queue("halfway"), env.queue("k8s_scheduler"));
    let task = env
        .clearml
        .create_task("beyond", json!({"type": "training"}))
        .expect("task");
    // the agent's reads of the queues do not show the task: nowhere while it is set up, then not
    // in k8s_scheduler
    let everywhere = Arc::new(AtomicBool::new(true));
    let hide = {
        let (task, pending, everywhere) = (task.clone(), pending.clone(), everywhere.clone());
        move |data: &mut Value| {
            for q in data
                .get_mut("queues")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let hidden = everywhere.load(Ordering::SeqCst)
                    || q.get("id").and_then(Value::as_str) == Some(pending.as_str());
                if let Some(entries) = q.get_mut("entries").and_then(Value::as_array_mut)
                    && hidden
                {
                    entries.retain(|e| e.get("task").and_then(Value::as_str) != Some(&task));
                }
            }
        }
    };
    env.clearml
        .faults()
        .rewrite_replies("queues.get_all", Some(Arc::new(hide)));
    // a take cut short: in its queue, and enqueued (forced) into k8s_scheduler with the record
    env.clearml.enqueue(&task, &own).expect("enqueued");
    let message = clearml_agent::dispatch::pending_message("halfway", &own);
    env.clearml
        .call(
            "tasks.enqueue",
            json!({"task": task, "queue": pending, "force": true,
                   "status_reason": clearml_agent::dispatch::PENDING_REASON, "status_message": message}),
        )
        .expect("forced enqueue");
    let before = env.clearml.calls("tasks.enqueue");
    everywhere.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + WAIT;
    while env.clearml.queue_entries(&own).contains(&task) {
        assert!(Instant::now() < deadline, "the move was never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        env.clearml.calls("tasks.enqueue"),
        before,
        "the task was enqueued again"
    );
    let t = env.task(&task);
    assert_eq!(
        s(&t, "/status_message"),
        message,
        "origin record kept: {t:#}"
    );
    assert_eq!(env.clearml.queue_entries(&pending), vec![task.clone()]);
    env.clearml.faults().rewrite_replies("queues.get_all", None);
    env.all_completed(std::slice::from_ref(&task), WAIT, "once visible")
        .await;
    assert_eq!(env.pod_creations(), 1, "one pod");
    println!(
        "take cut short beyond the pending read (server {OLD_SERVER}): move finished without a second enqueue, origin record kept, one pod"
    );
}
