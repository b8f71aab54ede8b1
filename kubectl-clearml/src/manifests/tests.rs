//! Rendering of the install manifests for every seed values file.

use std::path::PathBuf;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{
        ConfigMap, EnvVar, LocalObjectReference, Namespace, Secret, Service, ServiceAccount,
    },
    rbac::v1::{PolicyRule, Role, RoleBinding},
};
use serde::de::DeserializeOwned;

use super::*;

/// The seed values files (tests/fixtures/*.yaml).
pub(crate) fn fixture_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the six seed files, got {files:?}"
    );
    files
}

fn load(file: &PathBuf) -> Values {
    let text = std::fs::read_to_string(file).expect("fixture readable");
    Values::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn params() -> InstallParams {
    InstallParams {
        namespace: "ml-agents".into(),
        image: "registry.example/clearml-k8s-agent:test".into(),
        clearml_insecure_skip_tls_verify: false,
    }
}

fn existing() -> ExistingCredentials {
    ExistingCredentials::Present {
        hash: "existing-hash".into(),
    }
}

fn typed<K: DeserializeOwned>(r: &Rendered, kind: &str, name: &str) -> K {
    let m = r
        .get(kind, name)
        .unwrap_or_else(|| panic!("{kind}/{name} rendered"));
    serde_json::from_value(m.doc.clone()).unwrap_or_else(|e| panic!("{kind}/{name}: {e}"))
}

fn rule(resource: &str, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn every_seed_file_renders_the_full_set_in_apply_order() {
    for file in fixture_files() {
        let values = load(&file);
        let r = render(&values, &params(), &existing())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let kinds: Vec<(&str, &str)> = r
            .manifests
            .iter()
            .map(|m| (m.resource.kind.as_str(), m.name.as_str()))
            .collect();
        let mut want = vec![
            ("Namespace", "ml-agents"),
            ("ServiceAccount", AGENT_NAME),
            ("Role", AGENT_NAME),
            ("RoleBinding", AGENT_NAME),
        ];
        let has_creds = values.clearml.is_some();
        let has_registry = values.image_credentials.is_some();
        if has_creds {
            want.push(("Secret", CREDENTIALS_SECRET));
        }
        if has_registry {
            want.push(("Secret", REGISTRY_SECRET));
        }
        want.extend([
            ("ConfigMap", AGENT_NAME),
            ("Deployment", AGENT_NAME),
            ("Service", AGENT_NAME),
        ]);
        assert_eq!(kinds, want, "{}", file.display());
        for m in &r.manifests {
            let ns = m.doc.pointer("/metadata/namespace").and_then(Value::as_str);
            if m.namespaced {
                assert_eq!(ns, Some("ml-agents"), "{}", m.display_name());
            } else {
                assert_eq!(ns, None, "{}", m.display_name());
            }
            assert_eq!(
                m.doc
                    .pointer("/metadata/labels/app.kubernetes.io~1managed-by"),
                Some(&Value::from(FIELD_MANAGER)),
                "{}",
                m.display_name()
            );
        }
        // Every document decodes into its type.
        let _: Namespace = typed(&r, "Namespace", "ml-agents");
        let _: ServiceAccount = typed(&r, "ServiceAccount", AGENT_NAME);
        let _: Service = typed(&r, "Service", AGENT_NAME);
    }
}

#[test]
fn role_grants_exactly_what_the_agent_calls_and_nothing_cluster_scoped() {
    let values = load(&fixture_files()[0]);
    let r = render(&values, &params(), &existing()).expect("render");
    let role: Role = typed(&r, "Role", AGENT_NAME);
    assert_eq!(
        role.rules.expect("rules"),
        vec![
            rule("pods", &["get", "list", "watch", "create", "delete"]),
            rule("services", &["get", "create", "patch", "delete"]),
            rule("configmaps", &["get", "list", "watch", "update"]),
            PolicyRule {
                api_groups: Some(vec!["batch".into()]),
                ..rule("jobs", &["get", "list", "watch", "create", "delete"])
            },
            rule("secrets", &["list", "create", "delete"]),
            PolicyRule {
                api_groups: Some(vec!["scheduling.k8s.io".into()]),
                ..rule("podgroups", &["create"])
            },
            rule("events", &["list"]),
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                ..rule("leases", &["get", "create", "patch"])
            },
        ]
    );
    let binding: RoleBinding = typed(&r, "RoleBinding", AGENT_NAME);
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, AGENT_NAME);
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, AGENT_NAME);
    assert_eq!(subjects[0].namespace.as_deref(), Some("ml-agents"));
    assert!(
        r.manifests
            .iter()
            .all(|m| m.namespaced || m.resource.kind == "Namespace"),
        "nothing cluster-scoped but the namespace"
    );
}

