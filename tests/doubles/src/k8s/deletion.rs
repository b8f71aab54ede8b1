//! Deletion as the real control plane carries it out: immediate removal, graceful pod
//! deletion confirmed later by the emulated kubelet, finalizers that keep objects marked, and
//! the namespace controller that empties a terminating namespace before removing it. Also the
//! controllers that populate every new namespace.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    api::{DeleteOpts, Deleted, ListOpts, NAMESPACES, finalizers, meta_mut, meta_str},
    resources::{ResourceId, def, find},
    state::{Pending, Shared, now, now_plus},
    status::ApiError,
    store::Store,
};

impl Shared {
    /// `DELETE` of one object: immediate, graceful (pods), or marked (finalizers, namespaces).
    pub(crate) fn delete(
        self: &Arc<Self>,
        id: ResourceId,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let res = def(id);
        let mut store = self.store.lock();
        let Some(old) = store.get(id, ns, name).cloned() else {
            return Err(ApiError::not_found(res, name));
        };
        if let Some(uid) = &opts.uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        // Jobs: dependents orphaned (batch/v1's default), or a foreground deletion marked for
        // the garbage collector (`job_controller`); background leaves them to it as well
        let old = if res.is("batch", "jobs") && !opts.dry_run {
            super::job_controller::on_delete(&mut store, &old, opts.propagation.as_deref())
        } else {
            old
        };
        let outcome = self.delete_locked(&mut store, id, &old, opts.grace, opts.dry_run);
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(outcome)
    }

    fn delete_locked(
        self: &Arc<Self>,
        store: &mut Store,
        id: ResourceId,
        old: &Arc<Value>,
        grace: Option<i64>,
        dry_run: bool,
    ) -> Deleted {
        let res = def(id);
        let ns = meta_str(old, "namespace").to_string();
        let name = meta_str(old, "name").to_string();
        let uid = meta_str(old, "uid").to_string();
        let already = !meta_str(old, "deletionTimestamp").is_empty();
        let is_pod = res.is("", "pods");
        let is_ns = id == NAMESPACES;
        let grace = if is_pod {
            let unscheduled = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty();
            let phase = old
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if unscheduled || phase == "Succeeded" || phase == "Failed" {
                0
            } else {
                grace
                    .or_else(|| {
                        old.pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    })
                    .unwrap_or(30)
                    .max(0)
            }
        } else {
            0
        };
        if already {
            let current = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let remove_now = is_pod && grace == 0 && finalizers(old) == 0;
            if !remove_now && (grace >= current || is_ns || !is_pod) {
                return Deleted::Pending(old.clone());
            }
            if remove_now {
                if dry_run {
                    return Deleted::Gone(old.clone());
                }
                return match store.remove(id, &ns, &name) {
                    Some(last) => Deleted::Gone(last),
                    None => Deleted::Gone(old.clone()),
                };
            }
        }
        let needs_mark = is_ns || grace > 0 || finalizers(old) > 0;
        if !needs_mark {
            if dry_run {
                return Deleted::Gone(old.clone());
            }
            return match store.remove(id, &ns, &name) {
                Some(last) => Deleted::Gone(last),
                None => Deleted::Gone(old.clone()),
            };
        }
        let mut marked = (**old).clone();
        {
            let m = meta_mut(&mut marked);
            m.insert("deletionTimestamp".into(), json!(now_plus(grace)));
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if let Some(g) = m.get("generation").and_then(Value::as_i64)
                && g > 0
                && !already
            {
                m.insert("generation".into(), json!(g + 1));
            }
        }
        if is_ns && let Some(Value::Object(s)) = marked.get_mut("status") {
            s.insert("phase".into(), json!("Terminating"));
        }
        if dry_run {
            return Deleted::Pending(Arc::new(marked));
        }
        let marked = store.put(id, marked);
        if is_ns {
            self.schedule(Pending::Namespace(name));
        } else if is_pod && grace > 0 {
            self.schedule(Pending::Pod(ns, name, uid));
        }
        Deleted::Pending(marked)
    }

