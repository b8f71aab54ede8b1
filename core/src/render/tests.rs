//! Table-driven tests of rendering: each seed example renders the pod its document describes.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;
use crate::values::Values;

const TASK: &str = "0123456789abcdef0123456789abcdef";

fn agent() -> AgentParams {
    AgentParams {
        namespace: "clearml".into(),
        worker_id: "k8s-agent:clearml".into(),
        api_server: Some("https://api.example".into()),
        web_server: Some("https://app.example".into()),
        files_server: Some("https://files.example".into()),
        credentials_secret: "clearml-agent-credentials".into(),
        default_image: None,
        bootstrap: Bootstrap::default(),
        ..Default::default()
    }
}

fn task() -> TaskParams {
    TaskParams {
        id: TASK.into(),
        name: "train".into(),
        project: "proj".into(),
        ..Default::default()
    }
}

fn render_fixture(doc: &str, queue: &str, task: &TaskParams) -> Rendered {
    let values = Values::from_yaml(doc).expect("fixture parses");
    let a = &values.agentk8sglue;
    let template = a
        .queue_template(queue)
        .expect("queue configured")
        .expect("merge");
    let settings = &a.queues[queue].queue_settings;
    let q = QueueParams {
        name: queue,
        id: "q-id",
        template: &template,
        settings,
    };
    render(&agent(), &q, task).expect("renders")
}

fn container(pod: &Pod) -> &Container {
    &pod.spec.as_ref().expect("spec").containers[0]
}

fn env(pod: &Pod, name: &str) -> Option<String> {
    container(pod)
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn limit(pod: &Pod, resource: &str) -> Option<String> {
    container(pod)
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(resource))
        .map(|q| q.0.clone())
}

fn label(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .cloned()
}

const CUSTOM: &str = include_str!("../../../tests/fixtures/custom-pod-template.yaml");
const GPU: &str = include_str!("../../../tests/fixtures/gpu-queues.yaml");
const SHM: &str = include_str!("../../../tests/fixtures/gpus-with-shared-memory.yaml");
const SETTINGS: &str = include_str!("../../../tests/fixtures/queue-settings.yaml");

#[test]
fn custom_pod_template_example_red_blue_green() {
    // (queue, team label, memory limit, annotation `example`, MY_ENV)
    let cases = [
        ("red", "red", "1Gi", None, None),
        ("blue", "blue", "1Gi", None, None),
        (
            "green",
            "green",
            "2Gi",
            Some("example value"),
            Some("my_value"),
        ),
    ];
    for (queue, team, memory, annotation, my_env) in cases {
        let r = render_fixture(CUSTOM, queue, &task());
        assert_eq!(r.pods.len(), 1, "{queue}");
        let pod = &r.pods[0];
        assert_eq!(
            label(pod, "team").as_deref(),
            Some(team),
            "{queue}: team label"
        );
        assert_eq!(
            limit(pod, "memory").as_deref(),
            Some(memory),
            "{queue}: memory"
        );
        let ann = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("example"))
            .map(String::as_str);
        assert_eq!(ann, annotation, "{queue}: annotation");
        assert_eq!(env(pod, "MY_ENV").as_deref(), my_env, "{queue}: MY_ENV");
    }
}

#[test]
fn gpu_queues_example_sets_gpu_limits() {
    for (queue, gpus) in [("1xGPU", "1"), ("2xGPU", "2")] {
        let r = render_fixture(GPU, queue, &task());
        assert_eq!(
            limit(&r.pods[0], "nvidia.com/gpu").as_deref(),
            Some(gpus),
            "{queue}"
        );
    }
}

