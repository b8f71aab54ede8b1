//! The install manifests, from `manifests/*.yaml` (the one source of truth, compiled in with
//! `include_str!`) and the values. Pure: no I/O.
//!
//! ```text
//! Values ──split──▶ credentials ──▶ Secret (clearml-agent-credentials), hash ──▶ Deployment annotation
//!            │      imageCredentials ──▶ Secret (clearml-agent-registry) ──▶ imagePullSecrets
//!            └────▶ without_secrets() ──▶ ConfigMap clearml-agent, key values.yaml
//! templates ──{{placeholder}}──▶ YAML ──typed (k8s-openapi)──▶ Manifest (in apply order)
//! ```
//!
//! A placeholder stands for a whole scalar and is replaced by a double-quoted string, so no value
//! can change the YAML structure. Every document is decoded into its k8s-openapi type and must
//! survive the round trip unchanged (a misspelt field fails the render, not the cluster).

use std::collections::BTreeMap;

use base64::Engine as _;
use clearml_agent_core::values::{FieldError, Values};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{
        ConfigMap, EnvVar, LocalObjectReference, Namespace, Secret, Service, ServiceAccount,
    },
    rbac::v1::{Role, RoleBinding},
};
use kube::core::ApiResource;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Names shared with the agent: its objects' name, the credentials Secret and its keys, the
/// ConfigMap key, the gRPC port.
pub use clearml_agent_core::contract::{
    AGENT_NAME, CREDENTIALS_SECRET, GRPC_PORT, SECRET_KEY_ACCESS, SECRET_KEY_SECRET, VALUES_KEY,
};
/// The image pull Secret made from `imageCredentials`.
pub const REGISTRY_SECRET: &str = "clearml-agent-registry";
/// Namespace when neither `-n` nor the kubeconfig context names one.
pub const DEFAULT_NAMESPACE: &str = "clearml";
/// Field manager of the plugin's server-side applies.
pub const FIELD_MANAGER: &str = "kubectl-clearml";
/// Label selecting the agent's pod.
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=clearml-agent";
/// Label marking what `install` created (uninstall deletes only objects carrying it).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Pod-template annotation with the hash of the credentials: a change restarts the agent.
pub const ANNOTATION_CREDENTIALS_HASH: &str = "clearml.ai/credentials-hash";
/// Shown instead of Secret data in anything the plugin prints.
pub const REDACTED: &str = "REDACTED";
use clearml_agent_core::contract::ENV_SKIP_TLS_VERIFY;
/// Registry of `imageCredentials` when none is given.
const DEFAULT_REGISTRY: &str = "docker.io";

/// The templates, in apply order: namespace, ServiceAccount, Role + RoleBinding, Secrets,
/// ConfigMap, Deployment, Service.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "namespace.yaml",
        include_str!("../../manifests/namespace.yaml"),
    ),
    (
        "serviceaccount.yaml",
        include_str!("../../manifests/serviceaccount.yaml"),
    ),
    ("rbac.yaml", include_str!("../../manifests/rbac.yaml")),
    ("secret.yaml", include_str!("../../manifests/secret.yaml")),
    (
        "configmap.yaml",
        include_str!("../../manifests/configmap.yaml"),
    ),
    (
        "deployment.yaml",
        include_str!("../../manifests/deployment.yaml"),
    ),
    ("service.yaml", include_str!("../../manifests/service.yaml")),
];

/// The default agent image: this plugin's version of `clearml-k8s-agent`.
pub fn default_image() -> String {
    format!("clearml-k8s-agent:{}", env!("CARGO_PKG_VERSION"))
}

/// Install settings that are not values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallParams {
    /// Namespace of every object.
    pub namespace: String,
    /// The agent image.
    pub image: String,
    /// Sets `CLEARML_AGENT_INSECURE_SKIP_TLS_VERIFY=true` on the agent.
    pub clearml_insecure_skip_tls_verify: bool,
}

/// What the cluster holds of the credentials Secret, for values without `clearml.*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExistingCredentials {
    /// There is no such Secret: the values must carry the keys.
    Absent,
    /// The Secret exists; `hash` is [`credentials_hash`] of its data.
    Present {
        /// Hash of the Secret's data.
        hash: String,
    },
    /// The cluster was not asked (client-side dry run).
    NotChecked,
}

