//! The `sluice.v1.Sluice` service: one method per RPC, each authenticated, rate limited and
//! authorized first; mutating calls audited.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::{Stream, StreamExt};
use prost::Message;
use sluice_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Identity, RateLimiter, Rules};
use super::selector::LabelSelector;
use super::{traffic, DesiredBy};
use crate::config::{ApiConfig, ApiVerb};
use crate::engine::{Engine, PodUpdate};
use crate::k8s::writer::{WriteError, Written};
use crate::model::PodView;

/// How long a request id's answer is kept (AIP-155 asks for at least an hour).
const REQUEST_ID_TTL: Duration = Duration::from_secs(3600);
/// Request ids remembered at most (per replica).
const REQUEST_ID_CAP: usize = 50_000;
/// Request ids remembered at most per identity.
const REQUEST_ID_PER_IDENTITY: usize = 5_000;
const MAX_REASON: usize = 1024;
const MAX_REQUEST_ID: usize = 128;
const DEFAULT_WAIT: u32 = 300;
const MAX_WAIT: u32 = 3600;
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 500;

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The first answer to a request id, kept for its repeats.
struct Remembered {
    fingerprint: [u8; 32],
    at: Instant,
    answer: tokio::sync::OnceCell<pb::Operation>,
}

pub struct ApiService {
    engine: Arc<Engine>,
    cfg: ApiConfig,
    auth: Authenticator,
    rules: Rules,
    limiter: RateLimiter,
    /// Calls per source address, before authentication (5× the per-identity rate).
    peers: RateLimiter,
    remembered: DashMap<(String, String), Arc<Remembered>>,
    watches: Arc<Semaphore>,
}

/// What every call starts with: who calls, and the caller's trace.
struct Caller {
    who: Identity,
    traceparent: Option<String>,
    trace_id: String,
}

/// The pods a mutating call concerns.
struct Resolved {
    cluster: String,
    pods: Vec<PodView>,
    /// An endpoint target: the record's namespace, name and the spec asked for.
    endpoint: Option<(String, String, crate::endpoint::EndpointDrainSpec)>,
    /// The pod reference's preconditions (a single pod only).
    uid: Option<String>,
    etag: Option<String>,
    what: String,
}

