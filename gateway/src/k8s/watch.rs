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

/// A watch failure a person must fix, in one line naming the cluster and what to do (a
/// missing CRD, a missing permission, rejected credentials); `None` for what retrying
/// fixes (an outage, a timeout).
pub fn explain(cluster: &str, resource: &str, e: &watcher::Error) -> Option<String> {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.as_ref(),
        watcher::Error::WatchError(s) => s.as_ref(),
        _ => return None,
    };
    match status.code {
        404 if resource == "trafficbindings" => Some(format!(
            "cluster {cluster}: the TrafficBinding CRD is not installed (trafficbindings.sluice.dev not found): \
             run `sluice crd | kubectl apply -f -`, or `kubectl apply -k deploy/`"
        )),
        403 => Some(format!(
            "cluster {cluster}: the gateway may not list and watch {resource} in all namespaces: grant it the \
             rules of deploy/rbac.yaml (the API server said: {})",
            status.message
        )),
        401 => Some(format!(
            "cluster {cluster}: the API server rejects the gateway's credentials (401): check its kubeconfig or \
             service account token"
        )),
        _ => None,
    }
}

/// Records (and logs, once per change) what keeps the cluster from syncing, or that it is
/// gone.
fn set_problem(cluster: &ClusterHandle, problem: Option<String>) {
    let mut slot = cluster.problem.lock().unwrap_or_else(|e| e.into_inner());
    if *slot != problem {
        match &problem {
            Some(p) => error!("{p}"),
            None => info!(cluster = %cluster.name, "The problem that kept the cluster from syncing is gone."),
        }
        *slot = problem;
    }
}

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
            if matches!(ev, Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone)) {
                engine.metrics.watch_event(&cluster.name);
            }
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
                    drop(fresh);
                    let mut changed = Vec::new();
                    // Taken, not drained: a drained Vec keeps its capacity (a view per pod
                    // of the whole list) for the watch's life.
                    for v in std::mem::take(&mut buffer) {
                        let key = v.key();
                        if engine.observe_pod(v) {
                            changed.push(key);
                        }
                    }
                    failures = 0;
                    set_problem(&cluster, None);
                    engine
                        .metrics
                        .relists
                        .get_or_create(&crate::metrics::ClusterLabels {
                            cluster: cluster.name.clone(),
                        })
                        .inc();
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
                    let problem = explain(&cluster.name, "pods", &e);
                    if cluster.healthy.swap(false, Ordering::SeqCst) && problem.is_none() {
                        error!(cluster = %cluster.name, error = %e,
                            "Pod watch failed; freezing this cluster's pods until a complete list.");
                    }
                    if problem.is_some() {
                        set_problem(&cluster, problem);
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
                    set_problem(&cluster, None);
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
                    match explain(&cluster.name, "trafficbindings", &e) {
                        Some(problem) => set_problem(&cluster, Some(problem)),
                        None => {
                            warn!(cluster = %cluster.name, error = %e, "TrafficBinding watch failed; listing again.")
                        }
                    }
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
    let decoded = decode(&cluster.name, b, adapters, engine.cfg.default_deadline_seconds).and_then(|resolved| {
        // Tenant isolation: a namespace names only the backends its tenants rule allows.
        let Some(t) = engine.tenancy.get() else {
            return Ok(resolved);
        };
        let ns = b.metadata.namespace.as_deref().unwrap_or("");
        for (i, target) in resolved.targets.iter().enumerate() {
            if let Err(why) = t.check(ns, target.adapter.name(), &target.params) {
                return Err((Some(resolved.selector.clone()), format!("targets[{i}]: {why}")));
            }
        }
        Ok(resolved)
    });
    let state = match decoded {
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
    // Only the leader writes (a standby's view is the same; the leader reports it).
    if engine.authority.may_write() {
        if let Err(e) = api
            .patch_status(&k.2, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            warn!(binding = %k.2, error = %e, "Could not write TrafficBinding status.");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(
            kube::core::Status::failure(message, "").with_code(code),
        )))
    }

    #[test]
    fn what_a_person_must_fix_is_one_line_naming_the_cluster() {
        let crd = explain(
            "east",
            "trafficbindings",
            &api_error(404, "the server could not find the requested resource"),
        );
        assert!(crd
            .unwrap()
            .starts_with("cluster east: the TrafficBinding CRD is not installed"));
        let forbidden = explain(
            "east",
            "pods",
            &api_error(403, "pods is forbidden: User \"x\" cannot list resource \"pods\""),
        )
        .unwrap();
        assert!(forbidden.contains("may not list and watch pods") && forbidden.contains("deploy/rbac.yaml"));
        assert!(explain("east", "pods", &api_error(401, "Unauthorized"))
            .unwrap()
            .contains("credentials"));
        // What retrying fixes is not a person's problem.
        assert_eq!(explain("east", "pods", &api_error(503, "unavailable")), None);
        assert_eq!(explain("east", "pods", &api_error(404, "gone")), None);
    }
}
