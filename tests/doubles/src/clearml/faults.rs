//! Test controls that the real server does not have: injected failures (5xx envelopes, delays,
//! connections closed without a reply, endpoints switched off, raw non-envelope replies such as a
//! proxy's HTML page or an endless body, rewritten reply data), token expiry/revocation on
//! demand, and the request log tests use to count calls per endpoint.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Shared;
use super::error::ApiError;

/// Endpoint name that matches every endpoint in fault rules.
pub const ANY_ENDPOINT: &str = "*";

/// What the transport must do with a call, decided before the handler runs.
#[derive(Debug, Clone)]
pub(crate) enum Injected {
    /// Serve normally.
    None,
    /// Reply with this error envelope.
    Fail(ApiError),
    /// Close the connection without any HTTP reply.
    Drop,
    /// Serve the call (its effects happen), then close the connection without the reply.
    DropReply,
    /// Wait, then serve normally.
    Delay(Duration),
    /// Reply with these bytes instead of an envelope; the handler does not run.
    Raw(RawReply),
}

/// A reply that is not the server's envelope: what a proxy or a broken server sends.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: bytes::Bytes,
}

impl RawReply {
    /// A proxy's HTML error page with this status (e.g. 502, or 200 from a captive portal).
    pub fn html(status: u16) -> Self {
        Self {
            status,
            content_type: "text/html".into(),
            body: bytes::Bytes::from(format!(
                "<html><head><title>{status}</title></head><body><h1>{status} Bad Gateway</h1><hr><center>nginx</center></body></html>"
            )),
        }
    }

    /// A 200 JSON reply of `size` bytes (a valid envelope whose data is padded), to test caps.
    pub fn huge(size: usize) -> Self {
        let head = r#"{"meta":{"result_code":200,"result_subcode":0,"result_msg":"OK"},"data":{"padding":""#;
        let tail = r#""}}"#;
        let mut body = Vec::with_capacity(size.max(head.len() + tail.len()));
        body.extend_from_slice(head.as_bytes());
        body.resize(size.saturating_sub(tail.len()).max(head.len()), b'x');
        body.extend_from_slice(tail.as_bytes());
        Self {
            status: 200,
            content_type: "application/json".into(),
            body: body.into(),
        }
    }
}

/// Rewrites the `data` of an endpoint's successful replies (after the handler ran and its effects
/// happened), to serve documents the agent does not expect.
pub type Rewrite = Arc<dyn Fn(&mut serde_json::Value) + Send + Sync>;

/// Random faults on a share of every endpoint's calls ([`Faults::set_chaos`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chaos {
    /// Share of calls that get a fault (0.0–1.0).
    pub rate: f64,
    /// The delay a delayed call gets.
    pub delay: Duration,
}

