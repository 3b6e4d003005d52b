//! The PowerDNS adapter against a real PowerDNS 4.7 (sqlite backend, HTTP API): a drain
//! disables only the pod's record and keeps every other record (including other pods'
//! disabled ones), verification is by direct DNS queries, and the same TTL rules apply.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::future::join_all;
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_dns::pdns::api::PdnsRecord;
use sluice_adapter_dns::testing::bind::Zone;
use sluice_adapter_dns::testing::pdns::PowerDns;
use sluice_adapter_dns::PowerDnsAdapter;

fn zone() -> Zone {
    let mut z = Zone::new(
        "pdns.test",
        1,
        &[
            "www IN A 10.5.0.1",
            "www IN A 10.5.0.2",
            "www IN A 10.5.0.3",
            "www IN AAAA fd00::5",
            "api IN A 10.5.0.1",
            "solo IN A 10.5.1.1",
        ],
    );
    z.negative_ttl = 2;
    z
}

/// The records of `name`/`rtype` as the API holds them (sorted by content).
async fn api_records(pdns: &PowerDns, name: &str, rtype: &str) -> Vec<PdnsRecord> {
    let zone = pdns.api().zone("pdns.test.").await.expect("GET zone");
    let mut records = zone
        .rrsets
        .into_iter()
        .find(|r| r.name == name && r.rtype == rtype)
        .map(|r| r.records)
        .unwrap_or_default();
    records.sort_by(|a, b| a.content.cmp(&b.content));
    records
}

