//! Pure views for the control API: what `kubectl clearml status`, `tasks` and `describe task`
//! show, computed from the pod cache, the dispatcher's snapshot and the config. No I/O.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use clearml_agent_proto::v1 as pb;
use k8s_openapi::{
    api::core::v1::{Event, Pod},
    jiff::Timestamp,
};

use clearml_agent_core::{
    config::AgentConfig,
    contract::{
        ANNOTATION_QUEUE_NAME, ANNOTATION_TASK_NAME, GPU_RESOURCE, LABEL_QUEUE_ID, LABEL_RANK,
        LABEL_TASK_ID,
    },
    gang,
};

use crate::{
    dispatch::Snapshot,
    k8s,
    lifecycle::{self, PodState},
};

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    pod.metadata.labels.as_ref()?.get(key)
}

/// GPUs a pod asks for (its containers' `nvidia.com/gpu` limits).
pub fn pod_gpus(pod: &Pod) -> u32 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get(GPU_RESOURCE))
        .filter_map(|q| q.0.parse::<u32>().ok())
        .sum()
}

/// The phase a pod state is shown as.
pub fn phase_name(state: &PodState) -> &'static str {
    match state {
        PodState::Pending { .. } => "Pending",
        PodState::Running => "Running",
        PodState::Succeeded { .. } => "Succeeded",
        PodState::Failed { .. } => "Failed",
        PodState::Terminating => "Terminating",
    }
}

/// Why a pod is not running, or how it ended: `(reason, message, exit code)`.
pub fn pod_reason(state: &PodState) -> (String, String, Option<i32>) {
    match state {
        PodState::Pending {
            waiting: Some((r, m)),
            ..
        } => (r.clone(), m.clone(), None),
        PodState::Pending {
            unschedulable: Some((m, _)),
            ..
        } => ("Unschedulable".into(), m.clone(), None),
        PodState::Pending { .. } => ("Pending".into(), String::new(), None),
        PodState::Failed {
            reason,
            message,
            exit_code,
            ..
        } => (reason.clone(), message.clone(), *exit_code),
        PodState::Succeeded { .. } => ("Completed".into(), String::new(), Some(0)),
        PodState::Running | PodState::Terminating => (String::new(), String::new(), None),
    }
}

/// A protobuf timestamp.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

/// One Kubernetes event as `describe task` shows it: `source` is who reported it (a core/v1
/// event's `source.component`, else the events.k8s.io-style `reportingComponent`:
/// `default-scheduler`, `kubelet`), `object` what it is about.
pub fn event(e: Event) -> pb::Event {
    let last_seen = k8s::event_time(&e).map(timestamp);
    let source = e
        .source
        .and_then(|s| s.component)
        .filter(|c| !c.is_empty())
        .or(e.reporting_component)
        .unwrap_or_default();
    pb::Event {
        last_seen,
        object: e.involved_object.name.unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        message: e.message.unwrap_or_default(),
        r#type: e.type_.unwrap_or_default(),
        count: e.count.unwrap_or(1).max(0) as u32,
        source,
    }
}

/// One pod as `describe task` shows it.
pub fn pod_detail(pod: &Pod) -> pb::PodDetail {
    let state = lifecycle::classify(pod);
    let (reason, message, exit_code) = pod_reason(&state);
    pb::PodDetail {
        name: pod.metadata.name.clone().unwrap_or_default(),
        phase: phase_name(&state).into(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        reason,
        message,
        exit_code,
        rank: pod
            .metadata
            .labels
            .as_ref()
            .and_then(clearml_agent_core::contract::rank_of)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
    }
}

/// A served queue's counts: tasks waiting in ClearML, its pods pending and running, GPUs asked.
pub fn queue_summary(
    name: &str,
    cfg: &AgentConfig,
    snap: &Snapshot,
    pods: &[Arc<Pod>],
) -> pb::QueueSummary {
    let id = snap
        .served
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.id.clone())
        .unwrap_or_default();
    let waiting = snap.waiting.get(&id).map_or(0, Vec::len) as u32;
    let (mut pending, mut running, mut gpus) = (0, 0, 0);
    // multi-node tasks with a rank not scheduled yet (unschedulable or gated)
    let mut gangs_waiting = std::collections::BTreeSet::new();
    for pod in pods {
        if id.is_empty() || label(pod, LABEL_QUEUE_ID) != Some(&id) {
            continue;
        }
        match lifecycle::classify(pod) {
            PodState::Pending {
                waiting,
                unschedulable,
            } => {
                pending += 1;
                // (a rank in a PodGroup waits for the whole group with no condition at first)
                let unscheduled = unschedulable.is_some()
                    || waiting.is_some_and(|(r, _)| r == lifecycle::SCHEDULING_GATED)
                    || (gang::group_of(pod).is_some()
                        && pod.spec.as_ref().is_some_and(|s| s.node_name.is_none()));
                if unscheduled
                    && label(pod, LABEL_RANK).is_some()
                    && let Some(task) = label(pod, LABEL_TASK_ID)
                {
                    gangs_waiting.insert(task.clone());
                }
            }
            PodState::Running => running += 1,
            _ => continue,
        }
        gpus += pod_gpus(pod);
    }
    let gang_waits = gangs_waiting.len() as u32 + snap.gang_held.get(&id).copied().unwrap_or(0);
    pb::QueueSummary {
        name: name.to_string(),
        id,
        waiting,
        pods_pending: pending,
        pods_running: running,
        max_pods: cfg.queues.get(name).and_then(|q| q.settings.max_pods),
        gpus_requested: gpus,
        retries: snap.retries.get(name).copied().unwrap_or(0),
        gang_waits,
        gang: gang_path(cfg, snap.pod_group_api.as_deref(), name, 0),
    }
}

