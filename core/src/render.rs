//! Pure rendering of a task's pod(s): `basePodTemplate ⊕ templateOverrides ⊕ queueSettings ⊕ the
//! task's own container`. No I/O; everything the agent would create is decided here, so
//! `kubectl clearml queues render` shows exactly what a launch creates.
//!
//! Precedence inside the container's env, lowest first: the queue's template env, then the task's
//! `-e/--env` container arguments (an empty value never blanks a template value: the Python glue's
//! helm-charts#263), then the variables the agent sets (ClearML endpoints, credentials from the
//! Secret, task and worker ids, multi-node rank variables, `CLEARML_CONFIG_FILE` and
//! `CLEARML_API_HOST_VERIFY_CERT`).
//!
//! Files reach the pod only from Secrets: `clearml.conf` from `existingClearmlConfigSecret`, and
//! the template's `fileMounts` from a content-addressed Secret returned in [`Rendered::secrets`]
//! for the launch to create first. `${CLEARML_…}` string templates in labels, annotations and env
//! values are expanded per task (`values::string_templates`); label values are then sanitised.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Container, EnvVar, EnvVarSource, KeyToPath, Pod, PodSpec, ResourceRequirements, Secret,
        SecretKeySelector, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
        VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use md5::{Digest, Md5};

pub mod bootstrap;
pub mod job;

pub use bootstrap::{Bootstrap, bootstrap_script};

use crate::{
    contract::{
        ANNOTATION_LAUNCH, ANNOTATION_PROJECT, ANNOTATION_QUEUE_NAME, ANNOTATION_TASK_NAME,
        CONTAINER_NAME, GPU_RESOURCE, LABEL_AGENT, LABEL_QUEUE_ID, LABEL_QUEUE_NAME, LABEL_RANK,
        LABEL_TASK_ID, MANAGED_BY, POD_PREFIX, SECRET_KEY_ACCESS, SECRET_KEY_SECRET,
    },
    values::{
        AgentValues, DEFAULT_TASK_IMAGE, PodTemplate, QueueSettings, Values,
        enterprise::{
            CLEARML_CONF_DIR, CLEARML_CONF_KEY, CLEARML_CONF_VOLUME, FILE_MOUNTS_VOLUME,
            file_mount_clash, file_mount_path, is_templated,
        },
        rules::{
            MAX_MULTI_NODE_PODS, MAX_NODE_GPUS, check_multi_node, check_volumes, multi_node_layout,
        },
        string_templates,
    },
};

/// Port of the multi-node rendezvous.
pub const MASTER_PORT: i32 = 29500;

/// Why a task cannot be rendered; the agent fails the task with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The task's `container.arguments` could not be split like a shell would. The text is not
    /// repeated: it is the task's own and may carry credentials (`-e TOKEN=…`).
    #[error(
        "task {task}: container.arguments: unbalanced quotes (the {length}-character string does not split like a shell would; check its quotes)"
    )]
    Arguments { task: String, length: usize },
    /// A `-e NAME=VALUE` argument has an invalid name.
    #[error("task {task}: container.arguments: {message}")]
    EnvName { task: String, message: String },
    /// The task id cannot be part of a pod name.
    #[error("task id {task:?} cannot name a pod: {message}")]
    TaskId { task: String, message: String },
    /// Volumes and extraVolumes share a name, or a mount names no volume.
    #[error("queue {queue}: {message}")]
    Template { queue: String, message: String },
}

/// Settings of this agent that every pod carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentParams {
    /// Namespace of task pods.
    pub namespace: String,
    /// The agent's ClearML worker id.
    pub worker_id: String,
    /// `CLEARML_API_HOST` for task pods.
    pub api_server: Option<String>,
    /// `CLEARML_WEB_HOST` for task pods.
    pub web_server: Option<String>,
    /// `CLEARML_FILES_HOST` for task pods.
    pub files_server: Option<String>,
    /// Secret (in the task namespace) holding the ClearML key pair.
    pub credentials_secret: String,
    /// Image for tasks and queues that name none.
    pub default_image: Option<String>,
    /// What the task container's command does (the task bootstrap).
    pub bootstrap: Bootstrap,
    /// `taskWorkerIdOverride`: the worker id template of queues without `customWorkerIdTemplate`.
    pub task_worker_id_template: Option<String>,
    /// `clearml.existingClearmlConfigSecret`: the Secret (key `clearml.conf`, in the task
    /// namespace) task pods mount as their `clearml.conf`.
    pub clearml_config_secret: Option<String>,
    /// `clearmlcheckCertificate: false`: task pods skip TLS verification of the ClearML server.
    pub skip_tls_verify: bool,
}

