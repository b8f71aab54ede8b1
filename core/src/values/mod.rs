//! The values schema: the one place that knows every key of a values file (the Enterprise chart's
//! `agentk8sglue.*` keys the seeds document, the open-source chart's keys — [`chart`] lists every
//! chart key with what this agent does with it — plus the few settings this agent adds, each with
//! a documented default). `kubectl clearml install`, the control API and the agent's config load all
//! parse through [`Values::from_yaml`] / [`Values::from_json`], so they accept and refuse the same
//! documents with the same messages.
//!
//! Parsing is strict: an unknown key or a wrong type anywhere, including deep inside a pod template
//! (`agentk8sglue.queues.green.templateOverrides.resources.limits.memory`), is an error naming the
//! full path. Kubernetes sub-objects use k8s-openapi types; because those silently ignore unknown
//! fields, each one is round-tripped and any key the type dropped is reported as unknown.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, HostAlias, LocalObjectReference,
    PodSecurityContext, ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{validate, yaml};

mod agent_pod;
pub use agent_pod::{
    DEFAULT_REGISTRY, ENTERPRISE_REGISTRY_USER, file_mount_path, is_python_glue_image,
};
pub mod chart;
mod errors;
pub mod job_mode;
pub use errors::in_file_order;
mod notices;
pub use notices::Notice;
pub mod enterprise;
pub mod merge;
pub mod rules;
pub mod string_templates;

/// A values document was refused; `path` names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Dotted path from the document root, e.g. `agentk8sglue.queues.red.queueSettings.maxPods`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        let path = path.into();
        Self {
            path: if path.is_empty() {
                "(root)".into()
            } else {
                path
            },
            message: message.into(),
        }
    }
}

/// Default image for tasks that name none and whose queue has no `defaultImage`: it has `python3`
/// and `pip`, so the task bootstrap only has to add `git` and `clearml-agent`.
pub const DEFAULT_TASK_IMAGE: &str = "python:3.11-slim";

/// Default `clearmlAgentVersion`: the pip version specifier of the `clearml-agent` package the task
/// bootstrap installs. The floor upgrades an older release baked into an image (1.9, August 2024,
/// and later have the `execute --full-monitoring --require-queue` the in-pod command uses); 3.0.x
/// is the current series; the next major (4.0 has release candidates) is kept out until checked.
pub const DEFAULT_CLEARML_AGENT_VERSION: &str = ">=1.9,<4";

/// Placeholders `containerCustomBashScript` may use: the Python glue's, filled the same way.
pub const CONTAINER_SCRIPT_PLACEHOLDERS: &[&str] = &[
    "task_id",
    "extra_bash_init_cmd",
    "extra_docker_bash_script",
    "default_execution_agent_args",
    "agent_install_args",
];

/// Largest values document accepted: what a ConfigMap can hold (1 MiB).
pub const MAX_VALUES_BYTES: usize = 1024 * 1024;

/// Placeholders `customWorkerIdTemplate` may use.
pub const WORKER_ID_PLACEHOLDERS: &[&str] = &[
    "task_id",
    "project",
    "task_name",
    "queue",
    "pod_name",
    "namespace",
    "worker_id",
];

/// A whole values file (the chart's top level).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Values {
    /// Registry credentials (install only: becomes an image pull Secret; never in the ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<ImageCredentials>,
    /// ClearML API credentials (install only: become the agent's Secret; never in the ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearml: Option<ClearmlCredentials>,
    /// Everything the agent itself reads.
    #[serde(default)]
    pub agentk8sglue: AgentValues,
    /// The chart's global settings (install only: the agent image's registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<Global>,
    /// The chart's clearml-session ports mode: accepted, reported as not applicable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Sessions>,
    /// The Enterprise chart's CA certificates for the agent and task pods (accepted, reported:
    /// see `notices.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_certificates: Option<enterprise::CustomCertificates>,
}

/// `imageCredentials`: a registry login for pulling the agent's own image (task pods get pull
/// secrets only through `imagePullSecrets` in their template).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageCredentials {
    /// Whether to create and use the pull secret (default: true when a password is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// An existing pull Secret for the agent's image: used, and the install creates none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_secret: Option<String>,
    /// Registry host (default `docker.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Registry user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Registry password or token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Contact e-mail stored in the docker config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `clearml`: the agent's ClearML API key pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClearmlCredentials {
    /// ClearML access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agentk8sglue_key: Option<String>,
    /// ClearML secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agentk8sglue_secret: Option<String>,
    /// An existing Secret (keys `agentk8sglue_key`, `agentk8sglue_secret`) holding the key pair:
    /// the agent and task pods use it and `install` creates none. A name, not a secret: it stays
    /// in the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_agentk8sglue_secret: Option<String>,
    /// A `clearml.conf` (HOCON) for task pods: `install` puts it in a Secret, never in the
    /// ConfigMap or a pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearml_config: Option<String>,
    /// An existing Secret (key `clearml.conf`) with the task pods' `clearml.conf`. A name: it
    /// stays in the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_clearml_config_secret: Option<String>,
}

