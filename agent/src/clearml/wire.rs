//! Serde shapes of the ClearML envelope and of the documents the agent reads. Unknown fields are
//! ignored and every field is optional, so a server that omits unset fields (as ClearML does)
//! still decodes.

use serde::Deserialize;
use serde_json::Value;

use super::{Error, Result};

#[derive(Debug, Deserialize)]
struct Envelope {
    meta: Meta,
    #[serde(default)]
    data: Value,
}

#[derive(Debug, Deserialize)]
struct Meta {
    #[serde(default)]
    result_code: u16,
    #[serde(default)]
    result_subcode: u32,
    #[serde(default)]
    result_msg: String,
}

/// Unwraps `{meta, data}`; an error envelope (or a non-JSON reply such as a proxy's HTML error
/// page) becomes an error carrying the HTTP status.
pub(super) fn unwrap_envelope(endpoint: &'static str, status: u16, body: &[u8]) -> Result<Value> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) if (200..300).contains(&status) && env.meta.result_code < 300 => Ok(env.data),
        Ok(env) => Err(Error::Api {
            endpoint,
            code: if env.meta.result_code == 0 {
                status
            } else {
                env.meta.result_code
            },
            subcode: env.meta.result_subcode,
            message: env.meta.result_msg,
        }),
        Err(_) if !(200..300).contains(&status) => Err(Error::Api {
            endpoint,
            code: status,
            subcode: 0,
            message: snippet(body),
        }),
        Err(e) => Err(Error::Decode {
            endpoint,
            detail: format!("{e}: {}", snippet(body)),
        }),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Deserialize)]
pub(super) struct Queues {
    #[serde(default)]
    pub queues: Vec<QueueDoc>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Tasks {
    #[serde(default)]
    pub tasks: Vec<TaskDoc>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Created {
    pub id: String,
}

/// A queue as `queues.get_all` returns it (with the requested fields only).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct QueueDoc {
    /// Queue id.
    pub id: String,
    /// Queue name.
    #[serde(default)]
    pub name: String,
    /// FIFO entries, head first.
    #[serde(default)]
    pub entries: Vec<QueueEntry>,
}

/// One queue entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct QueueEntry {
    /// Task id.
    pub task: String,
    /// When it was added (ISO 8601).
    #[serde(default)]
    pub added: Option<String>,
}

/// A task with the fields the agent reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TaskDoc {
    /// Task id.
    pub id: String,
    /// Task name.
    #[serde(default)]
    pub name: Option<String>,
    /// Status (`queued`, `in_progress`, …).
    #[serde(default)]
    pub status: Option<String>,
    /// Status message.
    #[serde(default)]
    pub status_message: Option<String>,
    /// Status reason.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Project id.
    #[serde(default)]
    pub project: Option<String>,
    /// Container settings.
    #[serde(default)]
    pub container: Option<TaskContainer>,
    /// `execution` (only `queue` is read).
    #[serde(default)]
    pub execution: Option<Execution>,
    /// Hyper-parameters (the agent reads `properties`, the task's user properties).
    #[serde(default)]
    pub hyperparams: Option<serde_json::Value>,
}

/// `execution` of a task.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Execution {
    /// The queue the task is (or was last) enqueued in.
    #[serde(default)]
    pub queue: Option<String>,
}

/// `container` of a task: strings, any of which may be null or empty.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TaskContainer {
    /// Image.
    #[serde(default)]
    pub image: Option<String>,
    /// Docker-style arguments, one shell string.
    #[serde(default)]
    pub arguments: Option<String>,
    /// Bash run before the task.
    #[serde(default)]
    pub setup_shell_script: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_table() {
        let ok =
            br#"{"meta":{"result_code":200,"result_subcode":0,"result_msg":"OK"},"data":{"x":1}}"#;
        assert_eq!(unwrap_envelope("a.b", 200, ok).expect("ok")["x"], 1);

        let err = br#"{"meta":{"result_code":400,"result_subcode":701,"result_msg":"Invalid queue id"},"data":{}}"#;
        let e = unwrap_envelope("a.b", 400, err).expect_err("api error");
        assert!(e.is_api(400, 701) && !e.is_retryable(), "{e}");

        let html = b"<html><body>502 Bad Gateway</body></html>";
        let e = unwrap_envelope("a.b", 502, html).expect_err("proxy page");
        assert!(e.is_retryable());
        assert!(e.to_string().contains("502 Bad Gateway"), "{e}");

        let e = unwrap_envelope("a.b", 200, b"not json").expect_err("garbage");
        assert!(matches!(e, Error::Decode { .. }) && !e.is_retryable());

        let missing = br#"{"meta":{"result_code":200},"data":{"tasks":[{"id":"t"}]}}"#;
        let data = unwrap_envelope("a.b", 200, missing).expect("ok");
        let tasks: Tasks = serde_json::from_value(data).expect("tasks");
        assert_eq!(tasks.tasks[0].id, "t");
        assert!(tasks.tasks[0].container.is_none());
    }
}
