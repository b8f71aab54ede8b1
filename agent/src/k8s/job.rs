//! Job mode's Kubernetes side: creating and deleting a task's `batch/v1` Job, and the Job watch
//! whose cache the lifecycle reads the Jobs' conditions from. The Job's pods are in the pod
//! cache like bare pods: the Job's template carries the same labels.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{api::batch::v1::Job, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{Client, api::DeleteParams, runtime::reflector};
use tokio::sync::Notify;

use clearml_agent_core::contract::LABEL_TASK_ID;

use super::{Created, Error, Kube};

impl Kube {
    /// Creates a Job; an existing one of the same name is returned for the caller to judge.
    pub async fn create_job(&self, job: &Job) -> Result<Created<Job>, Error> {
        self.create_or_get(&self.jobs, "job", job).await
    }

    /// Validates a Job with a server-side dry run (nothing is created).
    pub async fn dry_run_job(&self, job: &Job) -> Result<(), Error> {
        self.dry_run(&self.jobs, "job", job).await
    }

    /// Deletes a Job and, through the garbage collector, its pods (background propagation: a
    /// Job deleted without a policy would orphan them); one already gone is success.
    pub async fn delete_job(&self, name: &str) -> Result<(), Error> {
        match self.jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.err("delete", "job", name, e)),
        }
    }
}

/// The agent's Jobs, kept current by a watch.
pub type JobStore = reflector::Store<Job>;

/// The store's Jobs by the task they run (their `clearml-task-id` label).
pub fn jobs_by_task(jobs: &JobStore) -> BTreeMap<String, Arc<Job>> {
    jobs.state()
        .into_iter()
        .filter_map(|j| {
            let task = j.metadata.labels.as_ref()?.get(LABEL_TASK_ID)?.clone();
            Some((task, j))
        })
        .collect()
}

/// An `ownerReference` to `job` (a multi-node task's rendezvous Service goes with its Job).
/// `None` for a Job without a name or uid (one not read from the API server).
pub fn owned_by_job(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        ..Default::default()
    })
}

/// The Jobs matching `selector` in `namespace`: the store, and the watch that fills it (as
/// [`super::watch_pods`]); `changed` is notified on every event.
pub fn watch_jobs(
    client: Client,
    namespace: &str,
    selector: &str,
    changed: Arc<Notify>,
) -> (JobStore, impl Future<Output = ()> + Send + 'static) {
    super::watch_objects(client, namespace, selector, changed, "job")
}
