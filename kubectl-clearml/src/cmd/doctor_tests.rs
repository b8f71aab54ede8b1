//! Table tests of the doctor's verdicts: each fact → the check's level, message and fix.

use clearml_agent_proto::v1::{ClearmlConnection, QueueSummary};
use serde_json::json;

use super::*;
use crate::output::OutputFormat;

fn values(yaml: &str) -> Values {
    Values::from_yaml(yaml).expect("valid values")
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).expect("pod")
}

fn ready_pod() -> Pod {
    pod(json!({
        "metadata": {"name": "clearml-agent-1"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    }))
}

fn crashing_pod(message: &str) -> Pod {
    pod(json!({
        "metadata": {"name": "clearml-agent-2"},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}
        }]}
    }))
}

fn deployment(replicas: i32, available: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": AGENT_NAME},
        "spec": {"replicas": replicas, "selector": {}, "template": {}},
        "status": {"availableReplicas": available}
    }))
    .expect("deployment")
}

#[test]
fn the_required_access_is_every_verb_of_the_rendered_role() {
    let roles = rendered_roles(None, "ml");
    assert!(!roles.is_empty(), "install renders a Role");
    let access = required_access(&roles, "ml", "ml");
    let rules: usize = roles
        .iter()
        .flat_map(|r| r.rules.iter().flatten())
        .map(|r| r.verbs.len() * r.resources.as_ref().map_or(0, Vec::len))
        .sum();
    assert_eq!(access.len(), rules, "one review per verb and resource");
    let has = |verb: &str, group: &str, resource: &str, ns: &str| {
        access.iter().any(|a| {
            a.verb == verb && a.group == group && a.resource == resource && a.namespace == ns
        })
    };
    assert!(has("create", "", "pods", "ml"));
    assert!(has("patch", "coordination.k8s.io", "leases", "ml"));
    // a separate task namespace: the agent's pods, Services and events are reviewed there too
    let split = required_access(&roles, "ml", "tasks");
    assert!(
        split
            .iter()
            .any(|a| a.namespace == "tasks" && a.resource == "pods")
    );
    assert!(
        !split
            .iter()
            .any(|a| a.namespace == "tasks" && a.resource == "configmaps"),
        "the ConfigMap stays in the agent's namespace"
    );
    // every resource the agent uses in the task namespace is one the Role grants
    for resource in TASK_NAMESPACE_RESOURCES {
        assert!(
            access.iter().any(|a| a.resource == *resource),
            "{resource} is not in the Role"
        );
    }
}

#[test]
fn log_excerpts_start_at_the_error_and_stop_at_the_backtrace() {
    let crashed = "INFO a\nINFO b\nError: cannot log in to ClearML\n\nCaused by:\n    401\nStack backtrace:\n   0: main\n";
    assert_eq!(
        log_excerpt(crashed, 10),
        ["Error: cannot log in to ClearML", "Caused by:", "    401"]
    );
    let plain = (1..=15).map(|i| format!("line {i}\n")).collect::<String>();
    let tail = log_excerpt(&plain, 3);
    assert_eq!(tail, ["line 13", "line 14", "line 15"]);
    assert!(log_excerpt("", 3).is_empty());
}

#[test]
fn login_failures_are_read_from_the_line_or_its_cause() {
    let cases = [
        (
            "x\nError: cannot log in to ClearML: 401 Unauthorized\n",
            Some("401 Unauthorized"),
        ),
        (
            "Error: cannot log in to ClearML\n\nCaused by:\n    ClearML auth.login returned 401/22\nStack backtrace:\n 0: x\n",
            Some("ClearML auth.login returned 401/22"),
        ),
        (
            "Error: cannot log in to ClearML\n\nCaused by:\n    0: outer\n    1: inner\n",
            Some("outer"),
        ),
        ("Error: cannot log in to ClearML\n", Some("no reason given")),
        ("Error: something else\n", None),
    ];
    for (text, want) in cases {
        assert_eq!(login_failure(text).as_deref(), want, "{text:?}");
    }
}

