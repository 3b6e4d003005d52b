//! The etcd adapter against a real etcd 3.4, draining: the presets, the settle window, a
//! service whose heartbeat re-adds its key, and a re-add between two polls.

mod common;

use std::time::{Duration, Instant};

use common::etcd::*;
use common::*;
use etcd_client::PutOptions;
use sluice_adapter::{Adapter, TrafficState};

#[tokio::test(flavor = "multi_thread")]
async fn grpc_go_drain_waits_for_the_settle_window_then_restores() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let a = adapter(&etcd, "preset: grpc-go\nprefix: services/\n");
    let t = target(IP1, &[("service", "greeter")]);
    put(&mut c, GRPC_KEY, GRPC_VALUE, 0).await;
    put(
        &mut c,
        "services/greeter/127.0.84.12:20880",
        r#"{"Op":0,"Addr":"127.0.84.12:20880"}"#,
        0,
    )
    .await;

    let obs = call("observe", a.observe(&t)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Serving, "{obs:?}");
    assert!(obs.evidence.contains("with the expected value"), "{obs:?}");

    let start = Instant::now();
    call("deregister", a.deregister(&t)).await.expect("deregister");
    assert_eq!(get(&mut c, GRPC_KEY).await, None, "key deleted");
    assert_eq!(
        keys(&mut c, "services/greeter/").await.len(),
        1,
        "the other instance stays"
    );
    let obs = call("observe", a.observe(&t)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(obs.remaining.is_some_and(|r| r <= SETTLE), "{obs:?}");
    let (obs, at) = wait_state(&a, &t, TrafficState::Drained, "Drained after the settle window").await;
    assert!(at - start >= SETTLE, "Drained after {:?}", at - start);
    assert!(
        obs.evidence.contains("absent at revision") && obs.evidence.contains("stable for"),
        "{obs:?}"
    );
    println!("drained: {} (after {:?})", obs.evidence, at - start);

    // A second deregister changes nothing (the settle clock keeps running).
    call("deregister", a.deregister(&t)).await.expect("deregister again");
    assert_eq!(
        call("observe", a.observe(&t)).await.unwrap().state,
        TrafficState::Drained
    );

    call("register", a.register(&t)).await.expect("register");
    let (value, lease, rev) = get(&mut c, GRPC_KEY).await.expect("key restored");
    assert_eq!(
        (value.as_str(), lease),
        (GRPC_VALUE, 0),
        "the remembered value comes back"
    );
    let (obs, _) = wait_state(&a, &t, TrafficState::Serving, "Serving after restore").await;
    println!("restored: {}", obs.evidence);
    call("register", a.register(&t)).await.expect("register again");
    assert_eq!(
        get(&mut c, GRPC_KEY).await.map(|v| v.2),
        Some(rev),
        "a second register writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn go_micro_and_kratos_find_the_pod_by_address() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let t1 = target(IP1, &[("service", "greeter")]);

    // go-micro: node ids are the service's own (UUIDs); the value names the address.
    let micro = adapter(&etcd, "preset: go-micro\n");
    let node = |id: &str, ip: &str| {
        format!(
            r#"{{"name":"greeter","version":"latest","metadata":null,"endpoints":[],"nodes":[{{"id":"{id}","address":"{ip}:20880","metadata":{{"protocol":"grpc"}}}}]}}"#
        )
    };
    let pod_key = "/micro/registry/greeter/greeter-0a1b2c";
    let pod_value = node("greeter-0a1b2c", "127.0.84.11");
    put(&mut c, pod_key, &pod_value, 0).await;
    put(
        &mut c,
        "/micro/registry/greeter/greeter-9f8e7d",
        &node("greeter-9f8e7d", "127.0.84.12"),
        0,
    )
    .await;
    wait_state(&micro, &t1, TrafficState::Serving, "go-micro pod Serving").await;
    call("deregister", micro.deregister(&t1)).await.expect("deregister");
    assert_eq!(
        keys(&mut c, "/micro/registry/greeter/").await,
        vec!["/micro/registry/greeter/greeter-9f8e7d".to_string()]
    );
    wait_state(&micro, &t1, TrafficState::Drained, "go-micro Drained").await;
    call("register", micro.register(&t1)).await.expect("register");
    assert_eq!(get(&mut c, pod_key).await.map(|v| v.0), Some(pod_value));
    wait_state(&micro, &t1, TrafficState::Serving, "go-micro restored").await;

    // Nothing remembered (a pod this adapter never drained): the record is rebuilt.
    let t3 = target(IP3, &[("service", "greeter")]);
    call("register", micro.register(&t3)).await.expect("register rebuilt");
    let (value, _, _) = get(&mut c, "/micro/registry/greeter/sluice-127.0.84.13-20880")
        .await
        .expect("rebuilt go-micro key");
    let json: serde_json::Value = serde_json::from_str(&value).unwrap();
    assert_eq!(json["nodes"][0]["address"], "127.0.84.13:20880");
    wait_state(&micro, &t3, TrafficState::Serving, "rebuilt record Serving").await;

    // Kratos: endpoints are URLs; the pod's is found among them.
    let kratos = adapter(&etcd, "preset: kratos\n");
    let kratos_key = "/microservices/greeter/5c1d";
    let kratos_value = r#"{"id":"5c1d","name":"greeter","version":"v1","metadata":{"region":"x"},"endpoints":["http://127.0.84.11:8000","grpc://127.0.84.11:20880?isSecure=false"]}"#;
    put(&mut c, kratos_key, kratos_value, 0).await;
    put(
        &mut c,
        "/microservices/greeter/77aa",
        r#"{"id":"77aa","name":"greeter","endpoints":["grpc://127.0.84.12:20880"]}"#,
        0,
    )
    .await;
    wait_state(&kratos, &t1, TrafficState::Serving, "kratos pod Serving").await;
    call("deregister", kratos.deregister(&t1)).await.expect("deregister");
    assert_eq!(get(&mut c, kratos_key).await, None);
    assert!(get(&mut c, "/microservices/greeter/77aa").await.is_some());
    wait_state(&kratos, &t1, TrafficState::Drained, "kratos Drained").await;
    call("register", kratos.register(&t1)).await.expect("register");
    assert_eq!(
        get(&mut c, kratos_key).await.map(|v| v.0).as_deref(),
        Some(kratos_value)
    );
    wait_state(&kratos, &t1, TrafficState::Serving, "kratos restored").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_that_re_adds_the_key_keeps_the_drain_blocked() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let a = adapter(&etcd, "preset: grpc-go\nprefix: services/\n");
    let t = target(IP1, &[("service", "greeter")]);

    // The service: its own lease, kept alive, and a heartbeat re-putting its key every 100 ms.
    let lease = c.lease_grant(5, None).await.expect("lease").id();
    let mut service = etcd.client().await;
    let heartbeat = tokio::spawn(async move {
        let (mut keeper, _stream) = service.lease_keep_alive(lease).await.expect("keep-alive");
        loop {
            let options = PutOptions::new().with_lease(lease);
            service
                .put(GRPC_KEY, GRPC_VALUE, Some(options))
                .await
                .expect("heartbeat put");
            keeper.keep_alive().await.expect("keep-alive");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_state(&a, &t, TrafficState::Serving, "the service registered").await;

    call("deregister", a.deregister(&t)).await.expect("deregister");
    let last = never_state(
        &a,
        &t,
        TrafficState::Drained,
        Duration::from_millis(1500),
        "the heartbeat keeps putting the key back",
    )
    .await;
    assert_eq!(last.state, TrafficState::Draining, "{last:?}");
    let by = format!("re-added by lease {lease:x} at revision");
    assert!(
        last.evidence.contains(&by) && last.evidence.contains("the service re-registers itself"),
        "{last:?}"
    );
    println!("blocked: {}", last.evidence);

    // The service stops: its heartbeat ends and its lease is revoked, so etcd deletes the key.
    heartbeat.abort();
    let _ = heartbeat.await;
    // Taken before the revoke: etcd deletes the key during it, and the adapter's watch can
    // see that delete before the revoke's answer arrives here.
    let gone = Instant::now();
    c.lease_revoke(lease).await.expect("revoke");
    let (obs, at) = wait_state(&a, &t, TrafficState::Drained, "Drained once the heartbeat stopped").await;
    assert!(
        at - gone >= SETTLE,
        "the settle clock restarted at the last delete ({:?})",
        at - gone
    );
    assert!(obs.evidence.contains("went again"), "{obs:?}");
    println!("drained: {}", obs.evidence);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_re_add_between_two_polls_restarts_the_settle_clock() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let a = adapter(&etcd, "preset: grpc-go\nprefix: services/\n");
    let t = target(IP1, &[("service", "greeter")]);
    put(&mut c, GRPC_KEY, GRPC_VALUE, 0).await;

    let start = Instant::now();
    call("deregister", a.deregister(&t)).await.expect("deregister");
    assert_eq!(
        call("observe", a.observe(&t)).await.unwrap().state,
        TrafficState::Draining
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Back and gone again without any poll in between: only the watch can see it.
    let readd = put(&mut c, GRPC_KEY, GRPC_VALUE, 0).await;
    c.delete(GRPC_KEY, None).await.expect("delete");
    let gone = Instant::now();
    tokio::time::sleep(start + Duration::from_millis(350) - Instant::now()).await;
    let obs = call("observe", a.observe(&t)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Draining, "the clock restarted: {obs:?}");
    assert!(
        obs.evidence.contains(&format!("re-added at revision {readd}")),
        "{obs:?}"
    );
    let (_, at) = wait_state(
        &a,
        &t,
        TrafficState::Drained,
        "Drained a settle window after the re-delete",
    )
    .await;
    assert!(at - gone >= SETTLE, "{:?}", at - gone);
}
