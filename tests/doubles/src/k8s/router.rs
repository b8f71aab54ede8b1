//! The HTTP front: parses every request into the API server's request info (verb, group,
//! version, resource, subresource, namespace, name), authenticates the bearer token, consults
//! injected faults, dispatches to discovery or to the verbs in `api`, renders objects, lists,
//! streams and `Status` errors, and records the request log.
//!
//! One fallback handler parses paths the way the real `RequestInfoFactory` does, so a new
//! subresource is one more arm in [`resource_request`] (`pods/portforward` takes the
//! connection upgrade from the request's extensions).

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, Request, State},
    http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};

use super::{
    api::{DeleteOpts, Deleted, ListOpts, WriteOpts},
    authz, discovery,
    faults::{self, Verdict},
    kubelet::{self, LogOpts},
    patch::PatchType,
    portforward::{self, PortForwardRequest},
    requestlog::RequestRecord,
    resources::{ResourceDef, ResourceId, def, find, served},
    selectors::{FieldSelector, LabelSelector},
    state::Shared,
    status::{ApiError, success_status},
    validate::FieldValidation,
    watch::{self, WatchOpts},
};

/// The real server's request body limit.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Builds the router serving the whole API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// What the request addresses.
#[derive(Debug, Clone, Default)]
struct RequestInfo {
    resource_request: bool,
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
}

impl RequestInfo {
    fn parse(method: &Method, path: &str, params: &HashMap<String, String>) -> Self {
        let mut info = RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            ..Default::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                info.version = (*version).to_string();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                info.group = (*group).to_string();
                info.version = (*version).to_string();
                rest
            }
            _ => return info,
        };
        info.resource_request = true;
        let mut legacy_watch = false;
        let mut rest = rest;
        if rest.first() == Some(&"watch") {
            legacy_watch = true;
            rest = &rest[1..];
        }
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            info.namespace = rest[1].to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        info.resource = rest.first().copied().unwrap_or_default().to_string();
        info.name = rest.get(1).copied().unwrap_or_default().to_string();
        info.subresource = rest.get(2).copied().unwrap_or_default().to_string();
        if rest.len() > 3 {
            info.subresource = rest[2..].join("/");
        }
        let watching = legacy_watch || params.get("watch").is_some_and(|w| w == "1" || w == "true");
        info.verb = match *method {
            Method::GET | Method::HEAD if watching => "watch",
            Method::GET | Method::HEAD if info.name.is_empty() => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if info.name.is_empty() => "deletecollection",
            Method::DELETE => "delete",
            _ => "unknown",
        }
        .to_string();
        info
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let pairs: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let dry_run_all = pairs.iter().any(|(k, v)| k == "dryRun" && v == "All");
    let bad_dry_run = pairs
        .iter()
        .find(|(k, v)| k == "dryRun" && v != "All")
        .map(|(_, v)| v.clone());
    let params: HashMap<String, String> = pairs.iter().cloned().collect();
    let path = parts.uri.path().to_string();
    let info = RequestInfo::parse(&parts.method, &path, &params);
    let mut record = RequestRecord {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        params: params.clone(),
        verb: info.verb.clone(),
        group: info.group.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone(),
        namespace: info.namespace.clone(),
        name: info.name.clone(),
        status: 0,
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        at: std::time::Instant::now(),
    };
    let response = match authenticate(&shared, &parts.headers, &info, &path) {
        Err(e) => error_response(&e),
        Ok(()) => {
            let verdict = faults::check(&mut shared.faults.lock(), &record);
            let proceed = match verdict {
                Verdict::Fail(e) => Err(e),
                Verdict::Delay(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                Verdict::Proceed => Ok(()),
            };
            match proceed {
                Err(e) => error_response(&e),
                Ok(()) => {
                    let ctx = Ctx {
                        shared: &shared,
                        info: &info,
                        params: &params,
                        headers: &parts.headers,
                        method: &parts.method,
                        query: &pairs,
                        extensions: &parts.extensions,
                        dry_run: dry_run_all,
                        bad_dry_run,
                    };
                    let result = if info.resource_request {
                        resource_request(&ctx, body).await
                    } else {
                        non_resource(&ctx, &path, &parts.headers)
                    };
                    result.unwrap_or_else(|e| error_response(&e))
                }
            }
        }
    };
    record.status = response.status().as_u16();
    tracing::debug!(
        method = %record.method, path = %record.path, query = %record.query,
        status = record.status, "kube double request"
    );
    shared.requests.lock().push(record);
    shared.poke();
    response
}

fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    info: &RequestInfo,
    path: &str,
) -> Result<(), ApiError> {
    let Some(expected) = &shared.config.token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if t == expected => Ok(()),
        Some(_) => Err(ApiError::unauthorized()),
        None if shared.config.allow_anonymous => Ok(()),
        None if matches!(path, "/version" | "/healthz" | "/livez" | "/readyz") => Ok(()),
        None => {
            let user = "User \"system:anonymous\"";
            let message = if info.resource_request {
                let scope = if info.namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace {:?}", info.namespace)
                };
                let what = if info.name.is_empty() {
                    info.resource.clone()
                } else {
                    format!("{} {:?}", info.resource, info.name)
                };
                format!(
                    "{what} is forbidden: {user} cannot {} resource {:?} in API group {:?} {scope}",
                    info.verb, info.resource, info.group
                )
            } else {
                format!("forbidden: {user} cannot get path {path:?}")
            };
            let mut e = ApiError::new(403, "Forbidden", message);
            e.details = Some(json!({"name": info.name, "kind": info.resource}));
            Err(e)
        }
    }
}

struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    info: &'a RequestInfo,
    params: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    method: &'a Method,
    /// Query parameters in order, repeats kept.
    query: &'a [(String, String)],
    /// The request's extensions (hyper's `OnUpgrade` for connection upgrades).
    extensions: &'a Extensions,
    dry_run: bool,
    bad_dry_run: Option<String>,
}

impl Ctx<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    fn write_opts(&self) -> Result<WriteOpts, ApiError> {
        if let Some(bad) = &self.bad_dry_run {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {bad:?}, supported values: \"All\""
            )));
        }
        let force = match self.param("force") {
            None => None,
            Some("true") | Some("1") => Some(true),
            Some(_) => Some(false),
        };
        Ok(WriteOpts {
            dry_run: self.dry_run,
            field_manager: self.param("fieldManager").map(str::to_string),
            validation: FieldValidation::parse(self.param("fieldValidation").unwrap_or_default())?,
            force,
        })
    }

    fn selectors(&self, res: &ResourceDef) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let label_src = self.param("labelSelector").unwrap_or_default();
        let label = LabelSelector::parse(label_src)?;
        let field = FieldSelector::parse(
            self.param("fieldSelector").unwrap_or_default(),
            res,
            label_src,
        )?;
        Ok((label, field))
    }
}

