//! Command-line flags (with environment fallbacks) and [`Args::run`], the one place that builds
//! every component: config → clients → pod watch → dispatcher, reports and admin server.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use clap::Parser;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use clearml_agent_core::{
    config::AgentConfig,
    contract,
    render::{self, AgentParams},
    values::Values,
};

use crate::{
    clearml::{self, Client, ClientOptions, Credentials},
    config_store::ConfigStore,
    control::Control,
    dispatch::{Deps, Dispatcher, SharedSnapshot},
    grpc,
    health::Health,
    k8s::{self, Kube},
    metrics::{ClearmlObserver, Metrics},
    runtime::{self, LogFormat, Supervisor},
};

/// The ClearML agent for Kubernetes: turns queued ClearML tasks into pods.
#[derive(Debug, Parser)]
#[command(name = "clearml-k8s-agent", version)]
pub struct Args {
    /// Values file (the agent's ConfigMap, mounted).
    #[arg(
        long,
        env = "CLEARML_AGENT_CONFIG",
        default_value = "/etc/clearml-agent/values.yaml"
    )]
    pub config: PathBuf,
    /// ConfigMap (in the agent's namespace) holding the values under `values.yaml`; when set, it
    /// is read instead of `--config` and watched, so changes apply without a restart.
    #[arg(long, env = "CLEARML_AGENT_CONFIG_MAP")]
    pub config_map: Option<String>,
    /// The agent's namespace (task pods go here unless `taskNamespace` says otherwise).
    #[arg(long, env = "POD_NAMESPACE", default_value = "clearml")]
    pub namespace: String,
    /// ClearML access key.
    #[arg(long, env = "CLEARML_API_ACCESS_KEY", hide_env_values = true)]
    pub access_key: String,
    /// ClearML secret key.
    #[arg(long, env = "CLEARML_API_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    /// ClearML API server (default: the values' `apiServerUrlReference`).
    #[arg(long, env = "CLEARML_API_HOST")]
    pub api_server: Option<String>,
    /// Secret holding the key pair in the task namespace (task pods read it through secretKeyRef).
    #[arg(
        long,
        env = "CLEARML_AGENT_CREDENTIALS_SECRET",
        default_value = contract::CREDENTIALS_SECRET
    )]
    pub credentials_secret: String,
    /// Skip TLS certificate checks of the ClearML server (self-signed servers only).
    #[arg(long, env = contract::ENV_SKIP_TLS_VERIFY)]
    pub insecure_skip_tls_verify: bool,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(
        long,
        env = "CLEARML_AGENT_HTTP_ADDR",
        default_value_t = SocketAddr::from(([0, 0, 0, 0], contract::ADMIN_PORT))
    )]
    pub http_addr: SocketAddr,
    /// Address of the gRPC control API (loopback by default: reached through port-forward).
    #[arg(
        long,
        env = "CLEARML_AGENT_GRPC_ADDR",
        default_value_t = SocketAddr::from(([127, 0, 0, 1], contract::GRPC_PORT))
    )]
    pub grpc_addr: SocketAddr,
    /// Lease (in the agent's namespace) that elects the one replica that dispatches.
    #[arg(
        long,
        env = "CLEARML_AGENT_LEASE_NAME",
        default_value = contract::AGENT_NAME
    )]
    pub lease_name: String,
    /// This replica's identity in the lease (default: the host name, i.e. the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log format.
    #[arg(long, env = "CLEARML_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

impl Args {
    /// Parses the process arguments and runs the agent until SIGTERM.
    pub async fn parse_and_run() -> anyhow::Result<()> {
        Self::parse().run().await
    }

