//! Which clearml-server release the double behaves as (default: the newest, 2.3.0). A test picks
//! an older one with [`super::ClearmlDouble::set_server_version`]; the double then reports it
//! (`server.info`, the token's claims, the API version) and reproduces the behaviour of that
//! release where the agent's take and launch depend on it, as the server's source shows
//! (`clearml/clearml-server`, tags `v1.16.2` and `v1.17.0`):
//!
//! | from | what changed | source |
//! |---|---|---|
//! | 1.1.0 | `tasks.enqueue` reads `force` | 677bb3b "Add force parameter to tasks.enqueue" |
//! | 1.6.0 | `queues.peek_task`, `queues.get_num_entries` exist | d117a4f |
//! | 1.8.0 | `tasks.enqueue` reads `verify_watched_queue` | bc23f1b |
//! | 1.11.0 | `tasks.dequeue` reads `remove_from_all_queues` | 755cc80 |
//! | 1.12.0 | `tasks.dequeue` reads `new_status` | 6c5f966 |
//! | 1.17.0 | `tasks.enqueue` of a queued task is allowed (was 400/110 "Task already in requested status" unless `force`), removes the task from every other queue, keeps the pre-enqueue status (was overwritten by the current one, `queued` for a queued task) and reads `update_execution_queue` | fa41e14 "Allow enqueueing enqueued tasks", f9577f9 |
//! | 1.17.0 | `failed → queued` is a legal transition | 50593f6 |
//! | 1.17.0 | `queues.remove_task` reads `update_task_status`; `queues.add_task` sets `execution.queue`; `queues.clear_queue` exists; deleting a queue reverts only the tasks whose `execution.queue` it is, and unsets it | a1956cd, `queue_bll.py` |
//! | 1.17.0 | `queues.get_next_task` turns a popped `stopped` task back to `queued` | `services/queues.py` |
//! | 2.3.0 | `server.info` needs authentication (was open) | 3b0cc7c |
//!
//! Differences between releases that the agent does not meet are not reproduced (e.g. a server
//! before 1.7.0 hides no queue, one before 1.6.0 ignores `max_task_entries`).

use super::dispatch::Version;

/// The newest release the double knows, and its default.
pub const NEWEST: &str = "2.3.0";

/// A release the double has no API version for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("clearml-server {0:?} is not a release the double knows (1.0.0 to {NEWEST})")]
pub struct UnknownRelease(pub String);

/// `(major, minor)` of a release line or of an API version.
type Line = (u32, u32);

/// The highest API version of each release line (`apiserver/schema/services/*.conf` at its tag).
const API_OF_RELEASE: &[(Line, Line)] = &[
    ((1, 0), (2, 13)),
    ((1, 1), (2, 14)),
    ((1, 2), (2, 16)),
    ((1, 3), (2, 17)),
    ((1, 4), (2, 18)),
    ((1, 5), (2, 19)),
    ((1, 6), (2, 20)),
    ((1, 7), (2, 21)),
    ((1, 8), (2, 22)),
    ((1, 9), (2, 23)),
    ((1, 10), (2, 24)),
    ((1, 11), (2, 25)),
    ((1, 12), (2, 26)),
    ((1, 13), (2, 27)),
    ((1, 14), (2, 28)),
    ((1, 15), (2, 29)),
    ((1, 16), (2, 30)),
    ((1, 17), (2, 31)),
    ((2, 0), (2, 31)),
    ((2, 1), (2, 32)),
    ((2, 2), (2, 33)),
    ((2, 3), (2, 34)),
];

/// A clearml-server release: what it reports and which behaviour it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// As `server.info` reports it (`1.16.2`).
    pub text: String,
    /// `(major, minor, patch)`.
    pub number: (u32, u32, u32),
    /// Its highest API version (what an unversioned path resolves to).
    pub api: Version,
}

impl Release {
    /// A known release (`MAJOR.MINOR.PATCH`).
    pub fn parse(text: &str) -> Result<Self, UnknownRelease> {
        let unknown = || UnknownRelease(text.to_string());
        let mut parts = text.trim().split('.');
        let mut next = || -> Result<u32, UnknownRelease> {
            parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(unknown)
        };
        let number = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(unknown());
        }
        let (_, (major, minor)) = API_OF_RELEASE
            .iter()
            .find(|(line, _)| *line == (number.0, number.1))
            .ok_or_else(unknown)?;
        Ok(Self {
            text: text.trim().to_string(),
            number,
            api: Version {
                major: *major,
                minor: *minor,
            },
        })
    }

    /// The newest release.
    pub fn newest() -> Self {
        Self::parse(NEWEST).unwrap_or_else(|_| unreachable!("the newest release is in the table"))
    }

    fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.number >= (major, minor, patch)
    }

    /// `tasks.enqueue` reads `force` (1.1.0).
    pub fn enqueue_force(&self) -> bool {
        self.at_least(1, 1, 0)
    }

    /// `tasks.enqueue` reads `verify_watched_queue` (1.8.0).
    pub fn enqueue_verify_watched(&self) -> bool {
        self.at_least(1, 8, 0)
    }

    /// `tasks.dequeue` reads `remove_from_all_queues` (1.11.0).
    pub fn dequeue_remove_from_all(&self) -> bool {
        self.at_least(1, 11, 0)
    }

    /// `tasks.dequeue` reads `new_status` (1.12.0).
    pub fn dequeue_new_status(&self) -> bool {
        self.at_least(1, 12, 0)
    }

    /// 1.17.0 "Allow enqueueing enqueued tasks": a queued task may be enqueued again (it is moved
    /// out of every other queue, keeping its pre-enqueue status), `update_execution_queue` is
    /// read, and the queue-side changes of the same release (`a1956cd` and around).
    pub fn moves_queued_tasks(&self) -> bool {
        self.at_least(1, 17, 0)
    }

    /// `failed → queued` is legal (1.17.0).
    pub fn requeues_failed(&self) -> bool {
        self.at_least(1, 17, 0)
    }

    /// `server.info` needs authentication (2.3.0).
    pub fn server_info_needs_auth(&self) -> bool {
        self.at_least(2, 3, 0)
    }

    /// Whether this release serves `endpoint` at all (a few appeared in a known release).
    pub fn serves(&self, endpoint: &str) -> bool {
        match endpoint {
            "queues.clear_queue" => self.at_least(1, 17, 0),
            "queues.peek_task" | "queues.get_num_entries" => self.at_least(1, 6, 0),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_with_their_api_version() {
        for (text, api, moves) in [
            ("2.3.0", "2.34", true),
            ("1.17.0", "2.31", true),
            ("1.16.2", "2.30", false),
            ("1.9.0", "2.23", false),
            ("1.0.2", "2.13", false),
        ] {
            let r = Release::parse(text).expect(text);
            assert_eq!(r.api.to_string(), api, "{text}");
            assert_eq!(r.moves_queued_tasks(), moves, "{text}");
        }
        assert!(!Release::parse("1.0.2").expect("1.0").enqueue_force());
        assert!(Release::parse("1.1.0").expect("1.1").enqueue_force());
        for bad in ["", "1.16", "0.17.0", "1.16.x", "9.9.9", "1.16.2.1"] {
            assert!(Release::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Release::newest().text, NEWEST);
    }
}
