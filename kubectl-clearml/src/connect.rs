//! Connections, from the global flags: the Kubernetes client (kubeconfig, context, namespace, as
//! kubectl resolves them) and the gRPC channel to the agent.
//!
//! ```text
//! --agent-addr HOST:PORT ──────────────────────────────────────────────▶ tonic Channel
//! else: kube client ─▶ agent pod (app.kubernetes.io/name=clearml-agent, Running, Ready)
//!                    ─▶ pods/portforward :9090 ─▶ TokioIo(stream) ─▶ tonic Channel
//! ```
//!
//! Each new HTTP/2 connection of the channel opens its own port-forward, so tonic's reconnects
//! work as they would over TCP.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use clearml_agent_proto::v1::agent_service_client::AgentServiceClient;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{cli::GlobalArgs, manifests};

/// The agent's control API client.
pub type AgentClient = AgentServiceClient<Channel>;

/// Where the in-cluster namespace of a pod's service account is mounted.
const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// What every command needs: the flags, and the namespace resolved once.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The global flags.
    pub global: GlobalArgs,
    /// `-n`, else the kubeconfig context's namespace, else `clearml`.
    pub namespace: String,
}

impl Ctx {
    /// Resolves the namespace from the flags and the kubeconfig (no network).
    pub fn new(global: GlobalArgs) -> Self {
        let namespace = resolve_namespace(&global);
        Self { global, namespace }
    }

    /// A Kubernetes client for the flags' kubeconfig and context; `--request-timeout` bounds each
    /// request unless `streaming` (log follow, port-forward).
    pub async fn kube(&self, streaming: bool) -> anyhow::Result<Client> {
        let mut config = kube_config(&self.global).await?;
        if let Some(timeout) = self.request_timeout()
            && !streaming
        {
            config.connect_timeout = Some(timeout);
            config.read_timeout = Some(timeout);
        }
        Client::try_from(config).context("cannot build a Kubernetes client")
    }

    /// `--request-timeout`, with `0` meaning none.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.global.request_timeout.filter(|d| !d.is_zero())
    }

    /// The agent's gRPC client: `--agent-addr`, else a port-forward to the agent pod.
    pub async fn agent(&self) -> anyhow::Result<AgentClient> {
        let channel = match &self.global.agent_addr {
            Some(addr) => {
                let endpoint = self.endpoint(&format!("http://{addr}"))?;
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to the agent at {addr}"))?
            }
            None => self.port_forward_channel().await?,
        };
        Ok(AgentServiceClient::new(channel))
    }

    fn endpoint(&self, uri: &str) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(uri.to_string())
            .with_context(|| format!("{uri:?} is not a valid agent address"))?;
        if let Some(timeout) = self.request_timeout() {
            endpoint = endpoint.timeout(timeout).connect_timeout(timeout);
        }
        Ok(endpoint)
    }

    async fn port_forward_channel(&self) -> anyhow::Result<Channel> {
        let client = self.kube(true).await?;
        let pods: Api<Pod> = Api::namespaced(client, &self.namespace);
        let pod = find_agent_pod(&pods, &self.namespace).await?;
        tracing::debug!(%pod, "port-forwarding to the agent");
        let connector = tower::service_fn(move |_: Uri| {
            let pods = pods.clone();
            let pod = pod.clone();
            async move {
                let mut forwarder = pods
                    .portforward(&pod, &[manifests::GRPC_PORT])
                    .await
                    .map_err(|e| std::io::Error::other(format!("port-forward to {pod}: {e}")))?;
                let stream = forwarder.take_stream(manifests::GRPC_PORT).ok_or_else(|| {
                    std::io::Error::other(format!("port-forward to {pod}: no stream"))
                })?;
                if let Some(error) = forwarder.take_error(manifests::GRPC_PORT) {
                    tokio::spawn(async move {
                        if let Some(message) = error.await {
                            tracing::warn!(%message, "port-forward error");
                        }
                    });
                }
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        // NB: the authority is a placeholder; the connector decides where bytes go.
        self.endpoint("http://clearml-agent.grpc")?
            .connect_with_connector(connector)
            .await
            .context("cannot reach the agent's gRPC API through a port-forward")
    }
}

/// The agent pod to talk to: labelled `app.kubernetes.io/name=clearml-agent`, Running, Ready,
/// not being deleted.
async fn find_agent_pod(pods: &Api<Pod>, namespace: &str) -> anyhow::Result<String> {
    let list = pods
        .list(&ListParams::default().labels(manifests::AGENT_SELECTOR))
        .await
        .with_context(|| format!("cannot list the agent's pods in namespace {namespace}"))?;
    if list.items.is_empty() {
        bail!(
            "no agent pod ({}) in namespace {namespace}: is the agent installed? \
             (kubectl clearml install, or -n NAMESPACE)",
            manifests::AGENT_SELECTOR
        );
    }
    list.items
        .iter()
        .find(|p| is_ready(p))
        .and_then(|p| p.metadata.name.clone())
        .ok_or_else(|| {
            anyhow!(
                "the agent pod in namespace {namespace} is not Running and Ready yet \
                 (kubectl -n {namespace} describe pod -l {})",
                manifests::AGENT_SELECTOR
            )
        })
}

/// Running, Ready and not terminating.
pub fn is_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The kube client config the flags select.
async fn kube_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..Default::default()
    };
    match (&global.kubeconfig, &global.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))
        }
        (None, Some(context)) => Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("cannot use kubeconfig context {context}")),
        (None, None) => Config::infer()
            .await
            .context("cannot find a kubeconfig or an in-cluster config"),
    }
}

