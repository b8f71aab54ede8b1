//! What `install` reads: values files layered in order (later wins, maps merge deeply, lists and
//! scalars are replaced, `null` deletes a key, as Helm does) and `--set a.b=c` on top, then one
//! strict parse by the agent's own schema ([`Values::from_json`]), so the plugin and the agent
//! accept and refuse the same documents with the same field paths.

use std::{io::Read as _, path::Path};

use clearml_agent_core::values::{self, FieldError, Values};
use serde_json::{Map, Value};

/// The values could not be read or are invalid.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file (`-` for stdin).
        file: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not YAML or not a mapping.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A `--set` expression is malformed.
    #[error("--set {expr:?}: {message}")]
    Set {
        /// The expression as given.
        expr: String,
        /// What is wrong.
        message: String,
    },
    /// Neither files nor `--set` were given.
    #[error("no values: pass -f values.yaml (and/or --set key=value)")]
    Empty,
    /// The merged document does not fit the schema: every mistake, each naming its field.
    #[error("{}", invalid_message(.0))]
    Invalid(Vec<FieldError>),
}

/// `invalid values: path: why` for one mistake; one line each under a count for several.
fn invalid_message(errors: &[FieldError]) -> String {
    match errors {
        [one] => format!("invalid values: {one}"),
        all => {
            let mut out = format!("invalid values ({} errors):", all.len());
            for e in all {
                out.push_str(&format!("\n  {e}"));
            }
            out
        }
    }
}

/// Reads, merges and validates the values of `install`.
pub fn load(files: &[impl AsRef<Path>], sets: &[String]) -> Result<Values, InputError> {
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        let path = file.as_ref();
        let name = path.display().to_string();
        let text = if name == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|source| InputError::Read {
                    file: name.clone(),
                    source,
                })?;
            s
        } else {
            std::fs::read_to_string(path).map_err(|source| InputError::Read {
                file: name.clone(),
                source,
            })?
        };
        texts.push((name, text));
    }
    let doc = merge_inputs(&texts, sets)?;
    Values::from_json(doc.clone()).map_err(|first| {
        let mut errors = Values::errors_in(doc);
        if errors.is_empty() {
            errors.push(first);
        }
        // one file: in the order the file has them
        if let [(_, text)] = texts.as_slice() {
            errors = values::in_file_order(errors, text);
        }
        InputError::Invalid(errors)
    })
}

/// Prints each key the values carry that has no effect here, one line each on stderr
/// (`note: sessions.portModeEnabled: …`).
pub fn print_notices(values: &Values) {
    for notice in values.notices() {
        eprintln!("note: {notice}");
    }
}

/// The notices of one queue entry (`queues add/patch`): what [`print_notices`] would say of a
/// values document serving only that queue, one line each on stderr. A patch that is not a
/// whole entry reports nothing here; the agent checks it.
pub fn print_queue_notices(name: &str, entry: &Value) {
    let Ok(queue) = values::QueueValues::from_json(name, entry.clone()) else {
        return;
    };
    let mut values = Values::default();
    values.agentk8sglue.queues.insert(name.to_string(), queue);
    print_notices(&values);
}

/// Merges file contents (name, text) in order, then the `--set` expressions: the document the
/// schema will parse.
pub fn merge_inputs(texts: &[(String, String)], sets: &[String]) -> Result<Value, InputError> {
    if texts.is_empty() && sets.is_empty() {
        return Err(InputError::Empty);
    }
    let mut doc = Value::Object(Map::new());
    for (file, text) in texts {
        if text.len() > clearml_agent_core::values::MAX_VALUES_BYTES {
            return Err(InputError::File {
                file: file.clone(),
                message: format!(
                    "the values document is {} bytes; it must fit in a ConfigMap (at most {} bytes)",
                    text.len(),
                    clearml_agent_core::values::MAX_VALUES_BYTES
                ),
            });
        }
        let layer: Value =
            clearml_agent_core::yaml::from_str(text).map_err(|e| InputError::File {
                file: file.clone(),
                message: format!("invalid YAML: {e}"),
            })?;
        match layer {
            // an empty file is almost always a mistake (a wrong path, a failed redirect)
            Value::Null => {
                return Err(InputError::File {
                    file: file.clone(),
                    message: "the values document is empty".into(),
                });
            }
            Value::Object(_) => merge(&mut doc, layer),
            _ => {
                return Err(InputError::File {
                    file: file.clone(),
                    message: "a values file must be a mapping".into(),
                });
            }
        }
    }
    for expr in sets {
        let (path, value) = parse_set(expr)?;
        let mut layer = value;
        for key in path.into_iter().rev() {
            layer = Value::Object(Map::from_iter([(key, layer)]));
        }
        merge(&mut doc, layer);
    }
    Ok(doc)
}

