//! The Kubernetes API server double: an axum server on `127.0.0.1:<port>` that kube-rs and the
//! real `kubectl` accept, plus a Rust handle for tests to inspect and drive it.
//!
//! What it serves: discovery and a minimal OpenAPI v3 ([`discovery`]); namespaces, pods
//! (+status, +log, +portforward over WebSocket), services, configmaps, secrets, serviceaccounts, core events, deployments
//! (+status), RBAC roles/bindings, leases and events.k8s.io events ([`resources`]), and, when a
//! test switches it on ([`KubeDouble::set_pod_group_api`]), `scheduling.k8s.io` PodGroups
//! (+status) in `v1alpha2` or `v1beta1` with their validation, pods' `spec.schedulingGroup`
//! (dropped while no version is served) and the garbage collection of PodGroups whose owners are
//! gone (`podgroup`); create,
//! get, list, replace, delete, deletecollection; merge, JSON, strategic-merge and server-side
//! apply patches; label and field selectors; watches with resume, `410 Gone`, bookmarks;
//! dry-run; real `Status` errors. The handle plays the scheduler/kubelet, injects faults and
//! keeps a request log.
//!
//! Storage keeps objects as JSON decoded through the k8s-openapi types (unknown fields are
//! pruned, as the real server does for built-in kinds).

mod api;
mod apply;
pub mod authz;
mod defaults;
mod deletion;
pub mod discovery;
mod disrupt;
mod faults;
mod job_controller;
pub mod kubeconfig;
mod kubelet;
mod kueue;
mod names;
mod patch;
mod podgroup;
mod portforward;
mod quantity;
mod requestlog;
pub mod resources;
mod router;
mod schema;
mod selectors;
mod state;
mod status;
mod store;
mod validate;
mod watch;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

pub use faults::{Fault, RequestMatch};
pub use kubelet::NODE_NAME;
pub use kueue::{KUEUE_ADMISSION_GATE, KUEUE_QUEUE_LABEL, is_gated};
pub use patch::PatchType;
pub use podgroup::{gang_min_count, pod_group_name};
pub use requestlog::RequestRecord;
pub use resources::PodGroupApi;
pub use state::Config;
pub use status::{ApiError, FieldError};
pub use store::{EventKind, StoreView};

use crate::serve::{Served, serve};
use api::{DeleteOpts, Deleted, WriteOpts};
use kubelet::ContainerState;
use state::{Pending, Shared};

/// A `wait_for` deadline passed before the condition held.
#[derive(Debug, thiserror::Error)]
#[error("condition not met within {0:?}")]
pub struct WaitTimeout(pub Duration);

/// A running Kubernetes API server double and the test's handle on it.
#[derive(Debug)]
pub struct KubeDouble {
    shared: Arc<Shared>,
    served: Option<Served>,
}

fn resource_id(shared: &state::Shared, resource: &str) -> Result<resources::ResourceId, ApiError> {
    resources::resolve_served(resource, shared.pod_group_api()).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the double does not serve resource {resource:?}"),
        )
    })
}

fn type_id<K: k8s_openapi::Resource>() -> Result<resources::ResourceId, ApiError> {
    resources::of_type::<K>().ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the double does not serve {}", K::KIND),
        )
    })
}

fn to_typed<K: DeserializeOwned>(v: &Value) -> Result<K, ApiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ApiError::internal(&format!("stored object does not decode: {e}")))
}

fn from_typed<K: Serialize>(obj: &K) -> Result<Value, ApiError> {
    serde_json::to_value(obj).map_err(|e| ApiError::bad_request(e.to_string()))
}

