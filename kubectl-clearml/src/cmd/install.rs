//! `kubectl clearml install`: values files → validated values → manifests → server-side apply.
//!
//! ```text
//! -f … --set … ──▶ Values (strict) ──▶ cluster state (namespace, existing Secret) ──▶ render
//!   ──▶ preflight (server dry run of every object) ──▶ apply in order ──▶ [--wait] rollout
//! ```
//!
//! Everything that can be checked is checked before the first write: the values (field paths),
//! the credentials, every manifest against its type, and, when the namespace exists, a server-side
//! dry run of every object (schema, admission, RBAC). Re-running upgrades in place.

use std::{
    io::{self, Write},
    time::Duration,
};

use anyhow::{anyhow, bail};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Secret},
};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::cluster::{self, kube_message};
use crate::{
    cli::InstallArgs,
    connect::Ctx,
    manifests::{
        self, AGENT_NAME, CREDENTIALS_SECRET, ExistingCredentials, FIELD_MANAGER, InstallParams,
        LABEL_MANAGED_BY, Rendered,
    },
    output::{self, OutputFormat, Tabular},
    progress, values_input,
};

/// How often `--wait` reads the Deployment.
const ROLLOUT_POLL: Duration = Duration::from_millis(500);

/// Runs `install`.
pub async fn run(args: InstallArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let fmt = ctx.global.output;
    let values = values_input::load(&args.values, &args.set)?;
    values_input::print_notices(&values);
    let params = InstallParams {
        namespace: ctx.namespace.clone(),
        image: args
            .image
            .clone()
            .unwrap_or_else(|| manifests::agent_image(&values)),
        clearml_insecure_skip_tls_verify: args.clearml_insecure_skip_tls_verify,
    };

    if args.dry_run {
        // Client-side: the cluster is not consulted, nothing is written.
        let rendered = manifests::render(&values, &params, &ExistingCredentials::NotChecked)?;
        warn_all(&rendered.warnings);
        return print_dry_run(&rendered, fmt);
    }

    let client = ctx.kube(false).await?;
    let credentials_secret = values
        .existing_credentials_secret()
        .unwrap_or(CREDENTIALS_SECRET);
    let state = inspect(&client, &params.namespace, credentials_secret).await?;
    let rendered = manifests::render(&values, &params, &state.credentials)?;
    warn_all(&rendered.warnings);
    let plan: Vec<&manifests::Manifest> = rendered
        .manifests
        .iter()
        .filter(|m| m.resource.kind != "Namespace" || state.namespace != NamespaceState::Foreign)
        .collect();
    if state.namespace == NamespaceState::Foreign {
        eprintln!(
            "note: namespace {} was not created by kubectl clearml; it is used as it is",
            params.namespace
        );
    }

    if state.namespace != NamespaceState::Absent {
        let bar = progress::spinner("Checking the manifests with the API server", fmt);
        for m in &plan {
            if let Err(e) = cluster::apply(&client, m, &params.namespace, true).await {
                bar.finish_and_clear();
                bail!(
                    "{} was refused by the API server: {}; nothing was applied",
                    m.display_name(),
                    kube_message(&e)
                );
            }
        }
        bar.finish_and_clear();
    }

    let bar = progress::spinner("Applying", fmt);
    let mut view = Applied::default();
    for m in &plan {
        bar.set_message(format!("Applying {}", m.display_name()));
        let obj = cluster::apply(&client, m, &params.namespace, false)
            .await
            .map_err(|e| {
                bar.finish_and_clear();
                anyhow!(
                    "cannot apply {}: {} (objects before it were applied; re-run install once \
                     fixed)",
                    m.display_name(),
                    kube_message(&e)
                )
            })?;
        view.names.push(m.display_name());
        view.objects.push(cluster::printable(&obj));
    }
    bar.finish_and_clear();
    output::print(&view, fmt)?;

    if args.wait {
        wait_for_rollout(&client, &params.namespace, args.timeout, fmt).await?;
    }
    Ok(())
}

/// What the cluster already holds.
struct ClusterState {
    namespace: NamespaceState,
    credentials: ExistingCredentials,
}

/// The install namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamespaceState {
    /// Does not exist: install creates it.
    Absent,
    /// Exists and carries the plugin's managed-by label: install keeps applying it.
    Ours,
    /// Exists without the label: used, never changed or deleted.
    Foreign,
}

