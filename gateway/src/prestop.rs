//! The blocking preStop endpoint: `GET /prestop[?timeoutSeconds=N]` on its own listener
//! (`listen.prestop`).
//!
//! A pod's `lifecycle.preStop` `exec` hook (`wget -qO- http://sluice-gateway.sluice.svc:9798/prestop`)
//! holds the container's SIGTERM until the pod's traffic is verified drained — the
//! protection a plain `kubectl delete` or an eviction needs, since finalizers do not stop
//! the kubelet. The caller is identified by the connection's source address, which must be
//! the IP of exactly one pod the gateway knows — never by a name in the request (an
//! `httpGet` hook cannot name its own pod, and a name would let anyone drain any pod). The
//! call marks the pod (`sluice.dev/prestop`), a drain signal on its own, then waits until no
//! `sluice.dev/*` finalizer is left and the pod's status says its drain is over, or the
//! timeout passes.
//!
//! Answers: 200 drained (or nothing was registered), 400 a name in the query or a bad
//! timeout, 403 a caller no pod (or more than one, or a `hostNetwork` pod) has the address
//! of, 404 a pod with no traffic bound, 503 too many calls at once or the mark could not be
//! written, 504 not drained within the timeout. Headers must arrive within 10 s; at most
//! [`MAX_CALLS`] calls are held at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::engine::Engine;
use crate::model::PodView;

/// preStop calls held at once; beyond, 503 at once.
pub const MAX_CALLS: usize = 1024;
/// The longest `timeoutSeconds` a call may ask for (the default: 120).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn find(engine: &Engine, pod: &PodView) -> Option<PodView> {
    engine
        .pods
        .get(&pod.key())
        .map(|p| p.clone())
        .filter(|p| p.uid == pod.uid)
}

/// The pod's status annotation says its drain is over (verified, or released at its
/// deadline under `onDeadline: Release`).
fn recorded_drained(p: &PodView) -> bool {
    p.status().is_some_and(|s| s.state.is_drain_done())
}

/// Whether the pod may have traffic registered by Sluice: a finalizer of Sluice's, a ledger,
/// or a binding that selects it (a restore in progress registers before its finalizer).
pub fn bound(engine: &Engine, pod: &PodView) -> bool {
    pod.holds_sluice_finalizer() || pod.ledger_annotation.is_some() || !engine.bindings_for(pod).is_empty()
}

/// Its drain is over: no finalizer of Sluice's left, the status says drained (or released).
pub fn drained(p: &PodView) -> bool {
    !p.holds_sluice_finalizer() && recorded_drained(p)
}

/// Waits until `pod` (this UID) is drained or gone; `false` when `deadline` passed first.
pub async fn wait_drained(engine: &Engine, pod: &PodView, deadline: Instant) -> bool {
    loop {
        // Registered before the look, so a change in between is not missed.
        let changed = engine.changed.notified();
        match find(engine, pod) {
            Some(p) if !drained(&p) => {}
            _ => return true,
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Woken by any pod change (the answer follows the drain's last write at once);
        // looked at again at least every 100 ms all the same.
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(100)), changed).await;
    }
}