/// How a task of queue `queue` with `ranks` pods starts whole (`describe task`): through Kueue,
/// a PodGroup (`pod_group_api`: the API the cluster serves), the agent's gang timeout, or not a
/// question (one pod).
pub fn gang_path(
    cfg: &AgentConfig,
    pod_group_api: Option<&str>,
    queue: &str,
    ranks: usize,
) -> String {
    let Some(q) = cfg.queues.get(queue) else {
        return String::new();
    };
    if ranks < 2 && q.pods_per_task() < 2 && q.settings.kueue.is_none() {
        return String::new();
    }
    match gang::choose(&q.settings, pod_group_api) {
        Ok(path) => path.describe(),
        Err(why) => format!("none: {why}"),
    }
}

/// Every task the agent knows: those with pods, those waiting in a served queue (with why), and
/// those taken but without a pod yet.
pub fn task_summaries(
    cfg: &AgentConfig,
    snap: &Snapshot,
    by_task: &BTreeMap<String, Vec<Arc<Pod>>>,
) -> Vec<pb::TaskSummary> {
    let mut out: Vec<pb::TaskSummary> = by_task
        .iter()
        .map(|(task, pods)| summarize(task, pods))
        .collect();
    for served in &snap.served {
        let live = by_task
            .values()
            .flatten()
            .filter(|p| label(p, LABEL_QUEUE_ID) == Some(&served.id))
            .filter(|p| !lifecycle::classify(p).is_finished())
            .count();
        let queue = cfg.queues.get(&served.name);
        let limit = queue.and_then(|q| q.settings.max_pods);
        let need = queue.map_or(1, |q| q.pods_per_task());
        for entry in snap.waiting.get(&served.id).into_iter().flatten() {
            let reason = match limit {
                Some(max) if need > max as usize => format!(
                    "waiting in ClearML queue {}: each task needs {need} pods but maxPods is {max}",
                    served.name
                ),
                Some(max) if live + need > max as usize => format!(
                    "waiting in ClearML queue {}: maxPods reached ({live}/{max} pods, a task needs {need})",
                    served.name
                ),
                _ => format!("waiting in ClearML queue {}", served.name),
            };
            out.push(pb::TaskSummary {
                id: entry.task.clone(),
                queue: served.name.clone(),
                phase: "Queued".into(),
                pending_reason: reason,
                created: entry.added.map(timestamp),
                ..Default::default()
            });
        }
    }
    for entry in &snap.pending {
        if !by_task.contains_key(&entry.task) {
            out.push(pb::TaskSummary {
                id: entry.task.clone(),
                phase: "Launching".into(),
                pending_reason: "taken by the agent; its pod is being created".into(),
                created: entry.added.map(timestamp),
                ..Default::default()
            });
        }
    }
    out
}

/// The tasks of `rows` whose name is not known here (no pod carries it): those waiting in a
/// queue or being launched; their names are read from ClearML.
pub fn unnamed(rows: &[pb::TaskSummary]) -> Vec<String> {
    rows.iter()
        .filter(|t| t.name.is_empty() && t.pods.is_empty())
        .map(|t| t.id.clone())
        .collect()
}