async fn inspect(
    client: &Client,
    namespace: &str,
    credentials_secret: &str,
) -> anyhow::Result<ClusterState> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = match namespaces.get_opt(namespace).await {
        Ok(ns) => ns,
        // NB: a namespace admin may not read Namespace objects: then the namespace is taken as
        // given (it must exist) and never applied or deleted by the plugin.
        Err(kube::Error::Api(s)) if s.code == 403 => {
            eprintln!(
                "note: cannot read namespace {namespace} ({}); assuming it exists",
                s.message
            );
            return Ok(ClusterState {
                namespace: NamespaceState::Foreign,
                credentials: existing_credentials(client, namespace, credentials_secret).await?,
            });
        }
        Err(e) => bail!("cannot read namespace {namespace}: {}", kube_message(&e)),
    };
    let namespace_state = match &ns {
        None => NamespaceState::Absent,
        Some(ns) => {
            let ours = ns
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_MANAGED_BY))
                .is_some_and(|v| v == FIELD_MANAGER);
            if ours {
                NamespaceState::Ours
            } else {
                NamespaceState::Foreign
            }
        }
    };
    let credentials = if ns.is_none() {
        ExistingCredentials::Absent
    } else {
        existing_credentials(client, namespace, credentials_secret).await?
    };
    Ok(ClusterState {
        namespace: namespace_state,
        credentials,
    })
}

/// The credentials Secret (`name`) already in the namespace, if any.
async fn existing_credentials(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<ExistingCredentials> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get_opt(name).await.map_err(|e| {
        anyhow!(
            "cannot read Secret {namespace}/{name}: {}",
            kube_message(&e)
        )
    })?;
    Ok(match secret {
        None => ExistingCredentials::Absent,
        Some(s) => {
            let data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            ExistingCredentials::Present {
                hash: manifests::credentials_hash(&data),
            }
        }
    })
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// `--dry-run`: the manifests as YAML documents (`-o yaml`), a List (`-o json`), or one line per
/// object. Secret data is never printed.
fn print_dry_run(rendered: &Rendered, fmt: OutputFormat) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match fmt {
        OutputFormat::Yaml => out.write_all(rendered.to_redacted_yaml()?.as_bytes())?,
        OutputFormat::Json => {
            let items: Vec<Value> = rendered.manifests.iter().map(|m| m.redacted()).collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        }
        OutputFormat::Table | OutputFormat::Wide => {
            for m in &rendered.manifests {
                writeln!(out, "{} (dry run)", m.display_name())?;
            }
        }
    }
    out.flush()?;
    if fmt.is_machine() && rendered.manifests.iter().any(|m| m.is_secret()) {
        eprintln!(
            "note: Secret data is shown as {}; the install itself writes the real values",
            manifests::REDACTED
        );
    }
    Ok(())
}

/// Applied objects: names for people, the objects (redacted) for programs.
#[derive(Debug, Default)]
struct Applied {
    names: Vec<String>,
    objects: Vec<Value>,
}

impl Serialize for Applied {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": self.objects}).serialize(s)
    }
}

impl Tabular for Applied {
    fn write_table(&self, _wide: bool, out: &mut dyn Write) -> io::Result<()> {
        for name in &self.names {
            writeln!(out, "{name} serverside-applied")?;
        }
        Ok(())
    }
}

/// Polls the Deployment until it has rolled out or `timeout` passes.
async fn wait_for_rollout(
    client: &Client,
    namespace: &str,
    timeout: Duration,
    fmt: OutputFormat,
) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let bar = progress::spinner("Waiting for the agent to roll out", fmt);
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match deployments.get(AGENT_NAME).await {
            Ok(d) => match cluster::rollout_state(&d) {
                Ok(()) => {
                    bar.finish_and_clear();
                    eprintln!("deployment.apps/{AGENT_NAME} rolled out");
                    return Ok(());
                }
                Err(progress) => {
                    bar.set_message(format!("Waiting for the agent to roll out: {progress}"));
                    last = progress;
                }
            },
            Err(e) => last = kube_message(&e),
        }
        if Instant::now() + ROLLOUT_POLL > deadline {
            bar.finish_and_clear();
            return Err(anyhow!(
                "timed out after {} waiting for deployment.apps/{AGENT_NAME} to roll out ({last}); \
                 the objects are applied: see kubectl -n {namespace} describe deployment \
                 {AGENT_NAME}",
                humanize(timeout)
            ));
        }
        tokio::time::sleep(ROLLOUT_POLL).await;
    }
}

/// `2s`, `5m`, `1m30s`.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) if d.subsec_millis() > 0 && s == 0 => format!("{}ms", d.as_millis()),
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_given() {
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn applied_objects_print_as_lines_or_a_list() {
        let view = Applied {
            names: vec!["namespace/x".into(), "deployment.apps/clearml-agent".into()],
            objects: vec![serde_json::json!({"kind": "Namespace"})],
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&view, OutputFormat::Table, &mut out, &mut err).expect("render");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "namespace/x serverside-applied\ndeployment.apps/clearml-agent serverside-applied\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        output::render(&view, OutputFormat::Json, &mut out, &mut err).expect("render");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"][0]["kind"], "Namespace");
    }
}
