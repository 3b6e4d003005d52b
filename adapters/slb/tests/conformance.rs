//! The shared adapter conformance battery against a real HAProxy, reached through a TCP
//! forwarder the battery can take down or slow down.

use std::sync::Arc;
use std::time::Duration;

use sluice_adapter::{Adapter, Target};
use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{HaproxyAdapter, HaproxyConfig};
use sluice_conformance::proxy::FaultyProxy;
use sluice_conformance::{Options, Targets, ThroughProxy};

struct HaproxySubject {
    haproxy: Haproxy,
    _pods: Vec<Pod>,
    adapter: Arc<dyn Adapter>,
    port: u16,
    next: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Targets for HaproxySubject {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.clone()
    }

    async fn serving_target(&self) -> Target {
        let ips = [IP1, IP2, IP3];
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % ips.len();
        let t = target(ips[i], self.port, "web");
        sluice_conformance::make_serving(self.adapter.as_ref(), &t, &Options::default())
            .await
            .expect("a serving target");
        t
    }

    async fn unknown_target(&self) -> Target {
        target(std::net::Ipv4Addr::new(127, 0, 83, 99), self.port, "web")
    }
    async fn snapshot(&self) -> Option<String> {
        Some(self.haproxy.servers_state_snapshot("web").await)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_adapter_passes_the_conformance_battery() {
    let (port, pods) = start_pods(&[("s1", IP1), ("s2", IP2), ("s3", IP3)], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let proxy = FaultyProxy::start(h.api_tcp).await.expect("proxy");
    let mut cfg = HaproxyConfig::new("lb", format!("tcp:{}", proxy.addr()).parse().expect("endpoint"));
    cfg.timeout = Duration::from_secs(2);
    let adapter: Arc<dyn Adapter> = Arc::new(HaproxyAdapter::new(cfg).expect("valid config"));
    let targets = HaproxySubject {
        haproxy: h,
        _pods: pods,
        adapter,
        port,
        next: std::sync::atomic::AtomicUsize::new(0),
    };
    let opts = Options {
        call_deadline: Duration::from_secs(5),
        settle: Duration::from_secs(10),
    };
    let subject = ThroughProxy { targets, proxy };
    let report = sluice_conformance::run(&subject, &opts).await;
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.outcome == sluice_conformance::Outcome::Passed),
        "every check applies to HAProxy: {report}"
    );
}
