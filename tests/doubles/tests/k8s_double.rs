//! Integration tests of the Kubernetes API server double, driven through the clients the
//! product uses against real clusters: kube-rs built from the double's kubeconfig, raw HTTP,
//! and the real `kubectl` binary.

mod k8s_double {
    pub mod common;
    mod crud;
    mod errors;
    mod jobs;
    mod kubectl;
    mod kubelet;
    mod patches;
    mod portforward;
    mod selectors;
    mod watches;
}
