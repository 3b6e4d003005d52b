//! Configuration of one Nacos (Open API v2) adapter instance.
//!
//! ```yaml
//! name: nacos                          # instance name, referenced by TrafficBindings
//! serverAddr: http://127.0.0.1:8848    # plain HTTP (the Open API port)
//! contextPath: /nacos                  # default /nacos
//! namespace: public                    # default namespace id (a target may pick another)
//! group: DEFAULT_GROUP                 # default group (a target may pick another)
//! drainBy: enabled                     # enabled (default: enabled=false) | weight (weight=0)
//! restoreWeight: 1.0                   # weight mode: weight to restore when the original is unknown
//! ephemeral: true                      # sent with updates when Nacos does not say (default true)
//! settleSeconds: 3                     # instance not offered this long before `Drained` (default 3)
//! timeoutSeconds: 2                    # per HTTP call (default 2)
//! username: sluice                     # optional login (POST /nacos/v1/auth/login) ...
//! passwordFile: /etc/sluice/nacos-password   # ... password from a file or env only
//! accessTokenEnv: NACOS_TOKEN          # or a ready token from a file / env (no login)
//! allowedServices: [greeter]           # optional allow-lists for target parameters
//! allowedNamespaces: [public]
//! allowedGroups: [DEFAULT_GROUP]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::common::{positive_seconds, seconds, validate_name, SecretSource, DEFAULT_SETTLE, DEFAULT_TIMEOUT};

/// How a drain takes the instance out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainBy {
    /// `enabled=false`: Nacos 2.x then leaves the instance out of `/instance/list` and of
    /// what it pushes to subscribers.
    #[default]
    Enabled,
    /// `weight=0`: still listed, but Nacos clients never pick a zero-weight instance. The
    /// original weight is kept in the instance metadata `sluice.dev/weight` for the restore.
    Weight,
}

/// One Nacos adapter instance (see the module docs for the YAML).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NacosConfig {
    /// Instance name (the `Adapter::name`).
    pub name: String,
    /// `http://host:port` of a Nacos server (or a load balancer in front of the cluster).
    pub server_addr: String,
    /// Context path, default `/nacos`.
    #[serde(default)]
    pub context_path: Option<String>,
    /// Default namespace id (`public`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Default group (`DEFAULT_GROUP`).
    #[serde(default)]
    pub group: Option<String>,
    /// `enabled` (default) or `weight`.
    #[serde(default)]
    pub drain_by: DrainBy,
    /// Weight mode: the weight a restore sets when the original one is unknown (default 1.0).
    #[serde(default)]
    pub restore_weight: Option<f64>,
    /// `ephemeral` sent with updates when the instance list does not say (default true,
    /// what Nacos 2.x clients register).
    #[serde(default)]
    pub ephemeral: Option<bool>,
    /// How long the instance must stay out of the list before `Drained` (default 3 s): the
    /// time for Nacos to push the change and for clients' caches to follow.
    #[serde(default)]
    pub settle_seconds: Option<f64>,
    /// Bound on each HTTP call (default 2 s).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Nacos user for `POST /nacos/v1/auth/login`.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding a ready access token (instead of a login).
    #[serde(default)]
    pub access_token_file: Option<PathBuf>,
    /// Environment variable holding a ready access token.
    #[serde(default)]
    pub access_token_env: Option<String>,
    /// Services a target may select; empty means any.
    #[serde(default)]
    pub allowed_services: Vec<String>,
    /// Namespaces a target may select; empty means any.
    #[serde(default)]
    pub allowed_namespaces: Vec<String>,
    /// Groups a target may select; empty means any.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
}

/// How the adapter authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    Login { user: String, password: SecretSource },
    Token(SecretSource),
}

/// The checked, derived settings.
#[derive(Debug, Clone)]
pub(crate) struct NacosSettings {
    pub authority: String,
    pub context_path: String,
    pub namespace: String,
    pub group: String,
    pub restore_weight: f64,
    pub ephemeral: bool,
    pub settle: Duration,
    pub timeout: Duration,
    pub auth: Auth,
}

impl NacosConfig {
    /// A config with defaults for `serverAddr`.
    pub fn new(name: impl Into<String>, server_addr: impl Into<String>) -> Self {
        NacosConfig {
            name: name.into(),
            server_addr: server_addr.into(),
            context_path: None,
            namespace: None,
            group: None,
            drain_by: DrainBy::Enabled,
            restore_weight: None,
            ephemeral: None,
            settle_seconds: None,
            timeout_seconds: None,
            username: None,
            password_file: None,
            password_env: None,
            access_token_file: None,
            access_token_env: None,
            allowed_services: Vec::new(),
            allowed_namespaces: Vec::new(),
            allowed_groups: Vec::new(),
        }
    }

