//! One task per cluster and resource: kube-runtime watchers over pods (all namespaces) and
//! TrafficBindings, feeding the engine.
//!
//! Safety rule: nothing here ever causes an adapter call because an object *disappeared*.
//! A failing pod watch freezes the cluster's pods (no adapter call, no write) and is
//! started again from a full list; the pods are unfrozen only once that list is complete
//! — the watch has really resumed, not merely the API server answering. The relist
//! replaces the cluster's pods atomically. A pod with registrations cannot disappear
//! unnoticed: the ledger guard finalizer holds it until they are drained.
//!
//! Bindings are watched as raw objects and decoded one by one, so a TrafficBinding that
//! does not decode is reported invalid on its own status and stops nothing else.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use serde_json::json;
use sluice_adapter::Adapter;
use tracing::{error, info, warn};

use crate::binding::TrafficBinding;
use crate::engine::{ClusterHandle, Engine};
use crate::model::{resolve, BindingKey, BindingState, InvalidBinding, PodKey, PodView, Selector};

/// Backoff between watch restarts: 0.5 s doubling to 30 s, reset by a complete list.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((500u64 << failures.min(6)).min(30_000))
}

/// Watches pods of one cluster until the task is dropped. `synced` is notified after the
/// first complete list.
pub async fn watch_pods(
    engine: Arc<Engine>,
    cluster: Arc<ClusterHandle>,
    client: Client,
    synced: Arc<tokio::sync::Notify>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut first = true;
    let mut failures = 0u32;
    loop {
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        let mut buffer: Vec<PodView> = Vec::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(p)) => buffer.extend(PodView::from_pod(&cluster.name, &p)),
                Ok(Event::InitDone) => {
                    let fresh: HashSet<PodKey> = buffer.iter().map(PodView::key).collect();
                    let gone: Vec<PodKey> = engine
                        .pods
                        .iter()
                        .filter(|p| p.cluster == cluster.name && !fresh.contains(p.key()))
                        .map(|p| p.key().clone())
                        .collect();
                    for k in gone {
                        engine.forget(&k);
                    }
                    let mut changed = Vec::new();
                    for v in buffer.drain(..) {
                        let key = v.key();
                        if engine.observe_pod(v) {
                            changed.push(key);
                        }
                    }
                    failures = 0;
                    if !cluster.healthy.swap(true, Ordering::SeqCst) {
                        info!(cluster = %cluster.name, "Pod watch (re)synced; the cluster's pods are live.");
                    }
                    if first {
                        first = false;
                        synced.notify_one();
                    } else {
                        // Back from an outage: whatever changed meanwhile is looked at.
                        for k in changed {
                            engine.kick(k);
                        }
                    }
                }
                Ok(Event::Apply(p)) => {
                    if let Some(v) = PodView::from_pod(&cluster.name, &p) {
                        let key = v.key();
                        if engine.observe_pod(v) {
                            engine.kick(key);
                        }
                    }
                }
                Ok(Event::Delete(p)) => {
                    // A pod really deleted: it carried no finalizer of ours any more (the
                    // ledger guard holds every pod with registrations). Forget it.
                    if let Some(v) = PodView::from_pod(&cluster.name, &p) {
                        engine.forget(&v.key());
                    }
                }
                Err(e) => {
                    if cluster.healthy.swap(false, Ordering::SeqCst) {
                        error!(cluster = %cluster.name, error = %e,
                            "Pod watch failed; freezing this cluster's pods until a complete list.");
                    }
                    break;
                }
            }
        }
        cluster.healthy.store(false, Ordering::SeqCst);
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// Watches TrafficBindings of one cluster, resolving each against the adapters and
/// reporting invalid ones on their status and as Events.
pub async fn watch_bindings(
    engine: Arc<Engine>,
    cluster: Arc<ClusterHandle>,
    client: Client,
    adapters: BTreeMap<String, Arc<dyn Adapter>>,
    synced: Arc<tokio::sync::Notify>,
) {
    let resource = ApiResource::erase::<TrafficBinding>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut first = true;
    let mut failures = 0u32;
    loop {
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        let mut buffer = Vec::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(b)) => buffer.push(b),
                Ok(Event::InitDone) => {
                    let names: HashSet<BindingKey> = buffer.iter().map(|b| key(&cluster.name, b)).collect();
                    let removed: Vec<BindingKey> = engine
                        .bindings
                        .iter()
                        .filter(|b| b.key().0 == cluster.name && !names.contains(b.key()))
                        .map(|b| b.key().clone())
                        .collect();
                    for k in removed {
                        let before = engine.bindings.remove(&k).map(|(_, v)| v);
                        engine.kick_binding(&k, before.as_ref());
                    }
                    for b in std::mem::take(&mut buffer) {
                        apply_binding(&engine, &cluster, &client, &resource, &adapters, &b).await;
                    }
                    failures = 0;
                    if first {
                        first = false;
                        synced.notify_one();
                    }
                }
                Ok(Event::Apply(b)) => {
                    apply_binding(&engine, &cluster, &client, &resource, &adapters, &b).await;
                }
                Ok(Event::Delete(b)) => {
                    // The pods it registered are drained from its targets by their workers
                    // (the ledger knows them); nothing is released unverified.
                    let k = key(&cluster.name, &b);
                    let before = engine.bindings.remove(&k).map(|(_, v)| v);
                    warn!(cluster = %cluster.name, binding = %k.2, "TrafficBinding deleted.");
                    engine.kick_binding(&k, before.as_ref());
                }
                Err(e) => {
                    warn!(cluster = %cluster.name, error = %e, "TrafficBinding watch failed; listing again.");
                    break;
                }
            }
        }
        failures += 1;
        tokio::time::sleep(backoff(failures)).await;
    }
}

