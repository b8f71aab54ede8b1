//! Queue flags → the queue entry JSON of the values schema (`{"templateOverrides": …,
//! "queueSettings": …}`), for `queues add` (a whole entry) and `queues patch` (a merge patch).
//! Pure functions.
//!
//! Lists merge by key, as the agent merges templates: `--env` by `name`, the `--shm-size` volume by
//! `name` and its mount by `mountPath`. A merge patch replaces lists whole (RFC 7386), so `patch`
//! sends the queue's current list with the flags' entries merged in.

use serde_json::{Map, Value, json};

use crate::cli::QueueSpecArgs;

/// The GPU resource name.
pub use clearml_agent_core::contract::GPU_RESOURCE;
/// Name of the shared-memory volume (the seeds' name).
pub const SHM_VOLUME: &str = "dshm";
/// Where the shared-memory volume is mounted.
pub const SHM_PATH: &str = "/dev/shm";

/// Whether any flag (other than `-f` and `--dry-run`) sets something.
pub fn has_changes(flags: &QueueSpecArgs) -> bool {
    let QueueSpecArgs {
        gpus,
        cpu,
        memory,
        shm_size,
        labels,
        annotations,
        env,
        max_pods,
        default_image,
        use_image_entrypoint,
        worker_id_template,
        multi_node,
        priority,
        file: _,
        dry_run: _,
    } = flags;
    gpus.is_some()
        || cpu.is_some()
        || memory.is_some()
        || shm_size.is_some()
        || !labels.is_empty()
        || !annotations.is_empty()
        || !env.is_empty()
        || max_pods.is_some()
        || default_image.is_some()
        || use_image_entrypoint.is_some()
        || worker_id_template.is_some()
        || !multi_node.is_empty()
        || priority.is_some()
}

/// The lists the flags change (by path in the queue entry).
fn touched_lists(flags: &QueueSpecArgs) -> Vec<&'static [&'static str]> {
    let mut lists: Vec<&'static [&'static str]> = Vec::new();
    if !flags.env.is_empty() {
        lists.push(&["templateOverrides", "env"]);
    }
    if flags.shm_size.is_some() {
        lists.push(&["templateOverrides", "volumes"]);
        lists.push(&["templateOverrides", "volumeMounts"]);
    }
    lists
}

/// Whether the flags change a list, so a merge patch needs the queue's current list.
pub fn touches_lists(flags: &QueueSpecArgs) -> bool {
    !touched_lists(flags).is_empty()
}

/// Applies the flags onto a queue entry (or a merge patch of one).
pub fn apply_flags(doc: &mut Value, flags: &QueueSpecArgs) {
    let limits = ["templateOverrides", "resources", "limits"];
    if let Some(gpus) = flags.gpus {
        set_path(
            doc,
            &[&limits[..], &[GPU_RESOURCE]].concat(),
            json!(gpus.to_string()),
        );
    }
    if let Some(cpu) = &flags.cpu {
        set_path(doc, &[&limits[..], &["cpu"]].concat(), json!(cpu));
    }
    if let Some(memory) = &flags.memory {
        set_path(doc, &[&limits[..], &["memory"]].concat(), json!(memory));
    }
    if let Some(size) = &flags.shm_size {
        upsert(
            doc,
            &["templateOverrides", "volumes"],
            "name",
            json!({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}),
        );
        upsert(
            doc,
            &["templateOverrides", "volumeMounts"],
            "mountPath",
            json!({"name": SHM_VOLUME, "mountPath": SHM_PATH}),
        );
    }
    for (k, v) in &flags.labels {
        set_path(doc, &["templateOverrides", "labels", k], json!(v));
    }
    for (k, v) in &flags.annotations {
        set_path(doc, &["templateOverrides", "annotations", k], json!(v));
    }
    for (k, v) in &flags.env {
        upsert(
            doc,
            &["templateOverrides", "env"],
            "name",
            json!({"name": k, "value": v}),
        );
    }
    let settings = |key: &'static str| ["queueSettings", key];
    if let Some(n) = flags.max_pods {
        set_path(doc, &settings("maxPods"), json!(n));
    }
    if let Some(image) = &flags.default_image {
        set_path(doc, &settings("defaultImage"), json!(image));
    }
    if let Some(b) = flags.use_image_entrypoint {
        set_path(doc, &settings("useImageEntrypoint"), json!(b));
    }
    if let Some(t) = &flags.worker_id_template {
        set_path(doc, &settings("customWorkerIdTemplate"), json!(t));
    }
    if !flags.multi_node.is_empty() {
        set_path(doc, &settings("multiNode"), json!(flags.multi_node));
    }
    if let Some(p) = flags.priority {
        set_path(doc, &settings("priority"), json!(p));
    }
}

