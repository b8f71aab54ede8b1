//! Object storage: one table per resource type holding objects by (namespace, name) in key
//! order (the order etcd lists them in), a global resourceVersion counter, and a bounded
//! per-type event history that watches resume from.
//!
//! Objects are `serde_json::Value`s behind `Arc`, so lists and watch events share them
//! instead of copying.

use std::{
    collections::{BTreeMap, VecDeque},
    ops::Bound,
    sync::Arc,
};

use serde_json::{Value, json};

use super::resources::{self, RESOURCES, ResourceId};

/// Key of an object inside its table: (namespace or `""`, name).
pub(crate) type ObjKey = (String, String);

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `ADDED`.
    Added,
    /// `MODIFIED`.
    Modified,
    /// `DELETED`.
    Deleted,
}

impl EventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change in a table's history.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: EventKind,
    pub namespace: String,
    /// The object after the change (for `Deleted`: the last state, with the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change (`Modified`, `Deleted`).
    pub prev: Option<Arc<Value>>,
}

/// One resource type's objects and history.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub objects: BTreeMap<ObjKey, Arc<Value>>,
    pub history: VecDeque<Event>,
    /// Watches may resume from any resourceVersion `>= floor`.
    pub floor: u64,
}

impl Table {
    /// Objects of one namespace (or all), in key order, starting after `after` if given.
    pub fn range<'a>(
        &'a self,
        namespace: Option<&str>,
        after: Option<&ObjKey>,
    ) -> Box<dyn Iterator<Item = (&'a ObjKey, &'a Arc<Value>)> + 'a> {
        let lower = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => match namespace {
                Some(ns) => Bound::Included((ns.to_string(), String::new())),
                None => Bound::Unbounded,
            },
        };
        let iter = self.objects.range((lower, Bound::Unbounded));
        match namespace {
            Some(ns) => {
                let ns = ns.to_string();
                Box::new(iter.take_while(move |(k, _)| k.0 == ns))
            }
            None => Box::new(iter),
        }
    }
}

/// All tables plus the global counters.
#[derive(Debug)]
pub(crate) struct Store {
    /// The current (latest) resourceVersion.
    pub rv: u64,
    tables: Vec<Table>,
    /// Events kept per table before the oldest are dropped (then resuming older gets 410).
    pub history_limit: usize,
    next_ip: u32,
}

/// The namespace and name of an object.
pub(crate) fn key_of(obj: &Value) -> ObjKey {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// The resourceVersion of an object as a number (0 if absent).
pub(crate) fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

impl Store {
    /// An empty store whose counter starts at `start_rv`.
    pub fn new(history_limit: usize, start_rv: u64) -> Self {
        Self {
            rv: start_rv,
            tables: RESOURCES.iter().map(|_| Table::default()).collect(),
            history_limit,
            next_ip: 1,
        }
    }

    /// The table of a resource type.
    pub fn table(&self, id: ResourceId) -> &Table {
        &self.tables[id]
    }

    /// One object.
    pub fn get(&self, id: ResourceId, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.tables[id]
            .objects
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Stores `obj` (insert or replace), assigning the next resourceVersion and recording an
    /// `ADDED`/`MODIFIED` event.
    pub fn put(&mut self, id: ResourceId, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        set_rv(&mut obj, rv);
        let key = key_of(&obj);
        let obj = Arc::new(obj);
        let prev = self.tables[id].objects.insert(key.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(
            id,
            Event {
                rv,
                kind,
                namespace: key.0,
                object: obj.clone(),
                prev,
            },
        );
        obj
    }

    /// Removes an object, recording a `DELETED` event; returns its last state (with the
    /// deletion's resourceVersion, as the real server reports it).
    pub fn remove(&mut self, id: ResourceId, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let key = (namespace.to_string(), name.to_string());
        let prev = self.tables[id].objects.remove(&key)?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*prev).clone();
        set_rv(&mut last, rv);
        let last = Arc::new(last);
        self.record(
            id,
            Event {
                rv,
                kind: EventKind::Deleted,
                namespace: key.0,
                object: last.clone(),
                prev: Some(prev),
            },
        );
        Some(last)
    }

    fn record(&mut self, id: ResourceId, event: Event) {
        let limit = self.history_limit;
        let table = &mut self.tables[id];
        table.history.push_back(event);
        while table.history.len() > limit {
            if let Some(old) = table.history.pop_front() {
                table.floor = old.rv;
            }
        }
    }

    /// Drops every table's history: watches resuming from any earlier resourceVersion (and
    /// continue tokens issued before) get `410 Gone`.
    pub fn compact(&mut self) {
        let rv = self.rv;
        for table in &mut self.tables {
            table.history.clear();
            table.floor = rv;
        }
    }

    /// Changes the history bound (applies on the next write).
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
    }

    /// Allocates a service cluster IP from 10.96.0.0/16.
    pub fn allocate_cluster_ip(&mut self) -> String {
        let n = self.next_ip;
        self.next_ip += 1;
        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }
}

/// Read-only access to the stored objects, handed to [`super::KubeDouble::wait_for`]
/// predicates and snapshots.
pub struct StoreView<'a> {
    pub(crate) store: &'a Store,
}

