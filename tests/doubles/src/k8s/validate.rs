//! Request-body checks the real server makes: decoding (types, quantities, unknown fields per
//! `fieldValidation`) answered with `400 BadRequest`, and validation answered with
//! `422 Invalid` plus field causes (names, pod containers/images/resources/volumes, deployment
//! selectors, configmap keys, pod spec immutability on update).

use serde_json::{Map, Value, json};

use super::{
    names::{
        DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG, is_dns1123_label, is_dns1123_subdomain,
        label_value_error, qualified_name_error,
    },
    quantity,
    resources::ResourceDef,
    status::{ApiError, FieldError},
};

/// How unknown fields in a request body are handled (`fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and return a `Warning` header (the server default).
    #[default]
    Warn,
    /// Reject the request with `400 BadRequest`.
    Strict,
}

impl FieldValidation {
    /// Parses the query value (`Ignore`, `Warn`, `Strict`; empty = `Warn`).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Decodes `obj` the way the server's decoder would: normalizes numeric quantities to strings,
/// rejects bad quantities and type errors (400), and prunes unknown fields, returning the
/// pruned object and the unknown field paths (warnings), or 400 under `Strict`.
pub(crate) fn decode(
    res: &ResourceDef,
    mut obj: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let cannot_handle = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: {e}",
            kind = res.kind,
            version = res.version,
        ))
    };
    if let Some(spec) = pod_spec_mut(res, &mut obj) {
        normalize_quantities(spec).map_err(|e| cannot_handle(&e))?;
    }
    let decoded = (res.codec)(obj.clone()).map_err(|e| cannot_handle(&e))?;
    let mut unknown = Vec::new();
    unknown_fields(&obj, &decoded, "", &mut unknown);
    unknown.sort();
    if validation == FieldValidation::Strict && !unknown.is_empty() {
        let list = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {list}"
        )));
    }
    let warnings = if validation == FieldValidation::Warn {
        unknown
            .into_iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect()
    } else {
        Vec::new()
    };
    Ok((decoded, warnings))
}

fn pod_spec_mut<'a>(res: &ResourceDef, obj: &'a mut Value) -> Option<&'a mut Value> {
    match (res.group, res.plural) {
        ("", "pods") => obj.get_mut("spec"),
        ("apps", "deployments") | ("batch", "jobs") => obj.pointer_mut("/spec/template/spec"),
        _ => None,
    }
}

fn pod_spec<'a>(res: &ResourceDef, obj: &'a Value) -> Option<(&'a Value, &'static str)> {
    match (res.group, res.plural) {
        ("", "pods") => obj.get("spec").map(|s| (s, "spec")),
        ("apps", "deployments") | ("batch", "jobs") => obj
            .pointer("/spec/template/spec")
            .map(|s| (s, "spec.template.spec")),
        _ => None,
    }
}

/// Quantities may be JSON numbers on the wire; the server stores their string form. A string
/// that does not parse fails decoding.
fn normalize_quantities(spec: &mut Value) -> Result<(), &'static str> {
    let fix = |q: &mut Value| -> Result<(), &'static str> {
        match q {
            Value::Number(n) => {
                *q = Value::String(n.to_string());
                Ok(())
            }
            Value::String(s) => quantity::parse(s).map(|_| ()),
            _ => Ok(()),
        }
    };
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut() {
                for kind in ["limits", "requests"] {
                    if let Some(Value::Object(m)) = c.pointer_mut(&format!("/resources/{kind}")) {
                        for q in m.values_mut() {
                            fix(q)?;
                        }
                    }
                }
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols.iter_mut() {
            if let Some(q) = v.pointer_mut("/emptyDir/sizeLimit") {
                fix(q)?;
            }
        }
    }
    if let Some(Value::Object(m)) = spec.get_mut("overhead") {
        for q in m.values_mut() {
            fix(q)?;
        }
    }
    Ok(())
}

