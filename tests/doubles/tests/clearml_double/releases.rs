//! Server releases: what changed in clearml-server 1.17.0 ("Allow enqueueing enqueued tasks",
//! fa41e14) as the double reproduces it with `set_server_version`, and what `server.info` and the
//! tokens report. Before 1.17.0, enqueueing a queued task is refused unless forced, and a forced
//! enqueue adds the task to the new queue and leaves it in the old one; from 1.17.0 it moves.

use clearml_doubles::clearml::{ClearmlDouble, NEWEST_SERVER_VERSION};
use serde_json::{Value, json};

use super::common::{Api, Auth, assert_error, create_queue, create_task, jwt_claims};

/// A double behaving as `version`, a client and a token.
async fn setup_as(version: &str) -> (ClearmlDouble, Api, Auth) {
    let double = ClearmlDouble::start().await.expect("double starts");
    double.set_server_version(version).expect("known release");
    let api = Api::new(&double);
    let (key, secret) = double.credentials();
    let token = api.login(&key, &secret).await;
    (double, api, Auth::Bearer(token))
}

/// The stored task (with `enqueue_status`).
fn stored(double: &ClearmlDouble, id: &str) -> Value {
    double.task(id).expect("task stored")
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The queues holding `task`, among `queues`, by their index.
fn holding(double: &ClearmlDouble, queues: &[&str], task: &str) -> Vec<usize> {
    (0..queues.len())
        .filter(|i| double.queue_entries(queues[*i]).contains(&task.to_string()))
        .collect()
}

/// What `tasks.enqueue` of an already queued task does, per release.
struct Expect {
    version: &'static str,
    /// A plain enqueue into queue B is refused (400/110); else it moves the task.
    plain_refused: bool,
    /// Queues (of A, B, C) holding the task after a forced enqueue into C.
    after_force: &'static [usize],
    /// `enqueue_status` after the forced enqueue.
    enqueue_status_after_force: &'static str,
}

#[tokio::test]
async fn enqueueing_a_queued_task_per_release() {
    let cases = [
        Expect {
            version: "1.16.2",
            plain_refused: true,
            after_force: &[0, 2],
            enqueue_status_after_force: "queued",
        },
        Expect {
            version: "1.17.0",
            plain_refused: false,
            after_force: &[2],
            enqueue_status_after_force: "created",
        },
        Expect {
            version: NEWEST_SERVER_VERSION,
            plain_refused: false,
            after_force: &[2],
            enqueue_status_after_force: "created",
        },
    ];
    for c in cases {
        let v = c.version;
        let (double, api, bearer) = setup_as(v).await;
        let q: Vec<String> = ["rel-a", "rel-b", "rel-c"]
            .iter()
            .map(|n| double.create_queue(n).expect("queue"))
            .collect();
        let queues: Vec<&str> = q.iter().map(String::as_str).collect();
        let task = create_task(&api, &bearer, "moved").await;

        // first enqueue (from created): the same on every release
        let (status, env) = api
            .call(
                "/tasks.enqueue",
                &bearer,
                json!({"task": task, "queue": q[0], "status_message": "first"}),
            )
            .await;
        assert_eq!(status, 200, "{v}: {env}");
        assert_eq!(s(&stored(&double, &task), "/enqueue_status"), "created");

        // a plain enqueue of the queued task into B
        let (status, env) = api
            .call(
                "/tasks.enqueue",
                &bearer,
                json!({"task": task, "queue": q[1], "status_reason": "r2", "status_message": "second"}),
            )
            .await;
        let t = stored(&double, &task);
        if c.plain_refused {
            assert_error(status, &env, 400, 110);
            assert_eq!(
                env["meta"]["result_msg"],
                "Invalid task status (Task already in requested status): current_status=queued, new_status=queued",
                "{v}"
            );
            assert_eq!(holding(&double, &queues, &task), vec![0], "{v}: unchanged");
            assert_eq!(s(&t, "/status_message"), "first", "{v}: unchanged");
            assert_eq!(s(&t, "/execution/queue"), q[0], "{v}: unchanged");
        } else {
            assert_eq!(status, 200, "{v}: {env}");
            assert_eq!(holding(&double, &queues, &task), vec![1], "{v}: moved");
            assert_eq!(s(&t, "/status_message"), "second", "{v}");
            assert_eq!(s(&t, "/execution/queue"), q[1], "{v}");
            assert_eq!(s(&t, "/enqueue_status"), "created", "{v}: kept");
        }

        // a forced enqueue into C
        let (status, env) = api
            .call(
                "/tasks.enqueue",
                &bearer,
                json!({"task": task, "queue": q[2], "force": true,
                       "status_reason": "k8s pending scheduler", "status_message": "launching from queue rel-a [x]"}),
            )
            .await;
        assert_eq!(status, 200, "{v}: {env}");
        let t = stored(&double, &task);
        assert_eq!(holding(&double, &queues, &task), c.after_force, "{v}");
        assert_eq!(s(&t, "/status"), "queued", "{v}");
        assert_eq!(s(&t, "/status_reason"), "k8s pending scheduler", "{v}");
        assert_eq!(
            s(&t, "/status_message"),
            "launching from queue rel-a [x]",
            "{v}"
        );
        assert_eq!(s(&t, "/execution/queue"), q[2], "{v}: the new queue");
        assert_eq!(
            s(&t, "/enqueue_status"),
            c.enqueue_status_after_force,
            "{v}"
        );
        assert_eq!(
            env["data"]["fields"]["enqueue_status"], c.enqueue_status_after_force,
            "{v}: reported in fields"
        );

        // forced again into the same queue: 706, and the server reverts the status change,
        // wiping the status message, on every release
        let (status, env) = api
            .call(
                "/tasks.enqueue",
                &bearer,
                json!({"task": task, "queue": q[2], "force": true, "status_message": "again"}),
            )
            .await;
        assert_error(status, &env, 400, 706);
        let t = stored(&double, &task);
        assert_eq!(s(&t, "/status_reason"), "failed enqueueing", "{v}");
        assert_eq!(s(&t, "/status_message"), "", "{v}");
        assert_eq!(holding(&double, &queues, &task), c.after_force, "{v}");

        // what the in-pod `clearml-agent execute --require-queue` does: tasks.dequeue removes the
        // task from its execution.queue only; before 1.17 it stays in its first queue
        let (status, env) = api
            .call(
                "/tasks.dequeue",
                &bearer,
                json!({"task": task, "new_status": "in_progress"}),
            )
            .await;
        assert_eq!(status, 200, "{v}: {env}");
        assert_eq!(env["data"]["updated"], 1, "{v}");
        let left: Vec<usize> = c.after_force.iter().copied().filter(|i| *i != 2).collect();
        assert_eq!(holding(&double, &queues, &task), left, "{v}");
        assert_eq!(s(&stored(&double, &task), "/status"), "in_progress", "{v}");
        // and --require-queue does not refuse a task already in progress (updated is 1 again)
        let (_, env) = api
            .call(
                "/tasks.dequeue",
                &bearer,
                json!({"task": task, "new_status": "in_progress"}),
            )
            .await;
        assert_eq!(env["data"]["updated"], 1, "{v}");
    }
}

/// A user's Dequeue (`tasks.dequeue` without `new_status`) of a task the agent took: the task goes
/// back to its pre-enqueue status from 1.17.0; before, the forced enqueue overwrote that with
/// `queued`, so the task stays `queued` in no queue.
#[tokio::test]
async fn dequeue_of_a_taken_task_per_release() {
    for (version, forced, after) in [
        ("1.16.2", true, "queued"),
        (NEWEST_SERVER_VERSION, false, "created"),
    ] {
        let (double, api, bearer) = setup_as(version).await;
        let own = double.create_queue("own-queue").expect("queue");
        let pending = double.create_queue("k8s_scheduler").expect("queue");
        let task = create_task(&api, &bearer, "taken").await;
        double.enqueue(&task, &own).expect("enqueued");
        // the agent's take on this release
        let (status, env) = api
            .call(
                "/tasks.enqueue",
                &bearer,
                json!({"task": task, "queue": pending, "force": forced}),
            )
            .await;
        assert_eq!(status, 200, "{version}: {env}");
        if forced {
            let (status, env) = api
                .call(
                    "/queues.remove_task",
                    &bearer,
                    json!({"queue": own, "task": task}),
                )
                .await;
            assert_eq!(status, 200, "{version}: {env}");
        }
        assert_eq!(
            double.queue_entries(&own),
            Vec::<String>::new(),
            "{version}"
        );
        assert_eq!(
            double.queue_entries(&pending),
            vec![task.clone()],
            "{version}"
        );
        let (status, env) = api
            .call("/tasks.dequeue", &bearer, json!({"task": task}))
            .await;
        assert_eq!(status, 200, "{version}: {env}");
        assert!(double.queue_entries(&pending).is_empty(), "{version}");
        assert_eq!(s(&stored(&double, &task), "/status"), after, "{version}");
    }
}

/// Servers before 1.1.0 do not read `force`: a queued task cannot be enqueued again at all.
#[tokio::test]
async fn force_is_ignored_before_1_1() {
    let (double, api, bearer) = setup_as("1.0.2").await;
    let a = double.create_queue("old-a").expect("queue");
    let b = double.create_queue("old-b").expect("queue");
    let task = create_task(&api, &bearer, "old").await;
    double.enqueue(&task, &a).expect("enqueued");
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": task, "queue": b, "force": true}),
        )
        .await;
    assert_error(status, &env, 400, 110);
    assert_eq!(double.queue_entries(&a), vec![task.clone()]);
    assert!(double.queue_entries(&b).is_empty());
}

