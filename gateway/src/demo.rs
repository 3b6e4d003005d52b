//! The lossless-rollout demo (`sluice demo`): an embedded simulated cluster whose pods are
//! backed by real local HTTP servers, real HAProxy in front, a steady keep-alive load
//! through HAProxy, and Sluice draining and restoring each pod while the pods are rolled
//! one by one the way an OpenKruise CloneSet with lifecycle hooks rolls them.
//!
//! With `--no-sluice` the same rollout runs without Sluice (no drain, no gate): the
//! failures that shows are what Sluice prevents.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::CustomResourceExt;
use kube_sim::{Cluster, ClusterConfig, KubeletConfig};
use serde_json::json;

use crate::binding::TrafficBinding;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::model::{GATE, KRUISE_STATE};

pub mod backend;
pub mod load;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub pods: usize,
    pub sluice: bool,
    /// Without Sluice: the common practice instead of a verified drain — the pod's server
    /// is taken out of HAProxy as its termination starts (what an ingress controller does
    /// when the endpoint goes), then a fixed preStop-style sleep before the pod stops.
    pub sleep: Option<Duration>,
    /// Concurrent keep-alive client connections.
    pub clients: usize,
    /// Print progress lines.
    pub verbose: bool,
}

/// `sluice demo`: a lossless rolling update on an embedded cluster (the API simulator,
/// real HAProxy, local pods and keep-alive load).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Pods in the rollout.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(2..=200))]
    pub pods: u64,
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub clients: u64,
    /// The same rollout without Sluice (pods stop as their update starts): see it lose requests.
    #[arg(long)]
    pub no_sluice: bool,
    /// The same rollout without Sluice, the common practice: each pod is taken out of the
    /// load balancer as its update starts, and stops after this many seconds.
    #[arg(long, value_name = "SECONDS", conflicts_with = "no_sluice")]
    pub sleep: Option<u64>,
    /// Print only the summary line(s).
    #[arg(long)]
    pub quiet: bool,
    /// With Sluice, the demo then rolls the same pods without it, so both summaries stand
    /// side by side; this skips that second rollout.
    #[arg(long)]
    pub no_compare: bool,
}

impl From<DemoArgs> for DemoOptions {
    fn from(a: DemoArgs) -> DemoOptions {
        DemoOptions {
            pods: a.pods as usize,
            sluice: !a.no_sluice && a.sleep.is_none(),
            sleep: a.sleep.map(Duration::from_secs),
            clients: a.clients as usize,
            verbose: !a.quiet,
        }
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            pods: 6,
            sluice: true,
            sleep: None,
            clients: 8,
            verbose: true,
        }
    }
}

/// What the demo measured. Failures are counted at the client.
#[derive(Debug, Clone)]
pub struct Summary {
    pub requests: u64,
    pub failed: u64,
    /// The longest request answered during the run (ms, at the client).
    pub longest_inflight_ms: u64,
    pub drain_ms: Vec<u64>,
    pub rollout_s: f64,
}

impl Summary {
    pub fn line(&self) -> String {
        let mut d = self.drain_ms.clone();
        d.sort_unstable();
        let p50 = d.get(d.len().saturating_sub(1) / 2).copied().unwrap_or(0);
        let max = d.last().copied().unwrap_or(0);
        format!(
            "summary: requests={} failed={} drain_p50_ms={} drain_max_ms={} rollout_s={:.1}",
            self.requests, self.failed, p50, max, self.rollout_s
        )
    }
}

/// Finds `haproxy`, installing Debian's package when running as root and it is missing.
pub fn ensure_haproxy() -> anyhow::Result<PathBuf> {
    let find = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin")])
            .map(|d| d.join("haproxy"))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root {
        bail!("haproxy is not installed; install it with: sudo apt-get install -y --no-install-recommends haproxy");
    }
    eprintln!("demo: installing haproxy (apt-get)…");
    let ok = std::process::Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy"])
        .status()
        .context("running apt-get")?
        .success();
    match find() {
        Some(p) if ok => Ok(p),
        _ => bail!("installing haproxy with apt-get failed; install it by hand: apt-get install -y haproxy"),
    }
}

fn free_port(ip: &str) -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    Ok(l.local_addr()?.port())
}

