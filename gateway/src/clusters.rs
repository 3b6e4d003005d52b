//! One task per cluster and resource: kube-runtime watchers over pods (all namespaces) and
//! TrafficBindings, feeding the engine.
//!
//! Safety rule: nothing here ever causes an adapter call because an object *disappeared*.
//! A failing watch marks the cluster unhealthy, which freezes its pods in the engine until
//! the watch has listed again; a relist replaces the cluster's pods atomically.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;
use sluice_adapter::Adapter;
use tracing::{error, info, warn};

use crate::binding::TrafficBinding;
use crate::engine::{ClusterHandle, Engine};
use crate::model::{resolve, PodKey, PodView};

/// Watches pods of one cluster until the task is dropped.
pub async fn watch_pods(
    engine: Arc<Engine>,
    cluster: Arc<ClusterHandle>,
    client: Client,
    pods_synced: Arc<tokio::sync::Notify>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: Vec<PodView> = Vec::new();
    let mut first = true;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(p)) => buffer.extend(PodView::from_pod(&cluster.name, &p)),
            Ok(Event::InitDone) => {
                let fresh: HashSet<PodKey> = buffer.iter().map(PodView::key).collect();
                engine
                    .pods
                    .retain(|k, _| k.cluster != cluster.name || fresh.contains(k));
                for v in buffer.drain(..) {
                    engine.pods.insert(v.key(), v);
                }
                if !cluster.healthy.swap(true, Ordering::SeqCst) {
                    info!(cluster = %cluster.name, "Pod watch (re)synced.");
                }
                if first {
                    first = false;
                    pods_synced.notify_one();
                }
                engine.kick_all();
            }
            Ok(Event::Apply(p)) => {
                if let Some(v) = PodView::from_pod(&cluster.name, &p) {
                    let key = v.key();
                    let changed = engine.pods.get(&key).is_none_or(|old| *old != v);
                    engine.pods.insert(key.clone(), v);
                    cluster.healthy.store(true, Ordering::SeqCst);
                    if changed {
                        engine.kick(key);
                    }
                }
            }
            Ok(Event::Delete(p)) => {
                // A pod really deleted: it carried no finalizer of ours any more. Forget it;
                // there is nothing to deregister.
                if let Some(v) = PodView::from_pod(&cluster.name, &p) {
                    engine.forget(&v.key());
                }
            }
            Err(e) => {
                if cluster.healthy.swap(false, Ordering::SeqCst) {
                    error!(cluster = %cluster.name, error = %e, "Pod watch failed; freezing this cluster's pods until it recovers.");
                }
            }
        }
    }
}

/// While the cluster's pods are frozen, probes the API server once a second; when it
/// answers again the pods are unfrozen. The pod watch resumes from its last
/// resourceVersion (or relists after a 410), so nothing that happened meanwhile is lost —
/// and a quiet cluster sends no event that could unfreeze it otherwise.
pub async fn probe_health(cluster: Arc<ClusterHandle>, client: Client) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if cluster.healthy.load(Ordering::SeqCst) || !cluster.synced.load(Ordering::SeqCst) {
            continue;
        }
        if client.apiserver_version().await.is_ok() && !cluster.healthy.swap(true, Ordering::SeqCst) {
            info!(cluster = %cluster.name, "API server reachable again; unfreezing pods.");
        }
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
    let api: Api<TrafficBinding> = Api::all(client.clone());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer = Vec::new();
    let mut first = true;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(b)) => buffer.push(b),
            Ok(Event::InitDone) => {
                let names: HashSet<(String, String, String)> = buffer.iter().map(|b| key(&cluster.name, b)).collect();
                engine.bindings.retain(|k, _| k.0 != cluster.name || names.contains(k));
                for b in std::mem::take(&mut buffer) {
                    apply_binding(&engine, &cluster, &client, &adapters, &b).await;
                }
                if first {
                    first = false;
                    synced.notify_one();
                }
                engine.kick_all();
            }
            Ok(Event::Apply(b)) => {
                apply_binding(&engine, &cluster, &client, &adapters, &b).await;
                engine.kick_all();
            }
            Ok(Event::Delete(b)) => {
                // Pods keep their finalizers: the engine reports them as blocked rather than
                // releasing anything without verification.
                engine.bindings.remove(&key(&cluster.name, &b));
                warn!(cluster = %cluster.name, binding = ?b.metadata.name, "TrafficBinding deleted.");
                engine.kick_all();
            }
            Err(e) => warn!(cluster = %cluster.name, error = %e, "TrafficBinding watch failed; retrying."),
        }
    }
}

fn key(cluster: &str, b: &TrafficBinding) -> (String, String, String) {
    (
        cluster.to_string(),
        b.metadata.namespace.clone().unwrap_or_default(),
        b.metadata.name.clone().unwrap_or_default(),
    )
}

async fn apply_binding(
    engine: &Engine,
    cluster: &ClusterHandle,
    client: &Client,
    adapters: &BTreeMap<String, Arc<dyn Adapter>>,
    b: &TrafficBinding,
) {
    let k = key(&cluster.name, b);
    let (valid, reason, message) = match resolve(&cluster.name, b, adapters, engine.cfg.default_deadline_seconds) {
        Ok(resolved) => {
            engine.bindings.insert(k.clone(), resolved);
            (
                true,
                "Resolved",
                "every target names a configured adapter instance".to_string(),
            )
        }
        Err(why) => {
            engine.bindings.remove(&k);
            warn!(cluster = %cluster.name, binding = %k.2, problem = %why, "Invalid TrafficBinding.");
            (false, "Invalid", why)
        }
    };
    let generation = b.metadata.generation;
    let current = b
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"));
    let status_word = if valid { "True" } else { "False" };
    if current.is_some_and(|c| c.status == status_word && c.message == message && c.observed_generation == generation) {
        return;
    }
    let resolved = engine.bindings.get(&k).map(|b| b.clone());
    let matched: Vec<PodView> = match &resolved {
        Some(rb) => engine
            .pods
            .iter()
            .filter(|p| rb.matches(p))
            .map(|p| p.clone())
            .collect(),
        None => Vec::new(),
    };
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
    let api: Api<TrafficBinding> = Api::namespaced(client.clone(), &k.1);
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
