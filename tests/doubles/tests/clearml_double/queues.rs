//! Queues: CRUD and error codes, hidden queues, list filters, FIFO entries, atomic concurrent pops.

use serde_json::{Value, json};

use super::common::{Auth, assert_error, create_queue, create_task, get_task, is_hex32, setup};

#[tokio::test]
async fn queue_crud_and_errors() {
    let (double, api, bearer) = setup().await;
    let default_id = double
        .default_queue_id()
        .expect("fresh double has a default queue");

    let (status, env) = api.call("/queues.get_default", &bearer, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(env["data"], json!({"id": default_id, "name": "default"}));

    let (status, env) = api
        .call("/queues.create", &bearer, json!({"name": "default"}))
        .await;
    assert_error(status, &env, 400, 801);
    let (status, env) = api
        .call("/queues.create", &bearer, json!({"name": " ab "}))
        .await;
    assert_error(status, &env, 400, 800);
    let (status, env) = api
        .call("/queues.create", &bearer, json!({"tags": ["x"]}))
        .await;
    assert_error(status, &env, 400, 12);

    let gpu = create_queue(
        &api,
        &bearer,
        json!({"name": " gpu-queue ", "tags": ["b", "a"]}),
    )
    .await;
    assert!(is_hex32(&json!(gpu)));
    let (status, env) = api
        .call("/queues.get_by_id", &bearer, json!({"queue": gpu}))
        .await;
    assert_eq!(status, 200);
    let q = &env["data"]["queue"];
    assert_eq!(q["name"], "gpu-queue");
    assert_eq!(q["tags"], json!(["a", "b"]));
    assert_eq!(q["entries"], json!([]));
    assert!(
        q["created"].as_str().is_some_and(|t| t.ends_with("+00:00")),
        "{q}"
    );
    assert!(
        q.get("display_name").is_none(),
        "unset fields are omitted: {q}"
    );

    // A name is not an id (the SDK relies on this failing).
    let (status, env) = api
        .call("/queues.get_by_id", &bearer, json!({"queue": "default"}))
        .await;
    assert_error(status, &env, 400, 701);
    assert!(
        env["meta"]["result_msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid queue id: id=default"))
    );

    // Hidden queues (system tag k8s-glue) only show with search_hidden, id or name.
    let hidden = create_queue(
        &api,
        &bearer,
        json!({"name": "k8s_scheduler", "system_tags": ["k8s-glue"]}),
    )
    .await;
    let names = |env: &Value| -> Vec<String> {
        env["data"]["queues"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|q| q["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, env) = api.call("/queues.get_all", &bearer, json!({})).await;
    assert_eq!(names(&env), vec!["default", "gpu-queue"]);
    let (_, env) = api
        .call("/queues.get_all", &bearer, json!({"search_hidden": true}))
        .await;
    assert_eq!(names(&env), vec!["default", "gpu-queue", "k8s_scheduler"]);
    let (_, env) = api
        .call("/queues.get_all", &bearer, json!({"id": [hidden]}))
        .await;
    assert_eq!(names(&env), vec!["k8s_scheduler"]);
    // The name filter is an unanchored regex.
    let (_, env) = api
        .call("/queues.get_all", &bearer, json!({"name": "sched"}))
        .await;
    assert_eq!(names(&env), vec!["k8s_scheduler"]);
    // List filters with exclusion.
    let (_, env) = api
        .call(
            "/queues.get_all",
            &bearer,
            json!({"system_tags": ["-default"], "search_hidden": true}),
        )
        .await;
    assert_eq!(names(&env), vec!["gpu-queue", "k8s_scheduler"]);
    let (_, env) = api
        .call("/queues.get_all", &bearer, json!({"tags": ["a"]}))
        .await;
    assert_eq!(names(&env), vec!["gpu-queue"]);

    // update and delete.
    let (status, env) = api
        .call(
            "/queues.update",
            &bearer,
            json!({"queue": gpu, "name": "gpu-2", "display_name": "GPU"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["updated"], 1);
    let task = create_task(&api, &bearer, "queued-task").await;
    let (status, _) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": task, "queue": gpu}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, env) = api
        .call("/queues.delete", &bearer, json!({"queue": gpu}))
        .await;
    assert_error(status, &env, 400, 702);
    let (status, env) = api
        .call(
            "/queues.delete",
            &bearer,
            json!({"queue": gpu, "force": true}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"], json!({"deleted": 1}));
    let t = get_task(&api, &bearer, &task).await;
    assert_eq!(
        t["status"], "created",
        "deleting the queue reverts the task: {t}"
    );
    assert!(t["execution"].get("queue").is_none(), "{t}");
    assert_eq!(t["status_reason"], format!("Queue {gpu} was deleted"));
    let (status, env) = api
        .call("/queues.get_by_id", &bearer, json!({"queue": gpu}))
        .await;
    assert_error(status, &env, 400, 701);
}

#[tokio::test]
async fn queue_entries_are_fifo_and_atomic() {
    let (double, api, bearer) = setup().await;
    let q = create_queue(&api, &bearer, json!({"name": "fifo"})).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = create_task(&api, &bearer, &format!("task-{i}")).await;
        let (status, env) = api
            .call("/queues.add_task", &bearer, json!({"queue": q, "task": id}))
            .await;
        assert_eq!(status, 200, "{env}");
        assert_eq!(env["data"], json!({"added": 1}));
        ids.push(id);
    }
    // add_task sets execution.queue but does not touch the status.
    let t = get_task(&api, &bearer, &ids[0]).await;
    assert_eq!(t["execution"]["queue"], q);
    assert_eq!(t["status"], "created");

    let (status, env) = api
        .call(
            "/queues.add_task",
            &bearer,
            json!({"queue": q, "task": ids[0]}),
        )
        .await;
    assert_error(status, &env, 400, 706);
    let (status, env) = api
        .call(
            "/queues.add_task",
            &bearer,
            json!({"queue": "nope", "task": ids[0]}),
        )
        .await;
    assert_error(status, &env, 400, 701);

    let (_, env) = api
        .call("/queues.get_num_entries", &bearer, json!({"queue": q}))
        .await;
    assert_eq!(env["data"], json!({"num": 3}));
    let (_, env) = api
        .call("/queues.peek_task", &bearer, json!({"queue": q}))
        .await;
    assert_eq!(env["data"], json!({"task": ids[0]}));
    let (_, env) = api
        .call(
            "/queues.move_task_to_front",
            &bearer,
            json!({"queue": q, "task": ids[2]}),
        )
        .await;
    assert_eq!(env["data"], json!({"position": 0}));
    assert_eq!(
        double.queue_entries(&q),
        vec![ids[2].clone(), ids[0].clone(), ids[1].clone()]
    );

    // remove_task: 703 when absent (and for an unknown queue).
    let (status, env) = api
        .call(
            "/queues.remove_task",
            &bearer,
            json!({"queue": q, "task": ids[1]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(env["data"], json!({"removed": 1}));
    let (status, env) = api
        .call(
            "/queues.remove_task",
            &bearer,
            json!({"queue": q, "task": ids[1]}),
        )
        .await;
    assert_error(status, &env, 400, 703);
    let (status, env) = api
        .call(
            "/queues.remove_task",
            &bearer,
            json!({"queue": "nope", "task": ids[1]}),
        )
        .await;
    assert_error(status, &env, 400, 703);

    // get_next_task pops in order, with `task_info` on request, then `{}`.
    let (status, env) = api
        .call(
            "/v2.14/queues.get_next_task",
            &bearer,
            json!({"queue": q, "get_task_info": true}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["meta"]["endpoint"]["actual_version"], "1.0");
    assert_eq!(env["data"]["entry"]["task"], ids[2]);
    assert!(
        env["data"]["entry"]["added"]
            .as_str()
            .is_some_and(|t| t.ends_with("+00:00"))
    );
    assert_eq!(
        env["data"]["task_info"],
        json!({"company": "d1bd92a3b039400cbafc60a7a5b1e52b", "user": "__tests__"})
    );
    // With `task`, only the head is popped.
    let (_, env) = api
        .call(
            "/queues.get_next_task",
            &bearer,
            json!({"queue": q, "task": ids[2]}),
        )
        .await;
    assert_eq!(env["data"], json!({}));
    let (_, env) = api
        .call(
            "/queues.get_next_task",
            &bearer,
            json!({"queue": q, "task": ids[0]}),
        )
        .await;
    assert_eq!(env["data"]["entry"]["task"], ids[0]);
    assert!(env["data"].get("task_info").is_none());
    let (status, env) = api
        .call("/queues.get_next_task", &bearer, json!({"queue": q}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(env["data"], json!({}));
    let (status, env) = api
        .call("/queues.get_next_task", &bearer, json!({"queue": "nope"}))
        .await;
    assert_error(status, &env, 400, 701);

    // Concurrent pollers never get the same entry.
    let q2 = create_queue(&api, &bearer, json!({"name": "race"})).await;
    let total = 300;
    for i in 0..total {
        let id = double
            .create_task(&format!("race-{i}"), json!({}))
            .expect("seed task");
        double.enqueue(&id, &q2).expect("seed enqueue");
    }
    let mut handles = Vec::new();
    for _ in 0..8 {
        let http = api.http.clone();
        let url = format!("{}/queues.get_next_task", api.base);
        let auth = bearer.clone();
        let queue = q2.clone();
        handles.push(tokio::spawn(async move {
            let Auth::Bearer(token) = auth else {
                return Vec::new();
            };
            let mut popped = Vec::new();
            loop {
                let env: Value = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"queue": queue}))
                    .send()
                    .await
                    .expect("poll")
                    .json()
                    .await
                    .expect("json");
                match env["data"]["entry"]["task"].as_str() {
                    Some(t) => popped.push(t.to_string()),
                    None => return popped,
                }
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("poller"));
    }
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), total);
    assert_eq!(unique.len(), total);
    assert_eq!(double.calls("queues.get_next_task"), 5 + total + 8);
}
