//! `kubectl clearml queues list|get|add|patch|remove|render`: ListQueues, GetQueue, AddQueue,
//! PatchQueue, RemoveQueue and RenderPod, with their views.

use std::io::{self, Write};

use anyhow::{Context as _, bail};
use clearml_agent_core::values::QueueValues;
use clearml_agent_proto::v1::{
    AddQueueRequest, GetQueueRequest, ListQueuesRequest, PatchQueueRequest, PatchType, Queue,
    QueueSummary, RemoveQueueRequest, RenderPodRequest,
};
use serde::Serialize;
use serde_json::Value;

use super::{queue_spec, rpc_error};
use crate::{
    cli::{PatchKind, QueueSpecArgs, QueuesCommand},
    connect::Ctx,
    output::{self, OutputFormat, Tabular, write_columns},
};

/// Runs a `queues` verb.
pub async fn run(command: QueuesCommand, ctx: &Ctx) -> anyhow::Result<()> {
    let fmt = ctx.global.output;
    match command {
        QueuesCommand::List => {
            let mut agent = ctx.agent().await?;
            let resp = agent
                .list_queues(ListQueuesRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            output::print(&to_list(resp.queues)?, fmt)?;
        }
        QueuesCommand::Get { name } => {
            let mut agent = ctx.agent().await?;
            let queue = agent
                .get_queue(GetQueueRequest { name })
                .await
                .map_err(rpc_error)?
                .into_inner();
            output::print(&to_view(queue)?, fmt)?;
        }
        QueuesCommand::Add { name, spec } => {
            let file = read_spec_file(&spec)?;
            let doc = queue_spec::add_spec(file, &spec);
            // The agent's own schema, before any round trip: errors name the field path.
            QueueValues::from_json(&name, doc.clone())?;
            crate::values_input::print_queue_notices(&name, &doc);
            let mut agent = ctx.agent().await?;
            let queue = agent
                .add_queue(AddQueueRequest {
                    name,
                    spec_json: doc.to_string(),
                    dry_run: spec.dry_run,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_change(queue, "added", spec.dry_run, fmt)?;
        }
        QueuesCommand::Patch {
            name,
            spec,
            patch,
            patch_type,
        } => {
            let mut agent = ctx.agent().await?;
            let request = match patch_type {
                PatchKind::Json => {
                    if queue_spec::has_changes(&spec) || spec.file.is_some() {
                        bail!("--type json takes the whole patch in --patch; drop the other flags");
                    }
                    let Some(text) = patch else {
                        bail!("--type json needs --patch '[{{\"op\": …}}]'");
                    };
                    let doc = parse_doc("--patch", &text)?;
                    if !doc.is_array() {
                        bail!("--patch: a JSON patch is a list of operations");
                    }
                    PatchQueueRequest {
                        name,
                        patch_type: PatchType::Json as i32,
                        patch: doc.to_string(),
                        dry_run: spec.dry_run,
                    }
                }
                PatchKind::Merge => {
                    let mut base = match &patch {
                        Some(text) => Some(parse_doc("--patch", text)?),
                        None => None,
                    };
                    if let Some(file) = read_spec_file(&spec)? {
                        let mut merged = base.take().unwrap_or(Value::Object(Default::default()));
                        crate::values_input::merge(&mut merged, file);
                        base = Some(merged);
                    }
                    if base.is_none() && !queue_spec::has_changes(&spec) {
                        bail!("nothing to change: pass flags (e.g. --max-pods 4), -f or --patch");
                    }
                    let current = if queue_spec::touches_lists(&spec) {
                        let queue = agent
                            .get_queue(GetQueueRequest { name: name.clone() })
                            .await
                            .map_err(rpc_error)?
                            .into_inner();
                        Some(parse_spec(&queue.spec_json)?)
                    } else {
                        None
                    };
                    let doc = queue_spec::merge_patch(base, &spec, current.as_ref());
                    crate::values_input::print_queue_notices(&name, &doc);
                    PatchQueueRequest {
                        name,
                        patch_type: PatchType::Merge as i32,
                        patch: doc.to_string(),
                        dry_run: spec.dry_run,
                    }
                }
            };
            let dry_run = request.dry_run;
            let queue = agent
                .patch_queue(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_change(queue, "patched", dry_run, fmt)?;
        }
        QueuesCommand::Remove { name } => {
            let mut agent = ctx.agent().await?;
            agent
                .remove_queue(RemoveQueueRequest { name: name.clone() })
                .await
                .map_err(rpc_error)?;
            output::print(
                &Removed {
                    name,
                    removed: true,
                },
                fmt,
            )?;
        }
        QueuesCommand::Render { name, task } => {
            let mut agent = ctx.agent().await?;
            let resp = agent
                .render_pod(RenderPodRequest {
                    queue: name,
                    task_id: task.unwrap_or_default(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            output::print(&to_manifests(resp.manifests_yaml)?, fmt)?;
        }
    }
    Ok(())
}

/// One queue: its live counts and its entry in the values schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueView {
    /// Counts (name, id, waiting, pods, GPUs).
    #[serde(flatten)]
    pub summary: QueueSummaryView,
    /// `{"templateOverrides": …, "queueSettings": …}` as the values schema spells it.
    pub spec: Value,
}

/// A queue's live counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueSummaryView {
    /// ClearML queue name.
    pub name: String,
    /// ClearML queue id (empty if the queue does not exist in ClearML yet).
    pub id: String,
    /// Tasks waiting in the ClearML queue.
    pub waiting: u32,
    /// Pods not yet running.
    pub pods_pending: u32,
    /// Pods running.
    pub pods_running: u32,
    /// `maxPods`, `None` when unlimited.
    pub max_pods: Option<u32>,
    /// `nvidia.com/gpu` requested by live pods.
    pub gpus_requested: u32,
    /// Tasks put back at the head of the queue since the agent started.
    pub retries: u32,
    /// Multi-node tasks waiting for their gang now.
    pub gang_waits: u32,
    /// How the queue's multi-node tasks start whole (empty: one-pod tasks).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gang: String,
}

/// Queues, for `queues list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueList {
    /// The queues, as the agent lists them.
    pub queues: Vec<QueueView>,
}

/// Answer of `queues remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// The queue.
    pub name: String,
    /// Always true (errors exit non-zero).
    pub removed: bool,
}

/// Pod manifests, for `queues render` (a `v1` List in JSON, YAML documents otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The pods (and Services) as the agent would create them.
    pub items: Vec<Value>,
}

/// Converts a proto summary.
pub fn to_summary(s: QueueSummary) -> QueueSummaryView {
    QueueSummaryView {
        name: s.name,
        id: s.id,
        waiting: s.waiting,
        pods_pending: s.pods_pending,
        pods_running: s.pods_running,
        max_pods: s.max_pods,
        gpus_requested: s.gpus_requested,
        retries: s.retries,
        gang_waits: s.gang_waits,
        gang: s.gang,
    }
}

/// Converts a proto queue (its `spec_json` must be JSON).
pub fn to_view(q: Queue) -> anyhow::Result<QueueView> {
    let spec = parse_spec(&q.spec_json).with_context(|| format!("queue {}", q.name))?;
    let mut summary = q.summary.map(to_summary).unwrap_or_default();
    summary.name = q.name;
    if summary.id.is_empty() {
        summary.id = q.id;
    }
    Ok(QueueView { summary, spec })
}

/// Converts a list of proto queues.
pub fn to_list(queues: Vec<Queue>) -> anyhow::Result<QueueList> {
    Ok(QueueList {
        queues: queues.into_iter().map(to_view).collect::<Result<_, _>>()?,
    })
}

/// Parses `RenderPod`'s YAML documents.
pub fn to_manifests(docs: Vec<String>) -> anyhow::Result<Manifests> {
    let mut items = Vec::new();
    for text in docs {
        let parsed: Vec<Value> = clearml_agent_core::yaml::from_str_multi(&text)
            .context("the agent sent a manifest that is not YAML")?;
        items.extend(parsed);
    }
    Ok(Manifests { items })
}

fn parse_spec(text: &str) -> anyhow::Result<Value> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).context("the agent sent a queue spec that is not JSON")
}

