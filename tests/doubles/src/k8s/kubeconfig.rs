//! Writes a kubeconfig that points a client at the double: a cluster with the double's plain
//! `http://` URL, a user with the bearer token, and a context with a default namespace. Both
//! kube-rs (`Config::from_custom_kubeconfig`) and kubectl read it as they would a real one.

use std::path::Path;

use serde_json::json;

/// Name used for the cluster, user and context entries.
pub const CONTEXT: &str = "kube-double";

/// Renders the kubeconfig YAML.
pub fn render(server: &str, token: Option<&str>, namespace: &str) -> String {
    let user = match token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
        "current-context": CONTEXT,
    });
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// Writes the kubeconfig to `path` (creating parent directories).
pub fn write(
    path: &Path,
    server: &str,
    token: Option<&str>,
    namespace: &str,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, render(server, token, namespace))
}
