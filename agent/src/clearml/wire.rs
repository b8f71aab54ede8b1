//! Serde shapes of the ClearML envelope and of the documents the agent reads. Unknown fields are
//! ignored and every field is optional, so a server that omits unset fields (as ClearML does)
//! still decodes.

use k8s_openapi::jiff::{Timestamp, civil, tz::TimeZone};
use serde::Deserialize;
use serde_json::Value;

use super::{Error, Result};

/// A string value as serde's messages quote it: `string "…"` (with escapes).
static QUOTED_STRING: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r#"string "(?:[^"\\]|\\.)*""#).expect("a valid constant regex")
});

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

/// The list under `data.<key>`: a reply without it is unreadable as a whole (it must not read
/// as "no such tasks", which would make the agent drop them).
fn list(endpoint: &'static str, data: Value, key: &str) -> Result<Vec<Value>> {
    let decode = |detail: String| Error::Decode { endpoint, detail };
    match data {
        Value::Object(mut map) => match map.remove(key) {
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(decode(format!(
                "{key}: expected a list, got {}",
                kind(&other)
            ))),
            None => Err(decode(format!("no {key} in the reply"))),
        },
        other => Err(decode(format!("expected an object, got {}", kind(&other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Decodes one item, naming the field that did not fit (`container.image: invalid type…`);
/// `at` is the item's own place (`entries[2]`), empty for a top-level document.
fn decode_item<T: serde::de::DeserializeOwned>(item: Value, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(item).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (at, inner.as_str()) {
            ("", ".") => "document".to_string(),
            (at, ".") => at.to_string(),
            ("", inner) => inner.to_string(),
            (at, inner) => format!("{at}.{inner}"),
        };
        // NB: serde quotes the offending string; it is the task's own data (arguments may carry
        // credentials), so it is left out of logs and status reasons.
        let inner = QUOTED_STRING
            .replace_all(&e.inner().to_string(), "string")
            .into_owned();
        let mut detail = format!("{path}: {inner}");
        if detail.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|i| detail.is_char_boundary(*i))
                .unwrap_or(0);
            detail.truncate(cut);
            detail.push('…');
        }
        detail
    })
}

/// `queues.get_all` data. Each queue and each entry is decoded on its own: an unreadable entry
/// is left out (its task stays in its queue, untouched) and reported in `problems`, so one bad
/// document cannot stop every queue. A queue without an id is left out the same way.
pub(super) fn decode_queues(
    endpoint: &'static str,
    data: Value,
    problems: &mut Vec<String>,
) -> Result<Vec<QueueDoc>> {
    let mut queues = Vec::new();
    for (i, mut item) in list(endpoint, data, "queues")?.into_iter().enumerate() {
        let Some(id) = item.get("id").and_then(Value::as_str).map(str::to_string) else {
            problems.push(format!("queues[{i}]: no queue id; queue skipped"));
            continue;
        };
        let entries = match item.as_object_mut().and_then(|m| m.remove("entries")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => entries,
            Some(other) => {
                problems.push(format!(
                    "queue {id}: entries: expected a list, got {}; queue skipped",
                    kind(&other)
                ));
                continue;
            }
        };
        let mut doc: QueueDoc = match decode_item(item, "") {
            Ok(doc) => doc,
            Err(detail) => {
                problems.push(format!("queue {id}: {detail}; queue skipped"));
                continue;
            }
        };
        for (j, entry) in entries.into_iter().enumerate() {
            match decode_item::<QueueEntry>(entry, &format!("entries[{j}]")) {
                Ok(entry) => doc.entries.push(entry),
                Err(detail) => {
                    problems.push(format!("queue {id}: {detail}; entry left in the queue"))
                }
            }
        }
        queues.push(doc);
    }
    Ok(queues)
}

/// `tasks.get_all` data. Each task is decoded on its own: a task whose document does not fit
/// comes back with only its id (and status, if readable) and the reason in
/// [`TaskDoc::unreadable`], so the caller fails or skips that one task. With `need_status`, a
/// task without a status is unreadable too. An item without an id makes the whole reply
/// unreadable: which task it is cannot be told, and a task must never look deleted by mistake.
pub(super) fn decode_tasks(
    endpoint: &'static str,
    data: Value,
    need_status: bool,
) -> Result<Vec<TaskDoc>> {
    let mut tasks = Vec::new();
    for (i, item) in list(endpoint, data, "tasks")?.into_iter().enumerate() {
        let Some(id) = item.get("id").and_then(Value::as_str).map(str::to_string) else {
            return Err(Error::Decode {
                endpoint,
                detail: format!("tasks[{i}]: no task id"),
            });
        };
        let status = item
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut doc = decode_item::<TaskDoc>(item, "").unwrap_or_else(|detail| TaskDoc {
            id,
            status,
            unreadable: Some(detail),
            ..TaskDoc::default()
        });
        if need_status && doc.status.is_none() && doc.unreadable.is_none() {
            doc.unreadable = Some("status: missing".into());
        }
        tasks.push(doc);
    }
    Ok(tasks)
}

#[derive(Debug, Deserialize)]
pub(super) struct Created {
    pub id: String,
}

/// A queue as `queues.get_all` returns it (with the requested fields only).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(expecting = "an object")]
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
#[serde(expecting = "an object")]
pub struct QueueEntry {
    /// Task id.
    pub task: String,
    /// When it was added (ISO 8601).
    #[serde(default)]
    pub added: Option<String>,
}

impl QueueEntry {
    /// When the task entered the queue, if `added` reads as a time.
    pub fn added_at(&self) -> Option<Timestamp> {
        self.added.as_deref().and_then(parse_time)
    }
}

/// A ClearML time: ISO 8601 with an offset (`2026-12-04T10:00:00.123000+00:00`, `…Z`), or without
/// one, which ClearML means as UTC.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    text.parse::<Timestamp>().ok().or_else(|| {
        text.parse::<civil::DateTime>()
            .ok()?
            .to_zoned(TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    })
}

