//! The instance calls of the Nacos Open API v2 the adapter makes, and how their answers
//! are read:
//!
//! - `GET /nacos/v2/ns/instance` → [`Detail`] (registered or not; an unknown service is
//!   told apart with `GET /nacos/v2/ns/service`, code 21008);
//! - `GET /nacos/v2/ns/instance/list` (`healthyOnly=false`, never `ip`/`port`: those name a
//!   push subscriber) → the pod's [`Host`] entry, if consumers are offered it;
//! - `PUT /nacos/v2/ns/instance` with `enabled`, `weight`, `healthy`, `ephemeral` and
//!   `metadata`: the server rebuilds all of them from the form, so an [`Update`] always
//!   carries the current values of those it does not mean to change.

use http::Method;
use serde_json::{Map, Value};
use sluice_adapter::{AdapterError, Result, Target};

use crate::nacos::client::{NacosClient, Reply};

/// The instance a target names.
#[derive(Debug, Clone)]
pub(crate) struct Selection<'t> {
    pub service: &'t str,
    pub group: &'t str,
    pub namespace: &'t str,
    pub cluster: Option<&'t str>,
    pub target: &'t Target,
    /// Memory key: namespace, group, service, cluster, address.
    pub key: String,
}

/// `GET /nacos/v2/ns/instance` data (it has no `enabled` field).
#[derive(Debug, Clone)]
pub(crate) struct Detail {
    pub weight: f64,
    pub healthy: bool,
    pub metadata: Map<String, Value>,
}

/// One `hosts[]` entry of `GET /nacos/v2/ns/instance/list`.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub enabled: bool,
    pub weight: f64,
    pub healthy: bool,
    pub ephemeral: Option<bool>,
}

/// Whether consumers are offered the instance: listed, enabled, weight above 0.
pub(crate) fn offered(host: Option<&Host>) -> bool {
    host.is_some_and(|h| h.enabled && h.weight > 0.0)
}

/// The full form of a `PUT /nacos/v2/ns/instance`.
#[derive(Debug, Clone)]
pub(crate) struct Update<'a> {
    pub enabled: bool,
    pub weight: f64,
    pub healthy: bool,
    pub ephemeral: bool,
    pub metadata: &'a Map<String, Value>,
}

impl Selection<'_> {
    fn base(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("namespaceId", self.namespace.to_string()),
            ("groupName", self.group.to_string()),
            ("serviceName", self.service.to_string()),
        ];
        if let Some(cluster) = self.cluster {
            p.push(("clusterName", cluster.to_string()));
        }
        p
    }

    fn instance_params(&self) -> Vec<(&'static str, String)> {
        let mut p = self.base();
        p.push(("ip", self.target.ip.to_string()));
        p.push(("port", self.target.port.to_string()));
        p
    }

    /// `group@@service`, as Nacos names a service.
    pub fn grouped(&self) -> String {
        format!("{}@@{}", self.group, self.service)
    }
}

fn unexpected(client: &NacosClient, what: &str, reply: &Reply) -> AdapterError {
    AdapterError::permanent(format!(
        "{} refused {what} (HTTP {}, code {}: {})",
        client.describe(),
        reply.status,
        reply.code,
        reply.text()
    ))
}

/// Whether a service that does not exist counts as "instance absent" (draining: nothing
/// can offer it) or is an error (restoring: the binding probably names the wrong service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingService {
    Absent,
    Error,
}

/// The instance detail; `None` when it is not registered (or, with
/// [`MissingService::Absent`], when its service does not exist). Otherwise an unknown service
/// is a permanent error.
pub(crate) async fn detail(client: &NacosClient, s: &Selection<'_>, missing: MissingService) -> Result<Option<Detail>> {
    let reply = client
        .call(Method::GET, "/v2/ns/instance", &s.instance_params())
        .await?;
    if reply.code == 0 {
        let d = &reply.data;
        return Ok(Some(Detail {
            weight: d["weight"].as_f64().unwrap_or(1.0),
            healthy: d["healthy"].as_bool().unwrap_or(true),
            metadata: d["metadata"].as_object().cloned().unwrap_or_default(),
        }));
    }
    if reply.not_found() && !reply.service_missing() {
        // Tell "no such instance" from "no such service".
        let svc = client.call(Method::GET, "/v2/ns/service", &s.base()).await?;
        if svc.code == 0 {
            return Ok(None);
        }
        if !svc.service_missing() {
            return Err(unexpected(client, "GET /v2/ns/service", &svc));
        }
    }
    if (reply.service_missing() || reply.not_found()) && missing == MissingService::Absent {
        return Ok(None);
    }
    if reply.service_missing() || reply.not_found() {
        return Err(AdapterError::permanent(format!(
            "service '{}' does not exist in namespace '{}' of {} (check the binding's `service`, `group` and \
             `namespace`)",
            s.grouped(),
            s.namespace,
            client.describe()
        )));
    }
    Err(unexpected(client, "GET /v2/ns/instance", &reply))
}

/// The target's entry in what consumers are offered (`/instance/list`), if listed.
pub(crate) async fn listed(client: &NacosClient, s: &Selection<'_>) -> Result<Option<Host>> {
    let mut params = s.base();
    params.push(("healthyOnly", "false".into()));
    let reply = client.call(Method::GET, "/v2/ns/instance/list", &params).await?;
    if reply.code != 0 {
        return Err(unexpected(client, "GET /v2/ns/instance/list", &reply));
    }
    let ip = s.target.ip.to_string();
    let port = u64::from(s.target.port);
    let hosts = reply.data["hosts"].as_array().cloned().unwrap_or_default();
    Ok(hosts
        .iter()
        .find(|h| h["ip"].as_str() == Some(ip.as_str()) && h["port"].as_u64() == Some(port))
        .map(|h| Host {
            enabled: h["enabled"].as_bool().unwrap_or(true),
            weight: h["weight"].as_f64().unwrap_or(1.0),
            healthy: h["healthy"].as_bool().unwrap_or(true),
            ephemeral: h["ephemeral"].as_bool(),
        }))
}

/// Updates the instance with the full form.
pub(crate) async fn update(client: &NacosClient, s: &Selection<'_>, u: &Update<'_>) -> Result<()> {
    let mut params = s.instance_params();
    params.extend([
        ("enabled", u.enabled.to_string()),
        ("weight", u.weight.to_string()),
        ("healthy", u.healthy.to_string()),
        ("ephemeral", u.ephemeral.to_string()),
        ("metadata", Value::Object(u.metadata.clone()).to_string()),
    ]);
    let reply = client.call(Method::PUT, "/v2/ns/instance", &params).await?;
    if reply.code == 0 {
        return Ok(());
    }
    if reply.not_found() {
        return Err(AdapterError::retryable(format!(
            "instance {} of '{}' vanished from {} during the update ({})",
            s.target.addr(),
            s.grouped(),
            client.describe(),
            reply.text()
        )));
    }
    Err(unexpected(client, "PUT /v2/ns/instance", &reply))
}

/// `GET /nacos/v2/ns/operator/metrics?onlyStatus=true` must say `UP`.
pub(crate) async fn health(client: &NacosClient) -> Result<()> {
    let reply = client
        .call(Method::GET, "/v2/ns/operator/metrics", &[("onlyStatus", "true".into())])
        .await?;
    let status = reply
        .data
        .as_str()
        .or(reply.data["status"].as_str())
        .unwrap_or_default();
    if reply.code != 0 || status != "UP" {
        return Err(AdapterError::retryable(format!(
            "{} is not UP: {}",
            client.describe(),
            reply.text()
        )));
    }
    Ok(())
}
