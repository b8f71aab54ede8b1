//! Which ClearML server the agent talks to (`server.info`, read after every login) and, from its
//! version, how a task is taken from its queue there ([`take_protocol`], pure).
//!
//! What the server's source says (`clearml/clearml-server`, `apiserver/bll/task/task_operations.py`
//! `enqueue_task` and `apiserver/bll/task/utils.py` `ChangeStatusRequest`):
//!
//! - from 1.17.0 (fa41e14 "Allow enqueueing enqueued tasks", Dec 2024), `tasks.enqueue` of a
//!   queued task is allowed and removes the task from every other queue in the same call: one
//!   call moves it ([`TakeProtocol::Move`]);
//! - before 1.17.0 the enqueue passes `allow_same_state_transition=False`, so a queued task is
//!   refused (400/110 "Task already in requested status") unless `force`; a forced enqueue adds
//!   the task to the new queue, sets `execution.queue` to it, writes the status reason and message,
//!   and leaves it in its old queue ([`TakeProtocol::EnqueueThenRemove`]);
//! - `force` is read from 1.1.0 (677bb3b, Jul 2021): before, a queued task cannot be enqueued again
//!   at all, so no take protocol is safe there ([`TooOld`]).
//!
//! `server.info` answers `version`, `build`, `commit` and, for API 2.12 and later, `api_version`
//! (`apiserver/services/server/__init__.py`); the version comes from the deployment
//! (`CLEARML_SERVER_VERSION` or the image's `VERSION` file) and may carry a build suffix.

use serde_json::Value;

/// The oldest ClearML server the agent runs against.
pub const MIN_SERVER_VERSION: &str = "1.1.0";
const MIN_SERVER: (u32, u32, u32) = (1, 1, 0);
/// The first server whose `tasks.enqueue` moves a queued task.
pub const MOVE_SERVER_VERSION: &str = "1.17.0";
const MOVE_SERVER: (u32, u32, u32) = (1, 17, 0);
/// API versions of those two releases (for a server that reports no readable `version`).
const MIN_API: (u32, u32) = (2, 14);
const MOVE_API: (u32, u32) = (2, 31);

/// What `server.info` reports (a field the server leaves out or sends as a non-string is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// Server version, e.g. `1.16.2` (empty if unreported).
    pub version: String,
    /// Highest API version, e.g. `2.30` (empty before API 2.12).
    pub api_version: String,
    /// Build number.
    pub build: String,
    /// VCS commit.
    pub commit: String,
}

impl ServerInfo {
    /// Reads the `data` of a `server.info` reply.
    pub fn from_data(data: &Value) -> Self {
        let field = |name: &str| {
            data.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        Self {
            version: field("version"),
            api_version: field("api_version"),
            build: field("build"),
            commit: field("commit"),
        }
    }

    /// `1.16.2 (API 2.30)`, for logs and `status`.
    pub fn describe(&self) -> String {
        match (self.version.as_str(), self.api_version.as_str()) {
            ("", "") => "unknown version".into(),
            (v, "") => v.into(),
            ("", a) => format!("unknown version (API {a})"),
            (v, a) => format!("{v} (API {a})"),
        }
    }
}

/// How a task is moved from its queue into the pending queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeProtocol {
    /// One `tasks.enqueue` into the pending queue: the server removes the task from its own queue
    /// in the same call (servers 1.17.0 and later).
    Move,
    /// A forced `tasks.enqueue` into the pending queue (the server leaves the task in its own
    /// queue), then `queues.remove_task` from its own queue (servers before 1.17.0). A task found
    /// in both is pending: the move is finished by the second call, never taken again.
    EnqueueThenRemove,
}

impl TakeProtocol {
    /// Short name for logs and `status`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Move => "move",
            Self::EnqueueThenRemove => "enqueue-then-remove",
        }
    }
}

/// A server too old for any safe take protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "ClearML server {found} is too old: this agent needs server {MIN_SERVER_VERSION} or newer (it \
     takes a queued task with a forced tasks.enqueue, which servers before {MIN_SERVER_VERSION} \
     refuse); upgrade the ClearML server"
)]
pub struct TooOld {
    /// What the server reported.
    pub found: String,
}

