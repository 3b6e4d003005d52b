//! Configuration of one ZooKeeper (Dubbo layout) adapter instance.
//!
//! ```yaml
//! name: dubbo-zk                       # instance name, referenced by TrafficBindings
//! connect: 127.0.0.1:2181              # ZooKeeper connect string (hosts, optional /chroot)
//! root: dubbo                          # Dubbo registry group / root node (default dubbo)
//! settleSeconds: 3                     # override in force this long before `Drained` (default 3)
//! sessionTimeoutSeconds: 10            # the adapter's own ZooKeeper session (default 10)
//! timeoutSeconds: 2                    # per ZooKeeper call (default 2)
//! digestUser: sluice                   # optional `digest` auth; password from a file or env
//! digestPasswordFile: /etc/sluice/zk-password
//! allowedInterfaces: [org.demo.Greeter]  # optional: interfaces a binding may select (default any)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::common::{positive_seconds, seconds, validate_name, SecretSource, DEFAULT_SETTLE, DEFAULT_TIMEOUT};

/// Default session timeout of the adapter's own ZooKeeper session.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// One ZooKeeper/Dubbo adapter instance (see the module docs for the YAML).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ZookeeperDubboConfig {
    /// Instance name (the `Adapter::name`).
    pub name: String,
    /// ZooKeeper connect string, e.g. `zk1:2181,zk2:2181/chroot`.
    pub connect: String,
    /// Dubbo's registry root (its `group`), default `dubbo`.
    #[serde(default)]
    pub root: Option<String>,
    /// How long the override must be in force, unchanged, before `Drained` (default 3 s):
    /// time for ZooKeeper to notify every consumer and for them to refresh their invokers.
    #[serde(default)]
    pub settle_seconds: Option<f64>,
    /// Session timeout asked for the adapter's own session (default 10 s).
    #[serde(default)]
    pub session_timeout_seconds: Option<f64>,
    /// Bound on each ZooKeeper call (default 2 s).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// User for ZooKeeper `digest` authentication.
    #[serde(default)]
    pub digest_user: Option<String>,
    /// File holding the digest password.
    #[serde(default)]
    pub digest_password_file: Option<PathBuf>,
    /// Environment variable holding the digest password.
    #[serde(default)]
    pub digest_password_env: Option<String>,
    /// Dubbo interfaces a target may select; empty means any.
    #[serde(default)]
    pub allowed_interfaces: Vec<String>,
}

/// The checked, derived settings.
#[derive(Debug, Clone)]
pub(crate) struct ZkSettings {
    pub root: String,
    pub settle: Duration,
    pub session_timeout: Duration,
    pub timeout: Duration,
    pub digest: Option<(String, SecretSource)>,
}

impl ZookeeperDubboConfig {
    /// A config with defaults for `connect`.
    pub fn new(name: impl Into<String>, connect: impl Into<String>) -> Self {
        ZookeeperDubboConfig {
            name: name.into(),
            connect: connect.into(),
            root: None,
            settle_seconds: None,
            session_timeout_seconds: None,
            timeout_seconds: None,
            digest_user: None,
            digest_password_file: None,
            digest_password_env: None,
            allowed_interfaces: Vec::new(),
        }
    }

    /// Checks the values and derives the settings.
    pub(crate) fn settings(&self) -> Result<ZkSettings, String> {
        if self.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        if self.connect.trim().is_empty() {
            return Err("`connect` must name at least one ZooKeeper server".into());
        }
        let root = self.root.clone().unwrap_or_else(|| "dubbo".into());
        validate_name("root", &root, false).map_err(|e| e.message)?;
        let password = SecretSource::from_fields(
            "digestPassword",
            self.digest_password_file.clone(),
            self.digest_password_env.clone(),
        )?;
        let digest = match (&self.digest_user, password) {
            (Some(user), Some(pw)) if !user.contains(':') => Some((user.clone(), pw)),
            (Some(_), Some(_)) => return Err("`digestUser` must not contain ':'".into()),
            (None, None) => None,
            (Some(_), None) => return Err("`digestUser` needs `digestPasswordFile` or `digestPasswordEnv`".into()),
            (None, Some(_)) => return Err("`digestPasswordFile`/`digestPasswordEnv` need `digestUser`".into()),
        };
        Ok(ZkSettings {
            root,
            settle: seconds("settleSeconds", self.settle_seconds, DEFAULT_SETTLE)?,
            session_timeout: positive_seconds(
                "sessionTimeoutSeconds",
                self.session_timeout_seconds,
                DEFAULT_SESSION_TIMEOUT,
            )?,
            timeout: positive_seconds("timeoutSeconds", self.timeout_seconds, DEFAULT_TIMEOUT)?,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ZookeeperDubboConfig, String> {
        let c: ZookeeperDubboConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.settings().map(|_| c)
    }

    #[test]
    fn minimal_and_full() {
        let c = parse("name: z\nconnect: 127.0.0.1:2181\n").unwrap();
        assert_eq!(c, ZookeeperDubboConfig::new("z", "127.0.0.1:2181"));
        let s = c.settings().unwrap();
        assert_eq!((s.root.as_str(), s.settle), ("dubbo", DEFAULT_SETTLE));
        let c = parse(
            "name: z\nconnect: a:1,b:2/chroot\nroot: dubbo-test\nsettleSeconds: 0.3\nsessionTimeoutSeconds: 4\n\
             timeoutSeconds: 1\ndigestUser: u\ndigestPasswordEnv: ZK_PW\nallowedInterfaces: [org.demo.Greeter]\n",
        )
        .unwrap();
        assert_eq!(c.settings().unwrap().settle, Duration::from_millis(300));
    }

    #[test]
    fn rejects_mistakes() {
        let base = "name: z\nconnect: 127.0.0.1:2181\n";
        for (extra, needle) in [
            ("password: x\n", "unknown field"),
            ("digestUser: u\n", "needs `digestPasswordFile`"),
            ("digestPasswordEnv: X\n", "need `digestUser`"),
            ("digestUser: 'a:b'\ndigestPasswordEnv: X\n", "must not contain ':'"),
            ("root: /dubbo\n", "invalid root"),
            ("timeoutSeconds: 0\n", "greater than 0"),
            ("settleSeconds: -2\n", "non-negative"),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
    }
}
