//! The validating admission webhook for pod deletes and evictions: `POST /validate/<cluster>`
//! over HTTPS (`admission.listen`), `admission.k8s.io/v1` `AdmissionReview`.
//!
//! Finalizers do not stop a pod's containers: a plain `kubectl delete`, `kubectl drain`, the
//! cluster autoscaler or an eviction sends SIGTERM whatever finalizers remain. The webhook
//! stands before that: for a `DELETE pods` or a `CREATE pods/eviction` of a pod whose
//! traffic Sluice manages and has not drained yet, it records a drain request on the pod
//! (`sluice.dev/drain-request`: who, why, until when) and holds the request while the
//! drain runs, up to `admission.holdSeconds`:
//!
//! - drained in time → allowed (with a warning saying how long it took);
//! - not yet → an eviction is refused with `429 TooManyRequests` (eviction clients retry; the
//!   drain goes on, so a retry after it is admitted at once); a delete is refused likewise
//!   under `onDeleteTimeout: Deny` (the default), or admitted with a warning under `Allow`;
//! - a pod with nothing bound, one already drained, one the gateway does not know → allowed
//!   at once; a dry run → allowed, nothing written; a shadow gateway → allowed, nothing
//!   written.
//!
//! A drain request lapses after `admission.requestSeconds`: a pod whose eviction was refused
//! and never retried is restored then. Every answer is decided from the gateway's watch
//! cache; the only write is the request (which a standby replica makes too: the leader acts
//! on it). The serving certificate is re-read when its file changes (cert-manager renews it
//! in place).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::{AdmissionConfig, OnDeleteTimeout};
use crate::engine::Engine;
use crate::model::PodView;
use crate::prestop::{bound, drained, wait_drained};

/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
const MAX_BODY: usize = 3 << 20;

/// What the webhook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// For a refusal: the HTTP code and `Status.reason` the API server answers with.
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Shown by kubectl as `Warning: …`.
    pub warnings: Vec<String>,
}

impl Verdict {
    fn allow(warning: Option<String>) -> Verdict {
        Verdict {
            allowed: true,
            code: 200,
            reason: "",
            message: String::new(),
            warnings: warning.into_iter().collect(),
        }
    }

    fn deny(code: u16, reason: &'static str, message: String) -> Verdict {
        Verdict {
            allowed: false,
            code,
            reason,
            message,
            warnings: Vec::new(),
        }
    }

    fn too_many(message: String) -> Verdict {
        Verdict::deny(429, "TooManyRequests", message)
    }

    /// The AdmissionReview answering request `uid`.
    pub fn review(&self, uid: &str) -> Value {
        let mut response = json!({"uid": uid, "allowed": self.allowed});
        if !self.allowed {
            response["status"] = json!({"code": self.code, "reason": self.reason, "message": self.message});
        }
        if !self.warnings.is_empty() {
            response["warnings"] = json!(self.warnings);
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }

    fn label(&self) -> &'static str {
        if self.allowed {
            "allowed"
        } else {
            "refused"
        }
    }
}

/// The parts of an `AdmissionRequest` the webhook reads.
struct Asked {
    /// `delete` or `eviction`; `None`: not a request the webhook decides on.
    operation: Option<&'static str>,
    namespace: String,
    name: String,
    /// The pod's UID when the request carries the pod (`oldObject` of a delete).
    uid: Option<String>,
    user: String,
    dry_run: bool,
}

fn asked(req: &Value) -> Asked {
    let resource = req["resource"]["resource"].as_str().unwrap_or_default();
    let group = req["resource"]["group"].as_str().unwrap_or_default();
    let sub = req["subResource"].as_str().unwrap_or_default();
    let operation = match (group, resource, sub, req["operation"].as_str().unwrap_or_default()) {
        ("", "pods", "", "DELETE") => Some("delete"),
        ("", "pods", "eviction", "CREATE") => Some("eviction"),
        _ => None,
    };
    Asked {
        operation,
        namespace: req["namespace"].as_str().unwrap_or_default().to_string(),
        name: req["name"].as_str().unwrap_or_default().to_string(),
        // A delete carries the pod; an eviction may name its UID as a precondition.
        uid: req["oldObject"]["metadata"]["uid"]
            .as_str()
            .or_else(|| req["object"]["deleteOptions"]["preconditions"]["uid"].as_str())
            .map(String::from),
        user: req["userInfo"]["username"].as_str().unwrap_or_default().to_string(),
        dry_run: req["dryRun"].as_bool().unwrap_or(false),
    }
}

