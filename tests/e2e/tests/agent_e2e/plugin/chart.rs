//! Values files written for ClearML's agent charts (`tests/fixtures/chart/`: the open-source
//! chart's own `values.yaml` as published, a typical override, an Enterprise override) through
//! the plugin: each installs as it is, dry run and on the Kubernetes double, with every honoured key where the
//! chart puts it and every inert key reported; the agent then runs from the installed ConfigMap.

use super::*;

fn chart_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/chart")
        .join(name)
}

/// Runs `install` with `args`; returns (stdout, stderr), asserting success.
fn install(plugin: &Plugin<'_>, args: &[&str]) -> (String, String) {
    let mut all = vec!["install"];
    all.extend_from_slice(args);
    let out = plugin.run(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "kubectl clearml {all:?} failed: {stderr}"
    );
    (String::from_utf8_lossy(&out.stdout).to_string(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_published_values_install_as_they_are() {
    let env = Env::new(SimOptions::default()).await;
    let plugin = Plugin {
        env: &env,
        agent_addr: None,
    };
    let file = chart_fixture("opensource-values-5.3.2.yaml");
    let f = file.to_str().expect("utf-8");

    let (yaml, stderr) = install(&plugin, &["-f", f, "--dry-run", "-o", "yaml"]);
    let docs: Vec<Value> =
        clearml_agent_core::yaml::from_str_multi(&yaml).expect("multi-document YAML");
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().expect("kind"),
                d["metadata"]["name"].as_str().expect("name")
            )
        })
        .collect();
    assert!(
        kinds.contains(&"Secret/clearml-agent-clearml-conf".to_string()),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"Secret/clearml-agent-registry".to_string()),
        "imageCredentials.enabled is false: {kinds:?}"
    );
    // each inert key is reported, one line each
    for path in [
        "sessions.portModeEnabled",
        "sessions.svcType",
        "sessions.externalIP",
        "sessions.startingPort",
        "sessions.maxServices",
        "agentk8sglue.image.repository",
        "agentk8sglue.image.tag",
    ] {
        let lines = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("note: {path}: ")))
            .count();
        assert_eq!(lines, 1, "one note for {path}: {stderr}");
    }

    let (_, stderr) = install(&plugin, &["-f", f]);
    assert!(
        stderr.contains("note: sessions.portModeEnabled: "),
        "{stderr}"
    );
    let d = env.kube.get("deployments", NS, CM).expect("deployment");
    // the chart's default image is the Python glue's: the agent's own runs, with the registry
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("docker.io/clearml-k8s-agent:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(d["spec"]["replicas"], 1);
    let conf = env
        .kube
        .get("secrets", NS, "clearml-agent-clearml-conf")
        .expect("clearml.conf Secret");
    assert!(conf.pointer("/data/clearml.conf").is_some());
    let cm = env.kube.get("configmaps", NS, CM).expect("configmap");
    let stored = clearml_agent_core::values::Values::from_yaml(s(&cm, "/data/values.yaml"))
        .expect("the agent reads it");
    assert_eq!(
        stored.existing_clearml_config_secret(),
        Some("clearml-agent-clearml-conf")
    );
    assert_eq!(
        stored.clearml_config(),
        None,
        "the conf itself never in the ConfigMap"
    );
    assert_eq!(stored.agentk8sglue.queue.as_deref(), Some("default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typical_chart_override_installs_and_the_agent_runs_from_it() {
    let env = Env::new(SimOptions::default()).await;
    let (key, secret) = env.clearml.credentials();
    let plugin = Plugin {
        env: &env,
        agent_addr: None,
    };
    let file = chart_fixture("opensource-override.yaml");
    let f = file.to_str().expect("utf-8");
    let set_key = format!("clearml.agentk8sglueKey={key}");
    let set_secret = format!("clearml.agentk8sglueSecret={secret}");

    let (yaml, _) = install(&plugin, &["-f", f, "--dry-run", "-o", "yaml"]);
    assert!(!yaml.contains("registry-token"), "Secret data redacted");
    assert!(!yaml.contains("MIIBexample"), "file contents redacted");

    let (_, stderr) = install(&plugin, &["-f", f, "--set", &set_key, "--set", &set_secret]);
    assert!(
        stderr.contains("note: sessions.portModeEnabled: "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("agentk8sglue.image"),
        "the override's image is the agent's own: {stderr}"
    );

    let d = env.kube.get("deployments", NS, CM).expect("deployment");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        "registry.example.com/mirror/clearml-k8s-agent:0.1.0"
    );
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["team"],
        "ml-platform"
    );
    assert_eq!(pod["nodeSelector"]["node-role.example.com/system"], "true");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "clearml-agent-registry"}])
    );
    let env_of = |name: &str| {
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        env_of("HTTPS_PROXY")["value"],
        "http://proxy.example.com:3128"
    );
    assert_eq!(
        env_of("CLEARML_AGENT_INSECURE_SKIP_TLS_VERIFY")["value"],
        "true"
    );
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/etc/ssl/extra/proxy-ca.pem"
                && m["subPath"] == "proxy-ca.pem"),
        "{mounts:?}"
    );
    let files = env
        .kube
        .get("secrets", NS, "clearml-agent-files")
        .expect("fileMounts Secret");
    assert!(files.pointer("/data/proxy-ca.pem").is_some());
    let sa = env
        .kube
        .get("serviceaccounts", NS, CM)
        .expect("service account");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/clearml-agent"
    );
    let crb = env
        .kube
        .get("clusterrolebindings", "", "clearml-agent-clearml-view")
        .expect("ClusterRoleBinding");
    assert_eq!(crb["roleRef"]["name"], "view");
    assert_eq!(crb["subjects"][0]["name"], CM);
    let registry = env
        .kube
        .get("secrets", NS, "clearml-agent-registry")
        .expect("pull Secret");
    assert_eq!(registry["type"], "kubernetes.io/dockerconfigjson");
    let cm = env.kube.get("configmaps", NS, CM).expect("configmap");
    let text = s(&cm, "/data/values.yaml");
    for secret_text in [
        secret.as_str(),
        "registry-token",
        "MIIBexample",
        "eu-west-1",
    ] {
        assert!(
            !text.contains(secret_text),
            "{secret_text:?} in the ConfigMap"
        );
    }

    // the agent runs from the installed ConfigMap: the chart's `queue` names are served and,
    // with createQueueIfNotExists, created
    let mut spec = env.spec("");
    spec.config_map = Some(CM.into());
    let agent = AgentProcess::start(&spec, READY)
        .await
        .expect("agent starts from the chart values");
    for queue in ["gpu-a100", "cpu-default"] {
        assert!(
            env.clearml.queue_id(queue).is_some(),
            "queue {queue} created"
        );
    }
    drop(agent);

    // uninstall takes the ClusterRoleBinding (named after the values) with the rest
    let out = plugin.ok(&["uninstall"]);
    assert!(out.contains("clearml-agent-clearml-view"), "{out}");
    assert!(
        env.kube
            .get("clusterrolebindings", "", "clearml-agent-clearml-view")
            .is_none()
    );
    assert!(env.kube.get("secrets", NS, "clearml-agent-files").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_chart_override_installs_and_reports_its_inert_keys() {
    let env = Env::new(SimOptions::default()).await;
    let plugin = Plugin {
        env: &env,
        agent_addr: None,
    };
    let file = chart_fixture("enterprise-values.yaml");
    let f = file.to_str().expect("utf-8");
    let inert = [
        "agentk8sglue.serviceAccountClusterAccess",
        "agentk8sglue.useOwnerToken",
        "agentk8sglue.monitoredResources",
        "customCertificates",
    ];

    let (yaml, stderr) = install(&plugin, &["-f", f, "--dry-run", "-o", "yaml"]);
    assert!(!yaml.contains("<SECRET_KEY>"), "Secret data redacted");
    for path in inert {
        let lines = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("note: {path}: ")))
            .count();
        assert_eq!(lines, 1, "one note for {path}: {stderr}");
    }

    let (_, stderr) = install(&plugin, &["-f", f]);
    assert!(
        stderr.contains("note: agentk8sglue.useOwnerToken: "),
        "{stderr}"
    );
    let d = env.kube.get("deployments", NS, CM).expect("deployment");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let skip_tls = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "CLEARML_AGENT_INSECURE_SKIP_TLS_VERIFY")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(skip_tls["value"], "true", "clearmlcheckCertificate: false");
    // the ConfigMap holds what the agent reads: the Enterprise keys as given, no credentials,
    // the name of the existing clearml.conf Secret
    let cm = env.kube.get("configmaps", NS, CM).expect("configmap");
    let text = s(&cm, "/data/values.yaml");
    assert!(
        !text.contains("<SECRET_KEY>"),
        "credentials in the ConfigMap"
    );
    let stored = clearml_agent_core::values::Values::from_yaml(text).expect("the agent reads it");
    assert_eq!(
        stored.existing_clearml_config_secret(),
        Some("team-clearml-conf")
    );
    assert_eq!(stored.agentk8sglue.max_pods, Some(16));
    assert_eq!(
        stored.agentk8sglue.task_worker_id_override.as_deref(),
        Some("{worker_id_parts[0]}:my-group:{task_id}")
    );
    assert!(
        env.kube
            .get("secrets", NS, "clearml-agent-clearml-conf")
            .is_none(),
        "an existing clearml.conf Secret is used, none is made"
    );
}
