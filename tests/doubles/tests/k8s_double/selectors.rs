//! Label and field selectors on lists, through kube-rs.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::common::{env, job_pod};

async fn names(api: &Api<Pod>, lp: ListParams) -> Vec<String> {
    let mut names: Vec<String> = api
        .list(&lp)
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn label_and_field_selectors() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    for (name, labels) in [
        ("web-1", json!({"app": "web", "tier": "front"})),
        ("web-2", json!({"app": "web"})),
        ("db-1", json!({"app": "db", "tier": "back"})),
        ("bare", json!({})),
    ] {
        pods.create(&PostParams::default(), &job_pod(name, labels))
            .await
            .expect("create");
    }
    env.double
        .set_pod_running("default", "web-1")
        .expect("running");
    env.double
        .set_pod_succeeded("default", "db-1")
        .expect("succeeded");

    let l = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&pods, l("app=web")).await, ["web-1", "web-2"]);
    assert_eq!(names(&pods, l("app==db")).await, ["db-1"]);
    assert_eq!(names(&pods, l("app!=web")).await, ["bare", "db-1"]);
    assert_eq!(
        names(&pods, l("app in (db, web)")).await,
        ["db-1", "web-1", "web-2"]
    );
    assert_eq!(names(&pods, l("app notin (web)")).await, ["bare", "db-1"]);
    assert_eq!(names(&pods, l("tier")).await, ["db-1", "web-1"]);
    assert_eq!(names(&pods, l("!tier")).await, ["bare", "web-2"]);
    assert_eq!(names(&pods, l("app=web,!tier")).await, ["web-2"]);

    let f = |s: &str| ListParams::default().fields(s);
    assert_eq!(names(&pods, f("metadata.name=web-2")).await, ["web-2"]);
    assert_eq!(names(&pods, f("status.phase=Running")).await, ["web-1"]);
    assert_eq!(
        names(&pods, f("status.phase!=Pending")).await,
        ["db-1", "web-1"]
    );
    assert_eq!(
        names(&pods, f("spec.nodeName=kube-double-node")).await,
        ["db-1", "web-1"]
    );
    assert_eq!(names(&pods, f("spec.nodeName=")).await, ["bare", "web-2"]);
    assert_eq!(
        names(&pods, l("app=web").fields("status.phase=Pending")).await,
        ["web-2"]
    );
    let all: Api<Pod> = Api::all(env.client.clone());
    assert_eq!(
        names(&all, f("metadata.namespace=default,metadata.name=bare")).await,
        ["bare"]
    );
}