/// `agentk8sglue`: the agent's configuration (what the ConfigMap holds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentValues {
    /// ClearML API server URL, given to the agent and to task pods as `CLEARML_API_HOST`.
    /// Not checked here: the seeds' values carry `<placeholders>`, which `install` must accept;
    /// the agent checks the URL when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_url_reference: Option<String>,
    /// ClearML file server URL (`CLEARML_FILES_HOST` in task pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_server_url_reference: Option<String>,
    /// ClearML web server URL (`CLEARML_WEB_HOST` in task pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_server_url_reference: Option<String>,
    /// Create the listed queues in ClearML when they are missing (default false).
    #[serde(default)]
    pub create_queues: bool,
    /// GPUs reported to the ClearML orchestration dashboard (`workers.cluster_report` max_gpus);
    /// unset turns reporting off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_report_max_gpu: Option<u32>,
    /// Most pods (Pending + Running) of all queues together (the Enterprise chart's `maxPods`);
    /// unset = no global limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    /// The pod template every queue starts from.
    #[serde(default, skip_serializing_if = "PodTemplate::is_empty")]
    pub base_pod_template: PodTemplate,
    /// The queues this agent serves, by ClearML queue name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queues: BTreeMap<String, QueueValues>,
    /// Shell commands the task bootstrap runs in every task container once python is found, before
    /// `clearml-agent` is installed (the Python glue's `extra_bash_init_cmd` slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_bash_script: Option<String>,
    /// Replaces the whole task bootstrap, as in the Enterprise chart: a bash script run with
    /// `/bin/bash -c`, with the glue's placeholders ([`CONTAINER_SCRIPT_PLACEHOLDERS`]; `{{`/`}}`
    /// are braces). It must end by running `clearml_agent execute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_custom_bash_script: Option<String>,
    /// The task bootstrap installs no OS packages (git, python3, pip); `clearml-agent` is still
    /// pip-installed when missing (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub air_gapped_support: Option<bool>,

    // --- the agent's own pod and account (the open-source chart's keys) ---
    /// The agent's image: `[global.imageRegistry or registry]/repository:tag` (`install --image`
    /// wins). A `repository` naming the chart's Python glue image is reported, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<AgentImage>,
    /// Replicas of the agent's Deployment (default 1; replicas elect a leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_count: Option<i32>,
    /// The agent container's resources (replace the defaults as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The chart's init container (it waited for the ClearML servers); the agent has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<AgentInitContainers>,
    /// Labels of the agent's Deployment and pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations of the agent's Deployment and pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Env of the agent container (an entry named like one the install sets replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_envs: Option<Vec<EnvVar>>,
    /// The agent pod's security context (merged over the hardened default, these fields winning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// The agent container's security context (merged over the hardened default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
    /// The agent pod's node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The agent pod's tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// The agent pod's affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Volumes of the agent pod (after the install's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Volume mounts of the agent container (after the install's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// Files written into the agent container, from a Secret the install creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mounts: Option<Vec<FileMount>>,
    /// Annotations of the agent's ServiceAccount (IRSA, Workload Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_annotations: Option<BTreeMap<String, String>>,
    /// An existing ServiceAccount the agent runs as (the install creates none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_existing_account_name: Option<String>,
    /// Existing Roles (of the agent's namespace) bound to the agent's ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_role_bindings: Option<Vec<String>>,
    /// Existing ClusterRoles bound to the agent's ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_cluster_role_bindings: Option<Vec<String>>,
    // --- settings the seeds do not name; defaults documented in the README ---
    /// Image for tasks that name none, when the queue has no `defaultImage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_image: Option<String>,
    /// The open-source chart's name for `defaultImage` (either may be given; both must agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_container_image: Option<String>,
    /// The open-source chart's queues: one name, or several separated by spaces or commas; each
    /// is served with `basePodTemplate` unless `queues` configures it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The open-source chart's name for `createQueues` (either may be given; both must agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_queue_if_not_exists: Option<bool>,
    /// Namespace for task pods (default: the agent's own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_namespace: Option<String>,
    /// The agent's ClearML worker id (default `k8s-agent:<namespace>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// How the served queues share each tick's takes (default `fair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_order: Option<QueueOrder>,
    /// Seconds between queue polls when there is no work (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_seconds: Option<f64>,
    /// Seconds a pod may stay unschedulable before its task is failed (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeout_seconds: Option<u64>,
    /// Seconds a succeeded pod is kept before deletion (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded_pod_ttl_seconds: Option<u64>,
    /// Seconds a failed pod is kept before deletion, for inspection (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_pod_ttl_seconds: Option<u64>,
    /// pip version specifier of the `clearml-agent` package the task bootstrap installs (default
    /// [`DEFAULT_CLEARML_AGENT_VERSION`]), e.g. `==3.0.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearml_agent_version: Option<String>,
    /// `false`: the agent and task pods do not verify the ClearML server's TLS certificate (the
    /// chart's `clearmlcheckCertificate`; task pods get `CLEARML_API_HOST_VERIFY_CERT=0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearmlcheck_certificate: Option<bool>,

    // --- Enterprise agent keys ---
    /// The Enterprise name of `pollIntervalSeconds` (both may be given if they agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_poll_frequency_seconds: Option<f64>,
    /// Seconds between the worker's `workers.status_report` calls (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_report_frequency_seconds: Option<f64>,
    /// Minutes finished task pods are kept: the default of `succeededPodTtlSeconds` and
    /// `failedPodTtlSeconds` (each, when given, wins for its pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_pod_deletion_delay_minutes: Option<u64>,
    /// The Enterprise name of `workerId` (both may be given if they agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id_override: Option<String>,
    /// The worker id template of task pods for queues without `customWorkerIdTemplate`
    /// (placeholders as there, plus `{worker_id_parts[n]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_worker_id_override: Option<String>,
    /// Debug logs of the agent (as `RUST_LOG=debug` for the agent's own crates; an explicit
    /// `RUST_LOG` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_mode: Option<bool>,
    /// `multiNode.enabled: false` turns multi-node off: tasks' own `multi_node_request` is
    /// ignored and a queue's `multiNode` is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_node: Option<enterprise::MultiNode>,
    /// The Enterprise orchestration dashboard report (`gpu.reportMax` is `dashboardReportMaxGpu`,
    /// `reportSeconds` its period; discovery and CPU reports are reported as not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestration_dashboard: Option<enterprise::OrchestrationDashboard>,
    /// A global limit on a resource summed over task pods (accepted, reported as not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitored_resources: Option<enterprise::MonitoredResources>,
    /// Cluster-wide RBAC for the agent (accepted, reported as not applicable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_cluster_access: Option<bool>,
    /// Tasks run with their owner's token (accepted, reported as not applicable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_owner_token: Option<bool>,
    /// Run every task as a `batch/v1` Job (an Indexed Job for multi-node) instead of bare pods
    /// (default false; `queueSettings.taskAsJob` overrides it per queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_as_job: Option<bool>,
    /// The per-tenant applications queue (accepted, reported as not applicable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps_queue: Option<enterprise::AppsQueue>,
    /// Enterprise server tasks (accepted as given, reported as not applicable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tasks: Option<Value>,
}

