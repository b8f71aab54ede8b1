//! Where the chart keys this agent honours land in a task pod (table test), and the Enterprise
//! fixture `tests/fixtures/chart/enterprise-values.yaml` rendered end to end.

use k8s_openapi::api::core::v1::{Pod, Volume, VolumeMount};

use super::*;
use crate::{config::AgentConfig, values::Values};

const TASK: &str = "0123456789abcdef0123456789abcdef";
const ENTERPRISE: &str = include_str!("../../../tests/fixtures/chart/enterprise-values.yaml");

fn task() -> TaskParams {
    TaskParams {
        id: TASK.into(),
        name: "Train ResNet 50".into(),
        project: "Vision".into(),
        project_id: "p0123".into(),
        user: "u-alice".into(),
        ..Default::default()
    }
}

/// The agent's render parameters for `values`, as the agent builds them.
fn agent_for(values: &Values, cfg: &AgentConfig) -> AgentParams {
    let mut agent = AgentParams {
        namespace: cfg.task_namespace.clone(),
        worker_id: cfg.worker_id.clone(),
        api_server: Some("https://api.example".into()),
        credentials_secret: "clearml-agent-credentials".into(),
        ..Default::default()
    };
    agent.apply_document(&values.without_secrets());
    agent
}

fn render_queue(doc: &str, queue: &str, task: &TaskParams) -> (Rendered, AgentConfig) {
    let values = Values::from_yaml(doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let cfg = AgentConfig::from_values(&values.without_secrets(), "ml").expect("config");
    let agent = agent_for(&values, &cfg);
    let q = &cfg.queues[queue];
    let params = QueueParams {
        name: queue,
        id: "q-id",
        template: &q.template,
        settings: &q.settings,
    };
    (render(&agent, &params, task).expect("renders"), cfg)
}

fn env(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn volume<'a>(pod: &'a Pod, name: &str) -> Option<&'a Volume> {
    pod.spec
        .as_ref()?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
}

fn mount<'a>(pod: &'a Pod, path: &str) -> Option<&'a VolumeMount> {
    pod.spec.as_ref()?.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
}

