//! Watch streams: `?watch=1` on a collection streams newline-delimited
//! `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}` events, resuming from a
//! resourceVersion out of the per-type history (`410 Expired` ERROR event when it is too old),
//! with bookmarks, `timeoutSeconds`, `sendInitialEvents` (streaming lists) and the watch
//! cache's selector semantics (an object that stops matching is reported as DELETED).
//!
//! Every stream ends when the double shuts down or a test cuts watches.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    resources::{ResourceDef, ResourceId, def},
    selectors::{FieldSelector, LabelSelector},
    state::Shared,
    status::ApiError,
    store::{Event, EventKind},
};

/// Parameters of one watch.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchOpts {
    pub label: LabelSelector,
    pub field: FieldSelector,
    /// `resourceVersion` (empty / `0` = send the current state first).
    pub resource_version: String,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
}

#[derive(Serialize)]
struct WireEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut buf = serde_json::to_vec(&WireEvent { kind, object }).unwrap_or_default();
    buf.push(b'\n');
    Bytes::from(buf)
}

fn bookmark(res: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end && let Value::Object(m) = &mut metadata {
        m.insert(
            "annotations".into(),
            json!({"k8s.io/initial-events-end": "true"}),
        );
    }
    line(
        "BOOKMARK",
        &json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": metadata}),
    )
}

fn too_old(requested: u64, oldest: u64) -> Bytes {
    let status =
        ApiError::expired(format!("too old resource version: {requested} ({oldest})")).to_status();
    line("ERROR", &status)
}

struct Filter {
    res: &'static ResourceDef,
    namespace: Option<String>,
    label: LabelSelector,
    field: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.label.matches(obj) && self.field.matches(self.res, obj)
    }

    /// Translates a stored event into what this watcher sees (if anything).
    fn translate(&self, ev: &Event) -> Option<(EventKind, Arc<Value>)> {
        if let Some(ns) = &self.namespace
            && &ev.namespace != ns
        {
            return None;
        }
        match ev.kind {
            EventKind::Added => self
                .matches(&ev.object)
                .then(|| (EventKind::Added, ev.object.clone())),
            EventKind::Deleted => self
                .matches(&ev.object)
                .then(|| (EventKind::Deleted, ev.object.clone())),
            EventKind::Modified => {
                let now = self.matches(&ev.object);
                let before = ev.prev.as_deref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some((EventKind::Modified, ev.object.clone())),
                    (false, true) => Some((EventKind::Added, ev.object.clone())),
                    (true, false) => {
                        let mut prev = ev.prev.as_deref().cloned().unwrap_or(Value::Null);
                        if let Some(m) = prev.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.insert("resourceVersion".into(), json!(ev.rv.to_string()));
                        }
                        Some((EventKind::Deleted, Arc::new(prev)))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// Starts a watch; returns the receiving end of its event lines.
pub(crate) fn start(
    shared: &Arc<Shared>,
    id: ResourceId,
    namespace: Option<String>,
    opts: WatchOpts,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let res = def(id);
    let filter = Filter {
        res,
        namespace,
        label: opts.label.clone(),
        field: opts.field.clone(),
    };
    let requested: Option<u64> = match opts.resource_version.as_str() {
        "" | "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut changes = shared.changes.subscribe();
    let mut stop = shared.stop.subscribe();
    let mut cuts = shared.cuts.subscribe();
    cuts.borrow_and_update();
    let (initial, mut cursor, expired) = {
        let store = shared.store.lock();
        let table = store.table(id);
        match requested {
            Some(rv) if !opts.send_initial_events => {
                if rv < table.floor {
                    (Vec::new(), rv, Some(table.floor + 1))
                } else {
                    (Vec::new(), rv, None)
                }
            }
            _ => {
                let ns = filter.namespace.as_deref();
                let objs: Vec<Arc<Value>> = table
                    .range(ns, None)
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect();
                (objs, store.rv, None)
            }
        }
    };
    let interval = shared.settings.lock().bookmark_interval;
    let shared = shared.clone();
    shared.rt.clone().spawn(async move {
        if let Some(oldest) = expired {
            let _ = tx.send(too_old(cursor, oldest)).await;
            return;
        }
        for obj in &initial {
            if tx.send(line("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if opts.send_initial_events && tx.send(bookmark(res, cursor, true)).await.is_err() {
            return;
        }
        drop(initial);
        let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            let batch = {
                let store = shared.store.lock();
                let table = store.table(id);
                if cursor < table.floor {
                    Err(too_old(cursor, table.floor + 1))
                } else {
                    let start = table.history.partition_point(|e| e.rv <= cursor);
                    let out: Vec<(EventKind, Arc<Value>)> = table
                        .history
                        .range(start..)
                        .filter_map(|e| filter.translate(e))
                        .collect();
                    cursor = store.rv;
                    Ok(out)
                }
            };
            match batch {
                Err(error_line) => {
                    let _ = tx.send(error_line).await;
                    return;
                }
                Ok(events) => {
                    for (kind, obj) in events {
                        if tx.send(line(kind.as_str(), &obj)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = cuts.changed() => return,
                _ = tx.closed() => return,
                _ = timeout => return,
                _ = ticks.tick(), if opts.bookmarks => {
                    if tx.send(bookmark(res, cursor, false)).await.is_err() {
                        return;
                    }
                }
                r = changes.changed() => if r.is_err() { return },
            }
        }
    });
    Ok(rx)
}
