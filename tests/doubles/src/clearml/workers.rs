//! The `workers.*` service: registrations keyed by (company, user, worker id) that expire
//! `register_timeout` seconds after the last register/status report (the real server keeps them in
//! Redis with a TTL), status reports that auto-register and stamp the reported task, `get_all` in
//! the server's output shape, and the enterprise `cluster_report` kept per (worker, key).

use chrono::Duration;
use regex::Regex;
use serde_json::{Value, json};

use super::dispatch::Ctx;
use super::doc::{self, Doc, fmt_time, get_str};
use super::error::ApiError;
use super::queues;
use super::state::{ClusterReport, IdName, Store, Worker};

/// Registration TTL when none is given (`default_worker_timeout_sec`).
pub const DEFAULT_WORKER_TIMEOUT_SEC: i64 = 600;

fn worker_key(company: &str, user: &str, worker: &str) -> String {
    format!("worker_{company}_{user}_{worker}")
}

/// Creates or overwrites a registration.
fn register_worker(
    store: &mut Store,
    ctx: &Ctx<'_>,
    worker: &str,
    queues: Vec<String>,
    timeout: i64,
    tags: Vec<String>,
    system_tags: Vec<String>,
) -> Worker {
    let now = store.now();
    let id = &ctx.identity;
    Worker {
        key: worker_key(&id.company, &id.user, worker),
        id: worker.to_string(),
        user: IdName {
            id: id.user.clone(),
            name: Some(id.user_name.clone()),
        },
        company: IdName {
            id: id.company.clone(),
            name: Some(id.company_name.clone()),
        },
        ip: ctx.ip.to_string(),
        queues,
        register_time: now,
        register_timeout: timeout,
        last_activity_time: now,
        last_report_time: None,
        task: None,
        project: None,
        queue: None,
        tags,
        system_tags,
        machine_stats: None,
        last_report_timestamp: None,
        expires_at: now + Duration::seconds(timeout),
    }
}

fn save(store: &mut Store, mut worker: Worker) {
    worker.expires_at = store.now() + Duration::seconds(worker.register_timeout);
    store.workers.insert(worker.key.clone(), worker);
}

/// `workers.register`.
pub(crate) fn register(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let worker = doc::req_str(data, "worker")?.to_string();
    let timeout = match doc::opt_i64(data, "timeout")? {
        None | Some(0) => DEFAULT_WORKER_TIMEOUT_SEC,
        Some(t) if t < 0 => {
            return Err(ApiError::worker_registration_failed(
                "invalid timeout",
                &[("timeout", t.to_string()), ("worker", worker)],
            ));
        }
        Some(t) => t,
    };
    let queue_ids = doc::opt_str_list(data, "queues")?.unwrap_or_default();
    queues::check_queue_ids(store, &ctx.identity.company, &queue_ids)?;
    let tags = doc::opt_str_list(data, "tags")?.unwrap_or_default();
    let system_tags = doc::opt_str_list(data, "system_tags")?.unwrap_or_default();
    let entry = register_worker(store, ctx, &worker, queue_ids, timeout, tags, system_tags);
    save(store, entry);
    Ok(json!({}))
}

/// `workers.unregister` (unknown workers are fine: `auto_unregister`).
pub(crate) fn unregister(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let worker = doc::req_str(data, "worker")?;
    let key = worker_key(&ctx.identity.company, &ctx.identity.user, worker);
    store.workers.remove(&key);
    Ok(json!({}))
}

