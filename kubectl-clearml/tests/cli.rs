//! The built `kubectl-clearml` binary, run as a user would: `install --dry-run` with every seed
//! values file, refusals of bad values, and `install`/`uninstall`/`logs` for real against the
//! in-memory Kubernetes API server double; the gRPC commands in [`agent_api`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use clearml_agent_core::values::Values;
use clearml_doubles::k8s::KubeDouble;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use serde_json::{Value, json};

mod agent_api;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-clearml");
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self, what: &str) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn failed(self, what: &str) -> Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "{what} should fail\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs the plugin; without a kubeconfig, `KUBECONFIG` points at a missing file so the user's
/// own cluster is never touched.
async fn plugin(args: &[&str], kubeconfig: Option<&Path>) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env("KUBECONFIG", dir.path().join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG");
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    let out = cmd.args(args).output().await.expect("the binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    files
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn seed_values(file: &Path) -> Values {
    Values::from_yaml(&std::fs::read_to_string(file).expect("read")).expect("valid seed")
}

fn has_credentials(file: &Path) -> bool {
    seed_values(file).clearml.is_some()
}

// === dry run (no cluster) ===

#[tokio::test]
async fn dry_run_prints_every_object_for_each_seed_file_and_redacts_secrets() {
    for file in fixtures() {
        let run = plugin(
            &["install", "--dry-run", "-o", "yaml", "-f", path_str(&file)],
            None,
        )
        .await
        .ok("install --dry-run");
        let docs: Vec<Value> =
            clearml_agent_core::yaml::from_str_multi(&run.stdout).expect("multi-document YAML");
        let names: Vec<(String, String)> = docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().expect("kind").to_string(),
                    d["metadata"]["name"].as_str().expect("name").to_string(),
                )
            })
            .collect();
        let expect_secret = has_credentials(&file);
        let mut want = vec![
            ("Namespace", "clearml"),
            ("ServiceAccount", "clearml-agent"),
            ("Role", "clearml-agent"),
            ("RoleBinding", "clearml-agent"),
        ];
        if expect_secret {
            want.extend([
                ("Secret", "clearml-agent-credentials"),
                ("Secret", "clearml-agent-registry"),
            ]);
        }
        want.extend([
            ("ConfigMap", "clearml-agent"),
            ("Deployment", "clearml-agent"),
            ("Service", "clearml-agent"),
        ]);
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect();
        assert_eq!(names, want, "{}", file.display());
        for doc in &docs {
            if doc["kind"] == "Secret" {
                for v in doc["data"].as_object().expect("data").values() {
                    assert_eq!(v, "REDACTED");
                }
            } else if doc["kind"] != "Namespace" {
                assert_eq!(doc["metadata"]["namespace"], "clearml");
            }
        }
        assert!(!run.stdout.contains("<ACCESS_KEY>") && !run.stdout.contains("<SECRET_KEY>"));
        if expect_secret {
            assert!(run.stderr.contains("REDACTED"), "{}", run.stderr);
        } else {
            assert!(
                run.stderr
                    .contains("clearml-agent-credentials must already exist"),
                "{}",
                run.stderr
            );
        }
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .expect("ConfigMap");
        let stored = Values::from_yaml(cm["data"]["values.yaml"].as_str().expect("values"))
            .expect("the agent can read it");
        assert_eq!(
            stored.agentk8sglue.queues,
            seed_values(&file).agentk8sglue.queues,
            "{}",
            file.display()
        );
    }
}

