//! Endpoint drains: addresses outside Kubernetes (VMs, bare-metal hosts) behind the same
//! load balancers, DNS names and registries as the pods.
//!
//! The request and its progress live in the cluster, in an `EndpointDrain`
//! (`sluice.dev/v1alpha1`, namespaced; `sluice crd` prints its CRD): `spec` says which
//! address, in which adapter targets, and whether it should be `Drained` or `Serving`
//! (written by the API, by any replica: it is a request); `status` says where it stands,
//! with the evidence per target and when the operation started (so a deadline survives a
//! restart). The leader's controller ([`watch_endpoints`], one worker per record) drives
//! the adapters until the evidence says the address is out (or back in and serving). A
//! restarted or new leader reads the records and carries on. The orphan sweep counts a
//! record's targets as claimed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_adapter::{PodRef, Target, TrafficState};
use tracing::{info, warn};

use crate::binding::BindingTarget;
use crate::engine::{ClusterHandle, Engine};

/// An address outside Kubernetes, taken out of (or put back into) traffic components.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "EndpointDrain",
    namespaced,
    status = "EndpointDrainStatus",
    shortname = "ed",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.port"}"#,
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.desired"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EndpointDrainSpec {
    /// The IP address the traffic components send to.
    pub address: String,
    pub port: i32,
    /// Where the address is registered (adapter instance and parameters, as in a
    /// TrafficBinding).
    pub targets: Vec<BindingTarget>,
    pub desired: Desired,
    /// How long a drain may take before it is reported blocked (it goes on); the gateway's
    /// default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<i64>,
    /// Extra time every target must stay drained before the drain counts as done.
    #[serde(default)]
    pub settle_seconds: i64,
    /// Who asked last, and why (from the API's audit identity and `reason`).
    #[serde(default)]
    pub requested_by: String,
    #[serde(default)]
    pub reason: String,
    /// The caller's trace (W3C traceparent), when it sent one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, JsonSchema, PartialEq, Eq)]
pub enum Desired {
    Drained,
    Serving,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointDrainStatus {
    /// `draining`, `drained`, `restoring`, `serving` or `blocked`.
    #[serde(default)]
    pub state: String,
    /// The desired state (and generation) the status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Desired>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the current operation started (RFC 3339): its deadline survives restarts.
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub last_transition: String,
    /// Per target: its state and the evidence (`Drained: scur=0`).
    #[serde(default)]
    pub targets: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
}

/// The finalizer a record carries: it goes only once the address is verified drained, so
/// deleting a record first takes its address out (never leaves a registration without a
/// record).
pub const ENDPOINT_FINALIZER: &str = "sluice.dev/endpoint";

/// The record's name for an address and port (one name per address and port, never shared:
/// `ep-10-0-0-5-8080`, `ep-v6-20010db8000000000000000000000005-8080`).
pub fn record_name(address: &IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("ep-{}-{}-{}-{}-{port}", o[0], o[1], o[2], o[3])
        }
        IpAddr::V6(a) => format!("ep-v6-{:032x}-{port}", u128::from(*a)),
    }
}

/// The key of a record in the engine: (cluster, namespace, name).
pub type EndpointKey = (String, String, String);

/// What a record asks for, checked: the address, port and targets the adapters accept.
pub struct Checked {
    pub ip: IpAddr,
    pub port: u16,
    pub targets: Vec<(String, BTreeMap<String, String>)>,
}

