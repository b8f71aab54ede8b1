//! The `queues.*` service: FIFO queues of `{task, added}` entries with unique names per company,
//! the `default` queue, hidden (`k8s-glue`) queues, atomic `get_next_task`, and the task status
//! side effects of deleting/clearing a queue (mirrors `queue_bll.py` and `services/queues.py`).

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::dispatch::Ctx;
use super::doc::{self, Doc, ListFilter, fmt_time};
use super::error::{ApiError, tuple};
use super::lifecycle::{self, Extra, StatusChange};
use super::state::{Queue, QueueEntry, Store};

/// System tags that hide a queue from `queues.get_all` (`services.queues.hidden_tags`).
pub const HIDDEN_TAGS: [&str; 1] = ["k8s-glue"];

fn not_found(company: &str, queue_id: &str) -> ApiError {
    ApiError::invalid_queue_id(&[
        ("id", queue_id.to_string()),
        ("company", company.to_string()),
    ])
}

/// A queue of the caller's company (400/701 otherwise).
pub(crate) fn get_queue<'a>(
    store: &'a Store,
    company: &str,
    queue_id: &str,
) -> Result<&'a Queue, ApiError> {
    store
        .queues
        .get(queue_id)
        .filter(|q| q.company == company)
        .ok_or_else(|| not_found(company, queue_id))
}

fn get_queue_mut<'a>(
    store: &'a mut Store,
    company: &str,
    queue_id: &str,
) -> Result<&'a mut Queue, ApiError> {
    store
        .queues
        .get_mut(queue_id)
        .filter(|q| q.company == company)
        .ok_or_else(|| not_found(company, queue_id))
}

fn validate_name(
    store: &Store,
    company: &str,
    name: &str,
    own_id: Option<&str>,
) -> Result<(), ApiError> {
    if name.chars().count() < 3 {
        return Err(ApiError::data_validation(
            "String value is too short: ['name']",
        ));
    }
    let duplicate = store
        .queues
        .values()
        .any(|q| q.company == company && q.name == name && Some(q.id.as_str()) != own_id);
    if duplicate {
        return Err(ApiError::not_unique(&[
            ("name", name.to_string()),
            ("company", company.to_string()),
        ]));
    }
    Ok(())
}

/// Creates a queue (name stripped, ≥ 3 chars → 400/800, unique per company → 400/801).
pub(crate) fn create_queue(
    store: &mut Store,
    company: &str,
    name: &str,
    display_name: Option<&str>,
    tags: &[String],
    system_tags: &[String],
    metadata: Option<Value>,
) -> Result<String, ApiError> {
    doc::validate_tags(tags)?;
    doc::validate_tags(system_tags)?;
    let name = name.trim();
    validate_name(store, company, name, None)?;
    let now = store.now();
    let id = doc::new_id();
    store.queues.insert(
        id.clone(),
        Queue {
            id: id.clone(),
            name: name.to_string(),
            display_name: display_name.map(str::to_string),
            company: company.to_string(),
            created: now,
            tags: tags.to_vec(),
            system_tags: system_tags.to_vec(),
            metadata,
            last_update: now,
            entries: VecDeque::new(),
        },
    );
    Ok(id)
}

/// The queue tagged `default` (400/707 if none, 400/708 if several).
pub(crate) fn default_queue<'a>(store: &'a Store, company: &str) -> Result<&'a Queue, ApiError> {
    let defaults: Vec<&Queue> = store
        .queues()
        .into_iter()
        .filter(|q| q.company == company && q.system_tags.iter().any(|t| t == "default"))
        .collect();
    match defaults.as_slice() {
        [] => Err(ApiError::no_default_queue()),
        [one] => Ok(one),
        many => Err(ApiError::multiple_default_queues(
            &many.iter().map(|q| q.id.clone()).collect::<Vec<_>>(),
        )),
    }
}

/// Appends a task (400/701 unknown queue, 400/706 already in it). Does not look at the task.
pub(crate) fn add_task(
    store: &mut Store,
    company: &str,
    queue_id: &str,
    task_id: &str,
) -> Result<(), ApiError> {
    let now = store.now();
    let queue = get_queue_mut(store, company, queue_id)?;
    if queue.contains(task_id) {
        return Err(ApiError::task_already_queued(task_id));
    }
    queue.entries.push_back(QueueEntry {
        task: task_id.to_string(),
        added: now,
    });
    queue.last_update = now;
    Ok(())
}

