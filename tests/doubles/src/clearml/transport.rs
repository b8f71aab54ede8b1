//! HTTP transport of the double, matching clearml-server's request handling: the path regex with an
//! optional `/vX.Y/`, any method, forced-JSON or JSON-lines bodies with the query string merged in,
//! the `meta`/`data` envelope with HTTP status = `result_code`, the order of checks (path → endpoint
//! → auth → body → handler), and the fault hooks. Runs its own hyper accept loop so that a fault
//! can close a connection without any HTTP reply.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use regex::Regex;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::Shared;
use super::auth::{self, AUTH_COOKIE};
use super::dispatch::{self, Ctx, Kind, Version};
use super::doc::{self, Doc};
use super::error::ApiError;
use super::faults::{Injected, RequestRecord};
use super::state::Identity;

static PATH_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^/?(v(\d+\.?\d+)/)?([a-zA-Z_]\w+\.[a-zA-Z_]\w+)/?$")
        .expect("the path regex is a valid constant")
});

/// `(path version, endpoint name)` of a request path, or `None` when malformed.
pub(crate) fn parse_path(path: &str) -> Option<(Option<String>, String)> {
    let caps = PATH_RE.captures(path)?;
    let version = caps.get(2).map(|m| m.as_str().to_string());
    let name = caps.get(3)?.as_str().to_string();
    Some((version, name))
}

/// Converts a query-string value like the server (`"12"`→12, `"1.5"`→1.5, `true/True/TRUE`→true).
fn convert_query_value(v: &str) -> Value {
    let without_one_dot = v.replacen('.', "", 1);
    if !without_one_dot.is_empty() && without_one_dot.chars().all(|c| c.is_ascii_digit()) {
        if v.contains('.') {
            if let Ok(f) = v.parse::<f64>() {
                return json!(f);
            }
        } else if let Ok(i) = v.parse::<i64>() {
            return json!(i);
        }
    }
    match v {
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => Value::String(v.to_string()),
    }
}

/// Merges query-string pairs into the body (dotted keys nest; repeated keys or `[]` make lists).
pub(crate) fn merge_query(body: &mut Doc, pairs: &[(String, String)]) {
    let mut order: Vec<&str> = Vec::new();
    for (k, _) in pairs {
        if !order.contains(&k.as_str()) {
            order.push(k);
        }
    }
    for key in order {
        let values: Vec<&str> = pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        let value = if values.len() > 1 || key.ends_with("[]") {
            Value::Array(values.iter().map(|v| convert_query_value(v)).collect())
        } else {
            convert_query_value(values[0])
        };
        let path = key.trim_end_matches(['[', ']']);
        doc::set_path(body, path, value);
    }
}

/// The parsed request payload.
pub(crate) enum Payload {
    /// A JSON object (possibly empty).
    Object(Doc),
    /// JSON-lines items.
    Batch(Vec<Value>),
}

fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Parses the body like the server: JSON-lines for `application/json-lines`, else forced JSON.
pub(crate) fn parse_body(
    content_type: Option<&str>,
    body: &[u8],
    query: &[(String, String)],
) -> Result<Payload, ApiError> {
    if content_type == Some("application/json-lines") {
        let text = String::from_utf8_lossy(body);
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let value: Value = serde_json::from_str(line).map_err(|e| {
                ApiError::raw(
                    400,
                    0,
                    format!("Failed to decode JSON object: {e} in batch item #{i}"),
                )
            })?;
            if !value.is_object() {
                let kind = match value {
                    Value::Array(_) => "list",
                    Value::String(_) => "str",
                    Value::Number(_) => "int",
                    Value::Bool(_) => "bool",
                    _ => "NoneType",
                };
                return Err(ApiError::raw(
                    400,
                    0,
                    format!("json lines must contain objects, found: {kind}"),
                ));
            }
            items.push(value);
        }
        return Ok(Payload::Batch(items));
    }
    let mut data = if body.is_empty() {
        Map::new()
    } else {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::raw(400, 0, format!("Failed to decode JSON object: {e}")))?;
        match value {
            v if is_falsy(&v) => Map::new(),
            Value::Object(o) => o,
            _ => return Err(ApiError::raw(500, 0, "Data should be a dict")),
        }
    };
    if !query.is_empty() {
        merge_query(&mut data, query);
    }
    Ok(Payload::Object(data))
}

