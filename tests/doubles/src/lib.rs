//! In-memory doubles of the two servers the agent talks to, and the cluster simulator, shared by
//! the end-to-end tests, the benchmark and the demo (`clearml-e2e`) and by the plugin's tests.
//!
//! Both doubles serve real HTTP on `127.0.0.1:<port 0>`; the agent and the plugin talk to them with
//! the same clients, kubeconfig and URLs they use against real servers. What they do not reproduce
//! is listed in `DOUBLES.md` beside this crate; their fidelity tests (`tests/`) drive them with the
//! real `clearml` Python SDK, the real `kubectl` and kube-rs.
//!
//! - [`clearml`]: the ClearML API server subset (envelope, auth, queues, tasks, workers, events).
//! - [`k8s`]: the Kubernetes API server subset (discovery, CRUD, patch, watch, Status errors).
//! - [`serve`]: runs an axum router on an ephemeral loopback port with graceful shutdown.
//! - [`sim`]: plays scheduler, kubelet and the in-pod clearml-agent for the agent's pods.

pub mod clearml;
pub mod k8s;
pub mod serve;
pub mod sim;
