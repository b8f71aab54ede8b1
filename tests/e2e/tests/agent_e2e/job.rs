//! Job mode (`taskAsJob`) end to end: the agent binary creates one `batch/v1` Job per task and
//! the Kubernetes double's Job controller makes its pods, which the simulator runs. The seed
//! examples, the failure reasons, abort, TTL cleanup, a multi-node Indexed Job, and SIGKILL at
//! random moments (500 tasks, one Job each, none lost).

use super::*;

/// The task's Job, once it exists.
async fn job_of(env: &Env, task: &str) -> Value {
    let name = format!("clearml-id-{task}");
    env.kube
        .wait_for(WAIT, |v| v.get("jobs", NS, &name).cloned())
        .await
        .unwrap_or_else(|_| panic!("Job {name} created"))
}

/// The task's pods (those of its Job), once `n` exist.
async fn pods_of(env: &Env, task: &str, n: usize) -> Vec<Value> {
    let mut pods = env
        .kube
        .wait_for(WAIT, |v| {
            let pods: Vec<Value> = v
                .list("pods", Some(NS))
                .into_iter()
                .filter(|p| s(p, "/metadata/labels/clearml-task-id") == task)
                .cloned()
                .collect();
            (pods.len() >= n).then_some(pods)
        })
        .await
        .unwrap_or_else(|_| panic!("task {task}: {n} pods"));
    pods.sort_by_key(|p| {
        s(
            p,
            "/metadata/annotations/batch.kubernetes.io~1job-completion-index",
        )
        .to_string()
    });
    pods
}

async fn job_gone(env: &Env, task: &str) {
    let name = format!("clearml-id-{task}");
    env.kube
        .wait_for(WAIT, |v| {
            let pods = v
                .list("pods", Some(NS))
                .into_iter()
                .any(|p| s(p, "/metadata/labels/clearml-task-id") == task);
            (v.get("jobs", NS, &name).is_none() && !pods).then_some(())
        })
        .await
        .unwrap_or_else(|_| panic!("Job {name} and its pods deleted"));
}

/// Successful Job creations so far.
fn job_creations(env: &Env) -> usize {
    env.kube
        .requests()
        .iter()
        .filter(|r| r.is("create", "jobs") && (200..300).contains(&r.status))
        .count()
}

fn condition<'a>(job: &'a Value, ty: &str) -> Option<&'a Value> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty && c["status"] == "True")
}

