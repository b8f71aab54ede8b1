//! The in-cluster ClearML agent for Kubernetes.
//!
//! ```text
//! poll (ClearML queues) → decide → render (pod) → create → watch (pods) → report (ClearML)
//! ```
//!
//! - [`args`]: flags, and `Args::run`, which builds every component.
//! - [`values`]: the values schema (the only module that knows its keys) and its validation.
//! - [`config`]: the values resolved into the dispatcher's settings, with documented defaults.
//! - [`config_store`]: the agent's ConfigMap (source of truth), conditional writes and watch.
//! - [`clearml`]: the ClearML REST client.
//! - [`schedule`]: pure fair choice of the tasks to launch this tick.
//! - [`merge`]: pure merge of pod templates (base ⊕ queue overrides).
//! - [`render`]: pure rendering of a task's pod(s) from the merged template and the task.
//! - [`k8s`]: pod and Service writes, and the pod watch.
//! - [`lifecycle`]: pure per-task decisions from pod states and ClearML status.
//! - [`dispatch`]: the data path loop that runs all of the above.
//! - [`grpc`]: the control API served to `kubectl clearml`.
//! - [`runtime`], [`health`], [`metrics`]: admin server, reports, signals, the supervisor of the
//!   long-lived tasks, readiness, Prometheus.
//! - [`validate`]: Kubernetes syntax rules (quantities, names) shared by the schema and rendering.
//! - [`yaml`]: the one wrapper around the YAML library.

pub mod args;
pub mod clearml;
pub mod config;
pub mod config_store;
pub mod dispatch;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod health;
pub mod k8s;
pub mod lifecycle;
pub mod merge;
pub mod metrics;
pub mod render;
pub mod runtime;
pub mod schedule;
pub mod validate;
pub mod values;
pub mod yaml;

pub use args::Args;

/// The agent's version, reported by `--version` and the control API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
