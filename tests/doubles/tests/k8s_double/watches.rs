//! Watches: kube-rs raw watches (resume, 410 Gone, selector transitions, bookmarks, streaming
//! lists), kube's runtime watcher with its default configuration (including recovery after a
//! cut and after compaction), and shutdown with open watches.

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::{watcher, watcher::Event},
};
use serde_json::json;

use super::common::{env, pod};

const STEP: Duration = Duration::from_secs(10);

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("cm")
}

fn name_of<K: kube::Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

#[tokio::test]
async fn raw_watch_resumes_and_gets_410_when_too_old() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let start = env.double.resource_version().to_string();
    cms.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .expect("create");
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .expect("patch");
    let mut events = cms
        .watch(&WatchParams::default().timeout(5), &start)
        .await
        .expect("watch")
        .boxed();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let ev = tokio::time::timeout(STEP, events.try_next())
            .await
            .expect("event in time")
            .expect("no stream error")
            .expect("stream open");
        match ev {
            WatchEvent::Added(c) => kinds.push(format!("ADDED {}", name_of(&c))),
            WatchEvent::Modified(c) => kinds.push(format!("MODIFIED {}", name_of(&c))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["ADDED a", "MODIFIED a"]);
    drop(events);

    env.double.compact_history();
    let mut events = cms
        .watch(&WatchParams::default(), &start)
        .await
        .expect("watch")
        .boxed();
    let ev = tokio::time::timeout(STEP, events.try_next())
        .await
        .expect("event in time")
        .expect("no stream error")
        .expect("an ERROR event");
    match ev {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with("too old resource version"));
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn selector_watch_reports_objects_leaving_as_deleted() {
    let env = env().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    cms.create(&PostParams::default(), &cm("a", json!({"team": "x"})))
        .await
        .expect("create");
    let rv = env.double.resource_version().to_string();
    let mut events = cms
        .watch(&WatchParams::default().labels("team=x"), &rv)
        .await
        .expect("watch")
        .boxed();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "y"}}})),
    )
    .await
    .expect("relabel");
    let ev = tokio::time::timeout(STEP, events.try_next())
        .await
        .expect("event")
        .expect("ok")
        .expect("open");
    assert!(
        matches!(ev, WatchEvent::Deleted(ref c) if name_of(c) == "a"),
        "{ev:?}"
    );
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}})),
    )
    .await
    .expect("relabel back");
    let ev = tokio::time::timeout(STEP, events.try_next())
        .await
        .expect("event")
        .expect("ok")
        .expect("open");
    assert!(
        matches!(ev, WatchEvent::Added(ref c) if name_of(c) == "a"),
        "{ev:?}"
    );
}

#[tokio::test]
async fn bookmarks_timeouts_and_streaming_lists() {
    let env = env().await;
    env.double.set_bookmark_interval(Duration::from_millis(100));
    let cms: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let rv = env.double.resource_version().to_string();
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("stream ends cleanly at the timeout");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::Bookmark(b) if b.metadata.resource_version == rv)),
        "{events:?}"
    );

    let mut stream = cms
        .watch(&WatchParams::streaming_lists().timeout(5), "")
        .await
        .expect("streaming watch")
        .boxed();
    let mut initial = Vec::new();
    loop {
        let ev = tokio::time::timeout(STEP, stream.try_next())
            .await
            .expect("event")
            .expect("ok")
            .expect("open");
        match ev {
            WatchEvent::Added(c) => initial.push(name_of(&c)),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["kube-root-ca.crt"]);
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin),
) -> Event<Pod> {
    tokio::time::timeout(STEP, stream.try_next())
        .await
        .expect("watcher event in time")
        .expect("watcher ok")
        .expect("watcher open")
}

fn describe(ev: &Event<Pod>) -> String {
    match ev {
        Event::Init => "Init".into(),
        Event::InitApply(p) => format!("InitApply {}", name_of(p)),
        Event::InitDone => "InitDone".into(),
        Event::Apply(p) => format!("Apply {}", name_of(p)),
        Event::Delete(p) => format!("Delete {}", name_of(p)),
    }
}

