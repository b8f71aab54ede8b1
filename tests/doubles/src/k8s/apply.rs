//! Server-side apply (`application/apply-patch+yaml`): merges an applied configuration into
//! the live object and tracks, per field manager, the set of fields it applied, stored in
//! `metadata.managedFields` in the real `FieldsV1` encoding (`f:`/`k:`/`v:` path elements).
//!
//! Simplifications (documented in the crate report):
//! - only `Apply` operations are tracked; writes through create/update/patch do not record
//!   `Update` managers, so an apply never conflicts with a field last written by a non-apply
//!   client;
//! - conflicts are detected between appliers when a field owned by another applier would get a
//!   different value (`409 Conflict`, reason `Conflict`, causes `FieldManagerConflict`), unless
//!   `force=true`, which transfers ownership;
//! - a field the manager applied before and no longer applies is removed when no other applier
//!   owns it (keyed-list items as a whole, set members, map keys).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::{
    resources::ResourceDef,
    schema::{ListKind, Ty, child},
    status::ApiError,
};

/// One path into an object, as FieldsV1 path elements (`f:spec`, `k:{"name":"a"}`, `v:"x"`).
type FieldPath = Vec<String>;
/// A manager's field set.
type FieldSet = BTreeSet<FieldPath>;

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    raw: Map<String, Value>,
    manager: String,
    operation: String,
    subresource: String,
    fields: FieldSet,
}

/// Parses an apply body (YAML or JSON) into a JSON object.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    }
    Ok(value)
}

/// One apply request's parameters.
pub(crate) struct Applier<'a> {
    /// The resource type.
    pub res: &'a ResourceDef,
    /// `fieldManager`.
    pub manager: &'a str,
    /// `force=true`.
    pub force: bool,
    /// `""` or `status`.
    pub subresource: &'a str,
    /// Schema type of the object.
    pub ty: Ty,
    /// Timestamp for the managedFields entry.
    pub now: &'a str,
}

impl Applier<'_> {
    /// Computes the object after the manager applies `applied` onto `live` (or creates it).
    pub(crate) fn apply(&self, live: Option<&Value>, applied: &Value) -> Result<Value, ApiError> {
        let Applier {
            res,
            manager,
            force,
            subresource,
            ty,
            now,
        } = *self;
        apply(res, live, applied, manager, force, subresource, ty, now)
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    res: &ResourceDef,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: &str,
    ty: Ty,
    now: &str,
) -> Result<Value, ApiError> {
    let mut new_set = FieldSet::new();
    walk(applied, ty, &mut Vec::new(), &mut new_set, true);
    let mut entries: Vec<Entry> = live
        .and_then(|l| l.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(parse_entry).collect())
        .unwrap_or_default();
    let mine =
        |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == subresource;
    let old_set = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();

    let mut result = match live {
        None => applied.clone(),
        Some(live) => {
            let mut conflicts = Vec::new();
            for entry in entries.iter_mut().filter(|e| !mine(e)) {
                let clashing: Vec<FieldPath> = new_set
                    .intersection(&entry.fields)
                    .filter(|p| p.last().is_some_and(|t| !t.starts_with("k:")))
                    .filter(|p| lookup(applied, p) != lookup(live, p))
                    .cloned()
                    .collect();
                for p in clashing {
                    if force {
                        entry.fields.remove(&p);
                    } else {
                        conflicts.push((entry.manager.clone(), p));
                    }
                }
            }
            if !conflicts.is_empty() {
                return Err(conflict_error(res, conflicts));
            }
            let others: FieldSet = entries
                .iter()
                .filter(|e| !mine(e))
                .flat_map(|e| e.fields.iter().cloned())
                .collect();
            let mut removed: Vec<&FieldPath> = old_set
                .iter()
                .filter(|p| !new_set.contains(*p) && !others.contains(*p))
                .collect();
            removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
            let mut out = live.clone();
            for p in removed {
                remove_path(&mut out, p);
            }
            merge(&mut out, applied, ty);
            out
        }
    };

    let mut new_entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": res.api_version(),
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(&new_set),
    });
    if let Value::Object(m) = &mut new_entry {
        if !subresource.is_empty() {
            m.insert("subresource".into(), json!(subresource));
        }
        // An apply that changes nothing the manager owns keeps the entry's timestamp, so a
        // no-op re-apply leaves the object (and its resourceVersion) untouched.
        if let Some(previous) = entries.iter().find(|e| mine(e))
            && previous.fields == new_set
            && let Some(time) = previous.raw.get("time")
        {
            m.insert("time".into(), time.clone());
        }
    }
    let mut managed: Vec<Value> = Vec::new();
    let mut placed = false;
    for mut e in entries {
        if mine(&e) {
            if !new_set.is_empty() && !placed {
                managed.push(new_entry.clone());
                placed = true;
            }
            continue;
        }
        if e.fields.is_empty() {
            continue;
        }
        e.raw.insert("fieldsV1".into(), encode(&e.fields));
        managed.push(Value::Object(e.raw));
    }
    if !new_set.is_empty() && !placed {
        managed.push(new_entry);
    }
    if let Some(Value::Object(meta)) = result.get_mut("metadata") {
        meta.insert("managedFields".into(), Value::Array(managed));
    }
    Ok(result)
}

