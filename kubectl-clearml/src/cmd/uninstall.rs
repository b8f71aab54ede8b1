//! `kubectl clearml uninstall [--keep-namespace]`: deletes, by name and in reverse apply order,
//! what `install` created. Objects already gone are fine; objects without the plugin's
//! `app.kubernetes.io/managed-by` label (e.g. a credentials Secret made by hand, or a namespace
//! that existed before) are left in place.

use std::io::{self, Write};

use anyhow::anyhow;
use serde::Serialize;

use super::cluster::{self, kube_message};
use crate::{
    cli::UninstallArgs,
    connect::Ctx,
    manifests::{self, FIELD_MANAGER},
    output::{self, Tabular},
    progress,
};

/// Runs `uninstall`.
pub async fn run(args: UninstallArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let fmt = ctx.global.output;
    let namespace = &ctx.namespace;
    let client = ctx.kube(false).await?;
    let mut objects = manifests::all_objects(namespace)?;
    // objects named after the installed values: extra role bindings, a `clearml.conf` Secret in
    // the task namespace (deleted just before the namespace, in reverse apply order)
    let extra = installed_objects(&client, namespace).await;
    let ns = |m: &manifests::Manifest| m.doc.pointer("/metadata/namespace").cloned();
    let extra: Vec<_> = extra
        .into_iter()
        .filter(|m| {
            !objects
                .iter()
                .any(|o| o.resource.kind == m.resource.kind && o.name == m.name && ns(o) == ns(m))
        })
        .collect();
    let at = objects.len().min(1);
    objects.splice(at..at, extra);
    let bar = progress::spinner("Deleting", fmt);
    let mut view = Uninstalled::default();
    for m in objects.iter().rev() {
        let name = m.display_name();
        if !m.namespaced && args.keep_namespace {
            view.kept.push(Kept {
                object: name,
                reason: "--keep-namespace".into(),
            });
            continue;
        }
        bar.set_message(format!("Deleting {name}"));
        let api = cluster::api_for(&client, m, namespace);
        let current = match api.get_opt(&m.name).await {
            Ok(Some(current)) => current,
            Ok(None) => continue,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                view.kept.push(Kept {
                    object: name,
                    reason: format!("forbidden: {}", s.message),
                });
                continue;
            }
            Err(e) => return Err(anyhow!("cannot read {name}: {}", kube_message(&e))),
        };
        if !cluster::is_ours(&current) {
            view.kept.push(Kept {
                object: name,
                reason: format!("not created by {FIELD_MANAGER}"),
            });
            continue;
        }
        if cluster::delete(&client, m, namespace)
            .await
            .map_err(|e| anyhow!("cannot delete {name}: {}", kube_message(&e)))?
        {
            view.deleted.push(name);
        }
    }
    bar.finish_and_clear();
    if view.deleted.is_empty() && view.kept.is_empty() {
        eprintln!("nothing to delete in namespace {namespace}");
    }
    output::print(&view, fmt)?;
    Ok(())
}

/// The objects an install of the values in the agent's ConfigMap makes that [`all_objects`]
/// does not name; none when the ConfigMap is missing or unreadable.
///
/// [`all_objects`]: manifests::all_objects
async fn installed_objects(client: &kube::Client, namespace: &str) -> Vec<manifests::Manifest> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
    let Ok(Some(cm)) = api.get_opt(manifests::AGENT_NAME).await else {
        return Vec::new();
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(manifests::VALUES_KEY)) else {
        return Vec::new();
    };
    let Ok(mut values) = clearml_agent_core::values::Values::from_yaml(text) else {
        return Vec::new();
    };
    // the ConfigMap names the install's clearml.conf Secret; render it back as ours
    let ours = values.existing_clearml_config_secret() == Some(manifests::CLEARML_CONF_SECRET);
    if let Some(c) = values.clearml.as_mut() {
        c.existing_agentk8sglue_secret = None;
        if ours {
            c.existing_clearml_config_secret = None;
            c.clearml_config = Some("-".into());
        }
    }
    manifests::objects_of(&values, namespace)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !m.is_secret() || m.name == manifests::CLEARML_CONF_SECRET)
        .collect()
}

/// What uninstall did.
#[derive(Debug, Default, Serialize)]
pub struct Uninstalled {
    /// Objects deleted (`kind.group/name`).
    pub deleted: Vec<String>,
    /// Objects left in place, with why.
    pub kept: Vec<Kept>,
}

/// An object uninstall left in place.
#[derive(Debug, Serialize)]
pub struct Kept {
    /// `kind.group/name`.
    pub object: String,
    /// Why it was kept.
    pub reason: String,
}

impl Tabular for Uninstalled {
    fn write_table(&self, _wide: bool, out: &mut dyn Write) -> io::Result<()> {
        for name in &self.deleted {
            writeln!(out, "{name} deleted")?;
        }
        for k in &self.kept {
            writeln!(out, "{} kept ({})", k.object, k.reason)?;
        }
        Ok(())
    }
}
