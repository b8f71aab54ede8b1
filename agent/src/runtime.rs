//! Process plumbing: the admin HTTP server (`/healthz`, `/readyz`, `/metrics`), the periodic
//! ClearML worker and dashboard reports, logging set-up, the shutdown signal and the
//! [`Supervisor`] that joins every long-lived task of the process.

use std::{
    collections::HashMap, io::IsTerminal, net::SocketAddr, panic::AssertUnwindSafe, sync::Arc,
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::FutureExt;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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

/// Binds the admin endpoints on `addr`; returns the bound address and the server, which runs
/// until `shutdown` (for the [`Supervisor`] to run).
pub async fn serve_admin(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>> + Send + 'static,
)> {
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
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .into_future();
    Ok((bound, server))
}

/// Sends `workers.status_report` every `statusReportFrequencySeconds` (default
/// [`STATUS_REPORT_INTERVAL`]) and, while the config sets `dashboardReportMaxGpu` (or
/// `orchestrationDashboard.gpu.reportMax`), `workers.cluster_report` every
/// `orchestrationDashboard.reportSeconds` (default [`CLUSTER_REPORT_INTERVAL`]; a change is
/// reported at once), until `shutdown`. Also follows `debugMode` ([`set_debug_logs`]).
pub async fn report_loop(
    clearml: Client,
    mut cfg_rx: watch::Receiver<Arc<AgentConfig>>,
    snapshot: SharedSnapshot,
    mut leader_rx: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let first = cfg_rx.borrow().clone();
    let mut periods = (first.status_report_interval, first.cluster_report_interval);
    let mut status = tokio::time::interval(periods.0);
    let mut cluster = tokio::time::interval(periods.1);
    let mut cluster_supported = true;
    let mut debug = None;
    loop {
        let cfg = cfg_rx.borrow_and_update().clone();
        if debug != Some(cfg.debug) {
            set_debug_logs(cfg.debug);
            debug = Some(cfg.debug);
        }
        if periods != (cfg.status_report_interval, cfg.cluster_report_interval) {
            periods = (cfg.status_report_interval, cfg.cluster_report_interval);
            status = tokio::time::interval(periods.0);
            cluster = tokio::time::interval(periods.1);
        }
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
                match clearml.cluster_report(&worker, &key, gpus, periods.1.as_secs()).await {
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

/// Installs the tracing subscriber (`RUST_LOG` filters, default `info`). Plain lines are coloured
/// only when stderr is a terminal: a log file or a container log (`kubectl logs`) gets no ANSI
/// escapes.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};
    let from_env = EnvFilter::try_from_default_env().ok();
    let explicit = from_env.is_some();
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new("info")));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Plain => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok();
    // an explicit RUST_LOG wins over debugMode
    if installed && !explicit {
        let _ = LOG_FILTER.set(handle);
    }
}

/// The log filter `debugMode` switches (unset when `RUST_LOG` was given).
static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// `debugMode`: the agent's own modules log at debug level (the libraries stay at info); off,
/// back to `info`. Does nothing when `RUST_LOG` was given.
pub fn set_debug_logs(on: bool) {
    if let Some(handle) = LOG_FILTER.get() {
        let directives = if on {
            "info,clearml_agent=debug,clearml_agent_core=debug"
        } else {
            "info"
        };
        if handle
            .reload(tracing_subscriber::EnvFilter::new(directives))
            .is_ok()
            && on
        {
            tracing::info!(debug = on, "log level set by debugMode");
        }
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C; returns then, or as soon as `token` is cancelled by
/// someone else (a failed task). An error means the signals cannot be listened for.
pub async fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = token.cancelled() => return Ok(()),
        r = tokio::signal::ctrl_c() => r?,
    }
    tracing::info!("shutdown requested; draining");
    token.cancel();
    Ok(())
}

/// The error a supervised task may end with.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// What a supervised task's future returns: `()`, or `Result<(), E>`.
pub trait TaskOutput: Send + 'static {
    /// The outcome as a result.
    fn into_result(self) -> Result<(), TaskError>;
}

impl TaskOutput for () {
    fn into_result(self) -> Result<(), TaskError> {
        Ok(())
    }
}

impl<E: Into<TaskError> + Send + 'static> TaskOutput for Result<(), E> {
    fn into_result(self) -> Result<(), TaskError> {
        self.map_err(Into::into)
    }
}