/// Requests held at once for one pod (by UID); beyond, 429 at once.
const HELD_PER_POD: usize = 4;

/// Counts requests held per pod UID; the entry goes with the last one.
#[derive(Default)]
pub struct PerPod(dashmap::DashMap<String, usize>);

struct PodHold<'a>(&'a PerPod, String);

impl PerPod {
    fn take(&self, uid: &str) -> Option<PodHold<'_>> {
        let mut n = self.0.entry(uid.to_string()).or_insert(0);
        if *n >= HELD_PER_POD {
            return None;
        }
        *n += 1;
        Some(PodHold(self, uid.to_string()))
    }
}

impl Drop for PodHold<'_> {
    fn drop(&mut self) {
        self.0 .0.remove_if_mut(&self.1, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// Decides one AdmissionRequest (`request` of the review) for `cluster`.
pub async fn decide(
    engine: &Engine,
    cfg: &AdmissionConfig,
    per_pod: &PerPod,
    cluster: &str,
    request: &Value,
) -> Verdict {
    let a = asked(request);
    let Some(operation) = a.operation else {
        return Verdict::allow(None);
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(cfg.hold_seconds);
    let Some(handle) = engine.clusters.get(cluster) else {
        let known: Vec<&str> = engine.clusters.keys().map(String::as_str).collect();
        return Verdict::deny(
            400,
            "BadRequest",
            format!(
                "sluice: the webhook URL names cluster {cluster:?}, which is not in the gateway's configuration \
                 (clusters: {}): fix clientConfig.url of the ValidatingWebhookConfiguration",
                known.join(", ")
            ),
        );
    };
    let timed_out = |why: String| -> Verdict {
        match (operation, cfg.on_delete_timeout) {
            ("delete", OnDeleteTimeout::Allow) => Verdict::allow(Some(format!(
                "sluice: pod {}/{} deleted before its traffic was verified drained ({why}; onDeleteTimeout: Allow): \
                 requests to it may fail",
                a.namespace, a.name
            ))),
            ("delete", OnDeleteTimeout::Deny) => Verdict::too_many(format!(
                "sluice: pod {}/{} is not deleted yet: {why}. The drain goes on; delete again once it is drained \
                 (kubectl get pod {} -o jsonpath='{{.metadata.annotations.sluice\\.dev/status}}')",
                a.namespace, a.name, a.name
            )),
            _ => Verdict::too_many(format!(
                "sluice: pod {}/{} cannot be evicted yet: {why}. The drain goes on; retry the eviction (kubectl \
                 drain retries by itself)",
                a.namespace, a.name
            )),
        }
    };
    // Decided from the watch cache only once it has synced and while the watch is healthy:
    // a frozen view could call a pod drained (or unknown) that is not.
    while !handle.live() {
        if Instant::now() >= deadline {
            return timed_out(if handle.synced.load(std::sync::atomic::Ordering::SeqCst) {
                format!("the gateway's watch of cluster {cluster} is failing, so its view of the pod may be stale")
            } else {
                format!("the gateway has not synced cluster {cluster} yet")
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(pod) = find(engine, cluster, &a) else {
        // Not in the watch cache: created an instant ago (nothing registered yet) or gone.
        return Verdict::allow(None);
    };
    if pod.deleting {
        // Already terminating: its containers have been told to stop, so holding this
        // request (the kubelet's final delete, a repeated delete or eviction) protects
        // nothing; the finalizers keep the pod's record until its drain is verified.
        return Verdict::allow(None);
    }
    if !bound(engine, &pod) {
        return Verdict::allow(None);
    }
    if drained(&pod) {
        return Verdict::allow(Some(format!("sluice: {}'s traffic is verified drained", pod.display())));
    }
    if a.dry_run {
        return Verdict::allow(Some(format!(
            "sluice: a real {operation} of {} would first drain its traffic (held up to {} s)",
            pod.display(),
            cfg.hold_seconds
        )));
    }
    if engine.authority.role() == crate::authority::Role::Shadow {
        info!(pod = %pod.display(), operation, "Shadow: would hold the request while the pod drains.");
        return Verdict::allow(None);
    }
    if operation == "eviction" {
        // The API server checks the PodDisruptionBudget after the webhooks: an eviction it
        // will refuse must not drain the pod first (it would stay out of traffic, retried).
        match budget_refuses(handle, &pod).await {
            Ok(Some(why)) => {
                return Verdict::too_many(format!(
                    "sluice: pod {} is not drained for this eviction: {why}; retry later",
                    pod.display()
                ))
            }
            Ok(None) => {}
            Err(e) => return timed_out(format!("its PodDisruptionBudgets could not be read ({e})")),
        }
    }
    let Some(_hold) = per_pod.take(&pod.uid) else {
        return Verdict::too_many(format!(
            "sluice: {HELD_PER_POD} requests for pod {} are held already; retry",
            pod.display()
        ));
    };
    // Record the request (again only when it would lapse soon: an eviction retried every
    // few seconds writes once, not each time), within the hold: a slow API server must not
    // outlast the webhook's timeout (the API server would answer 500, which kubectl drain
    // does not retry).
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(cfg.request_seconds as i64);
    let half = jiff::SignedDuration::from_secs(cfg.request_seconds as i64 / 2);
    if pod.drain_request.is_none_or(|t| t < until - half) {
        let value = crate::model::drain_request(&a.user, operation, until);
        let write = handle.writer.request_drain(&pod.namespace, &pod.name, &pod.uid, &value);
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), write).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(pod = %pod.display(), error = %e, "Could not record the drain request.");
                return timed_out(format!("the drain request could not be recorded ({e})"));
            }
            Err(_) => return timed_out("the drain request could not be recorded in time".into()),
        }
        info!(pod = %pod.display(), operation, user = %a.user, "Holding the request while the pod drains.");
    }
    if wait_drained(engine, &pod, deadline).await {
        Verdict::allow(Some(format!(
            "sluice: {}'s traffic verified drained in {} ms",
            pod.display(),
            start.elapsed().as_millis()
        )))
    } else {
        let status = engine
            .pods
            .get(&pod.key())
            .and_then(|p| p.status())
            .map(|s| {
                let mut why = format!("{:?}", s.state).to_lowercase();
                if !s.blocked.is_empty() {
                    why.push_str(&format!(" ({})", s.blocked.join("; ")));
                }
                why
            })
            .unwrap_or_else(|| "not started".into());
        timed_out(format!(
            "its traffic is still draining after {} s (state: {status})",
            cfg.hold_seconds
        ))
    }
}

/// Why the PodDisruptionBudget of the pod would refuse its eviction now (`None`: it would
/// not, or there is none): the pod is Ready and its budget allows no disruption. (An unready
/// pod is left to the API server's `unhealthyPodEvictionPolicy`.)
async fn budget_refuses(handle: &crate::engine::ClusterHandle, pod: &PodView) -> Result<Option<String>, kube::Error> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let ready = pod.containers_ready && pod.gate != Some(false);
    if !ready {
        return Ok(None);
    }
    let api: kube::Api<PodDisruptionBudget> = kube::Api::namespaced(handle.writer.client().clone(), &pod.namespace);
    let list = api.list(&Default::default()).await?;
    for b in list.items {
        let Some(selector) = b.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        // policy/v1: an empty selector selects every pod of the namespace.
        let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        let selects = empty || crate::model::Selector::compile(selector).is_ok_and(|s| s.matches(&pod.labels));
        if !selects {
            continue;
        }
        let allowed = b.status.as_ref().map(|s| s.disruptions_allowed).unwrap_or(0);
        if allowed <= 0 {
            return Ok(Some(format!(
                "PodDisruptionBudget {} allows no disruption now",
                b.metadata.name.unwrap_or_default()
            )));
        }
    }
    Ok(None)
}

/// The pod the request names: by its UID when the request carries one (a delete always
/// does), by name otherwise; never by a scan of every pod.
fn find(engine: &Engine, cluster: &str, a: &Asked) -> Option<PodView> {
    let named = |p: &PodView| p.cluster == cluster && p.namespace == a.namespace && p.name == a.name;
    match &a.uid {
        Some(uid) => engine
            .pods
            .get(&crate::model::PodKey {
                cluster: cluster.to_string(),
                uid: uid.clone(),
            })
            .map(|p| p.clone())
            .filter(named),
        None => engine.pod_by_name(cluster, &a.namespace, &a.name),
    }
}

/// The serving certificate, re-read when the certificate file's modification time changes
/// (checked at most once a second).
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<(Option<SystemTime>, Instant, Arc<CertifiedKey>)>,
}

fn load(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("admission.certFile {}: cannot be read", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("admission.certFile {}: not PEM certificates", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("admission.certFile {}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "admission.keyFile {}: cannot be read as a PEM private key",
            key.display()
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).context("admission.keyFile: unsupported key")?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

fn mtime(p: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.1.elapsed() >= Duration::from_secs(1) {
            s.1 = Instant::now();
            let now = mtime(&self.cert);
            if now != s.0 {
                match load(&self.cert, &self.key) {
                    Ok(k) => {
                        info!(cert = %self.cert.display(), "Admission certificate reloaded.");
                        *s = (now, Instant::now(), k);
                    }
                    // A half-written pair (cert renewed, key not yet): keep the old one, retry.
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "Admission certificate not reloaded; keeping the old one.")
                    }
                }
            }
        }
        Some(s.2.clone())
    }
}

/// The TLS configuration of the webhook listener; fails when the certificate or key cannot
/// be read.
pub fn tls_config(cfg: &AdmissionConfig) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let key = load(&cfg.cert_file, &cfg.key_file)?;
    let resolver = Reloading {
        cert: cfg.cert_file.clone(),
        key: cfg.key_file.clone(),
        state: Mutex::new((mtime(&cfg.cert_file), Instant::now(), key)),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &cfg.client_ca_file {
        // Only callers with a certificate from this CA (the API server, configured with an
        // AdmissionConfiguration kubeconfig) get an answer.
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("admission.clientCAFile {}: cannot be read", ca.display()))?
            {
                let cert = cert.with_context(|| format!("admission.clientCAFile {}: not PEM", ca.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("admission.clientCAFile {}: not a CA certificate", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("admission.clientCAFile: client verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the webhook on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    engine: Arc<Engine>,
    cfg: AdmissionConfig,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let held = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent));
    let per_pod = Arc::new(PerPod::default());
    // Connections (and the TLS handshakes they start) are bounded too: a flood of them
    // waits here instead of eating the runtime's threads.
    let connections = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent * 2 + 16));
    let cfg = Arc::new(cfg);
    loop {
        let Ok(connection) = connections.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, engine, cfg, held, per_pod) = (
            acceptor.clone(),
            engine.clone(),
            cfg.clone(),
            held.clone(),
            per_pod.clone(),
        );
        tokio::spawn(async move {
            let _connection = connection;
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (engine, cfg, held, per_pod) = (engine.clone(), cfg.clone(), held.clone(), per_pod.clone());
                async move {
                    let (code, body) = answer(&engine, &cfg, &held, &per_pod, req).await;
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(code)
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(bytes::Bytes::from(body)))
                            .expect("response"),
                    )
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .max_concurrent_streams(64);
            // A connection lives at most a few holds long.
            let _ = tokio::time::timeout(
                Duration::from_secs(600),
                builder.serve_connection(TokioIo::new(tls), svc),
            )
            .await;
        });
    }
}

