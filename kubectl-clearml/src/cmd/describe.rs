//! `kubectl clearml describe task ID`: DescribeTask → the task, why it is pending (first, where
//! it cannot be missed), its Job and the Job's conditions (Job mode), its pods with node, reason
//! and exit code, and recent events.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use clearml_agent_proto::v1::{DescribeTaskRequest, Event, JobDetail, PodDetail, TaskDetail};
use serde::Serialize;

use super::{
    age, rpc_error,
    tasks::{TaskView, to_view as task_view},
    to_time,
};
use crate::{
    connect::Ctx,
    output::{self, Tabular, or_none, write_columns},
};

/// Runs `describe task`.
pub async fn run(id: &str, ctx: &Ctx) -> anyhow::Result<()> {
    let mut agent = ctx.agent().await?;
    let detail = agent
        .describe_task(DescribeTaskRequest { id: id.to_string() })
        .await
        .map_err(rpc_error)?
        .into_inner();
    output::print(&to_view(detail, Utc::now()), ctx.global.output)?;
    Ok(())
}

/// A task in detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskDetailView {
    /// The task.
    pub task: Option<TaskView>,
    /// Its pods.
    pub pods: Vec<PodView>,
    /// Recent Kubernetes events of its pods.
    pub events: Vec<EventView>,
    /// Why it was put back in its queue so far, oldest first.
    pub retries: Vec<String>,
    /// How a multi-node task starts whole (`kueue (LocalQueue …)`, `agent (gangTimeoutSeconds
    /// …)`), empty for one pod.
    pub gang: String,
    /// Its Job (Job mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
    /// When it was read (for ages).
    #[serde(skip)]
    pub now: DateTime<Utc>,
}

/// One pod of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Rank (multi-node), 0 otherwise.
    pub rank: u32,
    /// Pod phase.
    pub phase: String,
    /// Node it runs on.
    pub node: String,
    /// Container or scheduler reason.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// Exit code of the task container, once terminated.
    pub exit_code: Option<i32>,
}

/// A task's Job (Job mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// Job name.
    pub name: String,
    /// Pods running.
    pub active: u32,
    /// Pods succeeded.
    pub succeeded: u32,
    /// Pods failed (counted by the Job).
    pub failed: u32,
    /// Its conditions.
    pub conditions: Vec<JobConditionView>,
}

/// One condition of a Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobConditionView {
    /// `Complete`, `Failed`, `FailureTarget`, `SuccessCriteriaMet`, `Suspended`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// Reason (`BackoffLimitExceeded`, `DeadlineExceeded`, `PodFailurePolicy`, …).
    pub reason: String,
    /// Message.
    pub message: String,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
}

