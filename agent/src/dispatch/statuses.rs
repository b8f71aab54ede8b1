//! The status cache: the ClearML status and status message of every task the reconciler watches,
//! re-read in one batched `tasks.get_all` per chunk at most every [`STATUS_REFRESH`], and read
//! fresh (bypassing the cache) before anything destructive. A task whose document could not be
//! read is `Unknown`, never `Missing`: a reply the agent could not read must never make a task
//! look deleted. Status messages the agent writes go out together, one `tasks.update_batch` per
//! pass ([`StatusCache::write_messages`]), and only those that differ from what ClearML holds.

use std::{collections::HashMap, time::Instant};

use crate::{clearml, lifecycle::TaskStatus};

use super::{GET_ALL_CHUNK, STATUS_REFRESH};

/// A task's status as read, owned (see [`TaskStatus`]).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Confirmed {
    Known(String),
    Missing,
    Unknown,
}

impl Confirmed {
    pub(super) fn as_task_status(&self) -> TaskStatus<'_> {
        match self {
            Confirmed::Known(s) => TaskStatus::Known(s),
            Confirmed::Missing => TaskStatus::Missing,
            Confirmed::Unknown => TaskStatus::Unknown,
        }
    }
}

/// Statuses and status messages as last read (or, for messages, written).
#[derive(Default)]
pub(super) struct StatusCache {
    statuses: HashMap<String, Confirmed>,
    read_at: Option<Instant>,
    /// The status message ClearML holds per task: a pending reason is written only when it
    /// differs, so a restarted agent rewrites nothing.
    messages: HashMap<String, String>,
    /// The status reason ClearML holds per task, as last read.
    reasons: HashMap<String, String>,
    /// Tasks this process launched, or read as queued or in progress (see
    /// [`StatusCache::was_active`]).
    active_seen: std::collections::HashSet<String>,
}

impl StatusCache {
    /// The cached status of `task`, if it was read.
    pub(super) fn get(&self, task: &str) -> Option<&Confirmed> {
        self.statuses.get(task)
    }

    /// Records a status the agent itself just set.
    pub(super) fn set(&mut self, task: &str, status: Confirmed) {
        self.statuses.insert(task.to_string(), status);
    }

    /// The writes of `(task, message)` that change what ClearML holds (pure: the cache decides).
    pub(super) fn changed(&self, writes: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (task, message) in writes {
            if self.messages.get(&task) == Some(&message) {
                continue;
            }
            match out.iter_mut().find(|(t, _)| *t == task) {
                Some(slot) => slot.1 = message,
                None => out.push((task, message)),
            }
        }
        out
    }

    /// Writes the status messages of one pass that changed: one `tasks.update_batch` per
    /// [`clearml::MESSAGE_CHUNK`]; a chunk written is cached, one that failed is written again
    /// by a later pass.
    pub(super) async fn write_messages(
        &mut self,
        clearml: &clearml::Client,
        writes: Vec<(String, String)>,
    ) {
        let writes = self.changed(writes);
        for chunk in writes.chunks(clearml::MESSAGE_CHUNK) {
            match clearml.set_status_messages(chunk).await {
                Ok(_) => {
                    for (task, message) in chunk {
                        self.messages.insert(task.clone(), message.clone());
                    }
                }
                Err(error) => {
                    tracing::warn!(tasks = chunk.len(), %error, "cannot write pending reasons")
                }
            }
        }
    }

    /// The status message ClearML holds for `task`, as last read or written.
    pub(super) fn message(&self, task: &str) -> Option<&String> {
        self.messages.get(task)
    }

    /// Whether this process launched `task` or read it as queued or in progress: a task it later
    /// reads as stopped by its signalled pod was running until then (a restarted agent cannot
    /// tell that from a task aborted in ClearML whose pod the previous agent deleted).
    pub(super) fn was_active(&self, task: &str) -> bool {
        self.active_seen.contains(task)
    }

    /// The status reason ClearML holds for `task`, as last read.
    pub(super) fn reason(&self, task: &str) -> Option<&String> {
        self.reasons.get(task)
    }

    /// Records a status message the agent just wrote.
    pub(super) fn set_message(&mut self, task: &str, message: String) {
        self.messages.insert(task.to_string(), message);
    }

