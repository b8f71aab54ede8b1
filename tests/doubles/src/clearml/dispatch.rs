//! The endpoint table of the double (name → implementation version, whether it needs
//! authentication, handler) and the per-call context handed to handlers. Handlers are plain
//! functions over the [`Store`], shared by the HTTP layer and the in-process test API.

use serde_json::Value;

use super::doc::Doc;
use super::error::ApiError;
use super::release::Release;
use super::state::{Identity, Store};
use super::{batch, lifecycle, misc, queues, tasks, workers};

/// An API version as it appears in paths (`/v2.23/…`) and envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major part.
    pub major: u32,
    /// Minor part.
    pub minor: u32,
}

impl Version {
    /// The newest version the double implements (clearml-server 2.3 → 2.34).
    pub const MAX: Version = Version {
        major: 2,
        minor: 34,
    };

    /// Parses `2.23` (or `2` / `223` without a dot, read as a major version).
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once('.') {
            Some((major, minor)) => Some(Self {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
            }),
            None => Some(Self {
                major: text.parse().ok()?,
                minor: 0,
            }),
        }
    }

    const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What a handler knows about the call besides its body.
#[derive(Debug, Clone)]
pub(crate) struct Ctx<'a> {
    /// Authenticated caller (the default test user for unauthenticated endpoints).
    pub identity: &'a Identity,
    /// Caller IP (`X-Forwarded-For`, `X-Real-IP`, or the peer address).
    pub ip: &'a str,
    /// Items of a JSON-lines body.
    pub batch: Option<&'a [Value]>,
}

/// A handler: pure function over the store.
pub(crate) type Handler = fn(&mut Store, &Ctx<'_>, &Doc) -> Result<Value, ApiError>;

/// How an endpoint is served.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// Needs authentication.
    Auth(Handler),
    /// No authentication at all (`debug.ping`).
    Open(Handler),
    /// `server.info`: open on releases before 2.3.0, authenticated from 2.3.0 (3b0cc7c).
    Info(Handler),
    /// `auth.login` (needs the authentication result itself).
    Login,
    /// `auth.logout`.
    Logout,
}

/// One endpoint.
#[derive(Clone, Copy)]
pub(crate) struct Endpoint {
    /// `service.action`.
    pub name: &'static str,
    /// `min_version` of the implementation (reported as `actual_version`).
    pub version: Version,
    /// Handler kind.
    pub kind: Kind,
}

const fn ep(name: &'static str, major: u32, minor: u32, kind: Kind) -> Endpoint {
    Endpoint {
        name,
        version: Version::new(major, minor),
        kind,
    }
}

fn started(s: &mut Store, c: &Ctx<'_>, d: &Doc) -> Result<Value, ApiError> {
    lifecycle::set_status(s, c, d, "in_progress")
}
fn stopped(s: &mut Store, c: &Ctx<'_>, d: &Doc) -> Result<Value, ApiError> {
    lifecycle::set_status(s, c, d, "stopped")
}
fn failed(s: &mut Store, c: &Ctx<'_>, d: &Doc) -> Result<Value, ApiError> {
    lifecycle::set_status(s, c, d, "failed")
}
fn completed(s: &mut Store, c: &Ctx<'_>, d: &Doc) -> Result<Value, ApiError> {
    lifecycle::set_status(s, c, d, "completed")
}
fn close(s: &mut Store, c: &Ctx<'_>, d: &Doc) -> Result<Value, ApiError> {
    lifecycle::set_status(s, c, d, "closed")
}
fn enqueue(s: &mut Store, c: &Ctx<'_>, d: &Doc) -> Result<Value, ApiError> {
    let req = lifecycle::EnqueueRequest::parse(d)?;
    lifecycle::enqueue(s, c, &req)
}

