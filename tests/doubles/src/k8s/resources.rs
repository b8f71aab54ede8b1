//! The resource types the double serves: names, scope, short names, subresources and the
//! per-type server behaviours (generation, what delete returns, create-on-update), in one
//! table that discovery, the router and storage all read.
//!
//! Adding a built-in type is one entry here (plus defaults/validation if the real server has
//! some that clients rely on).

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service, ServiceAccount},
    events::v1::Event as EventsV1Event,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Verbs of a top-level resource.
pub(crate) const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource type (a group/version/resource with its kind).
#[derive(Debug)]
pub struct ResourceDef {
    /// API group (`""` for core).
    pub group: &'static str,
    /// API version (`v1`).
    pub version: &'static str,
    /// Plural resource name (`pods`).
    pub plural: &'static str,
    /// Singular resource name (`pod`).
    pub singular: &'static str,
    /// Kind (`Pod`).
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources with their verbs (`status`: get/patch/update, `log`: get, `portforward`:
    /// create/get).
    pub subresources: &'static [(&'static str, &'static [&'static str])],
    /// The server maintains `metadata.generation` (bumped on spec changes).
    pub has_generation: bool,
    /// Delete answers with the object rather than a `Status` (pods, namespaces).
    pub return_deleted_object: bool,
    /// `PUT` of a missing object creates it (RBAC, events).
    pub create_on_update: bool,
    /// Decodes a JSON object into the typed struct and back: prunes unknown fields exactly as
    /// the real server's decoder does and reports type errors.
    pub(crate) codec: fn(Value) -> Result<Value, serde_json::Error>,
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, the form used in Status messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `/api/v1` or `/apis/apps/v1`.
    pub fn gv_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Whether the resource has a `status` subresource (main-resource writes keep the status).
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|(s, _)| *s == "status")
    }

    /// The verbs allowed on a subresource, if it exists.
    pub fn subresource_verbs(&self, sub: &str) -> Option<&'static [&'static str]> {
        self.subresources
            .iter()
            .find(|(s, _)| *s == sub)
            .map(|(_, v)| *v)
    }

    /// Whether this is the given type (by group and plural).
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

fn codec<K: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    let typed: K = serde_json::from_value(value)?;
    serde_json::to_value(typed)
}

const STATUS: (&str, &[&str]) = ("status", &["get", "patch", "update"]);

/// Every resource type the double serves.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &[STATUS],
        has_generation: false,
        return_deleted_object: true,
        create_on_update: false,
        codec: codec::<Namespace>,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &[
            STATUS,
            ("log", &["get"]),
            ("portforward", &["create", "get"]),
        ],
        has_generation: true,
        return_deleted_object: true,
        create_on_update: false,
        codec: codec::<Pod>,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &[STATUS],
        has_generation: false,
        return_deleted_object: true,
        create_on_update: false,
        codec: codec::<Service>,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: false,
        codec: codec::<ConfigMap>,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: false,
        codec: codec::<Secret>,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: false,
        codec: codec::<ServiceAccount>,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: true,
        codec: codec::<Event>,
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &[STATUS],
        has_generation: true,
        return_deleted_object: false,
        create_on_update: false,
        codec: codec::<Deployment>,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: true,
        codec: codec::<Role>,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: true,
        codec: codec::<RoleBinding>,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: true,
        codec: codec::<ClusterRole>,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: true,
        codec: codec::<ClusterRoleBinding>,
    },
    ResourceDef {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        subresources: &[STATUS],
        has_generation: true,
        return_deleted_object: false,
        create_on_update: false,
        codec: codec::<Job>,
    },
    ResourceDef {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: false,
        codec: codec::<Lease>,
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        has_generation: false,
        return_deleted_object: false,
        create_on_update: true,
        codec: codec::<EventsV1Event>,
    },
];

/// Index of a resource type in [`RESOURCES`] (the storage table it lives in).
pub(crate) type ResourceId = usize;

/// Finds a served type by group, version and plural.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Resolves the names the test handle accepts: `pods`, `deployments`, `deployments.apps`,
/// `events.events.k8s.io` (a bare plural prefers the core group).
pub(crate) fn resolve(name: &str) -> Option<ResourceId> {
    if let Some(id) = RESOURCES.iter().position(|r| r.group_resource() == name) {
        return Some(id);
    }
    RESOURCES.iter().position(|r| r.plural == name)
}

/// The resource id of a typed k8s-openapi object.
pub(crate) fn of_type<K: k8s_openapi::Resource>() -> Option<ResourceId> {
    find(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
}

/// The definition of a resource id.
pub(crate) fn def(id: ResourceId) -> &'static ResourceDef {
    &RESOURCES[id]
}

/// The group/versions served, in discovery order (`""` is core).
pub(crate) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
