//! One gateway watching many clusters of many pods: initial sync, memory per watched pod,
//! steady-state CPU under pod updates, a relist, and a zone evacuation.
//!
//! ```text
//! cargo build --release -p sluice-gateway --bin sluice
//! cargo run --release -p sluice-bench --bin scale -- [--clusters 10] [--pods 100000]
//!     [--bound-every 10] [--rate 1000] [--seconds 20] [--latency-ms 1] [--budget 50]
//!     [--max-workers N] [--json]
//! ```
//!
//! The simulator serves `--clusters` clusters of `--pods` pods each, in this process; the
//! gateway is the release `sluice` binary in a process of its own, so its resident memory
//! is its own. Pods look like a Deployment's (five labels, three annotations, an
//! application container and a sidecar, a kubelet's status). Every `--bound-every`th pod
//! is selected by one of ten TrafficBindings per cluster (`maxUnavailable: --budget`) whose
//! target is an in-memory adapter behind the remote adapter's gRPC protocol, answering
//! every call after `--latency-ms`; those pods start as a running gateway leaves them
//! (registered, ledger, finalizers, gate True, status `serving`).
//!
//! Phases and figures:
//! - the gateway on the empty clusters: its fixed base memory;
//! - the gateway on every pod: time until `/readyz` answers 200 (`sync_s`), resident memory
//!   after it settles (`rss_bytes`), bytes per watched pod beyond the base
//!   (`bytes_per_pod`, target ≤ 2048), adapter calls and pod writes during the sync;
//! - `--rate` pod updates per second spread over the clusters for `--seconds`: the
//!   gateway's CPU (`steady_cpu_cores`, one core = 1.0);
//! - one cluster's watch expired (410), so the gateway lists it again: how long until it
//!   is live (`relist_s`), and the adapter calls it caused (`relist_adapter_calls`, target 0:
//!   no pod changed meanwhile);
//! - zone evacuation: a drain request (`sluice.dev/desired: drained`, as the API's Drain
//!   writes) on every bound pod of one zone of every cluster at once (10,000 with the
//!   defaults), each pod deleted once its drain is verified: time until every one is drained
//!   (`evacuation_s`); per pod, the time from its gate going False to its finalizers gone,
//!   less the time its adapter calls took (`evacuation_added_p50_ms`,
//!   `evacuation_added_p99_ms`, target p99 ≤ 20 ms); every event of every cluster checked
//!   against the bindings' budgets, counted across clusters (`budget_violations`, target 0;
//!   the default budget, 2 per binding, is what bounds the drains under way).
//!
//! The gateway runs with `maxWorkers: 16` (`--max-workers`): by Little's law the time a
//! drain takes is the drains under way over the rate the machine completes them, so a
//! higher cap makes every drain slower and the evacuation no faster (bench/README.md has the
//! figures for 256, the default).
//!
//! Prints one line per phase, one JSON object and the verdict; `--json`: the JSON object
//! only.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sluice::model::{LedgerEntry, State, StatusSummary};
use sluice_adapter::{Adapter, Capabilities, Observation, Target, TrafficState};
use sluice_bench::{health_get, ms, percentile, ready, rss_bytes, sluice_bin, Proc};

const BINDINGS: usize = 10;
const ZONES: usize = 10;
const PORT: u16 = 8080;

