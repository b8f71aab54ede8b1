//! The `scheduling.k8s.io` PodGroup API (KEP-4671 gang scheduling, KEP-5832 standalone
//! PodGroups) as far as a client sees it, switched by [`KubeDouble::set_pod_group_api`]:
//!
//! - served version: none (default, a ≤1.35 cluster or `GenericWorkload` off), `v1alpha2`
//!   (1.36) or `v1beta1` (1.37); discovery lists `podgroups` (+`status`) only for it and any
//!   request to another version is `404` (the resource table's `served_when`);
//! - validation (`pkg/apis/scheduling/validation`, registry strategy tests):
//!   `spec.schedulingPolicy` exactly one of `basic` / `gang` ("must specify one of: `basic`,
//!   `gang`", "must specify exactly one of: …"), `gang.minCount` ≥ 1 ("must be greater than or
//!   equal to 1"), name a DNS subdomain; spec immutable ("field is immutable") except
//!   `gang.minCount` in v1beta1; `status` dropped on create;
//! - pods' `spec.schedulingGroup` (and pod templates' of Jobs and Deployments): kept while a
//!   version is served, dropped silently on create when none is (the apiserver drops disabled
//!   fields), kept on update when the old object had it; immutable through the pod update rule;
//! - the garbage collector's part for PodGroups: one whose `ownerReferences` all point at
//!   objects that no longer exist (by uid) is deleted in the background, after the owner's
//!   delete has returned, as kube-controller-manager's collector does.
//!
//! Not reproduced: Workloads and `podGroupTemplateRef` resolution, CompositePodGroups,
//! `DisruptionTarget`, the priority admission fields, and the collector for other kinds (the Job
//! controller collects Jobs' pods and Services itself).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    KubeDouble,
    api::{DeleteOpts, meta_str},
    names::{DNS1123_SUBDOMAIN_MSG, is_dns1123_subdomain},
    resources::{POD_GROUP_GROUP, PodGroupApi, RESOURCES, ResourceDef, ResourceId, find},
    state::{Shared, now},
    status::{ApiError, FieldError},
};

/// The ids of both PodGroup tables (one per version; only the served one is written).
pub(crate) fn pod_group_ids() -> impl Iterator<Item = ResourceId> {
    RESOURCES
        .iter()
        .enumerate()
        .filter(|(_, r)| r.group == POD_GROUP_GROUP && r.plural == "podgroups")
        .map(|(id, _)| id)
}

fn pod_group_id(api: PodGroupApi) -> Option<ResourceId> {
    find(POD_GROUP_GROUP, api.version(), "podgroups")
}

fn template_spec_mut<'a>(res: &ResourceDef, obj: &'a mut Value) -> Option<&'a mut Value> {
    match (res.group, res.plural) {
        ("", "pods") => obj.get_mut("spec"),
        ("apps", "deployments") | ("batch", "jobs") => obj.pointer_mut("/spec/template/spec"),
        _ => None,
    }
}

fn template_spec<'a>(res: &ResourceDef, obj: &'a Value) -> Option<&'a Value> {
    match (res.group, res.plural) {
        ("", "pods") => obj.get("spec"),
        ("apps", "deployments") | ("batch", "jobs") => obj.pointer("/spec/template/spec"),
        _ => None,
    }
}

/// The apiserver's `PrepareForCreate`/`PrepareForUpdate` parts for the PodGroup API: drops a
/// pod spec's `schedulingGroup` while no PodGroup version is served (unless the old object had
/// one), and a new PodGroup's `status`.
pub(crate) fn drop_disabled(
    res: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    api: Option<PodGroupApi>,
) {
    if res.group == POD_GROUP_GROUP && res.plural == "podgroups" && old.is_none() {
        if let Value::Object(m) = obj {
            m.remove("status");
        }
        return;
    }
    let in_use = old
        .and_then(|o| template_spec(res, o))
        .is_some_and(|s| s.get("schedulingGroup").is_some());
    if api.is_some() || in_use {
        return;
    }
    if let Some(Value::Object(spec)) = template_spec_mut(res, obj) {
        spec.remove("schedulingGroup");
    }
}