/// `-n`, else the selected context's namespace, else the in-cluster namespace, else `clearml`.
pub fn resolve_namespace(global: &GlobalArgs) -> String {
    if let Some(ns) = &global.namespace {
        return ns.clone();
    }
    let kubeconfig = match &global.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok(),
        None => Kubeconfig::read().ok(),
    };
    if let Some(ns) = kubeconfig.and_then(|k| context_namespace(&k, global.context.as_deref())) {
        return ns;
    }
    if global.kubeconfig.is_none()
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && let Ok(ns) = std::fs::read_to_string(Path::new(IN_CLUSTER_NAMESPACE))
        && !ns.trim().is_empty()
    {
        return ns.trim().to_string();
    }
    manifests::DEFAULT_NAMESPACE.to_string()
}

/// The namespace the kubeconfig's `context` (default: current-context) names, if any.
pub fn context_namespace(kubeconfig: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let name = context.or(kubeconfig.current_context.as_deref())?;
    kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.namespace.clone())
        .filter(|ns| !ns.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: a
  context: {cluster: c, user: u, namespace: team-a}
- name: b
  context: {cluster: c, user: u}
"#;

    #[test]
    fn namespace_comes_from_the_selected_context() {
        let k = Kubeconfig::from_yaml(KUBECONFIG).expect("kubeconfig");
        assert_eq!(context_namespace(&k, None).as_deref(), Some("team-a"));
        assert_eq!(context_namespace(&k, Some("a")).as_deref(), Some("team-a"));
        assert_eq!(context_namespace(&k, Some("b")), None);
        assert_eq!(context_namespace(&k, Some("missing")), None);
    }

    #[test]
    fn namespace_flag_wins_and_clearml_is_the_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).expect("write");
        let global = |ns: Option<&str>, ctx: Option<&str>| GlobalArgs {
            kubeconfig: Some(path.clone()),
            context: ctx.map(str::to_string),
            namespace: ns.map(str::to_string),
            output: Default::default(),
            agent_addr: None,
            request_timeout: None,
        };
        assert_eq!(resolve_namespace(&global(Some("x"), None)), "x");
        assert_eq!(resolve_namespace(&global(None, None)), "team-a");
        assert_eq!(resolve_namespace(&global(None, Some("b"))), "clearml");
    }

    #[test]
    fn only_running_ready_live_pods_are_dialled() {
        let pod = |phase: &str, ready: &str, deleting: bool| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "p",
                    "deletionTimestamp": deleting.then_some("2024-01-01T00:00:00Z"),
                },
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .expect("pod")
        };
        assert!(is_ready(&pod("Running", "True", false)));
        assert!(!is_ready(&pod("Running", "False", false)));
        assert!(!is_ready(&pod("Pending", "True", false)));
        assert!(!is_ready(&pod("Running", "True", true)));
    }
}