impl ApiService {
    pub fn new(engine: Arc<Engine>, cfg: ApiConfig, review_client: Option<kube::Client>) -> anyhow::Result<ApiService> {
        Ok(ApiService {
            auth: Authenticator::new(&cfg, review_client)?,
            rules: Rules::new(cfg.rules.clone()),
            limiter: RateLimiter::new(cfg.rate_limit.per_second, cfg.rate_limit.burst),
            peers: RateLimiter::new(cfg.rate_limit.per_second * 5.0, cfg.rate_limit.burst.saturating_mul(5)),
            remembered: DashMap::new(),
            watches: Arc::new(Semaphore::new(cfg.max_watches)),
            engine,
            cfg,
        })
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        // Per source address first: calls with made-up credentials are bounded too (each
        // unknown token may cost a TokenReview).
        if let Some(peer) = req.remote_addr() {
            self.peers.take(&format!("address {}", peer.ip()))?;
        }
        let who = self.auth.identify(req).await?;
        self.limiter.take(&who.user)?;
        let traceparent = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| crate::telemetry::TraceParent::parse(v).is_some())
            .map(String::from);
        let trace_id = traceparent
            .as_deref()
            .and_then(crate::telemetry::TraceParent::parse)
            .map(|t| format!("{:032x}", t.trace_id))
            .unwrap_or_default();
        Ok(Caller {
            who,
            traceparent,
            trace_id,
        })
    }

    /// [`ApiService::caller`] for a mutating call: a caller refused here (no or bad
    /// credentials, rate limited) is audited too.
    async fn mutating_caller<T>(&self, req: &Request<T>, verb: &str, what: String) -> Result<Caller, Status> {
        let refused = match self.caller(req).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        let anonymous = Caller {
            who: Identity {
                user: "(unauthenticated)".into(),
                groups: vec![],
                via: "none",
            },
            traceparent: None,
            trace_id: String::new(),
        };
        self.audit(&anonymous, verb, &what, "", "", false, &Err(refused.clone()));
        Err(refused)
    }

    fn authorize(&self, c: &Caller, verb: ApiVerb, cluster: &str, namespace: &str) -> Result<(), Status> {
        if self.rules.allows(&c.who, verb, cluster, namespace) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{} may not {} in namespace {namespace:?} of cluster {cluster:?}: no rule in api.rules allows it",
                c.who.user,
                verb.as_str()
            )))
        }
    }

    /// The cluster a request names (may be empty with exactly one cluster).
    fn cluster(&self, name: &str) -> Result<String, Status> {
        let names: Vec<&String> = self.engine.clusters.keys().collect();
        if name.is_empty() {
            return match names.as_slice() {
                [one] => Ok((*one).clone()),
                _ => Err(Status::invalid_argument(format!(
                    "cluster is required: this gateway watches {}",
                    join(&names)
                ))),
            };
        }
        if self.engine.clusters.contains_key(name) {
            Ok(name.to_string())
        } else {
            Err(Status::invalid_argument(format!(
                "unknown cluster {name:?}: this gateway watches {}",
                join(&names)
            )))
        }
    }

    /// The cluster must be synced and its watch healthy before anything is decided from it.
    fn live(&self, cluster: &str) -> Result<(), Status> {
        let c = &self.engine.clusters[cluster];
        if c.live() {
            Ok(())
        } else {
            Err(Status::unavailable(format!(
                "cluster {cluster:?} is not synced or its watch is failing: the gateway's view of it cannot be \
                 trusted now; try again"
            )))
        }
    }

    /// Resolves a Drain / Restore target to its pods, after authorizing `verb` on its
    /// namespace (so a refused caller learns nothing of the pods).
    fn resolve(&self, c: &Caller, verb: ApiVerb, target: Option<&pb::Target>) -> Result<Resolved, Status> {
        use pb::target::Target as T;
        let target = target
            .and_then(|t| t.target.as_ref())
            .ok_or_else(|| Status::invalid_argument("target is required: a pod, a selector or an endpoint"))?;
        match target {
            T::Pod(p) => {
                let cluster = self.cluster(&p.cluster)?;
                check_name("pod.namespace", &p.namespace, 63)?;
                check_name("pod.name", &p.name, 253)?;
                self.authorize(c, verb, &cluster, &p.namespace)?;
                self.live(&cluster)?;
                let pod = self
                    .engine
                    .pod_by_name(&cluster, &p.namespace, &p.name)
                    .ok_or_else(|| not_found(&cluster, &p.namespace, &p.name))?;
                if !p.uid.is_empty() && p.uid != pod.uid {
                    return Err(Status::aborted(format!(
                        "pod {}/{}/{} has UID {}, not {} (the precondition): it was replaced; read it again",
                        cluster, p.namespace, p.name, pod.uid, p.uid
                    )));
                }
                if !p.etag.is_empty() && p.etag != pod.resource_version {
                    return Err(Status::aborted(format!(
                        "etag {:?} is stale: pod {}/{}/{} is at {:?} now; read it again",
                        p.etag, cluster, p.namespace, p.name, pod.resource_version
                    )));
                }
                Ok(Resolved {
                    what: format!("pod {}", pod.display()),
                    cluster,
                    pods: vec![pod],
                    endpoint: None,
                    uid: (!p.uid.is_empty()).then(|| p.uid.clone()),
                    etag: (!p.etag.is_empty()).then(|| p.etag.clone()),
                })
            }
            T::Selector(s) => {
                let cluster = self.cluster(&s.cluster)?;
                check_name("selector.namespace", &s.namespace, 63)?;
                if s.label_selector.trim().is_empty() {
                    return Err(Status::invalid_argument(
                        "selector.label_selector is required for a drain or restore (an empty one would take every \
                         pod of the namespace): name the pods, e.g. app=web",
                    ));
                }
                let sel = LabelSelector::parse(&s.label_selector).map_err(Status::invalid_argument)?;
                self.authorize(c, verb, &cluster, &s.namespace)?;
                self.live(&cluster)?;
                let mut pods: Vec<PodView> = self
                    .engine
                    .pods
                    .iter()
                    .filter(|p| p.cluster == cluster && p.namespace == s.namespace && sel.matches(&p.labels))
                    .map(|p| p.clone())
                    .collect();
                if pods.is_empty() {
                    return Err(Status::not_found(format!(
                        "no pod in namespace {:?} of cluster {cluster:?} matches {:?}",
                        s.namespace, s.label_selector
                    )));
                }
                if pods.len() > self.cfg.max_selected_pods {
                    return Err(Status::invalid_argument(format!(
                        "selector {:?} matches {} pods; one request may name at most {} (api.maxSelectedPods): \
                         narrow the selector",
                        s.label_selector,
                        pods.len(),
                        self.cfg.max_selected_pods
                    )));
                }
                pods.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Resolved {
                    what: format!("pods {cluster}/{}/{{{}}}", s.namespace, s.label_selector),
                    cluster,
                    pods,
                    endpoint: None,
                    uid: None,
                    etag: None,
                })
            }
            T::Endpoint(e) => {
                let cluster = self.cluster(&e.cluster)?;
                check_name("endpoint.namespace", &e.namespace, 63)?;
                self.authorize(c, verb, &cluster, &e.namespace)?;
                self.live(&cluster)?;
                if let Some(problem) = self.engine.endpoint_problems.get(&cluster) {
                    return Err(Status::failed_precondition(problem.clone()));
                }
                let (ip, port, name) = endpoint_record(e)?;
                let existing = self
                    .engine
                    .endpoints
                    .get(&(cluster.clone(), e.namespace.clone(), name.clone()))
                    .map(|r| r.clone());
                let mut targets = Vec::new();
                for (i, t) in e.targets.iter().enumerate() {
                    let params: BTreeMap<String, String> = if t.params_json.trim().is_empty() {
                        BTreeMap::new()
                    } else {
                        serde_json::from_str(&t.params_json).map_err(|err| {
                            Status::invalid_argument(format!(
                                "endpoint.targets[{i}].params_json must be a JSON object of strings, e.g. \
                                 {{\"backend\":\"web\"}}: {err}"
                            ))
                        })?
                    };
                    let adapter = self.engine.adapters.get(&t.adapter).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "endpoint.targets[{i}].adapter: no adapter instance {:?} (known: {})",
                            t.adapter,
                            join(&self.engine.adapters.keys().collect::<Vec<_>>())
                        ))
                    })?;
                    for p in adapter.capabilities().required_params {
                        if !params.contains_key(&p) {
                            return Err(Status::invalid_argument(format!(
                                "endpoint.targets[{i}].params.{p}: required by adapter {:?}",
                                t.adapter
                            )));
                        }
                    }
                    if let Err(why) = self
                        .engine
                        .tenancy()
                        .check_endpoint(&e.namespace, &t.adapter, &params, ip)
                    {
                        return Err(Status::permission_denied(format!("endpoint.targets[{i}]: {why}")));
                    }
                    targets.push(crate::binding::BindingTarget {
                        adapter: t.adapter.clone(),
                        params,
                    });
                }
                // A Restore may leave the targets out: the record's are used.
                if targets.is_empty() && verb == ApiVerb::Restore {
                    if let Some(r) = &existing {
                        targets = r.spec.targets.clone();
                    }
                }
                let spec = crate::endpoint::EndpointDrainSpec {
                    address: ip.to_string(),
                    port: i32::from(port),
                    targets,
                    desired: if verb == ApiVerb::Drain {
                        crate::endpoint::Desired::Drained
                    } else {
                        crate::endpoint::Desired::Serving
                    },
                    deadline_seconds: None,
                    settle_seconds: 0,
                    requested_by: c.who.user.clone(),
                    reason: String::new(),
                    traceparent: c.traceparent.clone().unwrap_or_default(),
                };
                if verb == ApiVerb::Restore && existing.is_none() {
                    return Err(Status::not_found(format!(
                        "no EndpointDrain record for {} in namespace {:?} of cluster {cluster:?}: nothing was drained \
                         through Sluice",
                        std::net::SocketAddr::new(ip, port),
                        e.namespace
                    )));
                }
                crate::endpoint::check(&self.engine, &e.namespace, &spec)
                    .map_err(|why| Status::invalid_argument(format!("endpoint: {why}")))?;
                if let Some(p) = self
                    .engine
                    .pods
                    .iter()
                    .find(|p| p.cluster == cluster && p.ip == Some(ip) && !p.host_network)
                {
                    return Err(Status::invalid_argument(format!(
                        "endpoint.address {ip} is pod {}'s: drain the pod instead",
                        p.display()
                    )));
                }
                Ok(Resolved {
                    what: format!("endpoint {cluster}/{}/{name}", e.namespace),
                    cluster,
                    pods: vec![],
                    endpoint: Some((e.namespace.clone(), name, spec)),
                    uid: None,
                    etag: None,
                })
            }
        }
    }

    /// AIP-155: the first answer to `(caller, request_id)`, computed once by `run`. A
    /// failure is not remembered (the request may be tried again, also corrected); a dry run
    /// is never remembered; a repeat with other content (or another method) is refused.
    /// What is kept is the answer's plan and the pods' names (a replay answers the pods as
    /// they are now), within a hard cap overall and per identity.
    async fn once<F, Fut>(
        &self,
        c: &Caller,
        request_id: &str,
        validate_only: bool,
        fingerprint: [u8; 32],
        run: F,
    ) -> Result<pb::Operation, Status>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<pb::Operation, Status>>,
    {
        if request_id.is_empty() || validate_only {
            return run().await;
        }
        let key = (c.who.user.clone(), request_id.to_string());
        if !self.remembered.contains_key(&key) {
            if self.remembered.len() >= REQUEST_ID_PER_IDENTITY {
                self.remembered.retain(|_, r| r.at.elapsed() < REQUEST_ID_TTL);
                let mine = self.remembered.iter().filter(|e| e.key().0 == c.who.user).count();
                if mine >= REQUEST_ID_PER_IDENTITY {
                    return Err(Status::resource_exhausted(format!(
                        "{mine} request ids of {} are remembered from the last hour (at most \
                         {REQUEST_ID_PER_IDENTITY}): retry later, or without a request_id",
                        c.who.user
                    )));
                }
            }
            if self.remembered.len() >= REQUEST_ID_CAP {
                return Err(Status::resource_exhausted(format!(
                    "{REQUEST_ID_CAP} request ids are remembered from the last hour: retry later, or without a \
                     request_id"
                )));
            }
        }
        let entry = {
            let mut e = self.remembered.entry(key.clone()).or_insert_with(|| {
                Arc::new(Remembered {
                    fingerprint,
                    at: Instant::now(),
                    answer: tokio::sync::OnceCell::new(),
                })
            });
            if e.at.elapsed() >= REQUEST_ID_TTL {
                *e = Arc::new(Remembered {
                    fingerprint,
                    at: Instant::now(),
                    answer: tokio::sync::OnceCell::new(),
                });
            }
            e.clone()
        };
        if entry.fingerprint != fingerprint {
            return Err(Status::invalid_argument(format!(
                "request_id {request_id:?} was used for a different request: use a new id for a new request"
            )));
        }
        let mut first = false;
        let mut full = None;
        let answer = entry
            .answer
            .get_or_try_init(|| {
                first = true;
                async {
                    let op = run().await?;
                    full = Some(op.clone());
                    // Kept small: the pods by name only.
                    Ok::<_, Status>(pb::Operation {
                        pods: op
                            .pods
                            .iter()
                            .map(|p| pb::PodTraffic {
                                cluster: p.cluster.clone(),
                                namespace: p.namespace.clone(),
                                name: p.name.clone(),
                                uid: p.uid.clone(),
                                kind: p.kind.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        ..op
                    })
                }
            })
            .await;
        let answer = match answer {
            Ok(a) => a.clone(),
            Err(e) => {
                // Not remembered: the same id may be used again.
                self.remembered
                    .remove_if(&key, |_, r| Arc::ptr_eq(r, &entry) && r.answer.get().is_none());
                return Err(e);
            }
        };
        if let Some(op) = full {
            return Ok(op);
        }
        Ok(pb::Operation {
            replayed: true,
            pods: answer.pods.iter().map(|p| self.current(p)).collect(),
            ..answer
        })
    }

    /// A pod's (or an endpoint record's) traffic state as the view has it now; the
    /// reference itself when it is gone.
    fn current(&self, p: &pb::PodTraffic) -> pb::PodTraffic {
        let now = if p.kind == "endpoint" {
            self.engine
                .endpoints
                .get(&(p.cluster.clone(), p.namespace.clone(), p.name.clone()))
                .map(|e| super::endpoint_traffic(&p.cluster, &e))
        } else {
            self.engine
                .pod_by_name(&p.cluster, &p.namespace, &p.name)
                .filter(|v| v.uid == p.uid)
                .map(|v| traffic(&v))
        };
        now.unwrap_or_else(|| p.clone())
    }

    /// One audit line per mutating call.
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        c: &Caller,
        verb: &str,
        what: &str,
        reason: &str,
        request_id: &str,
        validate_only: bool,
        result: &Result<pb::Operation, Status>,
    ) {
        let (code, message) = match result {
            Ok(op) if op.replayed => ("OK".to_string(), "replayed".to_string()),
            Ok(op) => ("OK".to_string(), op.plan.join("; ")),
            Err(s) => (format!("{:?}", s.code()), s.message().to_string()),
        };
        tracing::info!(
            target: "sluice::audit",
            who = %c.who.user,
            groups = %c.who.groups.join(","),
            via = c.who.via,
            verb,
            target = what,
            reason,
            request_id,
            validate_only,
            result = %code,
            detail = %message,
            trace_id = %c.trace_id,
            "audit"
        );
    }

    async fn drain_or_restore(
        &self,
        c: &Caller,
        verb: ApiVerb,
        r: &Resolved,
        reason: &str,
        request_id: &str,
        validate_only: bool,
    ) -> Result<pb::Operation, Status> {
        if let Some(endpoint) = &r.endpoint {
            return self
                .endpoint_op(c, &r.cluster, endpoint, reason, request_id, validate_only)
                .await;
        }
        // A repeat this replica does not remember (it restarted, or another replica took the
        // first call): every pod records the drain under this request id.
        if verb == ApiVerb::Drain
            && !request_id.is_empty()
            && r.pods.iter().all(|p| {
                p.desired.as_deref() == Some("drained")
                    && DesiredBy::parse(p.desired_by.as_deref()).is_some_and(|b| b.request_id == request_id)
            })
        {
            return Ok(pb::Operation {
                request_id: request_id.to_string(),
                validate_only,
                plan: r
                    .pods
                    .iter()
                    .map(|p| format!("{}: record sluice.dev/desired=drained", p.display()))
                    .collect(),
                pods: r.pods.iter().map(traffic).collect(),
                trace_id: c.trace_id.clone(),
                replayed: true,
            });
        }
        let mut plan = Vec::new();
        let mut act = Vec::new();
        for p in &r.pods {
            // A binding Sluice cannot use (a typo, a backend its namespace may not name)
            // holds the pod as it is: say so rather than record a drain that cannot happen.
            if let Some((name, why)) = self.engine.invalid_binding_for(p) {
                return Err(Status::failed_precondition(format!(
                    "{}: TrafficBinding {name} is invalid ({why}); Sluice holds the pod's traffic as it is until the \
                     binding is fixed",
                    p.display()
                )));
            }
            let signals = crate::planner::drain_signals(p);
            match verb {
                ApiVerb::Drain => {
                    if p.desired.as_deref() == Some("drained") {
                        plan.push(format!("{}: drain already asked ({})", p.display(), signals.join(", ")));
                    } else {
                        let bound = !self.engine.bindings_for(p).is_empty() || p.ledger_annotation.is_some();
                        plan.push(format!(
                            "{}: record sluice.dev/desired=drained{}",
                            p.display(),
                            if bound {
                                ""
                            } else {
                                " (no TrafficBinding selects it: nothing to take out)"
                            }
                        ));
                        act.push(p);
                    }
                }
                _ => {
                    let others: Vec<&String> = signals.iter().filter(|s| *s != "desired").collect();
                    if !others.is_empty() {
                        return Err(Status::failed_precondition(format!(
                            "{} cannot be restored: it is also drained by {} (Sluice restores it when {} ends); \
                             nothing was changed",
                            p.display(),
                            join(&others),
                            if others.len() == 1 { "that" } else { "they" }
                        )));
                    }
                    if p.desired.is_some() {
                        plan.push(format!("{}: remove sluice.dev/desired", p.display()));
                        act.push(p);
                    } else {
                        plan.push(format!("{}: no drain asked; nothing to withdraw", p.display()));
                    }
                }
            }
        }
        let mut pods: Vec<pb::PodTraffic> = r.pods.iter().map(traffic).collect();
        if !validate_only && !act.is_empty() {
            let writer = &self.engine.clusters[&r.cluster].writer;
            let by = DesiredBy {
                by: c.who.user.clone(),
                why: reason.to_string(),
                at: crate::model::status::now_text(),
                request_id: request_id.to_string(),
            };
            let by = serde_json::to_string(&by).expect("serializes");
            type Write<'a> =
                Pin<Box<dyn std::future::Future<Output = (PodView, Result<Written, WriteError>)> + Send + 'a>>;
            let (by, tp, etag) = (by.as_str(), c.traceparent.as_deref(), r.etag.as_deref());
            let writes: Vec<Write<'_>> = act
                .iter()
                .map(|p| {
                    let p = (*p).clone();
                    Box::pin(async move {
                        let res = match verb {
                            ApiVerb::Drain => {
                                writer
                                    .request_desired(&p.namespace, &p.name, &p.uid, etag, by, tp)
                                    .await
                            }
                            _ => writer.withdraw_desired(&p.namespace, &p.name, &p.uid, etag, tp).await,
                        };
                        (p, res)
                    }) as Write<'_>
                })
                .collect();
            let results = futures::stream::iter(writes)
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await;
            let mut failed = Vec::new();
            let mut first_error = None;
            for (p, res) in results {
                match res {
                    Ok(w) => {
                        // Taken into the view at once (a Get answers it), so the watch's
                        // echo of it changes nothing: the pod is kicked here instead.
                        self.engine.update_view(&r.cluster, w.pod());
                        self.engine.kick(p.key());
                        if let Some(v) = PodView::from_pod(&r.cluster, w.pod()) {
                            if let Some(slot) = pods.iter_mut().find(|x| x.uid == v.uid) {
                                *slot = traffic(&v);
                            }
                        }
                    }
                    Err(e) => {
                        failed.push(format!("{}: {e}", p.display()));
                        first_error.get_or_insert(write_status(e, r.uid.as_deref()));
                    }
                }
            }
            if let Some(e) = first_error {
                let done = act.len() - failed.len();
                let message = if r.pods.len() == 1 {
                    e.message().to_string()
                } else {
                    format!(
                        "written on {done} of {} pods; failed: {} (retry: the written pods are not written again)",
                        act.len(),
                        failed.join("; ")
                    )
                };
                return Err(Status::new(e.code(), message));
            }
        }
        Ok(pb::Operation {
            request_id: request_id.to_string(),
            validate_only,
            plan,
            pods,
            trace_id: c.trace_id.clone(),
            replayed: false,
        })
    }

    /// Streams the answer, then (with `wait`) progress until every pod reaches the goal
    /// or the wait ends.
    fn progress(
        &self,
        answer: pb::Operation,
        wait: Option<Duration>,
        verb: ApiVerb,
        mut updates: Option<tokio::sync::broadcast::Receiver<PodUpdate>>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Stream_<pb::Progress> {
        let engine = self.engine.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let _permit = permit;
            let mut state: HashMap<String, pb::PodTraffic> =
                answer.pods.iter().map(|p| (p.uid.clone(), p.clone())).collect();
            let goal = |t: &pb::PodTraffic, engine: &Engine| reached(engine, verb, t);
            let done_now = |s: &HashMap<String, pb::PodTraffic>| s.values().all(|t| goal(t, &engine));
            let first = pb::Progress {
                pods: answer.pods.clone(),
                done: done_now(&state),
                operation: Some(answer.clone()),
                timed_out: false,
            };
            let finished = first.done || wait.is_none() || answer.validate_only;
            if tx.send(Ok(first)).await.is_err() || finished {
                return;
            }
            let (Some(wait), Some(updates)) = (wait, updates.as_mut()) else {
                return;
            };
            let deadline = tokio::time::Instant::now() + wait;
            // Catch what changed between the answer and the subscription.
            let mut changed = refresh(&engine, &mut state);
            loop {
                if !changed.is_empty() {
                    let done = done_now(&state);
                    let msg = pb::Progress {
                        operation: None,
                        pods: std::mem::take(&mut changed),
                        done,
                        timed_out: false,
                    };
                    if tx.send(Ok(msg)).await.is_err() || done {
                        return;
                    }
                }
                // A caller gone ends the wait at once (not at its next message).
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = tokio::time::timeout_at(deadline, updates.recv()) => next,
                };
                match next {
                    Err(_) => {
                        let _ = tx
                            .send(Ok(pb::Progress {
                                operation: None,
                                pods: state.values().cloned().collect(),
                                done: false,
                                timed_out: true,
                            }))
                            .await;
                        return;
                    }
                    Ok(Ok(PodUpdate::Changed(v))) => {
                        if let Some(known) = state.get_mut(&v.uid) {
                            let t = traffic(&v);
                            if differs(known, &t) {
                                *known = t.clone();
                                changed.push(t);
                            }
                        }
                    }
                    Ok(Ok(PodUpdate::Deleted(v))) => {
                        if let Some(known) = state.get_mut(&v.uid) {
                            // A pod deleted after its drain (or during it: its traffic is
                            // gone with it): drained for good.
                            let mut t = traffic(&v);
                            t.state = "deleted".into();
                            *known = t.clone();
                            changed.push(t);
                        }
                    }
                    Ok(Ok(PodUpdate::Endpoint {
                        cluster,
                        record,
                        deleted,
                    })) => {
                        if let Some(known) = state.get_mut(record.metadata.uid.as_deref().unwrap_or("")) {
                            let mut t = super::endpoint_traffic(&cluster, &record);
                            if deleted {
                                t.state = "deleted".into();
                            }
                            if differs(known, &t) {
                                *known = t.clone();
                                changed.push(t);
                            }
                        }
                    }
                    Ok(Err(RecvError::Lagged(_))) => changed = refresh(&engine, &mut state),
                    Ok(Err(RecvError::Closed)) => return,
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Whether a pod reached what the call asked for.
fn reached(engine: &Engine, verb: ApiVerb, t: &pb::PodTraffic) -> bool {
    if t.kind == "endpoint" {
        return match verb {
            ApiVerb::Drain => matches!(t.state.as_str(), "drained" | "deleted"),
            _ => t.state == "serving",
        };
    }
    let unbound = t.state == "unbound"
        || (t.state.is_empty()
            && engine
                .pod_by_name(&t.cluster, &t.namespace, &t.name)
                .is_some_and(|p| engine.bindings_for(&p).is_empty() && p.ledger_annotation.is_none()));
    // The status is written before the finalizers go: a drain is over once they have.
    let kind_finalizers = t.finalizers.iter().any(|f| f != crate::model::LEDGER_FINALIZER);
    match verb {
        ApiVerb::Drain => match t.state.as_str() {
            "deleted" => true,
            "drained" => t.finalizers.is_empty(),
            "released" => !kind_finalizers,
            _ => unbound,
        },
        _ => (t.state == "serving" && t.gate == "True") || unbound,
    }
}

/// The pods of `state` as the view has them now; answers those that changed.
fn refresh(engine: &Engine, state: &mut HashMap<String, pb::PodTraffic>) -> Vec<pb::PodTraffic> {
    let mut out = Vec::new();
    for known in state.values_mut() {
        let now = if known.kind == "endpoint" {
            engine
                .endpoints
                .get(&(known.cluster.clone(), known.namespace.clone(), known.name.clone()))
                .map(|e| super::endpoint_traffic(&known.cluster, &e))
        } else {
            engine
                .pods
                .get(&crate::model::PodKey {
                    cluster: known.cluster.clone(),
                    uid: known.uid.clone(),
                })
                .map(|p| traffic(&p))
        };
        let t = match now {
            Some(t) => t,
            None if known.state == "deleted" => continue,
            None => pb::PodTraffic {
                state: "deleted".into(),
                ..known.clone()
            },
        };
        if differs(known, &t) {
            *known = t.clone();
            out.push(t);
        }
    }
    out
}

/// A change worth telling a watcher (the etag alone changes with every write).
fn differs(a: &pb::PodTraffic, b: &pb::PodTraffic) -> bool {
    pb::PodTraffic {
        etag: String::new(),
        ..a.clone()
    } != pb::PodTraffic {
        etag: String::new(),
        ..b.clone()
    }
}

/// The request's identity for AIP-155: the method and the message.
fn fingerprint(method: &str, m: &impl Message) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(method.as_bytes());
    ctx.update(&[0]);
    ctx.update(&m.encode_to_vec());
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn join(v: &[impl AsRef<str>]) -> String {
    v.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(", ")
}

fn not_found(cluster: &str, ns: &str, name: &str) -> Status {
    Status::not_found(format!("no pod {ns}/{name} in cluster {cluster:?}"))
}

/// A DNS label (namespace, at most 63) or subdomain (pod name, at most 253).
fn check_name(field: &str, v: &str, max: usize) -> Result<(), Status> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || (max > 63 && c == b'.'))
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} {v:?} is not a valid name (lowercase letters, digits and '-'{}, at most {max} characters)",
            if max > 63 { ", '.'" } else { "" }
        )))
    }
}