/// Parses a YAML or JSON document given on the command line or in a file.
fn parse_doc(what: &str, text: &str) -> anyhow::Result<Value> {
    clearml_agent_core::yaml::from_str(text)
        .with_context(|| format!("{what}: not valid JSON or YAML"))
}

fn read_spec_file(spec: &QueueSpecArgs) -> anyhow::Result<Option<Value>> {
    let Some(path) = &spec.file else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc = parse_doc(&path.display().to_string(), &text)?;
    if !(doc.is_object() || doc.is_null()) {
        bail!("{}: a queue entry must be a mapping", path.display());
    }
    Ok((!doc.is_null()).then_some(doc))
}

/// `queue/NAME added` for people; the queue itself for programs.
fn print_change(queue: Queue, verb: &str, dry_run: bool, fmt: OutputFormat) -> anyhow::Result<()> {
    let view = to_view(queue)?;
    if fmt.is_machine() {
        output::print(&view, fmt)?;
    } else {
        let suffix = if dry_run { " (dry run)" } else { "" };
        let mut out = io::stdout().lock();
        writeln!(out, "queue/{} {verb}{suffix}", view.summary.name)?;
        out.flush()?;
    }
    Ok(())
}

/// `-` for an absent number.
fn opt(n: Option<u32>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// A queue's GPUs per pod and default image, read from its spec (wide columns).
fn spec_columns(spec: &Value) -> [String; 2] {
    let gpus = spec
        .pointer("/templateOverrides/resources/limits/nvidia.com~1gpu")
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "-".into());
    let image = spec
        .pointer("/queueSettings/defaultImage")
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_string();
    [gpus, image]
}

