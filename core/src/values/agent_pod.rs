//! The open-source chart's keys for the agent's own pod and account (`global.imageRegistry`,
//! `imageCredentials`, `clearml.existing*`, `agentk8sglue.image`, `replicaCount`, `resources`,
//! `labels`, `extraEnvs`, `fileMounts`, `serviceExistingAccountName`, `additional*RoleBindings`,
//! …): their checks, and the few resolved readings `install` renders from (the agent image, the
//! names of existing Secrets and accounts). Only `install` acts on these keys; the agent ignores
//! them.

use std::collections::BTreeSet;

use super::{AgentValues, FieldError, PYTHON_GLUE_IMAGES, Values, check_resources, unique_by};
use crate::validate;

/// Registry of `imageCredentials` when none is given.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// The Enterprise chart's registry user (`imageCredentials.username` default): ClearML's
/// install guides give only the token, as `imageCredentials.password`.
pub const ENTERPRISE_REGISTRY_USER: &str = "allegroaienterprise";

/// A string setting, with the chart's `""` read as unset.
pub(crate) fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

impl Values {
    /// `clearml.existingAgentk8sglueSecret`, when given.
    pub fn existing_credentials_secret(&self) -> Option<&str> {
        self.clearml
            .as_ref()
            .and_then(|c| given(&c.existing_agentk8sglue_secret))
    }

    /// `clearml.existingClearmlConfigSecret`, when given.
    pub fn existing_clearml_config_secret(&self) -> Option<&str> {
        self.clearml
            .as_ref()
            .and_then(|c| given(&c.existing_clearml_config_secret))
    }

    /// `clearml.clearmlConfig`, when given.
    pub fn clearml_config(&self) -> Option<&str> {
        self.clearml.as_ref().and_then(|c| given(&c.clearml_config))
    }

    /// The pull Secret of the agent's image the values ask for: `Some(Some(name))` for
    /// `imageCredentials.existingSecret`, `Some(None)` for one `install` creates from the login,
    /// `None` for none (`enabled: false`, or no password and no existing Secret).
    pub fn agent_pull_secret(&self) -> Option<Option<&str>> {
        let ic = self.image_credentials.as_ref()?;
        if ic.enabled == Some(false) {
            return None;
        }
        if let Some(existing) = given(&ic.existing_secret) {
            return Some(Some(existing));
        }
        given(&ic.password).map(|_| None)
    }

