//! The HAProxy adapter against its floor, on a real HAProxy over its unix runtime socket
//! (started by the `sluice-adapter-slb` test harness), one static server with no traffic.
//!
//! ```text
//! cargo run --release -p sluice-bench --bin haproxy-drain -- [--runs N] [--json]
//! ```
//!
//! 1. floor: median of N raw sequences of the four commands a verified drain needs, each
//!    one round trip on an open prompt-mode connection: `set server … state drain`, `show
//!    stat` (scur is 0), `set server … state maint`, `show servers state` (re-read: MAINT);
//! 2. adapter: median of N drains driven as the engine drives them (`deregister`, then
//!    `observe` and `deregister` again when a step is due, until `Drained`) with no poll
//!    interval between the calls (the engine's `pollIntervalMs` is a choice, not the
//!    adapter's cost), and its ratio to the floor (PASS ≤ 3×).
//!
//! Between timed runs the server is put back in service (untimed) and seen serving.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sluice_adapter::{Adapter, TrafficState};
use sluice_adapter_slb::testing::*;
use sluice_adapter_slb::{HaproxyAdapter, HaproxyConfig, RuntimeClient};
use sluice_bench::{median, ms};

const RATIO_LIMIT: f64 = 3.0;

#[tokio::main]
async fn main() -> Result<()> {
    let (mut runs, mut json) = (200usize, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--json" => json = true,
            other => bail!("unknown argument {other} (usage: haproxy-drain [--runs N] [--json])"),
        }
    }
    let (port, _pods) = start_pods(&[("s1", IP1), ("s2", IP2), ("s3", IP3)], &[]).await;
    let h = Haproxy::start(&three_servers(), port).await;
    let t = target(IP1, port, "web");
    let adapter = HaproxyAdapter::new(HaproxyConfig::new("lb", h.unix_endpoint())).map_err(anyhow::Error::new)?;
    wait_state(&adapter, &t, TrafficState::Serving, "s1 serving at start").await;

    // The floor: the same four steps as bare commands on one open connection.
    let raw = RuntimeClient::with_connections(h.unix_endpoint(), Duration::from_secs(2), 2);
    raw.raw("show cli level").await?;
    let mut floor = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        raw.raw("set server web/s1 state drain").await?;
        let stat = raw.raw("show stat web 4 -1").await?;
        raw.raw("set server web/s1 state maint").await?;
        let state = raw.raw("show servers state web").await?;
        floor.push(started.elapsed());
        anyhow::ensure!(stat.contains("web,s1,") && state.contains(" s1 "), "unexpected answers");
        raw.raw("set server web/s1 state ready").await?;
        wait_state(&adapter, &t, TrafficState::Serving, "s1 back").await;
    }

    // The adapter, driven as the engine drives it.
    let mut drains = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        adapter.deregister(&t).await.map_err(anyhow::Error::new)?;
        let mut calls = 1;
        loop {
            let o = adapter.observe(&t).await.map_err(anyhow::Error::new)?;
            calls += 1;
            if o.state == TrafficState::Drained {
                break;
            }
            anyhow::ensure!(calls < 1000, "drain {i} never verified: {o:?}");
            if o.advance {
                adapter.deregister(&t).await.map_err(anyhow::Error::new)?;
                calls += 1;
            }
        }
        drains.push(started.elapsed());
        adapter.register(&t).await.map_err(anyhow::Error::new)?;
        wait_state(&adapter, &t, TrafficState::Serving, "s1 back").await;
    }
    let (f, a) = (median(floor), median(drains));
    let ratio = a.as_secs_f64() / f.as_secs_f64();
    let pass = ratio <= RATIO_LIMIT;
    println!(
        "{}",
        serde_json::json!({"bench": "haproxy-drain", "runs": runs, "floor_median_ms": ms(f),
                           "adapter_median_ms": ms(a), "ratio": ratio, "limit": RATIO_LIMIT, "pass": pass})
    );
    if !json {
        println!(
            "haproxy-drain floor: drain + show stat + maint + show servers state, bare commands on an open connection \
             (unix socket, n={runs}): median {:.3} ms",
            ms(f)
        );
        println!(
            "haproxy-drain adapter: deregister + observe until Drained (DRAIN, scur=0, MAINT, re-read; n={runs}): median \
             {:.3} ms = {ratio:.2}x floor: {} (limit {RATIO_LIMIT}x)",
            ms(a),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    if !pass {
        bail!("missed its target");
    }
    Ok(())
}
