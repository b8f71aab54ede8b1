//! Table-driven tests of the values schema: every seed example is accepted, and each kind of bad
//! input is refused with the path of the offending field.

use super::*;

const FIXTURES: &[(&str, &str)] = &[
    (
        "gpu-queues.yaml",
        include_str!("../../../tests/fixtures/gpu-queues.yaml"),
    ),
    (
        "custom-pod-template.yaml",
        include_str!("../../../tests/fixtures/custom-pod-template.yaml"),
    ),
    (
        "gpus-with-shared-memory.yaml",
        include_str!("../../../tests/fixtures/gpus-with-shared-memory.yaml"),
    ),
    (
        "queue-settings.yaml",
        include_str!("../../../tests/fixtures/queue-settings.yaml"),
    ),
    (
        "clearml-agent-values.override.yaml",
        include_str!("../../../tests/fixtures/clearml-agent-values.override.yaml"),
    ),
    (
        "dashboard-report-max-gpu.yaml",
        include_str!("../../../tests/fixtures/dashboard-report-max-gpu.yaml"),
    ),
];

#[test]
fn every_seed_example_is_accepted() {
    for (name, text) in FIXTURES {
        if let Err(e) = Values::from_yaml(text) {
            panic!("{name} refused: {e}");
        }
    }
}

#[test]
fn seed_examples_parse_to_the_documented_values() {
    let v = Values::from_yaml(FIXTURES[3].1).expect("queue-settings");
    let q = &v.agentk8sglue.queues["exampleQueue"].queue_settings;
    assert_eq!(q.max_pods, Some(10));
    assert_eq!(
        q.custom_worker_id_template.as_deref(),
        Some("k8s:myGroup:{task_id}")
    );
    assert_eq!(q.multi_node, Some(vec![4, 2]));
    assert_eq!(q.default_image.as_deref(), Some("python:3.10"));
    assert_eq!(q.use_image_entrypoint, Some(false));
    assert!(v.agentk8sglue.create_queues);

    let v = Values::from_yaml(FIXTURES[5].1).expect("dashboard");
    assert_eq!(v.agentk8sglue.dashboard_report_max_gpu, Some(2));

    let v = Values::from_yaml(FIXTURES[4].1).expect("override");
    let creds = v.clearml.as_ref().expect("clearml section");
    assert_eq!(creds.agentk8sglue_key.as_deref(), Some("<ACCESS_KEY>"));
    assert!(v.without_secrets().clearml.is_none());
    assert!(v.without_secrets().image_credentials.is_none());

    let v = Values::from_yaml(FIXTURES[0].1).expect("gpu");
    let limits = v.agentk8sglue.queues["1xGPU"]
        .template_overrides
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
}

fn queue_doc(queue_body: &str) -> String {
    format!("agentk8sglue:\n  queues:\n    green:\n{queue_body}")
}

#[test]
fn volumes_complete_each_other_across_base_and_queue() {
    // a base mount whose volume each queue brings, and volumes merged by name (not duplicated)
    let doc = "agentk8sglue:\n  basePodTemplate:\n    volumes:\n      - name: data\n        emptyDir: {}\n    volumeMounts:\n      - name: cache\n        mountPath: /cache\n  queues:\n    green:\n      templateOverrides:\n        volumes:\n          - name: data\n            emptyDir:\n              medium: Memory\n        extraVolumes:\n          - name: cache\n            emptyDir: {}\n";
    let values = Values::from_yaml(doc).expect("valid");
    let merged = values
        .agentk8sglue
        .queue_template("green")
        .expect("queue")
        .expect("merges");
    assert_eq!(merged.volumes.as_ref().map(Vec::len), Some(1));
    assert_eq!(merged.extra_volumes.as_ref().map(Vec::len), Some(1));
}

