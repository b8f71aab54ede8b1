//! Strategic merge, JSON, merge and server-side apply patches through kube-rs.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::common::{env, status};

fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "main", "image": "nginx:1.27",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                    }],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            }
        }
    }))
    .expect("deployment literal")
}

fn pod_spec(d: &Deployment) -> Value {
    serde_json::to_value(d).expect("json")["spec"]["template"]["spec"].clone()
}

#[tokio::test]
async fn strategic_merge_uses_real_merge_keys() {
    let env = env().await;
    let deploys: Api<Deployment> = Api::default_namespaced(env.client.clone());
    let created = deploys
        .create(&PostParams::default(), &deployment())
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.as_ref().and_then(|s| s.replicas), Some(1));

    let patch = json!({"spec": {"template": {"spec": {
        "containers": [{
            "name": "main",
            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}, {"name": "A", "$patch": "delete"}],
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"mountPath": "/data", "readOnly": true}, {"name": "cache", "mountPath": "/cache"}]
        }, {"name": "sidecar", "image": "busybox:1.36"}],
        "volumes": [{"name": "cache", "emptyDir": {}}]
    }}}});
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("strategic patch");
    let spec = pod_spec(&patched);
    let main = &spec["containers"][0];
    assert_eq!(main["image"], json!("nginx:1.27"), "untouched fields stay");
    assert_eq!(
        main["env"],
        json!([{"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(
        main["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        main["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data", "readOnly": true},
               {"name": "cache", "mountPath": "/cache"}])
    );
    assert_eq!(spec["containers"][1]["name"], json!("sidecar"));
    assert_eq!(
        spec["volumes"],
        json!([{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}])
    );
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );

    let remove = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"}],
        "volumes": [{"$patch": "replace"}, {"name": "data", "emptyDir": {}}]
    }}}});
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&remove))
        .await
        .expect_err("volume cache is still mounted");
    assert_eq!(status(patched).code, 422);
    let remove = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"},
                       {"name": "main", "volumeMounts": [{"mountPath": "/cache", "$patch": "delete"}]}],
        "volumes": [{"$patch": "replace"}, {"name": "data", "emptyDir": {}}]
    }}}});
    let patched = deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&remove))
        .await
        .expect("delete directives");
    let spec = pod_spec(&patched);
    assert_eq!(spec["containers"].as_array().map(Vec::len), Some(1));
    assert_eq!(spec["volumes"], json!([{"name": "data", "emptyDir": {}}]));
}

#[tokio::test]
async fn json_and_merge_patches() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}}),
    )
    .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");

    let merged = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"data": {"x": null, "z": "3"}, "metadata": {"labels": {"b": "2"}}}),
            ),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        serde_json::to_value(&merged.data).expect("json"),
        json!({"y": "2", "z": "3"})
    );
    assert_eq!(merged.metadata.labels.map(|l| l.len()), Some(2));

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/y", "value": "2"},
        {"op": "replace", "path": "/data/y", "value": "22"},
        {"op": "remove", "path": "/metadata/labels/a"}
    ]))
    .expect("ops");
    let patched = cms
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .expect("json patch");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("y"))
            .map(String::as_str),
        Some("22")
    );
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/y", "value": "nope"}]))
            .expect("ops");
    let s = status(
        cms.patch("c", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await
            .expect_err("failed test op"),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let s = status(
        cms.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .expect_err("missing"),
    );
    assert_eq!(s.code, 404);
}

#[tokio::test]
async fn server_side_apply_creates_reapplies_and_tracks_owners() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let config = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied", "labels": {"owner": "agent", "extra": "yes"}},
        "data": {"a": "1", "b": "2"}
    });
    let pp = PatchParams::apply("agent");
    let created = cms
        .patch("applied", &pp, &Patch::Apply(&config))
        .await
        .expect("apply creates");
    let managed = created
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields");
    assert_eq!(managed[0].manager.as_deref(), Some("agent"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    let rv = created.metadata.resource_version.clone();
    let again = cms
        .patch("applied", &pp, &Patch::Apply(&config))
        .await
        .expect("no-op reapply");
    assert_eq!(
        again.metadata.resource_version, rv,
        "a no-op apply writes nothing"
    );

    let slimmer = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied", "labels": {"owner": "agent"}},
        "data": {"a": "10"}
    });
    let reapplied = cms
        .patch("applied", &pp, &Patch::Apply(&slimmer))
        .await
        .expect("reapply");
    assert_eq!(
        serde_json::to_value(&reapplied.data).expect("json"),
        json!({"a": "10"}),
        "fields the manager stopped applying are removed"
    );
    assert_eq!(reapplied.metadata.labels.as_ref().map(|l| l.len()), Some(1));

    let rival = json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "applied"}, "data": {"a": "other"}});
    let s = status(
        cms.patch(
            "applied",
            &PatchParams::apply("rival"),
            &Patch::Apply(&rival),
        )
        .await
        .expect_err("conflict"),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("conflict with \"agent\""),
        "{}",
        s.message
    );
    let forced = cms
        .patch(
            "applied",
            &PatchParams::apply("rival").force(),
            &Patch::Apply(&rival),
        )
        .await
        .expect("forced apply");
    assert_eq!(
        forced
            .data
            .as_ref()
            .and_then(|d| d.get("a"))
            .map(String::as_str),
        Some("other")
    );
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let resp = reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/namespaces/default/configmaps/from-yaml?fieldManager=yaml",
            env.double.url()
        ))
        .bearer_auth(env.double.token().expect("token"))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(yaml)
        .send()
        .await
        .expect("yaml apply");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        env.double
            .get("configmaps", "default", "from-yaml")
            .expect("created")["data"],
        json!({"k": "v"})
    );
}

/// Like the real server, an apply patch without `metadata.name` updates the object named in the
/// URL when it exists (kube-lease-manager renews leases this way), but cannot create one.
#[tokio::test]
async fn apply_without_a_name_updates_an_existing_object_only() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let pp = PatchParams::apply("renewer");
    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}});
    let err = cms
        .patch("absent", &pp, &Patch::Apply(&nameless))
        .await
        .expect_err("no name, no object: refused");
    assert_eq!(status(err).code, 400);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "present"}})).expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let updated = cms
        .patch("present", &pp, &Patch::Apply(&nameless))
        .await
        .expect("apply to the object in the URL");
    assert_eq!(
        updated.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("v")
    );
}
