//! ClearML REST client: the only module that speaks HTTP to the ClearML API server.
//!
//! Every call is `POST {api}/v2.23/{service}.{action}` with a JSON body and a Bearer token from
//! `auth.login` (Basic). A 401 triggers one re-login and a retry; transport errors, 5xx, 429 and
//! 503 are retried with capped exponential backoff and jitter. Replies are unwrapped from the
//! `{meta, data}` envelope; an error reply becomes [`Error::Api`] with its code and subcode.
//! Credentials never appear in `Debug` output or errors. After every login the client reads
//! `server.info` and keeps the server's version and the [`TakeProtocol`] it calls for. The batch
//! endpoints (`tasks.enqueue_many`, `tasks.update_batch`) are in `batch.rs`.

mod batch;
mod endpoints;
mod resolve;
mod server;
mod wire;

use std::{fmt, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::RwLock;

pub use batch::{MESSAGE_CHUNK, MOVE_CHUNK, Moved, Refused};
pub use resolve::{Served, create_queue, resolve_queues};
pub use server::{
    MIN_SERVER_VERSION, MOVE_SERVER_VERSION, ServerInfo, TakeProtocol, TooOld, take_protocol,
};
pub use wire::{QueueDoc, QueueEntry, TaskContainer, TaskDoc};

/// Default [`ClientOptions::max_reply_bytes`]: far above any reply the agent asks for (a page
/// of task documents with only the fields it reads).
pub const DEFAULT_MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// The API version pinned in request paths (the Python SDK's; every endpoint used exists there).
pub const API_VERSION: &str = "2.23";

/// ClearML subcodes the agent reacts to.
pub mod subcode {
    /// 400/701: unknown queue.
    pub const INVALID_QUEUE_ID: u32 = 701;
    /// 400/703: task not in that queue.
    pub const TASK_NOT_QUEUED: u32 = 703;
    /// 400/706: task already in that queue.
    pub const TASK_ALREADY_QUEUED: u32 = 706;
    /// 400/801: name already used.
    pub const NOT_UNIQUE: u32 = 801;
    /// 400/110: illegal status change.
    pub const INVALID_TASK_STATUS: u32 = 110;
    /// 400/101: unknown task.
    pub const INVALID_TASK_ID: u32 = 101;
}

/// A failed ClearML call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No HTTP reply (connection refused or dropped, timeout, TLS).
    #[error("ClearML {endpoint}: {detail}")]
    Transport {
        /// `service.action`.
        endpoint: &'static str,
        /// The transport error, without URLs' credentials.
        detail: String,
    },
    /// The server answered with an error envelope.
    #[error("ClearML {endpoint} returned {code}/{subcode}: {message}")]
    Api {
        /// `service.action`.
        endpoint: &'static str,
        /// HTTP status / `meta.result_code`.
        code: u16,
        /// `meta.result_subcode`.
        subcode: u32,
        /// `meta.result_msg`.
        message: String,
    },
    /// The reply was not the envelope or data shape expected.
    #[error("ClearML {endpoint}: unexpected reply: {detail}")]
    Decode {
        /// `service.action`.
        endpoint: &'static str,
        /// What did not fit.
        detail: String,
    },
}

/// Result of a ClearML call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Worth retrying: no reply, a 5xx, or 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { code, .. } => *code >= 500 || *code == 429,
            Error::Decode { .. } => false,
        }
    }

    /// An API error with this HTTP code and subcode.
    pub fn is_api(&self, want_code: u16, want_subcode: u32) -> bool {
        matches!(self, Error::Api { code, subcode, .. } if *code == want_code && *subcode == want_subcode)
    }

    /// The server refused `tasks.enqueue` of a task already queued (400/110 "Task already in
    /// requested status"): what a server before 1.17.0 answers a move without `force`.
    pub fn is_same_status_refusal(&self) -> bool {
        matches!(self, Error::Api { code: 400, subcode: subcode::INVALID_TASK_STATUS, message, .. }
            if message.contains("already in requested status"))
    }
}

