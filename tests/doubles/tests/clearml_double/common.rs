//! Shared helpers of the ClearML double tests: a small reqwest client returning `(status, envelope)`,
//! login, and assertion helpers for error envelopes.

use base64::Engine;
use clearml_doubles::clearml::ClearmlDouble;
use serde_json::{Value, json};

/// How a request authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// A minimal client: `(http status, envelope)` for one call.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(double: &ClearmlDouble) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: double.url(),
        }
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &Auth,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, Value, reqwest::header::HeaderMap), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        req = match auth {
            Auth::None => req,
            Auth::Basic(k, s) => req.basic_auth(k, Some(s)),
            Auth::Bearer(t) => req.bearer_auth(t),
        };
        if let Some((content_type, bytes)) = body {
            req = req.header("Content-Type", content_type).body(bytes);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value, headers))
    }

    pub async fn call(&self, path: &str, auth: &Auth, body: Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(&body).expect("serialisable body");
        let (status, value, _) = self
            .raw(
                reqwest::Method::POST,
                path,
                auth,
                Some(("application/json", bytes)),
            )
            .await
            .expect("request reaches the double");
        (status, value)
    }

    pub async fn login(&self, key: &str, secret: &str) -> String {
        let (status, env) = self
            .call(
                "/auth.login",
                &Auth::Basic(key.into(), secret.into()),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "login failed: {env}");
        env["data"]["token"]
            .as_str()
            .expect("token in login reply")
            .to_string()
    }
}

/// A started double, a client and a Bearer token for the default user.
pub async fn setup() -> (ClearmlDouble, Api, Auth) {
    let double = ClearmlDouble::start().await.expect("double starts");
    let api = Api::new(&double);
    let (key, secret) = double.credentials();
    let token = api.login(&key, &secret).await;
    (double, api, Auth::Bearer(token))
}

/// `(result_code, result_subcode)` of an envelope.
pub fn code(env: &Value) -> (u64, u64) {
    (
        env["meta"]["result_code"].as_u64().unwrap_or_default(),
        env["meta"]["result_subcode"].as_u64().unwrap_or_default(),
    )
}

/// Asserts an error envelope: HTTP status, result code/subcode, empty data.
pub fn assert_error(status: u16, env: &Value, want_code: u16, want_sub: u64) {
    assert_eq!(status, want_code, "unexpected status for {env}");
    assert_eq!(
        code(env),
        (u64::from(want_code), want_sub),
        "envelope: {env}"
    );
    assert_eq!(env["data"], json!({}), "error data must be empty: {env}");
}

/// The (unverified) claims of a JWT, as the SDK reads them.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("jwt has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("payload is base64url");
    serde_json::from_slice(&bytes).expect("payload is JSON")
}

/// Whether a value is a 32-character lowercase hex id.
pub fn is_hex32(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 32
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}

/// `tasks.create` of a training task; returns its id.
pub async fn create_task(api: &Api, auth: &Auth, name: &str) -> String {
    let (status, env) = api
        .call(
            "/tasks.create",
            auth,
            json!({"name": name, "type": "training"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    env["data"]["id"].as_str().expect("task id").to_string()
}

/// `queues.create` with `body`; returns the queue id.
pub async fn create_queue(api: &Api, auth: &Auth, body: Value) -> String {
    let (status, env) = api.call("/queues.create", auth, body).await;
    assert_eq!(status, 200, "{env}");
    env["data"]["id"].as_str().expect("queue id").to_string()
}

/// `tasks.get_by_id`; returns the task object.
pub async fn get_task(api: &Api, auth: &Auth, id: &str) -> Value {
    let (status, env) = api
        .call("/tasks.get_by_id", auth, json!({"task": id}))
        .await;
    assert_eq!(status, 200, "{env}");
    env["data"]["task"].clone()
}
