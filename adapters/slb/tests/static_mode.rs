//! Static-mode drain, restore, idempotency and escalation against a real HAProxy 2.6.

use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{HaproxyAdapter, HaproxyConfig};

fn adapter(h: &Haproxy) -> HaproxyAdapter {
    HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("valid config")
}

/// Starts pods s1..s3 and HAProxy, and waits until every server is UP.
async fn setup() -> (Haproxy, Vec<Pod>) {
    let (port, pods) = start_pods(&[("s1", IP1), ("s2", IP2), ("s3", IP3)], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let a = adapter(&h);
    for ip in [IP1, IP2, IP3] {
        wait_state(
            &a,
            &target(ip, port, "web"),
            TrafficState::Serving,
            "all servers UP at start",
        )
        .await;
    }
    (h, pods)
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_waits_for_the_in_flight_request_then_maint() {
    let (h, pods) = setup().await;
    let a = adapter(&h);
    let t = target(IP1, h.pod_port, "web");

    // A 600 ms request pinned to s1 by its cookie.
    let fe = h.frontend;
    let started = Instant::now();
    let held = tokio::spawn(async move {
        let mut c = Client::connect(fe).await;
        let r = c.get("/hold/600", Some("s1")).await;
        (r, Instant::now())
    });
    h.wait_scur("web", "s1", 1).await;

    tokio::time::timeout(WAIT, a.deregister(&t))
        .await
        .expect("deregister")
        .expect("deregister ok");
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(
        obs.evidence.contains("status=DRAIN") && obs.evidence.contains("scur=1"),
        "{}",
        obs.evidence
    );
    assert_eq!(h.status("web", "s1").await, "DRAIN");

    // New (non-sticky) requests no longer reach s1.
    let before = pods[0].hits();
    for _ in 0..12 {
        let r = get_once(h.frontend, "/", None).await;
        assert_eq!(r.status, 200);
        assert_ne!(r.body, "s1", "a new request reached the draining server");
    }
    assert_eq!(pods[0].hits(), before);

    // Drained only after the held request completed (590 ms of 600), and promptly after it
    // (the bound is generous: a timed assertion must not fail on a busy machine; it catches
    // a drain that waits for a deadline or a fixed sleep instead of the evidence).
    let obs = drive_drain(&a, &t, "Drained after the held request").await;
    let drained_at = Instant::now();
    let (resp, done_at) = tokio::time::timeout(WAIT, held)
        .await
        .expect("held request")
        .expect("join");
    let resp = resp.expect("the in-flight request must complete, not be cut");
    assert_eq!((resp.status, resp.body.as_str()), (200, "s1"));
    assert!(
        drained_at.duration_since(started) >= Duration::from_millis(590),
        "Drained too early"
    );
    let lag = drained_at.saturating_duration_since(done_at);
    assert!(
        lag < Duration::from_secs(2),
        "Drained {lag:?} after the request completed"
    );
    assert!(
        obs.evidence.contains("status=MAINT scur=0 used_cur=0"),
        "{}",
        obs.evidence
    );
    assert_eq!(h.status("web", "s1").await, "MAINT");
    println!(
        "drain: Drained {lag:?} after the last response; evidence: {}",
        obs.evidence
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_waits_for_the_health_check() {
    let (h, mut pods) = setup().await;
    let a = adapter(&h);
    let t = target(IP1, h.pod_port, "web");
    a.deregister(&t).await.expect("deregister");
    drive_drain(&a, &t, "drained (no traffic)").await;
    assert_eq!(h.status("web", "s1").await, "MAINT");

    // The pod restarts: nothing listens on 127.0.83.11 while we register.
    drop(pods.remove(0));
    a.register(&t).await.expect("register");
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(
        obs.state,
        TrafficState::Registered,
        "UP without a passing check: {obs:?}"
    );
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let r = get_once(h.frontend, "/", None).await;
        assert_eq!(r.status, 200, "a request was routed to the unready server");
        assert_ne!(r.body, "s1");
        let obs = a.observe(&t).await.expect("observe");
        assert_eq!(obs.state, TrafficState::Registered, "{obs:?}");
        assert!(h.status("web", "s1").await.starts_with("DOWN"));
    }

    // The pod comes back: UP after its health check passes.
    let pod = Pod::start("s1", IP1, h.pod_port).await;
    let back = Instant::now();
    let obs = wait_state(&a, &t, TrafficState::Serving, "Serving once the health check passes").await;
    println!(
        "restore: Serving {:?} after the pod listened; evidence: {}",
        back.elapsed(),
        obs.evidence
    );
    assert!(
        obs.evidence.contains("status=UP") && obs.evidence.contains("check=L4OK"),
        "{}",
        obs.evidence
    );
    let mut reached = false;
    for _ in 0..9 {
        reached |= get_once(h.frontend, "/", None).await.body == "s1";
    }
    assert!(reached && pod.hits() > 0, "restored server gets no traffic");
}

/// Why register sends `drain; health down; ready`: a bare `ready` after `maint` marks a
/// server UP at once, with nothing listening (HAProxy 2.6 behaviour, see backends.md).
#[tokio::test(flavor = "multi_thread")]
async fn haproxy_fact_plain_ready_after_maint_is_up_without_a_check() {
    let (h, mut pods) = setup().await;
    drop(pods.remove(2));
    for cmd in [
        "set server web/s3 state maint",
        "set server web/s3 health down",
        "set server web/s3 state ready",
    ] {
        assert_eq!(h.cmd(cmd).await.trim(), "", "{cmd}");
    }
    assert_eq!(
        h.status("web", "s3").await,
        "UP",
        "HAProxy changed: `ready` after `maint` no longer marks UP at once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_idempotent_and_observe_is_read_only() {
    let (h, _pods) = setup().await;
    let a = adapter(&h);
    let t = target(IP1, h.pod_port, "web");
    let snapshot = || async {
        let out = h.cmd("show servers state web").await;
        // Compare names, op state, admin state and weights (time and check columns tick).
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w.len() > 8 && w[0] != "#")
            .map(|w| [1, 3, 5, 6, 7, 8].map(|i| w[i].to_string()).join(" "))
            .collect::<Vec<_>>()
    };

    // observe on serving servers changes nothing.
    let before = snapshot().await;
    for _ in 0..20 {
        assert_eq!(a.observe(&t).await.expect("observe").state, TrafficState::Serving);
    }
    assert_eq!(snapshot().await, before);

    // register on a serving server is a no-op: it must never go DOWN (no forced `health down`).
    a.register(&t).await.expect("register 1");
    a.register(&t).await.expect("register 2");
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        assert_eq!(h.status("web", "s1").await, "UP", "register disturbed a serving server");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!h.log().contains("web/s1 is DOWN"), "{}", h.log());

    // deregister twice, then drained; deregister again on a drained (MAINT) server.
    a.deregister(&t).await.expect("deregister 1");
    a.deregister(&t).await.expect("deregister 2");
    drive_drain(&a, &t, "drained").await;
    a.deregister(&t).await.expect("deregister on a drained server");
    assert_eq!(h.status("web", "s1").await, "MAINT");

    // A pod HAProxy never knew: deregister succeeds, observe says drained (absent).
    let stranger = target("127.0.0.99".parse().unwrap(), h.pod_port, "web");
    a.deregister(&stranger).await.expect("deregister never-registered");
    let obs = a.observe(&stranger).await.expect("observe never-registered");
    assert_eq!(obs.state, TrafficState::Drained);
    assert!(obs.evidence.contains("server absent"), "{}", obs.evidence);

    // Register twice after the drain: back to serving, the second call changes nothing.
    a.register(&t).await.expect("register after drain");
    a.register(&t).await.expect("register again");
    wait_state(&a, &t, TrafficState::Serving, "serving again").await;
    assert_eq!(h.status("web", "s2").await, "UP", "another server was touched");
}

#[tokio::test(flavor = "multi_thread")]
async fn escalation_cuts_sticky_sessions_after_the_deadline() {
    let (h, _pods) = setup().await;
    let mut config = HaproxyConfig::new("lb", h.unix_endpoint());
    config.escalate_after = Some(Duration::from_millis(300));
    config.shutdown_sessions_on_escalate = true;
    let a = HaproxyAdapter::new(config).expect("config");
    let t = target(IP1, h.pod_port, "web");

    let fe = h.frontend;
    let held = tokio::spawn(async move { Client::connect(fe).await.get("/hold/10000", Some("s1")).await });
    h.wait_scur("web", "s1", 1).await;
    let t0 = Instant::now();
    a.deregister(&t).await.expect("deregister");

    // Sticky clients still reach a draining server (the reason escalation exists).
    assert_eq!(get_once(h.frontend, "/", Some("s1")).await.body, "s1");
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(obs.state, TrafficState::Draining);
    assert!(
        obs.remaining.is_some_and(|r| r <= Duration::from_millis(300)),
        "{obs:?}"
    );
    assert!(!obs.advance && obs.forced.is_none(), "nothing due yet: {obs:?}");

    let obs = drive_drain(&a, &t, "Drained after escalation").await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(h.status("web", "s1").await, "MAINT");
    // Reached by cutting sessions: reported as forced, never as a verified drain.
    let forced = obs.forced.clone().unwrap_or_default();
    assert!(
        forced.contains("sessions were cut at the escalation deadline")
            && forced.contains("shutdown sessions server web/s1"),
        "{obs:?}"
    );
    assert!(
        obs.evidence.contains("escalated to MAINT + shutdown sessions"),
        "{}",
        obs.evidence
    );
    let cut = tokio::time::timeout(WAIT, held)
        .await
        .expect("held request ends")
        .expect("join");
    // HAProxy answers the cut request with a 502 (the server side was shut down).
    assert!(
        cut.as_ref().map_or(true, |r| r.status == 502),
        "the sticky session was not cut: {cut:?}"
    );
    // In MAINT even sticky clients go elsewhere.
    assert_ne!(get_once(h.frontend, "/", Some("s1")).await.body, "s1");
    println!("escalation: Drained after {took:?}; {}", obs.evidence);

    // Later observations still say so (and change nothing), until the target is
    // registered again.
    let before = h.servers_state_snapshot("web").await;
    for _ in 0..3 {
        let again = a.observe(&t).await.expect("observe");
        assert_eq!(
            (again.state, again.forced.as_deref()),
            (TrafficState::Drained, Some(forced.as_str()))
        );
    }
    assert_eq!(h.servers_state_snapshot("web").await, before);
    a.register(&t).await.expect("register");
    let serving = wait_state(&a, &t, TrafficState::Serving, "serving again").await;
    assert!(serving.forced.is_none(), "{serving:?}");
    a.deregister(&t).await.expect("deregister (no sessions)");
    let obs = drive_drain(&a, &t, "drained again, without sessions").await;
    assert!(
        obs.forced.is_none(),
        "a drain with no sessions left is verified: {obs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn escalation_without_shutdown_waits_for_sessions_in_maint() {
    let (h, _pods) = setup().await;
    let mut config = HaproxyConfig::new("lb", h.unix_endpoint());
    config.escalate_after = Some(Duration::from_millis(200));
    let a = HaproxyAdapter::new(config).expect("config");
    let t = target(IP2, h.pod_port, "web");

    let fe = h.frontend;
    let held = tokio::spawn(async move { Client::connect(fe).await.get("/hold/900", Some("s2")).await });
    h.wait_scur("web", "s2", 1).await;
    a.deregister(&t).await.expect("deregister");
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The escalation is due: observe says so and leaves the server in DRAIN ...
    let before = h.servers_state_snapshot("web").await;
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(
        obs.advance && obs.evidence.contains("escalation to MAINT due"),
        "{obs:?}"
    );
    assert_eq!(h.servers_state_snapshot("web").await, before);
    assert_eq!(h.status("web", "s2").await, "DRAIN");
    // ... and deregister, called again as the engine does on `advance`, escalates.
    a.deregister(&t).await.expect("deregister (escalation due)");
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(obs.evidence.contains("escalated to MAINT"), "{}", obs.evidence);
    assert_eq!(h.status("web", "s2").await, "MAINT");
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(
        obs.state,
        TrafficState::Draining,
        "MAINT does not cut sessions: {obs:?}"
    );
    assert!(!obs.advance && obs.forced.is_none(), "{obs:?}");

    let obs = drive_drain(&a, &t, "Drained once the session ends").await;
    assert!(
        obs.forced.is_none(),
        "MAINT without shutdown lets the session end on its own: {obs:?}"
    );
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("held request")
        .expect("join")
        .expect("not cut");
    assert_eq!((resp.status, resp.body.as_str()), (200, "s2"));
}
