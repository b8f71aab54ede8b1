//! The agent's gRPC control API over real gRPC, with the values in a ConfigMap: queue changes take
//! effect on the next task without a restart, bad changes are refused with the field named and
//! change nothing, GPU reporting reaches ClearML, and status/describe explain pending tasks.

use clearml_agent_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use tonic::{Code, transport::Channel};

use super::*;

const CM: &str = "clearml-agent";

async fn start(env: &Env, values: &str) -> (AgentProcess, AgentServiceClient<Channel>) {
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CM, "namespace": NS},
        "data": {"values.yaml": values},
    });
    env.kube.create("configmaps", NS, cm).expect("configmap");
    let mut spec = env.spec("");
    spec.config_map = Some(CM.into());
    let agent = AgentProcess::start(&spec, READY)
        .await
        .expect("agent starts");
    let client = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc connects");
    (agent, client)
}

fn configmap(env: &Env) -> Value {
    env.kube
        .get("configmaps", NS, CM)
        .expect("configmap exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_changes_apply_live_and_bad_ones_change_nothing() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  queues:\n    existing: {}\n";
    let (_agent, mut api) = start(&env, values).await;

    // add → the next task of the new queue gets its template, no restart
    let spec =
        json!({"templateOverrides": {"labels": {"team": "x"}}, "queueSettings": {"maxPods": 3}});
    let added = api
        .add_queue(pb::AddQueueRequest {
            name: "live-queue".into(),
            spec_json: spec.to_string(),
            dry_run: false,
        })
        .await
        .expect("add")
        .into_inner();
    assert!(!added.id.is_empty(), "created in ClearML (createQueues)");
    assert_eq!(
        env.clearml.queue_id("live-queue").as_deref(),
        Some(added.id.as_str())
    );
    let before_patch = env.enqueue("first-live", "live-queue", "");
    assert_eq!(
        s(&env.pod(&before_patch).await, "/metadata/labels/team"),
        "x"
    );

    // patch (merge) → the next task gets the new label
    let patched = api
        .patch_queue(pb::PatchQueueRequest {
            name: "live-queue".into(),
            patch_type: pb::PatchType::Merge as i32,
            patch: json!({"templateOverrides": {"labels": {"team": "y"}}}).to_string(),
            dry_run: false,
        })
        .await
        .expect("patch")
        .into_inner();
    assert!(patched.spec_json.contains("\"y\""), "{}", patched.spec_json);
    // the ConfigMap watch delivers the change; wait until a fresh task renders with it
    let deadline = Instant::now() + WAIT;
    loop {
        let t = env.enqueue("after-patch", "live-queue", "");
        if s(&env.pod(&t).await, "/metadata/labels/team") == "y" {
            break;
        }
        assert!(Instant::now() < deadline, "patch never took effect");
    }

    // bad changes: refused with the field path, ConfigMap untouched
    let snapshot = configmap(&env);
    let bad = [
        (
            "unknown key",
            json!({"templateOverrides": {"resourcez": {}}, "queueSettings": {}}),
            "agentk8sglue.queues.live-queue.templateOverrides.resourcez",
        ),
        (
            "invalid quantity",
            json!({"templateOverrides": {"resources": {"limits": {"memory": "12 GiB"}}}}),
            "agentk8sglue.queues.live-queue.templateOverrides.resources.limits.memory",
        ),
        (
            "negative maxPods",
            json!({"queueSettings": {"maxPods": -1}}),
            "agentk8sglue.queues.live-queue.queueSettings.maxPods",
        ),
        (
            "invalid env name",
            json!({"templateOverrides": {"env": [{"name": "1BAD", "value": "x"}]}}),
            "agentk8sglue.queues.live-queue.templateOverrides.env[0].name",
        ),
    ];
    for (what, patch, path) in bad {
        let err = api
            .patch_queue(pb::PatchQueueRequest {
                name: "live-queue".into(),
                patch_type: pb::PatchType::Merge as i32,
                patch: patch.to_string(),
                dry_run: false,
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(path),
            "{what}: {:?} lacks {path}",
            err.message()
        );
    }
    let err = api
        .add_queue(pb::AddQueueRequest {
            name: "existing".into(),
            spec_json: "{}".into(),
            dry_run: false,
        })
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = api
        .add_queue(pb::AddQueueRequest {
            name: "ab".into(),
            spec_json: "{}".into(),
            dry_run: false,
        })
        .await
        .expect_err("short name");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(configmap(&env), snapshot, "a refused change wrote nothing");

    // JSON patch, dry run: validated, nothing written
    let dry = api
        .patch_queue(pb::PatchQueueRequest {
            name: "live-queue".into(),
            patch_type: pb::PatchType::Json as i32,
            patch: json!([{"op": "replace", "path": "/queueSettings/maxPods", "value": 7}])
                .to_string(),
            dry_run: true,
        })
        .await
        .expect("dry-run json patch")
        .into_inner();
    assert!(dry.spec_json.contains("\"maxPods\":7"), "{}", dry.spec_json);
    assert_eq!(configmap(&env), snapshot, "dry run wrote nothing");

    // remove
    api.remove_queue(pb::RemoveQueueRequest {
        name: "live-queue".into(),
    })
    .await
    .expect("remove");
    let err = api
        .get_queue(pb::GetQueueRequest {
            name: "live-queue".into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    let names: Vec<String> = api
        .list_queues(pb::ListQueuesRequest {})
        .await
        .expect("list")
        .into_inner()
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["existing".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_reporting_status_describe_and_render() {
    let env = Env::new(SimOptions::default()).await;
    let values = "agentk8sglue:\n  createQueues: true\n  queues:\n    gpu-queue:\n      templateOverrides:\n        resources:\n          limits:\n            nvidia.com/gpu: 1\n      queueSettings:\n        maxPods: 1\n";
    let (_agent, mut api) = start(&env, values).await;

    api.set_gpu_reporting(pb::SetGpuReportingRequest { max_gpus: Some(4) })
        .await
        .expect("gpu report");
    let deadline = Instant::now() + WAIT;
    while !env
        .clearml
        .cluster_reports()
        .iter()
        .any(|r| r.body.pointer("/properties/max_gpus") == Some(&json!(4)))
    {
        assert!(Instant::now() < deadline, "max_gpus 4 never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // one unschedulable task holds the only slot; the second waits on maxPods
    let stuck = env.enqueue("stuck-task", "gpu-queue", "sim/unschedulable");
    let waiting = env.enqueue("waiting-task", "gpu-queue", "");
    env.pod(&stuck).await;
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let st = api
            .get_status(pb::GetStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let q = st
            .queues
            .iter()
            .find(|q| q.name == "gpu-queue")
            .cloned()
            .expect("queue in status");
        if q.pods_pending == 1 && q.waiting == 1 {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed 1 pending + 1 waiting: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let q = &status.queues[0];
    assert_eq!((q.max_pods, q.gpus_requested), (Some(1), 1));
    assert_eq!(status.gpu_reporting.and_then(|g| g.max_gpus), Some(4));
    assert_eq!(
        status.clearml.map(|c| c.state),
        Some(pb::clearml_connection::State::Ok as i32)
    );

    let detail = api
        .describe_task(pb::DescribeTaskRequest { id: stuck.clone() })
        .await
        .expect("describe")
        .into_inner();
    let task = detail.task.expect("summary");
    assert_eq!(task.phase, "Pending");
    assert!(
        task.pending_reason.contains("Unschedulable: 0/3 nodes"),
        "{}",
        task.pending_reason
    );
    assert_eq!(detail.pods.len(), 1);
    assert_eq!(detail.pods[0].reason, "Unschedulable");
    // the scheduler's event about this pod, and only events about this task's pods
    assert!(
        detail.events.iter().any(|e| e.reason == "FailedScheduling"
            && e.r#type == "Warning"
            && e.message.contains("0/3 nodes")
            && e.source == "default-scheduler"),
        "{:?}",
        detail.events
    );
    assert!(
        detail
            .events
            .iter()
            .all(|e| e.object == detail.pods[0].name),
        "{:?}",
        detail.events
    );

    let detail = api
        .describe_task(pb::DescribeTaskRequest {
            id: waiting.clone(),
        })
        .await
        .expect("describe")
        .into_inner();
    let reason = detail.task.expect("summary").pending_reason;
    assert!(
        reason.contains("maxPods reached (1/1 pods, a task needs 1)"),
        "{reason}"
    );

    let tasks = api
        .list_tasks(pb::ListTasksRequest {
            queue: "gpu-queue".into(),
        })
        .await
        .expect("tasks")
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    // a task waiting in its ClearML queue has its name (read from ClearML) and its age (since it
    // entered the queue)
    let queued = tasks
        .iter()
        .find(|t| t.id == waiting)
        .expect("the waiting task is listed");
    assert_eq!(
        (queued.phase.as_str(), queued.name.as_str()),
        ("Queued", "waiting-task"),
        "{queued:?}"
    );
    let added = queued.created.expect("the queued task has an age").seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (now - 120..=now + 1).contains(&added),
        "entered its queue at {added}, now is {now}"
    );

    let rendered = api
        .render_pod(pb::RenderPodRequest {
            queue: "gpu-queue".into(),
            task_id: waiting.clone(),
        })
        .await
        .expect("render")
        .into_inner();
    assert_eq!(rendered.manifests_yaml.len(), 1);
    assert!(rendered.manifests_yaml[0].contains(&format!("clearml-id-{waiting}")));
    assert!(
        rendered.manifests_yaml[0].contains("nvidia.com/gpu: '1'")
            || rendered.manifests_yaml[0].contains("nvidia.com/gpu: \"1\"")
    );
    let err = api
        .render_pod(pb::RenderPodRequest {
            queue: "nope-queue".into(),
            task_id: String::new(),
        })
        .await
        .expect_err("unknown queue");
    assert_eq!(err.code(), Code::NotFound);
}

/// `kubectl edit` of the ConfigMap works like the API: the agent applies the new values live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_configmap_applies_without_restart() {
    let env = Env::new(SimOptions::default()).await;
    let (_agent, _api) = start(
        &env,
        "agentk8sglue:\n  createQueues: true\n  queues:\n    first-queue: {}\n",
    )
    .await;
    let mut cm = configmap(&env);
    cm["data"]["values.yaml"] = json!(
        "agentk8sglue:\n  createQueues: true\n  queues:\n    first-queue: {}\n    edited-queue:\n      templateOverrides:\n        labels:\n          edited: \"yes\"\n"
    );
    env.kube.replace("configmaps", NS, cm).expect("edit");
    let deadline = Instant::now() + WAIT;
    while env.clearml.queue_id("edited-queue").is_none() {
        assert!(Instant::now() < deadline, "edited queue never created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = env.enqueue("edited-task", "edited-queue", "");
    assert_eq!(s(&env.pod(&t).await, "/metadata/labels/edited"), "yes");
}

/// URL references in the ConfigMap apply to the next launched pod; what needs a restart (the
/// agent's identity) is said by `status`, never silently different.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_changes_apply_to_the_next_pod_and_identity_changes_say_restart_needed() {
    let env = Env::new(SimOptions::default()).await;
    let values = |files: &str, worker: &str| {
        format!(
            "agentk8sglue:\n  createQueues: true\n  fileServerUrlReference: {files}\n  webServerUrlReference: {files}/web\n  workerId: {worker}\n  queues:\n    url-queue: {{}}\n"
        )
    };
    let (_agent, mut api) = start(&env, &values("https://files.one", "k8s-agent:one")).await;
    let first = env.enqueue("first", "url-queue", "");
    assert_eq!(
        env_var(&env.pod(&first).await, "CLEARML_FILES_HOST"),
        Some("https://files.one")
    );
    let mut cm = configmap(&env);
    cm["data"]["values.yaml"] = json!(values("https://files.two", "k8s-agent:two"));
    env.kube.replace("configmaps", NS, cm).expect("edit");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let status = api
            .get_status(pb::GetStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let error = status
            .clearml
            .as_ref()
            .map(|c| c.last_error.clone())
            .unwrap_or_default();
        if error.contains("restart needed") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "status never said restart needed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = status.clearml.map(|c| c.last_error).unwrap_or_default();
    assert!(
        error.contains("workerId is \"k8s-agent:two\" in the values, \"k8s-agent:one\" in use"),
        "{error}"
    );
    assert_eq!(status.worker_id, "k8s-agent:one", "the identity in use");
    let second = env.enqueue("second", "url-queue", "");
    let pod = env.pod(&second).await;
    assert_eq!(
        env_var(&pod, "CLEARML_FILES_HOST"),
        Some("https://files.two")
    );
    assert_eq!(
        env_var(&pod, "CLEARML_WEB_HOST"),
        Some("https://files.two/web")
    );
}
