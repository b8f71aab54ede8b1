//! `batch/v1` Jobs: the API server's defaults and refusals, and the Job controller, TTL
//! controller and garbage collector as a client observes them (`pkg/controller/job`).

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

use super::common::{Env, env, status};

const WAIT: Duration = Duration::from_secs(10);
const NS: &str = "default";

fn job(name: &str, spec: Value) -> Job {
    let mut full = json!({
        "template": {
            "metadata": {"labels": {"clearml-task-id": "t1"}, "annotations": {"clearml.ai/launch": "L"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "task", "image": "busybox"}]},
        },
    });
    if let (Value::Object(f), Value::Object(s)) = (&mut full, spec) {
        f.extend(s);
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"clearml-task-id": "t1"}},
        "spec": full,
    }))
    .expect("job literal")
}

fn policy() -> Value {
    json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
    ]})
}

async fn create(env: &Env, j: &Job) -> Job {
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), NS);
    jobs.create(&PostParams::default(), j)
        .await
        .expect("create job")
}

/// The pods owned by Job `uid`, once `n` exist (unfinished ones).
async fn pods_of(env: &Env, uid: &str, n: usize) -> Vec<Value> {
    env.double
        .wait_for(WAIT, |v| {
            let pods: Vec<Value> = v
                .list("pods", Some(NS))
                .into_iter()
                .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
                .filter(|p| {
                    !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .cloned()
                .collect();
            (pods.len() == n).then_some(pods)
        })
        .await
        .expect("pods created")
}

/// Waits for condition `ty` = True on Job `name`; returns the Job.
async fn condition(env: &Env, name: &str, ty: &str) -> Value {
    env.double
        .wait_for(WAIT, |v| {
            let j = v.get("jobs", NS, name)?;
            j["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == ty && c["status"] == "True")
                .then(|| j.clone())
        })
        .await
        .unwrap_or_else(|_| panic!("condition {ty} on {name}"))
}

fn cond<'a>(j: &'a Value, ty: &str) -> &'a Value {
    j["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}

fn name(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_job_is_defaulted_and_its_pod_named_labelled_and_owned_like_the_controllers() {
    let env = env().await;
    let created = create(
        &env,
        &job(
            "train",
            json!({"backoffLimit": 0, "podFailurePolicy": policy()}),
        ),
    )
    .await;
    let j = serde_json::to_value(&created).expect("json");
    let uid = j["metadata"]["uid"].as_str().expect("uid").to_string();
    assert_eq!(
        j["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &j["spec"]["template"]["metadata"]["labels"];
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/job-name", "train"),
        ("job-name", "train"),
        ("clearml-task-id", "t1"),
    ] {
        assert_eq!(labels[k], v, "{k}");
    }
    assert_eq!(
        (
            &j["spec"]["completions"],
            &j["spec"]["parallelism"],
            &j["spec"]["completionMode"],
            &j["spec"]["suspend"],
            &j["spec"]["podReplacementPolicy"],
        ),
        (
            &json!(1),
            &json!(1),
            &json!("NonIndexed"),
            &json!(false),
            &json!("Failed")
        )
    );
    let pods = pods_of(&env, &uid, 1).await;
    let p = &pods[0];
    let suffix = name(p)
        .strip_prefix("train-")
        .expect("named <job>-<random>");
    assert_eq!(suffix.len(), 5);
    assert_eq!(p["metadata"]["labels"]["clearml-task-id"], "t1");
    assert_eq!(
        p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "train"
    );
    assert_eq!(p["metadata"]["annotations"]["clearml.ai/launch"], "L");
    assert_eq!(
        p["metadata"]["ownerReferences"],
        json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": uid,
                "controller": true, "blockOwnerDeletion": true}])
    );
    assert!(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].is_null());

    env.double.set_pod_running(NS, name(p)).expect("running");
    env.double
        .set_pod_succeeded(NS, name(p))
        .expect("succeeded");
    let done = condition(&env, "train", "Complete").await;
    assert_eq!(cond(&done, "SuccessCriteriaMet")["status"], "True");
    assert_eq!(done["status"]["succeeded"], 1);
    assert_eq!(done["status"]["active"], 0);
    assert!(done["status"]["completionTime"].is_string());
    assert!(done["status"]["startTime"].is_string());
}

#[tokio::test]
async fn an_indexed_job_gives_each_pod_its_completion_index() {
    let env = env().await;
    let j = create(
        &env,
        &job(
            "multi",
            json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3}),
        ),
    )
    .await;
    let uid = j.metadata.uid.expect("uid");
    let mut pods = pods_of(&env, &uid, 3).await;
    pods.sort_by_key(|p| {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .map(str::to_string)
    });
    for (i, p) in pods.iter().enumerate() {
        let i = i.to_string();
        assert!(name(p).starts_with(&format!("multi-{i}-")), "{}", name(p));
        assert_eq!(
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"],
            i
        );
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            i
        );
        assert_eq!(p["spec"]["hostname"], format!("multi-{i}"));
        let env_var = p["spec"]["containers"][0]["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == "JOB_COMPLETION_INDEX"))
            .cloned()
            .expect("JOB_COMPLETION_INDEX");
        assert_eq!(
            env_var["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
    }
    for p in &pods[..2] {
        env.double
            .set_pod_succeeded(NS, name(p))
            .expect("succeeded");
    }
    let partial = env
        .double
        .wait_for(WAIT, |v| {
            let j = v.get("jobs", NS, "multi")?;
            (j["status"]["completedIndexes"] == "0-1").then(|| j.clone())
        })
        .await
        .expect("indexes counted");
    assert!(cond(&partial, "Complete").is_null());
    env.double
        .set_pod_succeeded(NS, name(&pods[2]))
        .expect("succeeded");
    let done = condition(&env, "multi", "Complete").await;
    assert_eq!(done["status"]["completedIndexes"], "0-2");
}

#[tokio::test]
async fn the_pod_failure_policy_ignores_disruptions_and_fails_the_job_on_an_exit_code() {
    let env = env().await;
    let j = create(
        &env,
        &job(
            "pfp",
            json!({"backoffLimit": 0, "podFailurePolicy": policy()}),
        ),
    )
    .await;
    let uid = j.metadata.uid.expect("uid");
    let first = pods_of(&env, &uid, 1).await.remove(0);
    env.double
        .set_pod_disrupted(NS, name(&first), "PreemptionByScheduler", "preempted")
        .expect("disrupted");
    // not counted: a replacement comes
    let second = env
        .double
        .wait_for(WAIT, |v| {
            v.list("pods", Some(NS))
                .into_iter()
                .find(|p| {
                    p["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
                        && name(p) != name(&first)
                })
                .cloned()
        })
        .await
        .expect("replacement");
    let j = env.double.get("jobs", NS, "pfp").expect("job");
    assert!(j["status"]["failed"].is_null(), "{}", j["status"]);
    env.double
        .set_pod_running(NS, name(&second))
        .expect("running");
    env.double
        .set_pod_failed(NS, name(&second), 3, "Error")
        .expect("failed");
    let failed = condition(&env, "pfp", "Failed").await;
    let c = cond(&failed, "Failed");
    assert_eq!(c["reason"], "PodFailurePolicy");
    assert_eq!(
        c["message"],
        format!(
            "Container task for pod {NS}/{} failed with exit code 3 matching FailJob rule at index 1",
            name(&second)
        )
    );
    assert_eq!(cond(&failed, "FailureTarget")["reason"], "PodFailurePolicy");
    assert_eq!(failed["status"]["failed"], 1);
}

#[tokio::test]
async fn backoff_limit_and_active_deadline_fail_the_job_with_their_reasons() {
    let env = env().await;
    let j = create(&env, &job("backoff", json!({"backoffLimit": 0}))).await;
    let p = pods_of(&env, &j.metadata.uid.expect("uid"), 1)
        .await
        .remove(0);
    env.double.set_pod_oom_killed(NS, name(&p)).expect("oom");
    let failed = condition(&env, "backoff", "Failed").await;
    assert_eq!(cond(&failed, "Failed")["reason"], "BackoffLimitExceeded");
    assert_eq!(
        cond(&failed, "Failed")["message"],
        "Job has reached the specified backoff limit"
    );

    let j = create(&env, &job("deadline", json!({"activeDeadlineSeconds": 1}))).await;
    let p = pods_of(&env, &j.metadata.uid.expect("uid"), 1)
        .await
        .remove(0);
    env.double.set_pod_running(NS, name(&p)).expect("running");
    let failed = condition(&env, "deadline", "Failed").await;
    assert_eq!(cond(&failed, "Failed")["reason"], "DeadlineExceeded");
    // the running pod was deleted first
    assert!(
        env.double
            .get("pods", NS, name(&p))
            .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null())
    );
}

#[tokio::test]
async fn a_suspended_job_has_no_pods_until_resumed() {
    let env = env().await;
    let j = create(&env, &job("held", json!({"suspend": true}))).await;
    let uid = j.metadata.uid.expect("uid");
    let held = condition(&env, "held", "Suspended").await;
    assert_eq!(cond(&held, "Suspended")["reason"], "JobSuspended");
    assert!(held["status"]["startTime"].is_null());
    assert!(
        env.double
            .list("pods", Some(NS))
            .iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["uid"] != uid.as_str())
    );
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), NS);
    jobs.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    pods_of(&env, &uid, 1).await;
    let resumed = env.double.get("jobs", NS, "held").expect("job");
    assert_eq!(cond(&resumed, "Suspended")["status"], "False");
    assert_eq!(cond(&resumed, "Suspended")["reason"], "JobResumed");
}

