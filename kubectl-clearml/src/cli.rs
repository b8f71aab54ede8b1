//! The command line: kubectl-like global flags (they work before or after any subcommand) and one
//! subcommand per verb. Doc comments are the `--help` text. Parsing only: no I/O here.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;

/// Install and steer the ClearML Kubernetes agent.
#[derive(Debug, Parser)]
#[command(name = "kubectl-clearml", bin_name = "kubectl clearml", version)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, as kubectl spells them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The agent's namespace (default: the context's namespace, else `clearml`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Talk to the agent's gRPC API at HOST:PORT directly instead of port-forwarding to its pod.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        env = "KUBECTL_CLEARML_AGENT_ADDR"
    )]
    pub agent_addr: Option<String>,
    /// Give up on a single server request after this long (e.g. 30s, 1m; 0 = no limit).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or upgrade the agent from values files (the Enterprise chart's values).
    Install(InstallArgs),
    /// Delete what `install` created.
    Uninstall(UninstallArgs),
    /// List, inspect and change the queues the agent serves.
    #[command(subcommand)]
    Queues(Box<QueuesCommand>),
    /// GPU reporting to the ClearML orchestration dashboard.
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// The agent's version, leadership, ClearML connectivity and per-queue load.
    Status,
    /// Tasks the agent launched, with their pods' phase and pending reason.
    Tasks(TasksArgs),
    /// Show details of one object.
    #[command(subcommand)]
    Describe(DescribeCommand),
    /// Print a task pod's log, straight from the Kubernetes API.
    Logs(LogsArgs),
    /// Check an install (or a values file before installing): values, namespace, Secret,
    /// ConfigMap, RBAC, the agent pod, ClearML, queues, task namespace and pull secrets.
    Doctor(DoctorArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
}

/// `doctor` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct DoctorArgs {
    /// Values file (YAML) to check as well, as `install` would read it (repeatable, later ones
    /// win); without it, the installed ConfigMap's values are checked.
    #[arg(
        short = 'f',
        long = "values",
        visible_alias = "filename",
        value_name = "FILE"
    )]
    pub values: Vec<PathBuf>,
    /// Set a value on top of the files, as `install --set` does.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
}

/// `install` flags.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Values file (YAML); repeat to layer files, later ones win key by key. `-` reads stdin.
    #[arg(
        short = 'f',
        long = "values",
        visible_alias = "filename",
        value_name = "FILE"
    )]
    pub values: Vec<PathBuf>,
    /// Set a value on top of the files: `a.b.c=VALUE`, the value read as YAML (`\.` escapes a dot).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// The agent image; wins over the values' agentk8sglue.image and global.imageRegistry
    /// (default: clearml-k8s-agent:<plugin version>).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Print what would be applied and change nothing (Secret data is shown as REDACTED).
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until the agent's Deployment has rolled out.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Let the agent skip TLS verification of the ClearML server (self-signed servers only; the
    /// values' agentk8sglue.clearmlcheckCertificate: false does the same).
    #[arg(long)]
    pub clearml_insecure_skip_tls_verify: bool,
}

/// `uninstall` flags.
#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Keep the namespace (it is deleted only when `install` created it).
    #[arg(long)]
    pub keep_namespace: bool,
}

/// `queues` verbs.
#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// List the queues the agent serves.
    List,
    /// Show one queue with its configuration.
    Get {
        /// Queue name.
        name: String,
    },
    /// Add a queue (to the agent's ConfigMap; to ClearML too when createQueues is on).
    Add {
        /// Queue name.
        name: String,
        /// The queue's settings.
        #[command(flatten)]
        spec: QueueSpecArgs,
    },
    /// Change a queue: flags form a merge patch; `--patch` takes one as text.
    Patch {
        /// Queue name.
        name: String,
        /// The settings to change.
        #[command(flatten)]
        spec: QueueSpecArgs,
        /// A patch document (JSON or YAML) applied before the flags' changes.
        #[arg(long, value_name = "PATCH")]
        patch: Option<String>,
        /// Kind of `--patch`: merge (RFC 7386) or json (RFC 6902).
        #[arg(long = "type", value_enum, default_value_t = PatchKind::Merge)]
        patch_type: PatchKind,
    },
    /// Stop serving a queue (the ClearML queue itself is kept).
    Remove {
        /// Queue name.
        name: String,
    },
    /// Print the pod manifest(s) the agent would create for this queue.
    Render {
        /// Queue name.
        name: String,
        /// Render with this ClearML task's container settings.
        #[arg(long, value_name = "ID")]
        task: Option<String>,
    },
}

