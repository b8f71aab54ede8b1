//! The official Python k8s glue as the benchmark's other contender: `clearml-agent` from PyPI
//! (venv made by `tests/scripts/ensure-venv.sh glue`), its `K8sIntegration` run unmodified by
//! `tests/py/glue_launcher.py`, configured by environment variables only, with the real `kubectl`
//! from `PATH` pointed at the Kubernetes double.
//!
//! Its pod template is the open-source chart's shape rendered for the same image and ClearML
//! endpoints as our agent's default pod: ClearML hosts as plain env, the key pair from the same
//! Secret by reference, no service-account token, `restartPolicy: Never`.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;

use super::{tail, workspace_root};
use clearml_doubles::clearml::ClearmlDouble;

/// The `clearml-agent` version `tests/scripts/ensure-venv.sh glue` pins (keep in step with it).
pub const CLEARML_AGENT_VERSION: &str = "3.0.3";
/// Secret holding the ClearML key pair that task pods reference (the agent's chart name).
pub const CREDENTIALS_SECRET: &str = "clearml-agent-credentials";
/// The glue's worker id (fixed, so its `CLEARML=agent-<md5>` label is stable).
pub const WORKER_ID: &str = "k8s-glue-bench";

/// The venv's python if `ensure-venv.sh glue` completed (no network access needed to check).
pub fn installed_python() -> Option<PathBuf> {
    let venv = workspace_root().join("target/glue-venv");
    let stamp = venv.join(format!(".clearml-agent-{CLEARML_AGENT_VERSION}.ok"));
    let python = venv.join("bin/python");
    (stamp.exists() && python.exists()).then_some(python)
}

/// Runs `ensure-venv.sh glue` (creates the venv from PyPI on first use); returns its python.
pub fn ensure_python() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let script = root.join("tests/scripts/ensure-venv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("glue")
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !python.exists() {
        bail!("the glue venv's python {} is missing", python.display());
    }
    Ok(python)
}

/// The pod template given to the glue (`--template-yaml`), as YAML (JSON is YAML).
pub fn pod_template(namespace: &str, clearml_url: &str) -> String {
    let plain = |name: &str| json!({"name": name, "value": clearml_url});
    let secret = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key}}});
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace},
        "spec": {
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "containers": [{
                "env": [
                    plain("CLEARML_API_HOST"),
                    plain("CLEARML_WEB_HOST"),
                    plain("CLEARML_FILES_HOST"),
                    secret("CLEARML_API_ACCESS_KEY", "agentk8sglue_key"),
                    secret("CLEARML_API_SECRET_KEY", "agentk8sglue_secret"),
                ],
            }],
        },
    })
    .to_string()
}

/// How to start the glue.
#[derive(Debug, Clone)]
pub struct GlueSpec {
    /// The venv's python.
    pub python: PathBuf,
    /// ClearML API URL.
    pub clearml_url: String,
    /// ClearML credentials.
    pub credentials: (String, String),
    /// Kubeconfig of the Kubernetes double.
    pub kubeconfig: PathBuf,
    /// Namespace of the task pods.
    pub namespace: String,
    /// Queue names, highest priority first.
    pub queues: Vec<String>,
    /// Image of tasks that name none (`CLEARML_DOCKER_IMAGE`).
    pub default_image: String,
    /// Directory for HOME, the template, the config file and the log.
    pub dir: PathBuf,
}

/// A running glue process; killed on drop.
pub struct GlueProcess {
    child: Child,
    /// The glue's stdout and stderr.
    pub log: PathBuf,
}

impl GlueProcess {
    /// Starts the glue and waits (up to `timeout`) until its dispatch loop polls ClearML.
    pub async fn start(
        spec: &GlueSpec,
        clearml: &ClearmlDouble,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let home = spec.dir.join("home");
        let tmp = spec.dir.join("tmp");
        std::fs::create_dir_all(&home)?;
        std::fs::create_dir_all(&tmp)?;
        let template = spec.dir.join("pod-template.yaml");
        std::fs::write(&template, pod_template(&spec.namespace, &spec.clearml_url))?;
        // Only what env vars cannot say: no update check against the internet.
        let config = spec.dir.join("clearml.conf");
        std::fs::write(&config, "agent { disable_agent_update_check: true }\n")?;
        let log = spec.dir.join("glue.log");
        let out = File::create(&log)?;
        let launcher = workspace_root().join("tests/py/glue_launcher.py");
        let child = Command::new(&spec.python)
            .arg(&launcher)
            .arg("--template")
            .arg(&template)
            .args(["--namespace", &spec.namespace])
            .args(&spec.queues)
            .current_dir(&home)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .env("LANG", "C.UTF-8")
            .env("PYTHONUNBUFFERED", "1")
            .env("KUBECONFIG", &spec.kubeconfig)
            .env("CLEARML_CONFIG_FILE", &config)
            .env("CLEARML_API_HOST", &spec.clearml_url)
            .env("CLEARML_WEB_HOST", &spec.clearml_url)
            .env("CLEARML_FILES_HOST", &spec.clearml_url)
            .env("CLEARML_API_ACCESS_KEY", &spec.credentials.0)
            .env("CLEARML_API_SECRET_KEY", &spec.credentials.1)
            .env("CLEARML_WORKER_ID", WORKER_ID)
            .env("CLEARML_DOCKER_IMAGE", &spec.default_image)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", spec.python.display()))?;
        let mut glue = Self { child, log };
        glue.wait_polling(clearml, timeout).await?;
        Ok(glue)
    }

    /// Waits until the glue's dispatch loop made its first `queues.get_next_task`.
    async fn wait_polling(
        &mut self,
        clearml: &ClearmlDouble,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the Python glue exited ({status}):\n{}", self.log_tail(40));
            }
            if clearml.calls("queues.get_next_task") > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the Python glue did not poll a queue within {timeout:?}:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The glue's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            lines,
        )
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GlueProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `python --version`, `clearml-agent`'s version and `kubectl version --client`, for the report.
pub fn versions(python: &Path) -> (String, String) {
    let run = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .map(|o| {
                let text = if o.stdout.is_empty() {
                    o.stderr
                } else {
                    o.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let py = run(Command::new(python).arg("--version"));
    let kubectl = run(Command::new("kubectl").args(["version", "--client"]));
    (py, kubectl)
}