impl KubeDouble {
    /// Starts a double with the default [`Config`] (random token, the four standard
    /// namespaces).
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(Config::default()).await
    }

    /// Starts a double with the given configuration.
    pub async fn start_with(config: Config) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(config, tokio::runtime::Handle::current()));
        for ns in shared.config.initial_namespaces.clone() {
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            shared
                .create(0, "", obj, &WriteOpts::default())
                .map_err(std::io::Error::other)?;
        }
        tokio::spawn(job_controller::run(shared.clone()));
        tokio::spawn(podgroup::run_gc(shared.clone()));
        let served = serve(router::router(shared.clone())).await?;
        Ok(Self {
            shared,
            served: Some(served),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.served.as_ref().map(Served::url).unwrap_or_default()
    }

    /// The bearer token clients must present (`None` if authentication is off).
    pub fn token(&self) -> Option<&str> {
        self.shared.config.token.as_deref()
    }

    /// The kubeconfig YAML for this double with `namespace` as the context's namespace.
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        kubeconfig::render(&self.url(), self.token(), namespace)
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        kubeconfig::write(path, &self.url(), self.token(), namespace)
    }

    // ----- objects -------------------------------------------------------------------------

    /// One object (`resource` is `pods`, `deployments`, `roles`, ...; namespace `""` for
    /// cluster-scoped types).
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let id = resources::resolve_served(resource, self.shared.pod_group_api())?;
        self.shared
            .get(id, namespace, name)
            .ok()
            .map(|a| (*a).clone())
    }

    /// Objects of a type in one namespace or all.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.snapshot(|s| s.list(resource, namespace).into_iter().cloned().collect())
    }

    /// Creates an object through the same path as `POST` (defaults, validation, events).
    pub fn create(&self, resource: &str, namespace: &str, obj: Value) -> Result<Value, ApiError> {
        let id = resource_id(&self.shared, resource)?;
        let w = self
            .shared
            .create(id, namespace, obj, &WriteOpts::default())?;
        Ok((*w.object).clone())
    }

    /// Replaces an object (`PUT`); `metadata.resourceVersion`, if set, must be current.
    pub fn replace(&self, resource: &str, namespace: &str, obj: Value) -> Result<Value, ApiError> {
        let id = resource_id(&self.shared, resource)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let w = self
            .shared
            .update(id, namespace, &name, obj, false, &WriteOpts::default())?;
        Ok((*w.object).clone())
    }

    /// Patches an object with any patch type (`Apply` uses field manager `kube-double`).
    pub fn patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        self.patch_at(resource, namespace, name, patch_type, patch, false)
    }

    /// Patches an object's `status` subresource, as a controller does (e.g. a Deployment's
    /// `availableReplicas`, which no controller of the double maintains).
    pub fn patch_status(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        self.patch_at(resource, namespace, name, patch_type, patch, true)
    }

    /// [`Self::patch`] of the object (`status: false`) or its `status` subresource.
    fn patch_at(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: &Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let id = resource_id(&self.shared, resource)?;
        let opts = WriteOpts {
            field_manager: Some("kube-double".into()),
            ..Default::default()
        };
        let body = patch.to_string();
        let w = self.shared.patch(
            id,
            namespace,
            name,
            patch_type,
            body.as_bytes(),
            status,
            &opts,
        )?;
        Ok((*w.object).clone())
    }

    /// Deletes an object like `DELETE` with default options (pods go through graceful
    /// deletion, objects with finalizers are only marked). Returns `true` if it is gone now.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Result<bool, ApiError> {
        let id = resource_id(&self.shared, resource)?;
        match self
            .shared
            .delete(id, namespace, name, &DeleteOpts::default())?
        {
            Deleted::Gone(_) => Ok(true),
            Deleted::Pending(_) => Ok(false),
        }
    }

    /// A typed object.
    pub fn get_typed<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let id = resources::of_type::<K>()?;
        let obj = self.shared.get(id, namespace, name).ok()?;
        to_typed(&obj).ok()
    }

    /// Typed objects of one namespace or all.
    pub fn list_typed<K>(&self, namespace: Option<&str>) -> Vec<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let Some(id) = resources::of_type::<K>() else {
            return Vec::new();
        };
        let store = self.shared.store.lock();
        store
            .table(id)
            .range(namespace, None)
            .filter_map(|(_, v)| to_typed(v).ok())
            .collect()
    }

    /// Creates a typed object in its `metadata.namespace` (cluster-scoped: none).
    pub fn create_typed<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: k8s_openapi::Resource
            + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
            + Serialize
            + DeserializeOwned,
    {
        let id = type_id::<K>()?;
        let ns = obj.metadata().namespace.clone().unwrap_or_default();
        let w = self
            .shared
            .create(id, &ns, from_typed(obj)?, &WriteOpts::default())?;
        to_typed(&w.object)
    }

    /// Runs `f` on a consistent view of the store.
    pub fn snapshot<T>(&self, f: impl FnOnce(&StoreView<'_>) -> T) -> T {
        let store = self.shared.store.lock();
        f(&StoreView { store: &store })
    }

    /// Waits until `f` returns `Some`, re-checking on every change (no polling sleeps).
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&StoreView<'_>) -> Option<T>,
    ) -> Result<T, WaitTimeout> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(v) = self.snapshot(&mut f) {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(WaitTimeout(timeout)),
            }
        }
    }

    // ----- kubelet / scheduler ---------------------------------------------------------------

    /// Schedules the pod (if unbound) and reports every container running and ready.
    pub fn set_pod_running(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        self.shared
            .set_container_state(namespace, name, ContainerState::Running)
            .map(drop)
    }

    /// Every container exited 0 (`Succeeded`, or restarted under `restartPolicy: Always`).
    pub fn set_pod_succeeded(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        self.set_pod_terminated(namespace, name, 0, "Completed")
    }

    /// Every container exited with `exit_code` and `reason` (e.g. `Error`): `Failed` under
    /// `restartPolicy: Never`, otherwise `CrashLoopBackOff` with the termination in
    /// `lastState`.
    pub fn set_pod_failed(
        &self,
        namespace: &str,
        name: &str,
        exit_code: i32,
        reason: &str,
    ) -> Result<(), ApiError> {
        self.set_pod_terminated(namespace, name, exit_code, reason)
    }

    /// The pod was taken by the cluster (`reason`: `PreemptionByScheduler`,
    /// `EvictionByEvictionAPI`, `DeletionByTaintManager`, …): condition `DisruptionTarget=True`,
    /// containers killed (exit 137), `Failed` (under `restartPolicy: Never`).
    pub fn set_pod_disrupted(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .set_disrupted(namespace, name, reason, message)
            .map(drop)
    }

    /// Every container was OOM-killed (exit code 137, reason `OOMKilled`).
    pub fn set_pod_oom_killed(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        self.set_pod_terminated(namespace, name, 137, "OOMKilled")
    }

    fn set_pod_terminated(
        &self,
        namespace: &str,
        name: &str,
        exit_code: i32,
        reason: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .set_container_state(
                namespace,
                name,
                ContainerState::Terminated {
                    exit_code,
                    reason: reason.to_string(),
                },
            )
            .map(drop)
    }

    /// Every container waits with `reason` (`ImagePullBackOff`, `ErrImagePull`,
    /// `CreateContainerConfigError`, `ContainerCreating`, ...) and `message`.
    pub fn set_pod_waiting(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .set_container_state(
                namespace,
                name,
                ContainerState::Waiting {
                    reason: reason.to_string(),
                    message: message.to_string(),
                },
            )
            .map(drop)
    }

    /// The scheduler cannot place the pod: `PodScheduled=False`, reason `Unschedulable`.
    pub fn set_pod_unschedulable(
        &self,
        namespace: &str,
        name: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .set_unschedulable(namespace, name, message)
            .map(drop)
    }

    /// Records a core/v1 Event about a pod, as the kubelet or the scheduler (`component`) does:
    /// `type_` is `Normal` or `Warning`, `reason` e.g. `FailedScheduling` or `Failed`.
    pub fn record_pod_event(
        &self,
        namespace: &str,
        pod: &str,
        type_: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) -> Result<Value, ApiError> {
        let uid = self
            .get("pods", namespace, pod)
            .and_then(|p| p.pointer("/metadata/uid").cloned())
            .unwrap_or(Value::Null);
        let now = state::now();
        self.create(
            "events",
            namespace,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": format!("{pod}.{:016x}", rand::random::<u64>()),
                    "namespace": namespace,
                },
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod,
                    "namespace": namespace,
                    "uid": uid,
                },
                "type": type_,
                "reason": reason,
                "message": message,
                "source": {"component": component},
                "reportingComponent": component,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }),
        )
    }

    /// Sets a container's log text (`container: None` = the pod's first container).
    pub fn set_pod_log(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        text: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .write_log(namespace, name, container, text, false)
    }

    /// Appends to a container's log (followers receive it).
    pub fn append_pod_log(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        text: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .write_log(namespace, name, container, text, true)
    }

    /// While held, graceful pod deletions and namespace cleanups wait (objects stay marked
    /// with `deletionTimestamp`); releasing completes the held pod deletions before returning
    /// and starts the held namespace cleanups.
    pub async fn hold_deletions(&self, hold: bool) {
        let released = {
            let mut settings = self.shared.settings.lock();
            settings.hold_deletions = hold;
            if hold {
                Vec::new()
            } else {
                std::mem::take(&mut settings.held)
            }
        };
        for pending in released {
            match pending {
                Pending::Pod(..) => self.shared.complete(pending).await,
                // Namespace cleanup may wait on finalizers: run it in the background.
                Pending::Namespace(_) => {
                    let shared = self.shared.clone();
                    self.shared
                        .rt
                        .spawn(async move { shared.complete(pending).await });
                }
            }
        }
    }

    /// Number of deletions waiting because of [`Self::hold_deletions`].
    pub fn held_deletions(&self) -> usize {
        self.shared.settings.lock().held.len()
    }

    /// How long the emulated kubelet takes to confirm a graceful deletion.
    pub fn set_deletion_delay(&self, delay: Duration) {
        self.shared.settings.lock().deletion_delay = delay;
    }

    /// The kubelet confirms one held pod deletion now.
    pub fn complete_pod_deletion(&self, namespace: &str, name: &str) {
        let mut settings = self.shared.settings.lock();
        let mut uid = None;
        settings.held.retain(|p| match p {
            Pending::Pod(ns, n, u) if ns == namespace && n == name => {
                uid = Some(u.clone());
                false
            }
            _ => true,
        });
        drop(settings);
        if let Some(uid) = uid {
            self.shared.kubelet_confirm_deletion(namespace, name, &uid);
        }
    }

    /// The real socket standing for `localhost:<port>` inside a pod, which the emulated
    /// kubelet connects to for `pods/portforward` (new connections use the latest mapping).
    /// Unmapped ports are dialed at `127.0.0.1:<port>`, then `[::1]:<port>`.
    pub fn set_port_forward_target(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        target: SocketAddr,
    ) {
        self.shared
            .port_targets
            .lock()
            .insert((namespace.to_string(), pod.to_string(), port), target);
    }

    // ----- faults, watches, request log --------------------------------------------------------

    /// The next `times` requests matching `matcher` get `fault`.
    pub fn inject(&self, matcher: RequestMatch, fault: Fault, times: usize) {
        self.shared.faults.lock().push(faults::FaultRule {
            matcher,
            fault,
            remaining: times,
            rate: None,
        });
    }

    /// From now on each request matching `matcher` gets `fault` with probability `rate`, until
    /// [`Self::clear_faults`] (several rules: each is tried in turn).
    pub fn inject_rate(&self, matcher: RequestMatch, fault: Fault, rate: f64) {
        self.shared.faults.lock().push(faults::FaultRule {
            matcher,
            fault,
            remaining: 0,
            rate: Some(rate),
        });
    }

    /// Disarms every injected fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().clear();
    }

    /// Ends every open watch stream now (clients see the connection's response end).
    pub fn cut_watches(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Drops the event history: resuming a watch from any earlier resourceVersion (or using
    /// an earlier continue token) gets `410 Gone`.
    pub fn compact_history(&self) {
        self.shared.store.lock().compact();
    }

    /// Changes how many events per type are kept for watch resumption.
    pub fn set_history_limit(&self, limit: usize) {
        self.shared.store.lock().set_history_limit(limit);
    }

    /// How often bookmark events are sent to watches that asked for them (new watches).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.settings.lock().bookmark_interval = interval;
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().rv
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().clear();
    }

    /// Waits until a request matching `pred` has been answered (watches are logged when their
    /// stream starts); returns the first such record.
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&RequestRecord) -> bool,
    ) -> Result<RequestRecord, WaitTimeout> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if let Some(r) = self.shared.requests.lock().iter().find(|r| pred(r)) {
                return Ok(r.clone());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(WaitTimeout(timeout)),
            }
        }
    }

    /// How many requests had `verb` on `resource` (`pods`, `pods/status`).
    pub fn count_requests(&self, verb: &str, resource: &str) -> usize {
        self.shared
            .requests
            .lock()
            .iter()
            .filter(|r| r.is(verb, resource))
            .count()
    }

    /// Stops the server: open watches and log streams end, port-forward connections are cut,
    /// then the listener closes.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Some(served) = self.served.take() {
            served.shutdown().await;
        }
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}