fn unknown_fields(original: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(o), Value::Object(d)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match d.get(k) {
                    Some(dv) => unknown_fields(v, dv, &child, out),
                    None => out.push(child),
                }
            }
        }
        (Value::Array(o), Value::Array(d)) => {
            for (i, (ov, dv)) in o.iter().zip(d.iter()).enumerate() {
                unknown_fields(ov, dv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Validates a whole object (create and update). `old` is the stored object on update.
pub(crate) fn validate(res: &ResourceDef, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    metadata(res, obj, &mut errs);
    if let Some((spec, prefix)) = pod_spec(res, obj) {
        validate_pod_spec(spec, prefix, &mut errs);
        super::podgroup::validate_scheduling_group(spec, prefix, &mut errs);
    }
    match (res.group, res.plural) {
        ("apps", "deployments") => deployment(obj, old, &mut errs),
        ("", "pods") => {
            if let Some(old) = old {
                pod_update(old, obj, &mut errs);
            }
        }
        ("", "configmaps") | ("", "secrets") => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(Value::Object(m)) = obj.get(field) {
                    for k in m.keys() {
                        if !is_config_key(k) {
                            errs.push(FieldError::invalid(
                                format!("{field}[{k}]"),
                                &json!(k),
                                CONFIG_KEY_MSG,
                            ));
                        }
                    }
                }
            }
        }
        ("", "services") => service(obj, &mut errs),
        ("batch", "jobs") => super::job_controller::validate(obj, old, &mut errs),
        (super::resources::POD_GROUP_GROUP, "podgroups") => {
            super::podgroup::validate(res, obj, old, &mut errs);
        }
        _ => {}
    }
    errs
}

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && k != "."
        && k != ".."
}

fn metadata(res: &ResourceDef, obj: &Value, errs: &mut Vec<FieldError>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if let Some(msg) = name_error(res, name) {
        errs.push(FieldError::invalid("metadata.name", &json!(name), &msg));
    }
    if let Some(Value::Object(labels)) = obj.pointer("/metadata/labels") {
        for (k, v) in labels {
            if let Some(e) = qualified_name_error(k) {
                errs.push(FieldError::invalid("metadata.labels", &json!(k), &e));
            }
            if let Some(e) = v.as_str().and_then(label_value_error) {
                errs.push(FieldError::invalid("metadata.labels", v, &e));
            }
        }
    }
    if let Some(Value::Object(annotations)) = obj.pointer("/metadata/annotations") {
        for k in annotations.keys() {
            if let Some(e) = qualified_name_error(k) {
                errs.push(FieldError::invalid("metadata.annotations", &json!(k), &e));
            }
        }
    }
}

/// The name rule of each type: DNS-1123 labels for namespaces, DNS-1035 labels for services,
/// path segments for RBAC, DNS-1123 subdomains otherwise.
fn name_error(res: &ResourceDef, name: &str) -> Option<String> {
    match (res.group, res.plural) {
        ("", "namespaces") => (!is_dns1123_label(name)).then(|| DNS1123_LABEL_MSG.to_string()),
        ("", "services") => {
            let ok = is_dns1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase());
            (!ok).then(|| DNS1035_LABEL_MSG.to_string())
        }
        ("rbac.authorization.k8s.io", _) => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else if name.contains('/') {
                Some("may not contain '/'".to_string())
            } else if name.contains('%') {
                Some("may not contain '%'".to_string())
            } else {
                None
            }
        }
        _ => (!is_dns1123_subdomain(name)).then(|| DNS1123_SUBDOMAIN_MSG.to_string()),
    }
}

