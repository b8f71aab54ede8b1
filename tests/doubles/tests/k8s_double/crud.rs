//! CRUD through kube-rs, the wire shapes of lists/Status/discovery, dry-run, paging,
//! authentication and namespace deletion.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::common::{env, http, pod, status};

#[tokio::test]
async fn pods_and_configmaps_crud_through_kubeconfig() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings", "labels": {"app": "x"}},
        "data": {"a": "1"}
    }))
    .expect("cm literal");
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create cm");
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(meta.uid.as_ref().is_some_and(|u| u.len() == 36));
    let rv: u64 = meta
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("numeric resourceVersion");
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(
        meta.generation, None,
        "configmaps have no generation on a real server"
    );

    let fetched = cms.get("settings").await.expect("get cm");
    assert_eq!(fetched.data, created.data);

    let mut changed = fetched.clone();
    changed
        .data
        .get_or_insert_default()
        .insert("b".into(), "2".into());
    let replaced = cms
        .replace("settings", &PostParams::default(), &changed)
        .await
        .expect("replace cm");
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    assert!(rv2 > rv);
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(
        env.double
            .get("configmaps", "default", "settings")
            .expect("stored")["data"]["b"],
        json!("2")
    );

    let listed = cms
        .list(&ListParams::default().labels("app=x"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);

    let deleted = cms
        .delete("settings", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(
        deleted.is_right(),
        "configmap deletes answer with a Success Status"
    );
    assert!(
        env.double
            .get("configmaps", "default", "settings")
            .is_none()
    );

    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    let created = pods
        .create(&PostParams::default(), &pod("p1", json!({"app": "x"})))
        .await
        .expect("create pod");
    assert_eq!(created.metadata.generation, Some(1));
    let spec = created.spec.as_ref().expect("spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.service_account_name, None, "no admission plugins");
    let c = &spec.containers[0];
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let st = created.status.as_ref().expect("status");
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    // Unscheduled pods are deleted at once, as on a real server.
    let gone = pods
        .delete("p1", &DeleteParams::default())
        .await
        .expect("delete pod");
    assert!(gone.is_left(), "pod deletes answer with the object");
    assert!(env.double.get("pods", "default", "p1").is_none());
}

#[tokio::test]
async fn wire_shapes_of_lists_status_and_discovery() {
    let env = env().await;
    let (http, token) = http(&env.double);
    let url = env.double.url();
    env.double
        .create(
            "pods",
            "default",
            serde_json::to_value(pod("p1", json!({}))).expect("pod json"),
        )
        .expect("create");
    let list: Value = http
        .get(format!("{url}/api/v1/namespaces/default/pods"))
        .header("Authorization", &token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list json");
    assert_eq!(list["kind"], json!("PodList"));
    assert_eq!(list["apiVersion"], json!("v1"));
    assert_eq!(
        list["metadata"]["resourceVersion"],
        json!(env.double.resource_version().to_string())
    );
    // Like the real server, typed list items carry no kind/apiVersion of their own.
    assert_eq!(list["items"][0]["metadata"]["name"], json!("p1"));
    assert!(list["items"][0].get("kind").is_none());
    assert!(list["items"][0].get("apiVersion").is_none());

    let resp = http
        .post(format!("{url}/api/v1/namespaces/default/pods"))
        .header("Authorization", &token)
        .json(&pod("p1", json!({})))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 409);
    let body: Value = resp.json().await.expect("status json");
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"p1\" already exists", "reason": "AlreadyExists",
               "details": {"name": "p1", "kind": "pods"}, "code": 409})
    );

    let get = |path: &'static str| {
        let req = http
            .get(format!("{url}{path}"))
            .header("Authorization", &token);
        async move {
            let resp = req.send().await.expect("discovery request");
            assert_eq!(resp.status().as_u16(), 200, "{path}");
            resp.json::<Value>().await.expect("discovery json")
        }
    };
    assert!(
        get("/version").await["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.33."))
    );
    assert_eq!(get("/api").await["versions"], json!(["v1"]));
    let core = get("/api/v1").await;
    let pods = core["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "pods"))
        .cloned()
        .expect("pods listed");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["namespaced"], json!(true));
    assert!(
        core["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "pods/log"))
    );
    let groups = get("/apis").await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["name"].as_str()).collect())
        .unwrap_or_default();
    for g in ["apps", "rbac.authorization.k8s.io", "coordination.k8s.io"] {
        assert!(names.contains(&g), "{g} in {names:?}");
    }
    let apps = get("/apis/apps/v1").await;
    assert_eq!(apps["resources"][0]["shortNames"], json!(["deploy"]));
    let root = get("/openapi/v3").await;
    assert!(root["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
}

#[tokio::test]
async fn dry_run_all_writes_nothing() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let before = env.double.resource_version();
    let out = pods
        .create(&dry, &pod("dry", json!({})))
        .await
        .expect("dry create");
    assert_eq!(out.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert!(env.double.get("pods", "default", "dry").is_none());

    pods.create(&PostParams::default(), &pod("real", json!({"a": "1"})))
        .await
        .expect("create");
    let rv = env.double.resource_version();
    let patch = json!({"metadata": {"labels": {"a": "2"}}});
    let patched = pods
        .patch(
            "real",
            &PatchParams::default().dry_run(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("dry patch");
    assert_eq!(
        patched.metadata.labels.and_then(|l| l.get("a").cloned()),
        Some("2".to_string())
    );
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    pods.delete("real", &dp).await.expect("dry delete");
    assert_eq!(env.double.resource_version(), rv, "dry runs commit nothing");
    assert_eq!(
        env.double
            .get("pods", "default", "real")
            .expect("still there")["metadata"]["labels"]["a"],
        json!("1")
    );
    assert!(before < rv);
}

#[tokio::test]
async fn paging_with_continue_and_expired_token() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    for i in 0..5 {
        env.double
            .create(
                "configmaps",
                "default",
                json!({"metadata": {"name": format!("cm-{i}"), "labels": {"paged": "yes"}}}),
            )
            .expect("create");
    }
    let lp = ListParams::default().labels("paged=yes").limit(2);
    let first = cms.list(&lp).await.expect("page 1");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = cms
        .list(&lp.clone().continue_token(&token))
        .await
        .expect("page 2");
    let names: Vec<String> = second
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, vec!["cm-2", "cm-3"]);
    let unfiltered = cms
        .list(&ListParams::default().limit(1))
        .await
        .expect("unfiltered page");
    assert_eq!(
        unfiltered.metadata.remaining_item_count,
        Some(5),
        "kube-root-ca.crt plus five, minus the one returned"
    );
    env.double
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "later"}}),
        )
        .expect("create");
    env.double.compact_history();
    let err = cms
        .list(&lp.continue_token(&token))
        .await
        .expect_err("expired token");
    let s = status(err);
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn authentication() {
    let env = env().await;
    let url = env.double.url();
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{url}/api/v1/namespaces/default/pods"))
        .header("Authorization", "Bearer wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["reason"], json!("Unauthorized"));
    // Plain http without credentials is served, like the real insecure port (client-go never
    // sends tokens over http).
    let resp = http
        .get(format!("{url}/api/v1/namespaces/default/pods"))
        .send()
        .await
        .expect("anonymous request");
    assert_eq!(resp.status().as_u16(), 200);

    let strict = clearml_doubles::k8s::KubeDouble::start_with(clearml_doubles::k8s::Config {
        allow_anonymous: false,
        ..Default::default()
    })
    .await
    .expect("strict double");
    let resp = http
        .get(format!("{}/api/v1/namespaces/default/pods", strict.url()))
        .send()
        .await
        .expect("anonymous request");
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["message"],
        json!(
            "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        )
    );
    let resp = http
        .get(format!("{}/version", strict.url()))
        .send()
        .await
        .expect("version");
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn namespace_deletion_empties_it_first() {
    let env = env().await;
    let nss: Api<Namespace> = Api::all(env.client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns literal");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    assert!(
        env.double
            .get("serviceaccounts", "team", "default")
            .is_some(),
        "the service account controller populates new namespaces"
    );
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "team");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("cm literal");
    cms.create(&PostParams::default(), &cm).await.expect("cm");
    env.double.hold_deletions(true).await;
    let answer = nss
        .delete("team", &DeleteParams::default())
        .await
        .expect("delete ns");
    let marked = answer
        .left()
        .expect("namespace is returned while terminating");
    assert_eq!(
        marked.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let err = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"}})).expect("cm"),
        )
        .await
        .expect_err("terminating namespace");
    assert_eq!(status(err).code, 403);
    env.double.hold_deletions(false).await;
    env.double
        .wait_for(Duration::from_secs(5), |s| {
            (s.get("namespaces", "", "team").is_none()
                && s.list("configmaps", Some("team")).is_empty())
            .then_some(())
        })
        .await
        .expect("namespace and content gone");
    let err = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect_err("gone");
    let s = status(err);
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "namespaces \"team\" not found")
    );
}
