//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{group}`, the per-group-version
//! `APIResourceList`s (legacy, non-aggregated format; clients that ask for aggregated
//! discovery fall back to it because the answer's content type is plain JSON), and a minimal
//! `/openapi/v3`: the root listing every group-version and per-group-version documents whose
//! PATCH operations declare the `fieldValidation` parameter, which is what kubectl checks to
//! use server-side field validation. As kube-openapi's handler does, a group-version document
//! carries its hash as `ETag`, answers a matching `If-None-Match` with 304, and when asked for by
//! its current `?hash=` is marked `Cache-Control: public, immutable` with `Expires` a year ahead
//! (kubectl's HTTP cache then stops asking); a stale hash is redirected (301) to the current one.
//! `/openapi/v2` is not served (404), like a server with it disabled; kubectl then computes
//! strategic merge patches from its compiled-in types.

use serde_json::{Map, Value, json};

use super::resources::{
    PodGroupApi, RESOURCE_VERBS, RESOURCES, ResourceDef, group_versions, served,
};

/// The Kubernetes version the double claims to be.
pub const GIT_VERSION: &str = "v1.33.1";

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:08Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_entry(group: &str, api: Option<PodGroupApi>) -> Value {
    let versions: Vec<Value> = group_versions(api)
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `/apis`.
pub(crate) fn api_group_list(api: Option<PodGroupApi>) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions(api) {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.into_iter().map(|g| group_entry(g, api)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if served.
pub(crate) fn api_group(group: &str, api: Option<PodGroupApi>) -> Option<Value> {
    if group.is_empty() || !RESOURCES.iter().any(|r| r.group == group && served(r, api)) {
        return None;
    }
    let mut entry = group_entry(group, api);
    if let Value::Object(m) = &mut entry {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(entry)
}

fn resource_entry(r: &ResourceDef) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(r.plural));
    m.insert("singularName".into(), json!(r.singular));
    m.insert("namespaced".into(), json!(r.namespaced));
    m.insert("kind".into(), json!(r.kind));
    m.insert("verbs".into(), json!(RESOURCE_VERBS));
    if !r.short_names.is_empty() {
        m.insert("shortNames".into(), json!(r.short_names));
    }
    if !r.categories.is_empty() {
        m.insert("categories".into(), json!(r.categories));
    }
    Value::Object(m)
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub(crate) fn api_resource_list(
    group: &str,
    version: &str,
    api: Option<PodGroupApi>,
) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && served(r, api))
    {
        resources.push(resource_entry(r));
        for (sub, verbs) in r.subresources {
            // Connect subresources are typed by their options object.
            let kind = match (r.plural, *sub) {
                ("pods", "portforward") => "PodPortForwardOptions",
                _ => r.kind,
            };
            resources.push(json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources
    }))
}

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The hash (and ETag) of a group-version's OpenAPI document, as the root lists it.
pub(crate) fn openapi_v3_hash(key: &str) -> String {
    format!("D0UBLE{}", key.len())
}

/// `/openapi/v3`: the group-version index.
pub(crate) fn openapi_v3_root(api: Option<PodGroupApi>) -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions(api) {
        let key = gv_key(g, v);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", openapi_v3_hash(&key))}),
        );
    }
    json!({"paths": paths})
}

fn query_param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}})
}

/// `/openapi/v3/{api/v1 | apis/g/v}`: the write operations of each resource, with their query
/// parameters and group-version-kind extensions (no schemas).
pub(crate) fn openapi_v3_gv(key: &str, api: Option<PodGroupApi>) -> Option<Value> {
    let (group, version) = group_versions(api)
        .into_iter()
        .find(|(g, v)| gv_key(g, v) == key)?;
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && served(r, api))
    {
        let base = if r.namespaced {
            format!("{}/namespaces/{{namespace}}/{}", r.gv_path(), r.plural)
        } else {
            format!("{}/{}", r.gv_path(), r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let write_params = json!([
            query_param("dryRun", "string"),
            query_param("fieldManager", "string"),
            query_param("fieldValidation", "string"),
        ]);
        let mut patch_params = write_params.clone();
        if let Value::Array(a) = &mut patch_params {
            a.push(query_param("force", "boolean"));
        }
        let op = |action: &str, params: &Value| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(base.clone(), json!({"post": op("post", &write_params)}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"put": op("put", &write_params), "patch": op("patch", &patch_params)}),
        );
        for (sub, verbs) in r.subresources {
            if verbs.contains(&"patch") {
                paths.insert(
                    format!("{base}/{{name}}/{sub}"),
                    json!({"put": op("put", &write_params), "patch": op("patch", &patch_params)}),
                );
            }
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}