#[test]
fn bad_values_are_refused_with_the_field_path() {
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "unknown top-level key",
            "agentk8sglue:\n  queus: {}\n".into(),
            "agentk8sglue.queus",
            "unknown key",
        ),
        (
            "unknown root key",
            "agentk8sglu: {}\n".into(),
            "agentk8sglu",
            "unknown key",
        ),
        (
            "unknown key deep in resources",
            queue_doc(
                "      templateOverrides:\n        resources:\n          limitz:\n            cpu: 1\n",
            ),
            "agentk8sglue.queues.green.templateOverrides.resources.limitz",
            "unknown key",
        ),
        (
            "unknown key in an env entry",
            queue_doc(
                "      templateOverrides:\n        env:\n          - name: A\n            valu: x\n",
            ),
            "agentk8sglue.queues.green.templateOverrides.env[0].valu",
            "unknown key",
        ),
        (
            "invalid memory quantity",
            queue_doc(
                "      templateOverrides:\n        resources:\n          limits:\n            memory: 12 GiB\n",
            ),
            "agentk8sglue.queues.green.templateOverrides.resources.limits.memory",
            "invalid quantity",
        ),
        (
            "negative maxPods",
            queue_doc("      queueSettings:\n        maxPods: -1\n"),
            "agentk8sglue.queues.green.queueSettings.maxPods",
            "invalid value",
        ),
        (
            "fractional maxPods",
            queue_doc("      queueSettings:\n        maxPods: 1.5\n"),
            "agentk8sglue.queues.green.queueSettings.maxPods",
            "invalid type",
        ),
        (
            "invalid env name",
            queue_doc(
                "      templateOverrides:\n        env:\n          - name: 1BAD\n            value: x\n",
            ),
            "agentk8sglue.queues.green.templateOverrides.env[0].name",
            "invalid environment variable name",
        ),
        (
            "duplicate volume names",
            queue_doc(
                "      templateOverrides:\n        volumes:\n          - name: a\n            emptyDir: {}\n          - name: a\n            emptyDir: {}\n",
            ),
            "agentk8sglue.queues.green.templateOverrides.volumes[1]",
            "duplicate",
        ),
        (
            "multiNode with a zero entry",
            queue_doc("      queueSettings:\n        multiNode: [4, 0]\n"),
            "agentk8sglue.queues.green.queueSettings.multiNode[1]",
            "positive",
        ),
        (
            "multiNode with a negative entry",
            queue_doc("      queueSettings:\n        multiNode: [4, -2]\n"),
            "agentk8sglue.queues.green.queueSettings.multiNode[1]",
            "invalid value",
        ),
        (
            // found by the `values` fuzz target: the GPU sum overflowed u32 while rendering
            "multiNode with an entry beyond the GPUs of a node",
            queue_doc("      queueSettings:\n        multiNode: [4294967295, 1]\n"),
            "agentk8sglue.queues.green.queueSettings.multiNode[0]",
            "at most 4096",
        ),
        (
            "multiNode that splits into too many pods",
            queue_doc("      queueSettings:\n        multiNode: [1, 4096]\n"),
            "agentk8sglue.queues.green.queueSettings.multiNode",
            "splits into 4097 pods of 1 GPUs (the gcd); at most 1024 pods",
        ),
        (
            "unknown worker-id placeholder",
            queue_doc("      queueSettings:\n        customWorkerIdTemplate: \"k8s:{taskid}\"\n"),
            "agentk8sglue.queues.green.queueSettings.customWorkerIdTemplate",
            "unknown placeholder {taskid}",
        ),
        (
            "labels given as a list",
            queue_doc("      templateOverrides:\n        labels: [a]\n"),
            "agentk8sglue.queues.green.templateOverrides.labels",
            "invalid type",
        ),
        (
            "invalid label value",
            queue_doc("      templateOverrides:\n        labels:\n          team: \"red team\"\n"),
            "agentk8sglue.queues.green.templateOverrides.labels.team",
            "invalid label value",
        ),
        (
            "queue name too short",
            "agentk8sglue:\n  queues:\n    ab: {}\n".into(),
            "agentk8sglue.queues.ab",
            "at least 3 characters",
        ),
        (
            "YAML syntax error",
            "agentk8sglue:\n  queues: [\n".into(),
            "(root)",
            "invalid YAML",
        ),
        ("empty file", "".into(), "(root)", "empty"),
        ("a scalar document", "42\n".into(), "(root)", "mapping"),
        (
            "bad pull policy",
            queue_doc("      templateOverrides:\n        imagePullPolicy: Sometimes\n"),
            "agentk8sglue.queues.green.templateOverrides.imagePullPolicy",
            "unsupported value",
        ),
        (
            "bad sizeLimit",
            queue_doc(
                "      templateOverrides:\n        volumes:\n          - name: dshm\n            emptyDir:\n              sizeLimit: lots\n",
            ),
            "agentk8sglue.queues.green.templateOverrides.volumes[0].emptyDir.sizeLimit",
            "invalid quantity",
        ),
        // volumes are checked on each queue's merged template: what its pods get
        (
            "extraVolumes of base and queue share a name (appended, not merged)",
            "agentk8sglue:\n  basePodTemplate:\n    extraVolumes:\n      - name: data\n        emptyDir: {}\n  queues:\n    green:\n      templateOverrides:\n        extraVolumes:\n          - name: data\n            emptyDir: {}\n".into(),
            "agentk8sglue.queues.green.templateOverrides.extraVolumes[0].name",
            "volume \"data\" is defined twice",
        ),
        (
            "base volumes and queue extraVolumes share a name",
            "agentk8sglue:\n  basePodTemplate:\n    volumes:\n      - name: data\n        emptyDir: {}\n  queues:\n    green:\n      templateOverrides:\n        extraVolumes:\n          - name: other\n            emptyDir: {}\n          - name: data\n            emptyDir: {}\n".into(),
            "agentk8sglue.queues.green.templateOverrides.extraVolumes[1].name",
            "is defined twice",
        ),
        (
            "both within the base template",
            "agentk8sglue:\n  basePodTemplate:\n    volumes:\n      - name: data\n        emptyDir: {}\n    extraVolumes:\n      - name: data\n        emptyDir: {}\n  queues:\n    green: {}\n".into(),
            "agentk8sglue.basePodTemplate.extraVolumes",
            "is defined twice",
        ),
        (
            "a base mount names a volume no queue defines",
            "agentk8sglue:\n  basePodTemplate:\n    extraVolumeMounts:\n      - name: cache\n        mountPath: /cache\n  queues:\n    green: {}\n".into(),
            "agentk8sglue.basePodTemplate.extraVolumeMounts",
            "names no volume \"cache\"",
        ),
        (
            "a queue mount names no volume",
            queue_doc("      templateOverrides:\n        volumeMounts:\n          - name: x\n            mountPath: /x\n"),
            "agentk8sglue.queues.green.templateOverrides.volumeMounts[0].name",
            "names no volume",
        ),
    ];
    for (what, doc, path, message) in cases {
        match Values::from_yaml(doc) {
            Ok(v) => panic!("{what}: accepted: {v:?}"),
            Err(e) => {
                assert_eq!(&e.path, path, "{what}: wrong path in {e}");
                assert!(
                    e.message.contains(message),
                    "{what}: message {:?} lacks {message:?}",
                    e.message
                );
            }
        }
    }
}

