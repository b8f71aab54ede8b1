//! The README's first command: the demo runs non-interactively and shows the product working.

use std::process::Command;

#[test]
fn the_demo_runs_and_shows_the_outcomes() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    for expected in [
        "kubectl clearml install -f values.yaml",
        "deployment.apps/clearml-agent serverside-applied",
        "$ kubectl clearml status",
        "GPUs_with_shared_memory",
        "$ kubectl clearml tasks",
        "Succeeded",
        "Unschedulable: 0/3 nodes are available",
        "status failed, reason: k8s agent: pod clearml-id-",
        "ErrImagePull",
        "demo done",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
}
