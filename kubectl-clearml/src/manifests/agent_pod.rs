//! The open-source chart's keys for the agent's own pod and account, applied where the chart puts
//! them: the Deployment (replicas, labels, annotations, env, resources, security contexts,
//! scheduling, volumes, files, pull secret), the ServiceAccount (annotations, or an existing one),
//! extra (Cluster)RoleBindings, and the Secrets made from `fileMounts` and `clearmlConfig`.
//! Pure: values in, typed objects out.

use std::collections::BTreeMap;

use clearml_agent_core::{
    contract::{AGENT_FILES_SECRET, CLEARML_CONF_KEY, CLEARML_CONF_SECRET, ENV_CREDENTIALS_SECRET},
    values::{FieldError, Values, file_mount_path},
};
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        core::v1::{EnvVar, LocalObjectReference, Secret, SecretVolumeSource, Volume, VolumeMount},
        rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    AGENT_NAME, ANNOTATION_CREDENTIALS_HASH, ENV_SKIP_TLS_VERIFY, FIELD_MANAGER, LABEL_MANAGED_BY,
    RenderError,
};

/// Labels the install sets that values may not change: the Deployment's selector, and what
/// uninstall looks for.
const RESERVED_LABELS: &[&str] = &["app.kubernetes.io/name", LABEL_MANAGED_BY];
/// The install's own volume (the writable /tmp of a read-only root filesystem).
const TMP_VOLUME: &str = "tmp";
/// Most characters of an object name.
const MAX_NAME: usize = 253;

/// How the install wires the agent's pod, from the values and the install flags.
pub struct Wiring<'a> {
    /// The Secret with the ClearML key pair.
    pub credentials_secret: &'a str,
    /// Whether that Secret is the user's (`clearml.existingAgentk8sglueSecret`).
    pub existing_credentials: bool,
    /// The agent's ServiceAccount.
    pub service_account: &'a str,
    /// The pull Secret of the agent's image, if any.
    pub pull_secret: Option<&'a str>,
    /// The agent skips TLS verification of the ClearML server.
    pub skip_tls_verify: bool,
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError::Values(FieldError {
        path: path.into(),
        message: message.into(),
    })
}

/// The agent's ServiceAccount: `serviceExistingAccountName`, else the install's own.
pub fn service_account(values: &Values) -> &str {
    values
        .agentk8sglue
        .service_existing_account_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(AGENT_NAME)
}

/// Whether the install makes the ServiceAccount (no `serviceExistingAccountName`).
pub fn creates_service_account(values: &Values) -> bool {
    values
        .agentk8sglue
        .service_existing_account_name
        .as_deref()
        .is_none_or(|s| s.trim().is_empty())
}

/// `serviceAccountAnnotations` on the install's ServiceAccount.
pub fn finish_service_account(
    sa: &mut k8s_openapi::api::core::v1::ServiceAccount,
    values: &Values,
) {
    if let Some(a) = values
        .agentk8sglue
        .service_account_annotations
        .as_ref()
        .filter(|a| !a.is_empty())
    {
        sa.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(a.clone());
    }
}

/// The RoleBinding's subject: the agent's ServiceAccount.
pub fn finish_role_binding(rb: &mut RoleBinding, service_account: &str) {
    for s in rb.subjects.iter_mut().flatten() {
        if s.kind == "ServiceAccount" {
            s.name = service_account.to_string();
        }
    }
}

/// Labels every object the install makes carries.
fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), AGENT_NAME.to_string()),
        (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
    ])
}

fn meta(name: String, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: namespace.map(String::from),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn subject(namespace: &str, service_account: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: service_account.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    }]
}

/// Name of the RoleBinding for `additionalRoleBindings` entry `role`.
pub fn role_binding_name(role: &str) -> String {
    format!("{AGENT_NAME}-{role}")
}

/// Name of the ClusterRoleBinding for `additionalClusterRoleBindings` entry `role` (cluster-wide,
/// so it carries the namespace: two installs never share one).
pub fn cluster_role_binding_name(namespace: &str, role: &str) -> String {
    format!("{AGENT_NAME}-{namespace}-{role}")
}