#[test]
fn shared_memory_example_mounts_a_32gi_memory_emptydir_at_dev_shm() {
    let r = render_fixture(SHM, "GPUs_with_shared_memory", &task());
    let pod = &r.pods[0];
    assert_eq!(limit(pod, "nvidia.com/gpu").as_deref(), Some("2"));
    assert_eq!(env(pod, "VLLM_SKIP_P2P_CHECK").as_deref(), Some("1"));
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .expect("volumes");
    let dshm = volumes
        .iter()
        .find(|v| v.name == "dshm")
        .expect("dshm volume");
    let empty_dir = dshm.empty_dir.as_ref().expect("emptyDir");
    assert_eq!(empty_dir.medium.as_deref(), Some("Memory"));
    assert_eq!(
        empty_dir.size_limit.as_ref().map(|q| q.0.as_str()),
        Some("32Gi")
    );
    let mounts = container(pod).volume_mounts.as_ref().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "dshm" && m.mount_path == "/dev/shm")
    );
    assert_eq!(
        label(pod, LABEL_QUEUE_NAME).as_deref(),
        Some("GPUs_with_shared_memory")
    );
}

#[test]
fn queue_settings_example_multi_node_default_image_and_worker_id() {
    let r = render_fixture(SETTINGS, "exampleQueue", &task());
    // multiNode [4, 2] → gcd 2 → 2 + 1 pods of 2 GPUs, one task
    assert_eq!(r.pods.len(), 3);
    for (rank, pod) in r.pods.iter().enumerate() {
        assert_eq!(
            pod.metadata.name.as_deref(),
            Some(format!("clearml-id-{TASK}-{rank}").as_str())
        );
        assert_eq!(limit(pod, "nvidia.com/gpu").as_deref(), Some("2"));
        assert_eq!(env(pod, "NODE_RANK"), Some(rank.to_string()));
        assert_eq!(env(pod, "WORLD_SIZE").as_deref(), Some("6"));
        assert_eq!(env(pod, "NUM_NODES").as_deref(), Some("3"));
        assert_eq!(
            env(pod, "MASTER_ADDR"),
            Some(format!("clearml-id-{TASK}.clearml.svc"))
        );
        assert_eq!(env(pod, "MASTER_PORT").as_deref(), Some("29500"));
        assert_eq!(label(pod, LABEL_TASK_ID).as_deref(), Some(TASK));
        assert_eq!(label(pod, LABEL_RANK), Some(rank.to_string()));
        assert_eq!(container(pod).image.as_deref(), Some("python:3.10"));
        assert!(
            container(pod).command.is_some(),
            "useImageEntrypoint: false keeps our command"
        );
    }
    assert_eq!(
        env(&r.pods[0], "CLEARML_WORKER_ID"),
        Some(format!("k8s:myGroup:{TASK}"))
    );
    assert_eq!(
        env(&r.pods[1], "CLEARML_WORKER_ID"),
        Some(format!("k8s:myGroup:{TASK}:1"))
    );
    let svc = r.service.expect("headless service");
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        spec.selector
            .expect("selector")
            .get(LABEL_RANK)
            .map(String::as_str),
        Some("0")
    );
}

#[test]
fn image_precedence_task_then_queue_then_agent_then_builtin() {
    let cases = [
        ("task:1", Some("queue:1"), Some("agent:1"), "task:1"),
        ("", Some("queue:1"), Some("agent:1"), "queue:1"),
        ("  ", None, Some("agent:1"), "agent:1"),
        ("", None, None, DEFAULT_TASK_IMAGE),
    ];
    for (task_image, queue_image, agent_image, want) in cases {
        let t = TaskParams {
            image: task_image.into(),
            ..task()
        };
        let s = QueueSettings {
            default_image: queue_image.map(Into::into),
            ..Default::default()
        };
        let a = AgentParams {
            default_image: agent_image.map(Into::into),
            ..agent()
        };
        assert_eq!(choose_image(&t, &s, &a), want);
    }
}

fn render_plain(
    template: &PodTemplate,
    settings: &QueueSettings,
    t: &TaskParams,
) -> Result<Rendered, RenderError> {
    let q = QueueParams {
        name: "plain",
        id: "qid",
        template,
        settings,
    };
    render(&agent(), &q, t)
}