fn key(cluster: &str, b: &DynamicObject) -> BindingKey {
    (
        cluster.to_string(),
        b.metadata.namespace.clone().unwrap_or_default(),
        b.metadata.name.clone().unwrap_or_default(),
    )
}

/// Decodes and resolves one binding; the error names the field.
fn decode(
    cluster: &str,
    raw: &DynamicObject,
    adapters: &BTreeMap<String, Arc<dyn Adapter>>,
    default_deadline: u64,
) -> Result<crate::model::Binding, (Option<Selector>, String)> {
    let value = serde_json::to_value(raw).map_err(|e| (None, e.to_string()))?;
    let tb: TrafficBinding = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (None, format!("{path}: {}", e.into_inner()))
    })?;
    let selector = Selector::compile(&tb.spec.selector).ok();
    resolve(cluster, &tb, adapters, default_deadline).map_err(|why| (selector, why))
}

async fn apply_binding(
    engine: &Arc<Engine>,
    cluster: &ClusterHandle,
    client: &Client,
    resource: &ApiResource,
    adapters: &BTreeMap<String, Arc<dyn Adapter>>,
    b: &DynamicObject,
) {
    let k = key(&cluster.name, b);
    let state = match decode(&cluster.name, b, adapters, engine.cfg.default_deadline_seconds) {
        Ok(resolved) => BindingState::Valid(resolved),
        Err((selector, reason)) => {
            warn!(cluster = %cluster.name, binding = %k.2, problem = %reason, "Invalid TrafficBinding.");
            BindingState::Invalid(InvalidBinding { selector, reason })
        }
    };
    let (valid, reason, message) = match &state {
        BindingState::Valid(_) => (
            true,
            "Resolved",
            "every target names a configured adapter instance".to_string(),
        ),
        BindingState::Invalid(i) => (false, "Invalid", i.reason.clone()),
    };
    let before = engine.bindings.insert(k.clone(), state.clone());
    engine.kick_binding(&k, before.as_ref());

    let generation = b.metadata.generation;
    let current = b
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(|cs| cs.as_array()?.iter().find(|c| c["type"] == "Valid").cloned());
    let status_word = if valid { "True" } else { "False" };
    if current.is_some_and(|c| {
        c["status"] == status_word && c["message"] == message && c["observedGeneration"].as_i64() == generation
    }) {
        return;
    }
    let matched: Vec<PodView> = engine
        .pods
        .iter()
        .filter(|p| p.cluster == k.0 && p.namespace == k.1 && crate::engine::selects(&state, p))
        .map(|p| p.clone())
        .collect();
    let missing: Vec<String> = matched.iter().filter(|p| !p.has_gate).map(|p| p.name.clone()).collect();
    let cond = Condition {
        type_: "Valid".into(),
        status: status_word.into(),
        reason: reason.into(),
        message: message.clone(),
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    };
    let patch = json!({"status": {"conditions": [cond], "observedGeneration": generation,
                                  "matchedPods": matched.len(), "podsMissingGate": missing}});
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &k.1, resource);
    if let Err(e) = api
        .patch_status(&k.2, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(binding = %k.2, error = %e, "Could not write TrafficBinding status.");
    }
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("sluice.dev/v1alpha1".into()),
        kind: Some("TrafficBinding".into()),
        namespace: Some(k.1.clone()),
        name: Some(k.2.clone()),
        uid: b.metadata.uid.clone(),
        ..Default::default()
    };
    if !valid {
        cluster
            .writer
            .event(&reference, true, "InvalidBinding", "Validate", message)
            .await;
    }
    for p in &missing {
        cluster
            .writer
            .event(
                &reference,
                true,
                "PodMissingReadinessGate",
                "Validate",
                format!("pod {p} matches but lacks readinessGate sluice.dev/traffic-ready"),
            )
            .await;
    }
}
