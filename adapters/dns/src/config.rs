//! Configuration of the two DNS adapter instances, as they appear in the gateway config.
//!
//! ```yaml
//! # RFC 2136 (BIND, Knot, any server taking TSIG-signed dynamic updates)
//! name: corp-dns                 # instance name, referenced by TrafficBindings
//! primary: 127.0.0.1:53          # where UPDATEs go (ip:port)
//! zones: [example.com]           # zones this instance may change
//! servers: [10.0.0.2:53, 10.0.0.3:53]  # optional: authoritative servers to verify on
//!                                # (default: discovered from the zone's NS set)
//! resolver: 10.0.0.53:53         # optional: resolves NS names (default: the primary)
//! nsPort: 53                     # port of NS-discovered servers (default 53)
//! tsigKeyFile: /etc/sluice/ddns.key   # a BIND key file (tsig-keygen output) ...
//! tsigSecretEnv: SLUICE_TSIG     # ... or an env var with the base64 secret (needs tsigKeyName)
//! tsigKeyName: sluice            # key name (required with tsigSecretEnv; picks one key in a file)
//! tsigAlgorithm: hmac-sha256     # with tsigSecretEnv (default hmac-sha256)
//! ttl: 60                        # TTL for an address added to an empty name (default 60)
//! timeoutSeconds: 2              # per DNS exchange (default 2)
//! batchWindowMs: 0               # extra wait to gather more changes into one UPDATE (default 0)
//! ```
//!
//! ```yaml
//! # PowerDNS HTTP API
//! name: pdns
//! apiUrl: http://127.0.0.1:8081  # PowerDNS webserver (it speaks plain HTTP only)
//! serverId: localhost            # default localhost
//! apiKeyFile: /etc/sluice/pdns.key    # or apiKeyEnv: SLUICE_PDNS_KEY
//! dns: 127.0.0.1:53              # PowerDNS's own DNS listener, asked for evidence
//! servers: [10.0.0.3:53]         # optional: more authoritative servers to verify on
//! zones: [example.com]
//! ttl: 60
//! timeoutSeconds: 2
//! batchWindowMs: 0
//! ```
//!
//! Secrets are never inline: there is no field for them, and unknown fields are rejected.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::names::parse_fqdn;
use crate::secret::SecretSource;
use crate::wire::DEFAULT_TIMEOUT;

/// Default TTL for an address added to an empty name.
pub const DEFAULT_TTL: u32 = 60;

/// One RFC 2136 adapter instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRfc2136")]
pub struct Rfc2136Config {
    /// Instance name (the `Adapter::name`).
    pub name: String,
    /// The primary server: UPDATEs go here, and its answers are the zone's truth.
    pub primary: SocketAddr,
    /// Zones this instance may change (fully qualified, lower-case).
    pub zones: Vec<Name>,
    /// Authoritative servers to verify on; `None`: discover them from the zone's NS set.
    /// The primary is always verified too.
    pub servers: Option<Vec<SocketAddr>>,
    /// Resolves NS host names during discovery (recursion requested); `None`: the primary.
    pub resolver: Option<SocketAddr>,
    /// Port of servers found through NS discovery.
    pub ns_port: u16,
    /// Where the TSIG secret comes from.
    pub tsig_secret: SecretSource,
    /// The key name (required with an env secret; selects a key in a multi-key file).
    pub tsig_key_name: Option<String>,
    /// The algorithm for an env secret (a key file names its own).
    pub tsig_algorithm: String,
    /// TTL for an address added to an empty name.
    pub ttl: u32,
    /// Bound on each DNS exchange.
    pub timeout: Duration,
    /// Extra time the batcher waits for more changes before sending an UPDATE.
    pub batch_window: Duration,
}

