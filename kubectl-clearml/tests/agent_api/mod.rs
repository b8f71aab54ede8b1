//! The gRPC commands against a small in-process stand-in of the agent's control API (reached with
//! `--agent-addr`): what the plugin sends for each command and flag, and how it prints answers
//! and errors. The stand-in validates queue entries with the agent's own schema, as the agent
//! does; the real agent's end-to-end tests live with the agent.

use std::{collections::BTreeMap, sync::Arc};

use clearml_agent_core::values::QueueValues;
use clearml_agent_proto::v1::{
    AddQueueRequest, DescribeTaskRequest, GetQueueRequest, GetStatusRequest, GetStatusResponse,
    GpuReporting, ListQueuesRequest, ListQueuesResponse, ListTasksRequest, ListTasksResponse,
    PatchQueueRequest, PatchType, Queue, QueueSummary, RemoveQueueRequest, RemoveQueueResponse,
    RenderPodRequest, RenderPodResponse, SetGpuReportingRequest, TaskDetail, TaskSummary,
    agent_service_server::{AgentService, AgentServiceServer},
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use super::plugin;

#[derive(Default)]
struct State {
    queues: BTreeMap<String, Value>,
    gpu: Option<u32>,
    /// Every write the plugin made: (rpc, name, payload, dry_run).
    writes: Vec<(String, String, String, bool)>,
}

#[derive(Clone, Default)]
struct FakeAgent(Arc<Mutex<State>>);

fn queue(name: &str, spec: &Value) -> Queue {
    Queue {
        name: name.into(),
        id: format!("id-{name}"),
        spec_json: spec.to_string(),
        summary: Some(QueueSummary {
            name: name.into(),
            id: format!("id-{name}"),
            waiting: 2,
            pods_pending: 1,
            pods_running: 1,
            max_pods: spec["queueSettings"]["maxPods"].as_u64().map(|n| n as u32),
            gpus_requested: 0,
            ..Default::default()
        }),
    }
}

fn validate(name: &str, spec: &Value) -> Result<(), Status> {
    QueueValues::from_json(name, spec.clone())
        .map(drop)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl AgentService for FakeAgent {
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let s = self.0.lock();
        Ok(Response::new(GetStatusResponse {
            version: "9.9.9".into(),
            leader: true,
            namespace: "clearml".into(),
            worker_id: "k8s-agent:clearml".into(),
            gpu_reporting: Some(GpuReporting { max_gpus: s.gpu }),
            queues: s
                .queues
                .iter()
                .filter_map(|(n, spec)| queue(n, spec).summary)
                .collect(),
            ..Default::default()
        }))
    }

    async fn list_queues(
        &self,
        _: Request<ListQueuesRequest>,
    ) -> Result<Response<ListQueuesResponse>, Status> {
        let s = self.0.lock();
        Ok(Response::new(ListQueuesResponse {
            queues: s.queues.iter().map(|(n, spec)| queue(n, spec)).collect(),
        }))
    }

    async fn get_queue(&self, r: Request<GetQueueRequest>) -> Result<Response<Queue>, Status> {
        let name = r.into_inner().name;
        let s = self.0.lock();
        let spec = s.queues.get(&name).ok_or_else(|| {
            Status::not_found(format!("queue {name} is not served by this agent"))
        })?;
        Ok(Response::new(queue(&name, spec)))
    }

    async fn add_queue(&self, r: Request<AddQueueRequest>) -> Result<Response<Queue>, Status> {
        let r = r.into_inner();
        let spec: Value = serde_json::from_str(&r.spec_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        validate(&r.name, &spec)?;
        let mut s = self.0.lock();
        s.writes.push((
            "AddQueue".into(),
            r.name.clone(),
            r.spec_json.clone(),
            r.dry_run,
        ));
        if !r.dry_run {
            s.queues.insert(r.name.clone(), spec.clone());
        }
        Ok(Response::new(queue(&r.name, &spec)))
    }

    async fn patch_queue(&self, r: Request<PatchQueueRequest>) -> Result<Response<Queue>, Status> {
        let r = r.into_inner();
        let mut s = self.0.lock();
        s.writes.push((
            "PatchQueue".into(),
            r.name.clone(),
            r.patch.clone(),
            r.dry_run,
        ));
        if r.patch_type != PatchType::Merge as i32 {
            return Err(Status::unimplemented(
                "the stand-in applies merge patches only",
            ));
        }
        let mut spec = s
            .queues
            .get(&r.name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("queue {}", r.name)))?;
        let patch: Value =
            serde_json::from_str(&r.patch).map_err(|e| Status::invalid_argument(e.to_string()))?;
        kubectl_clearml::values_input::merge(&mut spec, patch);
        validate(&r.name, &spec)?;
        if !r.dry_run {
            s.queues.insert(r.name.clone(), spec.clone());
        }
        Ok(Response::new(queue(&r.name, &spec)))
    }

    async fn remove_queue(
        &self,
        r: Request<RemoveQueueRequest>,
    ) -> Result<Response<RemoveQueueResponse>, Status> {
        let name = r.into_inner().name;
        let mut s = self.0.lock();
        s.writes
            .push(("RemoveQueue".into(), name.clone(), String::new(), false));
        s.queues
            .remove(&name)
            .map(|_| Response::new(RemoveQueueResponse {}))
            .ok_or_else(|| Status::not_found(format!("queue {name} is not served by this agent")))
    }

    async fn set_gpu_reporting(
        &self,
        r: Request<SetGpuReportingRequest>,
    ) -> Result<Response<GpuReporting>, Status> {
        let max = r.into_inner().max_gpus;
        self.0.lock().gpu = max;
        Ok(Response::new(GpuReporting { max_gpus: max }))
    }

    async fn list_tasks(
        &self,
        r: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let queue = r.into_inner().queue;
        let tasks = [("t1", "gpu"), ("t2", "cpu")]
            .into_iter()
            .filter(|(_, q)| queue.is_empty() || *q == queue)
            .map(|(id, q)| TaskSummary {
                id: id.into(),
                name: format!("task {id}"),
                queue: q.into(),
                phase: "Running".into(),
                pods: vec![format!("clearml-id-{id}")],
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn describe_task(
        &self,
        r: Request<DescribeTaskRequest>,
    ) -> Result<Response<TaskDetail>, Status> {
        let id = r.into_inner().id;
        if id != "t1" {
            return Err(Status::not_found(format!(
                "task {id}: no pod of this agent runs it"
            )));
        }
        Ok(Response::new(TaskDetail {
            task: Some(TaskSummary {
                id,
                queue: "gpu".into(),
                phase: "Pending".into(),
                pending_reason: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn render_pod(
        &self,
        r: Request<RenderPodRequest>,
    ) -> Result<Response<RenderPodResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(RenderPodResponse {
            manifests_yaml: vec![format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: clearml-id-{}\n  labels:\n    queue: {}\n",
                if r.task_id.is_empty() {
                    "preview"
                } else {
                    &r.task_id
                },
                r.queue
            )],
        }))
    }
}

/// Serves the stand-in on 127.0.0.1:<free port>; returns its address and state.
async fn serve() -> (String, FakeAgent) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let fake = FakeAgent::default();
    let service = AgentServiceServer::new(fake.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (addr, fake)
}

async fn run(addr: &str, args: &[&str]) -> super::Run {
    let mut all = vec!["--agent-addr", addr];
    all.extend_from_slice(args);
    plugin(&all, None).await
}

#[tokio::test]
async fn queue_flags_become_the_entry_the_agent_stores() {
    let (addr, fake) = serve().await;
    let run1 = run(
        &addr,
        &[
            "queues",
            "add",
            "gpu-shm",
            "--gpus",
            "2",
            "--shm-size",
            "32Gi",
            "--env",
            "VLLM_SKIP_P2P_CHECK=1",
            "--max-pods",
            "4",
            "--multi-node",
            "4,2",
        ],
    )
    .await
    .ok("queues add");
    assert_eq!(run1.stdout, "queue/gpu-shm added\n");
    let stored = fake.0.lock().queues["gpu-shm"].clone();
    assert_eq!(
        stored,
        json!({
            "templateOverrides": {
                "resources": {"limits": {"nvidia.com/gpu": "2"}},
                "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}],
                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                "env": [{"name": "VLLM_SKIP_P2P_CHECK", "value": "1"}]
            },
            "queueSettings": {"maxPods": 4, "multiNode": [4, 2]}
        })
    );

    // A patch with --env keeps the queue's other variables (lists travel whole in a merge patch).
    run(
        &addr,
        &[
            "queues",
            "patch",
            "gpu-shm",
            "--env",
            "NCCL_DEBUG=INFO",
            "--max-pods",
            "8",
        ],
    )
    .await
    .ok("queues patch");
    let stored = fake.0.lock().queues["gpu-shm"].clone();
    assert_eq!(
        stored["templateOverrides"]["env"],
        json!([
            {"name": "VLLM_SKIP_P2P_CHECK", "value": "1"},
            {"name": "NCCL_DEBUG", "value": "INFO"}
        ])
    );
    assert_eq!(stored["queueSettings"]["maxPods"], 8);
    assert_eq!(stored["templateOverrides"]["volumes"][0]["name"], "dshm");

    // --dry-run reaches the agent and changes nothing.
    let out = run(
        &addr,
        &["queues", "patch", "gpu-shm", "--max-pods", "1", "--dry-run"],
    )
    .await
    .ok("dry-run patch");
    assert_eq!(out.stdout, "queue/gpu-shm patched (dry run)\n");
    assert_eq!(
        fake.0.lock().queues["gpu-shm"]["queueSettings"]["maxPods"],
        8
    );
    let last = fake.0.lock().writes.last().cloned().expect("a write");
    assert!(last.3, "dry_run sent");

    // --patch text (YAML) with the default merge type.
    run(
        &addr,
        &[
            "queues",
            "patch",
            "gpu-shm",
            "--patch",
            "queueSettings: {defaultImage: 'python:3.12'}",
        ],
    )
    .await
    .ok("--patch");
    assert_eq!(
        fake.0.lock().queues["gpu-shm"]["queueSettings"]["defaultImage"],
        "python:3.12"
    );
}

#[tokio::test]
async fn agent_field_errors_are_printed_as_they_come() {
    let (addr, fake) = serve().await;
    run(&addr, &["queues", "add", "cpu-queue"]).await.ok("add");
    let out = run(
        &addr,
        &["queues", "patch", "cpu-queue", "--memory", "12 GiB"],
    )
    .await
    .failed("bad quantity");
    assert_eq!(
        out.stderr.trim_end(),
        "error: agentk8sglue.queues.cpu-queue.templateOverrides.resources.limits.memory: \
         invalid quantity \"12 GiB\": must match the Kubernetes quantity syntax (e.g. 512Mi, 2Gi, 500m, 4)"
    );
    // `add` checks locally with the same schema and sends nothing.
    let writes = fake.0.lock().writes.len();
    let out = run(&addr, &["queues", "add", "other", "--cpu", "lots"])
        .await
        .failed("bad add");
    assert!(
        out.stderr
            .contains("agentk8sglue.queues.other.templateOverrides.resources.limits.cpu"),
        "{}",
        out.stderr
    );
    assert_eq!(fake.0.lock().writes.len(), writes);

    let out = run(&addr, &["queues", "remove", "missing"])
        .await
        .failed("remove");
    assert_eq!(
        out.stderr.trim_end(),
        "error: queue missing is not served by this agent"
    );
    let out = run(&addr, &["queues", "patch", "cpu-queue"])
        .await
        .failed("no change");
    assert!(out.stderr.contains("nothing to change"), "{}", out.stderr);
}

#[tokio::test]
async fn read_commands_print_views_for_people_and_programs() {
    let (addr, _fake) = serve().await;
    run(&addr, &["queues", "add", "gpu", "--max-pods", "3"])
        .await
        .ok("add");

    let out = run(&addr, &["queues", "list"]).await.ok("list");
    assert_eq!(
        out.stdout,
        "NAME   WAITING   PENDING   RUNNING   MAX PODS   GPUS\ngpu    2         1         1         3          0\n"
    );
    let out = run(&addr, &["queues", "get", "gpu", "-o", "json"])
        .await
        .ok("get");
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["name"], "gpu");
    assert_eq!(v["spec"], json!({"queueSettings": {"maxPods": 3}}));

    run(&addr, &["gpu", "report", "--max", "8"])
        .await
        .ok("gpu report");
    let out = run(&addr, &["status"]).await.ok("status");
    assert!(
        out.stdout.contains("Agent:      9.9.9 (leader)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("GPU report: 8 GPUs"), "{}", out.stdout);
    let out = run(&addr, &["gpu", "report", "--off", "-o", "json"])
        .await
        .ok("off");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).expect("json"),
        json!({"max_gpus": null})
    );

    let out = run(&addr, &["tasks", "--queue", "gpu", "-o", "json"])
        .await
        .ok("tasks");
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["tasks"].as_array().expect("tasks").len(), 1);
    assert_eq!(v["tasks"][0]["id"], "t1");

    let out = run(&addr, &["describe", "task", "t1"]).await.ok("describe");
    assert!(
        out.stdout
            .starts_with("PENDING:  0/3 nodes are available: 3 Insufficient nvidia.com/gpu.\n"),
        "{}",
        out.stdout
    );
    let out = run(&addr, &["describe", "task", "zz"])
        .await
        .failed("unknown task");
    assert_eq!(
        out.stderr.trim_end(),
        "error: task zz: no pod of this agent runs it"
    );

    let out = run(&addr, &["queues", "render", "gpu", "--task", "abc"])
        .await
        .ok("render");
    let docs: Vec<Value> = clearml_agent_core::yaml::from_str_multi(&out.stdout).expect("yaml");
    assert_eq!(docs[0]["metadata"]["name"], "clearml-id-abc");
    assert_eq!(docs[0]["metadata"]["labels"]["queue"], "gpu");
}

#[tokio::test]
async fn an_unreachable_agent_is_a_clear_error() {
    // Bind and drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let out = run(&addr, &["status"]).await.failed("no agent");
    assert!(
        out.stderr
            .starts_with(&format!("error: cannot connect to the agent at {addr}")),
        "{}",
        out.stderr
    );
}
