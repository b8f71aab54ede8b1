//! `kubectl clearml tasks [--queue Q]`: ListTasks → one row per task with its pods' phase and,
//! for a task not running yet, why.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use clearml_agent_proto::v1::{ListTasksRequest, TaskSummary};
use serde::Serialize;

use super::{age, rpc_error, to_time};
use crate::{
    cli::TasksArgs,
    connect::Ctx,
    output::{self, Tabular, or_none, write_columns},
};

/// Runs `tasks`.
pub async fn run(args: TasksArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let mut agent = ctx.agent().await?;
    let resp = agent
        .list_tasks(ListTasksRequest {
            queue: args.queue.unwrap_or_default(),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let view = TaskList {
        tasks: resp.tasks.into_iter().map(to_view).collect(),
        now: Utc::now(),
    };
    output::print(&view, ctx.global.output)?;
    Ok(())
}

/// One task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskView {
    /// ClearML task id.
    pub id: String,
    /// Task name.
    pub name: String,
    /// Queue it came from.
    pub queue: String,
    /// Pending, Running, Succeeded, Failed or Unknown.
    pub phase: String,
    /// Its pods.
    pub pods: Vec<String>,
    /// Why it is not running yet (empty when it is).
    pub pending_reason: String,
    /// When it was launched.
    pub created: Option<DateTime<Utc>>,
}

/// Tasks, for `tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskList {
    /// The tasks.
    pub tasks: Vec<TaskView>,
    /// When the list was read (for ages).
    #[serde(skip)]
    pub now: DateTime<Utc>,
}

/// Converts a proto task summary.
pub fn to_view(t: TaskSummary) -> TaskView {
    TaskView {
        created: to_time(t.created.as_ref()),
        id: t.id,
        name: t.name,
        queue: t.queue,
        phase: t.phase,
        pods: t.pods,
        pending_reason: t.pending_reason,
    }
}

impl Tabular for TaskList {
    fn write_table(&self, wide: bool, out: &mut dyn Write) -> io::Result<()> {
        let mut headers = vec!["ID", "NAME", "QUEUE", "PHASE", "PODS", "AGE", "REASON"];
        if wide {
            headers.push("POD NAMES");
        }
        let rows: Vec<Vec<String>> = self
            .tasks
            .iter()
            .map(|t| {
                let mut row = vec![
                    t.id.clone(),
                    or_none(&t.name),
                    t.queue.clone(),
                    t.phase.clone(),
                    t.pods.len().to_string(),
                    age(t.created, self.now),
                    or_none(&t.pending_reason),
                ];
                if wide {
                    row.push(or_none(&t.pods.join(",")));
                }
                row
            })
            .collect();
        write_columns(&headers, &rows, out)
    }

    fn empty_message(&self) -> Option<String> {
        self.tasks.is_empty().then(|| "No tasks found.".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::OutputFormat;

    fn list() -> TaskList {
        TaskList {
            tasks: vec![
                to_view(TaskSummary {
                    id: "a1".into(),
                    name: "train".into(),
                    queue: "gpu".into(),
                    phase: "Pending".into(),
                    pods: vec!["clearml-id-a1".into()],
                    pending_reason: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu".into(),
                    created: Some(prost_types::Timestamp {
                        seconds: 1_000,
                        nanos: 0,
                    }),
                }),
                to_view(TaskSummary {
                    id: "b2".into(),
                    queue: "cpu".into(),
                    phase: "Running".into(),
                    ..Default::default()
                }),
            ],
            now: DateTime::from_timestamp(1_600, 0).expect("time"),
        }
    }

    #[test]
    fn tasks_table_shows_phase_age_and_pending_reason() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&list(), OutputFormat::Table, &mut out, &mut err).expect("render");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "ID   NAME     QUEUE   PHASE     PODS   AGE         REASON\n\
             a1   train    gpu     Pending   1      10m         0/3 nodes are available: 3 Insufficient nvidia.com/gpu\n\
             b2   <none>   cpu     Running   0      <unknown>   <none>\n"
        );
    }

    #[test]
    fn tasks_json_lists_pods_and_times() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&list(), OutputFormat::Json, &mut out, &mut err).expect("render");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["tasks"][0]["pods"][0], "clearml-id-a1");
        assert_eq!(v["tasks"][0]["created"], "1970-01-01T00:16:40Z");
        assert!(v["tasks"][1]["created"].is_null());
    }
}
