//! Supervision: a long-lived task of the agent that cannot run takes the process down, drained,
//! with a non-zero exit status and a log naming the task (so Kubernetes restarts the pod); a
//! requested shutdown (SIGTERM) still drains and exits 0.

use super::*;

const VALUES: &str = "agentk8sglue:\n  createQueues: true\n  queues:\n    supervised: {}\n";

/// Lines of the agent's (plain-format) log written at error level.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" ERROR ")).collect()
}

/// The control API's port is taken: its task fails, and the agent drains (the lease is
/// released) and exits non-zero, its log naming the control API and the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_exits_non_zero_when_the_control_api_cannot_run() {
    let env = Env::new(SimOptions::default()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let addr = taken.local_addr().expect("bound address");
    let mut spec = env.spec(VALUES);
    spec.env
        .push(("CLEARML_AGENT_GRPC_ADDR".into(), addr.to_string()));
    let mut agent = AgentProcess::spawn(&spec).expect("agent starts");
    let status = agent.wait_exit(WAIT).expect("the agent exits by itself");
    let log = agent.log_text();
    assert!(!status.success(), "exit status {status}:\n{log}");
    let failure = format!("control API failed: cannot listen on {addr}");
    let errors = error_lines(&log);
    assert!(
        errors
            .iter()
            .any(|l| l.contains("task{name=\"control API\"}") && l.contains(&failure)),
        "no error line from the control API's task saying {failure:?}:\n{log}"
    );
    assert!(
        log.contains(&format!("Error: {failure}")),
        "the exit error names the control API:\n{log}"
    );
    assert!(log.contains("lease released"), "drained:\n{log}");
    drop(taken);
}

/// SIGTERM: exit 0 with no error logged, the worker unregistered and the lease released at once
/// (not left to expire).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_releasing_the_lease() {
    let env = Env::new(SimOptions::default()).await;
    let mut spec = env.spec(VALUES);
    spec.env.push(("POD_NAME".into(), "replica-a".into()));
    let mut agent = AgentProcess::start(&spec, READY)
        .await
        .expect("agent starts");
    let deadline = Instant::now() + WAIT;
    while reliability::holder(&env).as_deref() != Some("replica-a") {
        assert!(Instant::now() < deadline, "the agent never took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = agent.terminate(WAIT).expect("the agent exits on SIGTERM");
    let log = agent.log_text();
    assert!(status.success(), "exit status {status}:\n{log}");
    assert_eq!(error_lines(&log), Vec::<&str>::new(), "{log}");
    assert_eq!(reliability::holder(&env), None, "lease released:\n{log}");
    assert!(
        env.clearml.workers().is_empty(),
        "worker unregistered: {:#?}",
        env.clearml.workers()
    );
}

/// Off a terminal (the harness writes the agent's stderr to a file, as Kubernetes does) the log
/// is plain text: no ANSI colour escapes around levels, spans or fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_has_no_colour_escapes_off_a_terminal() {
    let env = Env::new(SimOptions::default()).await;
    let mut agent = env.agent(VALUES).await;
    let task = env.enqueue("logged", "supervised", "");
    env.task_status(&task, "completed").await;
    agent.terminate(WAIT).expect("the agent exits on SIGTERM");
    let log = agent.log_text();
    assert!(
        !log.contains("\u{1b}["),
        "colour escapes in a log written to a file:\n{log:?}"
    );
    assert!(
        log.lines().any(|l| l.contains(" INFO ")),
        "the log has info lines:\n{log}"
    );
}
