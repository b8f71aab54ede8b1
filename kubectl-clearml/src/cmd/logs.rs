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
use clearml_agent_core::contract::{CONTAINER_NAME, LABEL_RANK, LABEL_TASK_ID};

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

/// The label selector of the task's pods (of one rank when `--rank` is given).
pub fn selector(args: &LogsArgs) -> String {
    match args.rank {
        Some(rank) => format!("{LABEL_TASK_ID}={},{LABEL_RANK}={rank}", args.task),
        None => format!("{LABEL_TASK_ID}={}", args.task),
    }
}

/// The pod to read: the only one, else rank 0 of a multi-node task.
pub fn choose_pod(args: &LogsArgs, pods: &[Pod], namespace: &str) -> anyhow::Result<String> {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    match pods {
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
        many => {
            let rank0 = many.iter().find(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_RANK))
                    .is_some_and(|r| r == "0")
            });
            match rank0 {
                Some(p) => {
                    eprintln!(
                        "task {} has {} pods; showing rank 0 (pick another with --rank)",
                        args.task,
                        many.len()
                    );
                    Ok(name(p))
                }
                None => bail!(
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
    fn selector_uses_the_agents_task_and_rank_labels() {
        assert_eq!(selector(&args(None)), "clearml-task-id=abc");
        assert_eq!(
            selector(&args(Some(2))),
            "clearml-task-id=abc,clearml-rank=2"
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