/// The pending fault rules.
#[derive(Default)]
pub(crate) struct FaultPlan {
    failures: HashMap<String, VecDeque<ApiError>>,
    drops: HashMap<String, usize>,
    reply_drops: HashMap<String, usize>,
    delays: HashMap<String, Duration>,
    disabled: HashSet<String>,
    chaos: Option<Chaos>,
    raw: HashMap<String, VecDeque<RawReply>>,
    rewrites: HashMap<String, Rewrite>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("failures", &self.failures)
            .field("drops", &self.drops)
            .field("reply_drops", &self.reply_drops)
            .field("delays", &self.delays)
            .field("disabled", &self.disabled)
            .field("chaos", &self.chaos)
            .field("raw", &self.raw)
            .field("rewrites", &self.rewrites.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FaultPlan {
    /// The delay to apply to a call of `endpoint`.
    pub(crate) fn delay(&self, endpoint: &str) -> Option<Duration> {
        self.delays
            .get(endpoint)
            .or_else(|| self.delays.get(ANY_ENDPOINT))
            .copied()
    }

    /// Whether the endpoint was switched off (served as unknown, 404).
    pub(crate) fn is_disabled(&self, endpoint: &str) -> bool {
        self.disabled.contains(endpoint)
    }

    /// The rewrite of `endpoint`'s reply data, if any.
    pub(crate) fn rewrite(&self, endpoint: &str) -> Option<Rewrite> {
        self.rewrites
            .get(endpoint)
            .or_else(|| self.rewrites.get(ANY_ENDPOINT))
            .cloned()
    }

    /// Consumes the next raw reply, drop or failure rule for `endpoint`, if any.
    pub(crate) fn take(&mut self, endpoint: &str) -> Injected {
        for key in [endpoint, ANY_ENDPOINT] {
            if let Some(raw) = self.raw.get_mut(key).and_then(VecDeque::pop_front) {
                return Injected::Raw(raw);
            }
            if let Some(n) = self.drops.get_mut(key)
                && *n > 0
            {
                *n -= 1;
                return Injected::Drop;
            }
            if let Some(n) = self.reply_drops.get_mut(key)
                && *n > 0
            {
                *n -= 1;
                return Injected::DropReply;
            }
            if let Some(err) = self.failures.get_mut(key).and_then(VecDeque::pop_front) {
                return Injected::Fail(err);
            }
        }
        match self.chaos {
            Some(c) if rand::random::<f64>() < c.rate => match rand::random_range(0..4) {
                0 => Injected::Fail(ApiError::raw(
                    500,
                    0,
                    "General server error (injected fault)",
                )),
                1 => Injected::Drop,
                2 => Injected::DropReply,
                _ => Injected::Delay(c.delay),
            },
            _ => Injected::None,
        }
    }
}

/// Handle for injecting faults into a running double.
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl Faults {
    /// The next `n` calls of `endpoint` (`"*"` = any) get a 500/0 envelope.
    pub fn fail_next(&self, endpoint: &str, n: usize) {
        let err = ApiError::raw(500, 0, "General server error (injected fault)");
        self.fail_next_with(endpoint, n, err);
    }

    /// The next `n` calls of `endpoint` (`"*"` = any) get this error envelope (e.g. a 503).
    pub fn fail_next_with(&self, endpoint: &str, n: usize, error: ApiError) {
        let mut plan = self.shared.faults.lock();
        let queue = plan.failures.entry(endpoint.to_string()).or_default();
        queue.extend(std::iter::repeat_n(error, n));
    }

    /// The next `n` calls of `endpoint` (`"*"` = any) have their connection closed without a reply.
    pub fn drop_next(&self, endpoint: &str, n: usize) {
        *self
            .shared
            .faults
            .lock()
            .drops
            .entry(endpoint.to_string())
            .or_default() += n;
    }

    /// The next `n` calls of `endpoint` (`"*"` = any) are served (their effects happen), then
    /// their connection is closed without the reply: the client cannot tell whether the server
    /// acted (e.g. an `enqueue_many` that moved its tasks).
    pub fn drop_reply_next(&self, endpoint: &str, n: usize) {
        *self
            .shared
            .faults
            .lock()
            .reply_drops
            .entry(endpoint.to_string())
            .or_default() += n;
    }

    /// Every call of `endpoint` (`"*"` = any) waits `delay` before being served, until cleared.
    pub fn set_delay(&self, endpoint: &str, delay: Duration) {
        self.shared
            .faults
            .lock()
            .delays
            .insert(endpoint.to_string(), delay);
    }

    /// The next `n` calls of `endpoint` (`"*"` = any) get `reply` instead of the envelope.
    pub fn raw_reply_next(&self, endpoint: &str, n: usize, reply: RawReply) {
        let mut plan = self.shared.faults.lock();
        let queue = plan.raw.entry(endpoint.to_string()).or_default();
        queue.extend(std::iter::repeat_n(reply, n));
    }

    /// Every successful reply of `endpoint` (`"*"` = any) has its `data` passed through `rewrite`
    /// until `None` is set.
    pub fn rewrite_replies(&self, endpoint: &str, rewrite: Option<Rewrite>) {
        let mut plan = self.shared.faults.lock();
        match rewrite {
            Some(r) => plan.rewrites.insert(endpoint.to_string(), r),
            None => plan.rewrites.remove(endpoint),
        };
    }

    /// Removes the delay of `endpoint`.
    pub fn clear_delay(&self, endpoint: &str) {
        self.shared.faults.lock().delays.remove(endpoint);
    }

    /// Serves `endpoint` as unknown (404), like a server that lacks it (e.g. the open-source server
    /// and `workers.cluster_report`).
    pub fn disable_endpoint(&self, endpoint: &str) {
        self.shared
            .faults
            .lock()
            .disabled
            .insert(endpoint.to_string());
    }

    /// Re-enables an endpoint switched off with [`Faults::disable_endpoint`].
    pub fn enable_endpoint(&self, endpoint: &str) {
        self.shared.faults.lock().disabled.remove(endpoint);
    }

    /// Every token issued so far is treated as expired (401/30 `Signature has expired`).
    pub fn expire_tokens(&self) {
        let mut store = self.shared.store.lock();
        let issued = store.tokens.issued.clone();
        store.tokens.expired.extend(issued);
    }

    /// Every token issued so far is treated as revoked (401/30 `revoked token`).
    pub fn revoke_tokens(&self) {
        let mut store = self.shared.store.lock();
        let issued = store.tokens.issued.clone();
        store.tokens.revoked.extend(issued);
    }

    /// From now on a share `rate` of all calls gets a random fault, in equal parts: a 500
    /// envelope, a connection closed before the server acts, one closed after it acted (the reply
    /// is lost), or a `delay`. `None` stops it.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        self.shared.faults.lock().chaos = chaos;
    }

    /// Removes every pending failure, drop, delay and disabled endpoint.
    pub fn clear(&self) {
        *self.shared.faults.lock() = FaultPlan::default();
    }
}

/// One served request, as logged by the double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// `service.action` (empty for a malformed path).
    pub endpoint: String,
    /// Request path.
    pub path: String,
    /// Version from the path (`None` when the path had none).
    pub path_version: Option<String>,
    /// HTTP method.
    pub method: String,
    /// When the request arrived (wall clock).
    pub at: DateTime<Utc>,
    /// `meta.result_code` (0 when the connection was dropped by a fault).
    pub result_code: u16,
    /// `meta.result_subcode`.
    pub result_subcode: u32,
}

/// Handle on the request log.
#[derive(Clone)]
pub struct Requests {
    pub(crate) shared: Arc<Shared>,
}

impl Requests {
    /// Every logged request, oldest first.
    pub fn all(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().clone()
    }

    /// How many requests named `endpoint` arrived (whatever their outcome).
    pub fn calls(&self, endpoint: &str) -> usize {
        self.shared
            .log
            .lock()
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// How many requests named `endpoint` got `result_code`.
    pub fn calls_with_code(&self, endpoint: &str, result_code: u16) -> usize {
        self.shared
            .log
            .lock()
            .iter()
            .filter(|r| r.endpoint == endpoint && r.result_code == result_code)
            .count()
    }

    /// Forgets every logged request.
    pub fn clear(&self) {
        self.shared.log.lock().clear();
    }
}
