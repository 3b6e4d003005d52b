//! [`ZookeeperDubboAdapter`]: the `rpc` adapter for Dubbo providers registered in
//! ZooKeeper.
//!
//! **Drain** (`deregister`): create the persistent override configurator
//! `/dubbo/<interface>/configurators/<encoded override://ip:port/<interface>?category=configurators&disabled=true&dynamic=false&enabled=true>`
//! — what Dubbo admin's "disable provider" writes. Consumers subscribed to the interface
//! get a ZooKeeper notification and drop every provider URL at that `ip:port` from their
//! invoker lists. The provider's own ephemeral node is **not** touched: it belongs to the
//! provider's session, and the provider re-creates it whenever that session is re-established
//! (reconnect after expiry, restart), which would silently undo a drain done by deleting it.
//! The override is persistent and survives all of that.
//!
//! **Evidence** (`observe`, one `multiRead` round trip):
//! - a disabling override for `ip:port` exists → `Draining` until it has been in force,
//!   unchanged (same creation zxid), for the settle window, then `Drained`. Whether the
//!   provider node is present is reported but does not matter: consumers honour the override
//!   for whatever provider URL appears at that address, also one re-created after a
//!   session expiry.
//! - no override, provider node present → `Serving` (or `Draining` if a drain was asked
//!   and someone removed the override: the pod is offered again).
//! - no override, no provider node → `Registered` after a restore (waiting for the provider
//!   to register), otherwise `Drained` once that has held for the settle window.
//!
//! **Restore** (`register`): delete Sluice's override node. An override for the same
//! address written by someone else (another URL) is left alone and keeps `observe` at
//! `Registered`, saying which node still disables the pod.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, AdapterError, Capabilities, Observation, Result, Target, TrafficState};
use tracing::info;

use crate::common::{required_param, settled_observation, validate_name, SettleClocks};
use crate::zookeeper::client::{Snapshot, ZkConn};
use crate::zookeeper::config::{ZkSettings, ZookeeperDubboConfig};
use crate::zookeeper::dubbo::{parse_node, Paths};

/// Intent memory of targets not touched for this long is dropped.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The ZooKeeper / Dubbo (`rpc`) adapter.
#[derive(Debug)]
pub struct ZookeeperDubboAdapter {
    config: ZookeeperDubboConfig,
    settings: ZkSettings,
    conn: ZkConn,
    /// Per target: `true` after `deregister`, `false` after `register`.
    draining: Mutex<HashMap<String, (bool, Instant)>>,
    clocks: SettleClocks,
}