fn check_mutation(reason: &str, request_id: &str) -> Result<(), Status> {
    if reason.trim().is_empty() {
        return Err(Status::invalid_argument(
            "reason is required: say why (it is kept in the audit line and on the pod)",
        ));
    }
    if reason.len() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "reason is {} bytes; at most {MAX_REASON}",
            reason.len()
        )));
    }
    if request_id.len() > MAX_REQUEST_ID
        || !request_id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    {
        return Err(Status::invalid_argument(format!(
            "request_id must be at most {MAX_REQUEST_ID} letters, digits, '-', '_', '.', ':' (a UUID is best)"
        )));
    }
    Ok(())
}

fn wait_of(wait: bool, seconds: u32) -> Result<Option<Duration>, Status> {
    if !wait {
        if seconds != 0 {
            return Err(Status::invalid_argument(
                "wait_seconds is set but wait is false: set wait, or drop wait_seconds",
            ));
        }
        return Ok(None);
    }
    let s = if seconds == 0 { DEFAULT_WAIT } else { seconds };
    if s > MAX_WAIT {
        return Err(Status::invalid_argument(format!(
            "wait_seconds {s} is above {MAX_WAIT}: wait again with Watch for longer"
        )));
    }
    Ok(Some(Duration::from_secs(u64::from(s))))
}

