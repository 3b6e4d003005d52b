//! [`NacosAdapter`]: the `rpc` adapter for Nacos 2.x, through its Open API v2.
//!
//! Nacos 2.x facts this relies on (from the published API docs and the 2.x server code):
//! `GET /nacos/v2/ns/instance` (detail) returns an instance whatever its `enabled` flag,
//! but without that flag; `GET /nacos/v2/ns/instance/list` — and what Nacos pushes to
//! subscribers — leaves disabled instances out; `PUT /nacos/v2/ns/instance` rebuilds the
//! instance's weight, `enabled` and metadata from the form, so an update must carry the
//! current weight and metadata or it resets them. The list call is made without `ip` /
//! `port`: in the list API those name a *subscriber* (Nacos 1.x UDP push), not a filter.
//!
//! **Drain** (`deregister`): read the detail, then `PUT enabled=false` (default) or
//! `weight=0` (`drainBy: weight`, the original weight kept in metadata
//! `sluice.dev/weight`), carrying the current weight and metadata.
//!
//! **Evidence** (`observe`): detail + list. Registered but not offered by the list
//! (disabled), listed with `enabled: false`, or weight 0 → `Draining` until that held for
//! the settle window, then `Drained`. Not registered at all → `Drained` (nothing offers
//! it) after the settle window, or `Registered` after a restore (the service registers
//! itself). Offered → `Serving` if healthy, else `Registered` (`Draining` if a drain was
//! asked: someone re-enabled it).
//!
//! **Restore** (`register`): `PUT enabled=true` with the original weight. An instance that
//! is not registered cannot be re-enabled: that is a retryable error until the service
//! registers itself (Nacos remembers the `enabled=false` metadata for a while after an
//! instance goes, so a pod that re-registers may still be disabled — the retry fixes it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_adapter::{Adapter, AdapterError, Capabilities, Observation, Result, Target, TrafficState};
use tracing::info;

use crate::common::{required_param, settled_observation, validate_name, SettleClocks};
use crate::nacos::client::NacosClient;
use crate::nacos::config::{DrainBy, NacosConfig, NacosSettings};
use crate::nacos::instance::{self, offered, Host, MissingService, Selection, Update};

/// Metadata key holding the weight a `drainBy: weight` drain replaced.
pub const WEIGHT_KEY: &str = "sluice.dev/weight";

const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The Nacos (`rpc`) adapter.
#[derive(Debug)]
pub struct NacosAdapter {
    config: NacosConfig,
    settings: NacosSettings,
    client: NacosClient,
    memory: Mutex<HashMap<String, Memo>>,
    clocks: SettleClocks,
}

/// What the adapter remembers per target.
#[derive(Debug, Clone, Copy)]
struct Memo {
    /// The last call: `Some(true)` a drain, `Some(false)` a restore.
    intent: Option<bool>,
    /// `ephemeral` as last seen in the instance list.
    ephemeral: Option<bool>,
    touched: Instant,
}

impl NacosAdapter {
    /// An adapter for one configured Nacos server; fails (permanently) on an invalid
    /// config. Does not connect: the first call does.
    pub fn new(config: NacosConfig) -> Result<Self> {
        let settings = config
            .settings()
            .map_err(|e| AdapterError::permanent(format!("rpc adapter '{}' (nacos): {e}", config.name)))?;
        Ok(NacosAdapter {
            client: NacosClient::new(settings.clone()),
            config,
            settings,
            memory: Mutex::new(HashMap::new()),
            clocks: SettleClocks::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NacosConfig {
        &self.config
    }

    fn select<'t>(&'t self, target: &'t Target) -> Result<Selection<'t>> {
        let c = &self.config;
        let service = required_param(target, "service", &c.name, &c.allowed_services)?;
        let pick = |key: &str, default: &'t str, allowed: &[String]| -> Result<&'t str> {
            match target.param(key) {
                Some(_) => required_param(target, key, &c.name, allowed),
                None => Ok(default),
            }
        };
        let group = pick("group", &self.settings.group, &c.allowed_groups)?;
        let namespace = pick("namespace", &self.settings.namespace, &c.allowed_namespaces)?;
        let cluster = target.param("cluster");
        if let Some(cluster) = cluster {
            validate_name("cluster", cluster, false)?;
        }
        let key = format!(
            "{namespace}/{group}@@{service}/{} {}",
            cluster.unwrap_or("-"),
            target.addr()
        );
        Ok(Selection {
            service,
            group,
            namespace,
            cluster,
            target,
            key,
        })
    }

    /// Updates and returns the target's memory: (intent, ephemeral).
    fn remember(&self, key: &str, draining: Option<bool>, ephemeral: Option<bool>) -> (Option<bool>, Option<bool>) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.retain(|_, m| m.touched.elapsed() < FORGET_AFTER);
        let memo = memory.entry(key.to_string()).or_insert(Memo {
            intent: None,
            ephemeral: None,
            touched: Instant::now(),
        });
        if draining.is_some() {
            memo.intent = draining;
        }
        if ephemeral.is_some() {
            memo.ephemeral = ephemeral;
        }
        memo.touched = Instant::now();
        (memo.intent, memo.ephemeral)
    }

    fn ephemeral(&self, s: &Selection<'_>, host: Option<&Host>) -> bool {
        let seen = host.and_then(|h| h.ephemeral);
        let (_, known) = self.remember(&s.key, None, seen);
        known.unwrap_or(self.settings.ephemeral)
    }

    fn settled(&self, s: &Selection<'_>, signature: &str, evidence: String) -> Observation {
        let held = self.clocks.held_for(&s.key, signature);
        settled_observation(held, self.settings.settle, &evidence)
    }
}

#[async_trait::async_trait]
impl Adapter for NacosAdapter {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "rpc".into(),
            required_params: vec!["service".into()],
            shared_reads: false,
        }
    }

