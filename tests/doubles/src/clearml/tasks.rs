//! The `tasks.*` document endpoints: create, read (`get_by_id`, `get_all` with the server's filters,
//! hidden-task rule and `only_fields`), `edit` (status check and shallow merge of embedded
//! documents), `update` (only the user-settable fields), `ping`, hyper-parameters and requirements.
//! Status changes live in `lifecycle.rs`.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::dispatch::Ctx;
use super::doc::{self, Doc, ListFilter, fmt_time, get_str};
use super::error::{ApiError, tuple};
use super::state::{Store, TaskRecord};

/// Task types accepted by the API.
pub const TASK_TYPES: [&str; 11] = [
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "optimizer",
    "service",
    "qc",
    "custom",
];

/// Embedded documents that `tasks.edit` merges (one level deep) into the stored value.
const MERGED_FIELDS: [&str; 4] = ["script", "execution", "output", "models"];

/// Fields a user may set with `tasks.update` (and whose edit does not bump `last_update`).
const USER_SET_ALLOWED: [&str; 6] = [
    "name",
    "tags",
    "system_tags",
    "comment",
    "project",
    "status_message",
];

/// Fields the server stores but never returns.
const PRIVATE_FIELDS: [&str; 1] = ["enqueue_status"];

/// A task of the caller's company, for writing (400/101 otherwise).
pub(crate) fn task_for_write<'a>(
    store: &'a Store,
    company: &str,
    task_id: &str,
) -> Result<&'a Doc, ApiError> {
    store
        .task(task_id)
        .filter(|d| get_str(d, "company") == Some(company))
        .ok_or_else(|| {
            ApiError::invalid_task_id(
                None,
                &[
                    ("id", task_id.to_string()),
                    ("company", company.to_string()),
                ],
            )
        })
}

/// The task as the API returns it: private fields dropped, tags sorted.
pub fn public_task(stored: &Doc) -> Doc {
    let mut out = stored.clone();
    for field in PRIVATE_FIELDS {
        out.remove(field);
    }
    for field in ["tags", "system_tags"] {
        if let Some(Value::Array(items)) = out.get(field) {
            let tags: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            out.insert(field.into(), doc::sorted_tags(&tags));
        }
    }
    out
}

/// Validated, normalised create/edit fields (`prepare_create_fields`).
fn prepare_fields(
    store: &Store,
    company: &str,
    data: &Doc,
    allow_status: bool,
) -> Result<Doc, ApiError> {
    let now = store.now();
    let mut fields = Doc::new();
    for key in ["name", "comment", "parent", "project", "type", "status"] {
        if key == "status" && !allow_status {
            continue;
        }
        if let Some(v) = doc::opt_str(data, key)? {
            fields.insert(key.into(), json!(v));
        }
    }
    for key in ["tags", "system_tags"] {
        if let Some(tags) = doc::opt_str_list(data, key)? {
            doc::validate_tags(&tags)?;
            fields.insert(key.into(), json!(tags));
        }
    }
    for key in [
        "execution",
        "script",
        "hyperparams",
        "configuration",
        "models",
        "container",
        "runtime",
    ] {
        if let Some(obj) = doc::opt_obj(data, key)? {
            fields.insert(key.into(), Value::Object(obj.clone()));
        }
    }
    if let Some(dest) = doc::opt_str(data, "output_dest")? {
        fields.insert("output".into(), json!({"destination": dest}));
    }
    if let Some(name) = fields.get("name").and_then(Value::as_str) {
        let trimmed = name.trim().to_string();
        fields.insert("name".into(), json!(trimmed));
    }
    if let Some(t) = fields.get("type").and_then(Value::as_str)
        && !TASK_TYPES.contains(&t)
    {
        return Err(ApiError::validation(format!(
            "Error for field 'type'. Value '{t}' is not one of {}",
            tuple(TASK_TYPES)
        )));
    }
    if let Some(s) = fields.get("status").and_then(Value::as_str)
        && !super::lifecycle::STATUSES.contains(&s)
    {
        return Err(ApiError::validation(format!(
            "Error for field 'status'. Value '{s}' is not a valid status"
        )));
    }
    let project_exists = |id: &str| {
        store
            .projects
            .get(id)
            .is_some_and(|p| get_str(&p.doc, "company") == Some(company))
    };
    if let Some(project) = fields.get("project").and_then(Value::as_str)
        && !project.is_empty()
        && !project_exists(project)
    {
        return Err(ApiError::fields_value(
            "expecting Project id",
            &[("id", project.to_string())],
        ));
    }
    if let Some(parent) = fields.get("parent").and_then(Value::as_str)
        && !parent.is_empty()
        && !parent.starts_with("__DELETED__")
        && store.task(parent).is_none()
    {
        return Err(ApiError::invalid_task_id(
            Some("invalid parent"),
            &[("parent", parent.to_string())],
        ));
    }
    if let Some(Value::Object(script)) = fields.get_mut("script") {
        for value in script.values_mut() {
            if let Value::String(s) = value {
                *s = s.trim().to_string();
            }
        }
    }
    if let Some(Value::Object(models)) = fields.get_mut("models") {
        for kind in ["input", "output"] {
            if let Some(Value::Array(items)) = models.get_mut(kind) {
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    item.insert("updated".into(), json!(fmt_time(now)));
                }
            }
        }
    }
    Ok(fields)
}

