//! Pure merge of pod templates: `basePodTemplate ⊕ templateOverrides` for one queue.
//!
//! Rules (documented in the README):
//! - maps deep-merge, the override winning key by key (`labels`, `resources.limits`, …);
//! - named lists merge by key, an override entry replacing the base entry with the same key in
//!   place and new entries appended: `env`, `volumes`, `imagePullSecrets`, `initContainers`,
//!   `fileMounts` by `name`, `volumeMounts` by `mountPath`, `ports` by `containerPort`, `hostAliases` by `ip`;
//! - `extraVolumes` / `extraVolumeMounts` concatenate (base first);
//! - every other list, and every scalar, is replaced by the override.

use serde_json::{Map, Value};

use super::{FieldError, PodTemplate};

/// The merge key of a named list, by the list's field name; `None` for lists that are replaced.
fn list_key(field: &str) -> Option<&'static str> {
    match field {
        "env" | "volumes" | "imagePullSecrets" | "initContainers" | "fileMounts" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        "hostAliases" => Some("ip"),
        _ => None,
    }
}

fn is_appended(field: &str) -> bool {
    matches!(field, "extraVolumes" | "extraVolumeMounts")
}

/// Merges `over` onto `base` (both already validated).
pub fn merge_templates(base: &PodTemplate, over: &PodTemplate) -> Result<PodTemplate, FieldError> {
    let to_json = |t: &PodTemplate| {
        serde_json::to_value(t)
            .map_err(|e| FieldError::new("", format!("cannot encode template: {e}")))
    };
    let merged = merge_value(&to_json(base)?, &to_json(over)?, None);
    serde_json::from_value(merged)
        .map_err(|e| FieldError::new("", format!("merged template is not valid: {e}")))
}

/// Merges two JSON values by the rules above; `field` is the key under which they sit.
pub fn merge_value(base: &Value, over: &Value, field: Option<&str>) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, ov) in o {
                let merged = match b.get(k) {
                    Some(bv) => merge_value(bv, ov, Some(k)),
                    None => ov.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(o)) => match field {
            Some(f) if is_appended(f) => Value::Array(b.iter().chain(o).cloned().collect()),
            Some(f) => match list_key(f) {
                Some(key) => Value::Array(merge_keyed(b, o, key)),
                None => over.clone(),
            },
            None => over.clone(),
        },
        _ => over.clone(),
    }
}

fn merge_keyed(base: &[Value], over: &[Value], key: &str) -> Vec<Value> {
    let key_of = |v: &Value| {
        v.as_object()
            .and_then(|m: &Map<String, Value>| m.get(key))
            .cloned()
    };
    let mut out: Vec<Value> = base.to_vec();
    for item in over {
        match key_of(item).and_then(|k| out.iter().position(|b| key_of(b).as_ref() == Some(&k))) {
            Some(i) => out[i] = item.clone(),
            None => out.push(item.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_rules_table() {
        let cases = [
            (
                "maps deep-merge with the override winning",
                json!({"labels": {"team": "red", "a": "1"}, "resources": {"limits": {"memory": "1Gi", "cpu": "1"}}}),
                json!({"labels": {"team": "blue"}, "resources": {"limits": {"memory": "2Gi"}}}),
                json!({"labels": {"team": "blue", "a": "1"}, "resources": {"limits": {"memory": "2Gi", "cpu": "1"}}}),
            ),
            (
                "env merges by name in place, new names appended",
                json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}),
                json!({"env": [{"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}, {"name": "C", "value": "3"}]}),
                json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}, {"name": "C", "value": "3"}]}),
            ),
            (
                "volumeMounts merge by mountPath",
                json!({"volumeMounts": [{"name": "a", "mountPath": "/x"}]}),
                json!({"volumeMounts": [{"name": "b", "mountPath": "/x"}, {"name": "c", "mountPath": "/y"}]}),
                json!({"volumeMounts": [{"name": "b", "mountPath": "/x"}, {"name": "c", "mountPath": "/y"}]}),
            ),
            (
                "ports merge by containerPort",
                json!({"ports": [{"containerPort": 22, "name": "ssh"}]}),
                json!({"ports": [{"containerPort": 22, "name": "sshd"}, {"containerPort": 80}]}),
                json!({"ports": [{"containerPort": 22, "name": "sshd"}, {"containerPort": 80}]}),
            ),
            (
                "other lists are replaced",
                json!({"tolerations": [{"key": "a"}], "labels": {"x": "1"}}),
                json!({"tolerations": [{"key": "b"}]}),
                json!({"tolerations": [{"key": "b"}], "labels": {"x": "1"}}),
            ),
            (
                "extra lists append",
                json!({"extraVolumes": [{"name": "a"}]}),
                json!({"extraVolumes": [{"name": "b"}]}),
                json!({"extraVolumes": [{"name": "a"}, {"name": "b"}]}),
            ),
            (
                "scalars are replaced, absent keys kept",
                json!({"priorityClassName": "low", "schedulerName": "s"}),
                json!({"priorityClassName": "high"}),
                json!({"priorityClassName": "high", "schedulerName": "s"}),
            ),
            (
                "empty override changes nothing",
                json!({"labels": {"team": "red"}}),
                json!({}),
                json!({"labels": {"team": "red"}}),
            ),
        ];
        for (what, base, over, want) in cases {
            assert_eq!(merge_value(&base, &over, None), want, "{what}");
        }
    }

    #[test]
    fn typed_templates_merge_like_the_seed_example_says() {
        let base: PodTemplate = serde_json::from_value(
            json!({"labels": {"team": "red"}, "resources": {"limits": {"memory": "1Gi"}}}),
        )
        .expect("base");
        let blue: PodTemplate =
            serde_json::from_value(json!({"labels": {"team": "blue"}})).expect("blue");
        let merged = merge_templates(&base, &blue).expect("merge");
        assert_eq!(merged.labels.as_ref().expect("labels")["team"], "blue");
        let limits = merged.resources.and_then(|r| r.limits).expect("limits");
        assert_eq!(limits["memory"].0, "1Gi");
    }
}
