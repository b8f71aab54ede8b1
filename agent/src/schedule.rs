//! Pure scheduling: which waiting tasks to take this tick. Queues are served round-robin, one task
//! each per round, starting from a rotating offset so no queue starves another; a queue at its
//! `maxPods` gives nothing (its tasks stay in their ClearML queue, in order).

/// One queue's work as seen this tick.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueWork<'a> {
    /// Task ids at the head of the queue, in queue order.
    pub waiting: &'a [String],
    /// Pods this queue may still start (`maxPods` − live − in flight); `None` = no limit.
    pub free: Option<usize>,
}

/// Picks up to `limit` `(queue index, task id)` pairs, round-robin from queue `offset`.
pub fn decide(queues: &[QueueWork<'_>], limit: usize, offset: usize) -> Vec<(usize, String)> {
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
            let cap = q.free.unwrap_or(usize::MAX);
            if taken[i] < q.waiting.len() && taken[i] < cap {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn decide_table() {
        let a = ids("a", 3);
        let b = ids("b", 2);
        let none: Vec<String> = vec![];
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<QueueWork<'_>>, usize, usize, Vec<(usize, &str)>)> = vec![
            ("empty", vec![], 10, 0, vec![]),
            (
                "round robin across queues",
                vec![
                    QueueWork {
                        waiting: &a,
                        free: None,
                    },
                    QueueWork {
                        waiting: &b,
                        free: None,
                    },
                ],
                10,
                0,
                vec![(0, "a0"), (1, "b0"), (0, "a1"), (1, "b1"), (0, "a2")],
            ),
            (
                "offset rotates who goes first",
                vec![
                    QueueWork {
                        waiting: &a,
                        free: None,
                    },
                    QueueWork {
                        waiting: &b,
                        free: None,
                    },
                ],
                2,
                1,
                vec![(1, "b0"), (0, "a0")],
            ),
            (
                "maxPods leaves the rest queued",
                vec![
                    QueueWork {
                        waiting: &a,
                        free: Some(1),
                    },
                    QueueWork {
                        waiting: &b,
                        free: Some(0),
                    },
                ],
                10,
                0,
                vec![(0, "a0")],
            ),
            (
                "global limit",
                vec![
                    QueueWork {
                        waiting: &a,
                        free: None,
                    },
                    QueueWork {
                        waiting: &b,
                        free: None,
                    },
                ],
                3,
                0,
                vec![(0, "a0"), (1, "b0"), (0, "a1")],
            ),
            (
                "empty queue skipped",
                vec![
                    QueueWork {
                        waiting: &none,
                        free: None,
                    },
                    QueueWork {
                        waiting: &b,
                        free: None,
                    },
                ],
                5,
                0,
                vec![(1, "b0"), (1, "b1")],
            ),
        ];
        for (what, queues, limit, offset, want) in cases {
            let got = decide(&queues, limit, offset);
            let want: Vec<(usize, String)> =
                want.into_iter().map(|(i, t)| (i, t.to_string())).collect();
            assert_eq!(got, want, "{what}");
        }
    }
}