impl<'a> StoreView<'a> {
    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.rv
    }

    /// One object by resource name (`pods`, `deployments`, `deployments.apps`, ...),
    /// namespace (`""` for cluster-scoped) and name.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<&'a Value> {
        ids(resource)
            .into_iter()
            .find_map(|id| self.store.get(id, namespace, name).map(|a| &**a))
    }

    /// Changes to a resource's objects (in one namespace or all) after resourceVersion `rv`,
    /// oldest first, as the kind and the object after the change (for `Deleted`, its last
    /// state); `None` when the history no longer reaches back to `rv` (a watch would get 410
    /// Gone: list instead). Lets a [`super::KubeDouble::wait_for`] check look only at what
    /// changed since its last run, not at every object.
    pub fn changes_since(
        &self,
        resource: &str,
        namespace: Option<&str>,
        rv: u64,
    ) -> Option<Vec<(EventKind, &'a Value)>> {
        let table = self.store.table(resources::resolve(resource)?);
        if rv < table.floor {
            return None;
        }
        let start = table.history.partition_point(|e| e.rv <= rv);
        Some(
            table
                .history
                .range(start..)
                .filter(|e| namespace.is_none_or(|ns| e.namespace == ns))
                .map(|e| (e.kind, &*e.object))
                .collect(),
        )
    }

    /// Objects of a resource, in one namespace or all (`None`), in key order.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<&'a Value> {
        ids(resource)
            .into_iter()
            .flat_map(|id| {
                self.store
                    .table(id)
                    .range(namespace, None)
                    .map(|(_, v)| &**v)
            })
            .collect()
    }
}

/// The tables a resource name reads: one, or every version's for a type stored per served
/// version (`podgroups`: only the served version's is ever written).
fn ids(resource: &str) -> Vec<ResourceId> {
    let Some(id) = resources::resolve(resource) else {
        return Vec::new();
    };
    let r = resources::def(id);
    if r.served_when.is_none() {
        return vec![id];
    }
    RESOURCES
        .iter()
        .enumerate()
        .filter(|(_, o)| o.group == r.group && o.plural == r.plural)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}})
    }

    #[test]
    fn changes_since_reads_only_what_changed_after_a_version() {
        let mut store = Store::new(100, 10);
        let pods = resources::resolve("pods").expect("pods served");
        store.put(pods, pod("a", "p1"));
        let after_first = store.rv;
        store.put(pods, pod("b", "p2"));
        store.put(pods, pod("a", "p1"));
        store.remove(pods, "a", "p1");
        let view = StoreView { store: &store };
        let names = |changes: Vec<(EventKind, &Value)>| -> Vec<(EventKind, String)> {
            changes
                .into_iter()
                .map(|(k, v)| (k, v["metadata"]["name"].as_str().unwrap_or("").to_string()))
                .collect()
        };
        let all = view
            .changes_since("pods", None, after_first)
            .expect("history reaches back");
        assert_eq!(
            names(all),
            vec![
                (EventKind::Added, "p2".to_string()),
                (EventKind::Modified, "p1".to_string()),
                (EventKind::Deleted, "p1".to_string()),
            ]
        );
        let in_a = view
            .changes_since("pods", Some("a"), after_first)
            .expect("history reaches back");
        assert_eq!(in_a.len(), 2);
        assert!(
            view.changes_since("pods", None, store.rv)
                .expect("current")
                .is_empty()
        );
        store.compact();
        let view = StoreView { store: &store };
        assert!(view.changes_since("pods", None, after_first).is_none());
    }
}
