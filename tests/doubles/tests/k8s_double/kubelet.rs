//! The scheduler/kubelet stand-in: status shapes, graceful deletion, logs; plus fault
//! injection and the request log.

use std::time::Duration;

use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use clearml_doubles::k8s::{Fault, RequestMatch};

use super::common::{env, job_pod, pod, status};

fn container_status(p: &Pod) -> Value {
    serde_json::to_value(p).expect("json")["status"]["containerStatuses"][0].clone()
}

fn condition(p: &Pod, ty: &str) -> Value {
    let v = serde_json::to_value(p).expect("json");
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn kubelet_helpers_write_real_status_shapes() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    let mut never = pod("job", json!({}));
    never.spec.as_mut().expect("spec").restart_policy = Some("Never".into());
    pods.create(&PostParams::default(), &never)
        .await
        .expect("create");
    pods.create(&PostParams::default(), &pod("svc", json!({})))
        .await
        .expect("create");

    env.double
        .set_pod_unschedulable(
            "default",
            "job",
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        )
        .expect("unschedulable");
    let p = pods.get("job").await.expect("get");
    let c = condition(&p, "PodScheduled");
    assert_eq!(
        (c["status"].clone(), c["reason"].clone()),
        (json!("False"), json!("Unschedulable"))
    );
    assert_eq!(
        c["message"],
        json!("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    );
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );

    for (reason, message) in [
        ("ErrImagePull", "failed to pull and unpack image"),
        (
            "ImagePullBackOff",
            "Back-off pulling image \"busybox:1.36\"",
        ),
        ("CreateContainerConfigError", "secret \"creds\" not found"),
    ] {
        env.double
            .set_pod_waiting("default", "job", reason, message)
            .expect("waiting");
        let p = pods.get("job").await.expect("get");
        let cs = container_status(&p);
        assert_eq!(cs["state"]["waiting"]["reason"], json!(reason));
        assert_eq!(cs["state"]["waiting"]["message"], json!(message));
        assert_eq!(cs["ready"], json!(false));
        assert_eq!(
            condition(&p, "Ready")["reason"],
            json!("ContainersNotReady")
        );
    }

    env.double
        .set_pod_running("default", "job")
        .expect("running");
    let p = pods.get("job").await.expect("get");
    assert_eq!(
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("kube-double-node")
    );
    let cs = container_status(&p);
    assert!(cs["state"]["running"]["startedAt"].is_string());
    assert_eq!(cs["image"], json!("docker.io/library/busybox:1.36"));
    assert!(
        cs["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://"))
    );
    assert_eq!(condition(&p, "Ready")["status"], json!("True"));
    assert!(p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some());

    env.double
        .set_pod_failed("default", "job", 3, "Error")
        .expect("failed");
    let p = pods.get("job").await.expect("get");
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    let cs = container_status(&p);
    assert_eq!(cs["state"]["terminated"]["exitCode"], json!(3));
    assert_eq!(cs["state"]["terminated"]["reason"], json!("Error"));
    assert_eq!(condition(&p, "Ready")["reason"], json!("PodFailed"));

    env.double
        .set_pod_oom_killed("default", "svc")
        .expect("oom");
    let p = pods.get("svc").await.expect("get");
    let cs = container_status(&p);
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(cs["lastState"]["terminated"]["reason"], json!("OOMKilled"));
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], json!(137));
    assert_eq!(cs["state"]["waiting"]["reason"], json!("CrashLoopBackOff"));
    assert_eq!(cs["restartCount"], json!(1));

    let mut oom = pod("oom", json!({}));
    oom.spec.as_mut().expect("spec").restart_policy = Some("Never".into());
    pods.create(&PostParams::default(), &oom)
        .await
        .expect("create");
    env.double
        .set_pod_oom_killed("default", "oom")
        .expect("oom");
    let p = pods.get("oom").await.expect("get");
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    assert_eq!(
        container_status(&p)["state"]["terminated"]["reason"],
        json!("OOMKilled")
    );

    env.double.set_pod_succeeded("default", "oom").expect("ok");
    let p = pods.get("oom").await.expect("get");
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    assert_eq!(condition(&p, "Ready")["reason"], json!("PodCompleted"));
}