    /// Checks the values and derives the settings.
    pub(crate) fn settings(&self) -> Result<NacosSettings, String> {
        if self.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        let authority = match self.server_addr.strip_prefix("http://") {
            Some(rest) => rest.trim_end_matches('/').to_string(),
            None if self.server_addr.starts_with("https://") => {
                return Err("`serverAddr`: HTTPS is not supported yet; use the plain-HTTP Open API port".into())
            }
            None => return Err(format!("`serverAddr` {:?} must start with http://", self.server_addr)),
        };
        if authority.is_empty() || authority.contains('/') || authority.parse::<http::uri::Authority>().is_err() {
            return Err(format!("`serverAddr` {:?} must be http://host:port", self.server_addr));
        }
        let context_path = self.context_path.clone().unwrap_or_else(|| "/nacos".into());
        if !context_path.starts_with('/') || context_path.contains(['?', '#', ' ']) {
            return Err("`contextPath` must be a path like /nacos".into());
        }
        let namespace = self.namespace.clone().unwrap_or_else(|| "public".into());
        let group = self.group.clone().unwrap_or_else(|| "DEFAULT_GROUP".into());
        validate_name("namespace", &namespace, false).map_err(|e| e.message)?;
        validate_name("group", &group, false).map_err(|e| e.message)?;
        let restore_weight = self.restore_weight.unwrap_or(1.0);
        if !(restore_weight > 0.0 && restore_weight <= 10_000.0) {
            return Err("`restoreWeight` must be in (0, 10000]".into());
        }
        if self.restore_weight.is_some() && self.drain_by != DrainBy::Weight {
            return Err("`restoreWeight` only applies to `drainBy: weight`".into());
        }
        let password = SecretSource::from_fields("password", self.password_file.clone(), self.password_env.clone())?;
        let token = SecretSource::from_fields(
            "accessToken",
            self.access_token_file.clone(),
            self.access_token_env.clone(),
        )?;
        let auth = match (&self.username, password, token) {
            (None, None, None) => Auth::None,
            (Some(user), Some(password), None) => Auth::Login {
                user: user.clone(),
                password,
            },
            (None, None, Some(token)) => Auth::Token(token),
            (Some(_), None, None) => return Err("`username` needs `passwordFile` or `passwordEnv`".into()),
            (None, Some(_), _) => return Err("`passwordFile`/`passwordEnv` need `username`".into()),
            (_, _, Some(_)) => return Err("use either `username` + password or an access token, not both".into()),
        };
        Ok(NacosSettings {
            authority,
            context_path: context_path.trim_end_matches('/').to_string(),
            namespace,
            group,
            restore_weight,
            ephemeral: self.ephemeral.unwrap_or(true),
            settle: seconds("settleSeconds", self.settle_seconds, DEFAULT_SETTLE)?,
            timeout: positive_seconds("timeoutSeconds", self.timeout_seconds, DEFAULT_TIMEOUT)?,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<NacosConfig, String> {
        let c: NacosConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.settings().map(|_| c)
    }

    #[test]
    fn minimal_and_full() {
        let c = parse("name: n\nserverAddr: http://127.0.0.1:8848\n").unwrap();
        assert_eq!(c, NacosConfig::new("n", "http://127.0.0.1:8848"));
        let s = c.settings().unwrap();
        assert_eq!(
            (
                s.authority.as_str(),
                s.context_path.as_str(),
                s.namespace.as_str(),
                s.group.as_str()
            ),
            ("127.0.0.1:8848", "/nacos", "public", "DEFAULT_GROUP")
        );
        let c = parse(
            "name: n\nserverAddr: http://nacos:8848/\ncontextPath: /nacos/\nnamespace: dev\ngroup: G\n\
             drainBy: weight\nrestoreWeight: 2\nephemeral: false\nsettleSeconds: 0.2\ntimeoutSeconds: 1\n\
             username: u\npasswordEnv: NACOS_PW\nallowedServices: [a]\nallowedNamespaces: [dev]\nallowedGroups: [G]\n",
        )
        .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(
            (s.context_path.as_str(), s.restore_weight, s.ephemeral),
            ("/nacos", 2.0, false)
        );
        assert!(matches!(s.auth, Auth::Login { .. }));
        let c = parse("name: n\nserverAddr: http://nacos:8848\naccessTokenFile: /run/token\n").unwrap();
        assert!(matches!(c.settings().unwrap().auth, Auth::Token(_)));
    }

    #[test]
    fn rejects_mistakes() {
        let base = "name: n\nserverAddr: http://127.0.0.1:8848\n";
        for (extra, needle) in [
            ("password: x\n", "unknown field"),
            ("accessToken: x\n", "unknown field"),
            ("username: u\n", "needs `passwordFile`"),
            ("passwordEnv: X\n", "need `username`"),
            ("username: u\npasswordEnv: X\naccessTokenEnv: T\n", "not both"),
            ("drainBy: delete\n", "unknown variant"),
            ("restoreWeight: 2\n", "only applies to `drainBy: weight`"),
            ("drainBy: weight\nrestoreWeight: 0\n", "restoreWeight"),
            ("contextPath: nacos\n", "contextPath"),
            ("namespace: 'a b'\n", "invalid namespace"),
            ("timeoutSeconds: 0\n", "greater than 0"),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
        assert!(parse("name: n\nserverAddr: https://x:1\n")
            .unwrap_err()
            .contains("HTTPS"));
        assert!(parse("name: n\nserverAddr: x:1\n").unwrap_err().contains("http://"));
    }
}
