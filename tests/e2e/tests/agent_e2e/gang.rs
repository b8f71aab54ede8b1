//! The native gang path: on a cluster that serves the PodGroup API (the Kubernetes double
//! switched to `scheduling.k8s.io/v1beta1` as 1.37 serves it, or `v1alpha2` as 1.36 does), a
//! multi-node task's ranks join one PodGroup per launch and the double's scheduler binds all of
//! them or none (the GangScheduling plugin's rule). A task that cannot fit starts no rank, is not
//! released by the agent, and starts whole once capacity appears; an Indexed Job's pods do the
//! same; a PodGroup lost in a crash is created again by the next agent; a queue that requires the
//! API fails its multi-node tasks with why on a cluster without it.

use clearml_doubles::k8s::PodGroupApi;

use super::retry::{OneAttempt, free_gpus, gang_sim, gang_values, hold_two_gpus, log_of, pods_of};
use super::*;

/// The PodGroups in the task namespace.
fn pod_groups(env: &Env) -> Vec<Value> {
    env.kube.list("podgroups", Some(NS))
}

/// Two GPUs held by other tasks, a 3-rank gang (one GPU each) on 4 GPUs: no rank is bound, the
/// task is explained (not released, though its gang timeout is 1 s), its PodGroup has
/// `minCount: 3` and is owned by the three ranks; once the GPUs are free it starts whole, in one
/// launch, and the PodGroup goes with the ranks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_in_a_pod_group_starts_no_rank_until_all_fit() {
    let env = Env::new(gang_sim()).await;
    env.kube.set_pod_group_api(Some(PodGroupApi::V1beta1));
    let values = gang_values(600).replace(
        "  pendingTimeoutSeconds: 600\n",
        "  pendingTimeoutSeconds: 600\n  succeededPodTtlSeconds: 1\n",
    );
    let agent = env.agent(&values).await;
    let holders = hold_two_gpus(&env).await;
    let task = env.enqueue("pg-gang", "gang", "sim/sleep-300");
    let watch = OneAttempt::watch(&env, &task);
    // explained with the scheduler's message, and no rank bound
    env.task_until(&task, "explained: the gang does not fit", |t| {
        s(t, "/status_message").contains("Insufficient nvidia.com/gpu")
    })
    .await;
    let pods = pods_of(&env, &task);
    assert_eq!(pods.len(), 3, "{pods:#?}");
    assert!(
        pods.iter().all(|p| p.pointer("/spec/nodeName").is_none()),
        "no rank bound: {pods:#?}"
    );
    let groups = pod_groups(&env);
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let group = &groups[0];
    assert_eq!(s(group, "/apiVersion"), "scheduling.k8s.io/v1beta1");
    assert_eq!(
        group.pointer("/spec/schedulingPolicy/gang/minCount"),
        Some(&json!(3)),
        "{group:#}"
    );
    let name = s(group, "/metadata/name").to_string();
    assert!(
        pods.iter()
            .all(|p| s(p, "/spec/schedulingGroup/podGroupName") == name),
        "every rank in the group: {pods:#?}"
    );
    let mut owners: Vec<&str> = group
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .expect("owners")
        .iter()
        .map(|o| s(o, "/uid"))
        .collect();
    let mut uids: Vec<&str> = pods.iter().map(|p| s(p, "/metadata/uid")).collect();
    owners.sort_unstable();
    uids.sort_unstable();
    assert_eq!(owners, uids, "owned by the ranks");
    // three gang timeouts pass: the agent leaves the gang to the scheduler (no release; nothing
    // to wait for instead, the point is that nothing happens)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = env.task(&task);
    assert!(
        !s(&t, "/status_message").starts_with("K8S retried"),
        "not released: {t:#}"
    );
    assert!(
        pods_of(&env, &task)
            .iter()
            .all(|p| p.pointer("/spec/nodeName").is_none()),
        "still no rank bound"
    );
    // capacity appears: the gang starts whole and completes, in its first launch
    free_gpus(&env, &holders);
    env.task_status(&task, "completed").await;
    let launches = watch.launches().await;
    assert_eq!(launches.len(), 1, "one launch: {launches:?}");
    assert!(
        !log_of(&env, &task)
            .iter()
            .any(|l| l.contains("releasing every rank")),
        "never released"
    );
    // the ranks go after their TTL, the PodGroup with them (the garbage collector)
    env.kube
        .wait_for(WAIT, |v| {
            v.list("podgroups", Some(NS)).is_empty().then_some(())
        })
        .await
        .expect("the PodGroup is deleted with its ranks");
    let metrics = agent.metrics().await.expect("metrics");
    assert!(!metrics.contains("reason=\"GangTimeout\""), "{metrics}");
}

