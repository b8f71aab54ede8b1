//! Job mode rendering: the Job wraps exactly the pod bare-pod mode renders.

use std::time::Duration;

use k8s_openapi::api::core::v1::EnvVar;

use super::*;
use crate::{
    config::AgentConfig,
    contract::{ANNOTATION_LAUNCH, LABEL_TASK_ID},
    render::{Bootstrap, MASTER_PORT, Rendered},
    values::Values,
};

const TASK: &str = "0123456789abcdef0123456789abcdef";

fn agent() -> AgentParams {
    AgentParams {
        namespace: "clearml".into(),
        worker_id: "k8s-agent:clearml".into(),
        api_server: Some("https://api.example".into()),
        credentials_secret: "clearml-agent-credentials".into(),
        bootstrap: Bootstrap::default(),
        ..Default::default()
    }
}

fn task() -> TaskParams {
    TaskParams {
        id: TASK.into(),
        name: "train".into(),
        project: "proj".into(),
        launch_id: "1700000000000".into(),
        ..Default::default()
    }
}

const TIMEOUTS: Timeouts = Timeouts {
    pending: Duration::from_secs(600),
    succeeded_ttl: Duration::from_secs(300),
    failed_ttl: Duration::from_secs(86400),
};

/// The config of `doc` (Job mode resolved as the agent resolves it) and queue `q`'s render of
/// the task as pods and as a Job.
fn both(doc: &str, q: &str) -> (Rendered, Option<RenderedJob>) {
    let values = Values::from_yaml(doc).expect("values");
    let cfg = AgentConfig::from_values(&values, "clearml").expect("config");
    let queue = &cfg.queues[q];
    let params = QueueParams {
        name: q,
        id: "q-id",
        template: &queue.template,
        settings: &queue.settings,
    };
    let pods = render(&agent(), &params, &task()).expect("pods");
    let job = is_job_mode(&params)
        .then(|| render_job(&agent(), &params, &task(), &TIMEOUTS).expect("job"));
    (pods, job)
}

fn env<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a EnvVar> {
    env.iter().find(|e| e.name == name)
}

#[test]
fn job_mode_is_the_queue_setting_else_the_global_one() {
    let cases = [
        ("agentk8sglue:\n  queues:\n    gpu: {}\n", false),
        (
            "agentk8sglue:\n  taskAsJob: true\n  queues:\n    gpu: {}\n",
            true,
        ),
        (
            "agentk8sglue:\n  taskAsJob: true\n  queues:\n    gpu:\n      queueSettings: {taskAsJob: false}\n",
            false,
        ),
        (
            "agentk8sglue:\n  queues:\n    gpu:\n      queueSettings: {taskAsJob: true}\n",
            true,
        ),
        // a queue named only by the chart's `queue` key follows the global key
        ("agentk8sglue:\n  taskAsJob: true\n  queue: gpu\n", true),
    ];
    for (doc, want) in cases {
        assert_eq!(both(doc, "gpu").1.is_some(), want, "{doc}");
    }
}

#[test]
fn a_single_node_job_wraps_exactly_the_rendered_pod() {
    let doc = "agentk8sglue:\n  taskAsJob: true\n  basePodTemplate:\n    labels: {team: ml}\n    annotations: {cost: a}\n    env: [{name: A, value: b}]\n  queues:\n    gpu:\n      queueSettings: {activeDeadlineSeconds: 3600}\n";
    let (pods, job) = both(doc, "gpu");
    let RenderedJob { job, service, .. } = job.expect("job mode");
    let pod = &pods.pods[0];
    assert_eq!(
        job.metadata.name.as_deref(),
        Some(pod_name(TASK, None).as_str())
    );
    assert_eq!(job.metadata.namespace.as_deref(), Some("clearml"));
    // the same records on the Job and on its pods
    assert_eq!(job.metadata.labels, pod.metadata.labels);
    assert_eq!(job.metadata.annotations, pod.metadata.annotations);
    let spec = job.spec.expect("spec");
    let template = spec.template.metadata.expect("template metadata");
    assert_eq!(template.labels, pod.metadata.labels);
    assert_eq!(template.annotations, pod.metadata.annotations);
    assert_eq!(
        template
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_LAUNCH))
            .map(String::as_str),
        Some("1700000000000")
    );
    assert!(template.name.is_none() && template.namespace.is_none());
    assert_eq!(
        spec.template.spec, pod.spec,
        "the pod template is the bare pod"
    );
    assert_eq!(
        (spec.completions, spec.parallelism, spec.backoff_limit),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
    assert_eq!(spec.active_deadline_seconds, Some(3600));
    assert_eq!(
        spec.ttl_seconds_after_finished,
        Some(86400),
        "the longer TTL"
    );
    assert_eq!(spec.suspend, None);
    let rules = spec.pod_failure_policy.expect("policy").rules;
    type Rule<'a> = (&'a str, Option<&'a str>, Option<(&'a str, &'a [i32])>);
    let shape: Vec<Rule<'_>> = rules
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.on_pod_conditions
                    .as_ref()
                    .and_then(|c| c.first())
                    .map(|c| c.type_.as_str()),
                r.on_exit_codes
                    .as_ref()
                    .map(|e| (e.operator.as_str(), e.values.as_slice())),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("FailJob", Some("DisruptionTarget"), None),
            ("FailJob", None, Some(("NotIn", &[0][..]))),
        ]
    );
    assert!(service.is_none());
}

