//! Fault injection seen by a real client, and in-process seeding through the same handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clearml_doubles::clearml::{ApiError, ClearmlDouble, RawReply};
use serde_json::json;

use super::common::{Auth, assert_error, setup};

#[tokio::test]
async fn injected_faults_are_seen_by_clients() {
    let (double, api, bearer) = setup().await;
    let q = double.default_queue_id().expect("default queue");
    let faults = double.faults();

    faults.fail_next("queues.get_next_task", 2);
    for _ in 0..2 {
        let (status, env) = api
            .call("/queues.get_next_task", &bearer, json!({"queue": q}))
            .await;
        assert_error(status, &env, 500, 0);
    }
    let (status, _) = api
        .call("/queues.get_next_task", &bearer, json!({"queue": q}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        double
            .requests()
            .calls_with_code("queues.get_next_task", 500),
        2
    );
    assert_eq!(double.calls("queues.get_next_task"), 3);

    faults.fail_next_with("*", 1, ApiError::raw(503, 0, "maintenance"));
    let (status, env) = api.call("/server.info", &bearer, json!({})).await;
    assert_error(status, &env, 503, 0);

    // A dropped connection is a transport error for the client, not an HTTP reply.
    faults.drop_next("tasks.get_all", 1);
    let err = api
        .http
        .post(format!("{}/tasks.get_all", api.base))
        .json(&json!({}))
        .send()
        .await
        .expect_err("the connection is closed without a reply");
    assert!(err.status().is_none(), "{err:?}");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let (status, _) = api.call("/tasks.get_all", &bearer, json!({})).await;
    assert_eq!(status, 200, "the next call is served");
    let dropped = double
        .requests()
        .all()
        .into_iter()
        .filter(|r| r.endpoint == "tasks.get_all" && r.result_code == 0)
        .count();
    assert_eq!(dropped, 1);

    // Delay.
    faults.set_delay("debug.ping", Duration::from_millis(300));
    let started = Instant::now();
    let (status, _) = api.call("/debug.ping", &Auth::None, json!({})).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    faults.clear();
    let started = Instant::now();
    api.call("/debug.ping", &Auth::None, json!({})).await;
    assert!(started.elapsed() < Duration::from_millis(300));

    // Revoked tokens, then a re-login.
    faults.revoke_tokens();
    let (status, env) = api.call("/server.info", &bearer, json!({})).await;
    assert_error(status, &env, 401, 30);
    let (key, secret) = double.credentials();
    let again = Auth::Bearer(api.login(&key, &secret).await);
    let (status, _) = api.call("/server.info", &again, json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn in_process_seeding_uses_the_same_rules() {
    let double = ClearmlDouble::start().await.expect("double starts");
    let q = double.create_queue("bulk").expect("queue");
    let err = double.create_queue("bulk").expect_err("duplicate");
    assert_eq!((err.code, err.subcode), (400, 801));
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..2000 {
        let id = double
            .create_task(
                &format!("bulk-{i}"),
                json!({"container": {"image": "busybox"}}),
            )
            .expect("task");
        double.enqueue(&id, &q).expect("enqueue");
        ids.push(id);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "seeding took {:?}",
        started.elapsed()
    );
    assert_eq!(double.queue_entries(&q), ids);
    let res = double
        .call(
            "tasks.get_all",
            json!({"id": [ids[5]], "only_fields": ["status"]}),
        )
        .expect("get_all");
    assert_eq!(res["tasks"], json!([{"id": ids[5], "status": "queued"}]));
    let res = double
        .call(
            "tasks.get_all",
            json!({"status": ["queued"], "only_fields": ["id"]}),
        )
        .expect("get_all");
    assert_eq!(
        res["tasks"].as_array().map(Vec::len),
        Some(500),
        "unpaged results stop at 500"
    );
    let res = double
        .call(
            "tasks.get_all",
            json!({"status": ["queued"], "only_fields": ["id"], "page": 3, "page_size": 500}),
        )
        .expect("get_all");
    assert_eq!(res["tasks"].as_array().map(Vec::len), Some(500));
    let err = double
        .call("tasks.completed", json!({"task": ids[0]}))
        .expect_err("illegal");
    assert_eq!((err.code, err.subcode), (400, 110));
    assert_eq!(
        double.calls("tasks.enqueue"),
        0,
        "in-process calls are not logged"
    );
}

#[tokio::test]
async fn raw_replies_and_rewritten_data() {
    let (double, api, bearer) = setup().await;
    let faults = double.faults();
    let task = double.create_task("rewritten", json!({})).expect("task");

    // a proxy's HTML page, then the next call is served normally
    faults.raw_reply_next("server.info", 1, RawReply::html(502));
    let resp = api
        .http
        .post(format!("{}/server.info", api.base))
        .bearer_auth(match &bearer {
            Auth::Bearer(token) => token.as_str(),
            _ => "",
        })
        .json(&json!({}))
        .send()
        .await
        .expect("a reply");
    assert_eq!(resp.status().as_u16(), 502);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/html")
    );
    assert!(resp.text().await.expect("body").contains("<h1>502"));
    let (status, _) = api.call("/server.info", &bearer, json!({})).await;
    assert_eq!(status, 200);

    // a huge body of exactly the size asked for, still a valid envelope
    faults.raw_reply_next("*", 1, RawReply::huge(3 << 20));
    let resp = api
        .http
        .post(format!("{}/debug.ping", api.base))
        .json(&json!({}))
        .send()
        .await
        .expect("a reply");
    let body = resp.bytes().await.expect("body");
    assert_eq!(body.len(), 3 << 20);
    let env: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(env["meta"]["result_code"], 200);

    // rewritten data: the handler ran (and its effects stay), the reply is changed
    faults.rewrite_replies(
        "tasks.get_all",
        Some(Arc::new(|data: &mut serde_json::Value| {
            if let Some(t) = data.pointer_mut("/tasks/0") {
                t["container"] = json!("not an object");
            }
        })),
    );
    let (status, env) = api
        .call("/tasks.get_all", &bearer, json!({"id": [task]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(env["data"]["tasks"][0]["container"], "not an object");
    assert_eq!(env["data"]["tasks"][0]["id"], task.as_str());
    faults.rewrite_replies("tasks.get_all", None);
    let (_, env) = api
        .call("/tasks.get_all", &bearer, json!({"id": [task]}))
        .await;
    assert_ne!(env["data"]["tasks"][0]["container"], "not an object");
}