/// Waits until every cluster has synced once; `false` when `deadline` passed first.
async fn wait_synced(engine: &Engine, deadline: Instant) -> bool {
    while !engine
        .clusters
        .values()
        .all(|c| c.synced.load(std::sync::atomic::Ordering::SeqCst))
    {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The one pod whose IP is `ip`, or why the caller cannot be identified.
fn identify(engine: &Engine, ip: IpAddr) -> Result<PodView, (StatusCode, String)> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let mut found: Vec<PodView> = engine
        .pods
        .iter()
        .filter(|p| p.ip == Some(ip))
        .map(|p| p.clone())
        .collect();
    // An address outlives nothing: of a pod whose containers all ended (its address may be
    // a new pod's now) and one that runs, the running one called.
    if found.iter().filter(|p| p.running).count() == 1 {
        found.retain(|p| p.running);
    }
    match found.len() {
        0 => Err((
            StatusCode::FORBIDDEN,
            format!(
                "no pod the gateway watches has address {ip}: /prestop must be called by the pod itself (an exec \
                 hook in the pod, not httpGet, which the kubelet sends from the node); nothing changed"
            ),
        )),
        1 if found[0].host_network => Err((
            StatusCode::FORBIDDEN,
            format!(
                "{ip} is the node address of hostNetwork pod {}: any process on the node could call from it, so it \
                 cannot identify the pod; use the admission webhook for hostNetwork pods; nothing changed",
                found[0].display()
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => Err((
            StatusCode::FORBIDDEN,
            format!(
                "address {ip} belongs to {} pods ({}): the caller cannot be identified; nothing changed",
                found.len(),
                found.iter().map(PodView::display).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Answers a call from `peer`.
pub async fn handle(engine: &Engine, peer: IpAddr, query: &str) -> (StatusCode, String) {
    if param(query, "pod").is_some() || param(query, "namespace").is_some() || param(query, "cluster").is_some() {
        return (
            StatusCode::BAD_REQUEST,
            "the pod is identified by the caller's address, never by name: remove pod, namespace and cluster from \
             the query"
                .into(),
        );
    }
    let timeout = match param(query, "timeoutSeconds").map(str::parse::<u64>) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(s)) if s > 0 && Duration::from_secs(s) <= MAX_TIMEOUT => Duration::from_secs(s),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("timeoutSeconds must be a number from 1 to {}", MAX_TIMEOUT.as_secs()),
            )
        }
    };
    let start = Instant::now();
    let deadline = start + timeout;
    // A gateway that has just started does not know every pod yet: a caller not found
    // waits for the first sync of every cluster (within the timeout) before it is refused,
    // rather than let the container stop with its traffic in place.
    let pod = match identify(engine, peer) {
        Ok(p) => p,
        Err(_) if wait_synced(engine, deadline).await => match identify(engine, peer) {
            Ok(p) => p,
            Err(answer) => return answer,
        },
        Err(_) => {
            return (
                StatusCode::GATEWAY_TIMEOUT,
                format!("the gateway did not finish its first sync within {timeout:?}"),
            )
        }
    };
    if !bound(engine, &pod) {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "pod {} has no traffic bound by a TrafficBinding: nothing to drain",
                pod.display()
            ),
        );
    }
    let Some(cluster) = engine.clusters.get(&pod.cluster) else {
        return (StatusCode::NOT_FOUND, format!("no cluster {:?}", pod.cluster));
    };
    let mark = cluster
        .writer
        .mark_prestop(&pod.namespace, &pod.name, &pod.uid, pod.restarts);
    match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), mark).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("could not mark pod {} for draining: {e}", pod.display()),
            )
        }
        Err(_) => {
            return (
                StatusCode::GATEWAY_TIMEOUT,
                format!("could not mark pod {} for draining within {timeout:?}", pod.display()),
            )
        }
    }
    if wait_drained(engine, &pod, deadline).await {
        (
            StatusCode::OK,
            format!("{} drained in {} ms", pod.display(), start.elapsed().as_millis()),
        )
    } else {
        (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{} not verified drained within {timeout:?}; its sluice.dev/status annotation says why",
                pod.display()
            ),
        )
    }
}

/// Serves `/prestop` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, engine: Arc<Engine>) {
    let calls = Arc::new(tokio::sync::Semaphore::new(MAX_CALLS));
    // Connections are bounded too (a call beyond MAX_CALLS gets its 503 on one of these).
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CALLS + 64));
    loop {
        let Ok(connection) = connections.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (engine, calls) = (engine.clone(), calls.clone());
        tokio::spawn(async move {
            let _connection = connection;
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (engine, calls) = (engine.clone(), calls.clone());
                async move {
                    let (code, body) = answer(&engine, &calls, peer, &req).await;
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(code)
                            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                            .body(Full::new(bytes::Bytes::from(body)))
                            .expect("response"),
                    )
                }
            });
            // HTTP/1.1 only (what wget and curl send): its header-read timeout applies.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(MAX_TIMEOUT + Duration::from_secs(60), conn).await;
        });
    }
}

async fn answer(
    engine: &Engine,
    calls: &tokio::sync::Semaphore,
    peer: SocketAddr,
    req: &http::Request<hyper::body::Incoming>,
) -> (StatusCode, String) {
    if req.uri().path() != "/prestop" {
        return (StatusCode::NOT_FOUND, "not found: this listener serves /prestop".into());
    }
    if req.method() != http::Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET /prestop".into());
    }
    let Ok(_call) = calls.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_CALLS} preStop calls are held already; try again"),
        );
    };
    handle(engine, peer.ip(), req.uri().query().unwrap_or("")).await
}