/// Every seed example whose queues launch tasks, served in Job mode by one agent: each task is
/// one Job whose pods carry what the bare pod would, and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mode_runs_every_seed_example() {
    let env = Env::new(SimOptions::default()).await;
    let mut queues = serde_json::Map::new();
    let mut base = Value::Null;
    for f in [
        "custom-pod-template.yaml",
        "gpu-queues.yaml",
        "gpus-with-shared-memory.yaml",
        "queue-settings.yaml",
    ] {
        let doc: Value = serde_yaml::from_str(&fixture(f)).expect("yaml");
        if let Some(b) = doc.pointer("/agentk8sglue/basePodTemplate") {
            base = b.clone();
        }
        for (k, v) in doc
            .pointer("/agentk8sglue/queues")
            .and_then(Value::as_object)
            .expect("queues")
        {
            queues.insert(k.clone(), v.clone());
        }
    }
    let values = serde_yaml::to_string(&json!({"agentk8sglue": {
        "createQueues": true, "taskAsJob": true, "basePodTemplate": base, "queues": queues}}))
    .expect("yaml");
    let _agent = env.agent(&values).await;
    let names: Vec<String> = queues.keys().cloned().collect();
    let tasks: Vec<String> = names
        .iter()
        .map(|q| env.enqueue(&format!("job-{q}"), q, ""))
        .collect();
    for (queue, task) in names.iter().zip(&tasks) {
        let job = job_of(&env, task).await;
        assert_eq!(s(&job, "/metadata/labels/clearml-task-id"), task.as_str());
        assert_eq!(s(&job, "/spec/template/spec/restartPolicy"), "Never");
        assert_eq!(job.pointer("/spec/backoffLimit"), Some(&json!(0)));
        let multi = queue == "exampleQueue";
        let ranks = if multi { 3 } else { 1 };
        assert_eq!(
            s(&job, "/spec/completionMode"),
            if multi { "Indexed" } else { "NonIndexed" },
            "{queue}"
        );
        assert_eq!(job.pointer("/spec/completions"), Some(&json!(ranks)));
        let pods = pods_of(&env, task, ranks).await;
        for (rank, pod) in pods.iter().enumerate() {
            assert_eq!(
                s(pod, "/metadata/labels/clearml-agent-queue-name"),
                queue.as_str()
            );
            assert_eq!(
                s(pod, "/metadata/ownerReferences/0/kind"),
                "Job",
                "{queue}: owned by its Job"
            );
            assert_eq!(
                pod.pointer("/spec/automountServiceAccountToken"),
                Some(&json!(false))
            );
            if multi {
                assert_eq!(s(pod, "/spec/containers/0/image"), "python:3.10");
                assert_eq!(
                    s(
                        pod,
                        "/metadata/annotations/batch.kubernetes.io~1job-completion-index"
                    ),
                    rank.to_string()
                );
                assert_eq!(env_var(pod, "WORLD_SIZE"), Some("6"));
            }
        }
        match queue.as_str() {
            "green" => {
                assert_eq!(env_var(&pods[0], "MY_ENV"), Some("my_value"));
                assert_eq!(
                    s(&pods[0], "/spec/containers/0/resources/limits/memory"),
                    "2Gi"
                );
            }
            "red" => assert_eq!(s(&pods[0], "/metadata/labels/team"), "red"),
            "2xGPU" => assert_eq!(
                s(
                    &pods[0],
                    "/spec/containers/0/resources/limits/nvidia.com~1gpu"
                ),
                "2"
            ),
            "GPUs_with_shared_memory" => {
                assert_eq!(s(&pods[0], "/spec/volumes/0/emptyDir/medium"), "Memory")
            }
            _ => {}
        }
    }
    for task in &tasks {
        env.task_status(task, "completed").await;
        let job = job_of(&env, task).await;
        env.kube
            .wait_for(WAIT, |v| {
                let j = v.get("jobs", NS, s(&job, "/metadata/name"))?;
                condition(j, "Complete").map(drop)
            })
            .await
            .expect("the Job completes");
    }
    assert_eq!(job_creations(&env), tasks.len(), "one Job per task");
    assert_eq!(env.pod_creations(), 0, "the agent creates no pod itself");
    assert!(
        env.clearml
            .queue_entries(&env.queue("k8s_scheduler"))
            .is_empty()
    );
}

/// The failure reasons read as for bare pods; a Job whose task failed in its pod is kept for
/// inspection, one the agent failed (its pod could not start) is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mode_failures_are_reported_with_their_reason() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  taskAsJob: true\n  pendingTimeoutSeconds: 2\n  queues:\n    job-fail: {}\n";
    let agent = env.agent(values).await;
    let cases = [
        ("sim/pull-error", "ErrImagePull", false, None),
        (
            "sim/config-error",
            "CreateContainerConfigError",
            false,
            None,
        ),
        (
            "sim/oom",
            "OOMKilled (exit code 137)",
            true,
            Some("PodFailurePolicy"),
        ),
        (
            "sim/exit-3",
            "worker execution exit code 3",
            true,
            Some("PodFailurePolicy"),
        ),
        ("sim/no-start", "without starting the task", true, None),
        ("sim/unschedulable", "unschedulable for", false, None),
    ];
    let tasks: Vec<String> = cases
        .iter()
        .map(|(img, _, _, _)| env.enqueue(img, "job-fail", img))
        .collect();
    for ((image, reason, kept, job_reason), task) in cases.iter().zip(&tasks) {
        let t = env.task_status(task, "failed").await;
        let got = s(&t, "/status_reason");
        assert!(
            got.contains(reason),
            "{image}: reason {got:?} lacks {reason:?}"
        );
        let name = format!("clearml-id-{task}");
        if *kept {
            let job = env.kube.get("jobs", NS, &name).expect("failed Job kept");
            if let Some(want) = job_reason {
                let failed = env
                    .kube
                    .wait_for(WAIT, |v| {
                        condition(v.get("jobs", NS, &name)?, "Failed").cloned()
                    })
                    .await
                    .expect("the Job failed");
                assert_eq!(failed["reason"], *want, "{image}: {job:#}");
            }
        } else {
            job_gone(&env, task).await;
        }
    }
    // `tasks` and `describe task` through the control API: the Job and its conditions
    use clearml_agent_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
    let mut api = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc");
    let exited = &tasks[3];
    let listed = api
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("tasks")
        .into_inner()
        .tasks;
    let row = listed.iter().find(|t| t.id == *exited).expect("listed");
    assert_eq!(
        (row.queue.as_str(), row.phase.as_str()),
        ("job-fail", "Failed")
    );
    let d = api
        .describe_task(pb::DescribeTaskRequest { id: exited.clone() })
        .await
        .expect("describe")
        .into_inner();
    let job = d.job.expect("the Job");
    assert_eq!(job.name, format!("clearml-id-{exited}"));
    assert_eq!(job.failed, 1);
    assert!(
        job.conditions
            .iter()
            .any(|c| c.r#type == "Failed" && c.reason == "PodFailurePolicy"),
        "{:?}",
        job.conditions
    );
    assert_eq!(d.pods.len(), 1);
    assert_eq!(d.pods[0].exit_code, Some(3));
    // a pod deleted by someone else: the Job fails, and so does the task
    let victim = env.enqueue("victim", "job-fail", "sim/hang");
    env.task_status(&victim, "in_progress").await;
    let pod = pods_of(&env, &victim, 1).await.remove(0);
    env.kube
        .delete("pods", NS, s(&pod, "/metadata/name"))
        .expect("delete");
    let t = env.task_status(&victim, "failed").await;
    assert!(s(&t, "/status_reason").contains("failed"), "{t:#}");
}

