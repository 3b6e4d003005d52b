//! A small client for the PowerDNS Authoritative HTTP API (4.x): read a zone's RRsets,
//! PATCH RRsets, check the server and a zone. HTTP/1.1 with hyper, one connection per call
//! (the PowerDNS webserver speaks plain HTTP only), every call bounded by a timeout.
//!
//! PowerDNS 4.7.3 fact (measured here): `GET .../zones/Z?rrset_name=N` **omits disabled
//! records**, while the full zone GET lists them with `"disabled": true`. A `REPLACE`
//! built from the filtered answer would silently delete every other drained pod's record,
//! so this client always reads the full zone.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::error::DnsError;

/// A zone as the API returns it (only what the adapter needs).
#[derive(Debug, Clone, Deserialize)]
pub struct Zone {
    /// Every RRset, disabled records included.
    #[serde(default)]
    pub rrsets: Vec<Rrset>,
}

/// One RRset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rrset {
    /// Owner name, fully qualified.
    pub name: String,
    /// `A`, `AAAA`, ...
    #[serde(rename = "type")]
    pub rtype: String,
    /// The RRset's TTL.
    pub ttl: u32,
    /// Its records.
    pub records: Vec<PdnsRecord>,
}

/// One record of an RRset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdnsRecord {
    /// The record data as text (`10.0.0.1`).
    pub content: String,
    /// A disabled record is kept but not served.
    #[serde(default)]
    pub disabled: bool,
}

/// The API of one PowerDNS server.
#[derive(Clone)]
pub struct PdnsApi {
    base: String,
    authority: String,
    server_id: String,
    api_key: String,
    timeout: Duration,
}

impl std::fmt::Debug for PdnsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdnsApi")
            .field("base", &self.base)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl PdnsApi {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str, server_id: &str, api_key: String, timeout: Duration) -> PdnsApi {
        PdnsApi {
            authority: base.trim_start_matches("http://").to_string(),
            base: base.to_string(),
            server_id: server_id.to_string(),
            api_key,
            timeout,
        }
    }

    fn zone_path(&self, zone: &str) -> String {
        format!("/api/v1/servers/{}/zones/{}", self.server_id, zone_id(zone))
    }

    /// The zone with all its RRsets (`zone` fully qualified).
    pub async fn zone(&self, zone: &str) -> Result<Zone, DnsError> {
        serde_json::from_value(self.zone_json(zone).await?).map_err(|e| self.not_a_zone(zone, e))
    }

    /// The zone as PowerDNS returns it (every field, comments included).
    pub async fn zone_json(&self, zone: &str) -> Result<serde_json::Value, DnsError> {
        let body = self.call(Method::GET, &self.zone_path(zone), None, zone).await?;
        serde_json::from_slice(&body).map_err(|e| self.not_a_zone(zone, e))
    }

    fn not_a_zone(&self, zone: &str, e: serde_json::Error) -> DnsError {
        DnsError::ApiStatus {
            method: "GET".into(),
            url: format!("{}{}", self.base, self.zone_path(zone)),
            status: 200,
            body: format!("an answer that is not a zone: {e}"),
        }
    }

    /// Applies `rrsets` (each with its `changetype`) to `zone` in one PATCH.
    pub async fn patch(&self, zone: &str, rrsets: Vec<serde_json::Value>) -> Result<(), DnsError> {
        let body = serde_json::to_vec(&serde_json::json!({ "rrsets": rrsets })).expect("JSON values serialize");
        self.call(Method::PATCH, &self.zone_path(zone), Some(body), zone)
            .await?;
        Ok(())
    }

    /// Asks PowerDNS to NOTIFY the zone's secondaries now (`PUT .../notify`; only for
    /// zones of kind primary).
    pub async fn notify(&self, zone: &str) -> Result<(), DnsError> {
        let path = format!("{}/notify", self.zone_path(zone));
        self.call(Method::PUT, &path, None, zone).await?;
        Ok(())
    }

    /// Checks the API answers and the key is accepted; returns the server's `version`.
    pub async fn server(&self) -> Result<String, DnsError> {
        let path = format!("/api/v1/servers/{}", self.server_id);
        let body = self.call(Method::GET, &path, None, "").await?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(v["version"].as_str().unwrap_or("?").to_string())
    }

    /// Whether the server has `zone` (a metadata-only listing, no RRsets).
    pub async fn has_zone(&self, zone: &str) -> Result<bool, DnsError> {
        let path = format!("/api/v1/servers/{}/zones?zone={}", self.server_id, zone_id(zone));
        let body = self.call(Method::GET, &path, None, zone).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(v.as_array().is_some_and(|zones| !zones.is_empty()))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>, zone: &str) -> Result<Bytes, DnsError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |reason: String| DnsError::ApiUnreachable {
            url: url.clone(),
            reason,
        };
        let exchange = async {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, &self.authority)
                .header("X-API-Key", &self.api_key)
                .header(header::ACCEPT, "application/json");
            if body.is_some() {
                req = req.header(header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                .map_err(|e| unreachable(format!("cannot build the request: {e}")))?;
            let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, DnsError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))??;
        match status {
            200..=299 => Ok(bytes),
            401 | 403 => Err(DnsError::ApiKeyRejected {
                url: self.base.clone(),
                status,
            }),
            404 if !zone.is_empty() => Err(DnsError::ZoneNotServed {
                server: format!("PowerDNS at {}", self.base),
                zone: zone.to_string(),
                rcode: "HTTP 404 for the zone".into(),
            }),
            _ => Err(DnsError::ApiStatus {
                method: method.to_string(),
                url,
                status,
                body: error_text(&bytes),
            }),
        }
    }
}

/// PowerDNS's error JSON (`{"error": "..."}`) or the raw body, shortened.
fn error_text(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    text.chars().take(300).collect()
}

/// A zone's id in API paths: the name with anything but `[A-Za-z0-9._-]` as `=XX`
/// (PowerDNS's own escaping).
pub fn zone_id(zone: &str) -> String {
    let mut out = String::with_capacity(zone.len());
    for b in zone.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_and_errors() {
        assert_eq!(zone_id("example.test."), "example.test.");
        assert_eq!(zone_id("a/b.test."), "a=2Fb.test.");
        assert_eq!(
            error_text(br#"{"error": "Name is out of zone"}"#),
            "Name is out of zone"
        );
        assert_eq!(error_text(b"Not Found"), "Not Found");
    }

    #[test]
    fn parses_a_zone_with_disabled_records() {
        let z: Zone = serde_json::from_str(
            r#"{"name": "example.test.", "serial": 1, "rrsets": [{"comments": [], "name": "www.example.test.",
            "records": [{"content": "10.1.0.1", "disabled": false}, {"content": "10.1.0.2", "disabled": true}],
            "ttl": 2, "type": "A"}]}"#,
        )
        .unwrap();
        assert_eq!(
            z.rrsets[0].records[1],
            PdnsRecord {
                content: "10.1.0.2".into(),
                disabled: true
            }
        );
    }
}