impl AgentParams {
    /// Takes the settings a values change may alter while the agent runs: the default image, the
    /// web and file server URLs and the task bootstrap (the API URL needs a restart).
    pub fn apply_values(&mut self, a: &AgentValues) {
        self.default_image = a.task_default_image().cloned();
        self.web_server = a.web_server_url_reference.clone();
        self.files_server = a.file_server_url_reference.clone();
        self.bootstrap = Bootstrap::from_values(a);
        self.task_worker_id_template = a.task_worker_id_override.clone();
        self.skip_tls_verify = !a.verifies_tls();
    }

    /// [`Self::apply_values`], and the settings outside `agentk8sglue` (the `clearml.conf`
    /// Secret): what a values change alters in the next launched pod.
    pub fn apply_document(&mut self, v: &Values) {
        self.apply_values(&v.agentk8sglue);
        self.clearml_config_secret = v
            .clearml
            .as_ref()
            .and_then(|c| c.existing_clearml_config_secret.clone());
    }
}

/// A queue as the renderer needs it: identity, merged template, settings.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueParams<'a> {
    /// ClearML queue name.
    pub name: &'a str,
    /// ClearML queue id.
    pub id: &'a str,
    /// `basePodTemplate ⊕ templateOverrides`.
    pub template: &'a PodTemplate,
    /// `queueSettings`.
    pub settings: &'a QueueSettings,
}

/// The parts of a ClearML task that shape its pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskParams {
    /// Task id.
    pub id: String,
    /// Task name.
    pub name: String,
    /// Project name (or id when the name is unknown).
    pub project: String,
    /// `container.image` (empty = not set).
    pub image: String,
    /// `container.arguments`, one shell-style string.
    pub arguments: String,
    /// `container.setup_shell_script`.
    pub setup_shell_script: String,
    /// Identifies this launch of the task (the pending-queue entry's `added` time), so a pod left
    /// from an earlier run of the same task is told apart from this run's.
    pub launch_id: String,
    /// Project id (`${CLEARML_TASK.project}`, `${CLEARML_PROJECT_ID}`).
    pub project_id: String,
    /// The owner's user id (`${CLEARML_TASK.user}`).
    pub user: String,
    /// The task's user properties by name (`${CLEARML_TASK.hyperparams.properties.<n>.value}`).
    pub properties: BTreeMap<String, String>,
}

/// What one launch creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// One pod, or one per rank for multi-node queues.
    pub pods: Vec<Pod>,
    /// The headless Service of a multi-node task's rank 0.
    pub service: Option<Service>,
    /// Container arguments that have no pod equivalent and were ignored.
    pub warnings: Vec<String>,
    /// Secrets the pods mount that the launch must make exist first (the `fileMounts` files:
    /// one immutable Secret per distinct content, named by its hash).
    pub secrets: Vec<Secret>,
}

/// Label on the `fileMounts` Secrets: the hash of their content (their name's suffix).
pub const LABEL_FILE_MOUNTS: &str = "clearml.ai/file-mounts";