#[tokio::test]
async fn ttl_after_finished_deletes_the_job_and_its_pods() {
    let env = env().await;
    let j = create(&env, &job("ttl", json!({"ttlSecondsAfterFinished": 1}))).await;
    let p = pods_of(&env, &j.metadata.uid.expect("uid"), 1)
        .await
        .remove(0);
    env.double
        .set_pod_succeeded(NS, name(&p))
        .expect("succeeded");
    condition(&env, "ttl", "Complete").await;
    env.double
        .wait_for(WAIT, |v| {
            (v.get("jobs", NS, "ttl").is_none() && v.get("pods", NS, name(&p)).is_none())
                .then_some(())
        })
        .await
        .expect("job and pod deleted after the TTL");
}

#[tokio::test]
async fn deletion_propagation_orphans_or_collects_the_pods() {
    let env = env().await;
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), NS);
    // unset: batch/v1 orphans
    let j = create(&env, &job("orphan", json!({}))).await;
    let p = pods_of(&env, &j.metadata.uid.expect("uid"), 1)
        .await
        .remove(0);
    jobs.delete("orphan", &DeleteParams::default())
        .await
        .expect("delete");
    let left = env.double.get("pods", NS, name(&p)).expect("pod kept");
    assert!(
        left["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
    // background: the Job goes now, its pods (and a Service it owns) after
    let j = create(&env, &job("bg", json!({}))).await;
    let uid = j.metadata.uid.expect("uid");
    let p = pods_of(&env, &uid, 1).await.remove(0);
    env.double
        .create(
            "services",
            NS,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "bg", "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": "bg", "uid": uid}]},
                "spec": {"clusterIP": "None", "ports": [{"port": 29500}]}}),
        )
        .expect("service");
    jobs.delete("bg", &DeleteParams::background())
        .await
        .expect("delete");
    assert!(env.double.get("jobs", NS, "bg").is_none());
    env.double
        .wait_for(WAIT, |v| {
            (v.get("pods", NS, name(&p)).is_none() && v.get("services", NS, "bg").is_none())
                .then_some(())
        })
        .await
        .expect("pod and Service collected");
    // foreground: the Job stays, marked, until its pods are gone
    let j = create(&env, &job("fg", json!({}))).await;
    let p = pods_of(&env, &j.metadata.uid.expect("uid"), 1)
        .await
        .remove(0);
    env.double.set_pod_running(NS, name(&p)).expect("running");
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    jobs.delete("fg", &dp).await.expect("delete");
    let marked = env
        .double
        .get("jobs", NS, "fg")
        .expect("job kept while its pod terminates");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    env.double
        .wait_for(WAIT, |v| {
            (v.get("jobs", NS, "fg").is_none() && v.get("pods", NS, name(&p)).is_none())
                .then_some(())
        })
        .await
        .expect("foreground deletion finished");
}

#[tokio::test]
async fn the_api_server_refuses_what_a_job_cannot_be() {
    let env = env().await;
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), NS);
    let mut always = job("always", json!({}));
    always
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod")
        .restart_policy = Some("Always".into());
    let s = status(
        jobs.create(&PostParams::default(), &always)
            .await
            .expect_err("refused"),
    );
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("spec.template.spec.restartPolicy"),
        "{}",
        s.message
    );
    let bad_policy = job(
        "zero",
        json!({"podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0]}}]}}),
    );
    let s = status(
        jobs.create(&PostParams::default(), &bad_policy)
            .await
            .expect_err("refused"),
    );
    assert!(
        s.message.contains("must not be 0 for the In operator"),
        "{}",
        s.message
    );
    let indexed = job(
        "idx",
        json!({"completionMode": "Indexed", "completions": null, "parallelism": 2}),
    );
    let s = status(
        jobs.create(&PostParams::default(), &indexed)
            .await
            .expect_err("refused"),
    );
    assert!(s.message.contains("spec.completions"), "{}", s.message);
}
