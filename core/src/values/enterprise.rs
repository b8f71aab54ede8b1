//! The Enterprise agent chart's keys (ClearML's documentation, repository `clearml/clearml-docs`:
//! the Kubernetes agent pages, multi-node, orchestration dashboard, custom workloads, self-signed
//! certificates, multi-tenant, and the `clearml-enterprise-agent` release notes) and the
//! open-source chart's `clearmlcheckCertificate` and `fileMounts`: their types, their checks, and
//! what they resolve to. Keys honoured here feed `config.rs` and `render.rs`; the rest are
//! reported by `notices.rs`.
//!
//! Where an Enterprise key names the same setting as one of ours (`queuePollFrequencySeconds` and
//! `pollIntervalSeconds`, `workerIdOverride` and `workerId`, `orchestrationDashboard.gpu.reportMax`
//! and `dashboardReportMaxGpu`), both may be given if they agree; disagreeing is an error naming
//! both keys.

use serde::{Deserialize, Serialize};

use super::{AgentValues, FieldError, PodTemplate, QueueSettings, string_templates, unique_by};
use crate::validate;

/// Where task pods find the `clearml.conf` of `clearml.existingClearmlConfigSecret` (a directory
/// of its own, so it cannot hide or be hidden by a user's mount).
pub const CLEARML_CONF_DIR: &str = "/etc/clearml-agent";
/// The file in [`CLEARML_CONF_DIR`] (also the Secret's key, as in the chart).
pub const CLEARML_CONF_KEY: &str = "clearml.conf";
/// Name of the task pod volume holding `clearml.conf` (reserved: a template may not use it).
pub const CLEARML_CONF_VOLUME: &str = "clearml-conf";
/// Name of the task pod volume holding the `fileMounts` files (reserved).
pub const FILE_MOUNTS_VOLUME: &str = "clearml-file-mounts";

/// `agentk8sglue.multiNode`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultiNode {
    /// Multi-node scheduling on (default true here: it needs no cluster-wide access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `agentk8sglue.orchestrationDashboard`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestrationDashboard {
    /// `disabled` (no reports), `global` or `aggregate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_type: Option<String>,
    /// Seconds between dashboard reports (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_seconds: Option<u64>,
    /// GPU capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<DashboardGpu>,
    /// CPU capacity (reported as not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<DashboardCpu>,
}

/// `orchestrationDashboard.gpu`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DashboardGpu {
    /// A fixed GPU count: `dashboardReportMaxGpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_max: Option<u32>,
    /// Node discovery (reported as not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
}

/// `orchestrationDashboard.cpu`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DashboardCpu {
    /// A fixed CPU count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_max: Option<u32>,
    /// Node discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// Report the CPUs of one namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_namespaced: Option<bool>,
    /// That namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_namespace_override: Option<String>,
}

/// `orchestrationDashboard.{gpu,cpu}.discovery`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    /// Discovery on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Label selector of GPU nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_selector: Option<String>,
    /// An extra node label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// Labels that count a node's GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count_selector: Option<String>,
}

/// `agentk8sglue.monitoredResources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitoredResources {
    /// The limit of the summed resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<f64>,
    /// `|`-separated path of the per-pod minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources_field_name: Option<String>,
    /// `|`-separated path of the per-pod maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resources_field_name: Option<String>,
}

/// `agentk8sglue.appsQueue`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppsQueue {
    /// Serve the tenant's applications queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// As a queue's.
    #[serde(default, skip_serializing_if = "QueueSettings::is_empty")]
    pub queue_settings: QueueSettings,
    /// As a queue's.
    #[serde(default, skip_serializing_if = "PodTemplate::is_empty")]
    pub template_overrides: PodTemplate,
}

/// `customCertificates` (top level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomCertificates {
    /// Replaces the system CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_ca_certificates_crt: Option<String>,
    /// Certificates added to the system bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_certs: Option<Vec<ExtraCert>>,
    /// Give the certificates to task pods too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_to_tasks: Option<bool>,
}

/// One `customCertificates.extraCerts` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtraCert {
    /// Unique name of the certificate.
    #[serde(default)]
    pub alias: String,
    /// The PEM text.
    #[serde(default)]
    pub pem: String,
}

