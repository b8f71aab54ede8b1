//! Fidelity test: the real `kubectl` (fresh HOME, KUBECONFIG written by the double) applies,
//! re-applies, lists, watches, patches and deletes against the double, with server-side
//! field validation (no `--validate=false`).

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Command,
};

use clearml_doubles::k8s::KubeDouble;

use super::common::env;

const KUBECTL: &str = "/usr/bin/kubectl";
const DEADLINE: Duration = Duration::from_secs(60);

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: fidelity
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: agent
  namespace: fidelity
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: agent
  namespace: fidelity
rules:
- apiGroups: [""]
  resources: ["pods", "pods/log"]
  verbs: ["get", "list", "watch", "create", "delete"]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: agent-config
  namespace: fidelity
data:
  queue: default
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: agent
  namespace: fidelity
  labels:
    app: agent
spec:
  replicas: 1
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      serviceAccountName: agent
      containers:
      - name: agent
        image: example.com/clearml-agent:1.0
        env:
        - name: QUEUE
          value: default
        resources:
          limits:
            cpu: 500m
            memory: 256Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: worker
  namespace: fidelity
  labels:
    app: x
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo hi"]
"#;

/// `$KUBECTL` if set, else `/usr/bin/kubectl`; fails (never skips) when it is missing.
fn kubectl_path() -> String {
    let path = std::env::var("KUBECTL").unwrap_or_else(|_| KUBECTL.to_string());
    assert!(
        Path::new(&path).exists(),
        "{path} not found: the kubectl fidelity test needs the real kubectl (v1.32 or newer). \
         This project's machines have it preinstalled (Debian package `kubectl`, the Google \
         Cloud SDK build, at /usr/bin/kubectl). Elsewhere install it with `apt-get install \
         kubectl` from the Kubernetes apt repository (pkgs.k8s.io) or the Google Cloud apt \
         repository, or point the KUBECTL environment variable at a kubectl binary."
    );
    path
}