/// `agentk8sglue.image`: the agent's image, as the open-source chart writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentImage {
    /// Registry host; wins over `global.imageRegistry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Repository, e.g. `my-mirror/clearml-k8s-agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Tag (default: the plugin's version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Repositories of the Python glue's image, which the open-source chart's values name: this
/// agent replaces that image, so naming it does not choose the agent's image.
pub const PYTHON_GLUE_IMAGES: &[&str] = &[
    "allegroai/clearml-agent-k8s-base",
    "clearml/clearml-agent-k8s-base",
];

/// `agentk8sglue.initContainers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentInitContainers {
    /// Resources of the chart's init container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// `global`: the chart's global settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Global {
    /// Registry host prefixed to the agent's image (`agentk8sglue.image.registry` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<String>,
}

/// `sessions`: the chart's clearml-session "ports mode" (a Service per interactive session),
/// accepted and reported as not applicable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sessions {
    /// Turn ports mode on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mode_enabled: Option<bool>,
    /// Annotations of the session Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc_annotations: Option<BTreeMap<String, String>>,
    /// Type of the session Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc_type: Option<String>,
    /// Address session clients connect to.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "externalIP"
    )]
    pub external_ip: Option<String>,
    /// First node port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_port: Option<u32>,
    /// Most session Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_services: Option<u32>,
}

/// `agentk8sglue.queueOrder`: how the served queues share the tasks taken in a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueOrder {
    /// Round-robin, one task per queue per round, from a rotating first queue: a busy queue never
    /// starves the others.
    #[default]
    Fair,
    /// Highest `queueSettings.priority` first (ties by queue name): a queue is served only while
    /// every queue above it is empty or at its `maxPods` (a ClearML agent's `--queue A B`).
    Priority,
}

/// `agentk8sglue.queues.<name>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueValues {
    /// Overrides merged onto `basePodTemplate` for this queue's pods.
    #[serde(default, skip_serializing_if = "PodTemplate::is_empty")]
    pub template_overrides: PodTemplate,
    /// ClearML settings for this queue.
    #[serde(default, skip_serializing_if = "QueueSettings::is_empty")]
    pub queue_settings: QueueSettings,
}

