//! Kubernetes side of the agent: creating and deleting task pods and Services, and the pod watch
//! (kube's runtime watcher feeding a reflector store) that every decision reads from.

use std::{collections::BTreeMap, sync::Arc};

use clearml_agent_core::contract::{ANNOTATION_LAUNCH, LABEL_TASK_ID};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{Event, Pod, Secret, Service},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::Notify;

mod job;
mod pod_group;

pub use job::{JobStore, jobs_by_task, owned_by_job, watch_jobs};

/// The field manager name on every object the agent writes.
pub const FIELD_MANAGER: &str = "clearml-k8s-agent";

/// A failed Kubernetes call, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {kind} {namespace}/{name}: {source}")]
pub struct Error {
    action: &'static str,
    kind: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

impl Error {
    /// The API server's Status reason (`AlreadyExists`, `Invalid`, …), if it answered.
    pub fn reason(&self) -> Option<&str> {
        match &self.source {
            kube::Error::Api(s) => Some(s.reason.as_str()),
            _ => None,
        }
    }

    /// The API server's message, or the transport error.
    pub fn message(&self) -> String {
        match &self.source {
            kube::Error::Api(s) => s.message.clone(),
            other => other.to_string(),
        }
    }

    /// How long the API server asked us to wait (429 `retryAfterSeconds`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match &self.source {
            kube::Error::Api(s) if s.code == 429 => Some(std::time::Duration::from_secs(
                s.details
                    .as_ref()
                    .map_or(1, |d| u64::from(d.retry_after_seconds.max(1))),
            )),
            _ => None,
        }
    }

    /// True for answers that will not change on retry (Invalid, Forbidden, BadRequest…).
    pub fn is_permanent(&self) -> bool {
        matches!(&self.source, kube::Error::Api(s) if matches!(s.code, 400 | 403 | 404 | 409 | 422))
    }
}

/// When an event was last seen (`lastTimestamp`, else `eventTime`, else its creation).
pub fn event_time(e: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// An event as one line: `Warning FailedScheduling on pod-x (×3): message`.
pub fn event_line(e: &Event) -> String {
    let count = match e.count {
        Some(n) if n > 1 => format!(" (×{n})"),
        _ => String::new(),
    };
    format!(
        "{} {} on {}{count}: {}",
        e.type_.as_deref().unwrap_or("Normal"),
        e.reason.as_deref().unwrap_or_default(),
        e.involved_object.name.as_deref().unwrap_or_default(),
        e.message.as_deref().unwrap_or_default().trim()
    )
}

/// Outcome of a create.
#[derive(Debug)]
pub enum Created<K> {
    /// Created now (as the API server returned it: with its uid).
    New(Box<K>),
    /// An object of that name already exists (returned as it is).
    Exists(Box<K>),
}

/// Outcome of [`Kube::ensure_service`].
#[derive(Debug)]
pub enum Ensured {
    /// The Service exists for this task, with the owners asked for.
    Ready,
    /// A Service of that name exists and was made for something else (returned as it is; left
    /// alone).
    Taken(Box<Service>),
}

/// An `ownerReference` to `pod`: a dependent is garbage-collected when the pod is deleted. `None`
/// for a pod without a name or uid (one not read from the API server).
pub fn owned_by(pod: &Pod) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        ..Default::default()
    })
}

/// Pod and Service operations in the task namespace.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    namespace: String,
    pods: Api<Pod>,
    services: Api<Service>,
    events: Api<Event>,
    secrets: Api<Secret>,
    jobs: Api<k8s_openapi::api::batch::v1::Job>,
}