#[test]
fn a_multi_node_task_is_an_indexed_job_whose_rank_is_the_completion_index() {
    let doc = "agentk8sglue:\n  queues:\n    gpu:\n      queueSettings: {taskAsJob: true, multiNode: [4, 4, 4]}\n";
    let (pods, job) = both(doc, "gpu");
    let RenderedJob { job, service, .. } = job.expect("job mode");
    assert_eq!(pods.pods.len(), 3);
    let spec = job.spec.expect("spec");
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert!(
        !labels.contains_key(LABEL_RANK),
        "no per-rank literal in the template"
    );
    let job_env = spec.template.spec.as_ref().expect("pod").containers[0]
        .env
        .clone()
        .expect("env");
    let rank0 = pods.pods[0].spec.as_ref().expect("pod").containers[0]
        .env
        .clone()
        .expect("env");
    let rank = env(&job_env, "NODE_RANK").expect("NODE_RANK");
    assert_eq!(rank.value, None);
    assert_eq!(
        rank.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
    );
    // the worker id takes the rank from NODE_RANK, defined before it
    let at = |name: &str| job_env.iter().position(|e| e.name == name);
    assert!(at("NODE_RANK") < at("CLEARML_WORKER_ID"));
    assert_eq!(
        env(&job_env, "CLEARML_WORKER_ID").and_then(|e| e.value.as_deref()),
        Some(format!("k8s-agent:clearml:{TASK}:$(NODE_RANK)").as_str())
    );
    // every other variable is rank 0's
    for var in &rank0 {
        if var.name != "NODE_RANK" && var.name != "CLEARML_WORKER_ID" {
            assert_eq!(env(&job_env, &var.name), Some(var), "{}", var.name);
        }
    }
    assert_eq!(
        env(&job_env, "MASTER_ADDR").and_then(|e| e.value.as_deref()),
        Some(format!("{}.clearml.svc", pod_name(TASK, None)).as_str())
    );
    let svc = service.expect("rendezvous service");
    let sel = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .expect("selector");
    assert_eq!(
        sel.into_iter().collect::<Vec<_>>(),
        vec![
            (JOB_COMPLETION_INDEX.to_string(), "0".to_string()),
            (LABEL_TASK_ID.to_string(), TASK.to_string()),
        ]
    );
    assert_eq!(
        svc.spec.and_then(|s| s.ports).map(|p| p[0].port),
        Some(MASTER_PORT)
    );
}

#[test]
fn the_job_ttl_is_the_longer_one_and_fits_the_field() {
    let t = |s: u64, f: u64| Timeouts {
        pending: Duration::ZERO,
        succeeded_ttl: Duration::from_secs(s),
        failed_ttl: Duration::from_secs(f),
    };
    assert_eq!(job_ttl_seconds(&t(300, 86400)), 86400);
    assert_eq!(job_ttl_seconds(&t(900, 60)), 900);
    assert_eq!(job_ttl_seconds(&t(u64::MAX / 2, 1)), i32::MAX);
}

#[test]
fn through_kueue_a_job_is_created_suspended_with_the_queue_name_on_the_job() {
    let cases = [
        // (queue settings, suspended, queue-name label on the Job)
        ("{taskAsJob: true}", None, None),
        (
            "{taskAsJob: true, kueue: {localQueue: team-a}}",
            Some(true),
            Some("team-a"),
        ),
    ];
    for (settings, suspend, label) in cases {
        let doc = format!("agentk8sglue:\n  queues:\n    gpu:\n      queueSettings: {settings}\n");
        let (_, job) = both(&doc, "gpu");
        let job = job.expect("job mode").job;
        let spec = job.spec.as_ref().expect("spec");
        assert_eq!(spec.suspend, suspend, "{settings}");
        let on_job = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::kueue::LABEL_QUEUE_NAME))
            .map(String::as_str);
        assert_eq!(on_job, label, "{settings}");
        // the pods are the Job's: Kueue's pod integration must not gate them a second time
        let on_pods = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .is_some_and(|l| l.contains_key(crate::kueue::LABEL_QUEUE_NAME));
        assert!(!on_pods, "{settings}");
    }
}

#[test]
fn a_jobs_pods_get_the_file_mounts_secrets_it_needs() {
    let doc = "agentk8sglue:\n  taskAsJob: true\n  basePodTemplate:\n    fileMounts:\n      - {name: pip.conf, folderPath: /etc, fileContent: x}\n  queues:\n    gpu: {}\n";
    let (pods, job) = both(doc, "gpu");
    let job = job.expect("job mode");
    assert_eq!(job.secrets.len(), 1);
    assert_eq!(job.secrets, pods.secrets, "the same Secret as bare pods");
}
