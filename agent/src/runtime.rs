//! Process plumbing: the admin HTTP server (`/healthz`, `/readyz`, `/metrics`), the periodic
//! ClearML worker and dashboard reports, logging set-up and the shutdown signal.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;

use tokio::sync::watch;

use clearml_agent_core::config::AgentConfig;

use crate::{clearml::Client, dispatch::SharedSnapshot, health::Health, metrics::Metrics};

/// Worker status report period (the Python agent's default).
pub const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// Dashboard report period (the Python agent's default).
pub const CLUSTER_REPORT_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Serves the admin endpoints on `addr` until `shutdown`; returns the bound address.
pub async fn serve_admin(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if s.health.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .with_state(AdminState { health, metrics });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = server.await {
            tracing::error!(%error, "admin server failed");
        }
    });
    Ok(bound)
}

/// Sends `workers.status_report` every [`STATUS_REPORT_INTERVAL`] and, while the config sets
/// `dashboardReportMaxGpu`, `workers.cluster_report` every [`CLUSTER_REPORT_INTERVAL`] (a change
/// is reported at once), until `shutdown`.
pub async fn report_loop(
    clearml: Client,
    mut cfg_rx: watch::Receiver<Arc<AgentConfig>>,
    snapshot: SharedSnapshot,
    mut leader_rx: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut status = tokio::time::interval(STATUS_REPORT_INTERVAL);
    let mut cluster = tokio::time::interval(CLUSTER_REPORT_INTERVAL);
    let mut cluster_supported = true;
    loop {
        let cfg = cfg_rx.borrow_and_update().clone();
        let worker = cfg.worker_id.clone();
        let key = worker.split(':').next().unwrap_or(&worker).to_string();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = cfg_rx.changed() => cluster.reset_immediately(),
            r = leader_rx.changed() => {
                if r.is_err() {
                    return; // the lease task is gone: the process is shutting down
                }
                status.reset_immediately();
                cluster.reset_immediately();
            }
            _ = status.tick(), if *leader_rx.borrow() => {
                let queues: Vec<String> = snapshot.read().served.iter().map(|s| s.id.clone()).collect();
                if let Err(error) = clearml.status_report(&worker, &queues).await {
                    tracing::warn!(%error, "worker status report failed");
                }
            }
            _ = cluster.tick(), if cfg.report_max_gpus.is_some() && cluster_supported && *leader_rx.borrow() => {
                let gpus = cfg.report_max_gpus.unwrap_or_default();
                match clearml.cluster_report(&worker, &key, gpus, CLUSTER_REPORT_INTERVAL.as_secs()).await {
                    Ok(()) => tracing::debug!(gpus, "dashboard GPU report sent"),
                    Err(e) if e.is_api(404, 0) => {
                        tracing::warn!("this ClearML server has no workers.cluster_report (open-source server); dashboardReportMaxGpu has no effect");
                        cluster_supported = false;
                    }
                    Err(error) => tracing::warn!(%error, "dashboard GPU report failed"),
                }
            }
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber (`RUST_LOG` filters, default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; draining");
        token.cancel();
    });
}
