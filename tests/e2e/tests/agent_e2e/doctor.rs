//! `kubectl clearml doctor` against the agent binary and both doubles: a healthy install is all
//! OK (exit 0, and the `-o json` shape), then each way of breaking it makes exactly its check
//! FAIL with the fix (exit 1): a Role missing a verb (the Kubernetes double answers the access
//! reviews from the stored RBAC objects), a missing credentials Secret, a queue missing in
//! ClearML with `createQueues: false`, and wrong credentials (the agent exits; the double plays
//! the crash loop with the agent's real log).

use clearml_doubles::k8s::PatchType;

use super::{
    plugin::{AGENT_POD, Plugin, installed},
    *,
};

const QUEUE: &str = "doctor-queue";
const ABSENT: &str = "absent-queue";

/// Runs `doctor -o json`; returns the exit success and the report.
fn doctor_json(kc: &Plugin<'_>, extra: &[&str]) -> (bool, Value) {
    let mut args = vec!["doctor", "-o", "json"];
    args.extend_from_slice(extra);
    let out = kc.run(&args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor -o json prints JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// The checks with `status`, by name.
fn with_status<'a>(report: &'a Value, status: &str) -> Vec<&'a str> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == status)
        .filter_map(|c| c["name"].as_str())
        .collect()
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// Plays the Deployment controller: the agent's replicas are (or are not) available.
fn deployment_available(env: &Env, available: i32) {
    env.kube
        .patch_status(
            "deployments",
            NS,
            "clearml-agent",
            PatchType::Merge,
            &json!({"status": {
                "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                "readyReplicas": available, "availableReplicas": available
            }}),
        )
        .expect("deployment status");
}

/// Before install, `doctor -f` checks the file: what install creates is a WARN (exit 0); a file
/// with several mistakes is one FAIL listing each with its path (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_before_install_checks_the_values_file() {
    let env = Env::new(SimOptions::default()).await;
    let kc = Plugin::new(&env);
    let good = env.dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "clearml:\n  agentk8sglueKey: k\n  agentk8sglueSecret: s\nagentk8sglue:\n  apiServerUrlReference: {}\n  createQueues: true\n  queues:\n    {QUEUE}: {{}}\n",
            env.clearml.url()
        ),
    )
    .expect("values");
    let (ok, report) = doctor_json(&kc, &["-f", good.to_str().expect("utf-8")]);
    assert!(ok, "{report:#}");
    assert!(with_status(&report, "fail").is_empty(), "{report:#}");
    for name in ["secret", "configmap", "rbac", "agent"] {
        let c = check(&report, name);
        assert_eq!(c["status"], "warn", "{c}");
        assert!(
            c["fix"].as_str().is_some_and(|f| f.contains("install")),
            "{c}"
        );
    }
    assert_eq!(check(&report, "values")["status"], "ok");
    assert!(
        env.kube.get("configmaps", NS, "clearml-agent").is_none(),
        "doctor writes nothing"
    );

    let bad = env.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "agentk8sglue:\n  queus: {}\n  pollIntervalSeconds: 0\n  queues:\n    red:\n      queueSettings:\n        maxPods: many\n",
    )
    .expect("values");
    let (ok, report) = doctor_json(&kc, &["-f", bad.to_str().expect("utf-8")]);
    assert!(!ok);
    let values = check(&report, "values");
    assert_eq!(values["status"], "fail");
    let details: Vec<&str> = values["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(details.len(), 3, "{values}");
    assert!(
        details[0].starts_with("agentk8sglue.queus: unknown key"),
        "{values}"
    );
    assert!(
        details[1].starts_with("agentk8sglue.pollIntervalSeconds"),
        "{values}"
    );
    assert!(
        details[2].starts_with("agentk8sglue.queues.red.queueSettings.maxPods"),
        "{values}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_install_and_names_each_breakage() {
    let env = Env::new(SimOptions::default()).await;
    let (mut agent, kc) = installed(
        &env,
        &format!("agentk8sglue:\n  createQueues: true\n  queues:\n    {QUEUE}: {{}}\n"),
    )
    .await;
    deployment_available(&env, 1);

    // healthy: every check OK, exit 0, a line per check
    let out = kc.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines().take_while(|l| !l.is_empty()) {
        assert!(line.starts_with("OK "), "not OK: {line}\n{text}");
    }
    assert!(text.contains("0 WARN, 0 FAIL"), "{text}");
    let (ok, report) = doctor_json(&kc, &[]);
    assert!(ok);
    assert_eq!(report["namespace"], NS);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let queue_check = format!("queue/{QUEUE}");
    assert_eq!(
        names,
        [
            "values",
            "notices",
            "namespace",
            "secret",
            "configmap",
            "rbac",
            "agent",
            "clearml",
            queue_check.as_str(),
            "task-namespace",
            "pull-secrets",
            "gang"
        ]
    );
    for c in report["checks"].as_array().expect("checks") {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["message"].as_str().is_some_and(|m| !m.is_empty()), "{c}");
        assert!(c["details"].is_array() && c["fix"].is_null(), "{c}");
    }
    let summary = &report["summary"];
    assert_eq!(summary["fail"], 0);
    assert_eq!(summary["warn"], 0);
    assert_eq!(summary["ok"], names.len());
    let server = check(&report, "clearml")["message"]
        .as_str()
        .unwrap_or_default();
    assert!(server.contains(NEWEST_SERVER_VERSION), "{server}");
    // the same with the values file given: the file is checked as well
    let file = env.dir.path().join("install-values.yaml");
    let (ok, report) = doctor_json(&kc, &["-f", file.to_str().expect("utf-8")]);
    assert!(ok, "{report:#}");
    assert!(with_status(&report, "fail").is_empty(), "{report:#}");

    // a Role missing one verb: the access review of the agent's ServiceAccount says no
    let role = env
        .kube
        .get("roles", NS, "clearml-agent")
        .expect("role installed");
    let mut cut = role.clone();
    let rules = cut["rules"].as_array_mut().expect("rules");
    let pods = rules
        .iter_mut()
        .find(|r| r["resources"] == json!(["pods"]))
        .expect("pods rule");
    pods["verbs"] = json!(["get", "list", "watch", "create"]);
    env.kube.replace("roles", NS, cut).expect("role edited");
    let (ok, report) = doctor_json(&kc, &[]);
    assert!(!ok, "a FAIL exits non-zero");
    assert_eq!(with_status(&report, "fail"), ["rbac"], "{report:#}");
    let rbac = check(&report, "rbac");
    assert_eq!(
        rbac["details"],
        json!([format!("delete pods in namespace {NS}")])
    );
    assert!(
        rbac["fix"]
            .as_str()
            .is_some_and(|f| f.contains("kubectl clearml install")),
        "{rbac}"
    );
    let out = kc.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 check failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut restored = role.clone();
    if let Some(m) = restored["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    env.kube
        .replace("roles", NS, restored)
        .expect("role restored");

    // a missing credentials Secret
    let secret = env
        .kube
        .get("secrets", NS, "clearml-agent-credentials")
        .expect("secret installed");
    env.kube
        .delete("secrets", NS, "clearml-agent-credentials")
        .expect("secret deleted");
    let (ok, report) = doctor_json(&kc, &[]);
    assert!(!ok);
    assert_eq!(with_status(&report, "fail"), ["secret"], "{report:#}");
    let fix = check(&report, "secret")["fix"].as_str().unwrap_or_default();
    assert!(
        fix.contains("clearml.agentk8sglueKey") && fix.contains("create secret generic"),
        "{fix}"
    );
    let mut restored = secret.clone();
    if let Some(m) = restored["metadata"].as_object_mut() {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
        ] {
            m.remove(key);
        }
    }
    env.kube
        .create("secrets", NS, restored)
        .expect("secret restored");
    let (ok, report) = doctor_json(&kc, &[]);
    assert!(ok, "{report:#}");

    // a queue missing in ClearML with createQueues: false (an edit of the ConfigMap the agent
    // applies live)
    assert!(env.clearml.queue_id(ABSENT).is_none());
    let mut cm = env
        .kube
        .get("configmaps", NS, "clearml-agent")
        .expect("configmap");
    let values = s(&cm, "/data/values.yaml")
        .replace("createQueues: true", "createQueues: false")
        .replace(
            &format!("    {QUEUE}: {{}}"),
            &format!("    {QUEUE}: {{}}\n    {ABSENT}: {{}}"),
        );
    assert!(values.contains(ABSENT), "{values}");
    cm["data"]["values.yaml"] = json!(values);
    env.kube
        .replace("configmaps", NS, cm)
        .expect("configmap edited");
    let deadline = Instant::now() + WAIT;
    let report = loop {
        let (ok, report) = doctor_json(&kc, &[]);
        let queue = check(&report, &format!("queue/{ABSENT}"));
        if queue["status"] == "fail" {
            assert!(!ok);
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never served the edited values: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        with_status(&report, "fail"),
        [format!("queue/{ABSENT}")],
        "{report:#}"
    );
    let queue = check(&report, &format!("queue/{ABSENT}"));
    assert!(
        queue["fix"]
            .as_str()
            .is_some_and(|f| f.contains("agentk8sglue.createQueues: true")),
        "{queue}"
    );
    assert_eq!(check(&report, &format!("queue/{QUEUE}"))["status"], "ok");
    assert!(
        env.clearml.queue_id(ABSENT).is_none(),
        "doctor creates nothing"
    );

    // wrong credentials: the agent cannot log in and exits; its pod crash-loops with that log
    agent.kill();
    let mut spec = env.spec("");
    spec.config_map = Some("clearml-agent".into());
    spec.credentials = ("WRONGKEY".into(), "WRONGSECRET".into());
    let mut failing = AgentProcess::spawn(&spec).expect("agent spawned");
    let status = failing.wait_exit(READY).expect("the agent exits");
    assert!(!status.success());
    let log = failing.log_text();
    // the container exits 1; under restartPolicy Always the kubelet backs off (CrashLoopBackOff,
    // the exit in lastState)
    env.kube
        .set_pod_failed(NS, AGENT_POD, 1, "Error")
        .expect("pod crash-looping");
    env.kube
        .set_pod_log(NS, AGENT_POD, None, &log)
        .expect("pod log");
    deployment_available(&env, 0);
    let (ok, report) = doctor_json(&kc, &[]);
    assert!(!ok);
    assert_eq!(
        with_status(&report, "fail"),
        ["agent", "clearml"],
        "{report:#}"
    );
    let agent_check = check(&report, "agent");
    assert!(
        agent_check["message"]
            .as_str()
            .is_some_and(|m| m.contains("CrashLoopBackOff")),
        "{agent_check}"
    );
    assert!(
        agent_check["details"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "the last log lines: {agent_check}"
    );
    let clearml = check(&report, "clearml");
    assert!(
        clearml["message"].as_str().is_some_and(|m| m
            .starts_with("the agent cannot log in to ClearML: ")
            && m.contains("401")),
        "the server's refusal, from the agent's log: {clearml}"
    );
    // what a user reads (`-- --nocapture` shows it)
    let table = kc.run(&["doctor"]);
    assert_eq!(table.status.code(), Some(1));
    println!("{}", String::from_utf8_lossy(&table.stdout));
    assert!(
        clearml["fix"]
            .as_str()
            .is_some_and(|f| f.contains("Secret clearml-agent-credentials")),
        "{clearml}"
    );
    assert!(
        !serde_json::to_string(&report)
            .unwrap_or_default()
            .contains("WRONGSECRET"),
        "the secret key never reaches the report"
    );
}