/// A number of seconds in (0, 3600].
fn check_seconds(path: &str, v: f64) -> Result<(), FieldError> {
    if v.is_finite() && v > 0.0 && v <= 3600.0 {
        Ok(())
    } else {
        Err(FieldError::new(
            path,
            "must be a number of seconds greater than 0 and at most 3600",
        ))
    }
}

fn same_setting(
    path: &str,
    other: &str,
    a: impl std::fmt::Debug,
    b: impl std::fmt::Debug,
) -> FieldError {
    FieldError::new(
        path,
        format!("is {a:?} but {other} is {b:?}; give one of them (they are the same setting)"),
    )
}

impl AgentValues {
    /// Checks of the chart keys this module owns (called by [`super::Values::validate`]).
    pub(crate) fn validate_enterprise(&self, root: &str) -> Result<(), FieldError> {
        if let Some(p) = self.queue_poll_frequency_seconds {
            let path = format!("{root}.queuePollFrequencySeconds");
            check_seconds(&path, p)?;
            if let Some(other) = self.poll_interval_seconds.filter(|o| *o != p) {
                return Err(same_setting(
                    &path,
                    &format!("{root}.pollIntervalSeconds"),
                    p,
                    other,
                ));
            }
        }
        if let Some(p) = self.status_report_frequency_seconds {
            check_seconds(&format!("{root}.statusReportFrequencySeconds"), p)?;
        }
        if let Some(m) = self.completed_pod_deletion_delay_minutes
            && m > 525_600
        {
            return Err(FieldError::new(
                format!("{root}.completedPodDeletionDelayMinutes"),
                "must be at most 525600 (a year)",
            ));
        }
        if let Some(id) = &self.worker_id_override {
            let path = format!("{root}.workerIdOverride");
            if id.trim().is_empty() {
                return Err(FieldError::new(path, "must not be empty"));
            }
            if let Some(other) = self.worker_id.as_ref().filter(|o| *o != id) {
                return Err(same_setting(&path, &format!("{root}.workerId"), id, other));
            }
        }
        if let Some(t) = &self.task_worker_id_override {
            super::check_worker_id_template(&format!("{root}.taskWorkerIdOverride"), t)?;
        }
        check_worker_id_parts(self)?;
        if self.multi_node.as_ref().and_then(|m| m.enabled) == Some(false) {
            for (name, q) in &self.queues {
                if q.queue_settings.multi_node.is_some() {
                    return Err(FieldError::new(
                        format!("{root}.queues.{name}.queueSettings.multiNode"),
                        format!("is set but {root}.multiNode.enabled is false"),
                    ));
                }
            }
        }
        if let Some(d) = &self.orchestration_dashboard {
            let path = format!("{root}.orchestrationDashboard");
            if let Some(t) = &d.report_type
                && !matches!(t.as_str(), "" | "disabled" | "global" | "aggregate")
            {
                return Err(FieldError::new(
                    format!("{path}.reportType"),
                    format!("unsupported value {t:?}: must be disabled, global or aggregate"),
                ));
            }
            if d.report_seconds == Some(0) {
                return Err(FieldError::new(
                    format!("{path}.reportSeconds"),
                    "must be at least 1",
                ));
            }
            let max = d.gpu.as_ref().and_then(|g| g.report_max);
            if let (Some(max), Some(other)) = (max, self.dashboard_report_max_gpu)
                && max != other
            {
                return Err(same_setting(
                    &format!("{path}.gpu.reportMax"),
                    &format!("{root}.dashboardReportMaxGpu"),
                    max,
                    other,
                ));
            }
            if d.report_type.as_deref() == Some("disabled")
                && self.dashboard_report_max_gpu.is_some()
            {
                return Err(FieldError::new(
                    format!("{path}.reportType"),
                    format!(
                        "is \"disabled\" but {root}.dashboardReportMaxGpu turns the report on; give one of them"
                    ),
                ));
            }
        }
        if let Some(apps) = &self.apps_queue {
            apps.template_overrides
                .validate(&format!("{root}.appsQueue.templateOverrides"))?;
            apps.queue_settings
                .validate(&format!("{root}.appsQueue.queueSettings"))?;
        }
        Ok(())
    }

    /// The idle poll interval in seconds: `pollIntervalSeconds`, else `queuePollFrequencySeconds`.
    pub fn poll_interval(&self) -> Option<f64> {
        self.poll_interval_seconds
            .or(self.queue_poll_frequency_seconds)
    }

