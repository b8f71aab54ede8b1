//! The `kubectl clearml` binary against the agent binary and both doubles: install, queue changes
//! taking effect on the next task without a restart, refused bad patches changing nothing, GPU
//! reporting, and status/describe showing why a task is pending.

use std::process::Output;

use clearml_e2e::agent::plugin_binary;

use super::*;

#[path = "plugin/chart.rs"]
mod chart;

const CM: &str = "clearml-agent";
/// The installed Deployment's pod, as the Kubernetes double plays it.
pub(super) const AGENT_POD: &str = "clearml-agent-7d9f8-abcde";

pub(super) struct Plugin<'a> {
    env: &'a Env,
    agent_addr: Option<String>,
}

impl<'a> Plugin<'a> {
    /// The plugin against `env`'s doubles, reaching the agent by port-forward.
    pub(super) fn new(env: &'a Env) -> Self {
        Self {
            env,
            agent_addr: None,
        }
    }

    pub(super) fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(plugin_binary().expect("plugin builds"));
        cmd.arg("--kubeconfig")
            .arg(&self.env.kubeconfig)
            .args(["-n", NS]);
        if let Some(addr) = &self.agent_addr {
            cmd.args(["--agent-addr", addr]);
        }
        cmd.args(args)
            .env("HOME", self.env.dir.path())
            .output()
            .expect("plugin runs")
    }

    /// Runs and expects success; returns stdout.
    pub(super) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl clearml {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs and expects failure; returns stderr.
    pub(super) fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl clearml {args:?} should fail"
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

/// Installs with the plugin, then runs the agent the way the installed Deployment would.
pub(super) async fn installed<'a>(env: &'a Env, values: &str) -> (AgentProcess, Plugin<'a>) {
    let (key, secret) = env.clearml.credentials();
    let file = env.dir.path().join("install-values.yaml");
    let doc = format!(
        "clearml:\n  agentk8sglueKey: {key}\n  agentk8sglueSecret: {secret}\n{}",
        values.replace(
            "agentk8sglue:\n",
            &format!(
                "agentk8sglue:\n  apiServerUrlReference: {}\n",
                env.clearml.url()
            )
        )
    );
    std::fs::write(&file, doc).expect("values file");
    let plugin = Plugin {
        env,
        agent_addr: None,
    };
    plugin.ok(&["install", "-f", file.to_str().expect("utf-8 path")]);
    // The Deployment's pod: credentials from the installed Secret, values from the ConfigMap.
    let secret_obj = env
        .kube
        .get("secrets", NS, "clearml-agent-credentials")
        .expect("secret installed");
    assert!(secret_obj.pointer("/data/agentk8sglue_key").is_some());
    let cm = env
        .kube
        .get("configmaps", NS, CM)
        .expect("configmap installed");
    let stored = s(&cm, "/data/values.yaml");
    assert!(
        !stored.contains(&secret),
        "credentials never reach the ConfigMap"
    );
    let mut spec = env.spec("");
    spec.config_map = Some(CM.into());
    let agent = AgentProcess::start(&spec, READY)
        .await
        .expect("agent starts");
    // The Deployment's pod, as the Kubernetes double plays it: Running and Ready, its port 9090
    // backed by the agent process's gRPC listener, so the plugin port-forwards like in a cluster.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": AGENT_POD, "labels": {"app.kubernetes.io/name": "clearml-agent"}},
        "spec": {"containers": [{"name": "agent", "image": "clearml-k8s-agent:0.1.0"}]},
    });
    env.kube.create("pods", NS, pod).expect("agent pod");
    env.kube
        .set_pod_running(NS, AGENT_POD)
        .expect("agent pod running");
    let grpc: std::net::SocketAddr = agent
        .grpc_url
        .trim_start_matches("http://")
        .parse()
        .expect("grpc addr");
    env.kube.set_port_forward_target(NS, AGENT_POD, 9090, grpc);
    (
        agent,
        Plugin {
            env,
            agent_addr: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_steers_the_agent_end_to_end() {
    let env = Env::new(SimOptions::default()).await;
    let (_agent, kc) = installed(
        &env,
        "agentk8sglue:\n  createQueues: true\n  queues:\n    base-queue: {}\n",
    )
    .await;

    // queues add with flags → next task of that queue carries them
    kc.ok(&[
        "queues",
        "add",
        "flag-queue",
        "--gpus",
        "1",
        "--label",
        "team=a",
        "--max-pods",
        "2",
    ]);
    let t1 = env.enqueue("flag-task-1", "flag-queue", "");
    let pod = env.pod(&t1).await;
    assert_eq!(s(&pod, "/metadata/labels/team"), "a");
    assert_eq!(
        s(&pod, "/spec/containers/0/resources/limits/nvidia.com~1gpu"),
        "1"
    );

    // queues patch → applies without a restart
    kc.ok(&[
        "queues",
        "patch",
        "flag-queue",
        "--memory",
        "2Gi",
        "--env",
        "FROM_PATCH=1",
    ]);
    let deadline = Instant::now() + WAIT;
    loop {
        let t = env.enqueue("flag-task-2", "flag-queue", "");
        let pod = env.pod(&t).await;
        if s(&pod, "/spec/containers/0/resources/limits/memory") == "2Gi" {
            assert_eq!(env_var(&pod, "FROM_PATCH"), Some("1"));
            assert_eq!(
                s(&pod, "/metadata/labels/team"),
                "a",
                "the patch kept the earlier label"
            );
            break;
        }
        assert!(Instant::now() < deadline, "patch never took effect");
    }

    // bad changes: refused, the field named, nothing changed
    let before = env.kube.get("configmaps", NS, CM).expect("configmap");
    let cases: [(&[&str], &str); 4] = [
        (
            &["queues", "patch", "flag-queue", "--memory", "12 GiB"],
            "templateOverrides.resources.limits.memory",
        ),
        (
            &[
                "queues",
                "patch",
                "flag-queue",
                "--patch",
                r#"{"templateOverrides": {"resourcez": {"a": 1}}}"#,
            ],
            "templateOverrides.resourcez",
        ),
        (
            &[
                "queues",
                "patch",
                "flag-queue",
                "--patch",
                r#"{"queueSettings": {"maxPods": -1}}"#,
            ],
            "queueSettings.maxPods",
        ),
        (
            &["queues", "patch", "flag-queue", "--env", "1BAD=x"],
            "1BAD",
        ),
    ];
    for (args, field) in cases {
        let err = kc.fails(args);
        assert!(
            err.contains(field),
            "{args:?}: stderr lacks {field:?}: {err}"
        );
    }
    assert_eq!(
        env.kube.get("configmaps", NS, CM).expect("configmap"),
        before,
        "refused patches wrote nothing"
    );

    // list / get / render / remove
    let list: Value =
        serde_json::from_str(&kc.ok(&["queues", "list", "-o", "json"])).expect("json list");
    let names: Vec<&str> = list["queues"]
        .as_array()
        .expect("queues array")
        .iter()
        .filter_map(|q| q.get("name").and_then(Value::as_str))
        .collect();
    assert_eq!(names, vec!["base-queue", "flag-queue"]);
    let rendered = kc.ok(&["queues", "render", "flag-queue"]);
    assert!(rendered.contains("nvidia.com/gpu"), "{rendered}");
    kc.ok(&["queues", "remove", "base-queue"]);
    assert!(
        kc.fails(&["queues", "get", "base-queue"])
            .contains("not configured")
    );

    // gpu report reaches ClearML
    kc.ok(&["gpu", "report", "--max", "3"]);
    let deadline = Instant::now() + WAIT;
    while !env
        .clearml
        .cluster_reports()
        .iter()
        .any(|r| r.body.pointer("/properties/max_gpus") == Some(&json!(3)))
    {
        assert!(Instant::now() < deadline, "max_gpus 3 never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // status and describe explain a pending task
    let stuck = env.enqueue("stuck-task", "flag-queue", "sim/unschedulable");
    env.pod(&stuck).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let out = kc.ok(&["describe", "task", &stuck]);
        // the events table says who reported each event (FROM)
        let scheduled = out.lines().find(|l| l.contains("FailedScheduling"));
        if out.contains("0/3 nodes are available") && scheduled.is_some() {
            assert!(
                scheduled.is_some_and(|l| l.contains("default-scheduler")),
                "{out}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "describe never showed the scheduler's message and event:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status: Value =
        serde_json::from_str(&kc.ok(&["status", "-o", "json"])).expect("status json");
    assert!(status.to_string().contains("flag-queue"), "{status:#}");
    let tasks: Value = serde_json::from_str(&kc.ok(&["tasks", "-o", "json"])).expect("tasks json");
    assert!(tasks.to_string().contains(&stuck), "{tasks:#}");
    let table = kc.ok(&["status"]);
    assert!(table.contains("flag-queue"), "{table}");
    let forwards = env
        .kube
        .requests()
        .iter()
        .filter(|r| r.subresource == "portforward")
        .count();
    assert!(
        forwards > 0,
        "the plugin reached the agent through pods/portforward"
    );
}

/// The bad-input corpus through the plugin: every file is refused by `install`, every bad queue
/// entry by `queues add`, each naming the field, exiting non-zero and changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_by_install_and_queues_add_and_change_nothing() {
    let env = Env::new(SimOptions::default()).await;
    let (_agent, kc) = installed(
        &env,
        "agentk8sglue:\n  createQueues: true\n  queues:\n    good-queue: {}\n",
    )
    .await;
    let cm_before = env.kube.get("configmaps", NS, CM).expect("configmap");
    let secret_before = env
        .kube
        .get("secrets", NS, "clearml-agent-credentials")
        .expect("secret");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let (mut installs, mut adds) = (0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let header = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("header");
        let (path, message) = header.split_once(" | ").expect("path | message");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let err = kc.fails(&["install", "-f", file.to_str().expect("utf-8")]);
        let needle = if path == "(root)" { message } else { path };
        assert!(
            err.contains(needle),
            "install {name}: stderr lacks {needle:?}: {err}"
        );
        // a file with several mistakes: every one is on stderr
        for also in text.lines().filter_map(|l| l.strip_prefix("# also: ")) {
            let (path, _) = also.split_once(" |").expect("path | message");
            assert!(
                err.contains(&format!("{path}: ")),
                "install {name}: stderr lacks {path:?}: {err}"
            );
        }
        installs += 1;
        if let Some(rest) = path.strip_prefix("agentk8sglue.queues.bad-queue.") {
            let doc: Value = serde_yaml::from_str(&text).expect("yaml");
            let entry = doc
                .pointer("/agentk8sglue/queues/bad-queue")
                .cloned()
                .expect("entry");
            let entry_file = env.dir.path().join(format!("entry-{name}"));
            std::fs::write(&entry_file, serde_yaml::to_string(&entry).expect("yaml"))
                .expect("write");
            let err = kc.fails(&[
                "queues",
                "add",
                "bad-queue",
                "-f",
                entry_file.to_str().expect("utf-8"),
            ]);
            assert!(
                err.contains(rest),
                "queues add {name}: stderr lacks {rest:?}: {err}"
            );
            adds += 1;
        }
    }
    println!(
        "bad input: {installs} files refused by install, {adds} queue entries refused by queues add"
    );
    assert_eq!(
        env.kube.get("configmaps", NS, CM).expect("configmap"),
        cm_before,
        "ConfigMap unchanged"
    );
    assert_eq!(
        env.kube
            .get("secrets", NS, "clearml-agent-credentials")
            .expect("secret"),
        secret_before,
        "Secret unchanged"
    );
}

/// The ClearML key pair appears only in the Secret: not in pod specs, the ConfigMap, the agent's
/// debug log, gRPC replies or any plugin output format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_leak_outside_the_secret() {
    use base64::Engine as _;
    let env = Env::new(SimOptions::default()).await;
    let (key, secret) = (
        "AKLEAKCHECK7Q2W9E4R1T6Y3",
        "SKleakcheck-0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c",
    );
    env.clearml
        .add_credentials(key, secret, clearml_doubles::clearml::Identity::test_user());
    let file = env.dir.path().join("leak-values.yaml");
    let values = format!(
        "clearml:\n  agentk8sglueKey: {key}\n  agentk8sglueSecret: {secret}\nagentk8sglue:\n  apiServerUrlReference: {}\n  createQueues: true\n  queues:\n    leak-queue:\n      templateOverrides:\n        env:\n          - name: SOME_SETTING\n            value: plain\n",
        env.clearml.url()
    );
    std::fs::write(&file, values).expect("values");
    let mut outputs = String::new();
    let plugin = Plugin {
        env: &env,
        agent_addr: None,
    };
    for fmt in ["yaml", "json"] {
        let out = plugin.run(&[
            "install",
            "-f",
            file.to_str().expect("utf-8"),
            "--dry-run",
            "-o",
            fmt,
        ]);
        assert!(out.status.success(), "dry-run install");
        outputs.push_str(&String::from_utf8_lossy(&out.stdout));
        outputs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    outputs.push_str(&plugin.ok(&["install", "-f", file.to_str().expect("utf-8")]));

    let mut spec = env.spec("");
    spec.config_map = Some(CM.into());
    spec.credentials = (key.into(), secret.into());
    spec.env.push(("RUST_LOG".into(), "debug".into()));
    let agent = AgentProcess::start(&spec, READY)
        .await
        .expect("agent starts");
    let kc = Plugin {
        env: &env,
        agent_addr: Some(agent.grpc_url.trim_start_matches("http://").to_string()),
    };
    let ok = env.enqueue("leak-ok", "leak-queue", "");
    let bad = env.enqueue("leak-bad", "leak-queue", "sim/pull-error");
    env.task_status(&ok, "completed").await;
    env.task_status(&bad, "failed").await;
    for fmt in ["table", "wide", "json", "yaml"] {
        for args in [
            vec!["status"],
            vec!["tasks"],
            vec!["queues", "list"],
            vec!["queues", "get", "leak-queue"],
            vec!["queues", "render", "leak-queue", "--task", ok.as_str()],
            vec!["describe", "task", ok.as_str()],
            vec!["doctor"],
            vec!["doctor", "-f", file.to_str().expect("utf-8")],
        ] {
            let mut a = args.clone();
            a.extend(["-o", fmt]);
            let out = kc.run(&a);
            outputs.push_str(&String::from_utf8_lossy(&out.stdout));
            outputs.push_str(&String::from_utf8_lossy(&out.stderr));
        }
    }
    let mut api = clearml_agent_proto::v1::agent_service_client::AgentServiceClient::connect(
        agent.grpc_url.clone(),
    )
    .await
    .expect("grpc");
    let grpc = format!(
        "{:?}{:?}",
        api.get_status(clearml_agent_proto::v1::GetStatusRequest {})
            .await
            .expect("status")
            .into_inner(),
        api.list_queues(clearml_agent_proto::v1::ListQueuesRequest {})
            .await
            .expect("queues")
            .into_inner()
    );
    drop(agent);
    let log = std::fs::read_dir(env.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("DEBUG"), "the agent logged at debug level");
    let pods = serde_json::to_string(&env.kube.list("pods", Some(NS))).expect("pods");
    let configmap = serde_json::to_string(&env.kube.get("configmaps", NS, CM)).expect("configmap");
    let b64 = base64::engine::general_purpose::STANDARD;
    let needles = [
        key.to_string(),
        secret.to_string(),
        b64.encode(key),
        b64.encode(secret),
        b64.encode(format!("{key}:{secret}")),
    ];
    let mut hits = 0;
    for (place, text) in [
        ("pod specs", &pods),
        ("ConfigMap", &configmap),
        ("agent debug log", &log),
        ("gRPC replies", &grpc),
        ("plugin output", &outputs),
    ] {
        for n in &needles {
            let count = text.matches(n.as_str()).count();
            assert_eq!(count, 0, "{place} contains a credential");
            hits += count;
        }
    }
    println!(
        "credential scan: {hits} hits in pod specs, the ConfigMap, {} bytes of debug log, gRPC replies and {} bytes of plugin output",
        log.len(),
        outputs.len()
    );
    let secret_obj = env
        .kube
        .get("secrets", NS, "clearml-agent-credentials")
        .expect("secret");
    assert_eq!(
        s(&secret_obj, "/data/agentk8sglue_secret"),
        b64.encode(secret),
        "the Secret holds it"
    );
}
