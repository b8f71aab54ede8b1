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
    scheduling::v1alpha2::PodGroup,
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
    /// Served only while the double serves this PodGroup API version
    /// ([`super::KubeDouble::set_pod_group_api`]); `None`: always served.
    pub served_when: Option<PodGroupApi>,
}

/// The `scheduling.k8s.io` PodGroup API version a cluster serves: Kubernetes 1.36 serves
/// `v1alpha2` (feature gate `GenericWorkload`), 1.37 `v1beta1`. The double serves none by
/// default, as a 1.35 cluster or one with the gate off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodGroupApi {
    /// `scheduling.k8s.io/v1alpha2` (Kubernetes 1.36).
    V1alpha2,
    /// `scheduling.k8s.io/v1beta1` (Kubernetes 1.37).
    V1beta1,
}

impl PodGroupApi {
    /// `v1alpha2` or `v1beta1`.
    pub const fn version(self) -> &'static str {
        match self {
            PodGroupApi::V1alpha2 => "v1alpha2",
            PodGroupApi::V1beta1 => "v1beta1",
        }
    }

    /// `scheduling.k8s.io/<version>`.
    pub fn api_version(self) -> String {
        format!("{}/{}", POD_GROUP_GROUP, self.version())
    }

    /// The type of the PodGroup status condition the scheduler writes: `PodGroupScheduled` in
    /// v1alpha2 (Kubernetes 1.36), renamed `PodGroupInitiallyScheduled` in v1beta1
    /// (kube-scheduler's `submitPodGroupAlgorithmResult` at 1.37).
    pub fn scheduled_condition(self) -> &'static str {
        match self {
            PodGroupApi::V1alpha2 => "PodGroupScheduled",
            PodGroupApi::V1beta1 => "PodGroupInitiallyScheduled",
        }
    }
}

/// The PodGroup API group.
pub const POD_GROUP_GROUP: &str = "scheduling.k8s.io";

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

/// k8s-openapi has no v1beta1 PodGroup (its newest, `v1_36`, stops at v1alpha2): v1beta1 bodies
/// decode through the v1alpha2 struct, whose shape is the same for the fields used here (spec
/// `schedulingPolicy`, `podGroupTemplateRef`, status `conditions`); v1beta1-only fields such as
/// `parentCompositePodGroupName` are pruned as unknown.
fn pod_group_v1beta1_codec(mut value: Value) -> Result<Value, serde_json::Error> {
    let alpha = PodGroupApi::V1alpha2.api_version();
    let beta = PodGroupApi::V1beta1.api_version();
    let had_version = value.get("apiVersion").is_some();
    if let Value::Object(m) = &mut value {
        m.insert("apiVersion".into(), Value::String(alpha));
    }
    let mut out = codec::<PodGroup>(value)?;
    if let Value::Object(m) = &mut out {
        if had_version {
            m.insert("apiVersion".into(), Value::String(beta));
        } else {
            m.remove("apiVersion");
        }
    }
    Ok(out)
}

const STATUS: (&str, &[&str]) = ("status", &["get", "patch", "update"]);

/// Every resource type the double serves.
/// The PodGroup resource of one served version (`codec`: how that version decodes).
const fn pod_groups(
    version: PodGroupApi,
    codec: fn(Value) -> Result<Value, serde_json::Error>,
) -> ResourceDef {
    ResourceDef {
        group: POD_GROUP_GROUP,
        version: version.version(),
        plural: "podgroups",
        singular: "podgroup",
        kind: "PodGroup",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[STATUS],
        has_generation: true,
        return_deleted_object: false,
        create_on_update: false,
        served_when: Some(version),
        codec,
    }
}

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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
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
        served_when: None,
        codec: codec::<EventsV1Event>,
    },
    pod_groups(PodGroupApi::V1alpha2, codec::<PodGroup>),
    pod_groups(PodGroupApi::V1beta1, pod_group_v1beta1_codec),
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

/// [`resolve`] preferring the version served under `api` (`podgroups` is stored per version).
pub(crate) fn resolve_served(name: &str, api: Option<PodGroupApi>) -> Option<ResourceId> {
    let id = resolve(name)?;
    let r = def(id);
    if r.served_when.is_none() || r.served_when == api {
        return Some(id);
    }
    RESOURCES
        .iter()
        .position(|o| {
            o.group == r.group
                && o.plural == r.plural
                && o.served_when.is_some()
                && o.served_when == api
        })
        .or(Some(id))
}

/// Whether a type is served while the PodGroup API `api` is.
pub(crate) fn served(r: &ResourceDef, api: Option<PodGroupApi>) -> bool {
    r.served_when.is_none() || r.served_when == api
}

/// The resource id of a typed k8s-openapi object.
pub(crate) fn of_type<K: k8s_openapi::Resource>() -> Option<ResourceId> {
    find(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
}

/// The definition of a resource id.
pub(crate) fn def(id: ResourceId) -> &'static ResourceDef {
    &RESOURCES[id]
}

/// The group/versions served while PodGroup API `api` is, in discovery order (`""` is core).
pub(crate) fn group_versions(api: Option<PodGroupApi>) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| served(r, api)) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
