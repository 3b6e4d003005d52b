//! Scale benchmark of the Kubernetes API simulator: 100,000 pods stored, listed and
//! watched.
//!
//! ```text
//! cargo run --release -p sluice-bench --bin sim-scale -- [--pods N] [--watchers N]
//!     [--rate WRITES_PER_S] [--seconds S] [--runs N] [--json]
//! ```
//!
//! Figures (medians over `--runs`): memory held by the store for N typical pods; a full
//! list over HTTPS read to the last byte, and decoded by kube-rs into `Pod`s; a paginated
//! list (`limit=500`, kube-rs's watcher page size); watch fan-out to N watchers while a
//! writer patches pods at a fixed rate — every watcher must receive every event, and the
//! delivery lag is reported as p50 / p99 / max.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{Cluster, ClusterConfig, PatchType};
use serde_json::{json, Value};

struct Args {
    pods: usize,
    watchers: usize,
    rate: u64,
    seconds: u64,
    runs: usize,
    json: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        pods: 100_000,
        watchers: 50,
        rate: 1000,
        seconds: 10,
        runs: 5,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut v = || it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--pods" => a.pods = v()?.parse()?,
            "--watchers" => a.watchers = v()?.parse()?,
            "--rate" => a.rate = v()?.parse()?,
            "--seconds" => a.seconds = v()?.parse()?,
            "--runs" => a.runs = v()?.parse()?,
            "--json" => a.json = true,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn rss_bytes() -> u64 {
    sluice_bench::rss_bytes("self").unwrap_or(0)
}

/// A pod as a Deployment would create it, with the status a kubelet would report.
fn typical_pod(i: usize) -> (Value, Value) {
    let name = format!("web-{:06}", i);
    let spec = json!({
        "metadata": {
            "name": name,
            "labels": {"app": "web", "pod-template-hash": "6d4cf56db6", "tier": "frontend"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-01T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d4cf56db6",
                                  "uid": "8a4c0f5e-3b1d-4f7a-9a7e-2d8c5e1b9f00", "controller": true,
                                  "blockOwnerDeletion": true}]
        },
        "spec": {
            "nodeName": format!("node-{}", i % 200),
            "readinessGates": [{"conditionType": "sluice.dev/traffic-ready"}],
            "containers": [{
                "name": "web", "image": "registry.local/web:1.42.0",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "REGION", "value": "east"}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}
            }]
        }
    });
    let octets = (i / 250 % 250 + 1, i % 250 + 1);
    let status = json!({"status": {
        "phase": "Running", "podIP": format!("10.244.{}.{}", octets.0, octets.1), "hostIP": "192.168.0.10",
        "startTime": "2026-11-01T10:00:05Z", "qosClass": "Burstable",
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2026-11-01T10:00:06Z"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-01T10:00:05Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-01T10:00:09Z"},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-01T10:00:09Z"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-01T10:00:05Z"},
            {"type": "sluice.dev/traffic-ready", "status": "True", "lastTransitionTime": "2026-11-01T10:00:09Z"}
        ],
        "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "started": true,
                               "image": "registry.local/web:1.42.0", "imageID": "registry.local/web@sha256:0f3a",
                               "containerID": "containerd://4f6e0c1d2b3a", "state": {"running": {"startedAt": "2026-11-01T10:00:07Z"}}}]
    }});
    (spec, status)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    epoch();
    let rss0 = rss_bytes();
    let cluster = Cluster::start(ClusterConfig::new("bench")).await?;
    let pods_api = cluster.api("", "v1", "pods").map_err(anyhow::Error::new)?;
    let t = Instant::now();
    for i in 0..args.pods {
        let (spec, status) = typical_pod(i);
        let created = pods_api.create("default", spec).map_err(anyhow::Error::new)?;
        let mut with_status = created;
        with_status["status"] = status["status"].clone();
        pods_api
            .update_status("default", &format!("web-{i:06}"), with_status)
            .map_err(anyhow::Error::new)?;
    }
    let load_s = t.elapsed().as_secs_f64();
    let rss1 = rss_bytes();
    let store_mib = (rss1.saturating_sub(rss0)) as f64 / (1 << 20) as f64;
    say(format!(
        "load: pods={} writes={} in {:.1} s; process memory grew {:.0} MiB ({:.0} bytes/pod) [target < 1024 MiB: {}]",
        args.pods,
        args.pods * 2,
        load_s,
        store_mib,
        (rss1.saturating_sub(rss0)) as f64 / args.pods as f64,
        if store_mib < 1024.0 { "PASS" } else { "FAIL" }
    ));
    let mut missed = Vec::new();
    if store_mib >= 1024.0 {
        missed.push(format!("memory grew {store_mib:.0} MiB (limit 1024 MiB)"));
    }

    let kc = Kubeconfig::from_yaml(&cluster.kubeconfig())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(cfg)?;

    let mut raw = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..args.runs {
        let t = Instant::now();
        let req = http::Request::get("/api/v1/pods").body(Vec::new())?;
        let mut stream = client.request_stream(req).await?;
        let mut buf = Vec::with_capacity(1 << 20);
        bytes = futures::AsyncReadExt::read_to_end(&mut stream, &mut buf).await?;
        raw.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(buf.starts_with(b"{\"kind\":\"PodList\""), "unexpected list body");
    }
    let raw_med = median(raw.clone());
    say(format!(
        "list (HTTPS, read to the last byte): {} pods, {:.0} MiB, median {:.3} s over {} runs (min {:.3}, max {:.3}) [target < 2 s: {}]",
        args.pods,
        bytes as f64 / (1 << 20) as f64,
        raw_med,
        args.runs,
        raw.iter().cloned().fold(f64::MAX, f64::min),
        raw.iter().cloned().fold(0.0, f64::max),
        if raw_med < 2.0 { "PASS" } else { "FAIL" }
    ));
    if raw_med >= 2.0 {
        missed.push(format!("a full list took {raw_med:.3} s (limit 2 s)"));
    }

    let pods: Api<Pod> = Api::all(client.clone());
    let mut typed = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let l = pods.list(&ListParams::default()).await?;
        typed.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(l.items.len() == args.pods, "list returned {} pods", l.items.len());
    }
    let typed_med = median(typed);
    say(format!(
        "list (kube-rs, decoded into Pod): median {typed_med:.3} s over {} runs",
        args.runs
    ));

    let mut paged = Vec::new();
    for _ in 0..args.runs.min(3) {
        let t = Instant::now();
        let mut lp = ListParams::default().limit(500);
        let mut n = 0;
        loop {
            let page = pods.list(&lp).await?;
            n += page.items.len();
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        anyhow::ensure!(n == args.pods, "pages held {n} pods");
        paged.push(t.elapsed().as_secs_f64());
    }
    let paged_med = median(paged);
    say(format!("list (kube-rs, pages of 500): median {paged_med:.3} s"));

    let (fanned, watch) = fan_out(&cluster, &client, &args).await?;
    println!(
        "{}",
        json!({
            "bench": "sim-scale", "pods": args.pods, "load_s": load_s, "memory_bytes": rss1.saturating_sub(rss0),
            "list_median_s": raw_med, "list_decoded_median_s": typed_med, "list_paged_median_s": paged_med,
            "watch": watch, "pass": missed.is_empty() && fanned
        })
    );
    if !fanned {
        missed.push("the watch fan-out lost events, lagged past 1 s at p99 or fell behind the write rate".into());
    }
    anyhow::ensure!(missed.is_empty(), "missed targets: {}", missed.join("; "));
    Ok(())
}

