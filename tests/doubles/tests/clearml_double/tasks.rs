//! Tasks: create/read/edit/update rules, enqueue and the status machine, dequeue/stop, the k8s glue sequence.

use serde_json::{Value, json};

use super::common::{assert_error, create_queue, create_task, get_task, is_hex32, setup};

#[tokio::test]
async fn task_create_validation_and_reads() {
    let (_double, api, bearer) = setup().await;
    let (status, env) = api
        .call(
            "/tasks.create",
            &bearer,
            json!({"name": "ab", "type": "training"}),
        )
        .await;
    assert_error(status, &env, 400, 800);
    let (status, env) = api
        .call(
            "/tasks.create",
            &bearer,
            json!({"name": "abc", "type": "nope"}),
        )
        .await;
    assert_error(status, &env, 400, 12);
    let (status, env) = api
        .call(
            "/tasks.create",
            &bearer,
            json!({"name": "abc", "type": "training", "project": "missing"}),
        )
        .await;
    assert_error(status, &env, 400, 16);
    let (status, env) = api
        .call("/tasks.get_by_id", &bearer, json!({"task": "missing"}))
        .await;
    assert_error(status, &env, 400, 101);
    assert_eq!(env["meta"]["result_msg"], "Invalid task id: ids=(missing)");

    let (_, env) = api
        .call("/projects.create", &bearer, json!({"name": "proj-a"}))
        .await;
    let project = env["data"]["id"].as_str().expect("project id").to_string();
    let (_, env) = api
        .call(
            "/projects.get_all",
            &bearer,
            json!({"name": "^proj\\-a$", "only_fields": ["id"], "search_hidden": true}),
        )
        .await;
    assert_eq!(env["data"]["projects"], json!([{"id": project}]));

    let (status, env) = api
        .call(
            "/tasks.create",
            &bearer,
            json!({
                "name": "my-task", "type": "training", "project": project,
                "system_tags": ["development"], "tags": ["z", "a"],
                "container": {"image": "python:3.11-slim"},
                "script": {"entry_point": " train.py ", "binary": "python"},
                "comment": "hello", "method": "get",
            }),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let id = env["data"]["id"].as_str().expect("id").to_string();
    assert!(is_hex32(&json!(id)));
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(t["status"], "created");
    assert_eq!(t["tags"], json!(["a", "z"]));
    assert_eq!(t["user"], "__tests__");
    assert_eq!(t["script"]["entry_point"], "train.py");
    assert!(
        t.get("status_message").is_none(),
        "unset fields omitted: {t}"
    );
    assert!(t.get("enqueue_status").is_none());
    assert!(t.get("method").is_none(), "unknown fields ignored");

    // get_all: id lookup, dotted only_fields, status filter, hidden rule.
    let hidden = create_task(&api, &bearer, "hidden-task").await;
    let (_, env) = api
        .call(
            "/tasks.update",
            &bearer,
            json!({"task": hidden, "system_tags": ["hidden"]}),
        )
        .await;
    assert_eq!(env["data"]["updated"], 1);
    let (_, env) = api
        .call(
            "/tasks.get_all",
            &bearer,
            json!({"id": [id], "only_fields": ["status", "container.image"]}),
        )
        .await;
    assert_eq!(
        env["data"]["tasks"],
        json!([{"id": id, "status": "created", "container": {"image": "python:3.11-slim"}}])
    );
    let (_, env) = api
        .call("/tasks.get_all", &bearer, json!({"only_fields": ["id"]}))
        .await;
    assert_eq!(
        env["data"]["tasks"],
        json!([{"id": id}]),
        "hidden task left out"
    );
    let (_, env) = api
        .call(
            "/tasks.get_all",
            &bearer,
            json!({"only_fields": ["id"], "search_hidden": true}),
        )
        .await;
    assert_eq!(env["data"]["tasks"].as_array().map(Vec::len), Some(2));
    let (_, env) = api
        .call(
            "/tasks.get_all",
            &bearer,
            json!({"status": ["queued"], "search_hidden": true}),
        )
        .await;
    assert_eq!(env["data"]["tasks"], json!([]));
    let (_, env) = api
        .call(
            "/tasks.get_all",
            &bearer,
            json!({"name": "^my", "system_tags": ["-hidden"]}),
        )
        .await;
    assert_eq!(env["data"]["tasks"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn task_edit_and_update_rules() {
    let (_double, api, bearer) = setup().await;
    let id = create_task(&api, &bearer, "edit-me").await;
    let (status, env) = api
        .call("/tasks.edit", &bearer, json!({"task": id, "script": {"entry_point": "a.py", "binary": "python"}, "container": {"image": "img:1", "arguments": "-e A=1"}}))
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["updated"], 1);
    assert!(env["data"]["fields"]["last_update"].is_string());
    // script is merged, container replaced.
    let (_, env) = api
        .call(
            "/tasks.edit",
            &bearer,
            json!({"task": id, "script": {"working_dir": "."}, "container": {"image": "img:2"}}),
        )
        .await;
    assert_eq!(
        env["data"]["fields"]["script"],
        json!({"entry_point": "a.py", "binary": "python", "working_dir": "."})
    );
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(t["container"], json!({"image": "img:2"}));

    // update: only the allowed fields; status is silently dropped.
    let (_, env) = api
        .call("/tasks.update", &bearer, json!({"task": id, "status": "completed", "status_message": "hi", "output__error": "boom"}))
        .await;
    assert_eq!(env["data"]["updated"], 1);
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(t["status"], "created");
    assert_eq!(t["status_message"], "hi");
    assert_eq!(t["output"]["error"], "boom");
    let (_, env) = api
        .call(
            "/tasks.update",
            &bearer,
            json!({"task": id, "status": "completed"}),
        )
        .await;
    assert_eq!(env["data"], json!({"updated": 0}));

    // edit needs `created` unless forced.
    let (status, _) = api
        .call("/tasks.enqueue", &bearer, json!({"task": id}))
        .await;
    assert_eq!(status, 200);
    let (status, env) = api
        .call("/tasks.edit", &bearer, json!({"task": id, "comment": "x"}))
        .await;
    assert_error(status, &env, 400, 110);
    assert_eq!(
        env["meta"]["result_msg"],
        "Invalid task status: expected=created, status=queued"
    );
    let (status, env) = api
        .call(
            "/tasks.edit",
            &bearer,
            json!({"task": id, "force": true, "container": {"image": "img:3"}}),
        )
        .await;
    assert_eq!(status, 200, "{env}");

    // edit_hyper_params: properties are editable in any status, other sections are not.
    let (status, env) = api
        .call("/tasks.edit_hyper_params", &bearer, json!({"task": id, "hyperparams": [{"section": "properties", "name": "k8s-queue", "value": "default"}]}))
        .await;
    assert_eq!(status, 200, "{env}");
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(
        t["hyperparams"]["properties"]["k8s-queue"]["value"],
        "default"
    );
    let (status, env) = api
        .call(
            "/tasks.edit_hyper_params",
            &bearer,
            json!({"task": id, "hyperparams": [{"section": "Args", "name": "lr", "value": "1"}]}),
        )
        .await;
    assert_error(status, &env, 400, 110);
}

#[tokio::test]
async fn enqueue_and_status_transitions() {
    let (double, api, bearer) = setup().await;
    let default_id = double.default_queue_id().expect("default queue");
    let id = {
        let (_, env) = api
            .call(
                "/tasks.create",
                &bearer,
                json!({"name": "lifecycle", "type": "training", "system_tags": ["development"]}),
            )
            .await;
        env["data"]["id"].as_str().expect("id").to_string()
    };

    // Illegal transition without force.
    let (status, env) = api
        .call("/tasks.completed", &bearer, json!({"task": id}))
        .await;
    assert_error(status, &env, 400, 110);
    assert_eq!(
        env["meta"]["result_msg"],
        "Invalid task status (Invalid status change): current_status=created, new_status=completed"
    );
    let (status, env) = api
        .call("/tasks.failed", &bearer, json!({"task": "missing"}))
        .await;
    assert_error(status, &env, 400, 101);
    let (status, env) = api
        .call("/tasks.started", &bearer, json!({"task": "missing"}))
        .await;
    assert_error(status, &env, 400, 10);

    // update_execution_queue=false needs an already queued task.
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": id, "update_execution_queue": false}),
        )
        .await;
    assert_error(status, &env, 400, 12);
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": id, "queue": default_id, "queue_name": "default"}),
        )
        .await;
    assert_error(status, &env, 400, 12);

    // Enqueue without a queue: the default queue.
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": id, "status_reason": "why", "verify_watched_queue": true}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let data = &env["data"];
    assert_eq!(data["queued"], 1);
    assert_eq!(data["updated"], 1);
    assert_eq!(data["queue_watched"], false);
    assert_eq!(data["fields"]["status"], "queued");
    assert_eq!(data["fields"]["status_reason"], "why");
    assert_eq!(data["fields"]["enqueue_status"], "created");
    assert_eq!(data["fields"]["execution.queue"], default_id);
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(t["system_tags"], json!([]), "development tag removed: {t}");
    assert_eq!(t["execution"]["queue"], default_id);
    assert!(t.get("enqueue_status").is_none(), "never returned");
    assert_eq!(
        double.task(&id).expect("stored")["enqueue_status"],
        "created"
    );
    assert_eq!(double.queue_entries(&default_id), vec![id.clone()]);

    // Re-enqueue into another queue (by name, auto-created) moves it and keeps enqueue_status.
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": id, "queue_name": "auto-made"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let other = double.queue_id("auto-made").expect("queue auto-created");
    assert_eq!(double.queue_entries(&default_id), Vec::<String>::new());
    assert_eq!(double.queue_entries(&other), vec![id.clone()]);
    assert_eq!(
        env["data"]["fields"]["enqueue_status"], "created",
        "kept across re-enqueues"
    );

    // Enqueueing again into the same queue: 706; the server reverts the status change
    // (status_reason "failed enqueueing") and forgets enqueue_status.
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": id, "queue": other}),
        )
        .await;
    assert_error(status, &env, 400, 706);
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(t["status"], "queued");
    assert_eq!(t["status_reason"], "failed enqueueing");
    assert!(
        double
            .task(&id)
            .expect("stored")
            .get("enqueue_status")
            .is_none()
    );
    assert_eq!(double.queue_entries(&other), vec![id.clone()]);

    // Unknown queue id: 701 after reverting the status.
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": id, "queue": "nope"}),
        )
        .await;
    assert_error(status, &env, 400, 701);

    // Pop, start, complete.
    let (_, env) = api
        .call("/queues.get_next_task", &bearer, json!({"queue": other}))
        .await;
    assert_eq!(env["data"]["entry"]["task"], id);
    let (status, env) = api
        .call(
            "/tasks.started",
            &bearer,
            json!({"task": id, "status_message": "pulled by agent", "force": true}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["started"], 1);
    assert_eq!(env["data"]["fields"]["status"], "in_progress");
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(t["status_message"], "pulled by agent");
    assert!(
        t["started"].is_string() && t["status_changed"].is_string(),
        "{t}"
    );
    let (status, env) = api
        .call(
            "/tasks.completed",
            &bearer,
            json!({"task": id, "status_reason": "worker execution done"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["meta"]["endpoint"]["actual_version"], "2.2");
    assert_eq!(env["data"]["published"], 0);
    let t = get_task(&api, &bearer, &id).await;
    assert_eq!(t["status"], "completed");
    assert!(t["completed"].is_string());

    // completed → queued is illegal, force skips the table.
    let (status, env) = api
        .call("/tasks.enqueue", &bearer, json!({"task": id}))
        .await;
    assert_error(status, &env, 400, 110);
    let (status, _) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": id, "force": true}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn dequeue_and_stop_semantics() {
    let (double, api, bearer) = setup().await;
    let q = double.default_queue_id().expect("default queue");

    // dequeue of a queued task: back to its pre-enqueue status; execution.queue is kept.
    let a = create_task(&api, &bearer, "deq-a").await;
    api.call("/tasks.enqueue", &bearer, json!({"task": a}))
        .await;
    let (status, env) = api
        .call("/tasks.dequeue", &bearer, json!({"task": a}))
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["dequeued"], 1);
    assert_eq!(env["data"]["updated"], 1);
    assert_eq!(env["data"]["fields"]["status"], "created");
    assert_eq!(env["data"]["fields"]["enqueue_status"], Value::Null);
    let t = get_task(&api, &bearer, &a).await;
    assert_eq!(
        t["execution"]["queue"], q,
        "dequeue does not clear execution.queue"
    );
    assert!(double.queue_entries(&q).is_empty());
    // dequeue of an in-progress task also reverts it; of a created task does nothing.
    let (_, env) = api
        .call("/tasks.dequeue", &bearer, json!({"task": a}))
        .await;
    assert_eq!(env["data"], json!({"dequeued": 1, "updated": 0}));
    api.call("/tasks.started", &bearer, json!({"task": a}))
        .await;
    let (_, env) = api
        .call("/tasks.dequeue", &bearer, json!({"task": a}))
        .await;
    assert_eq!(env["data"]["fields"]["status"], "created");
    let (_, env) = api
        .call("/tasks.dequeue", &bearer, json!({"task": "gone"}))
        .await;
    assert_eq!(env["data"], json!({"dequeued": 1, "updated": 0}));
    let (status, env) = api
        .call(
            "/tasks.dequeue",
            &bearer,
            json!({"task": a, "new_status": "bogus"}),
        )
        .await;
    assert_error(status, &env, 400, 12);

    // stop of a queued task: removed from the queue and stopped "by <user>".
    let b = create_task(&api, &bearer, "stop-b").await;
    api.call("/tasks.enqueue", &bearer, json!({"task": b}))
        .await;
    let (status, env) = api.call("/tasks.stop", &bearer, json!({"task": b})).await;
    assert_eq!(status, 200, "{env}");
    let t = get_task(&api, &bearer, &b).await;
    assert_eq!(t["status"], "stopped");
    assert_eq!(t["status_message"], "Stopped by __tests__");
    assert!(double.queue_entries(&q).is_empty());

    // stop of a task a live worker runs: only "stopping"; the worker then reports stopped.
    let c = create_task(&api, &bearer, "stop-c").await;
    api.call("/tasks.started", &bearer, json!({"task": c}))
        .await;
    let (status, _) = api
        .call(
            "/workers.status_report",
            &bearer,
            json!({"worker": "w1", "timestamp": 1_700_000_000_000_i64, "task": c}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, env) = api.call("/tasks.stop", &bearer, json!({"task": c})).await;
    assert_eq!(env["data"]["fields"]["status"], "in_progress");
    assert_eq!(env["data"]["fields"]["status_message"], "stopping");
    let (status, env) = api
        .call(
            "/tasks.stopped",
            &bearer,
            json!({"task": c, "status_reason": "task was stopped by tasks.stop"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(get_task(&api, &bearer, &c).await["status"], "stopped");

    // Without a recent worker update (> 600 s), stop is immediate.
    let d = create_task(&api, &bearer, "stop-d").await;
    api.call("/tasks.started", &bearer, json!({"task": d}))
        .await;
    api.call(
        "/workers.status_report",
        &bearer,
        json!({"worker": "w1", "timestamp": 1, "task": d}),
    )
    .await;
    double.advance_clock(chrono::Duration::seconds(601));
    let (_, env) = api.call("/tasks.stop", &bearer, json!({"task": d})).await;
    assert_eq!(env["data"]["fields"]["status"], "stopped");

    // A created task cannot be stopped without force.
    let e = create_task(&api, &bearer, "stop-e").await;
    let (status, env) = api.call("/tasks.stop", &bearer, json!({"task": e})).await;
    assert_error(status, &env, 400, 110);
    let (status, _) = api
        .call("/tasks.stop", &bearer, json!({"task": e, "force": true}))
        .await;
    assert_eq!(status, 200);

    // A stopped task popped from a queue comes back as queued (the server's race fix).
    let f = create_task(&api, &bearer, "race-f").await;
    api.call("/tasks.stop", &bearer, json!({"task": f, "force": true}))
        .await;
    api.call("/queues.add_task", &bearer, json!({"queue": q, "task": f}))
        .await;
    let (_, env) = api
        .call("/queues.get_next_task", &bearer, json!({"queue": q}))
        .await;
    assert_eq!(env["data"]["entry"]["task"], f);
    assert_eq!(get_task(&api, &bearer, &f).await["status"], "queued");
}

#[tokio::test]
async fn k8s_glue_launch_sequence() {
    let (double, api, bearer) = setup().await;
    let user_queue = double.default_queue_id().expect("default queue");
    let pending = create_queue(
        &api,
        &bearer,
        json!({"name": "k8s_scheduler", "system_tags": ["k8s-glue"]}),
    )
    .await;
    let t = create_task(&api, &bearer, "glue-task").await;
    api.call(
        "/tasks.enqueue",
        &bearer,
        json!({"task": t, "queue": user_queue}),
    )
    .await;

    let (status, _) = api
        .call(
            "/workers.register",
            &bearer,
            json!({"worker": "glue:0", "queues": [user_queue]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, env) = api
        .call(
            "/v2.14/queues.get_next_task",
            &bearer,
            json!({"queue": user_queue}),
        )
        .await;
    assert_eq!(env["data"]["entry"]["task"], t);
    let batch = format!(
        "{}\n",
        json!({"type": "log", "level": "INFO", "task": t, "worker": "glue:0", "msg": "task pulled", "timestamp": 1_700_000_000_000_i64})
    );
    let (status, env, _) = api
        .raw(
            reqwest::Method::POST,
            "/events.add_batch",
            &bearer,
            Some(("application/json-lines", batch.into_bytes())),
        )
        .await
        .expect("events");
    assert_eq!(status, 200, "{env}");
    assert_eq!(
        env["data"],
        json!({"added": 1, "errors": 0, "errors_info": {}})
    );

    // Open-source server path: stop (force), defensive remove_task, enqueue into the pending queue.
    let (status, env) = api
        .call(
            "/tasks.stop",
            &bearer,
            json!({"task": t, "force": true, "status_reason": "moving to k8s pending queue"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["fields"]["status"], "stopped");
    let (status, env) = api
        .call(
            "/queues.remove_task",
            &bearer,
            json!({"task": t, "queue": pending}),
        )
        .await;
    assert_error(status, &env, 400, 703);
    let (status, env) = api
        .call("/tasks.enqueue", &bearer, json!({"task": t, "queue": pending, "status_reason": "k8s pending scheduler", "update_execution_queue": true}))
        .await;
    assert_eq!(status, 200, "{env}");
    let task = get_task(&api, &bearer, &t).await;
    assert_eq!(task["status"], "queued");
    assert_eq!(task["status_reason"], "k8s pending scheduler");
    assert_eq!(task["execution"]["queue"], pending);
    assert_eq!(double.queue_entries(&pending), vec![t.clone()]);

    // The enterprise variant (update_execution_queue=false) is accepted for a queued task.
    let (status, env) = api
        .call(
            "/tasks.enqueue",
            &bearer,
            json!({"task": t, "queue": user_queue, "update_execution_queue": false}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(
        get_task(&api, &bearer, &t).await["execution"]["queue"],
        pending
    );
    assert!(
        double.queue_entries(&pending).is_empty(),
        "moved out of other queues"
    );
    api.call(
        "/queues.remove_task",
        &bearer,
        json!({"task": t, "queue": user_queue}),
    )
    .await;
    api.call(
        "/tasks.enqueue",
        &bearer,
        json!({"task": t, "queue": pending, "status_reason": "k8s pending scheduler"}),
    )
    .await;

    // Glue success path, then the in-pod agent's dequeue + started.
    let (status, _) = api
        .call(
            "/tasks.get_all",
            &bearer,
            json!({"id": [t], "only_fields": ["container"], "search_hidden": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, env) = api
        .call("/tasks.edit_hyper_params", &bearer, json!({"task": t, "hyperparams": [{"section": "properties", "name": "k8s-queue", "value": "default"}]}))
        .await;
    assert_eq!(status, 200, "{env}");
    let (status, env) = api
        .call(
            "/tasks.dequeue",
            &bearer,
            json!({"task": t, "new_status": "in_progress"}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    assert_eq!(env["data"]["updated"], 1);
    assert!(double.queue_entries(&pending).is_empty());
    let (status, _) = api
        .call(
            "/tasks.started",
            &bearer,
            json!({"task": t, "force": true, "status_reason": "starting execution soon"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(get_task(&api, &bearer, &t).await["status"], "in_progress");
    assert_eq!(double.events().len(), 1);
}