/// The take protocol for a server (pure). Decided from `version` when it reads as
/// `MAJOR.MINOR[.PATCH…]`, else from `api_version`; a server that reports neither gets
/// [`TakeProtocol::EnqueueThenRemove`], which is safe on every server from 1.1.0 (on 1.17.0 and
/// later the forced enqueue already moves the task and the removal finds nothing).
pub fn take_protocol(info: &ServerInfo) -> Result<TakeProtocol, TooOld> {
    let too_old = || TooOld {
        found: info.describe(),
    };
    if let Some(v) = parse_version(&info.version) {
        return match v {
            v if v >= MOVE_SERVER => Ok(TakeProtocol::Move),
            v if v >= MIN_SERVER => Ok(TakeProtocol::EnqueueThenRemove),
            _ => Err(too_old()),
        };
    }
    match parse_version(&info.api_version).map(|(major, minor, _)| (major, minor)) {
        Some(a) if a >= MOVE_API => Ok(TakeProtocol::Move),
        Some(a) if a >= MIN_API => Ok(TakeProtocol::EnqueueThenRemove),
        Some(_) => Err(too_old()),
        None => Ok(TakeProtocol::EnqueueThenRemove),
    }
}

/// `MAJOR.MINOR[.PATCH]` at the start of `text` (a leading `v` and any suffix after the numbers,
/// e.g. `-123` or `.4`, are ignored).
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let text = text.trim().trim_start_matches(['v', 'V']);
    let mut parts = text.splitn(3, '.');
    let number = |p: Option<&str>| -> Option<u32> {
        let digits: String = p?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let major = number(parts.next())?;
    let minor = number(parts.next())?;
    let patch = number(parts.next()).unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn info(version: &str, api: &str) -> ServerInfo {
        ServerInfo {
            version: version.into(),
            api_version: api.into(),
            ..ServerInfo::default()
        }
    }

    #[test]
    fn take_protocol_table() {
        use TakeProtocol::{EnqueueThenRemove as Two, Move};
        let cases: &[(&str, &str, Result<TakeProtocol, ()>)] = &[
            ("2.3.0", "2.34", Ok(Move)),
            ("2.0.0", "2.31", Ok(Move)),
            ("1.17.0", "2.31", Ok(Move)),
            ("1.17.1-523", "2.31", Ok(Move)),
            ("v1.17.0", "", Ok(Move)),
            ("1.16.2", "2.30", Ok(Two)),
            ("1.16.2-502", "", Ok(Two)),
            ("1.9.0", "2.23", Ok(Two)),
            ("1.1.0", "2.14", Ok(Two)),
            ("1.0.2", "2.13", Err(())),
            ("0.17.0", "2.12", Err(())),
            // the version decides when it reads; else the API version
            ("1.16", "2.31", Ok(Two)),
            ("", "2.31", Ok(Move)),
            ("dev", "2.30", Ok(Two)),
            ("", "2.13", Err(())),
            // nothing readable: the protocol that is safe everywhere
            ("", "", Ok(Two)),
            ("unknown", "x", Ok(Two)),
            // an Enterprise server numbers its releases on (a refused move falls back at run time)
            ("3.22.3", "", Ok(Move)),
        ];
        for (version, api, want) in cases {
            let got = take_protocol(&info(version, api)).map_err(|_| ());
            assert_eq!(got, *want, "version {version:?}, api {api:?}");
        }
    }

    #[test]
    fn too_old_names_the_minimum() {
        let err = take_protocol(&info("1.0.2", "2.13")).expect_err("too old");
        let text = err.to_string();
        assert!(text.contains("1.0.2 (API 2.13)"), "{text}");
        assert!(text.contains("needs server 1.1.0 or newer"), "{text}");
    }

    #[test]
    fn server_info_reads_what_each_release_sends() {
        let cases = [
            (
                json!({"version": "1.16.2", "build": "502", "commit": "abc", "api_version": "2.30"}),
                info("1.16.2", "2.30"),
            ),
            // API 2.8–2.11 sends uid instead of api_version; fields may be missing or odd
            (json!({"version": "1.16.2", "uid": "u"}), info("1.16.2", "")),
            (json!({"version": 116, "api_version": null}), info("", "")),
            (json!("not an object"), info("", "")),
        ];
        for (data, mut want) in cases {
            let got = ServerInfo::from_data(&data);
            want.build = got.build.clone();
            want.commit = got.commit.clone();
            assert_eq!(got, want, "{data}");
        }
        assert_eq!(
            ServerInfo::from_data(&json!({"build": "502", "commit": "abc"})).build,
            "502"
        );
        assert_eq!(info("1.16.2", "2.30").describe(), "1.16.2 (API 2.30)");
        assert_eq!(info("", "").describe(), "unknown version");
    }
}
