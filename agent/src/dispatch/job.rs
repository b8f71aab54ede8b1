//! Job mode (`taskAsJob`) in the data path: launching a task as one `batch/v1` Job, the tasks'
//! Jobs and pods as the reconciler sees them, the Job-mode verdict, and deleting a task's Job.
//!
//! Crash safety is the bare pods' argument: the Job's name is derived from the task id, its
//! `clearml.ai/launch` annotation names the pending entry it serves, and a retried create that
//! hits `AlreadyExists` adopts the Job when its labels name the same task and its annotation the
//! same launch. A Job left from an earlier run of a re-enqueued task is deleted first, then the
//! launch is retried. The pods are the Job controller's: the agent never deletes them itself,
//! it deletes the Job (background propagation: the garbage collector takes the pods).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    jiff::Timestamp,
};
use kube::runtime::reflector::ObjectRef;

use clearml_agent_core::{
    contract,
    render::{
        QueueParams, TaskParams,
        job::{RenderedJob, render_job},
    },
};

use crate::{
    k8s::{self, Created, Ensured},
    lifecycle::{self, TaskStatus, Verdict},
};

use super::{Dispatcher, launch::Launch, reconcile::decide_pods};

impl Dispatcher {
    /// The task's Job in the cache, if it has one.
    fn job_of(&self, task: &str) -> Option<Arc<Job>> {
        let name = clearml_agent_core::render::job::job_name(task);
        self.jobs
            .get(&ObjectRef::new(&name).within(&self.cfg.task_namespace))
            .filter(|j| {
                j.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(contract::LABEL_TASK_ID))
                    .is_some_and(|t| t == task)
            })
    }

    /// Every task with pods or a Job, with its pods (a Job's pods may not exist yet, or any
    /// more): what the reconciler decides for.
    pub(super) fn pods_and_jobs_by_task(&self) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut by_task = k8s::pods_by_task(&self.pods);
        for task in k8s::jobs_by_task(&self.jobs).into_keys() {
            by_task.entry(task).or_default();
        }
        by_task
    }

    /// The verdict for one task: from its Job and pods in Job mode, else from its pods.
    pub(super) fn decide_task(
        &self,
        task: &str,
        pods: &[Arc<Pod>],
        rules: &super::retry::TaskRules,
        status: TaskStatus<'_>,
        now: Timestamp,
    ) -> Verdict {
        let status = self.as_seen_by_its_pods(task, status, rules.0.is_some());
        let job = self.job_of(task);
        if job.is_none() && !pods.iter().any(|p| lifecycle::job::owned_by_a_job(p)) {
            return decide_pods(pods, rules, status, now, &self.cfg.timeouts);
        }
        // Job mode: a pod the cluster took fails the Job (podFailurePolicy FailJob) and the task
        // is retried as for bare pods; an Indexed Job's ranks get the gang rule (`task_rules`)
        // as bare ranks do: released whole if not all scheduled in time
        if let (Some((pod, why)), _) = rules
            && status.is_active()
        {
            return Verdict::Retry {
                pod: pod.clone(),
                why: why.clone(),
            };
        }
        if let (_, Some(gang)) = rules
            && let release @ Verdict::Release { .. } =
                decide_pods(pods, &(None, Some(*gang)), status, now, &self.cfg.timeouts)
        {
            return release;
        }
        let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
        lifecycle::job::decide(job.as_deref(), &pods, status, now, &self.cfg.timeouts)
    }

    /// Job mode's part of deleting a task's pods: a task with a Job has its Job deleted when
    /// `all` (cleanup, a stale run) or while something of it still runs (abort, a failure found
    /// by the agent); a finished Job is kept for its TTL. A multi-node task's rendezvous Service
    /// goes whenever the pods are deleted, as for bare pods. Returns whether the task has a Job.
    pub(super) async fn delete_task_job(
        &mut self,
        task: &str,
        pods: &[Arc<Pod>],
        all: bool,
    ) -> bool {
        let Some(job) = self.job_of(task) else {
            return false;
        };
        self.deleting.insert(task.to_string());
        // finished, or finishing (the controller has decided; the other pods are stopping)
        let finished = lifecycle::job::is_finished(&job);
        let running = pods.iter().any(|p| lifecycle::classify(p).is_live());
        let name = job.metadata.name.clone().unwrap_or_default();
        if (all || running || !finished)
            && job.metadata.deletion_timestamp.is_none()
            && let Err(error) = self.kube.delete_job(&name).await
        {
            tracing::warn!(%task, job = %name, %error, "cannot delete job");
        }
        let indexed =
            job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed");
        if indexed
            && let Err(error) = self
                .kube
                .delete_service(&clearml_agent_core::render::pod_name(task, None))
                .await
        {
            tracing::warn!(%task, %error, "cannot delete rendezvous service");
        }
        true
    }

    /// Launches one pending task as a Job: adopts this launch's Job when it exists, else creates
    /// it (then a multi-node task's rendezvous Service, owned by the Job).
    pub(super) async fn launch_job(
        &self,
        task: String,
        launch_id: String,
        origin: String,
        queue: &QueueParams<'_>,
        record: Option<&[String]>,
        params: &TaskParams,
    ) -> Launch {
        let RenderedJob {
            job,
            service,
            warnings,
            secrets,
        } = match render_job(&self.agent, queue, params, &self.cfg.timeouts) {
            Ok(r) => r,
            Err(e) => {
                return Launch::Failed {
                    task,
                    reason: format!("k8s agent: {e}"),
                    category: "Render",
                };
            }
        };
        for w in &warnings {
            tracing::info!(%task, warning = %w, "task container argument ignored");
        }
        // the retries and gang releases so far stay with the task on its pods, as for bare pods
        let mut job = job;
        if let Some(template) = job.spec.as_mut().map(|s| &mut s.template) {
            let mut pod = k8s_openapi::api::core::v1::Pod {
                metadata: template.metadata.take().unwrap_or_default(),
                ..Default::default()
            };
            super::retry::annotate(std::slice::from_mut(&mut pod), record);
            template.metadata = Some(pod.metadata);
        }
        // the native gang path: an Indexed Job's pods join this launch's PodGroup
        let ranks = job
            .spec
            .as_ref()
            .and_then(|s| s.completions)
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(1);
        let group = match self.pod_group_for(&task, &launch_id, queue, ranks) {
            Ok(group) => group,
            Err(outcome) => return outcome,
        };
        if let (Some(group), Some(template)) = (&group, job.spec.as_mut().map(|s| &mut s.template))
        {
            let mut pod = k8s_openapi::api::core::v1::Pod {
                spec: template.spec.take(),
                ..Default::default()
            };
            clearml_agent_core::gang::join(std::slice::from_mut(&mut pod), &group.name);
            template.spec = pod.spec;
        }
        let cached = self
            .job_of(&task)
            .filter(|j| launch_of_job(j) == Some(launch_id.as_str()));
        let (have, adopted) = match cached {
            Some(j) => ((*j).clone(), true),
            None => {
                if self.gate.paused() {
                    return Launch::Paused;
                }
                // the Secrets the pods mount (fileMounts) exist before the Job
                for secret in &secrets {
                    if let Err(outcome) = self.ensure_secret(&task, secret).await {
                        return outcome;
                    }
                }
                match self.kube.create_job(&job).await {
                    Ok(Created::New(created)) => (*created, false),
                    Ok(Created::Exists(existing)) => {
                        let same_task = existing
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(contract::LABEL_TASK_ID))
                            .is_some_and(|t| *t == task);
                        if !same_task {
                            return Launch::Failed {
                                reason: format!(
                                    "k8s agent: a Job named {} already exists and belongs to something else",
                                    existing.metadata.name.clone().unwrap_or_default()
                                ),
                                task,
                                category: "NameTaken",
                            };
                        }
                        if launch_of_job(&existing) != Some(launch_id.as_str()) {
                            // left from an earlier run of the task: removed, then launched
                            let name = existing.metadata.name.clone().unwrap_or_default();
                            if existing.metadata.deletion_timestamp.is_none()
                                && let Err(error) = self.kube.delete_job(&name).await
                            {
                                tracing::warn!(%task, job = %name, %error, "cannot delete the job of an earlier run");
                            }
                            return Launch::Retry {
                                task,
                                why: "a Job of an earlier run still exists".into(),
                                retry_after: None,
                            };
                        }
                        (*existing, true)
                    }
                    Err(e) if e.is_permanent() => {
                        return Launch::Failed {
                            task,
                            reason: format!("k8s agent: the Job was refused: {}", e.message()),
                            category: "Create",
                        };
                    }
                    Err(e) => return self.retry_later(&task, &e),
                }
            }
        };
        if let Some(svc) = service {
            let Some(owner) = k8s::owned_by_job(&have) else {
                return Launch::Retry {
                    task,
                    why: "the Job has no uid yet".into(),
                    retry_after: None,
                };
            };
            let mut svc = svc;
            svc.metadata.owner_references = Some(vec![owner]);
            match self.kube.ensure_service(&svc, adopted).await {
                Ok(Ensured::Ready) => {}
                Ok(Ensured::Taken(existing)) => {
                    return Launch::Failed {
                        reason: format!(
                            "k8s agent: a Service named {} already exists and belongs to something else",
                            existing.metadata.name.clone().unwrap_or_default()
                        ),
                        task,
                        category: "NameTaken",
                    };
                }
                Err(e) if e.is_permanent() => {
                    return Launch::Failed {
                        task,
                        reason: format!("k8s agent: {e}"),
                        category: "Create",
                    };
                }
                Err(e) => return self.retry_later(&task, &e),
            }
        }
        // the Job exists: its pods' PodGroup lets the scheduler bind them (all or none)
        if let Some(group) = &group {
            let (Some(name), Some(uid)) = (&have.metadata.name, &have.metadata.uid) else {
                return Launch::Retry {
                    task,
                    why: "the Job has no uid yet".into(),
                    retry_after: None,
                };
            };
            let owner = clearml_agent_core::gang::owner("batch/v1", "Job", name, uid);
            if let Err(outcome) = self
                .ensure_pod_group(&task, group, ranks, vec![owner])
                .await
            {
                return outcome;
            }
        }
        Launch::done(adopted, task, launch_id, queue.name, origin)
    }
}

/// The launch id a Job serves (its `clearml.ai/launch` annotation).
fn launch_of_job(job: &Job) -> Option<&str> {
    job.metadata
        .annotations
        .as_ref()?
        .get(contract::ANNOTATION_LAUNCH)
        .map(String::as_str)
}