/// Removes every entry of a task from one queue (400/703 when the queue or entry is missing).
pub(crate) fn remove_task_entries(
    store: &mut Store,
    company: &str,
    queue_id: &str,
    task_id: &str,
) -> Result<usize, ApiError> {
    let now = store.now();
    let queue = store
        .queues
        .get_mut(queue_id)
        .filter(|q| q.company == company && q.contains(task_id))
        .ok_or_else(|| {
            ApiError::not_queued(&[
                ("task", task_id.to_string()),
                ("id", queue_id.to_string()),
                ("company", company.to_string()),
            ])
        })?;
    let before = queue.entries.len();
    queue.entries.retain(|e| e.task != task_id);
    queue.last_update = now;
    Ok(before - queue.entries.len())
}

/// Removes a task from every queue of the company except `exclude`; returns how many queues changed.
pub(crate) fn remove_task_from_all_queues(
    store: &mut Store,
    company: &str,
    task_id: &str,
    exclude: Option<&str>,
) -> usize {
    let now = store.now();
    let mut changed = 0;
    for queue in store.queues.values_mut() {
        if queue.company != company
            || Some(queue.id.as_str()) == exclude
            || !queue.contains(task_id)
        {
            continue;
        }
        queue.entries.retain(|e| e.task != task_id);
        queue.last_update = now;
        changed += 1;
    }
    changed
}

/// Atomically pops the head entry (only if it is `task`, when given). 400/701 for an unknown queue.
pub(crate) fn pop_next(
    store: &mut Store,
    company: &str,
    queue_id: &str,
    task: Option<&str>,
) -> Result<Option<QueueEntry>, ApiError> {
    let now = store.now();
    let queue = get_queue_mut(store, company, queue_id)?;
    if let Some(task) = task
        && queue.entries.front().map(|e| e.task.as_str()) != Some(task)
    {
        return Ok(None);
    }
    let entry = queue.entries.pop_front();
    if entry.is_some() {
        queue.last_update = now;
    }
    Ok(entry)
}

/// `_update_task_status_on_removal_from_queue`: tasks whose `execution.queue` is this queue go back
/// to their pre-enqueue status (or `created`) and lose `execution.queue`.
fn revert_removed_tasks(
    store: &mut Store,
    ctx: &Ctx<'_>,
    task_ids: &[String],
    queue_id: &str,
    reason: &str,
) -> Vec<String> {
    let mut reverted = Vec::new();
    for task_id in task_ids {
        let Some(doc) = store.task(task_id) else {
            continue;
        };
        if doc::get_str(doc, "execution.queue") != Some(queue_id)
            || doc::get_str(doc, "company") != Some(ctx.identity.company.as_str())
        {
            continue;
        }
        let target = doc::get_str(doc, "enqueue_status")
            .unwrap_or("created")
            .to_string();
        reverted.push(task_id.clone());
        let _ = lifecycle::change_status(
            store,
            &ctx.identity.user,
            task_id,
            &StatusChange::new(&target, reason, "", true),
            vec![
                Extra::Set("enqueue_status", Value::Null),
                Extra::Unset("execution.queue"),
            ],
        );
    }
    reverted
}

/// Deleting a queue before 1.17.0 (`QueueBLL.delete` at `v1.16.2`): every task with an entry goes
/// back to its pre-enqueue status (or `created`), whatever its `execution.queue`, which is kept.
fn revert_entries_before_1_17(store: &mut Store, ctx: &Ctx<'_>, task_ids: &[String]) {
    for task_id in task_ids {
        let Some(doc) = store.task(task_id) else {
            continue;
        };
        if doc::get_str(doc, "company") != Some(ctx.identity.company.as_str()) {
            continue;
        }
        let target = doc::get_str(doc, "enqueue_status")
            .unwrap_or("created")
            .to_string();
        let _ = lifecycle::change_status(
            store,
            &ctx.identity.user,
            task_id,
            &StatusChange::new(&target, "Queue was deleted", "", true),
            vec![Extra::Set("enqueue_status", Value::Null)],
        );
    }
}

fn entry_json(entry: &QueueEntry) -> Value {
    json!({"task": entry.task, "added": fmt_time(entry.added)})
}

fn max_entries(data: &Doc) -> Result<Option<usize>, ApiError> {
    Ok(doc::opt_i64(data, "max_task_entries")?
        .filter(|n| *n > 0)
        .map(|n| n as usize))
}