/// A pod the cluster takes away (preemption) does not fail the task: the Job fails at once
/// (`podFailurePolicy` FailJob: no replacement pod runs a task that is no longer queued) and the
/// agent puts the task back at the head of its queue; a new Job runs it to completion, never two
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mode_retries_a_preempted_task() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  queues:\n    job-pre:\n      queueSettings: {taskAsJob: true}\n";
    let _agent = env.agent(values).await;
    let task = env.enqueue("preempted", "job-pre", "sim/sleep-3000");
    env.task_status(&task, "in_progress").await;
    let first = pods_of(&env, &task, 1).await.remove(0);
    let first_name = s(&first, "/metadata/name").to_string();
    let first_job_uid = env
        .kube
        .get("jobs", NS, &format!("clearml-id-{task}"))
        .map(|j| s(&j, "/metadata/uid").to_string())
        .expect("the task's Job");
    env.kube.preempt_pod(NS, &first_name).expect("preempted");
    let t = env
        .task_until(&task, "back in its queue", |t| {
            s(t, "/status_message").starts_with("K8S retried after PreemptionByScheduler")
        })
        .await;
    assert_ne!(s(&t, "/status"), "failed", "{t:#}");
    // a new Job (the old one deleted first) runs the task to completion
    env.task_status(&task, "completed").await;
    let job = env
        .kube
        .get("jobs", NS, &format!("clearml-id-{task}"))
        .expect("the task's Job");
    assert_ne!(s(&job, "/metadata/uid"), first_job_uid, "a new Job");
    assert_eq!(
        s(
            &job,
            "/spec/template/metadata/annotations/clearml.ai~1retries"
        ),
        "PreemptionByScheduler",
        "{job:#}"
    );
    assert_eq!(job_creations(&env), 2);
}

/// Abort deletes the Job (and so its pods); a finished Job is deleted after its TTL; a deadline
/// fails the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mode_abort_ttl_and_deadline() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  taskAsJob: true\n  succeededPodTtlSeconds: 1\n  queues:\n    job-abort: {}\n    job-deadline:\n      queueSettings: {activeDeadlineSeconds: 1}\n";
    let _agent = env.agent(values).await;
    let running = env.enqueue("running", "job-abort", "sim/hang");
    let pending = env.enqueue("pending", "job-abort", "sim/unschedulable");
    let finished = env.enqueue("finished", "job-abort", "");
    let late = env.enqueue("late", "job-deadline", "sim/hang");
    env.task_status(&running, "in_progress").await;
    pods_of(&env, &pending, 1).await;
    for t in [&running, &pending] {
        env.clearml
            .call("tasks.stop", json!({"task": t}))
            .expect("stop");
    }
    job_gone(&env, &running).await;
    job_gone(&env, &pending).await;
    assert_eq!(env.status(&running), "stopped");
    env.task_status(&finished, "completed").await;
    job_gone(&env, &finished).await;
    let t = env.task_status(&late, "failed").await;
    assert!(
        s(&t, "/status_reason").contains("active deadline (1s)"),
        "{t:#}"
    );
    assert!(
        env.kube.requests().iter().any(|r| r.is("delete", "jobs")),
        "the agent deleted Jobs"
    );
}

