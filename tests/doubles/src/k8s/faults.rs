//! Fault injection: the next N requests matching a verb/resource/namespace/name fail with a
//! chosen status (500, 503, 429 with `Retry-After`, ...) or are delayed, as an overloaded or
//! flaky real API server would behave.

use std::time::Duration;

use super::{requestlog::RequestRecord, status::ApiError};

/// Which requests a fault applies to (unset fields match anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMatch {
    verb: Option<String>,
    verbs: Option<Vec<String>>,
    resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl RequestMatch {
    /// Matches every request (resource and non-resource).
    pub fn any() -> Self {
        Self::default()
    }

    /// Only this API verb (`list`, `watch`, `create`, `patch`, ...).
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_string());
        self
    }

    /// Only these API verbs (e.g. the writes: `create`, `update`, `patch`, `delete`).
    pub fn verbs(mut self, verbs: &[&str]) -> Self {
        self.verbs = Some(verbs.iter().map(|v| v.to_string()).collect());
        self
    }

    /// Only this resource (`pods`, or `pods/status` for a subresource).
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }

    /// Only this namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Only this object name.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub(crate) fn matches(&self, r: &RequestRecord) -> bool {
        let full = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        self.verb.as_ref().is_none_or(|v| *v == r.verb)
            && self.verbs.as_ref().is_none_or(|vs| vs.contains(&r.verb))
            && self.resource.as_ref().is_none_or(|v| *v == full)
            && self.namespace.as_ref().is_none_or(|v| *v == r.namespace)
            && self.name.as_ref().is_none_or(|v| *v == r.name)
    }
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status code (reason as the real server uses it: 500 InternalError,
    /// 503 ServiceUnavailable, 504 Timeout, 409 Conflict, ...).
    Status(u16),
    /// `429 TooManyRequests` with `Retry-After` and `details.retryAfterSeconds`.
    TooManyRequests {
        /// Seconds to wait.
        retry_after_seconds: u32,
    },
    /// Hold the request this long, then serve it normally.
    Delay(Duration),
}

/// An armed fault.
#[derive(Debug, Clone)]
pub(crate) struct FaultRule {
    pub matcher: RequestMatch,
    pub fault: Fault,
    pub remaining: usize,
    /// `Some(p)`: a standing rule that hits each matching request with probability `p`
    /// (`remaining` is ignored).
    pub rate: Option<f64>,
}

/// What the router must do for a request after consulting the faults.
pub(crate) enum Verdict {
    Proceed,
    Delay(Duration),
    Fail(ApiError),
}

/// Applies the first matching rule that fires: a counted rule always fires (and is used up), a
/// rate rule fires with its probability, otherwise the next matching rule is tried.
pub(crate) fn check(rules: &mut Vec<FaultRule>, record: &RequestRecord) -> Verdict {
    let mut fired = None;
    for (pos, rule) in rules.iter_mut().enumerate() {
        if !rule.matcher.matches(record) {
            continue;
        }
        match rule.rate {
            Some(p) if rand::random::<f64>() < p => {
                fired = Some((pos, rule.fault.clone(), false));
                break;
            }
            Some(_) => {}
            None if rule.remaining > 0 => {
                rule.remaining -= 1;
                fired = Some((pos, rule.fault.clone(), rule.remaining == 0));
                break;
            }
            None => {}
        }
    }
    let Some((pos, fault, used_up)) = fired else {
        return Verdict::Proceed;
    };
    if used_up {
        rules.remove(pos);
    }
    match fault {
        Fault::Status(code) => Verdict::Fail(ApiError::from_code(code, "injected fault")),
        Fault::TooManyRequests {
            retry_after_seconds,
        } => Verdict::Fail(ApiError::too_many_requests(retry_after_seconds)),
        Fault::Delay(d) => Verdict::Delay(d),
    }
}
