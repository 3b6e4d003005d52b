//! Wiring: builds adapters and cluster clients from the configuration, starts the watches
//! and the health endpoint, and holds readiness until every cluster has listed once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use sluice_adapter::Adapter;
use tokio::task::JoinHandle;
use tracing::info;

use crate::authority::{Authority, Role};
use crate::config::{AdapterConfig, ClusterConfig, Config};
use crate::engine::{ClusterHandle, Engine};
use crate::k8s::PodWriter;

/// A running gateway. Dropping it stops every task ([`Gateway::shutdown`] first, for a
/// graceful stop).
pub struct Gateway {
    pub engine: Arc<Engine>,
    pub health_addr: SocketAddr,
    /// `/metrics`' own listener, when `listen.metrics` names one.
    pub metrics_addr: Option<SocketAddr>,
    /// The preStop listener (`listen.prestop`).
    pub prestop_addr: Option<SocketAddr>,
    /// The admission webhook's HTTPS listener (`admission.listen`).
    pub admission_addr: Option<SocketAddr>,
    /// The gRPC API's listener (`api.listen`).
    pub api_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    /// The lease loop, told to stop (and release the lease) on shutdown.
    lease: Option<(Arc<tokio::sync::Notify>, JoinHandle<()>)>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Builds the adapter instances of the configuration.
pub fn build_adapters(cfg: &Config) -> anyhow::Result<BTreeMap<String, Arc<dyn Adapter>>> {
    let mut out: BTreeMap<String, Arc<dyn Adapter>> = BTreeMap::new();
    for a in &cfg.adapters {
        let name = a.name().to_string();
        let built: Result<Arc<dyn Adapter>, sluice_adapter::AdapterError> = match a {
            AdapterConfig::Haproxy(c) => sluice_adapter_slb::HaproxyAdapter::new(c.clone()).map(|x| Arc::new(x) as _),
            AdapterConfig::Remote(c) => sluice_adapter_remote::RemoteAdapter::new(c.clone()).map(|x| Arc::new(x) as _),
            AdapterConfig::Rfc2136(c) => sluice_adapter_dns::Rfc2136Adapter::new(c.clone()).map(|x| Arc::new(x) as _),
            AdapterConfig::PowerDns(c) => sluice_adapter_dns::PowerDnsAdapter::new(c.clone()).map(|x| Arc::new(x) as _),
            AdapterConfig::Etcd(c) => sluice_adapter_rpc::etcd::EtcdAdapter::new(c.clone()).map(|x| Arc::new(x) as _),
            AdapterConfig::ZookeeperDubbo(c) => {
                sluice_adapter_rpc::zookeeper::ZookeeperDubboAdapter::new(c.clone()).map(|x| Arc::new(x) as _)
            }
            AdapterConfig::Nacos(c) => {
                sluice_adapter_rpc::nacos::NacosAdapter::new(c.clone()).map(|x| Arc::new(x) as _)
            }
        };
        let adapter = built.map_err(|e| anyhow::anyhow!("adapter {name}: {e}"))?;
        out.insert(a.name().to_string(), adapter);
    }
    Ok(out)
}

pub async fn client_for(c: &ClusterConfig) -> anyhow::Result<Client> {
    let cfg = if c.in_cluster {
        kube::Config::incluster().context("in-cluster configuration")?
    } else {
        let path = c.kubeconfig.as_ref().expect("validated: kubeconfig or inCluster");
        let kc =
            Kubeconfig::read_from(path).with_context(|| format!("cluster {}: reading {}", c.name, path.display()))?;
        let opts = KubeConfigOptions {
            context: c.context.clone(),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .with_context(|| format!("cluster {}: kubeconfig", c.name))?
    };
    Client::try_from(cfg).with_context(|| format!("cluster {}: client", c.name))
}

impl Gateway {
    /// Starts everything; returns once the health endpoint is bound (readiness comes later,
    /// see [`Gateway::wait_ready`]).
    pub async fn start(cfg: Config) -> anyhow::Result<Gateway> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let adapters = build_adapters(&cfg)?;
        let role = match (&cfg.leader_election, cfg.shadow) {
            (_, true) => Role::Shadow,
            (Some(_), false) => Role::Elected,
            (None, false) => Role::Sole,
        };
        let authority = Arc::new(Authority::new(role, cfg.engine.paused));
        let mut clients = BTreeMap::new();
        let mut handles = BTreeMap::new();
        for c in &cfg.clusters {
            let client = client_for(c).await?;
            handles.insert(
                c.name.clone(),
                Arc::new(ClusterHandle::new(
                    &c.name,
                    PodWriter::new(client.clone(), &cfg.engine.instance, authority.clone()),
                )),
            );
            clients.insert(c.name.clone(), client);
        }
        let tenancy = crate::tenancy::Tenancy::build(&cfg.tenants, &adapters)?;
        let engine = Engine::new(cfg.engine.clone(), handles.clone(), adapters.clone(), authority.clone());
        engine
            .tenancy
            .set(tenancy)
            .map_err(|_| anyhow::anyhow!("tenancy rules were read before they were set"))?;
        let review_client = cfg
            .api
            .as_ref()
            .and_then(|a| crate::api::auth::review_client(a, &clients, &cfg.clusters[0].name));
        info!(role = %authority.describe(), instance = %cfg.engine.instance, "Gateway starting.");
        let lease = cfg.leader_election.as_ref().map(|l| {
            let cluster = l.cluster.clone().unwrap_or_else(|| cfg.clusters[0].name.clone());
            let elector = crate::lease::Elector::new(clients[&cluster].clone(), l.clone(), &cfg.engine.instance);
            let stop = Arc::new(tokio::sync::Notify::new());
            let engine = engine.clone();
            let task = tokio::spawn(crate::lease::run(
                elector,
                authority.clone(),
                move || engine.on_elected(),
                stop.clone(),
            ));
            (stop, task)
        });
        let mut tasks = Vec::new();
        for (name, client) in clients {
            let cluster = handles[&name].clone();
            let pods_synced = Arc::new(tokio::sync::Notify::new());
            let bindings_synced = Arc::new(tokio::sync::Notify::new());
            tasks.push(tokio::spawn(crate::k8s::watch::watch_bindings(
                engine.clone(),
                cluster.clone(),
                client.clone(),
                adapters.clone(),
                bindings_synced.clone(),
            )));
            tasks.push(tokio::spawn(crate::endpoint::watch_endpoints(
                engine.clone(),
                cluster.clone(),
                client.clone(),
            )));
            tasks.push(tokio::spawn(crate::k8s::watch::watch_pods(
                engine.clone(),
                cluster.clone(),
                client,
                pods_synced.clone(),
            )));
            let engine2 = engine.clone();
            tasks.push(tokio::spawn(async move {
                pods_synced.notified().await;
                bindings_synced.notified().await;
                engine2.on_synced(&cluster.name);
                info!(cluster = %cluster.name, "Cluster synced; its pods are acted on.");
            }));
        }
        tasks.push(tokio::spawn(crate::engine::resync::resync_loop(engine.clone())));
        tasks.push(tokio::spawn(crate::engine::resync::health_loop(engine.clone())));
        tasks.push(tokio::spawn(crate::engine::resync::orphan_loop(engine.clone())));
        let listener = tokio::net::TcpListener::bind(cfg.listen.health)
            .await
            .with_context(|| format!("listen.health: binding {}", cfg.listen.health))?;
        let health_addr = listener.local_addr()?;
        let metrics_addr = match cfg.listen.metrics {
            Some(addr) => {
                let metrics = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listen.metrics: binding {addr}"))?;
                let bound = metrics.local_addr()?;
                tasks.push(tokio::spawn(serve_health(metrics, engine.clone(), Routes::Metrics)));
                tasks.push(tokio::spawn(serve_health(listener, engine.clone(), Routes::Health)));
                Some(bound)
            }
            None => {
                tasks.push(tokio::spawn(serve_health(listener, engine.clone(), Routes::All)));
                None
            }
        };
        let prestop_addr = match cfg.listen.prestop {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listen.prestop: binding {addr}"))?;
                let bound = l.local_addr()?;
                tasks.push(tokio::spawn(crate::prestop::serve(l, engine.clone())));
                Some(bound)
            }
            None => None,
        };
        let admission_addr = match &cfg.admission {
            Some(a) => {
                let tls = crate::admission::tls_config(a)?;
                let l = tokio::net::TcpListener::bind(a.listen)
                    .await
                    .with_context(|| format!("admission.listen: binding {}", a.listen))?;
                let bound = l.local_addr()?;
                tasks.push(tokio::spawn(crate::admission::serve(l, tls, engine.clone(), a.clone())));
                Some(bound)
            }
            None => None,
        };
        let api_addr = match &cfg.api {
            Some(a) => {
                let (l, bound) = crate::api::bind(a).await?;
                // Certificates and tokens are read before the gateway counts as started.
                let service = crate::api::Server::new(engine.clone(), a.clone(), review_client)?;
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = service.serve(l).await {
                        tracing::error!(error = %format!("{e:#}"), "The API stopped.");
                    }
                }));
                Some(bound)
            }
            None => None,
        };
        Ok(Gateway {
            engine,
            health_addr,
            metrics_addr,
            prestop_addr,
            admission_addr,
            api_addr,
            tasks,
            lease,
        })
    }

    /// Stops gracefully: `/readyz` answers 503 at once and no new work starts; passes in
    /// flight (their adapter calls and pod writes) finish, within `limit`; then the lease
    /// is released, so a standby takes over at its next retry.
    pub async fn shutdown(mut self, limit: std::time::Duration) {
        let authority = self.engine.authority.clone();
        authority.stop();
        info!("Shutting down: no new work starts; waiting for work in flight.");
        // Passes in flight (their adapter calls and pod writes) finish; sleeping workers
        // do not count (they would not act again).
        let started = std::time::Instant::now();
        let finished = tokio::time::timeout(limit, async {
            while self.engine.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok();
        // Then the workers end (woken from their pauses), closing their spans before the
        // exporter flushes; bounded by what is left of the limit.
        let _ = tokio::time::timeout(limit.saturating_sub(started.elapsed()), async {
            while self.engine.busy_pods() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        if let Some((stop, task)) = self.lease.take() {
            if finished {
                // Nothing of ours can land any more: hand over at once.
                stop.notify_one();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
            } else {
                // Something may still land: keep the lease until it expires by itself.
                tracing::warn!(
                    in_flight = self.engine.in_flight.load(std::sync::atomic::Ordering::SeqCst),
                    "Work still in flight at the shutdown limit: the lease is left to expire, not released."
                );
                authority.revoke();
                task.abort();
            }
        }
        info!("Stopped.");
    }

    /// Waits until every cluster has listed pods and bindings once.
    pub async fn wait_ready(&self) {
        while !self.engine.ready() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// What a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routes {
    /// Health, readiness, preStop and metrics.
    All,
    /// Everything but `/metrics` (which has a listener of its own).
    Health,
    /// Only `/metrics`.
    Metrics,
}

async fn serve_health(listener: tokio::net::TcpListener, engine: Arc<Engine>, routes: Routes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let engine = engine.clone();
                async move {
                    let path = req.uri().path();
                    let (code, body) = match path {
                        "/metrics" if routes == Routes::Health => (
                            StatusCode::NOT_FOUND,
                            "not found: /metrics is served on the listen.metrics address".to_string(),
                        ),
                        "/metrics" => (StatusCode::OK, engine.scrape()),
                        _ if routes == Routes::Metrics => (
                            StatusCode::NOT_FOUND,
                            "not found: this listener serves /metrics only".to_string(),
                        ),
                        "/healthz" => (StatusCode::OK, format!("ok: {}", engine.authority.describe())),
                        "/prestop" => (
                            StatusCode::GONE,
                            "gone: /prestop is served on the listen.prestop address and identifies the calling pod by \
                             its source address (an exec hook), never by a name in the query"
                                .to_string(),
                        ),
                        "/readyz" if engine.authority.stopping() => {
                            (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_string())
                        }
                        "/readyz" if engine.ready() => (StatusCode::OK, "ready".to_string()),
                        "/readyz" => {
                            let waiting = engine.unsynced();
                            let mut body = format!("waiting for first sync of: {}", waiting.join(", "));
                            for p in engine.cluster_problems() {
                                body.push('\n');
                                body.push_str(&p);
                            }
                            (StatusCode::SERVICE_UNAVAILABLE, body)
                        }
                        _ => (StatusCode::NOT_FOUND, "not found".to_string()),
                    };
                    let content_type = if req.uri().path() == "/metrics" {
                        "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(code)
                            .header(http::header::CONTENT_TYPE, content_type)
                            .body(Full::new(bytes::Bytes::from(body)))
                            .expect("response"),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