#[test]
fn worker_id_templates_accept_known_placeholders_and_escaped_braces() {
    for ok in [
        "k8s:myGroup:{task_id}",
        "{queue}-{project}-{task_name}",
        "{{literal}}:{pod_name}",
        "plain",
    ] {
        assert!(check_worker_id_template("p", ok).is_ok(), "{ok}");
    }
    for bad in ["{task_id", "x}", "{}", "{nope}"] {
        assert!(check_worker_id_template("p", bad).is_err(), "{bad}");
    }
}

#[test]
fn a_queue_entry_parses_on_its_own_with_its_full_path() {
    let ok = QueueValues::from_json(
        "green",
        serde_json::json!({"queueSettings": {"maxPods": 3}}),
    )
    .expect("valid");
    assert_eq!(ok.queue_settings.max_pods, Some(3));
    let err = QueueValues::from_json(
        "green",
        serde_json::json!({"templateOverrides": {"resources": {"limits": {"memory": "2 GB"}}}}),
    )
    .expect_err("invalid");
    assert_eq!(
        err.path,
        "agentk8sglue.queues.green.templateOverrides.resources.limits.memory"
    );
}

/// The keys a struct of the schema accepts, from serde's own "expected one of" list.
fn schema_keys<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
    let err = serde_json::from_value::<T>(serde_json::json!({"\u{1}not-a-key": 1}))
        .expect_err("unknown key refused");
    let text = err.to_string();
    let list = text
        .split("expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in {text:?}"));
    let list = list.trim_start_matches("one of ");
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| {
            k.trim_matches(|c: char| c == '`' || c.is_whitespace())
                .to_string()
        })
        .collect()
}

/// The first backticked key of every row of the README's values table, and the pod template keys
/// paragraph.
fn readme_keys() -> (Vec<String>, String) {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Values")
        .nth(1)
        .expect("README has a Values section");
    let section = section.split("\n## ").next().unwrap_or(section);
    // the whole first cell of each row (`a` / `b` rows name two keys)
    let rows = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('|').nth(1))
        .map(|cell| cell.trim().to_string())
        .collect();
    let pod = section
        .split("Pod template keys")
        .nth(1)
        .expect("pod template keys paragraph");
    let pod = pod.split("\n\n").next().unwrap_or(pod).to_string();
    (rows, pod)
}

