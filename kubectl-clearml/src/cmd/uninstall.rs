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
    let objects = manifests::all_objects(namespace)?;
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