    /// The agent's worker id as given: `workerId`, else `workerIdOverride`.
    pub fn given_worker_id(&self) -> Option<&String> {
        self.worker_id.as_ref().or(self.worker_id_override.as_ref())
    }

    /// GPUs reported to the dashboard: `dashboardReportMaxGpu`, else
    /// `orchestrationDashboard.gpu.reportMax` unless its `reportType` is `disabled`.
    pub fn report_max_gpus(&self) -> Option<u32> {
        self.dashboard_report_max_gpu.or_else(|| {
            let d = self.orchestration_dashboard.as_ref()?;
            if d.report_type.as_deref() == Some("disabled") {
                return None;
            }
            d.gpu.as_ref()?.report_max
        })
    }

    /// Seconds between dashboard reports, if `orchestrationDashboard.reportSeconds` sets them.
    pub fn report_seconds(&self) -> Option<u64> {
        self.orchestration_dashboard.as_ref()?.report_seconds
    }

    /// Multi-node scheduling is on (`multiNode.enabled`, default true).
    pub fn multi_node_enabled(&self) -> bool {
        self.multi_node
            .as_ref()
            .and_then(|m| m.enabled)
            .unwrap_or(true)
    }

    /// Task pods verify the ClearML server's TLS certificate (`clearmlcheckCertificate`, default
    /// true).
    pub fn verifies_tls(&self) -> bool {
        self.clearmlcheck_certificate.unwrap_or(true)
    }
}

/// Every `{worker_id_parts[n]}` of the worker-id templates names a part the agent's worker id has
/// (its `:`-separated parts; the default `k8s-agent:<namespace>` has two).
fn check_worker_id_parts(a: &AgentValues) -> Result<(), FieldError> {
    let worker_id = a
        .given_worker_id()
        .map_or("k8s-agent:<namespace>", String::as_str);
    let parts = worker_id.split(':').count();
    let templates = a
        .task_worker_id_override
        .iter()
        .map(|t| ("agentk8sglue.taskWorkerIdOverride".to_string(), t))
        .chain(a.queues.iter().filter_map(|(name, q)| {
            q.queue_settings
                .custom_worker_id_template
                .as_ref()
                .map(|t| {
                    (
                        format!("agentk8sglue.queues.{name}.queueSettings.customWorkerIdTemplate"),
                        t,
                    )
                })
        }));
    for (path, template) in templates {
        if let (_, Some(n)) = super::strip_worker_id_parts(template)
            && n >= parts
        {
            return Err(FieldError::new(
                path,
                format!(
                    "{{worker_id_parts[{n}]}} but the worker id {worker_id:?} has {parts} part(s) (split by ':')"
                ),
            ));
        }
    }
    Ok(())
}

/// The path a `fileMounts` entry's file appears at: `folderPath/name`.
pub fn file_mount_path(m: &super::FileMount) -> String {
    format!("{}/{}", m.folder_path.trim_end_matches('/'), m.name)
}

