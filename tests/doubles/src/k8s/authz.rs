//! Access reviews: `authorization.k8s.io/v1` `SubjectAccessReview`, `LocalSubjectAccessReview`
//! and `SelfSubjectAccessReview`, answered by evaluating the RBAC objects the double stores, as
//! the real RBAC authorizer does (kubernetes `plugin/pkg/auth/authorizer/rbac/rbac.go`, the rule
//! resolver in `pkg/registry/rbac/validation/rule.go` and the matchers in
//! `pkg/apis/rbac/v1/evaluation_helpers.go`):
//!
//! - ClusterRoleBindings are visited first, then (for a namespaced request) the RoleBindings of
//!   that namespace; a binding applies when one of its subjects matches the user: `User` by name,
//!   `Group` by membership, `ServiceAccount` by `system:serviceaccount:<ns>:<name>` (its namespace
//!   defaulting to the binding's);
//! - a RoleBinding's `Role` is looked up in the binding's namespace, a `ClusterRole` cluster-wide;
//!   a missing role is an evaluation error, not a denial of other bindings;
//! - a rule allows when verb (`*`), API group (`*`), resource (`*`, `resource/subresource`,
//!   `*/subresource`) and resourceNames (empty = any; no wildcard) all match; non-resource
//!   requests match `nonResourceURLs` (`*`, exact, or a `prefix*`);
//! - the `system:masters` group is allowed everything (the API server's privileged-group
//!   authorizer, in front of RBAC).
//!
//! Reviews are not stored (create only, answered 201 with `status` filled in). The review's user
//! is exactly the spec's `user` and `groups`, as the real server takes them: nothing is added.
//! Only `SelfSubjectAccessReview` looks at the request's user: the double authenticates every
//! client as an admin (`system:masters`), unless the request impersonates (`Impersonate-User`,
//! `Impersonate-Group`), where, as the impersonation filter does, a service account without
//! explicit groups gets `system:serviceaccounts` and `system:serviceaccounts:<ns>`, and every
//! non-anonymous user `system:authenticated`. Other requests ignore impersonation headers.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde_json::{Value, json};

use super::status::{ApiError, FieldError};

/// API group of the reviews.
pub(crate) const GROUP: &str = "authorization.k8s.io";

/// What is asked: the user and the request's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// User name.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// A resource request (else a non-resource URL).
    pub resource_request: bool,
    /// `get`, `list`, `create`, ...
    pub verb: String,
    /// Namespace (empty: cluster-wide).
    pub namespace: String,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource (`log`, `status`, ...).
    pub subresource: String,
    /// Object name (empty: any).
    pub name: String,
    /// Non-resource URL path.
    pub path: String,
}

/// The authorizer's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// Which binding allowed it (`RBAC: allowed by RoleBinding "b/ns" of Role "r" to ...`).
    pub reason: String,
    /// Errors met while resolving roles (missing roles), joined.
    pub evaluation_error: String,
}

/// The RBAC objects the authorizer reads.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Roles.
    pub roles: Vec<Role>,
    /// RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

/// The privileged group the API server allows everything.
const SYSTEM_MASTERS: &str = "system:masters";