    async fn register(&self, target: &Target) -> Result<()> {
        let s = self.select(target)?;
        self.remember(&s.key, Some(false), None);
        self.clocks.reset(&s.key);
        let Some(detail) = instance::detail(&self.client, &s, MissingService::Error).await? else {
            return Err(AdapterError::retryable(format!(
                "instance {} is not registered in '{}' on {} yet: the service registers itself, Sluice only \
                 re-enables it (will retry)",
                target.addr(),
                s.grouped(),
                self.client.describe()
            )));
        };
        let host = instance::listed(&self.client, &s).await?;
        let mut metadata = detail.metadata.clone();
        let saved = metadata.remove(WEIGHT_KEY);
        if offered(host.as_ref()) && saved.is_none() {
            return Ok(());
        }
        let weight = match self.config.drain_by {
            DrainBy::Enabled => detail.weight,
            DrainBy::Weight if detail.weight > 0.0 => detail.weight,
            DrainBy::Weight => saved
                .and_then(|w| w.as_str().and_then(|w| w.parse::<f64>().ok()))
                .filter(|w| *w > 0.0)
                .unwrap_or(self.settings.restore_weight),
        };
        let update = Update {
            enabled: true,
            weight,
            healthy: detail.healthy,
            ephemeral: self.ephemeral(&s, host.as_ref()),
            metadata: &metadata,
        };
        instance::update(&self.client, &s, &update).await?;
        info!(instance = %target.addr(), service = s.service, weight, "Nacos instance re-enabled");
        Ok(())
    }

    async fn deregister(&self, target: &Target) -> Result<()> {
        let s = self.select(target)?;
        self.remember(&s.key, Some(true), None);
        // A service that does not exist offers nothing: already drained (the contract's
        // "deregister tolerates never-registered").
        let Some(detail) = instance::detail(&self.client, &s, MissingService::Absent).await? else {
            return Ok(()); // never registered (or gone): nothing offers it
        };
        let host = instance::listed(&self.client, &s).await?;
        if !offered(host.as_ref()) {
            return Ok(());
        }
        let mut metadata = detail.metadata.clone();
        let (enabled, weight) = match self.config.drain_by {
            DrainBy::Enabled => (false, detail.weight),
            DrainBy::Weight => {
                metadata.insert(WEIGHT_KEY.into(), Value::String(detail.weight.to_string()));
                (true, 0.0)
            }
        };
        let update = Update {
            enabled,
            weight,
            healthy: detail.healthy,
            ephemeral: self.ephemeral(&s, host.as_ref()),
            metadata: &metadata,
        };
        instance::update(&self.client, &s, &update).await?;
        info!(instance = %target.addr(), service = s.service, by = ?self.config.drain_by, "Nacos instance taken out");
        Ok(())
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        let s = self.select(target)?;
        let (intent, _) = self.remember(&s.key, None, None);
        let (draining, restoring) = (intent == Some(true), intent == Some(false));
        let name = s.grouped();
        let addr = target.addr();
        let missing = if restoring {
            MissingService::Error
        } else {
            MissingService::Absent
        };
        let Some(detail) = instance::detail(&self.client, &s, missing).await? else {
            if restoring {
                return Ok(Observation::new(
                    TrafficState::Registered,
                    format!(
                        "instance {addr} is not registered in '{name}': waiting for the service to register itself"
                    ),
                ));
            }
            return Ok(self.settled(
                &s,
                "absent",
                format!("instance {addr} is not registered in '{name}': nothing offers it"),
            ));
        };
        let host = instance::listed(&self.client, &s).await?;
        if offered(host.as_ref()) {
            self.clocks.reset(&s.key);
            let h = host.expect("offered implies listed");
            let listed = format!(
                "{addr} listed in '{name}': enabled=true weight={} healthy={}",
                h.weight, h.healthy
            );
            return Ok(if draining {
                Observation::new(
                    TrafficState::Draining,
                    format!("{listed}: still offered (re-enabled outside Sluice, or the update has not applied yet)"),
                )
            } else if h.healthy {
                Observation::new(TrafficState::Serving, listed)
            } else {
                Observation::new(
                    TrafficState::Registered,
                    format!("{listed}: consumers skip unhealthy instances"),
                )
            });
        }
        let (signature, why) = match &host {
            None => (
                "unlisted",
                "/instance/list does not offer it (disabled: Nacos 2.x lists enabled instances only)".to_string(),
            ),
            Some(h) if !h.enabled => ("disabled", "listed with enabled=false".to_string()),
            Some(_) => (
                "weight0",
                "listed with weight=0: Nacos clients never pick it".to_string(),
            ),
        };
        let evidence = format!(
            "instance {addr} registered in '{name}' (weight {}, healthy={}) but {why}",
            detail.weight, detail.healthy
        );
        if restoring {
            return Ok(Observation::new(
                TrafficState::Registered,
                format!("{evidence}; re-enable not visible yet"),
            ));
        }
        Ok(self.settled(&s, signature, evidence))
    }

    async fn health(&self) -> Result<()> {
        instance::health(&self.client).await
    }
}
