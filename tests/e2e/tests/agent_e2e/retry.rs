//! Retries: a task whose pod the cluster takes away (the double plays kube-scheduler's
//! preemption, the eviction API and the kubelet's node-pressure eviction, each with its
//! `DisruptionTarget` condition) goes back to the head of its queue and completes, one attempt at
//! a time; a task's own failure is not retried; past `maxRetries` the task fails with the last
//! reason; a retry survives a SIGKILL of the agent; a multi-node task that cannot be scheduled
//! whole releases every rank and goes back to its queue (the agent's gang rule), then starts whole
//! once the GPUs are free.

use super::*;

/// Pods of `task` in the store now.
pub(super) fn pods_of(env: &Env, task: &str) -> Vec<Value> {
    env.kube
        .list("pods", Some(NS))
        .into_iter()
        .filter(|p| s(p, "/metadata/labels/clearml-task-id") == task)
        .collect()
}

/// The task's console log lines (the agent's `events.add_batch`).
pub(super) fn log_of(env: &Env, task: &str) -> Vec<String> {
    env.clearml
        .events()
        .iter()
        .filter(|e| s(e, "/task") == task)
        .map(|e| s(e, "/msg").to_string())
        .collect()
}

/// Watches the task's pods until dropped: every sample must show the pods of one launch only
/// (never two attempts at once). Returns the launches seen, in order.
pub(super) struct OneAttempt {
    stop: Arc<std::sync::atomic::AtomicBool>,
    join: tokio::task::JoinHandle<Result<Vec<String>, String>>,
}

impl OneAttempt {
    pub(super) fn watch(env: &Env, task: &str) -> Self {
        let kube = env.kube.clone();
        let task = task.to_string();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let join = tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let launches: std::collections::BTreeSet<String> = kube
                    .list("pods", Some(NS))
                    .iter()
                    .filter(|p| s(p, "/metadata/labels/clearml-task-id") == task)
                    .map(|p| s(p, "/metadata/annotations/clearml.ai~1launch").to_string())
                    .collect();
                if launches.len() > 1 {
                    return Err(format!("two attempts at once: {launches:?}"));
                }
                if let Some(l) = launches.into_iter().next()
                    && seen.last() != Some(&l)
                {
                    seen.push(l);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(seen)
        });
        Self { stop, join }
    }

    pub(super) async fn launches(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.join
            .await
            .expect("watcher")
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Waits until `task` has a running pod (of a launch other than `not`) and is in progress.
async fn running(env: &Env, task: &str, pods: usize, not: Option<&str>) -> Vec<Value> {
    let launch = not.map(str::to_string);
    let task_id = task.to_string();
    env.kube
        .wait_for(WAIT, |v| {
            let pods_now: Vec<Value> = v
                .list("pods", Some(NS))
                .into_iter()
                .filter(|p| s(p, "/metadata/labels/clearml-task-id") == task_id)
                .filter(|p| {
                    launch.as_deref() != Some(s(p, "/metadata/annotations/clearml.ai~1launch"))
                })
                .filter(|p| s(p, "/status/phase") == "Running")
                .cloned()
                .collect();
            (pods_now.len() == pods).then_some(pods_now)
        })
        .await
        .unwrap_or_else(|_| panic!("{pods} pod(s) of task {task} running"))
}

pub(super) fn launch_of(pod: &Value) -> String {
    s(pod, "/metadata/annotations/clearml.ai~1launch").to_string()
}

fn sim() -> SimOptions {
    SimOptions {
        start_delay: Duration::from_millis(5),
        ..Default::default()
    }
}

const VALUES: &str = "\
agentk8sglue:
  createQueues: true
  failedPodTtlSeconds: 3600
  queues:
    retried: {}
    multi:
      queueSettings:
        multiNode: [1, 1]
    once:
      queueSettings:
        maxRetries: 1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_task_comes_back_to_its_queue_and_completes() {
    let env = Env::new(sim()).await;
    env.kube.set_deletion_delay(Duration::from_millis(300));
    let agent = env.agent(VALUES).await;
    let task = env.enqueue("preempted", "retried", "sim/sleep-1500");
    let first = running(&env, &task, 1, None).await;
    env.task_status(&task, "in_progress").await;
    let watch = OneAttempt::watch(&env, &task);
    let name = s(&first[0], "/metadata/name").to_string();
    env.kube.preempt_pod(NS, &name).expect("preempted");

    let again = running(&env, &task, 1, Some(&launch_of(&first[0]))).await;
    assert_eq!(
        s(&again[0], "/metadata/annotations/clearml.ai~1retries"),
        "PreemptionByScheduler",
        "the new pod carries the retry record"
    );
    env.task_status(&task, "completed").await;
    let launches = watch.launches().await;
    assert_eq!(
        launches.len(),
        2,
        "two attempts, one after the other: {launches:?}"
    );
    let log = log_of(&env, &task);
    let retried: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("retry 1 of 3") && l.contains("PreemptionByScheduler"))
        .collect();
    assert_eq!(
        retried.len(),
        1,
        "one retry line in the task's log: {log:#?}"
    );
    assert!(
        retried[0].contains("back to the head of queue retried"),
        "{}",
        retried[0]
    );
    let metrics = agent.metrics().await.expect("metrics");
    assert!(
        metrics.contains(
            "clearml_agent_task_retries_total{queue=\"retried\",reason=\"PreemptionByScheduler\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("clearml_agent_tasks_failed_total"),
        "nothing failed: {metrics}"
    );
}

/// On a ClearML server before 1.17 (forced enqueue, then removal from the pending queue) the
/// retry comes back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_task_comes_back_before_1_17() {
    let env = Env::on_server(sim(), OLD_SERVER).await;
    let _agent = env.agent(VALUES).await;
    let task = env.enqueue("preempted-old", "retried", "sim/sleep-1500");
    let first = running(&env, &task, 1, None).await;
    env.task_status(&task, "in_progress").await;
    let watch = OneAttempt::watch(&env, &task);
    env.kube
        .preempt_pod(NS, s(&first[0], "/metadata/name"))
        .expect("preempted");
    let again = running(&env, &task, 1, Some(&launch_of(&first[0]))).await;
    assert_eq!(
        s(&again[0], "/metadata/annotations/clearml.ai~1retries"),
        "PreemptionByScheduler"
    );
    env.task_status(&task, "completed").await;
    assert_eq!(watch.launches().await.len(), 2);
    for q in ["retried", "k8s_scheduler"] {
        assert!(
            !env.clearml.queue_entries(&env.queue(q)).contains(&task),
            "left in {q}"
        );
    }
}

