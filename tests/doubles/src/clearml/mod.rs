//! The ClearML API server double: an in-memory clearml-server (API 2.34 / server 2.3) speaking
//! real HTTP on `127.0.0.1:<port 0>` for the subset an agent and the Python SDK use (auth, queues,
//! tasks, workers, events, projects), with the server's envelope, error codes and status rules.
//!
//! Tests drive it over HTTP like a real server and inspect or steer it through [`ClearmlDouble`]:
//! state snapshots, a request log, fault injection ([`Faults`]), a settable clock, and in-process
//! calls ([`ClearmlDouble::call`]) that run the very same handlers as HTTP requests, for fast
//! seeding. Module map: `transport` (HTTP, envelope), `auth`, `dispatch` (endpoint table),
//! `queues`, `tasks`, `batch` (`enqueue_many`, `update_batch`), `lifecycle` (status machine), `workers`, `misc` (projects, events, ping),
//! `faults`, `capacity` (service time and workers per call), `state` (the store), `doc` (JSON/query helpers), `error`.

mod auth;
mod batch;
mod capacity;
mod dispatch;
mod doc;
mod error;
mod faults;
mod lifecycle;
mod misc;
mod queues;
mod release;
mod state;
mod tasks;
mod transport;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};

pub use auth::{API_VERSION, Claims, SERVER_VERSION};
pub use capacity::Capacity;
pub use dispatch::Version;
pub use doc::{Doc, fmt_time, parse_time};
pub use error::ApiError;
pub use faults::{ANY_ENDPOINT, Chaos, Faults, RawReply, RequestRecord, Requests, Rewrite};
pub use lifecycle::{allowed_transitions, validate_transition, validate_transition_on};
pub use queues::HIDDEN_TAGS;
pub use release::{NEWEST as NEWEST_SERVER_VERSION, Release, UnknownRelease};
pub use state::{
    ClusterReport, Credential, DEFAULT_ACCESS_KEY, DEFAULT_COMPANY, DEFAULT_SECRET_KEY, Event,
    IdName, Identity, Queue, QueueEntry, Store, Worker,
};
pub use tasks::{TASK_TYPES, public_task};

use dispatch::{Ctx, Kind};
use faults::FaultPlan;
use transport::HttpServer;

/// State shared by the HTTP layer and the test handles.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Mutex<FaultPlan>,
    pub(crate) log: Mutex<Vec<RequestRecord>>,
    /// The capacity model in force (none: every call is served at once).
    pub(crate) capacity: Mutex<Option<capacity::Workers>>,
}

/// A running ClearML API server double.
pub struct ClearmlDouble {
    shared: Arc<Shared>,
    server: HttpServer,
}