fn validate_pod_spec(spec: &Value, prefix: &str, errs: &mut Vec<FieldError>) {
    let volumes: Vec<&str> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let mut seen_volumes = Vec::new();
    for (i, name) in volumes.iter().enumerate() {
        let field = format!("{prefix}.volumes[{i}].name");
        if name.is_empty() {
            errs.push(FieldError::required(field, ""));
        } else if !is_dns1123_label(name) {
            errs.push(FieldError::invalid(field, &json!(name), DNS1123_LABEL_MSG));
        } else if seen_volumes.contains(name) {
            errs.push(FieldError::duplicate(field, &json!(name)));
        } else {
            seen_volumes.push(*name);
        }
    }
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required(format!("{prefix}.containers"), ""));
    }
    let mut seen_names: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let base = format!("{prefix}.{list}[{i}]");
            container(c, &base, &volumes, &mut seen_names, errs);
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !["Always", "OnFailure", "Never"].contains(&policy)
    {
        errs.push(FieldError::not_supported(
            format!("{prefix}.restartPolicy"),
            &json!(policy),
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(policy) = spec.get("dnsPolicy").and_then(Value::as_str) {
        let valid = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !valid.contains(&policy) {
            errs.push(FieldError::not_supported(
                format!("{prefix}.dnsPolicy"),
                &json!(policy),
                &valid,
            ));
        }
    }
}

fn container(
    c: &Value,
    base: &str,
    volumes: &[&str],
    seen_names: &mut Vec<String>,
    errs: &mut Vec<FieldError>,
) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required(format!("{base}.name"), ""));
    } else if !is_dns1123_label(name) {
        errs.push(FieldError::invalid(
            format!("{base}.name"),
            &json!(name),
            DNS1123_LABEL_MSG,
        ));
    } else if seen_names.iter().any(|n| n == name) {
        errs.push(FieldError::duplicate(format!("{base}.name"), &json!(name)));
    } else {
        seen_names.push(name.to_string());
    }
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    if image.is_empty() {
        errs.push(FieldError::required(format!("{base}.image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            format!("{base}.image"),
            &json!(image),
            "must not have leading or trailing whitespace",
        ));
    }
    if let Some(policy) = c.get("imagePullPolicy").and_then(Value::as_str) {
        let valid = ["Always", "IfNotPresent", "Never"];
        if !valid.contains(&policy) {
            errs.push(FieldError::not_supported(
                format!("{base}.imagePullPolicy"),
                &json!(policy),
                &valid,
            ));
        }
    }
    if let Some(ports) = c.get("ports").and_then(Value::as_array) {
        for (i, p) in ports.iter().enumerate() {
            let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("{base}.ports[{i}].containerPort"),
                    &json!(port),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(proto) = p.get("protocol").and_then(Value::as_str)
                && !["TCP", "UDP", "SCTP"].contains(&proto)
            {
                errs.push(FieldError::not_supported(
                    format!("{base}.ports[{i}].protocol"),
                    &json!(proto),
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    if let Some(env) = c.get("env").and_then(Value::as_array) {
        for (i, e) in env.iter().enumerate() {
            if e.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                errs.push(FieldError::required(format!("{base}.env[{i}].name"), ""));
            }
        }
    }
    if let Some(mounts) = c.get("volumeMounts").and_then(Value::as_array) {
        for (i, m) in mounts.iter().enumerate() {
            let vname = m.get("name").and_then(Value::as_str).unwrap_or_default();
            if vname.is_empty() {
                errs.push(FieldError::required(
                    format!("{base}.volumeMounts[{i}].name"),
                    "",
                ));
            } else if !volumes.contains(&vname) {
                errs.push(FieldError::not_found(
                    format!("{base}.volumeMounts[{i}].name"),
                    &json!(vname),
                ));
            }
            let path = m
                .get("mountPath")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if path.is_empty() {
                errs.push(FieldError::required(
                    format!("{base}.volumeMounts[{i}].mountPath"),
                    "",
                ));
            }
        }
    }
    resources(c.get("resources"), &format!("{base}.resources"), errs);
}

fn resources(res: Option<&Value>, base: &str, errs: &mut Vec<FieldError>) {
    let get = |kind: &str| -> Map<String, Value> {
        res.and_then(|r| r.get(kind))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let limits = get("limits");
    let requests = get("requests");
    for (kind, map) in [("limits", &limits), ("requests", &requests)] {
        for (name, q) in map {
            if let Some(v) = q.as_str().and_then(|s| quantity::parse(s).ok())
                && v < 0.0
            {
                errs.push(FieldError::invalid(
                    format!("{base}.{kind}[{name}]"),
                    q,
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    for (name, q) in &requests {
        let (Some(req), Some(limit)) = (q.as_str(), limits.get(name).and_then(Value::as_str))
        else {
            continue;
        };
        if let (Ok(r), Ok(l)) = (quantity::parse(req), quantity::parse(limit))
            && r > l
        {
            errs.push(FieldError::invalid(
                format!("{base}.requests[{name}]"),
                q,
                &format!("must be less than or equal to {name} limit of {limit}"),
            ));
        }
    }
}

pub(crate) fn go_string_map(m: Option<&Value>) -> String {
    let inner = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k:?}:{}", v))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!("map[string]string{{{inner}}}")
}

fn deployment(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let selector = obj.pointer("/spec/selector");
    if selector.is_none_or(Value::is_null) {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        let template_labels = obj.pointer("/spec/template/metadata/labels");
        let sel = selector
            .and_then(|s| s.get("matchLabels"))
            .and_then(Value::as_object);
        let matches = sel.is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| template_labels.and_then(|l| l.get(k)) == Some(v))
        });
        let empty = sel.is_none_or(Map::is_empty)
            && selector
                .and_then(|s| s.get("matchExpressions"))
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if empty {
            errs.push(FieldError::invalid(
                "spec.selector",
                &json!("null"),
                "empty selector is invalid for deployment",
            ));
        } else if !matches {
            errs.push(FieldError {
                reason: "FieldValueInvalid",
                field: "spec.template.metadata.labels".into(),
                message: format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_string_map(template_labels)
                ),
            });
        }
        if let Some(old_sel) = old.and_then(|o| o.pointer("/spec/selector"))
            && Some(old_sel) != selector
        {
            errs.push(FieldError {
                reason: "FieldValueInvalid",
                field: "spec.selector".into(),
                message: format!(
                    "Invalid value: {}: field is immutable",
                    selector.map(Value::to_string).unwrap_or_default()
                ),
            });
        }
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid(
            "spec.replicas",
            &json!(r),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(policy) = obj
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        && policy != "Always"
    {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(policy),
            &["Always"],
        ));
    }
}

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    if ty != "ExternalName" && !headless && ports.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required("spec.ports", ""));
    }
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                &json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

/// The real server lets a pod update change only images, activeDeadlineSeconds, tolerations
/// (additions), terminationGracePeriodSeconds and scheduling gates (removals).
fn pod_update(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let (Some(old_spec), Some(new_spec)) = (old.get("spec"), new.get("spec")) else {
        return;
    };
    let mut masked = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let old_list = old_spec.get(list).and_then(Value::as_array);
        if let (Some(Value::Array(new_list)), Some(old_list)) = (masked.get_mut(list), old_list)
            && new_list.len() == old_list.len()
        {
            for (n, o) in new_list.iter_mut().zip(old_list) {
                if let (Some(n), Some(img)) = (n.as_object_mut(), o.get("image")) {
                    n.insert("image".into(), img.clone());
                }
            }
        }
    }
    if let Some(m) = masked.as_object_mut() {
        for field in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
        ] {
            match old_spec.get(field) {
                Some(v) => m.insert(field.to_string(), v.clone()),
                None => m.remove(field),
            };
        }
    }
    if &masked != old_spec {
        errs.push(FieldError::forbidden("spec", POD_UPDATE_MSG));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::resources::{def, resolve};

    fn pods() -> &'static ResourceDef {
        def(resolve("pods").expect("pods"))
    }

    #[test]
    fn pod_without_containers_and_image() {
        let errs = validate(
            pods(),
            &json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
            None,
        );
        assert_eq!(errs, vec![FieldError::required("spec.containers", "")]);
        let errs = validate(
            pods(),
            &json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": ""}]}}),
            None,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.name", "spec.containers[0].image"]);
    }

    #[test]
    fn bad_quantity_fails_decoding() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"memory": "12 GiB"}}}]}});
        let err = decode(pods(), pod, FieldValidation::Strict).expect_err("bad quantity");
        assert_eq!(err.code, 400);
        assert!(err.message.starts_with(
            "Pod in version \"v1\" cannot be handled as a Pod: quantities must match"
        ));
    }

    #[test]
    fn strict_unknown_fields() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"foo": 1, "containers": [{"name": "c", "image": "i", "bar": 2}]}});
        let err = decode(pods(), pod.clone(), FieldValidation::Strict).expect_err("unknown");
        assert_eq!(
            err.message,
            "strict decoding error: unknown field \"spec.containers[0].bar\", unknown field \"spec.foo\""
        );
        let (pruned, warnings) = decode(pods(), pod, FieldValidation::Warn).expect("warn");
        assert_eq!(warnings.len(), 2);
        assert!(pruned.pointer("/spec/foo").is_none());
    }
}