/// One PowerDNS (HTTP API) adapter instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawPowerDns")]
pub struct PowerDnsConfig {
    /// Instance name (the `Adapter::name`).
    pub name: String,
    /// `http://host:port` of the PowerDNS webserver (no trailing path).
    pub api_url: String,
    /// The API's server id (`localhost`).
    pub server_id: String,
    /// Where the API key comes from.
    pub api_key: SecretSource,
    /// PowerDNS's DNS listener: asked for evidence, like a primary.
    pub dns: SocketAddr,
    /// More authoritative servers to verify on (e.g. secondaries fed by PowerDNS).
    pub servers: Vec<SocketAddr>,
    /// Zones this instance may change.
    pub zones: Vec<Name>,
    /// TTL for an address added to an empty name.
    pub ttl: u32,
    /// Bound on each DNS exchange and API call.
    pub timeout: Duration,
    /// Extra time the batcher waits for more changes before sending a PATCH.
    pub batch_window: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRfc2136 {
    name: String,
    primary: SocketAddr,
    zones: Vec<String>,
    servers: Option<Vec<SocketAddr>>,
    resolver: Option<SocketAddr>,
    ns_port: Option<u16>,
    tsig_key_file: Option<PathBuf>,
    tsig_secret_env: Option<String>,
    tsig_key_name: Option<String>,
    tsig_algorithm: Option<String>,
    ttl: Option<u32>,
    timeout_seconds: Option<f64>,
    batch_window_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPowerDns {
    name: String,
    api_url: String,
    server_id: Option<String>,
    api_key_file: Option<PathBuf>,
    api_key_env: Option<String>,
    dns: SocketAddr,
    #[serde(default)]
    servers: Vec<SocketAddr>,
    zones: Vec<String>,
    ttl: Option<u32>,
    timeout_seconds: Option<f64>,
    batch_window_ms: Option<u64>,
}

fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("`name` must not be empty".into());
    }
    Ok(())
}

fn zones(raw: &[String]) -> Result<Vec<Name>, String> {
    if raw.is_empty() {
        return Err("`zones` must list at least one zone".into());
    }
    raw.iter()
        .map(|z| parse_fqdn(z).map_err(|e| format!("`zones`: {z:?}: {e}")))
        .collect()
}

fn timeout(raw: Option<f64>) -> Result<Duration, String> {
    match raw {
        None => Ok(DEFAULT_TIMEOUT),
        Some(s) => Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "`timeoutSeconds` must be a number of seconds greater than 0".into()),
    }
}

fn ttl(raw: Option<u32>) -> Result<u32, String> {
    match raw {
        Some(t) if t > i32::MAX as u32 => Err("`ttl` must be at most 2147483647".into()),
        Some(t) => Ok(t),
        None => Ok(DEFAULT_TTL),
    }
}

fn secret(
    file: Option<PathBuf>,
    env: Option<String>,
    file_field: &str,
    env_field: &str,
) -> Result<SecretSource, String> {
    match (file, env) {
        (Some(path), None) => Ok(SecretSource::File(path)),
        (None, Some(var)) if !var.trim().is_empty() => Ok(SecretSource::Env(var)),
        (None, Some(_)) => Err(format!("`{env_field}` must name an environment variable")),
        (None, None) => Err(format!("one of `{file_field}` or `{env_field}` is required")),
        (Some(_), Some(_)) => Err(format!("set only one of `{file_field}` and `{env_field}`")),
    }
}

impl TryFrom<RawRfc2136> for Rfc2136Config {
    type Error = String;

    fn try_from(raw: RawRfc2136) -> Result<Self, Self::Error> {
        check_name(&raw.name)?;
        let tsig_secret = secret(raw.tsig_key_file, raw.tsig_secret_env, "tsigKeyFile", "tsigSecretEnv")?;
        if matches!(tsig_secret, SecretSource::Env(_)) && raw.tsig_key_name.is_none() {
            return Err("`tsigSecretEnv` needs `tsigKeyName`".into());
        }
        if matches!(tsig_secret, SecretSource::File(_)) && raw.tsig_algorithm.is_some() {
            return Err("`tsigAlgorithm` only applies to `tsigSecretEnv` (a key file names its algorithm)".into());
        }
        if raw.servers.as_ref().is_some_and(Vec::is_empty) {
            return Err("`servers` must not be empty (leave it out to discover servers from the NS set)".into());
        }
        if raw.servers.is_some() && (raw.resolver.is_some() || raw.ns_port.is_some()) {
            return Err("`resolver` and `nsPort` only apply to NS discovery, i.e. without `servers`".into());
        }
        Ok(Rfc2136Config {
            name: raw.name,
            primary: raw.primary,
            zones: zones(&raw.zones)?,
            servers: raw.servers,
            resolver: raw.resolver,
            ns_port: raw.ns_port.unwrap_or(53),
            tsig_secret,
            tsig_key_name: raw.tsig_key_name,
            tsig_algorithm: raw.tsig_algorithm.unwrap_or_else(|| "hmac-sha256".into()),
            ttl: ttl(raw.ttl)?,
            timeout: timeout(raw.timeout_seconds)?,
            batch_window: Duration::from_millis(raw.batch_window_ms.unwrap_or(0)),
        })
    }
}

impl TryFrom<RawPowerDns> for PowerDnsConfig {
    type Error = String;

