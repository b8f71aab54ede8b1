//! Defaults the real kube-apiserver always applies while decoding (`SetDefaults_*` in
//! `pkg/apis/*/v1/defaults.go`) or in its registry strategies, limited to the ones clients
//! read back. Admission-plugin defaults (service account, priority, default tolerations) are
//! deliberately NOT applied, because the double runs no admission plugins.
//!
//! Applied:
//! - Pod spec (also in a Deployment's `spec.template.spec`): `restartPolicy: Always`,
//!   `terminationGracePeriodSeconds: 30`, `dnsPolicy: ClusterFirst`,
//!   `schedulerName: default-scheduler`, `securityContext: {}`, `enableServiceLinks: true`;
//!   each container: `terminationMessagePath: /dev/termination-log`,
//!   `terminationMessagePolicy: File`, `imagePullPolicy` (`Always` for `:latest`/untagged,
//!   else `IfNotPresent`), `resources: {}`, `ports[].protocol: TCP`, requests copied from limits
//!   when absent; configMap/secret volume `defaultMode: 420`.
//! - Pod create: `status: {phase: Pending, qosClass}`.
//! - Deployment: `replicas: 1`, RollingUpdate 25%/25%, `revisionHistoryLimit: 10`,
//!   `progressDeadlineSeconds: 600`; create resets `status` to `{}`.
//! - Service: `type: ClusterIP`, `sessionAffinity: None`, `ports[].protocol: TCP`,
//!   `ports[].targetPort = port`, `internalTrafficPolicy: Cluster`, an allocated `clusterIP`
//!   (10.96.0.0/16), `ipFamilies: [IPv4]`, `ipFamilyPolicy: SingleStack`,
//!   `status.loadBalancer: {}`.
//! - Namespace: `spec.finalizers: [kubernetes]`, `status.phase: Active`, label
//!   `kubernetes.io/metadata.name`.
//! - Secret: `type: Opaque`.

use serde_json::{Map, Value, json};

use super::{quantity, resources::ResourceDef};

fn obj_mut<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = parent
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(map) => map,
        _ => unreachable!("slot was just made an object"),
    }
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// Applies the always-on defaults of `res` to `obj` (create and update alike);
/// `next_cluster_ip` allocates service IPs on create.
pub(crate) fn apply(
    res: &ResourceDef,
    obj: &mut Value,
    creating: bool,
    next_cluster_ip: &mut dyn FnMut() -> String,
) {
    let Value::Object(root) = obj else { return };
    match (res.group, res.plural) {
        ("", "pods") => {
            if let Some(Value::Object(spec)) = root.get_mut("spec") {
                pod_spec(spec);
            }
            if creating {
                let qos = qos_class(root.get("spec"));
                root.insert(
                    "status".into(),
                    json!({"phase": "Pending", "qosClass": qos}),
                );
            }
        }
        ("apps", "deployments") => {
            let spec = obj_mut(root, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = obj_mut(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = obj_mut(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
            if let Some(Value::Object(template)) = spec.get_mut("template")
                && let Some(Value::Object(pod)) = template.get_mut("spec")
            {
                pod_spec(pod);
            }
            if creating {
                root.insert("status".into(), json!({}));
            }
        }
        ("batch", "jobs") => super::job_controller::defaults(root, creating),
        ("", "services") => {
            let spec = obj_mut(root, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            let headless_external = spec.get("type") == Some(&json!("ExternalName"));
            if !headless_external {
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                if creating && spec.get("clusterIP").is_none_or(Value::is_null) {
                    let ip = next_cluster_ip();
                    spec.insert("clusterIP".into(), json!(ip));
                }
                if let Some(ip) = spec.get("clusterIP").cloned() {
                    set_default(spec, "clusterIPs", json!([ip]));
                }
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(port, "protocol", json!("TCP"));
                    if let Some(p) = port.get("port").cloned() {
                        set_default(port, "targetPort", p);
                    }
                }
            }
            if creating {
                root.insert("status".into(), json!({"loadBalancer": {}}));
            }
        }
        ("", "namespaces") => {
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(name) = name {
                let labels = obj_mut(obj_mut(root, "metadata"), "labels");
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if creating {
                let spec = obj_mut(root, "spec");
                spec.insert("finalizers".into(), json!(["kubernetes"]));
                root.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        ("", "secrets") => set_default(root, "type", json!("Opaque")),
        _ => {}
    }
}

pub(crate) fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            for source in ["configMap", "secret"] {
                if let Some(Value::Object(src)) = v.get_mut(source) {
                    set_default(src, "defaultMode", json!(420));
                }
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let policy = if image_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    let resources = obj_mut(c, "resources");
    if let Some(Value::Object(limits)) = resources.get("limits").cloned() {
        let requests = obj_mut(resources, "requests");
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// `:latest` or no tag (and no digest) pulls `Always`, as the real defaulting does.
fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// `Guaranteed`, `Burstable` or `BestEffort`, computed like `qos.GetPodQOS` (cpu/memory).
pub(crate) fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.and_then(|s| s.get(*k)).and_then(Value::as_array))
        .flatten()
        .collect();
    let amount = |c: &Value, kind: &str, res: &str| {
        c.pointer(&format!("/resources/{kind}/{res}"))
            .and_then(Value::as_str)
            .and_then(|q| quantity::parse(q).ok())
            .filter(|v| *v != 0.0)
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        for res in ["cpu", "memory"] {
            let request = amount(c, "requests", res);
            let limit = amount(c, "limits", res);
            if request.is_some() || limit.is_some() {
                any = true;
            }
            match (request, limit) {
                (Some(r), Some(l)) if r == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        let be = json!({"containers": [{"name": "a"}]});
        assert_eq!(qos_class(Some(&be)), "BestEffort");
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(Some(&g)), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(Some(&b)), "Burstable");
    }

    #[test]
    fn pull_policy() {
        assert!(image_is_latest("busybox"));
        assert!(image_is_latest("reg:5000/busybox:latest"));
        assert!(image_is_latest("reg:5000/busybox"));
        assert!(!image_is_latest("reg:5000/busybox:2"));
        assert!(!image_is_latest("busybox:1.36"));
        assert!(!image_is_latest("busybox@sha256:abc"));
    }
}