/// Deep merge of `overlay` onto `base`: maps merge key by key, anything else replaces, and a
/// `null` in the overlay deletes the key.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (key, value) in o {
                if value.is_null() {
                    b.remove(&key);
                } else if let Some(slot) = b.get_mut(&key) {
                    merge(slot, value);
                } else {
                    let mut fresh = Value::Object(Map::new());
                    merge(&mut fresh, value);
                    b.insert(key, fresh);
                }
            }
        }
        (slot, value) => *slot = strip_nulls(value),
    }
}

/// A replacing value keeps no `null` map entries (they mean "delete", and there is nothing below).
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `a.b.c=VALUE` → (`[a, b, c]`, VALUE read as YAML). `\.` is a literal dot inside a key
/// (`…limits.nvidia\.com/gpu=2`); an empty VALUE is the empty string; `null` deletes the key.
pub fn parse_set(expr: &str) -> Result<(Vec<String>, Value), InputError> {
    let err = |message: &str| InputError::Set {
        expr: expr.to_string(),
        message: message.to_string(),
    };
    let mut path = Vec::new();
    let mut key = String::new();
    let mut chars = expr.chars();
    let value_text = loop {
        match chars.next() {
            None => return Err(err("expected PATH=VALUE")),
            Some('\\') => match chars.next() {
                Some(c @ ('.' | '=' | '\\')) => key.push(c),
                _ => return Err(err("'\\' escapes only '.', '=' or '\\'")),
            },
            Some('.') => path.push(std::mem::take(&mut key)),
            Some('=') => {
                path.push(std::mem::take(&mut key));
                break chars.as_str();
            }
            Some(c) => key.push(c),
        }
    };
    if path.iter().any(String::is_empty) {
        return Err(err("empty key in the path"));
    }
    let value = if value_text.is_empty() {
        Value::String(String::new())
    } else {
        clearml_agent_core::yaml::from_str::<Value>(value_text)
            .map_err(|e| err(&format!("the value is not valid YAML: {e}")))?
    };
    Ok((path, value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(expr: &str) -> (Vec<String>, Value) {
        parse_set(expr).expect("valid --set")
    }

    #[test]
    fn set_values_are_read_as_yaml_scalars() {
        let cases = [
            ("a.b=true", vec!["a", "b"], json!(true)),
            ("a=2", vec!["a"], json!(2)),
            ("a=2Gi", vec!["a"], json!("2Gi")),
            ("a=\"2\"", vec!["a"], json!("2")),
            ("a=", vec!["a"], json!("")),
            ("a=null", vec!["a"], json!(null)),
            ("a=x=y", vec!["a"], json!("x=y")),
            ("a=[4, 2]", vec!["a"], json!([4, 2])),
            (
                r"r.limits.nvidia\.com/gpu=1",
                vec!["r", "limits", "nvidia.com/gpu"],
                json!(1),
            ),
        ];
        for (expr, path, value) in cases {
            let (p, v) = set(expr);
            assert_eq!(p, path, "{expr}");
            assert_eq!(v, value, "{expr}");
        }
    }

    #[test]
    fn malformed_set_expressions_are_refused() {
        for expr in ["novalue", "a..b=1", ".a=1", "a.=1", r"a\x=1", "=1"] {
            assert!(parse_set(expr).is_err(), "{expr}");
        }
    }

    #[test]
    fn later_files_win_maps_merge_and_lists_are_replaced() {
        let base = "agentk8sglue:\n  createQueues: true\n  basePodTemplate:\n    labels: {team: red, tier: a}\n    tolerations: [{key: x, operator: Exists}]\n";
        let over = "agentk8sglue:\n  basePodTemplate:\n    labels: {team: blue}\n    tolerations: [{key: y, operator: Exists}]\n";
        let doc = merge_inputs(
            &[("base".into(), base.into()), ("over".into(), over.into())],
            &[],
        )
        .expect("merge");
        let tpl = &doc["agentk8sglue"]["basePodTemplate"];
        assert_eq!(tpl["labels"], json!({"team": "blue", "tier": "a"}));
        assert_eq!(
            tpl["tolerations"],
            json!([{"key": "y", "operator": "Exists"}])
        );
        assert_eq!(doc["agentk8sglue"]["createQueues"], json!(true));
    }

    #[test]
    fn set_applies_after_every_file_and_null_deletes() {
        let file = "agentk8sglue:\n  dashboardReportMaxGpu: 2\n  createQueues: true\n";
        let doc = merge_inputs(
            &[("f".into(), file.into())],
            &[
                "agentk8sglue.dashboardReportMaxGpu=8".into(),
                "agentk8sglue.createQueues=null".into(),
                "agentk8sglue.queues.gpu.queueSettings.maxPods=3".into(),
            ],
        )
        .expect("merge");
        assert_eq!(
            doc,
            json!({"agentk8sglue": {
                "dashboardReportMaxGpu": 8,
                "queues": {"gpu": {"queueSettings": {"maxPods": 3}}}
            }})
        );
    }

    #[test]
    fn non_mapping_files_and_bad_yaml_name_the_file() {
        let err = merge_inputs(&[("list.yaml".into(), "- a\n".into())], &[])
            .expect_err("a list is not values");
        assert!(err.to_string().starts_with("list.yaml: "), "{err}");
        let err = merge_inputs(&[("bad.yaml".into(), "a: [\n".into())], &[]).expect_err("bad YAML");
        assert!(
            err.to_string().starts_with("bad.yaml: invalid YAML"),
            "{err}"
        );
        assert!(matches!(merge_inputs(&[], &[]), Err(InputError::Empty)));
        let err = merge_inputs(&[("empty.yaml".into(), "# nothing\n".into())], &[])
            .expect_err("an empty file");
        assert_eq!(err.to_string(), "empty.yaml: the values document is empty");
        let huge = format!("a: \"{}\"\n", "x".repeat(2 * 1024 * 1024));
        let err = merge_inputs(&[("huge.yaml".into(), huge)], &[]).expect_err("too big");
        assert!(err.to_string().contains("must fit in a ConfigMap"), "{err}");
    }

    #[test]
    fn every_seed_values_file_loads_unchanged() {
        for file in crate::manifests::tests::fixture_files() {
            load(&[&file], &[]).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }

    #[test]
    fn schema_errors_carry_the_field_path() {
        let cases = [
            (
                "agentk8sglue.queues.q1x.templateOverrides.resources.limits.memory=12 GiB",
                "agentk8sglue.queues.q1x.templateOverrides.resources.limits.memory",
            ),
            (
                "agentk8sglue.queues.q1x.templateOverrides.nodeSelector2.a=b",
                "agentk8sglue.queues.q1x.templateOverrides.nodeSelector2",
            ),
        ];
        for (expr, path) in cases {
            let err = load(&[] as &[&Path], &[expr.to_string()]).expect_err(expr);
            match err {
                InputError::Invalid(e) => assert_eq!(e[0].path, path, "{expr}"),
                other => panic!("{expr}: {other}"),
            }
        }
    }

    #[test]
    fn every_mistake_is_reported_once_in_file_order() {
        let dir = std::env::temp_dir().join(format!("values-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("values.yaml");
        std::fs::write(
            &file,
            "agentk8sglue:\n  queus: {}\n  pollIntervalSeconds: 0\n  queues:\n    red:\n      queueSettings:\n        maxPods: many\n",
        )
        .expect("write");
        let err = load(&[&file], &[]).expect_err("invalid");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(
            err.to_string(),
            "invalid values (3 errors):\n  agentk8sglue.queus: unknown key; did you mean queues?\n  agentk8sglue.pollIntervalSeconds: must be a number of seconds greater than 0 and at most 3600\n  agentk8sglue.queues.red.queueSettings.maxPods: invalid type: string \"many\", expected u32"
        );
    }
}