fn override_values() -> Values {
    let file = fixture_files()
        .into_iter()
        .find(|f| f.ends_with("clearml-agent-values.override.yaml"))
        .expect("override fixture");
    load(&file)
}

#[test]
fn credentials_go_to_the_secret_and_never_to_the_configmap() {
    let values = override_values();
    let r = render(&values, &params(), &ExistingCredentials::Absent).expect("render");
    let secret: Secret = typed(&r, "Secret", CREDENTIALS_SECRET);
    let data = secret.data.expect("data");
    assert_eq!(
        data.keys().cloned().collect::<Vec<_>>(),
        vec![SECRET_KEY_ACCESS.to_string(), SECRET_KEY_SECRET.to_string()]
    );
    assert_eq!(data[SECRET_KEY_ACCESS].0, b"<ACCESS_KEY>");
    assert_eq!(data[SECRET_KEY_SECRET].0, b"<SECRET_KEY>");

    let cm: ConfigMap = typed(&r, "ConfigMap", AGENT_NAME);
    let text = &cm.data.expect("data")[VALUES_KEY];
    assert!(!text.contains("<ACCESS_KEY>") && !text.contains("<SECRET_KEY>"));
    assert!(!text.contains("<CLEARML_DOCKERHUB_TOKEN>"));
    let stored = Values::from_yaml(text).expect("the agent can read the ConfigMap");
    assert_eq!(stored.clearml, None);
    assert_eq!(stored.image_credentials, None);
    // the pull Secret is the agent image's only: task pods' templates are unchanged
    assert_eq!(stored.agentk8sglue, values.agentk8sglue);
}

#[test]
fn configmap_holds_each_seed_files_agent_values_unchanged() {
    for file in fixture_files() {
        let values = load(&file);
        let r = render(&values, &params(), &existing()).expect("render");
        let cm: ConfigMap = typed(&r, "ConfigMap", AGENT_NAME);
        let stored = Values::from_yaml(&cm.data.expect("data")[VALUES_KEY]).expect("valid");
        assert_eq!(stored, config_values(&values), "{}", file.display());
    }
}

#[test]
fn image_credentials_become_the_agent_images_pull_secret() {
    let r = render(&override_values(), &params(), &existing()).expect("render");
    let secret: Secret = typed(&r, "Secret", REGISTRY_SECRET);
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let config: Value =
        serde_json::from_slice(&secret.data.expect("data")[".dockerconfigjson"].0).expect("json");
    let entry = &config["auths"]["docker.io"];
    assert_eq!(entry["password"], "<CLEARML_DOCKERHUB_TOKEN>");
    // a Docker Hub token alone is the Enterprise chart's login (its default user name)
    assert_eq!(entry["username"], "allegroaienterprise");
    assert_eq!(
        entry["auth"],
        base64::engine::general_purpose::STANDARD
            .encode("allegroaienterprise:<CLEARML_DOCKERHUB_TOKEN>")
    );
    let d: Deployment = typed(&r, "Deployment", AGENT_NAME);
    let pod = d.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(
        pod.image_pull_secrets,
        Some(vec![LocalObjectReference {
            name: REGISTRY_SECRET.into()
        }])
    );
    let cm: ConfigMap = typed(&r, "ConfigMap", AGENT_NAME);
    let stored = Values::from_yaml(&cm.data.expect("data")[VALUES_KEY]).expect("valid");
    assert_eq!(
        stored.agentk8sglue.base_pod_template.image_pull_secrets, None,
        "task pods get pull secrets only through their template's imagePullSecrets"
    );
}

