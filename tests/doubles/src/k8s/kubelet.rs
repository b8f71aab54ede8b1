//! The double's stand-in for the scheduler and the kubelet: writes the pod status shapes the
//! real components write (phase, conditions, containerStatuses with waiting/running/terminated
//! states and restart handling per restartPolicy), and serves container logs
//! (`pods/{name}/log`, with `container`, `tailLines`, `limitBytes`, `follow`).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    deletion::pods_id,
    resources::def,
    state::{Shared, now},
    status::ApiError,
    store::rv_of,
};

/// The node name the emulated scheduler binds pods to.
pub const NODE_NAME: &str = "kube-double-node";
const HOST_IP: &str = "10.0.0.10";

/// What a container is doing, as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerState {
    Running,
    Waiting { reason: String, message: String },
    Terminated { exit_code: i32, reason: String },
}

/// A stable 64-hex-digit id derived from `seed` (container IDs, image digests).
pub(crate) fn hex64(seed: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    (0u8..4)
        .map(|salt| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (salt, seed).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// `busybox` → `docker.io/library/busybox:latest`, as containerd reports images.
fn normalize_image(image: &str) -> String {
    let (first, _) = image.split_once('/').unwrap_or(("", image));
    let has_registry = first.contains('.') || first.contains(':') || first == "localhost";
    let mut full = if has_registry {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !full.contains('@') {
        full.push_str(":latest");
    }
    full
}

pub(crate) fn condition(
    ty: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let mut c = json!({
        "type": ty,
        "status": if status { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now(),
    });
    if let Value::Object(m) = &mut c {
        if let Some(r) = reason {
            m.insert("reason".into(), json!(r));
        }
        if let Some(msg) = message {
            m.insert("message".into(), json!(msg));
        }
    }
    c
}

/// Applies `state` to every container of the pod and recomputes phase and conditions.
pub(crate) fn kubelet_status(pod: &Value, state: &ContainerState) -> Value {
    let stamp = now();
    let mut status = pod.get("status").cloned().unwrap_or_else(|| json!({}));
    let restart_policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (ns, name) = (
        pod.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        pod.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    let previous: Vec<Value> = status
        .get("containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let failed = matches!(state, ContainerState::Terminated { exit_code, .. } if *exit_code != 0);
    let restarts = failed && restart_policy != "Never"
        || matches!(state, ContainerState::Terminated { .. }) && restart_policy == "Always";
    let mut statuses = Vec::new();
    let mut names = Vec::new();
    for c in &containers {
        let cname = c.get("name").and_then(Value::as_str).unwrap_or_default();
        names.push(cname.to_string());
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let full_image = normalize_image(image);
        let repo = full_image
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or(full_image.as_str(), |(r, _)| r);
        let image_id = format!("{repo}@sha256:{}", hex64(&full_image));
        let container_id = format!("containerd://{}", hex64(&format!("{uid}/{cname}")));
        let prev = previous
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(cname));
        let mut restart_count = prev
            .and_then(|p| p.get("restartCount"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let started_at = prev
            .and_then(|p| p.pointer("/state/running/startedAt"))
            .cloned()
            .unwrap_or_else(|| json!(stamp));
        let pulled = !matches!(state, ContainerState::Waiting { reason, .. }
            if reason == "ImagePullBackOff" || reason == "ErrImagePull" || reason == "InvalidImageName");
        let mut last_state = prev
            .and_then(|p| p.get("lastState"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let (state_json, ready, started) = match state {
            ContainerState::Running => (json!({"running": {"startedAt": started_at}}), true, true),
            ContainerState::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if !message.is_empty()
                    && let Value::Object(m) = &mut w
                {
                    m.insert("message".into(), json!(message));
                }
                (json!({"waiting": w}), false, false)
            }
            ContainerState::Terminated { exit_code, reason } => {
                let terminated = json!({"terminated": {
                    "exitCode": exit_code, "reason": reason,
                    "startedAt": started_at, "finishedAt": stamp, "containerID": container_id}});
                if restarts {
                    restart_count += 1;
                    last_state = terminated;
                    let message = format!(
                        "back-off 10s restarting failed container={cname} pod={name}_{ns}({uid})"
                    );
                    (
                        json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}}),
                        false,
                        false,
                    )
                } else {
                    (terminated, false, false)
                }
            }
        };
        let mut cs = json!({
            "name": cname,
            "state": state_json,
            "lastState": last_state,
            "ready": ready,
            "restartCount": restart_count,
            "image": if pulled { full_image.clone() } else { image.to_string() },
            "imageID": if pulled { image_id } else { String::new() },
            "started": started,
        });
        if pulled && let Value::Object(m) = &mut cs {
            m.insert("containerID".into(), json!(container_id));
        }
        statuses.push(cs);
    }
    let phase = match state {
        ContainerState::Running => "Running",
        ContainerState::Waiting { .. } => "Pending",
        ContainerState::Terminated { .. } if restarts => "Running",
        ContainerState::Terminated { exit_code: 0, .. } => "Succeeded",
        ContainerState::Terminated { .. } => "Failed",
    };
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    let conditions = match phase {
        "Succeeded" | "Failed" => {
            let reason = if phase == "Succeeded" {
                "PodCompleted"
            } else {
                "PodFailed"
            };
            vec![
                condition("PodReadyToStartContainers", false, None, None),
                condition("Initialized", true, Some("PodCompleted"), None),
                condition("Ready", false, Some(reason), None),
                condition("ContainersReady", false, Some(reason), None),
                condition("PodScheduled", true, None, None),
            ]
        }
        _ => {
            let ready = matches!(state, ContainerState::Running);
            let (r, m) = if ready {
                (None, None)
            } else {
                (Some("ContainersNotReady"), Some(unready.as_str()))
            };
            vec![
                condition("PodReadyToStartContainers", true, None, None),
                condition("Initialized", true, None, None),
                condition("Ready", ready, r, m),
                condition("ContainersReady", ready, r, m),
                condition("PodScheduled", true, None, None),
            ]
        }
    };
    if let Value::Object(m) = &mut status {
        let pod_ip = pod_ip(pod);
        m.insert("phase".into(), json!(phase));
        m.insert("conditions".into(), json!(conditions));
        m.insert("hostIP".into(), json!(HOST_IP));
        m.insert("hostIPs".into(), json!([{"ip": HOST_IP}]));
        m.insert("podIP".into(), json!(pod_ip));
        m.insert("podIPs".into(), json!([{"ip": pod_ip}]));
        if !m.contains_key("startTime") {
            m.insert("startTime".into(), json!(stamp));
        }
        m.insert("containerStatuses".into(), json!(statuses));
    }
    status
}

fn pod_ip(pod: &Value) -> String {
    if let Some(ip) = pod.pointer("/status/podIP").and_then(Value::as_str) {
        return ip.to_string();
    }
    let n = rv_of(pod);
    format!("10.244.{}.{}", (n >> 8) & 0xff, (n & 0xff).max(2))
}

impl Shared {
    /// Rewrites a pod (scheduler binding + kubelet status) outside the API's write rules, as
    /// the real components do through `pods/binding` and `pods/status`.
    pub(crate) fn kubelet_write(
        &self,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Arc<Value>, ApiError> {
        let id = pods_id();
        let mut store = self.store.lock();
        let Some(pod) = store.get(id, ns, name).cloned() else {
            return Err(ApiError::not_found(def(id), name));
        };
        let mut pod = (*pod).clone();
        f(&mut pod);
        let written = store.put(id, pod);
        let rv = store.rv;
        drop(store);
        self.notify(rv);
        Ok(written)
    }

    /// Binds the pod to the node (if unbound) and sets every container to `state`.
    pub(crate) fn set_container_state(
        &self,
        ns: &str,
        name: &str,
        state: ContainerState,
    ) -> Result<Arc<Value>, ApiError> {
        self.kubelet_write(ns, name, |pod| {
            if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
                && spec
                    .get("nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
            {
                spec.insert("nodeName".into(), json!(NODE_NAME));
            }
            let status = kubelet_status(pod, &state);
            if let Value::Object(m) = pod {
                m.insert("status".into(), status);
            }
        })
    }

    /// A disruption (preemption, eviction, node drain): the `DisruptionTarget` condition the
    /// control plane adds, then the kubelet kills the containers (exit 137): `Failed`.
    pub(crate) fn set_disrupted(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let state = ContainerState::Terminated {
            exit_code: 137,
            reason: "Error".into(),
        };
        self.kubelet_write(ns, name, |pod| {
            let mut status = kubelet_status(pod, &state);
            if let Some(Value::Array(conds)) = status.get_mut("conditions") {
                conds.push(condition(
                    "DisruptionTarget",
                    true,
                    Some(reason),
                    Some(message),
                ));
            }
            if let Value::Object(m) = pod {
                m.insert("status".into(), status);
            }
        })
    }

    /// The scheduler's `PodScheduled=False, reason Unschedulable` verdict.
    pub(crate) fn set_unschedulable(
        &self,
        ns: &str,
        name: &str,
        message: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.kubelet_write(ns, name, |pod| {
            let cond = condition("PodScheduled", false, Some("Unschedulable"), Some(message));
            if let Value::Object(m) = pod {
                let status = m.entry("status".to_string()).or_insert_with(|| json!({}));
                if let Value::Object(s) = status {
                    s.insert("phase".into(), json!("Pending"));
                    s.insert("conditions".into(), json!([cond]));
                }
            }
        })
    }

    /// Replaces (or appends to) a container's log; the container defaults to the pod's first.
    pub(crate) fn write_log(
        &self,
        ns: &str,
        pod: &str,
        container: Option<&str>,
        text: &str,
        append: bool,
    ) -> Result<(), ApiError> {
        let container = match container {
            Some(c) => c.to_string(),
            None => {
                let obj = self.get(pods_id(), ns, pod)?;
                obj.pointer("/spec/containers/0/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            }
        };
        {
            let mut logs = self.logs.lock();
            let entry = logs
                .entry((ns.to_string(), pod.to_string(), container))
                .or_default();
            if append {
                entry.push_str(text);
            } else {
                *entry = text.to_string();
            }
        }
        self.poke();
        Ok(())
    }
}

/// Query options of `pods/log`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogOpts {
    pub container: Option<String>,
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
}

fn waiting_message(reason: &str) -> String {
    match reason {
        "ImagePullBackOff" => "trying and failing to pull image".to_string(),
        "ErrImagePull" => "image can't be pulled".to_string(),
        other => other.to_string(),
    }
}

/// Checks a log request the way the kubelet/API server do and returns the container name.
fn log_container(pod: &Value, opts: &LogOpts) -> Result<(String, bool), ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let container = match &opts.container {
        Some(c) if names.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {pod_name}"
            )));
        }
        None if names.len() == 1 => names[0].to_string(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let status = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()))
        });
    let has_run = status.is_some_and(|s| {
        s.pointer("/state/running").is_some()
            || s.pointer("/state/terminated").is_some()
            || s.pointer("/lastState/terminated").is_some()
    });
    if !has_run {
        let reason = status
            .and_then(|s| s.pointer("/state/waiting/reason"))
            .and_then(Value::as_str)
            .unwrap_or("ContainerCreating");
        return Err(ApiError::bad_request(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {}",
            waiting_message(reason)
        )));
    }
    let running = status.is_some_and(|s| s.pointer("/state/terminated").is_none());
    Ok((container, running))
}