/// The queue-side changes of 1.17.0: `queues.remove_task` reads `update_task_status`,
/// `queues.add_task` sets `execution.queue`, `queues.clear_queue` exists, `failed → queued`.
#[tokio::test]
async fn queue_endpoints_before_and_from_1_17() {
    for (version, new) in [("1.16.2", false), (NEWEST_SERVER_VERSION, true)] {
        let (double, api, bearer) = setup_as(version).await;
        let a = create_queue(&api, &bearer, json!({"name": "side-a"})).await;
        let b = create_queue(&api, &bearer, json!({"name": "side-b"})).await;
        let task = create_task(&api, &bearer, "side").await;
        double.enqueue(&task, &a).expect("enqueued");

        let (status, env) = api
            .call(
                "/queues.add_task",
                &bearer,
                json!({"queue": b, "task": task}),
            )
            .await;
        assert_eq!(status, 200, "{version}: {env}");
        let want = if new { &b } else { &a };
        assert_eq!(
            s(&stored(&double, &task), "/execution/queue"),
            want.as_str(),
            "{version}: add_task and execution.queue"
        );

        let (status, env) = api
            .call(
                "/queues.remove_task",
                &bearer,
                json!({"queue": want, "task": task, "update_task_status": true}),
            )
            .await;
        assert_eq!(status, 200, "{version}: {env}");
        let want_status = if new { "created" } else { "queued" };
        assert_eq!(
            s(&stored(&double, &task), "/status"),
            want_status,
            "{version}: remove_task with update_task_status"
        );

        let (status, _) = api
            .call("/queues.clear_queue", &bearer, json!({"queue": a}))
            .await;
        assert_eq!(
            status,
            if new { 200 } else { 404 },
            "{version}: clear_queue"
        );

        let failed = create_task(&api, &bearer, "failing").await;
        api.call(
            "/tasks.failed",
            &bearer,
            json!({"task": failed, "force": true}),
        )
        .await;
        let (status, env) = api
            .call(
                "/tasks.enqueue",
                &bearer,
                json!({"task": failed, "queue": a}),
            )
            .await;
        if new {
            assert_eq!(status, 200, "{version}: failed → queued: {env}");
        } else {
            assert_error(status, &env, 400, 110);
        }
    }
}