impl PodTemplate {
    /// Checks of the fields this module owns: `fileMounts` and `${CLEARML_…}` string templates in
    /// labels, annotations and env values (called by `PodTemplate::validate`).
    pub(crate) fn validate_chart_fields(&self, path: &str) -> Result<(), FieldError> {
        for (i, m) in self.file_mounts.iter().flatten().enumerate() {
            let at = format!("{path}.fileMounts[{i}]");
            if m.name.is_empty()
                || m.name == "."
                || m.name == ".."
                || m.name.len() > 253
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(FieldError::new(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a file name this agent can mount (letters, digits, '-', '_' and '.', at most 253)",
                        m.name
                    ),
                ));
            }
            if !m.folder_path.starts_with('/') {
                return Err(FieldError::new(
                    format!("{at}.folderPath"),
                    format!("{:?} must be an absolute path", m.folder_path),
                ));
            }
            if file_mount_path(m).starts_with(&format!("{CLEARML_CONF_DIR}/")) {
                return Err(FieldError::new(
                    format!("{at}.folderPath"),
                    format!(
                        "{CLEARML_CONF_DIR} is where task pods get clearml.conf; use another folder"
                    ),
                ));
            }
        }
        unique_by(path, "fileMounts", self.file_mounts.as_deref(), |m| {
            m.name.clone()
        })?;
        for field in ["volumeMounts", "extraVolumeMounts"] {
            let list = if field == "volumeMounts" {
                &self.volume_mounts
            } else {
                &self.extra_volume_mounts
            };
            if let Some(i) = list.iter().flatten().position(|m| {
                let p = m.mount_path.trim_end_matches('/');
                p == CLEARML_CONF_DIR || p.starts_with(&format!("{CLEARML_CONF_DIR}/"))
            }) {
                return Err(FieldError::new(
                    format!("{path}.{field}[{i}].mountPath"),
                    format!(
                        "{CLEARML_CONF_DIR} is where task pods get clearml.conf; use another path"
                    ),
                ));
            }
        }
        for field in ["volumes", "extraVolumes"] {
            let list = if field == "volumes" {
                &self.volumes
            } else {
                &self.extra_volumes
            };
            if let Some(i) = list
                .iter()
                .flatten()
                .position(|v| v.name == CLEARML_CONF_VOLUME || v.name == FILE_MOUNTS_VOLUME)
            {
                return Err(FieldError::new(
                    format!("{path}.{field}[{i}].name"),
                    format!(
                        "the volume names {CLEARML_CONF_VOLUME} and {FILE_MOUNTS_VOLUME} are the agent's"
                    ),
                ));
            }
        }
        for (field, map) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            for (key, value) in map.iter().flatten() {
                string_templates::check(value)
                    .map_err(|m| FieldError::new(format!("{path}.{field}.{key}"), m))?;
            }
        }
        for (i, env) in self.env.iter().flatten().enumerate() {
            if let Some(v) = &env.value {
                string_templates::check(v)
                    .map_err(|m| FieldError::new(format!("{path}.env[{i}].value"), m))?;
            }
        }
        if let Some(at) = template_elsewhere(self, path) {
            return Err(FieldError::new(
                at,
                "${CLEARML_…} string templates are expanded only in labels, annotations and env values; this one would reach the pod literally",
            ));
        }
        Ok(())
    }
}

/// The first field of `t` outside labels, annotations and env values that holds a
/// `${CLEARML_…}` template (the pod would get it literally).
fn template_elsewhere(t: &PodTemplate, path: &str) -> Option<String> {
    fn walk(v: &serde_json::Value, at: String) -> Option<String> {
        match v {
            serde_json::Value::String(s) if is_templated(s) => Some(at),
            serde_json::Value::Object(m) => m
                .iter()
                .find_map(|(k, child)| walk(child, format!("{at}.{k}"))),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, child)| walk(child, format!("{at}[{i}]"))),
            _ => None,
        }
    }
    let serde_json::Value::Object(doc) = serde_json::to_value(t).ok()? else {
        return None;
    };
    doc.iter().find_map(|(field, v)| match (field.as_str(), v) {
        ("labels" | "annotations", _) => None,
        ("env", serde_json::Value::Array(items)) => {
            items.iter().enumerate().find_map(|(i, e)| match e {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(k, _)| k.as_str() != "value")
                    .find_map(|(k, child)| walk(child, format!("{path}.env[{i}].{k}"))),
                _ => None,
            })
        }
        _ => walk(v, format!("{path}.{field}")),
    })
}

/// A `fileMounts` file that lands where a volume mount of the same (merged) template is.
pub fn file_mount_clash(t: &PodTemplate) -> Option<(usize, String)> {
    let mounts: Vec<&str> = t
        .volume_mounts
        .iter()
        .flatten()
        .chain(t.extra_volume_mounts.iter().flatten())
        .map(|m| m.mount_path.trim_end_matches('/'))
        .collect();
    t.file_mounts
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, f)| mounts.contains(&file_mount_path(f).as_str()))
        .map(|(i, f)| {
            (
                i,
                format!(
                    "file {} is also a volumeMount's mountPath",
                    file_mount_path(f)
                ),
            )
        })
}

/// True for a label value that has a `${CLEARML_…}` template (checked after expansion instead).
pub fn is_templated(value: &str) -> bool {
    value.contains(string_templates::PREFIX)
}

/// Checks a label value, unless it is templated (expanded and sanitised per task).
pub(crate) fn check_label_value(value: &str) -> Result<(), String> {
    if is_templated(value) {
        Ok(())
    } else {
        validate::label_value(value)
    }
}

#[cfg(test)]
mod tests {
    use crate::{config::AgentConfig, values::Values};

    fn doc(extra: &str) -> String {
        if extra.contains("  queues:") {
            format!("agentk8sglue:\n{extra}")
        } else {
            format!("agentk8sglue:\n{extra}  queues:\n    qqq: {{}}\n")
        }
    }

