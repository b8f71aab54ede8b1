//! Kueue's pod integration as far as the pods show it (kubernetes-sigs/kueue,
//! `pkg/controller/jobs/pod`): its mutating webhook adds the `kueue.x-k8s.io/admission`
//! scheduling gate to every new pod carrying the `kueue.x-k8s.io/queue-name` label, and admission
//! removes it; the scheduler leaves a gated pod alone (`PodScheduled=False`, `SchedulingGated`).
//! Kueue's quotas, fair sharing, preemption and its pod finalizer are not reproduced: a test
//! admits pods itself with [`KubeDouble::admit_kueue_pod`].

use serde_json::{Value, json};

use super::{KubeDouble, kubelet::condition, status::ApiError};

/// Kueue's queue-name label.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's admission scheduling gate.
pub const KUEUE_ADMISSION_GATE: &str = "kueue.x-k8s.io/admission";

/// The webhook's mutation of a pod being created.
pub(crate) fn webhook(pod: &mut Value) {
    let queued = pod
        .pointer("/metadata/labels")
        .and_then(|l| l.get(KUEUE_QUEUE_LABEL))
        .and_then(Value::as_str)
        .is_some_and(|q| !q.is_empty());
    if !queued {
        return;
    }
    if let Some(Value::Object(spec)) = pod.get_mut("spec") {
        let gates = spec
            .entry("schedulingGates".to_string())
            .or_insert_with(|| json!([]));
        if let Value::Array(list) = gates
            && !list
                .iter()
                .any(|g| g.get("name").and_then(Value::as_str) == Some(KUEUE_ADMISSION_GATE))
        {
            list.push(json!({"name": KUEUE_ADMISSION_GATE}));
        }
    }
}

/// Whether a pod has scheduling gates.
pub fn is_gated(pod: &Value) -> bool {
    pod.pointer("/spec/schedulingGates")
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty())
}

impl KubeDouble {
    /// Installs (or removes) Kueue's pod webhook: new pods with the queue-name label get the
    /// admission gate.
    pub fn set_kueue_webhook(&self, on: bool) {
        self.shared.settings.lock().kueue_webhook = on;
    }

    /// Kueue admits the pod: its admission gate is removed.
    pub fn admit_kueue_pod(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        self.shared
            .kubelet_write(namespace, name, |pod| {
                if let Some(Value::Object(spec)) = pod.get_mut("spec") {
                    if let Some(Value::Array(list)) = spec.get_mut("schedulingGates") {
                        list.retain(|g| {
                            g.get("name").and_then(Value::as_str) != Some(KUEUE_ADMISSION_GATE)
                        });
                    }
                    if spec
                        .get("schedulingGates")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty)
                    {
                        spec.remove("schedulingGates");
                    }
                }
            })
            .map(drop)
    }

    /// The scheduler's verdict on a gated pod: `PodScheduled=False`, reason `SchedulingGated`.
    pub fn set_pod_scheduling_gated(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        self.shared
            .kubelet_write(namespace, name, |pod| {
                let cond = condition(
                    "PodScheduled",
                    false,
                    Some("SchedulingGated"),
                    Some("Scheduling is blocked due to non-empty scheduling gates"),
                );
                if let Value::Object(m) = pod {
                    let status = m.entry("status".to_string()).or_insert_with(|| json!({}));
                    if let Value::Object(s) = status {
                        s.insert("phase".into(), json!("Pending"));
                        s.insert("conditions".into(), json!([cond]));
                    }
                }
            })
            .map(drop)
    }
}
