//! The small services an SDK or agent touches besides queues/tasks/workers: `projects.*`
//! (get_all/get_by_id/create, enough for `Task.create(project_name=…)`), `events.add_batch`/`add`
//! (stored, and they refresh the task's `last_update` like the server), `debug.ping`, `server.info`.

use serde_json::{Value, json};

use super::auth::SERVER_BUILD;
use super::dispatch::Ctx;
use super::doc::{self, Doc, ListFilter, fmt_time, get_str};
use super::error::ApiError;
use super::state::{Event, Project, Store};
use super::tasks;

/// `projects.get_all`: `name` regex, list filters, hidden rule, `only_fields`.
pub(crate) fn projects_get_all(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
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
    let show_hidden =
        doc::opt_bool(data, "search_hidden", false)? || doc::filter_value(data, "id").is_some();
    let docs: Vec<Doc> = store
        .projects()
        .into_iter()
        .filter(|p| get_str(p, "company") == Some(ctx.identity.company.as_str()))
        .filter(|p| {
            show_hidden
                || !p
                    .get("system_tags")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|v| v.as_str() == Some("hidden")))
        })
        .filter(|p| {
            name.as_ref()
                .is_none_or(|re| get_str(p, "name").is_some_and(|n| re.is_match(n)))
        })
        .filter(|p| filters.iter().all(|(f, filter)| filter.matches(p.get(*f))))
        .cloned()
        .collect();
    let docs = doc::order_and_page(docs, data)?;
    let only = doc::only_fields(data)?;
    let projects: Vec<Value> = docs
        .iter()
        .map(|d| Value::Object(doc::project(d, &only)))
        .collect();
    Ok(json!({"projects": projects}))
}

/// `projects.get_by_id`.
pub(crate) fn projects_get_by_id(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let id = doc::req_str(data, "project")?;
    let project = store
        .projects
        .get(id)
        .filter(|p| get_str(&p.doc, "company") == Some(ctx.identity.company.as_str()))
        .ok_or_else(|| {
            ApiError::build(
                400,
                401,
                "invalid project id",
                None,
                &[("id", id.to_string())],
            )
        })?;
    Ok(json!({"project": project.doc}))
}

/// Creates a project (unique name per company → 400/801 otherwise).
pub(crate) fn create_project(
    store: &mut Store,
    ctx: &Ctx<'_>,
    name: &str,
    description: &str,
    tags: Vec<String>,
    system_tags: Vec<String>,
    default_output_destination: Option<&str>,
) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::build(
            400,
            407,
            "invalid project name",
            Some("Project name cannot be empty"),
            &[],
        ));
    }
    doc::validate_tags(&tags)?;
    doc::validate_tags(&system_tags)?;
    let company = &ctx.identity.company;
    let exists = store.projects.values().any(|p| {
        get_str(&p.doc, "company") == Some(company.as_str())
            && get_str(&p.doc, "name") == Some(name)
    });
    if exists {
        return Err(ApiError::not_unique(&[
            ("name", name.to_string()),
            ("company", company.clone()),
        ]));
    }
    let now = json!(fmt_time(store.now()));
    let id = doc::new_id();
    let mut project = Doc::new();
    project.insert("id".into(), json!(id));
    project.insert("name".into(), json!(name));
    project.insert(
        "basename".into(),
        json!(name.rsplit('/').next().unwrap_or(name)),
    );
    project.insert("description".into(), json!(description));
    project.insert("company".into(), json!(company));
    project.insert("user".into(), json!(ctx.identity.user));
    project.insert("created".into(), now.clone());
    project.insert("last_update".into(), now);
    project.insert("tags".into(), doc::sorted_tags(&tags));
    project.insert("system_tags".into(), doc::sorted_tags(&system_tags));
    if let Some(dest) = default_output_destination {
        project.insert("default_output_destination".into(), json!(dest));
    }
    let seq = store.next_seq();
    store
        .projects
        .insert(id.clone(), Project { seq, doc: project });
    Ok(id)
}

/// `projects.create`.
pub(crate) fn projects_create(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let name = doc::req_str(data, "name")?.to_string();
    let description = doc::str_or_empty(data, "description")?.to_string();
    let tags = doc::opt_str_list(data, "tags")?.unwrap_or_default();
    let system_tags = doc::opt_str_list(data, "system_tags")?.unwrap_or_default();
    let dest = doc::opt_str(data, "default_output_destination")?.map(str::to_string);
    let id = create_project(
        store,
        ctx,
        &name,
        &description,
        tags,
        system_tags,
        dest.as_deref(),
    )?;
    Ok(json!({"id": id}))
}

fn store_events(store: &mut Store, ctx: &Ctx<'_>, events: Vec<Value>) -> Result<Value, ApiError> {
    if events.is_empty() {
        return Err(ApiError::batch_contains_no_items());
    }
    let now = store.now();
    let mut touched = Vec::new();
    for event in &events {
        if let Some(task) = event.get("task").and_then(Value::as_str)
            && !touched.iter().any(|t| t == task)
        {
            touched.push(task.to_string());
        }
    }
    let added = events.len();
    store.events.extend(events.into_iter().map(|body| Event {
        received: now,
        body,
    }));
    for task in touched {
        let own = store
            .task(&task)
            .is_some_and(|d| get_str(d, "company") == Some(ctx.identity.company.as_str()));
        if own {
            tasks::touch(store, &ctx.identity.user, &task);
        }
    }
    Ok(json!({"added": added, "errors": 0, "errors_info": {}}))
}

/// `events.add_batch`: a JSON-lines body (or a single JSON object), stored as sent.
pub(crate) fn events_add_batch(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let events: Vec<Value> = match ctx.batch {
        Some(items) => items.to_vec(),
        None if !data.is_empty() => vec![Value::Object(data.clone())],
        None => Vec::new(),
    };
    store_events(store, ctx, events)
}

/// `events.add`: one event.
pub(crate) fn events_add(store: &mut Store, ctx: &Ctx<'_>, data: &Doc) -> Result<Value, ApiError> {
    store_events(store, ctx, vec![Value::Object(data.clone())])?;
    Ok(json!({}))
}

/// `debug.ping`: echoes the body plus the server greeting (no authentication).
pub(crate) fn debug_ping(
    _store: &mut Store,
    _ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let mut out = data.clone();
    out.insert("msg".into(), json!("ClearML server"));
    Ok(Value::Object(out))
}

/// `server.info` (API 1.0–2.7): `version`, `build`, `commit` (`services/server/__init__.py`).
pub(crate) fn server_info(
    store: &mut Store,
    _ctx: &Ctx<'_>,
    _data: &Doc,
) -> Result<Value, ApiError> {
    Ok(json!({
        "version": store.release.text,
        "build": SERVER_BUILD,
        "commit": SERVER_BUILD,
    }))
}

/// `server.info` (API 2.8–2.11): adds the server's `uid`.
pub(crate) fn server_info_2_8(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let mut out = server_info(store, ctx, data)?;
    out["uid"] = json!(store.server_uid);
    Ok(out)
}

/// `server.info` (API 2.12 and later): adds the highest API version instead (the 2.12 handler
/// extends the 1.0 one, so `uid` is not there).
pub(crate) fn server_info_2_12(
    store: &mut Store,
    ctx: &Ctx<'_>,
    data: &Doc,
) -> Result<Value, ApiError> {
    let mut out = server_info(store, ctx, data)?;
    out["api_version"] = json!(store.release.api.to_string());
    Ok(out)
}