    fn try_from(raw: RawPowerDns) -> Result<Self, Self::Error> {
        check_name(&raw.name)?;
        let api_url = raw.api_url.trim().trim_end_matches('/').to_string();
        let rest = api_url.strip_prefix("http://").ok_or_else(|| {
            format!("`apiUrl` {api_url:?} must start with http:// (the PowerDNS webserver speaks plain HTTP only)")
        })?;
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(format!("`apiUrl` {api_url:?} must be http://host:port with no path"));
        }
        let server_id = raw.server_id.unwrap_or_else(|| "localhost".into());
        if server_id.is_empty()
            || !server_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("`serverId` {server_id:?} must be letters, digits, '-' or '_'"));
        }
        Ok(PowerDnsConfig {
            name: raw.name,
            api_url,
            server_id,
            api_key: secret(raw.api_key_file, raw.api_key_env, "apiKeyFile", "apiKeyEnv")?,
            dns: raw.dns,
            servers: raw.servers,
            zones: zones(&raw.zones)?,
            ttl: ttl(raw.ttl)?,
            timeout: timeout(raw.timeout_seconds)?,
            batch_window: Duration::from_millis(raw.batch_window_ms.unwrap_or(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc(yaml: &str) -> Result<Rfc2136Config, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    fn pdns(yaml: &str) -> Result<PowerDnsConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    const RFC: &str = "name: d\nprimary: 127.0.0.1:5301\nzones: [Example.Test]\n";
    const PDNS: &str = "name: p\napiUrl: http://127.0.0.1:8081/\ndns: 127.0.0.1:5300\nzones: [example.test]\n";

    #[test]
    fn minimal_configs_get_defaults() {
        let c = rfc(&format!("{RFC}tsigKeyFile: /k.conf\n")).unwrap();
        assert_eq!(c.zones[0].to_string(), "example.test.");
        assert_eq!(
            (c.ttl, c.timeout, c.batch_window, c.ns_port),
            (60, DEFAULT_TIMEOUT, Duration::ZERO, 53)
        );
        assert_eq!(
            (c.servers.clone(), c.tsig_secret.clone()),
            (None, SecretSource::File("/k.conf".into()))
        );
        let c = rfc(&format!(
            "{RFC}tsigSecretEnv: K\ntsigKeyName: sluice\ntsigAlgorithm: hmac-sha512\nservers: [127.0.0.1:5302]\nttl: 5\n\
             timeoutSeconds: 0.5\nbatchWindowMs: 2\n"
        ))
        .unwrap();
        assert_eq!(
            (c.ttl, c.timeout, c.batch_window),
            (5, Duration::from_millis(500), Duration::from_millis(2))
        );
        let p = pdns(&format!("{PDNS}apiKeyEnv: PDNS_KEY\n")).unwrap();
        assert_eq!(
            (p.api_url.as_str(), p.server_id.as_str()),
            ("http://127.0.0.1:8081", "localhost")
        );
    }

    #[test]
    fn rejects_inline_secrets_and_mistakes() {
        for (extra, needle) in [
            ("tsigSecret: abc\n", "unknown field `tsigSecret`"),
            ("tsigKeyFile: /k\ntsigSecretEnv: K\n", "only one of"),
            ("", "one of `tsigKeyFile` or `tsigSecretEnv` is required"),
            ("tsigSecretEnv: K\n", "needs `tsigKeyName`"),
            (
                "tsigKeyFile: /k\ntsigAlgorithm: hmac-sha256\n",
                "only applies to `tsigSecretEnv`",
            ),
            ("tsigKeyFile: /k\nservers: []\n", "must not be empty"),
            (
                "tsigKeyFile: /k\nservers: [127.0.0.1:1]\nnsPort: 5\n",
                "only apply to NS discovery",
            ),
            ("tsigKeyFile: /k\ntimeoutSeconds: 0\n", "greater than 0"),
            ("tsigKeyFile: /k\nservers: [localhost]\n", "invalid"),
        ] {
            let e = rfc(&format!("{RFC}{extra}")).unwrap_err();
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        assert!(rfc("name: d\nprimary: 127.0.0.1:1\nzones: []\ntsigKeyFile: /k\n")
            .unwrap_err()
            .contains("at least one zone"));
        for (extra, needle) in [
            ("apiKey: secret\n", "unknown field `apiKey`"),
            ("", "one of `apiKeyFile` or `apiKeyEnv` is required"),
        ] {
            let e = pdns(&format!("{PDNS}{extra}")).unwrap_err();
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        let e = pdns("name: p\napiUrl: https://h:1\ndns: 127.0.0.1:1\nzones: [a]\napiKeyEnv: K\n").unwrap_err();
        assert!(e.contains("must start with http://"), "{e}");
        let e = pdns("name: p\napiUrl: http://h:1/api\ndns: 127.0.0.1:1\nzones: [a]\napiKeyEnv: K\n").unwrap_err();
        assert!(e.contains("no path"), "{e}");
    }
}