#[test]
fn use_image_entrypoint_sets_no_command_or_args() {
    let s = QueueSettings {
        use_image_entrypoint: Some(true),
        ..Default::default()
    };
    let r = render_plain(&PodTemplate::default(), &s, &task()).expect("render");
    let c = container(&r.pods[0]);
    assert!(c.command.is_none() && c.args.is_none());
    assert_eq!(env(&r.pods[0], "CLEARML_TASK_ID").as_deref(), Some(TASK));
}

#[test]
fn default_command_bootstraps_clearml_agent_and_keeps_the_exit_code() {
    let t = TaskParams {
        setup_shell_script: "echo hi".into(),
        ..task()
    };
    let r = render_plain(&PodTemplate::default(), &QueueSettings::default(), &t).expect("render");
    let c = container(&r.pods[0]);
    assert_eq!(
        c.command.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".to_string()][..])
    );
    let script = &c.args.as_ref().expect("args")[0];
    assert!(script.contains("clearml_requirement='clearml-agent>=1.9,<4'\n"));
    assert!(script.contains("clearml_pip_install \"$clearml_requirement\""));
    assert!(script.contains("\necho hi\n"));
    assert!(script.trim_end().ends_with(
        "exec \"$LOCAL_PYTHON\" -m clearml_agent execute --full-monitoring --require-queue --id \"$CLEARML_TASK_ID\""
    ));
    assert!(
        !script.contains("exit 0"),
        "the task's exit code must reach the pod phase"
    );
}

/// The bootstrap's values: each changes the script (or the command) the way it says; the script's
/// behaviour is run under `/bin/sh` in `core/tests/bootstrap.rs`.
#[test]
fn bootstrap_values_table() {
    let setup = "export FROM_SETUP=1";
    type Check = fn(&[String], &str) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("{}", "defaults", |c, s| {
            c == ["/bin/sh", "-c"]
                && s.contains("clearml_requirement='clearml-agent>=1.9,<4'")
                && s.contains("clearml_skip_installs=\"${CLEARML_AGENT_SKIP_CONTAINER_APT:-}\"")
                && !s.contains("the chart's customBashScript")
        }),
        ("{clearmlAgentVersion: '==3.0.3'}", "pin", |_, s| {
            s.contains("clearml_requirement='clearml-agent==3.0.3'\n")
        }),
        ("{airGappedSupport: true}", "air-gapped", |_, s| {
            s.contains("clearml_skip_installs=1\n")
        }),
        (
            "{customBashScript: 'echo init'}",
            "customBashScript before the agent install, the setup script after",
            |_, s| {
                let init = s.find("\necho init\n").unwrap_or(usize::MAX);
                let install = s
                    .find("clearml_pip_install \"$clearml_requirement\"")
                    .unwrap_or(0);
                let setup = s.find("\nexport FROM_SETUP=1\n").unwrap_or(0);
                init < install && install < setup && s.contains("set -e\n")
            },
        ),
        (
            "{containerCustomBashScript: \"for i in {{20..5}}; do :; done\\n{extra_bash_init_cmd}\\npip install clearml-agent{agent_install_args}\\n{extra_docker_bash_script}\\npython3 -m clearml_agent execute {default_execution_agent_args} --id {task_id}\", customBashScript: 'echo init'}",
            "containerCustomBashScript replaces the bootstrap, placeholders filled",
            |c, s| {
                c == ["/bin/bash", "-c"]
                    && s == "for i in {20..5}; do :; done\necho init\npip install clearml-agent'>=1.9,<4'\nexport FROM_SETUP=1\npython3 -m clearml_agent execute --full-monitoring --require-queue --id 0123456789abcdef0123456789abcdef"
            },
        ),
    ];
    for (doc, what, check) in cases {
        let values = Values::from_yaml(&format!("agentk8sglue: {doc}")).expect(what);
        let mut a = agent();
        a.apply_values(&values.agentk8sglue);
        let t = TaskParams {
            setup_shell_script: setup.into(),
            ..task()
        };
        let r = render(
            &a,
            &QueueParams {
                name: "plain",
                id: "qid",
                template: &PodTemplate::default(),
                settings: &QueueSettings::default(),
            },
            &t,
        )
        .expect(what);
        let c = container(&r.pods[0]);
        let command = c.command.clone().unwrap_or_default();
        let script = &c.args.as_ref().expect("args")[0];
        assert!(check(&command, script), "{what}: {command:?}\n{script}");
    }
    // useImageEntrypoint wins over every bootstrap value
    let values = Values::from_yaml(
        "agentk8sglue: {customBashScript: x, containerCustomBashScript: y, airGappedSupport: true}",
    )
    .expect("values");
    let mut a = agent();
    a.apply_values(&values.agentk8sglue);
    let s = QueueSettings {
        use_image_entrypoint: Some(true),
        ..Default::default()
    };
    let r = render(
        &a,
        &QueueParams {
            name: "plain",
            id: "qid",
            template: &PodTemplate::default(),
            settings: &s,
        },
        &task(),
    )
    .expect("render");
    let c = container(&r.pods[0]);
    assert!(c.command.is_none() && c.args.is_none());
}

