//! The API verbs (create, get, list, update, patch, apply, delete, deletecollection) over the
//! store, shared by the HTTP handlers and the Rust test handle so both go through the same
//! server rules: system metadata, defaults, validation, optimistic concurrency, dry-run,
//! no-op writes that keep the resourceVersion, finalizers and graceful deletion.

use std::sync::Arc;

use base64::Engine as _;
use rand::Rng as _;
use serde_json::{Map, Value, json};

use super::{
    apply::{self, Applier},
    defaults,
    patch::{self, PatchType},
    resources::{ResourceDef, ResourceId, def, find},
    schema,
    selectors::{FieldSelector, LabelSelector},
    state::{Pending, Shared, now, now_plus},
    status::{ApiError, FieldError},
    store::Store,
    validate::{self, FieldValidation},
};

/// Options shared by writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub validation: FieldValidation,
    pub force: Option<bool>,
}

/// A successful write.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub object: Arc<Value>,
    pub warnings: Vec<String>,
    pub created: bool,
}

/// List options.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListOpts {
    pub label: LabelSelector,
    pub field: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// A list result.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub rv: u64,
    pub items: Vec<Arc<Value>>,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Delete options (query parameters and `DeleteOptions` body merged).
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub grace: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub(crate) enum Deleted {
    /// Removed now; the last state.
    Gone(Arc<Value>),
    /// Marked (deletionTimestamp set) and waiting for the kubelet, a controller or finalizers.
    Pending(Arc<Value>),
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object)
        && let Value::Object(root) = obj
    {
        root.insert("metadata".into(), Value::Object(Map::new()));
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(obj: &Value) -> usize {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks `kind`/`apiVersion` of a body against the endpoint, filling them in if absent.
fn check_type(res: &ResourceDef, obj: &mut Value) -> Result<(), ApiError> {
    let Value::Object(root) = obj else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    let api_version = res.api_version();
    match root.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            root.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match root.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            root.insert("kind".into(), json!(res.kind));
        }
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
    }
    Ok(())
}

fn check_name(obj: &Value, name: &str) -> Result<(), ApiError> {
    let body_name = meta_str(obj, "name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// Sets the namespace of a namespaced object, rejecting a conflicting one.
fn check_namespace(res: &ResourceDef, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
    let m = meta_mut(obj);
    if !res.namespaced {
        m.remove("namespace");
        return Ok(());
    }
    match m.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("namespace".into(), json!(ns));
            Ok(())
        }
        Some(n) if n == ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

fn invalid(res: &ResourceDef, obj: &Value, errs: Vec<FieldError>) -> Result<(), ApiError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            res.group,
            res.kind,
            meta_str(obj, "name"),
            errs,
        ))
    }
}

const NAMESPACES: ResourceId = 0;

impl Shared {
    /// `POST` to a collection.
    pub(crate) fn create(
        self: &Arc<Self>,
        id: ResourceId,
        ns: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let mut store = self.store.lock();
        let written = self.create_locked(&mut store, id, ns, body, opts)?;
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(written)
    }

    fn create_locked(
        self: &Arc<Self>,
        store: &mut Store,
        id: ResourceId,
        ns: &str,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let res = def(id);
        check_type(res, &mut body)?;
        let (mut obj, warnings) = validate::decode(res, body, opts.validation)?;
        check_namespace(res, &mut obj, ns)?;
        {
            let m = meta_mut(&mut obj);
            let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty()
                && let Some(prefix) = m.get("generateName").and_then(Value::as_str)
                && !prefix.is_empty()
            {
                let mut prefix = prefix.to_string();
                prefix.truncate(58);
                let generated = format!("{prefix}{}", random_suffix());
                m.insert("name".into(), json!(generated));
            }
            if m.get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|rv| !rv.is_empty())
            {
                return Err(ApiError::internal(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            for f in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                m.remove(f);
            }
            if res.has_generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        let name = meta_str(&obj, "name").to_string();
        if res.namespaced {
            match store.get(NAMESPACES, "", ns) {
                None => {
                    return Err(ApiError::not_found(def(NAMESPACES), ns));
                }
                Some(n) if !meta_str(n, "deletionTimestamp").is_empty() => {
                    let msg = format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    );
                    let mut e = ApiError::forbidden(
                        res,
                        &name,
                        format!("{} {name:?} is forbidden: {msg}", res.group_resource()),
                    );
                    if let Some(Value::Object(d)) = &mut e.details {
                        d.insert(
                            "causes".into(),
                            json!([{"reason": "NamespaceTerminating", "message": msg, "field": "metadata.namespace"}]),
                        );
                    }
                    return Err(e);
                }
                Some(_) => {}
            }
        }
        defaults::apply(res, &mut obj, true, &mut || store.allocate_cluster_ip());
        invalid(res, &obj, validate::validate(res, &obj, None))?;
        let ns_key = if res.namespaced { ns } else { "" };
        if store.get(id, ns_key, &name).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        if opts.dry_run {
            return Ok(Written {
                object: Arc::new(obj),
                warnings,
                created: true,
            });
        }
        let object = store.put(id, obj);
        if id == NAMESPACES && self.config.namespace_controllers {
            populate_namespace(store, &name);
        }
        Ok(Written {
            object,
            warnings,
            created: true,
        })
    }

    /// `GET` of one object.
    pub(crate) fn get(&self, id: ResourceId, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.store
            .lock()
            .get(id, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def(id), name))
    }