    /// Runs the agent until SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Args {
            config,
            config_map,
            namespace,
            access_key,
            secret_key,
            api_server,
            credentials_secret,
            insecure_skip_tls_verify,
            http_addr,
            grpc_addr,
            lease_name,
            identity,
            log_format,
        } = self;
        runtime::init_logging(log_format);
        // NB: rustls needs one process-wide crypto provider; kube and reqwest both use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();

        // NB: kube's built-in retry re-sends each throttled request on its own; the agent instead
        // pauses every pod write for the Retry-After it is given, and backs off failed writes
        // (dispatch.rs), so a struggling API server sees less load, not the same load later.
        let mut kube_config = kube::Config::infer()
            .await
            .context("cannot find a Kubernetes configuration (in-cluster or KUBECONFIG)")?;
        kube_config.default_retry = false;
        let kube_client =
            kube::Client::try_from(kube_config).context("cannot build a Kubernetes client")?;
        // The values: from the ConfigMap (watched, so edits apply live) or from a file.
        let store = config_map.map(|name| ConfigStore::new(kube_client.clone(), &namespace, &name));
        let (values, source) = match &store {
            Some(store) => {
                let (values, _) = store.read().await.with_context(|| {
                    format!(
                        "cannot load the values from ConfigMap {namespace}/{}",
                        store.name()
                    )
                })?;
                (values, format!("ConfigMap {namespace}/{}", store.name()))
            }
            None => {
                let text = std::fs::read_to_string(&config)
                    .with_context(|| format!("cannot read config {}", config.display()))?;
                let values = Values::from_yaml(&text).map_err(|_| {
                    let errors: Vec<String> = Values::errors_in_yaml(&text)
                        .iter()
                        .map(|e| format!("  {e}"))
                        .collect();
                    anyhow::anyhow!(
                        "invalid config {}:\n{}",
                        config.display(),
                        errors.join("\n")
                    )
                })?;
                (values, config.display().to_string())
            }
        };
        let cfg = AgentConfig::from_values(&values, &namespace)
            .with_context(|| format!("invalid config in {source}"))?;
        runtime::set_debug_logs(cfg.debug);
        let a = &values.agentk8sglue;
        let api_from_env = api_server.is_some();
        let Some(api) = api_server.or_else(|| a.api_server_url_reference.clone()) else {
            bail!(
                "no ClearML API server: set agentk8sglue.apiServerUrlReference or CLEARML_API_HOST"
            );
        };
        if !(api.starts_with("http://") || api.starts_with("https://")) {
            bail!("agentk8sglue.apiServerUrlReference: {api:?} is not an http(s) URL");
        }

        let shutdown = CancellationToken::new();
        let metrics = Metrics::new();
        let health = Arc::new(Health::default());
        // Every long-lived task runs under the supervisor: one that ends while no shutdown was
        // requested makes the process drain and exit non-zero (Kubernetes restarts it).
        let mut tasks = Supervisor::new(shutdown.clone(), health.clone());
        tasks.spawn(
            "signal handler",
            runtime::cancel_on_signal(shutdown.clone()),
        );
        let (admin, admin_server) =
            runtime::serve_admin(http_addr, health.clone(), metrics.clone(), shutdown.clone())
                .await
                .with_context(|| format!("cannot listen on {http_addr}"))?;
        tasks.spawn("admin server", admin_server);
        tracing::info!(%admin, "admin endpoints up");

        let observer = Arc::new(ClearmlObserver(metrics.clone(), health.clone()));
        // the chart's clearmlcheckCertificate: false turns it off for the agent too
        let agent_verifies_tls = !insecure_skip_tls_verify && values.agentk8sglue.verifies_tls();
        if !agent_verifies_tls {
            tracing::warn!("TLS certificates of the ClearML server are not verified");
        }
        let options = ClientOptions {
            verify_tls: agent_verifies_tls,
            ..Default::default()
        };
        let clearml = Client::new(
            &api,
            Credentials {
                access_key,
                secret_key,
            },
            options,
            Some(observer),
        )?;
        retry_startup("log in to ClearML", &shutdown, || clearml.login())
            .await
            .map_err(|e| or_task_failure(&tasks, e))?;
        // how tasks are taken follows the server's version; a server too old for any safe way
        // is refused here
        if let Some(server) = clearml.server() {
            clearml::take_protocol(&server.info)?;
        }

        let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg.clone()));
        let config_error = Arc::new(std::sync::Mutex::new(None));
        if let Some(store) = &store {
            tasks.spawn_until_shutdown(
                "ConfigMap watch",
                store.watch(namespace.clone(), cfg_tx, config_error.clone()),
            );
        }
        let changed = Arc::new(Notify::new());
        let selector = format!(
            "{}={}",
            contract::LABEL_AGENT,
            render::agent_label(&cfg.worker_id)
        );
        let (pods, pod_watch) = k8s::watch_pods(
            kube_client.clone(),
            &cfg.task_namespace,
            &selector,
            changed.clone(),
        );
        tasks.spawn_until_shutdown("pod watch", pod_watch);
        let (jobs, job_watch) = k8s::watch_jobs(
            kube_client.clone(),
            &cfg.task_namespace,
            &selector,
            changed.clone(),
        );
        tasks.spawn_until_shutdown("job watch", job_watch);
        let kube = Kube::new(kube_client.clone(), &cfg.task_namespace);
        let agent = AgentParams {
            namespace: cfg.task_namespace.clone(),
            worker_id: cfg.worker_id.clone(),
            api_server: Some(api.clone()),
            web_server: a.web_server_url_reference.clone(),
            files_server: a.file_server_url_reference.clone(),
            credentials_secret,
            default_image: a.task_default_image().cloned(),
            bootstrap: render::Bootstrap::from_values(a),
            ..Default::default()
        };
        let mut agent = agent;
        agent.apply_document(&cfg.values);
        // Only the lease holder dispatches; every replica watches and serves the control API.
        let identity = identity.unwrap_or_else(hostname);
        let lease = LeaseManagerBuilder::new(kube_client.clone(), &lease_name)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_duration(LEASE_DURATION_SECS)
            .with_grace(LEASE_GRACE_SECS)
            .with_field_manager(crate::k8s::FIELD_MANAGER)
            .build()
            .await
            .with_context(|| {
                format!("cannot set up leader election on Lease {namespace}/{lease_name}")
            })
            .map_err(|e| or_task_failure(&tasks, e))?;
        let (leader_rx, lease_task) = lease.watch().await;
        // The lease task runs until every `leader_rx` is gone (the dispatcher, the reports and
        // the control API have stopped), then releases the lease so another replica takes over.
        tasks.spawn("lease", async move {
            match lease_task.await {
                Ok(Ok(_)) => {
                    tracing::info!("lease released");
                    Ok(())
                }
                Ok(Err(error)) => {
                    Err(anyhow::Error::new(error).context("cannot release the lease"))
                }
                Err(error) => match error.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(error) => Err(anyhow::Error::new(error)),
                },
            }
        });
        tracing::info!(%identity, lease = %lease_name, "leader election started");
        let snapshot = SharedSnapshot::default();
        let control = Arc::new(Control {
            agent_verifies_tls,
            store,
            cfg_rx: cfg_rx.clone(),
            config_error,
            snapshot: snapshot.clone(),
            pods: pods.clone(),
            jobs: jobs.clone(),
            clearml: clearml.clone(),
            kube: kube.clone(),
            agent: agent.clone(),
            health: health.clone(),
            leader_rx: leader_rx.clone(),
        });
        let dispatcher = retry_startup("resolve the queues in ClearML", &shutdown, || {
            Dispatcher::start(Deps {
                clearml: clearml.clone(),
                kube: kube.clone(),
                pods: pods.clone(),
                jobs: jobs.clone(),
                changed: changed.clone(),
                cfg_rx: cfg_rx.clone(),
                agent: agent.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                snapshot: snapshot.clone(),
                leader_rx: leader_rx.clone(),
                api_from_env,
            })
        })
        .await
        .map_err(|e| or_task_failure(&tasks, e))?;
        // NB: serve binds the control API's port before the dispatcher can mark the agent ready.
        tasks.spawn(
            "control API",
            grpc::serve(control, grpc_addr, shutdown.clone()),
        );
        tasks.spawn("dispatcher", dispatcher.run(shutdown.clone()));
        tasks.spawn(
            "reports",
            runtime::report_loop(clearml, cfg_rx, snapshot, leader_rx, shutdown.clone()),
        );
        // Until SIGTERM (the dispatcher finishes the launches in flight and unregisters, then the
        // lease is released) or until a task fails (the same drain, then an error).
        tasks.wait().await?;
        Ok(())
    }
}

/// Seconds a lease is valid without renewal: how long a dead leader blocks dispatching.
const LEASE_DURATION_SECS: u64 = 15;
/// Seconds before expiry at which the holder renews.
const LEASE_GRACE_SECS: u64 = 5;

/// A start-up step cut short by a failed task (the shutdown token was cancelled) reports that
/// task's failure instead.
fn or_task_failure(tasks: &Supervisor, error: anyhow::Error) -> anyhow::Error {
    tasks.failure().map_or(error, anyhow::Error::from)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "clearml-agent".into())
}

/// Runs a start-up step until it succeeds: transient ClearML errors (no reply, 5xx, 429) are
/// retried with capped backoff, so an agent started while ClearML is flaky or down waits instead
/// of crash-looping; anything else (bad credentials, a refused request) fails at once.
async fn retry_startup<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut step: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::clearml::Error>>,
{
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, ?wait, "cannot {what} yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => bail!("shut down before being able to {what}"),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot {what}"))),
        }
    }
}