#[test]
fn rbac_verdicts_name_each_missing_permission() {
    let access = |verb: &str| Access {
        namespace: "ml".into(),
        group: String::new(),
        resource: "pods".into(),
        verb: verb.into(),
        name: String::new(),
    };
    let reviewed = |answers: Vec<(Access, Review)>| Rbac::Reviewed {
        service_account: "clearml-agent".into(),
        answers,
    };
    let cases = [
        (
            reviewed(vec![(access("get"), Review::Allowed)]),
            false,
            Level::Ok,
            vec![],
        ),
        (
            reviewed(vec![
                (access("get"), Review::Allowed),
                (access("delete"), Review::Denied),
            ]),
            false,
            Level::Fail,
            vec!["delete pods in namespace ml".to_string()],
        ),
        // before install, the missing Role is install's to create
        (
            reviewed(vec![(access("delete"), Review::Denied)]),
            true,
            Level::Warn,
            vec!["delete pods in namespace ml".to_string()],
        ),
        (
            reviewed(vec![(access("get"), Review::Unknown("forbidden".into()))]),
            false,
            Level::Warn,
            vec!["get pods in namespace ml: forbidden".to_string()],
        ),
        (
            Rbac::NotChecked("no namespace".into()),
            false,
            Level::Warn,
            vec![],
        ),
    ];
    for (i, (rbac, preflight, level, details)) in cases.into_iter().enumerate() {
        let c = rbac_check("ml", &rbac, preflight);
        assert_eq!(c.status, level, "case {i}: {c:?}");
        assert_eq!(c.details, details, "case {i}");
        assert_eq!(c.fix.is_some(), level != Level::Ok, "case {i}");
    }
}

#[test]
fn the_agent_check_explains_a_pod_that_is_not_ready() {
    let log =
        "2026-01-01T00:00:00Z  INFO starting\nError: cannot log in to ClearML: 401 Unauthorized\n";
    type Case<'a> = (Read<Deployment>, PodLogs, bool, Level, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            Ok(Some(deployment(1, 1))),
            vec![(ready_pod(), String::new())],
            false,
            Level::Ok,
            "1/1 replicas available (pod clearml-agent-1 Ready)",
        ),
        (
            Ok(Some(deployment(1, 0))),
            vec![(crashing_pod(""), log.to_string())],
            false,
            Level::Fail,
            "pod clearml-agent-2: CrashLoopBackOff (back-off 40s restarting failed container); last exit code 1 (Error); 3 restarts",
        ),
        (
            Ok(None),
            vec![],
            false,
            Level::Fail,
            "Deployment clearml-agent not found",
        ),
        (Ok(None), vec![], true, Level::Warn, "does not exist yet"),
        (
            Ok(Some(deployment(0, 0))),
            vec![],
            false,
            Level::Fail,
            "scaled to 0",
        ),
        (
            Ok(Some(deployment(1, 0))),
            vec![],
            false,
            Level::Fail,
            "no agent pod exists",
        ),
    ];
    for (i, (d, pods, preflight, level, text)) in cases.into_iter().enumerate() {
        let c = agent_check("ml", &d, &Ok(pods), preflight);
        assert_eq!(c.status, level, "case {i}: {c:?}");
        assert!(c.message.contains(text), "case {i}: {}", c.message);
    }
    let c = agent_check(
        "ml",
        &Ok(Some(deployment(1, 0))),
        &Ok(vec![(crashing_pod(""), log.to_string())]),
        false,
    );
    assert_eq!(
        c.details.last().map(String::as_str),
        Some("log: Error: cannot log in to ClearML: 401 Unauthorized")
    );
    assert_eq!(
        c.fix.as_deref(),
        Some("kubectl -n ml describe pod clearml-agent-2; kubectl -n ml logs clearml-agent-2")
    );
}