/// Starts one server per pod address, all on one free port (retrying with another port
/// when another process holds it on one of the addresses).
async fn start_backends(ips: &[IpAddr]) -> anyhow::Result<(u16, Vec<SocketAddr>, Vec<Option<backend::Backend>>)> {
    let mut last = None;
    for _ in 0..20 {
        let port = free_port(&ips[0].to_string())?;
        let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        let mut backends = Vec::new();
        for a in &addrs {
            match backend::Backend::start(*a).await {
                Ok(b) => backends.push(Some(b)),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        if backends.len() == addrs.len() {
            return Ok((port, addrs, backends));
        }
    }
    Err(last.expect("at least one attempt failed")).context("no port free on every pod address")
}

/// A running HAProxy child.
struct Haproxy {
    child: std::process::Child,
    socket: PathBuf,
    bin: PathBuf,
    frontend: u16,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_haproxy(
    bin: &PathBuf,
    dir: &std::path::Path,
    frontend: u16,
    pods: &[SocketAddr],
) -> anyhow::Result<Haproxy> {
    let socket = dir.join("haproxy.sock");
    let servers = |backend: &str, extra: &str| -> String {
        pods.iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "  server {backend}-{} {a} check inter 100 rise 2 fall 2{extra}\n",
                    i + 1
                )
            })
            .collect()
    };
    // `web` takes the traffic; `web2` declares the same pods in MAINT (a binding can be
    // edited to move them there); `dyn` starts empty, for dynamic servers.
    let cfg = format!(
        "global\n  stats socket {sock} mode 600 level admin\n  stats timeout 2m\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  retries 0\n\
         frontend fe\n  bind 127.0.0.1:{frontend}\n  default_backend web\n\
         backend web\n  balance roundrobin\n  option httpchk GET /healthz\n{web}\
         backend web2\n  balance roundrobin\n  option httpchk GET /healthz\n{web2}\
         backend dyn\n  balance roundrobin\n  option httpchk GET /healthz\n",
        sock = socket.display(),
        web = servers("web", ""),
        web2 = servers("web2", ""),
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let child = std::process::Command::new(bin)
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting haproxy")?;
    let hp = Haproxy {
        child,
        socket,
        bin: bin.clone(),
        frontend,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(&hp.socket).await.is_err() {
        if Instant::now() > deadline {
            bail!("haproxy did not open its runtime socket within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // web2's servers start out of traffic (MAINT set at runtime, as Sluice sets it: the
    // `disabled` keyword's configuration maintenance is not left by `state ready`).
    let rt = sluice_adapter_slb::RuntimeClient::new(
        sluice_adapter_slb::Endpoint::Unix(hp.socket.clone()),
        Duration::from_secs(2),
    );
    for i in 0..pods.len() {
        rt.set_server_state(
            "web2",
            &format!("web2-{}", i + 1),
            sluice_adapter_slb::AdminCommand::Maint,
        )
        .await?;
    }
    Ok(hp)
}

fn pod_manifest(name: &str, ip: IpAddr, port: u16, image: &str, gate: bool, state: &str) -> anyhow::Result<Pod> {
    let mut spec = json!({
        "nodeName": "sim-node-1",
        "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "web", "image": image, "ports": [{"containerPort": port}]}],
    });
    if gate {
        spec["readinessGates"] = json!([{"conditionType": GATE}]);
    }
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web", KRUISE_STATE: state},
                     "annotations": {kube_sim::POD_IP_ANNOTATION: ip.to_string()}},
        "spec": spec,
    }))?)
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn has_sluice_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f.starts_with("sluice.dev/")))
}

/// One simulated cluster of a stage, with its client and kubeconfig.
pub struct SimCluster {
    pub name: String,
    pub cluster: Cluster,
    pub client: kube::Client,
    pub pods: Api<Pod>,
    pub kubeconfig: PathBuf,
    /// The gateway's own credentials: the simulator names its requests as the user
    /// [`GATEWAY_USER`] (what its RBAC role must allow).
    pub gateway_kubeconfig: PathBuf,
}

/// The user the gateway's requests authenticate as in the simulator (as its service
/// account would in a cluster).
pub const GATEWAY_USER: &str = "system:serviceaccount:sluice:sluice-gateway";