/// Validates a pod spec's `schedulingGroup` (`prefix`: `spec` or `spec.template.spec`).
pub(crate) fn validate_scheduling_group(spec: &Value, prefix: &str, errs: &mut Vec<FieldError>) {
    let Some(group) = spec.get("schedulingGroup") else {
        return;
    };
    let field = format!("{prefix}.schedulingGroup.podGroupName");
    match group.get("podGroupName").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required(field, "")),
        Some(name) if !is_dns1123_subdomain(name) => {
            errs.push(FieldError::invalid(
                field,
                &json!(name),
                DNS1123_SUBDOMAIN_MSG,
            ));
        }
        Some(_) => {}
    }
}

/// Validates a PodGroup (create and update).
pub(crate) fn validate(
    res: &ResourceDef,
    obj: &Value,
    old: Option<&Value>,
    errs: &mut Vec<FieldError>,
) {
    let policy = obj.pointer("/spec/schedulingPolicy");
    let basic = policy
        .and_then(|p| p.get("basic"))
        .is_some_and(|v| !v.is_null());
    let gang = policy.and_then(|p| p.get("gang")).filter(|v| !v.is_null());
    match (basic, gang) {
        (false, None) => errs.push(FieldError::invalid(
            "spec.schedulingPolicy",
            &json!(""),
            "must specify one of: `basic`, `gang`",
        )),
        (true, Some(_)) => errs.push(FieldError::invalid(
            "spec.schedulingPolicy",
            &json!("{basic, gang}"),
            "must specify exactly one of: `basic`, `gang`",
        )),
        _ => {}
    }
    if let Some(gang) = gang {
        let min = gang.get("minCount").and_then(Value::as_i64).unwrap_or(0);
        if min < 1 {
            errs.push(FieldError::invalid(
                "spec.schedulingPolicy.gang.minCount",
                &json!(min),
                "must be greater than or equal to 1",
            ));
        }
    }
    let Some(old) = old else { return };
    let (Some(Value::Object(new_spec)), Some(Value::Object(old_spec))) =
        (obj.get("spec"), old.get("spec"))
    else {
        return;
    };
    let mut keys: Vec<&String> = new_spec.keys().chain(old_spec.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (mut new_v, old_v) = (new_spec.get(key).cloned(), old_spec.get(key));
        // v1beta1 lets a gang's minCount change (the scheduler requeues on a decrease)
        if res.version == PodGroupApi::V1beta1.version()
            && key == "schedulingPolicy"
            && let (Some(n), Some(o)) = (
                new_v.as_mut().and_then(|v| v.pointer_mut("/gang/minCount")),
                old_v.and_then(|v| v.pointer("/gang/minCount")),
            )
        {
            *n = o.clone();
        }
        if new_v.as_ref() != old_v {
            errs.push(FieldError::invalid(
                format!("spec.{key}"),
                new_spec.get(key).unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
}

/// The PodGroup a pod belongs to (`spec.schedulingGroup.podGroupName`).
pub fn pod_group_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/schedulingGroup/podGroupName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// A PodGroup's gang `minCount` (`None` for a `basic` policy).
pub fn gang_min_count(pod_group: &Value) -> Option<i64> {
    pod_group
        .pointer("/spec/schedulingPolicy/gang/minCount")
        .and_then(Value::as_i64)
}

fn owner_uids(obj: &Value) -> Vec<(&str, &str, &str)> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
            (s("apiVersion"), s("kind"), s("uid"))
        })
        .collect()
}

/// Whether an object with this uid (of the referenced kind, in `ns`) exists.
fn owner_exists(shared: &Shared, ns: &str, api_version: &str, kind: &str, uid: &str) -> bool {
    let store = shared.store.lock();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    RESOURCES
        .iter()
        .enumerate()
        .filter(|(_, r)| r.group == group && r.kind == kind)
        .any(|(id, r)| {
            let scope = if r.namespaced { Some(ns) } else { Some("") };
            store
                .table(id)
                .range(scope, None)
                .any(|(_, o)| meta_str(o, "uid") == uid)
        })
}

/// One pass of the garbage collector over PodGroups: those whose owners are all gone are
/// deleted (background propagation; a PodGroup has no dependents).
fn collect(shared: &Arc<Shared>) {
    let groups: Vec<(ResourceId, Arc<Value>)> = {
        let store = shared.store.lock();
        pod_group_ids()
            .flat_map(|id| {
                store
                    .table(id)
                    .range(None, None)
                    .map(|(_, v)| (id, v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for (id, pg) in groups {
        let owners = owner_uids(&pg);
        if owners.is_empty() || !meta_str(&pg, "deletionTimestamp").is_empty() {
            continue;
        }
        let ns = meta_str(&pg, "namespace");
        if owners
            .iter()
            .any(|(v, k, u)| owner_exists(shared, ns, v, k, u))
        {
            continue;
        }
        let opts = DeleteOpts {
            uid: Some(meta_str(&pg, "uid").to_string()),
            propagation: Some("Background".into()),
            ..Default::default()
        };
        let _ = shared.delete(id, ns, meta_str(&pg, "name"), &opts);
    }
}

/// Runs the PodGroup garbage collector until the double stops.
pub(crate) async fn run_gc(shared: Arc<Shared>) {
    let mut changes = shared.changes.subscribe();
    let mut stop = shared.stop.subscribe();
    loop {
        if shared.stopping() {
            return;
        }
        changes.borrow_and_update();
        if shared.pod_group_api().is_some() {
            collect(&shared);
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

impl KubeDouble {
    /// Which PodGroup API version the double serves (`None`, the default: none). Set it before
    /// clients discover the API; switching later does not move stored PodGroups between versions.
    pub fn set_pod_group_api(&self, version: Option<PodGroupApi>) {
        self.shared.settings.lock().pod_group_api = version;
        self.shared.poke();
    }

    /// The PodGroup API version served.
    pub fn pod_group_api(&self) -> Option<PodGroupApi> {
        self.shared.pod_group_api()
    }

    /// A PodGroup of the served version.
    pub fn pod_group(&self, namespace: &str, name: &str) -> Option<Value> {
        let id = pod_group_id(self.shared.pod_group_api()?)?;
        self.shared
            .get(id, namespace, name)
            .ok()
            .map(|a| (*a).clone())
    }

    /// PodGroups of the served version in one namespace or all.
    pub fn pod_groups(&self, namespace: Option<&str>) -> Vec<Value> {
        let Some(id) = self.shared.pod_group_api().and_then(pod_group_id) else {
            return Vec::new();
        };
        let store = self.shared.store.lock();
        store
            .table(id)
            .range(namespace, None)
            .map(|(_, v)| (**v).clone())
            .collect()
    }

    /// The scheduler's verdict on a PodGroup: sets its scheduled condition
    /// ([`PodGroupApi::scheduled_condition`]) through the `status` subresource; kept unchanged
    /// when already at `status` (its `lastTransitionTime` too), and never regressed from `True`
    /// to `False` (kube-scheduler's `updatePodGroupCondition`).
    pub fn set_pod_group_scheduled(
        &self,
        namespace: &str,
        name: &str,
        status: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let api = self
            .shared
            .pod_group_api()
            .ok_or_else(|| ApiError::new(404, "NotFound", "no PodGroup API is served"))?;
        let id = pod_group_id(api)
            .ok_or_else(|| ApiError::new(404, "NotFound", "no PodGroup API is served"))?;
        let pg = self.shared.get(id, namespace, name)?;
        let ty = api.scheduled_condition();
        let wanted = if status { "True" } else { "False" };
        let existing = pg
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
            });
        let current = existing
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str);
        if current == Some("True") && !status {
            return Ok(());
        }
        if current == Some(wanted)
            && existing
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str)
                == Some(reason)
            && existing
                .and_then(|c| c.get("message"))
                .and_then(Value::as_str)
                == Some(message)
        {
            return Ok(());
        }
        let transition = match (current, existing) {
            (Some(s), Some(c)) if s == wanted => c
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or_else(|| json!(now())),
            _ => json!(now()),
        };
        let generation = pg
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let mut obj = (*pg).clone();
        let cond = json!({
            "type": ty,
            "status": wanted,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        });
        if let Value::Object(m) = &mut obj {
            let status_v = m.entry("status").or_insert_with(|| json!({}));
            if let Value::Object(s) = status_v {
                let conds = s.entry("conditions").or_insert_with(|| json!([]));
                if let Value::Array(list) = conds {
                    list.retain(|c| c.get("type").and_then(Value::as_str) != Some(ty));
                    list.push(cond);
                }
            }
        }
        self.shared
            .update(id, namespace, name, obj, true, &Default::default())
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::k8s::{KubeDouble, PodGroupApi};

    const WAIT: Duration = Duration::from_secs(5);

    fn pod(name: &str, group: Option<&str>) -> Value {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let Some(g) = group {
            p["spec"]["schedulingGroup"] = json!({"podGroupName": g});
        }
        p
    }

    fn pod_group(api: PodGroupApi, name: &str, policy: Value) -> Value {
        json!({"apiVersion": api.api_version(), "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulingPolicy": policy}})
    }

    async fn get(kube: &KubeDouble, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", kube.url()))
            .bearer_auth(kube.token().unwrap_or_default())
            .send()
            .await
            .expect("request");
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn discovery_lists_only_the_served_version() {
        let kube = KubeDouble::start().await.expect("start");
        for served in [
            None,
            Some(PodGroupApi::V1alpha2),
            Some(PodGroupApi::V1beta1),
        ] {
            kube.set_pod_group_api(served);
            let (_, groups) = get(&kube, "/apis").await;
            let versions: Vec<String> = groups["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["name"] == "scheduling.k8s.io")
                .flat_map(|g| g["versions"].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v["version"].as_str().map(str::to_string))
                .collect();
            let expected: Vec<String> = served
                .map(|a| a.version().to_string())
                .into_iter()
                .collect();
            assert_eq!(versions, expected, "served {served:?}");
            for api in [PodGroupApi::V1alpha2, PodGroupApi::V1beta1] {
                let (code, list) =
                    get(&kube, &format!("/apis/scheduling.k8s.io/{}", api.version())).await;
                let (_, objects) = get(
                    &kube,
                    &format!(
                        "/apis/scheduling.k8s.io/{}/namespaces/default/podgroups",
                        api.version()
                    ),
                )
                .await;
                if Some(api) == served {
                    assert_eq!(code, 200);
                    let names: Vec<&str> = list["resources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["name"].as_str())
                        .collect();
                    assert_eq!(names, vec!["podgroups", "podgroups/status"]);
                    assert_eq!(objects["kind"], "PodGroupList");
                } else {
                    assert_eq!(code, 404, "{api:?} while serving {served:?}");
                    assert_eq!(objects["reason"], "NotFound");
                }
            }
            let (code, _) = get(&kube, "/apis/scheduling.k8s.io").await;
            assert_eq!(code, if served.is_some() { 200 } else { 404 });
        }
    }

    #[tokio::test]
    async fn scheduling_group_is_dropped_unless_served() {
        let kube = KubeDouble::start().await.expect("start");
        let created = kube
            .create("pods", "default", pod("off", Some("g")))
            .expect("create");
        assert!(created.pointer("/spec/schedulingGroup").is_none());
        kube.set_pod_group_api(Some(PodGroupApi::V1alpha2));
        let created = kube
            .create("pods", "default", pod("on", Some("g")))
            .expect("create");
        assert_eq!(created["spec"]["schedulingGroup"]["podGroupName"], "g");
        // immutable
        let mut changed = created.clone();
        changed["spec"]["schedulingGroup"]["podGroupName"] = json!("other");
        let err = kube
            .replace("pods", "default", changed)
            .expect_err("immutable");
        assert_eq!(err.code, 422);
    }

    #[tokio::test]
    async fn validation_errors() {
        let kube = KubeDouble::start().await.expect("start");
        for api in [PodGroupApi::V1alpha2, PodGroupApi::V1beta1] {
            kube.set_pod_group_api(Some(api));
            let cases = [
                (
                    "none",
                    json!({}),
                    Some(
                        "spec.schedulingPolicy: Invalid value: \"\": must specify one of: `basic`, `gang`",
                    ),
                ),
                (
                    "both",
                    json!({"basic": {}, "gang": {"minCount": 2}}),
                    Some("must specify exactly one of: `basic`, `gang`"),
                ),
                (
                    "zero",
                    json!({"gang": {"minCount": 0}}),
                    Some(
                        "spec.schedulingPolicy.gang.minCount: Invalid value: 0: must be greater than or equal to 1",
                    ),
                ),
                ("ok-gang", json!({"gang": {"minCount": 2}}), None),
                ("ok-basic", json!({"basic": {}}), None),
            ];
            for (name, policy, error) in cases {
                let result = kube.create("podgroups", "default", pod_group(api, name, policy));
                match error {
                    None => {
                        let pg = result.expect("valid");
                        assert_eq!(pg["apiVersion"], api.api_version());
                    }
                    Some(msg) => {
                        let err = result.expect_err(name);
                        assert_eq!(err.code, 422, "{name}");
                        assert!(err.message.contains(msg), "{name}: {}", err.message);
                    }
                }
            }
            let bad = kube.create(
                "podgroups",
                "default",
                pod_group(api, "Bad_Name", json!({"basic": {}})),
            );
            assert_eq!(bad.expect_err("name").code, 422);
            // minCount may change in v1beta1 only; the policy kind never
            let mut pg = kube.pod_group("default", "ok-gang").expect("stored");
            pg["spec"]["schedulingPolicy"]["gang"]["minCount"] = json!(3);
            let updated = kube.replace("podgroups", "default", pg);
            match api {
                PodGroupApi::V1alpha2 => {
                    let err = updated.expect_err("immutable in v1alpha2");
                    assert!(
                        err.message.contains("field is immutable"),
                        "{}",
                        err.message
                    );
                }
                PodGroupApi::V1beta1 => {
                    updated.expect("minCount mutable in v1beta1");
                }
            }
            let mut pg = kube.pod_group("default", "ok-gang").expect("stored");
            pg["spec"]["schedulingPolicy"] = json!({"basic": {}});
            let err = kube
                .replace("podgroups", "default", pg)
                .expect_err("immutable");
            assert!(
                err.message.contains("field is immutable"),
                "{}",
                err.message
            );
            for name in ["ok-gang", "ok-basic"] {
                kube.delete("podgroups", "default", name).expect("delete");
            }
        }
    }

    #[tokio::test]
    async fn pod_group_is_collected_after_its_owners_are_gone() {
        let kube = KubeDouble::start().await.expect("start");
        kube.set_pod_group_api(Some(PodGroupApi::V1alpha2));
        let mut refs = Vec::new();
        for name in ["r0", "r1"] {
            let p = kube
                .create("pods", "default", pod(name, Some("g")))
                .expect("pod");
            refs.push(json!({"apiVersion": "v1", "kind": "Pod", "name": name,
                "uid": p["metadata"]["uid"]}));
        }
        let mut pg = pod_group(PodGroupApi::V1alpha2, "g", json!({"gang": {"minCount": 2}}));
        pg["metadata"]["ownerReferences"] = json!(refs);
        kube.create("podgroups", "default", pg).expect("podgroup");
        let unowned = pod_group(PodGroupApi::V1alpha2, "unowned", json!({"basic": {}}));
        kube.create("podgroups", "default", unowned)
            .expect("podgroup");
        // one owner left: kept
        kube.delete("pods", "default", "r0").expect("delete");
        kube.wait_for(WAIT, |v| {
            v.get("pods", "default", "r0").is_none().then_some(())
        })
        .await
        .expect("r0 gone");
        assert!(kube.pod_group("default", "g").is_some());
        kube.delete("pods", "default", "r1").expect("delete");
        kube.wait_for(WAIT, |v| {
            v.get("podgroups", "default", "g").is_none().then_some(())
        })
        .await
        .expect("collected");
        assert!(kube.pod_group("default", "unowned").is_some());
    }
}