impl Policy {
    /// Decides `attrs` as the privileged-group and RBAC authorizers do.
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Decision {
                allowed: true,
                ..Default::default()
            };
        }
        let mut errors: Vec<String> = Vec::new();
        for binding in &self.cluster_role_bindings {
            let subjects = binding.subjects.as_deref().unwrap_or_default();
            let Some(subject) = applies_to(attrs, subjects, "") else {
                continue;
            };
            let rules =
                match self.role_ref_rules(&binding.role_ref.kind, &binding.role_ref.name, "") {
                    Ok(rules) => rules,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
            if rules.iter().any(|r| rule_allows(attrs, r)) {
                return allowed(format!(
                    "ClusterRoleBinding {:?} of {} {:?} to {}",
                    binding.metadata.name.as_deref().unwrap_or_default(),
                    binding.role_ref.kind,
                    binding.role_ref.name,
                    describe_subject(subject, "")
                ));
            }
        }
        if !attrs.namespace.is_empty() {
            for binding in self
                .role_bindings
                .iter()
                .filter(|b| b.metadata.namespace.as_deref() == Some(attrs.namespace.as_str()))
            {
                let subjects = binding.subjects.as_deref().unwrap_or_default();
                let Some(subject) = applies_to(attrs, subjects, &attrs.namespace) else {
                    continue;
                };
                let rules = match self.role_ref_rules(
                    &binding.role_ref.kind,
                    &binding.role_ref.name,
                    &attrs.namespace,
                ) {
                    Ok(rules) => rules,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                if rules.iter().any(|r| rule_allows(attrs, r)) {
                    return allowed(format!(
                        "RoleBinding {:?} of {} {:?} to {}",
                        format!(
                            "{}/{}",
                            binding.metadata.name.as_deref().unwrap_or_default(),
                            attrs.namespace
                        ),
                        binding.role_ref.kind,
                        binding.role_ref.name,
                        describe_subject(subject, &attrs.namespace)
                    ));
                }
            }
        }
        // RBAC has no opinion; with no other authorizer, the request is not allowed
        Decision {
            allowed: false,
            reason: if errors.is_empty() {
                String::new()
            } else {
                format!("RBAC: {}", aggregate(&errors))
            },
            evaluation_error: String::new(),
        }
    }

    /// The rules of a binding's role reference (`Role` in `namespace`, or a `ClusterRole`).
    fn role_ref_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Vec<PolicyRule>, String> {
        match kind {
            "Role" => self
                .roles
                .iter()
                .find(|r| {
                    r.metadata.name.as_deref() == Some(name)
                        && r.metadata.namespace.as_deref() == Some(namespace)
                })
                .map(|r| r.rules.clone().unwrap_or_default())
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io {name:?} not found")),
            "ClusterRole" => self
                .cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(name))
                .map(|r| r.rules.clone().unwrap_or_default())
                .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io {name:?} not found")),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }
}

fn allowed(source: String) -> Decision {
    Decision {
        allowed: true,
        reason: format!("RBAC: allowed by {source}"),
        evaluation_error: String::new(),
    }
}

/// apimachinery's aggregate error text: one error as is, several as `[a, b]`.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The first subject of a binding that matches the user.
fn applies_to<'a>(
    attrs: &Attributes,
    subjects: &'a [Subject],
    namespace: &str,
) -> Option<&'a Subject> {
    subjects
        .iter()
        .find(|s| applies_to_user(attrs, s, namespace))
}

fn applies_to_user(attrs: &Attributes, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => attrs.user == subject.name,
        "Group" => attrs.groups.contains(&subject.name),
        "ServiceAccount" => {
            let sa_namespace = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !sa_namespace.is_empty()
                && attrs.user == format!("system:serviceaccount:{sa_namespace}:{}", subject.name)
        }
        _ => false,
    }
}

fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            format!("{} {:?}", s.kind, format!("{}/{ns}", s.name))
        }
        _ => format!("{} {:?}", s.kind, s.name),
    }
}

/// Whether one rule allows the request (`RuleAllows`).
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    let verb = rule.verbs.iter().any(|v| v == "*" || *v == attrs.verb);
    if !attrs.resource_request {
        return verb
            && rule.non_resource_urls.iter().flatten().any(|u| {
                u == "*"
                    || *u == attrs.path
                    || (u.ends_with('*') && attrs.path.starts_with(u.trim_end_matches('*')))
            });
    }
    let group = rule
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || *g == attrs.group);
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resource = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty()
                && r.len() == attrs.subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(attrs.subresource.as_str()))
    });
    let name = match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => names.contains(&attrs.name),
    };
    verb && group && resource && name
}

// ----- the REST side -----------------------------------------------------------------------

/// Which review a request creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Review {
    /// `subjectaccessreviews` (cluster-scoped).
    Subject,
    /// `localsubjectaccessreviews` (namespaced).
    Local,
    /// `selfsubjectaccessreviews` (cluster-scoped).
    SelfSubject,
}

impl Review {
    /// The review addressed by a plural resource name, if any.
    pub(crate) fn from_plural(plural: &str) -> Option<Self> {
        match plural {
            "subjectaccessreviews" => Some(Self::Subject),
            "localsubjectaccessreviews" => Some(Self::Local),
            "selfsubjectaccessreviews" => Some(Self::SelfSubject),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Subject => "SubjectAccessReview",
            Self::Local => "LocalSubjectAccessReview",
            Self::SelfSubject => "SelfSubjectAccessReview",
        }
    }

