//! The native gang path of a launch: its ranks join one PodGroup of the launch (named like
//! Kueue's pod group: the task's pod-name stem and a hash of the launch id), created once the
//! ranks (or the Job) exist, owned by them so the cluster deletes it with them. Until it exists the
//! scheduler binds no rank, so a crash between the two leaves nothing held: the next launch
//! attempt (this agent's next tick, or the next agent's) adopts the ranks and creates it.

use clearml_agent_core::{
    contract,
    gang::{self, Path},
    kueue,
    render::{self, QueueParams},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{Dispatcher, launch::Launch};

/// The PodGroup a launch's ranks join: its API version and name.
pub(super) struct Group {
    pub api_version: String,
    pub name: String,
}

impl Dispatcher {
    /// The PodGroup for a launch of `ranks` pods, if its queue takes the native path; a
    /// `gangScheduling: podGroup` queue on a cluster without the API fails the task with why.
    pub(super) fn pod_group_for(
        &self,
        task: &str,
        launch_id: &str,
        queue: &QueueParams<'_>,
        ranks: usize,
    ) -> Result<Option<Group>, Launch> {
        if ranks < 2 {
            return Ok(None);
        }
        match gang::choose(queue.settings, self.pod_group_api.as_deref()) {
            Ok(Path::PodGroup { api_version, .. }) => Ok(Some(Group {
                api_version,
                name: kueue::pod_group_name(&render::pod_name(task, None), launch_id),
            })),
            Ok(_) => Ok(None),
            Err(why) => Err(Launch::Failed {
                task: task.to_string(),
                reason: format!("k8s agent: {why}"),
                category: "GangScheduling",
            }),
        }
    }

    /// Makes the launch's PodGroup exist: gang of `ranks`, owned by `owners`.
    pub(super) async fn ensure_pod_group(
        &self,
        task: &str,
        group: &Group,
        ranks: usize,
        owners: Vec<OwnerReference>,
    ) -> Result<(), Launch> {
        if self.gate.paused() {
            return Err(Launch::Paused);
        }
        let labels = [
            (contract::LABEL_TASK_ID.to_string(), task.to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                contract::MANAGED_BY.to_string(),
            ),
        ]
        .into();
        let obj = gang::pod_group(
            &group.api_version,
            &self.cfg.task_namespace,
            &group.name,
            ranks,
            &labels,
            owners,
        );
        match self.kube.ensure_pod_group(&group.api_version, &obj).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_permanent() => Err(Launch::Failed {
                task: task.to_string(),
                reason: format!(
                    "k8s agent: the PodGroup {} of this multi-node task was refused ({}); its ranks cannot be scheduled without it. If the agent's Role lacks create on podgroups.scheduling.k8s.io, run `kubectl clearml install` again, or set queueSettings.gangScheduling: agent",
                    group.name,
                    e.message()
                ),
                category: "Create",
            }),
            Err(e) => Err(self.retry_later(task, &e)),
        }
    }
}
