//! The one list of the ClearML agent Helm charts' keys: every key of the open-source chart's
//! `values.yaml` (clearml/clearml-helm-charts, `charts/clearml-agent`, chart 5.3.2) and every
//! Enterprise agent key ClearML documents, each with what this agent does with it. The schema,
//! the README's "Coming from the Helm chart" table and the chart fixtures are checked against it
//! (tests below), so a chart key can be neither silently dropped nor refused as unknown.

/// Which chart a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// The open-source chart (`clearml-agent` 5.3.2).
    OpenSource,
    /// The Enterprise agent chart (keys from ClearML's documentation).
    Enterprise,
}

/// What this agent does with a chart key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Honoured under the chart's name, with the chart's meaning.
    Honoured,
    /// Honoured under the chart's name; this agent's own name for the setting is the one given.
    Renamed(&'static str),
    /// Accepted and reported ([`super::Values::notices`]): why it has no effect here.
    NotApplicable(&'static str),
}

/// One chart key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartKey {
    /// Dotted path (`<name>` stands for a queue name).
    pub path: &'static str,
    /// The chart it comes from.
    pub chart: Chart,
    /// What this agent does with it.
    pub disposition: Disposition,
    /// A value of the key, as YAML (flow style), that the schema accepts.
    pub example: &'static str,
}

