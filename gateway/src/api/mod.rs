//! The gRPC drain/restore API (`sluice.v1.Sluice`, `proto/sluice/v1/sluice.proto`).
//!
//! A pod drain asked here is recorded on the pod (`sluice.dev/desired: drained` and
//! `sluice.dev/desired-by`), the same path rollout controllers use, so the engine does the
//! work, a restart forgets nothing, and any replica may take the request (a standby writes it,
//! the leader acts on it). Reads answer from the replica's own view of the clusters. A
//! forced Release is an action, not a request: only the leader performs it.
//!
//! Every call is authenticated ([`auth::Authenticator`]), rate limited per identity and
//! authorized by the configured rules (deny by default); every mutating call writes one
//! audit line (target `sluice::audit`).

pub mod auth;
pub mod selector;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sluice_proto::v1 as pb;

use crate::config::ApiConfig;
use crate::engine::Engine;
use crate::model::{PodView, StatusSummary};

pub use service::ApiService;

/// The API, ready to serve: certificates and tokens read, the service built.
pub struct Server {
    engine: Arc<Engine>,
    cfg: ApiConfig,
    service: ApiService,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Server {
    /// Reads the certificates and token files (an error names the field and the file).
    pub fn new(engine: Arc<Engine>, cfg: ApiConfig, review_client: Option<kube::Client>) -> anyhow::Result<Server> {
        let tls = match &cfg.tls {
            Some(t) => {
                let cert = std::fs::read(&t.cert_file)
                    .with_context(|| format!("api.tls.certFile: reading {}", t.cert_file.display()))?;
                let key = std::fs::read(&t.key_file)
                    .with_context(|| format!("api.tls.keyFile: reading {}", t.key_file.display()))?;
                let mut tls =
                    tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key));
                if let Some(ca) = &t.client_ca_file {
                    let ca =
                        std::fs::read(ca).with_context(|| format!("api.tls.clientCAFile: reading {}", ca.display()))?;
                    tls = tls
                        .client_ca_root(tonic::transport::Certificate::from_pem(ca))
                        .client_auth_optional(true);
                }
                Some(tls)
            }
            None => None,
        };
        let service = ApiService::new(engine.clone(), cfg.clone(), review_client)?;
        Ok(Server {
            engine,
            cfg,
            service,
            tls,
        })
    }

    /// Serves on `listener` until the task is dropped: the Sluice service, gRPC health
    /// (`grpc.health.v1`: SERVING once every cluster has synced, NOT_SERVING while
    /// stopping) and server reflection.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("gRPC reflection")?;
        let engine = self.engine.clone();
        let reporter = tokio::spawn(async move {
            let mut last = None;
            loop {
                let serving = engine.ready() && !engine.authority.stopping();
                if last != Some(serving) {
                    let status = if serving {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status("", status).await;
                    health.set_service_status("sluice.v1.Sluice", status).await;
                    last = Some(serving);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        let _stop_reporter = AbortOnDrop(reporter);
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls).context("api.tls")?;
        }
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        server
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                pb::sluice_server::SluiceServer::new(self.service)
                    .max_decoding_message_size(self.cfg.max_request_bytes)
                    .max_encoding_message_size(16 * 1024 * 1024),
            )
            .serve_with_incoming(incoming)
            .await
            .context("serving the API")
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds the API listener (so a port in use is an error at start, not later).
pub async fn bind(cfg: &ApiConfig) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("api.listen: binding {}", cfg.listen))?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// Who asked for a pod's drain through the API (`sluice.dev/desired-by`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredBy {
    pub by: String,
    pub why: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

impl DesiredBy {
    pub fn parse(raw: Option<&str>) -> Option<DesiredBy> {
        serde_json::from_str(raw?).ok()
    }
}

/// A pod's traffic state as the API answers it.
pub fn traffic(p: &PodView) -> pb::PodTraffic {
    let status = StatusSummary::parse(p.status_annotation.as_deref());
    let by = DesiredBy::parse(p.desired_by.as_deref()).unwrap_or_default();
    let s = status.as_ref();
    pb::PodTraffic {
        cluster: p.cluster.clone(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
        ip: p.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        state: s
            .and_then(|s| serde_json::to_value(s.state).ok())
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        last_transition: s.map(|s| s.last_transition.clone()).unwrap_or_default(),
        trace_id: s.map(|s| s.trace_id.clone()).unwrap_or_default(),
        targets: s.map(|s| s.targets.clone().into_iter().collect()).unwrap_or_default(),
        blocked: s.map(|s| s.blocked.clone()).unwrap_or_default(),
        problems: s.map(|s| s.problems.clone()).unwrap_or_default(),
        gate: match p.gate {
            Some(true) => "True".into(),
            Some(false) => "False".into(),
            None => String::new(),
        },
        finalizers: p
            .finalizers
            .iter()
            .filter(|f| f.starts_with("sluice.dev/"))
            .cloned()
            .collect(),
        drain_signals: crate::planner::drain_signals(p),
        requested_by: by.by,
        request_reason: by.why,
        etag: p.resource_version.clone(),
        kind: "pod".into(),
    }
}

/// An EndpointDrain record's state as the API answers it (`kind: endpoint`).
pub fn endpoint_traffic(cluster: &str, e: &crate::endpoint::EndpointDrain) -> pb::PodTraffic {
    let status = e.status.clone().unwrap_or_default();
    pb::PodTraffic {
        cluster: cluster.to_string(),
        namespace: e.metadata.namespace.clone().unwrap_or_default(),
        name: e.metadata.name.clone().unwrap_or_default(),
        uid: e.metadata.uid.clone().unwrap_or_default(),
        ip: e.spec.address.clone(),
        // A status about an older request says nothing of this one yet.
        state: if status.desired == Some(e.spec.desired) && status.observed_generation == e.metadata.generation {
            status.state
        } else {
            String::new()
        },
        last_transition: status.last_transition,
        trace_id: crate::telemetry::TraceParent::parse(&e.spec.traceparent)
            .map(|t| format!("{:032x}", t.trace_id))
            .unwrap_or_default(),
        targets: status.targets.into_iter().collect(),
        blocked: status.blocked,
        problems: vec![],
        gate: String::new(),
        finalizers: vec![],
        drain_signals: match e.spec.desired {
            crate::endpoint::Desired::Drained => vec!["desired".into()],
            crate::endpoint::Desired::Serving => vec![],
        },
        requested_by: e.spec.requested_by.clone(),
        request_reason: e.spec.reason.clone(),
        etag: e.metadata.resource_version.clone().unwrap_or_default(),
        kind: "endpoint".into(),
    }
}