/// Why the manifests could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The values cannot be installed; `path` names the field.
    #[error("invalid values: {0}")]
    Values(FieldError),
    /// The namespace is not a valid name.
    #[error("invalid namespace: {0}")]
    Namespace(String),
    /// A template is broken (a bug in `manifests/`, caught by the tests).
    #[error("manifests/{file}: {message}")]
    Template {
        /// The template file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// One object to apply, checked against its k8s-openapi type.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Group, version, kind and plural (for the dynamic API).
    pub resource: ApiResource,
    /// False for the Namespace.
    pub namespaced: bool,
    /// `metadata.name`.
    pub name: String,
    /// The object as JSON (the apply body).
    pub doc: Value,
}

impl Manifest {
    /// `deployment.apps/clearml-agent`, as kubectl names objects.
    pub fn display_name(&self) -> String {
        let kind = self.resource.kind.to_lowercase();
        if self.resource.group.is_empty() {
            format!("{kind}/{}", self.name)
        } else {
            format!("{kind}.{}/{}", self.resource.group, self.name)
        }
    }

    /// Whether this is a Secret (whose data never reaches the plugin's output).
    pub fn is_secret(&self) -> bool {
        self.resource.kind == "Secret" && self.resource.group.is_empty()
    }

    /// The object fit for printing: Secret data values replaced by [`REDACTED`].
    pub fn redacted(&self) -> Value {
        redact(&self.doc)
    }
}

/// Secret `data`/`stringData` values replaced by [`REDACTED`]; other objects unchanged.
pub fn redact(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let is_secret = doc.get("kind").and_then(Value::as_str) == Some("Secret");
    if is_secret {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(map)) = doc.get_mut(field) {
                for v in map.values_mut() {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
    }
    doc
}

/// The rendered install, in apply order.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The objects, in apply order.
    pub manifests: Vec<Manifest>,
    /// Things the user should know (printed on stderr).
    pub warnings: Vec<String>,
}

impl Rendered {
    /// The manifest of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Manifest> {
        self.manifests
            .iter()
            .find(|m| m.resource.kind == kind && m.name == name)
    }

    /// Multi-document YAML of every object, Secrets redacted.
    pub fn to_redacted_yaml(&self) -> Result<String, RenderError> {
        let mut out = String::new();
        for m in &self.manifests {
            let text = clearml_agent_core::yaml::to_string(&m.redacted()).map_err(|e| {
                RenderError::Template {
                    file: m.display_name(),
                    message: e.to_string(),
                }
            })?;
            out.push_str("---\n");
            out.push_str(&text);
        }
        Ok(out)
    }
}

/// Hash of a Secret's data (sorted keys): the pod-template annotation that restarts the agent
/// when credentials change.
pub fn credentials_hash(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value);
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The credentials Secret's data from the values, if they carry the key pair.
pub fn credentials_data(values: &Values) -> Result<Option<BTreeMap<String, Vec<u8>>>, FieldError> {
    let creds = values.clearml.as_ref();
    let key = creds.and_then(|c| c.agentk8sglue_key.as_deref());
    let secret = creds.and_then(|c| c.agentk8sglue_secret.as_deref());
    let missing = |path: &str, other: &str| FieldError {
        path: path.into(),
        message: format!("required when {other} is set"),
    };
    match (key, secret) {
        (Some(k), Some(s)) => {
            for (path, v) in [
                ("clearml.agentk8sglueKey", k),
                ("clearml.agentk8sglueSecret", s),
            ] {
                if v.trim().is_empty() {
                    return Err(FieldError {
                        path: path.into(),
                        message: "must not be empty".into(),
                    });
                }
            }
            Ok(Some(BTreeMap::from([
                (SECRET_KEY_ACCESS.to_string(), k.as_bytes().to_vec()),
                (SECRET_KEY_SECRET.to_string(), s.as_bytes().to_vec()),
            ])))
        }
        (Some(_), None) => Err(missing(
            "clearml.agentk8sglueSecret",
            "clearml.agentk8sglueKey",
        )),
        (None, Some(_)) => Err(missing(
            "clearml.agentk8sglueKey",
            "clearml.agentk8sglueSecret",
        )),
        (None, None) => Ok(None),
    }
}