/// Every chart key, in the order of the open-source `values.yaml`, then the Enterprise keys.
pub const CHART_KEYS: &[ChartKey] = &[
    ChartKey {
        path: "global.imageRegistry",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "registry.example.com",
    },
    ChartKey {
        path: "imageCredentials.enabled",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "false",
    },
    ChartKey {
        path: "imageCredentials.existingSecret",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "regcred",
    },
    ChartKey {
        path: "imageCredentials.registry",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "registry.example.com",
    },
    ChartKey {
        path: "imageCredentials.username",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "someone",
    },
    ChartKey {
        path: "imageCredentials.password",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "pwd",
    },
    ChartKey {
        path: "imageCredentials.email",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "someone@example.com",
    },
    ChartKey {
        path: "clearml.existingAgentk8sglueSecret",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "my-clearml-credentials",
    },
    ChartKey {
        path: "clearml.agentk8sglueKey",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "ACCESSKEY",
    },
    ChartKey {
        path: "clearml.agentk8sglueSecret",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "SECRETKEY",
    },
    ChartKey {
        path: "clearml.existingClearmlConfigSecret",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "my-clearml-conf",
    },
    ChartKey {
        path: "clearml.clearmlConfig",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "\"sdk { }\"",
    },
    ChartKey {
        path: "agentk8sglue.image.registry",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "registry.example.com",
    },
    ChartKey {
        path: "agentk8sglue.image.repository",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "mirror/clearml-k8s-agent",
    },
    ChartKey {
        path: "agentk8sglue.image.tag",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "\"1.0.0\"",
    },
    ChartKey {
        path: "agentk8sglue.replicaCount",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "2",
    },
    ChartKey {
        path: "agentk8sglue.resources",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{limits: {memory: 256Mi}}",
    },
    ChartKey {
        path: "agentk8sglue.initContainers.resources",
        chart: Chart::OpenSource,
        disposition: Disposition::NotApplicable(
            "the chart's init container waited for the ClearML servers; this agent has none (it retries itself and is not ready until ClearML answers)",
        ),
        example: "{limits: {memory: 64Mi}}",
    },
    ChartKey {
        path: "agentk8sglue.serviceAccountAnnotations",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{eks.amazonaws.com/role-arn: \"arn:aws:iam::1:role/agent\"}",
    },
    ChartKey {
        path: "agentk8sglue.serviceExistingAccountName",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "my-agent-sa",
    },
    ChartKey {
        path: "agentk8sglue.clearmlcheckCertificate",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "false",
    },
    ChartKey {
        path: "agentk8sglue.apiServerUrlReference",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "https://api.example.com",
    },
    ChartKey {
        path: "agentk8sglue.fileServerUrlReference",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "https://files.example.com",
    },
    ChartKey {
        path: "agentk8sglue.webServerUrlReference",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "https://app.example.com",
    },
    ChartKey {
        path: "agentk8sglue.defaultContainerImage",
        chart: Chart::OpenSource,
        disposition: Disposition::Renamed("agentk8sglue.defaultImage"),
        example: "ubuntu:22.04",
    },
    ChartKey {
        path: "agentk8sglue.queue",
        chart: Chart::OpenSource,
        disposition: Disposition::Renamed("agentk8sglue.queues"),
        example: "default",
    },
    ChartKey {
        path: "agentk8sglue.createQueueIfNotExists",
        chart: Chart::OpenSource,
        disposition: Disposition::Renamed("agentk8sglue.createQueues"),
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.labels",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{team: ml}",
    },
    ChartKey {
        path: "agentk8sglue.annotations",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{example.com/owner: ml}",
    },
    ChartKey {
        path: "agentk8sglue.extraEnvs",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: HTTPS_PROXY, value: \"http://proxy:3128\"}]",
    },
    ChartKey {
        path: "agentk8sglue.podSecurityContext",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{fsGroup: 1001}",
    },
    ChartKey {
        path: "agentk8sglue.containerSecurityContext",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{runAsUser: 1001}",
    },
    ChartKey {
        path: "agentk8sglue.additionalClusterRoleBindings",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[view]",
    },
    ChartKey {
        path: "agentk8sglue.additionalRoleBindings",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[privileged]",
    },
    ChartKey {
        path: "agentk8sglue.nodeSelector",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{fleet: agent-nodes}",
    },
    ChartKey {
        path: "agentk8sglue.tolerations",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{key: dedicated, operator: Exists, effect: NoSchedule}]",
    },
    ChartKey {
        path: "agentk8sglue.affinity",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: fleet, operator: Exists}]}]}}}",
    },
    ChartKey {
        path: "agentk8sglue.volumes",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: data, emptyDir: {}}]",
    },
    ChartKey {
        path: "agentk8sglue.volumeMounts",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: data, mountPath: /data}]",
    },
    ChartKey {
        path: "agentk8sglue.fileMounts",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: integration.py, folderPath: /mnt/python, fileContent: \"print(1)\"}]",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.labels",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{team: ml}",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.annotations",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{example.com/owner: ml}",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.initContainers",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: init, image: \"busybox:1.35\"}]",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.schedulerName",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "my-scheduler",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.volumes",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: data, emptyDir: {}}]",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.volumeMounts",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: data, mountPath: /data}]",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.fileMounts",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: mounted-file.txt, folderPath: /mnt, fileContent: \"test\"}]",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.env",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{name: CLEARML_AGENT_GIT_USER, value: me}]",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.resources",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{limits: {nvidia.com/gpu: 1}}",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.priorityClassName",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "high",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.nodeSelector",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{fleet: gpu-nodes}",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.tolerations",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.affinity",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: gpu, operator: Exists}]}]}}}",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.podSecurityContext",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{fsGroup: 1001}",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.containerSecurityContext",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "{runAsUser: 1001}",
    },
    ChartKey {
        path: "agentk8sglue.basePodTemplate.hostAliases",
        chart: Chart::OpenSource,
        disposition: Disposition::Honoured,
        example: "[{ip: 127.0.0.1, hostnames: [foo.local]}]",
    },
    ChartKey {
        path: "sessions.portModeEnabled",
        chart: Chart::OpenSource,
        disposition: Disposition::NotApplicable(
            "clearml-session ports mode (a Service per interactive session) is not run by this agent",
        ),
        example: "true",
    },
    ChartKey {
        path: "sessions.svcAnnotations",
        chart: Chart::OpenSource,
        disposition: Disposition::NotApplicable(
            "annotations of the ports-mode session Services, which this agent does not make",
        ),
        example: "{a: b}",
    },
    ChartKey {
        path: "sessions.svcType",
        chart: Chart::OpenSource,
        disposition: Disposition::NotApplicable(
            "type of the ports-mode session Services, which this agent does not make",
        ),
        example: "NodePort",
    },
    ChartKey {
        path: "sessions.externalIP",
        chart: Chart::OpenSource,
        disposition: Disposition::NotApplicable(
            "address clients reached ports-mode sessions at; this agent has no ports mode",
        ),
        example: "0.0.0.0",
    },
    ChartKey {
        path: "sessions.startingPort",
        chart: Chart::OpenSource,
        disposition: Disposition::NotApplicable(
            "first node port of the ports-mode session Services, which this agent does not make",
        ),
        example: "30000",
    },
    ChartKey {
        path: "sessions.maxServices",
        chart: Chart::OpenSource,
        disposition: Disposition::NotApplicable(
            "most ports-mode session Services, which this agent does not make",
        ),
        example: "20",
    },
    ChartKey {
        path: "agentk8sglue.queues.<name>.templateOverrides",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "{labels: {team: ml}}",
    },
    ChartKey {
        path: "agentk8sglue.queues.<name>.queueSettings",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "{maxPods: 2}",
    },
    ChartKey {
        path: "agentk8sglue.createQueues",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.dashboardReportMaxGpu",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "8",
    },
    ChartKey {
        path: "agentk8sglue.maxPods",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "10",
    },
    ChartKey {
        path: "agentk8sglue.customBashScript",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "\"echo hello\"",
    },
    ChartKey {
        path: "agentk8sglue.containerCustomBashScript",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "\"clearml_agent execute --id {task_id}\"",
    },
    ChartKey {
        path: "agentk8sglue.airGappedSupport",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.queuePollFrequencySeconds",
        chart: Chart::Enterprise,
        disposition: Disposition::Renamed("agentk8sglue.pollIntervalSeconds"),
        example: "5",
    },
    ChartKey {
        path: "agentk8sglue.statusReportFrequencySeconds",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "30",
    },
    ChartKey {
        path: "agentk8sglue.completedPodDeletionDelayMinutes",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "5",
    },
    ChartKey {
        path: "agentk8sglue.workerIdOverride",
        chart: Chart::Enterprise,
        disposition: Disposition::Renamed("agentk8sglue.workerId"),
        example: "my-agent",
    },
    ChartKey {
        path: "agentk8sglue.taskWorkerIdOverride",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "\"task-{worker_id_parts[0]}\"",
    },
    ChartKey {
        path: "agentk8sglue.debugMode",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.multiNode.enabled",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.orchestrationDashboard",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "{gpu: {reportMax: 8}, reportSeconds: 60}",
    },
    ChartKey {
        path: "agentk8sglue.monitoredResources",
        chart: Chart::Enterprise,
        disposition: Disposition::NotApplicable(
            "a cap on a resource summed over task pods, not enforced here: use maxPods or a ResourceQuota",
        ),
        example: "{maxResources: 8}",
    },
    ChartKey {
        path: "agentk8sglue.serviceAccountClusterAccess",
        chart: Chart::Enterprise,
        disposition: Disposition::NotApplicable(
            "cluster-wide RBAC for the agent, which this agent does not need",
        ),
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.useOwnerToken",
        chart: Chart::Enterprise,
        disposition: Disposition::NotApplicable(
            "tasks run with their owner's token, an Enterprise server feature: task pods use the agent's key pair",
        ),
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.taskAsJob",
        chart: Chart::Enterprise,
        disposition: Disposition::Honoured,
        example: "true",
    },
    ChartKey {
        path: "agentk8sglue.appsQueue",
        chart: Chart::Enterprise,
        disposition: Disposition::NotApplicable(
            "the tenant's applications queue, an Enterprise server feature",
        ),
        example: "{enabled: true}",
    },
    ChartKey {
        path: "customCertificates",
        chart: Chart::Enterprise,
        disposition: Disposition::NotApplicable(
            "extra CA certificates, not installed: mount a bundle with volumes or fileMounts",
        ),
        example: "{overrideCaCertificatesCrt: \"-----BEGIN CERTIFICATE-----\"}",
    },
    ChartKey {
        path: "agentk8sglue.serverTasks",
        chart: Chart::Enterprise,
        disposition: Disposition::NotApplicable("server tasks, an Enterprise server feature"),
        example: "{enabled: true}",
    },
];