/// Every endpoint the double serves.
pub(crate) static ENDPOINTS: &[Endpoint] = &[
    ep("auth.login", 1, 0, Kind::Login),
    ep("auth.logout", 2, 2, Kind::Logout),
    ep("debug.ping", 1, 0, Kind::Open(misc::debug_ping)),
    // newest implementation first: `find` takes the first one not above the requested version
    ep("server.info", 2, 12, Kind::Info(misc::server_info_2_12)),
    ep("server.info", 2, 8, Kind::Info(misc::server_info_2_8)),
    ep("server.info", 1, 0, Kind::Info(misc::server_info)),
    ep("projects.get_all", 1, 0, Kind::Auth(misc::projects_get_all)),
    ep(
        "projects.get_by_id",
        1,
        0,
        Kind::Auth(misc::projects_get_by_id),
    ),
    ep("projects.create", 1, 0, Kind::Auth(misc::projects_create)),
    ep("events.add_batch", 1, 0, Kind::Auth(misc::events_add_batch)),
    ep("events.add", 1, 0, Kind::Auth(misc::events_add)),
    ep("queues.get_all", 2, 4, Kind::Auth(queues::get_all)),
    ep("queues.get_all_ex", 2, 4, Kind::Auth(queues::get_all_ex)),
    ep("queues.get_by_id", 2, 4, Kind::Auth(queues::get_by_id)),
    ep("queues.get_default", 2, 4, Kind::Auth(queues::get_default)),
    ep("queues.create", 2, 4, Kind::Auth(queues::create)),
    ep("queues.update", 2, 4, Kind::Auth(queues::update)),
    ep("queues.delete", 2, 4, Kind::Auth(queues::delete)),
    ep(
        "queues.add_task",
        2,
        4,
        Kind::Auth(queues::add_task_endpoint),
    ),
    ep(
        "queues.get_next_task",
        1,
        0,
        Kind::Auth(queues::get_next_task),
    ),
    ep("queues.remove_task", 2, 4, Kind::Auth(queues::remove_task)),
    ep("queues.clear_queue", 1, 0, Kind::Auth(queues::clear_queue)),
    ep(
        "queues.move_task_forward",
        2,
        4,
        Kind::Auth(queues::move_task_forward),
    ),
    ep(
        "queues.move_task_backward",
        2,
        4,
        Kind::Auth(queues::move_task_backward),
    ),
    ep(
        "queues.move_task_to_front",
        2,
        4,
        Kind::Auth(queues::move_task_to_front),
    ),
    ep(
        "queues.move_task_to_back",
        2,
        4,
        Kind::Auth(queues::move_task_to_back),
    ),
    ep("queues.peek_task", 2, 15, Kind::Auth(queues::peek_task)),
    ep(
        "queues.get_num_entries",
        2,
        15,
        Kind::Auth(queues::get_num_entries),
    ),
    ep(
        "queues.get_queue_metrics",
        2,
        4,
        Kind::Auth(queues::get_queue_metrics),
    ),
    ep("tasks.create", 1, 0, Kind::Auth(tasks::create)),
    ep("tasks.get_by_id", 1, 0, Kind::Auth(tasks::get_by_id)),
    ep("tasks.get_all", 1, 0, Kind::Auth(tasks::get_all)),
    ep("tasks.edit", 1, 0, Kind::Auth(tasks::edit)),
    ep("tasks.update", 1, 0, Kind::Auth(tasks::update)),
    ep("tasks.ping", 1, 0, Kind::Auth(tasks::ping)),
    ep(
        "tasks.edit_hyper_params",
        2,
        9,
        Kind::Auth(tasks::edit_hyper_params),
    ),
    ep(
        "tasks.get_hyper_params",
        2,
        9,
        Kind::Auth(tasks::get_hyper_params),
    ),
    ep(
        "tasks.set_requirements",
        1,
        0,
        Kind::Auth(tasks::set_requirements),
    ),
    ep("tasks.enqueue", 1, 0, Kind::Auth(enqueue)),
    ep("tasks.enqueue_many", 2, 13, Kind::Auth(batch::enqueue_many)),
    ep("tasks.update_batch", 2, 1, Kind::Auth(batch::update_batch)),
    ep("tasks.dequeue", 1, 0, Kind::Auth(lifecycle::dequeue)),
    ep("tasks.stop", 1, 0, Kind::Auth(lifecycle::stop)),
    ep("tasks.started", 1, 0, Kind::Auth(started)),
    ep("tasks.stopped", 1, 0, Kind::Auth(stopped)),
    ep("tasks.failed", 1, 0, Kind::Auth(failed)),
    ep("tasks.completed", 2, 2, Kind::Auth(completed)),
    ep("tasks.close", 1, 0, Kind::Auth(close)),
    ep("workers.register", 2, 4, Kind::Auth(workers::register)),
    ep("workers.unregister", 2, 4, Kind::Auth(workers::unregister)),
    ep(
        "workers.status_report",
        2,
        4,
        Kind::Auth(workers::status_report),
    ),
    ep("workers.get_all", 2, 4, Kind::Auth(workers::get_all)),
    ep("workers.get_count", 1, 0, Kind::Auth(workers::get_count)),
    ep(
        "workers.cluster_report",
        1,
        0,
        Kind::Auth(workers::cluster_report),
    ),
    ep(
        "workers.cluster_unregister",
        1,
        0,
        Kind::Auth(workers::cluster_unregister),
    ),
];

/// The implementation of `name` for a requested version (the newest one not above it).
pub(crate) fn find(name: &str, requested: Version) -> Option<&'static Endpoint> {
    ENDPOINTS
        .iter()
        .find(|e| e.name == name && e.version <= requested)
}

/// Like [`find`], on a server of `release` (404 for an endpoint that release does not have).
pub(crate) fn find_on(
    release: &Release,
    name: &str,
    requested: Version,
) -> Option<&'static Endpoint> {
    find(name, requested).filter(|_| release.serves(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_resolve_like_the_server() {
        assert!(find("queues.get_next_task", Version::new(2, 14)).is_some());
        assert!(find("queues.get_all", Version::new(2, 1)).is_none());
        assert!(find("queues.get_all", Version::new(9, 0)).is_some());
        assert!(find("queues.nope", Version::MAX).is_none());
        assert_eq!(
            find("server.info", Version::new(2, 23)).map(|e| e.version),
            Some(Version::new(2, 12))
        );
        assert_eq!(
            find("server.info", Version::new(2, 9)).map(|e| e.version),
            Some(Version::new(2, 8))
        );
        let old = Release::parse("1.16.2").expect("known");
        assert!(find_on(&old, "queues.clear_queue", Version::MAX).is_none());
        assert!(find_on(&Release::newest(), "queues.clear_queue", Version::MAX).is_some());
        assert_eq!(Version::parse("2.23"), Some(Version::new(2, 23)));
        assert_eq!(Version::MAX.to_string(), "2.34");
    }
}