/// Table columns of queue summaries (shared with `status`).
pub fn summary_headers() -> Vec<&'static str> {
    vec!["NAME", "WAITING", "PENDING", "RUNNING", "MAX PODS", "GPUS"]
}

/// One table row of a queue summary.
pub fn summary_row(s: &QueueSummaryView) -> Vec<String> {
    vec![
        s.name.clone(),
        s.waiting.to_string(),
        s.pods_pending.to_string(),
        s.pods_running.to_string(),
        opt(s.max_pods),
        s.gpus_requested.to_string(),
    ]
}

fn write_queues(queues: &[QueueView], wide: bool, out: &mut dyn Write) -> io::Result<()> {
    let mut headers = summary_headers();
    if wide {
        headers.extend(["ID", "GPUS/POD", "DEFAULT IMAGE"]);
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let mut row = summary_row(&q.summary);
            if wide {
                row.push(output::or_none(&q.summary.id));
                row.extend(spec_columns(&q.spec));
            }
            row
        })
        .collect();
    write_columns(&headers, &rows, out)
}

impl Tabular for QueueList {
    fn write_table(&self, wide: bool, out: &mut dyn Write) -> io::Result<()> {
        write_queues(&self.queues, wide, out)
    }

    fn empty_message(&self) -> Option<String> {
        self.queues
            .is_empty()
            .then(|| "No queues configured.".to_string())
    }
}

impl Tabular for QueueView {
    fn write_table(&self, wide: bool, out: &mut dyn Write) -> io::Result<()> {
        write_queues(std::slice::from_ref(self), wide, out)
    }
}

impl Tabular for Removed {
    fn write_table(&self, _wide: bool, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "queue/{} removed", self.name)
    }
}

impl Serialize for Manifests {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": self.items}).serialize(s)
    }
}

impl Tabular for Manifests {
    fn write_table(&self, _wide: bool, out: &mut dyn Write) -> io::Result<()> {
        for item in &self.items {
            let text = clearml_agent_core::yaml::to_string(item).map_err(io::Error::other)?;
            write!(out, "---\n{text}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, spec: &str, max_pods: Option<u32>) -> Queue {
        Queue {
            name: name.into(),
            id: format!("id-{name}"),
            spec_json: spec.into(),
            summary: Some(QueueSummary {
                name: name.into(),
                id: format!("id-{name}"),
                waiting: 3,
                pods_pending: 1,
                pods_running: 2,
                max_pods,
                gpus_requested: 4,
                ..Default::default()
            }),
        }
    }

    fn render(view: &(impl Serialize + Tabular), fmt: OutputFormat) -> String {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(view, fmt, &mut out, &mut err).expect("render");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn queue_list_table_shows_counts_and_limits() {
        let list = to_list(vec![
            queue(
                "2xGPU",
                r#"{"templateOverrides":{"resources":{"limits":{"nvidia.com/gpu":"2"}}}}"#,
                Some(10),
            ),
            queue("cpu", "{}", None),
        ])
        .expect("views");
        assert_eq!(
            render(&list, OutputFormat::Table),
            "NAME    WAITING   PENDING   RUNNING   MAX PODS   GPUS\n\
             2xGPU   3         1         2         10         4\n\
             cpu     3         1         2         -          4\n"
        );
        let wide = render(&list, OutputFormat::Wide);
        let row = wide.lines().nth(1).expect("row");
        assert!(
            row.contains("id-2xGPU") && row.ends_with("2          -"),
            "{row}"
        );
    }

    #[test]
    fn queue_json_is_flat_snake_case_with_the_spec_as_data() {
        let view = to_view(queue(
            "red",
            r#"{"queueSettings":{"maxPods":10}}"#,
            Some(10),
        ))
        .expect("view");
        let v: Value = serde_json::from_str(&render(&view, OutputFormat::Json)).expect("json");
        assert_eq!(v["name"], "red");
        assert_eq!(v["pods_pending"], 1);
        assert_eq!(v["max_pods"], 10);
        assert_eq!(v["spec"]["queueSettings"]["maxPods"], 10);
    }

    #[test]
    fn a_spec_that_is_not_json_is_an_error_naming_the_queue() {
        let err = to_view(queue("bad", "{", None)).expect_err("not JSON");
        assert!(format!("{err:#}").starts_with("queue bad"), "{err:#}");
        // An empty spec means an empty entry.
        assert_eq!(
            to_view(queue("e", "", None)).expect("view").spec,
            serde_json::json!({})
        );
    }

    #[test]
    fn rendered_pods_print_as_yaml_documents_or_a_json_list() {
        let m = to_manifests(vec![
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n".into(),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n".into(),
        ])
        .expect("yaml");
        assert_eq!(m.items.len(), 3);
        let text = render(&m, OutputFormat::Table);
        let back: Vec<Value> = clearml_agent_core::yaml::from_str_multi(&text).expect("docs");
        assert_eq!(back, m.items);
        let v: Value = serde_json::from_str(&render(&m, OutputFormat::Json)).expect("json");
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"][2]["kind"], "Service");
    }
}
