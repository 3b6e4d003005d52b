//! Background loops that keep the backends true to the record:
//!
//! - **Drift repair** ([`resync_loop`]): every bound pod is observed again about every
//!   `engine.resyncSeconds`, jittered and spread evenly over the interval (the spread is
//!   the rate limit: 100,000 pods over 300 s is ~330 pods a second, each adapter within
//!   its call limit). A serving pod whose backend lost it (an HAProxy reload drops runtime
//!   servers, a registry edited by hand) is registered again; a drained pod found serving
//!   is taken out again; each correction is an Event.
//! - **Adapter health** ([`health_loop`]): when an adapter recovers, the pods it serves
//!   are observed again at once.
//! - **Orphan sweep** ([`orphan_loop`]): adapters that can list what they manage
//!   ([`sluice_adapter::Adapter::list`]) are asked for their entries; an entry no pod
//!   claims — no pod's ledger records it, and no bound pod with its address is selected
//!   for it — in two sweeps in a row is drained (deregister, then verified), with an Event
//!   on the bindings that name its scope. Only while every cluster is synced and healthy:
//!   a pod the gateway cannot see is never taken for gone.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_adapter::{Listed, PodRef, Target, TrafficState};
use tracing::{info, warn};

use super::error::bounded;
use super::Engine;
use crate::model::{PodKey, PodView, TargetId};

/// Whether the gateway acts on a pod at all: a binding selects it or it carries Sluice's
/// record or finalizers.
fn bound(engine: &Engine, p: &PodView) -> bool {
    p.ledger_annotation.is_some() || p.holds_sluice_finalizer() || !engine.bindings_for(p).is_empty()
}

/// Drift repair: see the module docs.
pub async fn resync_loop(engine: Arc<Engine>) {
    let interval = engine.cfg.resync_seconds;
    if interval == 0 {
        return;
    }
    loop {
        engine.prune_budgets();
        let jitter = 0.9 + rand::random::<f64>() * 0.2;
        let period = Duration::from_secs_f64(interval as f64 * jitter);
        let keys: Vec<PodKey> = engine
            .pods
            .iter()
            .filter(|p| engine.clusters.get(&p.cluster).is_some_and(|c| c.live()) && bound(&engine, p))
            .map(|p| p.key().clone())
            .collect();
        if keys.is_empty() {
            tokio::time::sleep(period).await;
            continue;
        }
        let gap = period / keys.len() as u32;
        for k in keys {
            tokio::time::sleep(gap).await;
            engine.kick_forced(k);
        }
    }
}

/// Adapter health: see the module docs.
pub async fn health_loop(engine: Arc<Engine>) {
    let every = Duration::from_secs(engine.cfg.adapter_health_seconds.max(1));
    let mut down: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::time::sleep(every).await;
        for (name, adapter) in &engine.adapters {
            let ok = bounded(name, engine.cfg.call_timeout(), adapter.health()).await;
            match ok {
                Err(e) => {
                    if down.insert(name.clone()) {
                        warn!(adapter = %name, error = %e, "Adapter unhealthy.");
                    }
                }
                Ok(()) if down.remove(name) => {
                    info!(adapter = %name, "Adapter healthy again; observing its pods again.");
                    let keys: Vec<PodKey> = engine
                        .pods
                        .iter()
                        .filter(|p| uses(&engine, p, name))
                        .map(|p| p.key().clone())
                        .collect();
                    for k in keys {
                        engine.kick_forced(k);
                    }
                }
                Ok(()) => {}
            }
        }
    }
}

/// Whether a pod has a target on adapter instance `name`.
fn uses(engine: &Engine, p: &PodView, name: &str) -> bool {
    p.ledger().is_ok_and(|l| l.iter().any(|e| e.adapter == name))
        || engine
            .bindings_for(p)
            .iter()
            .any(|b| b.targets.iter().any(|t| t.adapter.name() == name))
}

/// Orphan sweep: see the module docs.
pub async fn orphan_loop(engine: Arc<Engine>) {
    let interval = engine.cfg.orphan_sweep_seconds;
    if interval == 0 {
        return;
    }
    let mut suspects: HashSet<TargetId> = HashSet::new();
    let draining: Arc<dashmap::DashSet<TargetId>> = Arc::default();
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if !engine.authority.may_write() || engine.authority.paused() {
            // Only the leader sweeps, and not while paused.
            suspects.clear();
            continue;
        }
        if !engine.clusters.values().all(|c| c.live()) {
            // A pod we cannot see is not a pod that is gone.
            suspects.clear();
            continue;
        }
        let orphans = sweep(&engine).await;
        let now: HashSet<TargetId> = orphans.iter().map(|(id, _)| id.clone()).collect();
        for (id, listed) in orphans {
            if suspects.contains(&id) && draining.insert(id.clone()) {
                let engine = engine.clone();
                let draining = draining.clone();
                tokio::spawn(async move {
                    drain_orphan(&engine, &id, &listed).await;
                    draining.remove(&id);
                });
            }
        }
        suspects = now;
    }
}

