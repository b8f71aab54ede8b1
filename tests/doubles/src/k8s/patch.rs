//! The non-apply patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic
//! merge patch with the directives the real server understands: `$patch: replace|delete|merge`
//! (on maps and keyed-list items), `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>`
//! and `$retainKeys`.
//!
//! Simplification: `$setElementOrder` puts the listed items first in the given order and keeps
//! the remaining (server-only) items after them in their previous relative order.

use serde_json::{Map, Value};

use super::{
    schema::{ListKind, Ty, child},
    status::ApiError,
};

/// A patch content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Maps a `Content-Type` header to a patch type (415 if unknown).
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let mime = ct.split(';').next().unwrap_or_default().trim();
        match mime {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_patch_type(other)),
        }
    }
}

/// Applies a merge, JSON or strategic patch body to `doc` (apply is handled by `apply`).
pub(crate) fn apply_patch(
    doc: &Value,
    patch_type: PatchType,
    body: &[u8],
    root: Ty,
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Merge => {
            let patch: Value = parse_json(body)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "the body of the merge patch must be a JSON object",
                ));
            }
            let mut out = doc.clone();
            json_patch::merge(&mut out, &patch);
            Ok(out)
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut out = doc.clone();
            json_patch::patch(&mut out, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(out)
        }
        PatchType::Strategic => {
            let patch: Value = parse_json(body)?;
            let Value::Object(patch) = patch else {
                return Err(ApiError::bad_request(
                    "the body of the strategic merge patch must be a JSON object",
                ));
            };
            let mut out = doc.clone();
            if let Value::Object(map) = &mut out {
                strategic_merge(map, &patch, root)?;
            }
            Ok(out)
        }
        PatchType::Apply => Err(ApiError::internal("apply patches go through apply::apply")),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Removes every `$...` directive key (recursively) from a value taken verbatim from a patch.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|item| item.get("$patch").is_none())
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Strategic-merges `patch` into `orig` (both objects of schema type `ty`).
pub(crate) fn strategic_merge(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    ty: Ty,
) -> Result<(), ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            if let Value::Object(m) = strip(&Value::Object(patch.clone())) {
                *orig = m;
            }
            return Ok(());
        }
        Some("delete") => {
            orig.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown patch type: {other:?}"
            )));
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix(DELETE_PRIMITIVE) {
            if let (Some(Value::Array(items)), Value::Array(del)) = (orig.get_mut(list), value) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            orig.remove(key);
            continue;
        }
        let (child_ty, list_kind) = child(ty, key);
        match value {
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    orig.remove(key);
                    continue;
                }
                match orig.get_mut(key) {
                    Some(Value::Object(om)) => strategic_merge(om, pm, child_ty)?,
                    _ => {
                        let mut fresh = Map::new();
                        strategic_merge(&mut fresh, pm, child_ty)?;
                        orig.insert(key.clone(), Value::Object(fresh));
                    }
                }
            }
            Value::Array(items) => {
                let merged = merge_list(orig.get(key), items, child_ty, list_kind)?;
                orig.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                orig.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (key, order) in patch {
        if let (Some(list), Value::Array(order)) = (key.strip_prefix(SET_ORDER), order) {
            let (_, kind) = child(ty, list);
            if let Some(Value::Array(items)) = orig.get_mut(list) {
                reorder(items, order, kind);
            }
        }
    }
    Ok(())
}

fn merge_list(
    orig: Option<&Value>,
    patch_items: &[Value],
    item_ty: Ty,
    kind: ListKind,
) -> Result<Vec<Value>, ApiError> {
    let orig_items: Vec<Value> = orig.and_then(Value::as_array).cloned().unwrap_or_default();
    match kind {
        ListKind::Atomic => Ok(patch_items.iter().map(strip).collect()),
        ListKind::Set => {
            let mut out = orig_items;
            for item in patch_items {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        ListKind::Keyed(merge_key) => {
            if patch_items
                .iter()
                .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(patch_items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .map(strip)
                    .collect());
            }
            let mut out = orig_items;
            for item in patch_items {
                let Value::Object(pm) = item else {
                    return Err(ApiError::bad_request(format!(
                        "unable to find api field in struct for the merge key {merge_key:?}: list item is not an object"
                    )));
                };
                let Some(key_value) = pm.get(merge_key) else {
                    return Err(ApiError::bad_request(format!(
                        "map: {pm:?} does not contain declared merge key: {merge_key}",
                        pm = Value::Object(pm.clone())
                    )));
                };
                let pos = out.iter().position(|o| o.get(merge_key) == Some(key_value));
                match (pm.get("$patch").and_then(Value::as_str), pos) {
                    (Some("delete"), Some(p)) => {
                        out.remove(p);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(p)) => {
                        if let Some(Value::Object(om)) = out.get_mut(p) {
                            strategic_merge(om, pm, item_ty)?;
                        }
                    }
                    (_, None) => {
                        let mut fresh = Map::new();
                        strategic_merge(&mut fresh, pm, item_ty)?;
                        out.push(Value::Object(fresh));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn reorder(items: &mut Vec<Value>, order: &[Value], kind: ListKind) {
    let identity = |v: &Value| -> Value {
        match kind {
            ListKind::Keyed(k) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let order_ids: Vec<Value> = order.iter().map(identity).collect();
    let (mut listed, rest): (Vec<Value>, Vec<Value>) = items
        .drain(..)
        .partition(|i| order_ids.contains(&identity(i)));
    listed.sort_by_key(|i| {
        let id = identity(i);
        order_ids
            .iter()
            .position(|o| *o == id)
            .unwrap_or(usize::MAX)
    });
    listed.extend(rest);
    *items = listed;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn smp(orig: Value, patch: Value) -> Value {
        apply_patch(
            &orig,
            PatchType::Strategic,
            patch.to_string().as_bytes(),
            Ty::Pod,
        )
        .expect("patch applies")
    }

    #[test]
    fn keyed_lists_merge() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "x",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80}]}],
            "volumes": [{"name": "v1", "emptyDir": {}}]}});
        let out = smp(
            orig,
            json!({"spec": {"containers": [{"name": "a",
                "env": [{"name": "B", "value": "3"}, {"name": "A", "$patch": "delete"}],
                "ports": [{"containerPort": 81}]}],
                "volumes": [{"name": "v2", "emptyDir": {}}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "3"}])
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 81}])
        );
        assert_eq!(out["spec"]["containers"][0]["image"], json!("x"));
        assert_eq!(out["spec"]["volumes"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn directives() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "tolerations": [{"key": "k"}]}});
        let out = smp(
            orig,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}},
                "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                         "tolerations": [{"key": "z"}]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "z"}]));
        let replaced = smp(
            out,
            json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(replaced["spec"]["containers"], json!([{"name": "c"}]));
    }
}