/// Checks a record's spec against the configuration (adapters, their required parameters,
/// tenancy); the error says what to fix.
pub fn check(engine: &Engine, namespace: &str, spec: &EndpointDrainSpec) -> Result<Checked, String> {
    let ip: IpAddr = spec
        .address
        .parse()
        .map_err(|_| format!("address {:?} is not an IP address", spec.address))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!("address {ip} cannot be an endpoint"));
    }
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {} is not a port number (1-65535)", spec.port))?;
    if spec.targets.is_empty() || spec.targets.len() > 16 {
        return Err(format!("targets: 1 to 16 are needed, not {}", spec.targets.len()));
    }
    if !(0..=3600).contains(&spec.settle_seconds) {
        return Err(format!(
            "settleSeconds {} is out of range (0 to 3600)",
            spec.settle_seconds
        ));
    }
    if spec.deadline_seconds.is_some_and(|d| !(1..=86_400).contains(&d)) {
        return Err("deadlineSeconds is out of range (1 to 86400)".into());
    }
    let mut targets = Vec::new();
    for (i, t) in spec.targets.iter().enumerate() {
        let adapter = engine.adapters.get(&t.adapter).ok_or_else(|| {
            format!(
                "targets[{i}].adapter: no adapter instance {:?} (known: {})",
                t.adapter,
                engine.adapters.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        for p in adapter.capabilities().required_params {
            if !t.params.contains_key(&p) {
                return Err(format!("targets[{i}].params.{p}: required by adapter {:?}", t.adapter));
            }
        }
        engine
            .tenancy()
            .check_endpoint(namespace, &t.adapter, &t.params, ip)
            .map_err(|why| format!("targets[{i}]: {why}"))?;
        targets.push((t.adapter.clone(), t.params.clone()));
    }
    Ok(Checked { ip, port, targets })
}

/// `kind/adapter/k=v,… ip:port`: a target's name in the status.
fn target_name(kind: &str, adapter: &str, params: &BTreeMap<String, String>, ip: IpAddr, port: u16) -> String {
    let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{kind}/{adapter}/{} {}",
        p.join(","),
        std::net::SocketAddr::new(ip, port)
    )
}

/// Watches the EndpointDrain records of one cluster into the engine, and kicks their
/// workers (again every `resyncSeconds`, so drift is repaired as for pods).
pub async fn watch_endpoints(engine: Arc<Engine>, cluster: Arc<ClusterHandle>, client: Client) {
    let api: Api<EndpointDrain> = Api::all(client.clone());
    let mut failures = 0u32;
    let mut told = false;
    let resync = Duration::from_secs(engine.cfg.resync_seconds.max(1));
    loop {
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        let mut buffer = Vec::new();
        let mut next_resync = tokio::time::Instant::now() + resync;
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = tokio::time::sleep_until(next_resync) => {
                    next_resync = tokio::time::Instant::now() + resync;
                    if engine.cfg.resync_seconds > 0 {
                        kick_cluster(&engine, &cluster.name);
                    }
                    continue;
                }
            };
            let Some(ev) = ev else { break };
            match ev {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(e)) => buffer.push(e),
                Ok(Event::InitDone) => {
                    let keep: std::collections::HashSet<EndpointKey> =
                        buffer.iter().filter_map(|e| key_of(&cluster.name, e)).collect();
                    engine.endpoints.retain(|k, _| k.0 != cluster.name || keep.contains(k));
                    for e in std::mem::take(&mut buffer) {
                        apply(&engine, &cluster.name, e);
                    }
                    failures = 0;
                    if told {
                        info!(cluster = %cluster.name, "EndpointDrain records are watched again.");
                        told = false;
                    }
                    engine.endpoint_problems.remove(&cluster.name);
                }
                Ok(Event::Apply(e)) => apply(&engine, &cluster.name, e),
                Ok(Event::Delete(e)) => {
                    if let Some(k) = key_of(&cluster.name, &e) {
                        engine.endpoints.remove(&k);
                        engine.publish_endpoint(&cluster.name, Arc::new(e), true);
                    }
                }
                Err(e) => {
                    let problem = match crate::k8s::watch::explain(&cluster.name, "endpointdrains", &e) {
                        Some(p) => p,
                        None if matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404) =>
                        {
                            format!(
                                "cluster {}: the EndpointDrain CRD is not installed (endpointdrains.sluice.dev not \
                                 found): run `sluice crd | kubectl apply -f -`; endpoint drains are refused until then",
                                cluster.name
                            )
                        }
                        None => format!("cluster {}: the EndpointDrain watch failed: {e}", cluster.name),
                    };
                    if !told {
                        warn!(cluster = %cluster.name, problem = %problem, "Endpoint drains are unavailable.");
                        told = true;
                    }
                    engine.endpoint_problems.insert(cluster.name.clone(), problem);
                    break;
                }
            }
        }
        failures += 1;
        tokio::time::sleep(Duration::from_millis((500u64 << failures.min(6)).min(30_000))).await;
    }
}

