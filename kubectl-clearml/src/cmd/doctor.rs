//! `kubectl clearml doctor`: a preflight to run before and after `install`. Each check is one
//! line, OK / WARN / FAIL, with the fix for WARN and FAIL; any FAIL makes the command exit 1.
//!
//! ```text
//! values (-f, else the ConfigMap) ─▶ notices ─▶ namespace ─▶ credentials Secret ─▶ ConfigMap
//!   ─▶ RBAC (one access review per verb and resource of the Role install renders)
//!   ─▶ agent pod (Deployment, else the pod's reason and last log lines)
//!   ─▶ ClearML (the agent's GetStatus; a crash-looping agent's login error from its pod)
//!   ─▶ queues (the agent resolved each in ClearML, or createQueues will create it)
//!   ─▶ task namespace (and its credentials Secret) ─▶ imagePullSecrets of the templates
//! ```
//!
//! The I/O gathers facts ([`Facts`]); pure functions turn them into checks, so every verdict and
//! its fix is table-tested without a cluster. With `-f`, what `install` would create (namespace,
//! Secret, ConfigMap, Role, Deployment) is a WARN, not a FAIL: the command is also a preflight.

use std::{
    collections::BTreeSet,
    io::{self, Write},
    time::Duration,
};

use clearml_agent_core::{
    contract::{AGENT_NAME, CREDENTIALS_SECRET, SECRET_KEY_ACCESS, SECRET_KEY_SECRET, VALUES_KEY},
    gang,
    values::{FieldError, GangScheduling, Values},
};
use clearml_agent_proto::v1::{GetStatusRequest, GetStatusResponse, clearml_connection::State};
use k8s_openapi::api::{
    apps::v1::Deployment,
    authorization::v1::{
        LocalSubjectAccessReview, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    },
    core::v1::{ConfigMap, Namespace, Pod, Secret},
    rbac::v1::Role,
};
use kube::{
    Api, Client,
    api::{ListParams, LogParams, ObjectMeta, PostParams},
};
use serde::Serialize;

use super::{cluster::kube_message, rpc_error};
use crate::{
    cli::DoctorArgs,
    connect::{Ctx, is_ready},
    manifests::{self, AGENT_SELECTOR, ExistingCredentials, InstallParams, REGISTRY_SECRET},
    output::{self, Tabular},
    values_input::{self, InputError},
};

/// Last lines of a failing agent pod's log shown under its check.
const LOG_LINES: usize = 10;
/// Lines of a failing agent pod's log read (the error may sit above a backtrace).
const LOG_TAIL: i64 = 200;
/// How long the agent's status may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);
/// Resources the agent works on in the task namespace (pods and their rendezvous Services and
/// events, see `agent/src/k8s.rs`); its ConfigMap and Lease stay in its own namespace. Checked
/// against the rendered Role by a test, so an entry can never name something the Role lacks.
pub const TASK_NAMESPACE_RESOURCES: &[&str] = &["pods", "services", "events"];
/// What the agent logs when it cannot log in to ClearML (`agent/src/args.rs`, `retry_startup`).
const LOGIN_FAILURE: &str = "cannot log in to ClearML";

/// Runs `doctor`.
pub async fn run(args: DoctorArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.kube(false).await?;
    let facts = gather(&args, ctx, &client).await;
    let view = DoctorView::new(&ctx.namespace, checks(&facts));
    output::print(&view, ctx.global.output)?;
    match view.summary.fail {
        0 => Ok(()),
        1 => anyhow::bail!("1 check failed"),
        n => anyhow::bail!("{n} checks failed"),
    }
}

// ----- the report --------------------------------------------------------------------------

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something is off or could not be checked.
    Warn,
    /// Broken: the agent will not work until fixed.
    Fail,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id: `values`, `notices`, `namespace`, `secret`, `configmap`, `rbac`, `agent`,
    /// `clearml`, `queue/<name>`, `task-namespace`, `task-secret`, `pull-secret/<name>`, `gang`.
    pub name: String,
    /// The verdict.
    pub status: Level,
    /// What was found.
    pub message: String,
    /// Supporting lines (each values error, each missing permission, the agent's last log lines).
    pub details: Vec<String>,
    /// What to do (WARN and FAIL).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Level::Ok,
            message: message.into(),
            details: Vec::new(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Level::Warn,
            fix: Some(fix.into()),
            ..Self::ok(name, message)
        }
    }

    fn fail(name: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Level::Fail,
            fix: Some(fix.into()),
            ..Self::ok(name, message)
        }
    }

    fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

/// Counts of each verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// OK checks.
    pub ok: usize,
    /// WARN checks.
    pub warn: usize,
    /// FAIL checks.
    pub fail: usize,
}

/// What `doctor` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorView {
    /// The agent's namespace.
    pub namespace: String,
    /// Every check, in the order they ran.
    pub checks: Vec<Check>,
    /// How many of each verdict.
    pub summary: Summary,
}

impl DoctorView {
    /// The report of `checks`.
    pub fn new(namespace: &str, checks: Vec<Check>) -> Self {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Level::Ok => summary.ok += 1,
                Level::Warn => summary.warn += 1,
                Level::Fail => summary.fail += 1,
            }
        }
        Self {
            namespace: namespace.to_string(),
            checks,
            summary,
        }
    }
}