/// A pod write's failure, as a status.
fn write_status(e: WriteError, uid: Option<&str>) -> Status {
    match e {
        WriteError::Precondition(m) => Status::aborted(m),
        WriteError::NotLeader(m) => Status::unavailable(format!("not written: this gateway is {m}")),
        WriteError::Ledger(e) => Status::failed_precondition(e.to_string()),
        WriteError::Kube(kube::Error::Api(s)) if s.code == 404 => {
            if uid.is_some() || s.message.contains("no longer the pod") {
                Status::aborted(s.message.clone())
            } else {
                Status::not_found(s.message.clone())
            }
        }
        WriteError::Kube(kube::Error::Api(s)) if s.code == 403 => Status::failed_precondition(format!(
            "the API server refused the write ({}): grant the gateway's ServiceAccount patch on pods",
            s.message
        )),
        WriteError::Kube(e) => Status::unavailable(format!("the API server did not take the write: {e}; try again")),
    }
}

#[tonic::async_trait]
impl pb::sluice_server::Sluice for ApiService {
    type DrainStream = Stream_<pb::Progress>;
    type RestoreStream = Stream_<pb::Progress>;
    type WatchStream = Stream_<pb::WatchEvent>;

    async fn drain(&self, req: Request<pb::DrainRequest>) -> Result<Response<Self::DrainStream>, Status> {
        self.mutation(req).await
    }

