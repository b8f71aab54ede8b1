//! Validated changes to the agent's values, written to its ConfigMap: the edit itself is pure
//! ([`apply_edit`]); then the whole new document is validated (typed parse with field paths,
//! merge, and with a queue named, its pod rendered and dry-run by the API server), and the
//! ConfigMap is replaced conditionally on the version read, retried on Conflict. Nothing is
//! written unless all of it passes. The dispatcher applies the new version from its ConfigMap
//! watch; a write waits briefly until it has (read-your-writes).

use clearml_agent_proto::v1 as pb;
use serde_json::Value;

use clearml_agent_core::{
    config::AgentConfig,
    render::{self, QueueParams, Rendered, TaskParams},
    values::{QueueValues, Values},
    yaml,
};

use crate::{clearml::create_queue, config_store::Written};

use super::{Control, ControlError, PREVIEW_TASK};

/// Read-modify-write attempts on ConfigMap conflicts.
const WRITE_ATTEMPTS: usize = 5;
/// How long a write through the control API waits for the agent to apply it.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a queue entry is patched.
#[derive(Debug, Clone)]
pub enum QueuePatch {
    /// A JSON merge patch (RFC 7386).
    Merge(Value),
    /// A JSON patch (RFC 6902).
    Json(json_patch::Patch),
}

/// One change to the values.
#[derive(Debug, Clone)]
pub enum QueueEdit {
    /// Add a queue that is not configured yet.
    Add {
        /// Queue name.
        name: String,
        /// Its entry.
        entry: Box<QueueValues>,
    },
    /// Patch a configured queue's entry.
    Patch {
        /// Queue name.
        name: String,
        /// The patch.
        patch: QueuePatch,
    },
    /// Remove a configured queue.
    Remove {
        /// Queue name.
        name: String,
    },
    /// Set (or with `None` turn off) `dashboardReportMaxGpu`.
    GpuReporting(Option<u32>),
}

impl QueueEdit {
    /// The queue whose pod is rendered and dry-run before writing (none for a removal).
    fn checked_queue(&self) -> Option<&str> {
        match self {
            QueueEdit::Add { name, .. } | QueueEdit::Patch { name, .. } => Some(name),
            QueueEdit::Remove { .. } | QueueEdit::GpuReporting(_) => None,
        }
    }
}

/// A queue entry from its JSON or YAML text (empty: an empty entry); errors name the queue.
pub fn parse_queue_spec(name: &str, spec: &str) -> Result<QueueValues, ControlError> {
    let doc: Value = if spec.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        yaml::from_str(spec)
            .map_err(|e| ControlError::BadInput(format!("agentk8sglue.queues.{name}: {e}")))?
    };
    Ok(QueueValues::from_json(name, doc)?)
}

/// A patch from its text: a JSON patch when `json`, else a merge patch.
pub fn parse_patch(json: bool, text: &str) -> Result<QueuePatch, ControlError> {
    let doc: Value = yaml::from_str(text)
        .map_err(|e| ControlError::BadInput(format!("the patch is not JSON or YAML: {e}")))?;
    if json {
        serde_json::from_value(doc)
            .map(QueuePatch::Json)
            .map_err(|e| ControlError::BadInput(format!("not a JSON patch (RFC 6902): {e}")))
    } else {
        Ok(QueuePatch::Merge(doc))
    }
}

/// Applies `edit` to `values` (pure; the result is validated as a whole before it is written).
pub fn apply_edit(values: &mut Values, edit: &QueueEdit) -> Result<(), ControlError> {
    let queues = &mut values.agentk8sglue.queues;
    match edit {
        QueueEdit::Add { name, entry } => {
            if queues.contains_key(name) {
                return Err(ControlError::AlreadyExists(format!(
                    "queue {name:?} is already configured; use patch"
                )));
            }
            queues.insert(name.clone(), (**entry).clone());
        }
        QueueEdit::Patch { name, patch } => {
            let current = queues.get(name).ok_or_else(|| not_configured(name))?;
            let mut doc =
                serde_json::to_value(current).map_err(|e| ControlError::Internal(e.to_string()))?;
            match patch {
                QueuePatch::Json(p) => json_patch::patch(&mut doc, p).map_err(|e| {
                    ControlError::BadInput(format!("agentk8sglue.queues.{name}: {e}"))
                })?,
                QueuePatch::Merge(p) => json_patch::merge(&mut doc, p),
            }
            let entry = QueueValues::from_json(name, doc)?;
            queues.insert(name.clone(), entry);
        }
        QueueEdit::Remove { name } => {
            queues.remove(name).ok_or_else(|| not_configured(name))?;
        }
        QueueEdit::GpuReporting(max) => values.agentk8sglue.dashboard_report_max_gpu = *max,
    }
    Ok(())
}