/// Queues of the caller's company matching a `get_all` request, as JSON.
fn query_queues(store: &Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Vec<Doc>, ApiError> {
    let name = doc::opt_str(data, "name")?
        .filter(|n| !n.is_empty())
        .map(|n| doc::pattern("name", n))
        .transpose()?;
    let mut filters = Vec::new();
    for field in ["id", "tags", "system_tags"] {
        if let Some(value) = doc::filter_value(data, field) {
            let filter = ListFilter::parse(field, value)?;
            if !filter.is_empty() {
                filters.push((field, filter));
            }
        }
    }
    let has_ids = doc::filter_value(data, "id").is_some_and(|v| match v {
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => false,
    });
    let show_hidden = doc::opt_bool(data, "search_hidden", false)? || has_ids || name.is_some();
    let mut max = max_entries(data)?;
    let only = doc::only_fields(data)?;
    let include_mode = only.iter().any(|f| !f.starts_with('-'));
    let order_by_entries = data
        .get("order_by")
        .is_some_and(|o| o.to_string().contains("entries"));
    if include_mode && !order_by_entries && !only.iter().any(|f| f.starts_with("entries")) {
        // The projection drops `entries`: skip rendering thousands of them on every poll.
        max = Some(0);
    }
    let docs: Vec<Doc> = store
        .queues()
        .into_iter()
        .filter(|q| q.company == ctx.identity.company)
        .filter(|q| {
            show_hidden
                || !q
                    .system_tags
                    .iter()
                    .any(|t| HIDDEN_TAGS.contains(&t.as_str()))
        })
        .filter(|q| name.as_ref().is_none_or(|re| re.is_match(&q.name)))
        .map(|q| q.to_json(max))
        .filter(|d| filters.iter().all(|(f, filter)| filter.matches(d.get(*f))))
        .collect();
    doc::order_and_page(docs, data)
}

fn project_all(docs: Vec<Doc>, data: &Doc) -> Result<Vec<Value>, ApiError> {
    let only = doc::only_fields(data)?;
    Ok(docs
        .iter()
        .map(|d| Value::Object(doc::project(d, &only)))
        .collect())
}

/// `queues.get_all`.
pub(crate) fn get_all(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let docs = query_queues(store, ctx, data)?;
    Ok(json!({"queues": project_all(docs, data)?}))
}

/// `queues.get_all_ex`: `get_all` plus the workers listening to each queue.
pub(crate) fn get_all_ex(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let mut docs = query_queues(store, ctx, data)?;
    let workers = store.workers();
    for d in &mut docs {
        let id = doc::get_str(d, "id").unwrap_or_default().to_string();
        let listening: Vec<Value> = workers
            .iter()
            .filter(|w| w.company.id == ctx.identity.company && w.queues.contains(&id))
            .map(|w| {
                json!({
                    "name": w.id,
                    "ip": w.ip,
                    "key": w.key,
                    "task": w.task.as_ref().map(|t| json!({"id": t.id, "name": t.name})),
                })
            })
            .collect();
        d.insert("workers".into(), Value::Array(listening));
    }
    Ok(json!({"queues": project_all(docs, data)?}))
}

/// `queues.get_by_id` (ids only: a name is 400/701).
pub(crate) fn get_by_id(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?;
    let queue = get_queue(store, &ctx.identity.company, queue_id)?;
    Ok(json!({"queue": queue.to_json(max_entries(data)?)}))
}

/// `queues.get_default`.
pub(crate) fn get_default(
    store: &mut Store,
    ctx: &Ctx<'_>,
    _data: &Doc,
) -> Result<Value, ApiError> {
    let queue = default_queue(store, &ctx.identity.company)?;
    Ok(json!({"id": queue.id, "name": queue.name}))
}

/// `queues.create`.
pub(crate) fn create(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let name = doc::req_str(data, "name")?;
    let tags = doc::opt_str_list(data, "tags")?.unwrap_or_default();
    let system_tags = doc::opt_str_list(data, "system_tags")?.unwrap_or_default();
    let metadata = doc::opt_obj(data, "metadata")?.map(|m| Value::Object(m.clone()));
    let id = create_queue(
        store,
        &ctx.identity.company,
        name,
        doc::opt_str(data, "display_name")?,
        &tags,
        &system_tags,
        metadata,
    )?;
    Ok(json!({"id": id}))
}

/// `queues.update`: partial update of name/tags/system_tags/metadata/display_name.
pub(crate) fn update(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?.to_string();
    let company = ctx.identity.company.clone();
    get_queue(store, &company, &queue_id)?;
    let name = doc::opt_str(data, "name")?.map(|n| n.trim().to_string());
    if let Some(name) = &name {
        validate_name(store, &company, name, Some(&queue_id))?;
    }
    let tags = doc::opt_str_list(data, "tags")?;
    let system_tags = doc::opt_str_list(data, "system_tags")?;
    for t in [&tags, &system_tags].into_iter().flatten() {
        doc::validate_tags(t)?;
    }
    let metadata = doc::opt_obj(data, "metadata")?.cloned();
    let display_name = doc::opt_str(data, "display_name")?.map(str::to_string);
    let now = store.now();
    let queue = get_queue_mut(store, &company, &queue_id)?;
    let mut fields = Doc::new();
    if let Some(name) = name {
        fields.insert("name".into(), json!(name));
        queue.name = name;
    }
    if let Some(tags) = tags {
        fields.insert("tags".into(), doc::sorted_tags(&tags));
        queue.tags = tags;
    }
    if let Some(tags) = system_tags {
        fields.insert("system_tags".into(), doc::sorted_tags(&tags));
        queue.system_tags = tags;
    }
    if let Some(m) = metadata {
        fields.insert("metadata".into(), Value::Object(m.clone()));
        queue.metadata = Some(Value::Object(m));
    }
    if let Some(d) = display_name {
        fields.insert("display_name".into(), json!(d));
        queue.display_name = Some(d);
    }
    if fields.is_empty() {
        return Ok(json!({"updated": 0, "fields": {}}));
    }
    queue.last_update = now;
    fields.insert("last_update".into(), json!(fmt_time(now)));
    Ok(json!({"updated": 1, "fields": fields}))
}

/// `queues.delete` (400/702 when not empty, unless `force`).
pub(crate) fn delete(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?.to_string();
    let force = doc::opt_bool(data, "force", false)?;
    let queue = get_queue(store, &ctx.identity.company, &queue_id)?;
    let tasks = queue.task_ids();
    if !tasks.is_empty() {
        if !force {
            return Err(ApiError::queue_not_empty(&[("id", queue_id)]));
        }
        if store.release.moves_queued_tasks() {
            let reason = format!("Queue {queue_id} was deleted");
            revert_removed_tasks(store, ctx, &tasks, &queue_id, &reason);
        } else {
            revert_entries_before_1_17(store, ctx, &tasks);
        }
    }
    store.queues.remove(&queue_id);
    Ok(json!({"deleted": 1}))
}

/// `queues.add_task`: appends without checking the task; sets `execution.queue` unless told not to.
pub(crate) fn add_task_endpoint(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?.to_string();
    let task_id = doc::req_str(data, "task")?.to_string();
    // before 1.17.0 `queues.add_task` only adds the entry
    let update_execution_queue =
        doc::opt_bool(data, "update_execution_queue", true)? && store.release.moves_queued_tasks();
    add_task(store, &ctx.identity.company, &queue_id, &task_id)?;
    if update_execution_queue && let Some(record) = store.tasks.get_mut(&task_id) {
        doc::set_path(&mut record.doc, "execution.queue", json!(queue_id));
    }
    Ok(json!({"added": 1}))
}

/// `queues.get_next_task`: pops the head; `{}` when empty; a popped `stopped` task becomes `queued`.
pub(crate) fn get_next_task(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?.to_string();
    let task = doc::opt_str(data, "task")?.filter(|t| !t.is_empty());
    let get_task_info = doc::opt_bool(data, "get_task_info", false)?;
    let Some(entry) = pop_next(store, &ctx.identity.company, &queue_id, task)? else {
        return Ok(json!({}));
    };
    let mut out = Doc::new();
    out.insert("entry".into(), entry_json(&entry));
    let unstop = store.release.moves_queued_tasks();
    if let Some(record) = store.tasks.get_mut(&entry.task) {
        // 1.17.0 and later: a popped `stopped` task is `queued` again (a race fix)
        if unstop && doc::get_str(&record.doc, "status") == Some("stopped") {
            record.doc.insert("status".into(), json!("queued"));
        }
        if get_task_info {
            out.insert(
                "task_info".into(),
                json!({
                    "company": record.doc.get("company"),
                    "user": record.doc.get("user"),
                }),
            );
        }
    }
    Ok(Value::Object(out))
}

/// `queues.remove_task` (400/703 when not in the queue).
pub(crate) fn remove_task(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?.to_string();
    let task_id = doc::req_str(data, "task")?.to_string();
    // read from 1.17.0 (an older server only removes the entry)
    let update_task_status =
        doc::opt_bool(data, "update_task_status", false)? && store.release.moves_queued_tasks();
    let removed = remove_task_entries(store, &ctx.identity.company, &queue_id, &task_id)?;
    if removed > 0 && update_task_status {
        let reason = format!("Task was removed from the queue {queue_id}");
        revert_removed_tasks(store, ctx, &[task_id], &queue_id, &reason);
    }
    Ok(json!({"removed": removed}))
}

/// `queues.clear_queue`.
pub(crate) fn clear_queue(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?.to_string();
    let company = ctx.identity.company.clone();
    let queue = store
        .queues
        .get(&queue_id)
        .filter(|q| q.company == company)
        .ok_or_else(|| ApiError::invalid_queue_id(&[("queue", queue_id.clone())]))?;
    let tasks = queue.task_ids();
    if tasks.is_empty() {
        return Ok(json!({"removed_tasks": []}));
    }
    let reason = format!("Queue {queue_id} was cleared");
    let reverted = revert_removed_tasks(store, ctx, &tasks, &queue_id, &reason);
    let now = store.now();
    if let Some(q) = store.queues.get_mut(&queue_id) {
        q.entries.clear();
        q.last_update = now;
    }
    Ok(json!({"removed_tasks": reverted}))
}

#[derive(Debug, Clone, Copy)]
enum Move {
    First,
    Last,
    By(i64),
}

fn reposition(store: &mut Store, ctx: &Ctx<'_>, data: &Doc, how: Move) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?.to_string();
    let task_id = doc::req_str(data, "task")?.to_string();
    let company = ctx.identity.company.clone();
    let now = store.now();
    let queue = store
        .queues
        .get_mut(&queue_id)
        .filter(|q| q.company == company && q.contains(&task_id))
        .ok_or_else(|| {
            ApiError::not_queued(&[
                ("task", task_id.clone()),
                ("id", queue_id.clone()),
                ("company", company.clone()),
            ])
        })?;
    let position = queue
        .entries
        .iter()
        .position(|e| e.task == task_id)
        .unwrap_or_default();
    let last = queue.entries.len() - 1;
    let target = match how {
        Move::First => 0,
        Move::Last => last,
        Move::By(n) => (position as i64 + n).clamp(0, last as i64) as usize,
    };
    if target != position
        && let Some(entry) = queue.entries.remove(position)
    {
        queue.entries.insert(target, entry);
        queue.last_update = now;
    }
    Ok(json!({"position": target}))
}

fn move_count(data: &Doc) -> Result<i64, ApiError> {
    Ok(doc::opt_i64(data, "count")?.unwrap_or(1))
}

/// `queues.move_task_forward` (towards the head).
pub(crate) fn move_task_forward(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let n = move_count(data)?;
    reposition(store, ctx, data, Move::By(-n))
}

/// `queues.move_task_backward`.
pub(crate) fn move_task_backward(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let n = move_count(data)?;
    reposition(store, ctx, data, Move::By(n))
}

/// `queues.move_task_to_front`.
pub(crate) fn move_task_to_front(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    reposition(store, ctx, data, Move::First)
}

/// `queues.move_task_to_back`.
pub(crate) fn move_task_to_back(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    reposition(store, ctx, data, Move::Last)
}

/// `queues.peek_task`.
pub(crate) fn peek_task(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?;
    let queue = get_queue(store, &ctx.identity.company, queue_id)?;
    Ok(json!({"task": queue.entries.front().map(|e| e.task.clone())}))
}

/// `queues.get_num_entries`.
pub(crate) fn get_num_entries(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let queue_id = doc::req_str(data, "queue")?;
    let queue = get_queue(store, &ctx.identity.company, queue_id)?;
    Ok(json!({"num": queue.entries.len()}))
}

/// `queues.get_queue_metrics`: the metrics live in Elasticsearch on a real server; none here.
pub(crate) fn get_queue_metrics(
    _store: &mut Store,
    _ctx: &Ctx<'_>,
    _data: &Doc,
) -> Result<Value, ApiError> {
    Ok(json!({"queues": []}))
}

/// Validates queue ids for `workers.register` (400/701 with `ids=(…)`).
pub(crate) fn check_queue_ids(
    store: &Store,
    company: &str,
    ids: &[String],
) -> Result<(), ApiError> {
    let mut missing: Vec<&String> = ids
        .iter()
        .filter(|id| get_queue(store, company, id).is_err())
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_queue_id(&[("ids", tuple(missing))]))
    }
}
