//! The wire protocol as raw clients see it: the order of the API server's and the kubelet's
//! checks, and the base64 channel subprotocol driven by a plain WebSocket client.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use futures::{SinkExt as _, StreamExt as _};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use super::{
    super::common::{env, http},
    DEADLINE, Echo, PORT, running_pod,
};

#[tokio::test]
async fn request_checks_follow_the_api_server_then_the_kubelet() {
    let env = env().await;
    running_pod(&env, "agent").await;
    let (client, token) = http(&env.double);
    let url = |query: &str| {
        format!(
            "{}/api/v1/namespaces/default/pods/agent/portforward{query}",
            env.double.url()
        )
    };
    let ws_headers = |req: reqwest::RequestBuilder| {
        req.header("authorization", &token)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };

    let resp = client
        .get(url("?ports=9090"))
        .header("authorization", &token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("Status");
    assert_eq!(body["message"], "Upgrade request required");

    let resp = ws_headers(client.get(url("?ports=http")))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("Status");
    assert_eq!(
        body["message"],
        "cannot convert to []int32: strconv.ParseUint: parsing \"http\": invalid syntax"
    );

    let resp = ws_headers(client.get(url(""))).send().await.expect("send");
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.expect("text"),
        "query parameter \"port\" is required"
    );

    let resp = ws_headers(client.get(url("?ports=9090")))
        .header("sec-websocket-protocol", "v5.channel.k8s.io")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 403, "v5 is not a port-forward subprotocol");

    let resp = ws_headers(client.put(url("?ports=9090")))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405);

    // kubectl's SPDY transports are a documented gap of the double, answered explicitly.
    let resp = client
        .post(url("?ports=9090"))
        .header("authorization", &token)
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "portforward.k8s.io")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 501);
    assert_eq!(env.double.count_requests("create", "pods/portforward"), 1);
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let msg = timeout(DEADLINE, ws.next())
        .await
        .expect("frame in time")
        .expect("open")
        .expect("frame");
    match msg {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// A plain WebSocket client on `v4.base64.channel.k8s.io`: text frames, the channel as an ASCII
/// digit, base64 data.
#[tokio::test]
async fn base64_channels_carry_the_port_frames_and_the_data() {
    let env = env().await;
    running_pod(&env, "agent").await;
    let mut echo = Echo::start(b"").await;
    env.double
        .set_port_forward_target("default", "agent", PORT, echo.addr);
    let url = format!(
        "{}/api/v1/namespaces/default/pods/agent/portforward?ports={PORT}",
        env.double.url().replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().expect("request");
    let token = format!("Bearer {}", env.double.token().expect("token"));
    request
        .headers_mut()
        .insert("authorization", token.parse().expect("header value"));
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v4.base64.channel.k8s.io".parse().expect("header value"),
    );
    let (mut ws, resp) = timeout(DEADLINE, tokio_tungstenite::connect_async(request))
        .await
        .expect("connects in time")
        .expect("upgrade");
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v4.base64.channel.k8s.io"
    );
    let port = STANDARD.encode(PORT.to_le_bytes());
    assert_eq!(next_text(&mut ws).await, format!("0{port}"));
    assert_eq!(next_text(&mut ws).await, format!("1{port}"));
    ws.send(Message::text(format!(
        "0{}",
        STANDARD.encode(b"over base64")
    )))
    .await
    .expect("send");
    let reply = next_text(&mut ws).await;
    let data = reply.strip_prefix('0').expect("the data channel");
    assert_eq!(STANDARD.decode(data).expect("base64"), b"over base64");
    ws.close(None).await.expect("close");
    assert_eq!(echo.next_close().await, 11);
}
