//! The in-cluster ClearML agent for Kubernetes.
//!
//! ```text
//! poll (ClearML queues) → decide → render (pod) → create → watch (pods) → report (ClearML)
//! ```
//!
//! - [`clearml`]: the ClearML REST client.
//! - [`values`]: the values schema (the only module that knows its keys) and its validation.
//! - [`lifecycle`]: pure per-task decisions from pod states and ClearML status.
//! - [`merge`]: pure merge of pod templates (base ⊕ queue overrides).
//! - [`render`]: pure rendering of a task's pod(s) from the merged template and the task.
//! - [`validate`]: Kubernetes syntax rules (quantities, names) shared by the schema and rendering.
//! - [`yaml`]: the one wrapper around the YAML library.

pub mod clearml;
pub mod lifecycle;
pub mod merge;
pub mod render;
pub mod validate;
pub mod values;
pub mod yaml;

/// The agent's version, reported by `--version` and the control API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
