//! `kind: Status` errors: the reasons, codes, messages and details the real kube-apiserver
//! returns (apimachinery `k8s.io/apimachinery/pkg/api/errors`), so clients classify them the
//! same way they would against a real cluster.

use serde_json::{Map, Value, json};

use super::resources::ResourceDef;

/// One field-level validation failure (`details.causes[]` of an `Invalid` Status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, `FieldValueForbidden`,
    /// `FieldValueNotSupported`, `FieldValueTooLong`.
    pub reason: &'static str,
    /// The JSON path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
    /// The message body, e.g. `Required value` or `Invalid value: "x": must be ...`.
    pub message: String,
}

impl FieldError {
    /// `field.Required`: `Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: with_detail("Required value", detail),
        }
    }

    /// `field.Invalid`: `Invalid value: <value>[: detail]` (`value` rendered like Go's `%#v`).
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: with_detail(&format!("Invalid value: {}", go_value(value)), detail),
        }
    }

    /// `field.Duplicate`: `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {}", go_value(value)),
        }
    }

    /// `field.Forbidden`: `Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: with_detail("Forbidden", detail),
        }
    }

    /// `field.NotSupported`: `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, valid: &[&str]) -> Self {
        let valid = valid
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {valid}",
                go_value(value)
            ),
        }
    }

    /// `field.NotFound`: `Not found: <value>`.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueNotFound",
            field: field.into(),
            message: format!("Not found: {}", go_value(value)),
        }
    }

    /// `field.TooLong`: `Too long: may not be more than N bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }

    /// `field: message`, the form used inside aggregated messages.
    pub fn to_error_string(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

fn with_detail(head: &str, detail: &str) -> String {
    if detail.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {detail}")
    }
}

/// Renders a JSON value the way Go's `%#v` renders the corresponding Go value in field errors.
fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// A failed API call, rendered as a `kind: Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `details` (name, group, kind, uid, causes, retryAfterSeconds), if any.
    pub details: Option<Value>,
    /// `Retry-After` seconds, sent as a header as well.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A Status with no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `404 NotFound`: `pods "x" not found`.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", res.group_resource()),
        )
        .with_details(name_details(res, name))
    }

    /// `409 AlreadyExists`: `pods "x" already exists`.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", res.group_resource()),
        )
        .with_details(name_details(res, name))
    }

    /// `409 Conflict` for a stale resourceVersion (the optimistic-concurrency message).
    pub fn conflict_modified(res: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `409 Conflict`: `Operation cannot be fulfilled on pods "x": <why>`.
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                res.group_resource()
            ),
        )
        .with_details(name_details(res, name))
    }

    /// `422 Invalid` with field causes: `Pod "x" is invalid: [a: ..., b: ...]`.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let aggregate = match errors.as_slice() {
            [one] => one.to_error_string(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(FieldError::to_error_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        let mut details = Map::new();
        details.insert("name".into(), json!(name));
        if !group.is_empty() {
            details.insert("group".into(), json!(group));
        }
        details.insert("kind".into(), json!(kind));
        details.insert("causes".into(), Value::Array(causes));
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} {name:?} is invalid: {aggregate}"),
        )
        .with_details(Value::Object(details))
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `401 Unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// `403 Forbidden` with the given message.
    pub fn forbidden(res: &ResourceDef, name: &str, message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message).with_details(name_details(res, name))
    }

    /// `404 NotFound` for a path that is not an API endpoint at all.
    pub fn not_found_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// `405 MethodNotAllowed`.
    pub fn method_not_allowed(method: &str, path_kind: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method} {path_kind})"),
        )
        .with_details(json!({}))
    }

    /// `415 UnsupportedMediaType` for a patch content type the server does not know.
    pub fn unsupported_patch_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml, application/strategic-merge-patch+json \
                 (got {content_type:?})"
            ),
        )
    }

    /// `410 Gone` with reason `Expired` (too old resourceVersion or continue token).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// `500 InternalError`.
    pub fn internal(message: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message}]}))
    }

    /// `429 TooManyRequests` with `Retry-After`.
    pub fn too_many_requests(retry_after: u32) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
        .with_details(json!({"retryAfterSeconds": retry_after}));
        e.retry_after = Some(retry_after);
        e
    }

    /// `503 ServiceUnavailable`.
    pub fn service_unavailable(message: &str) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// An arbitrary status code, with the reason the real server uses for it.
    pub fn from_code(code: u16, message: &str) -> Self {
        match code {
            400 => Self::bad_request(message),
            401 => Self::unauthorized(),
            409 => Self::new(409, "Conflict", message),
            429 => Self::too_many_requests(1),
            500 => Self::internal(message),
            503 => Self::service_unavailable(message),
            504 => Self::new(504, "Timeout", message),
            other => Self::new(other, "", message),
        }
    }

    /// The JSON `kind: Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            status.insert("reason".into(), json!(self.reason));
        }
        if let Some(details) = &self.details {
            status.insert("details".into(), details.clone());
        }
        status.insert("code".into(), json!(self.code));
        Value::Object(status)
    }
}

/// `details` naming an object: `{"name", "group"?, "kind": <resource plural>}`.
fn name_details(res: &ResourceDef, name: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !res.group.is_empty() {
        details.insert("group".into(), json!(res.group));
    }
    details.insert("kind".into(), json!(res.plural));
    Value::Object(details)
}

/// The `status: Success` object returned by a delete that removed the object immediately.
pub fn success_status(res: &ResourceDef, name: &str, uid: &str) -> Value {
    let mut details = name_details(res, name);
    if let Value::Object(map) = &mut details {
        map.insert("uid".into(), json!(uid));
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
