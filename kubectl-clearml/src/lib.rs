//! `kubectl clearml`: installs the ClearML Kubernetes agent and steers it through its gRPC control
//! API.
//!
//! ```text
//! cli (flags) ──▶ cmd::<verb> ──▶ connect (kube client │ port-forward → gRPC) ──▶ view ──▶ output
//!                     └─ install: values files ─▶ manifests (manifests/*.yaml filled in) ─▶ server-side apply
//! ```
//!
//! - [`cli`]: clap flags and subcommands (kubectl-like globals).
//! - [`cmd`]: one module per command; each returns a view the renderer prints.
//! - [`connect`]: the Kubernetes client from the flags, and the gRPC channel to the agent.
//! - [`values_input`]: values files merged with `--set`, then parsed by the agent's schema.
//! - [`manifests`]: the install manifests (`manifests/*.yaml`) filled in from the values.
//! - [`output`]: the one renderer (table, wide, JSON, YAML) and its `Tabular` trait.
//! - [`progress`]: spinners on stderr, hidden when nobody watches.

pub mod cli;
pub mod cmd;
pub mod connect;
pub mod manifests;
pub mod output;
pub mod progress;
pub mod values_input;

use std::process::ExitCode;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs the parsed command line to completion; errors go to stderr as `error: …`.
pub async fn run(cli: cli::Cli) -> ExitCode {
    // NB: rustls needs one process-wide crypto provider; kube is built with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = tokio::select! {
        res = cmd::run(cli) => res,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted");
            return ExitCode::from(EXIT_INTERRUPTED);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): not an error worth reporting.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr (stdout is for data), at `warn` unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
