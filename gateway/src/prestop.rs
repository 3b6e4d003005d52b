//! The blocking preStop endpoint: `GET /prestop?namespace=NS&pod=NAME[&cluster=C][&timeoutSeconds=N]`.
//!
//! A pod's `lifecycle.preStop.httpGet` pointed at the gateway holds the container's
//! SIGTERM until the pod's traffic is verified drained — the protection a plain
//! `kubectl delete` or an eviction needs, since finalizers do not stop the kubelet. The
//! call marks the pod (`sluice.dev/prestop`), which is a drain signal on its own, then waits
//! until no `sluice.dev/*` finalizer is left and the pod's status says `drained` (verified
//! drain), or the timeout passes. Before the gateway's first sync it waits too.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::engine::Engine;
use crate::model::PodView;

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn find(engine: &Engine, cluster: &str, ns: &str, name: &str) -> Option<PodView> {
    engine
        .pods
        .iter()
        .find(|p| p.cluster == cluster && p.namespace == ns && p.name == name)
        .map(|p| p.clone())
}

/// The pod's status annotation says its drain is over (verified, or released at its
/// deadline under `onDeadline: Release`).
fn recorded_drained(p: &PodView) -> bool {
    p.status().is_some_and(|s| s.state.is_drain_done())
}

/// Answers the request: 200 once drained, 400/404 for bad input, 504 at the timeout.
pub async fn handle(engine: &Engine, query: &str) -> (StatusCode, String) {
    let (Some(ns), Some(name)) = (param(query, "namespace"), param(query, "pod")) else {
        return (
            StatusCode::BAD_REQUEST,
            "namespace and pod are required: /prestop?namespace=NS&pod=NAME".into(),
        );
    };
    let cluster = match (param(query, "cluster"), engine.clusters.len()) {
        (Some(c), _) => c.to_string(),
        (None, 1) => engine.clusters.keys().next().expect("one cluster").clone(),
        (None, _) => {
            return (
                StatusCode::BAD_REQUEST,
                "cluster is required: the gateway watches several clusters".into(),
            )
        }
    };
    let timeout = match param(query, "timeoutSeconds").map(str::parse::<u64>) {
        None => Duration::from_secs(120),
        Some(Ok(s)) if s > 0 => Duration::from_secs(s),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "timeoutSeconds must be a positive number".into(),
            )
        }
    };
    let Some(handle) = engine.clusters.get(&cluster) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no cluster named {cluster:?} in the gateway configuration"),
        );
    };
    let start = Instant::now();
    // A gateway that has just started does not know the cluster's pods yet: wait for its
    // first sync (within the timeout) rather than let the container stop with its traffic
    // in place.
    while !handle.synced.load(std::sync::atomic::Ordering::SeqCst) {
        if start.elapsed() >= timeout {
            return (
                StatusCode::GATEWAY_TIMEOUT,
                format!("the gateway did not finish its first sync of cluster {cluster} within {timeout:?}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(pod) = find(engine, &cluster, ns, name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {cluster}/{ns}/{name} is not known to the gateway"),
        );
    };
    // A pod that matches a binding may have traffic registered before its finalizer is
    // added (a restore in progress): only a pod with neither has nothing to drain.
    if !pod.holds_sluice_finalizer() && engine.bindings_for(&pod).is_empty() && pod.ledger_annotation.is_none() {
        return (StatusCode::OK, "no traffic registered: nothing to drain".into());
    }
    if let Err(e) = handle.writer.mark_prestop(ns, name, &pod.uid, pod.restarts).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not mark the pod for draining: {e}"),
        );
    }
    loop {
        match find(engine, &cluster, ns, name) {
            // Done when no finalizer of ours is left and the gateway has recorded the drain
            // as finished (every target observed drained, none still registering).
            Some(p) if p.uid == pod.uid && (p.holds_sluice_finalizer() || !recorded_drained(&p)) => {}
            _ => return (StatusCode::OK, format!("drained in {} ms", start.elapsed().as_millis())),
        }
        if start.elapsed() >= timeout {
            return (
                StatusCode::GATEWAY_TIMEOUT,
                format!("drain not verified within {timeout:?}; the pod's sluice.dev/status annotation says why"),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