fn key_of(cluster: &str, e: &EndpointDrain) -> Option<EndpointKey> {
    Some((
        cluster.to_string(),
        e.metadata.namespace.clone()?,
        e.metadata.name.clone()?,
    ))
}

fn apply(engine: &Arc<Engine>, cluster: &str, e: EndpointDrain) {
    let Some(k) = key_of(cluster, &e) else { return };
    // Only a newer version: a late event must not undo what the worker wrote since.
    if !engine.endpoints.get(&k).is_none_or(|old| newer(&old, &e)) {
        return;
    }
    let e = Arc::new(e);
    engine.endpoints.insert(k.clone(), e.clone());
    engine.publish_endpoint(cluster, e, false);
    kick(engine, k);
}

/// Kicks the worker of every record of a cluster (after an election, at each resync).
pub fn kick_cluster(engine: &Arc<Engine>, cluster: &str) {
    let keys: Vec<EndpointKey> = engine
        .endpoints
        .iter()
        .filter(|e| e.key().0 == cluster)
        .map(|e| e.key().clone())
        .collect();
    for k in keys {
        kick(engine, k);
    }
}

/// Starts the record's worker, or has the running one look again.
pub fn kick(engine: &Arc<Engine>, key: EndpointKey) {
    if !engine.authority.leading() || engine.authority.stopping() {
        return;
    }
    use dashmap::mapref::entry::Entry;
    match engine.endpoint_workers.entry(key.clone()) {
        Entry::Occupied(e) => {
            e.get().store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        Entry::Vacant(e) => {
            e.insert(Arc::new(true.into()));
        }
    }
    let engine = engine.clone();
    tokio::spawn(async move {
        loop {
            if let Some(dirty) = engine.endpoint_workers.get(&key) {
                dirty.store(false, std::sync::atomic::Ordering::SeqCst);
            }
            let run = std::panic::AssertUnwindSafe(work(&engine, &key));
            if futures::FutureExt::catch_unwind(run).await.is_err() {
                warn!(endpoint = ?key, "An endpoint worker panicked; it starts again at the next resync.");
            }
            if engine
                .endpoint_workers
                .remove_if(&key, |_, d| !d.load(std::sync::atomic::Ordering::SeqCst))
                .is_some()
            {
                return;
            }
        }
    });
}

/// One record's worker: acts and observes until the record's desired state is verified
/// (or the record changes, or this replica stops leading).
async fn work(engine: &Arc<Engine>, key: &EndpointKey) {
    let mut drained_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut advance: BTreeMap<String, bool> = BTreeMap::new();
    let mut first = true;
    let started = Instant::now();
    loop {
        let Some(record) = engine.endpoints.get(key).map(|e| e.clone()) else {
            return;
        };
        let Some(cluster) = engine.clusters.get(&key.0).cloned() else {
            return;
        };
        if !engine.authority.may_write() {
            return;
        }
        let spec = &record.spec;
        let status = record.status.clone().unwrap_or_default();
        let generation = record.metadata.generation;
        // A record being deleted first takes its address out: its finalizer goes only then.
        let deleting = record.metadata.deletion_timestamp.is_some();
        let desired = if deleting { Desired::Drained } else { spec.desired };
        let new_op = status.desired != Some(desired) || status.started_at.is_empty();
        // Paused: no new operation starts (one under way goes on).
        if new_op && engine.authority.paused() {
            return;
        }
        let started_at = if new_op {
            crate::model::status::now_text()
        } else {
            status.started_at.clone()
        };
        let checked = match check(engine, &key.1, spec).and_then(|c| match conflict(engine, key, &record) {
            Some(why) => Err(why),
            None => Ok(c),
        }) {
            Ok(c) => c,
            Err(why) => {
                let next = EndpointDrainStatus {
                    state: "blocked".into(),
                    desired: Some(desired),
                    observed_generation: generation,
                    started_at,
                    last_transition: transition(&status, "blocked"),
                    targets: BTreeMap::new(),
                    blocked: vec![why],
                };
                write_status(engine, &cluster, &record, &status, next).await;
                return;
            }
        };
        if !deleting
            && !record.finalizers().iter().any(|f| f == ENDPOINT_FINALIZER)
            && !set_finalizer(engine, &cluster, &record, true).await
        {
            return;
        }
        let drain = desired == Desired::Drained;
        let mut targets = BTreeMap::new();
        let mut blocked = Vec::new();
        let mut all_done = true;
        let settle = Duration::from_secs(spec.settle_seconds.max(0) as u64);
        for (adapter_name, params) in &checked.targets {
            let adapter = engine.adapters[adapter_name].clone();
            let kind = adapter.capabilities().kind;
            let name = target_name(&kind, adapter_name, params, checked.ip, checked.port);
            let target = Target {
                pod: PodRef {
                    cluster: key.0.clone(),
                    namespace: key.1.clone(),
                    name: key.2.clone(),
                    uid: record.metadata.uid.clone().unwrap_or_default(),
                },
                ip: checked.ip,
                port: checked.port,
                params: params.clone(),
            };
            let timeout = engine.cfg.call_timeout();
            let goal = if drain {
                TrafficState::Drained
            } else {
                TrafficState::Serving
            };
            // Act on the first pass, when the adapter says a further drain step is due, and
            // whenever the target is not where it should be.
            let was_at_goal = status
                .targets
                .get(&name)
                .is_some_and(|s| s.starts_with(&format!("{goal:?}")));
            let act = first && (new_op || !was_at_goal) || advance.get(&name).copied().unwrap_or(false);
            if act {
                let _permit = engine.permit(adapter_name).await;
                // Asked right before the call, as for pods: a leader past its renew deadline
                // stops here, a call never outlives that deadline, and a shutdown waits for
                // it before it hands the lease over.
                if !engine.authority.may_write() {
                    return;
                }
                let _in_flight = crate::engine::InFlight::new(&engine.in_flight);
                let timeout = engine.authority.remaining().map_or(timeout, |left| timeout.min(left));
                let call = if drain {
                    crate::engine::error::bounded(adapter_name, timeout, adapter.deregister(&target)).await
                } else {
                    crate::engine::error::bounded(adapter_name, timeout, adapter.register(&target)).await
                };
                engine.adapter_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = call {
                    blocked.push(format!("{name}: {e}"));
                    targets.insert(name, "Failed".into());
                    all_done = false;
                    continue;
                }
            }
            let observed = {
                let _permit = engine.permit(adapter_name).await;
                crate::engine::error::bounded(adapter_name, timeout, adapter.observe(&target)).await
            };
            match observed {
                Ok(o) => {
                    advance.insert(
                        name.clone(),
                        o.advance || (!drain && o.state != TrafficState::Serving && !act),
                    );
                    let mut at_goal = o.state == goal;
                    if drain && at_goal {
                        let since = *drained_since.entry(name.clone()).or_insert_with(Instant::now);
                        at_goal = since.elapsed() >= settle;
                    } else {
                        drained_since.remove(&name);
                    }
                    // A target found out of place (a hand edit, a reload) is acted on again.
                    if !at_goal && o.state != TrafficState::Draining && o.state != goal {
                        advance.insert(name.clone(), true);
                    }
                    all_done &= at_goal;
                    targets.insert(name, format!("{:?}: {}", o.state, o.evidence));
                }
                Err(e) => {
                    all_done = false;
                    targets.insert(name.clone(), "Unknown".into());
                    blocked.push(format!("{name}: {e}"));
                }
            }
        }
        first = false;
        let deadline = Duration::from_secs(
            spec.deadline_seconds
                .map(|d| d as u64)
                .unwrap_or(engine.cfg.default_deadline_seconds),
        );
        let since_start = started_at
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| jiff::Timestamp::now().duration_since(t).unsigned_abs())
            .unwrap_or_default();
        if !all_done && since_start > deadline {
            blocked.insert(
                0,
                format!(
                    "not verified {} within {}s (the operation goes on)",
                    if drain { "drained" } else { "serving" },
                    deadline.as_secs()
                ),
            );
        }
        let state = match (all_done, drain, blocked.is_empty()) {
            (true, true, _) => "drained",
            (true, false, _) => "serving",
            (false, _, false) => "blocked",
            (false, true, true) => "draining",
            (false, false, true) => "restoring",
        };
        let next = EndpointDrainStatus {
            state: state.into(),
            desired: Some(desired),
            observed_generation: generation,
            started_at,
            last_transition: transition(&status, state),
            targets,
            blocked: if all_done { vec![] } else { blocked },
        };
        write_status(engine, &cluster, &record, &status, next).await;
        if all_done {
            if deleting {
                set_finalizer(engine, &cluster, &record, false).await;
            }
            return;
        }
        // Look again sooner while the drain is young, then less often (2 % of the wait,
        // at most once a second), as for pods.
        let pause = engine
            .cfg
            .poll_interval()
            .max(started.elapsed().mul_f64(0.02))
            .min(Duration::from_secs(1));
        tokio::time::sleep(pause).await;
        // A changed request (a new generation of the spec) starts over; the status writes
        // do not count.
        if engine
            .endpoints
            .get(key)
            .is_none_or(|e| e.metadata.generation != record.metadata.generation)
        {
            first = true;
            advance.clear();
        }
    }
}