/// Builds the response envelope.
fn envelope(
    call_id: &str,
    trx: &str,
    endpoint: &str,
    requested: Option<Version>,
    actual: Option<Version>,
    result: &Result<Value, ApiError>,
) -> (u16, Value) {
    // Clients of API < 2.1 expect floats; the choice depends on the requested version only.
    let legacy = requested.is_some_and(|r| r < Version { major: 2, minor: 1 });
    let render = |v: Option<Version>| match v {
        None => Value::Null,
        Some(v) if legacy => json!(v.to_string().parse::<f64>().unwrap_or_default()),
        Some(v) => json!(v.to_string()),
    };
    let (code, subcode, msg, data) = match result {
        Ok(data) => (200, 0, "OK".to_string(), data.clone()),
        Err(e) => (e.code, e.subcode, e.msg.clone(), json!({})),
    };
    let body = json!({
        "meta": {
            "id": call_id,
            "trx": trx,
            "endpoint": {
                "name": endpoint,
                "requested_version": render(requested),
                "actual_version": render(actual),
            },
            "result_code": code,
            "result_subcode": subcode,
            "result_msg": msg,
            "error_stack": null,
            "error_data": {},
        },
        "data": data,
    });
    (code, body)
}

/// Marker put on a response to make the connection close without sending it.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

/// Error returned to hyper to abort a connection.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for ConnectionDropped {}

/// Peer address of the connection, inserted by the accept loop.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

fn header_str<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == AUTH_COOKIE).then(|| v.to_string())
        })
}

