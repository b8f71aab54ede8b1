//! The batch endpoints: many tasks moved, or many status messages written, in one call. A real
//! ClearML server is a Python service shared with every SDK client and UI user that answers a
//! few hundred calls a second; one call per task made it, not pod creation, the limit of a burst.
//!
//! - `tasks.enqueue_many` (API 2.13): `ids` and one `queue`, `status_reason`, `status_message`;
//!   the server runs its single enqueue task by task (`run_batch_operation` in
//!   `apiserver/services/tasks.py`, never forced) and answers which ids `succeeded` and which
//!   `failed` (with the error each got). As with a single move, a lost reply is never re-sent
//!   blindly: the tasks are read back and only those that did not move are sent again.
//! - `tasks.update_batch` (API 2.1): a JSON-lines body, one `tasks.update` body a line; the server
//!   refuses the whole batch (400/101) if any task is gone, so such a batch is written again task
//!   by task. Writing a status message twice is harmless: it is retried like any read.

use serde_json::{Value, json};

use super::{Client, Error, Payload, Result, backoff, subcode};

/// Most ids in one `tasks.enqueue_many` (the server runs them one after the other within one
/// request; a bounded request keeps each reply quick and a lost one cheap to read back).
pub const MOVE_CHUNK: usize = 100;
/// Most lines in one `tasks.update_batch`.
pub const MESSAGE_CHUNK: usize = 500;

/// An id `tasks.enqueue_many` did not move, with the server's error for it.
#[derive(Debug)]
pub struct Refused {
    /// Task id.
    pub task: String,
    /// The error as the server reported it for this id.
    pub error: Error,
}

/// What one `tasks.enqueue_many` did.
#[derive(Debug, Default)]
pub struct Moved {
    /// Ids now in the queue (as the reply says, or as read back after a lost reply).
    pub moved: Vec<String>,
    /// Ids the server refused, each with its error.
    pub refused: Vec<Refused>,
}

const ENQUEUE_MANY: &str = "tasks.enqueue_many";
const UPDATE_BATCH: &str = "tasks.update_batch";