struct Args {
    clusters: usize,
    pods: usize,
    bound_every: usize,
    rate: u64,
    seconds: u64,
    latency_ms: u64,
    budget: Option<usize>,
    max_workers: Option<usize>,
    json: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        clusters: 10,
        pods: 100_000,
        bound_every: 10,
        rate: 1000,
        seconds: 20,
        latency_ms: 1,
        budget: None,
        max_workers: Some(16),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut v = || it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--clusters" => a.clusters = v()?.parse()?,
            "--pods" => a.pods = v()?.parse()?,
            "--bound-every" => a.bound_every = v()?.parse()?,
            "--rate" => a.rate = v()?.parse()?,
            "--seconds" => a.seconds = v()?.parse()?,
            "--latency-ms" => a.latency_ms = v()?.parse()?,
            "--budget" => a.budget = Some(v()?.parse()?),
            "--max-workers" => a.max_workers = Some(v()?.parse()?),
            "--json" => a.json = true,
            other => bail!(
                "unknown flag {other}: scale [--clusters N] [--pods N] [--bound-every N] [--rate N] \
                 [--seconds N] [--latency-ms N] [--budget N] [--max-workers N] [--json]"
            ),
        }
    }
    anyhow::ensure!(
        (1..=60).contains(&a.clusters),
        "--clusters must be 1 to 60 (pod addresses are 10.<4 × cluster + i / 65536>.x.y)"
    );
    anyhow::ensure!(a.pods <= 262_144, "--pods must be at most 262,144 per cluster");
    anyhow::ensure!(
        a.bound_every >= 1 && a.budget.is_none_or(|b| b >= 1),
        "--bound-every and --budget must be at least 1"
    );
    Ok(a)
}

/// Pod `i` of cluster `c`: its address.
fn pod_ip(c: usize, i: usize) -> IpAddr {
    IpAddr::from([10, (c * 4 + i / 65_536) as u8, (i / 256 % 256) as u8, (i % 256) as u8])
}

/// What binds pod `i` (`Some((binding, zone))`) when it is bound.
fn bound(args: &Args, i: usize) -> Option<(usize, usize)> {
    i.is_multiple_of(args.bound_every).then(|| {
        let b = i / args.bound_every;
        (b % BINDINGS, b / BINDINGS % ZONES)
    })
}

/// A Deployment's pod, and the status its kubelet reports; a bound one as a running
/// gateway leaves it.
fn pod(args: &Args, c: usize, i: usize) -> (Value, Value) {
    let name = format!("pod-{i:06}");
    let ip = pod_ip(c, i);
    let (app, zone) = match bound(args, i) {
        Some((b, z)) => (format!("web-{b}"), z),
        None => (format!("svc-{}", i % 40), i % ZONES),
    };
    let mut spec = json!({
        "metadata": {
            "name": name,
            "labels": {"app": app, "pod-template-hash": format!("{:x}", 0x6d4c_f56d_u64 + (i % 40) as u64),
                       "tier": "backend", "version": "v1.42.0", "topology.kubernetes.io/zone": format!("z{zone}")},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-01T10:00:00Z",
                            "prometheus.io/port": "9090",
                            "checksum/config": "9f2c1e7d5b3a4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-6d4cf56db6"),
                                  "uid": "8a4c0f5e-3b1d-4f7a-9a7e-2d8c5e1b9f00", "controller": true,
                                  "blockOwnerDeletion": true}]
        },
        "spec": {
            "nodeName": format!("node-{}", i % 10_000),
            "serviceAccountName": "default",
            "containers": [{
                "name": "app", "image": "registry.local/app:1.42.0",
                "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                "env": [{"name": "MODE", "value": "production"}, {"name": "REGION", "value": "east"}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 5},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]
            }, {
                "name": "proxy", "image": "registry.local/proxy:1.20.3",
                "args": ["proxy", "sidecar", "--concurrency", "2"],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
            }],
            "volumes": [{"name": "config", "configMap": {"name": "app-config"}}]
        }
    });
    let mut conditions = vec![
        json!({"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2026-11-01T10:00:06Z"}),
        json!({"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-01T10:00:05Z"}),
        json!({"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-01T10:00:09Z"}),
        json!({"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-01T10:00:09Z"}),
        json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-01T10:00:05Z"}),
    ];
    if let Some((b, _)) = bound(args, i) {
        let binding = format!("web-{b}");
        let ledger = sluice::model::ledger::render(&[LedgerEntry {
            adapter: "mem".into(),
            kind: "rpc".into(),
            params: [("service".to_string(), binding.clone())].into(),
            ip,
            port: PORT,
            binding,
            settle_seconds: 0,
        }]);
        let status = StatusSummary {
            state: State::Serving,
            last_transition: "2026-11-01T10:00:09Z".into(),
            trace_id: format!("{:032x}", (c as u128) << 64 | i as u128 | 1 << 100),
            span_id: None,
            targets: BTreeMap::new(),
            drain_started_at: None,
            blocked: Vec::new(),
            problems: Vec::new(),
        }
        .render();
        let meta = &mut spec["metadata"];
        meta["annotations"][sluice::model::LEDGER_ANNOTATION] = json!(ledger);
        meta["annotations"][sluice::model::STATUS_ANNOTATION] = json!(status);
        meta["finalizers"] = json!([sluice::model::LEDGER_FINALIZER, "sluice.dev/rpc"]);
        spec["spec"]["readinessGates"] = json!([{"conditionType": sluice::model::GATE}]);
        conditions.push(json!({"type": sluice::model::GATE, "status": "True",
                               "lastTransitionTime": "2026-11-01T10:00:09Z"}));
    }
    let running = |name: &str, image: &str| {
        json!({"name": name, "ready": true, "restartCount": 0, "started": true, "image": image,
               "imageID": format!("{image}@sha256:0f3a9c"), "containerID": "containerd://4f6e0c1d2b3a",
               "state": {"running": {"startedAt": "2026-11-01T10:00:07Z"}}})
    };
    let status = json!({
        "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
        "hostIP": "192.168.0.10", "startTime": "2026-11-01T10:00:05Z", "qosClass": "Burstable",
        "conditions": conditions,
        "containerStatuses": [running("app", "registry.local/app:1.42.0"),
                              running("proxy", "registry.local/proxy:1.20.3")]
    });
    (spec, status)
}