/// The Secret holding a template's `fileMounts` files (keys: the file names), named
/// `clearml-files-<hash>` after its content and the agent (`agent_label`, [`agent_label`]) so that
/// equal files share one Secret, a change makes a new one (it is immutable), and an agent only
/// ever deletes its own (labelled [`LABEL_AGENT`]); `None` when the template has none.
pub fn file_mounts_secret(t: &PodTemplate, namespace: &str, agent_label: &str) -> Option<Secret> {
    let files = t.file_mounts.as_ref().filter(|f| !f.is_empty())?;
    let data: BTreeMap<String, String> = files
        .iter()
        .map(|f| (f.name.clone(), f.file_content.clone()))
        .collect();
    let mut hasher = Md5::new();
    hasher.update(agent_label.as_bytes());
    for (name, content) in &data {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content.as_bytes());
    }
    let hash: String = hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(format!("clearml-files-{hash}")),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        MANAGED_BY.to_string(),
                    ),
                    (LABEL_FILE_MOUNTS.to_string(), hash),
                    (LABEL_AGENT.to_string(), agent_label.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        immutable: Some(true),
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// Expands `{worker_id_parts[n]}` (the `:`-separated parts of the agent's worker id; a part that
/// does not exist is empty, which the config load refuses beforehand).
fn fill_worker_id_parts(template: &str, worker_id: &str) -> String {
    let parts: Vec<&str> = worker_id.split(':').collect();
    let mut out = template.to_string();
    for (n, part) in parts.iter().enumerate() {
        out = out.replace(
            &format!("{{worker_id_parts[{n}]}}"),
            &part.replace('{', "{{").replace('}', "}}"),
        );
    }
    out
}

/// `agent-<first 8 hex of md5(worker id)>`: the value of [`LABEL_AGENT`].
pub fn agent_label(worker_id: &str) -> String {
    let digest = Md5::digest(worker_id.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("agent-{hex}")
}

/// The pod name of a task (rank `None` for single-pod tasks).
pub fn pod_name(task_id: &str, rank: Option<usize>) -> String {
    match rank {
        None => format!("{POD_PREFIX}{task_id}"),
        Some(r) => format!("{POD_PREFIX}{task_id}-{r}"),
    }
}

/// The task image by precedence: the task's own, the queue's `defaultImage`, the agent default.
pub fn choose_image(task: &TaskParams, settings: &QueueSettings, agent: &AgentParams) -> String {
    [
        Some(task.image.trim()),
        settings.default_image.as_deref(),
        agent.default_image.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|i| !i.is_empty())
    .unwrap_or(DEFAULT_TASK_IMAGE)
    .to_string()
}

/// Fills a `{placeholder}` template (a worker id, `containerCustomBashScript`; placeholders checked
/// by the values schema; `{{`/`}}` are braces, as in Python's `str.format`).
pub fn fill_placeholders(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let (true, Some(end)) = (tail.starts_with('{'), tail.find('}')) {
            let key = &tail[1..end];
            match vars.get(key) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..=end]),
            }
            rest = &tail[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `NAME=VALUE` pairs from a task's container arguments, and warnings for the arguments ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskEnv {
    /// The pairs, in argument order.
    pub vars: Vec<(String, String)>,
    /// One line per ignored argument.
    pub warnings: Vec<String>,
}

/// Splits `container.arguments` and keeps the `-e/--env NAME=VALUE` pairs; everything else is
/// returned as a warning (a pod has no equivalent of `--ipc=host` and the like).
pub fn task_env(task: &TaskParams) -> Result<TaskEnv, RenderError> {
    let args = task.arguments.trim();
    if args.is_empty() {
        return Ok(TaskEnv::default());
    }
    let tokens = shlex::split(args).ok_or_else(|| RenderError::Arguments {
        task: task.id.clone(),
        length: task.arguments.chars().count(),
    })?;
    let mut env = Vec::new();
    let mut warnings = Vec::new();
    let mut it = tokens.into_iter();
    while let Some(tok) = it.next() {
        let pair = if tok == "-e" || tok == "--env" {
            it.next()
        } else if let Some(p) = tok
            .strip_prefix("--env=")
            .or_else(|| tok.strip_prefix("-e"))
        {
            Some(p.trim_start_matches('=').to_string())
        } else {
            warnings.push(format!(
                "ignored container argument {tok:?} (no pod equivalent)"
            ));
            continue;
        };
        let Some(pair) = pair else {
            warnings.push(format!("ignored {tok:?} without NAME=VALUE"));
            continue;
        };
        let (name, value) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
        crate::validate::env_name(name).map_err(|message| RenderError::EnvName {
            task: task.id.clone(),
            message,
        })?;
        env.push((name.to_string(), value.to_string()));
    }
    Ok(TaskEnv {
        vars: env,
        warnings,
    })
}

/// A task's own multi-node request, from its user properties (`hyperparams.properties`):
/// `multi_node_request` (a JSON list of integers) and `multi_node_request_layout`
/// (`gpus_per_node_count`, the default: `[gpus per node, nodes]`; or `gpus_per_node_list`: one
/// entry per node). Returns the GPUs per node, or `None` when the task asks for nothing.
pub fn multi_node_request(
    hyperparams: Option<&serde_json::Value>,
) -> Result<Option<Vec<u32>>, String> {
    let props = hyperparams.and_then(|h| h.get("properties"));
    let value = |key: &str| {
        props
            .and_then(|p| p.get(key))
            .and_then(|v| v.get("value"))
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(request) = value("multi_node_request") else {
        return Ok(None);
    };
    let list: Vec<i64> = serde_json::from_str(request)
        .map_err(|_| format!("multi_node_request {request:?} is not a JSON list of integers"))?;
    if list.is_empty()
        || list
            .iter()
            .any(|n| *n <= 0 || *n > i64::from(MAX_NODE_GPUS))
    {
        return Err(format!(
            "multi_node_request {request:?} must list positive GPU counts"
        ));
    }
    let list: Vec<u32> = list.iter().map(|n| *n as u32).collect();
    let nodes = match value("multi_node_request_layout").unwrap_or("gpus_per_node_count") {
        "gpus_per_node_count" => match list.as_slice() {
            [gpus, nodes] if *nodes as usize <= MAX_MULTI_NODE_PODS => {
                vec![*gpus; *nodes as usize]
            }
            _ => {
                return Err(format!(
                    "multi_node_request {request:?} with layout gpus_per_node_count must be [gpus per node, nodes]"
                ));
            }
        },
        "gpus_per_node_list" => list,
        other => {
            return Err(format!(
                "multi_node_request_layout {other:?} must be gpus_per_node_count or gpus_per_node_list"
            ));
        }
    };
    check_multi_node(&nodes)
        .map_err(|(_, why)| format!("multi_node_request {request:?}: {why}"))?;
    Ok(Some(nodes))
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// Puts `var` into `env`, replacing an entry of the same name in place.
fn upsert(env: &mut Vec<EnvVar>, var: EnvVar) {
    match env.iter_mut().find(|e| e.name == var.name) {
        Some(e) => *e = var,
        None => env.push(var),
    }
}

/// Renders the pod(s) of one task launched from one queue.
pub fn render(
    agent: &AgentParams,
    queue: &QueueParams<'_>,
    task: &TaskParams,
) -> Result<Rendered, RenderError> {
    let task_id = task.id.as_str();
    crate::validate::dns_label(&pod_name(task_id, Some(0))).map_err(|message| {
        RenderError::TaskId {
            task: task_id.into(),
            message,
        }
    })?;
    let TaskEnv {
        vars: task_vars,
        warnings,
    } = task_env(task)?;
    let t = queue.template;
    let settings = queue.settings;

    check_volumes(t).map_err(|p| RenderError::Template {
        queue: queue.name.into(),
        message: p.message,
    })?;
    let mut volumes = t.volumes.clone().unwrap_or_default();
    volumes.extend(t.extra_volumes.clone().unwrap_or_default());
    let mut mounts = t.volume_mounts.clone().unwrap_or_default();
    mounts.extend(t.extra_volume_mounts.clone().unwrap_or_default());

    let strings = string_templates::Vars {
        task_id: task_id.to_string(),
        task_name: task.name.clone(),
        project_id: task.project_id.clone(),
        project_name: task.project.clone(),
        user: task.user.clone(),
        queue_name: queue.name.to_string(),
        queue_id: queue.id.to_string(),
        worker_id: agent.worker_id.clone(),
        properties: task.properties.clone(),
    };
    let expand = |v: &String| string_templates::expand(v, &strings);

    // files: clearml.conf from its Secret, fileMounts from the agent's Secret (never inline)
    if let Some((_, why)) = file_mount_clash(t) {
        return Err(RenderError::Template {
            queue: queue.name.into(),
            message: why,
        });
    }
    let mut secrets = Vec::new();
    if let Some(secret) = file_mounts_secret(t, &agent.namespace, &agent_label(&agent.worker_id)) {
        volumes.push(Volume {
            name: FILE_MOUNTS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: secret.metadata.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        for f in t.file_mounts.iter().flatten() {
            mounts.push(VolumeMount {
                name: FILE_MOUNTS_VOLUME.into(),
                mount_path: file_mount_path(f),
                sub_path: Some(f.name.clone()),
                read_only: Some(true),
                ..Default::default()
            });
        }
        secrets.push(secret);
    }
    if let Some(secret) = &agent.clearml_config_secret {
        volumes.push(Volume {
            name: CLEARML_CONF_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: CLEARML_CONF_KEY.into(),
                    path: CLEARML_CONF_KEY.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: CLEARML_CONF_VOLUME.into(),
            mount_path: CLEARML_CONF_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    // env: template < task -e (non-empty, or new) < agent
    let mut base_env = t.env.clone().unwrap_or_default();
    for e in &mut base_env {
        if let Some(v) = &e.value {
            e.value = Some(expand(v));
        }
    }
    for (name, value) in task_vars {
        let exists = base_env.iter().any(|e| e.name == name);
        if value.is_empty() && exists {
            continue;
        }
        upsert(&mut base_env, env_value(&name, value));
    }
    for (name, value) in [
        ("CLEARML_API_HOST", &agent.api_server),
        ("CLEARML_WEB_HOST", &agent.web_server),
        ("CLEARML_FILES_HOST", &agent.files_server),
    ] {
        if let Some(v) = value {
            upsert(&mut base_env, env_value(name, v.clone()));
        }
    }
    upsert(
        &mut base_env,
        env_secret(
            "CLEARML_API_ACCESS_KEY",
            &agent.credentials_secret,
            SECRET_KEY_ACCESS,
        ),
    );
    upsert(
        &mut base_env,
        env_secret(
            "CLEARML_API_SECRET_KEY",
            &agent.credentials_secret,
            SECRET_KEY_SECRET,
        ),
    );
    upsert(&mut base_env, env_value("CLEARML_TASK_ID", task_id));
    if agent.clearml_config_secret.is_some() {
        upsert(
            &mut base_env,
            env_value(
                "CLEARML_CONFIG_FILE",
                format!("{CLEARML_CONF_DIR}/{CLEARML_CONF_KEY}"),
            ),
        );
    }
    if agent.skip_tls_verify {
        upsert(
            &mut base_env,
            env_value("CLEARML_API_HOST_VERIFY_CERT", "0"),
        );
    }

    let (gpus_per_pod, ranks) = match settings.multi_node.as_deref() {
        Some(nodes) if !nodes.is_empty() => {
            check_multi_node(nodes).map_err(|(_, why)| RenderError::Template {
                queue: queue.name.into(),
                message: format!("multi-node layout {nodes:?} {why}"),
            })?;
            let (g, n) = multi_node_layout(nodes);
            (
                Some(g),
                Some((n, nodes.iter().map(|n| u64::from(*n)).sum::<u64>())),
            )
        }
        _ => (None, None),
    };
    let image = choose_image(task, settings, agent);
    let use_entrypoint = settings.use_image_entrypoint.unwrap_or(false);
    let template_id = settings
        .custom_worker_id_template
        .clone()
        .or_else(|| agent.task_worker_id_template.clone())
        .unwrap_or_else(|| "{worker_id}:{task_id}".to_string());
    let template_id = fill_worker_id_parts(&template_id, &agent.worker_id);

    // templated label values are expanded, then made valid label values
    let mut labels: BTreeMap<String, String> = t
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| {
            let v = if is_templated(v) {
                crate::validate::to_label_value(&expand(v))
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    labels.insert(LABEL_AGENT.into(), agent_label(&agent.worker_id));
    labels.insert(
        LABEL_QUEUE_ID.into(),
        crate::validate::to_label_value(queue.id),
    );
    labels.insert(
        LABEL_QUEUE_NAME.into(),
        crate::validate::to_label_value(queue.name),
    );
    labels.insert(
        LABEL_TASK_ID.into(),
        crate::validate::to_label_value(task_id),
    );
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    let mut annotations: BTreeMap<String, String> = t
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), expand(v)))
        .collect();
    annotations.insert(ANNOTATION_TASK_NAME.into(), task.name.clone());
    annotations.insert(ANNOTATION_PROJECT.into(), task.project.clone());
    annotations.insert(ANNOTATION_QUEUE_NAME.into(), queue.name.into());
    if !task.launch_id.is_empty() {
        annotations.insert(ANNOTATION_LAUNCH.into(), task.launch_id.clone());
    }

    let mut resources = t.resources.clone().unwrap_or_default();
    if let Some(g) = gpus_per_pod {
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.into(), Quantity(g.to_string()));
        if let Some(req) = resources
            .requests
            .as_mut()
            .filter(|r| r.contains_key(GPU_RESOURCE))
        {
            req.insert(GPU_RESOURCE.into(), Quantity(g.to_string()));
        }
    }
    let resources = (resources != ResourceRequirements::default()).then_some(resources);

    let service_name = pod_name(task_id, None);
    let rank_list: Vec<Option<usize>> = match ranks {
        Some((n, _)) => (0..n).map(Some).collect(),
        None => vec![None],
    };
    let mut pods = Vec::with_capacity(rank_list.len());
    for rank in rank_list {
        let name = pod_name(task_id, rank);
        let mut env = base_env.clone();
        let vars: BTreeMap<&str, String> = [
            ("task_id", task_id.to_string()),
            ("project", task.project.clone()),
            ("task_name", task.name.clone()),
            ("queue", queue.name.to_string()),
            ("pod_name", name.clone()),
            ("namespace", agent.namespace.clone()),
            ("worker_id", agent.worker_id.clone()),
        ]
        .into_iter()
        .collect();
        let mut worker_id = fill_placeholders(&template_id, &vars);
        let mut pod_labels = labels.clone();
        if let (Some(r), Some((n, world))) = (rank, ranks) {
            if r > 0 {
                worker_id = format!("{worker_id}:{r}");
            }
            pod_labels.insert(LABEL_RANK.into(), r.to_string());
            for (k, v) in [
                ("NODE_RANK", r.to_string()),
                ("NUM_NODES", n.to_string()),
                ("WORLD_SIZE", world.to_string()),
                (
                    "MASTER_ADDR",
                    format!("{service_name}.{}.svc", agent.namespace),
                ),
                ("MASTER_PORT", MASTER_PORT.to_string()),
                ("CLEARML_MULTI_NODE_SINGLE_TASK", "1".to_string()),
            ] {
                upsert(&mut env, env_value(k, v));
            }
        }
        upsert(&mut env, env_value("CLEARML_WORKER_ID", worker_id));

        let (command, args) = if use_entrypoint {
            (None, None)
        } else {
            let (command, script) = agent
                .bootstrap
                .container_command(task_id, &task.setup_shell_script);
            (Some(command), Some(vec![script]))
        };
        let container = Container {
            name: CONTAINER_NAME.into(),
            image: Some(image.clone()),
            image_pull_policy: t.image_pull_policy.clone(),
            command,
            args,
            env: Some(env),
            resources: resources.clone(),
            volume_mounts: (!mounts.is_empty()).then(|| mounts.clone()),
            ports: t.ports.clone(),
            security_context: t.container_security_context.clone(),
            ..Default::default()
        };
        pods.push(Pod {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(agent.namespace.clone()),
                labels: Some(pod_labels),
                annotations: Some(annotations.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                init_containers: t.init_containers.clone(),
                restart_policy: Some("Never".into()),
                volumes: (!volumes.is_empty()).then(|| volumes.clone()),
                node_selector: t.node_selector.clone(),
                tolerations: t.tolerations.clone(),
                affinity: t.affinity.clone(),
                security_context: t.pod_security_context.clone(),
                priority_class_name: t.priority_class_name.clone(),
                scheduler_name: t.scheduler_name.clone(),
                runtime_class_name: t.runtime_class_name.clone(),
                host_aliases: t.host_aliases.clone(),
                image_pull_secrets: t.image_pull_secrets.clone(),
                service_account_name: t.service_account_name.clone(),
                automount_service_account_token: Some(
                    t.automount_service_account_token.unwrap_or(false),
                ),
                termination_grace_period_seconds: t.termination_grace_period_seconds,
                ..Default::default()
            }),
            status: None,
        });
    }

    let service = ranks.map(|_| Service {
        metadata: ObjectMeta {
            name: Some(service_name),
            namespace: Some(agent.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(
                [
                    (
                        LABEL_TASK_ID.to_string(),
                        crate::validate::to_label_value(task_id),
                    ),
                    (LABEL_RANK.to_string(), "0".to_string()),
                ]
                .into_iter()
                .collect(),
            ),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".into()),
                port: MASTER_PORT,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    });
    Ok(Rendered {
        pods,
        service,
        warnings,
        secrets,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod chart_tests;
