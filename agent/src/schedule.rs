//! Pure scheduling: which waiting tasks to take this tick, in one of two orders
//! (`agentk8sglue.queueOrder`):
//!
//! - **fair** (the default): round-robin, one task per queue per round, starting from a rotating
//!   offset so no queue starves another;
//! - **priority**: the queue with the highest `queueSettings.priority` (ties by name) gives all it
//!   can, then the next, as a ClearML agent serving `--queue A B` takes from A first.
//!
//! Either way a queue at its `maxPods` gives nothing (its tasks stay in their ClearML queue, in
//! order) and no more than the tick's budget is taken.

/// One queue's work as seen this tick.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueWork<'a> {
    /// The ClearML queue name (breaks priority ties).
    pub name: &'a str,
    /// `queueSettings.priority` (0 when unset); higher is served first by [`Order::Priority`].
    pub priority: i32,
    /// Task ids at the head of the queue, in queue order.
    pub waiting: &'a [String],
    /// Pods this queue may still start (`maxPods` − live − in flight); `None` = no limit.
    pub free: Option<usize>,
}

impl QueueWork<'_> {
    /// How many of its waiting tasks this queue may give.
    fn available(&self) -> usize {
        self.waiting.len().min(self.free.unwrap_or(usize::MAX))
    }
}

/// How the queues share a tick's takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Round-robin from queue `offset` (the caller rotates it every tick).
    Fair {
        /// Index of the queue served first.
        offset: usize,
    },
    /// Highest priority first, ties by queue name.
    Priority,
}

/// Picks up to `limit` `(queue index, task id)` pairs in `order`.
pub fn decide(queues: &[QueueWork<'_>], limit: usize, order: Order) -> Vec<(usize, String)> {
    match order {
        Order::Fair { offset } => round_robin(queues, limit, offset),
        Order::Priority => by_priority(queues, limit),
    }
}

fn round_robin(queues: &[QueueWork<'_>], limit: usize, offset: usize) -> Vec<(usize, String)> {
    let n = queues.len();
    let mut taken = vec![0usize; n];
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    loop {
        let mut progressed = false;
        for k in 0..n {
            if out.len() >= limit {
                return out;
            }
            let i = (offset + k) % n;
            let q = &queues[i];
            if taken[i] < q.available() {
                out.push((i, q.waiting[taken[i]].clone()));
                taken[i] += 1;
                progressed = true;
            }
        }
        if !progressed {
            return out;
        }
    }
}

fn by_priority(queues: &[QueueWork<'_>], limit: usize) -> Vec<(usize, String)> {
    let mut ranked: Vec<usize> = (0..queues.len()).collect();
    ranked.sort_by(|&a, &b| {
        let (a, b) = (&queues[a], &queues[b]);
        b.priority.cmp(&a.priority).then_with(|| a.name.cmp(b.name))
    });
    let mut out = Vec::new();
    for i in ranked {
        let q = &queues[i];
        let n = q.available().min(limit.saturating_sub(out.len()));
        out.extend(q.waiting[..n].iter().map(|t| (i, t.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    struct Case<'a> {
        what: &'a str,
        /// `(name, priority, waiting, free)` per queue.
        queues: Vec<(&'a str, i32, &'a [String], Option<usize>)>,
        limit: usize,
        order: Order,
        want: Vec<(usize, &'a str)>,
    }

    #[test]
    fn decide_table() {
        let a = ids("a", 3);
        let b = ids("b", 2);
        let c = ids("c", 2);
        let none: Vec<String> = vec![];
        let fair = Order::Fair { offset: 0 };
        let cases = [
            Case {
                what: "empty",
                queues: vec![],
                limit: 10,
                order: fair,
                want: vec![],
            },
            Case {
                what: "fair: round robin across queues",
                queues: vec![("A", 0, &a, None), ("B", 0, &b, None)],
                limit: 10,
                order: fair,
                want: vec![(0, "a0"), (1, "b0"), (0, "a1"), (1, "b1"), (0, "a2")],
            },
            Case {
                what: "fair: the offset rotates who goes first",
                queues: vec![("A", 0, &a, None), ("B", 0, &b, None)],
                limit: 2,
                order: Order::Fair { offset: 1 },
                want: vec![(1, "b0"), (0, "a0")],
            },
            Case {
                what: "fair: priorities are ignored",
                queues: vec![("A", 0, &a, None), ("B", 9, &b, None)],
                limit: 2,
                order: fair,
                want: vec![(0, "a0"), (1, "b0")],
            },
            Case {
                what: "fair: maxPods leaves the rest queued",
                queues: vec![("A", 0, &a, Some(1)), ("B", 0, &b, Some(0))],
                limit: 10,
                order: fair,
                want: vec![(0, "a0")],
            },
            Case {
                what: "fair: the budget",
                queues: vec![("A", 0, &a, None), ("B", 0, &b, None)],
                limit: 3,
                order: fair,
                want: vec![(0, "a0"), (1, "b0"), (0, "a1")],
            },
            Case {
                what: "fair: an empty queue is skipped",
                queues: vec![("A", 0, &none, None), ("B", 0, &b, None)],
                limit: 5,
                order: fair,
                want: vec![(1, "b0"), (1, "b1")],
            },
            Case {
                what: "priority: the highest queue gives all it has first, whatever the config order",
                queues: vec![("A", 1, &a, None), ("B", 5, &b, None), ("C", 3, &c, None)],
                limit: 10,
                order: Order::Priority,
                want: vec![
                    (1, "b0"),
                    (1, "b1"),
                    (2, "c0"),
                    (2, "c1"),
                    (0, "a0"),
                    (0, "a1"),
                    (0, "a2"),
                ],
            },
            Case {
                what: "priority: the budget goes to the highest queue",
                queues: vec![("A", 1, &a, None), ("B", 5, &b, None)],
                limit: 3,
                order: Order::Priority,
                want: vec![(1, "b0"), (1, "b1"), (0, "a0")],
            },
            Case {
                what: "priority: a queue at maxPods lets the next one take",
                queues: vec![("A", 1, &a, Some(2)), ("B", 5, &b, Some(0))],
                limit: 10,
                order: Order::Priority,
                want: vec![(0, "a0"), (0, "a1")],
            },
            Case {
                what: "priority: an empty queue lets the next one take",
                queues: vec![("A", 0, &a, None), ("B", 5, &none, None)],
                limit: 1,
                order: Order::Priority,
                want: vec![(0, "a0")],
            },
            Case {
                what: "priority: ties by queue name; negative priorities come last",
                queues: vec![
                    ("zeta", 0, &a, Some(1)),
                    ("alpha", 0, &b, Some(1)),
                    ("low", -1, &c, Some(1)),
                ],
                limit: 10,
                order: Order::Priority,
                want: vec![(1, "b0"), (0, "a0"), (2, "c0")],
            },
            Case {
                what: "priority: a zero budget takes nothing",
                queues: vec![("A", 0, &a, None)],
                limit: 0,
                order: Order::Priority,
                want: vec![],
            },
        ];
        for c in cases {
            let queues: Vec<QueueWork<'_>> = c
                .queues
                .iter()
                .map(|&(name, priority, waiting, free)| QueueWork {
                    name,
                    priority,
                    waiting,
                    free,
                })
                .collect();
            let got = decide(&queues, c.limit, c.order);
            let want: Vec<(usize, String)> = c
                .want
                .into_iter()
                .map(|(i, t)| (i, t.to_string()))
                .collect();
            assert_eq!(got, want, "{}", c.what);
        }
    }
}