#[test]
fn task_env_arguments_table() {
    let template: PodTemplate = serde_json::from_value(serde_json::json!({
        "env": [{"name": "GIT_USER", "value": "from-template"}, {"name": "KEEP", "value": "k"}]
    }))
    .expect("template");
    type Expected<'a> = Result<&'a [(&'a str, &'a str)], &'a str>;
    let cases: &[(&str, Expected<'_>, usize)] = &[
        (
            "-e FOO=1 --env BAR=2 --env=BAZ=3",
            Ok(&[("FOO", "1"), ("BAR", "2"), ("BAZ", "3")]),
            0,
        ),
        ("-e 'QUOTED=a b'", Ok(&[("QUOTED", "a b")]), 0),
        ("--ipc=host -e X=1 --shm-size 8g", Ok(&[("X", "1")]), 3),
        // an empty task value never blanks the template's value (helm-charts#263)
        ("-e GIT_USER=", Ok(&[("GIT_USER", "from-template")]), 0),
        ("-e GIT_USER=task", Ok(&[("GIT_USER", "task")]), 0),
        ("-e 1BAD=x", Err("invalid environment variable name"), 0),
        ("-e 'unbalanced", Err("unbalanced quotes"), 0),
        // the task's text is not echoed: it may hold credentials
        (
            "-e \"TOKEN=s3cret",
            Err("unbalanced quotes (the 16-character string"),
            0,
        ),
    ];
    for (args, want, warnings) in cases {
        let t = TaskParams {
            arguments: args.to_string(),
            ..task()
        };
        match (render_plain(&template, &QueueSettings::default(), &t), want) {
            (Ok(r), Ok(pairs)) => {
                for (k, v) in *pairs {
                    assert_eq!(env(&r.pods[0], k).as_deref(), Some(*v), "{args}: {k}");
                }
                assert_eq!(env(&r.pods[0], "KEEP").as_deref(), Some("k"), "{args}");
                assert_eq!(r.warnings.len(), *warnings, "{args}: {:?}", r.warnings);
            }
            (Err(e), Err(msg)) => {
                assert!(e.to_string().contains(msg), "{args}: {e}");
                assert!(!e.to_string().contains("s3cret"), "{args}: echoed: {e}");
            }
            (got, _) => panic!("{args}: unexpected {got:?}"),
        }
    }
}

#[test]
fn credentials_come_from_the_secret_and_agent_variables_win() {
    let template: PodTemplate = serde_json::from_value(serde_json::json!({
        "env": [{"name": "CLEARML_API_HOST", "value": "http://wrong"}]
    }))
    .expect("template");
    let r = render_plain(&template, &QueueSettings::default(), &task()).expect("render");
    let pod = &r.pods[0];
    assert_eq!(
        env(pod, "CLEARML_API_HOST").as_deref(),
        Some("https://api.example")
    );
    for (name, key) in [
        ("CLEARML_API_ACCESS_KEY", SECRET_KEY_ACCESS),
        ("CLEARML_API_SECRET_KEY", SECRET_KEY_SECRET),
    ] {
        let var = container(pod)
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .expect(name);
        assert!(var.value.is_none(), "{name} must not be inline");
        let sel = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!(
            (sel.name.as_str(), sel.key.as_str()),
            ("clearml-agent-credentials", key)
        );
    }
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
}

#[test]
fn identity_labels_annotations_and_names_are_deterministic() {
    let r1 =
        render_plain(&PodTemplate::default(), &QueueSettings::default(), &task()).expect("render");
    let r2 =
        render_plain(&PodTemplate::default(), &QueueSettings::default(), &task()).expect("render");
    assert_eq!(r1, r2);
    let pod = &r1.pods[0];
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some(format!("clearml-id-{TASK}").as_str())
    );
    assert_eq!(
        label(pod, LABEL_AGENT),
        Some(agent_label("k8s-agent:clearml"))
    );
    assert!(agent_label("x").starts_with("agent-") && agent_label("x").len() == 14);
    assert_eq!(label(pod, LABEL_QUEUE_ID).as_deref(), Some("qid"));
    let ann = pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(ann[ANNOTATION_TASK_NAME], "train");
    assert_eq!(ann[ANNOTATION_PROJECT], "proj");
    assert_eq!(
        env(pod, "CLEARML_WORKER_ID"),
        Some(format!("k8s-agent:clearml:{TASK}"))
    );
}

