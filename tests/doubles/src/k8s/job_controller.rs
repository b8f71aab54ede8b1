//! `batch/v1` Jobs: the API server's defaults and validation, the Job controller
//! (`pkg/controller/job`), the TTL-after-finished controller and the garbage collector of Jobs'
//! pods, as far as a client can observe them:
//!
//! - create: `spec.selector` generated from the uid (`batch.kubernetes.io/controller-uid`), the
//!   template labelled `batch.kubernetes.io/job-name`, `batch.kubernetes.io/controller-uid`,
//!   `job-name` and `controller-uid`; defaults `parallelism`/`completions` 1, `backoffLimit` 6,
//!   `completionMode: NonIndexed`, `suspend: false`, `podReplacementPolicy` (`Failed` with a
//!   `podFailurePolicy`, else `TerminatingOrFailed`);
//! - pods named `<job>-<random>` (Indexed: `<job>-<index>-<random>`, hostname `<job>-<index>`,
//!   the `batch.kubernetes.io/job-completion-index` annotation and label, env
//!   `JOB_COMPLETION_INDEX` from the annotation), owned by the Job (`controller: true`);
//! - terminal pods counted (`succeeded`, `failed`, `completedIndexes`); a pod removed before it
//!   finished counts as failed; a failed pod goes through the `podFailurePolicy` (`Ignore`: not
//!   counted and replaced; `FailJob`: the Job fails, reason `PodFailurePolicy`; `Count`), then
//!   `backoffLimit` (`BackoffLimitExceeded`); `activeDeadlineSeconds` (`DeadlineExceeded`);
//! - a failing Job gets `FailureTarget`, its running pods are deleted, and `Failed` follows once
//!   none is left; a succeeding one `SuccessCriteriaMet` then `Complete` with `completionTime`
//!   (Kubernetes 1.31+);
//! - `suspend: true`: no pods (running ones deleted), condition `Suspended`; resuming sets
//!   `Suspended=False` (`JobResumed`) and a new `startTime`;
//! - `ttlSecondsAfterFinished`: the finished Job is deleted with foreground propagation;
//! - deletion: `propagationPolicy` unset or `Orphan` (batch/v1's default) orphans the pods
//!   (their owner reference removed), `Background` deletes the Job at once and its pods after,
//!   `Foreground` keeps the Job (`foregroundDeletion` finalizer) until its pods are gone; a
//!   Service owned by a Job that is gone is collected too (the garbage collector's part for a
//!   multi-node task's rendezvous Service).
//!
//! Not emulated: the `batch.kubernetes.io/job-tracking` pod finalizer (pods are accounted from
//! the controller's memory instead), pod-creation backoff, events, `backoffLimitPerIndex`,
//! `successPolicy`, `managedBy`.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use serde_json::{Map, Value, json};

use super::{
    api::{DeleteOpts, WriteOpts, meta_mut, meta_str},
    deletion::pods_id,
    resources::{ResourceId, find},
    state::{Shared, now},
    status::FieldError,
    store::Store,
    validate::go_string_map,
};

const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
/// Label and annotation of an Indexed Job's pods.
pub(crate) const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const FOREGROUND: &str = "foregroundDeletion";

fn jobs_id() -> ResourceId {
    find("batch", "v1", "jobs").unwrap_or_default()
}

fn obj_mut<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = parent
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("made an object above")
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

// ----- API server: defaults and validation -------------------------------------------------

/// The API server's defaults of a Job (`SetDefaults_Job`, and the selector the strategy
/// generates on create).
pub(crate) fn defaults(root: &mut Map<String, Value>, creating: bool) {
    let meta = root.get("metadata").cloned().unwrap_or_default();
    let uid = meta
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let spec = obj_mut(root, "spec");
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set_default(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let policy = if spec.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", json!(policy));
    let manual = spec.get("manualSelector") == Some(&json!(true));
    let template = obj_mut(spec, "template");
    if let Some(Value::Object(pod)) = template.get_mut("spec") {
        super::defaults::pod_spec(pod);
    }
    if creating && !manual {
        let labels = obj_mut(obj_mut(template, "metadata"), "labels");
        for (k, v) in [
            (LEGACY_CONTROLLER_UID, &uid),
            (LEGACY_JOB_NAME, &name),
            (CONTROLLER_UID, &uid),
            (JOB_NAME, &name),
        ] {
            set_default(labels, k, json!(v));
        }
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {CONTROLLER_UID: uid}}),
        );
    }
    let template_labels = root
        .get("spec")
        .and_then(|s| s.pointer("/template/metadata/labels"))
        .cloned()
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()));
    let meta = obj_mut(root, "metadata");
    if meta
        .get("labels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
        && let Some(labels) = template_labels
    {
        meta.insert("labels".into(), labels);
    }
    if creating {
        root.insert("status".into(), json!({}));
    }
}