/// `additionalRoleBindings` / `additionalClusterRoleBindings`: the named existing (Cluster)Roles
/// bound to the agent's ServiceAccount.
pub fn extra_bindings(
    values: &Values,
    namespace: &str,
    service_account: &str,
) -> Result<(Vec<RoleBinding>, Vec<ClusterRoleBinding>), RenderError> {
    let a = &values.agentk8sglue;
    let mut roles = Vec::new();
    for (i, role) in a.additional_role_bindings.iter().flatten().enumerate() {
        let name = role_binding_name(role);
        if name.len() > MAX_NAME {
            return Err(invalid(
                format!("agentk8sglue.additionalRoleBindings[{i}]"),
                format!("the RoleBinding name {name:?} is longer than {MAX_NAME} characters"),
            ));
        }
        roles.push(RoleBinding {
            metadata: meta(name, Some(namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: role.clone(),
            },
            subjects: Some(subject(namespace, service_account)),
        });
    }
    let mut cluster = Vec::new();
    for (i, role) in a
        .additional_cluster_role_bindings
        .iter()
        .flatten()
        .enumerate()
    {
        let name = cluster_role_binding_name(namespace, role);
        if name.len() > MAX_NAME {
            return Err(invalid(
                format!("agentk8sglue.additionalClusterRoleBindings[{i}]"),
                format!(
                    "the ClusterRoleBinding name {name:?} is longer than {MAX_NAME} characters"
                ),
            ));
        }
        cluster.push(ClusterRoleBinding {
            metadata: meta(name, None),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: role.clone(),
            },
            subjects: Some(subject(namespace, service_account)),
        });
    }
    Ok((roles, cluster))
}

/// The Secret holding the agent pod's `fileMounts` (key: the file name), if there are any.
pub fn files_secret(values: &Values, namespace: &str) -> Option<Secret> {
    let files = values.agentk8sglue.file_mounts.as_ref()?;
    if files.is_empty() {
        return None;
    }
    Some(Secret {
        metadata: meta(AGENT_FILES_SECRET.into(), Some(namespace)),
        type_: Some("Opaque".into()),
        data: Some(
            files
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        ByteString(f.file_content.clone().into_bytes()),
                    )
                })
                .collect(),
        ),
        ..Default::default()
    })
}

/// The namespace of task pods: `taskNamespace`, else the agent's.
pub fn task_namespace<'a>(values: &'a Values, namespace: &'a str) -> &'a str {
    values
        .agentk8sglue
        .task_namespace
        .as_deref()
        .unwrap_or(namespace)
}

/// The Secret made from `clearml.clearmlConfig`, in the task namespace (task pods mount it).
pub fn clearml_conf_secret(values: &Values, namespace: &str) -> Option<Secret> {
    let conf = values.clearml_config()?;
    Some(Secret {
        metadata: meta(
            CLEARML_CONF_SECRET.into(),
            Some(task_namespace(values, namespace)),
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CLEARML_CONF_KEY.to_string(),
            ByteString(conf.as_bytes().to_vec()),
        )])),
        ..Default::default()
    })
}