fn json_response(code: StatusCode, body: &impl Serialize, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (code, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {w:?}")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(code, &e.to_status(), &[]);
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn stream_response(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response {
    let stream = ReceiverStream::new(rx).map(Ok::<Bytes, Infallible>);
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn non_resource(ctx: &Ctx<'_>, path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    if *ctx.method != Method::GET && *ctx.method != Method::HEAD {
        return Err(ApiError::method_not_allowed(ctx.method.as_str(), path));
    }
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    let api = ctx.shared.pod_group_api();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => ok(discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            ok(discovery::api_versions(host))
        }
        ["apis"] => ok(discovery::api_group_list(api)),
        ["apis", group] => {
            discovery::api_group(group, api).map_or_else(|| Err(ApiError::not_found_path()), ok)
        }
        ["api", version] => discovery::api_resource_list("", version, api)
            .map_or_else(|| Err(ApiError::not_found_path()), ok),
        ["apis", group, version] => discovery::api_resource_list(group, version, api)
            .map_or_else(|| Err(ApiError::not_found_path()), ok),
        ["openapi", "v3"] => ok(discovery::openapi_v3_root(api)),
        ["openapi", "v3", rest @ ..] => {
            let key = rest.join("/");
            let doc = discovery::openapi_v3_gv(&key, api).ok_or_else(ApiError::not_found_path)?;
            Ok(openapi_gv_response(ctx, headers, &key, &doc))
        }
        _ => Err(ApiError::not_found_path()),
    }
}

/// A group-version OpenAPI document with kube-openapi's caching headers (see [`discovery`]).
fn openapi_gv_response(ctx: &Ctx<'_>, headers: &HeaderMap, key: &str, doc: &Value) -> Response {
    let hash = discovery::openapi_v3_hash(key);
    let etag = format!("\"{hash}\"");
    if let Some(asked) = ctx.param("hash")
        && asked != hash
    {
        let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/openapi/v3/{key}?hash={hash}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_response(StatusCode::OK, doc, &[])
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if ctx.param("hash").is_some() {
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
        let expires = chrono::Utc::now() + chrono::Duration::days(365);
        if let Ok(v) =
            HeaderValue::from_str(&expires.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        {
            h.insert(header::EXPIRES, v);
        }
    }
    resp
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY}"),
        )
    })
}

fn decode_object(headers: &HeaderMap, bytes: &[u8], res: &ResourceDef) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct.split(';').next().unwrap_or_default().trim();
    let parsed: Result<Value, String> = match mime {
        "application/yaml" => serde_yaml::from_slice(bytes).map_err(|e| e.to_string()),
        "application/json" | "" | "*/*" => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other:?})"
                ),
            ));
        }
    };
    parsed.map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: {e}",
            kind = res.kind,
            version = res.version
        ))
    })
}

/// List items as the real server encodes typed lists: without their own `kind` and
/// `apiVersion` (only the list carries them).
struct ItemsRef<'a>(&'a [Arc<Value>]);

struct Untyped<'a>(&'a Value);

impl Serialize for ItemsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| Untyped(a)))
    }
}

impl Serialize for Untyped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => s.collect_map(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "kind" && k.as_str() != "apiVersion"),
            ),
            other => other.serialize(s),
        }
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: Value,
    items: ItemsRef<'a>,
}

fn list_response(res: &ResourceDef, metadata: Value, items: &[Arc<Value>]) -> Response {
    json_response(
        StatusCode::OK,
        &ListBody {
            kind: format!("{}List", res.kind),
            api_version: res.api_version(),
            metadata,
            items: ItemsRef(items),
        },
        &[],
    )
}

fn parse_number<T: std::str::FromStr>(ctx: &Ctx<'_>, key: &str) -> Result<Option<T>, ApiError> {
    match ctx.param(key) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
    }
}

fn delete_opts(ctx: &Ctx<'_>, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let mut opts = DeleteOpts {
        dry_run: ctx.dry_run,
        grace: parse_number(ctx, "gracePeriodSeconds")?,
        propagation: ctx.param("propagationPolicy").map(str::to_string),
        ..Default::default()
    };
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace = Some(g);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_string());
        }
        if let Some(uid) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
            opts.uid = Some(uid.to_string());
        }
        if let Some(rv) = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            opts.resource_version = Some(rv.to_string());
        }
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            opts.dry_run = true;
        }
    }
    Ok(opts)
}

