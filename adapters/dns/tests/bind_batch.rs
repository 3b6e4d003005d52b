//! Batching against a real BIND 9 primary + secondary: 500 pods of one zone drained
//! together go out as a handful of UPDATE messages (counted by the adapter *and* by the
//! zone serial, which BIND bumps once per UPDATE), and every one is verified gone on both
//! servers; then restored the same way.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::future::join_all;
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_dns::testing::bind::{Bind, Zone};

const NAMES: usize = 50;
const PODS_PER_NAME: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_drains_in_one_zone_go_out_in_a_few_update_messages() {
    // 50 names, each with 10 pods to drain and one that stays.
    let mut records = Vec::new();
    for n in 0..NAMES {
        for i in 1..=PODS_PER_NAME + 1 {
            records.push(format!("svc{n} IN A 10.40.{n}.{i}"));
        }
    }
    let refs: Vec<&str> = records.iter().map(String::as_str).collect();
    let bind = Bind::start(vec![Zone::new("bulk.test", 1, &refs)]).await;
    let (p, s) = (bind.primary.addr, bind.secondary_addr());
    let a = rfc_adapter(&bind, &["bulk.test"]);
    let pods: Vec<_> = (0..NAMES)
        .flat_map(|n| (1..=PODS_PER_NAME).map(move |i| (n, i)))
        .map(|(n, i)| t(&format!("10.40.{n}.{i}"), &format!("svc{n}.bulk.test"), &[]))
        .collect();
    assert_eq!(pods.len(), 500);
    let serial_before = dig_serial(p, "bulk.test");

    let start = Instant::now();
    let results = tokio::time::timeout(WAIT, join_all(pods.iter().map(|pod| a.deregister(pod))))
        .await
        .expect("500 concurrent deregisters");
    let took = start.elapsed();
    for r in &results {
        r.as_ref().expect("deregister");
    }
    let messages = a.updates_sent();
    let serial_after = dig_serial(p, "bulk.test");
    eprintln!("500 deregisters: {messages} UPDATE messages, serial {serial_before} → {serial_after}, {took:?}");
    assert!(messages <= 5, "500 deregisters took {messages} UPDATE messages");
    assert_eq!(
        u64::from(serial_after - serial_before),
        messages,
        "BIND bumped the serial once per UPDATE message"
    );
    for n in [0, 17, NAMES - 1] {
        dig_is(
            p,
            &format!("svc{n}.bulk.test"),
            "A",
            &[&format!("10.40.{n}.{}", PODS_PER_NAME + 1)],
        );
    }

    // Verified gone on both servers, then the 1 s TTL: all Drained.
    let drained = tokio::time::timeout(
        WAIT,
        join_all(
            pods.iter()
                .map(|pod| wait_state(&a, pod, TrafficState::Drained, "each pod drained")),
        ),
    )
    .await
    .expect("all 500 drained");
    for (obs, _) in &drained {
        assert!(
            obs.evidence.contains(&format!("{p}=absent")) && obs.evidence.contains(&format!("{s}=absent")),
            "{obs:?}"
        );
    }
    for n in [0, 33, NAMES - 1] {
        dig_is(
            s,
            &format!("svc{n}.bulk.test"),
            "A",
            &[&format!("10.40.{n}.{}", PODS_PER_NAME + 1)],
        );
    }

    // Restore them all together.
    let results = tokio::time::timeout(WAIT, join_all(pods.iter().map(|pod| a.register(pod))))
        .await
        .expect("500 concurrent registers");
    for r in &results {
        r.as_ref().expect("register");
    }
    let restore_messages = a.updates_sent() - messages;
    assert!(
        restore_messages <= 5,
        "500 registers took {restore_messages} UPDATE messages"
    );
    tokio::time::timeout(
        WAIT,
        join_all(
            pods.iter()
                .map(|pod| wait_state(&a, pod, TrafficState::Serving, "each pod serving")),
        ),
    )
    .await
    .expect("all 500 serving");
    assert_eq!(dig(s, "svc5.bulk.test", "A").len(), PODS_PER_NAME + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_would_empty_a_name_keeps_one_address() {
    // Two pods of one name drained at once, neither allowing an empty name: one goes,
    // the other is refused — whatever the order they arrive in.
    let bind = Bind::start(vec![Zone::new(
        "pair.test",
        1,
        &["www IN A 10.41.0.1", "www IN A 10.41.0.2"],
    )])
    .await;
    let p = bind.primary.addr;
    let a = rfc_adapter(&bind, &["pair.test"]);
    let (p1, p2) = (
        t("10.41.0.1", "www.pair.test", &[]),
        t("10.41.0.2", "www.pair.test", &[]),
    );
    let (r1, r2) = tokio::time::timeout(WAIT, async { tokio::join!(a.deregister(&p1), a.deregister(&p2)) })
        .await
        .expect("both deregisters");
    let refused: Vec<_> = [&r1, &r2].into_iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{r1:?} {r2:?}");
    assert!(
        refused[0].message.contains("the last address of www.pair.test. A"),
        "{}",
        refused[0]
    );
    assert_eq!(dig(p, "www.pair.test", "A").len(), 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