fn status(state: State, last_error: &str, queues: &[(&str, &str)]) -> AgentAnswer {
    AgentAnswer::Status(Box::new(GetStatusResponse {
        clearml: Some(ClearmlConnection {
            state: state as i32,
            api_server: "https://api.example".into(),
            last_error: last_error.into(),
            server_version: "2.3.0 (API 2.33)".into(),
            ..Default::default()
        }),
        queues: queues
            .iter()
            .map(|(name, id)| QueueSummary {
                name: name.to_string(),
                id: id.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }))
}

#[test]
fn the_clearml_check_reads_the_agent_or_its_crash() {
    let crashed = |message: &str, log: &str| Ok(vec![(crashing_pod(message), log.to_string())]);
    type Case<'a> = (AgentAnswer, AgentPods, Level, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            status(State::Ok, "", &[]),
            Ok(vec![]),
            Level::Ok,
            "reaches ClearML at https://api.example, server 2.3.0 (API 2.33)",
        ),
        (
            status(State::Degraded, "timeout", &[]),
            Ok(vec![]),
            Level::Warn,
            "timeout",
        ),
        (
            status(State::Down, "connection refused", &[]),
            Ok(vec![]),
            Level::Fail,
            "connection refused",
        ),
        (
            AgentAnswer::NotAsked,
            crashed(
                "",
                "x\nError: cannot log in to ClearML: ClearML answered 401 on auth.login\n",
            ),
            Level::Fail,
            "cannot log in to ClearML: ClearML answered 401 on auth.login",
        ),
        // the termination message, when the log is gone
        (
            AgentAnswer::NotAsked,
            crashed("Error: cannot log in to ClearML: 401", ""),
            Level::Fail,
            "cannot log in to ClearML: 401",
        ),
        (
            AgentAnswer::NotAsked,
            crashed("", "other failure"),
            Level::Warn,
            "not checked",
        ),
        (
            AgentAnswer::Error("refused".into()),
            Ok(vec![]),
            Level::Fail,
            "refused",
        ),
    ];
    for (i, (agent, pods, level, text)) in cases.into_iter().enumerate() {
        let c = clearml_check("ml", &agent, &pods, CREDENTIALS_SECRET);
        assert_eq!(c.status, level, "case {i}: {c:?}");
        assert!(c.message.contains(text), "case {i}: {}", c.message);
    }
    let c = clearml_check(
        "ml",
        &AgentAnswer::NotAsked,
        &crashed("", "Error: cannot log in to ClearML: 401"),
        "my-creds",
    );
    assert!(
        c.fix
            .as_deref()
            .is_some_and(|f| f.contains("Secret my-creds")),
        "{c:?}"
    );
}

#[test]
fn queues_must_exist_in_clearml_unless_the_agent_creates_them() {
    let off = values("agentk8sglue:\n  queues:\n    q-a: {}\n    q-b: {}\n");
    let on = values("agentk8sglue:\n  createQueues: true\n  queues:\n    q-a: {}\n    q-b: {}\n");
    let chart = values("agentk8sglue:\n  queue: q-a q-b\n  createQueueIfNotExists: false\n");
    let both = status(State::Ok, "", &[("q-a", "id-a"), ("q-b", "")]);
    let cases: Vec<(&Values, AgentAnswer, Vec<Level>)> = vec![
        (&off, both.clone(), vec![Level::Ok, Level::Fail]),
        (&chart, both.clone(), vec![Level::Ok, Level::Fail]),
        (&on, both.clone(), vec![Level::Ok, Level::Warn]),
        // a queue of the file the running agent does not serve yet
        (
            &off,
            status(State::Ok, "", &[("q-a", "id-a")]),
            vec![Level::Ok, Level::Warn],
        ),
        (&off, AgentAnswer::NotAsked, vec![Level::Warn, Level::Warn]),
    ];
    for (i, (v, agent, levels)) in cases.into_iter().enumerate() {
        let got: Vec<Level> = queue_checks(v, &agent).iter().map(|c| c.status).collect();
        assert_eq!(got, levels, "case {i}");
    }
    let fail = &queue_checks(&off, &both)[1];
    assert_eq!(fail.name, "queue/q-b");
    assert!(
        fail.fix
            .as_deref()
            .is_some_and(|f| f.contains("agentk8sglue.createQueues: true")),
        "{fail:?}"
    );
    let none = queue_checks(&values("agentk8sglue: {}\n"), &both);
    assert_eq!(none.len(), 1);
    assert_eq!(none[0].status, Level::Warn);
}

fn secret(data: serde_json::Value) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": "s"}, "data": data})).expect("secret")
}