fn not_configured(name: &str) -> ControlError {
    ControlError::NotFound(format!("queue {name:?} is not configured"))
}

impl Control {
    /// Applies `edit` to the ConfigMap's values, validated; with `dry_run`, validates only.
    /// Returns the values as written (or as they would be).
    pub async fn edit(&self, edit: &QueueEdit, dry_run: bool) -> Result<Values, ControlError> {
        let store = self.store.as_ref().ok_or_else(|| {
            ControlError::FailedPrecondition("the agent reads its values from a file, not a ConfigMap; edit the file and restart it".into())
        })?;
        for _ in 0..WRITE_ATTEMPTS {
            let (mut values, cm) = store.read().await?;
            apply_edit(&mut values, edit)?;
            let values = self.validate(values, edit.checked_queue()).await?;
            if dry_run {
                return Ok(values);
            }
            match store.write(cm, &values).await? {
                Written::Done => {
                    self.applied(&values).await;
                    return Ok(values);
                }
                Written::Conflict => continue,
            }
        }
        Err(ControlError::Contended)
    }

    /// Adds or patches a queue; returns it as saved (created in ClearML with `createQueues`,
    /// unless this was a dry run).
    pub async fn save_queue(
        &self,
        edit: &QueueEdit,
        dry_run: bool,
    ) -> Result<pb::Queue, ControlError> {
        let values = self.edit(edit, dry_run).await?;
        let name = edit.checked_queue().unwrap_or_default();
        let id = if dry_run || !values.agentk8sglue.creates_queues() {
            String::new()
        } else {
            create_queue(&self.clearml, name, &[]).await.map_err(|e| {
                ControlError::Unavailable(format!(
                    "queue saved, but creating it in ClearML failed: {e}"
                ))
            })?
        };
        let cfg = AgentConfig::from_values(&values, &self.agent.namespace)?;
        let mut q = self.queue(name, &cfg)?;
        if q.id.is_empty() {
            q.id = id.clone();
            if let Some(s) = q.summary.as_mut() {
                s.id = id;
            }
        }
        Ok(q)
    }