/// `agentk8sglue.queues.<name>.queueSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSettings {
    /// Most pods (Pending + Running) this queue may have at once; unset = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    /// `CLEARML_WORKER_ID` of task pods, with `{task_id}`, `{project}`, `{task_name}`, `{queue}`,
    /// `{pod_name}`, `{namespace}`, `{worker_id}` placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_worker_id_template: Option<String>,
    /// GPUs per node for multi-node tasks, e.g. `[4, 2]`: pods of gcd(list) GPUs each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_node: Option<Vec<u32>>,
    /// Image for this queue's tasks that name none (the task's own image wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_image: Option<String>,
    /// Keep the image's entrypoint: no command or args are set (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_image_entrypoint: Option<bool>,
    /// With `queueOrder: priority`, queues with a higher priority are served first (default 0;
    /// ties by queue name). Ignored by the `fair` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// How many times a task whose pod the cluster took away (preempted, evicted, its node gone)
    /// goes back to the head of this queue before it is failed (default
    /// [`DEFAULT_MAX_RETRIES`]; 0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// How long the ranks of a multi-node task may wait for all of them to be scheduled before
    /// the agent releases them all and puts the task back at the head of this queue (default
    /// [`DEFAULT_GANG_TIMEOUT_SECONDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang_timeout_seconds: Option<u64>,
    /// How a multi-node task of this queue starts whole (default `auto`: the Kubernetes PodGroup
    /// API when the cluster serves it, else the agent's gang timeout). Not used with `kueue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang_scheduling: Option<GangScheduling>,
    /// Send this queue's pods through Kueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kueue: Option<KueueSettings>,
    /// Run this queue's tasks as `batch/v1` Jobs (overrides `agentk8sglue.taskAsJob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_as_job: Option<bool>,
    /// Job mode: the Job's `activeDeadlineSeconds` (a task running longer is failed with
    /// `DeadlineExceeded`); unset = no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

/// Default `queueSettings.maxRetries`.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Most `queueSettings.maxRetries`.
pub const MAX_MAX_RETRIES: u32 = 100;
/// Default `queueSettings.gangTimeoutSeconds`.
pub const DEFAULT_GANG_TIMEOUT_SECONDS: u64 = 120;

/// `agentk8sglue.queues.<name>.queueSettings.gangScheduling`: which gang path a multi-node task
/// takes (see [`crate::gang`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GangScheduling {
    /// The PodGroup API when the apiserver serves it, else the agent's gang timeout.
    #[default]
    Auto,
    /// The PodGroup API; a multi-node task fails with why if the apiserver does not serve it.
    PodGroup,
    /// The agent's gang timeout, even where the PodGroup API is served.
    Agent,
}

/// `agentk8sglue.queues.<name>.queueSettings.kueue`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KueueSettings {
    /// The Kueue LocalQueue (in the task namespace) the pods are submitted to: their
    /// `kueue.x-k8s.io/queue-name` label.
    pub local_queue: String,
}

/// A pod template (`basePodTemplate` and each queue's `templateOverrides`): pod-level fields and
/// the fields of the task container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplate {
    /// Pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Pod annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Task container env (merged by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Task container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod volumes (merged by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Task container volume mounts (merged by mountPath).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    /// Volumes appended after `volumes` (lists from base and override are concatenated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Vec<Volume>>,
    /// Mounts appended after `volumeMounts` (lists from base and override are concatenated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_volume_mounts: Option<Vec<VolumeMount>>,
    /// Task container ports (merged by containerPort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
    /// Init containers (merged by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations (replaced as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Task container security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Scheduler name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Runtime class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// /etc/hosts entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_aliases: Option<Vec<HostAlias>>,
    /// Image pull secrets (merged by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Task container image pull policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Service account for task pods (default: the namespace's `default`, without a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Mount the service account token into task pods (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Grace period for task pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Files written into the task container (`{name, folderPath, fileContent}`, merged by
    /// name): they reach the pod from a Secret the agent creates, never inline in the pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mounts: Option<Vec<FileMount>>,
}

/// One `fileMounts` entry: the file `folderPath/name` with `fileContent`, read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileMount {
    /// File name (a Secret key: letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Absolute directory the file appears in.
    pub folder_path: String,
    /// The file's content.
    #[serde(default)]
    pub file_content: String,
}

impl PodTemplate {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl QueueSettings {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

// === parsing ===

impl Values {
    /// Parses and validates a values file in YAML.
    pub fn from_yaml(text: &str) -> Result<Self, FieldError> {
        if text.len() > MAX_VALUES_BYTES {
            return Err(FieldError::new(
                "",
                format!(
                    "the values document is {} bytes; it must fit in a ConfigMap (at most {MAX_VALUES_BYTES} bytes)",
                    text.len()
                ),
            ));
        }
        if text.trim().is_empty() {
            return Err(FieldError::new("", "the values document is empty"));
        }
        let doc: Value =
            yaml::from_str(text).map_err(|e| FieldError::new("", format!("invalid YAML: {e}")))?;
        Self::from_json(doc)
    }

    /// Parses and validates a values document already in JSON form.
    pub fn from_json(doc: Value) -> Result<Self, FieldError> {
        if doc.is_null() {
            return Err(FieldError::new("", "the values document is empty"));
        }
        if !doc.is_object() {
            return Err(FieldError::new("", "the values document must be a mapping"));
        }
        let doc = normalize(doc);
        let values: Values = typed("", &doc)?;
        check_roundtrip("", &doc, &values)?;
        values.validate()?;
        Ok(values)
    }