impl Kube {
    /// Operations in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client: client.clone(),
            namespace: namespace.to_string(),
            pods: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            events: Api::namespaced(client.clone(), namespace),
            jobs: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
        }
    }

    fn err(
        &self,
        action: &'static str,
        kind: &'static str,
        name: &str,
        source: kube::Error,
    ) -> Error {
        Error {
            action,
            kind,
            namespace: self.namespace.clone(),
            name: name.to_string(),
            source,
        }
    }

    /// The events about these pods (the scheduler's and kubelet's reasons), oldest first, the
    /// last `limit` of them: one list per pod, selected by the API server
    /// (`involvedObject.name`), so a busy namespace's other events are never transferred.
    pub async fn pod_events(&self, pods: &[String], limit: usize) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        for pod in pods {
            let lp = ListParams::default().fields(&format!(
                "involvedObject.kind=Pod,involvedObject.name={pod}"
            ));
            let list = self
                .events
                .list(&lp)
                .await
                .map_err(|e| self.err("list events of", "pod", pod, e))?;
            events.extend(list.items);
        }
        events.sort_by_key(event_time);
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
        Ok(events)
    }

    /// Makes a content-addressed Secret exist (the `fileMounts` files of task pods): created, or
    /// already there (its name is the hash of its content, and it is immutable, so one of that
    /// name holds the same files). Only `create` is called.
    pub async fn ensure_secret(&self, secret: &Secret) -> Result<(), Error> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self.secrets.create(&pp, secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(self.err("create", "secret", &name, e)),
        }
    }

    /// The Secrets matching `selector` (the agent's `fileMounts` Secrets).
    pub async fn list_secrets(&self, selector: &str) -> Result<Vec<Secret>, Error> {
        let lp = ListParams::default().labels(selector);
        self.secrets
            .list(&lp)
            .await
            .map(|l| l.items)
            .map_err(|e| self.err("list", "secrets", selector, e))
    }

    /// Deletes a Secret (gone already is fine).
    pub async fn delete_secret(&self, name: &str) -> Result<(), Error> {
        match self.secrets.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.err("delete", "secret", name, e)),
        }
    }

    /// Creates a pod; an existing one of the same name is returned for the caller to judge.
    pub async fn create_pod(&self, pod: &Pod) -> Result<Created<Pod>, Error> {
        self.create_or_get(&self.pods, "pod", pod).await
    }

    /// Validates a pod with a server-side dry run (nothing is created).
    pub async fn dry_run_pod(&self, pod: &Pod) -> Result<(), Error> {
        self.dry_run(&self.pods, "pod", pod).await
    }

    /// Creates `obj`; on `AlreadyExists` the existing object is read and returned for the caller
    /// to judge (adopt or refuse): the crash-safe create of every object the agent names itself.
    pub(crate) async fn create_or_get<K>(
        &self,
        api: &Api<K>,
        kind: &'static str,
        obj: &K,
    ) -> Result<Created<K>, Error>
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&pp, obj).await {
            Ok(created) => Ok(Created::New(Box::new(created))),
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => {
                let existing = api
                    .get(&name)
                    .await
                    .map_err(|e| self.err("read", kind, &name, e))?;
                Ok(Created::Exists(Box::new(existing)))
            }
            Err(e) => Err(self.err("create", kind, &name, e)),
        }
    }

    /// Validates `obj` with a server-side dry run (nothing is created); an object of that name
    /// existing is success (the dry run validated everything else).
    pub(crate) async fn dry_run<K>(
        &self,
        api: &Api<K>,
        kind: &'static str,
        obj: &K,
    ) -> Result<(), Error>
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let pp = PostParams {
            dry_run: true,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        match api.create(&pp, obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(self.err("validate", kind, &name, e)),
        }
    }

    /// Deletes a pod (graceful); one already gone is success.
    pub async fn delete_pod(&self, name: &str) -> Result<(), Error> {
        match self.pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.err("delete", "pod", name, e)),
        }
    }

    /// Makes the Service `svc` exist with its `ownerReferences`: creates it, or adopts the one of
    /// that name made for the same task (`clearml-task-id` label) by a launch cut short, an earlier
    /// run or an older agent, setting its owners with a merge patch when they differ. With
    /// `look_first` it is read before anything is written (adopting a launch whose Service most
    /// likely exists: then nothing is written).
    pub async fn ensure_service(&self, svc: &Service, look_first: bool) -> Result<Ensured, Error> {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let found = if look_first {
            self.services
                .get_opt(&name)
                .await
                .map_err(|e| self.err("read", "service", &name, e))?
        } else {
            None
        };
        let existing = match found {
            Some(existing) => existing,
            None => {
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                match self.services.create(&pp, svc).await {
                    Ok(_) => return Ok(Ensured::Ready),
                    Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => self
                        .services
                        .get(&name)
                        .await
                        .map_err(|e| self.err("read", "service", &name, e))?,
                    Err(e) => return Err(self.err("create", "service", &name, e)),
                }
            }
        };
        let task_of = |s: &Service| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_TASK_ID))
                .cloned()
        };
        if task_of(&existing) != task_of(svc) {
            return Ok(Ensured::Taken(Box::new(existing)));
        }
        let want = svc.metadata.owner_references.clone().unwrap_or_default();
        let have = existing.metadata.owner_references.unwrap_or_default();
        if want.iter().all(|w| have.iter().any(|h| h.uid == w.uid)) {
            return Ok(Ensured::Ready);
        }
        let patch = serde_json::json!({"metadata": {"ownerReferences": want}});
        self.services
            .patch(
                &name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| self.err("set the owner of", "service", &name, e))?;
        Ok(Ensured::Ready)
    }

    /// Deletes a Service; one already gone is success.
    pub async fn delete_service(&self, name: &str) -> Result<(), Error> {
        match self.services.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.err("delete", "service", name, e)),
        }
    }
}