    /// The registry host and user name of `imageCredentials`: `registry` (default `docker.io`)
    /// and `username`; on Docker Hub a password without a user name is the Enterprise chart's
    /// login ([`ENTERPRISE_REGISTRY_USER`], whose token ClearML's install guides put in
    /// `imageCredentials.password` alone). `None`: no user name for that registry.
    pub fn registry_login(&self) -> Option<(&str, &str)> {
        let ic = self.image_credentials.as_ref()?;
        let registry = given(&ic.registry).unwrap_or(DEFAULT_REGISTRY);
        let user = given(&ic.username).or(matches!(
            registry,
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
        .then_some(ENTERPRISE_REGISTRY_USER))?;
        Some((registry, user))
    }

    /// The agent's image from the values, given `default_repository:default_tag` for what they
    /// leave out: `[global.imageRegistry or image.registry]/repository:tag`. A repository naming
    /// the Python glue's image (the chart's default) is not used, nor is a tag without a
    /// repository (a tag of that image): both are reported by [`Values::notices`].
    pub fn agent_image(&self, default_repository: &str, default_tag: &str) -> String {
        let image = self.agentk8sglue.image.clone().unwrap_or_default();
        let own = given(&image.repository).filter(|r| !is_python_glue_image(r));
        let (repository, tag) = match own {
            Some(r) => (r, given(&image.tag).unwrap_or(default_tag)),
            None => (default_repository, default_tag),
        };
        let registry =
            given(&image.registry).or(self.global.as_ref().and_then(|g| given(&g.image_registry)));
        match registry {
            Some(r) => format!("{}/{repository}:{tag}", r.trim_end_matches('/')),
            None => format!("{repository}:{tag}"),
        }
    }

    /// Checks of the agent-pod keys (called by [`Values::validate`]).
    pub(crate) fn validate_agent_pod(&self) -> Result<(), FieldError> {
        if let Some(g) = &self.global {
            no_space("global.imageRegistry", &g.image_registry)?;
        }
        if let Some(ic) = &self.image_credentials {
            let creates = ic.enabled != Some(false) && given(&ic.existing_secret).is_none();
            if let Some(name) = given(&ic.existing_secret) {
                validate::dns_subdomain(name)
                    .map_err(|m| FieldError::new("imageCredentials.existingSecret", m))?;
            }
            if creates && given(&ic.password).is_some() && self.registry_login().is_none() {
                return Err(FieldError::new(
                    "imageCredentials.username",
                    "required when imageCredentials.password is set for a registry other than \
                     docker.io (a registry login needs a user name)",
                ));
            }
            if creates && ic.enabled == Some(true) && given(&ic.password).is_none() {
                return Err(FieldError::new(
                    "imageCredentials.password",
                    "required when imageCredentials.enabled is true (or name a pull Secret in \
                     imageCredentials.existingSecret)",
                ));
            }
        }
        if let Some(c) = &self.clearml {
            let pair =
                given(&c.agentk8sglue_key).is_some() || given(&c.agentk8sglue_secret).is_some();
            if let Some(name) = given(&c.existing_agentk8sglue_secret) {
                let path = "clearml.existingAgentk8sglueSecret";
                if pair {
                    return Err(FieldError::new(
                        path,
                        "is set together with clearml.agentk8sglueKey/agentk8sglueSecret; give \
                         one of them: the key pair (install creates the Secret) or the name of \
                         an existing Secret",
                    ));
                }
                validate::dns_subdomain(name).map_err(|m| FieldError::new(path, m))?;
            }
            if let Some(name) = given(&c.existing_clearml_config_secret) {
                let path = "clearml.existingClearmlConfigSecret";
                if given(&c.clearml_config).is_some() {
                    return Err(FieldError::new(
                        path,
                        "is set together with clearml.clearmlConfig; give one of them: the \
                         clearml.conf (install puts it in a Secret) or the name of an existing \
                         Secret",
                    ));
                }
                validate::dns_subdomain(name).map_err(|m| FieldError::new(path, m))?;
            }
        }
        self.agentk8sglue.validate_agent_pod("agentk8sglue")
    }
}

impl AgentValues {
    fn validate_agent_pod(&self, root: &str) -> Result<(), FieldError> {
        if let Some(image) = &self.image {
            no_space(&format!("{root}.image.registry"), &image.registry)?;
            no_space(&format!("{root}.image.repository"), &image.repository)?;
            if let Some(tag) = given(&image.tag)
                && !is_tag(tag)
            {
                return Err(FieldError::new(
                    format!("{root}.image.tag"),
                    format!(
                        "{tag:?} is not an image tag (letters, digits, '_', '.', '-'; at most 128)"
                    ),
                ));
            }
        }
        if let Some(n) = self.replica_count
            && n < 0
        {
            return Err(FieldError::new(
                format!("{root}.replicaCount"),
                "must not be negative",
            ));
        }
        if let Some(r) = &self.resources {
            check_resources(&format!("{root}.resources"), r)?;
        }
        if let Some(r) = self
            .init_containers
            .as_ref()
            .and_then(|i| i.resources.as_ref())
        {
            check_resources(&format!("{root}.initContainers.resources"), r)?;
        }
        for (field, map) in [
            ("labels", &self.labels),
            ("annotations", &self.annotations),
            (
                "serviceAccountAnnotations",
                &self.service_account_annotations,
            ),
            ("nodeSelector", &self.node_selector),
        ] {
            for (key, value) in map.iter().flatten() {
                let at = format!("{root}.{field}.{key}");
                validate::qualified_name(key).map_err(|m| FieldError::new(&at, m))?;
                if field == "labels" || field == "nodeSelector" {
                    validate::label_value(value).map_err(|m| FieldError::new(&at, m))?;
                }
            }
        }
        for (i, env) in self.extra_envs.iter().flatten().enumerate() {
            validate::env_name(&env.name)
                .map_err(|m| FieldError::new(format!("{root}.extraEnvs[{i}].name"), m))?;
        }
        unique_by(root, "extraEnvs", self.extra_envs.as_deref(), |e| {
            e.name.clone()
        })?;
        for (i, volume) in self.volumes.iter().flatten().enumerate() {
            validate::dns_label(&volume.name)
                .map_err(|m| FieldError::new(format!("{root}.volumes[{i}].name"), m))?;
        }
        unique_by(root, "volumes", self.volumes.as_deref(), |v| v.name.clone())?;
        let volumes: BTreeSet<&str> = self
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        for (i, mount) in self.volume_mounts.iter().flatten().enumerate() {
            let at = format!("{root}.volumeMounts[{i}]");
            if mount.mount_path.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.mountPath"),
                    "must not be empty",
                ));
            }
            if !volumes.contains(mount.name.as_str()) {
                return Err(FieldError::new(
                    format!("{at}.name"),
                    format!("no volume {:?} in {root}.volumes", mount.name),
                ));
            }
        }
        unique_by(root, "volumeMounts", self.volume_mounts.as_deref(), |m| {
            m.mount_path.clone()
        })?;
        let mount_paths: BTreeSet<&str> = self
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.trim_end_matches('/'))
            .collect();
        for (i, file) in self.file_mounts.iter().flatten().enumerate() {
            let at = format!("{root}.fileMounts[{i}]");
            if !is_secret_key(&file.name) {
                return Err(FieldError::new(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a file name: letters, digits, '-', '_' and '.' only",
                        file.name
                    ),
                ));
            }
            if !file.folder_path.starts_with('/') {
                return Err(FieldError::new(
                    format!("{at}.folderPath"),
                    format!("{:?} is not an absolute path", file.folder_path),
                ));
            }
            let path = file_mount_path(file);
            if mount_paths.contains(path.as_str()) {
                return Err(FieldError::new(
                    format!("{at}.name"),
                    format!("{path} is also a mountPath of {root}.volumeMounts"),
                ));
            }
        }
        // the chart keys the files' Secret by name: two files of one name cannot both be there
        unique_by(root, "fileMounts", self.file_mounts.as_deref(), |f| {
            f.name.clone()
        })?;
        if let Some(name) = given(&self.service_existing_account_name) {
            validate::dns_subdomain(name)
                .map_err(|m| FieldError::new(format!("{root}.serviceExistingAccountName"), m))?;
        }
        for field in ["additionalRoleBindings", "additionalClusterRoleBindings"] {
            let list = if field == "additionalRoleBindings" {
                &self.additional_role_bindings
            } else {
                &self.additional_cluster_role_bindings
            };
            for (i, name) in list.iter().flatten().enumerate() {
                // RBAC names are path segments (`system:aggregate-to-edit` is one)
                if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
                    return Err(FieldError::new(
                        format!("{root}.{field}[{i}]"),
                        format!("{name:?} is not a role name"),
                    ));
                }
            }
            unique_by(root, field, list.as_deref(), |n| n.clone())?;
        }
        Ok(())
    }
}