    async fn restore(&self, req: Request<pb::RestoreRequest>) -> Result<Response<Self::RestoreStream>, Status> {
        self.mutation(req).await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::PodTraffic>, Status> {
        let c = self.caller(&req).await?;
        let p = req
            .into_inner()
            .pod
            .ok_or_else(|| Status::invalid_argument("pod is required"))?;
        let cluster = self.cluster(&p.cluster)?;
        check_name("pod.namespace", &p.namespace, 63)?;
        check_name("pod.name", &p.name, 253)?;
        self.authorize(&c, ApiVerb::Read, &cluster, &p.namespace)?;
        self.live(&cluster)?;
        let pod = self
            .engine
            .pod_by_name(&cluster, &p.namespace, &p.name)
            .filter(|pod| p.uid.is_empty() || pod.uid == p.uid)
            .ok_or_else(|| not_found(&cluster, &p.namespace, &p.name))?;
        Ok(Response::new(traffic(&pod)))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let c = self.caller(&req).await?;
        let m = req.into_inner();
        let cluster = if m.cluster.is_empty() {
            None
        } else {
            Some(self.cluster(&m.cluster)?)
        };
        if !m.namespace.is_empty() {
            check_name("namespace", &m.namespace, 63)?;
        }
        let sel = LabelSelector::parse(&m.label_selector).map_err(Status::invalid_argument)?;
        if m.page_size > MAX_PAGE {
            return Err(Status::invalid_argument(format!(
                "page_size {} is above {MAX_PAGE}",
                m.page_size
            )));
        }
        let size = if m.page_size == 0 { DEFAULT_PAGE } else { m.page_size } as usize;
        match (&cluster, m.namespace.is_empty()) {
            (Some(cl), false) => self.authorize(&c, ApiVerb::Read, cl, &m.namespace)?,
            _ if self.rules.allows_some(&c.who, ApiVerb::Read, cluster.as_deref()) => {}
            _ => {
                return Err(Status::permission_denied(format!(
                    "{} may not read anywhere{}: no rule in api.rules allows it",
                    c.who.user,
                    cluster
                        .as_deref()
                        .map(|c| format!(" in cluster {c:?}"))
                        .unwrap_or_default()
                )))
            }
        }
        if let Some(cl) = &cluster {
            self.live(cl)?;
        }
        let after: Option<(String, String, String)> = if m.page_token.is_empty() {
            None
        } else {
            let mut parts = m.page_token.splitn(3, '/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), Some(c)) => Some((a.into(), b.into(), c.into())),
                _ => return Err(Status::invalid_argument("page_token is not one this API gave out")),
            }
        };
        let mut rows: Vec<PodView> = self
            .engine
            .pods
            .iter()
            .filter(|p| cluster.as_ref().is_none_or(|c| &p.cluster == c))
            .filter(|p| m.namespace.is_empty() || p.namespace == m.namespace)
            .filter(|p| sel.matches(&p.labels))
            .filter(|p| {
                after.as_ref().is_none_or(|a| {
                    (p.cluster.as_str(), p.namespace.as_str(), p.name.as_str())
                        > (a.0.as_str(), a.1.as_str(), a.2.as_str())
                })
            })
            .filter(|p| self.rules.allows(&c.who, ApiVerb::Read, &p.cluster, &p.namespace))
            .filter(|p| {
                p.status_annotation.is_some()
                    || p.ledger_annotation.is_some()
                    || !self.engine.bindings_for(p).is_empty()
            })
            .map(|p| p.clone())
            .collect();
        rows.sort_by(|a, b| (&a.cluster, &a.namespace, &a.name).cmp(&(&b.cluster, &b.namespace, &b.name)));
        let next = (rows.len() > size).then(|| {
            let last = &rows[size - 1];
            format!("{}/{}/{}", last.cluster, last.namespace, last.name)
        });
        rows.truncate(size);
        Ok(Response::new(pb::ListResponse {
            pods: rows.iter().map(traffic).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let c = self.caller(&req).await?;
        let m = req.into_inner();
        use pb::target::Target as T;
        // `endpoint`: the watch follows one EndpointDrain record (`name`), not pods.
        let (cluster, namespace, name, sel, endpoint) = match m.target.and_then(|t| t.target) {
            Some(T::Pod(p)) => {
                let cluster = self.cluster(&p.cluster)?;
                check_name("pod.namespace", &p.namespace, 63)?;
                check_name("pod.name", &p.name, 253)?;
                (cluster, p.namespace, Some(p.name), LabelSelector::default(), false)
            }
            Some(T::Selector(s)) => {
                let cluster = self.cluster(&s.cluster)?;
                check_name("selector.namespace", &s.namespace, 63)?;
                let sel = LabelSelector::parse(&s.label_selector).map_err(Status::invalid_argument)?;
                (cluster, s.namespace, None, sel, false)
            }
            Some(T::Endpoint(e)) => {
                let cluster = self.cluster(&e.cluster)?;
                check_name("endpoint.namespace", &e.namespace, 63)?;
                let (_, _, name) = endpoint_record(&e)?;
                (cluster, e.namespace, Some(name), LabelSelector::default(), true)
            }
            None => {
                return Err(Status::invalid_argument(
                    "target is required: a pod, a selector or an endpoint",
                ))
            }
        };
        self.authorize(&c, ApiVerb::Read, &cluster, &namespace)?;
        self.live(&cluster)?;
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} watches are open (api.maxWatches); close one or try again later",
                self.cfg.max_watches
            ))
        })?;
        let engine = self.engine.clone();
        let record_key = (cluster.clone(), namespace.clone(), name.clone().unwrap_or_default());
        let matches = move |p: &PodView| {
            !endpoint
                && p.cluster == cluster
                && p.namespace == namespace
                && name.as_ref().is_none_or(|n| &p.name == n)
                && sel.matches(&p.labels)
        };
        let is_record = move |c: &str, r: &crate::endpoint::EndpointDrain| {
            endpoint
                && c == record_key.0
                && r.metadata.namespace.as_deref() == Some(record_key.1.as_str())
                && r.metadata.name.as_deref() == Some(record_key.2.as_str())
        };

