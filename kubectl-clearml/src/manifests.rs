//! The install manifests, from `manifests/*.yaml` (the one source of truth, compiled in with
//! `include_str!`) and the values. Pure: no I/O.
//!
//! ```text
//! Values ──split──▶ credentials ──▶ Secret (clearml-agent-credentials), hash ──▶ Deployment annotation
//!            │      (or clearml.existingAgentk8sglueSecret: used, none made)
//!            │      imageCredentials ──▶ Secret (clearml-agent-registry) ──▶ the agent's imagePullSecrets
//!            │      clearml.clearmlConfig ──▶ Secret (clearml-agent-clearml-conf, task namespace)
//!            │      agentk8sglue.fileMounts ──▶ Secret (clearml-agent-files) ──▶ agent pod files
//!            │      agentk8sglue.{image,replicaCount,labels,extraEnvs,…} ──▶ Deployment, SA, RBAC
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
    core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::core::ApiResource;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// Names shared with the agent: its objects' name, the credentials Secret and its keys, the
/// ConfigMap key, the gRPC port, the Secrets made from `clearmlConfig` and `fileMounts`.
pub use clearml_agent_core::contract::{
    AGENT_FILES_SECRET, AGENT_NAME, CLEARML_CONF_SECRET, CREDENTIALS_SECRET, GRPC_PORT,
    SECRET_KEY_ACCESS, SECRET_KEY_SECRET, VALUES_KEY,
};

mod agent_pod;
pub use agent_pod::{cluster_role_binding_name, role_binding_name};
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

/// Repository of the agent image.
pub const IMAGE_REPOSITORY: &str = "clearml-k8s-agent";

