//! The task status machine and every endpoint that moves a task between statuses: `tasks.enqueue`,
//! `tasks.dequeue`, `tasks.stop`, `tasks.started|stopped|failed|completed|close`. Mirrors the
//! server's `ChangeStatusRequest` (transition table, `force`, same-status transitions, the
//! `fields` reply, dropping the `development` system tag on `queued`) and `task_operations.py`.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use super::dispatch::Ctx;
use super::doc::{self, Doc, fmt_time, get_str};
use super::error::ApiError;
use super::queues;
use super::release::Release;
use super::state::Store;
use super::tasks;

/// Every task status the server knows.
pub const STATUSES: [&str; 10] = [
    "created",
    "queued",
    "in_progress",
    "stopped",
    "published",
    "publishing",
    "closed",
    "failed",
    "completed",
    "unknown",
];

/// How long after its last update a task still counts as run by its worker (`task_update_timeout`).
pub const TASK_UPDATE_TIMEOUT_SEC: i64 = 600;

/// Statuses reachable from `current` without `force` (`None` = not in the table, a server error).
pub fn allowed_transitions(current: &str) -> Option<&'static [&'static str]> {
    Some(match current {
        "created" => &["queued", "in_progress"],
        "queued" => &["created", "in_progress", "stopped"],
        "in_progress" => &["stopped", "failed", "created", "completed"],
        "stopped" => &[
            "closed",
            "created",
            "failed",
            "queued",
            "in_progress",
            "published",
            "publishing",
            "completed",
        ],
        "closed" => &["created", "failed", "published", "publishing", "stopped"],
        "failed" => &["created", "stopped", "published", "queued"],
        "publishing" => &["published"],
        "published" => &[],
        "completed" => &["published", "in_progress", "created"],
        _ => return None,
    })
}

/// Checks one transition like `validate_status_change` (400/110, or 500 for an unknown status).
pub fn validate_transition(current: &str, new: &str) -> Result<(), ApiError> {
    let allowed = allowed_transitions(current).ok_or_else(|| {
        ApiError::internal(&format!(
            "Current status {current} not supported by state machine"
        ))
    })?;
    if allowed.contains(&new) {
        Ok(())
    } else {
        Err(ApiError::invalid_task_status(
            Some("Invalid status change"),
            &[
                ("current_status", current.to_string()),
                ("new_status", new.to_string()),
            ],
        ))
    }
}

/// [`validate_transition`] on a server of `release`: before 1.17.0 `failed → queued` is illegal
/// too (50593f6 "Allow enqueueing failed tasks").
pub fn validate_transition_on(release: &Release, current: &str, new: &str) -> Result<(), ApiError> {
    validate_transition(current, new)?;
    if current == "failed" && new == "queued" && !release.requeues_failed() {
        return Err(ApiError::invalid_task_status(
            Some("Invalid status change"),
            &[
                ("current_status", current.to_string()),
                ("new_status", new.to_string()),
            ],
        ));
    }
    Ok(())
}

