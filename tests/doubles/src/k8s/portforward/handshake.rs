//! The WebSocket handshake of the container runtime's streaming server (Go's
//! `x/net/websocket` server with the `wsstream` subprotocol negotiation): which requests count
//! as upgrades, the handshake checks with their raw error answers, and the choice of
//! subprotocol (the client's first offer the server supports: `v4.channel.k8s.io`,
//! `v4.base64.channel.k8s.io`, or none; no match is `403`).

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::Response,
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// How channel frames are encoded on the selected subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Binary messages: a channel byte, then the data.
    Binary,
    /// Text messages: the channel as an ASCII digit (`'0' + channel`), then base64 data.
    Base64,
}

const BINARY_PROTOCOL: &str = "v4.channel.k8s.io";
const BASE64_PROTOCOL: &str = "v4.base64.channel.k8s.io";
/// kubectl's SPDY-over-WebSocket tunnelling subprotocols start with this.
const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `httpstream.IsUpgradeRequest`: some `Connection` header mentions `upgrade`.
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade"))
    })
}

/// `wsstream.IsWebSocketRequest`: `Upgrade: websocket` and an `upgrade` token in `Connection`.
pub(crate) fn is_websocket_request(headers: &HeaderMap) -> bool {
    header_str(headers, &header::UPGRADE).eq_ignore_ascii_case("websocket")
        && header_str(headers, &header::CONNECTION)
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The subprotocols offered, in the client's order (only the first header counts, as Go's
/// `Header.Get` reads it).
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    let raw = header_str(headers, &header::SEC_WEBSOCKET_PROTOCOL).trim();
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(',').map(|p| p.trim().to_string()).collect()
}

/// Whether the client asks for kubectl's SPDY tunnelling (which the real API server
/// intercepts before proxying to the kubelet).
pub(crate) fn offers_spdy_tunnel(headers: &HeaderMap) -> bool {
    offered_protocols(headers)
        .iter()
        .any(|p| p.starts_with(SPDY_TUNNEL_PREFIX))
}

/// A raw `x/net/websocket` refusal: status line, optional extra header, text, no type.
fn refusal(
    code: StatusCode,
    extra: Option<(header::HeaderName, &'static str)>,
    body: &'static str,
) -> Box<Response> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    if let Some((name, value)) = extra {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Box::new(resp)
}

/// The outcome of a handshake.
pub(crate) enum Handshake {
    /// The codec of the chosen subprotocol and the `101 Switching Protocols` response.
    Accepted(Codec, Response),
    /// The raw refusal to send instead.
    Refused(Response),
}

/// Validates the handshake and picks the subprotocol.
pub(crate) fn accept(method: &Method, headers: &HeaderMap) -> Handshake {
    match negotiate(method, headers) {
        Ok((codec, resp)) => Handshake::Accepted(codec, resp),
        Err(refused) => Handshake::Refused(*refused),
    }
}

fn negotiate(method: &Method, headers: &HeaderMap) -> Result<(Codec, Response), Box<Response>> {
    if *method != Method::GET {
        return Err(refusal(StatusCode::METHOD_NOT_ALLOWED, None, "bad method"));
    }
    let key = header_str(headers, &header::SEC_WEBSOCKET_KEY);
    if key.is_empty() {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            None,
            "mismatch challenge/response",
        ));
    }
    if header_str(headers, &header::SEC_WEBSOCKET_VERSION) != "13" {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            Some((header::SEC_WEBSOCKET_VERSION, "13")),
            "missing or bad WebSocket Version",
        ));
    }
    let mut offered = offered_protocols(headers);
    if offered.is_empty() {
        offered.push(String::new());
    }
    let Some((protocol, codec)) = offered.iter().find_map(|p| match p.as_str() {
        "" | BINARY_PROTOCOL => Some((p.clone(), Codec::Binary)),
        BASE64_PROTOCOL => Some((p.clone(), Codec::Base64)),
        _ => None,
    }) else {
        return Err(refusal(StatusCode::FORBIDDEN, None, ""));
    };
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| refusal(StatusCode::BAD_REQUEST, None, "mismatch challenge/response"))?;
    // The selected protocol is always echoed, even the unnamed one (an empty header).
    let protocol =
        HeaderValue::from_str(&protocol).map_err(|_| refusal(StatusCode::FORBIDDEN, None, ""))?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    Ok((codec, resp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const WS: [(&str, &str); 4] = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    fn ws_with(extra: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut all = WS.to_vec();
        all.extend_from_slice(extra);
        headers(&all)
    }

    #[test]
    fn client_order_picks_the_subprotocol() {
        let h = ws_with(&[(
            "sec-websocket-protocol",
            "v5.channel.k8s.io, v4.base64.channel.k8s.io, v4.channel.k8s.io",
        )]);
        let (codec, resp) = negotiate(&Method::GET, &h).expect("accepted");
        assert_eq!(codec, Codec::Base64);
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            resp.headers()[header::SEC_WEBSOCKET_PROTOCOL],
            "v4.base64.channel.k8s.io"
        );
        // RFC 6455's sample key.
        assert_eq!(
            resp.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn no_offer_is_the_unnamed_binary_protocol_and_unknown_offers_are_forbidden() {
        let (codec, resp) = negotiate(&Method::GET, &ws_with(&[])).expect("accepted");
        assert_eq!(codec, Codec::Binary);
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_PROTOCOL], "");
        let refused = negotiate(
            &Method::GET,
            &ws_with(&[("sec-websocket-protocol", "v5.channel.k8s.io")]),
        )
        .expect_err("v5 is not offered for port-forward");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn handshake_errors_are_x_net_websockets() {
        let post = negotiate(&Method::POST, &ws_with(&[])).expect_err("POST");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        let mut old = ws_with(&[]);
        old.insert("sec-websocket-version", HeaderValue::from_static("8"));
        let old = negotiate(&Method::GET, &old).expect_err("version 8");
        assert_eq!(old.status(), StatusCode::BAD_REQUEST);
        assert_eq!(old.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        let mut keyless = ws_with(&[]);
        keyless.remove("sec-websocket-key");
        assert_eq!(
            negotiate(&Method::GET, &keyless)
                .expect_err("no key")
                .status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade_request(&headers(&[(
            "connection",
            "keep-alive, Upgrade"
        )])));
        assert!(!is_upgrade_request(&headers(&[("connection", "close")])));
        assert!(is_websocket_request(&ws_with(&[])));
        assert!(!is_websocket_request(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1")
        ])));
        assert!(offers_spdy_tunnel(&ws_with(&[(
            "sec-websocket-protocol",
            "SPDY/3.1+portforward.k8s.io"
        )])));
    }
}