/// A multi-node task is one Indexed Job: ranks from the completion index, the rendezvous
/// Service selects index 0 and is owned by the Job, and goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mode_multi_node_is_an_indexed_job() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  taskAsJob: true\n  succeededPodTtlSeconds: 1\n  queues:\n    job-multi:\n      queueSettings:\n        multiNode: [2, 2, 2]\n";
    let agent = env.agent(values).await;
    // `queues render` shows the Job a launch creates, dry-run by the API server
    use clearml_agent_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
    let mut api = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc");
    let docs = api
        .render_pod(pb::RenderPodRequest {
            queue: "job-multi".into(),
            task_id: String::new(),
        })
        .await
        .expect("render")
        .into_inner()
        .manifests_yaml;
    assert_eq!(docs.len(), 2, "{docs:#?}");
    assert!(
        docs[0].contains("kind: Job") && docs[0].contains("completionMode: Indexed"),
        "{}",
        docs[0]
    );
    assert!(docs[1].contains("kind: Service"), "{}", docs[1]);
    assert!(
        env.kube
            .requests()
            .iter()
            .any(|r| r.is("create", "jobs") && r.query.contains("dryRun")),
        "the Job was dry-run"
    );
    let task = env.enqueue("multi", "job-multi", "");
    let job = job_of(&env, &task).await;
    assert_eq!(s(&job, "/spec/completionMode"), "Indexed");
    assert_eq!(job.pointer("/spec/parallelism"), Some(&json!(3)));
    let pods = pods_of(&env, &task, 3).await;
    for (rank, pod) in pods.iter().enumerate() {
        assert!(
            s(pod, "/metadata/name").starts_with(&format!("clearml-id-{task}-{rank}-")),
            "{}",
            s(pod, "/metadata/name")
        );
        assert_eq!(
            s(pod, "/spec/hostname"),
            format!("clearml-id-{task}-{rank}")
        );
        let node_rank = pod
            .pointer("/spec/containers/0/env")
            .and_then(Value::as_array)
            .and_then(|e| e.iter().find(|v| v["name"] == "NODE_RANK"))
            .cloned()
            .expect("NODE_RANK");
        assert_eq!(
            node_rank["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
    }
    let svc = env
        .kube
        .wait_for(WAIT, |v| {
            v.get("services", NS, &format!("clearml-id-{task}"))
                .cloned()
        })
        .await
        .expect("rendezvous Service");
    assert_eq!(
        svc.pointer("/spec/selector"),
        Some(&json!({"batch.kubernetes.io/job-completion-index": "0", "clearml-task-id": task}))
    );
    assert_eq!(s(&svc, "/metadata/ownerReferences/0/kind"), "Job");
    assert_eq!(
        s(&svc, "/metadata/ownerReferences/0/uid"),
        s(&job, "/metadata/uid")
    );
    env.task_status(&task, "completed").await;
    job_gone(&env, &task).await;
    let name = format!("clearml-id-{task}");
    env.kube
        .wait_for(WAIT, |v| {
            v.get("services", NS, &name).is_none().then_some(())
        })
        .await
        .expect("Service deleted with the Job");
}

/// SIGKILL at random moments while 500 tasks flow in Job mode, one in five waiting for GPUs:
/// every task gets exactly one Job and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mode_sigkill_at_random_moments_loses_and_doubles_nothing() {
    let env = Env::new(crash_sim()).await;
    let queues = ["j-alpha", "j-bravo", "j-charlie", "j-delta", "j-gpu"];
    let values = values_with_gpu_queue(&queues[..4], "j-gpu").replacen(
        "createQueues: true\n",
        "createQueues: true\n  taskAsJob: true\n",
        1,
    );
    let mut agent = env.agent(&values).await;
    let n = 500;
    let tasks: Vec<String> = (0..n)
        .map(|i| {
            if i % 5 == 4 {
                env.enqueue(&format!("jchaos-{i}"), "j-gpu", GPU_TASK_IMAGE)
            } else {
                env.enqueue(&format!("jchaos-{i}"), queues[i % 4], "")
            }
        })
        .collect();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
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
            tokio::time::sleep(Duration::from_millis(rand_between(50, 600))).await;
            agent.kill();
            kills += 1;
            agent = env.agent(&values).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let jobs: BTreeMap<String, usize> = env
        .kube
        .list("jobs", Some(NS))
        .iter()
        .map(|j| (s(j, "/metadata/labels/clearml-task-id").to_string(), 1))
        .collect();
    let created = job_creations(&env);
    let waited = pods_that_waited(&env);
    println!(
        "job-mode sigkill test: {n} tasks, {kills} kills, {created} Job creations, {} Jobs, {waited} pods waited for GPUs",
        jobs.len()
    );
    assert!(waited > 0, "no pod ever waited for GPUs");
    for t in &tasks {
        assert!(jobs.contains_key(t), "task {t} has no Job");
    }
    assert_eq!(created, n, "Job creations (one per task): {created}");
    assert_eq!(env.pod_creations(), 0, "no bare pod");
    for q in queues.iter().chain(["k8s_scheduler"].iter()) {
        assert!(
            env.clearml.queue_entries(&env.queue(q)).is_empty(),
            "queue {q} not drained"
        );
    }
}

