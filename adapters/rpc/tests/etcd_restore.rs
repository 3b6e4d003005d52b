//! The etcd adapter against a real etcd 3.4, restoring and the rest: leases, a gateway
//! restart, the custom layout's disabled form, idempotency and error classes.

mod common;

use std::time::{Duration, Instant};

use common::etcd::*;
use common::*;
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_rpc::etcd::{EtcdAdapter, EtcdConfig};

#[tokio::test(flavor = "multi_thread")]
async fn restore_reuses_the_service_lease_or_keeps_its_own_alive() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let t = target(IP1, &[("service", "greeter")]);

    // The service's lease still lives (its keep-alive runs): the key goes back under it.
    let a = adapter(&etcd, "preset: grpc-go\nprefix: services/\n");
    let lease = c.lease_grant(10, None).await.expect("lease").id();
    put(&mut c, GRPC_KEY, GRPC_VALUE, lease).await;
    call("deregister", a.deregister(&t)).await.expect("deregister");
    call("register", a.register(&t)).await.expect("register");
    assert_eq!(
        get(&mut c, GRPC_KEY).await.map(|v| v.1),
        Some(lease),
        "the service's lease"
    );
    c.lease_revoke(lease).await.expect("revoke");
    assert_eq!(
        get(&mut c, GRPC_KEY).await,
        None,
        "the key dies with the service's lease"
    );

    // No live lease to reuse and `leaseTtlSeconds: 2`: the gateway's own lease, kept alive
    // by the adapter for as long as it exists.
    let b = adapter(&etcd, "preset: grpc-go\nprefix: services/\nleaseTtlSeconds: 2\n");
    call("register", b.register(&t)).await.expect("register with own lease");
    let (_, own, _) = get(&mut c, GRPC_KEY).await.expect("key present");
    assert!(own != 0 && own != lease, "a new lease: {own:x}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        get(&mut c, GRPC_KEY).await.map(|v| v.1),
        Some(own),
        "kept alive past its TTL"
    );
    drop(b); // the gateway goes away: nobody keeps the lease alive
    let expired = tokio::time::timeout(WAIT, async {
        while get(&mut c, GRPC_KEY).await.is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    expired.expect("the key to expire with the adapter's lease");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_the_clock_starts_again_and_the_value_is_rebuilt() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let t = target(IP1, &[("service", "greeter")]);
    put(&mut c, GRPC_KEY, GRPC_VALUE, 0).await;
    let first = adapter(&etcd, "preset: grpc-go\nprefix: services/\n");
    call("deregister", first.deregister(&t)).await.expect("deregister");
    wait_state(&first, &t, TrafficState::Drained, "Drained").await;
    drop(first);

    let second = adapter(&etcd, "preset: grpc-go\nprefix: services/\n");
    let restarted = Instant::now();
    let obs = call("observe", second.observe(&t)).await.unwrap();
    assert_eq!(
        obs.state,
        TrafficState::Draining,
        "no memory: the clock starts now: {obs:?}"
    );
    let (_, at) = wait_state(&second, &t, TrafficState::Drained, "Drained again").await;
    assert!(at - restarted >= SETTLE);
    call("register", second.register(&t)).await.expect("register");
    assert_eq!(
        get(&mut c, GRPC_KEY).await.map(|v| v.0).as_deref(),
        Some(r#"{"Op":0,"Addr":"127.0.84.11:20880","Metadata":null}"#),
        "rebuilt from the preset"
    );
    wait_state(&second, &t, TrafficState::Serving, "Serving").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_layout_writes_the_disabled_form_and_keeps_the_lease() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let a = adapter(
        &etcd,
        "preset: custom\nkeyTemplate: /svc/{service}/{addr}\nvalueTemplate: '{\"addr\":\"{addr}\",\"state\":\"up\"}'\n\
         disabledValueTemplate: '{\"addr\":\"{addr}\",\"state\":\"down\"}'\n",
    );
    let t = target(IP1, &[("service", "greeter")]);
    let key = "/svc/greeter/127.0.84.11:20880";
    let lease = c.lease_grant(30, None).await.expect("lease").id();
    put(&mut c, key, r#"{"addr":"127.0.84.11:20880","state":"up"}"#, lease).await;
    wait_state(&a, &t, TrafficState::Serving, "Serving").await;

    call("deregister", a.deregister(&t)).await.expect("deregister");
    let (value, kept, _) = get(&mut c, key).await.expect("key kept");
    assert_eq!(
        (value.as_str(), kept),
        (r#"{"addr":"127.0.84.11:20880","state":"down"}"#, lease)
    );
    let (obs, _) = wait_state(&a, &t, TrafficState::Drained, "Drained").await;
    assert!(obs.evidence.contains("holds the disabled value"), "{obs:?}");

    call("register", a.register(&t)).await.expect("register");
    let (value, kept, _) = get(&mut c, key).await.expect("key kept");
    assert_eq!(
        (value.as_str(), kept),
        (r#"{"addr":"127.0.84.11:20880","state":"up"}"#, lease)
    );
    wait_state(&a, &t, TrafficState::Serving, "Serving again").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_are_idempotent_and_never_registered_is_drained() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    let a = adapter(&etcd, "preset: grpc-go\nprefix: services/\n");
    let never = target(IP3, &[("service", "greeter")]);
    call("deregister", a.deregister(&never))
        .await
        .expect("deregister never-registered");
    call("deregister", a.deregister(&never)).await.expect("twice");
    let (obs, _) = wait_state(&a, &never, TrafficState::Drained, "never-registered Drained").await;
    assert!(obs.evidence.contains("absent"), "{obs:?}");
    assert!(keys(&mut c, "services/").await.is_empty(), "nothing written");

    let t = target(IP1, &[("service", "greeter")]);
    put(&mut c, GRPC_KEY, GRPC_VALUE, 0).await;
    call("register", a.register(&t))
        .await
        .expect("register a registered pod");
    call("register", a.register(&t)).await.expect("twice");
    assert_eq!(get(&mut c, GRPC_KEY).await.map(|v| v.0).as_deref(), Some(GRPC_VALUE));
    call("deregister", a.deregister(&t)).await.expect("deregister");
    call("deregister", a.deregister(&t)).await.expect("deregister twice");
    wait_state(&a, &t, TrafficState::Drained, "Drained").await;
    call("register", a.register(&t)).await.expect("register");
    assert_eq!(get(&mut c, GRPC_KEY).await.map(|v| v.0).as_deref(), Some(GRPC_VALUE));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_targets_are_permanent_and_a_dead_etcd_is_retryable() {
    let mut etcd = etcd().await;
    let a = adapter(
        &etcd,
        "preset: grpc-go\nprefix: services/\nallowedServices: [greeter]\n",
    );
    assert_permanent(a.observe(&target(IP1, &[])).await, "no `service` parameter");
    assert_permanent(a.observe(&target(IP1, &[("service", "payments")])).await, "allow-list");
    assert_permanent(a.observe(&target(IP1, &[("service", "a\"b")])).await, "invalid service");
    let escape = target(IP1, &[("service", "greeter"), ("key", "/registry/{addr}")]);
    assert_permanent(a.deregister(&escape).await, "outside the allowed roots");
    call("health", a.health()).await.expect("healthy");

    etcd.stop();
    let t = target(IP1, &[("service", "greeter")]);
    let started = Instant::now();
    assert_retryable(call("observe", a.observe(&t)).await, "etcd at");
    assert_retryable(call("deregister", a.deregister(&t)).await, "etcd at");
    assert_retryable(call("register", a.register(&t)).await, "etcd at");
    assert_retryable(call("health", a.health()).await, "etcd at");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by the call timeout"
    );

    let fresh = EtcdAdapter::new(EtcdConfig::new(
        "r",
        vec![etcd.endpoint()],
        sluice_adapter_rpc::etcd::Preset::GrpcGo,
    ))
    .expect("new() does not connect");
    assert_retryable(call("health", fresh.health()).await, "etcd at");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_permanent() {
    let etcd = etcd().await;
    let mut c = etcd.client().await;
    c.user_add("root", "s3cret", None).await.expect("user add");
    c.user_grant_role("root", "root").await.expect("grant root");
    c.auth_enable().await.expect("auth enable");

    let dir = std::env::temp_dir().join(format!("sluice-rpc-etcd-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (good, bad) = (dir.join("good"), dir.join("bad"));
    std::fs::write(&good, "s3cret\n").unwrap();
    std::fs::write(&bad, "nope\n").unwrap();

    let with = |file: &std::path::Path| {
        adapter(
            &etcd,
            &format!("preset: grpc-go\nusername: root\npasswordFile: {}\n", file.display()),
        )
    };
    assert_permanent(call("health", with(&bad).health()).await, "authentication");
    let anonymous = adapter(&etcd, "preset: grpc-go\n");
    assert_permanent(
        call("observe", anonymous.observe(&target(IP1, &[("service", "g")]))).await,
        "etcd at",
    );

    let a = with(&good);
    call("health", a.health()).await.expect("good credentials");
    let t = target(IP1, &[("service", "greeter")]);
    call("deregister", a.deregister(&t))
        .await
        .expect("deregister with auth");
    wait_state(&a, &t, TrafficState::Drained, "Drained with auth").await;
    std::fs::remove_dir_all(&dir).unwrap();
}
