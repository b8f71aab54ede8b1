//! The install's objects on the cluster: server-side apply (field manager `kubectl-clearml`,
//! forced, optionally as a server dry run), read and delete by name through the dynamic API, and
//! the Deployment's rollout state.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
};
use serde_json::Value;

use crate::manifests::{FIELD_MANAGER, LABEL_MANAGED_BY, Manifest};

/// The dynamic API of a manifest's type, when namespaced in the manifest's own namespace (the
/// `clearml.conf` Secret goes to the task namespace), else `namespace`.
pub fn api_for(client: &Client, m: &Manifest, namespace: &str) -> Api<DynamicObject> {
    if m.namespaced {
        let namespace = m
            .doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(namespace);
        Api::namespaced_with(client.clone(), namespace, &m.resource)
    } else {
        Api::all_with(client.clone(), &m.resource)
    }
}

/// Server-side applies `m` (forced: the plugin owns these fields); `dry_run` asks the server to
/// validate and authorise without persisting.
pub async fn apply(
    client: &Client,
    m: &Manifest,
    namespace: &str,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    api_for(client, m, namespace)
        .patch(&m.name, &params, &Patch::Apply(&m.doc))
        .await
}

/// Whether the object carries `app.kubernetes.io/managed-by: kubectl-clearml`.
pub fn is_ours(obj: &DynamicObject) -> bool {
    obj.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == FIELD_MANAGER)
}

/// Deletes `m` by name; `Ok(false)` when it was already gone.
pub async fn delete(client: &Client, m: &Manifest, namespace: &str) -> Result<bool, kube::Error> {
    match api_for(client, m, namespace)
        .delete(&m.name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The API server's own message for API errors (kube's Display adds a debug dump).
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}

/// An applied object fit for printing: no managedFields, Secret data redacted.
pub fn printable(obj: &DynamicObject) -> Value {
    let mut obj = obj.clone();
    obj.metadata.managed_fields = None;
    let doc = serde_json::to_value(&obj).unwrap_or(Value::Null);
    crate::manifests::redact(&doc)
}

/// `Ok(())` once the Deployment has rolled out (the controller saw the latest spec and every
/// replica is updated and available), else what it is waiting for.
pub fn rollout_state(d: &Deployment) -> Result<(), String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    if observed < generation {
        return Err("waiting for the Deployment controller to see the new spec".into());
    }
    if updated < want {
        return Err(format!("{updated} of {want} replicas updated"));
    }
    if replicas > updated {
        return Err(format!(
            "{} old replicas still terminating",
            replicas - updated
        ));
    }
    if available < want {
        return Err(format!("{available} of {want} updated replicas available"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "generation": generation},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("deployment")
    }

    #[test]
    fn rollout_completes_only_when_observed_updated_and_available() {
        let cases = [
            (2, serde_json::json!({}), false),
            (
                2,
                serde_json::json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
                false,
            ),
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 0, "availableReplicas": 1}),
                false,
            ),
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}),
                false,
            ),
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1}),
                false,
            ),
            (
                2,
                serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
                true,
            ),
        ];
        for (i, (generation, status, done)) in cases.into_iter().enumerate() {
            assert_eq!(
                rollout_state(&deployment(generation, status)).is_ok(),
                done,
                "case {i}"
            );
        }
    }

    #[test]
    fn printable_objects_hide_secret_data_and_managed_fields() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "managedFields": [{"manager": "x"}]},
            "data": {"k": "c2VjcmV0"}
        }))
        .expect("object");
        let v = printable(&obj);
        assert_eq!(v["data"]["k"], crate::manifests::REDACTED);
        assert!(v["metadata"].get("managedFields").is_none());
    }
}