    /// Whether the review lives in a namespace.
    pub(crate) fn namespaced(self) -> bool {
        self == Self::Local
    }
}

/// The requester, for `SelfSubjectAccessReview`: impersonated, or the double's admin.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requester {
    /// `Impersonate-User`, if sent.
    pub impersonate_user: Option<String>,
    /// `Impersonate-Group` values.
    pub impersonate_groups: Vec<String>,
}

impl Requester {
    fn user(&self) -> (String, Vec<String>) {
        let Some(name) = &self.impersonate_user else {
            return (
                "kube-double-admin".into(),
                vec![SYSTEM_MASTERS.into(), "system:authenticated".into()],
            );
        };
        let mut groups = self.impersonate_groups.clone();
        if groups.is_empty()
            && let Some(rest) = name.strip_prefix("system:serviceaccount:")
            && let Some((ns, _)) = rest.split_once(':')
        {
            groups = vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
        if name != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        (name.clone(), groups)
    }
}

/// Validates a review body, decides it and returns the body with `status` (the 201 answer).
pub(crate) fn review(
    policy: &Policy,
    kind: Review,
    url_namespace: &str,
    requester: &Requester,
    mut body: Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let str_at = |v: Option<&Value>, key: &str| -> String {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut errors = Vec::new();
    if resource.is_some() && non_resource.is_some() {
        errors.push(FieldError::invalid(
            "spec.nonResourceAttributes",
            non_resource.unwrap_or(&Value::Null),
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if resource.is_none() && non_resource.is_none() {
        errors.push(FieldError::invalid(
            "spec.resourceAttributes",
            &Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let spec_user = str_at(Some(&spec), "user");
    let spec_groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if kind != Review::SelfSubject && spec_user.is_empty() && spec_groups.is_empty() {
        errors.push(FieldError::invalid(
            "spec.user",
            &json!(""),
            "at least one of user or group must be specified",
        ));
    }
    let meta = body.get("metadata").cloned().unwrap_or(json!({}));
    let meta_ns = str_at(Some(&meta), "namespace");
    let meta_rest: serde_json::Map<String, Value> = meta
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| {
                    !(k.as_str() == "managedFields"
                        || (kind == Review::Local && k.as_str() == "namespace")
                        || (k.as_str() == "creationTimestamp" && v.is_null()))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    if !meta_rest.is_empty() {
        let detail = if kind == Review::Local {
            "must be empty except for namespace"
        } else {
            "must be empty"
        };
        errors.push(FieldError::invalid("metadata", &meta, detail));
    }
    if kind == Review::Local {
        // the object's namespace defaults to the URL's; a different one is refused earlier by
        // the real server ("the namespace of the provided object does not match")
        if !meta_ns.is_empty() && meta_ns != url_namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if resource.is_some() && str_at(resource, "namespace") != url_namespace {
            errors.push(FieldError::invalid(
                "spec.resourceAttributes.namespace",
                &json!(str_at(resource, "namespace")),
                "must match metadata.namespace",
            ));
        }
        if let Some(nr) = non_resource {
            errors.push(FieldError::invalid(
                "spec.nonResourceAttributes",
                nr,
                "disallowed on this kind of request",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(GROUP, kind.kind(), "", errors));
    }
    let (user, groups) = match kind {
        Review::SelfSubject => requester.user(),
        _ => (spec_user, spec_groups),
    };
    let attrs = Attributes {
        user,
        groups,
        resource_request: resource.is_some(),
        verb: str_at(resource.or(non_resource), "verb"),
        namespace: str_at(resource, "namespace"),
        group: str_at(resource, "group"),
        resource: str_at(resource, "resource"),
        subresource: str_at(resource, "subresource"),
        name: str_at(resource, "name"),
        path: str_at(non_resource, "path"),
    };
    let decision = policy.authorize(&attrs);
    let mut status = serde_json::Map::new();
    status.insert("allowed".into(), json!(decision.allowed));
    if !decision.reason.is_empty() {
        status.insert("reason".into(), json!(decision.reason));
    }
    if !decision.evaluation_error.is_empty() {
        status.insert("evaluationError".into(), json!(decision.evaluation_error));
    }
    if let Value::Object(m) = &mut body {
        if kind == Review::Local {
            let mut meta = meta.as_object().cloned().unwrap_or_default();
            meta.insert("namespace".into(), json!(url_namespace));
            m.insert("metadata".into(), Value::Object(meta));
        }
        m.insert("status".into(), Value::Object(status));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            api_groups: Some(strings(groups)),
            resources: Some(strings(resources)),
            verbs: strings(verbs),
            resource_names: (!names.is_empty()).then(|| strings(names)),
            non_resource_urls: None,
        }
    }

    fn ask(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: "system:serviceaccount:ml:agent".into(),
            resource_request: true,
            verb: verb.into(),
            namespace: "ml".into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names_with_wildcards() {
        let cases = [
            // (rule, request, allowed)
            (
                rule(&[""], &["pods"], &["get"], &[]),
                ask("get", "", "pods", "", "p"),
                true,
            ),
            (
                rule(&[""], &["pods"], &["get"], &[]),
                ask("list", "", "pods", "", ""),
                false,
            ),
            (
                rule(&[""], &["pods"], &["*"], &[]),
                ask("delete", "", "pods", "", "p"),
                true,
            ),
            (
                rule(&["apps"], &["pods"], &["get"], &[]),
                ask("get", "", "pods", "", "p"),
                false,
            ),
            (
                rule(&["*"], &["leases"], &["get"], &[]),
                ask("get", "coordination.k8s.io", "leases", "", "l"),
                true,
            ),
            (
                rule(&[""], &["*"], &["get"], &[]),
                ask("get", "", "secrets", "", "s"),
                true,
            ),
            (
                rule(&[""], &["*"], &["get"], &[]),
                ask("get", "", "pods", "log", "p"),
                true,
            ),
            // a resource does not cover its subresources, and the reverse
            (
                rule(&[""], &["pods"], &["get"], &[]),
                ask("get", "", "pods", "log", "p"),
                false,
            ),
            (
                rule(&[""], &["pods/log"], &["get"], &[]),
                ask("get", "", "pods", "log", "p"),
                true,
            ),
            (
                rule(&[""], &["pods/log"], &["get"], &[]),
                ask("get", "", "pods", "", "p"),
                false,
            ),
            (
                rule(&[""], &["*/log"], &["get"], &[]),
                ask("get", "", "pods", "log", "p"),
                true,
            ),
            (
                rule(&[""], &["*/log"], &["get"], &[]),
                ask("get", "", "pods", "status", "p"),
                false,
            ),
            (
                rule(&[""], &["*/log"], &["get"], &[]),
                ask("get", "", "pods", "", "p"),
                false,
            ),
            // resourceNames: empty is any name; a list matches exactly; `*` is not a wildcard
            (
                rule(&[""], &["configmaps"], &["get"], &["a"]),
                ask("get", "", "configmaps", "", "a"),
                true,
            ),
            (
                rule(&[""], &["configmaps"], &["get"], &["a"]),
                ask("get", "", "configmaps", "", "b"),
                false,
            ),
            (
                rule(&[""], &["configmaps"], &["list"], &["a"]),
                ask("list", "", "configmaps", "", ""),
                false,
            ),
            (
                rule(&[""], &["configmaps"], &["get"], &["*"]),
                ask("get", "", "configmaps", "", "b"),
                false,
            ),
        ];
        for (i, (rule, attrs, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                rule_allows(&attrs, &rule),
                want,
                "case {i}: {rule:?} vs {attrs:?}"
            );
        }
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let r = |urls: &[&str]| PolicyRule {
            non_resource_urls: Some(urls.iter().map(|s| s.to_string()).collect()),
            verbs: vec!["get".into()],
            ..Default::default()
        };
        let at = |path: &str| Attributes {
            verb: "get".into(),
            path: path.into(),
            ..Default::default()
        };
        let cases = [
            (r(&["/healthz"]), at("/healthz"), true),
            (r(&["/healthz"]), at("/healthz/ping"), false),
            (r(&["/healthz*"]), at("/healthz/ping"), true),
            (r(&["*"]), at("/version"), true),
            (r(&["/api"]), at("/apis"), false),
        ];
        for (i, (rule, attrs, want)) in cases.into_iter().enumerate() {
            assert_eq!(rule_allows(&attrs, &rule), want, "case {i}");
        }
        // a resource rule never allows a non-resource request
        assert!(!rule_allows(
            &at("/healthz"),
            &rule(&["*"], &["*"], &["*"], &[])
        ));
    }

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_string),
            api_group: (kind != "ServiceAccount").then(|| "rbac.authorization.k8s.io".into()),
        }
    }

    fn role(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}}))
            .map(|mut r: Role| {
                r.rules = Some(rules);
                r
            })
            .expect("role")
    }

    fn role_binding(
        ns: &str,
        name: &str,
        kind: &str,
        role: &str,
        subjects: Vec<Subject>,
    ) -> RoleBinding {
        let mut b: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        }))
        .expect("binding");
        b.subjects = Some(subjects);
        b
    }

    fn policy() -> Policy {
        let cluster_role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]
        }))
        .expect("cluster role");
        let crb: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "all-sa-read-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-reader"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:readers", "apiGroup": "rbac.authorization.k8s.io"}]
        }))
        .expect("crb");
        Policy {
            roles: vec![
                role(
                    "ml",
                    "agent",
                    vec![rule(&[""], &["pods"], &["create", "delete"], &[])],
                ),
                role(
                    "other",
                    "agent",
                    vec![rule(&[""], &["secrets"], &["*"], &[])],
                ),
            ],
            role_bindings: vec![
                // SA subject with its namespace
                role_binding(
                    "ml",
                    "agent",
                    "Role",
                    "agent",
                    vec![subject("ServiceAccount", "agent", Some("ml"))],
                ),
                // SA subject without namespace: the binding's
                role_binding(
                    "ml",
                    "local-sa",
                    "ClusterRole",
                    "pod-reader",
                    vec![subject("ServiceAccount", "local", None)],
                ),
                // every service account of namespace ml
                role_binding(
                    "ml",
                    "all-sa",
                    "Role",
                    "agent",
                    vec![subject("Group", "system:serviceaccounts:ml", None)],
                ),
                // a user; a binding to a role that does not exist
                role_binding(
                    "ml",
                    "alice",
                    "Role",
                    "agent",
                    vec![subject("User", "alice", None)],
                ),
                role_binding(
                    "ml",
                    "dangling",
                    "Role",
                    "missing",
                    vec![subject("User", "bob", None)],
                ),
                // bound in namespace `other` to a Role of that namespace
                role_binding(
                    "other",
                    "agent",
                    "Role",
                    "agent",
                    vec![subject("ServiceAccount", "agent", Some("ml"))],
                ),
            ],
            cluster_roles: vec![cluster_role],
            cluster_role_bindings: vec![crb],
        }
    }

    fn user(name: &str, groups: &[&str], verb: &str, ns: &str, resource: &str) -> Attributes {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            user: name.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            resource_request: true,
            verb: verb.into(),
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn bindings_apply_to_their_subjects_in_their_namespace() {
        let sa = "system:serviceaccount:ml:agent";
        let sa_groups = [
            "system:serviceaccounts",
            "system:serviceaccounts:ml",
            "system:authenticated",
        ];
        let cases = [
            (user(sa, &[], "create", "ml", "pods"), true),
            (user(sa, &[], "get", "ml", "pods"), false),
            // a Role grants only in its binding's namespace
            (user(sa, &[], "create", "default", "pods"), false),
            (user(sa, &[], "get", "other", "secrets"), true),
            (user(sa, &[], "get", "ml", "secrets"), false),
            // cluster-wide request: RoleBindings are not consulted
            (user(sa, &[], "create", "", "pods"), false),
            // SA subject without namespace defaults to the binding's
            (
                user("system:serviceaccount:ml:local", &[], "list", "ml", "pods"),
                true,
            ),
            (
                user(
                    "system:serviceaccount:other:local",
                    &[],
                    "list",
                    "ml",
                    "pods",
                ),
                false,
            ),
            // the SA group of a namespace, only when the user carries it
            (
                user(
                    "system:serviceaccount:ml:x",
                    &sa_groups,
                    "delete",
                    "ml",
                    "pods",
                ),
                true,
            ),
            (
                user("system:serviceaccount:ml:x", &[], "delete", "ml", "pods"),
                false,
            ),
            // a ClusterRoleBinding grants in every namespace
            (
                user(
                    "u",
                    &["system:serviceaccounts:readers"],
                    "get",
                    "anywhere",
                    "pods/log",
                ),
                true,
            ),
            (
                user("u", &["system:serviceaccounts:readers"], "get", "", "pods"),
                true,
            ),
            (
                user(
                    "u",
                    &["system:serviceaccounts:readers"],
                    "create",
                    "ml",
                    "pods",
                ),
                false,
            ),
            (user("alice", &[], "create", "ml", "pods"), true),
            (user("alicia", &[], "create", "ml", "pods"), false),
            // privileged group
            (
                user("root", &["system:masters"], "delete", "", "namespaces"),
                true,
            ),
        ];
        let p = policy();
        for (i, (attrs, want)) in cases.into_iter().enumerate() {
            let d = p.authorize(&attrs);
            assert_eq!(d.allowed, want, "case {i}: {attrs:?} → {d:?}");
        }
    }

    #[test]
    fn reasons_name_the_binding_and_missing_roles_are_reported() {
        let p = policy();
        let d = p.authorize(&user(
            "system:serviceaccount:ml:agent",
            &[],
            "create",
            "ml",
            "pods",
        ));
        assert_eq!(
            d.reason,
            r#"RBAC: allowed by RoleBinding "agent/ml" of Role "agent" to ServiceAccount "agent/ml""#
        );
        let d = p.authorize(&user("bob", &[], "get", "ml", "pods"));
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            r#"RBAC: role.rbac.authorization.k8s.io "missing" not found"#
        );
    }

    #[test]
    fn reviews_are_validated_like_the_api_server() {
        let p = policy();
        let none = Requester::default();
        let ok = review(
            &p,
            Review::Subject,
            "",
            &none,
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "spec": {"user": "system:serviceaccount:ml:agent",
                            "resourceAttributes": {"namespace": "ml", "verb": "create", "resource": "pods"}}}),
        )
        .expect("valid review");
        assert_eq!(ok["status"]["allowed"], json!(true));
        let bad = [
            (
                Review::Subject,
                "",
                json!({"spec": {"resourceAttributes": {"verb": "get"}}}),
                "spec.user",
            ),
            (
                Review::Subject,
                "",
                json!({"spec": {"user": "u"}}),
                "spec.resourceAttributes",
            ),
            (
                Review::Subject,
                "",
                json!({"spec": {"user": "u", "resourceAttributes": {}, "nonResourceAttributes": {}}}),
                "spec.nonResourceAttributes",
            ),
            (
                Review::Local,
                "ml",
                json!({"spec": {"user": "u", "resourceAttributes": {"namespace": "x", "verb": "get"}}}),
                "spec.resourceAttributes.namespace",
            ),
            (
                Review::Subject,
                "",
                json!({"metadata": {"name": "x"}, "spec": {"user": "u", "resourceAttributes": {}}}),
                "metadata",
            ),
        ];
        for (kind, ns, body, field) in bad {
            let e = review(&p, kind, ns, &none, body.clone()).expect_err("invalid");
            assert_eq!(e.code, 422, "{body}");
            assert!(e.message.contains(field), "{body}: {}", e.message);
        }
    }

    #[test]
    fn self_reviews_use_the_impersonated_user_with_service_account_groups() {
        let p = policy();
        let body = json!({"spec": {"resourceAttributes": {"namespace": "ml", "verb": "delete", "resource": "pods"}}});
        let as_sa = Requester {
            impersonate_user: Some("system:serviceaccount:ml:someone".into()),
            impersonate_groups: vec![],
        };
        // allowed only through the group system:serviceaccounts:ml the impersonation adds
        let out = review(&p, Review::SelfSubject, "", &as_sa, body.clone()).expect("review");
        assert_eq!(out["status"]["allowed"], json!(true), "{out}");
        let as_other = Requester {
            impersonate_user: Some("system:serviceaccount:x:someone".into()),
            impersonate_groups: vec![],
        };
        let out = review(&p, Review::SelfSubject, "", &as_other, body.clone()).expect("review");
        assert_eq!(out["status"]["allowed"], json!(false), "{out}");
        // no impersonation: the double's admin
        let out = review(&p, Review::SelfSubject, "", &Requester::default(), body).expect("review");
        assert_eq!(out["status"]["allowed"], json!(true));
    }
}
