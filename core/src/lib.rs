//! The pure core the agent and the `kubectl clearml` plugin share. No I/O and no runtime: no
//! tokio, kube client, HTTP or gRPC here, so the plugin builds small and every function is
//! table-testable.
//!
//! - [`contract`]: every name both binaries must agree on (labels, annotations, Secret keys,
//!   ports, env names, the pending queue, the GPU resource).
//! - [`values`]: the values schema (the only module that knows its keys), field-path errors,
//!   [`values::merge`] (pod templates) and [`values::rules`] (template checks shared with render).
//! - [`config`]: the values resolved into the agent's settings, with the documented defaults.
//! - [`render`]: a task's pod(s) from its queue's merged template, and the task container's
//!   command ([`render::bootstrap`]: the POSIX `sh` script that installs what the image lacks).
//! - [`gang`]: how a multi-node task starts whole (Kueue, the PodGroup API, the agent's timeout).
//! - [`kueue`]: Kueue's pod contract (queue-name label, pod groups, the admission gate).
//! - [`validate`]: Kubernetes syntax rules (quantities, names).
//! - [`yaml`]: the one wrapper around the YAML library.

pub mod config;
pub mod contract;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gang;
pub mod kueue;
pub mod render;
pub mod validate;
pub mod values;
pub mod yaml;
