//! Watch semantics through kube-rs: replay from a resourceVersion, filtered transitions,
//! bookmarks, timeouts, `410 Expired`, and kube-runtime's watcher riding out dropped
//! watches and expired versions.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube_sim::ClusterConfig;
use serde_json::json;

use crate::common::{client, pod, start, start_with, within};

fn kind_and_name(e: &WatchEvent<Pod>) -> (String, String) {
    match e {
        WatchEvent::Added(p) => ("ADDED".into(), p.metadata.name.clone().unwrap()),
        WatchEvent::Modified(p) => ("MODIFIED".into(), p.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(p) => ("DELETED".into(), p.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(s) => ("ERROR".into(), format!("{} {}", s.code, s.reason)),
    }
}

#[tokio::test]
async fn watch_replays_from_resource_version_and_filters() {
    let c = start("watch").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let first = pods.create(&PostParams::default(), &pod("a")).await.unwrap();
    let from = first.metadata.resource_version.unwrap();
    pods.create(&PostParams::default(), &pod("b")).await.unwrap();
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    pods.patch("a", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    let last = pods
        .delete("b", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();

    let all: Vec<(String, String)> = within(
        "four events from the replay",
        pods.watch(&WatchParams::default().timeout(2), &from)
            .await
            .unwrap()
            .take(4)
            .map(|e| kind_and_name(&e.unwrap()))
            .collect(),
    )
    .await;
    // A pod delete is graceful even at grace period 0: MODIFIED (deletionTimestamp set),
    // then DELETED, as kube-apiserver's registry does it.
    let want: Vec<(String, String)> = [("ADDED", "b"), ("MODIFIED", "a"), ("MODIFIED", "b"), ("DELETED", "b")]
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(all, want);

    // A label-filtered watch sees `a` leave the selection as DELETED.
    let web: Vec<(String, String)> = within(
        "filtered replay",
        pods.watch(&WatchParams::default().labels("app=web").timeout(1), &from)
            .await
            .unwrap()
            .map(|e| kind_and_name(&e.unwrap()))
            .collect(),
    )
    .await;
    let want: Vec<(String, String)> = [("ADDED", "b"), ("DELETED", "a"), ("MODIFIED", "b"), ("DELETED", "b")]
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(web, want);

    // DELETED carries the last stored object at the deletion's resourceVersion.
    let got = pods.get_opt("b").await.unwrap();
    assert!(got.is_none());
    assert!(last.metadata.resource_version.is_some());
}

#[tokio::test]
async fn bookmarks_and_timeout() {
    let mut cfg = ClusterConfig::new("bookmarks");
    cfg.bookmark_interval = Duration::from_millis(200);
    let c = start_with(cfg).await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let p = pods.create(&PostParams::default(), &pod("a")).await.unwrap();
    let rv = p.metadata.resource_version.unwrap();
    let started = std::time::Instant::now();
    let events: Vec<(String, String)> = within(
        "a watch with timeoutSeconds=1 to end",
        pods.watch(&WatchParams::default().timeout(1), &rv)
            .await
            .unwrap()
            .map(|e| kind_and_name(&e.unwrap()))
            .collect(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the server ends the watch at timeoutSeconds"
    );
    assert!(
        !events.is_empty() && events.iter().all(|(k, v)| k == "BOOKMARK" && *v == rv),
        "{events:?}"
    );
}

#[tokio::test]
async fn too_old_resource_version_is_410_expired() {
    let mut cfg = ClusterConfig::new("expired");
    cfg.history = 5;
    let c = start_with(cfg).await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let first = pods.create(&PostParams::default(), &pod("p0")).await.unwrap();
    for i in 1..10 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
    }
    let events: Vec<WatchEvent<Pod>> = within(
        "the expired watch",
        pods.watch(
            &WatchParams::default().timeout(5),
            first.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect(),
    )
    .await;
    match events.as_slice() {
        [WatchEvent::Error(s)] => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with("too old resource version: "), "{}", s.message);
        }
        other => panic!("expected one 410 ERROR event, got {other:?}"),
    }

    // Forced by fault injection, whatever the version.
    let now = pods.get("p9").await.unwrap().metadata.resource_version.unwrap();
    c.faults().expire_next_watch();
    let first_event = within("forced 410", async {
        pods.watch(&WatchParams::default().timeout(5), &now)
            .await
            .unwrap()
            .boxed()
            .next()
            .await
    })
    .await;
    assert!(matches!(first_event, Some(Ok(WatchEvent::Error(s))) if s.code == 410));
}

#[tokio::test]
async fn runtime_watcher_survives_dropped_watches_and_expiry() {
    let c = start("watcher").await;
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("before")).await.unwrap();
    let mut stream = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let first = within("initial list", stream.try_next()).await.unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("before"));

    c.faults().drop_watches();
    c.faults().expire_next_watch();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pods.create(&PostParams::default(), &pod("after")).await.unwrap();
    // The watcher reports the 410 (as it would from a real server), then relists.
    let mut saw_expired = false;
    within("the watcher to see the pod created after its watch was cut", async {
        loop {
            match stream.next().await.expect("stream continues") {
                Ok(p) if p.metadata.name.as_deref() == Some("after") => break,
                Ok(_) => {}
                Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_expired = true,
                Err(e) => panic!("unexpected watcher error {e}"),
            }
        }
    })
    .await;
    assert!(saw_expired, "the forced 410 reached the watcher");
}

#[tokio::test]
async fn watch_list_initial_events_end_with_bookmark() {
    let c = start("watchlist").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    pods.create(&PostParams::default(), &pod("x")).await.unwrap();
    let wp = WatchParams::default().initial_events().timeout(1);
    let events: Vec<(String, String)> = within(
        "watch-list stream",
        pods.watch(&wp, "")
            .await
            .unwrap()
            .map(|e| kind_and_name(&e.unwrap()))
            .collect(),
    )
    .await;
    assert_eq!(events.first(), Some(&("ADDED".to_string(), "x".to_string())));
    assert_eq!(events.get(1).map(|e| e.0.as_str()), Some("BOOKMARK"));
}

#[tokio::test]
async fn leaving_a_filtered_watch_sends_the_previous_object() {
    let c = start("watch-prev").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let a = pods.create(&PostParams::default(), &pod("a")).await.unwrap();
    let from = a.metadata.resource_version.unwrap();
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    let moved = pods
        .patch("a", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();

    // A finalizer-held pod whose last finalizer is removed: deleted by that update, which is
    // never stored — the PATCH answers it at the old version, DELETED carries the last stored
    // object (finalizer still in it) at the deletion's version.
    let mut h = pod("h");
    h.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    pods.create(&PostParams::default(), &h).await.unwrap();
    let marked = pods
        .delete("h", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    let released = pods
        .patch(
            "h",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(released.metadata.finalizers, None);
    assert_eq!(released.metadata.resource_version, marked.metadata.resource_version);
    assert!(pods.get_opt("h").await.unwrap().is_none());

    let events: Vec<WatchEvent<Pod>> = within(
        "the filtered replay",
        pods.watch(&WatchParams::default().labels("app=web").timeout(1), &from)
            .await
            .unwrap()
            .map(|e| e.unwrap())
            .collect(),
    )
    .await;
    let kinds: Vec<(String, String)> = events.iter().map(kind_and_name).collect();
    let want: Vec<(String, String)> = [("DELETED", "a"), ("ADDED", "h"), ("MODIFIED", "h"), ("DELETED", "h")]
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(kinds, want);
    let WatchEvent::Deleted(left) = &events[0] else {
        unreachable!()
    };
    assert_eq!(
        left.metadata.labels.as_ref().unwrap().get("app").map(String::as_str),
        Some("web"),
        "the previous object, as cacheWatcher sends it"
    );
    assert_eq!(left.metadata.resource_version, moved.metadata.resource_version);
    let WatchEvent::Deleted(gone) = &events[3] else {
        unreachable!()
    };
    assert_eq!(gone.metadata.finalizers, Some(vec!["example.com/hold".to_string()]));
    let gone_rv: u64 = gone.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    let marked_rv: u64 = marked.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(gone_rv > marked_rv);
}

#[tokio::test]
async fn watch_lag_delays_every_watch_event_but_no_read() {
    let c = start("watch-lag").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let created = pods.create(&PostParams::default(), &pod("a")).await.unwrap();
    let from = created.metadata.resource_version.clone().unwrap();
    let lag = Duration::from_millis(1000);
    c.faults().set_watch_lag(lag);
    let mut events = pods
        .watch(&WatchParams::default().timeout(30), &from)
        .await
        .unwrap()
        .boxed();

    let relabel = |v: &str| json!({"metadata": {"labels": {"step": v}}});
    let sent = Instant::now();
    let first = pods
        .patch("a", &PatchParams::default(), &Patch::Merge(&relabel("1")))
        .await
        .unwrap();
    let answered = Instant::now();
    let second = pods
        .patch("a", &PatchParams::default(), &Patch::Merge(&relabel("2")))
        .await
        .unwrap();
    // Reads are not delayed: a GET right after the PATCH sees it.
    let got = pods.get("a").await.unwrap();
    assert_eq!(got.metadata.resource_version, second.metadata.resource_version);
    assert!(
        sent.elapsed() < lag,
        "two patches and a GET answered within the lag ({:?})",
        sent.elapsed()
    );

    // The watch sees the first patch no earlier than the lag after it was written. The write
    // happens between sending the PATCH and its answer, so the bound holds from sending it:
    // seen - answered >= lag - (answered - sent).
    let ev = within("the lagging MODIFIED", events.next()).await.unwrap().unwrap();
    let seen = Instant::now();
    let WatchEvent::Modified(p) = ev else {
        panic!("expected MODIFIED, got {ev:?}")
    };
    assert_eq!(p.metadata.resource_version, first.metadata.resource_version);
    assert!(
        seen.duration_since(sent) >= lag,
        "seen {:?} after the PATCH was sent ({:?} after its answer), lag {lag:?}",
        seen.duration_since(sent),
        seen.duration_since(answered)
    );
    // In order: the second patch next.
    let ev = within("the second MODIFIED", events.next()).await.unwrap().unwrap();
    let WatchEvent::Modified(p) = ev else {
        panic!("expected MODIFIED, got {ev:?}")
    };
    assert_eq!(p.metadata.resource_version, second.metadata.resource_version);

    // A watch's own events lag too: the initial ADDED of a watch from "" and an ERROR.
    let opened = Instant::now();
    let mut fresh = pods
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    let ev = within("the lagging initial ADDED", fresh.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Added(_)), "{ev:?}");
    assert!(opened.elapsed() >= lag, "initial ADDED after {:?}", opened.elapsed());
    c.faults().expire_next_watch();
    let opened = Instant::now();
    let mut expired = pods
        .watch(&WatchParams::default().timeout(30), &from)
        .await
        .unwrap()
        .boxed();
    let ev = within("the lagging ERROR", expired.next()).await.unwrap().unwrap();
    assert!(matches!(&ev, WatchEvent::Error(s) if s.code == 410), "{ev:?}");
    assert!(opened.elapsed() >= lag, "ERROR after {:?}", opened.elapsed());

    // Back to zero: events written after that are delivered at once.
    c.faults().set_watch_lag(Duration::ZERO);
    let sent = Instant::now();
    let third = pods
        .patch("a", &PatchParams::default(), &Patch::Merge(&relabel("3")))
        .await
        .unwrap();
    let ev = within("the MODIFIED without lag", events.next())
        .await
        .unwrap()
        .unwrap();
    let WatchEvent::Modified(p) = ev else {
        panic!("expected MODIFIED, got {ev:?}")
    };
    assert_eq!(p.metadata.resource_version, third.metadata.resource_version);
    assert!(sent.elapsed() < lag, "seen after {:?} without lag", sent.elapsed());
}

#[tokio::test]
async fn a_lagging_watch_ends_at_its_timeout_losing_what_is_not_due() {
    let c = start("watch-lag-end").await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let created = pods.create(&PostParams::default(), &pod("a")).await.unwrap();
    c.faults().set_watch_lag(Duration::from_secs(5));
    let opened = Instant::now();
    let stream = pods
        .watch(
            &WatchParams::default().timeout(1),
            created.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"step": "1"}}})),
    )
    .await
    .unwrap();
    let seen: Vec<WatchEvent<Pod>> = within("the watch to end", stream.map(|e| e.unwrap()).collect()).await;
    assert!(seen.is_empty(), "{seen:?}");
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "the watch ends at timeoutSeconds, not when its lagging events are due: {took:?}"
    );
}
