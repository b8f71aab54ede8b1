//! Fuzz entry points of the core (feature `fuzzing`): the bodies of the `values` and `merge`
//! cargo-fuzz targets in `fuzz/`, kept here so the stable test `tests/e2e/tests/fuzz_corpus.rs`
//! replays the kept corpus through exactly the same code. Not an API: each function takes raw
//! bytes and panics when a property that must always hold is broken (a panic anywhere below is
//! a bug).

use serde_json::{Value, json};

use crate::{
    config::AgentConfig,
    contract::CREDENTIALS_SECRET,
    render::{self, AgentParams, QueueParams, RenderError, TaskParams},
    values::{
        PodTemplate, Values,
        merge::{merge_templates, merge_value},
    },
    yaml,
};

/// Bytes as a values file: parse → validate → round-trip (ConfigMap YAML and control-API JSON) →
/// resolve the agent config (merge each queue) → render each queue's pod for a sample task.
pub fn values(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(values) = Values::from_yaml(&text) else {
        return;
    };
    assert_eq!(values.validate(), Ok(()), "parsed values must validate");
    let stored = values.without_secrets();
    let text = yaml::to_string(&stored).expect("values encode as YAML");
    let back = Values::from_yaml(&text).expect("the ConfigMap's YAML parses back");
    assert_eq!(back, stored, "ConfigMap round-trip changed the values");
    let doc = serde_json::to_value(&values).expect("values encode as JSON");
    assert_eq!(
        Values::from_json(doc).as_ref(),
        Ok(&values),
        "JSON round-trip"
    );

    let cfg = AgentConfig::from_values(&stored, "clearml").expect("stored values resolve");
    let a = &stored.agentk8sglue;
    let agent = AgentParams {
        namespace: cfg.task_namespace.clone(),
        worker_id: cfg.worker_id.clone(),
        api_server: a.api_server_url_reference.clone(),
        web_server: a.web_server_url_reference.clone(),
        files_server: a.file_server_url_reference.clone(),
        credentials_secret: CREDENTIALS_SECRET.into(),
        default_image: a.task_default_image().cloned(),
        bootstrap: render::Bootstrap::from_values(a),
        ..Default::default()
    };
    let mut agent = agent;
    agent.apply_document(&stored);
    let task = TaskParams {
        id: "0123456789abcdef0123456789abcdef".into(),
        name: "fuzz task".into(),
        project: "fuzz/project".into(),
        arguments: "-e FUZZ=1 --env=EMPTY= --ipc=host".into(),
        setup_shell_script: "echo setup".into(),
        launch_id: "1".into(),
        ..Default::default()
    };
    for (name, q) in &cfg.queues {
        let merged = a.queue_template(name).expect("configured").expect("merges");
        assert_eq!(merged, q.template, "queue {name}: one merge, one result");
        let params = QueueParams {
            name,
            id: "queue-id",
            template: &q.template,
            settings: &q.settings,
        };
        match render::render(&agent, &params, &task) {
            Ok(r) => assert!(!r.pods.is_empty(), "queue {name}: no pod rendered"),
            Err(RenderError::Template { .. }) => {}
            Err(e) => panic!("queue {name}: the sample task must render: {e}"),
        }
    }
}

/// Bytes as two or three YAML documents separated by a `---` line: the raw JSON merge on the
/// documents as they are, then, when each is a valid pod template, the typed merge's properties
/// (empty is an identity on both sides, determinism, associativity, maps merge key by key).
pub fn merge(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let docs: Vec<Value> = text
        .split("\n---\n")
        .take(3)
        .map(|part| yaml::from_str::<Value>(part).unwrap_or(Value::Null))
        .collect();
    let empty = json!({});
    for a in &docs {
        for b in &docs {
            let ab = merge_value(a, b, None);
            assert_eq!(ab, merge_value(a, b, None), "merge_value is deterministic");
            assert_eq!(merge_value(&empty, b, None), *b, "{{}} ⊕ b = b");
            if a.is_object() {
                assert_eq!(merge_value(a, &empty, None), *a, "a ⊕ {{}} = a");
            }
        }
    }

    let mut templates = Vec::new();
    for doc in docs {
        let wrapped = json!({"agentk8sglue": {"basePodTemplate": doc}});
        let Ok(v) = Values::from_json(wrapped) else {
            return;
        };
        templates.push(v.agentk8sglue.base_pod_template);
    }
    let m =
        |a: &PodTemplate, b: &PodTemplate| merge_templates(a, b).expect("valid templates merge");
    let none = PodTemplate::default();
    for a in &templates {
        assert_eq!(&m(a, &none), a, "a ⊕ empty = a");
        assert_eq!(&m(&none, a), a, "empty ⊕ a = a");
        for b in &templates {
            let ab = m(a, b);
            assert_eq!(ab, m(a, b), "merge is deterministic");
            for (field, got, base, over) in [
                ("labels", &ab.labels, &a.labels, &b.labels),
                (
                    "annotations",
                    &ab.annotations,
                    &a.annotations,
                    &b.annotations,
                ),
                (
                    "nodeSelector",
                    &ab.node_selector,
                    &a.node_selector,
                    &b.node_selector,
                ),
            ] {
                let mut want = base.clone();
                if let Some(o) = over {
                    want.get_or_insert_default().extend(o.clone());
                }
                assert_eq!(got, &want, "{field}: the override wins key by key");
            }
        }
    }
    if let [a, b, c] = templates.as_slice() {
        assert_eq!(m(&m(a, b), c), m(a, &m(b, c)), "merge is associative");
    }
}