/// `workers.status_report`: auto-registers, refreshes the TTL, stamps the reported task.
pub(crate) fn status_report(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let worker_id = doc::req_str(data, "worker")?.to_string();
    let timestamp = doc::opt_i64(data, "timestamp")?
        .ok_or_else(|| ApiError::validation("Error for field 'timestamp'. Field is required!"))?;
    let task = doc::opt_str(data, "task")?
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let queue = doc::opt_str(data, "queue")?
        .filter(|q| !q.is_empty())
        .map(str::to_string);
    let reported_queues = doc::opt_str_list(data, "queues")?.unwrap_or_default();
    let tags = doc::opt_str_list(data, "tags")?;
    let system_tags = doc::opt_str_list(data, "system_tags")?;
    let machine_stats = doc::opt_obj(data, "machine_stats")?.cloned();

    store.purge_expired_workers();
    let key = worker_key(&ctx.identity.company, &ctx.identity.user, &worker_id);
    let mut entry = match store.workers.get(&key) {
        Some(w) => w.clone(),
        None => register_worker(
            store,
            ctx,
            &worker_id,
            Vec::new(),
            DEFAULT_WORKER_TIMEOUT_SEC,
            Vec::new(),
            Vec::new(),
        ),
    };
    let now = store.now();
    entry.ip = ctx.ip.to_string();
    if let Some(t) = tags {
        entry.tags = t;
    }
    if let Some(t) = system_tags {
        entry.system_tags = t;
    }
    if let Some(stats) = machine_stats {
        entry.machine_stats = Some(Value::Object(stats));
    }
    entry.last_report_timestamp = Some(timestamp);
    entry.last_activity_time = now;
    entry.queue = queue;
    if !reported_queues.is_empty() {
        entry.queues = reported_queues;
    }
    let result = match &task {
        None => {
            entry.task = None;
            entry.project = None;
            Ok(())
        }
        Some(task_id) => stamp_task(store, ctx, &worker_id, task_id).map(|(task, project)| {
            entry.task = Some(task);
            entry.project = project;
        }),
    };
    if result.is_ok() {
        entry.last_report_time = Some(now);
    }
    // The server saves the entry even when the task was not found.
    save(store, entry);
    result.map(|_| json!({}))
}

/// Writes `last_worker`, `last_worker_report`, `last_update`, `last_change` on the reported task.
fn stamp_task(
    store: &mut Store,
    ctx: &Ctx<'_>,
    worker: &str,
    task_id: &str,
) -> Result<(IdName, Option<IdName>), ApiError> {
    let now = json!(fmt_time(store.now()));
    let company = &ctx.identity.company;
    let record = store
        .tasks
        .get_mut(task_id)
        .filter(|r| get_str(&r.doc, "company") == Some(company.as_str()))
        .ok_or_else(|| {
            ApiError::invalid_task_id(
                None,
                &[("id", task_id.to_string()), ("company", company.clone())],
            )
        })?;
    let doc = &mut record.doc;
    doc.insert("last_worker".into(), json!(worker));
    doc.insert("last_worker_report".into(), now.clone());
    doc.insert("last_update".into(), now.clone());
    doc.insert("last_change".into(), now);
    doc.insert("last_changed_by".into(), json!(ctx.identity.user));
    let task = IdName {
        id: task_id.to_string(),
        name: get_str(doc, "name").map(str::to_string),
    };
    let project = get_str(doc, "project").map(|pid| IdName {
        id: pid.to_string(),
        name: store
            .projects
            .get(pid)
            .and_then(|p| get_str(&p.doc, "name"))
            .map(str::to_string),
    });
    Ok((task, project))
}

fn id_name(v: &IdName) -> Value {
    match &v.name {
        Some(name) => json!({"id": v.id, "name": name}),
        None => json!({"id": v.id}),
    }
}

fn queue_entry(store: &Store, queue_id: &str) -> Value {
    let mut out = Doc::new();
    out.insert("id".into(), json!(queue_id));
    if let Some(q) = store.queue(queue_id) {
        out.insert("name".into(), json!(q.name));
        if let Some(d) = &q.display_name {
            out.insert("display_name".into(), json!(d));
        }
        out.insert("num_tasks".into(), json!(q.entries.len()));
        if let Some(head) = q.entries.front() {
            let mut next = Doc::new();
            next.insert("id".into(), json!(head.task));
            if let Some(name) = store.task(&head.task).and_then(|t| get_str(t, "name")) {
                next.insert("name".into(), json!(name));
            }
            out.insert("next_task".into(), Value::Object(next));
        }
    }
    Value::Object(out)
}