/// An access key and secret; `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credentials {
    /// The access key (not secret on its own, but kept out of logs all the same).
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Client tuning.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per call for retryable failures (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubles per attempt up to `max_backoff`, with ±50% jitter.
    pub initial_backoff: Duration,
    /// Cap of the backoff.
    pub max_backoff: Duration,
    /// Verify the server's TLS certificate (default true).
    pub verify_tls: bool,
    /// Largest reply body read; a bigger one is refused as unreadable (a proxy or server gone
    /// wrong must not make the agent buffer without bound).
    pub max_reply_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            verify_tls: true,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// A pooled ClearML client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    token: RwLock<Option<String>>,
    options: ClientOptions,
    observer: Option<Arc<dyn CallObserver>>,
    /// Problems with documents already logged at `warn` (later repeats go to `debug`).
    reported: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// What `server.info` said after the last login, and the take protocol it calls for.
    server: parking_lot::RwLock<ServerState>,
}

/// The server as the client knows it.
#[derive(Debug, Clone, Default)]
struct ServerState {
    /// The last `server.info` read (none before the first login).
    info: Option<ServerInfo>,
    /// The server refused a move while reporting this version: it is taken in two steps until it
    /// reports another one (a server whose version says 1.17 or later but that does not move).
    move_refused_at: Option<String>,
    /// The server answered `tasks.enqueue_many` as unknown while reporting this version: tasks
    /// are moved one `tasks.enqueue` each until it reports another one.
    no_enqueue_many_at: Option<String>,
}

/// What the client knows of the server, for `status` and start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// What `server.info` reported.
    pub info: ServerInfo,
    /// The take protocol in use.
    pub protocol: TakeProtocol,
}

