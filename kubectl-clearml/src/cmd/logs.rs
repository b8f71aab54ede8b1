//! `kubectl clearml logs TASK [-f] [--rank N]`: the task pod's log straight from the Kubernetes
//! API (no agent involved), found by the labels the agent puts on task pods.

use anyhow::{Context as _, bail};
use futures::AsyncReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ListParams, LogParams},
};
use tokio::io::AsyncWriteExt as _;

use crate::{cli::LogsArgs, connect::Ctx};
use clearml_agent_core::contract::{CONTAINER_NAME, LABEL_TASK_ID, rank_of};

/// Runs `logs`.
pub async fn run(args: LogsArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.kube(args.follow).await?;
    let pods: Api<Pod> = Api::namespaced(client, &ctx.namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector(&args)))
        .await
        .with_context(|| format!("cannot list the pods of task {}", args.task))?;
    let pod = choose_pod(&args, &list.items, &ctx.namespace)?;
    let params = log_params(&args);
    let mut stream = pods
        .log_stream(&pod, &params)
        .await
        .with_context(|| format!("cannot read the log of pod {pod}"))?;
    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .with_context(|| format!("log stream of pod {pod} broke"))?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n]).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// The label selector of the task's pods. A rank is picked from them (`choose_pod`): bare pods
/// carry it as `clearml-rank`, a Job's pods (Job mode) as the Job controller's completion index.
pub fn selector(args: &LogsArgs) -> String {
    format!("{LABEL_TASK_ID}={}", args.task)
}

fn rank(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref().and_then(rank_of)
}

/// Pods of one Job (Job mode): a pod the cluster took away is replaced by a newer one.
fn same_job(pods: &[&Pod]) -> bool {
    let owner = |p: &Pod| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Job")
            .map(|o| o.uid.clone())
    };
    let first = pods.first().and_then(|p| owner(p));
    first.is_some() && pods.iter().all(|p| owner(p) == first)
}

/// The pod to read: the only one (of the rank asked for), else rank 0 of a multi-node task; of a
/// Job's pods replaced after a disruption, the newest.
pub fn choose_pod(args: &LogsArgs, pods: &[Pod], namespace: &str) -> anyhow::Result<String> {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let newest = |ps: &[&Pod]| {
        ps.iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone())
            .map(|p| name(p))
    };
    let wanted = args.rank.map(|r| r.to_string());
    let pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| wanted.as_deref().is_none_or(|r| rank(p) == Some(r)))
        .collect();
    match pods.as_slice() {
        [] => match args.rank {
            Some(rank) => bail!(
                "task {} has no pod of rank {rank} in namespace {namespace}",
                args.task
            ),
            None => bail!(
                "task {} has no pod in namespace {namespace} (not launched yet, already cleaned \
                 up, or running in another namespace: -n)",
                args.task
            ),
        },
        [only] => Ok(name(only)),
        many if wanted.is_some() && same_job(many) => Ok(newest(many).unwrap_or_default()),
        many => {
            let rank0: Vec<&Pod> = many
                .iter()
                .copied()
                .filter(|p| rank(p) == Some("0"))
                .collect();
            let unranked_job =
                rank0.is_empty() && many.iter().all(|p| rank(p).is_none()) && same_job(many);
            match (newest(&rank0), unranked_job) {
                (Some(p), _) => {
                    eprintln!(
                        "task {} has {} pods; showing rank 0 (pick another with --rank)",
                        args.task,
                        many.len()
                    );
                    Ok(p)
                }
                (None, true) => Ok(newest(many).unwrap_or_default()),
                (None, false) => bail!(
                    "task {} has {} pods; pick one with --rank",
                    args.task,
                    many.len()
                ),
            }
        }
    }
}

/// Log request parameters: the task container, follow and tail.
pub fn log_params(args: &LogsArgs) -> LogParams {
    LogParams {
        container: Some(CONTAINER_NAME.to_string()),
        follow: args.follow,
        tail_lines: args.tail,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(rank: Option<u32>) -> LogsArgs {
        LogsArgs {
            task: "abc".into(),
            follow: false,
            rank,
            tail: None,
        }
    }

    fn pod(name: &str, rank: Option<&str>) -> Pod {
        let mut labels = serde_json::json!({"clearml-task-id": "abc"});
        if let Some(r) = rank {
            labels["clearml-rank"] = r.into();
        }
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
            .expect("pod")
    }

    #[test]
    fn selector_uses_the_agents_task_label() {
        assert_eq!(selector(&args(None)), "clearml-task-id=abc");
        assert_eq!(selector(&args(Some(2))), "clearml-task-id=abc");
    }

    /// A Job's pod (Job mode): the completion index is the rank.
    fn job_pod(name: &str, index: Option<&str>, created: &str) -> Pod {
        let mut labels = serde_json::json!({"clearml-task-id": "abc"});
        if let Some(i) = index {
            labels["batch.kubernetes.io/job-completion-index"] = i.into();
        }
        serde_json::from_value(serde_json::json!({"metadata": {
            "name": name, "labels": labels, "creationTimestamp": created,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}],
        }}))
        .expect("pod")
    }

    #[test]
    fn job_pods_are_ranked_by_completion_index_and_the_newest_wins() {
        let pods = [
            job_pod("j-1-aaaaa", Some("1"), "2026-01-01T00:00:00Z"),
            job_pod("j-0-bbbbb", Some("0"), "2026-01-01T00:00:00Z"),
            job_pod("j-0-ccccc", Some("0"), "2026-01-01T00:05:00Z"),
        ];
        assert_eq!(
            choose_pod(&args(None), &pods, "ns").expect("pod"),
            "j-0-ccccc"
        );
        assert_eq!(
            choose_pod(&args(Some(1)), &pods, "ns").expect("pod"),
            "j-1-aaaaa"
        );
        assert_eq!(
            choose_pod(&args(Some(0)), &pods, "ns").expect("pod"),
            "j-0-ccccc"
        );
        let single = [
            job_pod("j-aaaaa", None, "2026-01-01T00:00:00Z"),
            job_pod("j-bbbbb", None, "2026-01-01T00:01:00Z"),
        ];
        assert_eq!(
            choose_pod(&args(None), &single, "ns").expect("pod"),
            "j-bbbbb"
        );
    }

    #[test]
    fn multi_node_tasks_default_to_rank_zero() {
        let pods = [pod("p-1", Some("1")), pod("p-0", Some("0"))];
        assert_eq!(choose_pod(&args(None), &pods, "ns").expect("pod"), "p-0");
        assert_eq!(
            choose_pod(&args(None), &pods[..1], "ns").expect("pod"),
            "p-1"
        );
        let err = choose_pod(&args(Some(3)), &[], "ns").expect_err("none");
        assert!(err.to_string().contains("rank 3"), "{err}");
        let unranked = [pod("a", None), pod("b", None)];
        assert!(choose_pod(&args(None), &unranked, "ns").is_err());
    }

    #[test]
    fn log_params_target_the_task_container() {
        let mut a = args(None);
        a.follow = true;
        a.tail = Some(20);
        let p = log_params(&a);
        assert_eq!(p.container.as_deref(), Some("task"));
        assert!(p.follow);
        assert_eq!(p.tail_lines, Some(20));
    }
}
