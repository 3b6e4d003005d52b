//! The shared adapter conformance battery against a real BIND (RFC 2136 + TSIG) and a real
//! PowerDNS. "Backend down" kills the server and starts it again; DNS is UDP, which the
//! battery's TCP forwarder cannot slow, so that one check is not applicable here. The
//! backend snapshot is a zone transfer (AXFR, with `dig`) from the server the adapter
//! writes to.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sluice_adapter::{Adapter, Target};
use sluice_adapter_dns::testing::bind::{Bind, Zone};
use sluice_adapter_dns::testing::pdns::PowerDns;
use sluice_conformance::{Options, Outcome, Subject};
use tokio::sync::Mutex;

const NAME: &str = "www.example.test";

/// A DNS server the battery can kill and start again.
#[async_trait::async_trait]
trait Server: Send + Sync {
    fn kill(&mut self);
    async fn restart(&mut self);
    /// Where the adapter's changes land (and a zone transfer is allowed from 127.0.0.1).
    fn primary(&self) -> std::net::SocketAddr;
}

/// The zone as `dig AXFR` shows it from `server`, one record per line, sorted.
async fn axfr(server: std::net::SocketAddr, zone: &str) -> String {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("dig")
            .args(["+noall", "+answer", "+time=2", "+tries=1"])
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string(), zone, "AXFR"])
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("dig AXFR {zone} @{server} did not return within {WAIT:?}"))
    .unwrap_or_else(|e| panic!("cannot run dig (bind9-dnsutils): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    assert!(
        out.status.success() && !lines.is_empty() && !text.contains("Transfer failed"),
        "dig AXFR {zone} @{server} failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // AXFR repeats the SOA at the end; sorting keeps both copies.
    lines.sort_unstable();
    lines.join("\n")
}

#[async_trait::async_trait]
impl Server for Bind {
    fn kill(&mut self) {
        self.primary.kill();
    }
    async fn restart(&mut self) {
        let zones: Vec<String> = self.zones.iter().map(|z| z.name.clone()).collect();
        let token = self.token.clone();
        self.primary.restart(&zones, &token).await;
    }
    fn primary(&self) -> std::net::SocketAddr {
        self.primary.addr
    }
}

#[async_trait::async_trait]
impl Server for PowerDns {
    fn kill(&mut self) {
        PowerDns::kill(self);
    }
    async fn restart(&mut self) {
        PowerDns::restart(self).await;
    }
    fn primary(&self) -> std::net::SocketAddr {
        self.dns
    }
}

struct DnsSubject<S> {
    server: Mutex<S>,
    adapter: Arc<dyn Adapter>,
    next: AtomicUsize,
}

fn pod(ip: &str) -> Target {
    target(ip.parse().expect("ip"), &[("name", NAME)])
}

#[async_trait::async_trait]
impl<S: Server> Subject for DnsSubject<S> {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }
    async fn serving_target(&self) -> Target {
        let t = pod(["10.1.0.1", "10.1.0.2", "10.1.0.3"][self.next.fetch_add(1, Ordering::SeqCst) % 3]);
        sluice_conformance::make_serving(self.adapter.as_ref(), &t, &options())
            .await
            .expect("a serving target");
        t
    }
    async fn unknown_target(&self) -> Target {
        pod("10.1.0.99")
    }
    async fn backend_down(&self) -> bool {
        self.server.lock().await.kill();
        true
    }
    async fn backend_up(&self) {
        self.server.lock().await.restart().await;
    }
    async fn backend_slow(&self, _: Duration) -> bool {
        false
    }
    async fn snapshot(&self) -> Option<String> {
        let primary = self.server.lock().await.primary();
        Some(axfr(primary, "example.test").await)
    }
}

fn options() -> Options {
    // TTLs are 2 s in these zones; a drain waits them out.
    Options {
        call_deadline: Duration::from_secs(5),
        settle: Duration::from_secs(20),
    }
}

/// 10.1.0.9 is never touched, so no drain ever empties the name.
fn zone() -> Zone {
    Zone::new(
        "example.test",
        2,
        &[
            "www IN A 10.1.0.1",
            "www IN A 10.1.0.2",
            "www IN A 10.1.0.3",
            "www IN A 10.1.0.9",
        ],
    )
}

async fn run_battery<S: Server>(server: S, adapter: Arc<dyn Adapter>) {
    let s = DnsSubject {
        server: Mutex::new(server),
        adapter,
        next: AtomicUsize::new(0),
    };
    let report = sluice_conformance::run(&s, &options()).await;
    println!("{report}");
    for c in &report.checks {
        match (&c.outcome, c.name) {
            (Outcome::Passed, _) => {}
            (Outcome::NotApplicable(_), "slow backend is bounded by deadlines") => {}
            (other, name) => panic!("{name}: {other:?}\n{report}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc2136_adapter_passes_the_conformance_battery() {
    let bind = Bind::start(vec![zone()]).await;
    let adapter: Arc<dyn Adapter> = Arc::new(rfc_adapter(&bind, &["example.test"]));
    run_battery(bind, adapter).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn powerdns_adapter_passes_the_conformance_battery() {
    let pdns = PowerDns::start(&[zone()]).await;
    let adapter: Arc<dyn Adapter> = Arc::new(pdns_adapter(&pdns, &["example.test"]));
    run_battery(pdns, adapter).await;
}
