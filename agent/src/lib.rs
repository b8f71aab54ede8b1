//! The in-cluster ClearML agent for Kubernetes.
//!
//! ```text
//! poll (ClearML queues) → decide → render (pod) → create → watch (pods) → report (ClearML)
//! ```
//!
//! The values schema, merge, rendering and the names shared with the plugin live in the pure
//! core crate, `clearml_agent_core`; this crate is the runtime around it.
//!
//! - [`args`]: flags, and `Args::run`, which builds every component.
//! - [`config_store`]: the agent's ConfigMap (source of truth), conditional writes and watch.
//! - [`clearml`]: the ClearML REST client.
//! - [`schedule`]: pure fair choice of the tasks to launch this tick.
//! - [`k8s`]: pod and Service writes, and the pod watch.
//! - [`lifecycle`]: pure per-task decisions from pod states and ClearML status.
//! - [`dispatch`]: the data path loop that runs all of the above.
//! - [`control`]: what the control API serves: pure views and validated ConfigMap edits.
//! - [`grpc`]: the gRPC edge of the control API served to `kubectl clearml`.
//! - [`runtime`], [`health`], [`metrics`]: admin server, reports, signals, the supervisor of the
//!   long-lived tasks, readiness, Prometheus.

pub mod args;
pub mod clearml;
pub mod config_store;
pub mod control;
pub mod dispatch;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod health;
pub mod k8s;
pub mod lifecycle;
pub mod metrics;
pub mod runtime;
pub mod schedule;

pub use args::Args;

/// The agent's version, reported by `--version` and the control API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
