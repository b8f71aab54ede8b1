//! The error paths: Status reasons, codes, messages and causes as the real server returns them.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::common::{env, pod, status};

fn causes(s: &kube::core::Status) -> Vec<(String, String)> {
    s.details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.reason.clone(), c.field.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_json(spec: Value, name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod literal")
}

#[tokio::test]
async fn already_exists_not_found_and_stale_conflict() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})).expect("cm");
    let first = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let s = status(
        cms.create(&PostParams::default(), &cm)
            .await
            .expect_err("dup"),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "configmaps \"c\" already exists");

    let s = status(cms.get("missing").await.expect_err("missing"));
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"missing\" not found");
    let details = s.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("missing", "configmaps")
    );

    // Another writer moves the object on; replacing from the stale copy conflicts.
    let mut newer = first.clone();
    newer.data = Some([("k".to_string(), "w".to_string())].into());
    cms.replace("c", &PostParams::default(), &newer)
        .await
        .expect("first replace");
    let s = status(
        cms.replace("c", &PostParams::default(), &first)
            .await
            .expect_err("stale"),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let other_ns: Api<ConfigMap> = Api::namespaced(env.client.clone(), "nowhere");
    let s = status(
        other_ns
            .create(&PostParams::default(), &cm)
            .await
            .expect_err("no namespace"),
    );
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn invalid_pods_get_422_with_field_causes() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    let pp = PostParams::default();

    let s = status(
        pods.create(&pp, &pod_json(json!({"containers": []}), "empty"))
            .await
            .expect_err("no containers"),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        causes(&s),
        vec![("FieldValueRequired".into(), "spec.containers".into())]
    );
    assert_eq!(
        s.message,
        "Pod \"empty\" is invalid: spec.containers: Required value"
    );

    let s = status(
        pods.create(
            &pp,
            &pod_json(
                json!({"containers": [{"name": "main", "image": ""}]}),
                "noimage",
            ),
        )
        .await
        .expect_err("empty image"),
    );
    assert_eq!(
        causes(&s),
        vec![(
            "FieldValueRequired".into(),
            "spec.containers[0].image".into()
        )]
    );

    let s = status(
        pods.create(
            &pp,
            &pod_json(
                json!({"containers": [{"name": "main", "image": "i"}]}),
                "Bad_Name",
            ),
        )
        .await
        .expect_err("bad name"),
    );
    assert_eq!(
        causes(&s),
        vec![("FieldValueInvalid".into(), "metadata.name".into())]
    );
    assert!(
        s.message.contains("a lowercase RFC 1123 subdomain"),
        "{}",
        s.message
    );

    // An unparsable quantity fails decoding on a real server: 400, not 422.
    let s = status(
        pods.create(
            &pp,
            &pod_json(
                json!({"containers": [{"name": "main", "image": "i",
                        "resources": {"limits": {"memory": "12 GiB"}}}]}),
                "quantity",
            ),
        )
        .await
        .expect_err("bad quantity"),
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        s.message,
        "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );

    let s = status(
        pods.create(
            &pp,
            &pod_json(
                json!({"containers": [{"name": "main", "image": "i",
                        "resources": {"limits": {"memory": "-1"}, "requests": {"cpu": "2"}}}],
                       "restartPolicy": "Sometimes"}),
                "negative",
            ),
        )
        .await
        .expect_err("negative quantity"),
    );
    assert_eq!(
        causes(&s),
        vec![
            (
                "FieldValueInvalid".into(),
                "spec.containers[0].resources.limits[memory]".into()
            ),
            // Requests are defaulted from limits before validation, as on a real server.
            (
                "FieldValueInvalid".into(),
                "spec.containers[0].resources.requests[memory]".into()
            ),
            ("FieldValueNotSupported".into(), "spec.restartPolicy".into()),
        ]
    );
    assert!(env.double.list("pods", Some("default")).is_empty());
}

#[tokio::test]
async fn request_errors_are_400_and_pod_specs_are_immutable() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .expect("create");

    let s = status(
        pods.list(&ListParams::default().labels("app in web"))
            .await
            .expect_err("bad selector"),
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    let s = status(
        pods.list(&ListParams::default().fields("spec.foo=bar"))
            .await
            .expect_err("unsupported field"),
    );
    assert_eq!(s.code, 400);
    assert!(
        s.message.ends_with("field label not supported: spec.foo"),
        "{}",
        s.message
    );

    let mut unknown = serde_json::to_value(pod("u", json!({}))).expect("json");
    unknown["spec"]["bogus"] = json!(true);
    let http = reqwest::Client::new();
    let resp = http
        .post(format!(
            "{}/api/v1/namespaces/default/pods?fieldValidation=Strict",
            env.double.url()
        ))
        .bearer_auth(env.double.token().expect("token"))
        .json(&unknown)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["message"],
        json!("strict decoding error: unknown field \"spec.bogus\"")
    );
    // Without Strict the unknown field is dropped, as the real server prunes it.
    let relaxed: Pod = serde_json::from_value(unknown).expect("pod");
    pods.create(&PostParams::default(), &relaxed)
        .await
        .expect("lenient create");

    let s = status(
        pods.patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restartPolicy": "Never"}})),
        )
        .await
        .expect_err("immutable spec"),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        causes(&s),
        vec![("FieldValueForbidden".into(), "spec".into())]
    );
    let ok = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}),
            ),
        )
        .await
        .expect("image updates are allowed");
    assert_eq!(ok.metadata.generation, Some(2));

    let s = status(
        pods.patch(
            "p",
            &PatchParams::default(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})),
        )
        .await
        .expect_err("apply without fieldManager"),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
}
