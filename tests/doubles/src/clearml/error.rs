//! ClearML API errors as the server renders them: an HTTP code, a subcode and a message built like
//! the server's `BaseError` (`<Capitalised default message>[ (<extra>)][: k1=v1, k2=v2]`, list values
//! as `(a, b)`), so clients that match on codes or text see what a real server would send.

use std::fmt::Display;

/// One API failure: HTTP status (`meta.result_code`), `meta.result_subcode` and `meta.result_msg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}/{subcode}: {msg}")]
pub struct ApiError {
    /// HTTP status and `meta.result_code`.
    pub code: u16,
    /// `meta.result_subcode`.
    pub subcode: u32,
    /// `meta.result_msg`.
    pub msg: String,
}

/// Renders a list value the way the server does: `(a, b)`.
pub(crate) fn tuple<I, T>(items: I) -> String
where
    I: IntoIterator<Item = T>,
    T: Display,
{
    let parts: Vec<String> = items.into_iter().map(|v| v.to_string()).collect();
    format!("({})", parts.join(", "))
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl ApiError {
    /// An error with a literal message (used for transport-level errors).
    pub fn raw(code: u16, subcode: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            subcode,
            msg: msg.into(),
        }
    }

    /// Builds the message like the server: default text, optional extra in parentheses, then `k=v` pairs.
    pub(crate) fn build(
        code: u16,
        subcode: u32,
        default_msg: &str,
        extra: Option<&str>,
        kwargs: &[(&str, String)],
    ) -> Self {
        let mut msg = capitalise(default_msg);
        if let Some(extra) = extra.filter(|e| !e.is_empty()) {
            msg.push_str(&format!(" ({extra})"));
        }
        if !kwargs.is_empty() {
            let pairs: Vec<String> = kwargs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            msg.push_str(": ");
            msg.push_str(&pairs.join(", "));
        }
        Self { code, subcode, msg }
    }

    /// 400/10 `invalid_id`.
    pub(crate) fn invalid_id(extra: Option<&str>, kwargs: &[(&str, String)]) -> Self {
        Self::build(400, 10, "invalid object id", extra, kwargs)
    }

    /// 400/12 `validation_error`.
    pub(crate) fn validation(extra: impl AsRef<str>) -> Self {
        Self::build(400, 12, "validation error", Some(extra.as_ref()), &[])
    }

    /// 400/16 `fields_value_error`.
    pub(crate) fn fields_value(extra: &str, kwargs: &[(&str, String)]) -> Self {
        Self::build(400, 16, "invalid value for fields", Some(extra), kwargs)
    }

    /// 400/17 `batch_contains_no_items`.
    pub(crate) fn batch_contains_no_items() -> Self {
        Self::build(400, 17, "batch request contains no items", None, &[])
    }

    /// 400/101 `invalid_task_id`.
    pub(crate) fn invalid_task_id(extra: Option<&str>, kwargs: &[(&str, String)]) -> Self {
        Self::build(400, 101, "invalid task id", extra, kwargs)
    }

    /// 400/110 `invalid_task_status`.
    pub(crate) fn invalid_task_status(extra: Option<&str>, kwargs: &[(&str, String)]) -> Self {
        Self::build(400, 110, "invalid task status", extra, kwargs)
    }

    /// 400/701 `invalid_queue_id`.
    pub(crate) fn invalid_queue_id(kwargs: &[(&str, String)]) -> Self {
        Self::build(400, 701, "invalid queue id", None, kwargs)
    }

    /// 400/702 `queue_not_empty`.
    pub(crate) fn queue_not_empty(kwargs: &[(&str, String)]) -> Self {
        Self::build(
            400,
            702,
            "queue is not empty",
            Some("use force=true to delete"),
            kwargs,
        )
    }

    /// 400/703 `invalid_queue_or_task_not_queued`.
    pub(crate) fn not_queued(kwargs: &[(&str, String)]) -> Self {
        Self::build(
            400,
            703,
            "invalid queue id or task not in queue",
            None,
            kwargs,
        )
    }

    /// 400/706 `task_already_queued`.
    pub(crate) fn task_already_queued(task: &str) -> Self {
        Self::build(
            400,
            706,
            "failed adding task to queue since task is already queued",
            None,
            &[("task", task.to_string())],
        )
    }

    /// 400/707 `no_default_queue`.
    pub(crate) fn no_default_queue() -> Self {
        Self::build(
            400,
            707,
            "no queue is tagged as the default queue for this company",
            None,
            &[],
        )
    }

    /// 400/708 `multiple_default_queues`.
    pub(crate) fn multiple_default_queues(ids: &[String]) -> Self {
        Self::build(
            400,
            708,
            "more than one queue is tagged as the default queue for this company",
            None,
            &[("queues", tuple(ids))],
        )
    }

    /// 400/800 `data_validation_error` (a document failed the database schema, e.g. a short name).
    pub(crate) fn data_validation(extra: &str) -> Self {
        Self::build(400, 800, "data validation error", Some(extra), &[])
    }

    /// 400/801 `expected_unique_data`.
    pub(crate) fn not_unique(kwargs: &[(&str, String)]) -> Self {
        Self::build(400, 801, "value combination already exists", None, kwargs)
    }

    /// 400/1002 `worker_registration_failed`.
    pub(crate) fn worker_registration_failed(extra: &str, kwargs: &[(&str, String)]) -> Self {
        Self::build(400, 1002, "worker registration failed", Some(extra), kwargs)
    }

    /// 401/10 `bad_auth_type`.
    pub(crate) fn bad_auth_type() -> Self {
        Self::build(
            401,
            10,
            "unauthorized (bad authentication header type)",
            None,
            &[],
        )
    }

    /// 401/20 `no_credentials`.
    pub(crate) fn no_credentials() -> Self {
        Self::build(401, 20, "unauthorized (missing credentials)", None, &[])
    }

    /// 401/21 `bad_credentials`.
    pub(crate) fn bad_credentials(extra: &str) -> Self {
        Self::build(
            401,
            21,
            "unauthorized (malformed credentials)",
            Some(extra),
            &[],
        )
    }

    /// 401/22 `invalid_credentials`.
    pub(crate) fn invalid_credentials(extra: &str) -> Self {
        Self::build(
            401,
            22,
            "unauthorized (invalid credentials)",
            Some(extra),
            &[],
        )
    }

    /// 401/30 `invalid_token`.
    pub(crate) fn invalid_token(extra: &str, kwargs: &[(&str, String)]) -> Self {
        Self::build(401, 30, "invalid token", Some(extra), kwargs)
    }

    /// 500/1 `internal_error`.
    pub(crate) fn internal(extra: &str) -> Self {
        Self::build(500, 1, "internal server error", Some(extra), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_format_matches_the_server() {
        let e = ApiError::invalid_task_status(
            Some("Invalid status change"),
            &[
                ("current_status", "created".into()),
                ("new_status", "completed".into()),
            ],
        );
        assert_eq!(
            e.msg,
            "Invalid task status (Invalid status change): current_status=created, new_status=completed"
        );
        let e = ApiError::invalid_credentials("failed to locate provided credentials");
        assert_eq!(
            e.msg,
            "Unauthorized (invalid credentials) (failed to locate provided credentials)"
        );
        assert_eq!((e.code, e.subcode), (401, 22));
        let e = ApiError::invalid_task_id(None, &[("ids", tuple(["abc"]))]);
        assert_eq!(e.msg, "Invalid task id: ids=(abc)");
    }
}