/// The chart key at `path`, if it is one.
pub fn lookup(path: &str) -> Option<&'static ChartKey> {
    CHART_KEYS.iter().find(|k| k.path == path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Map, Value};

    use super::*;
    use crate::values::Values;

    /// Keys another change adds to the schema (the Enterprise agent keys): listed here, parsed
    /// there. Empty once both are merged.
    const AWAITING_SCHEMA: &[&str] = &[];

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/chart")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The keys of a values document, down to the first listed key of each branch (a listed
    /// key's value is the key's own; queue names become `<name>`).
    fn keys_of(doc: &Value, prefix: &str, out: &mut Vec<String>) {
        let Value::Object(map) = doc else { return };
        for (k, v) in map {
            let key = if prefix == "agentk8sglue.queues" {
                "<name>"
            } else {
                k.as_str()
            };
            let path = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            match v {
                _ if lookup(&path).is_some() => out.push(path),
                Value::Object(m) if !m.is_empty() => keys_of(v, &path, out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn every_key_of_the_chart_fixtures_is_listed() {
        for name in ["opensource-values-5.3.2.yaml", "opensource-override.yaml"] {
            let doc: Value = crate::yaml::from_str(&fixture(name)).expect("YAML");
            let mut keys = Vec::new();
            keys_of(&doc, "", &mut keys);
            assert!(keys.len() > 10, "{name}: {keys:?}");
            let missing: Vec<&String> = keys.iter().filter(|k| lookup(k).is_none()).collect();
            assert!(
                missing.is_empty(),
                "{name}: keys not in CHART_KEYS: {missing:?}"
            );
        }
        // and the published file has every open-source key of the list
        let doc: Value =
            crate::yaml::from_str(&fixture("opensource-values-5.3.2.yaml")).expect("YAML");
        let mut keys = Vec::new();
        keys_of(&doc, "", &mut keys);
        for k in CHART_KEYS.iter().filter(|k| k.chart == Chart::OpenSource) {
            assert!(
                keys.iter().any(|p| p == k.path),
                "{} not in values.yaml",
                k.path
            );
        }
    }

    /// `{a: {b: value}}` for `a.b` (queue names: `example-queue`).
    fn tiny_doc(key: &ChartKey) -> Value {
        let value: Value = crate::yaml::from_str(key.example).expect("example is YAML");
        let mut doc = value;
        for part in key.path.rsplit('.') {
            let part = if part == "<name>" {
                "example-queue"
            } else {
                part
            };
            doc = Value::Object(Map::from_iter([(part.to_string(), doc)]));
        }
        // what some keys need beside them to be valid
        let context = match key.path {
            "imageCredentials.password" => Some("imageCredentials: {username: someone}"),
            "agentk8sglue.volumeMounts" => {
                Some("agentk8sglue: {volumes: [{name: data, emptyDir: {}}]}")
            }
            _ => None,
        };
        if let Some(c) = context {
            let c: Value = crate::yaml::from_str(c).expect("context");
            merge(&mut doc, c);
        }
        doc
    }

    fn merge(base: &mut Value, over: Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    match b.get_mut(&k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            b.insert(k, v);
                        }
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn without(doc: &Value, path: &str) -> Value {
        let mut doc = doc.clone();
        let parts: Vec<&str> = path.split('.').collect();
        let mut at = &mut doc;
        for p in &parts[..parts.len() - 1] {
            let p = if *p == "<name>" { "example-queue" } else { p };
            at = at.get_mut(p).expect("path in doc");
        }
        if let Value::Object(m) = at {
            m.remove(parts[parts.len() - 1]);
        }
        doc
    }

    /// Each listed key is accepted alone; an honoured one changes the parsed values (it is not
    /// dropped), a not-applicable one is reported by `notices()` under its path.
    #[test]
    fn every_listed_key_parses_and_is_honoured_or_reported() {
        let mut paths = BTreeSet::new();
        for key in CHART_KEYS {
            assert!(paths.insert(key.path), "{} listed twice", key.path);
            if AWAITING_SCHEMA.contains(&key.path) {
                continue;
            }
            let doc = tiny_doc(key);
            let values = Values::from_json(doc.clone())
                .unwrap_or_else(|e| panic!("{}: {e} (doc {doc})", key.path));
            match key.disposition {
                Disposition::NotApplicable(_) => {
                    let notices = values.notices();
                    assert!(
                        notices.iter().any(|n| n.path == key.path),
                        "{}: not reported: {notices:?}",
                        key.path
                    );
                }
                Disposition::Honoured | Disposition::Renamed(_) => {
                    let rest = without(&doc, key.path);
                    let base = if rest.as_object().is_some_and(|m| m.is_empty()) {
                        Values::default()
                    } else {
                        Values::from_json(rest).expect("the doc without the key")
                    };
                    assert_ne!(values, base, "{}: parsed to nothing", key.path);
                }
            }
            if let Disposition::Renamed(to) = key.disposition {
                // our own name is a key of the schema too
                let mut doc = Value::Null;
                for part in to.rsplit('.') {
                    doc = Value::Object(Map::from_iter([(part.to_string(), doc)]));
                }
                if let Err(e) = Values::from_json(doc) {
                    assert!(
                        !e.message.contains("unknown key"),
                        "{}: {to}: {e}",
                        key.path
                    );
                }
            }
        }
    }

    /// The README's "Coming from the Helm chart" table has exactly the listed keys, in order.
    #[test]
    fn readme_chart_table_lists_exactly_the_keys() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Coming from the Helm chart")
            .nth(1)
            .expect("README has a Coming from the Helm chart section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let rows: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        let listed: Vec<&str> = CHART_KEYS.iter().map(|k| k.path).collect();
        assert_eq!(rows, listed, "README chart table vs CHART_KEYS");
    }
}