/// Receives the outcome of every HTTP attempt (for metrics and the degraded flag).
pub trait CallObserver: Send + Sync {
    /// One attempt of `endpoint` took `elapsed`; `ok` is false for transport errors, 5xx/429
    /// and replies that could not be read.
    fn observe(&self, endpoint: &'static str, elapsed: Duration, ok: bool);
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the API server at `base` (e.g. `https://api.clear.ml`).
    pub fn new(
        base: &str,
        credentials: Credentials,
        options: ClientOptions,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .danger_accept_invalid_certs(!options.verify_tls)
            .user_agent(concat!("clearml-k8s-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport {
                endpoint: "client",
                detail: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: base.trim_end_matches('/').to_string(),
                credentials,
                token: RwLock::new(None),
                options,
                observer,
                reported: Default::default(),
                server: Default::default(),
            }),
        })
    }

    /// The API server URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Calls `endpoint` with `body`, retrying as the module docs say, and decodes `data`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &Value,
    ) -> Result<T> {
        let data = self.call_value(endpoint, body).await?;
        serde_json::from_value(data).map_err(|e| Error::Decode {
            endpoint,
            detail: e.to_string(),
        })
    }

    /// Like [`Client::call`], returning `data` as JSON.
    pub async fn call_value(&self, endpoint: &'static str, body: &Value) -> Result<Value> {
        self.call_with(endpoint, Payload::Json(body), self.inner.options.attempts)
            .await
    }

    /// One attempt (plus a re-login on 401): for calls that must not be re-sent blindly after a
    /// lost reply, because the server may already have acted.
    pub async fn call_once(&self, endpoint: &'static str, body: &Value) -> Result<Value> {
        self.call_with(endpoint, Payload::Json(body), 1).await
    }

    async fn call_with(
        &self,
        endpoint: &'static str,
        body: Payload<'_>,
        attempts: u32,
    ) -> Result<Value> {
        let opts = &self.inner.options;
        let mut relogged = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(endpoint, body).await {
                Err(Error::Api { code: 401, .. }) if !relogged => {
                    relogged = true;
                    *self.inner.token.write().await = None;
                    attempt -= 1;
                }
                Err(e) if e.is_retryable() && attempt < attempts => {
                    let delay = backoff(opts, attempt);
                    tracing::debug!(endpoint, attempt, error = %e, ?delay, "retrying ClearML call");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    async fn token(&self) -> Result<String> {
        if let Some(t) = self.inner.token.read().await.as_ref() {
            return Ok(t.clone());
        }
        let token = {
            let mut slot = self.inner.token.write().await;
            if let Some(t) = slot.as_ref() {
                return Ok(t.clone());
            }
            self.log_in(&mut slot).await?
        };
        // every login reads the server's version again (it may have been upgraded meanwhile); a
        // failed read keeps what was known
        if let Err(error) = self.read_server(&token).await {
            tracing::warn!(%error, "cannot read the ClearML server's version; keeping what was known");
        }
        Ok(token)
    }

    async fn log_in(&self, slot: &mut Option<String>) -> Result<String> {
        let c = &self.inner.credentials;
        let req = self
            .inner
            .http
            .post(format!("{}/auth.login", self.inner.base))
            .basic_auth(&c.access_key, Some(&c.secret_key));
        let data = self.send("auth.login", req).await?;
        let token = data
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Decode {
                endpoint: "auth.login",
                detail: "no data.token".into(),
            })?
            .to_string();
        *slot = Some(token.clone());
        Ok(token)
    }

    /// Reads `server.info` with `token` and records the server's version and take protocol.
    async fn read_server(&self, token: &str) -> Result<ServerInfo> {
        let req = self
            .inner
            .http
            .post(format!("{}/v{API_VERSION}/server.info", self.inner.base))
            .bearer_auth(token)
            .json(&serde_json::json!({}));
        let info = ServerInfo::from_data(&self.send("server.info", req).await?);
        let before = self.inner.server.read().info.clone();
        if before.as_ref() != Some(&info) {
            match take_protocol(&info) {
                Ok(protocol) => tracing::info!(
                    server = %info.describe(),
                    protocol = protocol.name(),
                    "ClearML server version read"
                ),
                Err(error) => tracing::error!(%error, "ClearML server version read"),
            }
        }
        self.inner.server.write().info = Some(info.clone());
        Ok(info)
    }

    /// What the client knows of the server (none before the first login).
    pub fn server(&self) -> Option<ServerFacts> {
        let state = self.inner.server.read();
        let info = state.info.clone()?;
        Some(ServerFacts {
            protocol: protocol_of(&state, &info),
            info,
        })
    }

    /// The take protocol for the server as last read: [`TakeProtocol::EnqueueThenRemove`] when
    /// the version is unknown, too old, or the server refused a move.
    pub fn take_protocol(&self) -> TakeProtocol {
        let state = self.inner.server.read();
        match &state.info {
            Some(info) => protocol_of(&state, info),
            None => TakeProtocol::EnqueueThenRemove,
        }
    }

    /// The server refused a move ([`Error::is_same_status_refusal`]) although its version says it
    /// moves: tasks are taken in two steps until it reports another version.
    pub fn note_move_refused(&self) {
        let mut state = self.inner.server.write();
        let version = state.info.as_ref().map(|i| i.version.clone());
        if state.move_refused_at != version {
            tracing::warn!(
                server = %state.info.as_ref().map(ServerInfo::describe).unwrap_or_default(),
                "the ClearML server refused to move a queued task (a server before 1.17.0 does); taking tasks in two steps from now on"
            );
            state.move_refused_at = version;
        }
    }

    async fn attempt(&self, endpoint: &'static str, body: Payload<'_>) -> Result<Value> {
        let token = self.token().await?;
        let req = self
            .inner
            .http
            .post(format!("{}/v{API_VERSION}/{endpoint}", self.inner.base))
            .bearer_auth(token);
        let req = match body {
            Payload::Json(body) => req.json(body),
            Payload::Lines(lines) => req
                .header("Content-Type", "application/json-lines")
                .body(lines.to_string()),
        };
        self.send(endpoint, req).await
    }

    /// Whether tasks are moved with `tasks.enqueue_many` (unless the server answered it as unknown
    /// at the version it reports now).
    pub fn moves_in_batches(&self) -> bool {
        let state = self.inner.server.read();
        let version = state
            .info
            .as_ref()
            .map(|i| i.version.as_str())
            .unwrap_or_default();
        state.no_enqueue_many_at.as_deref() != Some(version)
    }

    /// The server answered `tasks.enqueue_many` as unknown (404): tasks are moved one
    /// `tasks.enqueue` each until it reports another version.
    pub fn note_no_enqueue_many(&self) {
        let mut state = self.inner.server.write();
        let version = state
            .info
            .as_ref()
            .map(|i| i.version.clone())
            .unwrap_or_default();
        if state.no_enqueue_many_at.as_ref() != Some(&version) {
            tracing::warn!(
                server = %state.info.as_ref().map(ServerInfo::describe).unwrap_or_default(),
                "the ClearML server does not know tasks.enqueue_many; moving tasks one tasks.enqueue each"
            );
            state.no_enqueue_many_at = Some(version);
        }
    }

    /// Sends one request and unwraps the envelope.
    pub(super) async fn send(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Value> {
        let started = std::time::Instant::now();
        let result = self.send_inner(endpoint, req).await;
        if let Some(obs) = &self.inner.observer {
            let ok =
                !matches!(&result, Err(e) if e.is_retryable() || matches!(e, Error::Decode { .. }));
            obs.observe(endpoint, started.elapsed(), ok);
        }
        result
    }

    async fn send_inner(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Value> {
        let transport = |e: reqwest::Error| Error::Transport {
            endpoint,
            detail: e.without_url().to_string(),
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let limit = self.inner.options.max_reply_bytes;
        let too_big = |size: String| Error::Decode {
            endpoint,
            detail: format!("reply of {size} bytes is over the {limit}-byte limit"),
        };
        if let Some(size) = resp.content_length()
            && size > limit as u64
        {
            return Err(too_big(size.to_string()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(too_big("more than that".into()));
            }
            body.extend_from_slice(&chunk);
        }
        wire::unwrap_envelope(endpoint, status, &body)
    }

    /// Logs a problem with a server document: at `warn` the first time, at `debug` after, so a
    /// document that stays broken does not flood the log every tick.
    fn report(&self, endpoint: &'static str, problem: &str) {
        let mut reported = self.inner.reported.lock();
        if reported.len() > 10_000 {
            reported.clear();
        }
        if reported.insert(problem.to_string()) {
            tracing::warn!(endpoint, %problem, "unreadable part of a ClearML reply");
        } else {
            tracing::debug!(endpoint, %problem, "unreadable part of a ClearML reply");
        }
    }

    /// `queues.get_all`, reporting the queues and entries left out.
    pub(super) async fn get_queues(&self, body: &Value) -> Result<Vec<QueueDoc>> {
        const ENDPOINT: &str = "queues.get_all";
        let data = self.call_value(ENDPOINT, body).await?;
        let mut problems = Vec::new();
        let queues = wire::decode_queues(ENDPOINT, data, &mut problems)?;
        for problem in &problems {
            self.report(ENDPOINT, problem);
        }
        Ok(queues)
    }

    /// Logs in now and reads the server's version (to fail fast on bad credentials at start-up;
    /// [`Client::server`] is known after it succeeds).
    pub async fn login(&self) -> Result<()> {
        *self.inner.token.write().await = None;
        let token = self.token().await?;
        if self.inner.server.read().info.is_none() {
            self.read_server(&token).await?;
        }
        Ok(())
    }

    /// Expires the cached token so the next call logs in again.
    pub async fn forget_token(&self) {
        *self.inner.token.write().await = None;
    }
}

/// A request body: one JSON object, or JSON lines (`application/json-lines`, one object a line,
/// as the server reads `tasks.update_batch` and `events.add_batch`).
#[derive(Clone, Copy)]
enum Payload<'a> {
    Json(&'a Value),
    Lines(&'a str),
}

/// The protocol for `info`, unless the server refused a move at this version.
fn protocol_of(state: &ServerState, info: &ServerInfo) -> TakeProtocol {
    match take_protocol(info) {
        Ok(TakeProtocol::Move) if state.move_refused_at.as_ref() != Some(&info.version) => {
            TakeProtocol::Move
        }
        _ => TakeProtocol::EnqueueThenRemove,
    }
}

fn backoff(opts: &ClientOptions, attempt: u32) -> Duration {
    let exp = opts
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(opts.max_backoff);
    let jitter = 0.5 + rand::random::<f64>();
    exp.mul_f64(jitter).min(opts.max_backoff)
}

/// Fuzzing entry (`crate::fuzzing::clearml_reply`): a reply body through the envelope and the
/// document decoders exactly as the client reads it. Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn decode_reply_for_fuzzing(status: u16, body: &[u8]) {
    let Ok(data) = wire::unwrap_envelope("tasks.get_all", status, body) else {
        return;
    };
    if let Ok(tasks) = wire::decode_tasks("tasks.get_all", data.clone(), true) {
        for t in tasks {
            assert!(
                t.unreadable.is_some() || t.status.is_some(),
                "a task without a readable status is reported unreadable"
            );
        }
    }
    let _ = wire::decode_queues("queues.get_all", data, &mut Vec::new());
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Serves each connection the next canned HTTP reply (login first), returns the base URL.
    async fn canned(replies: Vec<Vec<u8>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for reply in replies {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(&reply).await;
                let _ = sock.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    fn reply(headers: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n{headers}\r\n").into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn login() -> Vec<u8> {
        let body = br#"{"meta":{"result_code":200},"data":{"token":"t"}}"#;
        reply(&format!("Content-Length: {}\r\n", body.len()), body)
    }

    /// What the client reads after logging in.
    fn server_info() -> Vec<u8> {
        let body =
            br#"{"meta":{"result_code":200},"data":{"version":"1.16.2","api_version":"2.30"}}"#;
        reply(&format!("Content-Length: {}\r\n", body.len()), body)
    }

    /// The protocol follows the version, unless the server refused a move at that version.
    #[test]
    fn a_refused_move_falls_back_until_the_version_changes() {
        let info = |v: &str| ServerInfo {
            version: v.into(),
            ..ServerInfo::default()
        };
        let refused = |v: Option<&str>| ServerState {
            info: None,
            move_refused_at: v.map(str::to_string),
            no_enqueue_many_at: None,
        };
        use TakeProtocol::{EnqueueThenRemove as Two, Move};
        for (name, state, server, want) in [
            ("new server", refused(None), "1.17.0", Move),
            ("old server", refused(None), "1.16.2", Two),
            (
                "refused at this version",
                refused(Some("3.20.0")),
                "3.20.0",
                Two,
            ),
            ("upgraded since", refused(Some("3.20.0")), "3.22.3", Move),
            ("too old", refused(None), "1.0.2", Two),
        ] {
            assert_eq!(protocol_of(&state, &info(server)), want, "{name}");
        }
    }

    fn chunked(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in body.chunks(1000) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        reply("Transfer-Encoding: chunked\r\n", &out)
    }

    /// Replies over the cap are refused whether their size is announced or only streamed; a
    /// reply under it is read.
    #[tokio::test]
    async fn reply_size_cap() {
        let envelope = |pad: usize| {
            format!(
                r#"{{"meta":{{"result_code":200}},"data":{{"num":3,"pad":"{}"}}}}"#,
                "x".repeat(pad)
            )
            .into_bytes()
        };
        let big = envelope(10_000);
        let small = envelope(10);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "announced",
                reply(&format!("Content-Length: {}\r\n", big.len()), &big),
                false,
            ),
            ("streamed", chunked(&big), false),
            ("small streamed", chunked(&small), true),
        ];
        for (name, canned_reply, ok) in cases {
            let base = canned(vec![login(), server_info(), canned_reply]).await;
            let client = Client::new(
                &base,
                Credentials {
                    access_key: "k".into(),
                    secret_key: "s".into(),
                },
                ClientOptions {
                    attempts: 1,
                    max_reply_bytes: 4096,
                    ..ClientOptions::default()
                },
                None,
            )
            .expect("client");
            let got = client.queue_length("q").await;
            let server = client.server().expect("read after the login");
            assert_eq!(server.info.version, "1.16.2", "{name}");
            assert_eq!(server.protocol, TakeProtocol::EnqueueThenRemove, "{name}");
            match (ok, got) {
                (true, Ok(n)) => assert_eq!(n, 3, "{name}"),
                (false, Err(e @ Error::Decode { .. })) => {
                    assert!(
                        e.to_string().contains("over the 4096-byte limit"),
                        "{name}: {e}"
                    )
                }
                (_, got) => panic!("{name}: {got:?}"),
            }
        }
    }
}
