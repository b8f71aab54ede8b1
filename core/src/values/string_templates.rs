//! The Enterprise agent's string templates in pod-template labels, annotations and env values
//! (ClearML docs, "Custom Pod Manifests with String Templates"):
//! `${CLEARML_<variable>[:<default>][|<op>…]}`, expanded per task by `render`.
//!
//! Supported variables: `QUEUE_NAME`, `QUEUE_ID`, `WORKER_ID`, `PROJECT_NAME`, `PROJECT_ID`,
//! `TASK.id`, `TASK.name`, `TASK.project` (the project's id, as in the task object), `TASK.user`
//! (the owner's id) and `TASK.hyperparams.properties.<name>.value` (a user property). The others
//! the Enterprise agent knows (`USER.*`, `CONFIG.*`, `USER_VAULTS.*`, `PROVIDERS_INFO.*`, other
//! `TASK.*` paths) need the Enterprise server's vaults or more task fields: they are refused when
//! the values load, naming the field, never passed through literally. An empty value takes the
//! default. Operators: `strip(chars)` (empty: white space), `capitalize`, `lower`,
//! `remove_newlines` (applied when no operator is given) and `raw`.

use std::collections::BTreeMap;

/// What every template starts with.
pub const PREFIX: &str = "${CLEARML_";

/// The single-value variables supported.
const SINGLE: &[&str] = &[
    "QUEUE_NAME",
    "QUEUE_ID",
    "WORKER_ID",
    "PROJECT_NAME",
    "PROJECT_ID",
];
/// The `TASK.` paths supported (besides `hyperparams.properties.<name>.value`).
const TASK_PATHS: &[&str] = &["id", "name", "project", "user"];

/// What a template can refer to, for one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars {
    /// Task id.
    pub task_id: String,
    /// Task name.
    pub task_name: String,
    /// Project id.
    pub project_id: String,
    /// Project name.
    pub project_name: String,
    /// The task owner's user id.
    pub user: String,
    /// Queue name.
    pub queue_name: String,
    /// Queue id.
    pub queue_id: String,
    /// The agent's worker id.
    pub worker_id: String,
    /// The task's user properties (`hyperparams.properties.<name>.value`).
    pub properties: BTreeMap<String, String>,
}

/// One `${CLEARML_…}` occurrence, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Template<'a> {
    variable: &'a str,
    default: Option<&'a str>,
    ops: Vec<&'a str>,
}

/// Splits `text` into literal parts and templates; an error names what is wrong.
fn parse(text: &str) -> Result<Vec<Result<&str, Template<'_>>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(PREFIX) {
        if i > 0 {
            out.push(Ok(&rest[..i]));
        }
        let body_start = &rest[i + PREFIX.len()..];
        let Some(end) = body_start.find('}') else {
            return Err(format!(
                "unclosed string template {:?} (no '}}')",
                &rest[i..]
            ));
        };
        let body = &body_start[..end];
        let mut pieces = body.split('|');
        let head = pieces.next().unwrap_or_default();
        let (variable, default) = match head.split_once(':') {
            Some((v, d)) => (v, Some(d)),
            None => (head, None),
        };
        let ops: Vec<&str> = pieces.collect();
        out.push(Err(Template {
            variable,
            default,
            ops,
        }));
        rest = &body_start[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Ok(rest));
    }
    Ok(out)
}