impl SimCluster {
    async fn start(dir: &std::path::Path, name: &str) -> anyhow::Result<SimCluster> {
        let mut ccfg = ClusterConfig::new(name);
        ccfg.kubelet = Some(KubeletConfig {
            start_delay: Duration::from_millis(10),
            ready_delay: None,
            terminate_delay: Duration::from_millis(10),
        });
        let gateway_token = format!("sluice-gateway-{:032x}", rand::random::<u128>());
        ccfg.extra_tokens.push((gateway_token.clone(), GATEWAY_USER.into()));
        let cluster = Cluster::start(ccfg).await?;
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, cluster.kubeconfig())?;
        let gateway_kubeconfig = dir.join(format!("{name}.gateway.kubeconfig"));
        std::fs::write(
            &gateway_kubeconfig,
            cluster.kubeconfig().replace(cluster.token(), &gateway_token),
        )?;
        let client = crate::gateway::client_for(&crate::config::ClusterConfig {
            name: name.into(),
            kubeconfig: Some(kubeconfig.clone()),
            context: None,
            in_cluster: false,
        })
        .await?;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        crds.create(&PostParams::default(), &TrafficBinding::crd())
            .await
            .context("installing the CRD")?;
        crds.create(&PostParams::default(), &crate::endpoint::EndpointDrain::crd())
            .await
            .context("installing the EndpointDrain CRD")?;
        Ok(SimCluster {
            name: name.into(),
            pods: Api::namespaced(client.clone(), "default"),
            cluster,
            client,
            kubeconfig,
            gateway_kubeconfig,
        })
    }
}

/// Everything the demo (and the end-to-end tests) run on: simulated clusters with
/// kubelet-lite, the pods' local servers, HAProxy in front, the CRD and (with Sluice) the
/// binding, and the pods themselves, created and with their containers ready. With several
/// clusters, pod `i` lives in cluster `i % clusters` (one HAProxy backend spans them all).
pub struct Stage {
    pub dir: PathBuf,
    pub clusters: Vec<SimCluster>,
    /// The first cluster's client, pods and kubeconfig (the only cluster, in the demo).
    pub client: kube::Client,
    pub pods: Api<Pod>,
    pub kubeconfig: PathBuf,
    haproxy: Haproxy,
    pub ips: Vec<IpAddr>,
    pub port: u16,
    pub backends: Vec<Option<backend::Backend>>,
    pub frontend: SocketAddr,
    pub sluice: bool,
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Stage {
    /// One cluster; see [`Stage::with_clusters`].
    pub async fn new(pods: usize, sluice: bool) -> anyhow::Result<Stage> {
        Stage::with_clusters(pods, sluice, 1).await
    }

    /// Sets everything up; pods are created and their containers ready, but a Ready gate
    /// waits for Sluice (see [`Stage::start_gateway`]). Clusters are named `demo`, `west`,
    /// `east-2`, ….
    pub async fn with_clusters(pods: usize, sluice: bool, clusters: usize) -> anyhow::Result<Stage> {
        Stage::build(pods, sluice, clusters, 0).await
    }

    /// `pods` pods and `vms` servers outside Kubernetes (hosts `pods`, `pods + 1`, … of
    /// [`Stage::ips`]: HAProxy sends them traffic like the pods, no pod has their address).
    pub async fn with_vms(pods: usize, vms: usize) -> anyhow::Result<Stage> {
        Stage::build(pods, true, 1, vms).await
    }

    async fn build(pods: usize, sluice: bool, clusters: usize, vms: usize) -> anyhow::Result<Stage> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let haproxy_bin = ensure_haproxy()?;
        let dir = std::env::temp_dir().join(format!("sluice-stage-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir)?;
        // Pods: 127.0.0.11, .12, … all on one port, as real pods share a container port.
        let ips: Vec<IpAddr> = (0..pods + vms)
            .map(|i| IpAddr::from([127, 0, 0, 11 + i as u8]))
            .collect();
        let (port, addrs, backends) = start_backends(&ips).await?;
        let frontend = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")?));
        let haproxy = start_haproxy(&haproxy_bin, &dir, frontend.port(), &addrs).await?;
        let mut sims = Vec::new();
        for c in 0..clusters.max(1) {
            let name = match c {
                0 => "demo".to_string(),
                1 => "west".to_string(),
                n => format!("east-{n}"),
            };
            sims.push(SimCluster::start(&dir, &name).await?);
        }
        let first = &sims[0];
        let stage = Stage {
            client: first.client.clone(),
            pods: first.pods.clone(),
            kubeconfig: first.kubeconfig.clone(),
            clusters: sims,
            dir,
            haproxy,
            ips,
            port,
            backends,
            frontend,
            sluice,
        };
        if sluice {
            stage.create_binding("web", "haproxy", 60).await?;
        }
        for i in 0..pods {
            stage.create_pod(i, "registry.local/web:v1", "Normal").await?;
        }
        Ok(stage)
    }

    pub fn name(i: usize) -> String {
        format!("web-{}", i + 1)
    }

    /// The first cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.clusters[0].cluster
    }

    /// The cluster pod `i` lives in.
    pub fn home(&self, i: usize) -> &SimCluster {
        &self.clusters[i % self.clusters.len()]
    }

    /// Creates the same binding in every cluster.
    pub async fn create_binding(&self, name: &str, adapter: &str, deadline_s: u64) -> anyhow::Result<()> {
        for c in &self.clusters {
            let bindings: Api<TrafficBinding> = Api::namespaced(c.client.clone(), "default");
            let binding: TrafficBinding = serde_json::from_value(json!({
                "apiVersion": "sluice.dev/v1alpha1", "kind": "TrafficBinding",
                "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "port": self.port,
                         "targets": [{"adapter": adapter, "params": {"backend": "web"}}],
                         "drainPolicy": {"deadlineSeconds": deadline_s}, "disruptionBudget": {"maxUnavailable": 1}}
            }))?;
            bindings
                .create(&PostParams::default(), &binding)
                .await
                .context("creating the TrafficBinding")?;
        }
        Ok(())
    }

