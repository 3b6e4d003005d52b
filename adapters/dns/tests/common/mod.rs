//! Shared test helpers: adapters pointed at the harness's real servers, and bounded waits.
//! The servers themselves come from `sluice_adapter_dns::testing` (BIND 9 primary +
//! secondary, PowerDNS with sqlite); a missing binary fails the test with an install hint.
#![allow(dead_code, unused_imports)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, Observation, Target, TrafficState};
use sluice_adapter_dns::testing::bind::Bind;
use sluice_adapter_dns::testing::pdns::PowerDns;
use sluice_adapter_dns::{PowerDnsAdapter, PowerDnsConfig, Rfc2136Adapter, Rfc2136Config};

pub use sluice_adapter_dns::testing::{dig, dig_serial, target, WAIT};

/// An RFC 2136 config for `bind`: its primary, key `key` (`sluice`, `wrong-secret`, ...),
/// `servers` = primary + secondary when there is one, plus `extra` YAML lines.
pub fn rfc_config(bind: &Bind, zones: &[&str], key: &str, extra: &str) -> Rfc2136Config {
    let mut yaml = format!(
        "name: corp-dns\nprimary: {}\nzones: [{}]\ntsigKeyFile: {}\nttl: 2\ntimeoutSeconds: 2\n",
        bind.primary.addr,
        zones.join(", "),
        bind.key_file(key).display()
    );
    if !extra.contains("servers:") && !extra.contains("nsPort:") {
        let mut servers = vec![bind.primary.addr.to_string()];
        if let Some(s) = &bind.secondary {
            servers.push(s.addr.to_string());
        }
        yaml.push_str(&format!("servers: [{}]\n", servers.join(", ")));
    }
    yaml.push_str(extra);
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"))
}

/// An adapter with the `sluice` key.
pub fn rfc_adapter(bind: &Bind, zones: &[&str]) -> Rfc2136Adapter {
    Rfc2136Adapter::new(rfc_config(bind, zones, "sluice", "")).expect("adapter")
}

/// A PowerDNS config for `pdns`, plus `extra` YAML lines.
pub fn pdns_config(pdns: &PowerDns, zones: &[&str], extra: &str) -> PowerDnsConfig {
    let mut yaml = format!(
        "name: pdns\napiUrl: {}\ndns: {}\nzones: [{}]\nttl: 2\ntimeoutSeconds: 2\n",
        pdns.api_url,
        pdns.dns,
        zones.join(", ")
    );
    if !extra.contains("apiKey") {
        yaml.push_str(&format!("apiKeyFile: {}\n", pdns.api_key_file.display()));
    }
    yaml.push_str(extra);
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"))
}

/// A PowerDNS adapter with the right key.
pub fn pdns_adapter(pdns: &PowerDns, zones: &[&str]) -> PowerDnsAdapter {
    PowerDnsAdapter::new(pdns_config(pdns, zones, "")).expect("adapter")
}

/// A target for `ip` and DNS name `name`, plus more parameters.
pub fn t(ip: &str, name: &str, more: &[(&str, &str)]) -> Target {
    let mut params = vec![("name", name)];
    params.extend_from_slice(more);
    target(ip.parse::<IpAddr>().expect("ip"), &params)
}

/// Polls `observe` every 5 ms until it reports `state` (polling through retryable errors);
/// returns that observation and every observation seen on the way.
pub async fn wait_state(
    adapter: &dyn Adapter,
    t: &Target,
    state: TrafficState,
    what: &str,
) -> (Observation, Vec<(Instant, Observation)>) {
    let r = sluice_adapter::testing::wait_state(adapter, t, state, WAIT, what).await;
    (r.observation, r.before)
}

/// One `observe`, bounded.
pub async fn observe(adapter: &dyn Adapter, t: &Target) -> Observation {
    tokio::time::timeout(WAIT, adapter.observe(t))
        .await
        .expect("observe within the wait bound")
        .expect("observe")
}

/// `deregister`, bounded, returning its result.
pub async fn deregister(adapter: &dyn Adapter, t: &Target) -> sluice_adapter::Result<()> {
    tokio::time::timeout(WAIT, adapter.deregister(t))
        .await
        .expect("deregister within the wait bound")
}

/// `register`, bounded, returning its result.
pub async fn register(adapter: &dyn Adapter, t: &Target) -> sluice_adapter::Result<()> {
    tokio::time::timeout(WAIT, adapter.register(t))
        .await
        .expect("register within the wait bound")
}

/// `dig` answers as `&str`s for comparisons.
pub fn dig_is(server: std::net::SocketAddr, name: &str, rtype: &str, expect: &[&str]) {
    let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(dig(server, name, rtype), want, "dig @{server} {name} {rtype}");
}

/// Waits until `dig` on `server` shows exactly `expect`.
pub async fn wait_dig(server: std::net::SocketAddr, name: &str, rtype: &str, expect: &[&str], what: &str) {
    let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
    want.sort();
    tokio::time::timeout(WAIT, async {
        while dig(server, name, rtype) != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect(what);
}