#[tokio::test]
async fn runtime_watcher_runs_unchanged_and_recovers() {
    let env = env().await;
    env.double.set_bookmark_interval(Duration::from_secs(600));
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    pods.create(&PostParams::default(), &pod("before", json!({})))
        .await
        .expect("create");
    let mut stream = watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next_event(&mut stream).await));
    }
    assert_eq!(seen, ["Init", "InitApply before", "InitDone"]);

    pods.create(&PostParams::default(), &pod("after", json!({})))
        .await
        .expect("create");
    assert_eq!(describe(&next_event(&mut stream).await), "Apply after");
    env.double
        .set_pod_running("default", "after")
        .expect("running");
    let ev = next_event(&mut stream).await;
    assert!(
        matches!(&ev, Event::Apply(p) if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")),
        "{}",
        describe(&ev)
    );
    pods.delete("before", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(describe(&next_event(&mut stream).await), "Delete before");

    // A cut watch is resumed from the last resourceVersion without a re-list.
    let lists_before = env.double.count_requests("list", "pods");
    env.double.cut_watches();
    pods.create(&PostParams::default(), &pod("during-cut", json!({})))
        .await
        .expect("create");
    assert_eq!(describe(&next_event(&mut stream).await), "Apply during-cut");
    assert_eq!(env.double.count_requests("list", "pods"), lists_before);
    assert!(env.double.count_requests("watch", "pods") >= 2);

    // After compaction a resume from the watcher's last pod resourceVersion (older than the
    // configmap written since) gets 410 and the watcher re-lists.
    env.double
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "moves-rv"}}),
        )
        .expect("create cm");
    env.double.compact_history();
    env.double.cut_watches();
    // kube's watcher surfaces the 410 as one error item, then re-lists.
    let item = tokio::time::timeout(STEP, stream.try_next())
        .await
        .expect("item in time");
    assert!(
        matches!(&item, Err(watcher::Error::WatchError(s)) if s.code == 410),
        "{item:?}"
    );
    let mut relisted = Vec::new();
    loop {
        let ev = describe(&next_event(&mut stream).await);
        let done = ev == "InitDone";
        relisted.push(ev);
        if done {
            break;
        }
    }
    assert_eq!(
        relisted,
        [
            "Init",
            "InitApply after",
            "InitApply during-cut",
            "InitDone"
        ]
    );
    assert_eq!(env.double.count_requests("list", "pods"), lists_before + 1);
}

#[tokio::test]
async fn runtime_watcher_with_streaming_lists() {
    let env = env().await;
    let pods: Api<Pod> = Api::default_namespaced(env.client.clone());
    pods.create(&PostParams::default(), &pod("existing", json!({})))
        .await
        .expect("create");
    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher(pods.clone(), config).boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next_event(&mut stream).await));
    }
    assert_eq!(seen, ["Init", "InitApply existing", "InitDone"]);
    assert_eq!(env.double.count_requests("list", "pods"), 0, "no list call");
    pods.create(&PostParams::default(), &pod("new", json!({})))
        .await
        .expect("create");
    assert_eq!(describe(&next_event(&mut stream).await), "Apply new");
}

#[tokio::test]
async fn shutdown_does_not_hang_on_open_watches() {
    let env = env().await;
    let url = env.double.url();
    let resp = reqwest::Client::new()
        .get(format!("{url}/api/v1/pods?watch=1"))
        .bearer_auth(env.double.token().expect("token"))
        .send()
        .await
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let reading = tokio::spawn(async move { resp.bytes().await.map(|b| b.len()) });
    tokio::time::timeout(Duration::from_secs(5), env.double.shutdown())
        .await
        .expect("shutdown completes with an open watch");
    let ended = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("watch body ends");
    assert!(ended.is_ok());
}