    /// Renders the pod(s) of `queue` for `task_id` (a placeholder task when empty), dry-run by
    /// the API server, as YAML manifests.
    pub async fn render_preview(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<Vec<String>, ControlError> {
        let task = self.preview_task(task_id).await?;
        if let Some(rendered) = self.render_job(&self.cfg(), queue, &task)? {
            // Job mode: the Job (what a launch creates), dry-run, and the rendezvous Service
            self.kube.dry_run_job(&rendered.job).await.map_err(|e| {
                ControlError::BadInput(format!(
                    "the Kubernetes API server refused the Job: {}",
                    e.message()
                ))
            })?;
            let mut docs = vec![manifest_yaml(&rendered.job)?];
            if let Some(svc) = &rendered.service {
                docs.push(manifest_yaml(svc)?);
            }
            return Ok(docs);
        }
        let rendered = self.render(&self.cfg(), queue, &task)?;
        let mut docs = Vec::new();
        for pod in &rendered.pods {
            self.kube.dry_run_pod(pod).await.map_err(|e| {
                ControlError::BadInput(format!(
                    "the Kubernetes API server refused the pod: {}",
                    e.message()
                ))
            })?;
            docs.push(manifest_yaml(pod)?);
        }
        if let Some(svc) = &rendered.service {
            docs.push(manifest_yaml(svc)?);
        }
        Ok(docs)
    }

    /// Validates a whole new values document; with `queue`, also renders that queue's pod and
    /// has the API server dry-run it.
    async fn validate(&self, values: Values, queue: Option<&str>) -> Result<Values, ControlError> {
        let doc =
            serde_json::to_value(&values).map_err(|e| ControlError::Internal(e.to_string()))?;
        let values = Values::from_json(doc)?;
        let cfg = AgentConfig::from_values(&values, &self.agent.namespace)?;
        if let Some(name) = queue {
            let preview = TaskParams {
                id: PREVIEW_TASK.into(),
                name: "preview".into(),
                ..Default::default()
            };
            if let Some(rendered) = self.render_job(&cfg, name, &preview)? {
                self.kube.dry_run_job(&rendered.job).await.map_err(|e| {
                    ControlError::BadInput(format!(
                        "agentk8sglue.queues.{name}: the Kubernetes API server refused the queue's Job: {}",
                        e.message()
                    ))
                })?;
                return Ok(values);
            }
            for pod in self.render(&cfg, name, &preview)?.pods {
                self.kube.dry_run_pod(&pod).await.map_err(|e| {
                    ControlError::BadInput(format!(
                        "agentk8sglue.queues.{name}: the Kubernetes API server refused the queue's pod: {}",
                        e.message()
                    ))
                })?;
            }
        }
        Ok(values)
    }

    fn render(
        &self,
        cfg: &AgentConfig,
        queue: &str,
        task: &TaskParams,
    ) -> Result<Rendered, ControlError> {
        let q = cfg.queues.get(queue).ok_or_else(|| not_configured(queue))?;
        let id = self
            .snapshot
            .read()
            .served
            .iter()
            .find(|s| s.name == queue)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let mut agent = self.agent.clone();
        agent.apply_document(&cfg.values);
        let params = QueueParams {
            name: queue,
            id: &id,
            template: &q.template,
            settings: &q.settings,
        };
        render::render(&agent, &params, task).map_err(|e| ControlError::BadInput(e.to_string()))
    }

    /// Job mode (`taskAsJob`): the queue's Job for `task`; `None` for a queue of bare pods.
    fn render_job(
        &self,
        cfg: &AgentConfig,
        queue: &str,
        task: &TaskParams,
    ) -> Result<Option<render::job::RenderedJob>, ControlError> {
        let q = cfg.queues.get(queue).ok_or_else(|| not_configured(queue))?;
        if q.settings.task_as_job != Some(true) {
            return Ok(None);
        }
        let id = self
            .snapshot
            .read()
            .served
            .iter()
            .find(|s| s.name == queue)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let mut agent = self.agent.clone();
        agent.apply_values(&cfg.values.agentk8sglue);
        let params = QueueParams {
            name: queue,
            id: &id,
            template: &q.template,
            settings: &q.settings,
        };
        render::job::render_job(&agent, &params, task, &cfg.timeouts)
            .map(Some)
            .map_err(|e| ControlError::BadInput(e.to_string()))
    }

    /// Waits (briefly) until the ConfigMap watch has applied `values`, so a read right after a
    /// write sees it (`queues remove x` then `queues get x` says not found). The write is done
    /// either way: if another edit lands first, the wait just ends at its limit.
    async fn applied(&self, values: &Values) {
        let Ok(want) = AgentConfig::from_values(values, &self.agent.namespace) else {
            return;
        };
        let mut rx = self.cfg_rx.clone();
        let seen = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|c| **c == want)).await;
        if seen.is_err() {
            tracing::debug!("the written values were not applied within {APPLY_WAIT:?}");
        }
    }
}