        // Subscribed before the snapshot is taken: nothing falls between.
        let mut updates = engine.updates.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let _permit = permit;
            let mut sent: BTreeMap<String, pb::PodTraffic> = BTreeMap::new();
            let snapshot = |engine: &Engine| -> Vec<pb::PodTraffic> {
                let mut v: Vec<PodView> = engine.pods.iter().filter(|p| matches(p)).map(|p| p.clone()).collect();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                let mut out: Vec<pb::PodTraffic> = v.iter().map(traffic).collect();
                out.extend(
                    engine
                        .endpoints
                        .iter()
                        .filter(|e| is_record(&e.key().0, e.value()))
                        .map(|e| super::endpoint_traffic(&e.key().0, e.value())),
                );
                out
            };
            for t in snapshot(&engine) {
                sent.insert(t.uid.clone(), t.clone());
                let ev = pb::WatchEvent {
                    r#type: pb::watch_event::Type::Snapshot as i32,
                    pod: Some(t),
                };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            if tx
                .send(Ok(pb::WatchEvent {
                    r#type: pb::watch_event::Type::Synced as i32,
                    pod: None,
                }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let events: Vec<pb::WatchEvent> = tokio::select! {
                    _ = tx.closed() => return,
                    u = updates.recv() => match u {
                        Ok(PodUpdate::Changed(v)) if matches(&v) => {
                            let t = traffic(&v);
                            match sent.get(&t.uid) {
                                Some(old) if !differs(old, &t) => vec![],
                                _ => {
                                    sent.insert(t.uid.clone(), t.clone());
                                    vec![pb::WatchEvent { r#type: pb::watch_event::Type::Changed as i32, pod: Some(t) }]
                                }
                            }
                        }
                        // A pod that no longer matches (its labels changed) leaves the watch.
                        Ok(PodUpdate::Changed(v)) => match sent.remove(&v.uid) {
                            Some(_) => vec![pb::WatchEvent { r#type: pb::watch_event::Type::Deleted as i32, pod: Some(traffic(&v)) }],
                            None => vec![],
                        },
                        Ok(PodUpdate::Deleted(v)) => match sent.remove(&v.uid) {
                            Some(_) => vec![pb::WatchEvent { r#type: pb::watch_event::Type::Deleted as i32, pod: Some(traffic(&v)) }],
                            None => vec![],
                        },
                        Ok(PodUpdate::Endpoint { cluster, record, deleted }) if is_record(&cluster, &record) => {
                            let t = super::endpoint_traffic(&cluster, &record);
                            if deleted {
                                sent.remove(&t.uid);
                                vec![pb::WatchEvent { r#type: pb::watch_event::Type::Deleted as i32, pod: Some(t) }]
                            } else {
                                match sent.get(&t.uid) {
                                    Some(old) if !differs(old, &t) => vec![],
                                    _ => {
                                        sent.insert(t.uid.clone(), t.clone());
                                        vec![pb::WatchEvent { r#type: pb::watch_event::Type::Changed as i32, pod: Some(t) }]
                                    }
                                }
                            }
                        }
                        Ok(PodUpdate::Endpoint { .. }) => vec![],
                        // Fell behind: what changed meanwhile is read from the view.
                        Err(RecvError::Lagged(_)) => {
                            let now: BTreeMap<String, pb::PodTraffic> =
                                snapshot(&engine).into_iter().map(|t| (t.uid.clone(), t)).collect();
                            let mut out = Vec::new();
                            let old_sent = std::mem::take(&mut sent);
                            for (uid, old) in old_sent.clone() {
                                if !now.contains_key(&uid) {
                                    out.push(pb::WatchEvent { r#type: pb::watch_event::Type::Deleted as i32, pod: Some(old) });
                                }
                            }
                            for (uid, t) in now {
                                if old_sent.get(&uid).is_none_or(|old| differs(old, &t)) {
                                    out.push(pb::WatchEvent { r#type: pb::watch_event::Type::Changed as i32, pod: Some(t.clone()) });
                                }
                                sent.insert(uid, t);
                            }
                            out
                        }
                        Err(RecvError::Closed) => return,
                    },
                };
                for ev in events {
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn release(&self, req: Request<pb::ReleaseRequest>) -> Result<Response<pb::Operation>, Status> {
        let c = self
            .mutating_caller(&req, "release", describe_ref(req.get_ref().pod.as_ref()))
            .await?;
        let m = req.into_inner();
        let what = m
            .pod
            .as_ref()
            .map(|p| format!("pod {}/{}/{} kind {:?}", p.cluster, p.namespace, p.name, m.kind))
            .unwrap_or_default();
        let fp = fingerprint("Release", &m);
        let result = async {
            check_mutation(&m.reason, &m.request_id)?;
            let target = pb::Target {
                target: Some(pb::target::Target::Pod(
                    m.pod
                        .clone()
                        .ok_or_else(|| Status::invalid_argument("pod is required"))?,
                )),
            };
            let r = self.resolve(&c, ApiVerb::Release, Some(&target))?;
            self.once(&c, &m.request_id, m.validate_only, fp, || self.release_pod(&c, &r, &m))
                .await
        }
        .await;
        self.audit(&c, "release", &what, &m.reason, &m.request_id, m.validate_only, &result);
        result.map(Response::new)
    }
}

/// What a Drain and a Restore request share.
trait Mutation: Message + Send + 'static {
    const METHOD: &'static str;
    const VERB: ApiVerb;
    fn target(&self) -> Option<&pb::Target>;
    fn reason(&self) -> &str;
    fn request_id(&self) -> &str;
    fn validate_only(&self) -> bool;
    fn wait(&self) -> (bool, u32);
}

macro_rules! mutation {
    ($message:ty, $method:literal, $verb:expr) => {
        impl Mutation for $message {
            const METHOD: &'static str = $method;
            const VERB: ApiVerb = $verb;
            fn target(&self) -> Option<&pb::Target> {
                self.target.as_ref()
            }
            fn reason(&self) -> &str {
                &self.reason
            }
            fn request_id(&self) -> &str {
                &self.request_id
            }
            fn validate_only(&self) -> bool {
                self.validate_only
            }
            fn wait(&self) -> (bool, u32) {
                (self.wait, self.wait_seconds)
            }
        }
    };
}

mutation!(pb::DrainRequest, "Drain", ApiVerb::Drain);
mutation!(pb::RestoreRequest, "Restore", ApiVerb::Restore);

impl ApiService {
    /// A Drain or a Restore: authenticated (and audited when refused), then [`Self::mutate`].
    async fn mutation<M: Mutation>(&self, req: Request<M>) -> Result<Response<Stream_<pb::Progress>>, Status> {
        let c = self
            .mutating_caller(&req, M::VERB.as_str(), describe_target(req.get_ref().target()))
            .await?;
        let m = req.into_inner();
        let fp = fingerprint(M::METHOD, &m);
        self.mutate(
            &c,
            M::VERB,
            m.target(),
            m.reason(),
            m.request_id(),
            m.validate_only(),
            m.wait(),
            fp,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn mutate(
        &self,
        c: &Caller,
        verb: ApiVerb,
        target: Option<&pb::Target>,
        reason: &str,
        request_id: &str,
        validate_only: bool,
        wait: (bool, u32),
        fp: [u8; 32],
    ) -> Result<Response<Stream_<pb::Progress>>, Status> {
        let mut what = describe_target(target);
        let mut updates = None;
        let mut permit = None;
        let result = async {
            check_mutation(reason, request_id)?;
            let wait = wait_of(wait.0, wait.1)?;
            let r = self.resolve(c, verb, target)?;
            what = r.what.clone();
            // Subscribed before the write: no transition is missed. A waiting stream counts
            // as a watch (api.maxWatches).
            if wait.is_some() && !validate_only {
                permit = Some(self.watches.clone().try_acquire_owned().map_err(|_| {
                    Status::resource_exhausted(format!(
                        "{} watches and waits are open (api.maxWatches): ask without wait, or try again later",
                        self.cfg.max_watches
                    ))
                })?);
                updates = Some(self.engine.updates.subscribe());
            }
            let op = self
                .once(c, request_id, validate_only, fp, || {
                    self.drain_or_restore(c, verb, &r, reason, request_id, validate_only)
                })
                .await?;
            Ok::<_, Status>((op, wait))
        }
        .await;
        let audited = result.as_ref().map(|(op, _)| op.clone()).map_err(Clone::clone);
        self.audit(c, verb.as_str(), &what, reason, request_id, validate_only, &audited);
        let (op, wait) = result?;
        Ok(Response::new(self.progress(op, wait, verb, updates, permit)))
    }

    async fn release_pod(&self, c: &Caller, r: &Resolved, m: &pb::ReleaseRequest) -> Result<pb::Operation, Status> {
        let pod = &r.pods[0];
        if m.kind == crate::model::ledger::RESERVED_KIND {
            return Err(Status::invalid_argument(
                "the ledger guard (sluice.dev/ledger) is never released: it keeps the pod's record until every \
                 recorded address is out. Release a traffic kind's finalizer (slb, dns, rpc, ...) to let the rollout \
                 go on",
            ));
        }
        let held = pod.kind_finalizers();
        let kinds: Vec<String> = if m.kind.is_empty() {
            held.iter().cloned().collect()
        } else if held.contains(&m.kind) {
            vec![m.kind.clone()]
        } else {
            return Err(Status::failed_precondition(format!(
                "{} has no finalizer sluice.dev/{} (it has: {}); nothing to release",
                pod.display(),
                m.kind,
                if held.is_empty() {
                    "none".to_string()
                } else {
                    join(&held.iter().collect::<Vec<_>>())
                }
            )));
        };
        if kinds.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{} holds no traffic finalizer of Sluice's; nothing to release",
                pod.display()
            )));
        }
        if crate::planner::drain_signals(pod).is_empty() {
            return Err(Status::failed_precondition(format!(
                "{} is not being drained: a release only lets a drain's rollout go on without verification \
                 (drain it first)",
                pod.display()
            )));
        }
        let plan: Vec<String> = kinds
            .iter()
            .map(|k| {
                format!(
                    "{}: remove finalizer sluice.dev/{k} WITHOUT verified drain",
                    pod.display()
                )
            })
            .collect();
        if !m.validate_only {
            if !self.engine.authority.may_write() {
                return Err(Status::unavailable(format!(
                    "this replica is {}: a release is performed by the leader; send it to the leader (the Service \
                     routes to ready replicas; retry)",
                    self.engine.authority.describe()
                )));
            }
            let writer = &self.engine.clusters[&r.cluster].writer;
            let edit = crate::k8s::MetaEdit {
                remove_finalizers: kinds.iter().map(|k| crate::model::finalizer(k)).collect(),
                ..Default::default()
            };
            let written = writer
                .edit(&pod.namespace, &pod.name, &pod.uid, &edit)
                .await
                .map_err(|e| write_status(e, Some(&pod.uid)))?;
            self.engine.update_view(&r.cluster, written.pod());
            if written.changed() {
                writer
                    .event(
                        &crate::k8s::writer::pod_reference(&pod.namespace, &pod.name, &pod.uid),
                        true,
                        "DrainReleased",
                        "Release",
                        format!(
                            "released by {} through the API: {}; finalizer(s) {} removed WITHOUT verified drain; the \
                             ledger guard stays until every recorded address is out",
                            c.who.user,
                            m.reason,
                            kinds
                                .iter()
                                .map(|k| format!("sluice.dev/{k}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .await;
            }
            // The worker looks again (it goes on deregistering what the ledger holds).
            self.engine.kick(pod.key());
        }
        let now = self
            .engine
            .pod_by_name(&r.cluster, &pod.namespace, &pod.name)
            .unwrap_or_else(|| pod.clone());
        Ok(pb::Operation {
            request_id: m.request_id.clone(),
            validate_only: m.validate_only,
            plan,
            pods: vec![traffic(&now)],
            trace_id: c.trace_id.clone(),
            replayed: false,
        })
    }
}

/// An endpoint's address, port and record name; the error says which is malformed.
fn endpoint_record(e: &pb::Endpoint) -> Result<(std::net::IpAddr, u16, String), Status> {
    let ip: std::net::IpAddr = e
        .address
        .parse()
        .map_err(|_| Status::invalid_argument(format!("endpoint.address {:?} is not an IP address", e.address)))?;
    let port = u16::try_from(e.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Status::invalid_argument(format!("endpoint.port {} is not a port number (1-65535)", e.port)))?;
    Ok((ip, port, crate::endpoint::record_name(&ip, port)))
}

fn describe_ref(p: Option<&pb::PodRef>) -> String {
    p.map(|p| format!("pod {}/{}/{}", p.cluster, p.namespace, p.name))
        .unwrap_or_else(|| "(none)".into())
}

fn describe_target(t: Option<&pb::Target>) -> String {
    use pb::target::Target as T;
    match t.and_then(|t| t.target.as_ref()) {
        Some(T::Pod(p)) => format!("pod {}/{}/{}", p.cluster, p.namespace, p.name),
        Some(T::Selector(s)) => format!("pods {}/{}/{{{}}}", s.cluster, s.namespace, s.label_selector),
        Some(T::Endpoint(e)) => format!("endpoint {}:{}", e.address, e.port),
        None => "(none)".into(),
    }
}

impl ApiService {
    /// A Drain or Restore of an address outside Kubernetes: creates or updates its
    /// EndpointDrain record (a request: any replica but a shadow writes it; the leader's
    /// controller acts on it).
    #[allow(clippy::too_many_arguments)]
    async fn endpoint_op(
        &self,
        c: &Caller,
        cluster: &str,
        endpoint: &(String, String, crate::endpoint::EndpointDrainSpec),
        reason: &str,
        request_id: &str,
        validate_only: bool,
    ) -> Result<pb::Operation, Status> {
        use crate::endpoint::{Desired, EndpointDrain};
        let (namespace, name, spec) = endpoint;
        let mut spec = spec.clone();
        spec.reason = reason.to_string();
        let key = (cluster.to_string(), namespace.clone(), name.clone());
        let existing = self.engine.endpoints.get(&key).map(|e| e.clone());
        let addr = format!("{}:{}", spec.address, spec.port);
        if let Some(e) = &existing {
            if e.spec.address.parse::<std::net::IpAddr>().ok() != spec.address.parse().ok() {
                return Err(Status::failed_precondition(format!(
                    "EndpointDrain {namespace}/{name} records address {}, not {}",
                    e.spec.address, spec.address
                )));
            }
            if e.metadata.deletion_timestamp.is_some() {
                return Err(Status::failed_precondition(format!(
                    "EndpointDrain {namespace}/{name} is being deleted: its address is drained first, then the record \
                     goes; ask again once it is gone"
                )));
            }
            // What the record's owner set stays (the API does not carry them).
            spec.settle_seconds = e.spec.settle_seconds;
            spec.deadline_seconds = e.spec.deadline_seconds;
        } else {
            let probe = EndpointDrain::new(name, spec.clone());
            if let Some(why) = crate::endpoint::conflict(&self.engine, &key, &probe) {
                return Err(Status::failed_precondition(why));
            }
        }
        let plan = match (&existing, spec.desired) {
            (Some(e), desired) if e.spec.targets != spec.targets => {
                // Other targets only once the old ones are verified drained: what they
                // registered is never left without a record.
                let status = e.status.clone().unwrap_or_default();
                let drained = e.spec.desired == Desired::Drained && status.state == "drained";
                if !drained {
                    return Err(Status::failed_precondition(format!(
                        "EndpointDrain {namespace}/{name} records other targets for {addr}: drain it with its own \
                         targets first (a Restore may leave the targets out)"
                    )));
                }
                format!(
                    "{cluster}/{namespace}/{name}: record {addr} as {} in new targets",
                    if desired == Desired::Drained {
                        "drained"
                    } else {
                        "serving"
                    }
                )
            }
            (Some(e), desired) if e.spec.desired == desired => {
                format!("{cluster}/{namespace}/{name}: {addr} already asked to be {desired:?}")
            }
            (Some(_), Desired::Drained) => format!("{cluster}/{namespace}/{name}: drain {addr} (desired Drained)"),
            (Some(_), Desired::Serving) => format!("{cluster}/{namespace}/{name}: restore {addr} (desired Serving)"),
            (None, _) => format!(
                "{cluster}/{namespace}/{name}: record EndpointDrain and drain {addr} from {} target(s)",
                spec.targets.len()
            ),
        };
        let mut pods = existing
            .as_ref()
            .map(|e| vec![super::endpoint_traffic(cluster, e)])
            .unwrap_or_default();
        let unchanged = existing
            .as_ref()
            .is_some_and(|e| e.spec.desired == spec.desired && e.spec.targets == spec.targets);
        if !validate_only && !unchanged {
            if self.engine.authority.role() == crate::authority::Role::Shadow {
                return Err(Status::unavailable("not written: this gateway is a shadow"));
            }
            let client = self.engine.clusters[cluster].writer.client().clone();
            let api: kube::Api<EndpointDrain> = kube::Api::namespaced(client, namespace);
            let params = kube::api::PatchParams {
                field_manager: Some(self.engine.cfg.instance.clone()),
                ..Default::default()
            };
            let written = match &existing {
                None => {
                    let mut record = EndpointDrain::new(name, spec.clone());
                    record.metadata.finalizers = Some(vec![crate::endpoint::ENDPOINT_FINALIZER.to_string()]);
                    match api.create(&kube::api::PostParams::default(), &record).await {
                        Ok(w) => w,
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            return Err(Status::aborted(format!(
                                "EndpointDrain {namespace}/{name} was created meanwhile; try again"
                            )))
                        }
                        Err(e) => return Err(kube_status(e)),
                    }
                }
                Some(e) => {
                    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
                        {"op": "test", "path": "/metadata/uid", "value": e.metadata.uid},
                        {"op": "test", "path": "/metadata/resourceVersion", "value": e.metadata.resource_version},
                        {"op": "replace", "path": "/spec", "value": spec},
                    ]))
                    .expect("a JSON patch");
                    match api.patch(name, &params, &kube::api::Patch::Json::<()>(patch)).await {
                        Ok(w) => w,
                        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 => {
                            return Err(Status::aborted(format!(
                                "EndpointDrain {namespace}/{name} changed meanwhile; read it again and retry"
                            )))
                        }
                        Err(e) => return Err(kube_status(e)),
                    }
                }
            };
            crate::endpoint::apply_written(&self.engine, cluster, written.clone());
            crate::endpoint::kick(&self.engine, key);
            pods = vec![super::endpoint_traffic(cluster, &written)];
        }
        if pods.is_empty() {
            // A dry run of a new record: what it would be.
            let mut record = EndpointDrain::new(name, spec);
            record.metadata.namespace = Some(namespace.clone());
            pods = vec![super::endpoint_traffic(cluster, &record)];
        }
        Ok(pb::Operation {
            request_id: request_id.to_string(),
            validate_only,
            plan: vec![plan],
            pods,
            trace_id: c.trace_id.clone(),
            replayed: false,
        })
    }
}

fn kube_status(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) if s.code == 403 => Status::failed_precondition(format!(
            "the API server refused the write ({}): grant the gateway's ServiceAccount create and patch on \
             endpointdrains",
            s.message
        )),
        kube::Error::Api(s) if s.code == 404 => Status::failed_precondition(format!(
            "the EndpointDrain CRD is not installed ({}): run `sluice crd | kubectl apply -f -`",
            s.message
        )),
        e => Status::unavailable(format!("the API server did not take the write: {e}; try again")),
    }
}