/// `POST` of an access review: answered from the stored RBAC objects, never stored.
async fn access_review(
    ctx: &Ctx<'_>,
    kind: authz::Review,
    body: Body,
) -> Result<Response, ApiError> {
    let info = ctx.info;
    if kind.namespaced() == info.namespace.is_empty() || !info.subresource.is_empty() {
        return Err(ApiError::not_found_path());
    }
    if info.verb != "create" || !info.name.is_empty() {
        return Err(ApiError::method_not_allowed(
            ctx.method.as_str(),
            &info.resource,
        ));
    }
    let bytes = read_body(body).await?;
    let mime = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("application/json")
        .trim()
        .to_string();
    let doc: Value = match mime.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid {}: {e}", info.resource)))?,
        "application/yaml" => serde_yaml::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid {}: {e}", info.resource)))?,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other:?})"
                ),
            ));
        }
    };
    let requester = authz::Requester {
        impersonate_user: ctx
            .headers
            .get("Impersonate-User")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        impersonate_groups: ctx
            .headers
            .get_all("Impersonate-Group")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect(),
    };
    let policy = {
        let store = ctx.shared.store.lock();
        let view = super::StoreView { store: &store };
        fn typed<K: serde::de::DeserializeOwned>(items: Vec<&Value>) -> Vec<K> {
            items
                .into_iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect()
        }
        authz::Policy {
            roles: typed(view.list("roles", None)),
            role_bindings: typed(view.list("rolebindings", None)),
            cluster_roles: typed(view.list("clusterroles", None)),
            cluster_role_bindings: typed(view.list("clusterrolebindings", None)),
        }
    };
    let answer = authz::review(&policy, kind, &info.namespace, &requester, doc)?;
    Ok(json_response(StatusCode::CREATED, &answer, &[]))
}

