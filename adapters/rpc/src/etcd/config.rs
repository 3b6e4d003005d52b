//! Configuration of one etcd registry adapter instance, as it appears in the gateway config.
//!
//! ```yaml
//! name: registry-etcd                 # instance name, referenced by TrafficBindings
//! endpoints: [http://127.0.0.1:2379]  # etcd v3 client URLs
//! preset: grpc-go                     # grpc-go | go-micro | kratos | custom
//! prefix: "services/"                 # optional: key root (defaults: grpc-go "", go-micro
//!                                     #   "/micro/registry/", kratos "/microservices/")
//! settleSeconds: 3                    # key absent this long before `Drained` (default 3)
//! leaseTtlSeconds: 10                 # optional: restore puts the key under a lease the gateway keeps alive
//! timeoutSeconds: 2                   # per etcd call (default 2)
//! username: sluice                    # optional etcd auth; password only from a file or env
//! passwordFile: /etc/sluice/etcd-password
//! allowedServices: [greeter]          # optional: services a binding may select (default any)
//! ```
//!
//! `preset: custom` takes `keyTemplate` and `valueTemplate` (placeholders `{service}`,
//! `{ip}`, `{port}`, `{addr}` = `ip:port`, `{id}`), and optionally
//! `disabledValueTemplate`: drain then writes that value instead of deleting the key.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::common::{positive_seconds, seconds, SecretSource, DEFAULT_SETTLE, DEFAULT_TIMEOUT};
use crate::etcd::layout::Layout;

/// The key/value layouts Sluice knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// gRPC-go naming (etcd `naming/endpoints`): `<prefix><service>/<ip:port>` →
    /// `{"Op":0,"Addr":"ip:port","Metadata":null}`.
    GrpcGo,
    /// go-micro's etcd registry: `/micro/registry/<service>/<nodeId>` → a service JSON with
    /// one node whose `address` is `ip:port`.
    GoMicro,
    /// Kratos' etcd registry: `/microservices/<service>/<id>` → an instance JSON whose
    /// `endpoints` hold `scheme://ip:port`.
    Kratos,
    /// `keyTemplate` / `valueTemplate` (/ `disabledValueTemplate`) from the config.
    Custom,
}

/// One etcd adapter instance (see the module docs for the YAML).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdConfig {
    /// Instance name (the `Adapter::name`).
    pub name: String,
    /// etcd client URLs (`http://host:port`).
    pub endpoints: Vec<String>,
    /// Key/value layout.
    pub preset: Preset,
    /// Key root in front of the service name; the default depends on the preset.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `custom` only: the instance key, e.g. `/services/{service}/{addr}`.
    #[serde(default)]
    pub key_template: Option<String>,
    /// `custom` only: the value a restore writes when it has none remembered.
    #[serde(default)]
    pub value_template: Option<String>,
    /// `custom` only: drain writes this value instead of deleting the key.
    #[serde(default)]
    pub disabled_value_template: Option<String>,
    /// Instance id used when a go-micro / Kratos record must be rebuilt (default
    /// `sluice-{ip}-{port}`).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Kratos only: endpoint scheme of rebuilt records (default `grpc`).
    #[serde(default)]
    pub scheme: Option<String>,
    /// How long the key must stay absent before `Drained` (default 3 s).
    #[serde(default)]
    pub settle_seconds: Option<f64>,
    /// When set, a restore that cannot reuse the service's own lease puts the key under a
    /// new lease of this TTL, kept alive by the gateway process.
    #[serde(default)]
    pub lease_ttl_seconds: Option<i64>,
    /// Bound on each etcd call (default 2 s).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// etcd user (auth enabled).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the etcd password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the etcd password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Services a target may select; empty means any.
    #[serde(default)]
    pub allowed_services: Vec<String>,
    /// Roots a target's `key` override must stay under (default: the preset's root).
    #[serde(default)]
    pub allowed_key_prefixes: Vec<String>,
}

/// The checked, derived settings of an [`EtcdConfig`].
#[derive(Debug, Clone)]
pub(crate) struct EtcdSettings {
    pub layout: Layout,
    pub settle: Duration,
    pub timeout: Duration,
    pub lease_ttl: Option<i64>,
    pub credentials: Option<(String, SecretSource)>,
}

impl EtcdConfig {
    /// A config with defaults: `endpoints` and `preset` given, everything else unset.
    pub fn new(name: impl Into<String>, endpoints: Vec<String>, preset: Preset) -> Self {
        EtcdConfig {
            name: name.into(),
            endpoints,
            preset,
            prefix: None,
            key_template: None,
            value_template: None,
            disabled_value_template: None,
            instance_id: None,
            scheme: None,
            settle_seconds: None,
            lease_ttl_seconds: None,
            timeout_seconds: None,
            username: None,
            password_file: None,
            password_env: None,
            allowed_services: Vec::new(),
            allowed_key_prefixes: Vec::new(),
        }
    }

