//! How a multi-node task starts whole: the choice between Kueue, the Kubernetes PodGroup API
//! (the scheduler binds every rank or none) and the agent's own gang timeout, and the PodGroup
//! contract (`scheduling.k8s.io` `v1alpha2` in Kubernetes 1.36, `v1beta1` from 1.37: a PodGroup
//! with `spec.schedulingPolicy.gang.minCount`, each rank joined by
//! `spec.schedulingGroup.podGroupName`). Pure: the agent discovers which API the cluster
//! serves and creates what this renders.

use k8s_openapi::api::core::v1::{Pod, PodSchedulingGroup};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};

use crate::values::{DEFAULT_GANG_TIMEOUT_SECONDS, GangScheduling, QueueSettings};

/// The API group of the PodGroup API.
pub const GROUP: &str = "scheduling.k8s.io";
/// The PodGroup API versions the agent speaks, newest first (the spec fields it writes are the
/// same in both).
pub const VERSIONS: &[&str] = &["v1beta1", "v1alpha2"];
/// The PodGroup resource (plural).
pub const PLURAL: &str = "podgroups";
/// The PodGroup kind.
pub const KIND: &str = "PodGroup";

/// Which path a multi-node task of a queue takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Kueue admits the ranks together (its pod-group label and count): the agent waits.
    Kueue { local_queue: String },
    /// One PodGroup per launch (`api_version`, e.g. `scheduling.k8s.io/v1beta1`): the
    /// scheduler binds every rank or none. The agent's gang timeout stays as a backstop that only
    /// acts if some ranks are bound while others wait (a scheduler without the GangScheduling
    /// plugin).
    PodGroup { api_version: String, timeout_s: u64 },
    /// The agent releases every rank when not all are scheduled within the timeout.
    Agent { timeout_s: u64 },
}

impl Path {
    /// As `describe task` and `status` show it.
    pub fn describe(&self) -> String {
        match self {
            Path::Kueue { local_queue } => format!("kueue (LocalQueue {local_queue})"),
            Path::PodGroup { api_version, .. } => format!("native (PodGroup {api_version})"),
            Path::Agent { timeout_s } => format!("agent (gangTimeoutSeconds {timeout_s})"),
        }
    }
}

/// The path for a queue's multi-node tasks, given the PodGroup API the cluster serves
/// (`served`: its `group/version`, `None` if none), or why there is none: the queue asks for
/// `podGroup` and the cluster does not serve it.
pub fn choose(settings: &QueueSettings, served: Option<&str>) -> Result<Path, String> {
    if let Some(kueue) = &settings.kueue {
        return Ok(Path::Kueue {
            local_queue: kueue.local_queue.clone(),
        });
    }
    let timeout_s = settings
        .gang_timeout_seconds
        .unwrap_or(DEFAULT_GANG_TIMEOUT_SECONDS);
    match (settings.gang_scheduling.unwrap_or_default(), served) {
        (GangScheduling::Agent, _) | (GangScheduling::Auto, None) => Ok(Path::Agent { timeout_s }),
        (GangScheduling::Auto | GangScheduling::PodGroup, Some(v)) => Ok(Path::PodGroup {
            api_version: v.to_string(),
            timeout_s,
        }),
        (GangScheduling::PodGroup, None) => Err(unserved_message()),
    }
}

/// Why a `gangScheduling: podGroup` queue cannot launch a multi-node task here.
pub fn unserved_message() -> String {
    format!(
        "queueSettings.gangScheduling is podGroup, but the Kubernetes API server serves no {GROUP} PodGroup API ({}); it needs Kubernetes 1.36 or later with the GenericWorkload feature gate (and the scheduler's GangScheduling plugin); set gangScheduling to auto or agent to use the agent's gang timeout",
        VERSIONS.join(" or ")
    )
}

/// Puts a launch's pods in PodGroup `group`.
pub fn join(pods: &mut [Pod], group: &str) {
    for pod in pods {
        pod.spec
            .get_or_insert_with(Default::default)
            .scheduling_group = Some(PodSchedulingGroup {
            pod_group_name: Some(group.to_string()),
        });
    }
}

/// The PodGroup of one launch: gang policy with `minCount` = `ranks`, owned by `owners` (the
/// ranks, or the Job), so the cluster's garbage collector deletes it once they are gone.
pub fn pod_group(
    api_version: &str,
    namespace: &str,
    name: &str,
    ranks: usize,
    labels: &std::collections::BTreeMap<String, String>,
    owners: Vec<OwnerReference>,
) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": owners,
        },
        "spec": {
            "schedulingPolicy": {"gang": {"minCount": ranks}},
        },
    })
}