    /// `GET` of a collection (one namespace or all), with selectors and paging.
    pub(crate) fn list(
        &self,
        id: ResourceId,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<Listed, ApiError> {
        let res = def(id);
        let store = self.store.lock();
        let table = store.table(id);
        let (rv, after) = match &opts.continue_token {
            Some(token) => {
                let (rv, key) = decode_continue(token)?;
                if rv < table.floor {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ));
                }
                (rv, Some(key))
            }
            None => (store.rv, None),
        };
        let matches = |obj: &Value| opts.label.matches(obj) && opts.field.matches(res, obj);
        let mut items = Vec::new();
        let mut continue_token = None;
        let mut remaining = None;
        let direct_ns = if res.namespaced { ns } else { Some("") };
        if let (Some(name), Some(ns), None) = (opts.field.pinned_name(), direct_ns, &after) {
            if let Some(obj) = store.get(id, ns, name)
                && matches(obj)
            {
                items.push(obj.clone());
            }
        } else {
            let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
            let mut iter = table.range(ns, after.as_ref());
            let mut last_key = None;
            for (key, obj) in iter.by_ref() {
                if !matches(obj) {
                    continue;
                }
                items.push(obj.clone());
                last_key = Some(key.clone());
                if items.len() == limit {
                    break;
                }
            }
            if items.len() == limit {
                let rest = iter.filter(|(_, o)| matches(o)).count() as u64;
                if rest > 0 {
                    continue_token = last_key.map(|k| encode_continue(rv, &k));
                    if opts.label.is_empty() && opts.field.is_empty() {
                        remaining = Some(rest);
                    }
                }
            }
        }
        Ok(Listed {
            rv,
            items,
            continue_token,
            remaining,
        })
    }

    /// `PUT` of an object or its `status` subresource.
    pub(crate) fn update(
        self: &Arc<Self>,
        id: ResourceId,
        ns: &str,
        name: &str,
        mut body: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let res = def(id);
        check_type(res, &mut body)?;
        let (mut obj, warnings) = validate::decode(res, body, opts.validation)?;
        check_name(&obj, name)?;
        check_namespace(res, &mut obj, ns)?;
        let mut store = self.store.lock();
        let Some(old) = store.get(id, ns, name).cloned() else {
            if res.create_on_update && !status {
                if !meta_str(&obj, "resourceVersion").is_empty() {
                    return Err(ApiError::not_found(res, name));
                }
                let written = self.create_locked(&mut store, id, ns, obj, opts)?;
                let rv = store.rv;
                drop(store);
                self.notify(rv);
                return Ok(written);
            }
            return Err(ApiError::not_found(res, name));
        };
        let written = self.finish_update(&mut store, id, &old, obj, status, opts.dry_run)?;
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(Written {
            object: written,
            warnings,
            created: false,
        })
    }

    /// The shared tail of update, patch and apply: system fields, status/spec split, defaults,
    /// validation, generation, no-op detection, finalizer completion, commit.
    fn finish_update(
        self: &Arc<Self>,
        store: &mut Store,
        id: ResourceId,
        old: &Arc<Value>,
        mut new: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let res = def(id);
        let name = meta_str(old, "name").to_string();
        let old_rv = meta_str(old, "resourceVersion").to_string();
        let new_rv = meta_str(&new, "resourceVersion");
        if !new_rv.is_empty() && new_rv != old_rv {
            return Err(ApiError::conflict_modified(res, &name));
        }
        let new_uid = meta_str(&new, "uid");
        let old_uid = meta_str(old, "uid");
        if !new_uid.is_empty() && new_uid != old_uid {
            return Err(ApiError::conflict(
                res,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"
                ),
            ));
        }
        if status {
            let mut merged = (**old).clone();
            if let (Value::Object(m), Some(s)) = (&mut merged, new.get("status")) {
                m.insert("status".into(), s.clone());
            }
            if let Some(mf) = meta(&new).and_then(|m| m.get("managedFields")).cloned() {
                meta_mut(&mut merged).insert("managedFields".into(), mf);
            }
            new = merged;
        } else {
            let old_meta = meta(old).cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(f) {
                    Some(v) => m.insert(f.to_string(), v.clone()),
                    None => m.remove(f),
                };
            }
            if !m.contains_key("managedFields")
                && let Some(mf) = old_meta.get("managedFields")
            {
                m.insert("managedFields".into(), mf.clone());
            }
            if res.has_status()
                && let Value::Object(root) = &mut new
            {
                match old.get("status") {
                    Some(s) => root.insert("status".into(), s.clone()),
                    None => root.remove("status"),
                };
            }
        }
        meta_mut(&mut new).insert("resourceVersion".into(), json!(old_rv));
        defaults::apply(res, &mut new, false, &mut || store.allocate_cluster_ip());
        invalid(res, &new, validate::validate(res, &new, Some(old)))?;
        if res.has_generation && new.get("spec") != old.get("spec") {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if new == **old {
            return Ok(old.clone());
        }
        if dry_run {
            return Ok(Arc::new(new));
        }
        let being_deleted = !meta_str(&new, "deletionTimestamp").is_empty();
        let grace = new
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if being_deleted && finalizers(&new) == 0 && grace == 0 {
            let ns = meta_str(&new, "namespace").to_string();
            store.put(id, new);
            return Ok(store.remove(id, &ns, &name).unwrap_or_else(|| old.clone()));
        }
        Ok(store.put(id, new))
    }

    /// `PATCH` with any of the four patch types (apply may create).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        self: &Arc<Self>,
        id: ResourceId,
        ns: &str,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let res = def(id);
        if patch_type == PatchType::Apply {
            if opts.field_manager.as_deref().unwrap_or_default().is_empty() {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    vec![FieldError::required(
                        "fieldManager",
                        "is required for apply patch",
                    )],
                ));
            }
        } else if opts.force.is_some() {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                vec![FieldError::forbidden(
                    "force",
                    "may not be specified for non-apply patch",
                )],
            ));
        }
        let mut store = self.store.lock();
        let old = store.get(id, ns, name).cloned();
        let ty = schema::root(res);
        let result = match (patch_type, old) {
            (PatchType::Apply, old) => {
                let mut applied = apply::parse_body(body)?;
                check_type(res, &mut applied)?;
                check_name(&applied, name)?;
                check_namespace(res, &mut applied, ns)?;
                let (applied, warnings) = validate::decode(res, applied, opts.validation)?;
                let stamp = now();
                let applier = Applier {
                    res,
                    manager: opts.field_manager.as_deref().unwrap_or_default(),
                    force: opts.force.unwrap_or(false),
                    subresource: if status { "status" } else { "" },
                    ty,
                    now: &stamp,
                };
                match old {
                    None if status => return Err(ApiError::not_found(res, name)),
                    None => {
                        let obj = applier.apply(None, &applied)?;
                        let mut w = self.create_locked(&mut store, id, ns, obj, opts)?;
                        w.warnings = warnings;
                        w
                    }
                    Some(old) => {
                        let mut merged = applier.apply(Some(&old), &applied)?;
                        meta_mut(&mut merged).insert(
                            "resourceVersion".into(),
                            json!(meta_str(&old, "resourceVersion")),
                        );
                        let object =
                            self.finish_update(&mut store, id, &old, merged, status, opts.dry_run)?;
                        Written {
                            object,
                            warnings,
                            created: false,
                        }
                    }
                }
            }
            (_, None) => return Err(ApiError::not_found(res, name)),
            (_, Some(old)) => {
                let patched = patch::apply_patch(&old, patch_type, body, ty)?;
                check_name(&patched, name)?;
                let mut patched = patched;
                check_type(res, &mut patched)?;
                let (patched, warnings) = validate::decode(res, patched, opts.validation)?;
                let object =
                    self.finish_update(&mut store, id, &old, patched, status, opts.dry_run)?;
                Written {
                    object,
                    warnings,
                    created: false,
                }
            }
        };
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(result)
    }

    /// `DELETE` of one object: immediate, graceful (pods), or marked (finalizers, namespaces).
    pub(crate) fn delete(
        self: &Arc<Self>,
        id: ResourceId,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let res = def(id);
        let mut store = self.store.lock();
        let Some(old) = store.get(id, ns, name).cloned() else {
            return Err(ApiError::not_found(res, name));
        };
        if let Some(uid) = &opts.uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        let outcome = self.delete_locked(&mut store, id, &old, opts.grace, opts.dry_run);
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(outcome)
    }

    fn delete_locked(
        self: &Arc<Self>,
        store: &mut Store,
        id: ResourceId,
        old: &Arc<Value>,
        grace: Option<i64>,
        dry_run: bool,
    ) -> Deleted {
        let res = def(id);
        let ns = meta_str(old, "namespace").to_string();
        let name = meta_str(old, "name").to_string();
        let uid = meta_str(old, "uid").to_string();
        let already = !meta_str(old, "deletionTimestamp").is_empty();
        let is_pod = res.is("", "pods");
        let is_ns = id == NAMESPACES;
        let grace = if is_pod {
            let unscheduled = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty();
            let phase = old
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if unscheduled || phase == "Succeeded" || phase == "Failed" {
                0
            } else {
                grace
                    .or_else(|| {
                        old.pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    })
                    .unwrap_or(30)
                    .max(0)
            }
        } else {
            0
        };
        if already {
            let current = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let remove_now = is_pod && grace == 0 && finalizers(old) == 0;
            if !remove_now && (grace >= current || is_ns || !is_pod) {
                return Deleted::Pending(old.clone());
            }
            if remove_now {
                if dry_run {
                    return Deleted::Gone(old.clone());
                }
                return match store.remove(id, &ns, &name) {
                    Some(last) => Deleted::Gone(last),
                    None => Deleted::Gone(old.clone()),
                };
            }
        }
        let needs_mark = is_ns || grace > 0 || finalizers(old) > 0;
        if !needs_mark {
            if dry_run {
                return Deleted::Gone(old.clone());
            }
            return match store.remove(id, &ns, &name) {
                Some(last) => Deleted::Gone(last),
                None => Deleted::Gone(old.clone()),
            };
        }
        let mut marked = (**old).clone();
        {
            let m = meta_mut(&mut marked);
            m.insert("deletionTimestamp".into(), json!(now_plus(grace)));
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if let Some(g) = m.get("generation").and_then(Value::as_i64)
                && g > 0
                && !already
            {
                m.insert("generation".into(), json!(g + 1));
            }
        }
        if is_ns && let Some(Value::Object(s)) = marked.get_mut("status") {
            s.insert("phase".into(), json!("Terminating"));
        }
        if dry_run {
            return Deleted::Pending(Arc::new(marked));
        }
        let marked = store.put(id, marked);
        if is_ns {
            self.schedule(Pending::Namespace(name));
        } else if is_pod && grace > 0 {
            self.schedule(Pending::Pod(ns, name, uid));
        }
        Deleted::Pending(marked)
    }

    /// `DELETE` of a collection: deletes every matching object, returning the results.
    pub(crate) fn delete_collection(
        self: &Arc<Self>,
        id: ResourceId,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let targets = self.list(id, ns, list)?.items;
        let mut store = self.store.lock();
        let mut out = Vec::new();
        for obj in targets {
            let (ns, name) = (meta_str(&obj, "namespace"), meta_str(&obj, "name"));
            let Some(current) = store.get(id, ns, name).cloned() else {
                continue;
            };
            match self.delete_locked(&mut store, id, &current, opts.grace, opts.dry_run) {
                Deleted::Gone(o) | Deleted::Pending(o) => out.push(o),
            }
        }
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(out)
    }

    /// Queues a deletion for the emulated kubelet / namespace controller.
    pub(crate) fn schedule(self: &Arc<Self>, pending: Pending) {
        let delay = {
            let mut settings = self.settings.lock();
            if settings.hold_deletions {
                settings.held.push(pending);
                return;
            }
            settings.deletion_delay
        };
        let shared = self.clone();
        self.rt.spawn(async move {
            tokio::time::sleep(delay).await;
            shared.complete(pending).await;
        });
    }

    /// Runs a queued deletion now.
    pub(crate) async fn complete(self: &Arc<Self>, pending: Pending) {
        match pending {
            Pending::Pod(ns, name, uid) => self.kubelet_confirm_deletion(&ns, &name, &uid),
            Pending::Namespace(name) => self.namespace_cleanup(&name).await,
        }
    }

    /// The kubelet's final `delete(gracePeriodSeconds=0)` of a terminated pod.
    pub(crate) fn kubelet_confirm_deletion(&self, ns: &str, name: &str, uid: &str) {
        let id = pods_id();
        let mut store = self.store.lock();
        let Some(pod) = store.get(id, ns, name).cloned() else {
            return;
        };
        if meta_str(&pod, "uid") != uid || meta_str(&pod, "deletionTimestamp").is_empty() {
            return;
        }
        if finalizers(&pod) == 0 {
            store.remove(id, ns, name);
        } else {
            let mut zeroed = (*pod).clone();
            meta_mut(&mut zeroed).insert("deletionGracePeriodSeconds".into(), json!(0));
            store.put(id, zeroed);
        }
        let rv = store.rv;
        drop(store);
        self.notify(rv);
    }

    /// The namespace controller: deletes everything in a terminating namespace (objects with
    /// finalizers are marked and waited for), then the namespace itself.
    async fn namespace_cleanup(self: &Arc<Self>, name: &str) {
        let mut changes = self.changes.subscribe();
        let mut stop = self.stop.subscribe();
        loop {
            let done = {
                let mut store = self.store.lock();
                let mut left = 0;
                for (id, res) in super::resources::RESOURCES.iter().enumerate() {
                    if !res.namespaced {
                        continue;
                    }
                    let objs: Vec<Arc<Value>> = store
                        .table(id)
                        .range(Some(name), None)
                        .map(|(_, v)| v.clone())
                        .collect();
                    for obj in objs {
                        left += 1;
                        if finalizers(&obj) > 0 {
                            if meta_str(&obj, "deletionTimestamp").is_empty() {
                                self.delete_locked(&mut store, id, &obj, Some(0), false);
                            }
                        } else {
                            store.remove(id, name, meta_str(&obj, "name"));
                        }
                    }
                }
                let finished = match store.get(NAMESPACES, "", name).cloned() {
                    None => true,
                    Some(ns) if left == 0 && finalizers(&ns) == 0 => {
                        store.remove(NAMESPACES, "", name);
                        true
                    }
                    Some(_) => false,
                };
                let rv = store.rv;
                drop(store);
                self.notify(rv);
                finished
            };
            if done || self.stopping() {
                return;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }
}

/// The resource id of pods.
pub(crate) fn pods_id() -> ResourceId {
    find("", "v1", "pods").unwrap_or_default()
}

/// What the real cluster's controllers add to every new namespace.
fn populate_namespace(store: &mut Store, ns: &str) {
    let stamp = now();
    if let Some(sa) = find("", "v1", "serviceaccounts") {
        store.put(
            sa,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default", "namespace": ns,
                                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": stamp}}),
        );
    }
    if let Some(cm) = find("", "v1", "configmaps") {
        store.put(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."},
                                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": stamp},
                   "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIBkubedoubleplaceholder\n-----END CERTIFICATE-----\n"}}),
        );
    }
}

fn encode_continue(rv: u64, key: &(String, String)) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]});
    base64::engine::general_purpose::STANDARD.encode(raw.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token: {token:?}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_array).ok_or_else(bad)?;
    let s = |i: usize| {
        start
            .get(i)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(bad)
    };
    Ok((rv, (s(0)?, s(1)?)))
}