/// The task goes back to the head of its queue, before the tasks that waited there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_task_goes_back_to_the_head_of_its_queue() {
    let env = Env::new(sim()).await;
    // hold the preempted pod while it terminates: meanwhile the task waits in its queue
    let values = "\
agentk8sglue:
  createQueues: true
  queues:
    one:
      queueSettings:
        maxPods: 1
";
    let _agent = env.agent(values).await;
    let task = env.enqueue("preempted", "one", "sim/sleep-1500");
    let first = running(&env, &task, 1, None).await;
    env.task_status(&task, "in_progress").await;
    let later: Vec<String> = (0..3)
        .map(|i| env.enqueue(&format!("later-{i}"), "one", "sim/sleep-10"))
        .collect();
    env.kube.hold_deletions(true).await;
    env.kube
        .preempt_pod(NS, s(&first[0], "/metadata/name"))
        .expect("preempted");
    let queue = env.queue("one");
    let deadline = Instant::now() + WAIT;
    loop {
        let entries = env.clearml.queue_entries(&queue);
        if entries.first() == Some(&task) {
            assert_eq!(
                entries[1..],
                later[..],
                "the others keep their order behind it"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task not at the head of its queue: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = env.task(&task);
    assert!(
        s(&t, "/status_message").starts_with("K8S retried after PreemptionByScheduler"),
        "{t:#}"
    );
    env.kube.hold_deletions(false).await;
    env.task_status(&task, "completed").await;
    let mut all = later.clone();
    all.push(task);
    env.all_completed(&all, WAIT, "after the retry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_multi_node_task_comes_back_whole() {
    let env = Env::new(sim()).await;
    env.kube.set_deletion_delay(Duration::from_millis(200));
    let agent = env.agent(VALUES).await;
    let task = env.enqueue("evicted", "multi", "sim/sleep-1500");
    let first = running(&env, &task, 2, None).await;
    env.task_status(&task, "in_progress").await;
    let watch = OneAttempt::watch(&env, &task);
    let rank1 = first
        .iter()
        .find(|p| s(p, "/metadata/labels/clearml-rank") == "1")
        .expect("rank 1");
    env.kube
        .kubelet_evict_pod(
            NS,
            s(rank1, "/metadata/name"),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi.",
        )
        .expect("evicted");

    let again = running(&env, &task, 2, Some(&launch_of(&first[0]))).await;
    assert!(
        again
            .iter()
            .all(|p| s(p, "/metadata/annotations/clearml.ai~1retries") == "TerminationByKubelet"),
        "{again:#?}"
    );
    env.task_status(&task, "completed").await;
    let launches = watch.launches().await;
    assert_eq!(launches.len(), 2, "{launches:?}");
    assert!(
        log_of(&env, &task)
            .iter()
            .any(|l| l.contains("retry 1 of 3") && l.contains("low on resource")),
        "{:#?}",
        log_of(&env, &task)
    );
    let metrics = agent.metrics().await.expect("metrics");
    assert!(
        metrics.contains(
            "clearml_agent_task_retries_total{queue=\"multi\",reason=\"TerminationByKubelet\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_s_own_failure_is_not_retried() {
    let env = Env::new(sim()).await;
    let agent = env.agent(VALUES).await;
    let oom = env.enqueue("oom", "retried", "sim/oom");
    let exit = env.enqueue("exit", "retried", "sim/exit-3");
    let t = env.task_status(&oom, "failed").await;
    assert!(s(&t, "/status_reason").contains("OOMKilled"), "{t:#}");
    env.task_status(&exit, "failed").await;
    for task in [&oom, &exit] {
        assert_eq!(pods_of(&env, task).len(), 1, "one pod, kept for its TTL");
        assert!(
            !log_of(&env, task).iter().any(|l| l.contains("retry")),
            "{:#?}",
            log_of(&env, task)
        );
    }
    let metrics = agent.metrics().await.expect("metrics");
    assert!(!metrics.contains("task_retries_total{"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_retries_the_task_fails_with_the_last_reason() {
    let env = Env::new(sim()).await;
    let _agent = env.agent(VALUES).await;
    let task = env.enqueue("unlucky", "once", "sim/sleep-3000");
    let first = running(&env, &task, 1, None).await;
    env.task_status(&task, "in_progress").await;
    env.kube
        .preempt_pod(NS, s(&first[0], "/metadata/name"))
        .expect("preempted");
    let second = running(&env, &task, 1, Some(&launch_of(&first[0]))).await;
    env.task_status(&task, "in_progress").await;
    env.kube
        .evict_pod(NS, s(&second[0], "/metadata/name"))
        .expect("evicted");
    let t = env.task_status(&task, "failed").await;
    let reason = s(&t, "/status_reason");
    assert!(
        reason.contains("EvictionByEvictionAPI")
            && reason.contains("retried 1 times already (queueSettings.maxRetries 1)"),
        "{t:#}"
    );
    assert!(
        env.clearml.queue_entries(&env.queue("once")).is_empty(),
        "not back in its queue"
    );
}

/// A SIGKILL while the preempted pod terminates, and another once the task is back in the
/// pending queue waiting for the old pod to go: the next agents finish the retry, and the count
/// survives (the new pod carries the record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_survives_sigkill() {
    let env = Env::new(sim()).await;
    let mut agent = env.agent(VALUES).await;
    let task = env.enqueue("survivor", "retried", "sim/sleep-1500");
    let first = running(&env, &task, 1, None).await;
    env.task_status(&task, "in_progress").await;
    let watch = OneAttempt::watch(&env, &task);
    // the agent dies; the cluster preempts the pod meanwhile (it stays terminating)
    agent.kill();
    env.kube.hold_deletions(true).await;
    env.kube
        .preempt_pod(NS, s(&first[0], "/metadata/name"))
        .expect("preempted");
    let mut agent = env.agent(VALUES).await;
    // the next agent puts it back (the old pod's in-pod agent marked it stopped on the SIGTERM:
    // still the agent's to put back), and holds it from the take while the old pod terminates
    env.task_until(&task, "put back with its retry record", |t| {
        s(t, "/status_message").starts_with(
            "K8S retried after PreemptionByScheduler: back at the head of queue retried",
        ) && s(t, "/status") == "queued"
    })
    .await;
    agent.kill();
    let _agent = env.agent(VALUES).await;
    env.kube.hold_deletions(false).await;
    let again = running(&env, &task, 1, Some(&launch_of(&first[0]))).await;
    assert_eq!(
        s(&again[0], "/metadata/annotations/clearml.ai~1retries"),
        "PreemptionByScheduler"
    );
    env.task_status(&task, "completed").await;
    assert_eq!(watch.launches().await.len(), 2);
    let retries = log_of(&env, &task)
        .iter()
        .filter(|l| l.contains("retry 1 of 3"))
        .count();
    assert_eq!(retries, 1, "{:#?}", log_of(&env, &task));
}

/// Waits until a released gang is back in its queue, not failed (its rank 0 ran the task: the
/// in-pod agent, signalled, may have marked it stopped while it waits there, overwriting the
/// retry message; the take turns it back to queued).
async fn back_after_release(env: &Env, task: &str) {
    let gang_queue = env.queue("gang");
    let t = env
        .task_until(task, "back in its queue after a gang release", |t| {
            env.clearml
                .queue_entries(&gang_queue)
                .iter()
                .any(|e| e == task)
                && (s(t, "/status_message").starts_with("K8S retried after GangTimeout")
                    || s(t, "/status_reason") == "user abort")
        })
        .await;
    assert_ne!(s(&t, "/status"), "failed", "{t:#}");
}

/// Waits until the task has 3 pods, 2 of them bound (the third waits for a GPU); `by_job`: all
/// made by the task's Indexed Job.
async fn two_of_three_ranks_bound(env: &Env, task: &str, by_job: bool) {
    env.kube
        .wait_for(WAIT, |v| {
            let pods: Vec<&Value> = v
                .list("pods", Some(NS))
                .into_iter()
                .filter(|p| s(p, "/metadata/labels/clearml-task-id") == task)
                .collect();
            let bound = pods
                .iter()
                .filter(|p| p.pointer("/spec/nodeName").is_some())
                .count();
            let made_by_job = pods.iter().all(|p| {
                p.pointer("/metadata/labels/batch.kubernetes.io~1job-name")
                    .is_some()
            });
            (pods.len() == 3 && bound == 2 && (!by_job || made_by_job)).then_some(())
        })
        .await
        .unwrap_or_else(|_| {
            panic!("two ranks bound, one waiting for a GPU (made by an Indexed Job: {by_job})")
        });
}

/// Two `holder` tasks (1 GPU each) running: two of the 4 GPUs held.
pub(super) async fn hold_two_gpus(env: &Env) -> Vec<String> {
    let holders: Vec<String> = (0..2)
        .map(|i| env.enqueue(&format!("holder-{i}"), "holder", "sim/hang"))
        .collect();
    for h in &holders {
        env.task_status(h, "in_progress").await;
    }
    holders
}

/// Aborts the holders: their GPUs are free once their pods go.
pub(super) fn free_gpus(env: &Env, holders: &[String]) {
    for h in holders {
        env.clearml
            .call("tasks.stop", json!({"task": h}))
            .expect("stop holder");
    }
}

/// 4 GPUs; `holder` tasks take 1 GPU each; a `gang` task is 3 ranks of 1 GPU.
pub(super) fn gang_values(pending_timeout: u64) -> String {
    format!(
        "\
agentk8sglue:
  createQueues: true
  pendingTimeoutSeconds: {pending_timeout}
  queues:
    holder:
      templateOverrides:
        resources:
          limits:
            nvidia.com/gpu: 1
    gang:
      queueSettings:
        multiNode: [1, 1, 1]
        gangTimeoutSeconds: 1
"
    )
}

pub(super) fn gang_sim() -> SimOptions {
    SimOptions {
        gpus: Some(4),
        ..sim()
    }
}

/// Two GPUs held: two ranks of the gang bind, the third cannot. Past the gang timeout every rank
/// is released and the task is back in its queue (not failed), reason in its log; once the GPUs
/// are free it starts whole and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_that_cannot_fit_releases_every_rank_then_starts_whole() {
    let env = Env::new(gang_sim()).await;
    let agent = env.agent(&gang_values(600)).await;
    let holders = hold_two_gpus(&env).await;
    let task = env.enqueue("gang", "gang", "sim/sleep-5000");
    let watch = OneAttempt::watch(&env, &task);
    // two ranks bound, one not
    two_of_three_ranks_bound(&env, &task, false).await;
    // released: no rank left, back in its queue (rank 0 ran the task: its in-pod agent, signalled,
    // may mark it stopped while it waits there; the take turns it back to queued)
    back_after_release(&env, &task).await;
    env.kube
        .wait_for(WAIT, |v| {
            v.list("pods", Some(NS))
                .iter()
                .all(|p| s(p, "/metadata/labels/clearml-task-id") != task)
                .then_some(())
        })
        .await
        .expect("every rank released");
    let log = log_of(&env, &task);
    assert!(
        log.iter().any(
            |l| l.contains("not scheduled within 1s (queueSettings.gangTimeoutSeconds")
                && l.contains("Insufficient nvidia.com/gpu")
                && l.contains("releasing every rank")
        ),
        "{log:#?}"
    );
    // capacity appears: the gang starts whole and completes
    free_gpus(&env, &holders);
    env.task_status(&task, "completed").await;
    let launches = watch.launches().await;
    assert!(launches.len() >= 2, "{launches:?}");
    let metrics = agent.metrics().await.expect("metrics");
    assert!(
        metrics.contains("clearml_agent_task_retries_total{queue=\"gang\",reason=\"GangTimeout\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("tasks_failed_total{"), "{metrics}");
}

/// A gang that never fits is released and launched again with backoff until its ranks waited
/// `pendingTimeoutSeconds` in total; then it fails with the scheduler's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_that_never_fits_fails_after_the_pending_timeout_in_total() {
    let env = Env::new(gang_sim()).await;
    let _agent = env.agent(&gang_values(3)).await;
    let _holders = hold_two_gpus(&env).await;
    let task = env.enqueue("never", "gang", "sim/hang");
    let deadline = Instant::now() + Duration::from_secs(60);
    let t = loop {
        let t = env.task(&task);
        if s(&t, "/status") == "failed" {
            break t;
        }
        assert!(Instant::now() < deadline, "not failed: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = s(&t, "/status_reason");
    assert!(
        reason.contains("in total (pending timeout 3s")
            && reason.contains("Insufficient nvidia.com/gpu"),
        "{t:#}"
    );
    let releases = log_of(&env, &task)
        .iter()
        .filter(|l| l.contains("releasing every rank"))
        .count();
    assert!(
        releases >= 2,
        "released and launched again first: {releases}"
    );
}

/// A queue that goes through Kueue: its pods carry the LocalQueue label and a multi-node task's
/// ranks one pod group; the double plays Kueue's webhook (the admission gate), the task waits
/// "for Kueue admission" (no gang release however long), maxPods counts the gated pods, and
/// admission lets the task run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kueue_gated_pods_are_explained_and_run_once_admitted() {
    let env = Env::new(sim()).await;
    env.kube.set_kueue_webhook(true);
    let values = "\
agentk8sglue:
  createQueues: true
  queues:
    kueued:
      queueSettings:
        maxPods: 2
        multiNode: [1, 1]
        gangTimeoutSeconds: 1
        kueue:
          localQueue: team-a
";
    let _agent = env.agent(values).await;
    let task = env.enqueue("through-kueue", "kueued", "sim/sleep-300");
    let next = env.enqueue("next", "kueued", "sim/sleep-10");
    let t = env
        .task_until(&task, "the Kueue reason", |t| {
            s(t, "/status_message").contains("waiting for Kueue admission in LocalQueue team-a")
        })
        .await;
    assert!(
        s(&t, "/status_message").contains("launching from queue kueued"),
        "{t:#}"
    );
    let pods = pods_of(&env, &task);
    assert_eq!(pods.len(), 2);
    let group = s(&pods[0], "/metadata/labels/kueue.x-k8s.io~1pod-group-name").to_string();
    assert!(group.starts_with(&format!("clearml-id-{task}-")), "{group}");
    for p in &pods {
        assert_eq!(
            s(p, "/metadata/labels/kueue.x-k8s.io~1queue-name"),
            "team-a"
        );
        assert_eq!(
            s(p, "/metadata/labels/kueue.x-k8s.io~1pod-group-name"),
            group
        );
        assert_eq!(
            s(
                p,
                "/metadata/annotations/kueue.x-k8s.io~1pod-group-total-count"
            ),
            "2"
        );
        assert_eq!(
            s(p, "/spec/schedulingGates/0/name"),
            "kueue.x-k8s.io/admission"
        );
    }
    // well past the gang timeout: still the same pods (Kueue admits groups whole), and the
    // next task waits in its queue (maxPods counts the gated pods)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let uids = |pods: &[Value]| -> Vec<String> {
        pods.iter()
            .map(|p| s(p, "/metadata/uid").to_string())
            .collect()
    };
    assert_eq!(uids(&pods_of(&env, &task)), uids(&pods), "no gang release");
    assert_eq!(
        env.clearml.queue_entries(&env.queue("kueued")),
        vec![next.clone()],
        "maxPods counts the gated pods"
    );
    // admission: the gates go, the task runs whole and completes, then the next one
    for p in &pods {
        env.kube
            .admit_kueue_pod(NS, s(p, "/metadata/name"))
            .expect("admitted");
    }
    env.task_status(&task, "completed").await;
    let waiting_next = env
        .task_until(&next, "its Kueue reason", |t| {
            s(t, "/status_message").contains("waiting for Kueue admission")
        })
        .await;
    assert_eq!(s(&waiting_next, "/status"), "queued");
    for p in pods_of(&env, &next) {
        env.kube
            .admit_kueue_pod(NS, s(&p, "/metadata/name"))
            .expect("admitted");
    }
    env.task_status(&next, "completed").await;
}

/// SIGKILL at random moments while the cluster preempts running pods and gangs wait for GPUs:
/// every task completes, every preempted one after a retry, never two launches of a task at
/// once. Pods terminate over 3 s (a grace period), so a kill never hides a preemption from the
/// next agent (pods that vanish while no agent runs are not noticed: README, Retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_with_preemptions_and_gang_releases() {
    let env = Env::new(SimOptions {
        gpus: Some(3),
        ..sim()
    })
    .await;
    env.kube.set_deletion_delay(Duration::from_secs(3));
    let values = "\
agentk8sglue:
  createQueues: true
  failedPodTtlSeconds: 3600
  succeededPodTtlSeconds: 3600
  queues:
    cpu-work:
      queueSettings:
        maxRetries: 100
    gpu-work:
      templateOverrides:
        resources:
          limits:
            nvidia.com/gpu: 1
      queueSettings:
        maxRetries: 100
    gangs:
      queueSettings:
        multiNode: [1, 1]
        gangTimeoutSeconds: 1
        maxRetries: 100
";
    let mut agent = env.agent(values).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (queue, image) = match i % 4 {
            0 => ("gpu-work", "sim/sleep-1500"),
            1 => ("gangs", "sim/sleep-800"),
            _ => ("cpu-work", "sim/sleep-600"),
        };
        tasks.push(env.enqueue(&format!("chaos-{i}"), queue, image));
    }
    // never two launches of one task at once, sampled over the whole run
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (kube, stop) = (env.kube.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut launches: BTreeMap<String, std::collections::BTreeSet<String>> =
                    BTreeMap::new();
                for p in kube.list("pods", Some(NS)) {
                    launches
                        .entry(s(&p, "/metadata/labels/clearml-task-id").to_string())
                        .or_default()
                        .insert(s(&p, "/metadata/annotations/clearml.ai~1launch").to_string());
                }
                if let Some((task, l)) = launches.iter().find(|(_, l)| l.len() > 1) {
                    return Err(format!("task {task}: two launches at once: {l:?}"));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Ok(())
        })
    };
    let (mut kills, mut preempted) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if env.completed(&tasks) == tasks.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {}/{} completed after {kills} kills and {preempted} preemptions",
            env.completed(&tasks),
            tasks.len()
        );
        tokio::time::sleep(Duration::from_millis(rand_between(100, 500))).await;
        // the cluster preempts a running pod of a cpu or gpu task now and then
        if preempted < 10 {
            let running: Vec<String> = env
                .kube
                .list("pods", Some(NS))
                .iter()
                .filter(|p| {
                    s(p, "/status/phase") == "Running"
                        && p.pointer("/metadata/deletionTimestamp").is_none()
                        && p.pointer("/metadata/labels/clearml-rank").is_none()
                })
                .map(|p| s(p, "/metadata/name").to_string())
                .collect();
            if !running.is_empty() {
                let pick = &running[rand_between(0, running.len() as u64) as usize];
                if env.kube.preempt_pod(NS, pick).is_ok() {
                    preempted += 1;
                }
            }
        }
        if kills < 6 && rand::random::<bool>() {
            agent.kill();
            kills += 1;
            agent = env.agent(values).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher
        .await
        .expect("watcher")
        .unwrap_or_else(|e| panic!("{e}"));
    let retried = tasks
        .iter()
        .filter(|t| log_of(&env, t).iter().any(|l| l.contains("retry ")))
        .count();
    let released = tasks
        .iter()
        .filter(|t| {
            log_of(&env, t)
                .iter()
                .any(|l| l.contains("releasing every rank"))
        })
        .count();
    println!(
        "sigkill with disruptions: {} tasks, {kills} kills, {preempted} preemptions, {retried} tasks retried, {released} gangs released at least once",
        tasks.len()
    );
    assert!(preempted > 0 && retried > 0, "no retry happened");
    for q in ["cpu-work", "gpu-work", "gangs", "k8s_scheduler"] {
        assert!(
            env.clearml.queue_entries(&env.queue(q)).is_empty(),
            "queue {q} not drained"
        );
    }
}

/// Job mode: an Indexed Job's ranks get the same gang rule. Two GPUs held, two ranks bind, the
/// third cannot: past the gang timeout the Job goes (its pods with it) and the task is back at
/// the head of its queue; once the GPUs are free a new Job starts whole and completes, never
/// with pods of two launches at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_that_cannot_fit_is_released_then_starts_whole() {
    let env = Env::new(gang_sim()).await;
    let values = gang_values(600).replace(
        "        gangTimeoutSeconds: 1\n",
        "        gangTimeoutSeconds: 1\n        taskAsJob: true\n",
    );
    let _agent = env.agent(&values).await;
    let holders = hold_two_gpus(&env).await;
    let task = env.enqueue("job-gang", "gang", "sim/sleep-5000");
    let watch = OneAttempt::watch(&env, &task);
    // an Indexed Job: two ranks bound, one not
    two_of_three_ranks_bound(&env, &task, true).await;
    back_after_release(&env, &task).await;
    assert!(
        log_of(&env, &task)
            .iter()
            .any(|l| l.contains("releasing every rank")),
        "reason in the task's log"
    );
    free_gpus(&env, &holders);
    env.task_status(&task, "completed").await;
    let launches = watch.launches().await;
    assert!(
        launches.len() >= 2,
        "released, then launched again: {launches:?}"
    );
    // the release is on the next launch's pods too (it counts towards the pending timeout)
    let job = env
        .kube
        .get("jobs", NS, &format!("clearml-id-{task}"))
        .expect("the task's Job");
    // (released again if its next launch came before the holders' GPUs were free)
    let record = s(
        &job,
        "/spec/template/metadata/annotations/clearml.ai~1retries",
    );
    assert!(
        !record.is_empty() && record.split(',').all(|c| c == "GangTimeout"),
        "{job:#}"
    );
}