/// An owner reference to a pod or Job the agent created (not a controller reference: the
/// PodGroup is the scheduler's object, not managed by them).
pub fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The PodGroup a pod is in, if any.
pub fn group_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .scheduling_group
        .as_ref()?
        .pod_group_name
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::KueueSettings;

    #[test]
    fn the_path_per_queue_and_cluster() {
        let kueue = Some(KueueSettings {
            local_queue: "team-a".into(),
        });
        let v1beta1 = Some("scheduling.k8s.io/v1beta1");
        /// What, `gangScheduling`, `kueue`, the served API, the path (`Err`: none, with why).
        type Case<'a> = (
            &'a str,
            Option<GangScheduling>,
            Option<KueueSettings>,
            Option<&'a str>,
            Result<&'a str, ()>,
        );
        let cases: [Case<'_>; 8] = [
            (
                "default, served",
                None,
                None,
                v1beta1,
                Ok("native (PodGroup scheduling.k8s.io/v1beta1)"),
            ),
            (
                "default, not served",
                None,
                None,
                None,
                Ok("agent (gangTimeoutSeconds 120)"),
            ),
            (
                "auto, 1.36",
                Some(GangScheduling::Auto),
                None,
                Some("scheduling.k8s.io/v1alpha2"),
                Ok("native (PodGroup scheduling.k8s.io/v1alpha2)"),
            ),
            (
                "agent wins over served",
                Some(GangScheduling::Agent),
                None,
                v1beta1,
                Ok("agent (gangTimeoutSeconds 120)"),
            ),
            (
                "podGroup, served",
                Some(GangScheduling::PodGroup),
                None,
                v1beta1,
                Ok("native (PodGroup scheduling.k8s.io/v1beta1)"),
            ),
            (
                "podGroup, not served",
                Some(GangScheduling::PodGroup),
                None,
                None,
                Err(()),
            ),
            (
                "kueue wins",
                Some(GangScheduling::PodGroup),
                kueue.clone(),
                v1beta1,
                Ok("kueue (LocalQueue team-a)"),
            ),
            (
                "kueue, not served",
                None,
                kueue,
                None,
                Ok("kueue (LocalQueue team-a)"),
            ),
        ];
        for (what, gang_scheduling, kueue, served, want) in cases {
            let settings = QueueSettings {
                gang_scheduling,
                kueue,
                ..Default::default()
            };
            let got = choose(&settings, served).map(|p| p.describe());
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(w), "{what}"),
                Err(()) => assert!(
                    got.as_ref().is_err_and(
                        |e| e.contains("queueSettings.gangScheduling") && e.contains("1.36")
                    ),
                    "{what}: {got:?}"
                ),
            }
        }
        let timed = QueueSettings {
            gang_timeout_seconds: Some(30),
            ..Default::default()
        };
        assert_eq!(
            choose(&timed, None),
            Ok(Path::Agent { timeout_s: 30 }),
            "the queue's timeout"
        );
    }

    #[test]
    fn ranks_join_one_pod_group_owned_by_them() {
        let mut pods = vec![Pod::default(), Pod::default()];
        join(&mut pods, "clearml-id-abc-0011aabb");
        assert!(
            pods.iter()
                .all(|p| group_of(p) == Some("clearml-id-abc-0011aabb"))
        );
        let json = serde_json::to_value(&pods[0]).expect("pod");
        assert_eq!(
            json.pointer("/spec/schedulingGroup/podGroupName"),
            Some(&json!("clearml-id-abc-0011aabb")),
            "the field the apiserver reads"
        );
        let labels = [("clearml-task-id".to_string(), "abc".to_string())].into();
        let group = pod_group(
            "scheduling.k8s.io/v1alpha2",
            "ml",
            "clearml-id-abc-0011aabb",
            3,
            &labels,
            vec![owner("v1", "Pod", "clearml-id-abc-0", "u0")],
        );
        assert_eq!(
            group,
            json!({
                "apiVersion": "scheduling.k8s.io/v1alpha2",
                "kind": "PodGroup",
                "metadata": {
                    "name": "clearml-id-abc-0011aabb",
                    "namespace": "ml",
                    "labels": {"clearml-task-id": "abc"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "clearml-id-abc-0", "uid": "u0"}],
                },
                "spec": {"schedulingPolicy": {"gang": {"minCount": 3}}},
            })
        );
    }
}