/// A worker in the `workers.get_all` output shape.
pub fn worker_json(store: &Store, w: &Worker) -> Value {
    let mut out = Doc::new();
    out.insert("key".into(), json!(w.key));
    out.insert("id".into(), json!(w.id));
    out.insert("user".into(), id_name(&w.user));
    out.insert("company".into(), id_name(&w.company));
    out.insert("ip".into(), json!(w.ip));
    out.insert("register_time".into(), json!(fmt_time(w.register_time)));
    out.insert("register_timeout".into(), json!(w.register_timeout));
    out.insert(
        "last_activity_time".into(),
        json!(fmt_time(w.last_activity_time)),
    );
    if let Some(t) = w.last_report_time {
        out.insert("last_report_time".into(), json!(fmt_time(t)));
    }
    if let Some(task) = &w.task {
        let mut t = id_name(task);
        if let (Some(obj), Some(doc)) = (t.as_object_mut(), store.task(&task.id)) {
            let active = doc
                .get("active_duration")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            obj.insert("running_time".into(), json!((active * 1000.0) as i64));
            obj.insert(
                "last_iteration".into(),
                doc.get("last_iteration").cloned().unwrap_or(json!(0)),
            );
        }
        out.insert("task".into(), t);
    }
    if let Some(project) = &w.project {
        out.insert("project".into(), id_name(project));
    }
    let mut queue_ids = w.queues.clone();
    queue_ids.sort();
    queue_ids.dedup();
    if let Some(q) = &w.queue
        && queue_ids.contains(q)
    {
        out.insert("queue".into(), queue_entry(store, q));
    }
    let queues: Vec<Value> = queue_ids.iter().map(|q| queue_entry(store, q)).collect();
    out.insert("queues".into(), Value::Array(queues));
    out.insert("tags".into(), json!(w.tags));
    out.insert("system_tags".into(), json!(w.system_tags));
    Value::Object(out)
}

fn tag_match(filter: &[String], tags: &[String]) -> bool {
    let (exclude, include): (Vec<&String>, Vec<&String>) =
        filter.iter().partition(|t| t.starts_with('-'));
    let included = include.is_empty() || include.iter().any(|t| tags.contains(t));
    let excluded = exclude.iter().any(|t| tags.iter().any(|x| x == &t[1..]));
    included && !excluded
}

fn glob(pattern: &str) -> Result<Regex, ApiError> {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    re.push('$');
    doc::pattern("worker_pattern", &re)
}

fn live_workers<'a>(
    store: &'a Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Vec<&'a Worker>, ApiError> {
    let last_seen = doc::opt_i64(data, "last_seen")?.unwrap_or(3600);
    let tags = doc::opt_str_list(data, "tags")?.unwrap_or_default();
    let system_tags = doc::opt_str_list(data, "system_tags")?.unwrap_or_default();
    let pattern = doc::opt_str(data, "worker_pattern")?
        .filter(|p| !p.is_empty())
        .map(glob)
        .transpose()?;
    let now = store.now();
    Ok(store
        .workers()
        .into_iter()
        .filter(|w| w.company.id == ctx.identity.company)
        .filter(|w| {
            last_seen <= 0 || w.last_activity_time >= now - Duration::seconds(last_seen.max(1))
        })
        .filter(|w| tag_match(&tags, &w.tags) && tag_match(&system_tags, &w.system_tags))
        .filter(|w| pattern.as_ref().is_none_or(|re| re.is_match(&w.id)))
        .collect())
}

/// `workers.get_all`.
pub(crate) fn get_all(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let workers: Vec<Value> = live_workers(store, ctx, data)?
        .into_iter()
        .map(|w| worker_json(store, w))
        .collect();
    Ok(json!({"workers": workers}))
}

/// `workers.get_count`.
pub(crate) fn get_count(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    Ok(json!({"count": live_workers(store, ctx, data)?.len()}))
}

/// Whether a live worker of the company listens to the queue (`queue_watched`).
pub(crate) fn queue_is_watched(store: &Store, company: &str, queue_id: &str) -> bool {
    store
        .workers()
        .iter()
        .any(|w| w.company.id == company && w.queues.iter().any(|q| q == queue_id))
}

/// `workers.cluster_report` (enterprise): keeps the whole body, last one per (worker, key).
pub(crate) fn cluster_report(
    store: &mut Store,
    _ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let worker = doc::opt_str(data, "worker")?
        .unwrap_or_default()
        .to_string();
    let key = doc::opt_str(data, "key")?.unwrap_or_default().to_string();
    let report = ClusterReport {
        worker: worker.clone(),
        key: key.clone(),
        received: store.now(),
        body: Value::Object(data.clone()),
    };
    store.cluster_reports.insert((worker, key), report);
    Ok(json!({}))
}

/// `workers.cluster_unregister` (enterprise): drops the reports of a key.
pub(crate) fn cluster_unregister(
    store: &mut Store,
    _ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let key = doc::req_str(data, "key")?.to_string();
    store.cluster_reports.retain(|(_, k), _| k != &key);
    Ok(json!({}))
}
