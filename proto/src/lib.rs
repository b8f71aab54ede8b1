//! The gRPC contract between the in-cluster agent and the `kubectl clearml` plugin.
//!
//! Generated code only: the plugin depends on this crate, never on the agent, so wire compatibility
//! is the only coupling between them. A breaking change gets a `v2` module beside `v1`.

/// `clearml.agent.v1`: the first stable version of the control API.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("clearml.agent.v1");
}
