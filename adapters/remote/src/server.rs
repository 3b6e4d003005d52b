//! The plugin side: serves any `Adapter` over the `sluice.adapter.v1` protocol.

use std::sync::Arc;

use sluice_adapter::Adapter;
use sluice_proto::adapter::v1 as pb;
use sluice_proto::adapter::v1::adapter_plugin_server::{AdapterPlugin, AdapterPluginServer};
use tonic::{Request, Response, Status};

use crate::convert::{error_to_status, observation_to_pb, target_from_pb};

/// The gRPC service wrapping an adapter.
pub struct PluginService {
    adapter: Arc<dyn Adapter>,
}

impl PluginService {
    pub fn new(adapter: Arc<dyn Adapter>) -> Self {
        PluginService { adapter }
    }

    pub fn into_server(self) -> AdapterPluginServer<PluginService> {
        AdapterPluginServer::new(self)
    }
}

#[tonic::async_trait]
impl AdapterPlugin for PluginService {
    async fn describe(&self, _: Request<pb::DescribeRequest>) -> Result<Response<pb::DescribeResponse>, Status> {
        let caps = self.adapter.capabilities();
        Ok(Response::new(pb::DescribeResponse {
            protocol_version: crate::PROTOCOL_VERSION.into(),
            name: self.adapter.name().into(),
            kind: caps.kind,
            required_params: caps.required_params,
        }))
    }

    async fn register(&self, req: Request<pb::TargetRequest>) -> Result<Response<pb::Empty>, Status> {
        let t = target_from_pb(req.into_inner().target)?;
        self.adapter.register(&t).await.map_err(error_to_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn deregister(&self, req: Request<pb::TargetRequest>) -> Result<Response<pb::Empty>, Status> {
        let t = target_from_pb(req.into_inner().target)?;
        self.adapter.deregister(&t).await.map_err(error_to_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn observe(&self, req: Request<pb::TargetRequest>) -> Result<Response<pb::Observation>, Status> {
        let t = target_from_pb(req.into_inner().target)?;
        let o = self.adapter.observe(&t).await.map_err(error_to_status)?;
        Ok(Response::new(observation_to_pb(&o)))
    }

    async fn health(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        self.adapter.health().await.map_err(error_to_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let scope = req.into_inner().scope.into_iter().collect();
        let listed = self.adapter.list(&scope).await.map_err(error_to_status)?;
        Ok(Response::new(match listed {
            None => pb::ListResponse {
                supported: false,
                entries: Vec::new(),
            },
            Some(entries) => pb::ListResponse {
                supported: true,
                entries: entries
                    .into_iter()
                    .map(|l| pb::Listed {
                        ip: l.ip.to_string(),
                        port: l.port.into(),
                        params: l.params.into_iter().collect(),
                        evidence: l.evidence,
                    })
                    .collect(),
            },
        }))
    }
}

/// Serves `adapter` on `listener` until the future is dropped.
pub async fn serve(
    adapter: Arc<dyn Adapter>,
    listener: tokio::net::TcpListener,
) -> Result<(), tonic::transport::Error> {
    serve_with(adapter, listener, None).await
}

/// Serves `adapter` over TLS with a PEM certificate chain and private key.
pub async fn serve_tls(
    adapter: Arc<dyn Adapter>,
    listener: tokio::net::TcpListener,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(), tonic::transport::Error> {
    let identity = tonic::transport::Identity::from_pem(cert_pem, key_pem);
    serve_with(
        adapter,
        listener,
        Some(tonic::transport::ServerTlsConfig::new().identity(identity)),
    )
    .await
}

async fn serve_with(
    adapter: Arc<dyn Adapter>,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<(), tonic::transport::Error> {
    // Small request/response messages: Nagle would add delayed-ACK stalls.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(PluginService::new(adapter).into_server())
        .serve_with_incoming(incoming)
        .await
}