#[test]
fn readme_values_reference_lists_exactly_the_schema() {
    let (rows, pod_paragraph) = readme_keys();
    let mut documented = std::collections::BTreeSet::new();
    for row in &rows {
        let key = row.split('`').nth(1).unwrap_or(row);
        let key = key.replace('…', "agentk8sglue.queues.<name>.");
        let key = key.replace(
            "agentk8sglue.queues.<name>..",
            "agentk8sglue.queues.<name>.",
        );
        documented.insert(key);
    }
    let mut expected = std::collections::BTreeSet::new();
    for k in schema_keys::<AgentValues>() {
        if k == "queues" {
            expected.insert("agentk8sglue.queues.<name>.templateOverrides".to_string());
        } else {
            expected.insert(format!("agentk8sglue.{k}"));
        }
    }
    for k in schema_keys::<QueueSettings>() {
        if k == "kueue" {
            // a nested setting: one row per key
            for k in schema_keys::<KueueSettings>() {
                expected.insert(format!(
                    "agentk8sglue.queues.<name>.queueSettings.kueue.{k}"
                ));
            }
        } else {
            expected.insert(format!("agentk8sglue.queues.<name>.queueSettings.{k}"));
        }
    }
    for k in schema_keys::<ClearmlCredentials>() {
        if k != "agentk8sglueSecret" {
            expected.insert(format!("clearml.{k}")); // the key pair shares a row
        }
    }
    expected.insert("imageCredentials.*".into());
    for k in schema_keys::<Global>() {
        expected.insert(format!("global.{k}"));
    }
    expected.insert("sessions.*".into());
    assert_eq!(
        schema_keys::<Values>(),
        [
            "imageCredentials",
            "clearml",
            "agentk8sglue",
            "global",
            "sessions",
            "customCertificates"
        ],
        "a new top-level key needs its README row here"
    );
    expected.insert("customCertificates".into()); // the Enterprise chart's, top level
    assert_eq!(documented, expected, "README values table vs the schema");
    for k in schema_keys::<ClearmlCredentials>() {
        assert!(
            rows.iter().any(|r| r.contains(&k)),
            "README lacks clearml.{k}"
        );
    }
    for k in schema_keys::<QueueValues>() {
        assert!(
            rows.iter().any(|r| r.contains(&k)),
            "README lacks queues.<name>.{k}"
        );
    }
    let listed: std::collections::BTreeSet<&str> = pod_paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| !matches!(*t, "basePodTemplate" | "templateOverrides" | "false"))
        .collect();
    let schema = schema_keys::<PodTemplate>();
    let schema: std::collections::BTreeSet<&str> = schema.iter().map(String::as_str).collect();
    assert_eq!(listed, schema, "README's pod template keys vs the schema");
}

/// The bad-input corpus (`tests/fixtures/bad/`): every file is refused, naming the field its
/// `# expect: <path> | <message>` header gives.
#[test]
fn every_bad_values_file_is_refused_naming_its_field() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 50, "the corpus has {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let header = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("expect header");
        let (path, message) = header.split_once(" | ").expect("path | message");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        match Values::from_yaml(&text) {
            Ok(v) => panic!("{name}: accepted: {v:?}"),
            Err(e) => {
                assert_eq!(e.path, path, "{name}: {e}");
                assert!(
                    e.message.contains(message),
                    "{name}: {e:?} lacks {message:?}"
                );
            }
        }
        // a file with several mistakes lists the others in `# also: <path> | <message>` lines:
        // every one is reported, in the order of the file, and nothing else
        let mut want: Vec<(String, String)> = vec![(path.to_string(), message.to_string())];
        want.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# also: "))
                .map(|l| {
                    let (p, m) = l.split_once(" |").expect("path | message");
                    (p.to_string(), m.trim().to_string())
                }),
        );
        if want.len() == 1 {
            continue; // (one mistake; removing it may reveal follow-ups, e.g. an emptied list)
        }
        let got = Values::errors_in_yaml(&text);
        let got_paths: std::collections::BTreeSet<&str> =
            got.iter().map(|e| e.path.as_str()).collect();
        let want_paths: std::collections::BTreeSet<&str> =
            want.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(got_paths, want_paths, "{name}: {got:#?}");
        assert_eq!(got.len(), want.len(), "{name}: {got:#?}");
        for (p, m) in &want {
            let e = got.iter().find(|e| &e.path == p).expect("reported");
            assert!(e.message.contains(m.as_str()), "{name}: {e:?} lacks {m:?}");
        }
        let lines: Vec<usize> = got
            .iter()
            .map(|e| {
                let key = e
                    .path
                    .rsplit(['.', ']'])
                    .find(|k| !k.is_empty())
                    .unwrap_or("");
                text.lines()
                    .skip_while(|l| l.starts_with('#'))
                    .position(|l| l.contains(key))
                    .unwrap_or(usize::MAX)
            })
            .collect();
        assert!(lines.is_sorted(), "{name}: not in file order: {got:#?}");
    }
}