    /// The settle window.
    pub fn settle(&self) -> Duration {
        self.settle_seconds
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or(DEFAULT_SETTLE)
    }

    /// Checks the values and derives the settings.
    pub(crate) fn settings(&self) -> Result<EtcdSettings, String> {
        if self.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        if self.endpoints.is_empty() {
            return Err("`endpoints` must list at least one etcd client URL".into());
        }
        for e in &self.endpoints {
            if e.starts_with("https://") {
                return Err(format!("endpoint {e}: TLS to etcd is not supported yet; use http://"));
            }
        }
        let password = SecretSource::from_fields("password", self.password_file.clone(), self.password_env.clone())?;
        let credentials = match (&self.username, password) {
            (Some(user), Some(pw)) => Some((user.clone(), pw)),
            (None, None) => None,
            (Some(_), None) => return Err("`username` needs `passwordFile` or `passwordEnv`".into()),
            (None, Some(_)) => return Err("`passwordFile`/`passwordEnv` need `username`".into()),
        };
        if let Some(ttl) = self.lease_ttl_seconds {
            if ttl < 2 {
                return Err("`leaseTtlSeconds` must be at least 2".into());
            }
        }
        Ok(EtcdSettings {
            layout: Layout::from_config(self)?,
            settle: seconds("settleSeconds", self.settle_seconds, DEFAULT_SETTLE)?,
            timeout: positive_seconds("timeoutSeconds", self.timeout_seconds, DEFAULT_TIMEOUT)?,
            lease_ttl: self.lease_ttl_seconds,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<EtcdConfig, String> {
        let c: EtcdConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.settings().map(|_| c)
    }

    #[test]
    fn minimal_and_full() {
        let c = parse("name: r\nendpoints: [http://127.0.0.1:2379]\npreset: grpc-go\n").unwrap();
        assert_eq!(
            c,
            EtcdConfig::new("r", vec!["http://127.0.0.1:2379".into()], Preset::GrpcGo)
        );
        assert_eq!(c.settle(), Duration::from_secs(3));
        let c = parse(
            "name: r\nendpoints: [http://127.0.0.1:2379]\npreset: custom\nkeyTemplate: /svc/{service}/{addr}\n\
             valueTemplate: '{\"addr\":\"{addr}\"}'\ndisabledValueTemplate: '{\"addr\":\"{addr}\",\"disabled\":true}'\n\
             settleSeconds: 0.3\nleaseTtlSeconds: 5\ntimeoutSeconds: 1\nusername: u\npasswordEnv: ETCD_PW\n\
             allowedServices: [a]\n",
        )
        .unwrap();
        assert_eq!(c.settle(), Duration::from_millis(300));
        assert_eq!(c.preset, Preset::Custom);
    }

    #[test]
    fn rejects_mistakes() {
        let base = "name: r\nendpoints: [http://127.0.0.1:2379]\n";
        for (extra, needle) in [
            ("preset: grpc-go\nsettle: 3\n", "unknown field"),
            ("preset: consul\n", "unknown variant"),
            ("preset: grpc-go\npassword: x\n", "unknown field `password`"),
            ("preset: grpc-go\nusername: u\n", "needs `passwordFile`"),
            (
                "preset: grpc-go\nusername: u\npasswordFile: /a\npasswordEnv: B\n",
                "only one of",
            ),
            ("preset: grpc-go\ntimeoutSeconds: 0\n", "greater than 0"),
            ("preset: grpc-go\nsettleSeconds: -1\n", "non-negative"),
            ("preset: grpc-go\nleaseTtlSeconds: 1\n", "at least 2"),
            ("preset: custom\n", "needs `keyTemplate`"),
            ("preset: custom\nkeyTemplate: /svc/{service}\n", "must identify the pod"),
            (
                "preset: custom\nkeyTemplate: /svc/{addr}/{bogus}\n",
                "unknown placeholder",
            ),
            (
                "preset: grpc-go\nkeyTemplate: /svc/{addr}\n",
                "only apply to `preset: custom`",
            ),
            ("preset: grpc-go\nscheme: http\n", "only applies to `preset: kratos`"),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        assert!(parse("name: r\nendpoints: []\npreset: kratos\n")
            .unwrap_err()
            .contains("at least one"));
        assert!(parse("name: r\nendpoints: [https://x:1]\npreset: kratos\n")
            .unwrap_err()
            .contains("TLS"));
    }
}