    /// `DELETE` of a collection: deletes every matching object, returning the results.
    pub(crate) fn delete_collection(
        self: &Arc<Self>,
        id: ResourceId,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let targets = self.list(id, ns, list)?.items;
        let mut store = self.store.lock();
        let mut out = Vec::new();
        for obj in targets {
            let (ns, name) = (meta_str(&obj, "namespace"), meta_str(&obj, "name"));
            let Some(current) = store.get(id, ns, name).cloned() else {
                continue;
            };
            match self.delete_locked(&mut store, id, &current, opts.grace, opts.dry_run) {
                Deleted::Gone(o) | Deleted::Pending(o) => out.push(o),
            }
        }
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(out)
    }

    /// Queues a deletion for the emulated kubelet / namespace controller.
    pub(crate) fn schedule(self: &Arc<Self>, pending: Pending) {
        let delay = {
            let mut settings = self.settings.lock();
            if settings.hold_deletions {
                settings.held.push(pending);
                return;
            }
            settings.deletion_delay
        };
        let shared = self.clone();
        self.rt.spawn(async move {
            tokio::time::sleep(delay).await;
            shared.complete(pending).await;
        });
    }

    /// Runs a queued deletion now.
    pub(crate) async fn complete(self: &Arc<Self>, pending: Pending) {
        match pending {
            Pending::Pod(ns, name, uid) => self.kubelet_confirm_deletion(&ns, &name, &uid),
            Pending::Namespace(name) => self.namespace_cleanup(&name).await,
        }
    }

    /// The kubelet's final `delete(gracePeriodSeconds=0)` of a terminated pod.
    pub(crate) fn kubelet_confirm_deletion(&self, ns: &str, name: &str, uid: &str) {
        let id = pods_id();
        let mut store = self.store.lock();
        let Some(pod) = store.get(id, ns, name).cloned() else {
            return;
        };
        if meta_str(&pod, "uid") != uid || meta_str(&pod, "deletionTimestamp").is_empty() {
            return;
        }
        if finalizers(&pod) == 0 {
            store.remove(id, ns, name);
        } else {
            let mut zeroed = (*pod).clone();
            meta_mut(&mut zeroed).insert("deletionGracePeriodSeconds".into(), json!(0));
            store.put(id, zeroed);
        }
        let rv = store.rv;
        drop(store);
        self.notify(rv);
    }

    /// The namespace controller: deletes everything in a terminating namespace (objects with
    /// finalizers are marked and waited for), then the namespace itself.
    async fn namespace_cleanup(self: &Arc<Self>, name: &str) {
        let mut changes = self.changes.subscribe();
        let mut stop = self.stop.subscribe();
        loop {
            let done = {
                let mut store = self.store.lock();
                let mut left = 0;
                for (id, res) in super::resources::RESOURCES.iter().enumerate() {
                    if !res.namespaced {
                        continue;
                    }
                    let objs: Vec<Arc<Value>> = store
                        .table(id)
                        .range(Some(name), None)
                        .map(|(_, v)| v.clone())
                        .collect();
                    for obj in objs {
                        left += 1;
                        if finalizers(&obj) > 0 {
                            if meta_str(&obj, "deletionTimestamp").is_empty() {
                                self.delete_locked(&mut store, id, &obj, Some(0), false);
                            }
                        } else {
                            store.remove(id, name, meta_str(&obj, "name"));
                        }
                    }
                }
                let finished = match store.get(NAMESPACES, "", name).cloned() {
                    None => true,
                    Some(ns) if left == 0 && finalizers(&ns) == 0 => {
                        store.remove(NAMESPACES, "", name);
                        true
                    }
                    Some(_) => false,
                };
                let rv = store.rv;
                drop(store);
                self.notify(rv);
                finished
            };
            if done || self.stopping() {
                return;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }
}

/// The resource id of pods.
pub(crate) fn pods_id() -> ResourceId {
    find("", "v1", "pods").unwrap_or_default()
}

/// What the real cluster's controllers add to every new namespace.
pub(crate) fn populate_namespace(store: &mut Store, ns: &str) {
    let stamp = now();
    if let Some(sa) = find("", "v1", "serviceaccounts") {
        store.put(
            sa,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default", "namespace": ns,
                                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": stamp}}),
        );
    }
    if let Some(cm) = find("", "v1", "configmaps") {
        store.put(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."},
                                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": stamp},
                   "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIBkubedoubleplaceholder\n-----END CERTIFICATE-----\n"}}),
        );
    }
}