impl Tabular for DoctorView {
    fn write_table(&self, _wide: bool, out: &mut dyn Write) -> io::Result<()> {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        let indent = " ".repeat(6 + width + 2);
        for c in &self.checks {
            let level = match c.status {
                Level::Ok => "OK",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            writeln!(out, "{level:<6}{:<width$}  {}", c.name, c.message)?;
            for line in &c.details {
                writeln!(out, "{indent}  {line}")?;
            }
            if let Some(fix) = &c.fix {
                writeln!(out, "{indent}fix: {fix}")?;
            }
        }
        writeln!(
            out,
            "\n{} OK, {} WARN, {} FAIL",
            self.summary.ok, self.summary.warn, self.summary.fail
        )
    }
}

// ----- facts -------------------------------------------------------------------------------

/// A read that may have failed for a reason other than "not found".
pub type Read<T> = Result<Option<T>, String>;
/// Pods, each with its last log lines (empty for Ready pods).
pub type PodLogs = Vec<(Pod, String)>;
/// The agent's pods, or why they could not be listed.
pub type AgentPods = Result<PodLogs, String>;

/// The answer of one access review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// Allowed.
    Allowed,
    /// Not allowed.
    Denied,
    /// The review itself was refused or failed.
    Unknown(String),
}

/// One verb on one resource the agent needs, in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// Namespace.
    pub namespace: String,
    /// API group (`""` core).
    pub group: String,
    /// Resource, with `/subresource` when the rule names one.
    pub resource: String,
    /// Verb.
    pub verb: String,
    /// One of the rule's resourceNames (empty: any).
    pub name: String,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        write!(f, "{} {resource}", self.verb)?;
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        write!(f, " in namespace {}", self.namespace)
    }
}

/// What the agent said, or why it could not be asked.
#[derive(Debug, Clone)]
pub enum AgentAnswer {
    /// No Ready agent pod: not asked.
    NotAsked,
    /// Its status.
    Status(Box<GetStatusResponse>),
    /// The call failed.
    Error(String),
}

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The agent's namespace.
    pub namespace: String,
    /// `-f`/`--set` given: a preflight (what `install` creates may be missing).
    pub preflight: bool,
    /// The values from `-f`: parsed, or every error (`Err` of one line for unreadable files).
    pub file_values: Option<Result<Values, Vec<String>>>,
    /// Whether the namespace exists.
    pub namespace_exists: Read<()>,
    /// The ConfigMap.
    pub configmap: Read<ConfigMap>,
    /// The credentials Secret's name and the Secret.
    pub secret: (String, Read<Secret>),
    /// The agent's ServiceAccount and the answers of its access reviews.
    pub rbac: Rbac,
    /// The agent's Deployment.
    pub deployment: Read<Deployment>,
    /// The agent's pods, each with its last log lines.
    pub pods: AgentPods,
    /// What the agent's control API answered.
    pub agent: AgentAnswer,
    /// The task namespace, whether it exists, and its credentials Secret (when it differs).
    pub task_namespace: Option<(String, Read<()>, Read<Secret>)>,
    /// Pull secrets the templates name, each with its Secret in the task namespace.
    pub pull_secrets: Vec<(String, Read<Secret>)>,
    /// The PodGroup API the API server serves (`scheduling.k8s.io/v1beta1` …), `None` if none;
    /// `Err`: discovery failed.
    pub pod_group_api: Result<Option<String>, String>,
}

/// The RBAC facts.
#[derive(Debug, Clone)]
pub enum Rbac {
    /// Not reviewed, and why.
    NotChecked(String),
    /// The ServiceAccount and each access with its answer.
    Reviewed {
        /// The ServiceAccount.
        service_account: String,
        /// Accesses in order.
        answers: Vec<(Access, Review)>,
    },
}

/// The values the checks use: the file's when given and valid, else the ConfigMap's.
fn effective_values(facts: &Facts) -> Option<Values> {
    match &facts.file_values {
        Some(Ok(v)) => Some(v.clone()),
        Some(Err(_)) => None,
        None => configmap_values(&facts.configmap).and_then(Result::ok),
    }
}

/// The ConfigMap's values: `None` without a ConfigMap, else parsed or every error.
fn configmap_values(cm: &Read<ConfigMap>) -> Option<Result<Values, Vec<String>>> {
    let Ok(Some(cm)) = cm else {
        return None;
    };
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(VALUES_KEY)) else {
        return Some(Err(vec![format!("the ConfigMap has no key {VALUES_KEY}")]));
    };
    Some(match Values::from_yaml(text) {
        Ok(v) => Ok(v),
        Err(first) => {
            let mut all = Values::errors_in_yaml(text);
            if all.is_empty() {
                all.push(first);
            }
            Err(all.iter().map(FieldError::to_string).collect())
        }
    })
}

/// The credentials Secret the values name.
pub fn secret_name(values: Option<&Values>) -> String {
    values
        .and_then(|v| v.clearml.as_ref())
        .and_then(|c| c.existing_agentk8sglue_secret.clone())
        .unwrap_or_else(|| CREDENTIALS_SECRET.to_string())
}

/// The Roles `install` renders for these values (every possible object without them).
pub fn rendered_roles(values: Option<&Values>, namespace: &str) -> Vec<Role> {
    let manifests = values
        .and_then(|v| {
            let params = InstallParams {
                namespace: namespace.to_string(),
                image: manifests::default_image(),
                clearml_insecure_skip_tls_verify: false,
            };
            manifests::render(v, &params, &ExistingCredentials::NotChecked).ok()
        })
        .map(|r| r.manifests)
        .or_else(|| manifests::all_objects(namespace).ok())
        .unwrap_or_default();
    manifests
        .iter()
        .filter(|m| m.resource.kind == "Role")
        .filter_map(|m| serde_json::from_value(m.doc.clone()).ok())
        .collect()
}