/// `over` merged onto `base` (maps key by key, `over` winning; anything else replaced).
fn merge_json(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `over` merged onto `base`, both of type `T`.
fn merged<T: Serialize + DeserializeOwned + Default>(
    base: Option<&T>,
    over: &T,
    path: &str,
) -> Result<T, RenderError> {
    let mut doc = serde_json::to_value(base.unwrap_or(&T::default()))
        .map_err(|e| invalid(path, e.to_string()))?;
    merge_json(
        &mut doc,
        serde_json::to_value(over).map_err(|e| invalid(path, e.to_string()))?,
    );
    serde_json::from_value(doc).map_err(|e| invalid(path, e.to_string()))
}

fn add_map(
    target: &mut Option<BTreeMap<String, String>>,
    extra: &BTreeMap<String, String>,
    reserved: &[&str],
    path: &str,
) -> Result<(), RenderError> {
    for (k, v) in extra {
        if reserved.contains(&k.as_str()) {
            return Err(invalid(
                format!("{path}.{k}"),
                "is set by install (the Deployment's selector, and what uninstall looks for)",
            ));
        }
        target
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
    }
    Ok(())
}

/// Applies the agent-pod keys and the wiring to the install's Deployment.
pub fn finish_deployment(
    d: &mut Deployment,
    values: &Values,
    wiring: &Wiring<'_>,
) -> Result<(), RenderError> {
    let a = &values.agentk8sglue;
    let root = "agentk8sglue";
    let Some(spec) = d.spec.as_mut() else {
        return Ok(());
    };
    if let Some(n) = a.replica_count {
        spec.replicas = Some(n);
    }
    let empty = BTreeMap::new();
    let labels = a.labels.as_ref().unwrap_or(&empty);
    let annotations = a.annotations.as_ref().unwrap_or(&empty);
    let reserved_annotations = [ANNOTATION_CREDENTIALS_HASH];
    add_map(
        &mut d.metadata.labels,
        labels,
        RESERVED_LABELS,
        &format!("{root}.labels"),
    )?;
    add_map(
        &mut d.metadata.annotations,
        annotations,
        &reserved_annotations,
        &format!("{root}.annotations"),
    )?;
    let template = &mut spec.template;
    let tmeta = template.metadata.get_or_insert_with(Default::default);
    add_map(
        &mut tmeta.labels,
        labels,
        RESERVED_LABELS,
        &format!("{root}.labels"),
    )?;
    add_map(
        &mut tmeta.annotations,
        annotations,
        &reserved_annotations,
        &format!("{root}.annotations"),
    )?;
    let Some(pod) = template.spec.as_mut() else {
        return Ok(());
    };
    pod.service_account_name = Some(wiring.service_account.to_string());
    if let Some(secret) = wiring.pull_secret {
        pod.image_pull_secrets = Some(vec![LocalObjectReference {
            name: secret.to_string(),
        }]);
    }
    if let Some(sc) = &a.pod_security_context {
        pod.security_context = Some(merged(
            pod.security_context.as_ref(),
            sc,
            &format!("{root}.podSecurityContext"),
        )?);
    }
    if let Some(ns) = a.node_selector.as_ref().filter(|m| !m.is_empty()) {
        pod.node_selector = Some(ns.clone());
    }
    if let Some(t) = a.tolerations.as_ref().filter(|t| !t.is_empty()) {
        pod.tolerations = Some(t.clone());
    }
    if let Some(aff) = a.affinity.as_ref().filter(|x| **x != Default::default()) {
        pod.affinity = Some(aff.clone());
    }
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    for (i, v) in a.volumes.iter().flatten().enumerate() {
        if v.name == TMP_VOLUME || v.name == AGENT_FILES_SECRET {
            return Err(invalid(
                format!("{root}.volumes[{i}].name"),
                format!("{:?} is the name of a volume install adds", v.name),
            ));
        }
        volumes.push(v.clone());
    }
    let files = a.file_mounts.as_deref().unwrap_or_default();
    if !files.is_empty() {
        volumes.push(Volume {
            name: AGENT_FILES_SECRET.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(AGENT_FILES_SECRET.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let Some(c) = pod.containers.first_mut() else {
        return Ok(());
    };
    let env = c.env.get_or_insert_with(Vec::new);
    for e in env.iter_mut() {
        if let Some(r) = e
            .value_from
            .as_mut()
            .and_then(|f| f.secret_key_ref.as_mut())
        {
            r.name = wiring.credentials_secret.to_string();
        }
    }
    if wiring.existing_credentials {
        env.push(EnvVar {
            name: ENV_CREDENTIALS_SECRET.into(),
            value: Some(wiring.credentials_secret.to_string()),
            ..Default::default()
        });
    }
    if wiring.skip_tls_verify {
        env.push(EnvVar {
            name: ENV_SKIP_TLS_VERIFY.into(),
            value: Some("true".into()),
            ..Default::default()
        });
    }
    // extraEnvs: an entry named like one the install sets replaces it, in place
    for extra in a.extra_envs.iter().flatten() {
        match env.iter_mut().find(|e| e.name == extra.name) {
            Some(slot) => *slot = extra.clone(),
            None => env.push(extra.clone()),
        }
    }
    if let Some(r) = a.resources.as_ref().filter(|r| **r != Default::default()) {
        c.resources = Some(r.clone());
    }
    if let Some(sc) = &a.container_security_context {
        c.security_context = Some(merged(
            c.security_context.as_ref(),
            sc,
            &format!("{root}.containerSecurityContext"),
        )?);
    }
    let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
    let taken = |mounts: &Vec<VolumeMount>, path: &str| {
        mounts
            .iter()
            .any(|m| m.mount_path.trim_end_matches('/') == path.trim_end_matches('/'))
    };
    for (i, m) in a.volume_mounts.iter().flatten().enumerate() {
        if taken(mounts, &m.mount_path) {
            return Err(invalid(
                format!("{root}.volumeMounts[{i}].mountPath"),
                format!("{} is a mount install adds", m.mount_path),
            ));
        }
        mounts.push(m.clone());
    }
    for (i, f) in files.iter().enumerate() {
        let path = file_mount_path(f);
        if taken(mounts, &path) {
            return Err(invalid(
                format!("{root}.fileMounts[{i}].folderPath"),
                format!("{path} is also another mount's path"),
            ));
        }
        mounts.push(VolumeMount {
            name: AGENT_FILES_SECRET.into(),
            mount_path: path,
            sub_path: Some(f.name.clone()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{
        CREDENTIALS_SECRET, ExistingCredentials, InstallParams, REGISTRY_SECRET, Rendered, render,
    };
    use super::*;

    fn rendered(yaml: &str) -> Rendered {
        let values = Values::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        let params = InstallParams {
            namespace: "ml".into(),
            image: super::super::agent_image(&values),
            clearml_insecure_skip_tls_verify: false,
        };
        let existing = ExistingCredentials::Present { hash: "h".into() };
        render(&values, &params, &existing).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn get(r: &Rendered, kind: &str, name: &str) -> Value {
        r.get(kind, name)
            .unwrap_or_else(|| panic!("{kind}/{name} rendered"))
            .doc
            .clone()
    }

    fn deployment(r: &Rendered) -> Value {
        get(r, "Deployment", AGENT_NAME)
    }

    fn at(doc: &Value, pointer: &str) -> Value {
        doc.pointer(pointer)
            .cloned()
            .unwrap_or_else(|| panic!("{pointer} in {doc:#}"))
    }

    fn env(r: &Rendered, name: &str) -> Value {
        let d = deployment(r);
        at(&d, "/spec/template/spec/containers/0/env")
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("env {name}"))
    }

    /// Each chart key of the agent's pod and account → where the rendered install has it.
    #[test]
    fn each_agent_key_lands_where_the_chart_puts_it() {
        type Check = fn(&Rendered);
        let cases: &[(&str, &str, Check)] = &[
            (
                "global.imageRegistry",
                "global:\n  imageRegistry: mirror.example.com\n",
                |r| {
                    let image = at(&deployment(r), "/spec/template/spec/containers/0/image");
                    assert_eq!(
                        image,
                        format!(
                            "mirror.example.com/clearml-k8s-agent:{}",
                            env!("CARGO_PKG_VERSION")
                        )
                    );
                },
            ),
            (
                "agentk8sglue.image.*",
                "global:\n  imageRegistry: a.example.com\nagentk8sglue:\n  image:\n    registry: b.example.com\n    repository: m/agent\n    tag: \"7\"\n",
                |r| {
                    let image = at(&deployment(r), "/spec/template/spec/containers/0/image");
                    assert_eq!(image, "b.example.com/m/agent:7");
                },
            ),
            (
                "agentk8sglue.image.repository (the Python glue's)",
                "agentk8sglue:\n  image:\n    repository: allegroai/clearml-agent-k8s-base\n    tag: \"1.24-21\"\n",
                |r| {
                    let image = at(&deployment(r), "/spec/template/spec/containers/0/image");
                    assert_eq!(
                        image,
                        format!("clearml-k8s-agent:{}", env!("CARGO_PKG_VERSION"))
                    );
                },
            ),
            (
                "agentk8sglue.replicaCount",
                "agentk8sglue:\n  replicaCount: 3\n",
                |r| {
                    assert_eq!(at(&deployment(r), "/spec/replicas"), 3);
                },
            ),
            (
                "agentk8sglue.resources",
                "agentk8sglue:\n  resources:\n    limits:\n      memory: 1Gi\n",
                |r| {
                    let res = at(&deployment(r), "/spec/template/spec/containers/0/resources");
                    assert_eq!(res, serde_json::json!({"limits": {"memory": "1Gi"}}));
                },
            ),
            (
                "agentk8sglue.labels",
                "agentk8sglue:\n  labels:\n    team: ml\n",
                |r| {
                    let d = deployment(r);
                    assert_eq!(at(&d, "/metadata/labels/team"), "ml");
                    assert_eq!(at(&d, "/spec/template/metadata/labels/team"), "ml");
                    assert_eq!(
                        at(&d, "/spec/selector/matchLabels"),
                        serde_json::json!({"app.kubernetes.io/name": "clearml-agent"})
                    );
                },
            ),
            (
                "agentk8sglue.annotations",
                "agentk8sglue:\n  annotations:\n    a.example.com/x: y\n",
                |r| {
                    let d = deployment(r);
                    assert_eq!(at(&d, "/metadata/annotations/a.example.com~1x"), "y");
                    assert_eq!(
                        at(&d, "/spec/template/metadata/annotations/a.example.com~1x"),
                        "y"
                    );
                    assert!(
                        d.pointer(
                            "/spec/template/metadata/annotations/clearml.ai~1credentials-hash"
                        )
                        .is_some()
                    );
                },
            ),
            (
                "agentk8sglue.extraEnvs",
                "agentk8sglue:\n  extraEnvs:\n    - name: HTTPS_PROXY\n      value: http://p:3128\n    - name: CLEARML_AGENT_HTTP_ADDR\n      value: 0.0.0.0:8081\n",
                |r| {
                    assert_eq!(env(r, "HTTPS_PROXY")["value"], "http://p:3128");
                    assert_eq!(env(r, "CLEARML_AGENT_HTTP_ADDR")["value"], "0.0.0.0:8081");
                    let d = deployment(r);
                    let names = at(&d, "/spec/template/spec/containers/0/env");
                    let n = names
                        .as_array()
                        .expect("env")
                        .iter()
                        .filter(|e| e["name"] == "CLEARML_AGENT_HTTP_ADDR")
                        .count();
                    assert_eq!(n, 1, "replaced, not duplicated");
                },
            ),
            (
                "agentk8sglue.podSecurityContext",
                "agentk8sglue:\n  podSecurityContext:\n    fsGroup: 1001\n",
                |r| {
                    let sc = at(&deployment(r), "/spec/template/spec/securityContext");
                    assert_eq!(sc["fsGroup"], 1001);
                    assert_eq!(sc["runAsNonRoot"], true, "merged over the default");
                },
            ),
            (
                "agentk8sglue.containerSecurityContext",
                "agentk8sglue:\n  containerSecurityContext:\n    runAsUser: 1001\n",
                |r| {
                    let sc = at(
                        &deployment(r),
                        "/spec/template/spec/containers/0/securityContext",
                    );
                    assert_eq!(sc["runAsUser"], 1001);
                    assert_eq!(
                        sc["readOnlyRootFilesystem"], true,
                        "merged over the default"
                    );
                },
            ),
            (
                "agentk8sglue.nodeSelector/tolerations/affinity",
                "agentk8sglue:\n  nodeSelector:\n    fleet: agents\n  tolerations:\n    - key: dedicated\n      operator: Exists\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n          - matchExpressions:\n              - key: fleet\n                operator: Exists\n",
                |r| {
                    let pod = at(&deployment(r), "/spec/template/spec");
                    assert_eq!(pod["nodeSelector"]["fleet"], "agents");
                    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
                    assert!(pod["affinity"]["nodeAffinity"].is_object());
                },
            ),
            (
                "agentk8sglue.volumes/volumeMounts",
                "agentk8sglue:\n  volumes:\n    - name: data\n      emptyDir: {}\n  volumeMounts:\n    - name: data\n      mountPath: /data\n",
                |r| {
                    let pod = at(&deployment(r), "/spec/template/spec");
                    let vols: Vec<&str> = pod["volumes"]
                        .as_array()
                        .expect("volumes")
                        .iter()
                        .filter_map(|v| v["name"].as_str())
                        .collect();
                    assert_eq!(vols, ["tmp", "data"]);
                    let mounts: Vec<&str> = pod["containers"][0]["volumeMounts"]
                        .as_array()
                        .expect("mounts")
                        .iter()
                        .filter_map(|v| v["mountPath"].as_str())
                        .collect();
                    assert_eq!(mounts, ["/tmp", "/data"]);
                },
            ),
            (
                "agentk8sglue.fileMounts",
                "agentk8sglue:\n  fileMounts:\n    - name: integration.py\n      folderPath: /mnt/python/\n      fileContent: print(1)\n",
                |r| {
                    let secret = get(r, "Secret", AGENT_FILES_SECRET);
                    assert_eq!(secret["data"]["integration.py"], "cHJpbnQoMSk=");
                    let pod = at(&deployment(r), "/spec/template/spec");
                    let vol = pod["volumes"]
                        .as_array()
                        .expect("volumes")
                        .iter()
                        .find(|v| v["name"] == AGENT_FILES_SECRET)
                        .cloned()
                        .expect("files volume");
                    assert_eq!(vol["secret"]["secretName"], AGENT_FILES_SECRET);
                    let mount = pod["containers"][0]["volumeMounts"]
                        .as_array()
                        .expect("mounts")
                        .iter()
                        .find(|m| m["name"] == AGENT_FILES_SECRET)
                        .cloned()
                        .expect("file mount");
                    assert_eq!(mount["mountPath"], "/mnt/python/integration.py");
                    assert_eq!(mount["subPath"], "integration.py");
                    assert_eq!(mount["readOnly"], true);
                    let cm = get(r, "ConfigMap", AGENT_NAME);
                    assert!(
                        !cm["data"]["values.yaml"]
                            .as_str()
                            .expect("values")
                            .contains("print(1)"),
                        "not in the ConfigMap"
                    );
                    assert!(!pod.to_string().contains("print(1)"), "not in the pod spec");
                },
            ),
            (
                "agentk8sglue.serviceAccountAnnotations",
                "agentk8sglue:\n  serviceAccountAnnotations:\n    eks.amazonaws.com/role-arn: arn:aws:iam::1:role/a\n",
                |r| {
                    let sa = get(r, "ServiceAccount", AGENT_NAME);
                    assert_eq!(
                        at(&sa, "/metadata/annotations/eks.amazonaws.com~1role-arn"),
                        "arn:aws:iam::1:role/a"
                    );
                },
            ),
            (
                "agentk8sglue.serviceExistingAccountName",
                "agentk8sglue:\n  serviceExistingAccountName: platform-sa\n  additionalRoleBindings: [privileged]\n",
                |r| {
                    assert!(
                        r.get("ServiceAccount", AGENT_NAME).is_none(),
                        "none created"
                    );
                    assert_eq!(
                        at(&deployment(r), "/spec/template/spec/serviceAccountName"),
                        "platform-sa"
                    );
                    let rb = get(r, "RoleBinding", AGENT_NAME);
                    assert_eq!(at(&rb, "/subjects/0/name"), "platform-sa");
                    let extra = get(r, "RoleBinding", "clearml-agent-privileged");
                    assert_eq!(at(&extra, "/subjects/0/name"), "platform-sa");
                },
            ),
            (
                "agentk8sglue.additionalRoleBindings/additionalClusterRoleBindings",
                "agentk8sglue:\n  additionalRoleBindings: [privileged]\n  additionalClusterRoleBindings: [view, \"system:aggregate-to-view\"]\n",
                |r| {
                    let rb = get(r, "RoleBinding", "clearml-agent-privileged");
                    assert_eq!(
                        at(&rb, "/roleRef"),
                        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "privileged"})
                    );
                    assert_eq!(at(&rb, "/metadata/namespace"), "ml");
                    assert_eq!(
                        at(&rb, "/subjects/0"),
                        serde_json::json!({"kind": "ServiceAccount", "name": "clearml-agent", "namespace": "ml"})
                    );
                    let crb = get(r, "ClusterRoleBinding", "clearml-agent-ml-view");
                    assert_eq!(at(&crb, "/roleRef/kind"), "ClusterRole");
                    assert_eq!(at(&crb, "/roleRef/name"), "view");
                    assert!(
                        crb.pointer("/metadata/namespace").is_none(),
                        "cluster-scoped"
                    );
                    assert!(
                        r.get(
                            "ClusterRoleBinding",
                            "clearml-agent-ml-system:aggregate-to-view"
                        )
                        .is_some()
                    );
                    let m = r
                        .get("ClusterRoleBinding", "clearml-agent-ml-view")
                        .expect("crb");
                    assert!(!m.namespaced);
                    assert_eq!(
                        at(&crb, "/metadata/labels/app.kubernetes.io~1managed-by"),
                        "kubectl-clearml"
                    );
                },
            ),
            (
                "agentk8sglue.clearmlcheckCertificate",
                "agentk8sglue:\n  clearmlcheckCertificate: false\n",
                |r| assert_eq!(env(r, ENV_SKIP_TLS_VERIFY)["value"], "true"),
            ),
            (
                "clearml.existingAgentk8sglueSecret",
                "clearml:\n  existingAgentk8sglueSecret: my-creds\n",
                |r| {
                    assert!(
                        r.get("Secret", CREDENTIALS_SECRET).is_none(),
                        "none created"
                    );
                    assert_eq!(env(r, ENV_CREDENTIALS_SECRET)["value"], "my-creds");
                    assert_eq!(
                        env(r, "CLEARML_API_ACCESS_KEY")["valueFrom"]["secretKeyRef"]["name"],
                        "my-creds"
                    );
                    assert_eq!(
                        env(r, "CLEARML_API_SECRET_KEY")["valueFrom"]["secretKeyRef"]["name"],
                        "my-creds"
                    );
                    let cm = get(r, "ConfigMap", AGENT_NAME);
                    let stored =
                        Values::from_yaml(cm["data"]["values.yaml"].as_str().expect("values"))
                            .expect("valid");
                    assert_eq!(stored.existing_credentials_secret(), Some("my-creds"));
                },
            ),
            (
                "clearml.clearmlConfig",
                "clearml:\n  agentk8sglueKey: k\n  agentk8sglueSecret: s\n  clearmlConfig: \"sdk { storage_secret: hunter2 }\"\nagentk8sglue:\n  taskNamespace: tasks\n",
                |r| {
                    let secret = get(r, "Secret", CLEARML_CONF_SECRET);
                    assert_eq!(
                        at(&secret, "/metadata/namespace"),
                        "tasks",
                        "in the task namespace"
                    );
                    assert!(secret["data"][CLEARML_CONF_KEY].is_string());
                    let cm = get(r, "ConfigMap", AGENT_NAME);
                    let text = cm["data"]["values.yaml"].as_str().expect("values");
                    assert!(!text.contains("hunter2"), "never in the ConfigMap");
                    let stored = Values::from_yaml(text).expect("valid");
                    assert_eq!(
                        stored.existing_clearml_config_secret(),
                        Some(CLEARML_CONF_SECRET)
                    );
                    assert!(!deployment(r).to_string().contains("hunter2"));
                },
            ),
            (
                "imageCredentials (created)",
                "imageCredentials:\n  registry: r.example.com\n  username: u\n  password: p\nagentk8sglue:\n  basePodTemplate:\n    imagePullSecrets: [{name: task-registry}]\n",
                |r| {
                    let secret = get(r, "Secret", REGISTRY_SECRET);
                    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
                    assert_eq!(
                        at(&deployment(r), "/spec/template/spec/imagePullSecrets"),
                        serde_json::json!([{"name": REGISTRY_SECRET}])
                    );
                    let cm = get(r, "ConfigMap", AGENT_NAME);
                    let stored =
                        Values::from_yaml(cm["data"]["values.yaml"].as_str().expect("values"))
                            .expect("valid");
                    let task = stored
                        .agentk8sglue
                        .base_pod_template
                        .image_pull_secrets
                        .expect("template's own");
                    assert_eq!(
                        task.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                        ["task-registry"],
                        "task pods: only their template's"
                    );
                },
            ),
            (
                "imageCredentials.existingSecret",
                "imageCredentials:\n  enabled: true\n  existingSecret: regcred\n",
                |r| {
                    assert!(r.get("Secret", REGISTRY_SECRET).is_none(), "none created");
                    assert_eq!(
                        at(&deployment(r), "/spec/template/spec/imagePullSecrets"),
                        serde_json::json!([{"name": "regcred"}])
                    );
                },
            ),
            (
                "imageCredentials.enabled: false",
                "imageCredentials:\n  enabled: false\n  username: someone\n  password: pwd\n",
                |r| {
                    assert!(r.get("Secret", REGISTRY_SECRET).is_none());
                    assert!(
                        deployment(r)
                            .pointer("/spec/template/spec/imagePullSecrets")
                            .is_none()
                    );
                },
            ),
        ];
        for (key, yaml, check) in cases {
            // a document naming its own `clearml` keys goes as it is; others get a key pair
            let doc = if yaml.starts_with("clearml:") {
                yaml.to_string()
            } else {
                format!("clearml:\n  agentk8sglueKey: k\n  agentk8sglueSecret: s\n{yaml}")
            };
            let r = rendered(&doc);
            check(&r);
            eprintln!("ok: {key}");
        }
    }

    /// What install cannot apply is refused naming the field, before anything is written.
    #[test]
    fn reserved_names_are_refused_with_the_field() {
        for (yaml, path) in [
            (
                "agentk8sglue:\n  labels:\n    app.kubernetes.io/name: other\n",
                "agentk8sglue.labels.app.kubernetes.io/name",
            ),
            (
                "agentk8sglue:\n  annotations:\n    clearml.ai/credentials-hash: x\n",
                "agentk8sglue.annotations.clearml.ai/credentials-hash",
            ),
            (
                "agentk8sglue:\n  volumes:\n    - name: tmp\n      emptyDir: {}\n",
                "agentk8sglue.volumes[0].name",
            ),
            (
                "agentk8sglue:\n  volumes:\n    - name: t2\n      emptyDir: {}\n  volumeMounts:\n    - name: t2\n      mountPath: /tmp/\n",
                "agentk8sglue.volumeMounts[0].mountPath",
            ),
        ] {
            let values = Values::from_yaml(&format!(
                "clearml:\n  agentk8sglueKey: k\n  agentk8sglueSecret: s\n{yaml}"
            ))
            .expect("valid values");
            let params = InstallParams {
                namespace: "ml".into(),
                image: "i:1".into(),
                clearml_insecure_skip_tls_verify: false,
            };
            match render(&values, &params, &ExistingCredentials::NotChecked) {
                Err(RenderError::Values(e)) => assert_eq!(e.path, path, "{yaml}"),
                other => panic!("{yaml}: {:?}", other.map(|r| r.manifests.len())),
            }
        }
    }

    /// An existing credentials Secret that is missing is named by its key.
    #[test]
    fn a_missing_existing_secret_is_an_error_naming_the_key() {
        let values =
            Values::from_yaml("clearml:\n  existingAgentk8sglueSecret: my-creds\n").expect("valid");
        let params = InstallParams {
            namespace: "ml".into(),
            image: "i:1".into(),
            clearml_insecure_skip_tls_verify: false,
        };
        match render(&values, &params, &ExistingCredentials::Absent) {
            Err(RenderError::Values(e)) => {
                assert_eq!(e.path, "clearml.existingAgentk8sglueSecret");
                assert!(e.message.contains("my-creds"), "{e}");
            }
            other => panic!("{:?}", other.map(|r| r.manifests.len())),
        }
    }
}
