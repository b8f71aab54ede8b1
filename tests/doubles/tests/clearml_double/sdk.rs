//! Fidelity: the official Python SDK (clearml==2.1.12) creates and enqueues tasks against the double.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clearml_doubles::clearml::{ClearmlDouble, NEWEST_SERVER_VERSION};
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the doubles crate sits in tests/doubles/ of the workspace")
        .to_path_buf()
}

/// Creates (or reuses) the venv with clearml==2.1.12; panics with a clear message if it cannot.
fn ensure_venv(root: &Path) -> PathBuf {
    let script = root.join("tests/scripts/ensure-venv.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("sdk")
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "could not create the Python venv with clearml==2.1.12 (needs PyPI access): {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let python = stdout.lines().last().unwrap_or_default().trim().to_string();
    let python = PathBuf::from(python);
    assert!(
        python.exists(),
        "venv python not found at {}",
        python.display()
    );
    python
}

/// Runs a script of `tests/py/` with the SDK against `double` (`env`: extra variables); returns the
/// JSON object it prints on its last stdout line. Panics with the output and the request log if
/// the script fails.
async fn run_sdk_script(double: &ClearmlDouble, script: &str, env: &[(&str, &str)]) -> Value {
    let root = workspace_root();
    let python = tokio::task::spawn_blocking({
        let root = root.clone();
        move || ensure_venv(&root)
    })
    .await
    .expect("venv task");
    let (key, secret) = double.credentials();
    let home = tempfile::tempdir().expect("temp HOME");
    let config = home.path().join("clearml.conf");
    std::fs::write(
        &config,
        "api { http { retries { total: 2, connect: 2, read: 2, redirect: 2, status: 2, backoff_factor: 0.1 }, wait_on_maintenance_forever: false } }\n",
    )
    .expect("write config");
    let url = double.url();
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(root.join("tests/py").join(script))
        .current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CLEARML_CONFIG_FILE", &config)
        .env("CLEARML_API_HOST", &url)
        .env("CLEARML_WEB_HOST", &url)
        .env("CLEARML_FILES_HOST", &url)
        .env("CLEARML_API_ACCESS_KEY", &key)
        .env("CLEARML_API_SECRET_KEY", &secret)
        .env_remove("CLEARML_API_DEFAULT_REQ_METHOD")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .expect("the SDK script finishes within 4 minutes")
        .expect("the SDK script runs");
    let log: Vec<String> = double
        .requests()
        .all()
        .iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.result_code))
        .collect();
    assert!(
        output.status.success(),
        "SDK script {script} failed: {}\nstdout: {}\nstderr: {}\nrequests:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        log.join("\n")
    );
    eprintln!("SDK requests ({script}):\n{}", log.join("\n"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_fidelity() {
    let double = ClearmlDouble::start().await.expect("double starts");
    let report = run_sdk_script(
        &double,
        "sdk_fidelity.py",
        &[
            ("FIDELITY_PROJECT", "fidelity-project"),
            ("FIDELITY_SECOND_QUEUE", "fidelity-second"),
        ],
    )
    .await;

    // What the SDK saw matches the double's state.
    let task_id = report["task_id"].as_str().expect("task id").to_string();
    let task2_id = report["task2_id"].as_str().expect("task2 id").to_string();
    let default_id = double.default_queue_id().expect("default queue");
    let second_id = double
        .queue_id("fidelity-second")
        .expect("second queue created via APIClient");
    assert_eq!(report["default_queue_id"], default_id);
    assert_eq!(report["second_queue_id"], second_id);
    assert_eq!(report["default_queue_entries"], json!([task_id]));
    assert_eq!(double.queue_entries(&default_id), vec![task_id.clone()]);
    assert_eq!(double.queue_entries(&second_id), vec![task2_id.clone()]);

    let projects = double.projects();
    assert_eq!(projects.len(), 1, "{projects:?}");
    assert_eq!(projects[0]["name"], "fidelity-project");
    let project_id = projects[0]["id"].clone();

    let task = double.task(&task_id).expect("task stored");
    assert_eq!(task["status"], "queued");
    assert_eq!(task["name"], "fidelity-task");
    assert_eq!(task["project"], project_id);
    assert_eq!(task["container"]["image"], "python:3.11-slim");
    assert_eq!(task["container"]["arguments"], "-e FOO=1");
    assert_eq!(task["container"]["setup_shell_script"], "echo hi");
    assert_eq!(task["execution"]["queue"], default_id);
    assert_eq!(task["enqueue_status"], "created");
    let system_tags = task["system_tags"].as_array().cloned().unwrap_or_default();
    assert!(
        !system_tags.contains(&json!("development")),
        "{system_tags:?}"
    );
    let task2 = double.task(&task2_id).expect("task2 stored");
    assert_eq!(task2["status"], "queued");
    assert_eq!(task2["execution"]["queue"], second_id);

    let seen: Vec<&Value> = report["tasks"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    assert_eq!(seen.len(), 2, "{report}");
    for t in seen {
        assert!(
            t["status"].as_str().is_some_and(|s| s.ends_with("queued")),
            "{t}"
        );
    }

    // The SDK used GET with JSON bodies, the versioned paths, and hit no unknown endpoint.
    let requests = double.requests().all();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path_version.is_some())
    );
    assert!(
        requests.iter().all(|r| r.result_code != 404),
        "an unknown endpoint was called: {:?}",
        requests
            .iter()
            .filter(|r| r.result_code == 404)
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
    assert!(double.calls("auth.login") >= 1);
    assert!(double.calls("tasks.enqueue") == 2);
}

/// The SDK enqueues an already queued task: on a 1.16.2 server `Task.enqueue` raises the server's
/// refusal and a forced `tasks.enqueue` adds the task to the new queue, leaving it in the first;
/// on 1.17.0 and later both move it. The SDK reads the release from its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_enqueue_of_a_queued_task_per_release() {
    for (version, moves) in [
        ("1.16.2", false),
        ("1.17.0", true),
        (NEWEST_SERVER_VERSION, true),
    ] {
        let double = ClearmlDouble::start().await.expect("double starts");
        double.set_server_version(version).expect("known release");
        let report = run_sdk_script(&double, "sdk_releases.py", &[]).await;
        let task = report["task_id"].as_str().expect("task id").to_string();
        assert_eq!(report["server_version"], version, "{report}");
        let holding: Vec<&str> = ["sdk-rel-a", "sdk-rel-b", "sdk-rel-c"]
            .into_iter()
            .filter(|q| report["entries"][q] == json!([task]))
            .collect();
        if moves {
            assert_eq!(report["plain"], "ok", "{version}: {report}");
            assert_eq!(holding, ["sdk-rel-c"], "{version}: {report}");
        } else {
            let refusal = report["plain"].as_str().unwrap_or_default();
            assert!(
                refusal.contains("Task already in requested status"),
                "{version}: {report}"
            );
            assert_eq!(holding, ["sdk-rel-a", "sdk-rel-c"], "{version}: {report}");
        }
        assert_eq!(report["forced"]["status"], 200, "{version}: {report}");
        assert_eq!(report["status"], "queued", "{version}: {report}");
        assert_eq!(report["status_message"], "forced by the SDK", "{version}");
        assert_eq!(report["execution_queue_is_c"], true, "{version}: {report}");
    }
}