/// A restart in Job mode changes nothing ("Why a restart changes nothing"): Jobs running,
/// waiting for a node, finished and failed within their TTL, and a multi-node one are adopted,
/// and the request log shows no Kubernetes write but the lease's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_mode_sigkill_and_start_changes_nothing() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  taskAsJob: true\n  succeededPodTtlSeconds: 3600\n  queues:\n    job-r: {}\n    job-rm:\n      queueSettings:\n        multiNode: [1, 1]\n";
    let mut agent = env.agent(values).await;
    let running = env.enqueue("running", "job-r", "sim/hang");
    let pending = env.enqueue("pending", "job-r", "sim/unschedulable");
    let done = env.enqueue("done", "job-r", "");
    let failed = env.enqueue("failed", "job-r", "sim/exit-3");
    let multi = env.enqueue("multi", "job-rm", "sim/hang");
    for t in [&running, &multi] {
        env.task_status(t, "in_progress").await;
    }
    env.task_until(&pending, "a pending explanation", |t| {
        s(t, "/status_message").contains("unschedulable")
    })
    .await;
    env.task_status(&done, "completed").await;
    env.task_status(&failed, "failed").await;
    polls(&env, 3).await;
    let snapshot = |env: &Env| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = ["jobs", "pods", "services"]
            .iter()
            .flat_map(|r| env.kube.list(r, Some(NS)))
            .map(|o| {
                (
                    s(&o, "/metadata/name").to_string(),
                    s(&o, "/metadata/uid").to_string(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let tasks = [&running, &pending, &done, &failed, &multi];
    let statuses = |env: &Env| tasks.map(|t| env.status(t));
    let (objects, before) = (snapshot(&env), statuses(&env));

    agent.kill();
    env.kube.clear_requests();
    env.clearml.requests().clear();
    let _agent = env.agent(values).await;
    polls(&env, 5).await;

    let writes: Vec<String> = env
        .kube
        .requests()
        .iter()
        .filter(|r| matches!(r.verb.as_str(), "create" | "delete" | "patch" | "update"))
        .filter(|r| r.resource != "leases")
        .map(|r| format!("{} {}/{}", r.verb, r.resource, r.path))
        .collect();
    assert!(
        writes.is_empty(),
        "a restart wrote to Kubernetes: {writes:#?}"
    );
    assert_eq!(snapshot(&env), objects, "Jobs, pods and Services unchanged");
    assert_eq!(statuses(&env), before, "task statuses unchanged");
    assert_eq!(job_creations(&env), 0);
}