/// An additional write made together with a status change.
#[derive(Debug, Clone)]
pub(crate) enum Extra {
    /// Set a field (removed when `null`) and report it in `fields`.
    Set(&'static str, Value),
    /// Remove a field without reporting it.
    Unset(&'static str),
    /// Set a time field unless it already holds an earlier time (`min__field`), not reported.
    MinTime(&'static str, DateTime<Utc>),
}

/// A status change request (`ChangeStatusRequest`).
#[derive(Debug, Clone)]
pub(crate) struct StatusChange<'a> {
    pub new_status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    pub force: bool,
    pub allow_same: bool,
    /// The status the write is conditioned on, if not the one currently stored.
    pub expected_current: Option<&'a str>,
}

impl<'a> StatusChange<'a> {
    pub(crate) fn new(new_status: &'a str, reason: &'a str, message: &'a str, force: bool) -> Self {
        Self {
            new_status,
            reason,
            message,
            force,
            allow_same: true,
            expected_current: None,
        }
    }
}

/// Applies a status change to an existing task and returns `{"updated": 1, "fields": {…}}`.
pub(crate) fn change_status(
    store: &mut Store,
    user: &str,
    task_id: &str,
    change: &StatusChange<'_>,
    extras: Vec<Extra>,
) -> Result<Value, ApiError> {
    let now = store.now();
    let release = store.release.clone();
    let record = store
        .tasks
        .get_mut(task_id)
        .ok_or_else(|| ApiError::invalid_task_id(None, &[("id", task_id.to_string())]))?;
    let stored = get_str(&record.doc, "status")
        .unwrap_or("created")
        .to_string();
    let current = change.expected_current.unwrap_or(&stored).to_string();
    if !change.force {
        if change.new_status != current {
            validate_transition_on(&release, &current, change.new_status)?;
        } else if !change.allow_same {
            return Err(ApiError::invalid_task_status(
                Some("Task already in requested status"),
                &[
                    ("current_status", current.clone()),
                    ("new_status", change.new_status.to_string()),
                ],
            ));
        }
    }
    if stored != current {
        return Err(ApiError::build(
            400,
            121,
            "failed changing task status. probably someone changed it before you",
            None,
            &[
                ("task_id", task_id.to_string()),
                ("current_status", current),
                ("new_status", change.new_status.to_string()),
            ],
        ));
    }
    let ts = json!(fmt_time(now));
    let mut fields = Map::new();
    fields.insert("status".into(), json!(change.new_status));
    fields.insert("status_reason".into(), json!(change.reason));
    fields.insert("status_message".into(), json!(change.message));
    fields.insert("status_changed".into(), ts.clone());
    fields.insert("last_update".into(), ts.clone());
    fields.insert("last_change".into(), ts);
    fields.insert("last_changed_by".into(), json!(user));
    let doc = &mut record.doc;
    for (k, v) in &fields {
        doc.insert(k.clone(), v.clone());
    }
    if change.new_status == "queued"
        && let Some(Value::Array(tags)) = doc.get_mut("system_tags")
    {
        tags.retain(|t| t.as_str() != Some("development"));
    }
    for extra in extras {
        match extra {
            Extra::Set(path, value) => {
                doc::set_or_unset(doc, path, value.clone());
                fields.insert(path.to_string(), value);
            }
            Extra::Unset(path) => doc::remove_path(doc, path),
            Extra::MinTime(path, t) => {
                let earlier = doc::get_str(doc, path)
                    .and_then(doc::parse_time)
                    .is_some_and(|old| old <= t);
                if !earlier {
                    doc::set_path(doc, path, json!(fmt_time(t)));
                }
            }
        }
    }
    Ok(json!({"updated": 1, "fields": fields}))
}

/// `TaskBLL.dequeue(silent_fail=True)`: if the task is queued, removes it from its `execution.queue`
/// queue; every failure is swallowed.
fn dequeue_silently(store: &mut Store, company: &str, task_id: &str) {
    let Some(doc) = store.task(task_id) else {
        return;
    };
    if get_str(doc, "status") != Some("queued") {
        return;
    }
    let Some(queue) = get_str(doc, "execution.queue").map(str::to_string) else {
        return;
    };
    let _ = queues::remove_task_entries(store, company, &queue, task_id);
}

/// `TaskBLL.dequeue_and_change_status`: dequeues, optionally removes from every queue, and (for a
/// queued or in-progress task) forces the status back to `new_status`, the remembered
/// `enqueue_status`, or `created`.
pub(crate) fn dequeue_and_change_status(
    store: &mut Store,
    ctx: &Ctx<'_>,
    task_id: &str,
    reason: &str,
    message: &str,
    remove_from_all_queues: bool,
    new_status: Option<&str>,
) -> Result<Value, ApiError> {
    let company = ctx.identity.company.clone();
    dequeue_silently(store, &company, task_id);
    if remove_from_all_queues && store.release.dequeue_remove_from_all() {
        queues::remove_task_from_all_queues(store, &company, task_id, None);
    }
    let Some(doc) = store.task(task_id) else {
        return Ok(json!({"updated": 0}));
    };
    let status = get_str(doc, "status").unwrap_or("created");
    if status != "queued" && status != "in_progress" {
        return Ok(json!({"updated": 0}));
    }
    let target = new_status
        .or_else(|| get_str(doc, "enqueue_status"))
        .unwrap_or("created")
        .to_string();
    change_status(
        store,
        &ctx.identity.user,
        task_id,
        &StatusChange::new(&target, reason, message, true),
        vec![Extra::Set("enqueue_status", Value::Null)],
    )
}

/// Parameters of `tasks.enqueue`.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    /// Task id.
    pub task: String,
    /// Queue id.
    pub queue: Option<String>,
    /// Queue name (created when missing).
    pub queue_name: Option<String>,
    /// `status_reason` to write.
    pub status_reason: String,
    /// `status_message` to write.
    pub status_message: String,
    /// Skip the transition check.
    pub force: bool,
    /// Report `queue_watched`.
    pub verify_watched_queue: bool,
    /// Set `execution.queue` (default true).
    pub update_execution_queue: bool,
}

impl EnqueueRequest {
    /// Parses the request body.
    pub(crate) fn parse(data: &Doc) -> Result<Self, ApiError> {
        Ok(Self {
            task: doc::req_str(data, "task")?.to_string(),
            queue: doc::opt_str(data, "queue")?
                .filter(|q| !q.is_empty())
                .map(str::to_string),
            queue_name: doc::opt_str(data, "queue_name")?
                .filter(|q| !q.is_empty())
                .map(str::to_string),
            status_reason: doc::str_or_empty(data, "status_reason")?.to_string(),
            status_message: doc::str_or_empty(data, "status_message")?.to_string(),
            force: doc::opt_bool(data, "force", false)?,
            verify_watched_queue: doc::opt_bool(data, "verify_watched_queue", false)?,
            update_execution_queue: doc::opt_bool(data, "update_execution_queue", true)?,
        })
    }
}

/// `tasks.enqueue` (see `enqueue_task` in the server). On a release before 1.17.0
/// (`task_operations.py` at `v1.16.2`): the queue is resolved before the task is read, a queued
/// task is refused (400/110 "Task already in requested status") unless `force` (read from 1.1.0),
/// `enqueue_status` becomes the current status (so `queued` for a queued task),
/// `update_execution_queue` is not read (`execution.queue` is always set) and the task stays in
/// every other queue it is in.
pub(crate) fn enqueue(
    store: &mut Store,
    ctx: &Ctx<'_>,
    req: &EnqueueRequest,
) -> Result<Value, ApiError> {
    let release = store.release.clone();
    let moves = release.moves_queued_tasks();
    let update_execution_queue = req.update_execution_queue || !moves;
    let force = req.force && release.enqueue_force();
    let verify_watched_queue = req.verify_watched_queue && release.enqueue_verify_watched();
    if moves && verify_watched_queue && !update_execution_queue {
        return Err(ApiError::validation(
            "verify_watched_queue cannot be used with update_execution_queue=False",
        ));
    }
    if req.queue.is_some() && req.queue_name.is_some() {
        return Err(ApiError::validation(
            "Either queue id or queue name should be provided",
        ));
    }
    let company = ctx.identity.company.clone();
    let user = ctx.identity.user.clone();
    // before 1.17.0 the queue is resolved (and a named one created) before the task is read
    let resolved_first = match moves {
        true => None,
        false => Some(resolve_enqueue_queue(store, &company, req)?),
    };
    let doc = tasks::task_for_write(store, &company, &req.task)?;
    let status = get_str(doc, "status").unwrap_or("created").to_string();
    let enqueue_status = get_str(doc, "enqueue_status").map(str::to_string);
    let queued_with_queue =
        status == "queued" && get_str(doc, "execution.queue").is_some_and(|q| !q.is_empty());
    if !update_execution_queue && !queued_with_queue {
        return Err(ApiError::validation(
            "Cannot skip setting execution queue for a task that is not enqueued or does not have execution queue set",
        ));
    }
    let queue_id = match resolved_first {
        Some(q) => q,
        None => resolve_enqueue_queue(store, &company, req)?,
    };
    let before = match (&enqueue_status, status.as_str()) {
        (Some(prev), "queued") if moves => prev.clone(),
        _ => status.clone(),
    };
    let change = StatusChange {
        // 1.17.0 dropped `allow_same_state_transition=False` from the enqueue
        allow_same: moves,
        ..StatusChange::new("queued", &req.status_reason, &req.status_message, force)
    };
    let mut res = change_status(
        store,
        &user,
        &req.task,
        &change,
        vec![Extra::Set("enqueue_status", json!(before))],
    )?;
    if let Err(err) = queues::add_task(store, &company, &queue_id, &req.task) {
        // Failed enqueueing: revert to the previous status, as the server does.
        let revert = StatusChange {
            expected_current: Some("queued"),
            ..StatusChange::new(&status, "failed enqueueing", "", true)
        };
        let _ = change_status(
            store,
            &user,
            &req.task,
            &revert,
            vec![Extra::Set("enqueue_status", Value::Null)],
        );
        return Err(err);
    }
    if update_execution_queue {
        if let Some(record) = store.tasks.get_mut(&req.task) {
            doc::set_path(&mut record.doc, "execution.queue", json!(queue_id));
        }
        if let Some(fields) = res.get_mut("fields").and_then(Value::as_object_mut) {
            fields.insert("execution.queue".into(), json!(queue_id));
        }
    }
    if moves {
        queues::remove_task_from_all_queues(store, &company, &req.task, Some(&queue_id));
    }
    let mut out = Map::new();
    out.insert("queued".into(), json!(1));
    if let Value::Object(fields) = res {
        out.extend(fields);
    }
    if verify_watched_queue {
        out.insert(
            "queue_watched".into(),
            json!(super::workers::queue_is_watched(store, &company, &queue_id)),
        );
    }
    Ok(Value::Object(out))
}

/// The queue a `tasks.enqueue` names: by id, by name (created when missing), else the default.
fn resolve_enqueue_queue(
    store: &mut Store,
    company: &str,
    req: &EnqueueRequest,
) -> Result<String, ApiError> {
    Ok(match (&req.queue, &req.queue_name) {
        (Some(q), _) => q.clone(),
        (None, Some(name)) => match store
            .queues
            .values()
            .find(|q| q.company == company && &q.name == name)
        {
            Some(q) => q.id.clone(),
            None => queues::create_queue(store, company, name, None, &[], &[], None)?,
        },
        (None, None) => queues::default_queue(store, company)?.id.clone(),
    })
}

/// `tasks.dequeue`.
pub(crate) fn dequeue(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    // `new_status` is read from 1.12.0 (an older server ignores it)
    let new_status = match store.release.dequeue_new_status() {
        true => doc::opt_str(data, "new_status")?.filter(|s| !s.is_empty()),
        false => None,
    };
    if let Some(s) = new_status
        && !STATUSES.contains(&s)
    {
        return Err(ApiError::validation(format!("Invalid task status: {s}")));
    }
    if store.task(&task_id).is_none() {
        let company = ctx.identity.company.clone();
        queues::remove_task_from_all_queues(store, &company, &task_id, None);
        return Ok(json!({"dequeued": 1, "updated": 0}));
    }
    tasks::task_for_write(store, &ctx.identity.company, &task_id)?;
    let res = dequeue_and_change_status(
        store,
        ctx,
        &task_id,
        doc::str_or_empty(data, "status_reason")?,
        doc::str_or_empty(data, "status_message")?,
        doc::opt_bool(data, "remove_from_all_queues", false)?,
        new_status,
    )?;
    let mut out = Map::new();
    out.insert("dequeued".into(), json!(1));
    if let Value::Object(fields) = res {
        out.extend(fields);
    }
    Ok(Value::Object(out))
}

/// `tasks.stop`: stops at once when nobody runs the task, else asks the worker (`stopping`).
pub(crate) fn stop(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    let reason = doc::str_or_empty(data, "status_reason")?.to_string();
    let force = doc::opt_bool(data, "force", false)?;
    let company = ctx.identity.company.clone();
    let now = store.now();
    let doc = tasks::task_for_write(store, &company, &task_id)?;
    let status = get_str(doc, "status").unwrap_or("created").to_string();
    let development = doc
        .get("system_tags")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|v| v.as_str() == Some("development")));
    let run_by_worker = get_str(doc, "last_worker").is_some_and(|w| !w.is_empty())
        && get_str(doc, "last_update")
            .and_then(doc::parse_time)
            .is_some_and(|t| now - t < Duration::seconds(TASK_UPDATE_TIMEOUT_SEC));
    let queued = status == "queued";
    let (new_status, message) = if queued || development || !run_by_worker {
        if queued {
            dequeue_silently(store, &company, &task_id);
        }
        (
            "stopped".to_string(),
            format!("Stopped by {}", ctx.identity.user_name),
        )
    } else {
        (status, "stopping".to_string())
    };
    change_status(
        store,
        &ctx.identity.user,
        &task_id,
        &StatusChange::new(&new_status, &reason, &message, force),
        Vec::new(),
    )
}

