//! The double's in-memory database: tasks, queues, projects, workers, events, cluster reports,
//! credentials and issued tokens, plus a clock with a settable offset. Everything lives in one
//! [`Store`] behind a `parking_lot::Mutex` (see `mod.rs`), so each API call is atomic, like the
//! conditional MongoDB/Redis updates of the real server.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::doc::{self, Doc, fmt_time, to_millis};
use super::release::Release;

/// Company id of a fresh clearml-server (its built-in company).
pub const DEFAULT_COMPANY: &str = "d1bd92a3b039400cbafc60a7a5b1e52b";
/// Access key seeded by default.
pub const DEFAULT_ACCESS_KEY: &str = "test-access-key";
/// Secret key seeded by default.
pub const DEFAULT_SECRET_KEY: &str = "test-secret-key";

/// Who is calling: what the server stores in a token's `identity` claim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// User id (e.g. `__tests__`).
    pub user: String,
    /// Company id.
    pub company: String,
    /// Role (`user`, `admin`, …).
    pub role: String,
    /// Display name of the user (used in `Stopped by <user_name>`).
    pub user_name: String,
    /// Company display name.
    pub company_name: String,
}

impl Identity {
    /// The identity of the built-in test user of a fresh server.
    pub fn test_user() -> Self {
        Self {
            user: "__tests__".into(),
            company: DEFAULT_COMPANY.into(),
            role: "user".into(),
            user_name: "__tests__".into(),
            company_name: "clearml".into(),
        }
    }
}

/// An access key / secret key pair and the identity it authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Access key (the Basic-auth user name).
    pub access_key: String,
    /// Secret key (the Basic-auth password).
    pub secret_key: String,
    /// Identity of calls made with this pair.
    pub identity: Identity,
}

/// One entry of a queue: `{task, added}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Task id.
    pub task: String,
    /// When it was added.
    pub added: DateTime<Utc>,
}

/// A queue document.
#[derive(Debug, Clone)]
pub struct Queue {
    /// 32-hex id.
    pub id: String,
    /// Unique (per company) name, at least 3 characters.
    pub name: String,
    /// Optional display name.
    pub display_name: Option<String>,
    /// Owning company.
    pub company: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// User tags.
    pub tags: Vec<String>,
    /// System tags (`default`, `k8s-glue`, …).
    pub system_tags: Vec<String>,
    /// Metadata map, if ever set.
    pub metadata: Option<Value>,
    /// Last modification of the queue (entries included).
    pub last_update: DateTime<Utc>,
    /// FIFO entries; index 0 is next.
    pub entries: VecDeque<QueueEntry>,
}

impl Queue {
    /// Whether the task has an entry in this queue.
    pub fn contains(&self, task: &str) -> bool {
        self.entries.iter().any(|e| e.task == task)
    }

    /// The task ids in queue order.
    pub fn task_ids(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.task.clone()).collect()
    }

    /// The queue as the API returns it (`entries` limited to `max_entries` when given).
    pub fn to_json(&self, max_entries: Option<usize>) -> Doc {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .take(max_entries.unwrap_or(usize::MAX))
            .map(|e| json!({"task": e.task, "added": fmt_time(e.added)}))
            .collect();
        let mut out = Doc::new();
        out.insert("id".into(), json!(self.id));
        out.insert("name".into(), json!(self.name));
        if let Some(d) = &self.display_name {
            out.insert("display_name".into(), json!(d));
        }
        out.insert("company".into(), json!(self.company));
        out.insert("created".into(), json!(fmt_time(self.created)));
        out.insert("tags".into(), doc::sorted_tags(&self.tags));
        out.insert("system_tags".into(), doc::sorted_tags(&self.system_tags));
        out.insert("entries".into(), Value::Array(entries));
        out.insert("last_update".into(), json!(fmt_time(self.last_update)));
        if let Some(m) = &self.metadata {
            out.insert("metadata".into(), m.clone());
        }
        out
    }
}

/// A stored task: the document (as the server keeps it, including the never-returned
/// `enqueue_status`) and its insertion sequence (MongoDB's natural order).
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Insertion order.
    pub seq: u64,
    /// The document; unset fields are absent.
    pub doc: Doc,
}

/// A project document.
#[derive(Debug, Clone)]
pub struct Project {
    /// Insertion order.
    pub seq: u64,
    /// The document as returned by the API.
    pub doc: Doc,
}

/// `{id, name}` reference used in worker entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdName {
    /// Id.
    pub id: String,
    /// Name (may be missing for a deleted object).
    pub name: Option<String>,
}

/// A worker registration (kept in Redis by the real server, with a TTL of `register_timeout`).
#[derive(Debug, Clone)]
pub struct Worker {
    /// `worker_<company>_<user>_<id>`.
    pub key: String,
    /// Worker id as sent by the agent.
    pub id: String,
    /// Registering user (id, name).
    pub user: IdName,
    /// Company (id, name).
    pub company: IdName,
    /// Caller IP.
    pub ip: String,
    /// Queue ids the worker listens to.
    pub queues: Vec<String>,
    /// First registration time.
    pub register_time: DateTime<Utc>,
    /// TTL in seconds.
    pub register_timeout: i64,
    /// Last register or status report.
    pub last_activity_time: DateTime<Utc>,
    /// Last successful status report.
    pub last_report_time: Option<DateTime<Utc>>,
    /// Task currently reported.
    pub task: Option<IdName>,
    /// Project of the reported task.
    pub project: Option<IdName>,
    /// Queue the current task came from.
    pub queue: Option<String>,
    /// User tags.
    pub tags: Vec<String>,
    /// System tags.
    pub system_tags: Vec<String>,
    /// `machine_stats` of the last report (the real server sends them to Elasticsearch).
    pub machine_stats: Option<Value>,
    /// `timestamp` of the last report as sent (seconds or milliseconds).
    pub last_report_timestamp: Option<i64>,
    /// When the registration expires.
    pub expires_at: DateTime<Utc>,
}