fn transition(status: &EndpointDrainStatus, state: &str) -> String {
    if status.state == state && !status.last_transition.is_empty() {
        status.last_transition.clone()
    } else {
        crate::model::status::now_text()
    }
}

/// Writes the record's status when it changed (guarded by the record's UID), and takes
/// the answer into the engine's view.
async fn write_status(
    engine: &Arc<Engine>,
    cluster: &ClusterHandle,
    record: &EndpointDrain,
    before: &EndpointDrainStatus,
    next: EndpointDrainStatus,
) {
    if *before == next && record.status.is_some() {
        return;
    }
    if !engine.authority.may_write() {
        return;
    }
    let (Some(ns), Some(name), Some(uid)) = (
        record.metadata.namespace.as_deref(),
        record.metadata.name.as_deref(),
        record.metadata.uid.as_deref(),
    ) else {
        return;
    };
    let api: Api<EndpointDrain> = Api::namespaced(cluster.writer.client().clone(), ns);
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/status", "value": next},
    ]))
    .expect("a JSON patch");
    let params = PatchParams {
        field_manager: Some(engine.cfg.instance.clone()),
        ..Default::default()
    };
    match api.patch_status(name, &params, &Patch::Json::<()>(patch)).await {
        Ok(written) => {
            if before.state != next.state {
                info!(endpoint = %format!("{}/{ns}/{name}", cluster.name), state = %next.state, "Endpoint.");
            }
            apply_written(engine, &cluster.name, written);
        }
        Err(e) => {
            warn!(endpoint = %format!("{}/{ns}/{name}", cluster.name), error = %e, "Could not write the EndpointDrain status.")
        }
    }
}

