//! The batch task endpoints, as clearml-server runs them (`apiserver/services/tasks.py`):
//!
//! - `tasks.enqueue_many` (API 2.13; `queue_name` 2.19, `verify_watched_queue` 2.22): the body
//!   is one JSON object with `ids` and one `queue`/`queue_name`, `status_reason`,
//!   `status_message`; `run_batch_operation` runs the single enqueue (`enqueue_task`, never
//!   forced) task by task, in order, and an API error of one id lands in `failed` as
//!   `{id, error: {codes: [code, subcode], msg, data}}` while the others go on. `ids` missing or
//!   empty is refused by the request model (`Length(minimum_value=1)`, 400/12). With
//!   `verify_watched_queue`, `queue_watched` is reported for the first succeeded task's queue.
//!   `validate_tasks` is accepted and not acted on (the double has no project/model checks).
//! - `tasks.update_batch` (API 2.1): a JSON-lines body (`Content-Type: application/json-lines`,
//!   one `tasks.update` body per line; a plain JSON object is read as one item). Items are keyed
//!   by `task` (a later line for the same task replaces an earlier one); any unknown task fails
//!   the whole call with 400/101 `ids=(…)` before anything is written; each item sets the fields
//!   `tasks.update` sets; the reply is `{"updated": n}`, n the items that changed something. An
//!   empty body is not refused: the server's `batched_data` is then `[]`, never `None`, so its
//!   `BatchContainsNoItems` check does not fire and the reply is `{"updated": 0}`. An item
//!   without `task` is a `KeyError` in the server: a 500.

use serde_json::{Map, Value, json};

use super::dispatch::Ctx;
use super::doc::{self, Doc};
use super::error::{ApiError, tuple};
use super::lifecycle::{self, EnqueueRequest};
use super::state::Store;
use super::tasks::{self, UpdateFields};

/// One failed id as `run_batch_operation` reports it.
fn failure(id: &str, e: &ApiError) -> Value {
    json!({
        "id": id,
        "error": {"codes": [e.code, e.subcode], "msg": e.msg, "data": {}},
    })
}

/// `tasks.enqueue_many`.
pub(crate) fn enqueue_many(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let ids = doc::opt_str_list(data, "ids")?.unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::validation(
            "error for field 'ids'. value '[]' length is lower than allowed minimum '1'.",
        ));
    }
    let queue = doc::opt_str(data, "queue")?
        .filter(|q| !q.is_empty())
        .map(str::to_string);
    let queue_name = doc::opt_str(data, "queue_name")?
        .filter(|q| !q.is_empty())
        .map(str::to_string);
    let status_reason = doc::str_or_empty(data, "status_reason")?.to_string();
    let status_message = doc::str_or_empty(data, "status_message")?.to_string();
    let _validate_tasks = doc::opt_bool(data, "validate_tasks", false)?;
    let verify_watched = doc::opt_bool(data, "verify_watched_queue", false)?
        && store.release.enqueue_verify_watched();
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    let mut first_queue: Option<String> = None;
    for id in &ids {
        let req = EnqueueRequest {
            task: id.clone(),
            queue: queue.clone(),
            queue_name: queue_name.clone(),
            status_reason: status_reason.clone(),
            status_message: status_message.clone(),
            force: false,
            verify_watched_queue: false,
            update_execution_queue: true,
        };
        match lifecycle::enqueue(store, ctx, &req) {
            Ok(Value::Object(mut res)) => {
                res.remove("queued");
                if first_queue.is_none() {
                    first_queue = res
                        .get("fields")
                        .and_then(|f| f.get("execution.queue"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                let mut item = Map::new();
                item.insert("id".into(), json!(id));
                item.insert("queued".into(), json!(true));
                item.extend(res);
                succeeded.push(Value::Object(item));
            }
            Ok(_) => succeeded.push(json!({"id": id, "queued": true})),
            Err(e) => failed.push(failure(id, &e)),
        }
    }
    let mut out = json!({"succeeded": succeeded, "failed": failed});
    if verify_watched && let Some(q) = first_queue {
        let company = ctx.identity.company.clone();
        out["queue_watched"] = json!(super::workers::queue_is_watched(store, &company, &q));
    }
    Ok(out)
}

/// `tasks.update_batch`.
pub(crate) fn update_batch(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let items: Vec<Doc> = match ctx.batch {
        Some(items) => items
            .iter()
            .filter_map(|v| v.as_object().cloned())
            .collect(),
        None if !data.is_empty() => vec![data.clone()],
        None => Vec::new(),
    };
    // `{i["task"]: i for i in items}`: first position, last value
    let mut by_task: Vec<(String, Doc)> = Vec::new();
    for item in items {
        let task = match item.get("task") {
            Some(Value::String(t)) => t.clone(),
            Some(other) => other.to_string(),
            None => return Err(ApiError::internal("KeyError: 'task'")),
        };
        match by_task.iter_mut().find(|(t, _)| *t == task) {
            Some(slot) => slot.1 = item,
            None => by_task.push((task, item)),
        }
    }
    let company = ctx.identity.company.clone();
    let mut missing: Vec<&str> = by_task
        .iter()
        .filter(|(t, _)| tasks::task_for_write(store, &company, t).is_err())
        .map(|(t, _)| t.as_str())
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(ApiError::invalid_task_id(None, &[("ids", tuple(missing))]));
    }
    // every item is read before anything is written (a bad one fails the call)
    let updates = by_task
        .iter()
        .map(|(t, item)| Ok((t.clone(), UpdateFields::parse(item)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut updated = 0;
    for (task, update) in updates {
        if update.is_empty() {
            continue;
        }
        update.apply(store, &ctx.identity.user, &task);
        updated += 1;
    }
    Ok(json!({"updated": updated}))
}
