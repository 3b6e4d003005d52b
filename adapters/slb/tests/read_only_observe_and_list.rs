//! `observe` never writes (every step of a drain is `deregister`'s, announced by
//! `advance`), and `list` reports exactly the adapter's own dynamic servers — against a
//! real HAProxy 2.6.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{dynamic_server_name, HaproxyAdapter, HaproxyConfig, Mode};

const DYN1: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 41);
const DYN2: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 42);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 43);
const MOVED: Ipv4Addr = Ipv4Addr::new(127, 0, 83, 44);

fn dynamic_adapter(h: &Haproxy, allowed: &[&str]) -> HaproxyAdapter {
    let mut config = HaproxyConfig::new("lb-dyn", h.unix_endpoint());
    config.mode = Mode::Dynamic {
        check: true,
        check_options: "inter 100 rise 1 fall 1".split(' ').map(String::from).collect(),
    };
    config.allowed_backends = allowed.iter().map(|b| b.to_string()).collect();
    HaproxyAdapter::new(config).expect("config")
}

fn scope(backend: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("backend".to_string(), backend.to_string())])
}

#[tokio::test(flavor = "multi_thread")]
async fn observe_leaves_an_idle_drain_server_in_drain_and_says_advance() {
    let (port, _pods) = start_pods(&[("s1", IP1), ("s2", IP2), ("s3", IP3)], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let a = HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("config");
    let t = target(IP1, port, "web");
    wait_state(&a, &t, TrafficState::Serving, "s1 UP at start").await;

    a.deregister(&t).await.expect("deregister");
    assert_eq!(h.status("web", "s1").await, "DRAIN");

    // No traffic: the server is idle in DRAIN, the case where the old `observe` set MAINT.
    let before = h.servers_state_snapshot("web").await;
    for i in 0..10 {
        let obs = a.observe(&t).await.expect("observe");
        assert_eq!(obs.state, TrafficState::Draining, "observation {i}: {obs:?}");
        assert!(
            obs.advance && obs.evidence.contains("status=DRAIN scur=0 used_cur=0"),
            "observation {i}: {obs:?}"
        );
        assert!(obs.evidence.contains("MAINT due"), "{}", obs.evidence);
        assert!(obs.forced.is_none(), "{obs:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.servers_state_snapshot("web").await, before, "observe changed HAProxy");
    assert_eq!(h.status("web", "s1").await, "DRAIN");

    // deregister, called again as the engine does on `advance`, takes the step.
    a.deregister(&t).await.expect("deregister (MAINT due)");
    assert_eq!(h.status("web", "s1").await, "MAINT");
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(obs.state, TrafficState::Drained, "{obs:?}");
    assert!(!obs.advance && obs.forced.is_none(), "{obs:?}");
    assert!(
        obs.evidence.contains("status=MAINT scur=0 used_cur=0")
            && obs.evidence.contains("drain verified, set MAINT after"),
        "{}",
        obs.evidence
    );

    // Nothing left to do: deregister and observe change nothing any more.
    let drained = h.servers_state_snapshot("web").await;
    assert_ne!(drained, before);
    a.deregister(&t).await.expect("deregister on MAINT");
    assert_eq!(a.observe(&t).await.expect("observe").state, TrafficState::Drained);
    assert_eq!(h.servers_state_snapshot("web").await, drained);
    for s in ["s2", "s3"] {
        assert_eq!(h.status("web", s).await, "UP", "{s} was touched");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_dynamic_server_in_maint_is_deleted_by_deregister_not_by_observe() {
    let (port, _pods) = start_pods(&[("d1", DYN1)], &[]).await;
    let h = Haproxy::start(&[], port).await;
    let a = dynamic_adapter(&h, &[]);
    let t = target(DYN1, port, "dyn");
    let name = dynamic_server_name(DYN1.into(), port);
    a.register(&t).await.expect("register");
    wait_state(&a, &t, TrafficState::Serving, "dynamic server UP").await;

    // Idle in DRAIN: one deregister sets MAINT, reads again and deletes the server.
    a.deregister(&t).await.expect("deregister");
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!((obs.state, obs.advance), (TrafficState::Draining, true), "{obs:?}");
    a.deregister(&t).await.expect("deregister (MAINT due)");
    assert!(!h.cmd("show servers state dyn").await.contains(&name));
    let obs = a.observe(&t).await.expect("observe");
    assert_eq!(obs.state, TrafficState::Drained, "{obs:?}");
    assert!(
        obs.evidence.contains("server absent") && obs.evidence.contains("server deleted"),
        "{}",
        obs.evidence
    );

    // A dynamic server idle in MAINT (e.g. a deregister cut short after `state maint`, or
    // an escalation whose sessions ended since): observe says the deletion is due, and
    // leaves the server where it is.
    a.register(&t).await.expect("register again");
    wait_state(&a, &t, TrafficState::Serving, "dynamic server UP again").await;
    assert_eq!(h.cmd(&format!("set server dyn/{name} state maint")).await.trim(), "");
    let before = h.servers_state_snapshot("dyn").await;
    for i in 0..10 {
        let obs = a.observe(&t).await.expect("observe");
        assert_eq!(
            (obs.state, obs.advance),
            (TrafficState::Draining, true),
            "observation {i}: {obs:?}"
        );
        assert!(obs.evidence.contains("del server due"), "{}", obs.evidence);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.servers_state_snapshot("dyn").await, before, "observe changed HAProxy");
    assert!(h.cmd("show servers state dyn").await.contains(&name));
    a.deregister(&t).await.expect("deregister (del server due)");
    assert!(!h.cmd("show servers state dyn").await.contains(&name));
    let obs = drive_drain(&a, &t, "deleted dynamic server observes Drained").await;
    assert!(obs.evidence.contains("server absent"), "{}", obs.evidence);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_reports_exactly_the_dynamic_servers_of_the_backend() {
    let (port, _pods) = start_pods(&[("s1", IP1)], &[DYN1, DYN2, OTHER, MOVED]).await;
    let h = Haproxy::start(&three_servers()[..1], port).await;
    let a = dynamic_adapter(&h, &[]);

    // Nothing added yet.
    assert_eq!(a.list(&scope("dyn")).await.expect("list"), Some(Vec::new()));

    // Two pods added by the adapter (nothing listens: they stay DOWN, which list does not
    // care about), and two servers it did not create: another name, and a `sluice-*` name
    // whose address was changed outside Sluice.
    for ip in [DYN1, DYN2] {
        a.register(&target(ip, port, "dyn")).await.expect("register");
    }
    for line in [
        format!("add server dyn/other {OTHER}:{port}"),
        format!(
            "add server dyn/{} {MOVED}:{port}",
            dynamic_server_name(OTHER.into(), port)
        ),
    ] {
        let out = h.cmd(&line).await;
        assert!(out.contains("New server registered"), "{line}: {out}");
    }

    let mut listed = a.list(&scope("dyn")).await.expect("list").expect("dynamic mode lists");
    listed.sort();
    let got: Vec<(std::net::IpAddr, u16, BTreeMap<String, String>)> =
        listed.iter().map(|l| (l.ip, l.port, l.params.clone())).collect();
    assert_eq!(
        got,
        vec![(DYN1.into(), port, scope("dyn")), (DYN2.into(), port, scope("dyn")),],
        "{listed:?}"
    );
    for (l, ip) in listed.iter().zip([DYN1, DYN2]) {
        let server = format!("server=dyn/{}", dynamic_server_name(ip.into(), port));
        assert!(l.evidence.contains(&server) && l.evidence.contains("status="), "{l:?}");
    }

    // Another backend's servers (declared in haproxy.cfg) are never listed.
    assert_eq!(a.list(&scope("web")).await.expect("list web"), Some(Vec::new()));

    // Drained and deleted: no longer listed.
    let t1 = target(DYN1, port, "dyn");
    a.deregister(&t1).await.expect("deregister");
    drive_drain(&a, &t1, "dynamic server deleted").await;
    let listed = a.list(&scope("dyn")).await.expect("list").expect("dynamic mode lists");
    assert_eq!(
        listed.iter().map(|l| l.ip).collect::<Vec<_>>(),
        vec![std::net::IpAddr::from(DYN2)],
        "{listed:?}"
    );

    // The same checks as every other call: a `backend`, a valid name, an allowed one.
    let e = a.list(&BTreeMap::new()).await.unwrap_err();
    assert!(!e.is_retryable() && e.message.contains("no `backend` parameter"), "{e}");
    let e = a.list(&scope("nope")).await.unwrap_err();
    assert!(
        !e.is_retryable() && e.message.contains("backend 'nope' not found"),
        "{e}"
    );
    let e = a.list(&scope("dyn;del server dyn/other")).await.unwrap_err();
    assert!(
        !e.is_retryable() && e.message.contains("invalid HAProxy backend name"),
        "{e}"
    );
    let limited = dynamic_adapter(&h, &["web"]);
    let e = limited.list(&scope("dyn")).await.unwrap_err();
    assert!(!e.is_retryable() && e.message.contains("allowedBackends"), "{e}");

    // Static mode: servers declared in haproxy.cfg are not the adapter's to sweep.
    let stat = HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).expect("config");
    assert_eq!(stat.list(&scope("web")).await.expect("static list"), None);
    assert_eq!(stat.list(&scope("dyn")).await.expect("static list"), None);
}