    /// Creates pod `i` and marks its containers ready once kubelet-lite has started it.
    pub async fn create_pod(&self, i: usize, image: &str, state: &str) -> anyhow::Result<()> {
        let name = Self::name(i);
        let home = self.home(i);
        let p = pod_manifest(&name, self.ips[i], self.port, image, self.sluice, state)?;
        home.pods.create(&PostParams::default(), &p).await?;
        let pods = &home.pods;
        wait_for(&format!("{name} to start"), Duration::from_secs(10), || async {
            pods.get(&name)
                .await
                .is_ok_and(|p| p.status.and_then(|s| s.pod_ip).is_some())
        })
        .await?;
        home.cluster
            .kubelet()
            .expect("kubelet-lite is on")
            .set_containers_ready("default", &name, true)
            .map_err(anyhow::Error::new)
    }

    /// The gateway configuration (YAML) for this stage: every cluster, one HAProxy adapter.
    pub fn gateway_config_text(&self, health: SocketAddr) -> String {
        self.gateway_config_text_with(health, "")
    }

    /// The same, with more adapter entries (YAML list items) after the HAProxy one.
    pub fn gateway_config_text_with(&self, health: SocketAddr, more_adapters: &str) -> String {
        self.gateway_config_yaml(health, more_adapters, "")
    }

    /// The same, with more adapter entries and `engine:` settings (YAML lines indented by
    /// two spaces, e.g. `"  resyncSeconds: 2\n"`).
    pub fn gateway_config_yaml(&self, health: SocketAddr, more_adapters: &str, engine: &str) -> String {
        let clusters: String = self
            .clusters
            .iter()
            .map(|c| format!("- name: {}\n  kubeconfig: {}\n", c.name, c.gateway_kubeconfig.display()))
            .collect();
        let engine = if engine.is_empty() {
            String::new()
        } else {
            format!("engine:\n{engine}")
        };
        format!(
            "clusters:\n{clusters}adapters:\n- kind: haproxy\n  name: haproxy\n  endpoint: unix:{}\n{more_adapters}\
             listen:\n  health: {health}\n{engine}",
            self.haproxy.socket.display()
        )
    }

    /// An adapter entry (YAML list item) for another instance on the stage's HAProxy:
    /// `mode` is `static` or `dynamic`.
    pub fn haproxy_adapter(&self, name: &str, mode: &str) -> String {
        format!(
            "- kind: haproxy\n  name: {name}\n  endpoint: unix:{}\n  mode: {mode}\n",
            self.haproxy.socket.display()
        )
    }

    /// Starts a gateway from a configuration text, waiting until it is ready.
    pub async fn start_gateway_with(&self, text: &str) -> anyhow::Result<Gateway> {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let gw = Gateway::start(Config::parse(text, "stage")?).await?;
        tokio::time::timeout(Duration::from_secs(30), gw.wait_ready())
            .await
            .context("gateway readiness")?;
        Ok(gw)
    }