/// The in-memory adapter behind the plugin protocol: every call takes `delay`; an address
/// serves from `register` to `deregister`. It records, per address, the time its calls
/// took and how many there were.
#[derive(Debug)]
struct Latency {
    delay: Duration,
    serving: Mutex<HashMap<IpAddr, bool>>,
    busy: Mutex<HashMap<IpAddr, Duration>>,
    calls: AtomicU64,
}

impl Latency {
    async fn call(&self, t: &Target, serving: Option<bool>) -> TrafficState {
        let start = Instant::now();
        tokio::time::sleep(self.delay).await;
        let state = {
            let mut s = self.serving.lock().expect("lock");
            if let Some(on) = serving {
                s.insert(t.ip, on);
            }
            if s.get(&t.ip).copied().unwrap_or(false) {
                TrafficState::Serving
            } else {
                TrafficState::Drained
            }
        };
        *self.busy.lock().expect("lock").entry(t.ip).or_default() += start.elapsed();
        self.calls.fetch_add(1, Ordering::Relaxed);
        state
    }
}

#[async_trait::async_trait]
impl Adapter for Latency {
    fn name(&self) -> &str {
        "latency"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "rpc".into(),
            required_params: vec!["service".into()],
            shared_reads: false,
        }
    }
    async fn register(&self, t: &Target) -> sluice_adapter::Result<()> {
        self.call(t, Some(true)).await;
        Ok(())
    }
    async fn deregister(&self, t: &Target) -> sluice_adapter::Result<()> {
        self.call(t, Some(false)).await;
        Ok(())
    }
    async fn observe(&self, t: &Target) -> sluice_adapter::Result<Observation> {
        let state = self.call(t, None).await;
        Ok(Observation::new(state, "memory"))
    }
    async fn health(&self) -> sluice_adapter::Result<()> {
        Ok(())
    }
}

/// A process's resident memory and CPU time so far.
fn proc_stats(pid: u32) -> Result<(u64, Duration)> {
    let rss = rss_bytes(&pid.to_string()).context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // Linux reports CPU time in USER_HZ, 100 per second on every architecture it runs on.
    Ok((rss, Duration::from_millis(ticks * 10)))
}

/// A metric's value from the gateway's `/metrics` (summed over its label sets).
async fn metric(health: std::net::SocketAddr, name: &str, label: &str) -> f64 {
    health_get(health, "/metrics")
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts the gateway; its log goes to `sluice.log` next to its configuration.
async fn start_gateway(config: &std::path::Path) -> Result<Proc> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("sluice.log"))?;
    let child = std::process::Command::new(sluice_bin()?)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting sluice")?;
    Ok(Proc(child))
}

