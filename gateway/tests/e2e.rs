//! End to end, through real HAProxy and the Kubernetes API simulator: a rollout under load
//! loses nothing with Sluice and loses requests without it; the pod carries exactly the
//! contract's finalizer, condition, annotation and Events; a converged restart makes no
//! adapter writes (a restart mid-drain: `process.rs`, with the real process SIGKILLed).

use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sluice::demo::{self, DemoOptions, Stage};

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_under_load_loses_nothing_with_sluice_and_loses_requests_without() {
    let with = demo::run(DemoOptions {
        pods: 4,
        clients: 10,
        verbose: false,
        sluice: true,
        sleep: None,
    })
    .await
    .expect("demo with Sluice");
    assert!(with.requests > 100, "the load really ran: {}", with.line());
    assert_eq!(with.failed, 0, "lossless with Sluice: {}", with.line());
    assert_eq!(with.drain_ms.len(), 4);

    let without = demo::run(DemoOptions {
        pods: 4,
        clients: 10,
        verbose: false,
        sluice: false,
        sleep: None,
    })
    .await
    .expect("demo without Sluice");
    assert!(without.requests > 100, "{}", without.line());
    assert!(
        without.failed > 0,
        "without draining, replacing pods under load must lose requests: {}",
        without.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_carries_the_contract_through_drain_and_restore() {
    let stage = Stage::new(2, true).await.expect("stage");
    let gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.expect("restored at start");
    let p = stage.pods.get("web-1").await.unwrap();
    // The ledger guard went on with the record, before the register; the kind's finalizer
    // once the traffic was verified serving.
    assert_eq!(
        p.metadata.finalizers.clone().unwrap_or_default(),
        vec!["sluice.dev/ledger".to_string(), "sluice.dev/slb".to_string()]
    );
    assert_eq!(gate(&p).as_deref(), Some("True"));
    let ledger: serde_json::Value =
        serde_json::from_str(&p.metadata.annotations.clone().unwrap_or_default()["sluice.dev/registrations"])
            .expect("the ledger is JSON");
    assert_eq!(
        ledger,
        json!([{"adapter": "haproxy", "kind": "slb", "params": {"backend": "web"},
                "ip": stage.ips[0].to_string(), "port": stage.port, "binding": "web"}]),
        "the ledger records where the pod is registered"
    );
    // The summary is written once the worker sees the converged state, just after the gate.
    wait_status(&stage.pods, "web-1", "serving").await;

    // Another controller's finalizer is never touched.
    let other = json!({"metadata": {"finalizers": ["sluice.dev/ledger", "sluice.dev/slb", "example.com/keep"]}});
    stage
        .pods
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&other))
        .await
        .unwrap();

    // A rollout controller asks for a drain, CAFE style.
    let drain = json!({"metadata": {"annotations": {"sluice.dev/desired": "drained"}}});
    stage
        .pods
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&drain))
        .await
        .unwrap();
    stage.wait_drained(0, T).await.expect("drained");
    let p = stage.pods.get("web-1").await.unwrap();
    assert_eq!(
        p.metadata.finalizers.clone().unwrap_or_default(),
        vec!["example.com/keep".to_string()]
    );
    assert_eq!(
        p.metadata.annotations.clone().unwrap_or_default()["sluice.dev/registrations"],
        "[]",
        "every entry went with its verified drain"
    );
    assert_eq!(stage.status_in("web", 0).await.unwrap().as_deref(), Some("MAINT"));
    assert_eq!(gate(&p).as_deref(), Some("False"));
    let status = wait_status(&stage.pods, "web-1", "drained").await;
    assert!(status["drainStartedAt"].is_string(), "{status}");
    assert!(status["lastTransition"].is_string(), "{status}");
    assert!(
        status["traceId"]
            .as_str()
            .is_some_and(|t| t.len() == 32 && t.chars().all(|c| c.is_ascii_hexdigit())),
        "the operation's trace id: {status}"
    );
    let ready = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .status
        .clone();
    assert_eq!(ready, "False", "the readiness gate takes the pod out of Ready");

    // kubectl describe pod reads core/v1 events.
    let events: Api<CoreEvent> = Api::namespaced(stage.client.clone(), "default");
    let listed = events
        .list(&ListParams::default().fields("involvedObject.name=web-1"))
        .await
        .unwrap()
        .items;
    let reasons: Vec<String> = listed.iter().filter_map(|e| e.reason.clone()).collect();
    for r in ["TrafficRestored", "DrainStarted", "TrafficDrained"] {
        assert!(reasons.iter().any(|x| x == r), "event {r} missing from {reasons:?}");
    }
    // The evidence in plain words, and how long the drain took.
    let drained = listed
        .iter()
        .find(|e| e.reason.as_deref() == Some("TrafficDrained"))
        .and_then(|e| e.message.clone())
        .unwrap();
    assert!(
        drained.contains("slb traffic verified drained after ")
            && drained.contains(" ms; finalizer sluice.dev/slb removed")
            && drained.contains("scur=0"),
        "{drained}"
    );

    // Restore when the request goes away.
    let back = json!({"metadata": {"annotations": {"sluice.dev/desired": null}}});
    stage
        .pods
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&back))
        .await
        .unwrap();
    stage.wait_ready(0, T).await.expect("restored");
    let p = stage.pods.get("web-1").await.unwrap();
    assert!(p
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .contains(&"sluice.dev/slb".to_string()));
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_restart_makes_no_adapter_writes() {
    let stage = Stage::new(2, true).await.expect("stage");
    let gw = stage.start_gateway().await.expect("gateway");
    for i in 0..2 {
        stage.wait_ready(i, T).await.expect("ready");
    }
    // Converged pods are left alone: no write at all, not even of the status annotation.
    let versions = || async {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(stage.client.clone(), "default");
        pods.list(&ListParams::default())
            .await
            .expect("list pods")
            .items
            .into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };
    // Converged: both pods recorded serving and no worker left running.
    let idle = |gw: &sluice::gateway::Gateway| {
        gw.engine.unsynced().is_empty()
            && gw.engine.pods.len() == 2
            && gw.engine.busy_pods() == 0
            && gw.engine.worker_runs.load(Ordering::SeqCst) >= 2
            && gw
                .engine
                .pods
                .iter()
                .all(|p| p.status().is_some_and(|s| s.state == sluice::model::State::Serving))
    };
    until("the gateway to converge", || async { idle(&gw).then_some(()) }).await;
    let converged = versions().await;
    // A second of polling (100 poll intervals) writes nothing.
    let since = std::time::Instant::now();
    until("a second converged", || async {
        (since.elapsed() > Duration::from_secs(1)).then_some(())
    })
    .await;
    assert_eq!(versions().await, converged, "a converged gateway writes nothing");
    drop(gw);
    let gw = stage.start_gateway().await.expect("gateway again");
    // The restarted gateway has looked at every pod once it is synced with no worker left.
    until("the restarted gateway to go through every pod", || async {
        idle(&gw).then_some(())
    })
    .await;
    assert_eq!(
        gw.engine.adapter_writes.load(Ordering::SeqCst),
        0,
        "everything had converged"
    );
    assert_eq!(
        versions().await,
        converged,
        "a converged restart writes nothing to the pods"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_with_nothing_to_do_get_no_worker_task() {
    let stage = Stage::new(2, true).await.expect("stage");
    let gw = stage.start_gateway().await.expect("gateway");
    for i in 0..2 {
        stage.wait_ready(i, T).await.expect("ready");
    }
    // 300 pods no binding selects, with nothing of Sluice's on them.
    for i in 0..300 {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("other-{i}"), "labels": {"app": "other"}},
            "spec": {"containers": [{"name": "c", "image": "registry.local/other:1"}]}
        }))
        .unwrap();
        stage.pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    until("the gateway to see them", || async {
        (gw.engine.pods.len() == 302 && gw.engine.busy_pods() == 0).then_some(())
    })
    .await;
    let (started, runs) = (
        gw.engine.workers_started.load(Ordering::SeqCst),
        gw.engine.worker_runs.load(Ordering::SeqCst),
    );
    // What a cluster's sync, a new leader or a resume does: every pod looked at.
    gw.engine.kick_all();
    assert!(
        gw.engine.worker_runs.load(Ordering::SeqCst) >= runs + 300,
        "every pod was looked at"
    );
    let tasks = gw.engine.workers_started.load(Ordering::SeqCst) - started;
    assert!(
        tasks <= 2,
        "{tasks} worker tasks started: the unbound pods and the converged ones need none"
    );
    // A pod with the readiness gate and no binding still gets a worker: it is told why its
    // gate stays False.
    let gated: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "gated", "labels": {"app": "nobody"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/other:1"}], "nodeName": "node-1",
                 "readinessGates": [{"conditionType": "sluice.dev/traffic-ready"}]}
    }))
    .unwrap();
    stage.pods.create(&PostParams::default(), &gated).await.unwrap();
    until("kubelet-lite to start the gated pod", || async {
        stage.pods.get("gated").await.ok().and_then(|p| p.status?.pod_ip)
    })
    .await;
    stage.clusters[0]
        .cluster
        .kubelet()
        .expect("kubelet-lite is on")
        .set_containers_ready("default", "gated", true)
        .expect("containers ready");
    support::wait_status(&stage.pods, "gated", "unbound").await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_binding_is_reported_not_fatal() {
    let stage = Stage::new(2, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    stage
        .create_binding("broken", "no-such-adapter", 30)
        .await
        .expect("created");
    let bindings: Api<sluice::binding::TrafficBinding> = Api::namespaced(stage.client.clone(), "default");
    within("the binding's Valid=False condition", async {
        loop {
            let b = bindings.get("broken").await.unwrap();
            if let Some(c) = b
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"))
            {
                assert_eq!(c.status, "False");
                assert!(
                    c.message.contains("no adapter instance \"no-such-adapter\""),
                    "{}",
                    c.message
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let events: Api<CoreEvent> = Api::namespaced(stage.client.clone(), "default");
    within("the InvalidBinding warning event", async {
        loop {
            let evs = events
                .list(&ListParams::default().fields("involvedObject.name=broken"))
                .await
                .unwrap();
            if evs
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("InvalidBinding") && e.type_.as_deref() == Some("Warning"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The valid binding keeps working.
    stage
        .wait_ready(0, T)
        .await
        .expect("pods still restored through the valid binding");
}

/// Drives two bound pods through a drain each while sampling, every 10 ms, both the
/// pods' gates and HAProxy's own view (servers in DRAIN or MAINT): `maxUnavailable: 1`
/// means never two pods out of traffic at once, from the backend's side too — the second
/// drain starts only once the first pod serves again.
async fn two_drains_never_overlap(stage: &Stage) {
    let held = hold_in_web(stage, 6, 1200).await;
    stage.set_kruise_state(0, "PreparingUpdate").await.unwrap();
    stage.set_kruise_state(1, "PreparingUpdate").await.unwrap();
    let mut saw_waiting = false;
    let mut restored_first = None;
    let mut drained = [false, false];
    within("both drains, one after the other", async {
        loop {
            let mut out = 0;
            for (i, done) in drained.iter_mut().enumerate() {
                let p = stage.get(i).await.unwrap();
                let state = sluice_state(&p);
                if gate(&p).as_deref() == Some("False") {
                    out += 1;
                }
                saw_waiting |= state == "waiting-for-budget";
                *done |= state == "drained";
            }
            let servers = stage.servers("web").await.unwrap();
            let out_in_haproxy = servers
                .values()
                .filter(|(_, status, _)| status.starts_with("DRAIN") || status.starts_with("MAINT"))
                .count();
            assert!(out <= 1, "maxUnavailable 1: {out} pods have their gate False");
            assert!(out_in_haproxy <= 1, "maxUnavailable 1, seen from HAProxy: {servers:?}");
            // The first drained pod is updated and restored; only then may the other go.
            if restored_first.is_none() {
                if let Some(i) = (0..2).find(|i| drained[*i]) {
                    stage.set_kruise_state(i, "Updated").await.unwrap();
                    restored_first = Some(i);
                }
            }
            if let Some(first) = restored_first {
                if drained[1 - first] {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(saw_waiting, "the second pod waited for the budget");
    for h in held {
        assert_eq!(
            within("a held request", h)
                .await
                .unwrap()
                .expect("in-flight requests complete"),
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budget_bounds_pods_out_of_traffic() {
    let stage = Stage::new(2, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    two_drains_never_overlap(&stage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_freezes_pods() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let stage = Stage::new(2, true).await.expect("stage");
    let gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    // A drain is under way — web-1 holds long requests, so it cannot be verified yet — when
    // the cluster becomes unreachable.
    let held = hold_timed(stage.frontend, 4, 1500).await;
    ask_drain(&stage, "web-1").await;
    until("web-1 out of rotation (MAINT or DRAIN)", || async {
        let s = stage.status_in("web", 0).await.unwrap();
        matches!(s.as_deref(), Some("DRAIN") | Some("MAINT")).then_some(())
    })
    .await;
    let faults = stage.cluster().faults();
    faults.set_offline(true);
    faults.drop_watches();
    let cluster = gw.engine.clusters.get("demo").unwrap().clone();
    until("the outage to show in health", || async {
        (!cluster.healthy.load(Ordering::SeqCst)).then_some(())
    })
    .await;
    let adapter_writes = gw.engine.adapter_writes.load(Ordering::SeqCst);
    let pod_writes = faults.write_count();
    // The held requests finish while the cluster is down: the drain is verifiable now, but
    // what the gateway knows of the pod may be stale, so it acts on nothing.
    let mut finished = Vec::new();
    for h in held {
        finished.push(within("a held request", h).await.unwrap());
    }
    let last = finished.iter().map(|h| h.done).max().unwrap();
    until("a further second of outage", || async {
        (last.elapsed() > Duration::from_secs(1)).then_some(())
    })
    .await;
    assert_eq!(
        gw.engine.adapter_writes.load(Ordering::SeqCst),
        adapter_writes,
        "no adapter call while the cluster is unreachable"
    );
    assert_eq!(
        faults.write_count(),
        pod_writes,
        "no pod write, not even tried, while unreachable"
    );
    assert!(finished.iter().all(|h| h.status == 200), "every held request served");
    faults.set_offline(false);
    // Back: the drain goes on from where it stood.
    stage.wait_drained(0, T).await.expect("the drain resumes and finishes");
    assert!(cluster.healthy.load(Ordering::SeqCst));
    assert_eq!(gate(&stage.pods.get("web-2").await.unwrap()).as_deref(), Some("True"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_share_one_disruption_budget() {
    let stage = Stage::with_clusters(2, true, 2).await.expect("stage with two clusters");
    assert_eq!(stage.home(0).name, "demo");
    assert_eq!(stage.home(1).name, "west");
    let gw = stage.start_gateway().await.expect("gateway watching both clusters");
    assert_eq!(gw.engine.clusters.len(), 2);
    stage.wait_ready(0, T).await.expect("pod in demo restored");
    stage.wait_ready(1, T).await.expect("pod in west restored");
    two_drains_never_overlap(&stage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_prestop_returns_only_after_verified_drain() {
    let stage = Stage::new(2, true).await.expect("stage");
    let health = free_addr();
    let text = stage.gateway_config_text(health);
    let with_prestop = text.replace(
        &format!("  health: {health}\n"),
        &format!("  health: {health}\n  prestop: 127.0.0.1:0\n"),
    );
    assert_ne!(text, with_prestop);
    let gw = stage.start_gateway_with(&with_prestop).await.expect("gateway");
    let prestop = gw.prestop_addr.expect("listen.prestop bound");
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    let held = hold_timed(stage.frontend, 4, 800).await;
    until("web-1 to hold a request", || async {
        let s = stage.haproxy().show_stat_servers("web").await.ok()?;
        s.iter().any(|r| r.svname() == "web-1" && r.scur() > 0).then_some(())
    })
    .await;
    // Called from web-1's own address (as an exec hook in the pod calls it).
    let get = |from: std::net::IpAddr, q: &str| {
        let path = format!("/prestop?{q}");
        async move {
            get_from(prestop, from, &path)
                .await
                .expect("the preStop listener answers")
        }
    };
    let web1_ip = stage.ips[0];
    let answer = within("the preStop call", get(web1_ip, "timeoutSeconds=30")).await;
    let answered = std::time::Instant::now();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let p = stage.get(0).await.unwrap();
    assert!(!p
        .metadata
        .finalizers
        .unwrap_or_default()
        .iter()
        .any(|f| f.starts_with("sluice.dev/")));
    let web1 = stage.ips[0].to_string();
    let mut on_web1 = 0;
    for h in held {
        let h = within("a held request", h).await.unwrap();
        assert_eq!(h.status, 200, "in-flight requests complete");
        if h.served_by == web1 {
            on_web1 += 1;
            assert!(
                h.done <= answered,
                "preStop answered before a request web-1 held had finished"
            );
        }
    }
    assert!(on_web1 > 0, "web-1 held some of the requests");
    // A name in the query is refused, whoever calls; so is a caller that is no pod.
    let named = get(stage.ips[1], "namespace=default&pod=web-1").await;
    assert!(
        named.starts_with("HTTP/1.1 400") && named.contains("never by name"),
        "{named}"
    );
    let stranger = get("127.0.0.1".parse().unwrap(), "").await;
    assert!(
        stranger.starts_with("HTTP/1.1 403") && stranger.contains("no pod the gateway watches has address 127.0.0.1"),
        "{stranger}"
    );
    let too_long = get(stage.ips[1], "timeoutSeconds=100000").await;
    assert!(too_long.starts_with("HTTP/1.1 400"), "{too_long}");
    // Nothing of that drained web-2.
    assert_eq!(gate(&stage.pods.get("web-2").await.unwrap()).as_deref(), Some("True"));
    // The old endpoint on the health listener, which took a name, is gone.
    let old = health_get(gw.health_addr, "/prestop?namespace=default&pod=web-2")
        .await
        .unwrap();
    assert!(old.starts_with("HTTP/1.1 410"), "{old}");
    assert_eq!(gate(&stage.pods.get("web-2").await.unwrap()).as_deref(), Some("True"));
}

/// Replaces the stage's binding with one whose drain deadline is 1 s and `onDeadline` is
/// `policy`.
async fn short_deadline_binding(stage: &Stage, policy: &str) {
    use kube::api::{DeleteParams, PostParams};
    let bindings: Api<sluice::binding::TrafficBinding> = Api::namespaced(stage.client.clone(), "default");
    bindings.delete("web", &DeleteParams::default()).await.unwrap();
    let b: sluice::binding::TrafficBinding = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "TrafficBinding",
        "metadata": {"name": "web-short"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "port": stage.port,
                 "targets": [{"adapter": "haproxy", "params": {"backend": "web"}}],
                 "drainPolicy": {"deadlineSeconds": 1, "onDeadline": policy}}
    }))
    .unwrap();
    bindings.create(&PostParams::default(), &b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_blocks_by_default_and_releases_loudly_when_asked() {
    for policy in ["Block", "Release"] {
        let stage = Stage::new(2, true).await.expect("stage");
        short_deadline_binding(&stage, policy).await;
        let _gw = stage.start_gateway().await.expect("gateway");
        stage.wait_ready(0, T).await.unwrap();
        stage.wait_ready(1, T).await.unwrap();
        // Sessions that outlive the deadline: the drain cannot be verified in time.
        let held = hold_in_web(&stage, 4, 4000).await;
        stage.set_kruise_state(0, "PreparingDelete").await.unwrap();
        match policy {
            "Block" => {
                let status = wait_status(&stage.pods, "web-1", "blocked").await;
                assert!(
                    status["blocked"][0].as_str().unwrap().contains("deadline passed"),
                    "{status}"
                );
                let p = stage.get(0).await.unwrap();
                assert!(
                    p.metadata
                        .finalizers
                        .unwrap_or_default()
                        .contains(&"sluice.dev/slb".to_string()),
                    "Block keeps the finalizer: the release waits"
                );
                // Said once (a Warning Event and a log line), not at every poll.
                let blocked_events = || async {
                    let events: Api<CoreEvent> = Api::namespaced(stage.client.clone(), "default");
                    events
                        .list(&ListParams::default().fields("involvedObject.name=web-1"))
                        .await
                        .unwrap()
                        .items
                        .into_iter()
                        .filter(|e| e.reason.as_deref() == Some("DrainBlocked"))
                        .collect::<Vec<_>>()
                };
                within("the DrainBlocked warning", async {
                    while blocked_events().await.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let evs = blocked_events().await;
                assert_eq!(evs.len(), 1, "{evs:?}");
                assert_eq!(evs[0].type_.as_deref(), Some("Warning"));
                assert!(
                    evs[0].series.is_none() && evs[0].count.unwrap_or(1) == 1,
                    "not repeated: {evs:?}"
                );
            }
            _ => {
                stage
                    .wait_drained(0, T)
                    .await
                    .expect("Release removes the finalizer at the deadline");
                let events: Api<CoreEvent> = Api::namespaced(stage.client.clone(), "default");
                within("the DrainReleased warning", async {
                    loop {
                        let evs = events
                            .list(&ListParams::default().fields("involvedObject.name=web-1"))
                            .await
                            .unwrap();
                        if evs.items.iter().any(|e| {
                            e.reason.as_deref() == Some("DrainReleased") && e.type_.as_deref() == Some("Warning")
                        }) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
            }
        }
        // The long sessions were not cut by Sluice either way.
        for h in held {
            assert_eq!(h.await.unwrap().expect("sessions complete"), 200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_every_clusters_first_sync() {
    let stage = Stage::with_clusters(2, true, 2).await.expect("stage");
    // One cluster unreachable when the gateway starts.
    stage.clusters[1].cluster.faults().set_offline(true);
    let gw = sluice::gateway::Gateway::start(stage.gateway_config().unwrap())
        .await
        .expect("starts anyway");
    let readyz = || async {
        health_get(gw.health_addr, "/readyz")
            .await
            .expect("the health listener answers")
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = readyz().await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("waiting for first sync of: west"),
        "names the cluster: {answer}"
    );
    assert_eq!(
        gw.engine.adapter_writes.load(Ordering::SeqCst),
        0,
        "nothing acts before readiness"
    );
    stage.clusters[1].cluster.faults().set_offline(false);
    within("readiness once west has listed", async {
        while !readyz().await.starts_with("HTTP/1.1 200") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    stage.wait_ready(0, T).await.expect("pods restored once ready");
    stage.wait_ready(1, T).await.expect("pods restored once ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_binding_takes_its_pods_out_of_its_targets_on_evidence() {
    use kube::api::DeleteParams;
    let stage = Stage::new(2, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    // Sessions on both servers: the drain that follows the deletion waits for them.
    let held = hold_in_web(&stage, 4, 1000).await;
    let bindings: Api<sluice::binding::TrafficBinding> = Api::namespaced(stage.client.clone(), "default");
    bindings.delete("web", &DeleteParams::default()).await.unwrap();
    // The ledger knows where the pods are registered: each is drained from there, and its
    // record, finalizer and guard go only once HAProxy shows it idle in MAINT.
    for i in 0..2 {
        stage
            .wait_drained(i, T)
            .await
            .expect("drained from the deleted binding's targets");
        assert_eq!(stage.status_in("web", i).await.unwrap().as_deref(), Some("MAINT"));
    }
    for h in held {
        assert_eq!(
            within("a held request", h)
                .await
                .unwrap()
                .expect("in-flight requests complete"),
            200,
            "nothing cut"
        );
    }
    let events: Api<CoreEvent> = Api::namespaced(stage.client.clone(), "default");
    within("the TrafficMoved event", async {
        loop {
            let evs = events
                .list(&ListParams::default().fields("involvedObject.name=web-1"))
                .await
                .unwrap();
            if evs.items.iter().any(|e| e.reason.as_deref() == Some("TrafficMoved")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_past_its_deadline_keeps_the_pod_out_and_says_so() {
    let mut stage = Stage::new(2, true).await.expect("stage");
    short_deadline_binding(&stage, "Block").await;
    let _gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    stage.set_kruise_state(0, "PreparingUpdate").await.unwrap();
    stage.wait_drained(0, T).await.unwrap();
    // The pod's server is gone: HAProxy's health check can never pass.
    stage.backends[0].take();
    stage.set_kruise_state(0, "Normal").await.unwrap();
    let events: Api<CoreEvent> = Api::namespaced(stage.client.clone(), "default");
    within("the RestoreNotVerified warning", async {
        loop {
            let evs = events
                .list(&ListParams::default().fields("involvedObject.name=web-1"))
                .await
                .unwrap();
            if let Some(e) = evs
                .items
                .iter()
                .find(|e| e.reason.as_deref() == Some("RestoreNotVerified"))
            {
                assert_eq!(e.type_.as_deref(), Some("Warning"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let p = stage.get(0).await.unwrap();
    assert_ne!(gate(&p).as_deref(), Some("True"), "not verified serving, so not Ready");
    assert_eq!(sluice_state(&p), "restoring");
    // The server comes back: the restore completes on its own.
    let addr = std::net::SocketAddr::new(stage.ips[0], stage.port);
    stage.backends[0] = Some(sluice::demo::backend::Backend::start(addr).await.unwrap());
    wait_gate(&stage.pods, "web-1", "True").await;
}

/// The preStop hook of `examples/deployment/deployment.yaml`, as a shell would run it in the
/// pod: `wget` from the pod's address to `prestop` (the gateway's listener, or a dead one),
/// with the fallback `sleep` shortened to `fallback_s`. (exit ok, seconds it took)
async fn run_example_hook(prestop: std::net::SocketAddr, from: std::net::IpAddr, fallback_s: u64) -> (bool, f64) {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/deployment/deployment.yaml"
    ))
    .unwrap();
    let doc: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    let command = doc["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(command[..2], ["/bin/sh", "-c"]);
    let script = command[2]
        .replace("sluice-gateway.sluice.svc:9798", &prestop.to_string())
        .replacen("wget ", &format!("wget --bind-address={from} "), 1)
        .replace("sleep 15", &format!("sleep {fallback_s}"));
    assert_ne!(script, command[2]);
    let started = std::time::Instant::now();
    let status = tokio::process::Command::new(&command[0])
        .args([&command[1], &script])
        .status()
        .await
        .expect("sh and wget run (scripts/test.sh installs wget)");
    (status.success(), started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_exec_hook_waits_for_the_drain_and_falls_back_without_a_gateway() {
    let stage = Stage::new(2, true).await.expect("stage");
    let health = free_addr();
    let text = stage.gateway_config_text(health).replace(
        &format!("  health: {health}\n"),
        &format!("  health: {health}\n  prestop: 127.0.0.1:0\n"),
    );
    let gw = stage.start_gateway_with(&text).await.expect("gateway");
    let prestop = gw.prestop_addr.unwrap();
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    let held = hold_in_web(&stage, 4, 1000).await;
    let (ok, took) = within("the hook", run_example_hook(prestop, stage.ips[0], 30)).await;
    assert!(ok, "the hook succeeds");
    assert!(took < 20.0, "answered by the gateway, not the fallback: {took} s");
    assert!(
        !holds_sluice_finalizer(&stage.get(0).await.unwrap()),
        "drained when it returned"
    );
    for h in held {
        assert_eq!(within("a held request", h).await.unwrap().expect("answered"), 200);
    }
    // No gateway: wget fails at once and the fallback wait runs; the hook still ends.
    drop(gw);
    let (ok, took) = within("the hook", run_example_hook(prestop, stage.ips[1], 1)).await;
    assert!(ok && (1.0..10.0).contains(&took), "the fallback ran: {ok} {took} s");
}