/// The default agent image: this plugin's version of `clearml-k8s-agent`.
pub fn default_image() -> String {
    format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// The agent image the values ask for (`[global.imageRegistry or agentk8sglue.image.registry]/
/// repository:tag`, defaulting to [`default_image`]'s parts); `install --image` wins over it.
pub fn agent_image(values: &Values) -> String {
    values.agent_image(IMAGE_REPOSITORY, env!("CARGO_PKG_VERSION"))
}

/// Install settings that are not values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallParams {
    /// Namespace of every object.
    pub namespace: String,
    /// The agent image.
    pub image: String,
    /// Sets `CLEARML_AGENT_INSECURE_SKIP_TLS_VERIFY=true` on the agent (so does
    /// `agentk8sglue.clearmlcheckCertificate: false`).
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

/// The `.dockerconfigjson` of `imageCredentials`, when the install makes the pull Secret of the
/// agent's image (not for `existingSecret`, nor `enabled: false`).
pub fn docker_config(values: &Values) -> Result<Option<Vec<u8>>, FieldError> {
    if values.agent_pull_secret() != Some(None) {
        return Ok(None);
    }
    let ic = values.image_credentials.clone().unwrap_or_default();
    let password = ic.password.unwrap_or_default();
    // validated: a login on another registry than Docker Hub names its user
    let (registry, username) = values.registry_login().ok_or_else(|| FieldError {
        path: "imageCredentials.username".into(),
        message: "required when imageCredentials.password is set".into(),
    })?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut entry = serde_json::Map::new();
    entry.insert("username".into(), username.into());
    entry.insert("password".into(), password.into());
    if let Some(email) = ic.email.filter(|e| !e.is_empty()) {
        entry.insert("email".into(), email.into());
    }
    entry.insert("auth".into(), auth.into());
    let config = serde_json::json!({ "auths": { registry: entry } });
    Ok(Some(config.to_string().into_bytes()))
}

/// The ConfigMap's values document: the values without credentials or file contents; a
/// `clearml.clearmlConfig` is named by the Secret the install makes of it
/// (`clearml.existingClearmlConfigSecret`), so the agent reads only that.
pub fn config_values(values: &Values) -> Values {
    let mut config = values.without_secrets();
    if values.clearml_config().is_some() {
        config
            .clearml
            .get_or_insert_with(Default::default)
            .existing_clearml_config_secret = Some(CLEARML_CONF_SECRET.into());
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
    // the Secret the agent reads its key pair from: the user's, or the install's
    let (secret_name, secret_path) = match values.existing_credentials_secret() {
        Some(name) => (name, "clearml.existingAgentk8sglueSecret"),
        None => (CREDENTIALS_SECRET, "clearml.agentk8sglueKey"),
    };
    let hash = match (&credentials, existing) {
        (Some(data), _) => credentials_hash(data),
        (None, ExistingCredentials::Present { hash }) => hash.clone(),
        (None, ExistingCredentials::NotChecked) => {
            warnings.push(format!(
                "the values carry no clearml.agentk8sglueKey/agentk8sglueSecret: the Secret \
                 {secret_name} must already exist in namespace {}",
                params.namespace
            ));
            String::new()
        }
        (None, ExistingCredentials::Absent) => {
            let fix = if secret_name == CREDENTIALS_SECRET {
                "set clearml.agentk8sglueKey and clearml.agentk8sglueSecret"
            } else {
                "create it with keys agentk8sglue_key and agentk8sglue_secret"
            };
            return Err(RenderError::Values(FieldError {
                path: secret_path.into(),
                message: format!(
                    "required: the Secret {secret_name} does not exist in namespace {} ({fix})",
                    params.namespace
                ),
            }));
        }
    };
    let docker = docker_config(values).map_err(RenderError::Values)?;
    let pull_secret = match values.agent_pull_secret() {
        Some(Some(existing)) => Some(existing),
        Some(None) => Some(REGISTRY_SECRET),
        None => None,
    };
    if let Some(ns) = &values.agentk8sglue.task_namespace
        && ns != &params.namespace
    {
        warnings.push(format!(
            "agentk8sglue.taskNamespace is {ns}: the agent's Role covers only namespace {}; \
             task pods in {ns} need a Role, RoleBinding and the Secret {secret_name} there",
            params.namespace
        ));
        if values.clearml_config().is_some() {
            warnings.push(format!(
                "clearml.clearmlConfig goes to the Secret {CLEARML_CONF_SECRET} in namespace \
                 {ns}, where task pods run: that namespace must exist"
            ));
        }
    }
    let service_account = agent_pod::service_account(values);
    let wiring = agent_pod::Wiring {
        credentials_secret: secret_name,
        existing_credentials: secret_name != CREDENTIALS_SECRET,
        service_account,
        pull_secret,
        skip_tls_verify: params.clearml_insecure_skip_tls_verify
            || values.agentk8sglue.clearmlcheck_certificate == Some(false),
    };

    let config = config_values(values);
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

    let finish = Finish { values, wiring };
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
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
            let wanted = match (kind, name) {
                ("Secret", CREDENTIALS_SECRET) => credentials.is_some(),
                ("Secret", REGISTRY_SECRET) => docker.is_some(),
                ("ServiceAccount", _) => agent_pod::creates_service_account(values),
                _ => true,
            };
            if wanted {
                manifests.push(typed_manifest(file, doc, &finish)?);
            }
        }
        match *file {
            "rbac.yaml" => {
                let (roles, cluster) =
                    agent_pod::extra_bindings(values, &params.namespace, service_account)?;
                for rb in roles {
                    manifests.push(from_typed(rb, true)?);
                }
                for crb in cluster {
                    manifests.push(from_typed(crb, false)?);
                }
            }
            "secret.yaml" => {
                if let Some(secret) = agent_pod::files_secret(values, &params.namespace) {
                    manifests.push(from_typed(secret, true)?);
                }
                if let Some(secret) = agent_pod::clearml_conf_secret(values, &params.namespace) {
                    manifests.push(from_typed(secret, true)?);
                }
            }
            _ => {}
        }
    }
    Ok(Rendered {
        manifests,
        warnings,
    })
}

