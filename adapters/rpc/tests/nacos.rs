//! The Nacos adapter against the contract test double of the Nacos 2.x Open API
//! (`common/nacos_double.rs`). No Nacos server can be installed here: these tests show the
//! adapter speaks the published API, not that a real Nacos behaves like the double.

mod common;

use std::time::Instant;

use common::nacos_double::NacosDouble;
use common::*;
use serde_json::json;
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_rpc::nacos::{NacosAdapter, NacosConfig, WEIGHT_KEY};

fn adapter(double: &NacosDouble, extra: &str) -> NacosAdapter {
    let yaml = format!(
        "name: nacos\nserverAddr: {}\nsettleSeconds: 0.3\ntimeoutSeconds: 2\n{extra}",
        double.server_addr()
    );
    let config: NacosConfig = serde_yaml::from_str(&yaml).expect("config");
    NacosAdapter::new(config).expect("adapter")
}

fn puts(double: &NacosDouble) -> usize {
    double.requests().iter().filter(|r| r.method == "PUT").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn disabling_keeps_weight_and_metadata_and_restore_re_enables() {
    let double = NacosDouble::start().await;
    double.register("greeter", "127.0.84.11", PORT, 2.5, json!({"version": "v1"}));
    double.register("greeter", "127.0.84.12", PORT, 1.0, json!({}));
    let a = adapter(&double, "");
    let t = target(IP1, &[("service", "greeter")]);

    let obs = call("observe", a.observe(&t)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Serving, "{obs:?}");
    assert!(
        obs.evidence
            .contains("listed in 'DEFAULT_GROUP@@greeter': enabled=true weight=2.5 healthy=true"),
        "{obs:?}"
    );

    let start = Instant::now();
    call("deregister", a.deregister(&t)).await.expect("deregister");
    let i = double.instance("greeter", "127.0.84.11", PORT).unwrap();
    assert_eq!((i.enabled, i.weight), (false, 2.5), "disabled, weight carried over");
    assert_eq!(i.metadata.get("version"), Some(&json!("v1")), "metadata carried over");
    assert_eq!(
        call("observe", a.observe(&t)).await.unwrap().state,
        TrafficState::Draining
    );
    let (obs, at) = wait_state(&a, &t, TrafficState::Drained, "Drained after the settle window").await;
    assert!(at - start >= SETTLE, "{:?}", at - start);
    assert!(
        obs.evidence.contains("does not offer it") && obs.evidence.contains("lists enabled instances only"),
        "{obs:?}"
    );
    println!("drained: {}", obs.evidence);
    assert!(
        double.instance("greeter", "127.0.84.12", PORT).unwrap().enabled,
        "the other instance untouched"
    );

    let before = puts(&double);
    call("deregister", a.deregister(&t)).await.expect("deregister twice");
    assert_eq!(puts(&double), before, "a second deregister writes nothing");

    call("register", a.register(&t)).await.expect("register");
    let i = double.instance("greeter", "127.0.84.11", PORT).unwrap();
    assert_eq!((i.enabled, i.weight), (true, 2.5));
    assert_eq!(i.metadata.get("version"), Some(&json!("v1")));
    let (obs, _) = wait_state(&a, &t, TrafficState::Serving, "Serving after restore").await;
    println!("restored: {}", obs.evidence);
    let before = puts(&double);
    call("register", a.register(&t)).await.expect("register twice");
    assert_eq!(puts(&double), before, "a second register writes nothing");

    // The list API's ip/port name a push subscriber; the adapter never sends them there.
    let lists: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| r.path == "/nacos/v2/ns/instance/list")
        .collect();
    assert!(!lists.is_empty());
    assert!(lists
        .iter()
        .all(|r| !r.params.contains_key("ip") && !r.params.contains_key("port")));
}