#[test]
fn deployment_is_locked_down_and_wired_to_configmap_and_secret() {
    let r = render(&override_values(), &params(), &ExistingCredentials::Absent).expect("render");
    let d: Deployment = typed(&r, "Deployment", AGENT_NAME);
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let template = spec.template;
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    assert_eq!(
        labels.expect("labels")["app.kubernetes.io/name"],
        AGENT_NAME
    );
    let annotations = template
        .metadata
        .and_then(|m| m.annotations)
        .expect("annotations");
    let creds = credentials_data(&override_values())
        .expect("valid")
        .expect("present");
    assert_eq!(
        annotations[ANNOTATION_CREDENTIALS_HASH],
        credentials_hash(&creds)
    );
    let pod = template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(AGENT_NAME));
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "agent");
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/clearml-k8s-agent:test")
    );
    assert_eq!(c.args, None);
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    let res = c.resources.as_ref().expect("resources");
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone());
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("50m"));
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("128Mi"));

    let env: BTreeMap<&str, &EnvVar> = c
        .env
        .as_ref()
        .expect("env")
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let field = |name: &str| {
        env[name]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    let secret_ref = |name: &str| {
        env[name]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| (s.name.clone(), s.key.clone()))
    };
    let value = |name: &str| env[name].value.clone();
    assert_eq!(
        field("POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(
        value("CLEARML_AGENT_CONFIG_MAP").as_deref(),
        Some(AGENT_NAME)
    );
    assert_eq!(
        secret_ref("CLEARML_API_ACCESS_KEY"),
        Some((CREDENTIALS_SECRET.into(), SECRET_KEY_ACCESS.into()))
    );
    assert_eq!(
        secret_ref("CLEARML_API_SECRET_KEY"),
        Some((CREDENTIALS_SECRET.into(), SECRET_KEY_SECRET.into()))
    );
    assert_eq!(
        value("CLEARML_AGENT_HTTP_ADDR").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(
        value("CLEARML_AGENT_GRPC_ADDR").as_deref(),
        Some("127.0.0.1:9090")
    );
    assert!(!env.contains_key(ENV_SKIP_TLS_VERIFY));

    let svc: Service = typed(&r, "Service", AGENT_NAME);
    let ports = svc.spec.expect("spec").ports.expect("ports");
    assert_eq!(ports.len(), 1, "the gRPC port is never exposed");
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].port, 8080);
}

#[test]
fn skip_tls_verify_flag_reaches_the_agent_env() {
    let mut p = params();
    p.clearml_insecure_skip_tls_verify = true;
    let r = render(&override_values(), &p, &existing()).expect("render");
    let d: Deployment = typed(&r, "Deployment", AGENT_NAME);
    let env = d.spec.expect("spec").template.spec.expect("pod").containers[0]
        .env
        .clone()
        .expect("env");
    assert!(
        env.iter()
            .any(|e| e.name == ENV_SKIP_TLS_VERIFY && e.value.as_deref() == Some("true"))
    );
}

#[test]
fn missing_credentials_are_an_error_only_when_the_secret_is_absent() {
    let values = Values::from_yaml("agentk8sglue:\n  createQueues: true\n").expect("valid");
    let err = render(&values, &params(), &ExistingCredentials::Absent).expect_err("no creds");
    match err {
        RenderError::Values(e) => assert_eq!(e.path, "clearml.agentk8sglueKey"),
        other => panic!("{other}"),
    }
    let r = render(&values, &params(), &existing()).expect("existing Secret is used");
    assert!(
        r.get("Secret", CREDENTIALS_SECRET).is_none(),
        "left untouched"
    );
    let d: Deployment = typed(&r, "Deployment", AGENT_NAME);
    let annotations = d
        .spec
        .expect("spec")
        .template
        .metadata
        .expect("meta")
        .annotations;
    assert_eq!(
        annotations.expect("annotations")[ANNOTATION_CREDENTIALS_HASH],
        "existing-hash"
    );
    let r = render(&values, &params(), &ExistingCredentials::NotChecked).expect("dry run");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains(CREDENTIALS_SECRET) && w.contains("must already exist"))
    );
}

