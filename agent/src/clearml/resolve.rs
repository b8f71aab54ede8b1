//! The queues an agent serves, resolved by name in ClearML (and created with `createQueues`), and
//! the hidden pending queue tasks wait in between their queue and their pod.

use std::collections::HashMap;

use clearml_agent_core::{config::AgentConfig, contract::PENDING_QUEUE};

use super::{Client, Error, subcode};

/// A served queue, resolved in ClearML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Queue name.
    pub name: String,
    /// Queue id.
    pub id: String,
}

/// Resolves the configured queues (creating missing ones with `createQueues`) and the pending
/// queue (always created when missing, hidden with the `k8s-glue` system tag).
pub async fn resolve_queues(
    clearml: &Client,
    cfg: &AgentConfig,
) -> Result<(Vec<Served>, String), Error> {
    let mut names: Vec<String> = cfg.queues.keys().cloned().collect();
    names.push(PENDING_QUEUE.to_string());
    let found = clearml.queues_by_name(&names).await?;
    let mut by_name: HashMap<String, String> = found.into_iter().map(|q| (q.name, q.id)).collect();
    if !by_name.contains_key(PENDING_QUEUE) {
        let id = create_queue(clearml, PENDING_QUEUE, &["k8s-glue"]).await?;
        by_name.insert(PENDING_QUEUE.to_string(), id);
    }
    let mut served = Vec::new();
    for name in cfg.queues.keys() {
        match by_name.get(name) {
            Some(id) => served.push(Served {
                name: name.clone(),
                id: id.clone(),
            }),
            None if cfg.create_queues => {
                let id = create_queue(clearml, name, &[]).await?;
                tracing::info!(queue = %name, %id, "created ClearML queue");
                served.push(Served {
                    name: name.clone(),
                    id,
                });
            }
            None => {
                tracing::warn!(queue = %name, "queue does not exist in ClearML and createQueues is off; not served")
            }
        }
    }
    let pending = by_name.get(PENDING_QUEUE).cloned().unwrap_or_default();
    Ok((served, pending))
}

/// Creates a queue, or reads back the id of one created concurrently.
pub async fn create_queue(clearml: &Client, name: &str, tags: &[&str]) -> Result<String, Error> {
    match clearml.create_queue(name, tags).await {
        Ok(id) => Ok(id),
        // created concurrently by someone else: read it back
        Err(e) if e.is_api(400, subcode::NOT_UNIQUE) => {
            let found = clearml.queues_by_name(&[name.to_string()]).await?;
            found.into_iter().next().map(|q| q.id).ok_or(e)
        }
        Err(e) => Err(e),
    }
}
