//! Every name the agent and the plugin must agree on, in one place: the labels and annotations
//! on task pods, the credentials Secret and its keys, the ConfigMap key, the agent's ports and
//! environment variables, the pending queue and the GPU resource. A name here is part of the
//! product's contract with existing clusters: changing one strands what older versions created.

/// Label carrying the agent's identity (`agent-<md5(worker id)[..8]>`, the Python glue's scheme).
pub const LABEL_AGENT: &str = "CLEARML";
/// Label carrying the ClearML queue id.
pub const LABEL_QUEUE_ID: &str = "clearml-agent-queue";
/// Label carrying the (sanitised) ClearML queue name.
pub const LABEL_QUEUE_NAME: &str = "clearml-agent-queue-name";
/// Label carrying the ClearML task id.
pub const LABEL_TASK_ID: &str = "clearml-task-id";
/// Label carrying the rank of a multi-node pod.
pub const LABEL_RANK: &str = "clearml-rank";
/// `app.kubernetes.io/managed-by` value on everything the agent creates.
pub const MANAGED_BY: &str = "clearml-k8s-agent";
/// Annotation with the task's name.
pub const ANNOTATION_TASK_NAME: &str = "clearml.ai/task-name";
/// Annotation with the task's project.
pub const ANNOTATION_PROJECT: &str = "clearml.ai/project";
/// Annotation with the launch id (see `render::TaskParams::launch_id`).
pub const ANNOTATION_LAUNCH: &str = "clearml.ai/launch";
/// Annotation with the unsanitised queue name.
pub const ANNOTATION_QUEUE_NAME: &str = "clearml.ai/queue-name";
/// Annotation with the retries before this launch (the reason codes, comma-separated, oldest
/// first: `PreemptionByScheduler,GangTimeout`); absent on a task's first launch.
pub const ANNOTATION_RETRIES: &str = "clearml.ai/retries";
/// Pod names are this prefix and the task id (as the Python glue names them).
pub const POD_PREFIX: &str = "clearml-id-";
/// Name of the task container.
pub const CONTAINER_NAME: &str = "task";
/// Keys of the credentials Secret (the chart's names).
pub const SECRET_KEY_ACCESS: &str = "agentk8sglue_key";
/// See [`SECRET_KEY_ACCESS`].
pub const SECRET_KEY_SECRET: &str = "agentk8sglue_secret";
/// The GPU resource name task pods ask for (`resources.limits`).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Name of the agent's ServiceAccount, Role, RoleBinding, ConfigMap, Deployment, Service and
/// leader-election Lease.
pub const AGENT_NAME: &str = "clearml-agent";
/// The Secret holding the ClearML key pair (keys [`SECRET_KEY_ACCESS`], [`SECRET_KEY_SECRET`]);
/// task pods read it through `secretKeyRef`.
pub const CREDENTIALS_SECRET: &str = "clearml-agent-credentials";
/// Key of the values document in the agent's ConfigMap.
pub const VALUES_KEY: &str = "values.yaml";
/// The agent's gRPC control port (bound to 127.0.0.1 in its pod, reached by port-forward).
pub const GRPC_PORT: u16 = 9090;
/// The agent's health and metrics port.
pub const ADMIN_PORT: u16 = 8080;
/// Env var that turns off TLS verification of the ClearML server in the agent.
pub const ENV_SKIP_TLS_VERIFY: &str = "CLEARML_AGENT_INSECURE_SKIP_TLS_VERIFY";
/// Name of the ClearML queue launched tasks wait in until their pod starts (the glue's name).
pub const PENDING_QUEUE: &str = "k8s_scheduler";
/// Env var naming the Secret with the ClearML key pair the agent gives task pods (default
/// [`CREDENTIALS_SECRET`]; `install` sets it for `clearml.existingAgentk8sglueSecret`).
pub const ENV_CREDENTIALS_SECRET: &str = "CLEARML_AGENT_CREDENTIALS_SECRET";
/// The Secret `install` makes from `clearml.clearmlConfig`, in the task namespace; the ConfigMap's
/// values name it as `clearml.existingClearmlConfigSecret`.
pub const CLEARML_CONF_SECRET: &str = "clearml-agent-clearml-conf";
/// Key of the `clearml.conf` in [`CLEARML_CONF_SECRET`] (and in an existing Secret, as the chart
/// has it).
pub const CLEARML_CONF_KEY: &str = "clearml.conf";
/// The Secret `install` makes from `agentk8sglue.fileMounts` (the agent pod's files), and the
/// name of its volume in the agent pod.
pub const AGENT_FILES_SECRET: &str = "clearml-agent-files";

/// The Job controller's completion-index label and annotation on the pods of an Indexed Job
/// (Job mode, multi-node): the rank of the pod.
pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The Job controller's label naming the Job a pod belongs to.
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// The rank of a multi-node task pod from its labels: [`LABEL_RANK`] (bare pods), else the
/// completion index the Job controller gives the pods of an Indexed Job.
pub fn rank_of(labels: &std::collections::BTreeMap<String, String>) -> Option<&str> {
    labels
        .get(LABEL_RANK)
        .or_else(|| labels.get(JOB_COMPLETION_INDEX))
        .map(String::as_str)
}