/// A task with the fields the agent reads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(expecting = "an object")]
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
    /// The owner (for `${CLEARML_TASK.user}` string templates): an id, or `{id, name}` on
    /// servers that resolve it; read as any JSON so it never makes the document unreadable.
    #[serde(default)]
    pub user: Option<serde_json::Value>,
    /// Set when the document did not decode: the field that did not fit and why. The other
    /// fields are then empty but `id` (and `status` if it was readable).
    #[serde(skip)]
    pub unreadable: Option<String>,
}

/// `execution` of a task.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(expecting = "an object")]
pub struct Execution {
    /// The queue the task is (or was last) enqueued in.
    #[serde(default)]
    pub queue: Option<String>,
}

/// `container` of a task: strings, any of which may be null or empty.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(expecting = "an object")]
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
    use serde_json::json;

    use super::*;

    #[test]
    fn clearml_times_table() {
        let at = |s: i64, ns: i32| Timestamp::new(s, ns).ok();
        for (text, want) in [
            ("2026-12-04T10:00:00+00:00", at(1_796_378_400, 0)),
            (
                "2026-12-04T10:00:00.123000+00:00",
                at(1_796_378_400, 123_000_000),
            ),
            ("2026-12-04T10:00:00Z", at(1_796_378_400, 0)),
            ("2026-12-04T12:00:00+02:00", at(1_796_378_400, 0)),
            ("2026-12-04T10:00:00.5", at(1_796_378_400, 500_000_000)),
            (" 2026-12-04T10:00:00 ", at(1_796_378_400, 0)),
            ("yesterday", None),
            ("", None),
        ] {
            assert_eq!(parse_time(text), want, "{text:?}");
        }
    }

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
        let tasks = decode_tasks("a.b", data, false).expect("tasks");
        assert_eq!(tasks[0].id, "t");
        assert!(tasks[0].container.is_none() && tasks[0].unreadable.is_none());
    }

    /// Task documents that do not fit: (data, need_status, expected per task: (id, status,
    /// unreadable contains), or the whole reply's error).
    #[test]
    fn task_documents_table() {
        type Want<'a> = Result<Vec<(&'a str, Option<&'a str>, Option<&'a str>)>, &'a str>;
        let cases: Vec<(Value, bool, Want<'_>)> = vec![
            (
                json!({"tasks": [{"id": "a", "status": "queued"}]}),
                true,
                Ok(vec![("a", Some("queued"), None)]),
            ),
            // a wrong-typed field names its path; the status is still read
            (
                json!({"tasks": [
                    {"id": "a", "status": "queued", "container": {"image": 5}},
                    {"id": "b", "status": "queued", "container": {"image": "x"}},
                ]}),
                true,
                Ok(vec![
                    (
                        "a",
                        Some("queued"),
                        Some("container.image: invalid type: integer `5`"),
                    ),
                    ("b", Some("queued"), None),
                ]),
            ),
            (
                json!({"tasks": [{"id": "a", "status": 3}]}),
                true,
                Ok(vec![("a", None, Some("status: invalid type"))]),
            ),
            // the offending string is the task's own data: never echoed
            (
                json!({"tasks": [{"id": "a", "container": "-e TOKEN=s3cr\"et"}]}),
                false,
                Ok(vec![(
                    "a",
                    None,
                    Some("container: invalid type: string, expected an object"),
                )]),
            ),
            (
                json!({"tasks": [{"id": "a", "status": "queued", "container": {"arguments": ["-e", "TOKEN=s3cret"]}}]}),
                true,
                Ok(vec![(
                    "a",
                    Some("queued"),
                    Some("container.arguments: invalid type: sequence, expected a string"),
                )]),
            ),
            // a missing status matters only when it was asked for
            (
                json!({"tasks": [{"id": "a"}]}),
                true,
                Ok(vec![("a", None, Some("status: missing"))]),
            ),
            (
                json!({"tasks": [{"id": "a"}]}),
                false,
                Ok(vec![("a", None, None)]),
            ),
            (
                json!({"tasks": [{"id": "a", "hyperparams": "x", "status": "queued"}]}),
                true,
                Ok(vec![("a", Some("queued"), None)]), // hyperparams is read as any JSON
            ),
            // whole replies that cannot be read: never "no such task"
            (
                json!({"tasks": [{"status": "queued"}]}),
                true,
                Err("tasks[0]: no task id"),
            ),
            (
                json!({"tasks": [{"id": 7}]}),
                true,
                Err("tasks[0]: no task id"),
            ),
            (json!({}), true, Err("no tasks in the reply")),
            (
                json!({"tasks": {"id": "a"}}),
                true,
                Err("tasks: expected a list, got an object"),
            ),
            (
                json!("<html>"),
                true,
                Err("expected an object, got a string"),
            ),
        ];
        for (data, need_status, want) in cases {
            let got = decode_tasks("tasks.get_all", data.clone(), need_status);
            match (got, want) {
                (Ok(docs), Ok(want)) => {
                    assert_eq!(docs.len(), want.len(), "{data}");
                    for (doc, (id, status, why)) in docs.iter().zip(want) {
                        assert_eq!(doc.id, id, "{data}");
                        assert_eq!(doc.status.as_deref(), status, "{data}");
                        assert!(
                            !doc.unreadable
                                .as_deref()
                                .unwrap_or_default()
                                .contains("s3cr"),
                            "{data}: task data echoed: {:?}",
                            doc.unreadable
                        );
                        match (why, &doc.unreadable) {
                            (None, None) => {}
                            (Some(w), Some(u)) => assert!(u.contains(w), "{data}: {u}"),
                            (w, u) => panic!("{data}: want {w:?}, got {u:?}"),
                        }
                    }
                }
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{data}: {e}"),
                (got, want) => panic!("{data}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn queue_documents_table() {
        // (data, expected queues as (id, entry tasks), problems containing)
        type Queue<'a> = (&'a str, Vec<&'a str>);
        let cases: Vec<(Value, Vec<Queue<'_>>, Vec<&str>)> = vec![
            (
                json!({"queues": [{"id": "q", "name": "n", "entries": [{"task": "a", "added": "t"}]}]}),
                vec![("q", vec!["a"])],
                vec![],
            ),
            // one bad entry is left out (and stays in its queue); the rest are read
            (
                json!({"queues": [{"id": "q", "entries": [{"task": 1}, {"task": "b"}, "c"]}]}),
                vec![("q", vec!["b"])],
                vec![
                    "queue q: entries[0].task: invalid type",
                    "queue q: entries[2]: invalid type",
                ],
            ),
            (
                json!({"queues": [{"name": "x"}, {"id": "q2", "entries": null}]}),
                vec![("q2", vec![])],
                vec!["queues[0]: no queue id; queue skipped"],
            ),
            (
                json!({"queues": [{"id": "q", "entries": {"task": "a"}}, {"id": "r", "name": 5}]}),
                vec![],
                vec![
                    "queue q: entries: expected a list, got an object; queue skipped",
                    "queue r: name: invalid type",
                ],
            ),
        ];
        for (data, want, want_problems) in cases {
            let mut problems = Vec::new();
            let queues =
                decode_queues("queues.get_all", data.clone(), &mut problems).expect("read");
            let got: Vec<Queue<'_>> = queues
                .iter()
                .map(|q| {
                    (
                        q.id.as_str(),
                        q.entries.iter().map(|e| e.task.as_str()).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{data}");
            assert_eq!(problems.len(), want_problems.len(), "{data}: {problems:?}");
            for (p, w) in problems.iter().zip(want_problems) {
                assert!(p.starts_with(w), "{data}: {p} vs {w}");
            }
        }
        let mut problems = Vec::new();
        let e = decode_queues("queues.get_all", json!({"queues": 1}), &mut problems)
            .expect_err("whole");
        assert!(
            e.to_string()
                .contains("queues: expected a list, got a number"),
            "{e}"
        );
    }
}