fn label(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(key).cloned()
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Table: a chart key → where it lands in the task pod of queue `qqq`.
#[test]
fn chart_keys_land_in_the_task_pod() {
    type Check = fn(&Rendered) -> Result<(), String>;
    let cases: &[(&str, &str, Check)] = &[
        (
            "clearml.existingClearmlConfigSecret",
            "clearml:\n  existingClearmlConfigSecret: my-conf\nagentk8sglue:\n  queues:\n    qqq: {}\n",
            |r| {
                let pod = &r.pods[0];
                let v = volume(pod, "clearml-conf").ok_or("no clearml-conf volume")?;
                let s = v.secret.as_ref().ok_or("not a secret volume")?;
                if s.secret_name.as_deref() != Some("my-conf") {
                    return Err(format!("secret {:?}", s.secret_name));
                }
                let items = s.items.as_ref().ok_or("no items")?;
                if items[0].key != "clearml.conf" || items[0].path != "clearml.conf" {
                    return Err(format!("items {items:?}"));
                }
                let m = mount(pod, "/etc/clearml-agent").ok_or("no mount")?;
                if m.read_only != Some(true) || m.name != "clearml-conf" {
                    return Err(format!("mount {m:?}"));
                }
                match env(pod, "CLEARML_CONFIG_FILE").as_deref() {
                    Some("/etc/clearml-agent/clearml.conf") => Ok(()),
                    other => Err(format!("CLEARML_CONFIG_FILE {other:?}")),
                }
            },
        ),
        (
            "no clearml.conf Secret: no mount, no CLEARML_CONFIG_FILE",
            "agentk8sglue:\n  queues:\n    qqq: {}\n",
            |r| {
                let pod = &r.pods[0];
                if volume(pod, "clearml-conf").is_some()
                    || env(pod, "CLEARML_CONFIG_FILE").is_some()
                {
                    return Err("clearml.conf given without a Secret".into());
                }
                if env(pod, "CLEARML_API_HOST_VERIFY_CERT").is_some() {
                    return Err("TLS verification off by default".into());
                }
                Ok(())
            },
        ),
        (
            "basePodTemplate.fileMounts (from a Secret, never inline)",
            "agentk8sglue:\n  basePodTemplate:\n    fileMounts:\n      - name: pip.conf\n        folderPath: /etc/\n        fileContent: \"SECRET-INDEX\"\n  queues:\n    qqq: {}\n",
            |r| {
                let pod = &r.pods[0];
                let secret = r.secrets.first().ok_or("no Secret to create")?;
                let name = secret.metadata.name.clone().unwrap_or_default();
                let v = volume(pod, "clearml-file-mounts").ok_or("no volume")?;
                if v.secret.as_ref().and_then(|s| s.secret_name.clone()) != Some(name.clone()) {
                    return Err(format!("volume {v:?} vs Secret {name}"));
                }
                let m = mount(pod, "/etc/pip.conf").ok_or("no mount at /etc/pip.conf")?;
                if m.sub_path.as_deref() != Some("pip.conf") || m.read_only != Some(true) {
                    return Err(format!("mount {m:?}"));
                }
                if secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get("pip.conf"))
                    .map(String::as_str)
                    != Some("SECRET-INDEX")
                {
                    return Err("the Secret lacks the file".into());
                }
                if secret.immutable != Some(true) || !name.starts_with("clearml-files-") {
                    return Err(format!("Secret {name} immutable {:?}", secret.immutable));
                }
                let text = serde_json::to_string(pod).unwrap_or_default();
                if text.contains("SECRET-INDEX") {
                    return Err("file content inline in the pod".into());
                }
                Ok(())
            },
        ),
        (
            "templateOverrides.fileMounts merge with the base's by name",
            "agentk8sglue:\n  basePodTemplate:\n    fileMounts:\n      - name: a\n        folderPath: /x\n        fileContent: base\n      - name: b\n        folderPath: /x\n        fileContent: base\n  queues:\n    qqq:\n      templateOverrides:\n        fileMounts:\n          - name: b\n            folderPath: /y\n            fileContent: queue\n",
            |r| {
                let pod = &r.pods[0];
                let data = r.secrets[0].string_data.clone().unwrap_or_default();
                if data.get("a").map(String::as_str) != Some("base")
                    || data.get("b").map(String::as_str) != Some("queue")
                {
                    return Err(format!("data {data:?}"));
                }
                if mount(pod, "/x/a").is_none()
                    || mount(pod, "/y/b").is_none()
                    || mount(pod, "/x/b").is_some()
                {
                    return Err("mounts not merged by name".into());
                }
                Ok(())
            },
        ),
        (
            "agentk8sglue.clearmlcheckCertificate: false",
            "agentk8sglue:\n  clearmlcheckCertificate: false\n  queues:\n    qqq: {}\n",
            |r| match env(&r.pods[0], "CLEARML_API_HOST_VERIFY_CERT").as_deref() {
                Some("0") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        ),
        (
            "agentk8sglue.taskWorkerIdOverride with {worker_id_parts[n]}",
            "agentk8sglue:\n  workerIdOverride: \"k8s:glue:a1\"\n  taskWorkerIdOverride: \"{worker_id_parts[0]}:{worker_id_parts[2]}:{task_id}\"\n  queues:\n    qqq: {}\n",
            |r| match env(&r.pods[0], "CLEARML_WORKER_ID") {
                Some(id) if id == format!("k8s:a1:{TASK}") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        ),
        (
            "customWorkerIdTemplate wins over taskWorkerIdOverride",
            "agentk8sglue:\n  taskWorkerIdOverride: \"k8s:group:{task_id}\"\n  queues:\n    qqq:\n      queueSettings:\n        customWorkerIdTemplate: \"k8s:H100:{task_id}\"\n",
            |r| match env(&r.pods[0], "CLEARML_WORKER_ID") {
                Some(id) if id == format!("k8s:H100:{TASK}") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        ),
        (
            "string templates in labels (sanitised), annotations and env values",
            "agentk8sglue:\n  basePodTemplate:\n    labels:\n      name: \"${CLEARML_TASK.name}\"\n      project: \"${CLEARML_TASK.project}\"\n    annotations:\n      where: \"${CLEARML_QUEUE_NAME}/${CLEARML_PROJECT_NAME}\"\n    env:\n      - name: OWNER\n        value: \"${CLEARML_TASK.user|capitalize}\"\n      - name: KEY\n        value: \"${CLEARML_TASK.hyperparams.properties.k.value:none}\"\n  queues:\n    qqq: {}\n",
            |r| {
                let pod = &r.pods[0];
                let got = (
                    label(pod, "name"),
                    label(pod, "project"),
                    annotation(pod, "where"),
                    env(pod, "OWNER"),
                    env(pod, "KEY"),
                );
                let want = (
                    Some("Train-ResNet-50".to_string()),
                    Some("p0123".to_string()),
                    Some("qqq/Vision".to_string()),
                    Some("U-alice".to_string()),
                    Some("none".to_string()),
                );
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        ),
    ];
    let mut failures = Vec::new();
    for (key, doc, check) in cases {
        let (r, _) = render_queue(doc, "qqq", &task());
        if let Err(why) = check(&r) {
            failures.push(format!("{key}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_label_template_expanding_to_a_long_or_odd_value_stays_a_valid_label() {
    let doc = "agentk8sglue:\n  basePodTemplate:\n    labels:\n      name: \"${CLEARML_TASK.name}\"\n  queues:\n    qqq: {}\n";
    let t = TaskParams {
        name: format!("-{}é/ü", "x".repeat(80)),
        ..task()
    };
    let (r, _) = render_queue(doc, "qqq", &t);
    let value = label(&r.pods[0], "name").expect("label");
    assert!(crate::validate::label_value(&value).is_ok(), "{value}");
    assert_eq!(value.len(), 63);
}

#[test]
fn same_files_share_one_secret_and_a_change_makes_another() {
    let doc = |content: &str| {
        format!(
            "agentk8sglue:\n  basePodTemplate:\n    fileMounts:\n      - name: f\n        folderPath: /x\n        fileContent: \"{content}\"\n  queues:\n    qqq: {{}}\n    rrr: {{}}\n"
        )
    };
    let name = |doc: &str, q: &str| {
        render_queue(doc, q, &task()).0.secrets[0]
            .metadata
            .name
            .clone()
            .expect("name")
    };
    let one = doc("v1");
    assert_eq!(
        name(&one, "qqq"),
        name(&one, "rrr"),
        "same content, one Secret"
    );
    assert_ne!(
        name(&one, "qqq"),
        name(&doc("v2"), "qqq"),
        "new content, new Secret"
    );
}

/// The Enterprise-style fixture parses, and a task pod of each queue shows each honoured key.
#[test]
fn enterprise_fixture_renders_each_honoured_key() {
    let t = TaskParams {
        properties: [("user_key".to_string(), "k-1".to_string())].into(),
        ..task()
    };
    let (r, cfg) = render_queue(ENTERPRISE, "h100_queue", &t);
    // agent-level keys
    assert_eq!(cfg.worker_id, "k8s:my-agent", "workerIdOverride");
    assert_eq!(
        cfg.poll_interval,
        std::time::Duration::from_secs(3),
        "queuePollFrequencySeconds"
    );
    assert_eq!(
        cfg.status_report_interval,
        std::time::Duration::from_secs(20),
        "statusReportFrequencySeconds"
    );
    assert_eq!(
        (cfg.timeouts.succeeded_ttl, cfg.timeouts.failed_ttl),
        (
            std::time::Duration::from_secs(600),
            std::time::Duration::from_secs(600)
        ),
        "completedPodDeletionDelayMinutes"
    );
    assert_eq!(
        cfg.report_max_gpus,
        Some(8),
        "orchestrationDashboard.gpu.reportMax"
    );
    assert_eq!(
        cfg.cluster_report_interval,
        std::time::Duration::from_secs(120),
        "orchestrationDashboard.reportSeconds"
    );
    assert_eq!(cfg.max_pods, Some(16), "maxPods");
    assert!(cfg.create_queues, "createQueues");
    assert!(cfg.debug, "debugMode");
    assert!(cfg.multi_node, "multiNode.enabled");
    assert_eq!(
        cfg.queues["h100_queue"].settings.max_pods,
        Some(4),
        "queueSettings.maxPods"
    );

    let pod = &r.pods[0];
    assert_eq!(
        env(pod, "CLEARML_WORKER_ID"),
        Some(format!("k8s:H100:{TASK}")),
        "customWorkerIdTemplate"
    );
    assert_eq!(
        env(pod, "CLEARML_API_HOST_VERIFY_CERT").as_deref(),
        Some("0")
    );
    assert_eq!(
        env(pod, "CLEARML_CONFIG_FILE").as_deref(),
        Some("/etc/clearml-agent/clearml.conf")
    );
    assert!(volume(pod, "clearml-conf").is_some());
    assert!(mount(pod, "/etc/pip.conf").is_some(), "base fileMounts");
    assert!(mount(pod, "/root/netrc").is_some(), "queue fileMounts");
    assert!(
        !serde_json::to_string(pod)
            .expect("json")
            .contains("password token"),
        "file content never inline"
    );
    assert_eq!(label(pod, "myTaskName").as_deref(), Some("Train-ResNet-50"));
    assert_eq!(label(pod, "myProjectId").as_deref(), Some("p0123"));
    assert_eq!(label(pod, "team").as_deref(), Some("green"));
    assert_eq!(
        annotation(pod, "clearml/queue").as_deref(),
        Some("h100_queue")
    );
    assert_eq!(env(pod, "TASK_OWNER").as_deref(), Some("u-alice"));
    assert_eq!(env(pod, "USER_KEY").as_deref(), Some("k-1"));
    let c = &pod.spec.as_ref().expect("spec").containers[0];
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    assert_eq!(limits["nvidia.com/gpu"].0, "2");
    assert_eq!(limits["memory"].0, "4Gi");
    assert!(
        c.args
            .iter()
            .flatten()
            .any(|a| a.contains("echo \"custom init\"")),
        "customBashScript"
    );

    // the multi-node queue: three pods, the agent-wide task worker id template
    let (r, _) = render_queue(
        ENTERPRISE,
        "multi-node-queue",
        &TaskParams {
            properties: Default::default(),
            ..task()
        },
    );
    assert_eq!(r.pods.len(), 3, "multiNode [4, 2] in pods of 2 GPUs");
    assert_eq!(
        env(&r.pods[0], "CLEARML_WORKER_ID"),
        Some(format!("k8s:my-group:{TASK}")),
        "taskWorkerIdOverride with {{worker_id_parts[0]}}"
    );
    assert_eq!(
        env(&r.pods[0], "USER_KEY").as_deref(),
        Some("undefined_user_key")
    );

    // the inert keys are reported, one line each
    let values = Values::from_yaml(ENTERPRISE).expect("parses");
    let paths: Vec<String> = values.notices().into_iter().map(|n| n.path).collect();
    assert_eq!(
        paths,
        [
            "agentk8sglue.monitoredResources",
            "agentk8sglue.serviceAccountClusterAccess",
            "agentk8sglue.useOwnerToken",
            "customCertificates",
        ]
    );
}