fn select_text(text: &str, opts: &LogOpts) -> String {
    let mut out = match opts.tail_lines {
        Some(n) => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
        None => text.to_string(),
    };
    if let Some(limit) = opts.limit_bytes
        && out.len() > limit
    {
        let mut cut = limit;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Serves `pods/{name}/log`: the text now, or (follow) a stream that ends when the container
/// terminates, the pod goes away or the double stops.
pub(crate) fn logs(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    opts: LogOpts,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let pod = shared.get(pods_id(), ns, name)?;
    let (container, running) = log_container(&pod, &opts)?;
    let key = (ns.to_string(), name.to_string(), container);
    let text = shared.logs.lock().get(&key).cloned().unwrap_or_default();
    let first = select_text(&text, &opts);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let shared = shared.clone();
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let follow = opts.follow && running;
    shared.rt.clone().spawn(async move {
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        if !follow {
            return;
        }
        let mut sent = text.len();
        let mut changes = shared.changes.subscribe();
        let mut stop = shared.stop.subscribe();
        loop {
            if *stop.borrow_and_update() {
                return;
            }
            let current = shared.logs.lock().get(&key).cloned().unwrap_or_default();
            if current.len() > sent {
                let chunk = current[sent..].to_string();
                sent = current.len();
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
            let alive = shared.get(pods_id(), &key.0, &key.1).ok().is_some_and(|p| {
                p.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str())
                    && log_container(&p, &opts).is_ok_and(|(_, running)| running)
            });
            if !alive {
                return;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tx.closed() => return,
                r = changes.changed() => if r.is_err() { return },
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_normalize_like_containerd() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize_image("org/app:1"), "docker.io/org/app:1");
        assert_eq!(normalize_image("reg:5000/app"), "reg:5000/app:latest");
        assert_eq!(normalize_image("ghcr.io/a/b:2"), "ghcr.io/a/b:2");
    }

    #[test]
    fn oom_with_restart_always_crash_loops() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}});
        let status = kubelet_status(
            &pod,
            &ContainerState::Terminated {
                exit_code: 137,
                reason: "OOMKilled".into(),
            },
        );
        assert_eq!(status["phase"], json!("Running"));
        let cs = &status["containerStatuses"][0];
        assert_eq!(cs["restartCount"], json!(1));
        assert_eq!(cs["lastState"]["terminated"]["reason"], json!("OOMKilled"));
        assert_eq!(cs["state"]["waiting"]["reason"], json!("CrashLoopBackOff"));
    }
}
