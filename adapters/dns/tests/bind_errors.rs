//! Error paths against a real BIND 9, each with a clear message and the right class:
//! wrong TSIG secret (BADSIG), unknown key (BADKEY), key not allowed (REFUSED), zone not
//! served, primary down, secondary unreachable; plus `health` and secret loading.

mod common;

use common::*;
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_dns::testing::bind::{Bind, Zone};
use sluice_adapter_dns::Rfc2136Adapter;

async fn bind() -> Bind {
    let mut locked = Zone::new("locked.test", 1, &["www IN A 10.8.1.1", "www IN A 10.8.1.2"]);
    locked.update_key = Some("intruder");
    Bind::start(vec![
        Zone::new("err.test", 1, &["www IN A 10.8.0.1", "www IN A 10.8.0.2"]),
        locked,
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tsig_and_permission_errors_are_permanent_and_say_what_to_fix() {
    let bind = bind().await;
    let p = bind.primary.addr;
    let pod = t("10.8.0.1", "www.err.test", &[]);

    let a = Rfc2136Adapter::new(rfc_config(&bind, &["err.test"], "wrong-secret", "")).expect("adapter");
    let e = deregister(&a, &pod).await.expect_err("wrong secret");
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(
        e.message,
        format!(
            "DNS server {p} rejected the TSIG signature of key 'sluice' (BADSIG): the secret does not match the \
             server's copy of the key"
        )
    );
    let e = a.health().await.expect_err("health with the wrong secret");
    assert!(e.message.contains("BADSIG"), "{e}");

    let a = Rfc2136Adapter::new(rfc_config(&bind, &["err.test"], "unknown", "")).expect("adapter");
    let e = deregister(&a, &pod).await.expect_err("unknown key");
    assert!(
        !e.is_retryable() && e.message.contains("does not know TSIG key 'unknown' (BADKEY)"),
        "{e}"
    );

    let a = Rfc2136Adapter::new(rfc_config(&bind, &["err.test"], "intruder", "")).expect("adapter");
    let e = deregister(&a, &pod).await.expect_err("key not in allow-update");
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(
        e.message,
        format!("update refused by {p} for zone err.test.: check allow-update / update-policy for the key")
    );
    let e = a.health().await.expect_err("health with a key that may not update");
    assert!(e.message.starts_with("update refused by"), "{e}");

    // The zone open to another key only.
    let a = rfc_adapter(&bind, &["locked.test"]);
    let e = deregister(&a, &t("10.8.1.1", "www.locked.test", &[]))
        .await
        .expect_err("refused");
    assert!(
        e.message.contains("update refused by") && e.message.contains("zone locked.test."),
        "{e}"
    );

    // Nothing changed anywhere; the right key works and health passes without a change.
    dig_is(p, "www.err.test", "A", &["10.8.0.1", "10.8.0.2"]);
    dig_is(p, "www.locked.test", "A", &["10.8.1.1", "10.8.1.2"]);
    let a = rfc_adapter(&bind, &["err.test"]);
    a.health().await.expect("health");
    assert_eq!(dig_serial(p, "err.test"), 1, "health() changed nothing");
    deregister(&a, &pod).await.expect("deregister with the right key");
    dig_is(p, "www.err.test", "A", &["10.8.0.2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zone_the_primary_does_not_serve_is_permanent() {
    let bind = bind().await;
    let p = bind.primary.addr;
    let a = rfc_adapter(&bind, &["err.test", "nothere.test"]);
    let pod = t("10.8.0.1", "www.nothere.test", &[]);
    let e = deregister(&a, &pod).await.expect_err("zone not served");
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(
        e.message,
        format!("zone nothere.test. is not served by {p} (REFUSED): check the zone name and the server")
    );
    let e = register(&a, &pod).await.expect_err("zone not served");
    assert!(e.message.contains("not served"), "{e}");
    let e = observe_err(&a, &pod).await;
    assert!(
        !e.is_retryable() && e.message.contains("nothere.test. is not served by"),
        "{e}"
    );
    let e = a.health().await.expect_err("health names the zone");
    assert!(e.message.contains("nothere.test."), "{e}");
    // A name outside every configured zone never reaches a server.
    let e = deregister(&a, &t("10.8.0.1", "www.elsewhere.test", &[]))
        .await
        .expect_err("outside");
    assert!(e.message.contains("in none of this adapter's zones"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_that_is_down_is_retryable_and_recovers() {
    let mut bind = bind().await;
    let p = bind.primary.addr;
    let a = rfc_adapter(&bind, &["err.test"]);
    let pod = t("10.8.0.1", "www.err.test", &[]);
    bind.primary.kill();
    let e = deregister(&a, &pod).await.expect_err("primary down");
    assert!(e.is_retryable(), "{e}");
    assert!(e.message.contains(&format!("DNS server {p} is unreachable")), "{e}");
    let e = observe_err(&a, &pod).await;
    assert!(e.is_retryable() && e.message.contains("can't be asked"), "{e}");
    assert!(a.health().await.expect_err("health").is_retryable());

    let zones = vec!["err.test".to_string(), "locked.test".to_string()];
    let token = bind.token.clone();
    bind.primary.restart(&zones, &token).await;
    deregister(&a, &pod).await.expect("deregister once the primary is back");
    dig_is(p, "www.err.test", "A", &["10.8.0.2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secondary_that_cannot_be_asked_blocks_verification() {
    let mut bind = bind().await;
    let s = bind.secondary_addr();
    let a = rfc_adapter(&bind, &["err.test"]);
    let pod = t("10.8.0.1", "www.err.test", &[]);
    deregister(&a, &pod).await.expect("deregister (the primary is up)");
    bind.secondary.as_mut().expect("secondary").kill();
    let e = observe_err(&a, &pod).await;
    assert!(e.is_retryable(), "{e}");
    assert_eq!(
        e.message,
        format!(
            "cannot verify www.err.test. A 10.8.0.1 on every authoritative server of err.test. (a drain can't be \
             verified while one authoritative server can't be asked): DNS server {s} is unreachable: Connection \
             refused (os error 111)"
        )
    );
    // A configured server that does not serve the zone at all is permanent.
    let mut unrelated = Zone::new("unrelated.test", 1, &[]);
    unrelated.secondary = None;
    let other = Bind::start(vec![unrelated]).await;
    let a = rfc_adapter_with_servers(&bind, &[bind.primary.addr, other.primary.addr]);
    let e = observe_err(&a, &pod).await;
    assert!(
        !e.is_retryable()
            && e.message
                .contains(&format!("not served by {} (REFUSED)", other.primary.addr)),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_come_from_files_or_the_environment_only() {
    let bind = bind().await;
    let missing = format!("tsigKeyFile: {}/nope.key\n", bind.dir.display());
    let yaml = format!("name: d\nprimary: {}\nzones: [err.test]\n{missing}", bind.primary.addr);
    let config = serde_yaml::from_str(&yaml).expect("config");
    let e = Rfc2136Adapter::new(config).expect_err("missing key file");
    assert!(
        e.message.starts_with("dns adapter 'd': `tsigKeyFile`: cannot read"),
        "{e}"
    );

    let key = std::fs::read_to_string(bind.key_file("sluice")).expect("key file");
    let secret = key.split('"').nth(3).expect("secret in the key file").to_string();
    std::env::set_var("SLUICE_DNS_TEST_TSIG", secret);
    let yaml = format!(
        "name: d\nprimary: {}\nzones: [err.test]\nservers: [{}]\ntsigSecretEnv: SLUICE_DNS_TEST_TSIG\ntsigKeyName: sluice\nttl: 1\n",
        bind.primary.addr, bind.primary.addr
    );
    let a = Rfc2136Adapter::new(serde_yaml::from_str(&yaml).expect("config")).expect("adapter from env");
    let pod = t("10.8.0.2", "www.err.test", &[]);
    deregister(&a, &pod).await.expect("deregister with the env secret");
    wait_state(&a, &pod, TrafficState::Drained, "drained").await;
}

fn rfc_adapter_with_servers(bind: &Bind, servers: &[std::net::SocketAddr]) -> Rfc2136Adapter {
    let list: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    let config = rfc_config(
        bind,
        &["err.test"],
        "sluice",
        &format!("servers: [{}]\n", list.join(", ")),
    );
    Rfc2136Adapter::new(config).expect("adapter")
}

async fn observe_err(a: &dyn Adapter, pod: &sluice_adapter::Target) -> sluice_adapter::AdapterError {
    tokio::time::timeout(WAIT, a.observe(pod))
        .await
        .expect("observe within the wait bound")
        .expect_err("observe fails")
}
