//! The chart keys that put files into task pods, end to end on the doubles: the
//! `clearml.conf` of `clearml.existingClearmlConfigSecret` and the `fileMounts` of the pod
//! templates reach a task pod from Secrets (never inline), the `fileMounts` Secret exists before
//! the pod, and `status` reports the TLS setting and the values' notices.

use base64::Engine as _;
use clearml_agent_proto::v1::{self as pb, agent_service_client::AgentServiceClient};

use super::*;

fn secret_file(secret: &Value, key: &str) -> Option<String> {
    if let Some(text) = secret
        .pointer(&format!("/stringData/{key}"))
        .and_then(Value::as_str)
    {
        return Some(text.to_string());
    }
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_pods_get_clearml_conf_and_file_mounts_from_secrets() {
    let env = Env::new(fast_sim()).await;
    env.kube
        .create(
            "secrets",
            NS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-clearml-conf"},
                   "stringData": {"clearml.conf": "sdk { aws { s3 { key: \"AKIA\" } } }"}}),
        )
        .expect("clearml.conf Secret");
    let values = "clearml:\n  existingClearmlConfigSecret: team-clearml-conf\nagentk8sglue:\n  createQueues: true\n  clearmlcheckCertificate: false\n  useOwnerToken: true\n  basePodTemplate:\n    labels:\n      task-name: \"${CLEARML_TASK.name}\"\n    env:\n      - name: TASK_OWNER\n        value: \"${CLEARML_TASK.user:nobody}\"\n    fileMounts:\n      - name: pip.conf\n        folderPath: /etc\n        fileContent: \"[global]\\nindex-url = https://pypi.example/simple\"\n  queues:\n    files-queue:\n      templateOverrides:\n        fileMounts:\n          - name: netrc\n            folderPath: /root\n            fileContent: \"machine git.example login bot password FILETOKEN\"\n";
    let agent = env.agent(values).await;
    let tasks = [
        env.enqueue("files-1", "files-queue", ""),
        env.enqueue("files-2", "files-queue", ""),
    ];
    for task in &tasks {
        let pod = env.pod(task).await;
        assert_eq!(
            env_var(&pod, "CLEARML_CONFIG_FILE"),
            Some("/etc/clearml-agent/clearml.conf")
        );
        assert_eq!(env_var(&pod, "CLEARML_API_HOST_VERIFY_CERT"), Some("0"));
        // string templates, expanded from the task as ClearML has it
        let doc = env.task(task);
        assert_eq!(s(&pod, "/metadata/labels/task-name"), s(&doc, "/name"));
        let owner = s(&doc, "/user");
        assert!(!owner.is_empty(), "the double records the owner: {doc:#}");
        assert_eq!(env_var(&pod, "TASK_OWNER"), Some(owner));
        let volumes = pod.pointer("/spec/volumes").cloned().unwrap_or_default();
        let by_name = |name: &str| {
            volumes
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| s(v, "/name") == name)
                .cloned()
                .unwrap_or_else(|| panic!("volume {name}: {volumes:#}"))
        };
        assert_eq!(
            s(&by_name("clearml-conf"), "/secret/secretName"),
            "team-clearml-conf"
        );
        let files_secret = s(&by_name("clearml-file-mounts"), "/secret/secretName").to_string();
        assert!(files_secret.starts_with("clearml-files-"), "{files_secret}");
        let mounts = pod
            .pointer("/spec/containers/0/volumeMounts")
            .cloned()
            .unwrap_or_default();
        for (path, sub_path) in [("/etc/pip.conf", "pip.conf"), ("/root/netrc", "netrc")] {
            let m = mounts
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| s(m, "/mountPath") == path)
                .unwrap_or_else(|| panic!("mount {path}: {mounts:#}"));
            assert_eq!(s(m, "/subPath"), sub_path);
            assert_eq!(m.pointer("/readOnly"), Some(&json!(true)));
        }
        let text = pod.to_string();
        assert!(
            !text.contains("FILETOKEN") && !text.contains("AKIA"),
            "file contents inline in the pod"
        );
        // the files are in the Secret the pod mounts
        let secret = env
            .kube
            .get("secrets", NS, &files_secret)
            .expect("fileMounts Secret exists");
        assert_eq!(
            secret_file(&secret, "netrc").as_deref(),
            Some("machine git.example login bot password FILETOKEN")
        );
        assert!(
            secret_file(&secret, "pip.conf").is_some_and(|t| t.contains("pypi.example")),
            "{secret:#}"
        );
        assert_eq!(
            s(&secret, "/metadata/labels/app.kubernetes.io~1managed-by"),
            "clearml-k8s-agent"
        );
    }
    for task in &tasks {
        env.task_status(task, "completed").await;
    }
    // one Secret, created before the first pod (launches of one tick may both try: the second
    // gets AlreadyExists); a later launch asks for nothing
    let requests = env.kube.requests();
    let first_secret = requests
        .iter()
        .position(|r| r.is("create", "secrets"))
        .expect("Secret created");
    let first_pod = requests
        .iter()
        .position(|r| r.is("create", "pods"))
        .expect("pod created");
    assert!(first_secret < first_pod, "the Secret comes before the pod");
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.is("create", "secrets") && (200..300).contains(&r.status))
            .count(),
        1,
        "one Secret for both launches"
    );
    let creates = requests
        .iter()
        .filter(|r| r.is("create", "secrets"))
        .count();
    let later = env.enqueue("files-3", "files-queue", "");
    env.task_status(&later, "completed").await;
    assert_eq!(
        env.kube
            .requests()
            .iter()
            .filter(|r| r.is("create", "secrets"))
            .count(),
        creates,
        "the agent remembers the Secret it made"
    );

    // status states the TLS setting and the notices of the running values
    let mut api = AgentServiceClient::connect(agent.grpc_url.clone())
        .await
        .expect("grpc");
    let status = api
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let tls = status.tls.expect("tls state");
    assert!(!tls.tasks_verify && !tls.agent_verifies, "{tls:?}");
    let notices: Vec<&str> = status.notices.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(notices, ["agentk8sglue.useOwnerToken"]);
}
