//! Runs the real agent binary as a child process against the doubles, exactly as it runs in a
//! cluster: a values file, `KUBECONFIG`, ClearML credentials in the environment.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// Path of the `clearml-k8s-agent` binary of this build profile, (re)built once per test
/// process so a test never runs a stale agent.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_binary("clearml-agent", "clearml-k8s-agent").map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Path of the `kubectl-clearml` plugin binary, (re)built once per test process.
pub fn plugin_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_binary("kubectl-clearml", "kubectl-clearml").map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds `bin` of `package` in this build profile and returns its path.
fn build_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin> → target/<profile>/
    let mut dir = exe.parent().context("binary has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let path = dir.join(bin);
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()?;
    if !status.success() || !path.exists() {
        bail!("cannot build {bin} ({status})");
    }
    Ok(path)
}

/// A free loopback port (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The values document (YAML).
    pub values: String,
    /// ClearML API URL.
    pub clearml_url: String,
    /// ClearML credentials.
    pub credentials: (String, String),
    /// Kubeconfig file.
    pub kubeconfig: PathBuf,
    /// The agent's namespace.
    pub namespace: String,
    /// Directory for the values file and logs.
    pub dir: PathBuf,
    /// Read the values from this ConfigMap (in `namespace`) instead of the file.
    pub config_map: Option<String>,
    /// Extra environment (e.g. `POD_NAME`, the replica's identity in the lease).
    pub env: Vec<(String, String)>,
}

/// A running agent process; killed on drop.
pub struct AgentProcess {
    child: Child,
    /// `http://127.0.0.1:<port>` of `/healthz`, `/readyz`, `/metrics`.
    pub admin_url: String,
    /// The agent's log file (stderr).
    pub log: PathBuf,
    /// `http://127.0.0.1:<port>` of the gRPC control API.
    pub grpc_url: String,
}

impl AgentProcess {
    /// Starts the agent and waits (up to `timeout`) until `/readyz` answers 200.
    pub async fn start(spec: &AgentSpec, timeout: Duration) -> anyhow::Result<Self> {
        let mut agent = Self::spawn(spec)?;
        agent.wait_ready(timeout).await?;
        Ok(agent)
    }

    /// Starts the agent without waiting for it (for a test that expects it to fail).
    pub fn spawn(spec: &AgentSpec) -> anyhow::Result<Self> {
        let values = spec.dir.join("values.yaml");
        std::fs::write(&values, &spec.values)?;
        let port = free_port()?;
        let grpc_port = free_port()?;
        let log = spec.dir.join(format!("agent-{port}.log"));
        let stderr = std::fs::File::create(&log)?;
        let mut cmd = Command::new(agent_binary()?);
        if let Some(cm) = &spec.config_map {
            cmd.env("CLEARML_AGENT_CONFIG_MAP", cm);
        }
        let child = cmd
            .env("CLEARML_AGENT_CONFIG", &values)
            .env("POD_NAMESPACE", &spec.namespace)
            .env("CLEARML_API_HOST", &spec.clearml_url)
            .env("CLEARML_API_ACCESS_KEY", &spec.credentials.0)
            .env("CLEARML_API_SECRET_KEY", &spec.credentials.1)
            .env("KUBECONFIG", &spec.kubeconfig)
            .env("CLEARML_AGENT_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("CLEARML_AGENT_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            // the spec's own variables last, so they override the defaults above
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .spawn()
            .context("cannot start the agent")?;
        Ok(Self {
            child,
            admin_url: format!("http://127.0.0.1:{port}"),
            log,
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
        })
    }

    /// Waits until `/readyz` answers 200 (or the process exits, or `timeout` passes).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.admin_url);
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "agent exited ({status}) before becoming ready:\n{}",
                    self.log_text()
                );
            }
            if let Ok(true) = http_ok(&url).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("agent not ready within {timeout:?}:\n{}", self.log_text());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The agent's process id (the benchmark reads its CPU and memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no drain, no unregister.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the process to exit (up to `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.wait_exit(timeout)
            .context("agent did not exit after SIGTERM")
    }

    /// Waits (up to `timeout`) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("agent did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        http_get(&format!("{}/metrics", self.admin_url)).await
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- agent log tail ({}) ---", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

async fn http_ok(url: &str) -> anyhow::Result<bool> {
    Ok(reqwest::get(url).await?.status().is_success())
}

async fn http_get(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(url).await?.error_for_status()?.text().await?)
}
