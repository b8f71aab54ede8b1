//! The errors of a real cluster's layers (API server `Status`, the kubelet's plain text, the
//! runtime's error channel), injected faults, and kubectl's SPDY attempts.

use std::sync::atomic::Ordering;

use kube::api::PostParams;
use tokio::time::timeout;

use clearml_doubles::k8s::{Fault, RequestMatch};

use super::{
    super::common::{env, job_pod, pod, status},
    DEADLINE, Echo, PORT, forward, pods, read_to_end, refused_port, round_trip, running_pod,
};

#[tokio::test]
async fn refused_target_is_reported_on_the_error_channel() {
    let env = env().await;
    running_pod(&env, "agent").await;
    env.double
        .set_port_forward_target("default", "agent", PORT, refused_port());
    let (mut pf, mut streams) = forward(&env, "agent", &[PORT]).await;
    let error = pf.take_error(PORT).expect("error future");
    let message = timeout(DEADLINE, error)
        .await
        .expect("error in time")
        .expect("an error message");
    assert!(
        message.starts_with("error forwarding port 9090 to pod ")
            && message.contains(
                ", uid : failed to execute portforward in network namespace \"/var/run/netns/cni-"
            )
            && message.contains("failed to connect to localhost:9090 inside namespace ")
            && message.contains("IPv4: dial tcp4 127.0.0.1:9090: connect: connection refused"),
        "{message}"
    );
    assert!(read_to_end(&mut streams[0]).await.is_empty());
    // kube-rs's forwarder ends once the client lets go of its streams too (its result is
    // kube-rs's business: it answers the server's close with a close tungstenite refuses).
    drop(streams);
    timeout(DEADLINE, pf.join())
        .await
        .expect("forwarder ends in time")
        .ok();
}

#[tokio::test]
async fn pods_that_cannot_be_forwarded_get_the_real_errors() {
    let env = env().await;
    let pods = pods(&env);
    let err = |r: Result<kube::api::Portforwarder, kube::Error>| match r {
        Ok(_) => panic!("port-forward should fail"),
        Err(e) => status(e),
    };

    let s = err(pods.portforward("missing", &[PORT]).await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "pods \"missing\" not found");

    // Not scheduled: the API server has no node to proxy to.
    pods.create(
        &PostParams::default(),
        &pod("unbound", serde_json::json!({})),
    )
    .await
    .expect("pod");
    let s = err(pods.portforward("unbound", &[PORT]).await);
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert_eq!(s.message, "pod unbound does not have a host assigned");

    // Finished: the kubelet finds no running sandbox (its plain-text answer is proxied).
    pods.create(
        &PostParams::default(),
        &job_pod("job", serde_json::json!({})),
    )
    .await
    .expect("pod");
    env.double
        .set_pod_succeeded("default", "job")
        .expect("done");
    let s = err(pods.portforward("job", &[PORT]).await);
    assert_eq!(s.code, 500);
    assert_eq!(s.message, "pod not found (\"job_default\")");

    // Scheduled but its container is not running: the sandbox exists, nothing listens.
    pods.create(
        &PostParams::default(),
        &pod("pulling", serde_json::json!({})),
    )
    .await
    .expect("pod");
    env.double
        .set_pod_waiting(
            "default",
            "pulling",
            "ImagePullBackOff",
            "Back-off pulling image",
        )
        .expect("waiting");
    let echo = Echo::start(b"").await;
    env.double
        .set_port_forward_target("default", "pulling", PORT, echo.addr);
    let (mut pf, mut streams) = forward(&env, "pulling", &[PORT]).await;
    let message = timeout(DEADLINE, pf.take_error(PORT).expect("error future"))
        .await
        .expect("error in time")
        .expect("an error message");
    assert!(message.contains("connect: connection refused"), "{message}");
    assert!(read_to_end(&mut streams[0]).await.is_empty());
    // Once the container runs, the same mapping serves; the target saw only that connection.
    env.double
        .set_pod_running("default", "pulling")
        .expect("running");
    let (_pf, mut streams) = forward(&env, "pulling", &[PORT]).await;
    round_trip(&mut streams[0], b"up").await;
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn injected_faults_apply_before_the_upgrade() {
    let env = env().await;
    running_pod(&env, "agent").await;
    let mut echo = Echo::start(b"").await;
    env.double
        .set_port_forward_target("default", "agent", PORT, echo.addr);
    env.double.inject(
        RequestMatch::any().resource("pods/portforward"),
        Fault::Status(500),
        1,
    );
    let s = match pods(&env).portforward("agent", &[PORT]).await {
        Ok(_) => panic!("the fault applies"),
        Err(e) => status(e),
    };
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    let (_pf, mut streams) = forward(&env, "agent", &[PORT]).await;
    round_trip(&mut streams[0], b"after the fault").await;
    drop(streams);
    assert_eq!(echo.next_close().await, 15);
}

/// `kubectl port-forward` (v1.31+) speaks SPDY: tunnelled in a WebSocket
/// (`SPDY/3.1+portforward.k8s.io`), then, as its fallback, a plain SPDY upgrade. The double
/// implements neither, so this checks that kubectl gets there (its pod checks pass) and that
/// both attempts are refused with the explicit limitation rather than a confusing failure.
#[tokio::test]
async fn kubectl_port_forward_is_refused_explicitly_as_spdy_is_not_served() {
    let env = env().await;
    running_pod(&env, "agent").await;
    let echo = Echo::start(b"").await;
    env.double
        .set_port_forward_target("default", "agent", PORT, echo.addr);
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let (code, _, stderr) = super::super::kubectl::run(
        &home,
        &env.kubeconfig,
        &["port-forward", "pod/agent", ":9090"],
    )
    .await;
    eprintln!(
        "SKIPPED: kubectl port-forward through the double (SPDY is not implemented; kube-rs's \
         WebSocket port-forward is covered by the other tests). kubectl said: {}",
        stderr.trim()
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "SPDY and SPDY-over-WebSocket tunnelling (kubectl port-forward) are not implemented"
        ),
        "{stderr}"
    );
    let attempts: Vec<(String, u16)> = env
        .double
        .requests()
        .into_iter()
        .filter(|r| r.subresource == "portforward")
        .map(|r| (r.verb, r.status))
        .collect();
    assert_eq!(
        attempts,
        [("get".to_string(), 501), ("create".to_string(), 501)],
        "the WebSocket tunnel, then the SPDY fallback"
    );
}
