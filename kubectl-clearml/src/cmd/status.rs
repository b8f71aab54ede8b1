//! `kubectl clearml status`: GetStatus → agent version, leadership, ClearML connectivity, GPU
//! reporting and per-queue load.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use clearml_agent_proto::v1::{GetStatusRequest, GetStatusResponse, clearml_connection::State};
use serde::Serialize;

use super::{
    age,
    queues::{QueueSummaryView, summary_headers, summary_row, to_summary},
    rpc_error, to_time,
};
use crate::{
    connect::Ctx,
    output::{self, Tabular, write_columns},
};

/// Runs `status`.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut agent = ctx.agent().await?;
    let resp = agent
        .get_status(GetStatusRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    output::print(&to_view(resp, Utc::now()), ctx.global.output)?;
    Ok(())
}

/// The agent's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    /// Agent version.
    pub version: String,
    /// Whether this replica dispatches.
    pub leader: bool,
    /// The agent's namespace.
    pub namespace: String,
    /// The agent's ClearML worker id.
    pub worker_id: String,
    /// ClearML connectivity.
    pub clearml: ClearmlView,
    /// GPUs reported to the dashboard; `None` when reporting is off.
    pub gpu_reporting_max_gpus: Option<u32>,
    /// Per-queue load.
    pub queues: Vec<QueueSummaryView>,
    /// Whether the ClearML server's TLS certificate is verified (`None`: an agent too old to say).
    pub tls: Option<TlsView>,
    /// Keys of the values in force accepted without effect, one line each (`path: why`).
    pub notices: Vec<String>,
    /// The PodGroup API the cluster serves (empty: none).
    pub pod_group_api: String,
    /// When the status was read (for ages in the table).
    #[serde(skip)]
    pub now: DateTime<Utc>,
}

/// ClearML connectivity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClearmlView {
    /// `ok`, `degraded`, `down` or `unknown`.
    pub state: String,
    /// The API server URL.
    pub api_server: String,
    /// The last error, empty when healthy.
    pub last_error: String,
    /// The last successful call.
    pub last_success: Option<DateTime<Utc>>,
    /// The ClearML server's version (empty before the agent's first login).
    pub server_version: String,
    /// How the agent takes tasks from their queues on that server.
    pub take_protocol: String,
}

/// TLS verification of the ClearML server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TlsView {
    /// The agent's own calls.
    pub agent_verifies: bool,
    /// Task pods.
    pub tasks_verify: bool,
}

/// Converts the proto answer.
pub fn to_view(resp: GetStatusResponse, now: DateTime<Utc>) -> StatusView {
    let clearml = resp.clearml.unwrap_or_default();
    let state = match State::try_from(clearml.state).unwrap_or(State::Unspecified) {
        State::Ok => "ok",
        State::Degraded => "degraded",
        State::Down => "down",
        State::Unspecified => "unknown",
    };
    StatusView {
        version: resp.version,
        leader: resp.leader,
        namespace: resp.namespace,
        worker_id: resp.worker_id,
        clearml: ClearmlView {
            state: state.into(),
            api_server: clearml.api_server,
            last_error: clearml.last_error,
            last_success: to_time(clearml.last_success.as_ref()),
            server_version: clearml.server_version,
            take_protocol: clearml.take_protocol,
        },
        gpu_reporting_max_gpus: resp.gpu_reporting.and_then(|g| g.max_gpus),
        queues: resp.queues.into_iter().map(to_summary).collect(),
        tls: resp.tls.map(|t| TlsView {
            agent_verifies: t.agent_verifies,
            tasks_verify: t.tasks_verify,
        }),
        notices: resp
            .notices
            .into_iter()
            .map(|n| format!("{}: {}", n.path, n.message))
            .collect(),
        pod_group_api: resp.pod_group_api,
        now,
    }
}