/// A stored `events.add_batch` item.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the double received it.
    pub received: DateTime<Utc>,
    /// The event object as sent.
    pub body: Value,
}

/// The last `workers.cluster_report` for one (worker, key).
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// `worker` field of the report (empty if absent).
    pub worker: String,
    /// `key` field of the report (empty if absent).
    pub key: String,
    /// When the double received it.
    pub received: DateTime<Utc>,
    /// The whole request body (e.g. `properties.max_gpus`, `resource_groups`, `timeout`).
    pub body: Value,
}

/// Token bookkeeping: signing secret and the sessions a test expired or revoked.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// HS256 secret.
    pub secret: Vec<u8>,
    /// Session ids of every issued token.
    pub issued: Vec<String>,
    /// Sessions revoked by `auth.logout` or a test.
    pub revoked: HashSet<String>,
    /// Sessions a test declared expired.
    pub expired: HashSet<String>,
}

/// The whole in-memory database.
#[derive(Debug)]
pub struct Store {
    pub(crate) tasks: HashMap<String, TaskRecord>,
    pub(crate) queues: HashMap<String, Queue>,
    pub(crate) projects: HashMap<String, Project>,
    pub(crate) workers: HashMap<String, Worker>,
    pub(crate) events: Vec<Event>,
    pub(crate) cluster_reports: HashMap<(String, String), ClusterReport>,
    pub(crate) credentials: HashMap<String, Credential>,
    pub(crate) tokens: Tokens,
    pub(crate) clock_offset: Duration,
    pub(crate) seq: u64,
    pub(crate) server_uid: String,
    /// The clearml-server release the double behaves as.
    pub(crate) release: Release,
}

impl Store {
    /// A fresh server: the default credentials and a `default` queue with system tag `default`.
    pub fn new() -> Self {
        let mut store = Self {
            tasks: HashMap::new(),
            queues: HashMap::new(),
            projects: HashMap::new(),
            workers: HashMap::new(),
            events: Vec::new(),
            cluster_reports: HashMap::new(),
            credentials: HashMap::new(),
            tokens: Tokens {
                secret: doc::new_id().into_bytes(),
                ..Tokens::default()
            },
            clock_offset: Duration::zero(),
            seq: 0,
            server_uid: doc::new_id(),
            release: Release::newest(),
        };
        store.add_credential(Credential {
            access_key: DEFAULT_ACCESS_KEY.into(),
            secret_key: DEFAULT_SECRET_KEY.into(),
            identity: Identity::test_user(),
        });
        let now = store.now();
        let id = doc::new_id();
        store.queues.insert(
            id.clone(),
            Queue {
                id,
                name: "default".into(),
                display_name: None,
                company: DEFAULT_COMPANY.into(),
                created: now,
                tags: Vec::new(),
                system_tags: vec!["default".into()],
                metadata: None,
                last_update: now,
                entries: VecDeque::new(),
            },
        );
        store
    }

    /// The server's notion of now: wall clock plus the test offset, at MongoDB's millisecond precision.
    pub fn now(&self) -> DateTime<Utc> {
        to_millis(Utc::now() + self.clock_offset)
    }

    /// Adds (or replaces) a key/secret pair.
    pub fn add_credential(&mut self, credential: Credential) {
        self.credentials
            .insert(credential.access_key.clone(), credential);
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The clearml-server release the double behaves as.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// A stored task document (including the internal `enqueue_status`).
    pub fn task(&self, id: &str) -> Option<&Doc> {
        self.tasks.get(id).map(|r| &r.doc)
    }

    /// All task documents, in creation order.
    pub fn tasks(&self) -> Vec<&Doc> {
        let mut records: Vec<&TaskRecord> = self.tasks.values().collect();
        records.sort_by_key(|r| r.seq);
        records.into_iter().map(|r| &r.doc).collect()
    }

    /// A queue by id.
    pub fn queue(&self, id: &str) -> Option<&Queue> {
        self.queues.get(id)
    }

    /// A queue by exact name (in any company).
    pub fn queue_by_name(&self, name: &str) -> Option<&Queue> {
        self.queues.values().find(|q| q.name == name)
    }

    /// All queues, in creation order.
    pub fn queues(&self) -> Vec<&Queue> {
        let mut queues: Vec<&Queue> = self.queues.values().collect();
        queues.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        queues
    }

    /// Live (not expired) workers.
    pub fn workers(&self) -> Vec<&Worker> {
        let now = self.now();
        let mut workers: Vec<&Worker> = self
            .workers
            .values()
            .filter(|w| w.expires_at > now)
            .collect();
        workers.sort_by(|a, b| a.key.cmp(&b.key));
        workers
    }

    /// Every stored event, in arrival order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The last cluster report of each (worker, key).
    pub fn cluster_reports(&self) -> Vec<&ClusterReport> {
        let mut reports: Vec<&ClusterReport> = self.cluster_reports.values().collect();
        reports.sort_by(|a, b| (&a.worker, &a.key).cmp(&(&b.worker, &b.key)));
        reports
    }

    /// All project documents, in creation order.
    pub fn projects(&self) -> Vec<&Doc> {
        let mut projects: Vec<&Project> = self.projects.values().collect();
        projects.sort_by_key(|p| p.seq);
        projects.into_iter().map(|p| &p.doc).collect()
    }

    /// Drops expired worker registrations (Redis TTL).
    pub(crate) fn purge_expired_workers(&mut self) {
        let now = self.now();
        self.workers.retain(|_, w| w.expires_at > now);
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}