#[tokio::test]
async fn graceful_pod_deletion_and_finalizers() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    pods.create(&PostParams::default(), &pod("p", json!({})))
        .await
        .expect("create");
    env.double.set_pod_running("default", "p").expect("running");
    env.double.hold_deletions(true).await;
    let answer = pods
        .delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = answer.left().expect("graceful delete returns the pod");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    assert_eq!(marked.metadata.generation, Some(2));
    assert!(
        env.double.get("pods", "default", "p").is_some(),
        "held by the kubelet"
    );
    assert_eq!(env.double.held_deletions(), 1);
    env.double.hold_deletions(false).await;
    assert!(env.double.get("pods", "default", "p").is_none());

    // Default behaviour: the kubelet confirms shortly after, asynchronously.
    pods.create(&PostParams::default(), &pod("q", json!({})))
        .await
        .expect("create");
    env.double.set_pod_running("default", "q").expect("running");
    pods.delete("q", &DeleteParams::default())
        .await
        .expect("delete");
    env.double
        .wait_for(Duration::from_secs(5), |s| {
            s.get("pods", "default", "q").is_none().then_some(())
        })
        .await
        .expect("kubelet removes the pod");

    // gracePeriodSeconds=0 removes at once.
    pods.create(&PostParams::default(), &pod("r", json!({})))
        .await
        .expect("create");
    env.double.set_pod_running("default", "r").expect("running");
    pods.delete("r", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    assert!(env.double.get("pods", "default", "r").is_none());

    // Finalizers keep the object until removed.
    let mut fin = pod("f", json!({}));
    fin.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    pods.create(&PostParams::default(), &fin)
        .await
        .expect("create");
    pods.delete("f", &DeleteParams::default())
        .await
        .expect("delete");
    let stuck = pods.get("f").await.expect("still there");
    assert!(stuck.metadata.deletion_timestamp.is_some());
    pods.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    assert_eq!(status(pods.get("f").await.expect_err("gone")).code, 404);
}

#[tokio::test]
async fn pod_logs_and_follow() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    pods.create(&PostParams::default(), &job_pod("p", json!({})))
        .await
        .expect("create");
    let s = status(
        pods.logs("p", &LogParams::default())
            .await
            .expect_err("not started"),
    );
    assert_eq!(s.code, 400);
    assert_eq!(
        s.message,
        "container \"main\" in pod \"p\" is waiting to start: ContainerCreating"
    );
    env.double.set_pod_running("default", "p").expect("running");
    env.double
        .set_pod_log("default", "p", None, "line 1\nline 2\nline 3\n")
        .expect("log");
    let text = pods.logs("p", &LogParams::default()).await.expect("logs");
    assert_eq!(text, "line 1\nline 2\nline 3\n");
    let tail = pods
        .logs(
            "p",
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("tail");
    assert_eq!(tail, "line 3\n");

    let mut lines = pods
        .log_stream(
            "p",
            &LogParams {
                follow: true,
                tail_lines: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("follow")
        .lines();
    env.double
        .append_pod_log("default", "p", None, "line 4\n")
        .expect("append");
    let next = tokio::time::timeout(Duration::from_secs(5), lines.try_next())
        .await
        .expect("line in time")
        .expect("read ok");
    assert_eq!(next.as_deref(), Some("line 4"));
    env.double.set_pod_succeeded("default", "p").expect("done");
    let end = tokio::time::timeout(Duration::from_secs(5), lines.try_next())
        .await
        .expect("stream ends in time")
        .expect("read ok");
    assert_eq!(end, None, "follow ends when the container terminates");
}

#[tokio::test]
async fn faults_and_request_log() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    env.double.clear_requests();
    env.double.inject(
        RequestMatch::any().verb("list").resource("pods"),
        Fault::Status(500),
        1,
    );
    let s = status(
        pods.list(&ListParams::default())
            .await
            .expect_err("injected 500"),
    );
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    pods.list(&ListParams::default())
        .await
        .expect("second list works");

    env.double.inject(
        RequestMatch::any().verb("create"),
        Fault::TooManyRequests {
            retry_after_seconds: 7,
        },
        1,
    );
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/namespaces/default/pods",
            env.double.url()
        ))
        .bearer_auth(env.double.token().expect("token"))
        .json(&pod("x", json!({})))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );

    env.double.inject(
        RequestMatch::any().verb("get").resource("pods").name("x"),
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    pods.create(&PostParams::default(), &pod("x", json!({})))
        .await
        .expect("create");
    let started = std::time::Instant::now();
    pods.get("x").await.expect("delayed get");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let log = env.double.requests();
    let verbs: Vec<(String, String, u16)> = log
        .iter()
        .map(|r| (r.verb.clone(), r.resource.clone(), r.status))
        .collect();
    assert_eq!(
        verbs,
        [
            ("list".to_string(), "pods".to_string(), 500),
            ("list".into(), "pods".into(), 200),
            ("create".into(), "pods".into(), 429),
            ("create".into(), "pods".into(), 201),
            ("get".into(), "pods".into(), 200),
        ]
    );
    assert!(log.iter().all(|r| r.namespace == "default"));
    assert_eq!(env.double.count_requests("create", "pods"), 2);
}