impl ClearmlDouble {
    /// Starts a fresh server (default credentials, a `default` queue) on `127.0.0.1:<port 0>`.
    pub async fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            faults: Mutex::new(FaultPlan::default()),
            log: Mutex::new(Vec::new()),
            capacity: Mutex::new(None),
        });
        let server = HttpServer::start(transport::router(shared.clone())).await?;
        tracing::debug!(addr = %server.addr(), "clearml double listening");
        Ok(Self { shared, server })
    }

    /// `http://127.0.0.1:<port>` (what `CLEARML_API_HOST` / `api_server` should be).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The default `(access_key, secret_key)` pair.
    pub fn credentials(&self) -> (String, String) {
        (
            DEFAULT_ACCESS_KEY.to_string(),
            DEFAULT_SECRET_KEY.to_string(),
        )
    }

    /// Seeds another key/secret pair authenticating as `identity`.
    pub fn add_credentials(&self, access_key: &str, secret_key: &str, identity: Identity) {
        self.shared.store.lock().add_credential(Credential {
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            identity,
        });
    }

    /// Runs `f` on the store under its lock (keep it short: requests wait meanwhile).
    pub fn state<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.shared.store.lock())
    }

    /// Fault injection handle.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Request log handle (HTTP requests only; in-process [`ClearmlDouble::call`]s are not logged).
    pub fn requests(&self) -> Requests {
        Requests {
            shared: self.shared.clone(),
        }
    }

    /// How many HTTP requests named `endpoint` arrived so far.
    pub fn calls(&self, endpoint: &str) -> usize {
        self.requests().calls(endpoint)
    }

    /// Sets the server clock offset from the wall clock (token expiry, worker TTLs, `tasks.stop`'s
    /// 600 s rule and all timestamps follow it).
    pub fn set_clock_offset(&self, offset: chrono::Duration) {
        self.shared.store.lock().clock_offset = offset;
    }

    /// Makes the double behave as clearml-server `version` from now on (default: the newest,
    /// [`NEWEST_SERVER_VERSION`]): `server.info`, new tokens' claims and unversioned paths report
    /// it, and the behaviour that changed between releases follows it (see `release.rs`; e.g.
    /// before 1.17.0 `tasks.enqueue` refuses a queued task unless `force`, and a forced enqueue
    /// leaves the task in its other queues).
    pub fn set_server_version(&self, version: &str) -> Result<(), UnknownRelease> {
        let release = Release::parse(version)?;
        self.shared.store.lock().release = release;
        Ok(())
    }

    /// Limits how fast the double answers HTTP calls, as a real server's workers do (see
    /// `capacity.rs`): every call waits for one of `workers`, which it occupies for
    /// `service_time`. `None` (the default) serves every call at once.
    pub fn set_capacity(&self, capacity: Option<Capacity>) {
        *self.shared.capacity.lock() = capacity.map(capacity::Workers::new);
    }

    /// The capacity model in force.
    pub fn capacity(&self) -> Option<Capacity> {
        self.shared.capacity.lock().as_ref().map(|w| w.capacity())
    }

    /// The clearml-server release the double behaves as.
    pub fn server_version(&self) -> String {
        self.shared.store.lock().release.text.clone()
    }

    /// Moves the server clock forward by `by`.
    pub fn advance_clock(&self, by: chrono::Duration) {
        let mut store = self.shared.store.lock();
        store.clock_offset += by;
    }

    /// Calls `endpoint` in-process as the default test user, through the same handler as HTTP
    /// (`auth.login` returns a fresh token). Returns the reply's `data` or the API error.
    pub fn call(&self, endpoint: &str, body: Value) -> Result<Value, ApiError> {
        self.call_as(&Identity::test_user(), endpoint, body)
    }

    /// Like [`ClearmlDouble::call`], as another identity.
    pub fn call_as(
        &self,
        identity: &Identity,
        endpoint: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let (release, api) = {
            let store = self.shared.store.lock();
            (store.release.clone(), store.release.api)
        };
        let Some(ep) = dispatch::find_on(&release, endpoint, api) else {
            return Err(ApiError::raw(
                404,
                0,
                format!("Unable to find endpoint for name {endpoint} and version {api}"),
            ));
        };
        let data = match body {
            Value::Object(o) => o,
            Value::Null => Doc::new(),
            _ => return Err(ApiError::raw(500, 0, "Data should be a dict")),
        };
        let ctx = Ctx {
            identity,
            ip: "127.0.0.1",
            batch: None,
        };
        let mut store = self.shared.store.lock();
        match ep.kind {
            Kind::Auth(handler) | Kind::Open(handler) | Kind::Info(handler) => {
                handler(&mut store, &ctx, &data)
            }
            Kind::Login => {
                let authed = auth::Authed {
                    identity: identity.clone(),
                    session: None,
                };
                auth::login(&mut store, &authed, &data)
            }
            Kind::Logout => Ok(json!({})),
        }
    }

    /// A Bearer token for the default user (as `auth.login` would issue).
    pub fn issue_token(&self) -> Result<String, ApiError> {
        let mut store = self.shared.store.lock();
        auth::issue_token(
            &mut store,
            &Identity::test_user(),
            auth::DEFAULT_EXPIRATION_SEC,
        )
    }

    /// `queues.create {name}`; returns the queue id.
    pub fn create_queue(&self, name: &str) -> Result<String, ApiError> {
        self.create_queue_with(json!({ "name": name }))
    }

    /// `queues.create` with a full body (e.g. `system_tags`); returns the queue id.
    pub fn create_queue_with(&self, body: Value) -> Result<String, ApiError> {
        let res = self.call("queues.create", body)?;
        Ok(res["id"].as_str().unwrap_or_default().to_string())
    }

    /// `projects.create {name}`; returns the project id.
    pub fn create_project(&self, name: &str) -> Result<String, ApiError> {
        let res = self.call("projects.create", json!({ "name": name }))?;
        Ok(res["id"].as_str().unwrap_or_default().to_string())
    }

    /// `tasks.create` of a `training` task named `name`, with extra create fields merged from
    /// `extra` (e.g. `{"container": {"image": "…"}}`); returns the task id.
    pub fn create_task(&self, name: &str, extra: Value) -> Result<String, ApiError> {
        let mut body = json!({ "name": name, "type": "training" });
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let res = self.call("tasks.create", body)?;
        Ok(res["id"].as_str().unwrap_or_default().to_string())
    }

    /// `tasks.enqueue {task, queue}`; returns the reply data.
    pub fn enqueue(&self, task: &str, queue: &str) -> Result<Value, ApiError> {
        self.call("tasks.enqueue", json!({ "task": task, "queue": queue }))
    }

    /// Id of the queue tagged `default`.
    pub fn default_queue_id(&self) -> Option<String> {
        self.state(|s| {
            queues::default_queue(s, DEFAULT_COMPANY)
                .ok()
                .map(|q| q.id.clone())
        })
    }

    /// Id of the queue with this exact name.
    pub fn queue_id(&self, name: &str) -> Option<String> {
        self.state(|s| s.queue_by_name(name).map(|q| q.id.clone()))
    }

    /// Task ids in a queue, head first (empty for an unknown queue).
    pub fn queue_entries(&self, queue_id: &str) -> Vec<String> {
        self.state(|s| s.queue(queue_id).map(Queue::task_ids).unwrap_or_default())
    }

    /// The stored task document (including the internal `enqueue_status`).
    pub fn task(&self, id: &str) -> Option<Value> {
        self.state(|s| s.task(id).map(|d| Value::Object(d.clone())))
    }

    /// Every stored task document, in creation order.
    pub fn tasks(&self) -> Vec<Value> {
        self.state(|s| {
            s.tasks()
                .into_iter()
                .map(|d| Value::Object(d.clone()))
                .collect()
        })
    }

    /// Live workers in the `workers.get_all` shape.
    pub fn workers(&self) -> Vec<Value> {
        self.state(|s| {
            s.workers()
                .into_iter()
                .map(|w| workers::worker_json(s, w))
                .collect()
        })
    }

    /// Every stored event body, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.state(|s| s.events().iter().map(|e| e.body.clone()).collect())
    }

    /// The last cluster report of each (worker, key).
    pub fn cluster_reports(&self) -> Vec<ClusterReport> {
        self.state(|s| s.cluster_reports().into_iter().cloned().collect())
    }

    /// Project documents, in creation order.
    pub fn projects(&self) -> Vec<Value> {
        self.state(|s| {
            s.projects()
                .into_iter()
                .map(|d| Value::Object(d.clone()))
                .collect()
        })
    }

    /// Stops the server and waits for its accept loop to end.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