/// Why supervision ended other than by a clean, requested shutdown: the first task that ended
/// on its own (or the tasks that did not drain in time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailed {
    /// A task returned while no shutdown was requested.
    #[error("{0} stopped without a shutdown being requested")]
    Returned(&'static str),
    /// A task ended with an error while no shutdown was requested.
    #[error("{task} failed: {error}")]
    Failed {
        /// The task's name.
        task: &'static str,
        /// The error, with its causes.
        error: String,
    },
    /// A task panicked.
    #[error("{task} panicked: {message}")]
    Panicked {
        /// The task's name.
        task: &'static str,
        /// The panic's message.
        message: String,
    },
    /// Tasks still running when the drain time was up (they were aborted).
    #[error("{} did not stop within {timeout:?} of the shutdown", tasks.join(", "))]
    NotDrained {
        /// Their names.
        tasks: Vec<&'static str>,
        /// The drain time.
        timeout: Duration,
    },
}

impl TaskFailed {
    /// The name of the (first) task that failed.
    pub fn task(&self) -> &'static str {
        match self {
            Self::Returned(task) | Self::Failed { task, .. } | Self::Panicked { task, .. } => task,
            Self::NotDrained { tasks, .. } => tasks.first().copied().unwrap_or_default(),
        }
    }
}

/// How long the tasks get to finish once the shutdown token is cancelled (the kubelet's default
/// grace period is 30 s, after which it kills the process anyway).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Joins every long-lived task of the process. Each task is named and runs in a tracing span
/// `task{name=…}`. A task that ends while no shutdown was requested (returns, fails or panics)
/// is a failure: readiness turns false, the failure is logged, and the shutdown token is
/// cancelled so the other tasks drain; [`Supervisor::wait`] then returns it. After a requested
/// shutdown the tasks are expected to end: [`Supervisor::wait`] returns `Ok` once they all have
/// (only a panic, or a task still running after the drain time, is an error then). Dropping
/// the supervisor aborts its tasks.
pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
    shutdown: CancellationToken,
    health: Arc<Health>,
    failure: Arc<parking_lot::Mutex<Option<TaskFailed>>>,
    drain_timeout: Duration,
}

impl Supervisor {
    /// A supervisor whose tasks stop on `shutdown`, and which marks `health` not ready when one
    /// fails.
    pub fn new(shutdown: CancellationToken, health: Arc<Health>) -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
            health,
            failure: Arc::default(),
            drain_timeout: DRAIN_TIMEOUT,
        }
    }

    /// Gives the tasks `timeout` (instead of [`DRAIN_TIMEOUT`]) to finish after the shutdown.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Runs `task`, which stops by itself once the shutdown token is cancelled (draining what it
    /// has in flight).
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        self.supervise(name, async move { task.await.into_result() });
    }

    /// Runs `task`, which has nothing to drain: it is dropped as soon as the shutdown token is
    /// cancelled (watches).
    pub fn spawn_until_shutdown<F>(&mut self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let shutdown = self.shutdown.clone();
        self.supervise(name, async move {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => Ok(()),
                out = task => out.into_result(),
            }
        });
    }

    /// The first failure so far, if any.
    pub fn failure(&self) -> Option<TaskFailed> {
        self.failure.lock().clone()
    }

    fn supervise<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let health = self.health.clone();
        let failure = self.failure.clone();
        let span = tracing::info_span!("task", name);
        let handle = self.tasks.spawn(
            async move {
                let outcome = AssertUnwindSafe(task).catch_unwind().await;
                let draining = shutdown.is_cancelled();
                let failed = match outcome {
                    Ok(Ok(())) if draining => {
                        tracing::debug!("{name} stopped");
                        return;
                    }
                    Ok(Err(error)) if draining => {
                        tracing::warn!(error = %chain(&*error), "{name} ended with an error while shutting down");
                        return;
                    }
                    Ok(Ok(())) => TaskFailed::Returned(name),
                    Ok(Err(error)) => TaskFailed::Failed {
                        task: name,
                        error: chain(&*error),
                    },
                    Err(panic) => TaskFailed::Panicked {
                        task: name,
                        message: panic_message(&*panic),
                    },
                };
                // Readiness first: the endpoints say "not ready" before anything else happens.
                health.set_ready(false);
                if draining {
                    tracing::error!("{failed}");
                } else {
                    tracing::error!("{failed}; shutting down");
                }
                failure.lock().get_or_insert(failed);
                shutdown.cancel();
            }
            .instrument(span),
        );
        self.names.insert(handle.id(), name);
    }

    /// Waits until the shutdown token is cancelled (by a signal, or by a failed task) and every
    /// task has ended, giving them the drain time; tasks still running then are aborted.
    /// Returns the first failure, if any.
    pub async fn wait(mut self) -> Result<(), TaskFailed> {
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                joined = self.tasks.join_next_with_id() => match joined {
                    Some(joined) => self.forget(joined),
                    None => break,
                },
            }
        }
        let deadline = tokio::time::sleep(self.drain_timeout);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                joined = self.tasks.join_next_with_id() => match joined {
                    Some(joined) => self.forget(joined),
                    None => break,
                },
                _ = &mut deadline => {
                    let mut tasks: Vec<&'static str> = self.names.values().copied().collect();
                    tasks.sort_unstable();
                    let failed = TaskFailed::NotDrained {
                        tasks,
                        timeout: self.drain_timeout,
                    };
                    self.health.set_ready(false);
                    tracing::error!("{failed}; aborting them");
                    self.failure.lock().get_or_insert(failed);
                    self.tasks.shutdown().await;
                    break;
                }
            }
        }
        match self.failure.lock().take() {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }

    fn forget(&mut self, joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match joined {
            Ok((id, ())) => id,
            Err(error) => error.id(),
        };
        self.names.remove(&id);
    }
}

