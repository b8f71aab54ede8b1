//! The batch task endpoints (`tasks.enqueue_many`, `tasks.update_batch`) as the server runs
//! them, the capacity model, and a dropped reply after the server acted.

use std::time::{Duration, Instant};

use clearml_doubles::clearml::Capacity;
use serde_json::{Value, json};

use super::common::{Api, Auth, assert_error, create_queue, create_task, get_task, setup};

async fn update_batch(api: &Api, auth: &Auth, lines: &[Value]) -> (u16, Value) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (status, env, _) = api
        .raw(
            reqwest::Method::POST,
            "/v2.23/tasks.update_batch",
            auth,
            Some(("application/json-lines", body.into_bytes())),
        )
        .await
        .expect("request reaches the double");
    (status, env)
}

#[tokio::test]
async fn enqueue_many_runs_task_by_task_with_per_id_errors() {
    let (double, api, bearer) = setup().await;
    let from = create_queue(&api, &bearer, json!({"name": "source"})).await;
    let to = create_queue(&api, &bearer, json!({"name": "target"})).await;
    let a = create_task(&api, &bearer, "task-a").await;
    let b = create_task(&api, &bearer, "task-b").await;
    let done = create_task(&api, &bearer, "task-done").await;
    for t in [&a, &b] {
        double.enqueue(t, &from).expect("enqueue");
    }
    double
        .call("tasks.started", json!({"task": done}))
        .expect("started");
    double
        .call("tasks.completed", json!({"task": done}))
        .expect("completed");

    // queued tasks move (1.17+), a completed one and an unknown id fail alone, a duplicate id
    // fails on its second run (already in that queue), order kept
    let ids = json!([a, "nope", done, b, a]);
    let (status, env) = api
        .call(
            "/v2.23/tasks.enqueue_many",
            &bearer,
            json!({"ids": ids, "queue": to, "status_reason": "r", "status_message": "m"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let data = &env["data"];
    let succeeded: Vec<&str> = data["succeeded"]
        .as_array()
        .expect("succeeded")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(succeeded, [a.as_str(), b.as_str()]);
    let first = &data["succeeded"][0];
    assert_eq!(first["queued"], true, "{first}");
    assert_eq!(first["updated"], 1, "{first}");
    assert_eq!(first["fields"]["status_message"], "m", "{first}");
    assert_eq!(first["fields"]["execution.queue"], to, "{first}");
    let failed: Vec<(&str, Value)> = data["failed"]
        .as_array()
        .expect("failed")
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or_default(),
                f["error"]["codes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("nope", json!([400, 101])),
            (done.as_str(), json!([400, 110])),
            (a.as_str(), json!([400, 706])),
        ]
    );
    assert!(
        data["failed"][0]["error"]["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid task id")),
        "{data}"
    );
    assert!(
        double.queue_entries(&from).is_empty(),
        "moved out of `from`"
    );
    assert_eq!(double.queue_entries(&to), [a.clone(), b.clone()]);
    assert_eq!(get_task(&api, &bearer, &b).await["status_message"], "m");

    // ids missing or empty: the request model refuses it (400/12), nothing runs
    for body in [json!({"queue": to}), json!({"ids": [], "queue": to})] {
        let (status, env) = api.call("/v2.23/tasks.enqueue_many", &bearer, body).await;
        assert_error(status, &env, 400, 12);
    }
}

/// Before 1.17.0 the single enqueue refuses a queued task unless forced, and `enqueue_many`
/// never forces: every queued id fails with 400/110 and stays where it was.
#[tokio::test]
async fn enqueue_many_before_1_17_refuses_queued_tasks() {
    let (double, api, bearer) = setup().await;
    double.set_server_version("1.16.2").expect("known release");
    let from = create_queue(&api, &bearer, json!({"name": "source"})).await;
    let to = create_queue(&api, &bearer, json!({"name": "target"})).await;
    let a = create_task(&api, &bearer, "task-a").await;
    let fresh = create_task(&api, &bearer, "task-fresh").await;
    double.enqueue(&a, &from).expect("enqueue");
    let (status, env) = api
        .call(
            "/v2.23/tasks.enqueue_many",
            &bearer,
            json!({"ids": [a, fresh], "queue": to}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["failed"][0]["id"], a);
    assert_eq!(
        env["data"]["failed"][0]["error"]["codes"],
        json!([400, 110])
    );
    assert!(
        env["data"]["failed"][0]["error"]["msg"]
            .as_str()
            .is_some_and(|m| m.contains("already in requested status")),
        "{env}"
    );
    assert_eq!(env["data"]["succeeded"][0]["id"], fresh);
    assert_eq!(double.queue_entries(&from), vec![a.clone()]);
    assert_eq!(double.queue_entries(&to), vec![fresh.clone()]);
}

#[tokio::test]
async fn update_batch_reads_json_lines_and_fails_whole_on_unknown_tasks() {
    let (double, api, bearer) = setup().await;
    let a = create_task(&api, &bearer, "task-a").await;
    let b = create_task(&api, &bearer, "task-b").await;

    // one line per task; a later line for the same task wins; an item setting nothing counts 0
    let (status, env) = update_batch(
        &api,
        &bearer,
        &[
            json!({"task": a, "status_message": "first"}),
            json!({"task": b, "status_message": "for b", "status": "completed"}),
            json!({"task": a, "status_message": "second"}),
        ],
    )
    .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"], json!({"updated": 2}));
    let ta = get_task(&api, &bearer, &a).await;
    assert_eq!(ta["status_message"], "second");
    let tb = get_task(&api, &bearer, &b).await;
    assert_eq!(tb["status_message"], "for b");
    assert_eq!(tb["status"], "created", "status is not an update field");
    let (_, env) = update_batch(&api, &bearer, &[json!({"task": a, "status": "x"})]).await;
    assert_eq!(env["data"], json!({"updated": 0}));

    // an unknown task fails the whole batch before anything is written
    let (status, env) = update_batch(
        &api,
        &bearer,
        &[
            json!({"task": a, "status_message": "not written"}),
            json!({"task": "gone", "status_message": "x"}),
        ],
    )
    .await;
    assert_error(status, &env, 400, 101);
    assert!(
        env["meta"]["result_msg"]
            .as_str()
            .is_some_and(|m| m.contains("ids=(gone)")),
        "{env}"
    );
    assert_eq!(
        get_task(&api, &bearer, &a).await["status_message"],
        "second"
    );

    // a bad field type fails it too; an item without `task` is the server's KeyError (500)
    let (status, env) = update_batch(
        &api,
        &bearer,
        &[
            json!({"task": a, "status_message": "not written"}),
            json!({"task": b, "tags": "not a list"}),
        ],
    )
    .await;
    assert_error(status, &env, 400, 12);
    assert_eq!(
        get_task(&api, &bearer, &a).await["status_message"],
        "second"
    );
    let (status, _) = update_batch(&api, &bearer, &[json!({"status_message": "x"})]).await;
    assert_eq!(status, 500);

    // a line that is not an object is refused as the server's body parser does
    let (status, env, _) = api
        .raw(
            reqwest::Method::POST,
            "/v2.23/tasks.update_batch",
            &bearer,
            Some(("application/json-lines", b"[1]\n".to_vec())),
        )
        .await
        .expect("reaches");
    assert_error(status, &env, 400, 0);

    // no items: the server's `batched_data` is `[]`, never None, so its BatchContainsNoItems
    // check does not fire: nothing is updated
    let (status, env) = update_batch(&api, &bearer, &[]).await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"], json!({"updated": 0}));
    // a plain JSON body is one item
    let (status, env) = api
        .call(
            "/v2.23/tasks.update_batch",
            &bearer,
            json!({"task": b, "status_message": "plain"}),
        )
        .await;
    assert_eq!((status, env["data"].clone()), (200, json!({"updated": 1})));
    assert_eq!(double.task(&b).expect("b")["status_message"], "plain");
}

/// A dropped `enqueue_many` reply: the server moved the tasks, the client saw no reply.
#[tokio::test]
async fn a_dropped_enqueue_many_reply_still_moves_the_tasks() {
    let (double, api, bearer) = setup().await;
    let from = create_queue(&api, &bearer, json!({"name": "source"})).await;
    let to = create_queue(&api, &bearer, json!({"name": "target"})).await;
    let a = create_task(&api, &bearer, "task-a").await;
    double.enqueue(&a, &from).expect("enqueue");
    double.faults().drop_reply_next("tasks.enqueue_many", 1);
    let body = serde_json::to_vec(&json!({"ids": [a], "queue": to})).expect("body");
    let got = api
        .raw(
            reqwest::Method::POST,
            "/v2.23/tasks.enqueue_many",
            &bearer,
            Some(("application/json", body)),
        )
        .await;
    assert!(got.is_err(), "no reply: {got:?}");
    assert_eq!(
        double.queue_entries(&to),
        vec![a.clone()],
        "the server acted"
    );
    assert!(double.queue_entries(&from).is_empty());
}

/// 5 ms × 1 worker: calls queue behind each other (≈ 200 calls/s), whatever the endpoint.
#[tokio::test]
async fn capacity_serves_calls_one_worker_at_a_time() {
    let (double, api, bearer) = setup().await;
    let capacity = Capacity {
        service_time: Duration::from_millis(5),
        workers: 1,
    };
    double.set_capacity(Some(capacity));
    assert_eq!(double.capacity(), Some(capacity));
    assert_eq!(capacity.calls_per_sec(), 200.0);
    let started = Instant::now();
    let calls = (0..20).map(|_| api.call("/v2.23/debug.ping", &bearer, json!({})));
    let replies = futures::future::join_all(calls).await;
    assert!(replies.iter().all(|(s, _)| *s == 200));
    // 20 calls on one 5 ms worker cannot take less than 100 ms
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    double.set_capacity(None);
    assert_eq!(double.capacity(), None);
}
