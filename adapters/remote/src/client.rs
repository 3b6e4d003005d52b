//! The gateway side: an `Adapter` that forwards every call to a plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_adapter::{Adapter, AdapterError, Capabilities, Listed, Observation, Result, Target};
use sluice_proto::adapter::v1 as pb;
use sluice_proto::adapter::v1::adapter_plugin_client::AdapterPluginClient;
use tokio::sync::OnceCell;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::convert::{observation_from_pb, status_to_error, target_to_pb};

/// One remote adapter instance in the gateway configuration.
///
/// ```yaml
/// kind: remote
/// name: inhouse-registry
/// endpoint: http://127.0.0.1:7070      # https://… with tls
/// adapterKind: rpc                     # the traffic kind the plugin serves (finalizer sluice.dev/<kind>)
/// timeoutMs: 2000                      # per call
/// tls: {caFile: /etc/sluice/plugin-ca.pem, domain: plugin.internal}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteConfig {
    pub name: String,
    pub endpoint: String,
    /// Declared here so the gateway knows the finalizer without calling the plugin; the
    /// plugin's Describe must agree.
    pub adapter_kind: String,
    #[serde(default)]
    pub required_params: Vec<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_timeout_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// CA certificate (PEM) the plugin's certificate must chain to.
    pub ca_file: PathBuf,
    /// Name to verify in the plugin's certificate (default: the endpoint's host).
    #[serde(default)]
    pub domain: Option<String>,
}

/// A plugin reached over gRPC.
#[derive(Debug)]
pub struct RemoteAdapter {
    cfg: RemoteConfig,
    client: AdapterPluginClient<Channel>,
    described: OnceCell<()>,
}

impl RemoteAdapter {
    /// Builds the client; the connection is made lazily on first use (a plugin that starts
    /// after the gateway is fine).
    pub fn new(cfg: RemoteConfig) -> Result<RemoteAdapter> {
        let bad = |m: String| AdapterError::permanent(format!("remote adapter {}: {m}", cfg.name));
        if cfg.timeout_ms == 0 {
            return Err(bad("timeoutMs must be greater than 0".into()));
        }
        let mut ep = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|e| bad(format!("endpoint {:?} is not a URL: {e}", cfg.endpoint)))?
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .tcp_nodelay(true);
        if let Some(tls) = &cfg.tls {
            let pem =
                std::fs::read(&tls.ca_file).map_err(|e| bad(format!("tls.caFile {}: {e}", tls.ca_file.display())))?;
            let mut t = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            ep = ep.tls_config(t).map_err(|e| bad(format!("tls: {e}")))?;
        }
        let client = AdapterPluginClient::new(ep.connect_lazy());
        Ok(RemoteAdapter {
            cfg,
            client,
            described: OnceCell::new(),
        })
    }

    fn err(&self, s: tonic::Status) -> AdapterError {
        status_to_error(&self.cfg.name, s)
    }

    /// Checks, once, that the plugin speaks v1 and serves the declared kind.
    async fn ensure_described(&self) -> Result<()> {
        self.described
            .get_or_try_init(|| async {
                let d = self
                    .client
                    .clone()
                    .describe(pb::DescribeRequest {})
                    .await
                    .map_err(|s| self.err(s))?
                    .into_inner();
                if d.protocol_version != crate::PROTOCOL_VERSION {
                    return Err(AdapterError::permanent(format!(
                        "plugin {} speaks protocol {:?}, this gateway speaks {:?}",
                        self.cfg.name,
                        d.protocol_version,
                        crate::PROTOCOL_VERSION
                    )));
                }
                if d.kind != self.cfg.adapter_kind {
                    return Err(AdapterError::permanent(format!(
                        "plugin {} serves kind {:?} but the gateway configuration declares adapterKind {:?}",
                        self.cfg.name, d.kind, self.cfg.adapter_kind
                    )));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn req(t: &Target) -> pb::TargetRequest {
        pb::TargetRequest {
            target: Some(target_to_pb(t)),
        }
    }
}

#[async_trait::async_trait]
impl Adapter for RemoteAdapter {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: self.cfg.adapter_kind.clone(),
            required_params: self.cfg.required_params.clone(),
            shared_reads: false,
        }
    }

    async fn register(&self, target: &Target) -> Result<()> {
        self.ensure_described().await?;
        self.client
            .clone()
            .register(Self::req(target))
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    async fn deregister(&self, target: &Target) -> Result<()> {
        self.ensure_described().await?;
        self.client
            .clone()
            .deregister(Self::req(target))
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        self.ensure_described().await?;
        let o = self
            .client
            .clone()
            .observe(Self::req(target))
            .await
            .map_err(|s| self.err(s))?;
        observation_from_pb(o.into_inner())
    }

    async fn health(&self) -> Result<()> {
        self.ensure_described().await?;
        self.client
            .clone()
            .health(pb::Empty {})
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    async fn list(&self, scope: &BTreeMap<String, String>) -> Result<Option<Vec<Listed>>> {
        self.ensure_described().await?;
        let req = pb::ListRequest {
            scope: scope.clone().into_iter().collect(),
        };
        let resp = match self.client.clone().list(req).await {
            Ok(r) => r.into_inner(),
            // A plugin built before List existed, or one that cannot list.
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(None),
            Err(s) => return Err(self.err(s)),
        };
        if !resp.supported {
            return Ok(None);
        }
        resp.entries
            .into_iter()
            .map(|l| {
                let ip = l.ip.parse().map_err(|_| {
                    AdapterError::permanent(format!("plugin {} listed an invalid address {:?}", self.cfg.name, l.ip))
                })?;
                let port = u16::try_from(l.port).map_err(|_| {
                    AdapterError::permanent(format!("plugin {} listed an invalid port {}", self.cfg.name, l.port))
                })?;
                Ok(Listed {
                    ip,
                    port,
                    params: l.params.into_iter().collect(),
                    evidence: l.evidence,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// Parameters of a target given on a command line (`key=value`).
pub fn parse_params(items: &[String]) -> std::result::Result<BTreeMap<String, String>, String> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{i:?} is not key=value"))
        })
        .collect()
}
