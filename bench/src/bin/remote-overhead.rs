//! What the out-of-process protocol costs: the same adapter called directly and through
//! `RemoteAdapter` → gRPC over loopback → `serve()`. The adapter is an in-memory one, so
//! the difference is the protocol alone.
//!
//! ```text
//! cargo run --release -p sluice-bench --bin remote-overhead -- [--calls N] [--json]
//! ```
//! Target: the remote adapter adds under 1 ms at p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, Capabilities, Observation, PodRef, Target, TrafficState};
use sluice_adapter_remote::{serve, RemoteAdapter, RemoteConfig};

#[derive(Debug)]
struct Memory;

#[async_trait::async_trait]
impl Adapter for Memory {
    fn name(&self) -> &str {
        "memory"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "rpc".into(),
            required_params: vec![],
            shared_reads: false,
        }
    }
    async fn register(&self, _: &Target) -> sluice_adapter::Result<()> {
        Ok(())
    }
    async fn deregister(&self, _: &Target) -> sluice_adapter::Result<()> {
        Ok(())
    }
    async fn observe(&self, _: &Target) -> sluice_adapter::Result<Observation> {
        Ok(Observation::new(TrafficState::Drained, "memory"))
    }
    async fn health(&self) -> sluice_adapter::Result<()> {
        Ok(())
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(a: &dyn Adapter, t: &Target, n: usize) -> Vec<Duration> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let s = Instant::now();
        if i % 2 == 0 {
            a.deregister(t).await.expect("deregister");
        } else {
            a.observe(t).await.expect("observe");
        }
        v.push(s.elapsed());
    }
    v.sort();
    v
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut n = 20_000usize;
    let mut json_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--calls" => n = args.next().unwrap_or_default().parse()?,
            "--json" => json_only = true,
            other => anyhow::bail!("unknown argument {other} (usage: remote-overhead [--calls N] [--json])"),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { serve(Arc::new(Memory), listener).await });
    let remote = RemoteAdapter::new(RemoteConfig {
        name: "bench".into(),
        endpoint: format!("http://{addr}"),
        adapter_kind: "rpc".into(),
        required_params: vec![],
        timeout_ms: 2000,
        tls: None,
    })?;
    let t = Target {
        pod: PodRef {
            cluster: "c".into(),
            namespace: "n".into(),
            name: "p".into(),
            uid: "u".into(),
        },
        ip: "10.0.0.1".parse()?,
        port: 8080,
        params: [("service".to_string(), "payments".to_string())].into(),
    };
    measure(&remote, &t, 1000).await; // warm up the connection
    let direct = measure(&Memory, &t, n).await;
    let remote_lat = measure(&remote, &t, n).await;
    let added_p99 = pct(&remote_lat, 0.99).saturating_sub(pct(&direct, 0.99));
    let pass = added_p99 < Duration::from_millis(1);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{}",
        serde_json::json!({
            "bench": "remote-overhead", "calls": n,
            "direct_p50_us": us(pct(&direct, 0.5)), "direct_p99_us": us(pct(&direct, 0.99)),
            "remote_p50_us": us(pct(&remote_lat, 0.5)), "remote_p99_us": us(pct(&remote_lat, 0.99)),
            "added_p99_us": us(added_p99), "pass": pass
        })
    );
    if json_only {
        anyhow::ensure!(
            pass,
            "missed target: the remote adapter added {added_p99:?} at p99 (limit 1 ms)"
        );
        return Ok(());
    }
    println!(
        "remote adapter over loopback: {n} calls; direct p50 {:?} p99 {:?}; remote p50 {:?} p99 {:?} max {:?}; added at p99 {:?} [target < 1 ms: {}]",
        pct(&direct, 0.5),
        pct(&direct, 0.99),
        pct(&remote_lat, 0.5),
        pct(&remote_lat, 0.99),
        remote_lat.last().copied().unwrap_or_default(),
        added_p99,
        if added_p99 < Duration::from_millis(1) { "PASS" } else { "FAIL" }
    );
    anyhow::ensure!(
        added_p99 < Duration::from_millis(1),
        "missed target: the remote adapter added {added_p99:?} at p99 (limit 1 ms)"
    );
    Ok(())
}