    /// Two names of one setting that disagree, and other bad chart keys: refused naming the key
    /// (and the other one).
    #[test]
    fn conflicts_and_bad_chart_keys_are_refused_naming_both_keys() {
        let cases = [
            (
                "  pollIntervalSeconds: 1\n  queuePollFrequencySeconds: 5\n",
                "agentk8sglue.queuePollFrequencySeconds",
                "agentk8sglue.pollIntervalSeconds",
            ),
            (
                "  workerId: a\n  workerIdOverride: b\n",
                "agentk8sglue.workerIdOverride",
                "agentk8sglue.workerId",
            ),
            (
                "  dashboardReportMaxGpu: 4\n  orchestrationDashboard:\n    gpu:\n      reportMax: 8\n",
                "agentk8sglue.orchestrationDashboard.gpu.reportMax",
                "agentk8sglue.dashboardReportMaxGpu",
            ),
            (
                "  dashboardReportMaxGpu: 4\n  orchestrationDashboard:\n    reportType: disabled\n",
                "agentk8sglue.orchestrationDashboard.reportType",
                "agentk8sglue.dashboardReportMaxGpu",
            ),
            (
                "  multiNode:\n    enabled: false\n  queues:\n    mn:\n      queueSettings:\n        multiNode: [2]\n",
                "agentk8sglue.queues.mn.queueSettings.multiNode",
                "agentk8sglue.multiNode.enabled",
            ),
            (
                "  queuePollFrequencySeconds: 0\n",
                "agentk8sglue.queuePollFrequencySeconds",
                "greater than 0",
            ),
            (
                "  statusReportFrequencySeconds: -3\n",
                "agentk8sglue.statusReportFrequencySeconds",
                "greater than 0",
            ),
            (
                "  taskWorkerIdOverride: \"k8s:{taskid}\"\n",
                "agentk8sglue.taskWorkerIdOverride",
                "unknown placeholder {taskid}",
            ),
            (
                "  orchestrationDashboard:\n    reportType: sometimes\n",
                "agentk8sglue.orchestrationDashboard.reportType",
                "disabled, global or aggregate",
            ),
            (
                "  basePodTemplate:\n    fileMounts:\n      - name: a/b\n        folderPath: /x\n        fileContent: y\n",
                "agentk8sglue.basePodTemplate.fileMounts[0].name",
                "file name",
            ),
            (
                "  basePodTemplate:\n    fileMounts:\n      - name: a\n        folderPath: relative\n        fileContent: y\n",
                "agentk8sglue.basePodTemplate.fileMounts[0].folderPath",
                "absolute",
            ),
            (
                "  basePodTemplate:\n    fileMounts:\n      - name: a\n        folderPath: /x\n      - name: a\n        folderPath: /y\n",
                "agentk8sglue.basePodTemplate.fileMounts[1]",
                "duplicate",
            ),
            (
                "  basePodTemplate:\n    fileMounts:\n      - name: clearml.conf\n        folderPath: /etc/clearml-agent\n",
                "agentk8sglue.basePodTemplate.fileMounts[0].folderPath",
                "clearml.conf",
            ),
            (
                "  basePodTemplate:\n    volumes:\n      - name: data\n        emptyDir: {}\n    volumeMounts:\n      - name: data\n        mountPath: /data/f\n    fileMounts:\n      - name: f\n        folderPath: /data\n",
                "agentk8sglue.basePodTemplate.fileMounts[0]",
                "also a volumeMount",
            ),
            (
                "  basePodTemplate:\n    labels:\n      who: \"${CLEARML_USER.name}\"\n",
                "agentk8sglue.basePodTemplate.labels.who",
                "not supported",
            ),
            (
                "  basePodTemplate:\n    env:\n      - name: K\n        value: \"${CLEARML_USER_VAULTS.s.k:dflt}\"\n",
                "agentk8sglue.basePodTemplate.env[0].value",
                "not supported",
            ),
            (
                "  basePodTemplate:\n    nodeSelector:\n      pool: \"${CLEARML_QUEUE_NAME}\"\n",
                "agentk8sglue.basePodTemplate.nodeSelector.pool",
                "only in labels, annotations and env values",
            ),
            (
                "  basePodTemplate:\n    fileMounts:\n      - name: f\n        folderPath: /x\n        fileContent: \"${CLEARML_TASK.id}\"\n",
                "agentk8sglue.basePodTemplate.fileMounts[0].fileContent",
                "only in labels, annotations and env values",
            ),
            (
                "  queues:\n    rrr:\n      templateOverrides:\n        annotations:\n          a: \"${CLEARML_TASK.name|upper}\"\n",
                "agentk8sglue.queues.rrr.templateOverrides.annotations.a",
                "unknown string template operator",
            ),
        ];
        for (extra, path, word) in cases {
            let text = doc(extra);
            let e = Values::from_yaml(&text).expect_err(&text);
            assert_eq!(e.path, path, "{text}: {e}");
            assert!(e.message.contains(word), "{text}: {e}");
        }
        // a worker_id_parts index the worker id lacks
        let e = Values::from_yaml(&doc(
            "  workerId: \"k8s:one\"\n  taskWorkerIdOverride: \"{worker_id_parts[2]}:{task_id}\"\n",
        ))
        .expect_err("part 2 of k8s:one");
        assert_eq!(e.path, "agentk8sglue.taskWorkerIdOverride");
        assert!(e.message.contains("has 2 part(s)"), "{e}");
    }

