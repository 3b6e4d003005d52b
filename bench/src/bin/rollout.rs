//! The claim in one run: the same rolling update of `--pods` pods behind real HAProxy, under
//! the same keep-alive load (90 % of requests 5–50 ms, 10 % 200–800 ms), three ways:
//!
//! - `none`: each pod stops as its update starts;
//! - `sleep`: the common practice: the pod's server is taken out of HAProxy as its update
//!   starts (what an ingress controller does when the endpoint goes), then a fixed
//!   preStop-style sleep of `--sleep-seconds` (default 15) before it stops;
//! - `sluice`: Sluice's verified drain (OpenKruise-style lifecycle hook).
//!
//! Prints a table and, one line per mode, a JSON object (`mode`, `requests`, `failed`,
//! `drain_p50_ms`, `drain_p99_ms`, `longest_inflight_ms`, `rollout_s`). Bars: `sluice` 0
//! failed; its drain p99 at most the longest request in flight + 250 ms; its rollout at least
//! 5× faster than `sleep`; `none` loses requests (the harness sees loss); `sluice` over at
//! least `--sluice-requests` requests (default 100,000): its rollout is repeated, each time
//! on a fresh stage, until that many requests have gone through (the JSON says how many
//! `rollouts`; `rollout_s` is their median, `failed` and `requests` their sums).
//!
//! `cargo run --release -p sluice-bench --bin rollout [-- --pods N --clients N --sleep-seconds S --sluice-requests N --json]`
//! prints the table, one JSON object per mode, and the verdict; `--json`: the JSON objects only.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice::demo::{self, DemoOptions, Summary};

fn quantile(mut v: Vec<u64>, p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (mut pods, mut clients, mut sleep, mut wanted) = (6usize, 64usize, 15u64, 100_000u64);
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--pods" => pods = args.next().context("--pods N")?.parse()?,
            "--clients" => clients = args.next().context("--clients N")?.parse()?,
            "--sleep-seconds" => sleep = args.next().context("--sleep-seconds S")?.parse()?,
            "--sluice-requests" => wanted = args.next().context("--sluice-requests N")?.parse()?,
            other => bail!(
                "unknown argument {other} (usage: rollout [--pods N] [--clients N] [--sleep-seconds S] \
                 [--sluice-requests N] [--json])"
            ),
        }
    }
    let mut results: Vec<(&str, Summary, usize)> = Vec::new();
    for (mode, sluice, sleep) in [
        ("none", false, None),
        ("sleep", false, Some(Duration::from_secs(sleep))),
        ("sluice", true, None),
    ] {
        let opts = DemoOptions {
            pods,
            sluice,
            sleep,
            clients,
            verbose: false,
        };
        let mut total = demo::run(opts.clone()).await.with_context(|| format!("mode {mode}"))?;
        let mut rollouts = vec![total.rollout_s];
        // Sluice's claim is counted over many requests: the rollout again, on a fresh stage.
        while sluice && total.requests < wanted && rollouts.len() < 100 {
            let s = demo::run(opts.clone()).await.with_context(|| format!("mode {mode}"))?;
            total.requests += s.requests;
            total.failed += s.failed;
            total.drain_ms.extend(s.drain_ms);
            total.longest_inflight_ms = total.longest_inflight_ms.max(s.longest_inflight_ms);
            rollouts.push(s.rollout_s);
        }
        rollouts.sort_by(|a, b| a.total_cmp(b));
        total.rollout_s = rollouts[rollouts.len() / 2];
        results.push((mode, total, rollouts.len()));
    }
    for (mode, s, n) in results.iter().filter(|_| !json) {
        if *mode == "none" {
            println!("mode    rollouts  requests  failed  drain_p50_ms  drain_p99_ms  longest_inflight_ms  rollout_s");
        }
        println!(
            "{mode:<7} {n:>8}  {:>8}  {:>6}  {:>12}  {:>12}  {:>19}  {:>9.1}",
            s.requests,
            s.failed,
            quantile(s.drain_ms.clone(), 0.5),
            quantile(s.drain_ms.clone(), 0.99),
            s.longest_inflight_ms,
            s.rollout_s
        );
    }
    for (mode, s, n) in &results {
        println!(
            "{}",
            serde_json::json!({
                "mode": mode, "pods": pods, "clients": clients, "rollouts": n, "requests": s.requests, "failed": s.failed,
                "drain_p50_ms": quantile(s.drain_ms.clone(), 0.5), "drain_p99_ms": quantile(s.drain_ms.clone(), 0.99),
                "longest_inflight_ms": s.longest_inflight_ms, "rollout_s": s.rollout_s,
            })
        );
    }
    let get = |m: &str| &results.iter().find(|(x, _, _)| *x == m).expect("mode ran").1;
    let (none, slept, sluice) = (get("none"), get("sleep"), get("sluice"));
    let speedup = slept.rollout_s / sluice.rollout_s;
    let drain_p99 = quantile(sluice.drain_ms.clone(), 0.99);
    let checks = [
        (sluice.failed == 0, format!("sluice failed {} [0]", sluice.failed)),
        (
            drain_p99 <= sluice.longest_inflight_ms + 250,
            format!(
                "sluice drain p99 {drain_p99} ms [<= longest in flight {} ms + 250]",
                sluice.longest_inflight_ms
            ),
        ),
        (
            speedup >= 5.0,
            format!("rollout {speedup:.1}x faster than sleep [>= 5x]"),
        ),
        (
            none.failed > 0,
            format!("none failed {} [> 0: the harness sees loss]", none.failed),
        ),
        (
            sluice.requests >= wanted,
            format!("sluice requests {} [>= {wanted}]", sluice.requests),
        ),
    ];
    let pass = checks.iter().all(|(ok, _)| *ok);
    if !json {
        println!(
            "rollout: {}: {}",
            checks.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join("; "),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    if !pass {
        bail!("missed targets");
    }
    Ok(())
}