/// Fills the names of `rows` that have none from `names` (task id → name, as ClearML has them).
pub fn fill_names(rows: &mut [pb::TaskSummary], names: &HashMap<String, String>) {
    for row in rows.iter_mut().filter(|t| t.name.is_empty()) {
        if let Some(name) = names.get(&row.id) {
            row.name = name.clone();
        }
    }
}

/// A task's summary from its pods (`pods` is not empty).
pub fn summarize(task: &str, pods: &[Arc<Pod>]) -> pb::TaskSummary {
    let states: Vec<PodState> = pods.iter().map(|p| lifecycle::classify(p)).collect();
    let phase = if states.iter().any(|s| matches!(s, PodState::Failed { .. })) {
        "Failed"
    } else if states.iter().any(|s| matches!(s, PodState::Pending { .. })) {
        "Pending"
    } else if states.contains(&PodState::Terminating) {
        "Terminating"
    } else if states
        .iter()
        .all(|s| matches!(s, PodState::Succeeded { .. }))
    {
        "Succeeded"
    } else {
        "Running"
    };
    let pending_reason = states
        .iter()
        .zip(pods)
        .find_map(|(s, p)| match s {
            PodState::Pending { .. } => {
                let (reason, message, _) = pod_reason(s);
                let name = p.metadata.name.clone().unwrap_or_default();
                Some(if message.is_empty() {
                    format!("pod {name}: {reason}")
                } else {
                    format!("pod {name}: {reason}: {message}")
                })
            }
            _ => None,
        })
        .unwrap_or_default();
    let first = pods.first();
    let ann = first.and_then(|p| p.metadata.annotations.as_ref());
    pb::TaskSummary {
        id: task.to_string(),
        name: ann
            .and_then(|a| a.get(ANNOTATION_TASK_NAME))
            .cloned()
            .unwrap_or_default(),
        queue: ann
            .and_then(|a| a.get(ANNOTATION_QUEUE_NAME))
            .cloned()
            .unwrap_or_default(),
        phase: phase.into(),
        pods: pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect(),
        pending_reason,
        created: first
            .and_then(|p| p.metadata.creation_timestamp.as_ref())
            .map(|t| timestamp(t.0)),
    }
}

