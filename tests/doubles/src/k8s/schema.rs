//! The slice of the Kubernetes type schema that strategic merge patch and server-side apply
//! need: which lists are merged by key (`patchMergeKey`), which are merged sets of scalars
//! (`patchStrategy: merge` on primitives), and which are atomic. Everything not listed here is
//! atomic, as it is for a Go struct field without patch tags.

use super::resources::ResourceDef;

/// A node type in the schema walk (only the types whose fields carry patch metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A type without keyed lists below it (maps merge, lists are atomic).
    Plain,
    /// A top-level object of a type without special lists.
    Object,
    Pod,
    PodSpec,
    PodStatus,
    Container,
    ObjectMeta,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    PodTemplate,
    Service,
    ServiceSpec,
    ServiceAccount,
}

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Replaced as a whole.
    Atomic,
    /// A list of objects identified by this key field.
    Keyed(&'static str),
    /// A set of scalars (union on merge).
    Set,
}

/// The schema type of a resource's top-level object.
pub(crate) fn root(res: &ResourceDef) -> Ty {
    match (res.group, res.plural) {
        ("", "pods") => Ty::Pod,
        ("apps", "deployments") => Ty::Deployment,
        ("", "services") => Ty::Service,
        ("", "serviceaccounts") => Ty::ServiceAccount,
        _ => Ty::Object,
    }
}

/// The type of field `field` of a `ty` (for lists: of its items) and, for lists, how they merge.
pub(crate) fn child(ty: Ty, field: &str) -> (Ty, ListKind) {
    use ListKind::{Atomic, Keyed, Set};
    let plain = (Ty::Plain, Atomic);
    match (ty, field) {
        (
            Ty::Object
            | Ty::Pod
            | Ty::Deployment
            | Ty::Service
            | Ty::ServiceAccount
            | Ty::PodTemplate,
            "metadata",
        ) => (Ty::ObjectMeta, Atomic),
        (Ty::Pod, "spec") | (Ty::PodTemplate, "spec") => (Ty::PodSpec, Atomic),
        (Ty::Pod, "status") => (Ty::PodStatus, Atomic),
        (Ty::Deployment, "spec") => (Ty::DeploymentSpec, Atomic),
        (Ty::Deployment, "status") => (Ty::DeploymentStatus, Atomic),
        (Ty::DeploymentSpec, "template") => (Ty::PodTemplate, Atomic),
        (Ty::Service, "spec") => (Ty::ServiceSpec, Atomic),
        (Ty::Service, "status") => (Ty::DeploymentStatus, Atomic),
        (Ty::ServiceAccount, "secrets") => (Ty::Plain, Keyed("name")),
        (Ty::ObjectMeta, "finalizers") => (Ty::Plain, Set),
        (Ty::ObjectMeta, "ownerReferences") => (Ty::Plain, Keyed("uid")),
        (Ty::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            (Ty::Container, Keyed("name"))
        }
        (Ty::PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => {
            (Ty::Plain, Keyed("name"))
        }
        (Ty::PodSpec, "hostAliases") => (Ty::Plain, Keyed("ip")),
        (Ty::PodSpec, "topologySpreadConstraints") => (Ty::Plain, Keyed("topologyKey")),
        (Ty::Container, "env") => (Ty::Plain, Keyed("name")),
        (Ty::Container, "volumeMounts") => (Ty::Plain, Keyed("mountPath")),
        (Ty::Container, "volumeDevices") => (Ty::Plain, Keyed("devicePath")),
        (Ty::Container, "ports") => (Ty::Plain, Keyed("containerPort")),
        (Ty::ServiceSpec, "ports") => (Ty::Plain, Keyed("port")),
        (Ty::PodStatus, "conditions") | (Ty::DeploymentStatus, "conditions") => {
            (Ty::Plain, Keyed("type"))
        }
        (Ty::PodStatus, "podIPs" | "hostIPs") => (Ty::Plain, Keyed("ip")),
        _ => plain,
    }
}
