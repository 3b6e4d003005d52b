//! Configuration of one HAProxy adapter instance, as it appears in the gateway config.
//!
//! ```yaml
//! name: edge-lb                       # instance name, referenced by TrafficBindings
//! endpoint: unix:/run/haproxy/admin.sock   # or tcp:127.0.0.1:9999, or a bare path
//! mode: static                        # static (default) | dynamic
//! check: true                         # dynamic only: add servers with `check` (default true)
//! checkOptions: "inter 1s rise 2 fall 2"   # dynamic only: extra `add server` keywords
//! escalateAfterSeconds: 30            # optional: drain → maint after this long
//! shutdownSessionsOnEscalate: false   # also `shutdown sessions server` when escalating
//! timeoutSeconds: 2                   # per runtime-API call (default 2)
//! allowedBackends: [web, api]         # optional: backends bindings may select (default any)
//! ```
//!
//! Unknown fields are rejected, so a typo never silently changes drain behaviour.
//! `checkOptions` exists because HAProxy 2.6 does not apply `default-server` settings to
//! servers added at runtime: without it a dynamic server is checked every 2 s with
//! `rise 2`.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::validate_name;
use crate::runtime::{Endpoint, DEFAULT_TIMEOUT};

/// How the adapter finds the pod's server in a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Servers are declared in haproxy.cfg; the pod's server is the one whose
    /// `srv_addr:srv_port` equals the pod's `ip:port`. Only its state is changed.
    Static,
    /// The adapter adds the pod as server `sluice-<ip>-<port>` on register and deletes it
    /// once drained.
    Dynamic {
        /// Add the server with a health check (`check`); restore then waits for it to pass.
        check: bool,
        /// Extra keywords for `add server`, e.g. `["inter", "1s", "rise", "2"]`.
        check_options: Vec<String>,
    },
}

/// One HAProxy adapter instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct HaproxyConfig {
    /// Instance name (the `Adapter::name`).
    pub name: String,
    /// Runtime API socket; it must be `level admin`.
    pub endpoint: Endpoint,
    /// Static or dynamic servers.
    pub mode: Mode,
    /// Escalate a drain to `maint` once it has lasted this long with sessions left
    /// (sticky clients keep reaching a drained server). `None`: never escalate.
    pub escalate_after: Option<Duration>,
    /// When escalating, also `shutdown sessions server` (cuts in-flight work).
    pub shutdown_sessions_on_escalate: bool,
    /// Bound on each runtime API call.
    pub timeout: Duration,
    /// Backends a target may select; empty means any backend of this HAProxy.
    pub allowed_backends: Vec<String>,
    /// Runtime API connections open at once: `connections − 1` kept open for writes (in
    /// prompt mode, one command at a time each) and one for reads (a new one per read).
    /// The bound on what Sluice asks of the stats socket, however many pods are drained
    /// together; keep it below the socket's `maxconn` (10 by default) with room for
    /// operators' tools and other replicas.
    pub connections: usize,
}

/// Default for [`HaproxyConfig::connections`].
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Upper bound for [`HaproxyConfig::connections`]: HAProxy's stats socket accepts 10
/// connections by default (`stats maxconn`), and more only queue in its accept backlog.
pub const MAX_CONNECTIONS: usize = 8;

impl HaproxyConfig {
    /// A static-mode config with defaults: no escalation, 2 s timeout, any backend.
    pub fn new(name: impl Into<String>, endpoint: Endpoint) -> Self {
        HaproxyConfig {
            name: name.into(),
            endpoint,
            mode: Mode::Static,
            escalate_after: None,
            shutdown_sessions_on_escalate: false,
            timeout: DEFAULT_TIMEOUT,
            allowed_backends: Vec::new(),
            connections: DEFAULT_CONNECTIONS,
        }
    }