    #[test]
    fn agreeing_names_and_specific_ttls_are_accepted() {
        let v = Values::from_yaml(&doc(
            "  pollIntervalSeconds: 2\n  queuePollFrequencySeconds: 2\n  workerId: w\n  workerIdOverride: w\n  dashboardReportMaxGpu: 4\n  orchestrationDashboard:\n    gpu:\n      reportMax: 4\n  completedPodDeletionDelayMinutes: 5\n  failedPodTtlSeconds: 7\n",
        ))
        .expect("agreeing names are fine");
        let c = AgentConfig::from_values(&v, "ml").expect("config");
        assert_eq!(c.poll_interval.as_secs(), 2);
        assert_eq!(c.worker_id, "w");
        assert_eq!(c.report_max_gpus, Some(4));
        assert_eq!(c.timeouts.succeeded_ttl.as_secs(), 300, "from the delay");
        assert_eq!(c.timeouts.failed_ttl.as_secs(), 7, "the specific key wins");
        let off = Values::from_yaml(&doc(
            "  orchestrationDashboard:\n    reportType: disabled\n    gpu:\n      reportMax: 4\n",
        ))
        .expect("valid");
        assert_eq!(
            off.agentk8sglue.report_max_gpus(),
            None,
            "reportType: disabled"
        );
        let mn = Values::from_yaml(&doc("  multiNode:\n    enabled: false\n")).expect("valid");
        assert!(!AgentConfig::from_values(&mn, "ml").expect("cfg").multi_node);
    }

    /// One notice per inert key that is set (and none for keys set to their inert value, nor for
    /// `taskAsJob`, which Job mode honours).
    #[test]
    fn notices_name_each_inert_key_once() {
        let v = Values::from_yaml(
            "customCertificates:\n  overrideCaCertificatesCrt:\n  extraCerts: []\nagentk8sglue:\n  monitoredResources:\n    maxResources: 3\n  serviceAccountClusterAccess: true\n  useOwnerToken: true\n  taskAsJob: true\n  appsQueue:\n    enabled: true\n  serverTasks:\n    enabled: true\n  orchestrationDashboard:\n    reportType: global\n",
        )
        .expect("parses");
        let got: Vec<String> = v.notices().into_iter().map(|n| n.path).collect();
        assert_eq!(
            got,
            [
                "agentk8sglue.orchestrationDashboard",
                "agentk8sglue.monitoredResources",
                "agentk8sglue.serviceAccountClusterAccess",
                "agentk8sglue.useOwnerToken",
                "agentk8sglue.appsQueue",
                "agentk8sglue.serverTasks",
                "customCertificates",
            ]
        );
        for n in v.notices() {
            assert!(n.message.len() > 40, "{n}: says what and why");
        }
        let quiet = Values::from_yaml(
            "agentk8sglue:\n  taskAsJob: false\n  useOwnerToken: false\n  serviceAccountClusterAccess: false\n  appsQueue:\n    enabled: false\n  orchestrationDashboard:\n    gpu:\n      reportMax: 2\n",
        )
        .expect("parses");
        assert!(quiet.notices().is_empty(), "{:?}", quiet.notices());
        // kept in the ConfigMap values, so the agent's status can show them
        assert_eq!(v.without_secrets().notices().len(), 7);
    }
}
