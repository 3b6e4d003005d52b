//! [`EtcdAdapter`]: the `rpc` adapter for registries kept in etcd v3.
//!
//! **Drain** (`deregister`): delete the pod's key (go-micro / Kratos: every key under the
//! service whose value names the pod's address, in one transaction), or — custom layouts
//! with `disabledValueTemplate` — overwrite it with the disabled form, keeping its lease.
//! The deleted key-values are remembered in memory for the restore. A settle watch starts
//! at the revision after the delete (`etcd::watch`).
//!
//! **Evidence** (`observe`): a linearizable read of the key(s) plus the settle watch:
//! - entry present while draining → `Draining`: "re-added by lease L at revision N; the
//!   service re-registers itself" — the settle clock restarts once it is gone again;
//! - absent (or disabled) → `Draining` until it has stayed so for the settle window (the
//!   watch catches a re-add that came and went between polls), then `Drained`;
//! - present, not draining → `Serving` with the expected value, else `Registered`.
//!
//! **Restore** (`register`): nothing if the entry is already present (the service may have
//! re-registered itself). Else put back the remembered key-value — under its original
//! lease while that lease lives (the service's own keep-alive then owns the key), else under
//! a new lease of `leaseTtlSeconds` that *this gateway process* keeps alive, else without a
//! lease. With nothing remembered (gateway restart) the value is rebuilt from the preset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_adapter::{Adapter, AdapterError, Capabilities, Observation, Result, Target};
use tracing::info;

use crate::common::required_param;
use crate::etcd::client::{spawn_keepalive, EtcdConn, KeepAlive, Kv};
use crate::etcd::config::{EtcdConfig, EtcdSettings};
use crate::etcd::evidence;
use crate::etcd::layout::{Locate, Vars};
use crate::etcd::watch::{lock, Class, SettleWatch};

/// Memory of targets not touched for this long is dropped (a pod deleted for good).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The etcd (`rpc`) adapter.
#[derive(Debug)]
pub struct EtcdAdapter {
    config: EtcdConfig,
    settings: EtcdSettings,
    conn: Arc<EtcdConn>,
    memory: Mutex<HashMap<String, Entry>>,
}

/// What the adapter remembers about one target.
#[derive(Debug)]
struct Entry {
    draining: bool,
    remembered: Vec<Kv>,
    watch: Option<SettleWatch>,
    keepalive: Option<KeepAlive>,
    touched: Instant,
}

/// A target resolved against the layout.
struct Resolved<'t> {
    vars: Vars<'t>,
    locate: Locate,
    memory_key: String,
}