    /// Forgets the messages of tasks `keep` rejects.
    pub(super) fn retain_messages(&mut self, keep: impl Fn(&str) -> bool) {
        self.messages.retain(|t, _| keep(t));
        self.reasons.retain(|t, _| keep(t));
    }

    /// Records that this process launched `task` (or adopted its launch): it is queued or in
    /// progress.
    pub(super) fn mark_active(&mut self, task: &str) {
        self.active_seen.insert(task.to_string());
    }

    /// Forgets the tasks `keep` rejects for [`StatusCache::was_active`].
    pub(super) fn retain_active(&mut self, keep: impl Fn(&str) -> bool) {
        self.active_seen.retain(|t| keep(t));
    }

    /// The statuses of one chunk of tasks as ClearML has them now: a task absent from the reply is
    /// `Missing`, one whose document could not be read `Unknown`. The messages read are cached.
    async fn read(
        &mut self,
        clearml: &clearml::Client,
        chunk: &[String],
    ) -> Result<HashMap<String, Confirmed>, clearml::Error> {
        let docs = clearml
            .tasks(chunk, &["id", "status", "status_message", "status_reason"])
            .await?;
        let mut read: HashMap<String, Confirmed> = chunk
            .iter()
            .map(|t| (t.clone(), Confirmed::Missing))
            .collect();
        for d in docs {
            if matches!(d.status.as_deref(), Some("queued" | "in_progress")) {
                self.active_seen.insert(d.id.clone());
            }
            let status = match (d.status, d.unreadable) {
                (Some(s), None) => Confirmed::Known(s),
                _ => Confirmed::Unknown,
            };
            if let Some(message) = d.status_message {
                self.messages.insert(d.id.clone(), message);
            }
            if let Some(reason) = d.status_reason {
                self.reasons.insert(d.id.clone(), reason);
            }
            read.insert(d.id, status);
        }
        Ok(read)
    }

    /// Re-reads the statuses of `tasks` if the cache is older than [`STATUS_REFRESH`]; false when
    /// ClearML could not answer (the cache is then not to be trusted this pass).
    pub(super) async fn refresh(&mut self, clearml: &clearml::Client, tasks: &[String]) -> bool {
        if self.read_at.is_some_and(|t| t.elapsed() < STATUS_REFRESH) {
            return true;
        }
        let mut fresh = HashMap::new();
        for chunk in tasks.chunks(GET_ALL_CHUNK) {
            match self.read(clearml, chunk).await {
                Ok(read) => fresh.extend(read),
                Err(error) => {
                    tracing::warn!(%error, "cannot read task statuses");
                    return false;
                }
            }
        }
        self.statuses = fresh;
        self.read_at = Some(Instant::now());
        true
    }

    /// Fresh statuses of `tasks` (read in chunks, bypassing the cache; statuses read update it);
    /// a chunk ClearML did not answer is `Unknown`.
    pub(super) async fn confirm(
        &mut self,
        clearml: &clearml::Client,
        tasks: &[String],
    ) -> HashMap<String, Confirmed> {
        let mut fresh = HashMap::new();
        for chunk in tasks.chunks(GET_ALL_CHUNK) {
            match self.read(clearml, chunk).await {
                Ok(read) => {
                    for (task, status) in read {
                        if matches!(status, Confirmed::Known(_)) {
                            self.statuses.insert(task.clone(), status.clone());
                        }
                        fresh.insert(task, status);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot confirm task statuses");
                    fresh.extend(chunk.iter().map(|t| (t.clone(), Confirmed::Unknown)));
                }
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// Only messages that differ from what ClearML holds are written, once per task (the last).
    #[test]
    fn unchanged_messages_are_not_written_again() {
        let mut cache = StatusCache::default();
        for task in ["same", "other"] {
            cache.messages.insert(task.into(), "K8S pending: a".into());
        }
        let got = cache.changed(pairs(&[
            ("same", "K8S pending: a"),
            ("other", "K8S pending: b"),
            ("new", "K8S pending: c"),
            ("new", "K8S pending: d"),
        ]));
        assert_eq!(
            got,
            pairs(&[("other", "K8S pending: b"), ("new", "K8S pending: d")])
        );
        assert!(cache.changed(Vec::new()).is_empty());
    }
}