/// The entry `queues add` sends: the `-f` document (or `{}`) with the flags applied.
pub fn add_spec(file: Option<Value>, flags: &QueueSpecArgs) -> Value {
    let mut doc = file.unwrap_or_else(|| Value::Object(Map::new()));
    apply_flags(&mut doc, flags);
    doc
}

/// The merge patch `queues patch` sends: `base` (`--patch` and/or `-f`) with the flags applied;
/// lists the flags touch start from the patch's own list, else the queue's `current` one.
pub fn merge_patch(base: Option<Value>, flags: &QueueSpecArgs, current: Option<&Value>) -> Value {
    let mut patch = base.unwrap_or_else(|| Value::Object(Map::new()));
    for path in touched_lists(flags) {
        let in_patch = get_path(&patch, path).is_some_and(Value::is_array);
        if let Some(list) = current.and_then(|c| get_path(c, path))
            && !in_patch
            && list.is_array()
        {
            set_path(&mut patch, path, list.clone());
        }
    }
    apply_flags(&mut patch, flags);
    patch
}

fn get_path<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, k| v.get(*k))
}

/// Sets `path` to `value`, creating (or replacing non-map) intermediate maps.
fn set_path(doc: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *doc = value;
        return;
    };
    let mut here = doc;
    for key in parents {
        here = object(here)
            .entry((*key).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    object(here).insert((*last).to_string(), value);
}

fn object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// Replaces the entry of the list at `path` whose `key` equals the new entry's, else appends.
fn upsert(doc: &mut Value, path: &[&str], key: &str, entry: Value) {
    let existing = get_path(doc, path).cloned();
    let mut list = match existing {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    match list.iter_mut().find(|item| item.get(key) == entry.get(key)) {
        Some(slot) => *slot = entry,
        None => list.push(entry),
    }
    set_path(doc, path, Value::Array(list));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(f: impl FnOnce(&mut QueueSpecArgs)) -> QueueSpecArgs {
        let mut a = QueueSpecArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn each_flag_lands_at_its_schema_path() {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        let cases: Vec<(QueueSpecArgs, Value)> = vec![
            (
                flags(|a| a.gpus = Some(2)),
                json!({"templateOverrides": {"resources": {"limits": {"nvidia.com/gpu": "2"}}}}),
            ),
            (
                flags(|a| {
                    a.cpu = Some("4".into());
                    a.memory = Some("16Gi".into());
                }),
                json!({"templateOverrides": {"resources": {"limits": {"cpu": "4", "memory": "16Gi"}}}}),
            ),
            (
                flags(|a| a.shm_size = Some("32Gi".into())),
                json!({"templateOverrides": {
                    "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}],
                    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                }}),
            ),
            (
                flags(|a| {
                    a.labels = vec![kv("team", "red")];
                    a.annotations = vec![kv("example", "x")];
                }),
                json!({"templateOverrides": {"labels": {"team": "red"}, "annotations": {"example": "x"}}}),
            ),
            (
                flags(|a| a.env = vec![kv("A", "1"), kv("B", ""), kv("A", "2")]),
                json!({"templateOverrides": {"env": [{"name": "A", "value": "2"}, {"name": "B", "value": ""}]}}),
            ),
            (
                flags(|a| {
                    a.max_pods = Some(10);
                    a.default_image = Some("python:3.10".into());
                    a.use_image_entrypoint = Some(false);
                    a.worker_id_template = Some("k8s:myGroup:{task_id}".into());
                    a.multi_node = vec![4, 2];
                    a.priority = Some(-3);
                }),
                json!({"queueSettings": {
                    "maxPods": 10,
                    "defaultImage": "python:3.10",
                    "useImageEntrypoint": false,
                    "customWorkerIdTemplate": "k8s:myGroup:{task_id}",
                    "multiNode": [4, 2],
                    "priority": -3,
                }}),
            ),
            (QueueSpecArgs::default(), json!({})),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            assert_eq!(add_spec(None, &f), want, "case {i}");
        }
    }

    #[test]
    fn add_spec_is_a_valid_queue_entry_for_the_agents_schema() {
        let f = flags(|a| {
            a.gpus = Some(2);
            a.shm_size = Some("32Gi".into());
            a.env = vec![("VLLM_SKIP_P2P_CHECK".into(), "1".into())];
            a.max_pods = Some(3);
        });
        let spec = add_spec(None, &f);
        clearml_agent_core::values::QueueValues::from_json("GPUs_with_shared_memory", spec)
            .expect("the agent accepts what the flags build");
    }

    #[test]
    fn flags_win_over_the_file_and_merge_its_lists_by_key() {
        let file = json!({
            "templateOverrides": {
                "env": [{"name": "A", "value": "file"}, {"name": "B", "value": "file"}],
                "resources": {"limits": {"memory": "1Gi", "cpu": "1"}}
            },
            "queueSettings": {"maxPods": 1}
        });
        let f = flags(|a| {
            a.env = vec![("B".into(), "flag".into()), ("C".into(), "flag".into())];
            a.memory = Some("2Gi".into());
            a.max_pods = Some(5);
        });
        assert_eq!(
            add_spec(Some(file), &f),
            json!({
                "templateOverrides": {
                    "env": [
                        {"name": "A", "value": "file"},
                        {"name": "B", "value": "flag"},
                        {"name": "C", "value": "flag"}
                    ],
                    "resources": {"limits": {"memory": "2Gi", "cpu": "1"}}
                },
                "queueSettings": {"maxPods": 5}
            })
        );
    }

    #[test]
    fn patch_keeps_the_queues_other_list_entries() {
        let current = json!({
            "templateOverrides": {
                "env": [{"name": "KEEP", "value": "1"}, {"name": "X", "value": "old"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            },
            "queueSettings": {"maxPods": 2}
        });
        let cases: Vec<(QueueSpecArgs, Value)> = vec![
            (
                flags(|a| a.env = vec![("X".into(), "new".into())]),
                json!({"templateOverrides": {
                    "env": [{"name": "KEEP", "value": "1"}, {"name": "X", "value": "new"}]
                }}),
            ),
            (
                flags(|a| a.shm_size = Some("8Gi".into())),
                json!({"templateOverrides": {
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
                    ],
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "dshm", "mountPath": "/dev/shm"}
                    ]
                }}),
            ),
            // Scalars and maps need no current state: a plain merge patch.
            (
                flags(|a| a.max_pods = Some(4)),
                json!({"queueSettings": {"maxPods": 4}}),
            ),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            assert_eq!(merge_patch(None, &f, Some(&current)), want, "case {i}");
        }
    }

    #[test]
    fn patch_flags_apply_on_top_of_the_given_patch() {
        let base = json!({"queueSettings": {"maxPods": 1, "defaultImage": "a"}});
        let f = flags(|a| a.max_pods = Some(9));
        assert_eq!(
            merge_patch(Some(base), &f, None),
            json!({"queueSettings": {"maxPods": 9, "defaultImage": "a"}})
        );
    }

    #[test]
    fn has_changes_sees_every_flag_but_file_and_dry_run() {
        assert!(!has_changes(&QueueSpecArgs::default()));
        assert!(!has_changes(&flags(|a| a.dry_run = true)));
        assert!(has_changes(&flags(|a| a.use_image_entrypoint = Some(true))));
        assert!(has_changes(&flags(|a| a.multi_node = vec![1])));
        assert!(has_changes(&flags(|a| a.priority = Some(0))));
    }
}