fn conflict_error(res: &ResourceDef, conflicts: Vec<(String, FieldPath)>) -> ApiError {
    let api_version = res.api_version();
    let rendered: Vec<(String, String)> = conflicts
        .iter()
        .map(|(m, p)| (m.clone(), render_path(p)))
        .collect();
    let list = rendered
        .iter()
        .map(|(m, p)| format!("conflict with {m:?} using {api_version}: {p}"))
        .collect::<Vec<_>>();
    let message = if list.len() == 1 {
        format!("Apply failed with 1 conflict: {}", list.join(""))
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            list.len(),
            list.join("\n")
        )
    };
    let causes: Vec<Value> = rendered
        .iter()
        .map(|(m, p)| {
            json!({"reason": "FieldManagerConflict",
                   "message": format!("conflict with {m:?} using {api_version}"),
                   "field": p})
        })
        .collect();
    let mut e = ApiError::new(409, "Conflict", message);
    e.details = Some(json!({"causes": causes}));
    e
}

/// `.spec.containers[name="a"].image`, the way SSA renders conflicting paths.
fn render_path(p: &FieldPath) -> String {
    let mut out = String::new();
    for t in p {
        if let Some(f) = t.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = t.strip_prefix("k:") {
            let rendered = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|_| k.to_string());
            out.push_str(&format!("[{rendered}]"));
        } else if let Some(v) = t.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

fn parse_entry(v: &Value) -> Option<Entry> {
    let raw = v.as_object()?.clone();
    let s = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut fields = FieldSet::new();
    if let Some(f) = raw.get("fieldsV1") {
        decode(f, &mut Vec::new(), &mut fields);
    }
    Some(Entry {
        manager: s("manager"),
        operation: s("operation"),
        subresource: s("subresource"),
        fields,
        raw,
    })
}

fn item_key(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_string(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    format!("k:{}", Value::Object(m))
}

/// Collects the field paths set in an applied configuration.
fn walk(v: &Value, ty: Ty, path: &mut FieldPath, out: &mut FieldSet, top: bool) {
    let Value::Object(map) = v else { return };
    for (k, child_v) in map {
        if top && matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if path.len() == 1
            && path[0] == "f:metadata"
            && matches!(
                k.as_str(),
                "name"
                    | "namespace"
                    | "managedFields"
                    | "resourceVersion"
                    | "uid"
                    | "creationTimestamp"
                    | "generation"
            )
        {
            continue;
        }
        let (child_ty, kind) = child(ty, k);
        path.push(format!("f:{k}"));
        match child_v {
            Value::Object(m) if !m.is_empty() => walk(child_v, child_ty, path, out, false),
            Value::Array(items) => match kind {
                ListKind::Atomic => {
                    out.insert(path.clone());
                }
                ListKind::Set => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                ListKind::Keyed(key) => {
                    for item in items {
                        path.push(item_key(item, key));
                        out.insert(path.clone());
                        walk(item, child_ty, path, out, false);
                        path.pop();
                    }
                }
            },
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

fn encode(set: &FieldSet) -> Value {
    Value::Object(encode_node(set, &[]))
}

/// The FieldsV1 children of the node at `prefix`; an owned node with children gets `"."`.
fn encode_node(set: &FieldSet, prefix: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    let next_tokens: BTreeSet<&String> = set
        .iter()
        .filter(|p| p.len() > prefix.len() && p.starts_with(prefix))
        .map(|p| &p[prefix.len()])
        .collect();
    for t in next_tokens {
        let mut child_prefix = prefix.to_vec();
        child_prefix.push(t.clone());
        let mut children = encode_node(set, &child_prefix);
        if set.contains(&child_prefix) && !children.is_empty() {
            children.insert(".".into(), json!({}));
        }
        out.insert(t.clone(), Value::Object(children));
    }
    out
}

fn decode(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Value::Object(m) = v else { return };
    for (k, child_v) in m {
        if k == "." {
            continue;
        }
        path.push(k.clone());
        match child_v {
            Value::Object(cm) if !cm.is_empty() => {
                if cm.contains_key(".") {
                    out.insert(path.clone());
                }
                decode(child_v, path, out);
            }
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

fn key_matches(item: &Value, key_json: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(key_json)
        .map(|k| k.iter().all(|(f, v)| item.get(f) == Some(v)))
        .unwrap_or(false)
}

fn lookup<'a>(v: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut cur = v;
    for t in path {
        if let Some(f) = t.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = t.strip_prefix("k:") {
            cur = cur.as_array()?.iter().find(|i| key_matches(i, k))?;
        } else if let Some(val) = t.strip_prefix("v:") {
            let want: Value = serde_json::from_str(val).ok()?;
            cur = cur.as_array()?.iter().find(|i| **i == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

fn remove_path(v: &mut Value, path: &FieldPath) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for t in parent_path {
        let next = if let Some(f) = t.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = t.strip_prefix("k:") {
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| key_matches(i, k)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Value::Object(m) = cur {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let Value::Array(a) = cur {
            a.retain(|i| !key_matches(i, k));
        }
    } else if let Some(val) = last.strip_prefix("v:")
        && let (Value::Array(a), Ok(want)) = (cur, serde_json::from_str::<Value>(val))
    {
        a.retain(|i| *i != want);
    }
}

/// Merges an applied configuration into a live object: maps recursively, keyed lists by key,
/// sets by union, everything else replaced.
fn merge(live: &mut Value, applied: &Value, ty: Ty) {
    let (Value::Object(lm), Value::Object(am)) = (live, applied) else {
        return;
    };
    for (k, av) in am {
        let (child_ty, kind) = child(ty, k);
        match (lm.get_mut(k), av) {
            (Some(lv @ Value::Object(_)), Value::Object(_)) => merge(lv, av, child_ty),
            (Some(Value::Array(litems)), Value::Array(aitems)) => match kind {
                ListKind::Atomic => *litems = aitems.clone(),
                ListKind::Set => {
                    for i in aitems {
                        if !litems.contains(i) {
                            litems.push(i.clone());
                        }
                    }
                }
                ListKind::Keyed(key) => {
                    for ai in aitems {
                        match litems
                            .iter_mut()
                            .find(|li| li.get(key).is_some() && li.get(key) == ai.get(key))
                        {
                            Some(li) => merge(li, ai, child_ty),
                            None => litems.push(ai.clone()),
                        }
                    }
                }
            },
            _ => {
                lm.insert(k.clone(), av.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::resources::{def, resolve};

    fn cm() -> &'static ResourceDef {
        def(resolve("configmaps").expect("cm"))
    }

    #[test]
    fn reapply_removes_dropped_fields() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}});
        let live = apply(cm(), None, &first, "m", false, "", Ty::Object, "t").expect("create");
        let fields = &live["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(fields["f:data"], json!({"f:x": {}, "f:y": {}}));
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "3"}});
        let live =
            apply(cm(), Some(&live), &second, "m", false, "", Ty::Object, "t").expect("reapply");
        assert_eq!(live["data"], json!({"x": "3"}));
        assert_eq!(live["metadata"]["labels"], json!({"a": "1"}));
    }

    #[test]
    fn conflicts_between_managers() {
        let a = json!({"metadata": {"name": "c"}, "data": {"x": "1"}});
        let live = apply(cm(), None, &a, "a", false, "", Ty::Object, "t").expect("a");
        let b = json!({"metadata": {"name": "c"}, "data": {"x": "2"}});
        let err =
            apply(cm(), Some(&live), &b, "b", false, "", Ty::Object, "t").expect_err("conflict");
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"a\""),
            "{}",
            err.message
        );
        let live = apply(cm(), Some(&live), &b, "b", true, "", Ty::Object, "t").expect("forced");
        assert_eq!(live["data"]["x"], json!("2"));
        assert_eq!(
            live["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn keyed_items_round_trip() {
        let mut set = FieldSet::new();
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "i"}]}});
        walk(&pod, Ty::Pod, &mut Vec::new(), &mut set, true);
        let encoded = encode(&set);
        assert_eq!(
            encoded["f:spec"]["f:containers"]["k:{\"name\":\"a\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        let mut back = FieldSet::new();
        decode(&encoded, &mut Vec::new(), &mut back);
        assert_eq!(back, set);
    }
}
