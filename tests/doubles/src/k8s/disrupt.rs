//! Disruptions as Kubernetes carries them out, for tests of what an agent does when the cluster
//! takes a pod away: the `DisruptionTarget` condition first (kube-scheduler's preemption, the
//! eviction API, the kubelet), then the pod's end: a graceful deletion (preemption, eviction API;
//! the pod stays `Terminating` until the kubelet confirms, see `set_deletion_delay`) or, for the
//! kubelet's node-pressure eviction, phase `Failed` with reason `Evicted` (the pod is kept).
//! Messages are worded as `pkg/scheduler/framework/preemption` and
//! `pkg/registry/core/pod/storage/eviction.go` word them.

use serde_json::{Value, json};

use super::{
    KubeDouble,
    kubelet::{ContainerState, condition, kubelet_status},
    status::ApiError,
};

impl KubeDouble {
    /// Adds (or replaces) the `DisruptionTarget=True` condition with `reason` and `message`, as
    /// the component about to disrupt the pod does through `pods/status`.
    pub fn set_disruption_target(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        self.shared
            .kubelet_write(namespace, name, |pod| {
                let cond = condition("DisruptionTarget", true, Some(reason), Some(message));
                if let Value::Object(m) = pod {
                    let status = m.entry("status".to_string()).or_insert_with(|| json!({}));
                    if let Value::Object(s) = status {
                        let conditions = s
                            .entry("conditions".to_string())
                            .or_insert_with(|| json!([]));
                        if let Value::Array(list) = conditions {
                            list.retain(|c| {
                                c.get("type").and_then(Value::as_str) != Some("DisruptionTarget")
                            });
                            list.push(cond);
                        }
                    }
                }
            })
            .map(drop)
    }

    /// kube-scheduler preempts the pod for a higher-priority one: `DisruptionTarget`
    /// (`PreemptionByScheduler`), then a graceful deletion. True if the pod is gone already.
    pub fn preempt_pod(&self, namespace: &str, name: &str) -> Result<bool, ApiError> {
        self.set_disruption_target(
            namespace,
            name,
            "PreemptionByScheduler",
            "default-scheduler: preempting to accommodate a higher priority pod",
        )?;
        self.delete("pods", namespace, name)
    }

    /// The eviction API (`pods/eviction`, e.g. `kubectl drain`) evicts the pod:
    /// `DisruptionTarget` (`EvictionByEvictionAPI`), then a graceful deletion.
    pub fn evict_pod(&self, namespace: &str, name: &str) -> Result<bool, ApiError> {
        self.set_disruption_target(
            namespace,
            name,
            "EvictionByEvictionAPI",
            "Eviction API: evicting",
        )?;
        self.delete("pods", namespace, name)
    }

    /// The kubelet evicts the pod under node pressure: its containers are killed, the pod ends
    /// `Failed` with reason `Evicted` and `DisruptionTarget` (`TerminationByKubelet`); the pod
    /// object stays.
    pub fn kubelet_evict_pod(
        &self,
        namespace: &str,
        name: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        // one status write, as the kubelet's status manager makes it
        let killed = ContainerState::Terminated {
            exit_code: 137,
            reason: "Error".into(),
        };
        self.shared
            .kubelet_write(namespace, name, |pod| {
                let mut status = kubelet_status(pod, &killed);
                if let Value::Object(s) = &mut status {
                    s.insert("phase".into(), json!("Failed"));
                    s.insert("reason".into(), json!("Evicted"));
                    s.insert("message".into(), json!(message));
                    let conditions = s
                        .entry("conditions".to_string())
                        .or_insert_with(|| json!([]));
                    if let Value::Array(list) = conditions {
                        list.push(condition(
                            "DisruptionTarget",
                            true,
                            Some("TerminationByKubelet"),
                            Some(message),
                        ));
                    }
                }
                if let Value::Object(m) = pod {
                    m.insert("status".into(), status);
                }
            })
            .map(drop)
    }
}
