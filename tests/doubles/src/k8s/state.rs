//! The double's shared state: storage, change notification, shutdown and watch-cut signals,
//! settings, faults, the request log, pod logs and port-forward targets. Handlers, the test handle and background
//! "controllers" (kubelet, namespace cleanup) all work through one `Arc<Shared>`.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::{faults::FaultRule, requestlog::RequestRecord, resources::PodGroupApi, store::Store};

/// Options of a [`super::KubeDouble`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Bearer token clients send (`None`: any request is accepted as an admin). A request
    /// presenting another token gets `401 Unauthorized`.
    pub token: Option<String>,
    /// Serve requests that present no credentials, as a real API server's plain-http
    /// (insecure) port did; client-go (kubectl) never sends tokens over plain http. When
    /// `false`, they get `403 Forbidden` for `system:anonymous`.
    pub allow_anonymous: bool,
    /// Events kept per resource type for watch resumption; older resumes get `410 Gone`.
    pub history_limit: usize,
    /// How often open watches that asked for bookmarks receive one.
    pub bookmark_interval: Duration,
    /// How long the emulated kubelet takes to confirm a graceful pod deletion (and the
    /// namespace controller to start emptying a deleted namespace).
    pub deletion_delay: Duration,
    /// Namespaces present at start (a real cluster has these four).
    pub initial_namespaces: Vec<String>,
    /// Emulate the controllers that populate every namespace: the `default` ServiceAccount and
    /// the `kube-root-ca.crt` ConfigMap.
    pub namespace_controllers: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            token: Some(format!("double-{}", uuid::Uuid::new_v4().simple())),
            allow_anonymous: true,
            history_limit: 100_000,
            bookmark_interval: Duration::from_secs(10),
            deletion_delay: Duration::from_millis(50),
            initial_namespaces: ["default", "kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec(),
            namespace_controllers: true,
        }
    }
}

/// A deletion waiting for the emulated kubelet / namespace controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A pod marked for graceful deletion (namespace, name, uid).
    Pod(String, String, String),
    /// A terminating namespace.
    Namespace(String),
}

/// Mutable knobs of a running double.
#[derive(Debug)]
pub(crate) struct Settings {
    pub bookmark_interval: Duration,
    pub deletion_delay: Duration,
    pub hold_deletions: bool,
    pub held: Vec<Pending>,
    /// Kueue's pod webhook is installed (see `kueue.rs`).
    pub kueue_webhook: bool,
    /// The PodGroup API version served (see `podgroup.rs`).
    pub pod_group_api: Option<PodGroupApi>,
}

/// Everything the handlers and the handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub store: Mutex<Store>,
    /// Carries the latest resourceVersion; notified on every change (and pod-log append).
    pub changes: watch::Sender<u64>,
    /// `true` once the double shuts down: streams end.
    pub stop: watch::Sender<bool>,
    /// Incremented to cut every open watch.
    pub cuts: watch::Sender<u64>,
    pub settings: Mutex<Settings>,
    pub faults: Mutex<Vec<FaultRule>>,
    pub requests: Mutex<Vec<RequestRecord>>,
    /// Container logs by (namespace, pod, container).
    pub logs: Mutex<HashMap<(String, String, String), String>>,
    /// The real socket behind a pod's port, by (namespace, pod, port), for `pods/portforward`.
    pub port_targets: Mutex<HashMap<(String, String, u16), SocketAddr>>,
    pub rt: tokio::runtime::Handle,
}

impl Shared {
    /// Builds the state (must run inside a tokio runtime).
    pub fn new(config: Config, rt: tokio::runtime::Handle) -> Self {
        let store = Store::new(config.history_limit, 100);
        let (changes, _) = watch::channel(store.rv);
        let (stop, _) = watch::channel(false);
        let (cuts, _) = watch::channel(0);
        Self {
            settings: Mutex::new(Settings {
                bookmark_interval: config.bookmark_interval,
                deletion_delay: config.deletion_delay,
                hold_deletions: false,
                held: Vec::new(),
                kueue_webhook: false,
                pod_group_api: None,
            }),
            config,
            store: Mutex::new(store),
            changes,
            stop,
            cuts,
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            logs: Mutex::new(HashMap::new()),
            port_targets: Mutex::new(HashMap::new()),
            rt,
        }
    }

    /// Wakes every watcher and waiter after a change.
    pub fn notify(&self, rv: u64) {
        self.changes.send_replace(rv);
    }

    /// Wakes waiters without a store change (pod log appends).
    pub fn poke(&self) {
        self.changes.send_modify(|_| {});
    }

    /// The PodGroup API version served now (`None`: none, as before Kubernetes 1.36).
    pub fn pod_group_api(&self) -> Option<PodGroupApi> {
        self.settings.lock().pod_group_api
    }

    /// Whether the double is shutting down.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// The current time in the RFC 3339 form the API server writes (`2025-01-02T03:04:05Z`).
pub(crate) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `now` plus some seconds, same format.
pub(crate) fn now_plus(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