    /// Checks the values (the deserializer calls this too).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        if self.timeout.is_zero() {
            return Err("`timeoutSeconds` must be greater than 0".into());
        }
        if !(2..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!(
                "`connections` must be between 2 and {MAX_CONNECTIONS} (runtime API connections open at once: \
                 one for reads, the rest kept open for writes), not {}",
                self.connections
            ));
        }
        if self.shutdown_sessions_on_escalate && self.escalate_after.is_none() {
            return Err("`shutdownSessionsOnEscalate` needs `escalateAfterSeconds`".into());
        }
        for backend in &self.allowed_backends {
            validate_name("backend", backend).map_err(|e| e.to_string())?;
        }
        if let Mode::Dynamic { check, check_options } = &self.mode {
            if !check && !check_options.is_empty() {
                return Err("`checkOptions` needs `check: true`".into());
            }
            for opt in check_options {
                let ok = !opt.is_empty()
                    && opt
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'_' | b'-' | b'/'));
                if !ok {
                    return Err(format!(
                        "`checkOptions` word {opt:?} has characters HAProxy keywords never use"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a target may select `backend`.
    pub fn backend_allowed(&self, backend: &str) -> bool {
        self.allowed_backends.is_empty() || self.allowed_backends.iter().any(|b| b == backend)
    }
}

/// The server name dynamic mode uses for a pod: `sluice-<ip, '.' and ':' → '-'>-<port>`.
pub fn dynamic_server_name(ip: IpAddr, port: u16) -> String {
    let ip: String = ip
        .to_string()
        .chars()
        .map(|c| if c == '.' || c == ':' { '-' } else { c })
        .collect();
    format!("sluice-{ip}-{port}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    name: String,
    endpoint: Endpoint,
    #[serde(default)]
    mode: ModeName,
    check: Option<bool>,
    check_options: Option<String>,
    escalate_after_seconds: Option<f64>,
    #[serde(default)]
    shutdown_sessions_on_escalate: bool,
    timeout_seconds: Option<f64>,
    #[serde(default)]
    allowed_backends: Vec<String>,
    connections: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum ModeName {
    #[default]
    Static,
    Dynamic,
}

fn seconds(field: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("`{field}` must be a non-negative number of seconds"))
}

impl TryFrom<RawConfig> for HaproxyConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let mode = match raw.mode {
            ModeName::Static => {
                if raw.check.is_some() || raw.check_options.is_some() {
                    return Err("`check` and `checkOptions` only apply to `mode: dynamic`".into());
                }
                Mode::Static
            }
            ModeName::Dynamic => Mode::Dynamic {
                check: raw.check.unwrap_or(true),
                check_options: raw
                    .check_options
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect(),
            },
        };
        let config = HaproxyConfig {
            name: raw.name,
            endpoint: raw.endpoint,
            mode,
            escalate_after: raw
                .escalate_after_seconds
                .map(|s| seconds("escalateAfterSeconds", s))
                .transpose()?,
            shutdown_sessions_on_escalate: raw.shutdown_sessions_on_escalate,
            timeout: match raw.timeout_seconds {
                Some(s) => seconds("timeoutSeconds", s)?,
                None => DEFAULT_TIMEOUT,
            },
            allowed_backends: raw.allowed_backends,
            connections: raw.connections.unwrap_or(DEFAULT_CONNECTIONS),
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<HaproxyConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_static() {
        let c = parse("name: lb\nendpoint: unix:/run/haproxy/admin.sock\n").unwrap();
        assert_eq!(
            c,
            HaproxyConfig::new("lb", Endpoint::Unix("/run/haproxy/admin.sock".into()))
        );
    }

    #[test]
    fn full_dynamic() {
        let c = parse(
            "name: lb\nendpoint: tcp:127.0.0.1:9999\nmode: dynamic\ncheckOptions: inter 1s rise 2\n\
             escalateAfterSeconds: 0.5\nshutdownSessionsOnEscalate: true\ntimeoutSeconds: 1\nallowedBackends: [web]\n",
        )
        .unwrap();
        assert_eq!(
            c.mode,
            Mode::Dynamic {
                check: true,
                check_options: vec!["inter".into(), "1s".into(), "rise".into(), "2".into()]
            }
        );
        assert_eq!(c.escalate_after, Some(Duration::from_millis(500)));
        assert!(c.shutdown_sessions_on_escalate);
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert!(c.backend_allowed("web") && !c.backend_allowed("payments"));
        assert_eq!(c.connections, DEFAULT_CONNECTIONS);
        assert_eq!(
            parse("name: lb\nendpoint: unix:/x.sock\nconnections: 8\n")
                .unwrap()
                .connections,
            8
        );
    }

    #[test]
    fn rejects_mistakes() {
        let base = "name: lb\nendpoint: unix:/x.sock\n";
        for (extra, needle) in [
            ("escalateAfter: 3\n", "unknown field"),
            ("mode: weird\n", "unknown variant"),
            ("check: true\n", "only apply to `mode: dynamic`"),
            ("shutdownSessionsOnEscalate: true\n", "needs `escalateAfterSeconds`"),
            (
                "mode: dynamic\ncheckOptions: \"inter 1s; del server x/y\"\n",
                "checkOptions",
            ),
            (
                "mode: dynamic\ncheck: false\ncheckOptions: inter 1s\n",
                "needs `check: true`",
            ),
            ("timeoutSeconds: 0\n", "greater than 0"),
            ("escalateAfterSeconds: -1\n", "non-negative"),
            ("connections: 1\n", "between 2 and 8"),
            ("connections: 9\n", "between 2 and 8"),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        assert!(parse("name: lb\nendpoint: localhost:9999\n")
            .unwrap_err()
            .contains("bad endpoint"));
    }

    #[test]
    fn dynamic_names() {
        assert_eq!(
            dynamic_server_name("10.1.2.3".parse().unwrap(), 8080),
            "sluice-10-1-2-3-8080"
        );
        assert_eq!(dynamic_server_name("fd00::1".parse().unwrap(), 80), "sluice-fd00--1-80");
    }
}