/// `server.info` as each release answers it: `version`, `build`, `commit`, plus `uid` for API
/// 2.8–2.11 and `api_version` from 2.12 (the 2.12 handler extends the 1.0 one, so without `uid`);
/// open before 2.3.0. Tokens carry the release too.
#[tokio::test]
async fn server_info_and_token_claims_per_release() {
    for (version, api_version, open) in [
        ("1.16.2", "2.30", true),
        ("1.17.0", "2.31", true),
        (NEWEST_SERVER_VERSION, "2.34", false),
    ] {
        let (double, api, bearer) = setup_as(version).await;
        let (status, env) = api.call("/server.info", &bearer, json!({})).await;
        assert_eq!(status, 200, "{version}: {env}");
        assert_eq!(env["meta"]["endpoint"]["requested_version"], api_version);
        let data = env["data"].as_object().expect("data");
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["api_version", "build", "commit", "version"],
            "{version}"
        );
        assert_eq!(data["version"], version);
        assert_eq!(data["api_version"], api_version);
        let (_, env) = api.call("/v2.8/server.info", &bearer, json!({})).await;
        assert!(env["data"]["uid"].is_string(), "{version}: {env}");
        assert!(env["data"].get("api_version").is_none(), "{version}: {env}");

        let (status, env) = api.call("/server.info", &Auth::None, json!({})).await;
        if open {
            assert_eq!(status, 200, "{version}: open: {env}");
        } else {
            assert_error(status, &env, 401, 20);
        }
        let Auth::Bearer(token) = &bearer else {
            unreachable!("setup_as logs in")
        };
        let claims = jwt_claims(token);
        assert_eq!(claims["server_version"], version);
        assert_eq!(claims["api_version"], api_version);
        assert_eq!(double.server_version(), version);
    }
    let double = ClearmlDouble::start().await.expect("double");
    assert_eq!(double.server_version(), NEWEST_SERVER_VERSION);
    let err = double
        .set_server_version("1.16")
        .expect_err("not a release");
    assert!(err.to_string().contains("1.16"), "{err}");
}