/// An object as a YAML manifest, with its `apiVersion` and `kind`.
fn manifest_yaml<K: serde::Serialize + k8s_openapi::Resource>(
    obj: &K,
) -> Result<String, ControlError> {
    let mut v = serde_json::to_value(obj).map_err(|e| ControlError::Internal(e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), K::API_VERSION.into());
        m.insert("kind".into(), K::KIND.into());
    }
    yaml::to_string(&v).map_err(|e| ControlError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values::from_yaml(
            "agentk8sglue:\n  queues:\n    red:\n      queueSettings:\n        maxPods: 2\n",
        )
        .expect("values")
    }

    fn queues(v: &Values) -> Vec<&str> {
        v.agentk8sglue.queues.keys().map(String::as_str).collect()
    }

    #[test]
    fn edits_change_exactly_their_queue_or_say_why_not() {
        let entry = parse_queue_spec("blue", "{}").expect("empty spec");
        let merge = |text: &str| parse_patch(false, text).expect("merge patch");
        let json = |text: &str| parse_patch(true, text).expect("json patch");
        type Check = fn(&Values) -> bool;
        let cases: Vec<(&str, QueueEdit, Result<Check, &str>)> = vec![
            (
                "add a new queue",
                QueueEdit::Add {
                    name: "blue".into(),
                    entry: Box::new(entry.clone()),
                },
                Ok(|v| queues(v) == ["blue", "red"]),
            ),
            (
                "add an existing queue",
                QueueEdit::Add {
                    name: "red".into(),
                    entry: Box::new(entry),
                },
                Err("queue \"red\" is already configured; use patch"),
            ),
            (
                "merge patch",
                QueueEdit::Patch {
                    name: "red".into(),
                    patch: merge(r#"{"queueSettings": {"maxPods": 8}}"#),
                },
                Ok(|v| v.agentk8sglue.queues["red"].queue_settings.max_pods == Some(8)),
            ),
            (
                "json patch",
                QueueEdit::Patch {
                    name: "red".into(),
                    patch: json(
                        r#"[{"op": "replace", "path": "/queueSettings/maxPods", "value": 3}]"#,
                    ),
                },
                Ok(|v| v.agentk8sglue.queues["red"].queue_settings.max_pods == Some(3)),
            ),
            (
                "json patch on a missing path",
                QueueEdit::Patch {
                    name: "red".into(),
                    patch: json(r#"[{"op": "remove", "path": "/nope"}]"#),
                },
                Err("agentk8sglue.queues.red: "),
            ),
            (
                "patch to an invalid entry names the field",
                QueueEdit::Patch {
                    name: "red".into(),
                    patch: merge(r#"{"queueSettings": {"maxPods": "many"}}"#),
                },
                Err("agentk8sglue.queues.red.queueSettings.maxPods"),
            ),
            (
                "patch a missing queue",
                QueueEdit::Patch {
                    name: "green".into(),
                    patch: merge("{}"),
                },
                Err("queue \"green\" is not configured"),
            ),
            (
                "remove",
                QueueEdit::Remove { name: "red".into() },
                Ok(|v| v.agentk8sglue.queues.is_empty()),
            ),
            (
                "remove a missing queue",
                QueueEdit::Remove {
                    name: "green".into(),
                },
                Err("queue \"green\" is not configured"),
            ),
            (
                "gpu reporting",
                QueueEdit::GpuReporting(Some(16)),
                Ok(|v| v.agentk8sglue.dashboard_report_max_gpu == Some(16)),
            ),
        ];
        for (what, edit, want) in cases {
            let mut v = values();
            let got = apply_edit(&mut v, &edit);
            match (got, want) {
                (Ok(()), Ok(check)) => assert!(check(&v), "{what}: {v:?}"),
                (Err(e), Err(text)) => {
                    assert!(e.to_string().starts_with(text), "{what}: {e}");
                    assert_eq!(v, values(), "{what}: a refused edit changes nothing");
                }
                (got, _) => panic!("{what}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn malformed_input_is_refused_before_any_edit() {
        for (what, got) in [
            ("spec", parse_queue_spec("q", "[1, 2").map(drop)),
            ("patch", parse_patch(false, "{").map(drop)),
            (
                "json patch",
                parse_patch(true, r#"{"op": "add"}"#).map(drop),
            ),
        ] {
            assert!(
                matches!(got, Err(ControlError::BadInput(_))),
                "{what}: {got:?}"
            );
        }
        assert!(matches!(
            parse_queue_spec("q", r#"{"queueSettings": {"maxPods": -1}}"#),
            Err(ControlError::Invalid(_))
        ));
    }
}
