//! The ClearML endpoints the agent calls, each a typed method over the transport in `mod.rs`
//! (auth, retries, the reply envelope): queues, tasks, workers and task log events.

use serde_json::{Value, json};

use super::{API_VERSION, Client, Error, QueueDoc, Result, TaskDoc, backoff, subcode, wire};

impl Client {
    /// Queues with exactly these names (one `queues.get_all` with an anchored regex).
    pub async fn queues_by_name(&self, names: &[String]) -> Result<Vec<QueueDoc>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let alternatives: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
        let body = json!({
            "name": format!("^({})$", alternatives.join("|")),
            "only_fields": ["id", "name"],
            "search_hidden": true,
        });
        Ok(self
            .get_queues(&body)
            .await?
            .into_iter()
            .filter(|q| names.contains(&q.name))
            .collect())
    }

    /// The queues with these ids and up to `max_entries` head entries each (one call per tick).
    pub async fn queue_entries(&self, ids: &[String], max_entries: usize) -> Result<Vec<QueueDoc>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({
            "id": ids,
            "only_fields": ["id", "name", "entries"],
            "max_task_entries": max_entries,
            "search_hidden": true,
        });
        self.get_queues(&body).await
    }

    /// Creates a queue; returns its id.
    pub async fn create_queue(&self, name: &str, system_tags: &[&str]) -> Result<String> {
        let body = json!({"name": name, "system_tags": system_tags});
        let data: wire::Created = self.call("queues.create", &body).await?;
        Ok(data.id)
    }

    /// Number of entries in a queue.
    pub async fn queue_length(&self, queue: &str) -> Result<u64> {
        let data: Value = self
            .call("queues.get_num_entries", &json!({"queue": queue}))
            .await?;
        data.get("num")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::Decode {
                endpoint: "queues.get_num_entries",
                detail: "no data.num".into(),
            })
    }

    /// Tasks by id with the given fields (missing ids are simply absent). A task whose document
    /// does not decode (or lacks its status, when `status` is asked for) is returned with
    /// [`TaskDoc::unreadable`] set; see [`wire::decode_tasks`].
    pub async fn tasks(&self, ids: &[String], only_fields: &[&str]) -> Result<Vec<TaskDoc>> {
        const ENDPOINT: &str = "tasks.get_all";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({"id": ids, "only_fields": only_fields, "search_hidden": true});
        let data = self.call_value(ENDPOINT, &body).await?;
        let tasks = wire::decode_tasks(ENDPOINT, data, only_fields.contains(&"status"))?;
        for t in &tasks {
            if let Some(why) = &t.unreadable {
                self.report(ENDPOINT, &format!("task {}: {why}", t.id));
            }
        }
        Ok(tasks)
    }

    /// Enqueues a task into `queue` with `reason` and `message` on the task. Without `force`, a
    /// queued task is moved (1.17.0 and later: the server removes it from every other queue in the
    /// same call; an older server refuses, see [`Error::is_same_status_refusal`]). With `force`
    /// the server skips its status check: before 1.17.0 the task is added to `queue` and stays in
    /// its other queues.
    ///
    /// NB: never re-sent blindly. After a lost reply the enqueue may have happened, and a second
    /// `tasks.enqueue` of a task already in that queue fails with 706, on which the server reverts
    /// the task's status and wipes the status message (where the agent records the origin queue).
    /// So after a transport error the task is read first (until a read succeeds), and the enqueue
    /// is sent again only if it did not happen.
    pub async fn enqueue(
        &self,
        task: &str,
        queue: &str,
        reason: &str,
        message: &str,
        force: bool,
    ) -> Result<()> {
        let mut body = json!({
            "task": task, "queue": queue,
            "status_reason": reason, "status_message": message,
        });
        if force {
            body["force"] = json!(true);
        }
        let opts = &self.inner.options;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut err = match self.call_once("tasks.enqueue", &body).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_api(400, subcode::TASK_ALREADY_QUEUED) => return Ok(()),
                Err(e) if e.is_retryable() && attempt < opts.attempts => e,
                Err(e) => return Err(e),
            };
            // did it happen? (read again while the reads fail: sending again blindly could wipe
            // the status message of a task the first send did enqueue)
            let fields = ["id", "status", "execution.queue", "status_message"];
            loop {
                tokio::time::sleep(backoff(opts, attempt)).await;
                match self.tasks(&[task.to_string()], &fields).await {
                    Ok(docs) => {
                        let happened = docs.first().is_some_and(|doc| {
                            doc.status.as_deref() == Some("queued")
                                && doc.execution.as_ref().and_then(|e| e.queue.as_deref())
                                    == Some(queue)
                                && doc.status_message.as_deref() == Some(message)
                        });
                        if happened {
                            tracing::debug!(%task, error = %err, "the enqueue happened before its reply was lost");
                            return Ok(());
                        }
                        break;
                    }
                    Err(e) if e.is_retryable() && attempt < opts.attempts => {
                        attempt += 1;
                        err = e;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Whether `task` has an entry in `queue` (reads all of the queue's entries; for rare paths).
    pub async fn queue_contains(&self, queue: &str, task: &str) -> Result<bool> {
        let body = json!({
            "id": [queue],
            "only_fields": ["id", "entries"],
            "search_hidden": true,
        });
        Ok(self
            .get_queues(&body)
            .await?
            .iter()
            .flat_map(|q| q.entries.iter())
            .any(|e| e.task == task))
    }

    /// Removes a task from a queue; a task no longer there is success.
    pub async fn remove_from_queue(&self, queue: &str, task: &str) -> Result<()> {
        let body = json!({"queue": queue, "task": task});
        match self.call_value("queues.remove_task", &body).await {
            Err(e) if e.is_api(400, subcode::TASK_NOT_QUEUED) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Marks a task failed (forced: from any status) with a reason shown in the UI.
    pub async fn fail_task(&self, task: &str, reason: &str, message: &str) -> Result<()> {
        let body = json!({
            "task": task, "force": true,
            "status_reason": reason, "status_message": message,
        });
        self.call_value("tasks.failed", &body).await.map(|_| ())
    }

    /// Writes a task's status message (e.g. why its pod is pending).
    pub async fn set_status_message(&self, task: &str, message: &str) -> Result<()> {
        let body = json!({"task": task, "status_message": message});
        self.call_value("tasks.update", &body).await.map(|_| ())
    }

    /// Names of the projects `ids` (hidden ones included), as `(id, name)`.
    pub async fn project_names(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        let body = json!({"id": ids, "only_fields": ["id", "name"], "search_hidden": true});
        let data = self.call_value("projects.get_all", &body).await?;
        Ok(data
            .get("projects")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.get("id")?.as_str()?.to_string(),
                    p.get("name")?.as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// Registers the agent as a worker listening on `queues`.
    pub async fn register_worker(
        &self,
        worker: &str,
        queues: &[String],
        timeout_secs: u64,
    ) -> Result<()> {
        let body = json!({"worker": worker, "queues": queues, "timeout": timeout_secs});
        self.call_value("workers.register", &body).await.map(|_| ())
    }

    /// Periodic worker status report.
    pub async fn status_report(&self, worker: &str, queues: &[String]) -> Result<()> {
        let body = json!({
            "worker": worker,
            "timestamp": chrono_millis(),
            "queues": queues,
        });
        self.call_value("workers.status_report", &body)
            .await
            .map(|_| ())
    }

    /// Unregisters the worker (on shutdown).
    pub async fn unregister_worker(&self, worker: &str) -> Result<()> {
        self.call_value("workers.unregister", &json!({"worker": worker}))
            .await
            .map(|_| ())
    }

    /// Orchestration-dashboard report of the GPUs this agent offers.
    pub async fn cluster_report(
        &self,
        worker: &str,
        key: &str,
        max_gpus: u32,
        interval_secs: u64,
    ) -> Result<()> {
        let body = json!({
            "worker": worker,
            "key": key,
            "partial": false,
            "timestamp": chrono_millis(),
            "timeout": 2 * interval_secs,
            "resource_groups": [],
            "properties": {"max_gpus": max_gpus},
        });
        self.call_value("workers.cluster_report", &body)
            .await
            .map(|_| ())
    }

    /// Adds log lines to tasks' consoles (one json-lines batch; `(task, level, message)`).
    pub async fn log_events(&self, worker: &str, lines: &[(String, &str, String)]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let now = chrono_millis();
        let mut body = String::new();
        for (task, level, msg) in lines {
            let ev = json!({"type": "log", "task": task, "level": level, "worker": worker,
                            "msg": msg, "timestamp": now});
            body.push_str(&ev.to_string());
            body.push('\n');
        }
        let token = self.token().await?;
        let req = self
            .inner
            .http
            .post(format!(
                "{}/v{API_VERSION}/events.add_batch",
                self.inner.base
            ))
            .bearer_auth(token)
            .header("Content-Type", "application/json-lines")
            .body(body);
        // Best effort: a lost log line is not worth a retry loop.
        let result = self.send("events.add_batch", req).await;
        result.map(|_| ())
    }
}

impl TaskDoc {
    /// What rendering needs of this task: its id, name, project (its name where `projects`
    /// knows it, else its id) and container, for the launch `launch_id`.
    pub fn render_params(
        &self,
        launch_id: &str,
        projects: &std::collections::HashMap<String, String>,
    ) -> clearml_agent_core::render::TaskParams {
        let container = self.container.clone().unwrap_or_default();
        let project = self.project.clone().unwrap_or_default();
        clearml_agent_core::render::TaskParams {
            id: self.id.clone(),
            name: self.name.clone().unwrap_or_default(),
            project: projects.get(&project).cloned().unwrap_or(project),
            image: container.image.unwrap_or_default(),
            arguments: container.arguments.unwrap_or_default(),
            setup_shell_script: container.setup_shell_script.unwrap_or_default(),
            launch_id: launch_id.to_string(),
            project_id: self.project.clone().unwrap_or_default(),
            user: match &self.user {
                Some(serde_json::Value::String(id)) => id.clone(),
                Some(other) => other
                    .get("id")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            },
            properties: self
                .hyperparams
                .as_ref()
                .and_then(|h| h.get("properties"))
                .and_then(serde_json::Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .filter_map(|(k, v)| {
                            let value = v.get("value")?;
                            let text = match value {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            Some((k.clone(), text))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