#[test]
fn worker_id_template_fills_every_placeholder() {
    let s = QueueSettings {
        custom_worker_id_template: Some(
            "{{x}}:{queue}:{project}:{task_name}:{pod_name}:{namespace}:{task_id}".into(),
        ),
        ..Default::default()
    };
    let r = render_plain(&PodTemplate::default(), &s, &task()).expect("render");
    assert_eq!(
        env(&r.pods[0], "CLEARML_WORKER_ID"),
        Some(format!(
            "{{x}}:plain:proj:train:clearml-id-{TASK}:clearml:{TASK}"
        ))
    );
}

#[test]
fn template_errors_name_the_queue() {
    let dup: PodTemplate = serde_json::from_value(serde_json::json!({
        "volumes": [{"name": "a", "emptyDir": {}}],
        "extraVolumes": [{"name": "a", "emptyDir": {}}]
    }))
    .expect("template");
    let e = render_plain(&dup, &QueueSettings::default(), &task()).expect_err("duplicate");
    assert!(
        e.to_string()
            .contains("queue plain: volume \"a\" is defined twice"),
        "{e}"
    );
    let dangling: PodTemplate = serde_json::from_value(serde_json::json!({
        "volumeMounts": [{"name": "nope", "mountPath": "/x"}]
    }))
    .expect("template");
    let e = render_plain(&dangling, &QueueSettings::default(), &task()).expect_err("dangling");
    assert!(e.to_string().contains("names no volume"), "{e}");
    let bad = TaskParams {
        id: "Not A DNS Name".into(),
        ..task()
    };
    assert!(matches!(
        render_plain(&PodTemplate::default(), &QueueSettings::default(), &bad),
        Err(RenderError::TaskId { .. })
    ));
}

#[test]
fn multi_node_layouts() {
    for (nodes, want) in [
        (&[4u32, 2][..], (2, 3)),
        (&[2, 2, 4], (2, 4)),
        (&[3], (3, 1)),
        (&[8, 8], (8, 2)),
    ] {
        assert_eq!(multi_node_layout(nodes), want, "{nodes:?}");
    }
}