impl Tabular for StatusView {
    fn write_table(&self, wide: bool, out: &mut dyn Write) -> io::Result<()> {
        let role = if self.leader { "leader" } else { "standby" };
        let gpu = match self.gpu_reporting_max_gpus {
            Some(n) => format!("{n} GPUs"),
            None => "off".into(),
        };
        let mut clearml = format!(
            "{} {}",
            self.clearml.state.to_uppercase(),
            self.clearml.api_server
        );
        if self.clearml.last_success.is_some() {
            clearml.push_str(&format!(
                " (last success {} ago)",
                age(self.clearml.last_success, self.now)
            ));
        }
        let mut lines = vec![
            ("Agent:", format!("{} ({role})", self.version)),
            ("Namespace:", self.namespace.clone()),
            ("Worker ID:", self.worker_id.clone()),
            ("ClearML:", clearml),
        ];
        if !self.clearml.server_version.is_empty() {
            lines.push((
                "Server:",
                format!(
                    "{} (takes tasks by {})",
                    self.clearml.server_version, self.clearml.take_protocol
                ),
            ));
        }
        if !self.clearml.last_error.is_empty() {
            lines.push(("Last error:", self.clearml.last_error.clone()));
        }
        lines.push(("GPU report:", gpu));
        if let Some(tls) = self.tls {
            let word = |on: bool| if on { "verified" } else { "NOT verified" };
            let text = if tls.agent_verifies == tls.tasks_verify {
                format!("{} (agent and task pods)", word(tls.agent_verifies))
            } else {
                format!(
                    "agent: {}, task pods: {}",
                    word(tls.agent_verifies),
                    word(tls.tasks_verify)
                )
            };
            lines.push(("TLS:", text));
        }
        lines.push((
            "Gangs:",
            if self.pod_group_api.is_empty() {
                "no PodGroup API in this cluster: multi-node tasks use the agent's gang timeout (or Kueue)".into()
            } else {
                format!(
                    "PodGroup API {}: the scheduler starts multi-node tasks whole",
                    self.pod_group_api
                )
            },
        ));
        for (label, value) in lines {
            writeln!(out, "{label:<12}{value}")?;
        }
        if !self.notices.is_empty() {
            writeln!(out, "\nValues accepted without effect here:")?;
            for n in &self.notices {
                writeln!(out, "  {n}")?;
            }
        }
        writeln!(out)?;
        if self.queues.is_empty() {
            return writeln!(out, "No queues configured.");
        }
        let rows: Vec<Vec<String>> = self
            .queues
            .iter()
            .map(|q| {
                let mut row = summary_row(q);
                row.extend([q.retries.to_string(), q.gang_waits.to_string()]);
                if wide {
                    row.push(if q.gang.is_empty() {
                        "-".into()
                    } else {
                        q.gang.clone()
                    });
                }
                row
            })
            .collect();
        let mut headers = summary_headers();
        headers.extend(["RETRIES", "GANG WAITS"]);
        if wide {
            headers.push("GANG");
        }
        write_columns(&headers, &rows, out)
    }
}

#[cfg(test)]
mod tests {
    use clearml_agent_proto::v1::{
        ClearmlConnection, GpuReporting, Notice, QueueSummary, TlsVerification,
    };

    use super::*;
    use crate::output::OutputFormat;

    fn sample() -> StatusView {
        let now = DateTime::from_timestamp(1_700_000_100, 0).expect("time");
        to_view(
            GetStatusResponse {
                version: "0.1.0".into(),
                leader: true,
                clearml: Some(ClearmlConnection {
                    state: State::Degraded as i32,
                    api_server: "https://api.example".into(),
                    last_error: "timeout".into(),
                    last_success: Some(prost_types::Timestamp {
                        seconds: 1_700_000_058,
                        nanos: 0,
                    }),
                    server_version: "1.16.2 (API 2.30)".into(),
                    take_protocol: "enqueue-then-remove".into(),
                }),
                queues: vec![QueueSummary {
                    name: "gpu".into(),
                    id: "q1".into(),
                    waiting: 5,
                    pods_pending: 1,
                    pods_running: 3,
                    max_pods: Some(4),
                    gpus_requested: 8,
                    retries: 2,
                    gang_waits: 1,
                    gang: "native (PodGroup scheduling.k8s.io/v1beta1)".into(),
                }],
                gpu_reporting: Some(GpuReporting { max_gpus: Some(16) }),
                namespace: "clearml".into(),
                worker_id: "k8s-agent:clearml".into(),
                pod_group_api: "scheduling.k8s.io/v1beta1".into(),
                ..Default::default()
            },
            now,
        )
    }