fn check_name(fields: &Doc) -> Result<(), ApiError> {
    if let Some(name) = fields.get("name").and_then(Value::as_str)
        && name.chars().count() < 3
    {
        return Err(ApiError::data_validation(
            "String value is too short: ['name']",
        ));
    }
    Ok(())
}

/// `tasks.create`: a new `created` task owned by the caller.
pub(crate) fn create(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    doc::req_str(data, "name")?;
    doc::req_str(data, "type")?;
    let fields = prepare_fields(store, &ctx.identity.company, data, false)?;
    check_name(&fields)?;
    let now = json!(fmt_time(store.now()));
    let id = doc::new_id();
    let mut task = Doc::new();
    task.insert("id".into(), json!(id));
    task.insert("user".into(), json!(ctx.identity.user));
    task.insert("company".into(), json!(ctx.identity.company));
    task.insert("status".into(), json!("created"));
    task.insert("created".into(), now.clone());
    task.insert("last_update".into(), now.clone());
    task.insert("last_change".into(), now);
    task.insert("last_changed_by".into(), json!(ctx.identity.user));
    task.insert("tags".into(), json!([]));
    task.insert("system_tags".into(), json!([]));
    task.insert("last_iteration".into(), json!(0));
    task.extend(fields);
    let seq = store.next_seq();
    store
        .tasks
        .insert(id.clone(), TaskRecord { seq, doc: task });
    Ok(json!({"id": id}))
}

/// `tasks.get_by_id` (400/101 `ids=(…)` when missing).
pub(crate) fn get_by_id(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?;
    let task = store
        .task(task_id)
        .filter(|d| get_str(d, "company") == Some(ctx.identity.company.as_str()))
        .ok_or_else(|| ApiError::invalid_task_id(None, &[("ids", tuple([task_id]))]))?;
    Ok(json!({"task": public_task(task)}))
}

/// List fields filterable in `tasks.get_all`.
const LIST_FIELDS: [&str; 9] = [
    "id",
    "user",
    "project",
    "status",
    "type",
    "tags",
    "system_tags",
    "parent",
    "execution.queue",
];

fn ids_given(data: &Doc) -> Option<Vec<String>> {
    match doc::filter_value(data, "id")? {
        Value::Array(items) if !items.is_empty() => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        Value::String(s) if !s.is_empty() => Some(vec![s.clone()]),
        _ => None,
    }
}