/// The `.dockerconfigjson` of `imageCredentials`, when a pull Secret is wanted.
pub fn docker_config(values: &Values) -> Result<Option<Vec<u8>>, FieldError> {
    let Some(ic) = &values.image_credentials else {
        return Ok(None);
    };
    let password = ic.password.as_deref().filter(|p| !p.is_empty());
    match (ic.enabled, password) {
        (Some(false), _) | (None, None) => Ok(None),
        (Some(true), None) => Err(FieldError {
            path: "imageCredentials.password".into(),
            message: "required when imageCredentials.enabled is true".into(),
        }),
        (_, Some(password)) => {
            let registry = ic.registry.as_deref().unwrap_or(DEFAULT_REGISTRY);
            let username = ic.username.as_deref().unwrap_or_default();
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut entry = serde_json::Map::new();
            if !username.is_empty() {
                entry.insert("username".into(), username.into());
            }
            entry.insert("password".into(), password.into());
            if let Some(email) = &ic.email {
                entry.insert("email".into(), email.as_str().into());
            }
            entry.insert("auth".into(), auth.into());
            let config = serde_json::json!({ "auths": { registry: entry } });
            Ok(Some(config.to_string().into_bytes()))
        }
    }
}

/// The ConfigMap's values document: the values without credentials, with the pull Secret added
/// to every task pod when there is one.
pub fn config_values(values: &Values, registry_secret: bool) -> Values {
    let mut config = values.without_secrets();
    if registry_secret {
        let secrets = config
            .agentk8sglue
            .base_pod_template
            .image_pull_secrets
            .get_or_insert_with(Vec::new);
        if !secrets.iter().any(|s| s.name == REGISTRY_SECRET) {
            secrets.push(LocalObjectReference {
                name: REGISTRY_SECRET.into(),
            });
        }
    }
    config
}

/// Renders every object of the install, in apply order.
pub fn render(
    values: &Values,
    params: &InstallParams,
    existing: &ExistingCredentials,
) -> Result<Rendered, RenderError> {
    clearml_agent_core::validate::dns_label(&params.namespace).map_err(RenderError::Namespace)?;
    let mut warnings = Vec::new();

    let credentials = credentials_data(values).map_err(RenderError::Values)?;
    let hash = match (&credentials, existing) {
        (Some(data), _) => credentials_hash(data),
        (None, ExistingCredentials::Present { hash }) => hash.clone(),
        (None, ExistingCredentials::NotChecked) => {
            warnings.push(format!(
                "the values carry no clearml.agentk8sglueKey/agentk8sglueSecret: the Secret \
                 {CREDENTIALS_SECRET} must already exist in namespace {}",
                params.namespace
            ));
            String::new()
        }
        (None, ExistingCredentials::Absent) => {
            return Err(RenderError::Values(FieldError {
                path: "clearml.agentk8sglueKey".into(),
                message: format!(
                    "required: the Secret {CREDENTIALS_SECRET} does not exist in namespace {} \
                     (set clearml.agentk8sglueKey and clearml.agentk8sglueSecret)",
                    params.namespace
                ),
            }));
        }
    };
    let docker = docker_config(values).map_err(RenderError::Values)?;
    if let Some(ic) = &values.image_credentials
        && docker.is_some()
        && ic.username.as_deref().unwrap_or_default().is_empty()
    {
        warnings.push(
            "imageCredentials.username is not set: most registries need a user name with the \
             password"
                .into(),
        );
    }
    if let Some(ns) = &values.agentk8sglue.task_namespace
        && ns != &params.namespace
    {
        warnings.push(format!(
            "agentk8sglue.taskNamespace is {ns}: the agent's Role covers only namespace {}; \
             task pods in {ns} need a Role, RoleBinding and the Secret {CREDENTIALS_SECRET} there",
            params.namespace
        ));
    }

    let config = config_values(values, docker.is_some());
    let values_yaml = clearml_agent_core::yaml::to_string(&config).map_err(|e| {
        RenderError::Values(FieldError {
            path: "(root)".into(),
            message: format!("cannot encode the values: {e}"),
        })
    })?;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let cred = |key: &str| {
        credentials
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| b64(v))
            .unwrap_or_default()
    };
    let vars = BTreeMap::from([
        ("namespace", params.namespace.clone()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("image", params.image.clone()),
        ("credentials_hash", hash),
        ("access_key_base64", cred(SECRET_KEY_ACCESS)),
        ("secret_key_base64", cred(SECRET_KEY_SECRET)),
        (
            "dockerconfigjson_base64",
            docker.as_deref().map(b64).unwrap_or_default(),
        ),
        ("values_yaml", values_yaml),
    ]);

    let mut manifests = Vec::new();
    for (file, text) in TEMPLATES {
        let filled = substitute(file, text, &vars)?;
        let docs: Vec<Value> = clearml_agent_core::yaml::from_str_multi(&filled).map_err(|e| {
            RenderError::Template {
                file: file.to_string(),
                message: e.to_string(),
            }
        })?;
        for doc in docs {
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let wanted = match name {
                CREDENTIALS_SECRET => credentials.is_some(),
                REGISTRY_SECRET => docker.is_some(),
                _ => true,
            };
            if wanted {
                manifests.push(typed_manifest(file, doc, params, docker.is_some())?);
            }
        }
    }
    Ok(Rendered {
        manifests,
        warnings,
    })
}