/// One sweep: the listed entries no pod claims.
pub async fn sweep(engine: &Engine) -> Vec<(TargetId, Listed)> {
    let mut scopes: BTreeSet<(String, BTreeMap<String, String>)> = BTreeSet::new();
    for b in engine.bindings.iter() {
        if let Some(b) = b.valid() {
            for t in &b.targets {
                scopes.insert((t.adapter.name().to_string(), t.params.clone()));
            }
        }
    }
    let mut recorded: HashSet<TargetId> = HashSet::new();
    for p in engine.pods.iter() {
        if let Ok(l) = p.ledger() {
            for e in l {
                scopes.insert((e.adapter.clone(), e.params.clone()));
                recorded.insert(e.id());
            }
        }
    }
    // An EndpointDrain record claims its address in its targets.
    for e in engine.endpoints.iter() {
        let (Ok(ip), Ok(port)) = (e.spec.address.parse(), u16::try_from(e.spec.port)) else {
            continue;
        };
        for t in &e.spec.targets {
            scopes.insert((t.adapter.clone(), t.params.clone()));
            recorded.insert(TargetId {
                adapter: t.adapter.clone(),
                params: t.params.clone(),
                ip,
                port,
            });
        }
    }
    let mut out = Vec::new();
    for (name, params) in scopes {
        let Some(adapter) = engine.adapters.get(&name) else {
            continue;
        };
        let listed = match bounded(&name, engine.cfg.call_timeout(), adapter.list(&params)).await {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                warn!(adapter = %name, error = %e, "Orphan sweep: could not list.");
                continue;
            }
        };
        for entry in listed {
            let id = TargetId {
                adapter: name.clone(),
                params: entry.params.clone(),
                ip: entry.ip,
                port: entry.port,
            };
            // A bound pod selected for the address may not have recorded it yet.
            if recorded.contains(&id) || !owners(engine, &id).is_empty() {
                continue;
            }
            out.push((id, entry));
        }
    }
    out
}

/// The pods that record the entry in their ledger or are selected for it now.
fn owners(engine: &Engine, id: &TargetId) -> Vec<crate::model::PodKey> {
    engine
        .pods
        .iter()
        .filter(|p| {
            p.ledger().is_ok_and(|l| l.iter().any(|e| &e.id() == id))
                || (p.ip == Some(id.ip)
                    && engine.bindings_for(p).iter().any(|b| {
                        b.port == id.port
                            && b.targets
                                .iter()
                                .any(|t| t.adapter.name() == id.adapter && t.params == id.params)
                    }))
        })
        .map(|p| p.key().clone())
        .collect()
}

/// Deregisters an orphan and verifies it drained (within the default deadline). Stops as
/// soon as a pod owns the address again (a new pod may get the same IP): that pod is
/// observed again at once, so what this drain took out is put back.
async fn drain_orphan(engine: &Arc<Engine>, id: &TargetId, listed: &Listed) {
    let Some(adapter) = engine.adapters.get(&id.adapter) else {
        return;
    };
    let target = Target {
        pod: PodRef {
            cluster: String::new(),
            namespace: String::new(),
            name: "orphan".into(),
            uid: String::new(),
        },
        ip: id.ip,
        port: id.port,
        params: id.params.clone(),
    };
    warn!(target = %id, evidence = %listed.evidence, "Orphan: no pod claims this registration; draining it.");
    let deadline = Instant::now() + Duration::from_secs(engine.cfg.default_deadline_seconds);
    let timeout = engine.cfg.call_timeout();
    let mut outcome = format!("not verified drained within {}s", engine.cfg.default_deadline_seconds);
    let mut call_deregister = true;
    while Instant::now() < deadline {
        let owners = owners(engine, id);
        if !owners.is_empty() {
            outcome = "stopped: a pod owns this address again (it is observed and registered again)".into();
            for key in owners {
                engine.kick_forced(key);
            }
            break;
        }
        if !engine.authority.may_write() || engine.authority.stopping() {
            outcome = format!("stopped: this gateway is {}", engine.authority.describe());
            break;
        }
        if call_deregister {
            let _permit = engine.permit(&id.adapter).await;
            // Asked again after the wait for the permit, right before the call.
            let Some(left) = engine.authority.remaining().or(Some(timeout)).filter(|l| !l.is_zero()) else {
                outcome = format!("stopped: this gateway is {}", engine.authority.describe());
                break;
            };
            let _in_flight = super::InFlight::new(&engine.in_flight);
            let timeout = timeout.min(left);
            engine.adapter_writes.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = bounded(&id.adapter, timeout, adapter.deregister(&target)).await {
                warn!(target = %id, error = %e, "Orphan sweep: deregister failed; retrying.");
            }
        }
        let observed = {
            let _permit = engine.permit(&id.adapter).await;
            bounded(&id.adapter, timeout, adapter.observe(&target)).await
        };
        match observed {
            Ok(o) if o.state == TrafficState::Drained => {
                outcome = format!("verified drained: {}", o.evidence);
                break;
            }
            Ok(o) => call_deregister = o.advance || o.state != TrafficState::Draining,
            Err(_) => call_deregister = true,
        }
        tokio::time::sleep(engine.cfg.poll_interval().max(Duration::from_millis(50))).await;
    }
    let note = format!(
        "{id} was registered with no pod claiming it (a finalizer removed by hand, or a drain released at its \
         deadline; listed as: {}); Sluice deregistered it: {outcome}",
        listed.evidence
    );
    info!(target = %id, %outcome, "Orphan drained.");
    for b in engine.bindings.iter() {
        let Some(binding) = b.valid() else { continue };
        if !binding
            .targets
            .iter()
            .any(|t| t.adapter.name() == id.adapter && t.params == id.params)
        {
            continue;
        }
        let Some(cluster) = engine.clusters.get(&binding.cluster) else {
            continue;
        };
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("sluice.dev/v1alpha1".into()),
            kind: Some("TrafficBinding".into()),
            namespace: Some(binding.namespace.clone()),
            name: Some(binding.name.clone()),
            ..Default::default()
        };
        cluster
            .writer
            .event(&reference, true, "OrphanDrained", "Sweep", note.clone())
            .await;
    }
}
