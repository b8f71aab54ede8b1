//! Taking tasks from their queues: poll → plan → move. One `queues.get_all` reads every served
//! queue and the pending queue; the pure [`plan`] decides what to launch, which stale pods to
//! remove and which waiting tasks to take within each queue's `maxPods`; the tasks taken are moved
//! into the pending queue with a status message that records their origin queue.
//!
//! How a task moves depends on the server ([`TakeProtocol`]): from ClearML server 1.17.0 the
//! tasks taken from one queue move together, one `tasks.enqueue_many` per origin queue and chunk
//! of [`clearml::MOVE_CHUNK`] ([`group_moves`]; the shared status message names that queue), whose
//! per-id `succeeded`/`failed` decide what is launched (a server that does not know the endpoint
//! gets one `tasks.enqueue` per task); an older server needs a forced `tasks.enqueue` (which leaves the task
//! in its own queue) and then `queues.remove_task` from its own queue. A task seen in the pending
//! queue and still in a served queue was moved halfway (an agent stopped between the two calls,
//! or the second one failed): it is pending, the next tick removes it from its queue, and it is
//! launched only once it is out, so the in-pod `clearml-agent execute --require-queue` (whose
//! `tasks.dequeue` removes a task from its `execution.queue` only, the pending queue) never
//! leaves it behind to be taken again.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;

use clearml_agent_core::{contract::LABEL_QUEUE_ID, values::QueueOrder};

use crate::{
    clearml::{self, Served, TakeProtocol},
    k8s::{self, launch_of},
    lifecycle,
    schedule::{self, Order, QueueWork},
};

use super::{
    Dispatcher, Entry, GET_ALL_CHUNK, PENDING_REASON, launch::LAUNCH_CONCURRENCY, pending_message,
};

/// Most tasks taken per tick (bounds the size of each ClearML request).
pub(super) const BATCH: usize = 500;
/// `tasks.enqueue_many` calls in flight at once (a server with several workers serves them side
/// by side; the chunks hold different tasks).
const MOVE_BATCHES_AT_ONCE: usize = 4;

/// What [`plan`] needs to know of one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PodFacts<'a> {
    /// The launch (pending entry) it serves.
    pub launch: Option<&'a str>,
    /// Its queue id label.
    pub queue: Option<&'a str>,
    /// Not finished (counts against its queue's `maxPods`).
    pub live: bool,
}

impl<'a> PodFacts<'a> {
    fn of(pod: &'a Pod) -> Self {
        Self {
            launch: launch_of(pod),
            queue: pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_QUEUE_ID))
                .map(String::as_str),
            live: !lifecycle::classify(pod).is_finished(),
        }
    }
}

/// A served queue's limit, in pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limit {
    /// `queueSettings.maxPods`.
    pub max_pods: Option<u32>,
    /// Pods one of its tasks is made of (the ranks of its `multiNode` layout, else 1).
    pub pods_per_task: usize,
    /// `queueSettings.priority` (0 when unset).
    pub priority: i32,
}

/// Everything one tick decides from.
#[derive(Debug)]
pub(super) struct TickState<'a> {
    /// Served queues, in config order, with their limits.
    pub served: &'a [(&'a Served, Limit)],
    /// Task ids waiting in each served queue, in queue order (same order as `served`).
    pub waiting: &'a [Vec<String>],
    /// The pending queue's entries: `(task, launch id)`.
    pub pending: &'a [(String, String)],
    /// The agent's pods by task.
    pub pods: &'a BTreeMap<String, Vec<PodFacts<'a>>>,
    /// Tasks this process launched, with the launch id.
    pub launched: &'a HashMap<String, String>,
    /// Origin queue ids this process knows (moved or launched tasks).
    pub origin: &'a HashMap<String, String>,
    /// `agentk8sglue.maxPods`: most pods of all queues together.
    pub max_pods: Option<u32>,
    /// Most tasks to launch and take in all.
    pub budget: usize,
    /// How the queues share the takes (the fair order's rotating offset included).
    pub order: Order,
}

/// What one tick does.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Pending tasks to launch (or adopt): `(task, launch id)`.
    pub launch: Vec<(String, String)>,
    /// Pending tasks whose pods serve an earlier launch: removed first, launched next tick.
    pub stale: Vec<String>,
    /// Waiting tasks to move into the pending queue: `(served index, task)`.
    pub take: Vec<(usize, String)>,
    /// Served queues whose tasks can never start: one task needs more pods than `maxPods`
    /// (`(served index, pods per task, maxPods)`).
    pub too_big: Vec<(usize, usize, u32)>,
}