#[test]
fn the_credentials_secret_needs_both_keys() {
    let with_keys = values("clearml:\n  agentk8sglueKey: k\n  agentk8sglueSecret: s\n");
    let existing = values("clearml:\n  existingAgentk8sglueSecret: mine\n");
    type Case<'a> = (Read<Secret>, bool, Option<&'a Values>, Level, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            Ok(Some(secret(
                json!({"agentk8sglue_key": "aw==", "agentk8sglue_secret": "cw=="}),
            ))),
            false,
            None,
            Level::Ok,
            "has agentk8sglue_key and agentk8sglue_secret",
        ),
        (
            Ok(Some(secret(json!({"agentk8sglue_key": "aw=="})))),
            false,
            None,
            Level::Fail,
            "lacks agentk8sglue_secret",
        ),
        (
            Ok(Some(secret(
                json!({"agentk8sglue_key": "", "agentk8sglue_secret": ""}),
            ))),
            false,
            None,
            Level::Fail,
            "lacks agentk8sglue_key and agentk8sglue_secret",
        ),
        (Ok(None), false, None, Level::Fail, "not found"),
        // before install: the values carry the keys, install creates the Secret
        (
            Ok(None),
            true,
            Some(&with_keys),
            Level::Warn,
            "does not exist yet",
        ),
        // an existing Secret named in the values is never created by install
        (Ok(None), true, Some(&existing), Level::Fail, "not found"),
        (
            Err("forbidden".into()),
            false,
            None,
            Level::Warn,
            "cannot read",
        ),
    ];
    for (i, (s, preflight, v, level, text)) in cases.into_iter().enumerate() {
        let c = secret_check("secret", "ml", "s", &s, preflight, v);
        assert_eq!(c.status, level, "case {i}: {c:?}");
        assert!(c.message.contains(text), "case {i}: {}", c.message);
    }
    assert_eq!(secret_name(Some(&existing)), "mine");
    assert_eq!(secret_name(None), CREDENTIALS_SECRET);
}

#[test]
fn the_gang_check_fails_only_a_queue_requiring_an_unserved_pod_group_api() {
    let values = Values::from_yaml(
        "agentk8sglue:\n  queues:\n    auto: {}\n    strict:\n      queueSettings:\n        gangScheduling: podGroup\n",
    )
    .expect("values");
    let plain = Values::from_yaml("agentk8sglue:\n  queues:\n    auto: {}\n").expect("values");
    let v1beta1 = Ok(Some("scheduling.k8s.io/v1beta1".to_string()));
    for (what, values, served, level, needle) in [
        (
            "served",
            &values,
            v1beta1,
            Level::Ok,
            "(scheduling.k8s.io/v1beta1)",
        ),
        (
            "not served, nobody requires it",
            &plain,
            Ok(None),
            Level::Ok,
            "agent's gang timeout",
        ),
        (
            "not served, strict requires it",
            &values,
            Ok(None),
            Level::Fail,
            "podGroup for strict",
        ),
        (
            "discovery failed",
            &values,
            Err("forbidden".to_string()),
            Level::Warn,
            "forbidden",
        ),
    ] {
        let c = gang_check(values, &served);
        assert_eq!(c.status, level, "{what}: {c:?}");
        assert!(c.message.contains(needle), "{what}: {c:?}");
        assert_eq!(c.fix.is_some(), level != Level::Ok, "{what}: {c:?}");
    }
}

#[test]
fn pull_secrets_come_from_the_base_and_every_queue() {
    let v = values(
        "agentk8sglue:\n  basePodTemplate:\n    imagePullSecrets: [{name: base}]\n  queues:\n    q-a:\n      templateOverrides:\n        imagePullSecrets: [{name: extra}]\n    q-b: {}\n",
    );
    assert_eq!(pull_secret_names(&v), vec!["base", "extra"]);
}

fn facts() -> Facts {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": AGENT_NAME},
        "data": {"values.yaml": "agentk8sglue:\n  queues:\n    q-a: {}\n"}
    }))
    .expect("configmap");
    Facts {
        namespace: "ml".into(),
        preflight: false,
        file_values: None,
        namespace_exists: Ok(Some(())),
        configmap: Ok(Some(cm)),
        secret: (
            CREDENTIALS_SECRET.into(),
            Ok(Some(secret(
                json!({"agentk8sglue_key": "aw==", "agentk8sglue_secret": "cw=="}),
            ))),
        ),
        rbac: Rbac::Reviewed {
            service_account: AGENT_NAME.into(),
            answers: vec![],
        },
        deployment: Ok(Some(deployment(1, 1))),
        pods: Ok(vec![(ready_pod(), String::new())]),
        agent: status(State::Ok, "", &[("q-a", "id-a")]),
        task_namespace: None,
        pull_secrets: vec![],
        pod_group_api: Ok(None),
    }
}