/// An error and its causes, `outer: inner: …`.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // NB: some errors repeat their source's text in their own
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// Bound on every wait, so a broken supervisor fails the test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(10);

    struct Fixture {
        tasks: Supervisor,
        shutdown: CancellationToken,
        health: Arc<Health>,
        /// What "steady" saw when the shutdown reached it: was the agent still ready?
        steady_saw_ready: oneshot::Receiver<bool>,
        /// Resolves (with an error) once "watch" has been dropped.
        watch_dropped: oneshot::Receiver<()>,
    }

    /// A ready agent with two healthy tasks: "steady" drains on shutdown, "watch" is dropped.
    fn fixture() -> Fixture {
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::default());
        health.set_ready(true);
        let mut tasks = Supervisor::new(shutdown.clone(), health.clone());
        let (saw_tx, steady_saw_ready) = oneshot::channel();
        let (token, h) = (shutdown.clone(), health.clone());
        tasks.spawn("steady", async move {
            token.cancelled().await;
            let _ = saw_tx.send(h.is_ready());
        });
        let (dropped_tx, watch_dropped) = oneshot::channel::<()>();
        tasks.spawn_until_shutdown("watch", async move {
            let _guard = dropped_tx;
            std::future::pending::<()>().await;
        });
        Fixture {
            tasks,
            shutdown,
            health,
            steady_saw_ready,
            watch_dropped,
        }
    }

    fn explode(message: &str) {
        panic!("{message}");
    }

    async fn wait(tasks: Supervisor) -> Result<(), TaskFailed> {
        tokio::time::timeout(LIMIT, tasks.wait())
            .await
            .expect("the supervisor returns")
    }

    /// An error-level log line, with the state of the agent when it was written.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Logged {
        /// The `name` of the `task` span it was written in.
        task: Option<String>,
        ready: bool,
        cancelled: bool,
    }

    /// A tracing layer that records every error-level event (tests run on one thread, so a
    /// thread-default subscriber sees the supervised tasks' events too).
    struct Witness {
        health: Arc<Health>,
        shutdown: CancellationToken,
        errors: Arc<parking_lot::Mutex<Vec<Logged>>>,
    }

    struct TaskName(String);

    impl<S> tracing_subscriber::Layer<S> for Witness
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Visit(Option<String>);
            impl tracing::field::Visit for Visit {
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    if field.name() == "name" {
                        self.0 = Some(value.to_string());
                    }
                }
                fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
            }
            let mut visit = Visit(None);
            attrs.record(&mut visit);
            if let (Some(name), Some(span)) = (visit.0, ctx.span(id))
                && attrs.metadata().name() == "task"
            {
                span.extensions_mut().insert(TaskName(name));
            }
        }

        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() != tracing::Level::ERROR {
                return;
            }
            let task = ctx
                .event_span(event)
                .and_then(|s| s.extensions().get::<TaskName>().map(|n| n.0.clone()));
            self.errors.lock().push(Logged {
                task,
                ready: self.health.is_ready(),
                cancelled: self.shutdown.is_cancelled(),
            });
        }
    }

    /// Registers `task` as "quitter" (started once the others run), and checks that its end is
    /// reported as a failure naming it, after readiness went false, with the others stopped.
    async fn fails<F>(task: F) -> TaskFailed
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        use tracing_subscriber::layer::SubscriberExt;
        let mut f = fixture();
        let errors = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let witness = Witness {
            health: f.health.clone(),
            shutdown: f.shutdown.clone(),
            errors: errors.clone(),
        };
        let _logs = tracing::subscriber::set_default(tracing_subscriber::registry().with(witness));
        let (go_tx, go) = oneshot::channel::<()>();
        f.tasks.spawn("quitter", async move {
            let _ = go.await;
            task.await
        });
        assert!(f.health.is_ready());
        assert!(f.tasks.failure().is_none());
        go_tx.send(()).expect("quitter waits");
        let failed = wait(f.tasks).await.expect_err("a failure is reported");
        assert_eq!(failed.task(), "quitter", "{failed}");
        assert!(failed.to_string().contains("quitter"), "{failed}");
        assert!(f.shutdown.is_cancelled(), "the others are told to stop");
        assert_eq!(
            f.steady_saw_ready.await,
            Ok(false),
            "readiness is false by the time the shutdown reaches the others"
        );
        assert!(f.watch_dropped.await.is_err(), "the watch is dropped");
        assert!(!f.health.is_ready());
        assert_eq!(
            *errors.lock(),
            [Logged {
                task: Some("quitter".into()),
                ready: false,
                cancelled: false
            }],
            "one error, in the task's span, written once readiness is false and before the \
             others are told to stop"
        );
        failed
    }

    #[tokio::test]
    async fn a_task_returning_early_is_a_failure_naming_it() {
        let failed = fails(async {}).await;
        assert_eq!(failed, TaskFailed::Returned("quitter"));
        assert_eq!(
            failed.to_string(),
            "quitter stopped without a shutdown being requested"
        );
    }

    #[tokio::test]
    async fn a_task_failing_is_a_failure_naming_it_with_the_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot serve")]
        struct Outer(#[source] std::io::Error);
        let failed = fails(async {
            Err::<(), _>(Outer(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "port taken",
            )))
        })
        .await;
        assert_eq!(
            failed,
            TaskFailed::Failed {
                task: "quitter",
                error: "cannot serve: port taken".into()
            }
        );
    }

    #[tokio::test]
    async fn a_task_panicking_is_a_failure_naming_it() {
        let failed = fails(async { explode("boom") }).await;
        assert_eq!(
            failed,
            TaskFailed::Panicked {
                task: "quitter",
                message: "boom".into()
            }
        );
    }

    #[tokio::test]
    async fn a_watch_ending_is_a_failure_naming_it() {
        let mut f = fixture();
        f.tasks.spawn_until_shutdown("pod watch", async {});
        let failed = wait(f.tasks).await.expect_err("a failure is reported");
        assert_eq!(failed, TaskFailed::Returned("pod watch"));
        assert_eq!(f.steady_saw_ready.await, Ok(false));
    }

    #[tokio::test]
    async fn a_requested_shutdown_drains_and_is_ok() {
        let mut f = fixture();
        // A task that only stops when told, with something to finish first.
        let (drained_tx, drained) = oneshot::channel();
        let token = f.shutdown.clone();
        f.tasks.spawn("dispatcher", async move {
            token.cancelled().await;
            tokio::task::yield_now().await;
            let _ = drained_tx.send(());
            Ok::<(), std::io::Error>(())
        });
        // An error while draining (say, the lease cannot be released) is only logged.
        let token = f.shutdown.clone();
        f.tasks.spawn("lease", async move {
            token.cancelled().await;
            Err::<(), _>(std::io::Error::other("cannot release"))
        });
        let shutdown = f.shutdown.clone();
        let signal = tokio::spawn(async move { shutdown.cancel() });
        assert_eq!(wait(f.tasks).await, Ok(()));
        signal.await.expect("signal task");
        assert_eq!(drained.await, Ok(()), "the dispatcher drained");
        assert_eq!(
            f.steady_saw_ready.await,
            Ok(true),
            "a requested shutdown leaves readiness to the dispatcher"
        );
        assert!(f.watch_dropped.await.is_err());
    }

    #[tokio::test]
    async fn a_panic_while_draining_is_an_error() {
        let mut f = fixture();
        let token = f.shutdown.clone();
        f.tasks.spawn("reports", async move {
            token.cancelled().await;
            explode("while draining");
        });
        f.shutdown.cancel();
        let failed = wait(f.tasks).await.expect_err("the panic is reported");
        assert_eq!(failed.task(), "reports");
    }

    #[tokio::test]
    async fn a_task_that_does_not_drain_is_aborted_and_named() {
        let mut f = fixture();
        f.tasks = f.tasks.with_drain_timeout(Duration::from_millis(50));
        let (dropped_tx, stubborn_dropped) = oneshot::channel::<()>();
        f.tasks.spawn("stubborn", async move {
            let _guard = dropped_tx;
            std::future::pending::<()>().await;
        });
        f.shutdown.cancel();
        let failed = wait(f.tasks).await.expect_err("not drained");
        assert_eq!(
            failed,
            TaskFailed::NotDrained {
                tasks: vec!["stubborn"],
                timeout: Duration::from_millis(50)
            }
        );
        assert!(stubborn_dropped.await.is_err(), "aborted");
    }

    #[tokio::test]
    async fn a_failure_during_start_up_is_visible_before_wait() {
        let mut f = fixture();
        f.tasks.spawn("admin server", async {
            Err::<(), _>(std::io::Error::other("gone"))
        });
        tokio::time::timeout(LIMIT, f.shutdown.cancelled())
            .await
            .expect("the failure cancels the token without anyone waiting");
        assert_eq!(f.tasks.failure().map(|e| e.task()), Some("admin server"));
        assert!(!f.health.is_ready());
    }
}
