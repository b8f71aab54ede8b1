//! Entry point of `kubectl-clearml`: parse flags, set up logging to stderr, run.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = kubectl_clearml::cli::Cli::parse();
    kubectl_clearml::init_tracing();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(kubectl_clearml::run(cli)),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
