//! Mass registration and evacuation behind one load balancer: N pods of one binding
//! (disruption budget 100 %) registered as dynamic servers (no health check) of one real
//! HAProxy backend by the gateway, from the API simulator with kubelet-lite; then every pod
//! asked to drain at once (`sluice.dev/desired: drained`).
//!
//! Prints the time until every pod's gate is True (registered and verified serving), the
//! time until every pod is drained (no `sluice.dev/*` finalizer left), the runtime API
//! commands the adapter sent, and the adapter calls that failed (socket errors among them).
//! Target (from the scale issue): each phase under 10 s with no failed call.
//!
//! `cargo run --release -p sluice-bench --bin mass-haproxy [-- --pods N --max-workers N --json]` prints
//! the phases, one JSON object and the verdict; `--json`: the JSON object only.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sluice::demo::Stage;

const LIMIT: Duration = Duration::from_secs(600);

fn gate_true(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "sluice.dev/traffic-ready" && c.status == "True")
    })
}

fn drained(p: &Pod) -> bool {
    !p.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f.starts_with("sluice.dev/")))
        && p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("sluice.dev/status"))
            .is_some_and(|s| s.contains("\"drained\""))
}

/// Polls the pods of the binding until `done` holds for all `n`; the time it took.
async fn until_all(stage: &Stage, n: usize, what: &str, done: fn(&Pod) -> bool) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let pods = stage.pods.list(&ListParams::default().labels("app=mass")).await?;
        let count = pods.items.iter().filter(|p| done(p)).count();
        if count == n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > LIMIT {
            bail!("{what}: {count} of {n} after {LIMIT:?}");
        }
        // Not more often: listing thousands of pods takes the machine's time from what is
        // measured.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The adapter calls of `adapter` that did not succeed, from the gateway's metrics.
fn failed_calls(gw: &sluice::gateway::Gateway, adapter: &str) -> u64 {
    gw.engine
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sluice_adapter_calls_total{") && l.contains(&format!("adapter=\"{adapter}\"")))
        .filter(|l| !l.contains("result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut n = 5000usize;
    let mut engine = String::new();
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--pods" => n = args.next().context("--pods N")?.parse()?,
            "--max-workers" => {
                let w: usize = args.next().context("--max-workers N")?.parse()?;
                engine = format!("  maxWorkers: {w}\n");
            }
            other => bail!("unknown argument {other} (usage: mass-haproxy [--pods N] [--max-workers N] [--json])"),
        }
    }
    let stage = Stage::new(1, true).await?;
    stage
        .put_binding(
            "mass",
            json!({"selector": {"matchLabels": {"app": "mass"}}, "port": 8080,
                   "targets": [{"adapter": "haproxy-dyn", "params": {"backend": "dyn"}}],
                   "disruptionBudget": {"maxUnavailable": "100%"}}),
        )
        .await?;
    let health = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let adapter = format!(
        "- kind: haproxy\n  name: haproxy-dyn\n  endpoint: unix:{}\n  mode: dynamic\n  check: false\n",
        stage.dir.join("haproxy.sock").display()
    );
    let text = stage.gateway_config_yaml(health, &adapter, &engine);
    let gw = stage.start_gateway_with(&text).await?;
    let kubelet = stage.cluster().kubelet().context("kubelet-lite")?;

    // N pods on one node; kubelet-lite gives each an address of 127.1.0.0/16.
    let created = Instant::now();
    for i in 0..n {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("mass-{i}"), "labels": {"app": "mass"}},
            "spec": {"nodeName": "sim-node-1", "readinessGates": [{"conditionType": "sluice.dev/traffic-ready"}],
                     "containers": [{"name": "app", "image": "registry.local/app:1", "ports": [{"containerPort": 8080}]}]}
        }))?;
        stage.pods.create(&PostParams::default(), &p).await?;
    }
    until_all(&stage, n, "pods started", |p| {
        p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
    })
    .await?;
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    say(format!(
        "{n} pods created and started in {:.1} s",
        created.elapsed().as_secs_f64()
    ));
    for i in 0..n {
        kubelet
            .set_containers_ready("default", &format!("mass-{i}"), true)
            .map_err(anyhow::Error::new)?;
    }
    let registered = until_all(&stage, n, "registered", gate_true).await?;
    let after_register = failed_calls(&gw, "haproxy-dyn");
    let servers = stage.haproxy().show_servers_state("dyn").await?.len();
    say(format!(
        "registration: {n} pods serving behind one backend in {:.1} s ({servers} servers in HAProxy), failed adapter \
         calls {after_register}",
        registered.as_secs_f64()
    ));

    // Evacuation: every pod asked to drain at once.
    let asked = Instant::now();
    let patch = json!({"metadata": {"annotations": {"sluice.dev/desired": "drained"}}});
    let names: Vec<String> = (0..n).map(|i| format!("mass-{i}")).collect();
    let params = PatchParams::default();
    let merge = Patch::Merge(&patch);
    for chunk in names.chunks(64) {
        futures::future::try_join_all(chunk.iter().map(|name| stage.pods.patch(name, &params, &merge))).await?;
    }
    let evacuated = until_all(&stage, n, "drained", drained).await?;
    let evac_total = asked.elapsed().max(evacuated);
    let failed = failed_calls(&gw, "haproxy-dyn");
    let left = stage.haproxy().show_servers_state("dyn").await?.len();
    say(format!(
        "evacuation: {n} pods drained in {:.1} s after being asked at once ({left} servers left in HAProxy), failed \
         adapter calls {}",
        evac_total.as_secs_f64(),
        failed - after_register
    ));
    for l in gw.engine.metrics.encode().lines() {
        if l.starts_with("sluice_adapter_calls_total{") && l.contains("haproxy-dyn") && !l.contains("result=\"ok\"") {
            say(format!("  failed: {l}"));
        }
    }
    let commands = gw
        .engine
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sluice_adapter_calls_total{") && l.contains("haproxy-dyn"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum::<u64>();
    let pass = registered < Duration::from_secs(10) && evac_total < Duration::from_secs(10) && failed == 0;
    println!(
        "{}",
        json!({"pods": n, "register_s": registered.as_secs_f64(), "evacuation_s": evac_total.as_secs_f64(),
               "failed_calls": failed, "adapter_calls": commands, "pass": pass})
    );
    say(format!(
        "mass-haproxy {n} pods: registered in {:.1} s, evacuated in {:.1} s [target < 10 s each], failed adapter \
         calls {failed} [target 0]: {}",
        registered.as_secs_f64(),
        evac_total.as_secs_f64(),
        if pass { "PASS" } else { "FAIL" }
    ));
    if !pass {
        bail!("missed targets");
    }
    Ok(())
}
