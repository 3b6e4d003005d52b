//! Drain and restore against a real BIND 9 primary + secondary (NOTIFY/IXFR): only the
//! pod's address is touched, every authoritative server is waited for (including a
//! secondary that lags), and the record's TTL — or the negative TTL when the name empties
//! — is waited out. `dig` is the independent client checking what the servers hold.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_dns::testing::bind::{Bind, Notify, Zone};

#[tokio::test(flavor = "multi_thread")]
async fn drain_removes_only_this_address_and_waits_the_ttl() {
    let bind = Bind::start(vec![Zone::new(
        "example.test",
        2,
        &[
            "www IN A 10.1.0.1",
            "www IN A 10.1.0.2",
            "www IN A 10.1.0.3",
            "www IN AAAA fd00::1",
            "api IN A 10.1.0.1",
        ],
    )])
    .await;
    let (p, s) = (bind.primary.addr, bind.secondary_addr());
    let a = rfc_adapter(&bind, &["example.test"]);
    let pod = t("10.1.0.1", "www.example.test", &[]);

    let obs = observe(&a, &pod).await;
    assert_eq!(obs.state, TrafficState::Serving, "{obs:?}");
    assert_eq!(
        obs.evidence,
        format!("www.example.test. A 10.1.0.1: {p}=present(serial 1) {s}=present(serial 1); answered by every authoritative server")
    );

    let start = Instant::now();
    deregister(&a, &pod).await.expect("deregister");
    // Only this address left the RRset: the other addresses, the AAAA RRset and the same
    // address under another name are untouched, on the primary at once.
    dig_is(p, "www.example.test", "A", &["10.1.0.2", "10.1.0.3"]);
    dig_is(p, "www.example.test", "AAAA", &["fd00::1"]);
    dig_is(p, "api.example.test", "A", &["10.1.0.1"]);

    let (drained, seen) = wait_state(&a, &pod, TrafficState::Drained, "drained after the TTL").await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "Drained after {took:?}, before the 2 s TTL ran out"
    );
    assert!(took < Duration::from_secs(4), "Drained only after {took:?}");
    assert!(
        drained.evidence.contains("caches expired") && drained.evidence.contains("ttl 2s"),
        "{drained:?}"
    );
    assert!(
        drained
            .evidence
            .contains(&format!("{p}=absent(serial 2) {s}=absent(serial 2)")),
        "{drained:?}"
    );
    // While waiting out the TTL: Draining, with the time left in `remaining`.
    let waiting: Vec<_> = seen.iter().filter(|(_, o)| o.remaining.is_some()).collect();
    assert!(
        !waiting.is_empty(),
        "no observation carried the remaining TTL: {seen:?}"
    );
    for (_, o) in &seen {
        assert_eq!(o.state, TrafficState::Draining, "{o:?}");
        assert!(o.remaining.is_none_or(|r| r <= Duration::from_secs(2)), "{o:?}");
    }
    dig_is(s, "www.example.test", "A", &["10.1.0.2", "10.1.0.3"]);
    dig_is(s, "api.example.test", "A", &["10.1.0.1"]);
    assert_eq!(
        observe(&a, &pod).await.state,
        TrafficState::Drained,
        "Drained stays Drained"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_waits_for_a_lagging_secondary_and_restore_too() {
    // `lag.test` gets no NOTIFY from the primary: the secondary keeps the old data until
    // the test sends one, exactly like a secondary that lags behind.
    let mut zone = Zone::new("lag.test", 1, &["www IN A 10.2.0.1", "www IN A 10.2.0.2"]);
    zone.secondary = Some(Notify::Manual);
    let bind = Bind::start(vec![zone]).await;
    let (p, s) = (bind.primary.addr, bind.secondary_addr());
    let a = rfc_adapter(&bind, &["lag.test"]);
    let pod = t("10.2.0.1", "www.lag.test", &[]);

    deregister(&a, &pod).await.expect("deregister");
    dig_is(p, "www.lag.test", "A", &["10.2.0.2"]);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let obs = observe(&a, &pod).await;
        assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
        assert!(
            obs.evidence
                .contains(&format!("{p}=absent(serial 2) {s}=present(serial 1)"))
                && obs.evidence.contains(&format!("still answered by {s}")),
            "{obs:?}"
        );
        dig_is(s, "www.lag.test", "A", &["10.2.0.1", "10.2.0.2"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    bind.notify_secondary("lag.test").await;
    let notified = Instant::now();
    wait_dig(
        s,
        "www.lag.test",
        "A",
        &["10.2.0.2"],
        "the secondary transfers the change",
    )
    .await;
    let secondary_dropped = Instant::now();
    let (drained, _) = wait_state(&a, &pod, TrafficState::Drained, "drained once the secondary caught up").await;
    let after = Instant::now().duration_since(notified);
    assert!(
        Instant::now().duration_since(secondary_dropped) >= Duration::from_millis(900),
        "Drained {after:?} after the NOTIFY: the 1 s TTL must run from when the secondary dropped it"
    );
    assert!(
        drained.evidence.contains(&format!("{s}=absent(serial 2)")),
        "{drained:?}"
    );
    assert!(
        bind.primary_log().contains("transfer of 'lag.test/IN': IXFR started"),
        "the secondary caught up by IXFR:\n{}",
        bind.primary_log()
    );

    // Restore: Registered while the secondary lacks it, Serving once it has it.
    a.register(&pod).await.expect("register");
    dig_is(p, "www.lag.test", "A", &["10.2.0.1", "10.2.0.2"]);
    let obs = observe(&a, &pod).await;
    assert_eq!(obs.state, TrafficState::Registered, "{obs:?}");
    assert!(obs.evidence.contains(&format!("not yet on {s}")), "{obs:?}");
    bind.notify_secondary("lag.test").await;
    let (serving, _) = wait_state(&a, &pod, TrafficState::Serving, "serving on both servers").await;
    assert!(
        serving
            .evidence
            .contains(&format!("{p}=present(serial 3) {s}=present(serial 3)")),
        "{serving:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_address_needs_allow_empty_and_the_negative_ttl_is_waited() {
    let mut zone = Zone::new("solo.test", 1, &["www IN A 10.3.0.1"]);
    zone.negative_ttl = 3;
    let bind = Bind::start(vec![zone]).await;
    let (p, s) = (bind.primary.addr, bind.secondary_addr());
    let a = rfc_adapter(&bind, &["solo.test"]);

    let pod = t("10.3.0.1", "www.solo.test", &[]);
    let e = deregister(&a, &pod).await.expect_err("the last address is refused");
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(
        e.message,
        "refusing to remove 10.3.0.1, the last address of www.solo.test. A: blackholing a name is a decision, \
         not an accident; set `allowEmpty: \"true\"` on the binding's DNS target to allow it"
    );
    assert_eq!(a.updates_sent(), 0, "nothing was sent");
    dig_is(p, "www.solo.test", "A", &["10.3.0.1"]);

    let pod = t("10.3.0.1", "www.solo.test", &[("allowEmpty", "true")]);
    let start = Instant::now();
    deregister(&a, &pod).await.expect("deregister with allowEmpty");
    dig_is(p, "www.solo.test", "A", &[]);
    let (drained, seen) = wait_state(&a, &pod, TrafficState::Drained, "drained after the negative TTL").await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "Drained after {took:?}: the 3 s negative TTL is longer than the 1 s TTL"
    );
    assert!(drained.evidence.contains("ttl 1s, negative ttl 3s"), "{drained:?}");
    assert!(
        seen.iter()
            .any(|(_, o)| o.remaining.is_some_and(|r| r > Duration::from_secs(2))),
        "remaining showed the negative TTL: {seen:?}"
    );
    dig_is(s, "www.solo.test", "A", &[]);

    a.register(&pod).await.expect("register");
    wait_state(&a, &pod, TrafficState::Serving, "restored on both servers").await;
    dig_is(p, "www.solo.test", "A", &["10.3.0.1"]);
    dig_is(s, "www.solo.test", "A", &["10.3.0.1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_idempotent() {
    let bind = Bind::start(vec![Zone::new(
        "idem.test",
        1,
        &["www IN A 10.6.0.1", "www IN A 10.6.0.2"],
    )])
    .await;
    let p = bind.primary.addr;
    let a = rfc_adapter(&bind, &["idem.test"]);
    let pod = t("10.6.0.1", "www.idem.test", &[]);

    register(&a, &pod).await.expect("register a registered target");
    assert_eq!(
        (a.updates_sent(), dig_serial(p, "idem.test")),
        (0, 1),
        "no UPDATE for an address already served"
    );

    deregister(&a, &pod).await.expect("deregister");
    deregister(&a, &pod).await.expect("deregister again");
    assert_eq!(
        (a.updates_sent(), dig_serial(p, "idem.test")),
        (1, 2),
        "the second deregister sent nothing"
    );
    wait_state(&a, &pod, TrafficState::Drained, "drained").await;
    deregister(&a, &pod).await.expect("deregister a drained target");
    assert_eq!(observe(&a, &pod).await.state, TrafficState::Drained);

    // Never registered: success, nothing sent; observe waits the assumed TTL (no memory of a TTL).
    let ghost = t("10.6.0.9", "www.idem.test", &[]);
    deregister(&a, &ghost)
        .await
        .expect("deregister a never-registered target");
    assert_eq!(a.updates_sent(), 1);
    let obs = observe(&a, &ghost).await;
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(obs.evidence.contains("ttl 2s assumed"), "{obs:?}");
    wait_state(
        &a,
        &ghost,
        TrafficState::Drained,
        "never-registered target drained after the assumed TTL",
    )
    .await;

    register(&a, &pod).await.expect("register");
    register(&a, &pod).await.expect("register again");
    assert_eq!((a.updates_sent(), dig_serial(p, "idem.test")), (2, 3));
    wait_state(&a, &pod, TrafficState::Serving, "serving").await;
    dig_is(p, "www.idem.test", "A", &["10.6.0.1", "10.6.0.2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_can_be_discovered_from_the_ns_set() {
    let bind = Bind::start(vec![Zone::new(
        "disc.test",
        1,
        &["www IN A 10.7.0.1", "www IN A 10.7.0.2"],
    )])
    .await;
    let (p, s) = (bind.primary.addr, bind.secondary_addr());
    // NS ns1.disc.test. → 127.0.0.1 (glue); on this machine the secondary listens on its
    // own port, so NS-discovered servers are reached on `nsPort` = the secondary's.
    let config = rfc_config(&bind, &["disc.test"], "sluice", &format!("nsPort: {}\n", s.port()));
    assert_eq!(config.servers, None);
    let a = sluice_adapter_dns::Rfc2136Adapter::new(config).expect("adapter");
    let zone = sluice_adapter_dns::names::parse_fqdn("disc.test").unwrap();
    assert_eq!(a.authoritative_servers(&zone).await.expect("discovery"), vec![p, s]);
    let pod = t("10.7.0.1", "www.disc.test", &[]);
    deregister(&a, &pod).await.expect("deregister");
    let (obs, _) = wait_state(&a, &pod, TrafficState::Drained, "drained on the discovered servers").await;
    assert!(
        obs.evidence
            .contains(&format!("{p}=absent(serial 2) {s}=absent(serial 2)")),
        "{obs:?}"
    );
    a.health().await.expect("health");
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_pods_are_aaaa_records() {
    let bind = Bind::start(vec![Zone::new(
        "six.test",
        1,
        &["www IN AAAA fd00::1", "www IN AAAA fd00::2", "www IN A 10.9.0.1"],
    )])
    .await;
    let (p, s) = (bind.primary.addr, bind.secondary_addr());
    let a = rfc_adapter(&bind, &["six.test"]);
    let pod = t("fd00::1", "www.six.test", &[]);
    assert_eq!(observe(&a, &pod).await.state, TrafficState::Serving);
    deregister(&a, &pod).await.expect("deregister");
    dig_is(p, "www.six.test", "AAAA", &["fd00::2"]);
    dig_is(p, "www.six.test", "A", &["10.9.0.1"]);
    let (obs, _) = wait_state(&a, &pod, TrafficState::Drained, "AAAA drained").await;
    assert!(obs.evidence.starts_with("www.six.test. AAAA fd00::1: "), "{obs:?}");
    // The A RRset does not count: fd00::2 is the last AAAA address.
    let e = deregister(&a, &t("fd00::2", "www.six.test", &[]))
        .await
        .expect_err("last AAAA");
    assert!(e.message.contains("the last address of www.six.test. AAAA"), "{e}");
    register(&a, &pod).await.expect("register");
    wait_state(&a, &pod, TrafficState::Serving, "AAAA restored").await;
    dig_is(s, "www.six.test", "AAAA", &["fd00::1", "fd00::2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_the_full_ttl_is_waited_from_the_first_observation() {
    let bind = Bind::start(vec![Zone::new(
        "restart.test",
        1,
        &["www IN A 10.9.1.1", "www IN A 10.9.1.2"],
    )])
    .await;
    let before = rfc_adapter(&bind, &["restart.test"]);
    let pod = t("10.9.1.1", "www.restart.test", &[]);
    deregister(&before, &pod).await.expect("deregister");
    wait_state(&before, &pod, TrafficState::Drained, "drained by the first instance").await;
    drop(before);

    // A new instance (a restarted gateway) knows nothing of the removal: it assumes the
    // configured TTL (2 s here, longer than the record's 1 s) from its first observation.
    let after = rfc_adapter(&bind, &["restart.test"]);
    let first = Instant::now();
    let obs = observe(&after, &pod).await;
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(obs.evidence.contains("ttl 2s assumed"), "{obs:?}");
    assert!(
        obs.remaining.is_some_and(|r| r > Duration::from_millis(1900)),
        "{obs:?}"
    );
    wait_state(&after, &pod, TrafficState::Drained, "drained after the assumed TTL").await;
    assert!(
        first.elapsed() >= Duration::from_secs(2),
        "Drained after {:?}",
        first.elapsed()
    );
}