#[test]
fn a_10_mb_values_file_is_refused_before_parsing() {
    let mut text = String::from("agentk8sglue:\n  basePodTemplate:\n    annotations:\n");
    while text.len() < 10 * 1024 * 1024 {
        let n = text.len();
        text.push_str(&format!("      key-{n}: \"{}\"\n", "x".repeat(100)));
    }
    let e = Values::from_yaml(&text).expect_err("too big");
    assert_eq!(e.path, "(root)");
    assert!(e.message.contains("must fit in a ConfigMap"), "{e}");
}

/// A typo of a known key is refused with the key it most likely meant; anything else is just
/// unknown.
#[test]
fn unknown_keys_suggest_the_closest_known_key() {
    for (yaml, want) in [
        (
            "agentk8sglue:\n  queus: {}\n",
            "agentk8sglue.queus: unknown key; did you mean queues?",
        ),
        (
            "agentk8sglue:\n  basepodtemplate: {}\n",
            "agentk8sglue.basepodtemplate: unknown key; did you mean basePodTemplate?",
        ),
        (
            "agentk8sglue:\n  queues:\n    red:\n      queueSettings:\n        maxPod: 2\n",
            "agentk8sglue.queues.red.queueSettings.maxPod: unknown key; did you mean maxPods?",
        ),
        (
            "agentk8sglue:\n  somethingElse: 1\n",
            "agentk8sglue.somethingElse: unknown key",
        ),
        (
            "agentk8sglu: {}\n",
            "agentk8sglu: unknown key; did you mean agentk8sglue?",
        ),
    ] {
        let e = Values::from_yaml(yaml).expect_err("refused");
        assert_eq!(e.to_string(), want, "{yaml}");
    }
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(closest_key("ab", &["abc"]), None, "too short to guess");
}

/// The open-source chart's names for the same settings: `defaultContainerImage`, `queue` (one
/// name or several) and `createQueueIfNotExists` are honoured; giving both names with different
/// values is an error naming both keys.
#[test]
fn open_source_chart_keys_are_honoured_and_conflicts_name_both_keys() {
    let v = Values::from_yaml(
        "agentk8sglue:\n  defaultContainerImage: nvidia/cuda:12.4.1-runtime-ubuntu22.04\n  queue: \"alpha beta,gamma\"\n  createQueueIfNotExists: true\n  queues:\n    beta:\n      queueSettings:\n        maxPods: 2\n",
    )
    .expect("chart keys accepted");
    let a = &v.agentk8sglue;
    assert_eq!(
        a.task_default_image().map(String::as_str),
        Some("nvidia/cuda:12.4.1-runtime-ubuntu22.04")
    );
    assert!(a.creates_queues());
    let all = a.all_queues();
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"]
    );
    assert_eq!(all["beta"].queue_settings.max_pods, Some(2), "queues wins");
    let cfg = crate::config::AgentConfig::from_values(&v, "ns").expect("config");
    assert_eq!(cfg.queues.len(), 3);
    assert!(cfg.create_queues);
    for (yaml, want) in [
        (
            "agentk8sglue:\n  defaultImage: a:1\n  defaultContainerImage: b:2\n",
            "agentk8sglue.defaultContainerImage: is \"b:2\" but agentk8sglue.defaultImage is \"a:1\"",
        ),
        (
            "agentk8sglue:\n  createQueues: true\n  createQueueIfNotExists: false\n",
            "agentk8sglue.createQueueIfNotExists: is false but agentk8sglue.createQueues is true",
        ),
        (
            "agentk8sglue:\n  queue: \"ok x\"\n",
            "agentk8sglue.queue: a ClearML queue name must have at least 3 characters",
        ),
    ] {
        let e = Values::from_yaml(yaml).expect_err(yaml);
        assert!(e.to_string().starts_with(want), "{yaml}: {e}");
    }
    assert!(
        Values::from_yaml("agentk8sglue:\n  defaultImage: a:1\n  defaultContainerImage: a:1\n")
            .is_ok(),
        "the same image under both names is fine"
    );
}