async fn wait_ready(health: std::net::SocketAddr, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    while !ready(health).await {
        if t.elapsed() > limit {
            bail!("the gateway was not ready after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(t.elapsed())
}

/// Whether a pod object's readiness gate condition is False.
fn gate_false(obj: &Value) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == sluice::model::GATE && c["status"] == "False")
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut missed = Vec::new();
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };

    // The adapter plugin.
    let adapter = Arc::new(Latency {
        delay: Duration::from_millis(args.latency_ms),
        serving: Mutex::new(HashMap::new()),
        busy: Mutex::new(HashMap::new()),
        calls: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plugin = listener.local_addr()?;
    let serving = adapter.clone();
    tokio::spawn(async move { sluice_adapter_remote::serve(serving, listener).await });

    // A binding's budget (counted across clusters): small enough that the budgets, not the
    // worker cap, bound the drains under way.
    let budget = args.budget.unwrap_or(2);

    // The clusters, each with the CRDs and ten bindings.
    let mut clusters = Vec::new();
    for c in 0..args.clusters {
        let mut cfg = kube_sim::ClusterConfig::new(&format!("c{c}"));
        cfg.history = 200_000;
        clusters.push(kube_sim::Cluster::start(cfg).await?);
    }
    for cl in &clusters {
        let crds = cl
            .api("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .map_err(anyhow::Error::new)?;
        use kube::CustomResourceExt;
        for crd in [
            serde_json::to_value(sluice::binding::TrafficBinding::crd())?,
            serde_json::to_value(sluice::endpoint::EndpointDrain::crd())?,
        ] {
            crds.create("", crd).map_err(anyhow::Error::new)?;
        }
        let bindings = cl
            .api("sluice.dev", "v1alpha1", "trafficbindings")
            .map_err(anyhow::Error::new)?;
        for b in 0..BINDINGS {
            bindings
                .create(
                    "default",
                    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "TrafficBinding",
                        "metadata": {"name": format!("web-{b}")},
                        "spec": {"selector": {"matchLabels": {"app": format!("web-{b}")}}, "port": PORT,
                                 "targets": [{"adapter": "mem", "params": {"service": format!("web-{b}")}}],
                                 "disruptionBudget": {"maxUnavailable": budget}}}),
                )
                .map_err(anyhow::Error::new)?;
        }
    }
    let dir = std::env::temp_dir().join(format!("sluice-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let refs: Vec<&kube_sim::Cluster> = clusters.iter().collect();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kube_sim::kubeconfig(&refs, "c0"))?;
    let health = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let cluster_entries: String = (0..args.clusters)
        .map(|c| {
            format!(
                "- name: c{c}\n  kubeconfig: {}\n  context: c{c}\n",
                kubeconfig.display()
            )
        })
        .collect();
    let config = dir.join("sluice.yaml");
    std::fs::write(
        &config,
        format!(
            "clusters:\n{cluster_entries}adapters:\n- kind: remote\n  name: mem\n  endpoint: http://{plugin}\n  \
             adapterKind: rpc\n  requiredParams: [service]\nlisten:\n  health: {health}\n\
             engine:\n  resyncSeconds: 86400\n  orphanSweepSeconds: 0\n{}",
            args.max_workers
                .map(|n| format!("  maxWorkers: {n}\n"))
                .unwrap_or_default()
        ),
    )?;

    // The gateway's fixed base: every cluster synced, no pod.
    let base = {
        let gw = start_gateway(&config).await?;
        wait_ready(health, Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        proc_stats(gw.0.id())?.0
    };
    say(format!(
        "base: the gateway on {} empty clusters: {:.0} MiB resident",
        args.clusters,
        base as f64 / (1 << 20) as f64
    ));

    // The pods.
    let t = Instant::now();
    let apis: Vec<kube_sim::ObjectApi> = clusters
        .iter()
        .map(|c| c.api("", "v1", "pods").map_err(anyhow::Error::new))
        .collect::<Result<_>>()?;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = apis
            .iter()
            .enumerate()
            .map(|(c, api)| {
                let args = &args;
                s.spawn(move || -> Result<()> {
                    for i in 0..args.pods {
                        let (spec, status) = pod(args, c, i);
                        let mut created = api.create("default", spec).map_err(anyhow::Error::new)?;
                        created["status"] = status;
                        api.update_status("default", &format!("pod-{i:06}"), created)
                            .map_err(anyhow::Error::new)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a loader panicked"))??;
        }
        Ok(())
    })?;
    let total = args.clusters * args.pods;
    let bound_pods: Vec<(usize, usize)> = (0..args.clusters)
        .flat_map(|c| {
            (0..args.pods)
                .filter(|&i| bound(&args, i).is_some())
                .map(move |i| (c, i))
        })
        .collect();
    {
        let mut s = adapter.serving.lock().expect("lock");
        for &(c, i) in &bound_pods {
            s.insert(pod_ip(c, i), true);
        }
    }
    say(format!(
        "load: {} clusters × {} pods ({} bound) in {:.1} s",
        args.clusters,
        args.pods,
        bound_pods.len(),
        t.elapsed().as_secs_f64()
    ));

    // Sync and memory.
    let writes = |clusters: &[kube_sim::Cluster]| clusters.iter().map(|c| c.faults().write_count()).sum::<u64>();
    let (calls0, writes0) = (adapter.calls.load(Ordering::SeqCst), writes(&clusters));
    let gw = start_gateway(&config).await?;
    let pid = gw.0.id();
    let sync = wait_ready(health, Duration::from_secs(600)).await?;
    let mut samples = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(proc_stats(pid)?.0);
    }
    let rss = *samples.last().expect("samples");
    let peak = samples.iter().copied().max().unwrap_or(rss);
    let per_pod = rss.saturating_sub(base) as f64 / total as f64;
    let (sync_calls, sync_writes) = (
        adapter.calls.load(Ordering::SeqCst) - calls0,
        writes(&clusters) - writes0,
    );
    say(format!(
        "sync: {total} pods in {:.1} s; resident {:.0} MiB 20 s after (peak {:.0} MiB), {per_pod:.0} bytes per pod \
         beyond the base [target ≤ 2048: {}]; {sync_calls} adapter calls, {sync_writes} pod writes",
        sync.as_secs_f64(),
        rss as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        if per_pod <= 2048.0 { "PASS" } else { "FAIL" }
    ));
    if per_pod > 2048.0 {
        missed.push(format!("{per_pod:.0} bytes per watched pod (limit 2048)"));
    }

    // Steady state: pod updates spread over the clusters.
    let (calls1, cpu1, t1) = (adapter.calls.load(Ordering::SeqCst), proc_stats(pid)?.1, Instant::now());
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (args.rate / 100).max(1);
    while t1.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        for _ in 0..per_tick {
            let c = (sent as usize) % args.clusters;
            let i = (sent as usize / args.clusters).wrapping_mul(7919) % args.pods;
            apis[c]
                .patch(
                    "default",
                    &format!("pod-{i:06}"),
                    kube_sim::PatchType::Merge,
                    &json!({"metadata": {"annotations": {"bench/tick": sent.to_string()}}}),
                )
                .map_err(anyhow::Error::new)?;
            sent += 1;
        }
    }
    let wall = t1.elapsed();
    let cpu = (proc_stats(pid)?.1 - cpu1).as_secs_f64() / wall.as_secs_f64();
    let steady_calls = adapter.calls.load(Ordering::SeqCst) - calls1;
    say(format!(
        "steady: {sent} pod updates in {:.1} s ({:.0}/s): gateway CPU {cpu:.2} cores; {steady_calls} adapter calls",
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64()
    ));

    // Relist: cluster c0's watches expire.
    let relists0 = metric(health, "sluice_watch_relists_total", "cluster=\"c0\"").await;
    let calls2 = adapter.calls.load(Ordering::SeqCst);
    let t2 = Instant::now();
    // Its three watches (pods, TrafficBindings, EndpointDrains) all answered 410 Expired.
    for _ in 0..3 {
        clusters[0].faults().expire_next_watch();
    }
    clusters[0].faults().drop_watches();
    while metric(health, "sluice_watch_relists_total", "cluster=\"c0\"").await <= relists0 {
        if t2.elapsed() > Duration::from_secs(120) {
            bail!("cluster c0 was not listed again within 120 s of its watch expiring");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let relist = t2.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let relist_calls = adapter.calls.load(Ordering::SeqCst) - calls2;
    say(format!(
        "relist: cluster c0 ({} pods) listed again {:.1} s after its watch expired; {relist_calls} adapter calls \
         within 3 s after [target 0: {}]",
        args.pods,
        relist.as_secs_f64(),
        if relist_calls == 0 { "PASS" } else { "FAIL" }
    ));
    if relist_calls > 0 {
        missed.push(format!(
            "a relist caused {relist_calls} adapter calls (no pod had changed)"
        ));
    }

    // Zone evacuation: a drain request (`sluice.dev/desired: drained`, what the API's Drain
    // writes) on every bound pod of zone z0 in every cluster at once; each pod is deleted
    // as soon as its drain is verified (its finalizers gone), as a controller moving it
    // would, which gives its budget slot to the next.
    let evacuees: Vec<(usize, usize)> = bound_pods
        .iter()
        .copied()
        .filter(|&(_, i)| bound(&args, i).is_some_and(|(_, z)| z == 0))
        .collect();
    adapter.busy.lock().expect("lock").clear();
    #[derive(Default)]
    struct Seen {
        /// (cluster, pod) → when its gate went False.
        started: HashMap<(usize, String), Instant>,
        /// (cluster, pod) → when its drain was verified (no finalizer of Sluice's left).
        drained: HashMap<(usize, String), Instant>,
        /// Binding → pods out of traffic (gate False, not deleted) now, in every cluster:
        /// a binding's budget is counted across clusters.
        out: HashMap<String, std::collections::HashSet<(usize, String)>>,
        peak: usize,
        violations: u64,
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut watchers = Vec::new();
    for (c, cl) in clusters.iter().enumerate() {
        let (backlog, mut rx) = {
            let store = cl.state().store();
            store.subscribe_from(store.rv()).context("subscribing to the store")?
        };
        anyhow::ensure!(backlog.is_empty(), "a fresh subscription replayed events");
        let seen = seen.clone();
        let api = apis[c].clone();
        watchers.push(tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        panic!("the evacuation's event reader lagged by {n} events");
                    }
                    Err(_) => return,
                };
                if ev.storage.1 != "pods" {
                    continue;
                }
                let Some(app) = ev.obj.labels.get("app").filter(|a| a.starts_with("web-")).cloned() else {
                    continue;
                };
                let pod = (c, ev.obj.name.clone());
                let mut s = seen.lock().expect("lock");
                if ev.kind == kube_sim::store::EventType::Deleted {
                    s.out.entry(app).or_default().remove(&pod);
                    continue;
                }
                let v: Value = serde_json::from_slice(&ev.obj.json).expect("stored JSON");
                if !gate_false(&v) {
                    s.out.entry(app).or_default().remove(&pod);
                    continue;
                }
                s.started.entry(pod.clone()).or_insert(ev.at);
                let n = {
                    let out = s.out.entry(app).or_default();
                    out.insert(pod.clone());
                    out.len()
                };
                s.peak = s.peak.max(n);
                if n > budget {
                    s.violations += 1;
                }
                let requested = v["metadata"]["annotations"][sluice::model::DESIRED_ANNOTATION] == "drained";
                let held = v["metadata"]["finalizers"].as_array().is_some_and(|f| {
                    f.iter()
                        .any(|f| f.as_str().is_some_and(|f| f.starts_with("sluice.dev/")))
                });
                if requested && !held && !s.drained.contains_key(&pod) {
                    s.drained.insert(pod.clone(), ev.at);
                    drop(s);
                    api.delete(
                        "default",
                        &pod.1,
                        &kube_sim::DeleteOpts {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        },
                    )
                    .expect("deleting a drained pod");
                }
            }
        }));
    }
    let t3 = Instant::now();
    for &(c, i) in &evacuees {
        apis[c]
            .patch(
                "default",
                &format!("pod-{i:06}"),
                kube_sim::PatchType::Merge,
                &json!({"metadata": {"annotations": {sluice::model::DESIRED_ANNOTATION: "drained"}}}),
            )
            .map_err(anyhow::Error::new)?;
    }
    let limit = Duration::from_secs(600);
    loop {
        let drained = seen.lock().expect("lock").drained.len();
        if drained >= evacuees.len() {
            break;
        }
        if t3.elapsed() > limit {
            bail!(
                "{drained} of {} evacuated pods were drained after {limit:?}",
                evacuees.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let evacuation = t3.elapsed();
    for w in &watchers {
        w.abort();
    }
    let busy = adapter.busy.lock().expect("lock").clone();
    let s = seen.lock().expect("lock");
    let (violations, budget_peak) = (s.violations, s.peak);
    let mut added = Vec::new();
    for &(c, i) in &evacuees {
        let pod = (c, format!("pod-{i:06}"));
        let (Some(start), Some(end)) = (s.started.get(&pod), s.drained.get(&pod)) else {
            bail!(
                "cluster c{c} pod {} was drained without its gate going False first",
                pod.1
            );
        };
        let adapter_time = busy.get(&pod_ip(c, i)).copied().unwrap_or_default();
        added.push(end.saturating_duration_since(*start).saturating_sub(adapter_time));
    }
    drop(s);
    let (p50, p99) = (percentile(&added, 0.5), percentile(&added, 0.99));
    say(format!(
        "evacuation: {} drain requests at once (zone z0 of {} clusters), every pod drained and deleted in {:.1} s; \
         gateway-added time per pod (gate False → finalizers gone, less its adapter calls at {} ms each) \
         p50 {:.1} ms p99 {:.1} ms [target p99 ≤ 20 ms: {}]; budget {budget} per binding across clusters, \
         peak {budget_peak} out of traffic, {violations} violations [target 0: {}]",
        evacuees.len(),
        args.clusters,
        evacuation.as_secs_f64(),
        args.latency_ms,
        ms(p50),
        ms(p99),
        if ms(p99) <= 20.0 { "PASS" } else { "FAIL" },
        if violations == 0 { "PASS" } else { "FAIL" }
    ));
    if ms(p99) > 20.0 {
        missed.push(format!("evacuation added {:.1} ms at p99 (limit 20 ms)", ms(p99)));
    }
    if violations > 0 {
        missed.push(format!("{violations} events saw a binding over its budget"));
    }
    drop(gw);
    let pass = missed.is_empty();
    println!(
        "{}",
        json!({
            "bench": "scale", "clusters": args.clusters, "pods": total, "bound_pods": bound_pods.len(),
            "sync_s": sync.as_secs_f64(), "rss_base_bytes": base, "rss_bytes": rss, "rss_peak_bytes": peak,
            "bytes_per_pod": per_pod.round(), "sync_adapter_calls": sync_calls, "sync_pod_writes": sync_writes,
            "steady_updates_per_s": (sent as f64 / wall.as_secs_f64()).round(), "steady_cpu_cores": cpu,
            "relist_s": relist.as_secs_f64(), "relist_adapter_calls": relist_calls,
            "evacuation_pods": evacuees.len(), "evacuation_s": evacuation.as_secs_f64(),
            "evacuation_added_p50_ms": ms(p50), "evacuation_added_p99_ms": ms(p99),
            "budget": budget, "budget_peak": budget_peak, "budget_violations": violations, "pass": pass
        })
    );
    if !args.json {
        println!("{}", if pass { "PASS" } else { "FAIL" });
    }
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(pass, "missed targets: {}", missed.join("; "));
    Ok(())
}