fn check_variable(variable: &str) -> Result<(), String> {
    if SINGLE.contains(&variable) {
        return Ok(());
    }
    if let Some(path) = variable.strip_prefix("TASK.")
        && (TASK_PATHS.contains(&path) || property_name(path).is_some())
    {
        return Ok(());
    }
    Err(format!(
        "string template ${{CLEARML_{variable}}} is not supported by this agent (it has no vaults, user or SSO data, and reads only some task fields); supported: {}, {}, ${{CLEARML_TASK.hyperparams.properties.<name>.value}}",
        SINGLE
            .iter()
            .map(|s| format!("${{CLEARML_{s}}}"))
            .collect::<Vec<_>>()
            .join(", "),
        TASK_PATHS
            .iter()
            .map(|s| format!("${{CLEARML_TASK.{s}}}"))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// `hyperparams.properties.<name>.value` → `<name>`.
fn property_name(path: &str) -> Option<&str> {
    path.strip_prefix("hyperparams.properties.")?
        .strip_suffix(".value")
        .filter(|n| !n.is_empty())
}

fn check_op(op: &str) -> Result<(), String> {
    let known = matches!(op, "capitalize" | "lower" | "remove_newlines" | "raw")
        || (op.starts_with("strip(") && op.ends_with(')'));
    if known {
        Ok(())
    } else {
        Err(format!(
            "unknown string template operator {op:?}; known: strip(chars), capitalize, lower, remove_newlines, raw"
        ))
    }
}

/// Checks every template of `text` (none: fine).
pub fn check(text: &str) -> Result<(), String> {
    for part in parse(text)? {
        if let Err(t) = part {
            check_variable(t.variable)?;
            for op in &t.ops {
                check_op(op)?;
            }
        }
    }
    Ok(())
}

fn value_of(variable: &str, vars: &Vars) -> String {
    let v = match variable {
        "QUEUE_NAME" => &vars.queue_name,
        "QUEUE_ID" => &vars.queue_id,
        "WORKER_ID" => &vars.worker_id,
        "PROJECT_NAME" => &vars.project_name,
        "PROJECT_ID" | "TASK.project" => &vars.project_id,
        "TASK.id" => &vars.task_id,
        "TASK.name" => &vars.task_name,
        "TASK.user" => &vars.user,
        other => {
            return other
                .strip_prefix("TASK.")
                .and_then(property_name)
                .and_then(|n| vars.properties.get(n))
                .cloned()
                .unwrap_or_default();
        }
    };
    v.clone()
}

fn apply(op: &str, v: String) -> String {
    match op {
        "lower" => v.to_lowercase(),
        "capitalize" => {
            // Python's str.capitalize: the first character upper, the rest lower
            let lower = v.to_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => lower,
            }
        }
        "remove_newlines" => v.replace(['\r', '\n'], ""),
        "raw" => v,
        strip => {
            let chars = strip
                .strip_prefix("strip(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or_default();
            if chars.is_empty() {
                v.trim().to_string()
            } else {
                v.trim_matches(|c| chars.contains(c)).to_string()
            }
        }
    }
}

/// Expands the templates of `text` for one task (`text` was checked when the values loaded; an
/// unparsable one is returned as it is, which [`check`] never lets through).
pub fn expand(text: &str, vars: &Vars) -> String {
    if !text.contains(PREFIX) {
        return text.to_string();
    }
    let Ok(parts) = parse(text) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    for part in parts {
        match part {
            Ok(literal) => out.push_str(literal),
            Err(t) => {
                let mut v = value_of(t.variable, vars);
                if v.is_empty() {
                    v = t.default.unwrap_or_default().to_string();
                }
                if t.ops.is_empty() {
                    v = apply("remove_newlines", v);
                }
                for op in &t.ops {
                    v = apply(op, v);
                }
                out.push_str(&v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            task_id: "abc123".into(),
            task_name: "Train ResNet\nv2".into(),
            project_id: "p-1".into(),
            project_name: "Vision".into(),
            user: "u-7".into(),
            queue_name: "gpu".into(),
            queue_id: "q-9".into(),
            worker_id: "k8s:group:agent".into(),
            properties: [("user_key".to_string(), "alice".to_string())].into(),
        }
    }

    #[test]
    fn expansion_table() {
        let cases = [
            ("${CLEARML_TASK.id}", "abc123"),
            ("${CLEARML_TASK.name}", "Train ResNetv2"),
            ("${CLEARML_TASK.name|raw}", "Train ResNet\nv2"),
            ("${CLEARML_TASK.name|lower|strip(2v)}", "train resnet\n"),
            ("${CLEARML_TASK.project}", "p-1"),
            (
                "${CLEARML_PROJECT_ID}-${CLEARML_PROJECT_NAME}",
                "p-1-Vision",
            ),
            ("${CLEARML_TASK.user}", "u-7"),
            ("q=${CLEARML_QUEUE_NAME}/${CLEARML_QUEUE_ID}", "q=gpu/q-9"),
            ("${CLEARML_WORKER_ID}", "k8s:group:agent"),
            (
                "${CLEARML_TASK.hyperparams.properties.user_key.value}",
                "alice",
            ),
            (
                "${CLEARML_TASK.hyperparams.properties.other.value:myDefault}",
                "myDefault",
            ),
            ("${CLEARML_PROJECT_NAME|capitalize}", "Vision"),
            ("${CLEARML_QUEUE_NAME|capitalize}", "Gpu"),
            ("plain ${HOME} text", "plain ${HOME} text"),
        ];
        for (text, want) in cases {
            assert!(check(text).is_ok(), "{text}");
            assert_eq!(expand(text, &vars()), want, "{text}");
        }
    }

    #[test]
    fn unsupported_templates_are_refused_naming_them() {
        for (text, word) in [
            ("${CLEARML_USER.name}", "CLEARML_USER.name"),
            ("${CLEARML_USER_VAULTS.s.k:x}", "CLEARML_USER_VAULTS.s.k"),
            ("${CLEARML_CONFIG.sdk.x}", "CLEARML_CONFIG.sdk.x"),
            ("${CLEARML_TASK.tags}", "CLEARML_TASK.tags"),
            ("${CLEARML_TASK.name|upper}", "upper"),
            ("${CLEARML_TASK.name", "unclosed"),
        ] {
            let e = check(text).expect_err(text);
            assert!(e.contains(word), "{text}: {e}");
        }
    }
}