    /// Semantic checks beyond types: names, quantities, limits, placeholders.
    pub fn validate(&self) -> Result<(), FieldError> {
        let a = &self.agentk8sglue;
        let root = "agentk8sglue";
        if let Some(ns) = &a.task_namespace {
            validate::dns_label(ns)
                .map_err(|m| FieldError::new(format!("{root}.taskNamespace"), m))?;
        }
        if let Some(p) = a.poll_interval_seconds
            && !(p.is_finite() && p > 0.0 && p <= 3600.0)
        {
            return Err(FieldError::new(
                format!("{root}.pollIntervalSeconds"),
                "must be a number of seconds greater than 0 and at most 3600",
            ));
        }
        if let Some(image) = &a.default_image {
            check_image(&format!("{root}.defaultImage"), image)?;
        }
        if let Some(image) = &a.default_container_image {
            check_image(&format!("{root}.defaultContainerImage"), image)?;
            if let Some(other) = a.default_image.as_ref().filter(|o| *o != image) {
                return Err(FieldError::new(
                    format!("{root}.defaultContainerImage"),
                    format!(
                        "is {image:?} but {root}.defaultImage is {other:?}; give one of them (they are the same setting)"
                    ),
                ));
            }
        }
        for name in a.queue_names() {
            check_queue_name(&format!("{root}.queue"), name)?;
        }
        if a.create_queue_if_not_exists == Some(false) && a.create_queues {
            return Err(FieldError::new(
                format!("{root}.createQueueIfNotExists"),
                format!(
                    "is false but {root}.createQueues is true; give one of them (they are the same setting)"
                ),
            ));
        }
        if let Some(spec) = &a.clearml_agent_version {
            validate::pip_version_specifier(spec).map_err(|m| {
                FieldError::new(
                    format!("{root}.clearmlAgentVersion"),
                    format!("{m}; write e.g. \"==3.0.3\" or \"{DEFAULT_CLEARML_AGENT_VERSION}\""),
                )
            })?;
        }
        if let Some(script) = &a.container_custom_bash_script {
            check_placeholders(
                &format!("{root}.containerCustomBashScript"),
                script,
                CONTAINER_SCRIPT_PLACEHOLDERS,
            )?;
        }
        self.validate_agent_pod()?;
        a.validate_enterprise(root)?;
        a.base_pod_template
            .validate(&format!("{root}.basePodTemplate"))?;
        if let Some((i, why)) = enterprise::file_mount_clash(&a.base_pod_template) {
            return Err(FieldError::new(
                format!("{root}.basePodTemplate.fileMounts[{i}]"),
                why,
            ));
        }
        if a.task_as_job == Some(true) {
            job_mode::check_template(&format!("{root}.basePodTemplate"), &a.base_pod_template)?;
        }
        for (name, queue) in &a.queues {
            let path = format!("{root}.queues.{name}");
            check_queue_name(&path, name)?;
            queue
                .template_overrides
                .validate(&format!("{path}.templateOverrides"))?;
            queue
                .queue_settings
                .validate(&format!("{path}.queueSettings"))?;
            // what the queue's pods get: basePodTemplate ⊕ templateOverrides
            let merged = merge::merge_templates(&a.base_pod_template, &queue.template_overrides)?;
            job_mode::check(
                &path,
                queue.queue_settings.task_as_job.or(a.task_as_job) == Some(true),
                &queue.queue_settings,
                &a.base_pod_template,
                &queue.template_overrides,
            )?;
            rules::check_volumes(&merged).map_err(|p| {
                FieldError::new(
                    volume_path(
                        root,
                        &path,
                        &a.base_pod_template,
                        &queue.template_overrides,
                        &p,
                    ),
                    p.message,
                )
            })?;
            if let Some((i, why)) = enterprise::file_mount_clash(&merged) {
                return Err(FieldError::new(
                    format!("{path}.templateOverrides.fileMounts[{i}]"),
                    why,
                ));
            }
        }
        Ok(())
    }