/// Where a `fileMounts` entry appears: `<folderPath>/<name>`.
pub fn file_mount_path(file: &super::FileMount) -> String {
    format!("{}/{}", file.folder_path.trim_end_matches('/'), file.name)
}

/// Whether `repository` is the Python glue's image (any registry in front).
pub fn is_python_glue_image(repository: &str) -> bool {
    PYTHON_GLUE_IMAGES
        .iter()
        .any(|g| repository == *g || repository.ends_with(&format!("/{g}")))
}

fn no_space(path: &str, v: &Option<String>) -> Result<(), FieldError> {
    match v {
        Some(s) if s.contains(char::is_whitespace) => Err(FieldError::new(
            path,
            format!("{s:?} must not contain spaces"),
        )),
        _ => Ok(()),
    }
}

/// A Docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, not `.` or `..`, at most 253 characters.
fn is_secret_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(yaml: &str) -> Values {
        Values::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    #[test]
    fn the_agent_image_is_registry_repository_and_tag_as_the_chart_builds_it() {
        for (yaml, want) in [
            ("agentk8sglue: {}\n", "clearml-k8s-agent:1"),
            (
                "global: {imageRegistry: g.example}\n",
                "g.example/clearml-k8s-agent:1",
            ),
            ("global: {imageRegistry: \"\"}\n", "clearml-k8s-agent:1"),
            (
                "global: {imageRegistry: g.example}\nagentk8sglue: {image: {registry: r.example/}}\n",
                "r.example/clearml-k8s-agent:1",
            ),
            (
                "agentk8sglue: {image: {repository: m/agent}}\n",
                "m/agent:1",
            ),
            (
                "agentk8sglue: {image: {repository: m/agent, tag: \"2\"}}\n",
                "m/agent:2",
            ),
            // the chart's default repository is the Python glue's image: not the agent's
            (
                "global: {imageRegistry: docker.io}\nagentk8sglue: {image: {registry: \"\", repository: allegroai/clearml-agent-k8s-base, tag: 1.24-21}}\n",
                "docker.io/clearml-k8s-agent:1",
            ),
            // a tag alone is the glue image's tag
            (
                "agentk8sglue: {image: {tag: 1.24-21}}\n",
                "clearml-k8s-agent:1",
            ),
        ] {
            assert_eq!(
                values(yaml).agent_image("clearml-k8s-agent", "1"),
                want,
                "{yaml}"
            );
        }
    }

    #[test]
    fn the_glue_image_and_its_tag_are_reported_not_used() {
        let paths = |yaml: &str| -> Vec<String> {
            values(yaml).notices().into_iter().map(|n| n.path).collect()
        };
        assert_eq!(
            paths(
                "agentk8sglue: {image: {repository: allegroai/clearml-agent-k8s-base, tag: x}}\n"
            ),
            ["agentk8sglue.image.repository", "agentk8sglue.image.tag"]
        );
        assert_eq!(
            paths("agentk8sglue: {image: {tag: x}}\n"),
            ["agentk8sglue.image.tag"]
        );
        assert!(paths("agentk8sglue: {image: {repository: m/agent, tag: x}}\n").is_empty());
        assert!(paths("agentk8sglue: {initContainers: {resources: {}}}\n").is_empty());
    }

    #[test]
    fn the_pull_secret_follows_enabled_existing_secret_and_password() {
        for (yaml, want) in [
            ("imageCredentials: {password: p, username: u}\n", Some(None)),
            (
                "imageCredentials: {enabled: false, password: p, username: u}\n",
                None,
            ),
            (
                "imageCredentials: {existingSecret: reg}\n",
                Some(Some("reg")),
            ),
            (
                "imageCredentials: {enabled: true, existingSecret: reg}\n",
                Some(Some("reg")),
            ),
            (
                "imageCredentials: {existingSecret: \"\", username: u}\n",
                None,
            ),
        ] {
            assert_eq!(values(yaml).agent_pull_secret(), want, "{yaml}");
        }
        // Docker Hub: the Enterprise chart's user when none is given; elsewhere none
        assert_eq!(
            values("imageCredentials: {password: p}\n").registry_login(),
            Some(("docker.io", ENTERPRISE_REGISTRY_USER))
        );
        assert_eq!(
            values("imageCredentials: {registry: r.example, username: u}\n").registry_login(),
            Some(("r.example", "u"))
        );
    }

    #[test]
    fn agent_pod_mistakes_name_their_field() {
        for (yaml, path) in [
            (
                "agentk8sglue: {replicaCount: -1}\n",
                "agentk8sglue.replicaCount",
            ),
            (
                "agentk8sglue: {image: {tag: \"a:b\"}}\n",
                "agentk8sglue.image.tag",
            ),
            ("global: {imageRegistry: \"a b\"}\n", "global.imageRegistry"),
            (
                "agentk8sglue: {resources: {limits: {memory: 1 GB}}}\n",
                "agentk8sglue.resources.limits.memory",
            ),
            (
                "agentk8sglue: {initContainers: {resources: {requests: {cpu: lots}}}}\n",
                "agentk8sglue.initContainers.resources.requests.cpu",
            ),
            (
                "agentk8sglue: {labels: {team: \"a b\"}}\n",
                "agentk8sglue.labels.team",
            ),
            (
                "agentk8sglue: {extraEnvs: [{name: A, value: x}, {name: A, value: y}]}\n",
                "agentk8sglue.extraEnvs[1]",
            ),
            (
                "agentk8sglue: {volumeMounts: [{name: data, mountPath: /d}]}\n",
                "agentk8sglue.volumeMounts[0].name",
            ),
            (
                "agentk8sglue: {fileMounts: [{name: a/b, folderPath: /x}]}\n",
                "agentk8sglue.fileMounts[0].name",
            ),
            (
                "agentk8sglue: {fileMounts: [{name: a, folderPath: x}]}\n",
                "agentk8sglue.fileMounts[0].folderPath",
            ),
            (
                "agentk8sglue: {fileMounts: [{name: a, folderPath: /x}, {name: a, folderPath: /y}]}\n",
                "agentk8sglue.fileMounts[1]",
            ),
            (
                "agentk8sglue: {serviceExistingAccountName: Not_A_Name}\n",
                "agentk8sglue.serviceExistingAccountName",
            ),
            (
                "agentk8sglue: {additionalClusterRoleBindings: [a/b]}\n",
                "agentk8sglue.additionalClusterRoleBindings[0]",
            ),
            (
                "agentk8sglue: {additionalRoleBindings: [x, x]}\n",
                "agentk8sglue.additionalRoleBindings[1]",
            ),
            (
                "clearml: {clearmlConfig: \"sdk {}\", existingClearmlConfigSecret: c}\n",
                "clearml.existingClearmlConfigSecret",
            ),
            (
                "imageCredentials: {enabled: true}\n",
                "imageCredentials.password",
            ),
        ] {
            let e = Values::from_yaml(yaml).expect_err(yaml);
            assert_eq!(e.path, path, "{yaml}: {e}");
        }
    }
}