async fn answer(
    engine: &Engine,
    cfg: &AdmissionConfig,
    held: &tokio::sync::Semaphore,
    per_pod: &PerPod,
    req: http::Request<hyper::body::Incoming>,
) -> (StatusCode, String) {
    let error = |code: StatusCode, message: &str| (code, json!({"error": message}).to_string());
    let Some(cluster) = req.uri().path().strip_prefix("/validate/").map(String::from) else {
        return error(StatusCode::NOT_FOUND, "not found: POST /validate/<cluster>");
    };
    if req.method() != http::Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
    }
    let body = match tokio::time::timeout(
        Duration::from_secs(10),
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("reading the body: {e}")),
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive within 10 s"),
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not an AdmissionReview: {e}")),
    };
    if review["apiVersion"].as_str() != Some("admission.k8s.io/v1")
        || review["kind"].as_str() != Some("AdmissionReview")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview (set admissionReviewVersions: [v1])",
        );
    }
    let request = &review["request"];
    let Some(uid) = request["uid"].as_str() else {
        return error(StatusCode::BAD_REQUEST, "request.uid is missing");
    };
    let started = Instant::now();
    let verdict = match held.try_acquire() {
        Ok(_permit) => decide(engine, cfg, per_pod, &cluster, request).await,
        Err(_) => Verdict::too_many(format!(
            "sluice: {} admission requests are held already; retry",
            cfg.max_concurrent
        )),
    };
    let operation = asked(request).operation.unwrap_or("other");
    engine.metrics.admission(operation, verdict.label(), started.elapsed());
    (StatusCode::OK, verdict.review(uid).to_string())
}
