//! Template rules the schema checks when values load and render checks again per task: volume
//! names and mounts of a merged template, and the bounds of a multi-node layout. Kept apart from
//! both so the schema does not depend on rendering (no module circle).

use super::PodTemplate;

/// What is wrong with a (merged) template's volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeProblem {
    /// The volume's name (or the name a mount gives).
    pub name: String,
    /// A mount names it but no volume has it (else: two volumes have it).
    pub mount: bool,
    /// What to tell the user.
    pub message: String,
}

/// The pod's volumes are `volumes` then `extraVolumes`: their names must be unique (the API
/// server refuses the pod otherwise), and every `volumeMounts`/`extraVolumeMounts` entry must name
/// one of them. Checked on each queue's merged template when values load, and again at render.
pub fn check_volumes(t: &PodTemplate) -> Result<(), VolumeProblem> {
    let mut seen = std::collections::BTreeSet::new();
    for v in t
        .volumes
        .iter()
        .flatten()
        .chain(t.extra_volumes.iter().flatten())
    {
        if !seen.insert(v.name.as_str()) {
            return Err(VolumeProblem {
                name: v.name.clone(),
                mount: false,
                message: format!(
                    "volume {:?} is defined twice (volumes and extraVolumes of basePodTemplate and the queue's templateOverrides; extraVolumes are appended, not merged)",
                    v.name
                ),
            });
        }
    }
    let mounts = t.volume_mounts.iter().flatten();
    if let Some(m) = mounts
        .chain(t.extra_volume_mounts.iter().flatten())
        .find(|m| !seen.contains(m.name.as_str()))
    {
        return Err(VolumeProblem {
            name: m.name.clone(),
            mount: true,
            message: format!(
                "volumeMount {:?} names no volume {:?}",
                m.mount_path, m.name
            ),
        });
    }
    Ok(())
}

/// Most GPUs one node of a multi-node task may have.
pub const MAX_NODE_GPUS: u32 = 4096;
/// Most pods one multi-node task may be split into (a queue's `multiNode` or a task's request).
pub const MAX_MULTI_NODE_PODS: usize = 1024;

/// Checks a GPUs-per-node list (a queue's `multiNode` or a task's own request): at least one
/// node, every entry from 1 to [`MAX_NODE_GPUS`], and at most [`MAX_MULTI_NODE_PODS`] pods once
/// split by [`multi_node_layout`]. The error carries the index of the entry at fault, if one is.
pub fn check_multi_node(nodes: &[u32]) -> Result<(), (Option<usize>, String)> {
    if nodes.is_empty() {
        return Err((None, "must list the GPUs of at least one node".into()));
    }
    if let Some(i) = nodes.iter().position(|n| *n == 0 || *n > MAX_NODE_GPUS) {
        return Err((
            Some(i),
            format!("must be a positive number of GPUs, at most {MAX_NODE_GPUS}"),
        ));
    }
    if nodes.len() > MAX_MULTI_NODE_PODS {
        return Err((
            None,
            format!("lists {} nodes; at most {MAX_MULTI_NODE_PODS}", nodes.len()),
        ));
    }
    let (gpus, pods) = multi_node_layout(nodes);
    if pods > MAX_MULTI_NODE_PODS {
        return Err((
            None,
            format!(
                "splits into {pods} pods of {gpus} GPUs (the gcd); at most {MAX_MULTI_NODE_PODS} pods"
            ),
        ));
    }
    Ok(())
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Splits a `multiNode` GPU list into pods of `gcd(list)` GPUs: returns (gpus per pod, pods).
pub fn multi_node_layout(nodes: &[u32]) -> (u32, usize) {
    let g = nodes.iter().copied().fold(0, gcd).max(1);
    let pods = nodes.iter().map(|n| (n / g) as usize).sum();
    (g, pods)
}