async fn resource_request(ctx: &Ctx<'_>, body: Body) -> Result<Response, ApiError> {
    let info = ctx.info;
    if info.group == authz::GROUP
        && info.version == "v1"
        && let Some(kind) = authz::Review::from_plural(&info.resource)
    {
        return access_review(ctx, kind, body).await;
    }
    let Some(id): Option<ResourceId> = find(&info.group, &info.version, &info.resource) else {
        return Err(ApiError::not_found_path());
    };
    let res = def(id);
    if !served(res, ctx.shared.pod_group_api()) {
        return Err(ApiError::not_found_path());
    }
    let is_ns_resource = id == 0;
    // For `namespaces/{name}` the path's namespace is the object's name.
    let ns = if res.namespaced {
        info.namespace.clone()
    } else {
        String::new()
    };
    let name = if is_ns_resource && info.name.is_empty() {
        info.namespace.clone()
    } else {
        info.name.clone()
    };
    let needs_ns = matches!(
        info.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    );
    if res.namespaced && ns.is_empty() && needs_ns {
        return Err(ApiError::not_found_path());
    }
    if !res.namespaced && !is_ns_resource && !info.namespace.is_empty() {
        return Err(ApiError::not_found_path());
    }
    if !info.subresource.is_empty() {
        let Some(verbs) = res.subresource_verbs(&info.subresource) else {
            return Err(ApiError::not_found_path());
        };
        if !verbs.contains(&info.verb.as_str()) {
            return Err(ApiError::method_not_allowed(
                ctx.method.as_str(),
                &info.subresource,
            ));
        }
    }
    if info.subresource == "portforward" {
        return portforward::serve(&PortForwardRequest {
            shared: ctx.shared,
            namespace: &ns,
            name: &name,
            method: ctx.method,
            headers: ctx.headers,
            query: ctx.query,
            extensions: ctx.extensions,
        });
    }
    let shared = ctx.shared;
    let status_sub = info.subresource == "status";
    let list_ns = (!ns.is_empty()).then_some(ns.as_str());
    match info.verb.as_str() {
        "get" if info.subresource == "log" => {
            let opts = LogOpts {
                container: ctx.param("container").map(str::to_string),
                follow: matches!(ctx.param("follow"), Some("true" | "1")),
                tail_lines: parse_number(ctx, "tailLines")?,
                limit_bytes: parse_number(ctx, "limitBytes")?,
            };
            let rx = kubelet::logs(shared, &ns, &name, opts)?;
            Ok(stream_response(rx, "text/plain"))
        }
        "get" => {
            let obj = shared.get(id, &ns, &name)?;
            Ok(json_response(StatusCode::OK, &*obj, &[]))
        }
        "list" => {
            let (label, field) = ctx.selectors(res)?;
            let opts = ListOpts {
                label,
                field,
                limit: parse_number(ctx, "limit")?,
                continue_token: ctx
                    .param("continue")
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            };
            let listed = shared.list(id, list_ns, &opts)?;
            let mut metadata = json!({"resourceVersion": listed.rv.to_string()});
            if let Value::Object(m) = &mut metadata {
                if let Some(c) = listed.continue_token {
                    m.insert("continue".into(), json!(c));
                }
                if let Some(r) = listed.remaining {
                    m.insert("remainingItemCount".into(), json!(r));
                }
            }
            Ok(list_response(res, metadata, &listed.items))
        }
        "watch" => {
            let (label, mut field) = ctx.selectors(res)?;
            if !info.name.is_empty() {
                field = FieldSelector::parse(&format!("metadata.name={}", info.name), res, "")?;
            }
            let send_initial_events = matches!(ctx.param("sendInitialEvents"), Some("true"));
            let bookmarks = matches!(ctx.param("allowWatchBookmarks"), Some("true" | "1"));
            if send_initial_events
                && (!bookmarks || ctx.param("resourceVersionMatch") != Some("NotOlderThan"))
            {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "ListOptions",
                    "",
                    vec![super::status::FieldError::forbidden(
                        "sendInitialEvents",
                        "sendInitialEvents requires setting allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
                    )],
                ));
            }
            let opts = WatchOpts {
                label,
                field,
                resource_version: ctx.param("resourceVersion").unwrap_or_default().to_string(),
                bookmarks,
                timeout: parse_number::<u64>(ctx, "timeoutSeconds")?
                    .filter(|t| *t > 0)
                    .map(Duration::from_secs),
                send_initial_events,
            };
            let rx = watch::start(shared, id, list_ns.map(str::to_string), opts)?;
            Ok(stream_response(rx, "application/json"))
        }
        "create" => {
            if !info.name.is_empty() {
                return Err(ApiError::method_not_allowed("POST", &info.resource));
            }
            let opts = ctx.write_opts()?;
            let bytes = read_body(body).await?;
            let obj = decode_object(ctx.headers, &bytes, res)?;
            let w = shared.create(id, &ns, obj, &opts)?;
            Ok(json_response(StatusCode::CREATED, &*w.object, &w.warnings))
        }
        "update" => {
            let opts = ctx.write_opts()?;
            let bytes = read_body(body).await?;
            let obj = decode_object(ctx.headers, &bytes, res)?;
            let w = shared.update(id, &ns, &name, obj, status_sub, &opts)?;
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &*w.object, &w.warnings))
        }
        "patch" => {
            let opts = ctx.write_opts()?;
            let ct = ctx
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let patch_type = PatchType::from_content_type(ct)?;
            let bytes = read_body(body).await?;
            let w = shared.patch(id, &ns, &name, patch_type, &bytes, status_sub, &opts)?;
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &*w.object, &w.warnings))
        }
        "delete" => {
            if let Some(bad) = &ctx.bad_dry_run {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {bad:?}"
                )));
            }
            let bytes = read_body(body).await?;
            let opts = delete_opts(ctx, &bytes)?;
            match shared.delete(id, &ns, &name, &opts)? {
                Deleted::Gone(obj) if !res.return_deleted_object => {
                    let uid = obj
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    Ok(json_response(
                        StatusCode::OK,
                        &success_status(res, &name, uid),
                        &[],
                    ))
                }
                Deleted::Gone(obj) | Deleted::Pending(obj) => {
                    Ok(json_response(StatusCode::OK, &*obj, &[]))
                }
            }
        }
        "deletecollection" => {
            let bytes = read_body(body).await?;
            let opts = delete_opts(ctx, &bytes)?;
            let (label, field) = ctx.selectors(res)?;
            let list = ListOpts {
                label,
                field,
                ..Default::default()
            };
            let items = shared.delete_collection(id, list_ns, &list, &opts)?;
            let rv = shared.store.lock().rv;
            Ok(list_response(
                res,
                json!({"resourceVersion": rv.to_string()}),
                &items,
            ))
        }
        _ => Err(ApiError::method_not_allowed(
            ctx.method.as_str(),
            &info.resource,
        )),
    }
}