/// Decides a tick (pure). Limits count pods: a queue's used pods are its live pods plus the pods
/// of its pending tasks that have none yet (in flight); a task is taken only if its pods fit
/// under its queue's `maxPods` and under the global `maxPods` with everything taken before it.
pub(super) fn plan(s: &TickState<'_>) -> Plan {
    let ppt: HashMap<&str, usize> = s
        .served
        .iter()
        .map(|(q, l)| (q.id.as_str(), l.pods_per_task))
        .collect();
    let mut used: HashMap<&str, usize> = HashMap::new();
    for pod in s.pods.values().flatten().filter(|p| p.live) {
        if let Some(q) = pod.queue {
            *used.entry(q).or_default() += 1;
        }
    }
    let mut out = Plan::default();
    for (task, launch_id) in s.pending {
        let pods = s.pods.get(task).map(Vec::as_slice).unwrap_or_default();
        if pods.is_empty()
            && let Some(origin) = s.origin.get(task)
        {
            // in flight, no pod counted yet
            *used.entry(origin).or_default() += ppt.get(origin.as_str()).copied().unwrap_or(1);
        }
        if s.launched.get(task) == Some(launch_id) {
            continue;
        }
        let current = pods.iter().any(|p| p.launch == Some(launch_id.as_str()));
        if !current && !pods.is_empty() {
            out.stale.push(task.clone());
            continue;
        }
        // no pods yet, or pods of this launch not known as launched (a restart, or a launch cut
        // short between ranks): launching adopts them and creates the rest
        out.launch.push((task.clone(), launch_id.clone()));
    }
    let work: Vec<QueueWork<'_>> = s
        .served
        .iter()
        .zip(s.waiting)
        .map(|((queue, limit), waiting)| QueueWork {
            name: &queue.name,
            priority: limit.priority,
            waiting,
            // tasks that fit: the pods left under maxPods, in whole tasks
            free: limit.max_pods.map(|m| {
                (m as usize).saturating_sub(used.get(queue.id.as_str()).copied().unwrap_or(0))
                    / limit.pods_per_task.max(1)
            }),
        })
        .collect();
    for (i, ((_, limit), waiting)) in s.served.iter().zip(s.waiting).enumerate() {
        if let Some(max) = limit.max_pods
            && limit.pods_per_task > max as usize
            && !waiting.is_empty()
        {
            out.too_big.push((i, limit.pods_per_task, max));
        }
    }
    let picks = schedule::decide(&work, s.budget.saturating_sub(out.launch.len()), s.order);
    // the global maxPods, in the order of the picks
    let mut global_free = s
        .max_pods
        .map(|m| (m as usize).saturating_sub(used.values().sum()));
    for (qi, task) in picks {
        let need = s.served[qi].1.pods_per_task.max(1);
        match &mut global_free {
            Some(free) if *free < need => continue,
            Some(free) => *free -= need,
            None => {}
        }
        out.take.push((qi, task));
    }
    out
}

