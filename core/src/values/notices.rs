//! What a values document says that this agent accepts but does not act on: chart keys with no
//! meaning here (e.g. `sessions.*`). Each notice names the key, what it did in the chart and why
//! it has no effect here. `install`, `queues add/patch`, `status` and `doctor` show them.

use super::{Values, agent_pod::given, is_python_glue_image};

/// One accepted-but-inert key of a values document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Dotted path of the key, e.g. `sessions.portModeEnabled`.
    pub path: String,
    /// What the key did in the chart and why it has no effect here.
    pub message: String,
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Values {
    /// The notices of this document, in a stable order (the order of the keys in the schema).
    pub fn notices(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        let mut push = |path: &str, message: &str| {
            out.push(Notice {
                path: path.into(),
                message: message.into(),
            })
        };
        let a = &self.agentk8sglue;

        // --- the agent's own pod (the open-source chart's keys) ---
        let image = a.image.clone().unwrap_or_default();
        let repository = given(&image.repository);
        if let Some(r) = repository.filter(|r| is_python_glue_image(r)) {
            push(
                "agentk8sglue.image.repository",
                &format!(
                    "{r} is the Python glue's image, which this agent replaces: not used (the \
                     agent runs its own image; choose another with install --image or a \
                     repository of your own here)"
                ),
            );
        }
        if given(&image.tag).is_some() && repository.is_none_or(is_python_glue_image) {
            push(
                "agentk8sglue.image.tag",
                "a tag of the chart's Python glue image: not used without an \
                 agentk8sglue.image.repository of the agent's own image",
            );
        }
        if a.init_containers
            .as_ref()
            .and_then(|i| i.resources.as_ref())
            .is_some_and(|r| r != &Default::default())
        {
            push(
                "agentk8sglue.initContainers.resources",
                "sized the chart's init container, which waited for the ClearML servers; this \
                 agent has no init container (it waits and retries itself, and is not ready \
                 until ClearML answers)",
            );
        }

        // --- sessions: clearml-session ports mode ---
        let sessions = self.sessions.clone().unwrap_or_default();
        const SESSIONS: &str = "not applicable: this agent has no clearml-session ports mode \
             (it makes no Service per interactive session)";
        if sessions.port_mode_enabled.is_some() {
            push(
                "sessions.portModeEnabled",
                &format!("turned on the chart's ports mode for sessions; {SESSIONS}"),
            );
        }
        if sessions
            .svc_annotations
            .as_ref()
            .is_some_and(|m| !m.is_empty())
        {
            push(
                "sessions.svcAnnotations",
                &format!("annotated the chart's session Services; {SESSIONS}"),
            );
        }
        if sessions.svc_type.is_some() {
            push(
                "sessions.svcType",
                &format!("the type of the chart's session Services; {SESSIONS}"),
            );
        }
        if sessions.external_ip.is_some() {
            push(
                "sessions.externalIP",
                &format!("the address session clients connected to; {SESSIONS}"),
            );
        }
        if sessions.starting_port.is_some() {
            push(
                "sessions.startingPort",
                &format!("the first node port of the session Services; {SESSIONS}"),
            );
        }
        if sessions.max_services.is_some() {
            push(
                "sessions.maxServices",
                &format!("the most session Services; {SESSIONS}"),
            );
        }

        let a = &self.agentk8sglue;
        let mut push = |set: bool, path: &str, message: &str| {
            if set {
                out.push(Notice {
                    path: path.to_string(),
                    message: message.to_string(),
                });
            }
        };
        // --- Enterprise agent keys (one push per key) ---
        push(
            a.orchestration_dashboard.as_ref().is_some_and(|d| {
                d.cpu.is_some()
                    || d.gpu.as_ref().is_some_and(|g| g.discovery.is_some())
                    || matches!(d.report_type.as_deref(), Some("global" | "aggregate"))
            }),
            "agentk8sglue.orchestrationDashboard",
            "GPU/CPU node discovery, CPU reports and the global/aggregate report types of the Enterprise agent are not implemented: only gpu.reportMax (as dashboardReportMaxGpu) and reportSeconds are reported, by this agent alone",
        );
        push(
            a.monitored_resources.is_some(),
            "agentk8sglue.monitoredResources",
            "the Enterprise agent caps a resource summed over task pods; this agent does not enforce it: limit pods with maxPods (global or per queue) or a ResourceQuota in the task namespace",
        );
        push(
            a.service_account_cluster_access == Some(true),
            "agentk8sglue.serviceAccountClusterAccess",
            "the Enterprise chart gives the agent cluster-wide RBAC (node discovery, multi-node across namespaces); this agent needs only its Role in its namespace, and install creates no ClusterRole for it",
        );
        push(
            a.use_owner_token == Some(true),
            "agentk8sglue.useOwnerToken",
            "the Enterprise agent runs each task with its owner's token (impersonation, an Enterprise server feature); here task pods use the agent's key pair",
        );
        push(
            a.apps_queue
                .as_ref()
                .is_some_and(|q| q.enabled == Some(true)),
            "agentk8sglue.appsQueue",
            "the Enterprise agent serves the tenant's applications queue (per-tenant apps, an Enterprise server feature); this agent serves only the queues in queues/queue",
        );
        push(
            a.server_tasks.is_some(),
            "agentk8sglue.serverTasks",
            "the Enterprise agent runs server tasks that need several pods (an Enterprise server feature); this agent has no server tasks",
        );
        push(
            self.custom_certificates.is_some(),
            "customCertificates",
            "the Enterprise chart installs extra CA certificates in the agent and task pods; this agent does not: mount a CA bundle with basePodTemplate volumes or fileMounts and point SSL_CERT_FILE / REQUESTS_CA_BUNDLE at it (the agent itself: clearmlcheckCertificate or CLEARML_AGENT_INSECURE_SKIP_TLS_VERIFY)",
        );
        out
    }
}