fn job_view(j: JobDetail) -> JobView {
    JobView {
        name: j.name,
        active: j.active,
        succeeded: j.succeeded,
        failed: j.failed,
        conditions: j
            .conditions
            .into_iter()
            .map(|c| JobConditionView {
                since: to_time(c.since.as_ref()),
                type_: c.r#type,
                status: c.status,
                reason: c.reason,
                message: c.message,
            })
            .collect(),
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Who reported it (`default-scheduler`, `kubelet`); empty from an agent that does not say.
    pub source: String,
    /// The object it is about.
    pub object: String,
    /// Message.
    pub message: String,
    /// How often it happened.
    pub count: u32,
    /// Last time.
    pub last_seen: Option<DateTime<Utc>>,
}

/// Converts the proto answer.
pub fn to_view(d: TaskDetail, now: DateTime<Utc>) -> TaskDetailView {
    TaskDetailView {
        task: d.task.map(task_view),
        pods: d.pods.into_iter().map(pod_view).collect(),
        events: d.events.into_iter().map(event_view).collect(),
        retries: d.retries,
        gang: d.gang,
        job: d.job.map(job_view),
        now,
    }
}

fn pod_view(p: PodDetail) -> PodView {
    PodView {
        name: p.name,
        rank: p.rank,
        phase: p.phase,
        node: p.node,
        reason: p.reason,
        message: p.message,
        exit_code: p.exit_code,
    }
}

fn event_view(e: Event) -> EventView {
    EventView {
        last_seen: to_time(e.last_seen.as_ref()),
        type_: e.r#type,
        reason: e.reason,
        source: e.source,
        object: e.object,
        message: e.message,
        count: e.count,
    }
}

impl Tabular for TaskDetailView {
    fn write_table(&self, wide: bool, out: &mut dyn Write) -> io::Result<()> {
        if let Some(t) = &self.task {
            if !t.pending_reason.is_empty() {
                writeln!(out, "PENDING:  {}", t.pending_reason)?;
                writeln!(out)?;
            }
            for (label, value) in [
                ("ID:", t.id.clone()),
                ("Name:", or_none(&t.name)),
                ("Queue:", t.queue.clone()),
                ("Phase:", t.phase.clone()),
                ("Age:", age(t.created, self.now)),
            ] {
                writeln!(out, "{label:<10}{value}")?;
            }
        }
        if !self.gang.is_empty() {
            writeln!(out, "{:<10}{}", "Gang:", self.gang)?;
        }
        if !self.retries.is_empty() {
            writeln!(
                out,
                "{:<10}{} ({})",
                "Retries:",
                self.retries.len(),
                self.retries.join(", ")
            )?;
        }
        if let Some(j) = &self.job {
            writeln!(
                out,
                "{:<10}{} (active {}, succeeded {}, failed {})",
                "Job:", j.name, j.active, j.succeeded, j.failed
            )?;
            for c in &j.conditions {
                let reason = if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(" {}", c.reason)
                };
                let message = if c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.message)
                };
                writeln!(
                    out,
                    "  {}={}{reason} ({}){message}",
                    c.type_,
                    c.status,
                    age(c.since, self.now)
                )?;
            }
        }
        writeln!(out)?;
        if self.pods.is_empty() {
            writeln!(out, "Pods:     <none>")?;
        } else {
            writeln!(out, "Pods:")?;
            let mut headers = vec!["NAME", "RANK", "PHASE", "NODE", "EXIT", "REASON"];
            if wide {
                headers.push("MESSAGE");
            }
            let rows: Vec<Vec<String>> = self
                .pods
                .iter()
                .map(|p| {
                    let mut row = vec![
                        p.name.clone(),
                        p.rank.to_string(),
                        p.phase.clone(),
                        or_none(&p.node),
                        p.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                        or_none(&p.reason),
                    ];
                    if wide {
                        row.push(or_none(&p.message));
                    }
                    row
                })
                .collect();
            write_indented(&headers, &rows, out)?;
            if !wide {
                for p in self.pods.iter().filter(|p| !p.message.is_empty()) {
                    writeln!(out, "  {}: {}", p.name, p.message)?;
                }
            }
        }
        writeln!(out)?;
        if self.events.is_empty() {
            return writeln!(out, "Events:   <none>");
        }
        writeln!(out, "Events:")?;
        let rows: Vec<Vec<String>> = self
            .events
            .iter()
            .map(|e| {
                let seen = age(e.last_seen, self.now);
                let seen = if e.count > 1 {
                    format!("{seen} (x{})", e.count)
                } else {
                    seen
                };
                // FROM is who reported it, as kubectl describe shows; an older agent does not
                // say, and the object is the next best thing
                let from = if e.source.is_empty() {
                    &e.object
                } else {
                    &e.source
                };
                let mut row = vec![e.type_.clone(), e.reason.clone(), seen, from.clone()];
                if wide {
                    row.push(or_none(&e.object));
                }
                row.push(e.message.clone());
                row
            })
            .collect();
        let headers: &[&str] = if wide {
            &["TYPE", "REASON", "AGE", "FROM", "OBJECT", "MESSAGE"]
        } else {
            &["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
        };
        write_indented(headers, &rows, out)
    }
}