/// The agent's pods, kept current by a watch.
pub type PodStore = reflector::Store<Pod>;

/// The store's pods grouped by the task they serve (their `clearml-task-id` label).
pub fn pods_by_task(pods: &PodStore) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut out: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in pods.state() {
        if let Some(task) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_TASK_ID))
        {
            out.entry(task.clone()).or_default().push(pod);
        }
    }
    out
}

/// The launch id a pod serves (its `clearml.ai/launch` annotation).
pub fn launch_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_LAUNCH)
        .map(String::as_str)
}

/// The pods matching `selector` in `namespace`: the store, and the watch that fills it (for the
/// [`Supervisor`](crate::runtime::Supervisor) to run); `changed` is notified on every event.
/// The watch retries with kube's default backoff, relisting after 410 Gone, for ever: it never
/// ends by itself.
pub fn watch_pods(
    client: Client,
    namespace: &str,
    selector: &str,
    changed: Arc<Notify>,
) -> (PodStore, impl Future<Output = ()> + Send + 'static) {
    watch_objects(client, namespace, selector, changed, "pod")
}

/// The objects of kind `K` matching `selector` in `namespace`: the store, and the watch that fills
/// it; `changed` is notified on every event. The watch retries with kube's default backoff,
/// relisting after 410 Gone, for ever.
pub(crate) fn watch_objects<K>(
    client: Client,
    namespace: &str,
    selector: &str,
    changed: Arc<Notify>,
    kind: &'static str,
) -> (
    reflector::Store<K>,
    impl Future<Output = ()> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::namespaced(client, namespace);
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(selector);
    let stream = reflector(writer, watcher(api, config)).default_backoff();
    let watch = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::warn!(%error, kind, "watch error; retrying"),
            }
        }
    };
    (reader, watch)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    #[test]
    fn an_owner_reference_needs_the_pods_name_and_uid() {
        let pod = |name: Option<&str>, uid: Option<&str>| Pod {
            metadata: ObjectMeta {
                name: name.map(str::to_string),
                uid: uid.map(str::to_string),
                ..Default::default()
            },
            ..Default::default()
        };
        let cases = [
            (
                pod(Some("clearml-id-t-0"), Some("u-1")),
                Some(("clearml-id-t-0", "u-1")),
            ),
            (pod(Some("clearml-id-t-0"), None), None),
            (pod(None, Some("u-1")), None),
        ];
        for (p, want) in cases {
            let got = owned_by(&p);
            assert_eq!(
                got.as_ref().map(|o| (
                    o.api_version.as_str(),
                    o.kind.as_str(),
                    o.name.as_str(),
                    o.uid.as_str()
                )),
                want.map(|(n, u)| ("v1", "Pod", n, u)),
                "{:?}",
                p.metadata
            );
            // no blockOwnerDeletion: that would need rights on pods/finalizers
            assert!(got.is_none_or(|o| o.block_owner_deletion.is_none()));
        }
    }
}