/// Every object an install can create in `namespace` (credentials and pull Secret included), in
/// apply order: what `uninstall` looks for, named by the same templates. Objects named after the
/// values (extra role bindings, a `clearml.conf` Secret in another namespace) come from
/// [`objects_of`] with the installed values.
pub fn all_objects(namespace: &str) -> Result<Vec<Manifest>, RenderError> {
    let values = Values {
        clearml: Some(clearml_agent_core::values::ClearmlCredentials {
            agentk8sglue_key: Some("-".into()),
            agentk8sglue_secret: Some("-".into()),
            clearml_config: Some("-".into()),
            ..Default::default()
        }),
        image_credentials: Some(clearml_agent_core::values::ImageCredentials {
            password: Some("-".into()),
            username: Some("-".into()),
            ..Default::default()
        }),
        agentk8sglue: clearml_agent_core::values::AgentValues {
            file_mounts: Some(vec![clearml_agent_core::values::FileMount {
                name: "-".into(),
                folder_path: "/-".into(),
                file_content: String::new(),
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    objects_of(&values, namespace)
}

/// The objects an install of `values` into `namespace` makes, in apply order.
pub fn objects_of(values: &Values, namespace: &str) -> Result<Vec<Manifest>, RenderError> {
    let params = InstallParams {
        namespace: namespace.to_string(),
        image: default_image(),
        clearml_insecure_skip_tls_verify: false,
    };
    Ok(render(values, &params, &ExistingCredentials::NotChecked)?.manifests)
}

/// What the Deployment, ServiceAccount and RoleBinding templates get from the values.
struct Finish<'a> {
    values: &'a Values,
    wiring: agent_pod::Wiring<'a>,
}

/// A manifest from a typed object built here (not from a template).
fn from_typed<K>(obj: K, namespaced: bool) -> Result<Manifest, RenderError>
where
    K: kube::Resource<DynamicType = ()> + Serialize,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let doc = serde_json::to_value(&obj).map_err(|e| RenderError::Template {
        file: K::kind(&()).to_string(),
        message: e.to_string(),
    })?;
    let mut doc = doc;
    if let Value::Object(m) = &mut doc {
        m.insert("apiVersion".into(), K::api_version(&()).into());
        m.insert("kind".into(), K::kind(&()).into());
    }
    Ok(Manifest {
        resource: ApiResource::erase::<K>(&()),
        namespaced,
        name,
        doc,
    })
}

/// Decodes one document into its k8s-openapi type (adding what the values ask of the
/// Deployment, ServiceAccount and RoleBinding).
fn typed_manifest(file: &str, doc: Value, finish: &Finish<'_>) -> Result<Manifest, RenderError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let values = finish.values;
    match kind.as_str() {
        "Namespace" => to_manifest::<Namespace>(file, doc, false, |_| Ok(())),
        "ServiceAccount" => to_manifest::<ServiceAccount>(file, doc, true, |sa| {
            agent_pod::finish_service_account(sa, values);
            Ok(())
        }),
        "Role" => to_manifest::<Role>(file, doc, true, |_| Ok(())),
        "RoleBinding" => to_manifest::<RoleBinding>(file, doc, true, |rb| {
            agent_pod::finish_role_binding(rb, finish.wiring.service_account);
            Ok(())
        }),
        "Secret" => to_manifest::<Secret>(file, doc, true, |_| Ok(())),
        "ConfigMap" => to_manifest::<ConfigMap>(file, doc, true, |_| Ok(())),
        "Service" => to_manifest::<Service>(file, doc, true, |_| Ok(())),
        "Deployment" => to_manifest::<Deployment>(file, doc, true, |d| {
            agent_pod::finish_deployment(d, values, &finish.wiring)
        }),
        other => Err(RenderError::Template {
            file: file.to_string(),
            message: format!("unexpected kind {other:?}"),
        }),
    }
}

fn to_manifest<K>(
    file: &str,
    doc: Value,
    namespaced: bool,
    finish: impl FnOnce(&mut K) -> Result<(), RenderError>,
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
    finish(&mut typed)?;
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