#[test]
fn a_healthy_install_is_all_ok_and_invalid_values_list_every_error() {
    let all = checks(&facts());
    let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "values",
            "notices",
            "namespace",
            "secret",
            "configmap",
            "rbac",
            "agent",
            "clearml",
            "queue/q-a",
            "task-namespace",
            "pull-secrets",
            "gang"
        ]
    );
    assert!(all.iter().all(|c| c.status == Level::Ok), "{all:#?}");

    let mut broken = facts();
    broken.file_values = Some(Err(vec!["a: x".into(), "b: y".into()]));
    broken.preflight = true;
    let c = &checks(&broken)[0];
    assert_eq!(c.status, Level::Fail);
    assert_eq!(c.message, "the values file is invalid (2 errors)");
    assert_eq!(c.details, ["a: x", "b: y"]);

    let mut bad_cm = facts();
    if let Ok(Some(cm)) = &mut bad_cm.configmap {
        cm.data = Some(
            [(
                VALUES_KEY.to_string(),
                "agentk8sglue:\n  queus: {}\n  pollIntervalSeconds: 0\n".to_string(),
            )]
            .into(),
        );
    }
    let all = checks(&bad_cm);
    let values_check = &all[0];
    assert_eq!(values_check.status, Level::Fail);
    assert_eq!(values_check.details.len(), 2, "{values_check:?}");
    assert!(values_check.details[0].starts_with("agentk8sglue.queus"));
}

#[test]
fn the_report_prints_one_line_per_check_with_its_fix_and_json_is_stable() {
    let view = DoctorView::new(
        "ml",
        vec![
            Check::ok("values", "fine"),
            Check::fail("queue/b", "missing", "create it").with_details(vec!["why".into()]),
        ],
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    output::render(&view, OutputFormat::Table, &mut out, &mut err).expect("render");
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "OK    values   fine\n\
         FAIL  queue/b  missing\n\
         \x20                why\n\
         \x20              fix: create it\n\
         \n1 OK, 0 WARN, 1 FAIL\n"
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    output::render(&view, OutputFormat::Json, &mut out, &mut err).expect("render");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["namespace"], "ml");
    assert_eq!(v["summary"], json!({"ok": 1, "warn": 0, "fail": 1}));
    assert_eq!(
        v["checks"][1],
        json!({"name": "queue/b", "status": "fail", "message": "missing", "details": ["why"], "fix": "create it"})
    );
    assert_eq!(v["checks"][0]["fix"], serde_json::Value::Null);
}

#[test]
fn a_separate_task_namespace_needs_to_exist_with_the_secret_and_the_pull_secrets() {
    let mut f = facts();
    f.task_namespace = Some(("tasks".into(), Ok(None), Ok(None)));
    f.pull_secrets = vec![
        ("regcred".into(), Ok(None)),
        ("present".into(), Ok(Some(secret(json!({}))))),
    ];
    let all = checks(&f);
    let level = |name: &str| {
        all.iter()
            .find(|c| c.name == name)
            .map(|c| c.status)
            .unwrap_or_else(|| panic!("no check {name}: {all:#?}"))
    };
    assert_eq!(level("task-namespace"), Level::Fail);
    assert_eq!(level("task-secret"), Level::Fail);
    assert_eq!(level("pull-secret/regcred"), Level::Fail);
    assert_eq!(level("pull-secret/present"), Level::Ok);
    assert!(all.iter().all(|c| c.name != "pull-secrets"));
    let regcred = all
        .iter()
        .find(|c| c.name == "pull-secret/regcred")
        .expect("check");
    assert!(
        regcred.fix.as_deref().is_some_and(
            |f| f.starts_with("kubectl -n tasks create secret docker-registry regcred")
        ),
        "{regcred:?}"
    );
}