/// A kubectl invocation with a clean environment: fresh HOME, KUBECONFIG to the double.
fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(kubectl_path());
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs kubectl to completion; returns (exit code, stdout, stderr).
pub(super) async fn run(home: &Path, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(DEADLINE, kubectl(home, kubeconfig, args).output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .expect("kubectl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs kubectl and requires exit code 0; returns stdout.
async fn ok(home: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = run(home, kubeconfig, args).await;
    assert_eq!(code, 0, "kubectl {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

async fn gone(double: &KubeDouble, resource: &str, ns: &str, name: &str) {
    double
        .wait_for(DEADLINE, |s| {
            s.get(resource, ns, name).is_none().then_some(())
        })
        .await
        .unwrap_or_else(|_| panic!("{resource} {ns}/{name} still present"));
}

#[tokio::test]
async fn kubectl_applies_watches_patches_and_deletes() {
    let env = env().await;
    let double = &env.double;
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let kc = env.kubeconfig.as_path();
    let manifest = env.dir.path().join("manifest.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest");
    let manifest = manifest.to_str().expect("utf-8 path");

    let out = ok(&home, kc, &["apply", "-f", manifest]).await;
    assert_eq!(
        lines(&out),
        [
            "namespace/fidelity created",
            "serviceaccount/agent created",
            "role.rbac.authorization.k8s.io/agent created",
            "configmap/agent-config created",
            "deployment.apps/agent created",
            "pod/worker created",
        ]
    );
    let applied = double
        .get("pods", "fidelity", "worker")
        .expect("pod stored");
    assert!(
        applied["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    assert!(double.get("roles", "fidelity", "agent").is_some());
    assert_eq!(
        double.count_requests("create", "pods"),
        1,
        "kubectl created the pod through the API"
    );
    assert!(
        double.requests().iter().any(|r| r.verb == "create"
            && r.params.get("fieldValidation").map(String::as_str) == Some("Strict")),
        "kubectl used server-side field validation"
    );

    let out = ok(&home, kc, &["apply", "-f", manifest]).await;
    assert!(
        lines(&out).iter().all(|l| l.ends_with(" unchanged")),
        "re-apply changes nothing:\n{out}"
    );
    let changed_manifest = env.dir.path().join("changed.yaml");
    std::fs::write(
        &changed_manifest,
        MANIFEST.replace("  queue: default", "  queue: gpu"),
    )
    .expect("manifest");
    let out = ok(
        &home,
        kc,
        &["apply", "-f", changed_manifest.to_str().expect("path")],
    )
    .await;
    assert!(out.contains("configmap/agent-config configured"), "{out}");
    assert!(out.contains("deployment.apps/agent unchanged"), "{out}");
    assert_eq!(
        double
            .get("configmaps", "fidelity", "agent-config")
            .expect("cm")["data"]["queue"],
        json!("gpu")
    );

    let out = ok(
        &home,
        kc,
        &["-n", "fidelity", "get", "pods", "-l", "app=x", "-o", "json"],
    )
    .await;
    let list: Value = serde_json::from_str(&out).expect("kubectl json");
    let names: Vec<&str> = list["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["worker"]);
    let out = ok(
        &home,
        kc,
        &[
            "-n", "fidelity", "get", "pods", "-l", "app!=x", "-o", "name",
        ],
    )
    .await;
    assert!(out.trim().is_empty(), "{out}");

    // `get -w` sees a change made through the handle.
    let mut watch = kubectl(
        &home,
        kc,
        &[
            "-n",
            "fidelity",
            "get",
            "pod",
            "worker",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.status.phase}{\"\\n\"}",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("kubectl -w spawns");
    let stdout = watch.stdout.take().expect("stdout piped");
    let mut reader = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(DEADLINE, reader.next_line())
        .await
        .expect("first watch line in time")
        .expect("read")
        .expect("a line");
    assert_eq!(first.trim(), "ADDED Pending");
    // kubectl prints the object it GETs, then skips the first event of its watch; change the
    // pod only once the watch is open, as a real cluster's kubelet would some time later.
    double
        .wait_for_request(DEADLINE, |r| {
            r.is("watch", "pods") && r.namespace == "fidelity"
        })
        .await
        .expect("kubectl opened its watch");
    double
        .set_pod_running("fidelity", "worker")
        .expect("kubelet runs the pod");
    let change = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = reader.next_line().await.expect("read") {
            if line.trim() == "MODIFIED Running" {
                return line;
            }
        }
        panic!("kubectl -w ended without the change");
    })
    .await
    .expect("change seen in time");
    assert_eq!(change.trim(), "MODIFIED Running");
    watch.kill().await.expect("stop kubectl -w");

    // Strategic (default) and merge patches.
    ok(
        &home,
        kc,
        &[
            "-n",
            "fidelity",
            "patch",
            "pod",
            "worker",
            "-p",
            r#"{"metadata":{"labels":{"stage":"patched"}}}"#,
        ],
    )
    .await;
    assert_eq!(
        double.get("pods", "fidelity", "worker").expect("pod")["metadata"]["labels"],
        json!({"app": "x", "stage": "patched"})
    );
    ok(
        &home,
        kc,
        &[
            "-n",
            "fidelity",
            "patch",
            "deployment",
            "agent",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"agent","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#,
        ],
    )
    .await;
    ok(
        &home,
        kc,
        &[
            "-n",
            "fidelity",
            "patch",
            "deployment",
            "agent",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ],
    )
    .await;
    let deploy = double
        .get("deployments", "fidelity", "agent")
        .expect("deploy");
    assert_eq!(deploy["spec"]["replicas"], json!(2));
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "QUEUE", "value": "default"}, {"name": "EXTRA", "value": "1"}])
    );
    let (code, _, stderr) = run(
        &home,
        kc,
        &[
            "-n",
            "fidelity",
            "patch",
            "pod",
            "worker",
            "-p",
            r#"{"spec":{"restartPolicy":"Always"}}"#,
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("is invalid"), "{stderr}");

    // `delete pod` of a running pod waits for the kubelet's graceful removal.
    double
        .create(
            "pods",
            "fidelity",
            json!({"metadata": {"name": "scratch"},
                   "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}),
        )
        .expect("scratch pod");
    double
        .set_pod_running("fidelity", "scratch")
        .expect("running");
    let out = ok(&home, kc, &["-n", "fidelity", "delete", "pod", "scratch"]).await;
    assert_eq!(out.trim(), "pod \"scratch\" deleted");
    assert!(double.get("pods", "fidelity", "scratch").is_none());

    let out = ok(&home, kc, &["delete", "-f", manifest]).await;
    assert!(out.contains("namespace \"fidelity\" deleted"), "{out}");
    assert!(out.contains("pod \"worker\" deleted"), "{out}");
    gone(double, "namespaces", "", "fidelity").await;
    assert!(double.list("pods", Some("fidelity")).is_empty());
    let (code, _, stderr) = run(&home, kc, &["get", "namespace", "fidelity"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("namespaces \"fidelity\" not found"),
        "{stderr}"
    );
}
