//! Cleanup of the `fileMounts` Secrets (`render::file_mounts_secret`): each holds one content of a
//! queue's files, named by its hash, so a changed file leaves the old Secret behind. Every
//! [`FILES_GC_PERIOD`], the leader deletes its own such Secrets (labelled with its agent label)
//! that no pod in its cache mounts and no served queue's template would make, once they are older
//! than [`FILES_GC_MIN_AGE`]: a pod created moments ago may not be in the cache yet, and a Secret
//! of that age is never about to be mounted by a launch in flight.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};

use clearml_agent_core::{contract::LABEL_AGENT, render};

use super::Dispatcher;

/// How often the leader looks for stale `fileMounts` Secrets.
pub(super) const FILES_GC_PERIOD: Duration = Duration::from_secs(600);
/// A `fileMounts` Secret younger than this is kept even when nothing uses it.
pub(super) const FILES_GC_MIN_AGE: Duration = Duration::from_secs(600);

/// The names of `secrets` to delete: not in `in_use`, and created more than `min_age` before
/// `now` (a Secret without a creation time is kept).
pub(super) fn stale_file_secrets(
    secrets: &[Secret],
    in_use: &BTreeSet<String>,
    now: Timestamp,
    min_age: Duration,
) -> Vec<String> {
    secrets
        .iter()
        .filter_map(|s| {
            let name = s.metadata.name.clone()?;
            let created = s.metadata.creation_timestamp.as_ref()?.0;
            let age = now.duration_since(created);
            let old = age.as_secs() >= 0 && age.unsigned_abs() >= min_age;
            (old && !in_use.contains(&name)).then_some(name)
        })
        .collect()
}

impl Dispatcher {
    /// Deletes this agent's stale `fileMounts` Secrets (see the module doc); failures are logged
    /// and retried at the next period.
    pub(super) async fn collect_file_secrets(&self) {
        let label = render::agent_label(&self.cfg.worker_id);
        let selector = format!("{}={label},{}", LABEL_AGENT, render::LABEL_FILE_MOUNTS);
        let secrets = match self.kube.list_secrets(&selector).await {
            Ok(s) => s,
            Err(error) => {
                tracing::debug!(%error, "cannot list the fileMounts Secrets");
                return;
            }
        };
        let mut in_use: BTreeSet<String> = self
            .pods
            .state()
            .iter()
            .flat_map(|p| p.spec.iter().flat_map(|s| s.volumes.iter().flatten()))
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        in_use.extend(self.cfg.queues.values().filter_map(|q| {
            render::file_mounts_secret(&q.template, &self.cfg.task_namespace, &label)?
                .metadata
                .name
        }));
        for name in stale_file_secrets(&secrets, &in_use, Timestamp::now(), FILES_GC_MIN_AGE) {
            match self.kube.delete_secret(&name).await {
                Ok(()) => {
                    tracing::info!(secret = %name, "deleted a fileMounts Secret no pod or queue uses");
                    if let Ok(mut made) = self.file_secrets.lock() {
                        made.remove(&name);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot delete a stale fileMounts Secret"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn secret(name: &str, age_secs: i64, now: Timestamp) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(age_secs))
                        .expect("time"),
                )),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_old_unused_secrets_are_stale() {
        let now = Timestamp::now();
        let min = Duration::from_secs(600);
        let secrets = [
            secret("old-unused", 601, now),
            secret("old-used", 5000, now),
            secret("young-unused", 30, now),
            secret("future", -30, now),
            Secret {
                metadata: ObjectMeta {
                    name: Some("no-time".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        let in_use: BTreeSet<String> = ["old-used".to_string()].into();
        assert_eq!(
            stale_file_secrets(&secrets, &in_use, now, min),
            ["old-unused"]
        );
    }
}