/// A table indented by two spaces under its section title.
fn write_indented(headers: &[&str], rows: &[Vec<String>], out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::new();
    write_columns(headers, rows, &mut buf)?;
    for line in String::from_utf8_lossy(&buf).lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clearml_agent_proto::v1::TaskSummary;

    use super::*;
    use crate::output::OutputFormat;

    fn detail() -> TaskDetailView {
        to_view(
            TaskDetail {
                task: Some(TaskSummary {
                    id: "abc".into(),
                    name: "train".into(),
                    queue: "gpu".into(),
                    phase: "Pending".into(),
                    pods: vec!["clearml-id-abc".into()],
                    pending_reason: "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
                        .into(),
                    created: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: 0,
                    }),
                }),
                pods: vec![PodDetail {
                    name: "clearml-id-abc".into(),
                    phase: "Pending".into(),
                    node: String::new(),
                    reason: "Unschedulable".into(),
                    message: "0/2 nodes are available".into(),
                    exit_code: None,
                    rank: 0,
                }],
                events: vec![
                    Event {
                        reason: "FailedScheduling".into(),
                        message: "0/2 nodes are available".into(),
                        r#type: "Warning".into(),
                        object: "clearml-id-abc".into(),
                        last_seen: Some(prost_types::Timestamp {
                            seconds: 30,
                            nanos: 0,
                        }),
                        count: 3,
                        source: "default-scheduler".into(),
                    },
                    Event {
                        reason: "Pulling".into(),
                        message: "Pulling image \"python:3.11\"".into(),
                        r#type: "Normal".into(),
                        object: "clearml-id-abc".into(),
                        last_seen: Some(prost_types::Timestamp {
                            seconds: 80,
                            nanos: 0,
                        }),
                        count: 1,
                        source: String::new(),
                    },
                ],
                retries: vec!["PreemptionByScheduler".into(), "GangTimeout".into()],
                gang: "agent (gangTimeoutSeconds 120)".into(),
                job: None,
            },
            DateTime::from_timestamp(90, 0).expect("time"),
        )
    }

    #[test]
    fn describe_puts_the_pending_reason_first() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&detail(), OutputFormat::Table, &mut out, &mut err).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with(
                "PENDING:  0/2 nodes are available: 2 Insufficient nvidia.com/gpu.\n\nID:       abc\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  NAME             RANK   PHASE     NODE     EXIT   REASON\n"),
            "{text}"
        );
        assert!(
            text.contains("  clearml-id-abc   0      Pending   <none>   -      Unschedulable\n"),
            "{text}"
        );
        assert!(
            text.contains("Warning   FailedScheduling   60s (x3)"),
            "{text}"
        );
        assert!(
            text.contains(
                "Gang:     agent (gangTimeoutSeconds 120)\nRetries:  2 (PreemptionByScheduler, GangTimeout)\n"
            ),
            "the gang path and the retries so far: {text}"
        );
    }

    /// FROM is the event's source (the scheduler, the kubelet), the object when the agent does
    /// not say (an older agent); `-o wide` adds the object.
    #[test]
    fn describe_events_come_from_their_source() {
        let render = |format| {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            output::render(&detail(), format, &mut out, &mut err).expect("render");
            let text = String::from_utf8(out).expect("utf8");
            text.split("Events:\n").nth(1).expect("events").to_string()
        };
        assert_eq!(
            render(OutputFormat::Table),
            "  TYPE      REASON             AGE        FROM                MESSAGE\n  \
             Warning   FailedScheduling   60s (x3)   default-scheduler   0/2 nodes are available\n  \
             Normal    Pulling            10s        clearml-id-abc      Pulling image \"python:3.11\"\n"
        );
        assert_eq!(
            render(OutputFormat::Wide),
            "  TYPE      REASON             AGE        FROM                OBJECT           MESSAGE\n  \
             Warning   FailedScheduling   60s (x3)   default-scheduler   clearml-id-abc   0/2 nodes are available\n  \
             Normal    Pulling            10s        clearml-id-abc      clearml-id-abc   Pulling image \"python:3.11\"\n"
        );
    }

    #[test]
    fn describe_shows_the_job_and_its_conditions() {
        let mut d = detail();
        d.job = Some(job_view(JobDetail {
            name: "clearml-id-abc".into(),
            active: 0,
            succeeded: 0,
            failed: 1,
            conditions: vec![clearml_agent_proto::v1::JobCondition {
                r#type: "Failed".into(),
                status: "True".into(),
                reason: "PodFailurePolicy".into(),
                message: "Container task for pod ns/p failed with exit code 1".into(),
                since: Some(prost_types::Timestamp {
                    seconds: 60,
                    nanos: 0,
                }),
            }],
        }));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&d, OutputFormat::Table, &mut out, &mut err).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains(
                "Job:      clearml-id-abc (active 0, succeeded 0, failed 1)\n  Failed=True PodFailurePolicy (30s): Container task for pod ns/p failed with exit code 1\n"
            ),
            "{text}"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&detail(), OutputFormat::Table, &mut out, &mut err).expect("render");
        assert!(!String::from_utf8(out).expect("utf8").contains("Job:"));
    }

    #[test]
    fn describe_json_keeps_exit_codes_and_event_type() {
        let mut d = detail();
        d.pods[0].exit_code = Some(137);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&d, OutputFormat::Json, &mut out, &mut err).expect("render");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["pods"][0]["exit_code"], 137);
        assert_eq!(v["events"][0]["type"], "Warning");
        assert_eq!(v["events"][0]["source"], "default-scheduler");
        assert_eq!(v["events"][0]["object"], "clearml-id-abc");
        assert_eq!(
            v["task"]["pending_reason"],
            "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
        );
    }
}
