//! Shared setup: a double, a kubeconfig written by it, and a kube-rs client built from that
//! kubeconfig exactly as a user's client would be.

use std::path::PathBuf;

use clearml_doubles::k8s::KubeDouble;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
    core::Status,
};
use serde_json::json;
use tempfile::TempDir;

/// A running double with a client.
pub struct Env {
    pub double: KubeDouble,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub dir: TempDir,
}

/// Builds a kube-rs client from a kubeconfig file.
pub async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config loads");
    Client::try_from(config).expect("client builds")
}

/// Starts a double and a client whose default namespace is `default`.
pub async fn env() -> Env {
    let double = KubeDouble::start().await.expect("double starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    double
        .write_kubeconfig(&kubeconfig, "default")
        .expect("kubeconfig written");
    let client = client_from(&kubeconfig).await;
    Env {
        double,
        client,
        kubeconfig,
        dir,
    }
}

/// A minimal valid pod.
pub fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    }))
    .expect("pod literal")
}

/// A minimal valid pod that is not restarted when its container exits.
pub fn job_pod(name: &str, labels: serde_json::Value) -> Pod {
    let mut p = pod(name, labels);
    if let Some(spec) = p.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
    }
    p
}

/// The `Status` of an API error (panics on other errors).
pub fn status(err: kube::Error) -> Box<Status> {
    match err {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A plain HTTP client and the double's token header value.
pub fn http(double: &KubeDouble) -> (reqwest::Client, String) {
    let token = format!("Bearer {}", double.token().expect("token configured"));
    (reqwest::Client::new(), token)
}