/// The watch fan-out; answers whether it met its target.
async fn fan_out(cluster: &Cluster, client: &kube::Client, args: &Args) -> anyhow::Result<(bool, Value)> {
    let pods_api = cluster.api("", "v1", "pods").map_err(anyhow::Error::new)?;
    let rv = cluster.state().store().rv();
    let mut tasks = Vec::new();
    for _ in 0..args.watchers {
        let req = http::Request::get(format!("/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=600"))
            .body(Vec::new())?;
        let stream = client.request_stream(req).await?;
        let expected = args.rate * args.seconds;
        tasks.push(tokio::spawn(async move {
            let mut lines = stream.lines();
            let mut lags = Vec::with_capacity(expected as usize);
            while let Some(Ok(line)) = lines.next().await {
                #[derive(serde::Deserialize)]
                struct Ev<'a> {
                    #[serde(borrow)]
                    object: Obj<'a>,
                }
                #[derive(serde::Deserialize)]
                struct Obj<'a> {
                    #[serde(borrow)]
                    metadata: Meta<'a>,
                }
                #[derive(serde::Deserialize)]
                struct Meta<'a> {
                    #[serde(borrow, default)]
                    annotations: std::collections::HashMap<&'a str, &'a str>,
                }
                let now = epoch().elapsed().as_nanos() as u64;
                if let Ok(ev) = serde_json::from_str::<Ev>(&line) {
                    if let Some(t) = ev
                        .object
                        .metadata
                        .annotations
                        .get("bench/t")
                        .and_then(|t| t.parse::<u64>().ok())
                    {
                        lags.push(now.saturating_sub(t));
                    }
                }
                if lags.len() as u64 >= expected {
                    break;
                }
            }
            lags
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = args.rate * args.seconds;
    let period = Duration::from_nanos(1_000_000_000 / args.rate);
    let start = Instant::now();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let name = format!("web-{:06}", i as usize % args.pods.min(1000));
        let t = epoch().elapsed().as_nanos() as u64;
        let patch = json!({"metadata": {"annotations": {"bench/t": t.to_string()}}});
        pods_api
            .patch("default", &name, PatchType::Merge, &patch)
            .map_err(anyhow::Error::new)?;
    }
    let write_s = start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    let mut complete = 0;
    for t in tasks {
        let lags = tokio::time::timeout(Duration::from_secs(60), t).await??;
        if lags.len() as u64 == total {
            complete += 1;
        }
        all.extend(lags);
    }
    all.sort_unstable();
    let ms = |n: u64| n as f64 / 1e6;
    let p99 = ms(percentile(&all, 0.99));
    let pass = complete == args.watchers && p99 < 1000.0 && (total as f64 / write_s) >= args.rate as f64 * 0.95;
    let figures = json!({
        "watchers": args.watchers, "writes": total, "delivered": all.len(), "complete_watchers": complete,
        "lag_p50_ms": ms(percentile(&all, 0.5)), "lag_p99_ms": p99, "lag_max_ms": ms(*all.last().unwrap_or(&0))
    });
    if args.json {
        return Ok((pass, figures));
    }
    println!(
        "watch fan-out: watchers={} writes={} at {:.0}/s delivered={}/{} complete_watchers={}/{} lag_p50_ms={:.2} lag_p99_ms={:.2} lag_max_ms={:.2} [target: every event to every watcher, p99 < 1 s: {}]",
        args.watchers,
        total,
        total as f64 / write_s,
        all.len(),
        total * args.watchers as u64,
        complete,
        args.watchers,
        ms(percentile(&all, 0.5)),
        p99,
        ms(*all.last().unwrap_or(&0)),
        if pass { "PASS" } else { "FAIL" }
    );
    Ok((pass, figures))
}