/// Groups the picks `(served index, task)` by origin queue, in the order each queue first
/// appears among the picks (tasks in pick order within it), and cuts each group into chunks of at
/// most `chunk` tasks: one `tasks.enqueue_many` each (pure).
pub(super) fn group_moves(picks: Vec<(usize, String)>, chunk: usize) -> Vec<(usize, Vec<String>)> {
    let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
    for (qi, task) in picks {
        match groups.iter_mut().find(|(q, _)| *q == qi) {
            Some((_, tasks)) => tasks.push(task),
            None => groups.push((qi, vec![task])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(qi, tasks)| {
            tasks
                .chunks(chunk.max(1))
                .map(|c| (qi, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Splits each served queue's tasks (same order as the served queues) into those waiting there
/// and those already in the pending queue, moved halfway: `(waiting, [(served index, task)])`
/// (pure). A task moved halfway is pending, never taken again.
pub(super) fn split_waiting(
    entries: Vec<Vec<String>>,
    pending: &HashSet<&str>,
) -> (Vec<Vec<String>>, Vec<(usize, String)>) {
    let mut halfway = Vec::new();
    let waiting = entries
        .into_iter()
        .enumerate()
        .map(|(qi, tasks)| {
            let (moved, waiting): (Vec<String>, Vec<String>) = tasks
                .into_iter()
                .partition(|t| pending.contains(t.as_str()));
            halfway.extend(moved.into_iter().map(|t| (qi, t)));
            waiting
        })
        .collect();
    (waiting, halfway)
}

impl Dispatcher {
    /// One dispatch pass; returns how many tasks were taken from served queues.
    pub(super) async fn tick(&mut self) -> Result<usize, clearml::Error> {
        if self.gate.paused() {
            return Ok(0); // pod writes paused: take nothing we could not launch
        }
        // poll
        let mut ids = self.queue_ids();
        ids.push(self.pending_queue.clone());
        let docs = self.clearml.queue_entries(&ids, BATCH).await?;
        let by_task = k8s::pods_by_task(&self.pods);
        self.update_pod_gauges(&by_task);
        let entries_of = |id: &str| {
            docs.iter()
                .find(|d| d.id == id)
                .map(|d| d.entries.as_slice())
                .unwrap_or_default()
        };
        let pending: Vec<(String, String)> = entries_of(&self.pending_queue)
            .iter()
            .map(|e| (e.task.clone(), e.added.clone().unwrap_or_default()))
            .collect();
        let in_pending: HashSet<&str> = pending.iter().map(|(t, _)| t.as_str()).collect();
        let entries: Vec<Vec<String>> = self
            .served
            .iter()
            .map(|s| entries_of(&s.id).iter().map(|e| e.task.clone()).collect())
            .collect();
        let entry = |e: &clearml::QueueEntry| Entry {
            task: e.task.clone(),
            added: e.added_at(),
        };
        let (mut waiting, halfway) = split_waiting(entries, &in_pending);
        // retries: records of tasks put back by an earlier agent; gangs in backoff wait
        self.recall_records(&waiting).await;
        self.hold_back_gangs(&mut waiting);
        // origins are kept while a task is pending or launched
        self.origin
            .retain(|t, _| self.launched.contains_key(t) || in_pending.contains(t.as_str()));
        // tasks not to launch this tick: still in their own queue
        let mut unfinished = self.finish_moves(halfway).await;

        // plan
        let facts: BTreeMap<String, Vec<PodFacts<'_>>> = by_task
            .iter()
            .map(|(t, pods)| (t.clone(), pods.iter().map(|p| PodFacts::of(p)).collect()))
            .collect();
        let served: Vec<(&Served, Limit)> = self
            .served
            .iter()
            .map(|s| {
                let q = self.cfg.queues.get(&s.name);
                let limit = Limit {
                    max_pods: q.and_then(|q| q.settings.max_pods),
                    pods_per_task: q.map_or(1, |q| q.pods_per_task()),
                    priority: q.and_then(|q| q.settings.priority).unwrap_or(0),
                };
                (s, limit)
            })
            .collect();
        let order = match self.cfg.queue_order {
            QueueOrder::Fair => Order::Fair {
                offset: self.offset,
            },
            QueueOrder::Priority => Order::Priority,
        };
        let plan = plan(&TickState {
            served: &served,
            waiting: &waiting,
            pending: &pending,
            pods: &facts,
            launched: &self.launched,
            origin: &self.origin,
            max_pods: self.cfg.max_pods,
            budget: BATCH,
            order,
        });
        self.offset = self.offset.wrapping_add(1);
        {
            let mut snap = self.snapshot.write();
            snap.waiting = self
                .served
                .iter()
                .map(|s| {
                    // a task moved halfway is pending, not waiting (as the plan sees it)
                    let waiting = entries_of(&s.id)
                        .iter()
                        .filter(|e| !in_pending.contains(e.task.as_str()))
                        .map(entry)
                        .collect();
                    (s.id.clone(), waiting)
                })
                .collect();
            snap.pending = entries_of(&self.pending_queue).iter().map(entry).collect();
        }
        self.explain_too_big(&plan.too_big, &waiting).await;
        for task in &plan.stale {
            // pods of an earlier run of this task (re-enqueued): removed first
            if let Some(pods) = by_task.get(task) {
                self.delete_task_pods(task, pods, true).await;
            }
        }

        // move
        let (taken, halfway) = self.take(plan.take).await;
        unfinished.extend(halfway);
        let mut to_launch = plan.launch;
        to_launch.retain(|(t, _)| !unfinished.contains(t));
        // the tasks just moved get their entry's id on the next read, so read the pending
        // queue's entries again only when something was moved
        if taken > 0 {
            let again = self
                .clearml
                .queue_entries(std::slice::from_ref(&self.pending_queue), BATCH)
                .await?;
            let known: HashSet<String> = to_launch.iter().map(|(t, _)| t.clone()).collect();
            for entry in again.iter().flat_map(|d| d.entries.iter()) {
                if !known.contains(&entry.task)
                    && !self.launched.contains_key(&entry.task)
                    && !by_task.contains_key(&entry.task)
                    && !unfinished.contains(&entry.task)
                {
                    to_launch.push((entry.task.clone(), entry.added.clone().unwrap_or_default()));
                }
            }
        }
        self.launch(to_launch).await?;
        Ok(taken)
    }

    /// Tells the waiting tasks of a queue whose tasks need more pods than its `maxPods` why they
    /// never start (once per task and process; they stay in their queue, in order).
    async fn explain_too_big(&mut self, too_big: &[(usize, usize, u32)], waiting: &[Vec<String>]) {
        let mut writes: Vec<(String, String)> = Vec::new();
        for (qi, pods, max) in too_big {
            let queue = &self.served[*qi].name;
            let text = format!(
                "K8S pending: each task of queue {queue} needs {pods} pods (multiNode) but the queue's maxPods is {max}; raise maxPods or lower multiNode"
            );
            writes.extend(
                waiting[*qi]
                    .iter()
                    .filter(|t| !self.told_too_big.contains(*t))
                    .map(|t| (t.clone(), text.clone())),
            );
        }
        // one `tasks.update_batch` per chunk for all of them
        for chunk in writes.chunks(clearml::MESSAGE_CHUNK) {
            match self.clearml.set_status_messages(chunk).await {
                Ok(_) => self
                    .told_too_big
                    .extend(chunk.iter().map(|(t, _)| t.clone())),
                Err(error) => tracing::debug!(%error, "cannot write the maxPods reasons"),
            }
        }
    }

    /// Moves the picks into the pending queue with the server's protocol; returns how many were
    /// taken and those taken only halfway (in the pending queue and still in their own queue: the
    /// next tick finishes their move before they are launched). A pick not taken stays in its
    /// queue.
    async fn take(&mut self, picks: Vec<(usize, String)>) -> (usize, HashSet<String>) {
        if picks.is_empty() {
            return (0, HashSet::new());
        }
        match self.clearml.take_protocol() {
            TakeProtocol::Move if self.clearml.moves_in_batches() => {
                (self.take_in_batches(picks).await, HashSet::new())
            }
            TakeProtocol::Move => (self.take_by_move(picks).await, HashSet::new()),
            TakeProtocol::EnqueueThenRemove => self.take_in_two_steps(picks).await,
        }
    }

    /// ClearML server 1.17.0 and later: one `tasks.enqueue_many` per origin queue and chunk
    /// ([`group_moves`]) moves the tasks; the per-id results decide which were taken. Chunks go out
    /// a few at once. A server that does not know the endpoint has those picks moved one by one
    /// (and every later tick too).
    async fn take_in_batches(&mut self, picks: Vec<(usize, String)>) -> usize {
        // a task put back by a retry keeps its retry record in its own message: moved alone
        let (with_record, picks): (Vec<_>, Vec<_>) = picks
            .into_iter()
            .partition(|(_, t)| self.retries.record(t).is_some());
        let groups = group_moves(picks, clearml::MOVE_CHUNK);
        let results = stream::iter(groups)
            .map(|(qi, tasks)| {
                let s = &self.served[qi];
                let clearml = &self.clearml;
                let pending = &self.pending_queue;
                async move {
                    let message = pending_message(&s.name, &s.id);
                    let r = clearml
                        .enqueue_many(&tasks, pending, PENDING_REASON, &message)
                        .await;
                    (qi, tasks, r)
                }
            })
            .buffer_unordered(MOVE_BATCHES_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut taken = 0;
        let mut one_by_one = Vec::new();
        for (qi, tasks, result) in results {
            let queue = &self.served[qi];
            match result {
                Ok(moved) => {
                    taken += moved.moved.len();
                    self.origin
                        .extend(moved.moved.into_iter().map(|t| (t, queue.id.clone())));
                    for refused in moved.refused {
                        if refused.error.is_same_status_refusal() {
                            // the server does not move queued tasks whatever its version says
                            self.clearml.note_move_refused();
                        }
                        tracing::warn!(task = %refused.task, queue = %queue.name, error = %refused.error, "cannot move task to the pending queue; it stays in its queue");
                    }
                }
                Err(clearml::Error::Api { code: 404, .. }) => {
                    self.clearml.note_no_enqueue_many();
                    one_by_one.extend(tasks.into_iter().map(|t| (qi, t)));
                }
                Err(error) => {
                    // a move may have happened before the error: such a task is in the pending
                    // queue with its origin record, and the next tick launches it from there
                    tracing::warn!(queue = %queue.name, tasks = tasks.len(), %error, "cannot move tasks to the pending queue; they stay in their queue");
                }
            }
        }
        one_by_one.extend(with_record);
        if !one_by_one.is_empty() {
            taken += self.take_by_move(one_by_one).await;
        }
        taken
    }

    /// ClearML server 1.17.0 and later, without `tasks.enqueue_many`: one `tasks.enqueue` each
    /// (concurrently) moves the task.
    async fn take_by_move(&mut self, picks: Vec<(usize, String)>) -> usize {
        let moved = stream::iter(picks)
            .map(|(qi, task)| {
                let s = &self.served[qi];
                let clearml = &self.clearml;
                let pending = &self.pending_queue;
                // the origin record, after the retry record of a task put back
                let message = self.retries.taken_message(&task, &s.name, &s.id);
                async move {
                    let r = clearml
                        .enqueue(&task, pending, PENDING_REASON, &message, false)
                        .await;
                    (task, s.id.clone(), r)
                }
            })
            .buffer_unordered(LAUNCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut taken = 0;
        for (task, queue, result) in moved {
            match result {
                Ok(()) => {
                    taken += 1;
                    self.origin.insert(task, queue);
                }
                Err(e) => {
                    if e.is_same_status_refusal() {
                        // the server does not move queued tasks whatever its version says
                        self.clearml.note_move_refused();
                    }
                    tracing::warn!(%task, error = %e, "cannot move task to the pending queue; it stays in its queue");
                }
            }
        }
        taken
    }

    /// ClearML servers before 1.17.0: a forced `tasks.enqueue` into the pending queue (the status
    /// message records the origin; the server leaves the task in its queue), then
    /// `queues.remove_task` from its queue. Only tasks read as `queued` just before are taken:
    /// `force` skips the server's status check, which would refuse a task already started. A pick
    /// whose `execution.queue` is the pending queue was enqueued there already (a take cut short
    /// that the tick's read of the pending queue did not show, e.g. beyond its first entries): it
    /// is not enqueued again (which would make the server wipe its status message), only removed
    /// from its queue.
    async fn take_in_two_steps(&mut self, picks: Vec<(usize, String)>) -> (usize, HashSet<String>) {
        let ids: Vec<String> = picks.iter().map(|(_, t)| t.clone()).collect();
        // queued tasks, and whether each is in the pending queue already
        let mut queued: HashMap<String, bool> = HashMap::new();
        for chunk in ids.chunks(GET_ALL_CHUNK) {
            match self
                .clearml
                .tasks(
                    chunk,
                    &["id", "status", "status_message", "execution.queue"],
                )
                .await
            {
                Ok(docs) => queued.extend(
                    docs.into_iter()
                        .filter(|d| d.unreadable.is_none() && takeable(d))
                        .map(|d| {
                            let enqueued = d.execution.as_ref().and_then(|e| e.queue.as_deref())
                                == Some(self.pending_queue.as_str());
                            (d.id, enqueued)
                        }),
                ),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the statuses of the tasks to take; taking none this tick");
                    return (0, HashSet::new());
                }
            }
        }
        let (picks, skipped): (Vec<_>, Vec<_>) =
            picks.into_iter().partition(|(_, t)| queued.contains_key(t));
        for (qi, task) in skipped {
            tracing::warn!(%task, queue = %self.served[qi].name, "task in a served queue is not queued (or cannot be read); not taking it");
        }
        let results = stream::iter(picks)
            .map(|(qi, task)| {
                let s = &self.served[qi];
                let clearml = &self.clearml;
                let pending = &self.pending_queue;
                let already = queued.get(&task).copied().unwrap_or(false);
                let message = self.retries.taken_message(&task, &s.name, &s.id);
                async move {
                    let enqueued = if already {
                        tracing::info!(%task, queue = %s.name, "task already enqueued into the pending queue (a take cut short); finishing its move");
                        Ok(())
                    } else {
                        clearml
                            .enqueue(&task, pending, PENDING_REASON, &message, true)
                            .await
                    };
                    let removed = match &enqueued {
                        Ok(()) => Some(clearml.remove_from_queue(&s.id, &task).await),
                        Err(_) => None,
                    };
                    (task, s, enqueued, removed)
                }
            })
            .buffer_unordered(LAUNCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut taken = 0;
        let mut halfway = HashSet::new();
        let mut origins = Vec::new();
        for (task, served, enqueued, removed) in results {
            match (enqueued, removed) {
                (Err(error), _) => {
                    tracing::warn!(%task, %error, "cannot enqueue task into the pending queue; it stays in its queue");
                }
                (Ok(()), Some(Err(error))) => {
                    tracing::warn!(%task, queue = %served.name, %error, "task enqueued into the pending queue but not yet removed from its queue; the next tick finishes the move");
                    taken += 1;
                    origins.push((task.clone(), served.id.clone()));
                    halfway.insert(task);
                }
                (Ok(()), _) => {
                    taken += 1;
                    origins.push((task, served.id.clone()));
                }
            }
        }
        self.origin.extend(origins);
        (taken, halfway)
    }

    /// Finishes the moves cut short: removes each pending task from the served queue it is still
    /// in (`(served index, task)`); returns those still there (not launched this tick).
    async fn finish_moves(&self, halfway: Vec<(usize, String)>) -> HashSet<String> {
        let results = stream::iter(halfway)
            .map(|(qi, task)| {
                let s = &self.served[qi];
                let clearml = &self.clearml;
                async move {
                    tracing::info!(%task, queue = %s.name, "pending task still in its queue (a move cut short); removing it from there");
                    let r = clearml.remove_from_queue(&s.id, &task).await;
                    (task, s, r)
                }
            })
            .buffer_unordered(LAUNCH_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut still = HashSet::new();
        for (task, served, result) in results {
            if let Err(error) = result {
                tracing::warn!(%task, queue = %served.name, %error, "cannot remove the pending task from its queue yet; it is launched once out");
                still.insert(task);
            }
        }
        still
    }
}

/// A task in a served queue the two-step take may move: queued, or stopped by the in-pod agent of
/// its disrupted pod after the agent put it back (that `tasks.stopped` can land on the task back
/// in its queue; servers from 1.17 take such a task out of a queue as queued themselves, in
/// `queues.get_next_task`, and the one-step move accepts it).
fn takeable(d: &crate::clearml::TaskDoc) -> bool {
    match d.status.as_deref() {
        Some("queued") => true,
        Some(status) => crate::lifecycle::stopped_by_its_pod(
            crate::lifecycle::TaskStatus::Known(status),
            d.status_reason.as_deref(),
            d.status_message.as_deref(),
        ),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(id: &str) -> Served {
        Served {
            name: format!("q-{id}"),
            id: id.into(),
        }
    }

    fn pod<'a>(launch: &'a str, queue: &'a str, live: bool) -> PodFacts<'a> {
        PodFacts {
            launch: Some(launch),
            queue: Some(queue),
            live,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn map(v: &[(&str, &str)]) -> HashMap<String, String> {
        pairs(v).into_iter().collect()
    }

    struct Case<'a> {
        name: &'a str,
        max_pods: [Option<u32>; 2],
        pods_per_task: [usize; 2],
        global: Option<u32>,
        waiting: [&'a [&'a str]; 2],
        pending: &'a [(&'a str, &'a str)],
        pods: &'a [(&'a str, PodFacts<'a>)],
        launched: &'a [(&'a str, &'a str)],
        origin: &'a [(&'a str, &'a str)],
        budget: usize,
        want: Plan,
    }

    #[test]
    fn group_moves_table() {
        type Case<'a> = (
            &'a str,
            &'a [(usize, &'a str)],
            usize,
            &'a [(usize, &'a [&'a str])],
        );
        let cases: &[Case<'_>] = &[
            ("nothing", &[], 100, &[]),
            (
                "one queue, one call",
                &[(0, "a1"), (0, "a2")],
                100,
                &[(0, &["a1", "a2"])],
            ),
            (
                "by origin queue, in the order each first appears; pick order within",
                &[(1, "b1"), (0, "a1"), (1, "b2"), (2, "c1"), (0, "a2")],
                100,
                &[(1, &["b1", "b2"]), (0, &["a1", "a2"]), (2, &["c1"])],
            ),
            (
                "chunks of at most the chunk size",
                &[
                    (0, "a1"),
                    (1, "b1"),
                    (0, "a2"),
                    (0, "a3"),
                    (0, "a4"),
                    (0, "a5"),
                ],
                2,
                &[
                    (0, &["a1", "a2"]),
                    (0, &["a3", "a4"]),
                    (0, &["a5"]),
                    (1, &["b1"]),
                ],
            ),
            (
                "a chunk size of 0 is read as 1",
                &[(0, "a1"), (0, "a2")],
                0,
                &[(0, &["a1"]), (0, &["a2"])],
            ),
        ];
        for (name, picks, chunk, want) in cases {
            let picks: Vec<(usize, String)> =
                picks.iter().map(|(q, t)| (*q, t.to_string())).collect();
            let want: Vec<(usize, Vec<String>)> =
                want.iter().map(|(q, ts)| (*q, strings(ts))).collect();
            assert_eq!(group_moves(picks, *chunk), want, "{name}");
        }
    }

    /// Every task taken lands in exactly one call, with its origin queue; no call is over the
    /// chunk size (many queues, uneven counts).
    #[test]
    fn group_moves_keeps_every_pick_once() {
        let picks: Vec<(usize, String)> =
            (0..1234).map(|i| ((i * 7) % 10, format!("t{i}"))).collect();
        let groups = group_moves(picks.clone(), clearml::MOVE_CHUNK);
        assert!(
            groups
                .iter()
                .all(|(_, ts)| !ts.is_empty() && ts.len() <= clearml::MOVE_CHUNK)
        );
        let mut back: Vec<(usize, String)> = groups
            .into_iter()
            .flat_map(|(q, ts)| ts.into_iter().map(move |t| (q, t)))
            .collect();
        let mut want = picks;
        back.sort();
        want.sort();
        assert_eq!(back, want);
    }

    #[test]
    fn split_waiting_table() {
        type Case<'a> = (
            &'a str,
            [&'a [&'a str]; 2],
            &'a [&'a str],
            [&'a [&'a str]; 2],
            &'a [(usize, &'a str)],
        );
        let cases: &[Case<'_>] = &[
            (
                "nothing pending",
                [&["a1", "a2"], &["b1"]],
                &[],
                [&["a1", "a2"], &["b1"]],
                &[],
            ),
            (
                "a task in its queue and the pending queue was moved halfway",
                [&["a1", "a2", "a3"], &["b1"]],
                &["a2", "b1", "p"],
                [&["a1", "a3"], &[]],
                &[(0, "a2"), (1, "b1")],
            ),
            (
                "pending tasks in no served queue",
                [&[], &["b1"]],
                &["p", "q"],
                [&[], &["b1"]],
                &[],
            ),
        ];
        for (name, entries, pending, want_waiting, want_halfway) in cases {
            let entries: Vec<Vec<String>> = entries.iter().map(|e| strings(e)).collect();
            let pending: HashSet<&str> = pending.iter().copied().collect();
            let (waiting, halfway) = split_waiting(entries, &pending);
            let want: Vec<Vec<String>> = want_waiting.iter().map(|e| strings(e)).collect();
            assert_eq!(waiting, want, "{name}");
            let want: Vec<(usize, String)> = want_halfway
                .iter()
                .map(|(q, t)| (*q, t.to_string()))
                .collect();
            assert_eq!(halfway, want, "{name}");
        }
    }

    #[test]
    fn plan_table() {
        let none: &[&str] = &[];
        let cases = [
            Case {
                name: "nothing to do",
                max_pods: [None, None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [none, none],
                pending: &[],
                pods: &[],
                launched: &[],
                origin: &[],
                budget: 10,
                want: Plan::default(),
            },
            Case {
                name: "no limit: round robin within the budget",
                max_pods: [None, None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [&["a1", "a2", "a3"], &["b1"]],
                pending: &[],
                pods: &[],
                launched: &[],
                origin: &[],
                budget: 3,
                want: Plan {
                    take: vec![(0, "a1".into()), (1, "b1".into()), (0, "a2".into())],
                    ..Plan::default()
                },
            },
            Case {
                name: "maxPods minus live pods; finished pods do not count",
                max_pods: [Some(2), None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [&["a1", "a2"], none],
                pending: &[],
                pods: &[("x", pod("l", "A", true)), ("y", pod("l", "A", false))],
                launched: &[("x", "l"), ("y", "l")],
                origin: &[],
                budget: 10,
                want: Plan {
                    take: vec![(0, "a1".into())],
                    ..Plan::default()
                },
            },
            Case {
                name: "a pending task without pods is launched and counts as in flight",
                max_pods: [Some(1), None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [&["a1"], none],
                pending: &[("p", "l1")],
                pods: &[],
                launched: &[],
                origin: &[("p", "A")],
                budget: 10,
                want: Plan {
                    launch: pairs(&[("p", "l1")]),
                    ..Plan::default()
                },
            },
            Case {
                name: "a task launched for this entry is left alone",
                max_pods: [None, None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [none, none],
                pending: &[("p", "l1")],
                pods: &[("p", pod("l1", "A", true))],
                launched: &[("p", "l1")],
                origin: &[],
                budget: 10,
                want: Plan::default(),
            },
            Case {
                name: "after a restart: pods of the current launch are adopted",
                max_pods: [Some(1), None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [&["a1"], none],
                pending: &[("p", "l1")],
                pods: &[("p", pod("l1", "A", true))],
                launched: &[],
                origin: &[],
                budget: 10,
                want: Plan {
                    launch: pairs(&[("p", "l1")]),
                    ..Plan::default()
                },
            },
            Case {
                name: "pods of an earlier launch are stale",
                max_pods: [None, None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [none, none],
                pending: &[("p", "l2")],
                pods: &[("p", pod("l1", "A", false))],
                launched: &[],
                origin: &[],
                budget: 10,
                want: Plan {
                    stale: strings(&["p"]),
                    ..Plan::default()
                },
            },
            Case {
                name: "launches use the budget first",
                max_pods: [None, None],
                pods_per_task: [1, 1],
                global: None,
                waiting: [&["a1", "a2"], none],
                pending: &[("p", "l1"), ("q", "l1")],
                pods: &[],
                launched: &[],
                origin: &[],
                budget: 3,
                want: Plan {
                    launch: pairs(&[("p", "l1"), ("q", "l1")]),
                    take: vec![(0, "a1".into())],
                    ..Plan::default()
                },
            },
            Case {
                name: "a queue at maxPods gives nothing; the other still does",
                max_pods: [Some(1), Some(5)],
                pods_per_task: [1, 1],
                global: None,
                waiting: [&["a1"], &["b1"]],
                pending: &[],
                pods: &[("x", pod("l", "A", true))],
                launched: &[("x", "l")],
                origin: &[],
                budget: 10,
                want: Plan {
                    take: vec![(1, "b1".into())],
                    ..Plan::default()
                },
            },
            Case {
                name: "maxPods counts pods: 3-pod tasks under maxPods 10, 3 pods live",
                max_pods: [Some(10), None],
                pods_per_task: [3, 1],
                global: None,
                waiting: [&["a1", "a2", "a3"], none],
                pending: &[],
                pods: &[
                    ("x", pod("l", "A", true)),
                    ("x", pod("l", "A", true)),
                    ("x", pod("l", "A", true)),
                ],
                launched: &[("x", "l")],
                origin: &[],
                budget: 10,
                want: Plan {
                    take: vec![(0, "a1".into()), (0, "a2".into())],
                    ..Plan::default()
                },
            },
            Case {
                name: "a task in flight counts all its pods",
                max_pods: [Some(6), None],
                pods_per_task: [3, 1],
                global: None,
                waiting: [&["a1"], none],
                pending: &[("p", "l1")],
                pods: &[],
                launched: &[("p", "l1")],
                origin: &[("p", "A")],
                budget: 10,
                want: Plan {
                    take: vec![(0, "a1".into())],
                    ..Plan::default()
                },
            },
            Case {
                name: "a task bigger than maxPods never starts, and is reported",
                max_pods: [Some(2), None],
                pods_per_task: [3, 1],
                global: None,
                waiting: [&["a1"], &["b1"]],
                pending: &[],
                pods: &[],
                launched: &[],
                origin: &[],
                budget: 10,
                want: Plan {
                    take: vec![(1, "b1".into())],
                    too_big: vec![(0, 3, 2)],
                    ..Plan::default()
                },
            },
            Case {
                name: "the global maxPods caps all queues together, in pick order",
                max_pods: [None, None],
                pods_per_task: [2, 1],
                global: Some(4),
                waiting: [&["a1", "a2"], &["b1", "b2"]],
                pending: &[],
                pods: &[("x", pod("l", "B", true))],
                launched: &[("x", "l")],
                origin: &[],
                budget: 10,
                want: Plan {
                    take: vec![(0, "a1".into()), (1, "b1".into())],
                    ..Plan::default()
                },
            },
        ];
        let (a, b) = (served("A"), served("B"));
        for c in cases {
            let limit = |i: usize| Limit {
                max_pods: c.max_pods[i],
                pods_per_task: c.pods_per_task[i],
                priority: 0,
            };
            let served = [(&a, limit(0)), (&b, limit(1))];
            let waiting = [strings(c.waiting[0]), strings(c.waiting[1])];
            let pending = pairs(c.pending);
            let mut pods: BTreeMap<String, Vec<PodFacts<'_>>> = BTreeMap::new();
            for (task, p) in c.pods {
                pods.entry(task.to_string()).or_default().push(*p);
            }
            let (launched, origin) = (map(c.launched), map(c.origin));
            let got = plan(&TickState {
                served: &served,
                waiting: &waiting,
                pending: &pending,
                pods: &pods,
                launched: &launched,
                origin: &origin,
                max_pods: c.global,
                budget: c.budget,
                order: Order::Fair { offset: 0 },
            });
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    /// The priority order reaches the pick with each queue's priority and what it may still start
    /// (live pods and launches in flight counted against `maxPods`).
    #[test]
    fn plan_takes_by_priority_from_the_queues_with_room() {
        let (a, b, c) = (served("A"), served("B"), served("C"));
        let limit = |max_pods, priority| Limit {
            max_pods,
            pods_per_task: 1,
            priority,
        };
        let served = [
            (&a, limit(None, 0)),
            (&b, limit(Some(2), 10)),
            (&c, limit(None, 5)),
        ];
        let waiting = [
            strings(&["a1", "a2"]),
            strings(&["b1", "b2"]),
            strings(&["c1"]),
        ];
        // B has one live pod and one task in flight: it is full
        let pods: BTreeMap<String, Vec<PodFacts<'_>>> =
            [("x".to_string(), vec![pod("l", "B", true)])].into();
        let pending = pairs(&[("p", "l1")]);
        let (launched, origin) = (map(&[("x", "l")]), map(&[("p", "B")]));
        let state = |budget, order| TickState {
            served: &served,
            waiting: &waiting,
            pending: &pending,
            pods: &pods,
            launched: &launched,
            origin: &origin,
            max_pods: None,
            budget,
            order,
        };
        let got = plan(&state(3, Order::Priority));
        assert_eq!(got.launch, pairs(&[("p", "l1")]));
        assert_eq!(
            got.take,
            vec![(2, "c1".to_string()), (0, "a1".to_string())],
            "C (5) before A (0); B (10) is at maxPods; the launch used one of the budget"
        );
        let got = plan(&state(3, Order::Fair { offset: 0 }));
        assert_eq!(
            got.take,
            vec![(0, "a1".to_string()), (2, "c1".to_string())],
            "fair: config order from the offset"
        );
    }
}
