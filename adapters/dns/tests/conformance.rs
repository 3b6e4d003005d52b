//! The shared adapter conformance battery against a real BIND (RFC 2136 + TSIG) and a real
//! PowerDNS. "Backend down" kills the server and starts it again; DNS is UDP, which the
//! battery's TCP forwarder cannot slow, so that one check is not applicable here.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sluice_adapter::{Adapter, Target};
use sluice_adapter_dns::testing::bind::{Bind, Zone};
use sluice_conformance::{Options, Outcome, Subject};
use tokio::sync::Mutex;

const NAME: &str = "www.example.test";

struct BindSubject {
    bind: Mutex<Bind>,
    adapter: Arc<dyn Adapter>,
    next: AtomicUsize,
}

fn pod(ip: &str) -> Target {
    target(ip.parse().expect("ip"), &[("name", NAME)])
}

#[async_trait::async_trait]
impl Subject for BindSubject {
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
        self.bind.lock().await.primary.kill();
        true
    }
    async fn backend_up(&self) {
        let mut bind = self.bind.lock().await;
        let zones: Vec<String> = bind.zones.iter().map(|z| z.name.clone()).collect();
        let token = bind.token.clone();
        bind.primary.restart(&zones, &token).await;
    }
    async fn backend_slow(&self, _: Duration) -> bool {
        false
    }
}

fn options() -> Options {
    // TTLs are 2 s in these zones; a drain waits them out.
    Options {
        call_deadline: Duration::from_secs(5),
        settle: Duration::from_secs(20),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc2136_adapter_passes_the_conformance_battery() {
    // 10.1.0.9 is never touched, so no drain ever empties the name.
    let bind = Bind::start(vec![Zone::new(
        "example.test",
        2,
        &[
            "www IN A 10.1.0.1",
            "www IN A 10.1.0.2",
            "www IN A 10.1.0.3",
            "www IN A 10.1.0.9",
        ],
    )])
    .await;
    let adapter: Arc<dyn Adapter> = Arc::new(rfc_adapter(&bind, &["example.test"]));
    let s = BindSubject {
        bind: Mutex::new(bind),
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
