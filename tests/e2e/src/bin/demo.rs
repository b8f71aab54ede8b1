//! The demo: the agent and the `kubectl clearml` plugin working end to end with no cluster and no
//! ClearML server. It starts the in-memory ClearML and Kubernetes API servers, installs the agent
//! with the plugin from the ClearML docs' example queues, runs the agent binary as the installed
//! Deployment would, enqueues a handful of tasks while a simulator plays the kubelet (one task
//! fails on an image pull, one stays unschedulable), and shows what `kubectl clearml status` and
//! `kubectl clearml tasks` say along the way.
//!
//! `--keep` leaves everything running and prints the two lines to export to use `kubectl` and
//! `kubectl clearml` by hand; Ctrl-C stops everything.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clearml_doubles::{
    clearml::ClearmlDouble,
    k8s::KubeDouble,
    sim::{SimOptions, Simulator},
};
use clearml_e2e::agent::{AgentProcess, AgentSpec, plugin_binary};
use serde_json::{Value, json};

const NS: &str = "clearml";

/// The example queues of the ClearML docs (custom pod template, GPU queues, shared memory).
const QUEUES: &str = r#"  basePodTemplate:
    labels:
      team: red
    resources:
      limits:
        memory: 1Gi
  createQueues: true
  pendingTimeoutSeconds: 3600
  queues:
    red:
      templateOverrides: {}
    blue:
      templateOverrides:
        labels:
          team: blue
    green:
      templateOverrides:
        labels:
          team: green
        annotations:
          example: "example value"
        resources:
          limits:
            memory: 2Gi
        env:
          - name: MY_ENV
            value: "my_value"
    1xGPU:
      templateOverrides:
        resources:
          limits:
            nvidia.com/gpu: 1
    2xGPU:
      templateOverrides:
        resources:
          limits:
            nvidia.com/gpu: 2
    GPUs_with_shared_memory:
      templateOverrides:
        resources:
          limits:
            nvidia.com/gpu: "2"
        env:
          - name: VLLM_SKIP_P2P_CHECK
            value: "1"
        volumeMounts:
          - name: dshm
            mountPath: /dev/shm
        volumes:
          - name: dshm
            emptyDir:
              medium: Memory
              sizeLimit: 32Gi
"#;

/// (task name, queue, image): what the demo enqueues.
const TASKS: &[(&str, &str, &str)] = &[
    ("train-resnet", "red", ""),
    ("eval-resnet", "blue", ""),
    ("tune-bert", "green", ""),
    ("finetune-llama", "1xGPU", ""),
    ("serve-vllm", "GPUs_with_shared_memory", ""),
    ("typo-in-image", "red", "sim/pull-error"),
    ("needs-8-gpus", "2xGPU", "sim/unschedulable"),
];

fn say(text: &str) {
    println!("\n==> {text}");
}

struct Demo {
    clearml: Arc<ClearmlDouble>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    agent_addr: Option<String>,
}