impl ZookeeperDubboAdapter {
    /// An adapter for one configured ZooKeeper ensemble; fails (permanently) on an invalid
    /// config. Does not connect: the first call does.
    pub fn new(config: ZookeeperDubboConfig) -> Result<Self> {
        let settings = config
            .settings()
            .map_err(|e| AdapterError::permanent(format!("rpc adapter '{}' (zookeeper): {e}", config.name)))?;
        let conn = ZkConn::new(
            config.connect.clone(),
            settings.session_timeout,
            settings.timeout,
            settings.digest.clone(),
        );
        Ok(ZookeeperDubboAdapter {
            config,
            settings,
            conn,
            draining: Mutex::new(HashMap::new()),
            clocks: SettleClocks::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ZookeeperDubboConfig {
        &self.config
    }

    /// The ZooKeeper paths for a target (its interface and Sluice's override node).
    pub fn paths(&self, target: &Target) -> Result<Paths> {
        let interface = required_param(target, "interface", &self.config.name, &self.config.allowed_interfaces)?;
        validate_name("interface", interface, false)?;
        Ok(Paths::new(&self.settings.root, interface, &target.addr()))
    }

    fn unknown_interface(&self, paths: &Paths) -> AdapterError {
        AdapterError::permanent(format!(
            "Dubbo interface node {} does not exist in {}: no provider or consumer ever registered it (check the \
             binding's `interface` and the adapter's `root`)",
            paths.interface,
            self.conn.describe()
        ))
    }

    fn set_draining(&self, paths: &Paths, draining: bool) {
        let mut map = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
        map.insert(paths.override_node.clone(), (draining, Instant::now()));
    }

    fn intent(&self, paths: &Paths) -> Option<bool> {
        let map = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&paths.override_node).map(|(d, _)| *d)
    }

    /// The observation for one snapshot (no I/O).
    fn assess(&self, paths: &Paths, addr: &str, snap: &Snapshot) -> Observation {
        let disabling: Vec<&String> = snap
            .configurators
            .iter()
            .filter(|name| parse_node(name).is_some_and(|u| u.disables(addr)))
            .collect();
        let providers: Vec<String> = snap
            .providers
            .iter()
            .filter_map(|name| parse_node(name))
            .filter(|u| u.address == addr)
            .map(|u| format!("{}://{}/{}", u.protocol, u.address, u.path))
            .collect();
        let cversion = snap
            .providers_cversion
            .map_or(String::new(), |v| format!(", providers cversion {v}"));
        let provider_text = if providers.is_empty() {
            format!("no provider node for {addr}{cversion}")
        } else {
            format!("provider node {} present{cversion}", providers.join(", "))
        };
        let key = &paths.override_node;
        let intent = self.intent(paths);
        if !disabling.is_empty() {
            let ours = snap.override_stat.as_ref();
            let foreign = disabling.len() - usize::from(ours.is_some());
            if intent == Some(false) {
                return Observation::new(
                    TrafficState::Registered,
                    format!(
                        "{} override(s) still disable {addr} in {}/configurators, {foreign} of them not written by \
                         Sluice (remove those in Dubbo admin); {provider_text}",
                        disabling.len(),
                        paths.interface
                    ),
                );
            }
            let czxid = ours.map_or(0, |s| s.czxid);
            let mut names: Vec<&str> = disabling.iter().map(|s| s.as_str()).collect();
            names.sort_unstable();
            let held = self.clocks.held_for(key, &format!("{czxid:x} {}", names.join(" ")));
            let honour = if providers.is_empty() {
                ""
            } else {
                " (consumers honour the override)"
            };
            let what = match ours {
                Some(s) => format!("override disabled=true for {addr} in force (czxid 0x{:x})", s.czxid),
                None => format!(
                    "{} override(s) disabling {addr} in force (not Sluice's)",
                    disabling.len()
                ),
            };
            return settled_observation(held, self.settings.settle, &format!("{what}; {provider_text}{honour}"));
        }
        if !providers.is_empty() {
            self.clocks.reset(key);
            if intent == Some(true) {
                return Observation::new(
                    TrafficState::Draining,
                    format!("the override for {addr} is gone (removed outside Sluice?) and {provider_text}: consumers send it work again"),
                );
            }
            return Observation::new(
                TrafficState::Serving,
                format!("{provider_text}; no override disables it"),
            );
        }
        if intent == Some(false) {
            self.clocks.reset(key);
            return Observation::new(
                TrafficState::Registered,
                format!("no override disables {addr}, but {provider_text}: waiting for the provider to register"),
            );
        }
        let held = self.clocks.held_for(key, "no provider");
        settled_observation(
            held,
            self.settings.settle,
            &format!("{provider_text} and no override: nothing offers it"),
        )
    }
}

#[async_trait::async_trait]
impl Adapter for ZookeeperDubboAdapter {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "rpc".into(),
            required_params: vec!["interface".into()],
            shared_reads: false,
        }
    }

    async fn register(&self, target: &Target) -> Result<()> {
        let paths = self.paths(target)?;
        self.set_draining(&paths, false);
        self.clocks.reset(&paths.override_node);
        if self.conn.delete(&paths.override_node).await? {
            info!(node = %paths.override_node, "Dubbo override removed; consumers take the provider back");
        } else if !self.conn.exists(&paths.interface).await? {
            return Err(self.unknown_interface(&paths));
        }
        Ok(())
    }

    async fn deregister(&self, target: &Target) -> Result<()> {
        let paths = self.paths(target)?;
        self.set_draining(&paths, true);
        let created = match self.conn.create(&paths.override_node).await? {
            Ok(created) => created,
            Err(_) => {
                // The configurators node is missing (no consumer subscribed yet).
                if !self.conn.exists(&paths.interface).await? {
                    // No provider or consumer ever registered the interface: nothing can
                    // route to this pod through it — already drained, as the contract says
                    // for never-registered targets. Nothing is created.
                    return Ok(());
                }
                self.conn.mkdir(&paths.configurators).await?;
                self.conn
                    .create(&paths.override_node)
                    .await?
                    .map_err(|e| self.conn.map(e, "create", &paths.override_node))?
            }
        };
        if created {
            info!(node = %paths.override_node, "Dubbo override disabled=true written");
        }
        Ok(())
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        let paths = self.paths(target)?;
        match self.conn.snapshot(&paths).await? {
            Some(snap) => Ok(self.assess(&paths, &target.addr(), &snap)),
            // Restoring into an interface nobody registered is a configuration problem;
            // while draining, an absent interface offers nothing.
            None if self.intent(&paths) != Some(false) => Ok(Observation::new(
                TrafficState::Drained,
                format!(
                    "interface node {} absent: nothing offers {}",
                    paths.interface,
                    target.addr()
                ),
            )),
            None => Err(self.unknown_interface(&paths)),
        }
    }

    async fn health(&self) -> Result<()> {
        let root = format!("/{}", self.settings.root);
        self.conn.exists(&root).await.map(drop)
    }
}