#[test]
fn half_given_credentials_name_the_missing_field() {
    let values =
        Values::from_yaml("clearml:\n  agentk8sglueKey: k\nagentk8sglue: {}\n").expect("valid");
    match render(&values, &params(), &existing()) {
        Err(RenderError::Values(e)) => assert_eq!(e.path, "clearml.agentk8sglueSecret"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn credentials_hash_changes_with_any_byte_of_the_secret() {
    let a = BTreeMap::from([
        ("k".to_string(), b"ab".to_vec()),
        ("s".into(), b"c".to_vec()),
    ]);
    let b = BTreeMap::from([
        ("k".to_string(), b"a".to_vec()),
        ("s".into(), b"bc".to_vec()),
    ]);
    let c = BTreeMap::from([
        ("k".to_string(), b"ab".to_vec()),
        ("s".into(), b"d".to_vec()),
    ]);
    assert_ne!(credentials_hash(&a), credentials_hash(&b));
    assert_ne!(credentials_hash(&a), credentials_hash(&c));
    assert_eq!(credentials_hash(&a), credentials_hash(&a.clone()));
    assert_eq!(credentials_hash(&a).len(), 64);
}

#[test]
fn placeholders_are_quoted_so_values_cannot_add_structure() {
    let vars = BTreeMap::from([("x", "a\"\nkind: Evil\nb: \"".to_string())]);
    let text = substitute("t.yaml", "name: {{x}}\n", &vars).expect("substitute");
    let doc: Value = clearml_agent_core::yaml::from_str(&text).expect("yaml");
    assert_eq!(doc, serde_json::json!({"name": vars["x"]}));
    assert!(matches!(
        substitute("t.yaml", "a: {{nope}}", &vars),
        Err(RenderError::Template { .. })
    ));
    assert!(substitute("t.yaml", "a: {{x", &vars).is_err());
}

#[test]
fn invalid_namespace_is_refused() {
    let mut p = params();
    p.namespace = "Bad_NS".into();
    assert!(matches!(
        render(&override_values(), &p, &existing()),
        Err(RenderError::Namespace(_))
    ));
}

#[test]
fn printed_yaml_redacts_secret_data_and_keeps_everything_else() {
    let r = render(&override_values(), &params(), &existing()).expect("render");
    let text = r.to_redacted_yaml().expect("yaml");
    assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode("<ACCESS_KEY>")));
    let docs: Vec<Value> = clearml_agent_core::yaml::from_str_multi(&text).expect("multi-doc");
    assert_eq!(docs.len(), r.manifests.len());
    for (doc, m) in docs.iter().zip(&r.manifests) {
        if m.is_secret() {
            for v in doc["data"].as_object().expect("data").values() {
                assert_eq!(v, REDACTED);
            }
        } else {
            assert_eq!(doc, &m.doc);
        }
    }
}

#[test]
fn uninstall_knows_every_object_an_install_can_make() {
    let all = all_objects("ml-agents").expect("render");
    let names: Vec<String> = all.iter().map(Manifest::display_name).collect();
    assert_eq!(
        names,
        [
            "namespace/ml-agents",
            "serviceaccount/clearml-agent",
            "role.rbac.authorization.k8s.io/clearml-agent",
            "rolebinding.rbac.authorization.k8s.io/clearml-agent",
            "secret/clearml-agent-credentials",
            "secret/clearml-agent-registry",
            "secret/clearml-agent-files",
            "secret/clearml-agent-clearml-conf",
            "configmap/clearml-agent",
            "deployment.apps/clearml-agent",
            "service/clearml-agent",
        ]
    );
}

/// The manifests' literal names and ports are the contract's: the Deployment the plugin applies
/// starts the agent with the ports, ConfigMap key and Secret the agent and the plugin agree on.
#[test]
fn manifests_agree_with_the_shared_contract() {
    use clearml_agent_core::contract::{ADMIN_PORT, AGENT_NAME, CREDENTIALS_SECRET, GRPC_PORT};
    use k8s_openapi::api::apps::v1::Deployment;
    let r = render(&override_values(), &params(), &existing()).expect("render");
    let d: Deployment = typed(&r, "Deployment", AGENT_NAME);
    let c = &d
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec")
        .containers[0];
    let env = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("env {name}"))
            .clone()
    };
    assert_eq!(
        env("CLEARML_AGENT_GRPC_ADDR").value.as_deref(),
        Some(format!("127.0.0.1:{GRPC_PORT}").as_str())
    );
    assert_eq!(
        env("CLEARML_AGENT_HTTP_ADDR").value.as_deref(),
        Some(format!("0.0.0.0:{ADMIN_PORT}").as_str())
    );
    assert_eq!(
        env("CLEARML_AGENT_CONFIG_MAP").value.as_deref(),
        Some(AGENT_NAME)
    );
    let key_ref = env("CLEARML_API_ACCESS_KEY")
        .value_from
        .and_then(|v| v.secret_key_ref)
        .expect("secretKeyRef");
    assert_eq!(key_ref.name, CREDENTIALS_SECRET);
    assert_eq!(key_ref.key, SECRET_KEY_ACCESS);
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, vec![i32::from(ADMIN_PORT)]);
}