/// Every (verb, resource) of the Roles, in the agent's namespace; those of
/// [`TASK_NAMESPACE_RESOURCES`] also in the task namespace when it differs.
pub fn required_access(roles: &[Role], namespace: &str, task_namespace: &str) -> Vec<Access> {
    let mut out = BTreeSet::new();
    for rule in roles.iter().flat_map(|r| r.rules.iter().flatten()) {
        let names: Vec<String> = match rule.resource_names.as_deref() {
            None | Some([]) => vec![String::new()],
            Some(n) => n.to_vec(),
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for name in &names {
                        let mut namespaces = vec![namespace];
                        let base = resource.split('/').next().unwrap_or_default();
                        if task_namespace != namespace && TASK_NAMESPACE_RESOURCES.contains(&base) {
                            namespaces.push(task_namespace);
                        }
                        for ns in namespaces {
                            out.insert(Access {
                                namespace: ns.to_string(),
                                group: group.clone(),
                                resource: resource.clone(),
                                verb: verb.clone(),
                                name: name.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The groups a ServiceAccount's token carries (what the API server authenticates it as).
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

async fn read<K>(api: &Api<K>, name: &str) -> Read<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(obj) => Ok(Some(obj)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(kube_message(&e)),
    }
}

async fn read_namespace(client: &Client, name: &str) -> Read<()> {
    read(&Api::<Namespace>::all(client.clone()), name)
        .await
        .map(|o| o.map(drop))
}

/// Asks the API server whether the ServiceAccount may do `access`: a LocalSubjectAccessReview
/// (the namespace `admin` role may create those), else a cluster SubjectAccessReview.
async fn review(client: &Client, user: &str, groups: &[String], access: &Access) -> Review {
    let (resource, subresource) = match access.resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (access.resource.clone(), None),
    };
    let spec = SubjectAccessReviewSpec {
        user: Some(user.to_string()),
        groups: Some(groups.to_vec()),
        resource_attributes: Some(ResourceAttributes {
            namespace: Some(access.namespace.clone()),
            verb: Some(access.verb.clone()),
            group: Some(access.group.clone()),
            resource: Some(resource),
            subresource,
            name: (!access.name.is_empty()).then(|| access.name.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let local = LocalSubjectAccessReview {
        metadata: ObjectMeta {
            namespace: Some(access.namespace.clone()),
            ..Default::default()
        },
        spec: spec.clone(),
        status: None,
    };
    let api: Api<LocalSubjectAccessReview> = Api::namespaced(client.clone(), &access.namespace);
    let first = match api.create(&PostParams::default(), &local).await {
        Ok(r) => return decided(r.status.map(|s| s.allowed)),
        Err(e) => kube_message(&e),
    };
    let cluster = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec,
        status: None,
    };
    match Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &cluster)
        .await
    {
        Ok(r) => decided(r.status.map(|s| s.allowed)),
        Err(e) => Review::Unknown(format!(
            "LocalSubjectAccessReview: {first}; SubjectAccessReview: {}",
            kube_message(&e)
        )),
    }
}

fn decided(allowed: Option<bool>) -> Review {
    match allowed {
        Some(true) => Review::Allowed,
        Some(false) => Review::Denied,
        None => Review::Unknown("the review came back without a status".into()),
    }
}

/// Reads everything the checks need; no read stops the others.
async fn gather(args: &DoctorArgs, ctx: &Ctx, client: &Client) -> Facts {
    let ns = ctx.namespace.clone();
    let preflight = !args.values.is_empty() || !args.set.is_empty();
    let file_values = preflight.then(|| {
        values_input::load(&args.values, &args.set).map_err(|e| match e {
            InputError::Invalid(errors) => errors.iter().map(FieldError::to_string).collect(),
            other => vec![other.to_string()],
        })
    });
    let namespace_exists = read_namespace(client, &ns).await;
    let configmap = read(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        AGENT_NAME,
    )
    .await;
    let mut facts = Facts {
        namespace: ns.clone(),
        preflight,
        file_values,
        namespace_exists,
        configmap,
        secret: (String::new(), Ok(None)),
        rbac: Rbac::NotChecked(String::new()),
        deployment: Ok(None),
        pods: Ok(Vec::new()),
        agent: AgentAnswer::NotAsked,
        task_namespace: None,
        pull_secrets: Vec::new(),
        pod_group_api: pod_group_api(client).await.map_err(|e| kube_message(&e)),
    };
    let values = effective_values(&facts);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let name = secret_name(values.as_ref());
    facts.secret = (name.clone(), read(&secrets, &name).await);

    facts.deployment = read(
        &Api::<Deployment>::namespaced(client.clone(), &ns),
        AGENT_NAME,
    )
    .await;
    let task_ns = values
        .as_ref()
        .and_then(|v| v.agentk8sglue.task_namespace.clone())
        .unwrap_or_else(|| ns.clone());

    // RBAC: the installed Deployment's ServiceAccount, else the one install renders
    let service_account = facts
        .deployment
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.service_account_name.clone())
        .unwrap_or_else(|| AGENT_NAME.to_string());
    let roles = rendered_roles(values.as_ref(), &ns);
    facts.rbac = if facts.namespace_exists != Ok(Some(())) {
        Rbac::NotChecked(format!("namespace {ns} does not exist"))
    } else if roles.is_empty() {
        Rbac::NotChecked("install renders no Role".into())
    } else {
        let user = format!("system:serviceaccount:{ns}:{service_account}");
        let groups = service_account_groups(&ns);
        let wanted = required_access(&roles, &ns, &task_ns);
        let answers =
            futures::future::join_all(wanted.iter().map(|a| review(client, &user, &groups, a)))
                .await;
        Rbac::Reviewed {
            service_account,
            answers: wanted.into_iter().zip(answers).collect(),
        }
    };

    // the agent's pods, with the last log lines of those not ready
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    facts.pods = match pods_api
        .list(&ListParams::default().labels(AGENT_SELECTOR))
        .await
    {
        Ok(list) => {
            let mut out = Vec::new();
            for pod in list.items {
                let log = if is_ready(&pod) {
                    String::new()
                } else {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let params = LogParams {
                        tail_lines: Some(LOG_TAIL),
                        ..Default::default()
                    };
                    pods_api.logs(&name, &params).await.unwrap_or_default()
                };
                out.push((pod, log));
            }
            Ok(out)
        }
        Err(e) => Err(kube_message(&e)),
    };
    let any_ready = facts
        .pods
        .as_ref()
        .is_ok_and(|p| p.iter().any(|(pod, _)| is_ready(pod)));
    if any_ready || ctx.global.agent_addr.is_some() {
        facts.agent = match tokio::time::timeout(STATUS_TIMEOUT, async {
            let mut agent = ctx.agent().await?;
            let status = agent
                .get_status(GetStatusRequest {})
                .await
                .map_err(rpc_error)?;
            anyhow::Ok(status.into_inner())
        })
        .await
        {
            Ok(Ok(status)) => AgentAnswer::Status(Box::new(status)),
            Ok(Err(e)) => AgentAnswer::Error(format!("{e:#}")),
            Err(_) => AgentAnswer::Error(format!("no answer within {}s", STATUS_TIMEOUT.as_secs())),
        };
    }

    if task_ns != ns {
        let exists = read_namespace(client, &task_ns).await;
        let secret = read(&Api::<Secret>::namespaced(client.clone(), &task_ns), &name).await;
        facts.task_namespace = Some((task_ns.clone(), exists, secret));
    }
    if let Some(values) = &values {
        let task_secrets: Api<Secret> = Api::namespaced(client.clone(), &task_ns);
        for name in pull_secret_names(values) {
            let secret = read(&task_secrets, &name).await;
            facts.pull_secrets.push((name, secret));
        }
    }
    facts
}

/// The PodGroup API version the API server serves, newest first (as the agent finds it).
async fn pod_group_api(client: &Client) -> Result<Option<String>, kube::Error> {
    let groups = client.list_api_groups().await?;
    let Some(group) = groups.groups.iter().find(|g| g.name == gang::GROUP) else {
        return Ok(None);
    };
    for version in gang::VERSIONS {
        let gv = format!("{}/{version}", gang::GROUP);
        if group.versions.iter().any(|v| v.version == *version)
            && client
                .list_api_group_resources(&gv)
                .await?
                .resources
                .iter()
                .any(|r| r.name == gang::PLURAL)
        {
            return Ok(Some(gv));
        }
    }
    Ok(None)
}

/// Every `imagePullSecrets` name of `basePodTemplate` and each queue's merged template.
pub fn pull_secret_names(values: &Values) -> Vec<String> {
    let a = &values.agentk8sglue;
    let mut names = BTreeSet::new();
    for s in a.base_pod_template.image_pull_secrets.iter().flatten() {
        names.insert(s.name.clone());
    }
    for queue in a.queues.keys() {
        if let Some(Ok(t)) = a.queue_template(queue) {
            for s in t.image_pull_secrets.iter().flatten() {
                names.insert(s.name.clone());
            }
        }
    }
    names.into_iter().filter(|n| !n.is_empty()).collect()
}

// ----- the checks (pure) -------------------------------------------------------------------

/// Every check, in order.
pub fn checks(f: &Facts) -> Vec<Check> {
    let ns = &f.namespace;
    let mut out = Vec::new();
    let install_fix = "kubectl clearml install -f values.yaml";
    let creates = |what: &str| format!("{what} (kubectl clearml install creates it)");

    // values
    let cm_values = configmap_values(&f.configmap);
    let (values_check, values) = match (&f.file_values, &cm_values) {
        (Some(Ok(v)), _) => (
            Check::ok("values", format!("the values file parses ({})", queues_text(v))),
            Some(v.clone()),
        ),
        (Some(Err(errors)), _) => (
            Check::fail(
                "values",
                format!("the values file is invalid ({})", count(errors.len(), "error")),
                "correct each field named above; nothing is installed until all are fixed",
            )
            .with_details(errors.clone()),
            None,
        ),
        (None, Some(Ok(v))) => (
            Check::ok(
                "values",
                format!(
                    "the values in ConfigMap {AGENT_NAME} parse ({})",
                    queues_text(v)
                ),
            ),
            Some(v.clone()),
        ),
        (None, Some(Err(errors))) => (
            Check::fail(
                "values",
                format!(
                    "the values in ConfigMap {AGENT_NAME} are invalid ({}); the agent keeps its last good config",
                    count(errors.len(), "error")
                ),
                format!(
                    "kubectl -n {ns} edit configmap {AGENT_NAME}, or re-run kubectl clearml install -f values.yaml"
                ),
            )
            .with_details(errors.clone()),
            None,
        ),
        (None, None) => (
            Check::fail(
                "values",
                format!("no values to check: no -f given and no ConfigMap {AGENT_NAME} in namespace {ns}"),
                format!("pass -f values.yaml, or install first: {install_fix}"),
            ),
            None,
        ),
    };
    out.push(values_check);
    if let Some(v) = &values {
        let notices = v.notices();
        out.push(if notices.is_empty() {
            Check::ok("notices", "every key given has an effect here")
        } else {
            Check::warn(
                "notices",
                format!(
                    "{} accepted but without effect here",
                    count(notices.len(), "key")
                ),
                "remove these keys from the values (they change nothing)",
            )
            .with_details(notices.iter().map(ToString::to_string).collect())
        });
    }

    // namespace
    out.push(match &f.namespace_exists {
        Ok(Some(())) => Check::ok("namespace", format!("namespace {ns} exists")),
        Ok(None) if f.preflight => Check::warn(
            "namespace",
            creates(&format!("namespace {ns} does not exist yet")),
            format!("{install_fix} -n {ns}"),
        ),
        Ok(None) => Check::fail(
            "namespace",
            format!("namespace {ns} does not exist"),
            format!("install the agent there ({install_fix} -n {ns}), or pass -n with the agent's namespace"),
        ),
        Err(e) => Check::fail(
            "namespace",
            format!("cannot read namespace {ns}: {e}"),
            "check your kubeconfig, context and rights (kubectl auth can-i get namespaces)",
        ),
    });

    // credentials Secret
    out.push(secret_check(
        "secret",
        ns,
        &f.secret.0,
        &f.secret.1,
        f.preflight,
        values.as_ref(),
    ));

    // ConfigMap
    out.push(match (&f.configmap, &cm_values) {
        (Ok(Some(_)), Some(Ok(_))) => Check::ok(
            "configmap",
            format!("ConfigMap {AGENT_NAME} exists and its values parse"),
        ),
        (Ok(Some(_)), Some(Err(errors))) => Check::fail(
            "configmap",
            format!(
                "ConfigMap {AGENT_NAME} holds invalid values ({})",
                count(errors.len(), "error")
            ),
            format!("kubectl -n {ns} edit configmap {AGENT_NAME}, or re-run {install_fix}"),
        )
        .with_details(errors.clone()),
        (Ok(None), _) | (Ok(Some(_)), None) if f.preflight => Check::warn(
            "configmap",
            creates(&format!("ConfigMap {AGENT_NAME} does not exist yet")),
            install_fix,
        ),
        (Ok(None), _) | (Ok(Some(_)), None) => Check::fail(
            "configmap",
            format!("ConfigMap {AGENT_NAME} not found in namespace {ns}"),
            install_fix,
        ),
        (Err(e), _) => Check::fail(
            "configmap",
            format!("cannot read ConfigMap {AGENT_NAME}: {e}"),
            format!("check your rights: kubectl -n {ns} auth can-i get configmaps"),
        ),
    });

    out.push(rbac_check(ns, &f.rbac, f.preflight));
    let agent_up = agent_check(ns, &f.deployment, &f.pods, f.preflight);
    out.push(agent_up);
    out.push(clearml_check(ns, &f.agent, &f.pods, &f.secret.0));
    if let Some(v) = &values {
        out.extend(queue_checks(v, &f.agent));
    }

    // task namespace
    match &f.task_namespace {
        None => out.push(Check::ok(
            "task-namespace",
            format!("task pods run in the agent's namespace {ns}"),
        )),
        Some((task_ns, exists, secret)) => {
            out.push(match exists {
                Ok(Some(())) => Check::ok("task-namespace", format!("namespace {task_ns} exists")),
                Ok(None) => Check::fail(
                    "task-namespace",
                    format!("agentk8sglue.taskNamespace {task_ns} does not exist"),
                    format!("kubectl create namespace {task_ns} (with a Role and RoleBinding for the agent's ServiceAccount there)"),
                ),
                Err(e) => Check::fail(
                    "task-namespace",
                    format!("cannot read namespace {task_ns}: {e}"),
                    "check your rights (kubectl auth can-i get namespaces)",
                ),
            });
            // task pods read the key pair from a Secret in their own namespace
            out.push(secret_check(
                "task-secret",
                task_ns,
                &f.secret.0,
                secret,
                false,
                None,
            ));
        }
    }

    // pull secrets
    let task_ns = f.task_namespace.as_ref().map_or(ns, |(t, _, _)| t);
    if values.is_some() && f.pull_secrets.is_empty() {
        out.push(Check::ok(
            "pull-secrets",
            "the pod templates name no imagePullSecrets",
        ));
    }
    let registry_from_values = values
        .as_ref()
        .and_then(|v| manifests::docker_config(v).ok().flatten())
        .is_some();
    for (name, secret) in &f.pull_secrets {
        let id = format!("pull-secret/{name}");
        out.push(match secret {
            Ok(Some(_)) => Check::ok(id, format!("Secret {name} exists in namespace {task_ns}")),
            Ok(None) if f.preflight && name == REGISTRY_SECRET && registry_from_values => {
                Check::warn(id, creates(&format!("Secret {name} does not exist yet")), install_fix)
            }
            Ok(None) => Check::fail(
                id,
                format!("imagePullSecrets names Secret {name}, which does not exist in namespace {task_ns}: task pods will fail with ErrImagePull"),
                format!("kubectl -n {task_ns} create secret docker-registry {name} --docker-server=REGISTRY --docker-username=USER --docker-password=PASSWORD"),
            ),
            Err(e) => Check::warn(
                id,
                format!("cannot read Secret {name}: {e}"),
                format!("check your rights: kubectl -n {task_ns} auth can-i get secrets"),
            ),
        });
    }
    if let Some(values) = &values {
        out.push(gang_check(values, &f.pod_group_api));
    }
    out
}

/// How multi-node tasks start whole on this cluster; FAIL if a queue requires the PodGroup API
/// the cluster does not serve.
pub fn gang_check(values: &Values, served: &Result<Option<String>, String>) -> Check {
    let requiring: Vec<String> = values
        .agentk8sglue
        .all_queues()
        .into_iter()
        .filter(|(_, q)| {
            q.queue_settings.gang_scheduling == Some(GangScheduling::PodGroup)
                && q.queue_settings.kueue.is_none()
        })
        .map(|(name, _)| name)
        .collect();
    match served {
        Ok(Some(api)) => Check::ok(
            "gang",
            format!(
                "the cluster serves the PodGroup API ({api}): the scheduler starts multi-node tasks whole"
            ),
        ),
        Ok(None) if requiring.is_empty() => Check::ok(
            "gang",
            "the cluster serves no PodGroup API: multi-node tasks use the agent's gang timeout (queueSettings.gangTimeoutSeconds) or Kueue",
        ),
        Ok(None) => Check::fail(
            "gang",
            format!(
                "queueSettings.gangScheduling is podGroup for {}, but the cluster serves no PodGroup API ({}): their multi-node tasks will fail",
                requiring.join(", "),
                gang::GROUP
            ),
            "use Kubernetes 1.36 or later with the GenericWorkload feature gate and the scheduler's GangScheduling plugin, or set gangScheduling: auto",
        ),
        Err(e) => Check::warn(
            "gang",
            format!("cannot tell whether the cluster serves the PodGroup API: {e}"),
            format!("kubectl api-resources --api-group={}", gang::GROUP),
        ),
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn queues_text(v: &Values) -> String {
    count(v.agentk8sglue.all_queues().len(), "queue")
}

/// The credentials Secret `name` in `namespace`: present with both keys, non-empty.
fn secret_check(
    id: &str,
    namespace: &str,
    name: &str,
    secret: &Read<Secret>,
    preflight: bool,
    values: Option<&Values>,
) -> Check {
    let create = format!(
        "set clearml.agentk8sglueKey and clearml.agentk8sglueSecret in the values and re-run kubectl clearml install, or kubectl -n {namespace} create secret generic {name} --from-literal={SECRET_KEY_ACCESS}=ACCESS_KEY --from-literal={SECRET_KEY_SECRET}=SECRET_KEY"
    );
    match secret {
        Ok(Some(s)) => {
            let missing: Vec<&str> = [SECRET_KEY_ACCESS, SECRET_KEY_SECRET]
                .into_iter()
                .filter(|k| {
                    let data = s.data.as_ref().and_then(|d| d.get(*k)).map(|b| b.0.len());
                    let text = s
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(*k))
                        .map(String::len);
                    data.or(text).unwrap_or(0) == 0
                })
                .collect();
            if missing.is_empty() {
                Check::ok(
                    id,
                    format!(
                        "Secret {name} in namespace {namespace} has {SECRET_KEY_ACCESS} and {SECRET_KEY_SECRET}"
                    ),
                )
            } else {
                Check::fail(
                    id,
                    format!(
                        "Secret {name} in namespace {namespace} lacks {}",
                        missing.join(" and ")
                    ),
                    create,
                )
            }
        }
        Ok(None) => {
            let from_values = values
                .and_then(|v| manifests::credentials_data(v).ok().flatten())
                .is_some();
            let existing = values
                .and_then(|v| v.clearml.as_ref())
                .is_some_and(|c| c.existing_agentk8sglue_secret.is_some());
            if preflight && from_values && !existing {
                Check::warn(
                    id,
                    format!(
                        "Secret {name} does not exist yet (kubectl clearml install creates it from clearml.agentk8sglueKey/agentk8sglueSecret)"
                    ),
                    "kubectl clearml install -f values.yaml",
                )
            } else {
                Check::fail(
                    id,
                    format!(
                        "Secret {name} not found in namespace {namespace}: the agent and task pods cannot start without the ClearML key pair"
                    ),
                    create,
                )
            }
        }
        Err(e) => Check::warn(
            id,
            format!("cannot read Secret {name}: {e}"),
            format!("check your rights: kubectl -n {namespace} auth can-i get secrets"),
        ),
    }
}

fn rbac_check(ns: &str, rbac: &Rbac, preflight: bool) -> Check {
    let (service_account, answers) = match rbac {
        Rbac::NotChecked(why) => {
            return Check::warn(
                "rbac",
                format!("not checked: {why}"),
                "run kubectl clearml doctor again after install",
            );
        }
        Rbac::Reviewed {
            service_account,
            answers,
        } => (service_account, answers),
    };
    let denied: Vec<String> = answers
        .iter()
        .filter(|(_, r)| *r == Review::Denied)
        .map(|(a, _)| a.to_string())
        .collect();
    let unknown: Vec<String> = answers
        .iter()
        .filter_map(|(a, r)| match r {
            Review::Unknown(why) => Some(format!("{a}: {why}")),
            _ => None,
        })
        .collect();
    let who = format!("ServiceAccount {ns}/{service_account}");
    if !denied.is_empty() {
        let fix = format!(
            "re-run kubectl clearml install (it applies Role and RoleBinding {AGENT_NAME}), or grant these to {who} (kubectl -n {ns} edit role {AGENT_NAME})"
        );
        let message = format!(
            "{who} lacks {} of the {} permissions the agent needs",
            denied.len(),
            answers.len()
        );
        return if preflight {
            Check::warn("rbac", format!("{message} (install grants them)"), fix)
        } else {
            Check::fail("rbac", message, fix)
        }
        .with_details(denied);
    }
    if !unknown.is_empty() {
        return Check::warn(
            "rbac",
            format!("cannot check what {who} may do: the access reviews were refused"),
            format!(
                "you need create on localsubjectaccessreviews.authorization.k8s.io in namespace {ns} (the admin role has it), or ask a cluster admin to run kubectl auth can-i --list -n {ns} --as=system:serviceaccount:{ns}:{service_account}"
            ),
        )
        .with_details(unknown);
    }
    Check::ok(
        "rbac",
        format!(
            "{who} has all {} permissions the agent needs (Role {AGENT_NAME})",
            answers.len()
        ),
    )
}

/// The agent's Deployment rolled out, else why its pod is not ready.
pub fn agent_check(
    ns: &str,
    deployment: &Read<Deployment>,
    pods: &AgentPods,
    preflight: bool,
) -> Check {
    let d = match deployment {
        Ok(Some(d)) => d,
        Ok(None) if preflight => {
            return Check::warn(
                "agent",
                format!(
                    "Deployment {AGENT_NAME} does not exist yet (kubectl clearml install creates it)"
                ),
                "kubectl clearml install -f values.yaml",
            );
        }
        Ok(None) => {
            return Check::fail(
                "agent",
                format!("Deployment {AGENT_NAME} not found in namespace {ns}"),
                "kubectl clearml install -f values.yaml",
            );
        }
        Err(e) => {
            return Check::fail(
                "agent",
                format!("cannot read Deployment {AGENT_NAME}: {e}"),
                format!("check your rights: kubectl -n {ns} auth can-i get deployments"),
            );
        }
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    if want == 0 {
        return Check::fail(
            "agent",
            format!("Deployment {AGENT_NAME} is scaled to 0 replicas"),
            format!("kubectl -n {ns} scale deployment {AGENT_NAME} --replicas=1"),
        );
    }
    let pods = match pods {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                "agent",
                format!("{available}/{want} replicas available; cannot list the agent's pods: {e}"),
                format!("kubectl -n {ns} describe deployment {AGENT_NAME}"),
            );
        }
    };
    if available >= want {
        let ready: Vec<String> = pods
            .iter()
            .filter(|(p, _)| is_ready(p))
            .filter_map(|(p, _)| p.metadata.name.clone())
            .collect();
        return Check::ok(
            "agent",
            format!(
                "Deployment {AGENT_NAME}: {available}/{want} replicas available{}",
                if ready.is_empty() {
                    String::new()
                } else {
                    format!(" (pod {} Ready)", ready.join(", "))
                }
            ),
        );
    }
    let Some((pod, log)) = pods.iter().find(|(p, _)| !is_ready(p)) else {
        let message = if pods.is_empty() {
            "no agent pod exists".to_string()
        } else {
            "its pods are Ready but the Deployment does not count them yet".to_string()
        };
        return Check::fail(
            "agent",
            format!("Deployment {AGENT_NAME}: {available}/{want} replicas available; {message}"),
            format!(
                "kubectl -n {ns} describe deployment {AGENT_NAME} (its events say why no pod was created)"
            ),
        );
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let (reason, image_problem) = pod_reason(pod);
    let details: Vec<String> = log_excerpt(log, LOG_LINES)
        .into_iter()
        .map(|l| format!("log: {l}"))
        .collect();
    let fix = if image_problem {
        "check the agent image (install --image) and its pull secret (imageCredentials)".to_string()
    } else {
        format!("kubectl -n {ns} describe pod {name}; kubectl -n {ns} logs {name}")
    };
    Check::fail(
        "agent",
        format!(
            "Deployment {AGENT_NAME}: {available}/{want} replicas available; pod {name}: {reason}"
        ),
        fix,
    )
    .with_details(details)
}

/// Why a pod is not ready: its container's waiting reason, last termination and message; and
/// whether it is an image problem.
fn pod_reason(pod: &Pod) -> (String, bool) {
    let status = pod.status.clone().unwrap_or_default();
    let mut parts = Vec::new();
    let mut image = false;
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            image |= matches!(
                reason.as_str(),
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            );
            let mut text = reason;
            if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                text.push_str(&format!(" ({m})"));
            }
            parts.push(text);
        }
        let terminated = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
        if let Some(t) = terminated {
            let mut text = format!(
                "last exit code {} ({})",
                t.exit_code,
                t.reason.clone().unwrap_or_default()
            );
            if let Some(m) = t
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                text.push_str(&format!(": {m}"));
            }
            parts.push(text);
        }
        if c.restart_count > 0 {
            parts.push(count(c.restart_count.unsigned_abs() as usize, "restart"));
        }
    }
    if parts.is_empty() {
        let phase = status.phase.unwrap_or_else(|| "Pending".into());
        let scheduled = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .and_then(|c| c.message.clone());
        parts.push(match scheduled {
            Some(m) => format!("{phase}, not scheduled: {m}"),
            None => format!("{phase}, not Ready"),
        });
    }
    (parts.join("; "), image)
}

/// At most `n` lines of a log that says why the process ended: from its last `Error:` line (what
/// the agent prints when it exits) up to a backtrace, else the last `n` lines.
pub fn log_excerpt(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let picked: Vec<&str> = match lines.iter().rposition(|l| l.starts_with("Error: ")) {
        Some(i) => lines[i..]
            .iter()
            .take_while(|l| !l.starts_with("Stack backtrace:"))
            .take(n)
            .copied()
            .collect(),
        None => lines[lines.len().saturating_sub(n)..].to_vec(),
    };
    picked.into_iter().map(str::to_string).collect()
}

/// The agent reaches ClearML: its status, or the login error a crash-looping agent left.
pub fn clearml_check(ns: &str, agent: &AgentAnswer, pods: &AgentPods, secret: &str) -> Check {
    let credentials_fix = format!(
        "check the ClearML key pair in Secret {secret} (create new ones in the ClearML UI: Settings → Workspace → App Credentials), then re-run kubectl clearml install with clearml.agentk8sglueKey/agentk8sglueSecret"
    );
    match agent {
        AgentAnswer::Status(status) => {
            let c = status.clearml.clone().unwrap_or_default();
            let server = if c.server_version.is_empty() {
                String::new()
            } else {
                format!(", server {}", c.server_version)
            };
            match State::try_from(c.state).unwrap_or(State::Unspecified) {
                State::Ok => Check::ok(
                    "clearml",
                    format!("the agent reaches ClearML at {}{server}", c.api_server),
                ),
                State::Degraded => Check::warn(
                    "clearml",
                    format!(
                        "ClearML at {} answers with errors{server}: {}",
                        c.api_server, c.last_error
                    ),
                    "check the ClearML server's health; the agent retries on its own",
                ),
                State::Down | State::Unspecified => {
                    let fix = if c.last_error.contains("401")
                        || c.last_error.contains("nauthorized")
                    {
                        credentials_fix
                    } else {
                        "check agentk8sglue.apiServerUrlReference and that the cluster can reach it"
                            .into()
                    };
                    Check::fail(
                        "clearml",
                        format!(
                            "the agent cannot reach ClearML at {}: {}",
                            c.api_server, c.last_error
                        ),
                        fix,
                    )
                }
            }
        }
        AgentAnswer::Error(e) => Check::fail(
            "clearml",
            format!("cannot ask the agent: {e}"),
            format!("kubectl -n {ns} logs deploy/{AGENT_NAME}"),
        ),
        AgentAnswer::NotAsked => {
            let login = pods.as_ref().ok().and_then(|pods| {
                pods.iter().find_map(|(pod, log)| {
                    let messages: Vec<String> = pod
                        .status
                        .iter()
                        .flat_map(|s| s.container_statuses.iter().flatten())
                        .filter_map(|c| {
                            c.last_state
                                .as_ref()
                                .and_then(|s| s.terminated.as_ref())
                                .or_else(|| c.state.as_ref().and_then(|s| s.terminated.as_ref()))
                                .and_then(|t| t.message.clone())
                        })
                        .collect();
                    messages
                        .iter()
                        .chain(std::iter::once(log))
                        .find_map(|text| login_failure(text))
                })
            });
            match login {
                Some(why) => Check::fail(
                    "clearml",
                    format!("the agent cannot log in to ClearML: {why}"),
                    credentials_fix,
                ),
                None => Check::warn(
                    "clearml",
                    "not checked: no agent pod is Ready",
                    "fix the agent check above, then run kubectl clearml doctor again",
                ),
            }
        }
    }
}

/// The agent's login error in a log or termination message: the text after
/// [`LOGIN_FAILURE`] on its line, else its first cause (anyhow's `Caused by:` lines below it).
pub fn login_failure(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().rposition(|l| l.contains(LOGIN_FAILURE))?;
    let line = lines[at];
    let rest = line[line.find(LOGIN_FAILURE).unwrap_or(0) + LOGIN_FAILURE.len()..]
        .trim_start_matches([':', ' '])
        .trim();
    if !rest.is_empty() {
        return Some(rest.to_string());
    }
    let cause = lines[at + 1..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && *l != "Caused by:")
        .take_while(|l| !l.starts_with("Stack backtrace:"))
        .map(|l| {
            // several causes are numbered: `0: …`
            match l.split_once(": ") {
                Some((n, m)) if n.chars().all(|c| c.is_ascii_digit()) => m,
                _ => l,
            }
        })
        .next();
    Some(cause.unwrap_or("no reason given").to_string())
}

/// One check per served queue: resolved in ClearML by the agent, or created by it.
pub fn queue_checks(values: &Values, agent: &AgentAnswer) -> Vec<Check> {
    let a = &values.agentk8sglue;
    let queues = a.all_queues();
    if queues.is_empty() {
        return vec![Check::warn(
            "queues",
            "no queues configured: the agent serves nothing",
            "add agentk8sglue.queues (or queue) to the values, or kubectl clearml queues add NAME",
        )];
    }
    let create_fix = |q: &str| {
        format!(
            "create queue {q} in ClearML (UI: Workers & Queues → Queues → +), or set agentk8sglue.createQueues: true (kubectl clearml install -f values.yaml --set agentk8sglue.createQueues=true)"
        )
    };
    queues
        .keys()
        .map(|q| {
            let id = format!("queue/{q}");
            let AgentAnswer::Status(status) = agent else {
                return Check::warn(
                    id,
                    format!("queue {q}: not checked (the agent is not reachable)"),
                    "fix the agent and clearml checks, then run kubectl clearml doctor again",
                );
            };
            match status.queues.iter().find(|s| s.name == *q) {
                Some(s) if !s.id.is_empty() => {
                    Check::ok(id, format!("queue {q} exists in ClearML ({})", s.id))
                }
                _ if a.creates_queues() && status.queues.iter().all(|s| s.name != *q) => {
                    Check::warn(
                        id,
                        format!("queue {q} is not served by the running agent yet; createQueues will create it"),
                        "kubectl clearml install -f values.yaml",
                    )
                }
                Some(_) if a.creates_queues() => Check::warn(
                    id,
                    format!("queue {q} is not resolved yet although createQueues is on"),
                    format!("kubectl logs deploy/{AGENT_NAME} (the agent's log says why it could not create it)"),
                ),
                Some(_) => Check::fail(
                    id,
                    format!("queue {q} does not exist in ClearML and createQueues is false: its tasks are never run"),
                    create_fix(q),
                ),
                None => Check::warn(
                    id,
                    format!("queue {q} is not served by the running agent (its values differ)"),
                    "kubectl clearml install -f values.yaml",
                ),
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
