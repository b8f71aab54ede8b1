//! The native gang path's Kubernetes side: which PodGroup API version the API server serves
//! (discovery, once at start), and creating a launch's PodGroup (crash-safe: one that exists
//! already is the launch's own, its name being the launch's). Deleting is the garbage collector's:
//! the PodGroup is owned by the ranks (or the Job).

use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};

use clearml_agent_core::gang;

use super::{Error, FIELD_MANAGER, Kube};

impl Kube {
    /// The PodGroup API the API server serves (`scheduling.k8s.io/v1beta1`, else
    /// `…/v1alpha2`), `None` if neither.
    pub async fn pod_group_api(&self) -> Result<Option<String>, Error> {
        let groups = self
            .client
            .list_api_groups()
            .await
            .map_err(|e| self.err("discover", "API group", gang::GROUP, e))?;
        let Some(group) = groups.groups.iter().find(|g| g.name == gang::GROUP) else {
            return Ok(None);
        };
        for version in gang::VERSIONS {
            if !group.versions.iter().any(|v| v.version == *version) {
                continue;
            }
            let gv = format!("{}/{version}", gang::GROUP);
            let resources = self
                .client
                .list_api_group_resources(&gv)
                .await
                .map_err(|e| self.err("discover", "API resources", &gv, e))?;
            if resources.resources.iter().any(|r| r.name == gang::PLURAL) {
                return Ok(Some(gv));
            }
        }
        Ok(None)
    }

    /// Creates a PodGroup (`obj`, of API `api_version`); one of that name existing is success.
    pub async fn ensure_pod_group(
        &self,
        api_version: &str,
        obj: &serde_json::Value,
    ) -> Result<(), Error> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, gang::KIND),
            gang::PLURAL,
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
        let dynamic: DynamicObject = serde_json::from_value(obj.clone())
            .map_err(|e| self.err("encode", "podgroup", &name, kube::Error::SerdeError(e)))?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&pp, &dynamic).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(self.err("create", "podgroup", &name, e)),
        }
    }
}