fn rec(content: &str, disabled: bool) -> PdnsRecord {
    PdnsRecord {
        content: content.into(),
        disabled,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_disables_only_this_record_and_restore_enables_it() {
    let pdns = PowerDns::start(&[zone()]).await;
    let d = pdns.dns;
    let a = pdns_adapter(&pdns, &["pdns.test"]);
    a.health().await.expect("health");
    let p1 = t("10.5.0.1", "www.pdns.test", &[]);
    let p2 = t("10.5.0.2", "www.pdns.test", &[]);
    assert_eq!(observe(&a, &p1).await.state, TrafficState::Serving);

    let start = Instant::now();
    deregister(&a, &p1).await.expect("deregister");
    assert_eq!(
        api_records(&pdns, "www.pdns.test.", "A").await,
        vec![rec("10.5.0.1", true), rec("10.5.0.2", false), rec("10.5.0.3", false)]
    );
    dig_is(d, "www.pdns.test", "A", &["10.5.0.2", "10.5.0.3"]);
    dig_is(d, "www.pdns.test", "AAAA", &["fd00::5"]);
    dig_is(d, "api.pdns.test", "A", &["10.5.0.1"]);
    let (drained, _) = wait_state(&a, &p1, TrafficState::Drained, "drained after the TTL").await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Drained before the 1 s TTL ran out"
    );
    assert!(
        drained.evidence.contains(&format!("{d}=absent(serial 1)")),
        "{drained:?}"
    );

    // A second pod of the same name: the first one's disabled record must survive the
    // read-modify-write (PowerDNS 4.7's filtered GET would have hidden it).
    deregister(&a, &p2).await.expect("deregister pod 2");
    assert_eq!(
        api_records(&pdns, "www.pdns.test.", "A").await,
        vec![rec("10.5.0.1", true), rec("10.5.0.2", true), rec("10.5.0.3", false)]
    );
    dig_is(d, "www.pdns.test", "A", &["10.5.0.3"]);

    // The last served address is refused; allowEmpty drains it, with the negative TTL.
    let p3 = t("10.5.0.3", "www.pdns.test", &[]);
    let e = deregister(&a, &p3).await.expect_err("last address");
    assert!(
        !e.is_retryable() && e.message.contains("the last address of www.pdns.test. A"),
        "{e}"
    );
    let p3 = t("10.5.0.3", "www.pdns.test", &[("allowEmpty", "true")]);
    let start = Instant::now();
    deregister(&a, &p3).await.expect("deregister with allowEmpty");
    dig_is(d, "www.pdns.test", "A", &[]);
    let (drained, _) = wait_state(&a, &p3, TrafficState::Drained, "drained after the negative TTL").await;
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "the 2 s negative TTL was waited"
    );
    assert!(drained.evidence.contains("negative ttl 2s"), "{drained:?}");

    // Restore all three: enabled again, nothing else changed, verified via DNS.
    for pod in [&p1, &p2, &p3] {
        register(&a, pod).await.expect("register");
    }
    for pod in [&p1, &p2, &p3] {
        wait_state(&a, pod, TrafficState::Serving, "serving").await;
    }
    assert_eq!(
        api_records(&pdns, "www.pdns.test.", "A").await,
        vec![rec("10.5.0.1", false), rec("10.5.0.2", false), rec("10.5.0.3", false)]
    );
    dig_is(d, "www.pdns.test", "A", &["10.5.0.1", "10.5.0.2", "10.5.0.3"]);
    dig_is(d, "api.pdns.test", "A", &["10.5.0.1"]);

    // Idempotent: repeated calls send nothing.
    let sent = a.patches_sent();
    register(&a, &p1).await.expect("register again");
    deregister(&a, &t("10.5.9.9", "www.pdns.test", &[]))
        .await
        .expect("never registered");
    assert_eq!(a.patches_sent(), sent);

    // A pod new to the name is added (with the RRset's TTL).
    let p4 = t("10.5.0.4", "www.pdns.test", &[]);
    register(&a, &p4).await.expect("register a new address");
    wait_state(&a, &p4, TrafficState::Serving, "new address serving").await;
    dig_is(
        d,
        "www.pdns.test",
        "A",
        &["10.5.0.1", "10.5.0.2", "10.5.0.3", "10.5.0.4"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn many_drains_go_out_in_a_few_patches() {
    let mut records = Vec::new();
    for n in 0..20 {
        for i in 1..=11 {
            records.push(format!("svc{n} IN A 10.50.{n}.{i}"));
        }
    }
    let refs: Vec<&str> = records.iter().map(String::as_str).collect();
    let mut z = Zone::new("pdns.test", 1, &refs);
    z.secondary = None;
    let pdns = PowerDns::start(&[z]).await;
    let a = pdns_adapter(&pdns, &["pdns.test"]);
    let pods: Vec<_> = (0..20)
        .flat_map(|n| (1..=10).map(move |i| t(&format!("10.50.{n}.{i}"), &format!("svc{n}.pdns.test"), &[])))
        .collect();
    let results = tokio::time::timeout(WAIT, join_all(pods.iter().map(|p| a.deregister(p))))
        .await
        .expect("200 concurrent deregisters");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    eprintln!("200 PowerDNS deregisters: {} PATCH requests", a.patches_sent());
    assert!(
        a.patches_sent() <= 5,
        "200 deregisters took {} PATCHes",
        a.patches_sent()
    );
    for n in [0, 19] {
        dig_is(pdns.dns, &format!("svc{n}.pdns.test"), "A", &[&format!("10.50.{n}.11")]);
        assert_eq!(
            api_records(&pdns, &format!("svc{n}.pdns.test."), "A").await.len(),
            11,
            "records kept"
        );
    }
    tokio::time::timeout(
        WAIT,
        join_all(pods.iter().map(|p| wait_state(&a, p, TrafficState::Drained, "drained"))),
    )
    .await
    .expect("all drained");
}

#[tokio::test(flavor = "multi_thread")]
async fn powerdns_errors_are_classified() {
    let pdns = PowerDns::start(&[zone()]).await;
    let pod = t("10.5.0.1", "www.pdns.test", &[]);

    std::fs::write(pdns.dir.join("wrong.key"), "not-the-key\n").expect("write key");
    let extra = format!("apiKeyFile: {}\n", pdns.dir.join("wrong.key").display());
    let a = PowerDnsAdapter::new(pdns_config(&pdns, &["pdns.test"], &extra)).expect("adapter");
    let e = deregister(&a, &pod).await.expect_err("wrong API key");
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(
        e.message,
        format!(
            "PowerDNS API at {} rejected the API key (401): check `apiKeyFile` / `apiKeyEnv`",
            pdns.api_url
        )
    );
    assert!(!a.health().await.expect_err("health").is_retryable());

    let a = pdns_adapter(&pdns, &["pdns.test", "nothere.test"]);
    let e = deregister(&a, &t("10.5.0.1", "www.nothere.test", &[]))
        .await
        .expect_err("zone not served");
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(
        e.message,
        format!(
            "zone nothere.test. is not served by PowerDNS at {} (HTTP 404 for the zone): check the zone name and \
             the server",
            pdns.api_url
        )
    );
    assert!(a.health().await.expect_err("health").message.contains("nothere.test."));

    let down = format!("http://127.0.0.1:{}", sluice_adapter_dns::testing::free_port());
    let mut config = pdns_config(&pdns, &["pdns.test"], "");
    config.api_url = down.clone();
    let a = PowerDnsAdapter::new(config).expect("adapter");
    let e = deregister(&a, &pod).await.expect_err("API down");
    assert!(
        e.is_retryable() && e.message.starts_with(&format!("PowerDNS API at {down}")),
        "{e}"
    );

    let mut config = pdns_config(&pdns, &["pdns.test"], "");
    let silent = sluice_adapter_dns::testing::free_port();
    config.servers = vec![([127, 0, 0, 1], silent).into()];
    let a = PowerDnsAdapter::new(config).expect("adapter");
    let e = tokio::time::timeout(WAIT, a.observe(&pod))
        .await
        .expect("observe within the wait bound")
        .expect_err("an extra server that can't be asked");
    assert!(
        e.is_retryable() && e.message.contains(&format!("127.0.0.1:{silent} is unreachable")),
        "{e}"
    );

    let e = PowerDnsAdapter::new(pdns_config(&pdns, &["pdns.test"], "apiKeyEnv: SLUICE_DNS_TEST_UNSET\n"))
        .expect_err("unset env var");
    assert_eq!(
        e.message,
        "dns adapter 'pdns': `apiKeyEnv`: environment variable SLUICE_DNS_TEST_UNSET is not set"
    );
    // Nothing was changed by any of this.
    dig_is(pdns.dns, "www.pdns.test", "A", &["10.5.0.1", "10.5.0.2", "10.5.0.3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bind_secondary_fed_by_powerdns_is_waited_for() {
    let mut z = zone();
    z.secondary = None;
    let pdns = PowerDns::start_with_secondary(&[z]).await;
    let (d, s) = (pdns.dns, pdns.secondary.as_ref().expect("secondary").addr);
    let a = PowerDnsAdapter::new(pdns_config(&pdns, &["pdns.test"], &format!("servers: [{s}]\n"))).expect("adapter");
    a.health().await.expect("health");
    let pod = t("10.5.0.2", "www.pdns.test", &[]);
    let obs = observe(&a, &pod).await;
    assert_eq!(obs.state, TrafficState::Serving, "{obs:?}");
    assert!(
        obs.evidence
            .contains(&format!("{d}=present(serial 1) {s}=present(serial 1)")),
        "{obs:?}"
    );

    let start = Instant::now();
    deregister(&a, &pod).await.expect("deregister");
    let (drained, seen) = wait_state(&a, &pod, TrafficState::Drained, "drained on PowerDNS and its secondary").await;
    assert!(
        drained
            .evidence
            .contains(&format!("{d}=absent(serial 2) {s}=absent(serial 2)")),
        "{drained:?}"
    );
    let lagged = seen
        .iter()
        .filter(|(_, o)| o.evidence.contains(&format!("still answered by {s}")))
        .count();
    eprintln!(
        "secondary lagged for {lagged} observations; drained after {:?}",
        start.elapsed()
    );
    dig_is(s, "www.pdns.test", "A", &["10.5.0.1", "10.5.0.3"]);

    register(&a, &pod).await.expect("register");
    let (serving, _) = wait_state(&a, &pod, TrafficState::Serving, "serving on both").await;
    assert!(
        serving
            .evidence
            .contains(&format!("{d}=present(serial 3) {s}=present(serial 3)")),
        "{serving:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn comments_on_the_rrset_survive_a_drain() {
    let pdns = PowerDns::start(&[zone()]).await;
    let api = pdns.api();
    let comment = serde_json::json!({"name": "www.pdns.test.", "type": "A", "changetype": "REPLACE",
        "comments": [{"content": "owned by team payments", "account": "ops", "modified_at": 1}]});
    api.patch("pdns.test.", vec![comment]).await.expect("add a comment");
    let a = pdns_adapter(&pdns, &["pdns.test"]);
    deregister(&a, &t("10.5.0.1", "www.pdns.test", &[]))
        .await
        .expect("deregister");
    assert_eq!(api_records(&pdns, "www.pdns.test.", "A").await.len(), 3);
    let zone = api.zone_json("pdns.test.").await.expect("GET zone");
    let www = zone["rrsets"]
        .as_array()
        .expect("rrsets")
        .iter()
        .find(|r| r["name"] == "www.pdns.test." && r["type"] == "A")
        .expect("www A")
        .clone();
    assert_eq!(www["comments"][0]["content"], "owned by team payments", "{www}");
}