fn datetime_filter(
    data: &Doc,
    field: &str,
) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, ApiError> {
    let values: Vec<String> = match doc::filter_value(data, field) {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for v in values {
        let (op, rest) = [">=", "<=", ">", "<"]
            .iter()
            .find_map(|op| v.strip_prefix(op).map(|r| (op.to_string(), r.to_string())))
            .unwrap_or(("=".to_string(), v.clone()));
        let parsed = doc::parse_time(&rest).or_else(|| {
            chrono::NaiveDate::parse_from_str(&rest, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        });
        if let Some(t) = parsed {
            out.push((op, t));
        }
    }
    Ok(out)
}

/// Task documents of the caller's company matching a `tasks.get_all` request (before projection).
pub(crate) fn query_tasks(store: &Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Vec<Doc>, ApiError> {
    let mut filters = Vec::new();
    for field in LIST_FIELDS {
        if let Some(value) = doc::filter_value(data, field) {
            let filter = ListFilter::parse(field, value)?;
            if !filter.is_empty() {
                filters.push((field, filter));
            }
        }
    }
    let mut patterns = Vec::new();
    for field in ["name", "comment"] {
        if let Some(p) = doc::opt_str(data, field)?.filter(|p| !p.is_empty()) {
            patterns.push((field, doc::pattern(field, p)?));
        }
    }
    let mut time_filters = Vec::new();
    for field in ["status_changed", "last_update"] {
        for (op, t) in datetime_filter(data, field)? {
            time_filters.push((field, op, t));
        }
    }
    let ids = ids_given(data);
    let show_hidden = doc::opt_bool(data, "search_hidden", false)? || ids.is_some();
    let mut records: Vec<&TaskRecord> = match &ids {
        // Look ids up directly instead of scanning every task.
        Some(ids) => {
            let unique: HashSet<&String> = ids.iter().collect();
            unique
                .into_iter()
                .filter_map(|id| store.tasks.get(id))
                .collect()
        }
        None => store.tasks.values().collect(),
    };
    records.sort_by_key(|r| r.seq);
    let docs = records
        .into_iter()
        .map(|r| &r.doc)
        .filter(|d| get_str(d, "company") == Some(ctx.identity.company.as_str()))
        .filter(|d| {
            show_hidden
                || !d
                    .get("system_tags")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|v| v.as_str() == Some("hidden")))
        })
        .filter(|d| {
            filters
                .iter()
                .all(|(f, filter)| filter.matches(doc::get_path(d, f)))
        })
        .filter(|d| {
            patterns
                .iter()
                .all(|(f, re)| get_str(d, f).is_some_and(|v| re.is_match(v)))
        })
        .filter(|d| {
            time_filters.iter().all(|(f, op, t)| {
                get_str(d, f)
                    .and_then(doc::parse_time)
                    .is_some_and(|v| match op.as_str() {
                        ">=" => v >= *t,
                        "<=" => v <= *t,
                        ">" => v > *t,
                        "<" => v < *t,
                        _ => v == *t,
                    })
            })
        })
        .map(public_task)
        .collect();
    doc::order_and_page(docs, data)
}

/// `tasks.get_all`.
pub(crate) fn get_all(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let docs = query_tasks(store, ctx, data)?;
    let only = doc::only_fields(data)?;
    let tasks: Vec<Value> = docs
        .iter()
        .map(|d| Value::Object(doc::project(d, &only)))
        .collect();
    Ok(json!({"tasks": tasks}))
}

/// `tasks.edit`: requires `created` unless `force`; merges `script`/`execution`/`output`/`models`
/// one level deep, replaces everything else.
pub(crate) fn edit(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    let force = doc::opt_bool(data, "force", false)?;
    let company = ctx.identity.company.clone();
    let stored = task_for_write(store, &company, &task_id)?;
    let status = get_str(stored, "status").unwrap_or("created").to_string();
    if !force && status != "created" {
        return Err(ApiError::invalid_task_status(
            None,
            &[("expected", "created".to_string()), ("status", status)],
        ));
    }
    let mut fields = prepare_fields(store, &company, data, true)?;
    check_name(&fields)?;
    for key in MERGED_FIELDS {
        if let (Some(Value::Object(new)), Some(Value::Object(old))) =
            (fields.get(key), stored.get(key))
        {
            let mut merged = old.clone();
            merged.extend(new.clone());
            fields.insert(key.into(), Value::Object(merged));
        }
    }
    if fields.is_empty() {
        return Ok(json!({"updated": 0}));
    }
    let now = json!(fmt_time(store.now()));
    let only_user_fields = fields
        .keys()
        .all(|k| USER_SET_ALLOWED.contains(&k.as_str()));
    fields.insert("last_change".into(), now.clone());
    fields.insert("last_changed_by".into(), json!(ctx.identity.user));
    if !only_user_fields {
        fields.insert("last_update".into(), now);
    }
    if let Some(record) = store.tasks.get_mut(&task_id) {
        for (k, v) in &fields {
            record.doc.insert(k.clone(), v.clone());
        }
    }
    Ok(json!({"updated": 1, "fields": fields}))
}

/// The fields a `tasks.update` body sets (the server's `prepare_update_fields` and
/// `get_safe_update_dict`): only name/tags/system_tags/comment/project/status_message, and
/// `output__error` apart. Shared with `tasks.update_batch`, which reads each item the same way.
pub(crate) struct UpdateFields {
    pub fields: Map<String, Value>,
    pub output_error: Option<String>,
}

impl UpdateFields {
    /// Reads the fields of one update body (400/12 on a wrong type).
    pub(crate) fn parse(data: &Doc) -> Result<Self, ApiError> {
        let mut fields = Map::new();
        for key in ["name", "comment", "project", "status_message"] {
            if let Some(v) = doc::opt_str(data, key)? {
                fields.insert(key.to_string(), json!(v));
            }
        }
        for key in ["tags", "system_tags"] {
            if let Some(tags) = doc::opt_str_list(data, key)? {
                doc::validate_tags(&tags)?;
                fields.insert(key.to_string(), json!(tags));
            }
        }
        let output_error = doc::opt_str(data, "output__error")?.map(str::to_string);
        Ok(Self {
            fields,
            output_error,
        })
    }

    /// Nothing applicable was sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.output_error.is_none()
    }

    /// Writes the fields (with `last_change`/`last_changed_by`) to `task_id`; returns the
    /// reply's `fields`.
    pub(crate) fn apply(self, store: &mut Store, user: &str, task_id: &str) -> Map<String, Value> {
        let Self {
            mut fields,
            output_error,
        } = self;
        let now = json!(fmt_time(store.now()));
        fields.insert("last_change".into(), now);
        fields.insert("last_changed_by".into(), json!(user));
        if let Some(record) = store.tasks.get_mut(task_id) {
            for (k, v) in &fields {
                record.doc.insert(k.clone(), v.clone());
            }
            if let Some(error) = &output_error {
                doc::set_path(&mut record.doc, "output.error", json!(error));
            }
        }
        if let Some(error) = output_error {
            fields.insert("output".into(), json!({"error": error}));
        }
        fields
    }
}