/// Kubernetes 1.36 (`v1alpha2`), Job mode: the Indexed Job's pods join the launch's PodGroup,
/// which the Job owns; the task completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_joins_a_pod_group_on_1_36() {
    let env = Env::new(gang_sim()).await;
    env.kube.set_pod_group_api(Some(PodGroupApi::V1alpha2));
    let values = gang_values(600).replace(
        "        gangTimeoutSeconds: 1\n",
        "        gangTimeoutSeconds: 1\n        taskAsJob: true\n",
    );
    let _agent = env.agent(&values).await;
    let task = env.enqueue("pg-job", "gang", "sim/sleep-300");
    env.task_status(&task, "completed").await;
    let job = env
        .kube
        .get("jobs", NS, &format!("clearml-id-{task}"))
        .expect("the task's Job");
    let name = s(&job, "/spec/template/spec/schedulingGroup/podGroupName").to_string();
    assert!(!name.is_empty(), "{job:#}");
    let group = env
        .kube
        .get("podgroups", NS, &name)
        .expect("the launch's PodGroup");
    assert_eq!(s(&group, "/apiVersion"), "scheduling.k8s.io/v1alpha2");
    assert_eq!(
        group.pointer("/spec/schedulingPolicy/gang/minCount"),
        Some(&json!(3))
    );
    assert_eq!(
        group.pointer("/metadata/ownerReferences/0/uid"),
        job.pointer("/metadata/uid"),
        "owned by the Job: {group:#}"
    );
}

/// A crash between the ranks and their PodGroup (played by deleting the PodGroup while no agent
/// runs) leaves ranks no scheduler binds; the next agent adopts the launch and creates the
/// PodGroup, and the task completes in that launch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_group_lost_in_a_crash_is_created_by_the_next_agent() {
    let env = Env::new(gang_sim()).await;
    env.kube.set_pod_group_api(Some(PodGroupApi::V1beta1));
    let values = gang_values(600);
    let mut agent = env.agent(&values).await;
    let holders = hold_two_gpus(&env).await;
    let task = env.enqueue("pg-crash", "gang", "sim/sleep-300");
    let name = env
        .kube
        .wait_for(WAIT, |v| {
            v.list("podgroups", Some(NS))
                .first()
                .map(|g| s(g, "/metadata/name").to_string())
        })
        .await
        .expect("the PodGroup");
    let launch = super::retry::launch_of(&pods_of(&env, &task)[0]);
    agent.kill();
    env.kube
        .delete("podgroups", NS, &name)
        .expect("delete the PodGroup");
    let _agent = env.agent(&values).await;
    env.kube
        .wait_for(WAIT, |v| v.get("podgroups", NS, &name).map(|_| ()))
        .await
        .expect("the next agent creates the PodGroup again");
    free_gpus(&env, &holders);
    env.task_status(&task, "completed").await;
    assert!(
        pods_of(&env, &task)
            .iter()
            .all(|p| super::retry::launch_of(p) == launch),
        "the same launch"
    );
}

/// `gangScheduling: podGroup` on a cluster without the API: the multi-node task fails, saying
/// which setting asks for what; no pod is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_requiring_pod_groups_fails_multi_node_tasks_without_the_api() {
    let env = Env::new(gang_sim()).await;
    let values = gang_values(600).replace(
        "        gangTimeoutSeconds: 1\n",
        "        gangScheduling: podGroup\n",
    );
    let _agent = env.agent(&values).await;
    let task = env.enqueue("pg-required", "gang", "sim/sleep-300");
    let t = env.task_status(&task, "failed").await;
    let why = format!("{} {}", s(&t, "/status_message"), s(&t, "/status_reason"));
    assert!(
        why.contains("queueSettings.gangScheduling is podGroup")
            && why.contains("scheduling.k8s.io"),
        "{t:#}"
    );
    assert!(pods_of(&env, &task).is_empty(), "no pod created");
}