/// Every object an install can create in `namespace` (credentials and pull Secret included), in
/// apply order: what `uninstall` looks for, named by the same templates.
pub fn all_objects(namespace: &str) -> Result<Vec<Manifest>, RenderError> {
    let values = Values {
        clearml: Some(clearml_agent_core::values::ClearmlCredentials {
            agentk8sglue_key: Some("-".into()),
            agentk8sglue_secret: Some("-".into()),
            ..Default::default()
        }),
        image_credentials: Some(clearml_agent_core::values::ImageCredentials {
            password: Some("-".into()),
            username: Some("-".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let params = InstallParams {
        namespace: namespace.to_string(),
        image: default_image(),
        clearml_insecure_skip_tls_verify: false,
    };
    Ok(render(&values, &params, &ExistingCredentials::Absent)?.manifests)
}

/// Decodes one document into its k8s-openapi type (adding the Deployment's conditional parts).
fn typed_manifest(
    file: &str,
    doc: Value,
    params: &InstallParams,
    pull_secret: bool,
) -> Result<Manifest, RenderError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "Namespace" => to_manifest::<Namespace>(file, doc, false, |_| {}),
        "ServiceAccount" => to_manifest::<ServiceAccount>(file, doc, true, |_| {}),
        "Role" => to_manifest::<Role>(file, doc, true, |_| {}),
        "RoleBinding" => to_manifest::<RoleBinding>(file, doc, true, |_| {}),
        "Secret" => to_manifest::<Secret>(file, doc, true, |_| {}),
        "ConfigMap" => to_manifest::<ConfigMap>(file, doc, true, |_| {}),
        "Service" => to_manifest::<Service>(file, doc, true, |_| {}),
        "Deployment" => to_manifest::<Deployment>(file, doc, true, |d| {
            finish_deployment(d, params.clearml_insecure_skip_tls_verify, pull_secret)
        }),
        other => Err(RenderError::Template {
            file: file.to_string(),
            message: format!("unexpected kind {other:?}"),
        }),
    }
}

/// The Deployment's conditional parts: the pull Secret and the TLS switch.
fn finish_deployment(deployment: &mut Deployment, skip_tls_verify: bool, pull_secret: bool) {
    let Some(pod) = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    else {
        return;
    };
    if pull_secret {
        pod.image_pull_secrets
            .get_or_insert_with(Vec::new)
            .push(LocalObjectReference {
                name: REGISTRY_SECRET.into(),
            });
    }
    if skip_tls_verify {
        for container in &mut pod.containers {
            container.env.get_or_insert_with(Vec::new).push(EnvVar {
                name: ENV_SKIP_TLS_VERIFY.into(),
                value: Some("true".into()),
                ..Default::default()
            });
        }
    }
}

fn to_manifest<K>(
    file: &str,
    doc: Value,
    namespaced: bool,
    finish: impl FnOnce(&mut K),
) -> Result<Manifest, RenderError>
where
    K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    let err = |message: String| RenderError::Template {
        file: file.to_string(),
        message,
    };
    let mut typed: K =
        serde_json::from_value(doc.clone()).map_err(|e| err(format!("{}: {e}", K::kind(&()))))?;
    let back = serde_json::to_value(&typed).map_err(|e| err(e.to_string()))?;
    if back != doc {
        return Err(err(format!(
            "{} does not survive a round trip through its type (misspelt field?)",
            K::kind(&())
        )));
    }
    finish(&mut typed);
    let name = typed.meta().name.clone().unwrap_or_default();
    let doc = serde_json::to_value(&typed).map_err(|e| err(e.to_string()))?;
    Ok(Manifest {
        resource: ApiResource::erase::<K>(&()),
        namespaced,
        name,
        doc,
    })
}

/// Replaces each `{{name}}` by the double-quoted value of `name`; an unknown name is an error.
pub fn substitute(
    file: &str,
    text: &str,
    vars: &BTreeMap<&str, String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| RenderError::Template {
            file: file.to_string(),
            message: "unclosed {{".into(),
        })?;
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| RenderError::Template {
            file: file.to_string(),
            message: format!("unknown placeholder {{{{{name}}}}}"),
        })?;
        // NB: a JSON string is a valid YAML double-quoted scalar: no value can add structure.
        out.push_str(&Value::String(value.clone()).to_string());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