/// Takes a record as written (newer than what the watch delivered) into the view.
pub fn apply_written(engine: &Arc<Engine>, cluster: &str, e: EndpointDrain) {
    let Some(k) = key_of(cluster, &e) else { return };
    if engine.endpoints.get(&k).is_none_or(|old| newer(&old, &e)) {
        let e = Arc::new(e);
        engine.endpoints.insert(k, e.clone());
        engine.publish_endpoint(cluster, e, false);
    }
}

/// Whether `b` is a later version of the record than `a` (resourceVersions are the
/// store's revision on every etcd-backed API server; anything else counts as newer).
fn newer(a: &EndpointDrain, b: &EndpointDrain) -> bool {
    if a.metadata.uid != b.metadata.uid {
        return true;
    }
    let v = |x: &EndpointDrain| {
        x.metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok())
    };
    match (v(a), v(b)) {
        (Some(x), Some(y)) => x < y,
        _ => a.metadata.resource_version != b.metadata.resource_version,
    }
}

/// A pod with this address, or another record of it (the older one, or the first by name,
/// keeps it): the record must not act, or the two would undo each other.
pub fn conflict(engine: &Engine, key: &EndpointKey, record: &EndpointDrain) -> Option<String> {
    let ip: IpAddr = record.spec.address.parse().ok()?;
    if let Some(p) = engine
        .pods
        .iter()
        .find(|p| p.cluster == key.0 && p.ip == Some(ip) && !p.host_network)
    {
        return Some(format!("address {ip} is pod {}'s: drain the pod instead", p.display()));
    }
    let mine = (record.metadata.creation_timestamp.clone(), key.clone());
    engine.endpoints.iter().find_map(|e| {
        let other = e.key();
        if other == key || other.0 != key.0 || e.spec.port != record.spec.port {
            return None;
        }
        if e.spec.address.parse::<IpAddr>().ok() != Some(ip) {
            return None;
        }
        let theirs = (e.metadata.creation_timestamp.clone(), other.clone());
        // A record not created yet (the API's probe) yields to any existing one.
        (record.metadata.uid.is_none() || theirs < mine).then(|| {
            format!(
                "{ip}:{} is already recorded by EndpointDrain {}/{}: one record per address and port",
                record.spec.port, other.1, other.2
            )
        })
    })
}

