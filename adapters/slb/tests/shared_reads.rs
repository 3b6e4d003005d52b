//! Observations of many servers in one backend share their reads of HAProxy: a poll of
//! the whole backend costs a few `show` commands, not three per server — what keeps the
//! runtime socket from being flooded with thousands of pods behind one backend. And a
//! shared read is never older than the call that gets it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{HaproxyAdapter, HaproxyConfig, Mode};

const SERVERS: u8 = 100;

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_observations_at_once_share_a_few_reads() {
    let (port, _pods) = start_pods(&[], &[]).await;
    let h = Haproxy::start(&[], port).await;
    let mut config = HaproxyConfig::new("lb-dyn", h.unix_endpoint());
    // No health check: the servers need no process behind them.
    config.mode = Mode::Dynamic {
        check: false,
        check_options: vec![],
    };
    let a = Arc::new(HaproxyAdapter::new(config).expect("config"));
    let targets: Vec<_> = (0..SERVERS)
        .map(|i| target(Ipv4Addr::new(127, 0, 84, 10 + i), port, "dyn"))
        .collect();
    for t in &targets {
        a.register(t).await.expect("register");
    }
    let before = a.client().sent();
    let observed = futures::future::join_all(targets.iter().map(|t| {
        let a = a.clone();
        let t = t.clone();
        async move { a.observe(&t).await.expect("observe") }
    }))
    .await;
    let sent = a.client().sent() - before;
    assert!(
        observed.iter().all(|o| o.state == TrafficState::Serving),
        "{observed:?}"
    );
    // One read is three commands; the calls that arrive while one runs share the next.
    assert!(
        sent <= 9,
        "{sent} commands for {SERVERS} observations (three each would be {})",
        3 * SERVERS as u64
    );

    // Fresh: an observation that starts after a change sees it, whatever was read before.
    let t = &targets[0];
    a.deregister(t).await.expect("deregister");
    let obs = a.observe(t).await.expect("observe");
    assert_eq!(obs.state, TrafficState::Draining, "{obs:?}");
    assert!(obs.evidence.contains("status=DRAIN"), "{obs:?}");
}