fn json_response(code: u16, body: &Value, cookie: Option<String>) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::SERVER, "clearml");
    if let Some(token) = cookie {
        builder = builder.header(
            header::SET_COOKIE,
            format!(
                "{AUTH_COOKIE}={token}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
                auth::DEFAULT_EXPIRATION_SEC
            ),
        );
    }
    builder
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn plain_response(code: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::SERVER, "clearml")
        .body(Body::from(text.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Everything about a request the handler needs, extracted by axum.
struct Incoming {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    peer: Option<SocketAddr>,
}

/// Outcome of serving one request.
struct Served {
    code: u16,
    subcode: u32,
    response: Response<Body>,
}

async fn serve_call(shared: &Shared, req: &Incoming, endpoint_name: &mut String) -> Served {
    let call_id = doc::new_id();
    let trx = header_str(&req.headers, &["x-clearml-trx", "x-trains-trx"])
        .map(str::to_string)
        .unwrap_or_else(|| call_id.clone());
    let path = req.uri.path();
    let reply = |name: &str,
                 requested: Option<Version>,
                 actual: Option<Version>,
                 result: Result<Value, ApiError>,
                 cookie: Option<String>| {
        let (code, body) = envelope(&call_id, &trx, name, requested, actual, &result);
        let subcode = result.as_ref().err().map(|e| e.subcode).unwrap_or(0);
        Served {
            code,
            subcode,
            response: json_response(code, &body, cookie),
        }
    };

    let Some((path_version, name)) = parse_path(path) else {
        let err = ApiError::raw(400, 0, format!("Invalid request path {path}"));
        return reply("", Version::parse("1.0"), None, Err(err), None);
    };
    *endpoint_name = name.clone();
    let release = shared.store.lock().release.clone();
    let requested = match &path_version {
        Some(v) => match Version::parse(v) {
            Some(v) => v,
            None => {
                let err = ApiError::build(
                    400,
                    2,
                    "request path has invalid version",
                    None,
                    &[("version", v.clone())],
                );
                return reply(&name, None, None, Err(err), None);
            }
        },
        // no version in the path: the server's highest
        None => release.api,
    };
    let disabled = shared.faults.lock().is_disabled(&name);
    let endpoint = dispatch::find_on(&release, &name, requested).filter(|_| !disabled);
    let Some(endpoint) = endpoint else {
        let err = ApiError::raw(
            404,
            0,
            format!("Unable to find endpoint for name {name} and version {requested}"),
        );
        return reply(&name, Some(requested), None, Err(err), None);
    };
    let actual = Some(endpoint.version);

    let delay: Option<Duration> = shared.faults.lock().delay(&name);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let injected = shared.faults.lock().take(&name);
    let mut drop_reply = false;
    match injected {
        Injected::None => {}
        Injected::Fail(err) => return reply(&name, Some(requested), actual, Err(err), None),
        Injected::Drop => return dropped(),
        Injected::DropReply => drop_reply = true,
        Injected::Delay(d) => tokio::time::sleep(d).await,
        Injected::Raw(raw) => {
            let response = Response::builder()
                .status(StatusCode::from_u16(raw.status).unwrap_or(StatusCode::BAD_GATEWAY))
                .header(header::CONTENT_TYPE, raw.content_type)
                .body(Body::from(raw.body))
                .unwrap_or_else(|_| Response::new(Body::empty()));
            return Served {
                code: raw.status,
                subcode: 0,
                response,
            };
        }
    }

    let authorization = header_str(&req.headers, &["authorization"]);
    let cookie = cookie_token(&req.headers);
    let ip = header_str(&req.headers, &["x-forwarded-for", "x-real-ip"])
        .map(str::to_string)
        .or_else(|| req.peer.map(|p| p.ip().to_string()))
        .unwrap_or_else(|| "untrackable".to_string());
    let query: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(&req.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let content_type = header_str(&req.headers, &["content-type"]);

    let mut store = shared.store.lock();
    let authed = match endpoint.kind {
        Kind::Open(_) => None,
        Kind::Info(_) if !release.server_info_needs_auth() => None,
        _ => match auth::authenticate(&store, authorization, cookie.as_deref()) {
            Ok(a) => Some(a),
            Err(e) => return reply(&name, Some(requested), actual, Err(e), None),
        },
    };
    let payload = match parse_body(content_type, &req.body, &query) {
        Ok(p) => p,
        Err(e) => return reply(&name, Some(requested), actual, Err(e), None),
    };
    let (data, batch) = match payload {
        Payload::Object(o) => (o, None),
        Payload::Batch(items) => (Map::new(), Some(items)),
    };
    let fallback = Identity::test_user();
    let identity = authed.as_ref().map(|a| &a.identity).unwrap_or(&fallback);
    let ctx = Ctx {
        identity,
        ip: &ip,
        batch: batch.as_deref(),
    };
    let mut set_cookie = None;
    let result = match (endpoint.kind, &authed) {
        (Kind::Auth(handler) | Kind::Open(handler) | Kind::Info(handler), _) => {
            handler(&mut store, &ctx, &data)
        }
        (Kind::Login, Some(authed)) => {
            let res = auth::login(&mut store, authed, &data);
            if let Ok(v) = &res {
                set_cookie = v.get("token").and_then(Value::as_str).map(str::to_string);
            }
            res
        }
        (Kind::Logout, Some(authed)) => Ok(auth::logout(&mut store, authed)),
        (_, None) => Err(ApiError::no_credentials()),
    };
    drop(store);
    let rewrite = shared.faults.lock().rewrite(&name);
    let result = match (result, rewrite) {
        (Ok(mut data), Some(rewrite)) => {
            rewrite(&mut data);
            Ok(data)
        }
        (result, _) => result,
    };
    if let Err(e) = &result {
        tracing::debug!(endpoint = %name, code = e.code, subcode = e.subcode, msg = %e.msg, "clearml double error");
    }
    if drop_reply {
        return dropped();
    }
    reply(&name, Some(requested), actual, result, set_cookie)
}

/// A reply that closes the connection without any HTTP response.
fn dropped() -> Served {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    Served {
        code: 0,
        subcode: 0,
        response,
    }
}

/// The single axum handler: every path goes through it.
async fn handle(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<Peer>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if method == Method::OPTIONS {
        return plain_response(StatusCode::OK, "");
    }
    if let Some(encoding) = header_str(&headers, &["content-encoding"]) {
        return plain_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Content encoding is not supported ({encoding})"),
        );
    }
    let req = Incoming {
        method,
        uri,
        headers,
        body,
        peer: peer.map(|Extension(Peer(addr))| addr),
    };
    let at = chrono::Utc::now();
    let mut endpoint = String::new();
    // the capacity model: a free worker first, for the service time, then the call
    let workers = shared.capacity.lock().clone();
    let _worker = match &workers {
        Some(w) => w.serve().await,
        None => None,
    };
    let served = serve_call(&shared, &req, &mut endpoint).await;
    let path = req.uri.path().to_string();
    shared.log.lock().push(RequestRecord {
        endpoint,
        path_version: parse_path(&path).and_then(|(v, _)| v),
        path,
        method: req.method.to_string(),
        at,
        result_code: served.code,
        result_subcode: served.subcode,
    });
    served.response
}

/// The axum router of the double.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A running server; dropping it stops accepting and closes open connections.
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    join: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `127.0.0.1:0` and serves `router` with one hyper HTTP/1 connection task per client.
    pub(crate) async fn start(router: Router) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let join = tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            tracing::warn!(%error, "clearml double accept failed");
                            continue;
                        }
                    },
                    _ = stopped.changed() => break,
                };
                let router = router.clone();
                let mut conn_stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |mut req: Request<hyper::body::Incoming>| {
                            let router = router.clone();
                            async move {
                                req.extensions_mut().insert(Peer(peer));
                                let response = match router.oneshot(req).await {
                                    Ok(r) => r,
                                    Err(never) => match never {},
                                };
                                if response.extensions().get::<DropConnection>().is_some() {
                                    return Err(ConnectionDropped);
                                }
                                Ok::<_, ConnectionDropped>(response)
                            }
                        },
                    );
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        result = conn => {
                            if let Err(error) = result {
                                tracing::debug!(%error, "clearml double connection ended");
                            }
                        }
                        _ = conn_stopped.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            stop,
            join: Some(join),
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for the accept loop to end.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_like_the_server_regex() {
        assert_eq!(
            parse_path("/v2.23/tasks.get_all"),
            Some((Some("2.23".into()), "tasks.get_all".into()))
        );
        assert_eq!(
            parse_path("/auth.login/"),
            Some((None, "auth.login".into()))
        );
        assert_eq!(parse_path("/tasks"), None);
        assert_eq!(parse_path("/a/b.c"), None);
        assert_eq!(parse_path("/1x.get"), None);
    }

    #[test]
    fn query_values_convert_and_nest() {
        let mut body = Doc::new();
        let pairs = vec![
            ("expiration_sec".to_string(), "60".to_string()),
            ("ratio".to_string(), "1.5".to_string()),
            ("flag".to_string(), "True".to_string()),
            ("a.b".to_string(), "x".to_string()),
            ("ids[]".to_string(), "q1".to_string()),
            ("tag".to_string(), "t1".to_string()),
            ("tag".to_string(), "t2".to_string()),
            ("neg".to_string(), "-1".to_string()),
        ];
        merge_query(&mut body, &pairs);
        assert_eq!(
            Value::Object(body),
            json!({"expiration_sec": 60, "ratio": 1.5, "flag": true, "a": {"b": "x"},
                   "ids": ["q1"], "tag": ["t1", "t2"], "neg": "-1"})
        );
    }

    #[test]
    fn bodies_parse_like_the_server() {
        assert!(matches!(parse_body(None, b"", &[]), Ok(Payload::Object(o)) if o.is_empty()));
        assert!(matches!(parse_body(None, b"null", &[]), Ok(Payload::Object(o)) if o.is_empty()));
        let err = parse_body(None, b"[1]", &[])
            .err()
            .expect("array body fails");
        assert_eq!((err.code, err.msg.as_str()), (500, "Data should be a dict"));
        let err = parse_body(None, b"{", &[]).err().expect("bad json fails");
        assert_eq!(err.code, 400);
        let lines = b"{\"a\":1}\n{\"b\":2}\n";
        assert!(
            matches!(parse_body(Some("application/json-lines"), lines, &[]), Ok(Payload::Batch(v)) if v.len() == 2)
        );
    }
}