/// The API server's checks of a Job (`ValidateJob`, `ValidateJobUpdate`), those a client can
/// trip.
pub(crate) fn validate(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let at = |p: &str| obj.pointer(p);
    let restart = at("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if restart != "Never" && restart != "OnFailure" {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &json!(restart),
            &["OnFailure", "Never"],
        ));
    }
    for field in ["parallelism", "completions", "backoffLimit"] {
        if let Some(n) = at(&format!("/spec/{field}")).and_then(Value::as_i64)
            && n < 0
        {
            errs.push(FieldError::invalid(
                format!("spec.{field}"),
                &json!(n),
                "must be greater than or equal to 0",
            ));
        }
    }
    for field in ["activeDeadlineSeconds"] {
        if let Some(n) = at(&format!("/spec/{field}")).and_then(Value::as_i64)
            && n <= 0
        {
            errs.push(FieldError::invalid(
                format!("spec.{field}"),
                &json!(n),
                "must be greater than 0",
            ));
        }
    }
    if let Some(n) = at("/spec/ttlSecondsAfterFinished").and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            "spec.ttlSecondsAfterFinished",
            &json!(n),
            "must be greater than or equal to 0",
        ));
    }
    match at("/spec/completionMode").and_then(Value::as_str) {
        Some("NonIndexed") | None => {}
        Some("Indexed") => {
            if at("/spec/completions").is_none_or(Value::is_null) {
                errs.push(FieldError::required(
                    "spec.completions",
                    "when completion mode is Indexed",
                ));
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            "spec.completionMode",
            &json!(other),
            &["NonIndexed", "Indexed"],
        )),
    }
    // the selector must select the template's pods
    let template_labels = at("/spec/template/metadata/labels");
    let matches = at("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| template_labels.and_then(|l| l.get(k)) == Some(v))
        });
    if !matches {
        errs.push(FieldError {
            reason: "FieldValueInvalid",
            field: "spec.template.metadata.labels".into(),
            message: format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                go_string_map(template_labels)
            ),
        });
    }
    if let Some(rules) = at("/spec/podFailurePolicy/rules").and_then(Value::as_array) {
        if restart != "Never" {
            errs.push(FieldError::invalid(
                "spec.template.spec.restartPolicy",
                &json!(restart),
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            let path = format!("spec.podFailurePolicy.rules[{i}]");
            let action = rule
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !["FailJob", "Ignore", "Count", "FailIndex"].contains(&action) {
                errs.push(FieldError::not_supported(
                    format!("{path}.action"),
                    &json!(action),
                    &["Count", "FailIndex", "FailJob", "Ignore"],
                ));
            }
            let codes = rule.get("onExitCodes").filter(|v| !v.is_null());
            let conds = rule.get("onPodConditions").filter(|v| !v.is_null());
            if codes.is_some() == conds.is_some() {
                errs.push(FieldError::invalid(
                    path.clone(),
                    &json!(""),
                    "specifying one of OnExitCodes and OnPodConditions is required",
                ));
            }
            if let Some(codes) = codes {
                let op = codes
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if op != "In" && op != "NotIn" {
                    errs.push(FieldError::not_supported(
                        format!("{path}.onExitCodes.operator"),
                        &json!(op),
                        &["In", "NotIn"],
                    ));
                }
                let values: Vec<i64> = codes
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64)
                    .collect();
                if values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{path}.onExitCodes.values"),
                        "at least one value is required",
                    ));
                }
                if values.windows(2).any(|w| w[0] >= w[1]) {
                    errs.push(FieldError::invalid(
                        format!("{path}.onExitCodes.values"),
                        &json!(values),
                        "must be ordered",
                    ));
                }
                if op == "In" && values.contains(&0) {
                    errs.push(FieldError::invalid(
                        format!("{path}.onExitCodes.values"),
                        &json!(0),
                        "must not be 0 for the In operator",
                    ));
                }
            }
        }
    }
    if let Some(old) = old {
        let suspended = old.pointer("/spec/suspend") == Some(&json!(true));
        for (field, pointer) in [
            ("spec.selector", "/spec/selector"),
            ("spec.completionMode", "/spec/completionMode"),
            ("spec.podFailurePolicy", "/spec/podFailurePolicy"),
        ] {
            if old.pointer(pointer) != obj.pointer(pointer) {
                errs.push(FieldError::invalid(
                    field,
                    obj.pointer(pointer).unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
        if !suspended && old.pointer("/spec/template") != obj.pointer("/spec/template") {
            errs.push(FieldError::invalid(
                "spec.template",
                &json!(""),
                "field is immutable",
            ));
        }
    }
}

/// `DELETE` of a Job, before the object is removed or marked: what happens to its pods by the
/// propagation policy. Returns the Job as it is to be deleted.
pub(crate) fn on_delete(
    store: &mut Store,
    job: &Arc<Value>,
    propagation: Option<&str>,
) -> Arc<Value> {
    match propagation {
        Some("Foreground") => {
            let mut marked = (**job).clone();
            let m = meta_mut(&mut marked);
            let list = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Value::Array(list) = list
                && !list.iter().any(|f| f == FOREGROUND)
            {
                list.push(json!(FOREGROUND));
            }
            store.put(jobs_id(), marked)
        }
        Some("Background") => job.clone(),
        // unset: batch/v1 Jobs orphan their pods (kept for compatibility by the real server)
        _ => {
            let uid = meta_str(job, "uid").to_string();
            let ns = meta_str(job, "namespace").to_string();
            let owned: Vec<Value> = store
                .table(pods_id())
                .range(Some(&ns), None)
                .filter(|(_, p)| owner_uid(p) == Some(uid.as_str()))
                .map(|(_, p)| (**p).clone())
                .collect();
            for mut pod in owned {
                if let Some(Value::Array(refs)) = meta_mut(&mut pod).get_mut("ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                }
                store.put(pods_id(), pod);
            }
            job.clone()
        }
    }
}

// ----- the controllers ----------------------------------------------------------------------

/// The uid of a pod's controlling Job, if it has one.
fn owner_uid(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| {
            r.get("kind").and_then(Value::as_str) == Some("Job")
                && r.get("controller") == Some(&json!(true))
        })?
        .get("uid")
        .and_then(Value::as_str)
}

/// The uid of any Job among an object's owners (a dependent without `controller: true`).
fn job_owner(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("kind").and_then(Value::as_str) == Some("Job"))?
        .get("uid")
        .and_then(Value::as_str)
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

fn is_terminal(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn terminating(obj: &Value) -> bool {
    !meta_str(obj, "deletionTimestamp").is_empty()
}

fn index_of(pod: &Value) -> Option<i64> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(COMPLETION_INDEX))
        .and_then(Value::as_str)?
        .parse()
        .ok()
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// `0,2-4` from a set of indexes.
fn index_ranges(set: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn parse_ranges(s: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// What a failed pod comes to under the Job's `podFailurePolicy`.
#[derive(Debug, PartialEq)]
enum Action {
    Count,
    Ignore,
    FailJob(String),
}

fn policy_action(job: &Value, pod: &Value) -> Action {
    let Some(rules) = job
        .pointer("/spec/podFailurePolicy/rules")
        .and_then(Value::as_array)
    else {
        return Action::Count;
    };
    let (ns, name) = (meta_str(pod, "namespace"), meta_str(pod, "name"));
    for (i, rule) in rules.iter().enumerate() {
        let action = rule
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut matched: Option<String> = None;
        if let Some(codes) = rule.get("onExitCodes").filter(|v| !v.is_null()) {
            let only = codes.get("containerName").and_then(Value::as_str);
            let op_in = codes.get("operator").and_then(Value::as_str) == Some("In");
            let values: Vec<i64> = codes
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            let statuses = ["/status/containerStatuses", "/status/initContainerStatuses"]
                .into_iter()
                .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
                .flatten();
            for c in statuses {
                let cname = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if only.is_some_and(|o| o != cname) {
                    continue;
                }
                let Some(code) = c
                    .pointer("/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                if values.contains(&code) == op_in {
                    matched = Some(format!(
                        "Container {cname} for pod {ns}/{name} failed with exit code {code} matching {action} rule at index {i}"
                    ));
                    break;
                }
            }
        }
        if let Some(patterns) = rule.get("onPodConditions").and_then(Value::as_array) {
            let conditions = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for p in patterns {
                let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
                let status = p.get("status").and_then(Value::as_str).unwrap_or("True");
                if conditions.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some(ty)
                        && c.get("status").and_then(Value::as_str) == Some(status)
                }) {
                    matched = Some(format!(
                        "Pod {ns}/{name} has condition {ty} matching {action} rule at index {i}"
                    ));
                    break;
                }
            }
        }
        if let Some(message) = matched {
            return match action {
                "Ignore" => Action::Ignore,
                "FailJob" => Action::FailJob(message),
                _ => Action::Count,
            };
        }
    }
    Action::Count
}

/// What the controller remembers of one Job (the real one keeps it in pod finalizers and
/// `uncountedTerminatedPods`).
#[derive(Debug, Default)]
struct Memory {
    /// Pods already counted (or ignored) by uid.
    counted: HashSet<String>,
    /// Pods seen unfinished, by uid.
    seen: HashSet<String>,
}

/// Runs the controllers until the double stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut changes = shared.changes.subscribe();
    let mut stop = shared.stop.subscribe();
    let mut memory: HashMap<String, Memory> = HashMap::new();
    loop {
        if shared.stopping() {
            return;
        }
        changes.borrow_and_update();
        let next = sync(&shared, &mut memory);
        let wait = next
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

fn condition(ty: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": ty,
        "status": status,
        "lastProbeTime": now(),
        "lastTransitionTime": now(),
        "reason": reason,
        "message": message,
    })
}

/// Sets condition `ty` (kept as it is when its status is already the same).
fn set_condition(conditions: &mut Vec<Value>, ty: &str, status: &str, reason: &str, message: &str) {
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
    {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => {}
        Some(c) => *c = condition(ty, status, reason, message),
        None => conditions.push(condition(ty, status, reason, message)),
    }
}

fn has_condition<'a>(conditions: &'a [Value], ty: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| {
        c.get("type").and_then(Value::as_str) == Some(ty)
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// One pass over every Job; returns how soon a timed event (deadline, TTL) is due.
fn sync(shared: &Arc<Shared>, memory: &mut HashMap<String, Memory>) -> Option<Duration> {
    type Objects = Vec<Arc<Value>>;
    let (jobs, pods, services): (Objects, Objects, Objects) = {
        let store = shared.store.lock();
        let jobs: Vec<Arc<Value>> = store
            .table(jobs_id())
            .range(None, None)
            .map(|(_, v)| v.clone())
            .collect();
        let pods = store
            .table(pods_id())
            .range(None, None)
            .filter(|(_, p)| owner_uid(p).is_some())
            .map(|(_, v)| v.clone())
            .collect();
        let services = find("", "v1", "services")
            .map(|id| {
                store
                    .table(id)
                    .range(None, None)
                    .filter(|(_, o)| job_owner(o).is_some())
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (jobs, pods, services)
    };
    let live: HashSet<&str> = jobs.iter().map(|j| meta_str(j, "uid")).collect();
    memory.retain(|uid, _| live.contains(uid.as_str()));
    // the garbage collector: pods whose Job is gone
    let mut by_owner: HashMap<&str, Vec<&Arc<Value>>> = HashMap::new();
    for pod in &pods {
        let owner = owner_uid(pod).unwrap_or_default();
        if live.contains(owner) {
            by_owner.entry(owner).or_default().push(pod);
        } else if !terminating(pod) {
            delete_pod(shared, pod);
        }
    }
    // other dependents of a Job that is gone (a multi-node task's rendezvous Service)
    if let Some(id) = find("", "v1", "services") {
        for svc in services
            .iter()
            .filter(|o| job_owner(o).is_some_and(|u| !live.contains(u)))
        {
            let opts = DeleteOpts {
                uid: Some(meta_str(svc, "uid").to_string()),
                ..Default::default()
            };
            let _ = shared.delete(id, meta_str(svc, "namespace"), meta_str(svc, "name"), &opts);
        }
    }
    let mut next: Option<Duration> = None;
    let mut soon = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
    for job in &jobs {
        let uid = meta_str(job, "uid");
        let owned = by_owner.remove(uid).unwrap_or_default();
        if terminating(job) {
            if job
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x == FOREGROUND))
            {
                foreground(shared, job, &owned);
            }
            continue;
        }
        let mem = memory.entry(uid.to_string()).or_default();
        if let Some(due) = sync_job(shared, job, &owned, mem) {
            soon(due);
        }
    }
    next
}

/// The garbage collector's foreground deletion: the pods first, then the Job.
fn foreground(shared: &Arc<Shared>, job: &Value, owned: &[&Arc<Value>]) {
    for pod in owned.iter().filter(|p| !terminating(p)) {
        delete_pod(shared, pod);
    }
    if owned.is_empty() {
        let mut done = job.clone();
        if let Some(Value::Array(f)) = meta_mut(&mut done).get_mut("finalizers") {
            f.retain(|x| x != FOREGROUND);
        }
        let (ns, name) = (meta_str(job, "namespace"), meta_str(job, "name"));
        let _ = shared.update(jobs_id(), ns, name, done, false, &WriteOpts::default());
    }
}

fn delete_pod(shared: &Arc<Shared>, pod: &Value) {
    let (ns, name) = (meta_str(pod, "namespace"), meta_str(pod, "name"));
    let opts = DeleteOpts {
        uid: Some(meta_str(pod, "uid").to_string()),
        ..Default::default()
    };
    let _ = shared.delete(pods_id(), ns, name, &opts);
}

/// The Job controller's sync of one live Job; returns when it must look again (deadline, TTL).
fn sync_job(
    shared: &Arc<Shared>,
    job: &Value,
    owned: &[&Arc<Value>],
    mem: &mut Memory,
) -> Option<Duration> {
    let (ns, name) = (meta_str(job, "namespace"), meta_str(job, "name"));
    let spec = |p: &str| job.pointer(&format!("/spec/{p}"));
    let status = job.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let now_t = chrono::Utc::now();
    let finished_at = ["Complete", "Failed"]
        .iter()
        .find_map(|t| has_condition(&conditions, t))
        .and_then(|c| c.get("lastTransitionTime").and_then(Value::as_str))
        .and_then(parse_time);
    if let Some(finished) = finished_at {
        // the TTL-after-finished controller
        let ttl = spec("ttlSecondsAfterFinished").and_then(Value::as_i64)?;
        let due = finished + chrono::Duration::seconds(ttl);
        if now_t >= due {
            let opts = DeleteOpts {
                propagation: Some("Foreground".into()),
                uid: Some(meta_str(job, "uid").to_string()),
                ..Default::default()
            };
            let _ = shared.delete(jobs_id(), ns, name, &opts);
            return None;
        }
        return (due - now_t).to_std().ok();
    }
    let indexed = spec("completionMode").and_then(Value::as_str) == Some("Indexed");
    let completions = spec("completions").and_then(Value::as_i64).unwrap_or(1);
    let parallelism = spec("parallelism").and_then(Value::as_i64).unwrap_or(1);
    let backoff = spec("backoffLimit").and_then(Value::as_i64).unwrap_or(6);
    let replace_terminating =
        spec("podReplacementPolicy").and_then(Value::as_str) != Some("Failed");
    let mut succeeded = status.get("succeeded").and_then(Value::as_i64).unwrap_or(0);
    let mut failed = status.get("failed").and_then(Value::as_i64).unwrap_or(0);
    let mut done = parse_ranges(
        status
            .get("completedIndexes")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let mut failure: Option<(String, String)> =
        has_condition(&conditions, "FailureTarget").map(|c| {
            let s = |k: &str| {
                c.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (s("reason"), s("message"))
        });
    let present: HashSet<&str> = owned.iter().map(|p| meta_str(p, "uid")).collect();
    for pod in owned {
        let puid = meta_str(pod, "uid");
        if mem.counted.contains(puid) {
            continue;
        }
        match phase(pod) {
            "Succeeded" => {
                mem.counted.insert(puid.to_string());
                succeeded += 1;
                if let Some(i) = index_of(pod) {
                    done.insert(i);
                }
            }
            "Failed" => {
                mem.counted.insert(puid.to_string());
                match policy_action(job, pod) {
                    Action::Ignore => {}
                    Action::FailJob(message) => {
                        failed += 1;
                        failure.get_or_insert(("PodFailurePolicy".into(), message));
                    }
                    Action::Count => failed += 1,
                }
            }
            _ => {
                mem.seen.insert(puid.to_string());
            }
        }
    }
    // pods removed before they finished count as failed
    let vanished: Vec<String> = mem
        .seen
        .iter()
        .filter(|u| !present.contains(u.as_str()) && !mem.counted.contains(*u))
        .cloned()
        .collect();
    for u in vanished {
        failed += 1;
        mem.counted.insert(u);
    }
    mem.seen.retain(|u| present.contains(u.as_str()));
    if failure.is_none() && failed > backoff {
        failure = Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into(),
        ));
    }
    let mut due: Option<Duration> = None;
    let mut start = status
        .get("startTime")
        .and_then(Value::as_str)
        .map(str::to_string);
    if failure.is_none()
        && let (Some(ads), Some(started)) = (
            spec("activeDeadlineSeconds").and_then(Value::as_i64),
            start.as_deref().and_then(parse_time),
        )
    {
        let deadline = started + chrono::Duration::seconds(ads);
        if now_t >= deadline {
            failure = Some((
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into(),
            ));
        } else {
            due = (deadline - now_t).to_std().ok();
        }
    }
    let unfinished: Vec<&&Arc<Value>> = owned.iter().filter(|p| !is_terminal(p)).collect();
    let complete = if indexed {
        (0..completions).all(|i| done.contains(&i))
    } else {
        succeeded >= completions
    };
    let suspended = spec("suspend") == Some(&json!(true));
    let mut completion_time = status.get("completionTime").cloned();
    if let Some((reason, message)) = &failure {
        set_condition(&mut conditions, "FailureTarget", "True", reason, message);
        for pod in unfinished.iter().filter(|p| !terminating(p)) {
            delete_pod(shared, pod);
        }
        if unfinished.is_empty() {
            set_condition(&mut conditions, "Failed", "True", reason, message);
        }
    } else if complete {
        set_condition(
            &mut conditions,
            "SuccessCriteriaMet",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        for pod in unfinished.iter().filter(|p| !terminating(p)) {
            delete_pod(shared, pod);
        }
        if unfinished.is_empty() {
            set_condition(
                &mut conditions,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
            completion_time.get_or_insert_with(|| json!(now()));
        }
    } else if suspended {
        for pod in unfinished.iter().filter(|p| !terminating(p)) {
            delete_pod(shared, pod);
        }
        set_condition(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
        );
        start = None;
        due = None;
    } else {
        if has_condition(&conditions, "Suspended").is_some() {
            set_condition(
                &mut conditions,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
            );
        }
        if start.is_none() {
            start = Some(now());
            if let Some(ads) = spec("activeDeadlineSeconds").and_then(Value::as_i64) {
                due = u64::try_from(ads).ok().map(Duration::from_secs);
            }
        }
        // pods still holding a slot: unfinished, terminating ones too unless replaced at once
        let holding: Vec<&&&Arc<Value>> = unfinished
            .iter()
            .filter(|p| !replace_terminating || !terminating(p))
            .collect();
        if indexed {
            let busy: HashSet<i64> = holding.iter().filter_map(|p| index_of(p)).collect();
            let mut room = parallelism - holding.len() as i64;
            for i in 0..completions {
                if room <= 0 {
                    break;
                }
                if !done.contains(&i) && !busy.contains(&i) {
                    create_pod(shared, job, Some(i));
                    room -= 1;
                }
            }
        } else {
            let want = parallelism.min(completions - succeeded) - holding.len() as i64;
            for _ in 0..want.max(0) {
                create_pod(shared, job, None);
            }
        }
    }
    let count = |f: &dyn Fn(&Value) -> bool| owned.iter().filter(|p| f(p)).count();
    let mut new_status = Map::new();
    if let Some(s) = &start {
        new_status.insert("startTime".into(), json!(s));
    }
    if let Some(t) = completion_time {
        new_status.insert("completionTime".into(), t);
    }
    let active = count(&|p| !is_terminal(p) && !terminating(p));
    let ready = count(&|p| {
        phase(p) == "Running"
            && !terminating(p)
            && p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
    });
    let term = count(&|p| !is_terminal(p) && terminating(p));
    new_status.insert("active".into(), json!(active));
    new_status.insert("ready".into(), json!(ready));
    new_status.insert("terminating".into(), json!(term));
    if succeeded > 0 {
        new_status.insert("succeeded".into(), json!(succeeded));
    }
    if failed > 0 {
        new_status.insert("failed".into(), json!(failed));
    }
    if indexed && !done.is_empty() {
        new_status.insert("completedIndexes".into(), json!(index_ranges(&done)));
    }
    new_status.insert("uncountedTerminatedPods".into(), json!({}));
    if !conditions.is_empty() {
        new_status.insert("conditions".into(), json!(conditions));
    }
    let new_status = Value::Object(new_status);
    if new_status != status {
        let mut updated = job.clone();
        if let Value::Object(m) = &mut updated {
            m.insert("status".into(), new_status);
        }
        let _ = shared.update(jobs_id(), ns, name, updated, true, &WriteOpts::default());
    }
    due
}

/// Creates one pod of `job` (the completion `index` of an Indexed Job), as the controller does.
fn create_pod(shared: &Arc<Shared>, job: &Value, index: Option<i64>) {
    let (ns, name) = (meta_str(job, "namespace"), meta_str(job, "name"));
    let template = job.pointer("/spec/template").cloned().unwrap_or_default();
    let mut meta = template
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let generate = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    meta.insert("generateName".into(), json!(generate));
    meta.remove("name");
    meta.insert("namespace".into(), json!(ns));
    meta.insert(
        "ownerReferences".into(),
        json!([{
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": meta_str(job, "uid"),
            "controller": true,
            "blockOwnerDeletion": true,
        }]),
    );
    if let Some(i) = index {
        obj_mut(&mut meta, "annotations").insert(COMPLETION_INDEX.into(), json!(i.to_string()));
        obj_mut(&mut meta, "labels").insert(COMPLETION_INDEX.into(), json!(i.to_string()));
        if let Value::Object(s) = &mut spec {
            set_default(s, "hostname", json!(format!("{name}-{i}")));
            for list in ["initContainers", "containers"] {
                if let Some(Value::Array(cs)) = s.get_mut(list) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        let env = c.entry("env").or_insert_with(|| json!([]));
                        if let Value::Array(env) = env
                            && !env.iter().any(|e| e["name"] == "JOB_COMPLETION_INDEX")
                        {
                            env.push(json!({
                                "name": "JOB_COMPLETION_INDEX",
                                "valueFrom": {"fieldRef": {
                                    "apiVersion": "v1",
                                    "fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']"),
                                }},
                            }));
                        }
                    }
                }
            }
        }
    }
    let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
    if let Err(error) = shared.create(pods_id(), ns, body, &WriteOpts::default()) {
        tracing::debug!(job = name, ?error, "job controller: cannot create pod");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_written_as_ranges() {
        for (set, text) in [
            (vec![], ""),
            (vec![0], "0"),
            (vec![0, 1, 2], "0-2"),
            (vec![0, 2, 3, 4, 7], "0,2-4,7"),
        ] {
            let set: BTreeSet<i64> = set.into_iter().collect();
            assert_eq!(index_ranges(&set), text);
            assert_eq!(parse_ranges(text), set);
        }
    }

    #[test]
    fn pod_failure_policy_actions() {
        let job = json!({"spec": {"podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
        ]}}});
        let pod = |code: i64, disrupted: bool| {
            let mut conditions = vec![json!({"type": "Ready", "status": "False"})];
            if disrupted {
                conditions.push(json!({"type": "DisruptionTarget", "status": "True"}));
            }
            json!({
                "metadata": {"namespace": "ns", "name": "p"},
                "status": {"phase": "Failed", "conditions": conditions,
                    "containerStatuses": [{"name": "task", "state": {"terminated": {"exitCode": code}}}]},
            })
        };
        assert_eq!(policy_action(&job, &pod(137, true)), Action::Ignore);
        assert_eq!(
            policy_action(&job, &pod(1, false)),
            Action::FailJob(
                "Container task for pod ns/p failed with exit code 1 matching FailJob rule at index 1"
                    .into()
            )
        );
        // no exit code: nothing matches, counted against backoffLimit
        assert_eq!(policy_action(&job, &pod(0, false)), Action::Count);
        assert_eq!(policy_action(&json!({}), &pod(1, false)), Action::Count);
    }
}
