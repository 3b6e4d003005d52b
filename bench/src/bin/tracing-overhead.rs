//! Tracing overhead: the same rollout with trace export off and on, in one run. A real
//! `sluice` process in front of the API simulator and real HAProxy, keep-alive load through
//! HAProxy; each pod of the rollout holds a request while it drains, so every drain waits
//! for evidence (observations, wait spans, pod writes: the spans an SRE would see). With
//! export on, the spans go over OTLP/gRPC to a receiver here (built from the collector's
//! proto) that counts them.
//!
//! Rounds alternate off / on. Per mode: the rollout's wall time, the drain time per pod
//! (p50), and the gateway process's CPU time (user + system, from /proc) per rollout.
//! Target: on/off ratio of the median rollout time at most 1.10, every span-exporting
//! rollout delivers spans, and no request fails in either mode.
//!
//! `cargo build --release -p sluice-gateway --bin sluice && cargo run --release -p sluice-bench --bin tracing-overhead [-- --rounds N --pods N --json]`

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use sluice::demo::Stage;
use sluice_bench::{hold, median, ready, sluice_bin, until, Proc, WAIT};

/// How long the request each pod holds while it drains lasts.
const HELD_MS: u64 = 300;

#[derive(Clone, Default)]
struct Receiver(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// User + system CPU time of a process, from `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

struct Run {
    rollout: Duration,
    drains: Vec<Duration>,
    cpu: Duration,
    requests: u64,
    failed: u64,
    spans: u64,
}

async fn rollout(pods: usize, export: bool) -> Result<Run> {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let otlp = listener.local_addr()?;
    let server = {
        let r = receiver.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        })
    };
    let stage = Stage::new(pods, true).await?;
    let health = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut text = stage.gateway_config_text(health);
    if export {
        text += &format!("telemetry:\n  otlpEndpoint: http://{otlp}\n");
    }
    let config = stage.dir.join("sluice.yaml");
    std::fs::write(&config, text)?;
    let child = Command::new(sluice_bin()?)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting sluice")?;
    let gw = Proc(child);
    until("the gateway's /readyz", || async { ready(health).await.then_some(()) }).await?;
    for i in 0..pods {
        stage.wait_ready(i, WAIT).await?;
    }
    let load = sluice::demo::load::Load::start(stage.frontend, 4);
    let cpu_before = cpu_time(gw.0.id())?;
    let started = Instant::now();
    let mut drains = Vec::new();
    let mut held_ok = true;
    for i in 0..pods {
        let held: Vec<_> = (0..pods).map(|_| hold(stage.frontend, HELD_MS)).collect();
        let t = Instant::now();
        stage.set_kruise_state(i, "PreparingUpdate").await?;
        stage.wait_drained(i, WAIT).await?;
        drains.push(t.elapsed());
        stage.set_kruise_state(i, "Updated").await?;
        stage.wait_ready(i, WAIT).await?;
        for h in held {
            held_ok &= h.await.unwrap_or(false);
        }
    }
    let rollout = started.elapsed();
    let cpu = cpu_time(gw.0.id())?.saturating_sub(cpu_before);
    let (requests, failed) = load.finish().await;
    // SIGTERM: the exporter flushes what it holds.
    Command::new("kill").args(["-TERM", &gw.0.id().to_string()]).status()?;
    let mut gw = gw;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while gw.0.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server.abort();
    Ok(Run {
        rollout,
        drains,
        cpu,
        requests,
        failed: failed + u64::from(!held_ok),
        spans: receiver.0.load(Ordering::SeqCst),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut rounds = 5usize;
    let mut pods = 6usize;
    let mut json_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--pods" => pods = args.next().context("--pods N")?.parse()?,
            "--json" => json_only = true,
            other => bail!("unknown argument {other} (usage: tracing-overhead [--rounds N] [--pods N] [--json])"),
        }
    }
    let mut by_mode: [(Vec<Duration>, Vec<Duration>, Vec<Duration>); 2] = Default::default();
    let (mut requests, mut failed, mut no_spans) = (0, 0, 0);
    for round in 0..rounds {
        for (m, export) in [false, true].into_iter().enumerate() {
            let r = rollout(pods, export).await?;
            if !json_only {
                println!(
                "round {round} export {}: rollout {:.3} s, drain p50 {:.1} ms, gateway CPU {} ms, {} spans, {} requests, {} failed",
                if export { "on " } else { "off" },
                r.rollout.as_secs_f64(),
                median(r.drains.clone()).as_secs_f64() * 1e3,
                r.cpu.as_millis(),
                r.spans,
                r.requests,
                r.failed
            );
            }
            by_mode[m].0.push(r.rollout);
            by_mode[m].1.push(median(r.drains));
            by_mode[m].2.push(r.cpu);
            requests += r.requests;
            failed += r.failed;
            if export && r.spans == 0 {
                no_spans += 1;
            }
        }
    }
    let [off, on] = by_mode;
    let (roll_off, roll_on) = (median(off.0), median(on.0));
    let (drain_off, drain_on) = (median(off.1), median(on.1));
    let (cpu_off, cpu_on) = (median(off.2), median(on.2));
    let ratio = roll_on.as_secs_f64() / roll_off.as_secs_f64();
    let pass = ratio <= 1.10 && failed == 0 && no_spans == 0;
    println!(
        "{}",
        serde_json::json!({
            "bench": "tracing-overhead", "rounds": rounds, "pods": pods,
            "rollout_off_s": roll_off.as_secs_f64(), "rollout_on_s": roll_on.as_secs_f64(), "ratio": ratio,
            "drain_p50_off_ms": drain_off.as_secs_f64() * 1e3, "drain_p50_on_ms": drain_on.as_secs_f64() * 1e3,
            "cpu_off_ms": cpu_off.as_millis() as u64, "cpu_on_ms": cpu_on.as_millis() as u64,
            "requests": requests, "failed": failed, "rollouts_without_spans": no_spans, "pass": pass
        })
    );
    if json_only {
        anyhow::ensure!(pass, "missed targets");
        return Ok(());
    }
    println!(
        "tracing overhead over {rounds} rounds of {pods} pods: rollout median off {:.3} s, on {:.3} s, on/off {ratio:.3} \
         [target <= 1.10]; drain p50 median off {:.1} ms, on {:.1} ms; gateway CPU median off {} ms, on {} ms per \
         rollout; {requests} requests, {failed} failed [target 0]; rollouts with export on and no span: {no_spans}: {}",
        roll_off.as_secs_f64(),
        roll_on.as_secs_f64(),
        drain_off.as_secs_f64() * 1e3,
        drain_on.as_secs_f64() * 1e3,
        cpu_off.as_millis(),
        cpu_on.as_millis(),
        if pass { "PASS" } else { "FAIL" }
    );
    if !pass {
        bail!("missed targets");
    }
    Ok(())
}
