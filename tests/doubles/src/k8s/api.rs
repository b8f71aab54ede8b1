//! The API verbs create, get, list (selectors, paging), update, patch and apply over the store
//! (deletes live in `deletion`), shared by the HTTP handlers and the Rust test handle so both
//! go through the same server rules: system metadata, defaults, validation, optimistic
//! concurrency, dry-run, and no-op writes that keep the resourceVersion.

use std::sync::Arc;

use base64::Engine as _;
use rand::Rng as _;
use serde_json::{Map, Value, json};

use super::{
    apply::{self, Applier},
    defaults,
    patch::{self, PatchType},
    resources::{ResourceDef, ResourceId, def},
    schema,
    selectors::{FieldSelector, LabelSelector},
    state::{Shared, now},
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
    /// `propagationPolicy`: `Orphan`, `Background`, `Foreground` (unset: the type's default).
    pub propagation: Option<String>,
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

/// A string field of `metadata` (empty if absent).
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata` as a mutable map (created if absent).
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
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

/// Number of `metadata.finalizers`.
pub(crate) fn finalizers(obj: &Value) -> usize {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

pub(crate) fn random_suffix() -> String {
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

/// The resource id of namespaces (first in the table).
pub(crate) const NAMESPACES: ResourceId = 0;

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
        if res.is("", "pods") && self.settings.lock().kueue_webhook {
            super::kueue::webhook(&mut obj);
        }
        super::podgroup::drop_disabled(res, &mut obj, None, self.pod_group_api());
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
            super::deletion::populate_namespace(store, &name);
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
        super::podgroup::drop_disabled(res, &mut new, Some(old), self.pod_group_api());
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
                // The real server merges the applied config into the live object before checking
                // the name, so an apply without metadata.name updates an existing object (as
                // kube-lease-manager's lease renewals do); only a create needs the name.
                if old.is_some()
                    && meta_str(&applied, "name").is_empty()
                    && let Some(m) = applied.as_object_mut()
                {
                    let meta = m.entry("metadata").or_insert_with(|| json!({}));
                    if let Some(meta) = meta.as_object_mut() {
                        meta.insert("name".into(), json!(name));
                    }
                }
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