/// A task's Job as `describe task` shows it (Job mode).
pub fn job_detail(job: &k8s_openapi::api::batch::v1::Job) -> pb::JobDetail {
    let status = job.status.clone().unwrap_or_default();
    let count = |n: Option<i32>| n.unwrap_or(0).max(0) as u32;
    pb::JobDetail {
        name: job.metadata.name.clone().unwrap_or_default(),
        active: count(status.active),
        succeeded: count(status.succeeded),
        failed: count(status.failed),
        conditions: status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| pb::JobCondition {
                r#type: c.type_,
                status: c.status,
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
                since: c.last_transition_time.map(|t| timestamp(t.0)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use clearml_agent_core::values::Values;
    use serde_json::json;

    use super::*;
    use crate::{clearml::Served, dispatch::Entry};

    fn pod(name: &str, task: &str, queue: &str, gpus: u32, status: serde_json::Value) -> Arc<Pod> {
        let pod = json!({
            "metadata": {
                "name": name,
                "labels": {"clearml-task-id": task, "clearml-agent-queue": queue},
                "annotations": {"clearml.ai/task-name": format!("name of {task}"), "clearml.ai/queue-name": "gpu"},
                "creationTimestamp": "2026-12-04T10:00:00Z",
            },
            "spec": {"containers": [{"name": "task", "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
            "status": status,
        });
        Arc::new(serde_json::from_value(pod).expect("pod"))
    }

    fn running() -> serde_json::Value {
        json!({"phase": "Running"})
    }

    fn unschedulable() -> serde_json::Value {
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]})
    }

    fn succeeded() -> serde_json::Value {
        json!({"phase": "Succeeded"})
    }

    fn entry(task: &str, added: Option<i64>) -> Entry {
        Entry {
            task: task.into(),
            added: added.map(|s| Timestamp::from_second(s).expect("time")),
        }
    }

    #[test]
    fn the_gang_path_of_each_queue() {
        let values = Values::from_yaml(
            "agentk8sglue:\n  queues:\n    one: {}\n    multi:\n      queueSettings:\n        multiNode: [2, 2]\n        gangTimeoutSeconds: 30\n    defaulted:\n      queueSettings:\n        multiNode: [1, 1]\n    kueued:\n      queueSettings:\n        multiNode: [1, 1]\n        kueue:\n          localQueue: team-a\n    forced:\n      queueSettings:\n        multiNode: [1, 1]\n        gangScheduling: agent\n    required:\n      queueSettings:\n        multiNode: [1, 1]\n        gangScheduling: podGroup\n",
        )
        .expect("values");
        let cfg = AgentConfig::from_values(&values, "ns").expect("config");
        let v1beta1 = Some("scheduling.k8s.io/v1beta1");
        for (queue, ranks, api, want) in [
            ("one", 1, None, ""),
            ("one", 1, v1beta1, ""),
            ("one", 3, None, "agent (gangTimeoutSeconds 120)"),
            (
                "one",
                3,
                v1beta1,
                "native (PodGroup scheduling.k8s.io/v1beta1)",
            ),
            ("multi", 0, None, "agent (gangTimeoutSeconds 30)"),
            ("defaulted", 2, None, "agent (gangTimeoutSeconds 120)"),
            ("forced", 2, v1beta1, "agent (gangTimeoutSeconds 120)"),
            ("kueued", 2, v1beta1, "kueue (LocalQueue team-a)"),
            ("unknown", 1, None, ""),
        ] {
            assert_eq!(
                gang_path(&cfg, api, queue, ranks),
                want,
                "{queue} with {ranks} pods, {api:?}"
            );
        }
        assert!(
            gang_path(&cfg, None, "required", 2)
                .starts_with("none: queueSettings.gangScheduling is podGroup"),
            "a queue that requires the PodGroup API on a cluster without it"
        );
    }

    fn world() -> (AgentConfig, Snapshot) {
        let values = Values::from_yaml(
            "agentk8sglue:\n  queues:\n    gpu:\n      queueSettings:\n        maxPods: 2\n    cpu: {}\n",
        )
        .expect("values");
        let cfg = AgentConfig::from_values(&values, "ns").expect("config");
        let snap = Snapshot {
            served: vec![
                Served {
                    name: "gpu".into(),
                    id: "G".into(),
                },
                Served {
                    name: "cpu".into(),
                    id: "C".into(),
                },
            ],
            waiting: HashMap::from([
                ("G".into(), vec![entry("w1", Some(1_000))]),
                ("C".into(), vec![entry("w2", None)]),
            ]),
            pending: vec![entry("t1", Some(500)), entry("p1", Some(2_000))],
            pending_queue: "P".into(),
            ..Default::default()
        };
        (cfg, snap)
    }

    #[test]
    fn queue_summaries_count_live_pods_and_gpus_of_their_queue() {
        let (cfg, snap) = world();
        let pods = vec![
            pod("a", "t1", "G", 2, running()),
            pod("b", "t2", "G", 1, unschedulable()),
            pod("c", "t3", "G", 4, succeeded()),
            pod("d", "t4", "C", 0, running()),
        ];
        let cases = [
            ("gpu", "G", 1, 1, 1, 3, Some(2)),
            ("cpu", "C", 1, 0, 1, 0, None),
            ("unknown", "", 0, 0, 0, 0, None),
        ];
        for (name, id, waiting, pending, running, gpus, max) in cases {
            let q = queue_summary(name, &cfg, &snap, &pods);
            assert_eq!(
                (
                    q.id.as_str(),
                    q.waiting,
                    q.pods_pending,
                    q.pods_running,
                    q.gpus_requested,
                    q.max_pods
                ),
                (id, waiting, pending, running, gpus, max),
                "{name}"
            );
        }
    }

    #[test]
    fn task_summaries_say_why_each_task_waits() {
        let (cfg, snap) = world();
        let mut by_task = BTreeMap::new();
        by_task.insert("t1".to_string(), vec![pod("a", "t1", "G", 1, running())]);
        by_task.insert(
            "t2".to_string(),
            vec![pod("b", "t2", "G", 1, unschedulable())],
        );
        let got: BTreeMap<String, (String, String)> = task_summaries(&cfg, &snap, &by_task)
            .into_iter()
            .map(|t| (t.id, (t.phase, t.pending_reason)))
            .collect();
        let want: BTreeMap<String, (String, String)> = [
            ("t1", "Running", ""),
            (
                "t2",
                "Pending",
                "pod b: Unschedulable: 0/3 nodes are available",
            ),
            (
                "w1",
                "Queued",
                "waiting in ClearML queue gpu: maxPods reached (2/2 pods, a task needs 1)",
            ),
            ("w2", "Queued", "waiting in ClearML queue cpu"),
            (
                "p1",
                "Launching",
                "taken by the agent; its pod is being created",
            ),
        ]
        .into_iter()
        .map(|(id, phase, why)| (id.to_string(), (phase.to_string(), why.to_string())))
        .collect();
        assert_eq!(got, want);
    }

    /// Queued and launching tasks have no pod to carry their name and age: the age is their
    /// queue entry's, the name is filled from what ClearML answered (those with pods keep theirs).
    #[test]
    fn tasks_without_pods_get_their_entry_age_and_the_names_passed_in() {
        let (cfg, snap) = world();
        let mut by_task = BTreeMap::new();
        by_task.insert("t1".to_string(), vec![pod("a", "t1", "G", 1, running())]);
        let mut rows = task_summaries(&cfg, &snap, &by_task);
        let mut want_unnamed = vec!["w1", "w2", "p1"];
        let mut got_unnamed = unnamed(&rows);
        want_unnamed.sort();
        got_unnamed.sort();
        assert_eq!(got_unnamed, want_unnamed, "t1's name is on its pod");
        let names = HashMap::from([
            ("w1".to_string(), "first".to_string()),
            ("p1".to_string(), "launching".to_string()),
            ("t1".to_string(), "not used".to_string()),
        ]);
        fill_names(&mut rows, &names);
        let got: BTreeMap<String, (String, Option<i64>)> = rows
            .into_iter()
            .map(|t| (t.id, (t.name, t.created.map(|c| c.seconds))))
            .collect();
        let want: BTreeMap<String, (String, Option<i64>)> = [
            ("t1", "name of t1", Some(1_796_378_400)),
            ("w1", "first", Some(1_000)),
            ("w2", "", None),
            ("p1", "launching", Some(2_000)),
        ]
        .into_iter()
        .map(|(id, name, at)| (id.to_string(), (name.to_string(), at)))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_events_source_is_its_reporting_component() {
        let cases = [
            (
                "core/v1 event",
                json!({"source": {"component": "default-scheduler"}, "reportingComponent": ""}),
                "default-scheduler",
            ),
            (
                "both set",
                json!({"source": {"component": "kubelet", "host": "node-1"}, "reportingComponent": "kubelet"}),
                "kubelet",
            ),
            (
                "events.k8s.io style",
                json!({"source": {}, "reportingComponent": "default-scheduler"}),
                "default-scheduler",
            ),
            (
                "empty component",
                json!({"source": {"component": ""}, "reportingComponent": "kubelet"}),
                "kubelet",
            ),
            ("neither", json!({}), ""),
        ];
        for (what, fields, want) in cases {
            let mut e = json!({
                "metadata": {"name": "e1"},
                "involvedObject": {"kind": "Pod", "name": "clearml-id-t-1"},
                "reason": "FailedScheduling",
                "message": "0/3 nodes are available",
                "type": "Warning",
                "count": 3,
                "lastTimestamp": "2026-12-04T10:00:00Z",
            });
            for (k, v) in fields.as_object().expect("object") {
                e[k] = v.clone();
            }
            let e: Event = serde_json::from_value(e).expect("event");
            let got = event(e);
            assert_eq!(got.source, want, "{what}");
            assert_eq!(got.object, "clearml-id-t-1", "{what}");
            assert_eq!(
                (got.reason.as_str(), got.r#type.as_str(), got.count),
                ("FailedScheduling", "Warning", 3),
                "{what}"
            );
            assert_eq!(got.last_seen.map(|t| t.seconds), Some(1_796_378_400));
        }
    }

    #[test]
    fn a_task_phase_is_its_most_telling_pod() {
        let cases = [
            (vec![running(), running()], "Running"),
            (vec![running(), unschedulable()], "Pending"),
            (vec![succeeded(), succeeded()], "Succeeded"),
            (
                vec![succeeded(), json!({"phase": "Failed", "reason": "Evicted"})],
                "Failed",
            ),
        ];
        for (statuses, want) in cases {
            let pods: Vec<Arc<Pod>> = statuses
                .into_iter()
                .enumerate()
                .map(|(i, s)| pod(&format!("p{i}"), "t", "G", 0, s))
                .collect();
            let s = summarize("t", &pods);
            assert_eq!(s.phase, want);
            assert_eq!(s.name, "name of t");
            assert_eq!(s.queue, "gpu");
            assert_eq!(s.pods.len(), pods.len());
        }
    }
}
