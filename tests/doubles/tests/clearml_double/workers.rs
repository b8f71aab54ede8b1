//! Workers: register/status_report/get_all shape, TTL and last_seen, cluster reports.

use serde_json::json;

use super::common::{assert_error, create_task, get_task, setup};

#[tokio::test]
async fn workers_register_report_and_list() {
    let (double, api, bearer) = setup().await;
    let q = double.default_queue_id().expect("default queue");

    let (status, env) = api
        .call(
            "/workers.register",
            &bearer,
            json!({"worker": "w", "queues": [q, "bad1"]}),
        )
        .await;
    assert_error(status, &env, 400, 701);
    assert_eq!(env["meta"]["result_msg"], "Invalid queue id: ids=(bad1)");
    let (status, env) = api
        .call(
            "/workers.register",
            &bearer,
            json!({"worker": "w", "timeout": -1}),
        )
        .await;
    assert_error(status, &env, 400, 1002);

    let (status, _) = api
        .call(
            "/workers.register",
            &bearer,
            json!({"worker": "host:gpu0", "queues": [q], "timeout": 30}),
        )
        .await;
    assert_eq!(status, 200);

    // status_report of an unknown worker auto-registers it; the timestamp may be in ms.
    let t = create_task(&api, &bearer, "reported").await;
    api.call("/tasks.enqueue", &bearer, json!({"task": t}))
        .await;
    let (status, env) = api
        .call(
            "/workers.status_report",
            &bearer,
            json!({"worker": "host:1", "timestamp": 1_700_000_000_000_i64, "task": t, "queue": q, "queues": [q],
                   "machine_stats": {"cpu_usage": [1.0, 2.0], "memory_used": 1024}, "is_daemon": true}),
        )
        .await;
    assert_eq!(status, 200, "{env}");
    let task = get_task(&api, &bearer, &t).await;
    assert_eq!(task["last_worker"], "host:1");
    assert!(task["last_worker_report"].is_string());
    let (status, env) = api
        .call(
            "/workers.status_report",
            &bearer,
            json!({"worker": "host:2", "timestamp": 1, "task": "missing"}),
        )
        .await;
    assert_error(status, &env, 400, 101);

    let (status, env) = api.call("/workers.get_all", &bearer, json!({})).await;
    assert_eq!(status, 200);
    let workers = env["data"]["workers"].as_array().expect("workers").clone();
    let ids: Vec<&str> = workers.iter().filter_map(|w| w["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        3,
        "host:2 was saved despite the task error: {ids:?}"
    );
    let w = workers
        .iter()
        .find(|w| w["id"] == "host:1")
        .expect("host:1 listed");
    assert_eq!(
        w["key"],
        "worker_d1bd92a3b039400cbafc60a7a5b1e52b___tests___host:1"
    );
    assert_eq!(w["user"], json!({"id": "__tests__", "name": "__tests__"}));
    assert_eq!(w["register_timeout"], 600);
    assert_eq!(w["task"]["id"], t);
    assert_eq!(w["task"]["name"], "reported");
    assert_eq!(w["queue"]["id"], q);
    assert_eq!(w["queues"][0]["name"], "default");
    assert_eq!(w["queues"][0]["num_tasks"], 1);
    assert_eq!(w["queues"][0]["next_task"]["id"], t);
    assert!(w["last_report_time"].is_string());

    // TTL: host:gpu0 registered with a 30 s timeout disappears after 31 s.
    double.advance_clock(chrono::Duration::seconds(31));
    let (_, env) = api.call("/workers.get_all", &bearer, json!({})).await;
    let ids: Vec<String> = env["data"]["workers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(!ids.contains(&"host:gpu0".to_string()), "{ids:?}");
    assert!(ids.contains(&"host:1".to_string()));
    // last_seen filters by activity.
    let (_, env) = api
        .call("/workers.get_all", &bearer, json!({"last_seen": 10}))
        .await;
    assert_eq!(env["data"]["workers"], json!([]));

    let (status, _) = api
        .call("/workers.unregister", &bearer, json!({"worker": "host:1"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            "/workers.unregister",
            &bearer,
            json!({"worker": "never-seen"}),
        )
        .await;
    assert_eq!(status, 200);

    // cluster_report keeps the whole body, last one per (worker, key).
    for gpus in [4, 8] {
        let (status, env) = api
            .call(
                "/workers.cluster_report",
                &bearer,
                json!({"worker": "glue", "key": "onprem", "partial": false, "timestamp": 1_700_000_000_000_i64,
                       "timeout": 120, "resource_groups": ["onprem:a"],
                       "properties": {"max_gpus": gpus, "max_cpus": 16, "max_workers": 3}}),
            )
            .await;
        assert_eq!(status, 200, "{env}");
    }
    let reports = double.cluster_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].body["properties"]["max_gpus"], 8);
    assert_eq!(reports[0].body["resource_groups"], json!(["onprem:a"]));
    double.faults().disable_endpoint("workers.cluster_report");
    let (status, env) = api
        .call("/workers.cluster_report", &bearer, json!({"key": "x"}))
        .await;
    assert_error(status, &env, 404, 0);
}
