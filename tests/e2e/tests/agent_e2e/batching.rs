//! Batched ClearML calls: a burst is moved with one `tasks.enqueue_many` per origin queue (not
//! one `tasks.enqueue` per task), a lost `enqueue_many` reply is read back and not sent again,
//! pending reasons go out together in `tasks.update_batch` and an unchanged one is not written
//! again. (The crash suites run with batching on: `sigkill_*`, `restart::*`.)

use super::*;

/// Waits until the agent has polled `n` more times than it had when called.
async fn polls(env: &Env, n: usize) {
    let target = env.clearml.calls("queues.get_all") + n;
    let deadline = Instant::now() + WAIT;
    while env.clearml.calls("queues.get_all") < target {
        assert!(Instant::now() < deadline, "the agent stopped polling");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates the queues, then enqueues `per_queue` tasks into each (before any agent runs).
fn backlog(env: &Env, queues: &[&str], per_queue: usize, image: &str) -> Vec<String> {
    for q in queues {
        env.clearml.create_queue(q).expect("queue created");
    }
    (0..per_queue * queues.len())
        .map(|i| env.enqueue(&format!("burst-{i}"), queues[i % queues.len()], image))
        .collect()
}

/// A burst of 200 tasks over 4 queues: moved by `tasks.enqueue_many` (a few calls, each naming
/// one origin queue in the status message), no `tasks.enqueue` at all; one pod per task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_moved_with_enqueue_many_not_one_enqueue_per_task() {
    let env = Env::new(fast_sim()).await;
    let queues = ["batch-a", "batch-b", "batch-c", "batch-d"];
    let tasks = backlog(&env, &queues, 50, "");
    let _agent = env.agent(&values_for(&queues)).await;
    env.all_completed(&tasks, WAIT, "the burst").await;
    let many = env.clearml.calls("tasks.enqueue_many");
    let single = env.clearml.calls("tasks.enqueue");
    println!(
        "burst of {} tasks over {} queues: {many} tasks.enqueue_many, {single} tasks.enqueue",
        tasks.len(),
        queues.len()
    );
    assert_eq!(single, 0, "one tasks.enqueue per task");
    assert!(
        (queues.len()..=tasks.len() / 10).contains(&many),
        "{many} enqueue_many calls for {} tasks over {} queues",
        tasks.len(),
        queues.len()
    );
    assert_eq!(env.pod_creations(), tasks.len(), "one pod per task");
    // each task's pod came from the queue it was enqueued into (the batch's origin record)
    for (i, task) in tasks.iter().enumerate() {
        let pod = env.pod(task).await;
        assert_eq!(
            pod.pointer("/metadata/labels/clearml-agent-queue")
                .and_then(Value::as_str),
            Some(env.queue(queues[i % queues.len()]).as_str()),
            "{pod:#}"
        );
    }
}

/// The reply of the first `tasks.enqueue_many` is lost after the server moved the tasks: the
/// agent reads them back, finds them moved, and does not send it again (a second enqueue of a
/// task already in the pending queue is answered 706, on which the server wipes the status
/// message that records its origin). Every task runs once, from its own queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_enqueue_many_reply_is_read_back_not_sent_again() {
    let env = Env::new(fast_sim()).await;
    let queues = ["lost-a", "lost-b"];
    let tasks = backlog(&env, &queues, 15, "");
    env.clearml
        .faults()
        .drop_reply_next("tasks.enqueue_many", 1);
    let agent = env.agent(&values_for(&queues)).await;
    env.all_completed(&tasks, WAIT, "after the lost reply")
        .await;
    let requests = env.clearml.requests();
    let many = requests.calls("tasks.enqueue_many");
    let lost = requests
        .all()
        .iter()
        .filter(|r| r.endpoint == "tasks.enqueue_many" && r.result_code == 0)
        .count();
    println!("lost enqueue_many reply: {many} enqueue_many calls, {lost} reply lost");
    assert_eq!(lost, 1, "the fault hit one call");
    assert_eq!(many, queues.len(), "a moved chunk was sent again");
    assert_eq!(env.clearml.calls("tasks.enqueue"), 0);
    assert_eq!(env.pod_creations(), tasks.len(), "one pod per task");
    let lost_origin = env
        .clearml
        .tasks()
        .iter()
        .filter(|t| s(t, "/status_reason").contains("cannot tell which queue"))
        .count();
    assert_eq!(lost_origin, 0, "tasks failed for a lost origin");
    assert!(
        !agent.log_text().contains("cannot move tasks"),
        "{}",
        agent.log_text()
    );
}

/// Pending reasons of one pass go out in one `tasks.update_batch` (no `tasks.update`), each
/// keeping the origin record; once written, an unchanged reason is not written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_reasons_go_out_in_update_batch_and_once() {
    let env = Env::new(fast_sim()).await;
    let queues = ["reasons"];
    let tasks = backlog(&env, &queues, 12, "sim/unschedulable");
    let _agent = env.agent(&values_for(&queues)).await;
    for t in &tasks {
        let task = env
            .task_until(t, "a pending reason", |t| {
                s(t, "/status_message").contains("unschedulable")
            })
            .await;
        assert_eq!(
            clearml_agent::dispatch::origin_from_message(s(&task, "/status_message")),
            Some(env.queue("reasons").as_str()),
            "the origin record is kept: {task:#}"
        );
    }
    let batches = env.clearml.calls("tasks.update_batch");
    assert_eq!(
        env.clearml.calls("tasks.update"),
        0,
        "one tasks.update per reason"
    );
    assert!(
        (1..tasks.len()).contains(&batches),
        "{batches} update_batch calls for {} reasons",
        tasks.len()
    );
    polls(&env, 5).await;
    assert_eq!(
        env.clearml.calls("tasks.update_batch"),
        batches,
        "unchanged reasons written again"
    );
    println!(
        "pending reasons: {} tasks, {batches} tasks.update_batch, none re-sent over 5 more polls",
        tasks.len()
    );
}