/// Queue settings as flags; together they form a queue entry (`templateOverrides`,
/// `queueSettings`) or a merge patch of one.
#[derive(Debug, Clone, Default, Args)]
pub struct QueueSpecArgs {
    /// GPUs per pod (`resources.limits["nvidia.com/gpu"]`).
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// CPU limit per pod (a quantity: 4, 500m).
    #[arg(long, value_name = "QUANTITY")]
    pub cpu: Option<String>,
    /// Memory limit per pod (a quantity: 16Gi).
    #[arg(long, value_name = "QUANTITY")]
    pub memory: Option<String>,
    /// Shared memory: a memory-backed `dshm` volume of this size mounted at /dev/shm.
    #[arg(long, value_name = "QUANTITY")]
    pub shm_size: Option<String>,
    /// Pod label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Pod annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub annotations: Vec<(String, String)>,
    /// Task container environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Most pods (Pending + Running) this queue may have at once.
    #[arg(long, value_name = "N")]
    pub max_pods: Option<u32>,
    /// Image for this queue's tasks that name none.
    #[arg(long, value_name = "REF")]
    pub default_image: Option<String>,
    /// Keep the image's entrypoint (no command or args are set).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub use_image_entrypoint: Option<bool>,
    /// `CLEARML_WORKER_ID` template of task pods, e.g. `k8s:{queue}:{task_id}`.
    #[arg(long, value_name = "TEMPLATE")]
    pub worker_id_template: Option<String>,
    /// GPUs per node of multi-node tasks, e.g. `4,2`.
    #[arg(long, value_name = "N,N…", value_delimiter = ',', num_args = 1..)]
    pub multi_node: Vec<u32>,
    /// Served before queues of lower priority when `agentk8sglue.queueOrder` is `priority`.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// A queue entry as YAML or JSON (`{templateOverrides: …, queueSettings: …}`); flags win.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Validate on the agent, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `queues patch --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatchKind {
    /// RFC 7386 JSON merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
}

/// `gpu` verbs.
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Report GPUs to the ClearML dashboard (`--max N`), or stop (`--off`).
    Report(GpuReportArgs),
}

/// `gpu report` flags.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct GpuReportArgs {
    /// GPUs to report as the cluster's total.
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// Turn reporting off.
    #[arg(long)]
    pub off: bool,
}

/// `tasks` flags.
#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// Only this queue's tasks.
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
}

/// `describe` objects.
#[derive(Debug, Subcommand)]
pub enum DescribeCommand {
    /// A task: its pods, phase, node, exit code and events; why it is pending.
    Task {
        /// ClearML task id.
        id: String,
    },
}

/// `logs` flags.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// ClearML task id.
    pub task: String,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Rank of the pod of a multi-node task (default 0).
    #[arg(long, value_name = "N")]
    pub rank: Option<u32>,
    /// Lines from the end of the log to show (default: all).
    #[arg(long, value_name = "N")]
    pub tail: Option<i64>,
}

/// `completion` flags.
#[derive(Debug, Clone, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Shells `completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `KEY=VALUE` (the value may be empty or contain `=`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A duration as kubectl writes them: `90s`, `5m`, `1h30m`, `500ms`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let bad = || format!("{s:?} is not a duration (e.g. 30s, 5m, 1h30m)");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    if text.is_empty() {
        Err(bad())
    } else {
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubectl() {
        let cases = [
            ("0", Some(0)),
            ("45", Some(45_000)),
            ("2s", Some(2_000)),
            ("5m", Some(300_000)),
            ("1h30m", Some(5_400_000)),
            ("1m500ms", Some(60_500)),
            ("", None),
            ("m", None),
            ("5x", None),
            ("-1s", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("A=b=c"),
            Ok(("A".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_key_value("A="), Ok(("A".to_string(), String::new())));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "kubectl-clearml",
            "queues",
            "list",
            "-n",
            "ml",
            "-o",
            "json",
            "--agent-addr",
            "127.0.0.1:9",
        ])
        .expect("valid command line");
        assert_eq!(cli.global.namespace.as_deref(), Some("ml"));
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.agent_addr.as_deref(), Some("127.0.0.1:9"));
    }

    #[test]
    fn gpu_report_needs_exactly_one_of_max_and_off() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["kubectl-clearml", "gpu", "report"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).is_ok()
        };
        assert!(parse(&["--max", "4"]));
        assert!(parse(&["--off"]));
        assert!(!parse(&[]));
        assert!(!parse(&["--max", "4", "--off"]));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