    /// Creates (or replaces) a TrafficBinding with this `spec` in the first cluster.
    pub async fn put_binding(&self, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
        let bindings: Api<TrafficBinding> = Api::namespaced(self.client.clone(), "default");
        let mut binding: TrafficBinding = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "TrafficBinding",
            "metadata": {"name": name}, "spec": spec
        }))?;
        match bindings.get_opt(name).await? {
            Some(old) => {
                binding.metadata.resource_version = old.metadata.resource_version;
                bindings.replace(name, &PostParams::default(), &binding).await?;
            }
            None => {
                bindings.create(&PostParams::default(), &binding).await?;
            }
        }
        Ok(())
    }

    /// Deletes a TrafficBinding of the first cluster.
    pub async fn delete_binding(&self, name: &str) -> anyhow::Result<()> {
        let bindings: Api<TrafficBinding> = Api::namespaced(self.client.clone(), "default");
        bindings.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// The spec of a binding selecting the stage's pods on `port`, with these
    /// `(adapter, backend)` targets, a 60 s deadline and `maxUnavailable: 1`.
    pub fn binding_spec(&self, port: u16, targets: &[(&str, &str)]) -> serde_json::Value {
        let targets: Vec<serde_json::Value> = targets
            .iter()
            .map(|(a, b)| json!({"adapter": a, "params": {"backend": b}}))
            .collect();
        json!({"selector": {"matchLabels": {"app": "web"}}, "port": port, "targets": targets,
               "drainPolicy": {"deadlineSeconds": 60}, "disruptionBudget": {"maxUnavailable": 1}})
    }

    pub fn gateway_config(&self) -> anyhow::Result<Config> {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(Config::parse(&self.gateway_config_text(any_port), "demo")?)
    }

    /// Starts a gateway on the stage's configuration, waiting until it is ready (tests that
    /// set RUST_LOG see its logs).
    pub async fn start_gateway(&self) -> anyhow::Result<Gateway> {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        self.start_gateway_with(&self.gateway_config_text(any_port)).await
    }

    /// HAProxy's runtime API.
    pub fn haproxy(&self) -> sluice_adapter_slb::RuntimeClient {
        sluice_adapter_slb::RuntimeClient::new(
            sluice_adapter_slb::Endpoint::Unix(self.haproxy.socket.clone()),
            Duration::from_secs(2),
        )
    }

    /// The servers of a backend as HAProxy shows them: name → (`ip:port`, `show stat`
    /// status such as `UP`, `DRAIN`, `MAINT`, `DOWN 1/2`, current sessions).
    pub async fn servers(&self, backend: &str) -> anyhow::Result<BTreeMap<String, (String, String, u64)>> {
        let rt = self.haproxy();
        let states = rt.show_servers_state(backend).await?;
        let stats = rt.show_stat_servers(backend).await?;
        Ok(states
            .into_iter()
            .map(|st| {
                let row = stats.iter().find(|r| r.svname() == st.name);
                let status = row.map(|r| r.status().to_string()).unwrap_or_default();
                let scur = row.map(|r| r.scur()).unwrap_or(0);
                (st.name.clone(), (format!("{}:{}", st.addr, st.port), status, scur))
            })
            .collect())
    }

    /// The `show stat` status of pod `i`'s server in `backend` (`None`: no such server).
    pub async fn status_in(&self, backend: &str, i: usize) -> anyhow::Result<Option<String>> {
        let addr = SocketAddr::new(self.ips[i], self.port).to_string();
        Ok(self
            .servers(backend)
            .await?
            .into_values()
            .find(|(a, _, _)| *a == addr)
            .map(|(_, status, _)| status))
    }

    /// Stops HAProxy and starts it again from its configuration, as a reload without a
    /// server-state file does: every runtime change (dynamic servers, states) is lost.
    pub async fn restart_haproxy(&mut self) -> anyhow::Result<()> {
        let bin = self.haproxy.bin.clone();
        let frontend = self.haproxy.frontend;
        let _ = self.haproxy.child.kill();
        let _ = self.haproxy.child.wait();
        let _ = std::fs::remove_file(&self.haproxy.socket);
        let addrs: Vec<SocketAddr> = self.ips.iter().map(|ip| SocketAddr::new(*ip, self.port)).collect();
        self.haproxy = start_haproxy(&bin, &self.dir, frontend, &addrs).await?;
        Ok(())
    }

    pub async fn get(&self, i: usize) -> anyhow::Result<Pod> {
        Ok(self.home(i).pods.get(&Self::name(i)).await?)
    }

    pub async fn wait_ready(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let name = Self::name(i);
        let pods = &self.home(i).pods;
        wait_for(&format!("{name} Ready"), timeout, || async {
            pods.get(&name).await.is_ok_and(|p| pod_ready(&p))
        })
        .await
    }

    /// Waits until pod `i` carries no `sluice.dev/*` finalizer (its drain is verified).
    pub async fn wait_drained(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let name = Self::name(i);
        let pods = &self.home(i).pods;
        wait_for(&format!("{name} drained"), timeout, || async {
            pods.get(&name).await.is_ok_and(|p| !has_sluice_finalizer(&p))
        })
        .await
    }

    pub async fn set_kruise_state(&self, i: usize, state: &str) -> anyhow::Result<()> {
        let patch = json!({"metadata": {"labels": {KRUISE_STATE: state}}});
        self.home(i)
            .pods
            .patch(&Self::name(i), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Replaces pod `i`: stop its server, delete it, create the new version on the same
    /// address, start the new server, mark its containers ready.
    pub async fn replace(&mut self, i: usize) -> anyhow::Result<()> {
        let name = Self::name(i);
        self.backends[i].take();
        let pods = self.home(i).pods.clone();
        pods.delete(&name, &DeleteParams::default()).await?;
        wait_for(&format!("{name} deleted"), Duration::from_secs(30), || async {
            pods.get_opt(&name).await.is_ok_and(|p| p.is_none())
        })
        .await?;
        self.backends[i] = Some(backend::Backend::start(SocketAddr::new(self.ips[i], self.port)).await?);
        let state = if self.sluice { "PreparingNormal" } else { "Normal" };
        self.create_pod(i, "registry.local/web:v2", state).await
    }
}

/// Runs the demo and returns its measurements.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Summary> {
    let say = |s: String| {
        if opts.verbose {
            println!("{s}");
        }
    };
    let mut stage = Stage::new(opts.pods, opts.sluice).await?;
    say(format!(
        "demo: haproxy on {}, {} pods on port {}",
        stage.frontend, opts.pods, stage.port
    ));
    let _gateway = if opts.sluice {
        Some(stage.start_gateway().await?)
    } else {
        None
    };
    for i in 0..opts.pods {
        stage.wait_ready(i, Duration::from_secs(30)).await?;
    }
    // Let HAProxy's checks see every server up before traffic starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    say(format!(
        "demo: {} pods Ready; starting load ({} keep-alive clients)",
        opts.pods, opts.clients
    ));

    let load = load::Load::start(stage.frontend, opts.clients as u64);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let mut drain_ms = Vec::new();
    for i in 0..opts.pods {
        let name = Stage::name(i);
        let t0 = Instant::now();
        if opts.sluice {
            // OpenKruise: the pod enters PreparingDelete and waits for the hook's finalizers.
            stage.set_kruise_state(i, "PreparingDelete").await?;
            stage.wait_drained(i, Duration::from_secs(60)).await?;
        } else if let Some(sleep) = opts.sleep {
            // The endpoint leaves the load balancer (no new request goes there), then the
            // fixed wait a preStop sleep gives, whatever is still in flight.
            stage
                .haproxy()
                .raw(&format!("set server web/{name} state drain"))
                .await?;
            tokio::time::sleep(sleep).await;
        }
        let drained = t0.elapsed();
        drain_ms.push(drained.as_millis() as u64);
        stage.replace(i).await?;
        stage.wait_ready(i, Duration::from_secs(60)).await?;
        if opts.sluice {
            stage.set_kruise_state(i, "Normal").await?;
        } else if opts.sleep.is_some() {
            stage
                .haproxy()
                .raw(&format!("set server web/{name} state ready"))
                .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            // Without a gate, Ready says nothing about the load balancer; give it a moment
            // as a rolling update's minReadySeconds would.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        say(format!(
            "demo: [{}/{}] {name}: drained in {} ms, replaced, serving again after {} ms (requests={} failed={})",
            i + 1,
            opts.pods,
            drained.as_millis(),
            t0.elapsed().as_millis(),
            load.counts().0,
            load.counts().1
        ));
    }
    let rollout_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let longest_inflight_ms = load.longest_ms.load(std::sync::atomic::Ordering::SeqCst);
    let (requests, failed) = load.finish().await;
    Ok(Summary {
        requests,
        failed,
        longest_inflight_ms,
        drain_ms,
        rollout_s,
    })
}
