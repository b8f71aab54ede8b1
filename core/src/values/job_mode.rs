//! Job mode (`taskAsJob`): what a queue's settings and merged template may not hold when its
//! tasks run as `batch/v1` Jobs. The Job controller owns the pods' `job-name`,
//! `controller-uid` and `batch.kubernetes.io/*` labels (the API server derives the Job's
//! selector from them: a template that sets one is refused, or its pods are not the Job's), and
//! `activeDeadlineSeconds` is a Job field with no bare-pod counterpart here.

use super::{FieldError, PodTemplate, QueueSettings};

/// Label keys of a Job's pods that the Job controller and the API server set.
pub const JOB_CONTROLLER_LABELS: &[&str] = &["job-name", "controller-uid"];
/// The prefix of the Job controller's own labels and annotations.
pub const JOB_LABEL_PREFIX: &str = "batch.kubernetes.io/";

/// Whether a template label key belongs to the Job controller.
pub fn is_controller_label(key: &str) -> bool {
    JOB_CONTROLLER_LABELS.contains(&key) || key.starts_with(JOB_LABEL_PREFIX)
}

/// Checks queue `path` (`agentk8sglue.queues.<name>`): `job` tells whether its tasks run as
/// Jobs; its pods are `base` (at `agentk8sglue.basePodTemplate`) ⊕ its `overrides`.
pub fn check(
    path: &str,
    job: bool,
    settings: &QueueSettings,
    base: &PodTemplate,
    overrides: &PodTemplate,
) -> Result<(), FieldError> {
    if !job {
        if settings.active_deadline_seconds.is_some() {
            return Err(FieldError::new(
                format!("{path}.queueSettings.activeDeadlineSeconds"),
                "applies to Jobs only: set queueSettings.taskAsJob (or agentk8sglue.taskAsJob) to true, or remove it",
            ));
        }
        return Ok(());
    }
    check_template(&format!("{path}.templateOverrides"), overrides)?;
    check_template("agentk8sglue.basePodTemplate", base)
}

/// Checks a template used in Job mode; `path` names it (`…basePodTemplate`,
/// `…templateOverrides`).
pub fn check_template(path: &str, template: &PodTemplate) -> Result<(), FieldError> {
    if let Some(key) = template
        .labels
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| is_controller_label(k))
    {
        return Err(FieldError::new(
            format!("{path}.labels.{key}"),
            "is set by the Job controller in Job mode (taskAsJob); remove it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labelled(key: &str) -> PodTemplate {
        PodTemplate {
            labels: Some(BTreeMap::from([(key.to_string(), "x".to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn job_mode_refuses_what_the_job_controller_owns() {
        let deadline = QueueSettings {
            active_deadline_seconds: Some(60),
            ..Default::default()
        };
        let none = QueueSettings::default();
        let q = "agentk8sglue.queues.gpu";
        let cases: &[(bool, &QueueSettings, PodTemplate, Option<&str>)] = &[
            (true, &none, PodTemplate::default(), None),
            (false, &none, PodTemplate::default(), None),
            (true, &none, PodTemplate::default(), None),
            (true, &deadline, PodTemplate::default(), None),
            (
                false,
                &deadline,
                PodTemplate::default(),
                Some("agentk8sglue.queues.gpu.queueSettings.activeDeadlineSeconds"),
            ),
            (false, &none, labelled("job-name"), None),
            (true, &none, labelled("team"), None),
            (
                true,
                &none,
                labelled("job-name"),
                Some("agentk8sglue.queues.gpu.templateOverrides.labels.job-name"),
            ),
            (
                true,
                &none,
                labelled("controller-uid"),
                Some("agentk8sglue.queues.gpu.templateOverrides.labels.controller-uid"),
            ),
            (
                true,
                &none,
                labelled("batch.kubernetes.io/job-completion-index"),
                Some(
                    "agentk8sglue.queues.gpu.templateOverrides.labels.batch.kubernetes.io/job-completion-index",
                ),
            ),
        ];
        for (job, settings, template, want) in cases {
            let got = check(q, *job, settings, &PodTemplate::default(), template)
                .err()
                .map(|e| e.path);
            assert_eq!(got.as_deref(), *want, "job={job} {template:?}");
            // the same label from basePodTemplate is reported there
            let got = check(q, *job, settings, template, &PodTemplate::default())
                .err()
                .map(|e| e.path);
            let want = want.map(|w| {
                w.replace(
                    "agentk8sglue.queues.gpu.templateOverrides",
                    "agentk8sglue.basePodTemplate",
                )
            });
            assert_eq!(got, want, "job={job} base {template:?}");
        }
    }
}