    /// The values without credentials: what goes into the agent's ConfigMap.
    pub fn without_secrets(&self) -> Values {
        // the names of existing Secrets are not secret, and the agent needs them
        let clearml = Some(ClearmlCredentials {
            existing_agentk8sglue_secret: self.existing_credentials_secret().map(String::from),
            existing_clearml_config_secret: self.existing_clearml_config_secret().map(String::from),
            ..Default::default()
        })
        .filter(|c| c != &ClearmlCredentials::default());
        let mut agentk8sglue = self.agentk8sglue.clone();
        // the agent pod's files may hold secrets; `install` puts them in a Secret
        agentk8sglue.file_mounts = None;
        Values {
            image_credentials: None,
            clearml,
            agentk8sglue,
            custom_certificates: self.custom_certificates.clone(),
            global: self.global.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

impl AgentValues {
    /// The image for tasks that name none: `defaultImage`, else the chart's
    /// `defaultContainerImage`.
    pub fn task_default_image(&self) -> Option<&String> {
        self.default_image
            .as_ref()
            .or(self.default_container_image.as_ref())
    }

    /// The names in the chart's `queue` (separated by spaces or commas).
    pub fn queue_names(&self) -> Vec<&str> {
        self.queue
            .as_deref()
            .unwrap_or_default()
            .split([' ', ','])
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// Every served queue: `queues`, plus each name of `queue` not configured there (served with
    /// `basePodTemplate` and no settings).
    pub fn all_queues(&self) -> BTreeMap<String, QueueValues> {
        let mut all = self.queues.clone();
        for name in self.queue_names() {
            all.entry(name.to_string()).or_default();
        }
        all
    }

    /// Missing queues are created: `createQueues` or the chart's `createQueueIfNotExists`.
    pub fn creates_queues(&self) -> bool {
        self.create_queues || self.create_queue_if_not_exists == Some(true)
    }

    /// `basePodTemplate ⊕ templateOverrides` of queue `name`; `None` for a queue not configured.
    pub fn queue_template(&self, name: &str) -> Option<Result<PodTemplate, FieldError>> {
        let queue = self.queues.get(name)?;
        Some(merge::merge_templates(
            &self.base_pod_template,
            &queue.template_overrides,
        ))
    }
}

impl QueueValues {
    /// Parses and validates one queue entry (`{templateOverrides, queueSettings}`) given as JSON;
    /// errors are reported under `agentk8sglue.queues.<name>`.
    pub fn from_json(name: &str, doc: Value) -> Result<Self, FieldError> {
        let path = format!("agentk8sglue.queues.{name}");
        check_queue_name(&path, name)?;
        let doc = normalize(if doc.is_null() {
            Value::Object(Default::default())
        } else {
            doc
        });
        let queue: QueueValues = typed(&path, &doc)?;
        check_roundtrip(&path, &doc, &queue)?;
        queue
            .template_overrides
            .validate(&format!("{path}.templateOverrides"))?;
        queue
            .queue_settings
            .validate(&format!("{path}.queueSettings"))?;
        Ok(queue)
    }
}

impl QueueSettings {
    fn validate(&self, path: &str) -> Result<(), FieldError> {
        if let Some(nodes) = &self.multi_node {
            rules::check_multi_node(nodes).map_err(|(i, why)| match i {
                Some(i) => FieldError::new(format!("{path}.multiNode[{i}]"), why),
                None => FieldError::new(format!("{path}.multiNode"), why),
            })?;
        }
        if let Some(template) = &self.custom_worker_id_template {
            check_worker_id_template(&format!("{path}.customWorkerIdTemplate"), template)?;
        }
        if let Some(image) = &self.default_image {
            check_image(&format!("{path}.defaultImage"), image)?;
        }
        if let Some(n) = self.max_retries
            && n > MAX_MAX_RETRIES
        {
            return Err(FieldError::new(
                format!("{path}.maxRetries"),
                format!("{n} is too many; at most {MAX_MAX_RETRIES}"),
            ));
        }
        if let Some(s) = self.gang_timeout_seconds
            && !(1..=86_400).contains(&s)
        {
            return Err(FieldError::new(
                format!("{path}.gangTimeoutSeconds"),
                format!("{s} is out of range: 1 to 86400 seconds"),
            ));
        }
        if let Some(kueue) = &self.kueue {
            crate::kueue::check_local_queue(&kueue.local_queue)
                .map_err(|why| FieldError::new(format!("{path}.kueue.localQueue"), why))?;
        }
        if let Some(s) = self.active_deadline_seconds
            && s <= 0
        {
            return Err(FieldError::new(
                format!("{path}.activeDeadlineSeconds"),
                "must be a number of seconds greater than 0",
            ));
        }
        Ok(())
    }
}

impl PodTemplate {
    fn validate(&self, path: &str) -> Result<(), FieldError> {
        for (field, map) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            for (key, value) in map.iter().flatten() {
                let at = format!("{path}.{field}.{key}");
                validate::qualified_name(key).map_err(|m| FieldError::new(&at, m))?;
                if field == "labels" {
                    enterprise::check_label_value(value).map_err(|m| FieldError::new(&at, m))?;
                }
            }
        }
        for (key, _) in self.node_selector.iter().flatten() {
            validate::qualified_name(key)
                .map_err(|m| FieldError::new(format!("{path}.nodeSelector.{key}"), m))?;
        }
        for (i, env) in self.env.iter().flatten().enumerate() {
            validate::env_name(&env.name)
                .map_err(|m| FieldError::new(format!("{path}.env[{i}].name"), m))?;
        }
        unique_by(path, "env", self.env.as_deref(), |e| e.name.clone())?;
        if let Some(resources) = &self.resources {
            check_resources(&format!("{path}.resources"), resources)?;
        }
        for field in ["volumes", "extraVolumes"] {
            let list = if field == "volumes" {
                &self.volumes
            } else {
                &self.extra_volumes
            };
            for (i, volume) in list.iter().flatten().enumerate() {
                let at = format!("{path}.{field}[{i}]");
                validate::dns_label(&volume.name)
                    .map_err(|m| FieldError::new(format!("{at}.name"), m))?;
                if let Some(size) = volume
                    .empty_dir
                    .as_ref()
                    .and_then(|d| d.size_limit.as_ref())
                {
                    validate::quantity(&size.0)
                        .map_err(|m| FieldError::new(format!("{at}.emptyDir.sizeLimit"), m))?;
                }
            }
            unique_by(path, field, list.as_deref(), |v| v.name.clone())?;
        }
        for field in ["volumeMounts", "extraVolumeMounts"] {
            let list = if field == "volumeMounts" {
                &self.volume_mounts
            } else {
                &self.extra_volume_mounts
            };
            for (i, mount) in list.iter().flatten().enumerate() {
                if mount.mount_path.is_empty() {
                    return Err(FieldError::new(
                        format!("{path}.{field}[{i}].mountPath"),
                        "must not be empty",
                    ));
                }
            }
            unique_by(path, field, list.as_deref(), |m| m.mount_path.clone())?;
        }
        unique_by(
            path,
            "imagePullSecrets",
            self.image_pull_secrets.as_deref(),
            |s| s.name.clone(),
        )?;
        unique_by(path, "ports", self.ports.as_deref(), |p| {
            p.container_port.to_string()
        })?;
        if let Some(policy) = &self.image_pull_policy
            && !matches!(policy.as_str(), "Always" | "IfNotPresent" | "Never")
        {
            return Err(FieldError::new(
                format!("{path}.imagePullPolicy"),
                format!("unsupported value {policy:?}: must be Always, IfNotPresent or Never"),
            ));
        }
        self.validate_chart_fields(path)?;
        Ok(())
    }
}

fn check_resources(path: &str, resources: &ResourceRequirements) -> Result<(), FieldError> {
    for (field, map) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        for (name, qty) in map.iter().flatten() {
            let at = format!("{path}.{field}.{name}");
            validate::qualified_name(name).map_err(|m| FieldError::new(&at, m))?;
            validate::quantity(&qty.0).map_err(|m| FieldError::new(&at, m))?;
        }
    }
    Ok(())
}

/// The field a volume problem of a queue's merged template comes from: the queue's own
/// `templateOverrides` list that names it if one does, else `basePodTemplate`'s.
fn volume_path(
    root: &str,
    queue_path: &str,
    base: &PodTemplate,
    over: &PodTemplate,
    p: &rules::VolumeProblem,
) -> String {
    let lists: [(&str, Vec<&str>); 2] = if p.mount {
        [
            ("volumeMounts", names(&over.volume_mounts, |m| &m.name)),
            (
                "extraVolumeMounts",
                names(&over.extra_volume_mounts, |m| &m.name),
            ),
        ]
    } else {
        [
            ("extraVolumes", names(&over.extra_volumes, |v| &v.name)),
            ("volumes", names(&over.volumes, |v| &v.name)),
        ]
    };
    if let Some((field, list)) = lists.iter().find(|(_, l)| l.contains(&p.name.as_str())) {
        let i = list.iter().position(|n| *n == p.name).unwrap_or_default();
        return format!("{queue_path}.templateOverrides.{field}[{i}].name");
    }
    let field = match (
        p.mount,
        names(&base.extra_volume_mounts, |m| &m.name).contains(&p.name.as_str()),
    ) {
        (true, true) => "extraVolumeMounts",
        (true, false) => "volumeMounts",
        (false, _) => "extraVolumes",
    };
    format!("{root}.basePodTemplate.{field}")
}

fn names<T>(list: &Option<Vec<T>>, name: impl Fn(&T) -> &String) -> Vec<&str> {
    list.iter().flatten().map(|x| name(x).as_str()).collect()
}

fn unique_by<T>(
    path: &str,
    field: &str,
    list: Option<&[T]>,
    key: impl Fn(&T) -> String,
) -> Result<(), FieldError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, item) in list.unwrap_or_default().iter().enumerate() {
        let k = key(item);
        if !seen.insert(k.clone()) {
            return Err(FieldError::new(
                format!("{path}.{field}[{i}]"),
                format!("duplicate entry {k:?}"),
            ));
        }
    }
    Ok(())
}

fn check_queue_name(path: &str, name: &str) -> Result<(), FieldError> {
    if name.trim().chars().count() < 3 {
        return Err(FieldError::new(
            path,
            "a ClearML queue name must have at least 3 characters",
        ));
    }
    Ok(())
}

fn check_image(path: &str, image: &str) -> Result<(), FieldError> {
    if image.trim().is_empty() || image.contains(char::is_whitespace) {
        Err(FieldError::new(
            path,
            format!("{image:?} is not an image reference"),
        ))
    } else {
        Ok(())
    }
}

/// Checks a worker-id template's `{placeholder}` names; `{{` and `}}` are literal braces.
/// `{worker_id_parts[n]}` (the Enterprise chart's) is accepted too.
pub(crate) fn check_worker_id_template(path: &str, template: &str) -> Result<(), FieldError> {
    let (plain, _) = strip_worker_id_parts(template);
    check_placeholders(path, &plain, WORKER_ID_PLACEHOLDERS)
}

/// `template` with every `{worker_id_parts[n]}` replaced by `{worker_id}`, and the largest `n`.
pub fn strip_worker_id_parts(template: &str) -> (String, Option<usize>) {
    let mut out = String::with_capacity(template.len());
    let mut max = None;
    let mut rest = template;
    while let Some(i) = rest.find("{worker_id_parts[") {
        let after = &rest[i + "{worker_id_parts[".len()..];
        let parsed = after
            .split_once("]}")
            .and_then(|(n, tail)| Some((n.parse::<usize>().ok()?, tail)));
        match parsed {
            Some((n, tail)) if !rest[..i].ends_with('{') || rest[..i].ends_with("{{") => {
                out.push_str(&rest[..i]);
                out.push_str("{worker_id}");
                max = max.max(Some(n));
                rest = tail;
            }
            _ => {
                out.push_str(&rest[..i + 1]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    (out, max)
}

/// Checks that every `{placeholder}` of `template` is one of `known`; `{{` and `}}` are literal
/// braces (Python's `str.format`, which the glue's templates use).
pub(crate) fn check_placeholders(
    path: &str,
    template: &str,
    known: &[&str],
) -> Result<(), FieldError> {
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(FieldError::new(
                path,
                "unmatched '}' (write '}}' for a literal brace)",
            ));
        }
        let Some(end) = tail.find('}') else {
            return Err(FieldError::new(
                path,
                "unclosed '{' (write '{{' for a literal brace)",
            ));
        };
        let name = &tail[1..end];
        if !known.contains(&name) {
            return Err(FieldError::new(
                path,
                format!(
                    "unknown placeholder {{{name}}}; known: {} (write '{{{{' and '}}}}' for literal braces)",
                    known
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

// === typed parse helpers ===

/// Deserialises `doc` as `T`, reporting the failing field path.
fn typed<T: DeserializeOwned>(base: &str, doc: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let inner = e.path().to_string();
        let path = join(base, if inner == "." { "" } else { &inner });
        let message = e.inner().to_string();
        // The path already ends with the unknown key; serde's whole list of expected keys is
        // noise, but the closest one is what a typo meant.
        let message = match unknown_field(&message) {
            Some((key, expected)) => match closest_key(key, &expected) {
                Some(near) => format!("unknown key; did you mean {near}?"),
                None => "unknown key".to_string(),
            },
            None => message,
        };
        FieldError::new(path, message)
    })
}

/// The unknown key and the expected ones from serde's "unknown field `x`, expected one of `a`,
/// `b`" (or "expected `a` or `b`", or "there are no fields").
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).collect();
    Some((key, expected))
}

/// The known key a typo most likely meant: the nearest by edit distance (ignoring case), if it is
/// near enough to be a typo (at most 2 edits, and fewer than half the key's letters).
fn closest_key<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key, &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 2 && *d * 2 < key.chars().count().max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// k8s-openapi types ignore unknown fields; anything present in `doc` but absent after a
/// round-trip through the typed value was dropped, i.e. unknown.
fn check_roundtrip<T: Serialize>(base: &str, doc: &Value, typed: &T) -> Result<(), FieldError> {
    let back = serde_json::to_value(typed)
        .map_err(|e| FieldError::new(base, format!("cannot re-encode: {e}")))?;
    match find_dropped(doc, &back, base) {
        Some(path) => Err(FieldError::new(path, "unknown key")),
        None => Ok(()),
    }
}

fn find_dropped(input: &Value, back: &Value, path: &str) -> Option<String> {
    match (input, back) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| {
            let here = join(path, k);
            match b.get(k) {
                None if is_emptyish(v) => None,
                None => Some(here),
                Some(bv) => find_dropped(v, bv, &here),
            }
        }),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| find_dropped(x, y, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Values the typed form legitimately drops: `null`, and maps of nothing (`templateOverrides: {}`).
fn is_emptyish(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_emptyish),
        _ => false,
    }
}

fn join(base: &str, key: &str) -> String {
    match (base.is_empty(), key.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => key.to_string(),
        (false, false) if key.starts_with('[') => format!("{base}{key}"),
        (false, false) => format!("{base}.{key}"),
    }
}

/// YAML writes quantities as numbers (`nvidia.com/gpu: 1`); the API server accepts both, while
/// k8s-openapi's `Quantity` wants a string. Numbers in quantity positions become strings.
fn normalize(mut doc: Value) -> Value {
    fn walk(v: &mut Value, parent_key: Option<&str>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    let quantity_map = matches!(
                        (parent_key, k.as_str()),
                        (Some("resources"), "limits" | "requests")
                    );
                    if quantity_map && let Value::Object(q) = child {
                        for qty in q.values_mut() {
                            if let Value::Number(n) = qty {
                                *qty = Value::String(n.to_string());
                            }
                        }
                    }
                    if k == "sizeLimit"
                        && let Value::Number(n) = child
                    {
                        *child = Value::String(n.to_string());
                    }
                    walk(child, Some(k));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, parent_key)),
            _ => {}
        }
    }
    walk(&mut doc, None);
    doc
}

#[cfg(test)]
mod tests;