/// `tasks.update`: only name/tags/system_tags/comment/project/status_message/`output__error`.
pub(crate) fn update(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    task_for_write(store, &ctx.identity.company, &task_id)?;
    let update = UpdateFields::parse(data)?;
    if update.is_empty() {
        return Ok(json!({"updated": 0}));
    }
    let fields = update.apply(store, &ctx.identity.user, &task_id);
    Ok(json!({"updated": 1, "fields": fields}))
}

/// Sets `last_update`/`last_change` (and `active_duration` while in progress), like
/// `TaskBLL.set_last_update`.
pub(crate) fn touch(store: &mut Store, user: &str, task_id: &str) -> bool {
    let now = store.now();
    let Some(record) = store.tasks.get_mut(task_id) else {
        return false;
    };
    let ts = json!(fmt_time(now));
    if get_str(&record.doc, "status") == Some("in_progress")
        && let Some(started) = get_str(&record.doc, "started").and_then(doc::parse_time)
    {
        let secs = (now - started).num_milliseconds() as f64 / 1000.0;
        record.doc.insert("active_duration".into(), json!(secs));
    }
    record.doc.insert("last_update".into(), ts.clone());
    record.doc.insert("last_change".into(), ts);
    record.doc.insert("last_changed_by".into(), json!(user));
    true
}

/// `tasks.ping`.
pub(crate) fn ping(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    task_for_write(store, &ctx.identity.company, &task_id)?;
    touch(store, &ctx.identity.user, &task_id);
    Ok(json!({}))
}