/// The simple status endpoints (`started`, `stopped`, `failed`, `completed`, `close`).
pub(crate) fn set_status(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
    new_status: &str,
) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    let reason = doc::str_or_empty(data, "status_reason")?.to_string();
    let message = doc::str_or_empty(data, "status_message")?.to_string();
    let force = doc::opt_bool(data, "force", false)?;
    let now = store.now();
    if store.task(&task_id).is_none() && new_status == "in_progress" {
        return Err(ApiError::invalid_id(None, &[("task", "None".to_string())]));
    }
    tasks::task_for_write(store, &ctx.identity.company, &task_id)?;
    let change = StatusChange::new(new_status, &reason, &message, force);
    let ts = json!(fmt_time(now));
    let mut extras = Vec::new();
    match new_status {
        "in_progress" => {
            let has_started = store
                .task(&task_id)
                .is_some_and(|d| d.contains_key("started"));
            if has_started {
                extras.push(Extra::MinTime("started", now));
            } else {
                extras.push(Extra::Set("started", ts));
            }
            extras.push(Extra::Unset("completed"));
            extras.push(Extra::Unset("active_duration"));
        }
        "stopped" | "failed" | "completed" => extras.push(Extra::Set("completed", ts)),
        _ => {}
    }
    let mut res = change_status(store, &ctx.identity.user, &task_id, &change, extras)?;
    let updated = res.get("updated").cloned().unwrap_or(json!(0));
    match new_status {
        "in_progress" => {
            res["started"] = updated;
        }
        "completed" => {
            let mut published = 0;
            if doc::opt_bool(data, "publish", false)? {
                let publish = StatusChange::new("published", &reason, &message, force);
                change_status(
                    store,
                    &ctx.identity.user,
                    &task_id,
                    &publish,
                    vec![Extra::Set("published", json!(fmt_time(now)))],
                )?;
                published = 1;
            }
            res["published"] = json!(published);
        }
        _ => {}
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_matches_section_3() {
        assert!(validate_transition("created", "queued").is_ok());
        assert!(validate_transition("created", "completed").is_err());
        assert!(validate_transition("queued", "stopped").is_ok());
        assert!(validate_transition("completed", "in_progress").is_ok());
        assert!(validate_transition("published", "created").is_err());
        let err = validate_transition("created", "completed").expect_err("illegal");
        assert_eq!((err.code, err.subcode), (400, 110));
        assert_eq!(
            err.msg,
            "Invalid task status (Invalid status change): current_status=created, new_status=completed"
        );
        let err = validate_transition("unknown", "created").expect_err("unknown");
        assert_eq!(err.code, 500);
    }
}
