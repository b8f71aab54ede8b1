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

/// Annotation that makes a failed pod end its group's workload (no replacement pod expected:
/// the agent fails or retries the whole task itself).
pub const ANNOTATION_RETRIABLE_IN_GROUP: &str = "kueue.x-k8s.io/retriable-in-group";

/// The pod-group name of one launch of a multi-node task: the task's pod-name stem
/// (`clearml-id-<task>`) and a hash of the launch id, so a task launched again (a retry) is a new
/// group, never a late member of its previous one. At most 63 characters: a valid label value.
pub fn pod_group_name(task_pod_stem: &str, launch_id: &str) -> String {
    // FNV-1a, 32 bits: stable across builds and platforms
    let hash = launch_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut stem = crate::validate::to_label_value(task_pod_stem);
    stem.truncate(63 - 9);
    format!("{}-{hash:08x}", stem.trim_end_matches(['-', '_', '.']))
}

/// Submits a launch's pods to Kueue's LocalQueue `local_queue`: the queue-name label on each,
/// and for several pods (a multi-node task) the pod-group label, the group's total count and
/// `retriable-in-group: "false"`, so Kueue admits the ranks together as one workload.
pub fn submit(
    pods: &mut [k8s_openapi::api::core::v1::Pod],
    local_queue: &str,
    task_pod_stem: &str,
    launch_id: &str,
) {
    let total = pods.len();
    let group = (total > 1).then(|| pod_group_name(task_pod_stem, launch_id));
    for pod in pods {
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(LABEL_QUEUE_NAME.into(), local_queue.into());
        if let Some(group) = &group {
            labels.insert(LABEL_POD_GROUP_NAME.into(), group.clone());
            let annotations = pod
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            annotations.insert(ANNOTATION_POD_GROUP_TOTAL_COUNT.into(), total.to_string());
            annotations.insert(ANNOTATION_RETRIABLE_IN_GROUP.into(), "false".into());
        }
    }
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
    fn group_names_are_label_values_one_per_launch() {
        let stem = "clearml-id-0123456789abcdef0123456789abcdef";
        let a = pod_group_name(stem, "2026-01-01T00:00:00.000+00:00");
        let b = pod_group_name(stem, "2026-01-01T00:05:00.000+00:00");
        for name in [&a, &b] {
            assert!(crate::validate::label_value(name).is_ok(), "{name}");
            assert!(name.starts_with(stem), "{name}");
        }
        assert_ne!(a, b, "a new launch is a new group");
        assert_eq!(a, pod_group_name(stem, "2026-01-01T00:00:00.000+00:00"));
        let long = pod_group_name(&"x".repeat(80), "l");
        assert!(
            long.len() <= 63 && crate::validate::label_value(&long).is_ok(),
            "{long}"
        );
    }

    #[test]
    fn submitted_pods_carry_kueue_s_labels() {
        use k8s_openapi::api::core::v1::Pod;
        let mut one = vec![Pod::default()];
        submit(&mut one, "team-a", "clearml-id-t", "l1");
        let labels = one[0].metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(LABEL_QUEUE_NAME).map(String::as_str),
            Some("team-a")
        );
        assert!(
            !labels.contains_key(LABEL_POD_GROUP_NAME),
            "one pod: no group"
        );
        assert!(one[0].metadata.annotations.is_none());
        let mut ranks = vec![Pod::default(), Pod::default(), Pod::default()];
        submit(&mut ranks, "team-a", "clearml-id-t", "l1");
        let groups: std::collections::BTreeSet<&String> = ranks
            .iter()
            .map(|p| &p.metadata.labels.as_ref().expect("labels")[LABEL_POD_GROUP_NAME])
            .collect();
        assert_eq!(groups.len(), 1, "one group for every rank");
        for p in &ranks {
            let a = p.metadata.annotations.as_ref().expect("annotations");
            assert_eq!(a[ANNOTATION_POD_GROUP_TOTAL_COUNT], "3");
            assert_eq!(a[ANNOTATION_RETRIABLE_IN_GROUP], "false");
        }
    }
}