/// `tasks.edit_hyper_params`: `properties` may change in any status; other sections need
/// `created` (or `in_progress` with `force`).
pub(crate) fn edit_hyper_params(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    let force = doc::opt_bool(data, "force", false)?;
    let replace = doc::opt_str(data, "replace_hyperparams")?
        .unwrap_or("none")
        .to_string();
    let params: Vec<Doc> = match data.get("hyperparams") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_object().cloned().ok_or_else(|| {
                    ApiError::validation("Error for field 'hyperparams'. Items have to be dicts")
                })
            })
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => {
            return Err(ApiError::validation(
                "Error for field 'hyperparams'. Field is required!",
            ));
        }
        Some(_) => {
            return Err(ApiError::validation(
                "Error for field 'hyperparams'. Value has to be a list",
            ));
        }
    };
    if !["none", "section", "all"].contains(&replace.as_str()) {
        return Err(ApiError::validation(format!(
            "Error for field 'replace_hyperparams'. Value '{replace}' is not one of (none, section, all)"
        )));
    }
    let company = ctx.identity.company.clone();
    let stored = task_for_write(store, &company, &task_id)?;
    let properties_only = params
        .iter()
        .all(|p| get_str(p, "section") == Some("properties"));
    let status = get_str(stored, "status").unwrap_or("created").to_string();
    let allowed = properties_only || status == "created" || (force && status == "in_progress");
    if !allowed {
        return Err(ApiError::invalid_task_status(
            None,
            &[("expected", "created".to_string()), ("status", status)],
        ));
    }
    let mut hyperparams = match (replace.as_str(), stored.get("hyperparams")) {
        ("all", _) | (_, None) => Map::new(),
        (_, Some(Value::Object(h))) => h.clone(),
        _ => Map::new(),
    };
    if replace == "section" {
        for p in &params {
            if let Some(section) = get_str(p, "section") {
                hyperparams.remove(section);
            }
        }
    }
    for p in params {
        let section = get_str(&p, "section").unwrap_or_default().to_string();
        let name = get_str(&p, "name").unwrap_or_default().to_string();
        let entry = hyperparams
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(section_map) = entry {
            section_map.insert(name, Value::Object(p));
        }
    }
    if let Some(record) = store.tasks.get_mut(&task_id) {
        record
            .doc
            .insert("hyperparams".into(), Value::Object(hyperparams));
    }
    touch(store, &ctx.identity.user, &task_id);
    Ok(json!({"updated": 1}))
}

/// `tasks.get_hyper_params`: `{"params": [{"task", "hyperparams": [..]}]}`.
pub(crate) fn get_hyper_params(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let ids = doc::opt_str_list(data, "tasks")?.unwrap_or_default();
    let mut params = Vec::new();
    for id in ids {
        let Some(task) = store
            .task(&id)
            .filter(|d| get_str(d, "company") == Some(ctx.identity.company.as_str()))
        else {
            continue;
        };
        let mut list = Vec::new();
        if let Some(Value::Object(sections)) = task.get("hyperparams") {
            for section in sections.values() {
                if let Value::Object(items) = section {
                    list.extend(items.values().cloned());
                }
            }
        }
        params.push(json!({"task": id, "hyperparams": list}));
    }
    Ok(json!({"params": params}))
}

/// `tasks.set_requirements`.
pub(crate) fn set_requirements(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let task_id = doc::req_str(data, "task")?.to_string();
    let requirements = doc::opt_obj(data, "requirements")?
        .cloned()
        .ok_or_else(|| {
            ApiError::validation("Error for field 'requirements'. Field is required!")
        })?;
    let stored = task_for_write(store, &ctx.identity.company, &task_id)?;
    if !stored.contains_key("script") {
        return Err(ApiError::build(
            400,
            122,
            "task is missing expected fields",
            Some("Task has no script field"),
            &[("task", task_id)],
        ));
    }
    if let Some(record) = store.tasks.get_mut(&task_id) {
        doc::set_path(
            &mut record.doc,
            "script.requirements",
            Value::Object(requirements.clone()),
        );
    }
    touch(store, &ctx.identity.user, &task_id);
    Ok(json!({"updated": 1, "fields": {"script.requirements": requirements}}))
}
