//! The ZooKeeper / Dubbo adapter against a real ZooKeeper 3.8: the override configurator,
//! the provider's own session expiring and reconnecting, idempotency and error classes.

mod common;

use std::time::{Duration, Instant};

use common::zookeeper::*;
use common::*;
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_rpc::zookeeper::dubbo::{override_url, url_encode};
use sluice_adapter_rpc::zookeeper::{ZookeeperDubboAdapter, ZookeeperDubboConfig};
use zookeeper_client as zk;

async fn children(client: &zk::Client, path: &str) -> Vec<String> {
    match tokio::time::timeout(WAIT, client.list_children(path))
        .await
        .expect("list")
    {
        Ok(c) => c,
        Err(zk::Error::NoNode) => Vec::new(),
        Err(e) => panic!("list {path}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_writes_the_override_consumers_see_and_restore_removes_it() {
    let server = zookeeper().await;
    let provider = server.client(Duration::from_secs(4)).await;
    provide(&provider, "127.0.84.11").await;
    provide(&provider, "127.0.84.12").await;
    let consumer = server.client(Duration::from_secs(4)).await;
    let p = paths("127.0.84.11");
    consumer
        .mkdir(&p.configurators, &persistent())
        .await
        .expect("consumer creates configurators");
    let (_, _, watch) = consumer
        .get_and_watch_children(&p.configurators)
        .await
        .expect("consumer subscribes");

    let a = adapter(&server);
    let t = target(IP1, &[("interface", IFACE)]);
    let (obs, _) = wait_state(&a, &t, TrafficState::Serving, "provider Serving").await;
    assert!(
        obs.evidence
            .contains("provider node dubbo://127.0.84.11:20880/org.demo.Greeter present"),
        "{obs:?}"
    );

    let start = Instant::now();
    call("deregister", a.deregister(&t)).await.expect("deregister");
    let event = tokio::time::timeout(WAIT, watch.changed())
        .await
        .expect("the consumer is notified");
    assert_eq!(event.event_type, zk::EventType::NodeChildrenChanged);
    let expected = url_encode(&override_url("127.0.84.11:20880", IFACE));
    assert_eq!(children(&consumer, &p.configurators).await, vec![expected]);
    assert_eq!(
        children(&consumer, &p.providers).await.len(),
        2,
        "provider nodes untouched"
    );
    let obs = call("observe", a.observe(&t)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    let (obs, at) = wait_state(&a, &t, TrafficState::Drained, "Drained after the settle window").await;
    assert!(at - start >= SETTLE, "{:?}", at - start);
    assert!(
        obs.evidence
            .contains("override disabled=true for 127.0.84.11:20880 in force")
            && obs.evidence.contains("consumers honour the override"),
        "{obs:?}"
    );
    println!("drained: {}", obs.evidence);
    let other = target(IP2, &[("interface", IFACE)]);
    assert_eq!(
        call("observe", a.observe(&other)).await.unwrap().state,
        TrafficState::Serving
    );

    call("register", a.register(&t)).await.expect("register");
    assert!(
        children(&consumer, &p.configurators).await.is_empty(),
        "override removed"
    );
    let (obs, _) = wait_state(&a, &t, TrafficState::Serving, "Serving after restore").await;
    println!("restored: {}", obs.evidence);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_holds_while_the_provider_session_expires_and_reconnects() {
    let server = zookeeper().await;
    let a = adapter(&server);
    let t = target(IP1, &[("interface", IFACE)]);
    let p = paths("127.0.84.11");
    // Provider sessions are detached so the tests can let them expire for real.
    let first = server.detached_client(Duration::from_secs(1)).await;
    provide(&first, "127.0.84.11").await;
    wait_state(&a, &t, TrafficState::Serving, "Serving").await;
    call("deregister", a.deregister(&t)).await.expect("deregister");
    wait_state(&a, &t, TrafficState::Drained, "Drained").await;

    // The provider hangs: its session expires and ZooKeeper removes its ephemeral node.
    let took = server.expire(first).await.expect("the provider's session to expire");
    println!("provider session expired after {took:?}");
    let watcher = server.client(Duration::from_secs(4)).await;
    assert!(
        children(&watcher, &p.providers).await.is_empty(),
        "ephemeral node gone with the session"
    );
    let obs = call("observe", a.observe(&t)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Drained, "{obs:?}");
    assert!(obs.evidence.contains("no provider node"), "{obs:?}");

    // It reconnects with a new session and re-creates its node, as Dubbo does: the override
    // still disables it, and the settle clock (keyed on the override's czxid) keeps running.
    let second = server.detached_client(Duration::from_secs(1)).await;
    provide(&second, "127.0.84.11").await;
    let obs = never_state(
        &a,
        &t,
        TrafficState::Serving,
        Duration::from_millis(500),
        "the override stays in force",
    )
    .await;
    assert_eq!(obs.state, TrafficState::Drained, "{obs:?}");
    assert!(
        obs.evidence.contains("present") && obs.evidence.contains("consumers honour the override"),
        "{obs:?}"
    );
    println!("after reconnect: {}", obs.evidence);

    call("register", a.register(&t)).await.expect("register");
    wait_state(
        &a,
        &t,
        TrafficState::Serving,
        "Serving with the re-created provider node",
    )
    .await;

    // Restore while the provider is away: Registered until it registers again.
    call("deregister", a.deregister(&t)).await.expect("deregister");
    server
        .expire(second)
        .await
        .expect("the provider's session to expire again");
    call("register", a.register(&t))
        .await
        .expect("register with no provider");
    let (obs, _) = wait_state(&a, &t, TrafficState::Registered, "Registered without a provider").await;
    assert!(obs.evidence.contains("waiting for the provider to register"), "{obs:?}");
    let third = server.client(Duration::from_secs(4)).await;
    provide(&third, "127.0.84.11").await;
    wait_state(&a, &t, TrafficState::Serving, "Serving once it registered").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_idempotent_and_never_registered_is_drained() {
    let server = zookeeper().await;
    let provider = server.client(Duration::from_secs(4)).await;
    provide(&provider, "127.0.84.11").await; // the interface exists; no configurators node yet
    let a = adapter(&server);
    let never = target(IP3, &[("interface", IFACE)]);
    let p = paths("127.0.84.13");

    call("deregister", a.deregister(&never))
        .await
        .expect("deregister never-registered");
    call("deregister", a.deregister(&never))
        .await
        .expect("deregister twice");
    assert_eq!(
        children(&provider, &p.configurators).await.len(),
        1,
        "one override, configurators created"
    );
    let (obs, _) = wait_state(&a, &never, TrafficState::Drained, "Drained").await;
    assert!(
        obs.evidence.contains("no provider node for 127.0.84.13:20880"),
        "{obs:?}"
    );

    call("register", a.register(&never)).await.expect("register");
    call("register", a.register(&never)).await.expect("register twice");
    assert!(children(&provider, &p.configurators).await.is_empty());
    assert_eq!(
        call("observe", a.observe(&never)).await.unwrap().state,
        TrafficState::Registered
    );

    let t = target(IP1, &[("interface", IFACE)]);
    call("register", a.register(&t))
        .await
        .expect("register a serving provider");
    wait_state(&a, &t, TrafficState::Serving, "Serving").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_override_written_by_someone_else_is_reported_not_removed() {
    let server = zookeeper().await;
    let provider = server.client(Duration::from_secs(4)).await;
    provide(&provider, "127.0.84.11").await;
    let p = paths("127.0.84.11");
    provider.mkdir(&p.configurators, &persistent()).await.expect("mkdir");
    // Dubbo admin's own "disable", with its parameters in another order.
    let admin = format!(
        "{}/{}",
        p.configurators,
        url_encode(&format!(
            "override://127.0.84.11:20880/{IFACE}?application=demo-provider&category=configurators&dynamic=false\
             &enabled=true&disabled=true"
        ))
    );
    provider
        .create(&admin, b"", &persistent())
        .await
        .expect("admin override");

    let a = adapter(&server);
    let t = target(IP1, &[("interface", IFACE)]);
    let (obs, _) = wait_state(&a, &t, TrafficState::Drained, "drained by the admin's override").await;
    assert!(obs.evidence.contains("not Sluice's"), "{obs:?}");
    call("register", a.register(&t)).await.expect("register");
    let (obs, _) = wait_state(&a, &t, TrafficState::Registered, "still disabled by the admin").await;
    assert!(obs.evidence.contains("1 of them not written by Sluice"), "{obs:?}");
    assert_eq!(
        children(&provider, &p.configurators).await.len(),
        1,
        "the admin's override stays"
    );
    provider.delete(&admin, None).await.expect("admin re-enables");
    wait_state(&a, &t, TrafficState::Serving, "Serving").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_interfaces_are_permanent_and_a_dead_zookeeper_is_retryable() {
    let mut server = zookeeper().await;
    let provider = server.client(Duration::from_secs(4)).await;
    provide(&provider, "127.0.84.11").await;
    let a = adapter(&server);
    // Draining from an interface nobody registered: nothing offers the pod, so it is
    // already drained (the contract's "deregister tolerates never-registered").
    let missing = target(IP1, &[("interface", "org.demo.Missing")]);
    call("deregister", a.deregister(&missing))
        .await
        .expect("deregister of a missing interface succeeds");
    assert_eq!(
        call("observe", a.observe(&missing)).await.expect("observe").state,
        TrafficState::Drained
    );
    // Restoring into it is a binding mistake: permanent, from then on.
    assert_permanent(call("register", a.register(&missing)).await, "does not exist");
    assert_permanent(call("observe", a.observe(&missing)).await, "does not exist");
    assert_permanent(a.observe(&target(IP1, &[])).await, "no `interface` parameter");
    assert_permanent(
        a.observe(&target(IP1, &[("interface", "org/demo")])).await,
        "invalid interface",
    );
    call("health", a.health()).await.expect("healthy");

    drop(provider);
    server.stop();
    let t = target(IP1, &[("interface", IFACE)]);
    let started = Instant::now();
    assert_retryable(call("observe", a.observe(&t)).await, "ZooKeeper at");
    assert_retryable(call("deregister", a.deregister(&t)).await, "ZooKeeper at");
    assert_retryable(call("register", a.register(&t)).await, "ZooKeeper at");
    assert_retryable(call("health", a.health()).await, "ZooKeeper at");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "bounded by the call timeout"
    );

    let fresh = ZookeeperDubboAdapter::new(ZookeeperDubboConfig::new("z", server.connect_string())).expect("new()");
    assert_retryable(call("health", fresh.health()).await, "ZooKeeper at");
}

/// An ensemble whose Dubbo tree is closed by digest ACLs: without the credentials (or with a
/// wrong password) every call fails permanently and says what to check; with the password
/// from a file, drain and restore work.
#[tokio::test(flavor = "multi_thread")]
async fn digest_acls_refuse_wrong_credentials_permanently_and_accept_the_right_ones() {
    let server = zookeeper().await;
    let owner = tokio::time::timeout(
        WAIT,
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(4))
            .with_auth("digest", b"sluice:s3cret")
            .connect(&server.connect_string()),
    )
    .await
    .expect("connect within the wait bound")
    .expect("connect with digest auth");
    // Closed to everyone but the digest user: the interface, providers and configurators.
    let iface = "org.demo.Secure";
    let closed = zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all());
    for path in [
        "/dubbo".to_string(),
        format!("/dubbo/{iface}"),
        format!("/dubbo/{iface}/providers"),
        format!("/dubbo/{iface}/configurators"),
    ] {
        owner.create(&path, b"", &closed).await.expect("create a closed node");
    }
    let provider = format!(
        "/dubbo/{iface}/providers/{}",
        url_encode(&format!(
            "dubbo://127.0.84.11:20880/{iface}?application=secure&interface={iface}&side=provider"
        ))
    );
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::creator_all());
    owner.create(&provider, b"", &ephemeral).await.expect("provider node");

    let dir = sluice_adapter::testing::temp_dir("rpc-zk-digest");
    let (right, wrong) = (dir.join("right"), dir.join("wrong"));
    std::fs::write(&right, "s3cret\n").expect("password file");
    std::fs::write(&wrong, "guess\n").expect("password file");
    let with = |extra: &str| {
        let yaml = format!(
            "name: dubbo\nconnect: {}\nsettleSeconds: 0.3\ntimeoutSeconds: 2\nsessionTimeoutSeconds: 4\n{extra}",
            server.connect_string()
        );
        ZookeeperDubboAdapter::new(serde_yaml::from_str(&yaml).expect("config")).expect("adapter")
    };
    let t = target(IP1, &[("interface", iface)]);

    for (who, a) in [
        ("no credentials", with("")),
        (
            "a wrong password",
            with(&format!(
                "digestUser: sluice\ndigestPasswordFile: {}\n",
                wrong.display()
            )),
        ),
    ] {
        println!("{who}:");
        assert_permanent(call("observe", a.observe(&t)).await, "check `digestUser`");
        assert_permanent(call("deregister", a.deregister(&t)).await, "check `digestUser`");
    }
    // Nothing was written by the refused adapters.
    assert!(children(&owner, &format!("/dubbo/{iface}/configurators"))
        .await
        .is_empty());

    let a = with(&format!(
        "digestUser: sluice\ndigestPasswordFile: {}\n",
        right.display()
    ));
    assert_eq!(
        call("observe", a.observe(&t)).await.expect("observe").state,
        TrafficState::Serving
    );
    call("deregister", a.deregister(&t)).await.expect("deregister");
    wait_state(&a, &t, TrafficState::Drained, "drained with the digest user").await;
    assert_eq!(
        children(&owner, &format!("/dubbo/{iface}/configurators")).await.len(),
        1
    );
    call("register", a.register(&t)).await.expect("register");
    wait_state(&a, &t, TrafficState::Serving, "serving again").await;
    assert!(children(&owner, &format!("/dubbo/{iface}/configurators"))
        .await
        .is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// Live ZooKeeper sessions other than `except`, from the "Session Sets" part of `dump` (one
/// id per indented line), once `want` holds of them (a `dump` can come back empty or
/// mid-update under load); fails after the wait bound.
async fn other_sessions(
    server: &sluice_adapter_rpc::testing::ZooKeeperServer,
    except: &str,
    want: impl Fn(&[String]) -> bool,
    what: &str,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let dump = server.four_letter("dump").await.unwrap_or_default();
        let sessions: Vec<String> = dump
            .split("ephemeral nodes dump")
            .next()
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("0x") && *l != except)
            .map(String::from)
            .collect();
        if want(&sessions) {
            return sessions;
        }
        assert!(start.elapsed() < WAIT, "{what}: sessions {sessions:?} in\n{dump}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The adapter's *own* session expires while ZooKeeper is out of its reach (longer than the
/// session timeout): calls fail retryable meanwhile, then the adapter opens a new session,
/// the drain it wrote (a persistent override, not tied to the session) is still in force,
/// and the restore goes through the new session.
#[tokio::test(flavor = "multi_thread")]
async fn the_adapters_own_session_expires_and_is_replaced() {
    let server = zookeeper().await;
    let provider = server.client(Duration::from_secs(30)).await;
    provide(&provider, "127.0.84.11").await;
    let addr: std::net::SocketAddr = server.connect_string().parse().expect("host:port");
    let proxy = sluice_conformance::proxy::FaultyProxy::start(addr)
        .await
        .expect("proxy");
    let yaml = format!(
        "name: dubbo\nconnect: {}\nsettleSeconds: 0.3\ntimeoutSeconds: 2\nsessionTimeoutSeconds: 4\n",
        proxy.addr()
    );
    let a = ZookeeperDubboAdapter::new(serde_yaml::from_str(&yaml).expect("config")).expect("adapter");
    let t = target(IP1, &[("interface", IFACE)]);
    call("deregister", a.deregister(&t)).await.expect("deregister");
    wait_state(&a, &t, TrafficState::Drained, "drained before the outage").await;
    let provider_session = provider.session_id().to_string();
    let before = other_sessions(
        &server,
        &provider_session,
        |s| s.len() == 1,
        "one session for the adapter",
    )
    .await;

    // Out of reach for twice the session timeout: ZooKeeper expires the adapter's session.
    proxy.set_up(false).await;
    let outage = Instant::now();
    let mut during = Vec::new();
    while outage.elapsed() < Duration::from_secs(8) {
        let e = call("observe", a.observe(&t))
            .await
            .expect_err("ZooKeeper is out of reach");
        assert!(e.is_retryable(), "an outage is retryable: {e}");
        during.push(e.message);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("during the outage: {:?}", during.last());
    proxy.set_up(true).await;

    // The first calls may report the ended session; then a new one serves, and the drain
    // written before the outage still holds.
    let back = Instant::now();
    let mut errors = Vec::new();
    let obs = loop {
        match call("observe", a.observe(&t)).await {
            Ok(obs) => break obs,
            Err(e) => {
                assert!(e.is_retryable(), "reconnecting is retryable: {e}");
                errors.push(e.message);
            }
        }
        assert!(back.elapsed() < WAIT, "no new session within {WAIT:?}: {errors:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("after the outage: {errors:?}");
    assert_eq!(obs.state, TrafficState::Drained, "{}", obs.evidence);
    other_sessions(
        &server,
        &provider_session,
        |s| s.len() == 1 && !s.contains(&before[0]),
        "the adapter's session expired and was replaced",
    )
    .await;

    call("register", a.register(&t))
        .await
        .expect("register on the new session");
    wait_state(&a, &t, TrafficState::Serving, "restored after the session was replaced").await;
}