impl Demo {
    fn plugin(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(plugin_binary()?);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", NS]);
        if let Some(addr) = &self.agent_addr {
            cmd.args(["--agent-addr", addr]);
        }
        let out = cmd
            .args(args)
            .env("HOME", &self.dir)
            .output()
            .context("run kubectl-clearml")?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            bail!(
                "kubectl clearml {} failed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    fn show(&self, args: &[&str]) -> anyhow::Result<()> {
        println!("\n$ kubectl clearml {}", args.join(" "));
        print!("{}", self.plugin(args)?);
        Ok(())
    }

    fn status_of(&self, task: &str) -> String {
        self.clearml
            .task(task)
            .and_then(|t| t.get("status").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    }
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    Ok(())
}

fn demo_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/demo");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.canonicalize()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: demo [--keep]\n\nRuns the agent and kubectl clearml on in-memory ClearML and Kubernetes API servers."
        );
        return Ok(());
    }
    say("starting the in-memory ClearML API server and Kubernetes API server");
    let clearml = Arc::new(ClearmlDouble::start().await?);
    let kube = Arc::new(KubeDouble::start().await?);
    kube.create(
        "namespaces",
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .map_err(|e| anyhow::anyhow!("create namespace: {e:?}"))?;
    let dir = demo_dir()?;
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, NS)?;
    println!("    ClearML API:    {}", clearml.url());
    println!("    Kubernetes API: {}", kube.url());
    let mut demo = Demo {
        clearml: clearml.clone(),
        dir: dir.clone(),
        kubeconfig,
        agent_addr: None,
    };

    say("building the agent and the plugin (first run compiles them)");
    let _ = plugin_binary()?;

    let (key, secret) = clearml.credentials();
    let values = format!(
        "clearml:\n  agentk8sglueKey: {key}\n  agentk8sglueSecret: {secret}\nagentk8sglue:\n  apiServerUrlReference: {}\n{QUEUES}",
        clearml.url()
    );
    let values_file = dir.join("values.yaml");
    std::fs::write(&values_file, &values)?;
    say("kubectl clearml install -f values.yaml   (the ClearML docs' example queues)");
    print!(
        "{}",
        demo.plugin(&["install", "-f", &values_file.to_string_lossy()])?
    );

    say("starting the agent the way the installed Deployment runs it (values from its ConfigMap)");
    let spec = AgentSpec {
        values: String::new(),
        clearml_url: clearml.url(),
        credentials: (key, secret),
        kubeconfig: demo.kubeconfig.clone(),
        namespace: NS.into(),
        dir: dir.clone(),
        config_map: Some("clearml-agent".into()),
        env: Vec::new(),
    };
    let mut agent = AgentProcess::start(&spec, Duration::from_secs(120)).await?;
    demo.agent_addr = Some(agent.grpc_url.trim_start_matches("http://").to_string());
    println!("    agent ready; its log: {}", agent.log.display());

    let _sim = Simulator::start(
        kube.clone(),
        clearml.clone(),
        SimOptions {
            namespace: NS.into(),
            start_delay: Duration::from_millis(300),
            run_for: Duration::from_secs(2),
            gpus: None,
        },
    );

    say(
        "enqueueing tasks into ClearML (one has a bad image, one asks for more GPUs than the cluster has)",
    );
    let mut ids = Vec::new();
    for (name, queue, image) in TASKS {
        let container = if image.is_empty() {
            json!({})
        } else {
            json!({"image": image})
        };
        let id = clearml
            .create_task(name, json!({"type": "training", "container": container}))
            .map_err(|e| anyhow::anyhow!("create task: {e:?}"))?;
        let q = clearml
            .queue_id(queue)
            .with_context(|| format!("queue {queue} exists"))?;
        clearml
            .enqueue(&id, &q)
            .map_err(|e| anyhow::anyhow!("enqueue: {e:?}"))?;
        println!("    {name:<16} → {queue:<24} task {id}");
        ids.push(id);
    }

    wait_until("every task to get a pod", Duration::from_secs(60), || {
        ids.iter()
            .all(|t| kube.get("pods", NS, &format!("clearml-id-{t}")).is_some())
    })
    .await?;
    say("pods created; while they run:");
    demo.show(&["status"])?;
    demo.show(&["tasks"])?;

    let (bad, stuck) = (&ids[5], &ids[6]);
    wait_until("the tasks to finish", Duration::from_secs(60), || {
        ids[..5].iter().all(|t| demo.status_of(t) == "completed") && demo.status_of(bad) == "failed"
    })
    .await?;
    wait_until("the pending reason", Duration::from_secs(30), || {
        demo.plugin(&["describe", "task", stuck])
            .is_ok_and(|o| o.contains("nodes are available"))
    })
    .await?;
    say("finished: five completed, one failed on its image, one still pending");
    demo.show(&["tasks"])?;
    demo.show(&["describe", "task", stuck])?;
    let reason = clearml
        .task(bad)
        .and_then(|t| {
            t.get("status_reason")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!(
        "\nClearML says of {}: status failed, reason: {reason}",
        TASKS[5].0
    );

    if keep {
        say("still running; in another shell:");
        println!("export KUBECONFIG={}", demo.kubeconfig.display());
        println!(
            "export KUBECTL_CLEARML_AGENT_ADDR={}",
            demo.agent_addr.clone().unwrap_or_default()
        );
        println!(
            "kubectl get pods -n {NS}; kubectl clearml status; kubectl clearml describe task {stuck}"
        );
        println!("\nCtrl-C stops everything.");
        tokio::signal::ctrl_c().await?;
    }
    say("stopping");
    let status = agent.terminate(Duration::from_secs(20))?;
    println!("    agent exited ({status}); demo done");
    Ok(())
}
