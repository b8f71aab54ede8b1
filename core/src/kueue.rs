//! Kueue's contract for plain pods (kubernetes-sigs/kueue, `pkg/controller/jobs/pod`): the label
//! that names the LocalQueue, the pod-group label and total-count annotation that make a
//! multi-node task's ranks one workload admitted whole, and the scheduling gate Kueue's webhook
//! puts on every pod it manages until the workload is admitted. Pure: the agent adds these to
//! rendered pods and reads the gate back from the pods it watches.

/// Label naming the LocalQueue a pod is submitted to.
pub const LABEL_QUEUE_NAME: &str = "kueue.x-k8s.io/queue-name";
/// Label naming a group of pods admitted as one workload.
pub const LABEL_POD_GROUP_NAME: &str = "kueue.x-k8s.io/pod-group-name";
/// Annotation: how many pods the group has (Kueue admits the group once that many exist).
pub const ANNOTATION_POD_GROUP_TOTAL_COUNT: &str = "kueue.x-k8s.io/pod-group-total-count";
/// The scheduling gate Kueue's webhook adds to the pods it manages and removes on admission.
pub const ADMISSION_GATE: &str = "kueue.x-k8s.io/admission";

/// A LocalQueue name as the pods' queue-name label carries it: a Kubernetes object name that is
/// also a label value (a DNS-1123 label).
pub fn check_local_queue(name: &str) -> Result<(), String> {
    crate::validate::dns_label(name)
}

/// The pod-group name of a multi-node task's ranks: the task's pod-name stem
/// (`clearml-id-<task>`), unique per task and a valid label value.
pub fn pod_group_name(task_pod_stem: &str) -> String {
    crate::validate::to_label_value(task_pod_stem)
}

/// What a waiting pod of a Kueue queue is told.
pub fn waiting_message(local_queue: &str) -> String {
    format!("waiting for Kueue admission in LocalQueue {local_queue}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_queue_names() {
        for (name, ok) in [
            ("team-a", true),
            ("a", true),
            ("Team", false),
            ("", false),
            ("a.b", false),
            (&"x".repeat(64), false),
        ] {
            assert_eq!(check_local_queue(name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn group_names_are_label_values() {
        let name = pod_group_name("clearml-id-0123456789abcdef0123456789abcdef");
        assert!(crate::validate::label_value(&name).is_ok(), "{name}");
        assert_eq!(name, "clearml-id-0123456789abcdef0123456789abcdef");
    }
}