impl EtcdAdapter {
    /// An adapter for one configured etcd registry; fails (permanently) on an invalid
    /// config. Does not connect: the first call does.
    pub fn new(config: EtcdConfig) -> Result<Self> {
        let settings = config
            .settings()
            .map_err(|e| AdapterError::permanent(format!("rpc adapter '{}' (etcd): {e}", config.name)))?;
        let conn = Arc::new(EtcdConn::new(
            config.endpoints.clone(),
            settings.timeout,
            settings.credentials.clone(),
        ));
        Ok(EtcdAdapter {
            config,
            settings,
            conn,
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The key (grpc-go, custom, `key` override) or key prefix (go-micro, Kratos) where the
    /// target's entry lives.
    pub fn locate(&self, target: &Target) -> Result<Locate> {
        Ok(self.resolve(target)?.locate)
    }

    fn resolve<'t>(&self, target: &'t Target) -> Result<Resolved<'t>> {
        let service = required_param(target, "service", &self.config.name, &self.config.allowed_services)?;
        let vars = self.settings.layout.vars(service, target);
        let locate = self.settings.layout.locate(&vars, target.param("key"))?;
        let memory_key = format!("{locate:?} {}", target.addr());
        Ok(Resolved {
            vars,
            locate,
            memory_key,
        })
    }

    fn classify(&self, r: &Resolved<'_>, value: &[u8]) -> Class {
        let layout = &self.settings.layout;
        if layout.is_disabled(value, &r.vars) {
            Class::Disabled
        } else if matches!(r.locate, Locate::Exact(_)) || layout.is_pods(value, &r.vars) {
            Class::Enabled
        } else {
            Class::Other
        }
    }

    fn classifier(&self, r: &Resolved<'_>) -> impl Fn(&[u8]) -> Class + Send + 'static {
        let layout = self.settings.layout.clone();
        let target = r.vars.target.clone();
        let service = r.vars.service.to_string();
        let exact = matches!(r.locate, Locate::Exact(_));
        move |value: &[u8]| {
            let vars = layout.vars(&service, &target);
            if layout.is_disabled(value, &vars) {
                Class::Disabled
            } else if exact || layout.is_pods(value, &vars) {
                Class::Enabled
            } else {
                Class::Other
            }
        }
    }

    /// The pod's entries (enabled or disabled) and the revision of the read.
    async fn read(&self, r: &Resolved<'_>) -> Result<(Vec<Kv>, i64)> {
        let (kvs, revision) = match &r.locate {
            Locate::Exact(key) => self.conn.get(key, false).await?,
            Locate::Scan(prefix) => self.conn.get(prefix, true).await?,
        };
        let pods = kvs.into_iter().filter(|kv| self.classify(r, &kv.value) != Class::Other);
        Ok((pods.collect(), revision))
    }

    fn start_watch(&self, r: &Resolved<'_>, from_revision: i64) -> SettleWatch {
        let (key, prefix) = match &r.locate {
            Locate::Exact(key) => (key.clone(), false),
            Locate::Scan(prefix) => (prefix.clone(), true),
        };
        SettleWatch::start(self.conn.clone(), key, prefix, from_revision, self.classifier(r))
    }

    /// Runs `f` on the target's memory entry (created if absent), forgetting stale entries.
    fn with_entry<T>(&self, key: &str, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.retain(|_, e| e.keepalive.is_some() || e.touched.elapsed() < FORGET_AFTER);
        let entry = memory.entry(key.to_string()).or_insert_with(|| Entry {
            draining: false,
            remembered: Vec::new(),
            watch: None,
            keepalive: None,
            touched: Instant::now(),
        });
        entry.touched = Instant::now();
        f(entry)
    }

    fn place(r: &Resolved<'_>) -> String {
        match &r.locate {
            Locate::Exact(key) => format!("key {key}"),
            Locate::Scan(prefix) => format!("entry for {} under {prefix}", r.vars.target.addr()),
        }
    }

    /// Observation when the entry is absent or disabled: the settle rules, with the settle
    /// watch ensured (started, or restarted when it broke).
    fn settle(&self, r: &Resolved<'_>, disabled: bool, revision: i64) -> Observation {
        let settle = self.settings.settle;
        let state = (!settle.is_zero()).then(|| {
            self.with_entry(&r.memory_key, |e| {
                let broken = e.watch.as_ref().is_none_or(|w| w.snapshot().broken.is_some());
                if broken {
                    e.watch = Some(self.start_watch(r, revision + 1));
                }
                let watch = e.watch.as_ref().expect("watch just ensured");
                lock(&watch.state).saw_absent(revision);
                watch.snapshot()
            })
        });
        evidence::absent(&Self::place(r), disabled, revision, state.as_ref(), settle)
    }

    /// Picks the lease a restore puts the key under (see the module docs).
    async fn restore_lease(&self, r: &Resolved<'_>, remembered: &[Kv]) -> Result<i64> {
        if let Some(lease) = remembered.iter().map(|kv| kv.lease).find(|l| *l != 0) {
            if self.conn.lease_ttl(lease).await?.is_some() {
                return Ok(lease);
            }
        }
        let Some(ttl) = self.settings.lease_ttl else {
            return Ok(0);
        };
        let current = self.with_entry(&r.memory_key, |e| e.keepalive.as_ref().map(|k| k.lease));
        if let Some(lease) = current {
            if self.conn.lease_ttl(lease).await?.is_some() {
                return Ok(lease);
            }
        }
        let lease = self.conn.lease_grant(ttl).await?;
        let keepalive = spawn_keepalive(self.conn.clone(), lease, ttl);
        self.with_entry(&r.memory_key, |e| e.keepalive = Some(keepalive));
        info!(lease = %format!("{lease:x}"), ttl, "granted a lease kept alive by this gateway");
        Ok(lease)
    }
}

#[async_trait::async_trait]
impl Adapter for EtcdAdapter {
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
        let r = self.resolve(target)?;
        let remembered = self.with_entry(&r.memory_key, |e| {
            e.draining = false;
            e.watch = None;
            e.remembered.clone()
        });
        let (kvs, _) = self.read(&r).await?;
        if kvs.iter().any(|kv| self.classify(&r, &kv.value) == Class::Enabled) {
            return Ok(());
        }
        let layout = &self.settings.layout;
        let records: Vec<(String, Vec<u8>)> = if remembered.is_empty() {
            let value = layout.rebuild_value(&r.vars).map_err(AdapterError::permanent)?;
            vec![(layout.rebuild_key(&r.locate, &r.vars), value.into_bytes())]
        } else {
            remembered.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect()
        };
        // A key in its disabled form keeps the lease it has (the service's).
        let disabled_in_place = !kvs.is_empty();
        let lease = if disabled_in_place {
            0
        } else {
            self.restore_lease(&r, &remembered).await?
        };
        for (key, value) in &records {
            let revision = self.conn.put(key, value, lease, disabled_in_place).await?;
            info!(%key, revision, lease = %format!("{lease:x}"), "registry entry restored");
        }
        Ok(())
    }

    async fn deregister(&self, target: &Target) -> Result<()> {
        let r = self.resolve(target)?;
        let disabled = self.settings.layout.disabled_value(&r.vars);
        let (removed, revision) = match (&r.locate, disabled) {
            (Locate::Exact(key), None) => self.conn.delete_key(key).await?,
            (Locate::Exact(key), Some(disabled)) => {
                let (kvs, revision) = self.conn.get(key, false).await?;
                let live: Vec<Kv> = kvs
                    .into_iter()
                    .filter(|kv| self.classify(&r, &kv.value) == Class::Enabled)
                    .collect();
                if live.is_empty() {
                    (live, revision)
                } else {
                    let revision = self.conn.put(key, disabled.as_bytes(), 0, true).await?;
                    (live, revision)
                }
            }
            (Locate::Scan(_), _) => {
                let (kvs, revision) = self.read(&r).await?;
                let live: Vec<Kv> = kvs
                    .into_iter()
                    .filter(|kv| self.classify(&r, &kv.value) == Class::Enabled)
                    .collect();
                if live.is_empty() {
                    (live, revision)
                } else {
                    let keys: Vec<String> = live.iter().map(|kv| kv.key.clone()).collect();
                    (live, self.conn.delete_keys(&keys).await?)
                }
            }
        };
        let own_lease = self.with_entry(&r.memory_key, |e| {
            e.draining = true;
            let stale = e.watch.as_ref().is_none_or(|w| w.snapshot().broken.is_some());
            // No settle window, no watch: `observe` then trusts its read alone.
            if !self.settings.settle.is_zero() && (!removed.is_empty() || stale) {
                e.watch = Some(self.start_watch(&r, revision + 1));
            }
            if !removed.is_empty() {
                e.remembered = removed.clone();
            }
            e.keepalive.take().map(|k| k.lease)
        });
        if let Some(lease) = own_lease {
            // Our own lease (from an earlier restore) has nothing left to keep.
            let conn = self.conn.clone();
            tokio::spawn(async move { conn.lease_revoke(lease).await });
        }
        for kv in &removed {
            info!(key = %kv.key, revision, lease = %format!("{:x}", kv.lease), "registry entry taken out");
        }
        Ok(())
    }

    async fn observe(&self, target: &Target) -> Result<Observation> {
        let r = self.resolve(target)?;
        let (kvs, revision) = self.read(&r).await?;
        let enabled: Vec<&Kv> = kvs
            .iter()
            .filter(|kv| self.classify(&r, &kv.value) == Class::Enabled)
            .collect();
        if enabled.is_empty() {
            return Ok(self.settle(&r, !kvs.is_empty(), revision));
        }
        let draining = self.with_entry(&r.memory_key, |e| {
            if e.draining && !self.settings.settle.is_zero() {
                if e.watch.is_none() {
                    e.watch = Some(self.start_watch(&r, revision + 1));
                }
                if let Some(w) = &e.watch {
                    let mut state = lock(&w.state);
                    enabled.iter().for_each(|kv| state.saw_present(kv));
                }
            }
            e.draining
        });
        let kv = enabled[0];
        if draining {
            return Ok(evidence::readded(kv));
        }
        let layout = &self.settings.layout;
        let expected = enabled.iter().all(|kv| layout.is_expected(&kv.value, &r.vars));
        Ok(evidence::present(kv, expected))
    }

    async fn health(&self) -> Result<()> {
        self.conn.status().await
    }
}

impl EtcdAdapter {
    /// The configured settle window.
    pub fn settle_window(&self) -> Duration {
        self.settings.settle
    }
}