#[tokio::test]
async fn bad_values_fail_naming_the_field_path_and_print_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "agentk8sglue:\n  queues:\n    green:\n      templateOverrides:\n        containerSecurityContext:\n          capabilities:\n            dorp: [ALL]\n",
            "agentk8sglue.queues.green.templateOverrides.containerSecurityContext.capabilities.dorp: unknown key",
        ),
        (
            "agentk8sglue:\n  queues:\n    green:\n      templateOverrides:\n        resources:\n          limits:\n            memory: 12 GiB\n",
            "agentk8sglue.queues.green.templateOverrides.resources.limits.memory: invalid quantity \"12 GiB\"",
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&file, text).expect("write");
        let run = plugin(
            &["install", "--dry-run", "-o", "yaml", "-f", path_str(&file)],
            None,
        )
        .await
        .failed("bad values");
        assert!(run.stderr.contains(want), "{}", run.stderr);
        assert_eq!(
            run.stderr.matches(want).count(),
            1,
            "said once: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    // --set goes through the same schema.
    let seed = &fixtures()[0];
    let run = plugin(
        &[
            "install",
            "--dry-run",
            "-f",
            path_str(seed),
            "--set",
            "agentk8sglue.queues.exampleQueue.queueSettings.maxPods=many",
        ],
        None,
    )
    .await
    .failed("bad --set");
    assert!(
        run.stderr
            .contains("agentk8sglue.queues.exampleQueue.queueSettings.maxPods"),
        "{}",
        run.stderr
    );
}

