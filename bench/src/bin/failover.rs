//! Leader failover benchmark: two real `sluice` processes (leader election on a Lease of
//! 3 s, renew deadline 2 s, retry 0.2 s) in front of the API simulator and real HAProxy,
//! with keep-alive load through HAProxy. Each round drains a pod holding long requests and,
//! mid-drain:
//!
//! - **SIGKILL** of the leader: time from the kill to the standby's first pod write (as
//!   the simulator records who wrote). Target: at most the lease duration + 1 s.
//! - **SIGTERM** of the (new) leader: time from the signal to the standby holding the
//!   Lease (the stopping leader releases it). Target: under 1 s.
//!
//! Every round must lose no request. Prints each round, the medians and maxima; exits
//! non-zero when a target is missed.
//!
//! `cargo build --release -p sluice-gateway --bin sluice && cargo run --release -p sluice-bench --bin failover [-- --rounds N --json]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use sluice::demo::Stage;
use sluice_bench::{hold, median, ready, sluice_bin, until, Proc, WAIT};

const LEASE_S: u64 = 3;

struct Replica {
    config: std::path::PathBuf,
    health: std::net::SocketAddr,
}

impl Replica {
    fn new(stage: &Stage, name: &str) -> Result<Replica> {
        let health = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let lease = format!(
            "leaderElection:\n  namespace: default\n  name: sluice\n  leaseSeconds: {LEASE_S}\n  renewDeadlineMs: 2000\n  retryMs: 200\n"
        );
        let text = stage.gateway_config_yaml(health, "", &format!("  instance: {name}\n")) + &lease;
        let config = stage.dir.join(format!("{name}.yaml"));
        std::fs::write(&config, text)?;
        Ok(Replica { config, health })
    }

    async fn spawn(&self) -> Result<Proc> {
        let child = Command::new(sluice_bin()?)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sluice")?;
        let p = Proc(child);
        until("a replica's /readyz", || async {
            ready(self.health).await.then_some(())
        })
        .await?;
        Ok(p)
    }
}

async fn holder(stage: &Stage) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(stage.client.clone(), "default");
    leases.get_opt("sluice").await.ok()??.spec?.holder_identity
}

fn first_write_by(stage: &Stage, who: &str, after: Instant) -> Option<Instant> {
    stage
        .cluster()
        .faults()
        .write_log()
        .into_iter()
        .find(|w| w.manager == who && w.uri.contains("/pods/") && w.at > after)
        .map(|w| w.at)
}

/// Holds `n` requests of `ms` through HAProxy.
fn hold_n(stage: &Stage, n: usize, ms: u64) -> Vec<tokio::task::JoinHandle<bool>> {
    (0..n).map(|_| hold(stage.frontend, ms)).collect()
}

/// Waits until pod `i`'s drain has started (its gate False).
async fn gate_false(stage: &Stage, i: usize) -> Result<()> {
    until("the gate False", || async {
        let p = stage.get(i).await.ok()?;
        let gate = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "sluice.dev/traffic-ready")?;
        (gate.status == "False").then_some(())
    })
    .await
}

struct Round {
    kill_to_write: Duration,
    term_to_lease: Duration,
    requests: u64,
    failed: u64,
}

async fn round() -> Result<Round> {
    let stage = Stage::new(2, true).await?;
    stage.cluster().faults().set_recording(true);
    let a = Replica::new(&stage, "gw-a")?;
    let b = Replica::new(&stage, "gw-b")?;
    let pa = a.spawn().await?;
    until("gw-a leading", || async {
        (holder(&stage).await.as_deref() == Some("gw-a")).then_some(())
    })
    .await?;
    let pb = b.spawn().await?;
    for i in 0..2 {
        stage.wait_ready(i, WAIT).await?;
    }
    let load = sluice::demo::load::Load::start(stage.frontend, 4);
    let mut held_ok = true;

    // SIGKILL mid-drain.
    let held = hold_n(&stage, 4, 1500);
    stage.set_kruise_state(0, "PreparingUpdate").await?;
    gate_false(&stage, 0).await?;
    drop(pa);
    let killed = Instant::now();
    let wrote = until("gw-b's first pod write", || async {
        first_write_by(&stage, "gw-b", killed)
    })
    .await?;
    stage.wait_drained(0, WAIT).await?;
    for h in held {
        held_ok &= h.await.unwrap_or(false);
    }
    stage.set_kruise_state(0, "Updated").await?;
    stage.wait_ready(0, WAIT).await?;

    // SIGTERM mid-drain.
    let _pa = a.spawn().await?;
    let held = hold_n(&stage, 4, 1500);
    stage.set_kruise_state(1, "PreparingUpdate").await?;
    gate_false(&stage, 1).await?;
    Command::new("kill").args(["-TERM", &pb.0.id().to_string()]).status()?;
    let termed = Instant::now();
    until("gw-a leading again", || async {
        (holder(&stage).await.as_deref() == Some("gw-a")).then_some(())
    })
    .await?;
    let term_to_lease = termed.elapsed();
    stage.wait_drained(1, WAIT).await?;
    for h in held {
        held_ok &= h.await.unwrap_or(false);
    }
    let (requests, failed) = load.finish().await;
    let failed = failed + u64::from(!held_ok);
    Ok(Round {
        kill_to_write: wrote.duration_since(killed),
        term_to_lease,
        requests,
        failed,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut rounds = 5usize;
    let mut json_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--json" => json_only = true,
            other => bail!("unknown argument {other} (usage: failover [--rounds N] [--json])"),
        }
    }
    let mut kills = Vec::new();
    let mut terms = Vec::new();
    let (mut requests, mut failed) = (0, 0);
    for i in 0..rounds {
        let r = round().await?;
        if !json_only {
            println!(
            "round {i}: SIGKILL -> standby's first write {:.3} s; SIGTERM -> standby leads {:.3} s; {} requests, {} failed",
            r.kill_to_write.as_secs_f64(),
            r.term_to_lease.as_secs_f64(),
            r.requests,
            r.failed
        );
        }
        kills.push(r.kill_to_write);
        terms.push(r.term_to_lease);
        requests += r.requests;
        failed += r.failed;
    }
    let kill_limit = Duration::from_secs(LEASE_S + 1);
    let term_limit = Duration::from_secs(1);
    let (kill_max, term_max) = (*kills.iter().max().unwrap(), *terms.iter().max().unwrap());
    let pass = kill_max <= kill_limit && term_max < term_limit && failed == 0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "failover", "rounds": rounds, "lease_s": LEASE_S,
            "kill_to_first_write_median_s": median(kills.clone()).as_secs_f64(), "kill_to_first_write_max_s": kill_max.as_secs_f64(),
            "term_to_lease_median_s": median(terms.clone()).as_secs_f64(), "term_to_lease_max_s": term_max.as_secs_f64(),
            "requests": requests, "failed": failed, "pass": pass
        })
    );
    if json_only {
        anyhow::ensure!(pass, "missed targets");
        return Ok(());
    }
    println!(
        "failover over {rounds} rounds (lease {LEASE_S} s): SIGKILL -> first write median {:.3} s, max {:.3} s \
         [target <= {} s]; SIGTERM -> lease taken median {:.3} s, max {:.3} s [target < 1 s]; {requests} requests, \
         {failed} failed [target 0]: {}",
        median(kills).as_secs_f64(),
        kill_max.as_secs_f64(),
        kill_limit.as_secs(),
        median(terms).as_secs_f64(),
        term_max.as_secs_f64(),
        if pass { "PASS" } else { "FAIL" }
    );
    if !pass {
        bail!("missed targets");
    }
    Ok(())
}