/// Adds (`add`) or removes the record's finalizer, guarded by its UID and its finalizers
/// as read; answers whether the record now has what was asked.
async fn set_finalizer(engine: &Arc<Engine>, cluster: &ClusterHandle, record: &EndpointDrain, add: bool) -> bool {
    if !engine.authority.may_write() {
        return false;
    }
    let (Some(ns), Some(name), Some(uid)) = (
        record.metadata.namespace.as_deref(),
        record.metadata.name.as_deref(),
        record.metadata.uid.as_deref(),
    ) else {
        return false;
    };
    let current = record.metadata.finalizers.clone().unwrap_or_default();
    let mut next: Vec<String> = current.iter().filter(|f| *f != ENDPOINT_FINALIZER).cloned().collect();
    if add {
        next.push(ENDPOINT_FINALIZER.to_string());
    }
    let mut ops = vec![serde_json::json!({"op": "test", "path": "/metadata/uid", "value": uid})];
    match &record.metadata.finalizers {
        Some(_) => {
            ops.push(serde_json::json!({"op": "test", "path": "/metadata/finalizers", "value": current}));
            ops.push(serde_json::json!({"op": "replace", "path": "/metadata/finalizers", "value": next}));
        }
        None => ops.push(serde_json::json!({"op": "add", "path": "/metadata/finalizers", "value": next})),
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).expect("a JSON patch");
    let api: Api<EndpointDrain> = Api::namespaced(cluster.writer.client().clone(), ns);
    let params = PatchParams {
        field_manager: Some(engine.cfg.instance.clone()),
        ..Default::default()
    };
    match api.patch(name, &params, &Patch::Json::<()>(patch)).await {
        Ok(written) => {
            if !add {
                info!(endpoint = %format!("{}/{ns}/{name}", cluster.name), "Endpoint drained; its record may go.");
            }
            apply_written(engine, &cluster.name, written);
            true
        }
        Err(e) => {
            warn!(endpoint = %format!("{}/{ns}/{name}", cluster.name), error = %e, "Could not write the record's finalizer.");
            false
        }
    }
}
