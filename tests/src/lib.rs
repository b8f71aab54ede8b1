//! In-memory doubles of the two servers the agent talks to, shared by the end-to-end tests,
//! the benchmark and the demo.
//!
//! Both doubles serve real HTTP on `127.0.0.1:<port 0>`; the agent and the plugin talk to them with
//! the same clients, kubeconfig and URLs they use against real servers.
//!
//! - [`clearml`]: the ClearML API server subset (envelope, auth, queues, tasks, workers, events).
//! - [`k8s`]: the Kubernetes API server subset (discovery, CRUD, patch, watch, Status errors).
//! - [`serve`]: runs an axum router on an ephemeral loopback port with graceful shutdown.
//! - [`sim`]: plays scheduler, kubelet and the in-pod clearml-agent for the agent's pods.
//! - [`agent`]: runs the real agent binary against the doubles.
//! - [`bench`]: the benchmark of the agent against the official Python glue.

pub mod agent;
pub mod bench;
pub mod clearml;
pub mod k8s;
pub mod serve;
pub mod sim;