#[tokio::test(flavor = "multi_thread")]
async fn weight_mode_keeps_the_original_weight_for_any_restore() {
    let double = NacosDouble::start().await;
    double.register("greeter", "127.0.84.11", PORT, 3.0, json!({"version": "v1"}));
    let a = adapter(&double, "drainBy: weight\n");
    let t = target(IP1, &[("service", "greeter")]);
    call("deregister", a.deregister(&t)).await.expect("deregister");
    let i = double.instance("greeter", "127.0.84.11", PORT).unwrap();
    assert_eq!((i.enabled, i.weight), (true, 0.0));
    assert_eq!(i.metadata.get(WEIGHT_KEY), Some(&json!("3")));
    let (obs, _) = wait_state(&a, &t, TrafficState::Drained, "Drained at weight 0").await;
    assert!(obs.evidence.contains("weight=0"), "{obs:?}");

    // A gateway restarted in between still restores the original weight (from metadata).
    let restarted = adapter(&double, "drainBy: weight\n");
    call("register", restarted.register(&t)).await.expect("register");
    let i = double.instance("greeter", "127.0.84.11", PORT).unwrap();
    assert_eq!(i.weight, 3.0);
    assert_eq!(i.metadata.get(WEIGHT_KEY), None);
    assert_eq!(i.metadata.get("version"), Some(&json!("v1")));
    wait_state(&restarted, &t, TrafficState::Serving, "Serving at weight 3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absent_instances_and_outside_re_enables() {
    let double = NacosDouble::start().await;
    double.register("greeter", "127.0.84.11", PORT, 1.0, json!({}));
    let a = adapter(&double, "");
    let never = target(IP3, &[("service", "greeter")]);
    call("deregister", a.deregister(&never))
        .await
        .expect("deregister never-registered");
    assert_eq!(puts(&double), 0);
    let (obs, _) = wait_state(&a, &never, TrafficState::Drained, "absent is Drained").await;
    assert!(obs.evidence.contains("is not registered"), "{obs:?}");
    assert_retryable(call("register", a.register(&never)).await, "not registered");
    let obs = call("observe", a.observe(&never)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Registered, "{obs:?}");
    assert!(
        obs.evidence.contains("waiting for the service to register itself"),
        "{obs:?}"
    );

    let t = target(IP1, &[("service", "greeter")]);
    call("deregister", a.deregister(&t)).await.expect("deregister");
    double.edit("greeter", "127.0.84.11", PORT, |i| i.enabled = true); // an operator re-enables it
    let obs = call("observe", a.observe(&t)).await.unwrap();
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(obs.evidence.contains("still offered"), "{obs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_tokens_are_reused_renewed_and_bad_credentials_are_permanent() {
    let double = NacosDouble::start().await;
    double.register("greeter", "127.0.84.11", PORT, 1.0, json!({}));
    double.enable_auth("sluice", "s3cret");
    let dir = std::env::temp_dir().join(format!("sluice-rpc-nacos-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in [("good", "s3cret\n"), ("bad", "wrong\n"), ("token", "forged\n")] {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let t = target(IP1, &[("service", "greeter")]);

    let a = adapter(
        &double,
        &format!("username: sluice\npasswordFile: {}\n", dir.join("good").display()),
    );
    call("health", a.health()).await.expect("health with a login");
    call("deregister", a.deregister(&t)).await.expect("deregister");
    wait_state(&a, &t, TrafficState::Drained, "Drained").await;
    assert_eq!(double.logins(), 1, "one login, the token reused");
    double.expire_tokens();
    call("register", a.register(&t))
        .await
        .expect("register after the token expired");
    assert_eq!(double.logins(), 2, "a fresh login after the 403");
    wait_state(&a, &t, TrafficState::Serving, "Serving").await;

    let bad = adapter(
        &double,
        &format!("username: sluice\npasswordFile: {}\n", dir.join("bad").display()),
    );
    assert_permanent(
        call("observe", bad.observe(&t)).await,
        "rejected the login of user 'sluice'",
    );
    let anonymous = adapter(&double, "");
    assert_permanent(call("observe", anonymous.observe(&t)).await, "requires authentication");
    let forged = adapter(&double, &format!("accessTokenFile: {}\n", dir.join("token").display()));
    assert_permanent(
        call("deregister", forged.deregister(&t)).await,
        "access token is invalid",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_services_are_permanent_and_an_unavailable_nacos_is_retryable() {
    let double = NacosDouble::start().await;
    double.register("greeter", "127.0.84.11", PORT, 1.0, json!({}));
    let a = adapter(&double, "allowedGroups: [DEFAULT_GROUP]\n");
    let t = target(IP1, &[("service", "greeter")]);
    // Restoring into a service that does not exist is a binding mistake: permanent.
    assert_permanent(
        call("register", a.register(&target(IP1, &[("service", "nope")]))).await,
        "does not exist",
    );
    assert_permanent(
        call("observe", a.observe(&target(IP1, &[("service", "nope")]))).await,
        "does not exist",
    );
    // Draining from it: nothing offers the instance, so it is already drained (the
    // contract's "deregister tolerates never-registered").
    let nope = target(IP2, &[("service", "nope")]);
    call("deregister", a.deregister(&nope))
        .await
        .expect("deregister of a missing service succeeds");
    wait_state(&a, &nope, TrafficState::Drained, "a missing service drains").await;
    assert_permanent(
        a.observe(&target(IP1, &[("service", "greeter"), ("group", "OTHER")]))
            .await,
        "allow-list",
    );
    assert_permanent(a.observe(&target(IP1, &[])).await, "no `service` parameter");
    call("health", a.health()).await.expect("healthy");

    double.fail_next(1);
    assert_retryable(call("observe", a.observe(&t)).await, "HTTP 503");
    assert_eq!(
        call("observe", a.observe(&t)).await.unwrap().state,
        TrafficState::Serving
    );

    let addr = double.server_addr();
    drop(double);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_retryable(call("observe", a.observe(&t)).await, "is unreachable");
    assert_retryable(call("health", a.health()).await, "is unreachable");
    let fresh = NacosAdapter::new(NacosConfig::new("n", addr)).expect("new() does not connect");
    assert_retryable(call("register", fresh.register(&t)).await, "is unreachable");
}