#[test]
fn multi_node_limits_table() {
    let long = vec![1u32; MAX_MULTI_NODE_PODS + 1];
    // (case, GPUs per node, Ok or the index at fault and part of the message)
    type Want<'a> = Result<(), (Option<usize>, &'a str)>;
    let cases: [(&str, &[u32], Want<'_>); 7] = [
        ("seed example", &[4, 2], Ok(())),
        ("largest node", &[MAX_NODE_GPUS, MAX_NODE_GPUS], Ok(())),
        ("empty", &[], Err((None, "at least one node"))),
        ("zero", &[2, 0], Err((Some(1), "positive"))),
        // found by the `values` fuzz target: the GPU sum overflowed u32 while rendering
        ("u32::MAX", &[u32::MAX, 1], Err((Some(0), "at most 4096"))),
        ("gcd 1 over many GPUs", &[1, 4096], Err((None, "4097 pods"))),
        ("too many nodes", &long, Err((None, "lists 1025 nodes"))),
    ];
    for (what, nodes, want) in cases {
        match (check_multi_node(nodes), want) {
            (Ok(()), Ok(())) => {}
            (Err((i, why)), Err((want_i, msg))) => {
                assert_eq!(i, want_i, "{what}: {why}");
                assert!(why.contains(msg), "{what}: {why}");
            }
            (got, _) => panic!("{what}: {got:?}"),
        }
    }
    // Settings that skipped validation are refused by render itself, not by a panic.
    let settings = QueueSettings {
        multi_node: Some(vec![u32::MAX, 1]),
        ..Default::default()
    };
    let e = render_plain(&PodTemplate::default(), &settings, &task()).expect_err("refused");
    assert!(matches!(e, RenderError::Template { .. }), "{e}");
}

#[test]
fn per_task_multi_node_request_table() {
    use serde_json::json;
    let props = |req: &str, layout: Option<&str>| {
        let mut p = json!({"multi_node_request": {"section": "properties", "name": "multi_node_request", "value": req}});
        if let Some(l) = layout {
            p["multi_node_request_layout"] = json!({"value": l});
        }
        json!({"properties": p})
    };
    type Want<'a> = Result<Option<Vec<u32>>, &'a str>;
    let cases: Vec<(&str, Option<serde_json::Value>, Want<'_>)> = vec![
        ("no hyperparams", None, Ok(None)),
        ("no request", Some(json!({"Args": {}})), Ok(None)),
        (
            "count layout (default)",
            Some(props("[2, 3]", None)),
            Ok(Some(vec![2, 2, 2])),
        ),
        (
            "list layout",
            Some(props("[2,2,4]", Some("gpus_per_node_list"))),
            Ok(Some(vec![2, 2, 4])),
        ),
        (
            "count layout needs two numbers",
            Some(props("[2, 3, 4]", None)),
            Err("[gpus per node, nodes]"),
        ),
        ("zero", Some(props("[0, 2]", None)), Err("positive")),
        (
            "too many GPUs",
            Some(props("[4097, 2]", None)),
            Err("positive"),
        ),
        (
            "list layout splitting into too many pods",
            Some(props("[1, 4096]", Some("gpus_per_node_list"))),
            Err("splits into 4097 pods"),
        ),
        (
            "not JSON",
            Some(props("two nodes", None)),
            Err("not a JSON list"),
        ),
        (
            "bad layout",
            Some(props("[2]", Some("diagonal"))),
            Err("must be gpus_per_node_count or gpus_per_node_list"),
        ),
    ];
    for (what, hp, want) in cases {
        match (multi_node_request(hp.as_ref()), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{what}"),
            (Err(e), Err(msg)) => assert!(e.contains(msg), "{what}: {e}"),
            (got, _) => panic!("{what}: {got:?}"),
        }
    }
}