/// Reads a `tasks.enqueue_many` reply: `succeeded[].id`, `failed[].{id, error: {codes, msg}}`.
/// An id in neither list is refused (the server did not say it moved). 400/706 (already in that
/// queue) counts as moved, as for a single enqueue.
fn decode_moved(ids: &[String], data: &Value) -> Result<Moved> {
    let decode = |detail: &str| Error::Decode {
        endpoint: ENQUEUE_MANY,
        detail: detail.to_string(),
    };
    let list = |key: &str| -> Result<&Vec<Value>> {
        data.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| decode(&format!("no data.{key} list")))
    };
    let mut out = Moved::default();
    for item in list("succeeded")? {
        if let Some(id) = item.get("id").and_then(Value::as_str)
            && ids.iter().any(|i| i == id)
        {
            out.moved.push(id.to_string());
        }
    }
    for item in list("failed")? {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        let error = item.get("error");
        let codes: Vec<u64> = error
            .and_then(|e| e.get("codes"))
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let code = codes.first().copied().unwrap_or(0);
        let sub = codes.get(1).copied().unwrap_or(0);
        let message = error
            .and_then(|e| e.get("msg"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if code == 400 && sub == u64::from(subcode::TASK_ALREADY_QUEUED) {
            out.moved.push(id.to_string());
            continue;
        }
        out.refused.push(Refused {
            task: id.to_string(),
            error: Error::Api {
                endpoint: ENQUEUE_MANY,
                code: u16::try_from(code).unwrap_or(0),
                subcode: u32::try_from(sub).unwrap_or(0),
                message,
            },
        });
    }
    for id in ids {
        let known = out.moved.contains(id) || out.refused.iter().any(|r| &r.task == id);
        if !known {
            out.refused.push(Refused {
                task: id.clone(),
                error: decode("the reply lists this id neither as succeeded nor as failed"),
            });
        }
    }
    Ok(out)
}

/// The JSON-lines body of a `tasks.update_batch` writing these status messages.
fn message_lines(messages: &[(String, String)]) -> String {
    let mut body = String::new();
    for (task, message) in messages {
        body.push_str(&json!({"task": task, "status_message": message}).to_string());
        body.push('\n');
    }
    body
}

impl Client {
    /// Moves `ids` (at most [`MOVE_CHUNK`]) into `queue` in one `tasks.enqueue_many`, writing
    /// `reason` and `message` on each. On a server from 1.17.0 a queued task is moved (taken out
    /// of every other queue in the same call); an older server refuses it (400/110, see
    /// [`Error::is_same_status_refusal`]). A server without the endpoint answers 404 (the error
    /// is returned).
    ///
    /// NB: never re-sent blindly. After a lost reply some tasks may have moved, and enqueueing a
    /// task already in that queue again fails with 706, on which the server reverts its status
    /// and wipes its status message (where the agent records the origin queue). So the tasks are
    /// read back first (until a read succeeds); those found queued in `queue` with `message`
    /// moved, and only the others are sent again.
    pub async fn enqueue_many(
        &self,
        ids: &[String],
        queue: &str,
        reason: &str,
        message: &str,
    ) -> Result<Moved> {
        let opts = &self.inner.options;
        let mut out = Moved::default();
        let mut left: Vec<String> = ids.to_vec();
        let mut attempt = 0;
        while !left.is_empty() {
            attempt += 1;
            let body = json!({
                "ids": left, "queue": queue,
                "status_reason": reason, "status_message": message,
            });
            let mut err = match self.call_once(ENQUEUE_MANY, &body).await {
                Ok(data) => {
                    let got = decode_moved(&left, &data)?;
                    out.moved.extend(got.moved);
                    out.refused.extend(got.refused);
                    return Ok(out);
                }
                Err(e) if e.is_retryable() && attempt < opts.attempts => e,
                Err(e) => return Err(e),
            };
            // which of them moved? (read again while the reads fail)
            let fields = ["id", "status", "execution.queue", "status_message"];
            loop {
                tokio::time::sleep(backoff(opts, attempt)).await;
                match self.tasks(&left, &fields).await {
                    Ok(docs) => {
                        let happened: Vec<String> = docs
                            .into_iter()
                            .filter(|doc| {
                                doc.status.as_deref() == Some("queued")
                                    && doc.execution.as_ref().and_then(|e| e.queue.as_deref())
                                        == Some(queue)
                                    && doc.status_message.as_deref() == Some(message)
                            })
                            .map(|doc| doc.id)
                            .collect();
                        if !happened.is_empty() {
                            tracing::debug!(moved = happened.len(), error = %err, "tasks moved before the enqueue_many reply was lost");
                        }
                        left.retain(|t| !happened.contains(t));
                        out.moved.extend(happened);
                        break;
                    }
                    Err(e) if e.is_retryable() && attempt < opts.attempts => {
                        attempt += 1;
                        err = e;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// Writes the status messages `(task, message)` (at most [`MESSAGE_CHUNK`]) in one
    /// `tasks.update_batch`; returns how many tasks the server updated. If the server refuses the
    /// batch because a task is gone (400/101), or does not know the endpoint (404), each message
    /// is written with its own `tasks.update` instead, and a task gone is skipped.
    pub async fn set_status_messages(&self, messages: &[(String, String)]) -> Result<usize> {
        if messages.is_empty() {
            return Ok(0);
        }
        let lines = message_lines(messages);
        let attempts = self.inner.options.attempts;
        match self
            .call_with(UPDATE_BATCH, Payload::Lines(&lines), attempts)
            .await
        {
            Ok(data) => Ok(data
                .get("updated")
                .and_then(Value::as_u64)
                .map_or(messages.len(), |n| n as usize)),
            Err(e)
                if e.is_api(400, subcode::INVALID_TASK_ID)
                    || matches!(e, Error::Api { code: 404, .. }) =>
            {
                tracing::debug!(error = %e, "status messages written one by one");
                let mut updated = 0;
                for (task, message) in messages {
                    match self.set_status_message(task, message).await {
                        Ok(()) => updated += 1,
                        Err(e) if e.is_api(400, subcode::INVALID_TASK_ID) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(updated)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn enqueue_many_replies_decode_per_id() {
        let data = json!({
            "succeeded": [{"id": "a", "queued": true, "updated": 1}, {"id": "stranger"}],
            "failed": [
                {"id": "b", "error": {"codes": [400, 110], "msg": "Invalid task status: Task already in requested status", "data": {}}},
                {"id": "c", "error": {"codes": [400, 706], "msg": "Task already queued", "data": {}}},
                {"error": {"codes": [400, 101]}},
            ],
        });
        let got = decode_moved(&ids(&["a", "b", "c", "d"]), &data).expect("decodes");
        assert_eq!(got.moved, ids(&["a", "c"]), "706 is in that queue already");
        let refused: Vec<(&str, bool)> = got
            .refused
            .iter()
            .map(|r| (r.task.as_str(), r.error.is_same_status_refusal()))
            .collect();
        assert_eq!(refused, [("b", true), ("d", false)]);
        assert!(matches!(got.refused[1].error, Error::Decode { .. }));
        assert!(decode_moved(&ids(&["a"]), &json!({"succeeded": []})).is_err());
    }

    #[test]
    fn status_messages_go_as_json_lines() {
        let body = message_lines(&[
            ("a".into(), "K8S pending: x".into()),
            ("b".into(), "with \"quotes\"\nand a newline".into()),
        ]);
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).expect("one object a line"))
            .collect();
        assert_eq!(
            lines,
            [
                json!({"task": "a", "status_message": "K8S pending: x"}),
                json!({"task": "b", "status_message": "with \"quotes\"\nand a newline"}),
            ]
        );
    }
}
