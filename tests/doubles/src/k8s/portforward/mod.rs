//! `pods/{name}/portforward`: the double plays the API server, the kubelet and the container
//! runtime's streaming server, and tunnels each requested port to a real socket on this
//! machine (the pod's port as mapped by `KubeDouble::set_port_forward_target`, else
//! `127.0.0.1:<port>`).
//!
//! The checks run in the order a real cluster applies them, each layer answering as it does:
//! the API server (`dryRun`, the `ports` decode, the pod, its node, the upgrade requirement:
//! `Status` JSON), the kubelet (`port` required and non-zero: `400` text; no pod sandbox:
//! `500` text `pod not found`), the streaming server's WebSocket handshake ([`handshake`]),
//! then the `v4.channel.k8s.io` channels ([`tunnel`]).
//!
//! Only WebSocket clients are served (kube-rs, client-go's WebSocket executor). SPDY and the
//! SPDY-over-WebSocket tunnelling that `kubectl port-forward` speaks are not implemented; such
//! requests get an explicit `501` naming the limitation.

mod handshake;
mod tunnel;

use std::sync::Arc;

use axum::{
    http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_tungstenite::{WebSocketStream, tungstenite::protocol::Role};

use super::{deletion::pods_id, kubelet::hex64, state::Shared, status::ApiError};

/// The parts of a `pods/{name}/portforward` request the emulation reads.
pub(crate) struct PortForwardRequest<'a> {
    pub shared: &'a Arc<Shared>,
    pub namespace: &'a str,
    pub name: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// Query parameters in order (`ports` may repeat).
    pub query: &'a [(String, String)],
    /// Holds hyper's `OnUpgrade` for the connection.
    pub extensions: &'a Extensions,
}

/// Answers a port-forward request: an error response, or `101 Switching Protocols` with the
/// tunnel started on the upgraded connection.
pub(crate) fn serve(req: &PortForwardRequest<'_>) -> Result<Response, ApiError> {
    // API server: the connect handler, then `PortForwardLocation`, then the upgrade-aware proxy.
    if *req.method != Method::GET && *req.method != Method::POST {
        return Err(ApiError::method_not_allowed(
            req.method.as_str(),
            "portforward",
        ));
    }
    if req.query.iter().any(|(k, _)| k == "dryRun") {
        return Err(ApiError::bad_request("dryRun is not supported"));
    }
    let ports = parse_ports(req.query).map_err(ApiError::bad_request)?;
    let pod = req.shared.get(pods_id(), req.namespace, req.name)?;
    if str_at(&pod, "/spec/nodeName").is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            req.name
        )));
    }
    if !handshake::is_upgrade_request(req.headers) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    // The kubelet (its answers reach the client verbatim through the API server's proxy).
    if !handshake::is_websocket_request(req.headers) || handshake::offers_spdy_tunnel(req.headers) {
        return Ok(plain_text(
            StatusCode::NOT_IMPLEMENTED,
            "the Kubernetes API server double serves pods/portforward over WebSocket \
             (v4.channel.k8s.io) only; SPDY and SPDY-over-WebSocket tunnelling \
             (kubectl port-forward) are not implemented",
        ));
    }
    if ports.is_empty() {
        return Ok(plain_text(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required",
        ));
    }
    if ports.contains(&0) {
        return Ok(plain_text(
            StatusCode::BAD_REQUEST,
            "port \"0\" must be > 0",
        ));
    }
    if !sandbox_ready(&pod) {
        let full_name = format!("{}_{}", req.name, req.namespace);
        return Ok(plain_text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("pod not found ({full_name:?})"),
        ));
    }
    // The container runtime's streaming server.
    let (codec, response) = match handshake::accept(req.method, req.headers) {
        handshake::Handshake::Accepted(codec, response) => (codec, response),
        handshake::Handshake::Refused(refusal) => return Ok(refusal),
    };
    let Some(on_upgrade) = req.extensions.get::<OnUpgrade>().cloned() else {
        return Err(ApiError::internal("the connection cannot be upgraded"));
    };
    let uid = str_at(&pod, "/metadata/uid").to_string();
    let plan = tunnel::Plan {
        shared: req.shared.clone(),
        namespace: req.namespace.to_string(),
        pod: req.name.to_string(),
        sandbox: hex64(&format!("sandbox/{uid}")),
        netns: netns_path(&uid),
        uid,
        ports,
        codec,
    };
    req.shared.rt.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                tunnel::run(ws, plan).await;
            }
            Err(error) => tracing::debug!(%error, "port-forward upgrade did not complete"),
        }
    });
    Ok(response)
}

/// The API server's decode of `ports` (repeatable, comma-separated, 16-bit).
fn parse_ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (_, value) in query.iter().filter(|(k, _)| k == "ports") {
        for p in value.split(',') {
            let port = p.parse::<u16>().map_err(|e| {
                let why = match e.kind() {
                    std::num::IntErrorKind::PosOverflow => "value out of range",
                    _ => "invalid syntax",
                };
                format!("cannot convert to []int32: strconv.ParseUint: parsing {p:?}: {why}")
            })?;
            ports.push(port);
        }
    }
    Ok(ports)
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The kubelet finds the pod among the runtime's running pods: its sandbox is up (the kubelet
/// reported `PodReadyToStartContainers`) and the pod has not finished.
fn sandbox_ready(pod: &Value) -> bool {
    let phase = str_at(pod, "/status/phase");
    let sandbox = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                str_at(c, "/type") == "PodReadyToStartContainers" && str_at(c, "/status") == "True"
            })
        });
    sandbox && phase != "Succeeded" && phase != "Failed"
}

/// Whether some container of the pod runs (something can listen in its network namespace).
pub(crate) fn has_running_container(pod: &Value) -> bool {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c.pointer("/state/running").is_some()))
}

/// The CNI network namespace path containerd reports for the pod's sandbox.
fn netns_path(uid: &str) -> String {
    let h = hex64(&format!("netns/{uid}"));
    format!(
        "/var/run/netns/cni-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A Go `net/http` error body: plain text, content type sniffed as `text/plain`.
fn plain_text(code: StatusCode, body: &str) -> Response {
    let mut resp = (code, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ports_decode_like_the_api_server() {
        assert_eq!(
            parse_ports(&query(&[("ports", "80,9090"), ("ports", "7")])),
            Ok(vec![80, 9090, 7])
        );
        assert_eq!(parse_ports(&query(&[])), Ok(vec![]));
        assert_eq!(
            parse_ports(&query(&[("ports", "x")])),
            Err(
                "cannot convert to []int32: strconv.ParseUint: parsing \"x\": invalid syntax"
                    .into()
            )
        );
        assert_eq!(
            parse_ports(&query(&[("ports", "70000")])),
            Err(
                "cannot convert to []int32: strconv.ParseUint: parsing \"70000\": value out of range"
                    .into()
            )
        );
        assert!(parse_ports(&query(&[("ports", "")])).is_err());
    }

    #[test]
    fn sandbox_follows_the_kubelet_conditions_and_phase() {
        let pod = |phase: &str, ready: &str| {
            json!({"status": {"phase": phase, "conditions": [
                {"type": "PodReadyToStartContainers", "status": ready}]}})
        };
        assert!(sandbox_ready(&pod("Pending", "True")));
        assert!(sandbox_ready(&pod("Running", "True")));
        assert!(!sandbox_ready(&pod("Pending", "False")));
        assert!(!sandbox_ready(&pod("Succeeded", "True")));
        assert!(!sandbox_ready(&pod("Failed", "True")));
        assert!(!sandbox_ready(&json!({"status": {"phase": "Pending"}})));
    }
}