    #[test]
    fn status_table_leads_with_health_then_queue_load() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&sample(), OutputFormat::Table, &mut out, &mut err).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "Agent:      0.1.0 (leader)\n\
             Namespace:  clearml\n\
             Worker ID:  k8s-agent:clearml\n\
             ClearML:    DEGRADED https://api.example (last success 42s ago)\n\
             Server:     1.16.2 (API 2.30) (takes tasks by enqueue-then-remove)\n\
             Last error: timeout\n\
             GPU report: 16 GPUs\n\
             Gangs:      PodGroup API scheduling.k8s.io/v1beta1: the scheduler starts multi-node tasks whole\n\
             \n\
             NAME   WAITING   PENDING   RUNNING   MAX PODS   GPUS   RETRIES   GANG WAITS\n\
             gpu    5         1         3         4          8      2         1\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&sample(), OutputFormat::Wide, &mut out, &mut err).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.ends_with(
                "GANG WAITS   GANG\n\
                 gpu    5         1         3         4          8      2         1            native (PodGroup scheduling.k8s.io/v1beta1)\n"
            ),
            "{text}"
        );
        let mut none = sample();
        none.pod_group_api.clear();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&none, OutputFormat::Table, &mut out, &mut err).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("Gangs:      no PodGroup API in this cluster: multi-node tasks use the agent's gang timeout (or Kueue)\n"),
            "{text}"
        );
    }

    #[test]
    fn status_json_is_stable_snake_case() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&sample(), OutputFormat::Json, &mut out, &mut err).expect("render");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["clearml"]["state"], "degraded");
        assert_eq!(v["clearml"]["server_version"], "1.16.2 (API 2.30)");
        assert_eq!(v["clearml"]["take_protocol"], "enqueue-then-remove");
        assert_eq!(v["clearml"]["last_success"], "2023-11-14T22:14:18Z");
        assert_eq!(v["gpu_reporting_max_gpus"], 16);
        assert_eq!(v["queues"][0]["pods_running"], 3);
        assert_eq!(
            v["queues"][0]["gang"],
            "native (PodGroup scheduling.k8s.io/v1beta1)"
        );
        assert_eq!(v["pod_group_api"], "scheduling.k8s.io/v1beta1");
        assert!(v.get("now").is_none());
    }

    #[test]
    fn status_states_tls_verification_and_lists_the_notices() {
        let mut resp = GetStatusResponse {
            tls: Some(TlsVerification {
                agent_verifies: false,
                tasks_verify: false,
            }),
            notices: vec![Notice {
                path: "agentk8sglue.useOwnerToken".into(),
                message: "task pods use the agent's key pair".into(),
            }],
            ..Default::default()
        };
        let v = to_view(resp.clone(), Utc::now());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&v, OutputFormat::Table, &mut out, &mut err).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("TLS:        NOT verified (agent and task pods)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Values accepted without effect here:\n  agentk8sglue.useOwnerToken: task pods use the agent's key pair\n"
            ),
            "{text}"
        );
        resp.tls = Some(TlsVerification {
            agent_verifies: true,
            tasks_verify: false,
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(
            &to_view(resp, Utc::now()),
            OutputFormat::Table,
            &mut out,
            &mut err,
        )
        .expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("TLS:        agent: verified, task pods: NOT verified\n"),
            "{text}"
        );
    }

    #[test]
    fn missing_fields_read_as_unknown_and_off() {
        let v = to_view(GetStatusResponse::default(), Utc::now());
        assert_eq!(v.clearml.state, "unknown");
        assert_eq!(v.gpu_reporting_max_gpus, None);
    }
}