/// Job mode: every seed file with `taskAsJob` renders, the agent reads it back, and its Role can
/// manage Jobs; what a Job cannot hold is refused naming the field.
#[tokio::test]
async fn dry_run_with_task_as_job_renders_every_seed_file() {
    for file in fixtures() {
        let run = plugin(
            &[
                "install",
                "--dry-run",
                "-o",
                "yaml",
                "-f",
                path_str(&file),
                "--set",
                "agentk8sglue.taskAsJob=true",
            ],
            None,
        )
        .await
        .ok("install --dry-run with taskAsJob");
        let docs: Vec<Value> =
            clearml_agent_core::yaml::from_str_multi(&run.stdout).expect("multi-document YAML");
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .expect("ConfigMap");
        let stored = Values::from_yaml(cm["data"]["values.yaml"].as_str().expect("values"))
            .expect("the agent can read it");
        assert_eq!(
            stored.agentk8sglue.task_as_job,
            Some(true),
            "{}",
            file.display()
        );
        let role = docs.iter().find(|d| d["kind"] == "Role").expect("Role");
        assert!(
            role["rules"].as_array().expect("rules").iter().any(|r| {
                r["apiGroups"] == json!(["batch"]) && r["resources"] == json!(["jobs"])
            }),
            "{role:#}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "agentk8sglue:\n  taskAsJob: true\n  basePodTemplate:\n    labels:\n      job-name: mine\n  queues:\n    gpu: {}\n",
            "agentk8sglue.basePodTemplate.labels.job-name: is set by the Job controller",
        ),
        (
            "agentk8sglue:\n  queues:\n    gpu:\n      queueSettings:\n        activeDeadlineSeconds: 60\n",
            "agentk8sglue.queues.gpu.queueSettings.activeDeadlineSeconds: applies to Jobs only",
        ),
        (
            "agentk8sglue:\n  queues:\n    gpu:\n      queueSettings:\n        taskAsJob: true\n        activeDeadlineSeconds: 0\n",
            "agentk8sglue.queues.gpu.queueSettings.activeDeadlineSeconds: must be a number of seconds greater than 0",
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("job{i}.yaml"));
        std::fs::write(&file, text).expect("write");
        let run = plugin(
            &["install", "--dry-run", "-o", "yaml", "-f", path_str(&file)],
            None,
        )
        .await
        .failed("bad Job-mode values");
        assert!(run.stderr.contains(want), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

// === against the Kubernetes API server double ===

struct Cluster {
    kube: KubeDouble,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn cluster(namespace: &str) -> Cluster {
    let kube = KubeDouble::start().await.expect("double starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, namespace)
        .expect("kubeconfig");
    Cluster {
        kube,
        _dir: dir,
        kubeconfig,
    }
}

impl Cluster {
    async fn run(&self, args: &[&str]) -> Run {
        plugin(args, Some(&self.kubeconfig)).await
    }

    fn names(&self, resource: &str, ns: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .kube
            .list(resource, Some(ns))
            .iter()
            .filter(|o| o["metadata"]["labels"][MANAGED_BY] == "kubectl-clearml")
            .map(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    fn configmap_values(&self, ns: &str) -> Values {
        let cm: ConfigMap = self
            .kube
            .get_typed(ns, "clearml-agent")
            .expect("ConfigMap exists");
        Values::from_yaml(&cm.data.expect("data")["values.yaml"]).expect("valid values")
    }

    fn credentials_hash(&self, ns: &str) -> String {
        let d: Deployment = self
            .kube
            .get_typed(ns, "clearml-agent")
            .expect("Deployment exists");
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("clearml.ai/credentials-hash").cloned())
            .expect("hash annotation")
    }
}

/// Credentials for seed files that carry none.
fn creds_args(file: &Path) -> Vec<&'static str> {
    if has_credentials(file) {
        vec![]
    } else {
        vec![
            "--set",
            "clearml.agentk8sglueKey=test-key",
            "--set",
            "clearml.agentk8sglueSecret=test-secret",
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_creates_every_object_for_each_seed_file() {
    let c = cluster("default").await;
    for (i, file) in fixtures().iter().enumerate() {
        let ns = format!("clearml-{i}");
        let mut args = vec!["install", "-n", &ns, "-f", path_str(file)];
        args.extend(creds_args(file));
        let run = c.run(&args).await.ok("install");
        assert!(
            run.stdout
                .contains("deployment.apps/clearml-agent serverside-applied"),
            "{}",
            run.stdout
        );
        let ns_obj = c
            .kube
            .get("namespaces", "", &ns)
            .expect("namespace created");
        assert_eq!(ns_obj["metadata"]["labels"][MANAGED_BY], "kubectl-clearml");
        let one = vec!["clearml-agent".to_string()];
        for resource in [
            "serviceaccounts",
            "roles",
            "rolebindings",
            "configmaps",
            "deployments",
            "services",
        ] {
            assert_eq!(
                c.names(resource, &ns),
                one,
                "{resource} in {}",
                file.display()
            );
        }
        let mut secrets = vec!["clearml-agent-credentials".to_string()];
        if seed_values(file).image_credentials.is_some() {
            secrets.push("clearml-agent-registry".into());
        }
        assert_eq!(c.names("secrets", &ns), secrets, "{}", file.display());

        let secret: Secret = c
            .kube
            .get_typed(&ns, "clearml-agent-credentials")
            .expect("secret");
        let data = secret.data.expect("data");
        let key = String::from_utf8(data["agentk8sglue_key"].0.clone()).expect("utf8");
        let want_key = if has_credentials(file) {
            "<ACCESS_KEY>"
        } else {
            "test-key"
        };
        assert_eq!(key, want_key);

        let stored = c.configmap_values(&ns);
        assert_eq!(stored.clearml, None, "no credentials in the ConfigMap");
        assert_eq!(stored.image_credentials, None);
        let seed = seed_values(file);
        assert_eq!(stored.agentk8sglue.queues, seed.agentk8sglue.queues);
        assert_eq!(
            stored.agentk8sglue.dashboard_report_max_gpu,
            seed.agentk8sglue.dashboard_report_max_gpu
        );

        let d = c
            .kube
            .get("deployments", &ns, "clearml-agent")
            .expect("deployment");
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["image"],
            format!("clearml-k8s-agent:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        let role = c.kube.get("roles", &ns, "clearml-agent").expect("role");
        // pods, services, configmaps, jobs (Job mode), secrets (fileMounts), podgroups (native
        // gangs), events, leases
        assert_eq!(role["rules"].as_array().expect("rules").len(), 8);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinstall_upgrades_in_place_and_credential_changes_restart_the_agent() {
    let c = cluster("ml").await;
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("clearml-agent-values.override.yaml"))
        .expect("override seed");
    let f = path_str(&file);
    c.run(&["install", "-f", f]).await.ok("first install");
    let hash_before = c.credentials_hash("ml");
    assert_eq!(
        c.configmap_values("ml")
            .agentk8sglue
            .dashboard_report_max_gpu,
        None
    );

    c.run(&[
        "install",
        "-f",
        f,
        "--set",
        "agentk8sglue.dashboardReportMaxGpu=7",
    ])
    .await
    .ok("upgrade");
    for resource in ["configmaps", "deployments", "services", "roles"] {
        assert_eq!(c.names(resource, "ml"), vec!["clearml-agent".to_string()]);
    }
    assert_eq!(
        c.configmap_values("ml")
            .agentk8sglue
            .dashboard_report_max_gpu,
        Some(7)
    );
    assert_eq!(
        c.credentials_hash("ml"),
        hash_before,
        "a values change alone does not restart the agent"
    );

    c.run(&[
        "install",
        "-f",
        f,
        "--set",
        "clearml.agentk8sglueSecret=rotated",
    ])
    .await
    .ok("credential rotation");
    let secret: Secret = c
        .kube
        .get_typed("ml", "clearml-agent-credentials")
        .expect("secret");
    assert_eq!(
        secret.data.expect("data")["agentk8sglue_secret"].0,
        b"rotated"
    );
    assert_ne!(c.credentials_hash("ml"), hash_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_apply_nothing() {
    let c = cluster("fresh").await;
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("gpu-queues.yaml"))
        .expect("seed");
    let run = c
        .run(&["install", "-f", path_str(&file)])
        .await
        .failed("install without credentials");
    assert!(
        run.stderr.contains("clearml.agentk8sglueKey: required"),
        "{}",
        run.stderr
    );
    assert!(
        c.kube.get("namespaces", "", "fresh").is_none(),
        "nothing applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_secret_and_namespace_are_used_and_kept() {
    let c = cluster("team").await;
    c.kube
        .create(
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        )
        .expect("namespace");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    c.kube
        .create(
            "secrets",
            "team",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "clearml-agent-credentials", "namespace": "team"},
                "data": {"agentk8sglue_key": b64("k"), "agentk8sglue_secret": b64("s")}
            }),
        )
        .expect("secret");
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("queue-settings.yaml"))
        .expect("seed");
    let run = c
        .run(&["install", "-f", path_str(&file)])
        .await
        .ok("install");
    assert!(
        run.stderr.contains("not created by kubectl clearml"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("namespace/team"), "{}", run.stdout);
    let expected_hash = {
        let data = BTreeMap::from([
            ("agentk8sglue_key".to_string(), b"k".to_vec()),
            ("agentk8sglue_secret".to_string(), b"s".to_vec()),
        ]);
        kubectl_clearml::manifests::credentials_hash(&data)
    };
    assert_eq!(c.credentials_hash("team"), expected_hash);
    let secret = c
        .kube
        .get("secrets", "team", "clearml-agent-credentials")
        .expect("secret kept");
    assert!(
        secret["metadata"]["labels"][MANAGED_BY].is_null(),
        "left untouched"
    );

    let run = c.run(&["uninstall"]).await.ok("uninstall");
    assert!(
        run.stdout.contains("deployment.apps/clearml-agent deleted"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("secret/clearml-agent-credentials kept (not created by kubectl-clearml)"),
        "{}",
        run.stdout
    );
    assert!(c.kube.get("deployments", "team", "clearml-agent").is_none());
    assert!(c.kube.get("configmaps", "team", "clearml-agent").is_none());
    assert!(
        c.kube
            .get("secrets", "team", "clearml-agent-credentials")
            .is_some()
    );
    let ns = c
        .kube
        .get("namespaces", "", "team")
        .expect("namespace kept");
    assert!(ns["metadata"]["deletionTimestamp"].is_null(), "{ns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_removes_everything_and_tolerates_a_second_run() {
    let c = cluster("gone").await;
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("clearml-agent-values.override.yaml"))
        .expect("seed");
    c.run(&["install", "-f", path_str(&file)])
        .await
        .ok("install");
    c.run(&["uninstall", "--keep-namespace"])
        .await
        .ok("uninstall");
    for resource in [
        "serviceaccounts",
        "roles",
        "rolebindings",
        "secrets",
        "configmaps",
        "deployments",
        "services",
    ] {
        assert!(c.names(resource, "gone").is_empty(), "{resource} left");
    }
    assert!(
        c.kube.get("namespaces", "", "gone").is_some(),
        "--keep-namespace"
    );
    let run = c.run(&["uninstall"]).await.ok("second uninstall");
    assert!(
        run.stdout.contains("namespace/gone deleted"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_gives_up_at_the_timeout_with_a_clear_message() {
    let c = cluster("slow").await;
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("clearml-agent-values.override.yaml"))
        .expect("seed");
    let started = std::time::Instant::now();
    let run = c
        .run(&[
            "install",
            "-f",
            path_str(&file),
            "--wait",
            "--timeout",
            "2s",
        ])
        .await
        .failed("--wait without a Deployment controller");
    assert!(
        run.stderr
            .contains("timed out after 2s waiting for deployment.apps/clearml-agent"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        c.kube.get("deployments", "slow", "clearml-agent").is_some(),
        "applied before waiting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_streams_the_task_pods_log_from_the_api() {
    let c = cluster("default").await;
    let pod = |name: &str, rank: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"clearml-task-id": "abc123", "clearml-rank": rank}},
            "spec": {"containers": [{"name": "task", "image": "python:3.11-slim"}]}
        })
    };
    c.kube
        .create("pods", "default", pod("clearml-id-abc123-0", "0"))
        .expect("pod 0");
    c.kube
        .create("pods", "default", pod("clearml-id-abc123-1", "1"))
        .expect("pod 1");
    for (name, text) in [
        ("clearml-id-abc123-0", "rank zero\n"),
        ("clearml-id-abc123-1", "rank one\n"),
    ] {
        c.kube.set_pod_running("default", name).expect("running");
        c.kube
            .set_pod_log("default", name, Some("task"), text)
            .expect("log");
    }
    let run = c.run(&["logs", "abc123"]).await.ok("logs");
    assert_eq!(run.stdout, "rank zero\n");
    assert!(run.stderr.contains("showing rank 0"), "{}", run.stderr);
    let run = c
        .run(&["logs", "abc123", "--rank", "1"])
        .await
        .ok("logs --rank");
    assert_eq!(run.stdout, "rank one\n");
    let run = c.run(&["logs", "nope"]).await.failed("unknown task");
    assert!(
        run.stderr.contains("task nope has no pod"),
        "{}",
        run.stderr
    );
}

/// Job mode: the pods are the Job controller's (`<job>-<index>-<random>`), ranked by their
/// completion index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_finds_the_ranks_of_an_indexed_job() {
    let c = cluster("default").await;
    c.kube
        .create(
            "jobs",
            "default",
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "clearml-id-job123", "namespace": "default",
                             "labels": {"clearml-task-id": "job123"}},
                "spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2,
                         "template": {"metadata": {"labels": {"clearml-task-id": "job123"}},
                                      "spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "task", "image": "python:3.11-slim"}]}}}
            }),
        )
        .expect("job");
    let pods = c
        .kube
        .wait_for(std::time::Duration::from_secs(10), |v| {
            let pods: Vec<(String, String)> = v
                .list("pods", Some("default"))
                .into_iter()
                .filter_map(|p| {
                    Some((
                        p.pointer("/metadata/name")?.as_str()?.to_string(),
                        p.pointer("/metadata/labels/batch.kubernetes.io~1job-completion-index")?
                            .as_str()?
                            .to_string(),
                    ))
                })
                .collect();
            (pods.len() == 2).then_some(pods)
        })
        .await
        .expect("the Job controller's pods");
    for (name, index) in &pods {
        c.kube.set_pod_running("default", name).expect("running");
        c.kube
            .set_pod_log("default", name, Some("task"), &format!("index {index}\n"))
            .expect("log");
    }
    let run = c.run(&["logs", "job123"]).await.ok("logs");
    assert_eq!(run.stdout, "index 0\n");
    let run = c
        .run(&["logs", "job123", "--rank", "1"])
        .await
        .ok("logs --rank");
    assert_eq!(run.stdout, "index 1\n");
}
