//! The engine: shared state (pods, bindings, budgets, cluster health) and the executor —
//! one worker per pod that needs work ([`worker`]), which observes the pod's targets (the
//! union of its bindings' and its ledger's, [`targets`]), asks the pure planner for the
//! next steps, performs them ([`execute`]) and loops until the plan is empty.
//!
//! All durable state lives on the pods (ledger, finalizers, gate, status annotation) and
//! in the traffic components; a restarted gateway rebuilds everything from them and
//! resumes. Background loops ([`resync`]) re-observe bound pods to repair drift, watch
//! adapter health, and sweep addresses left behind by pods that are gone.

pub mod budget;
pub mod error;
pub mod execute;
pub mod resync;
pub mod targets;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use sluice_adapter::Adapter;
use tokio::sync::Semaphore;
use tracing::{error, Instrument};

use crate::config::EngineConfig;
use crate::k8s::PodWriter;
use crate::model::{Binding, BindingKey, BindingState, PodKey, PodView};
use budget::{Budgets, Need};

/// Per-cluster state.
pub struct ClusterHandle {
    pub name: String,
    pub writer: PodWriter,
    /// Watch healthy: false freezes the cluster's pods (no adapter call, no write) until
    /// the watch has listed again.
    pub healthy: AtomicBool,
    /// Both watches (pods, bindings) have completed their first list: only then do the
    /// cluster's pods get workers. Other clusters never wait for this one.
    pub synced: AtomicBool,
    /// A problem a person must fix before this cluster can sync (a missing CRD, a missing
    /// permission), in one line: shown by `/readyz` and logged once.
    pub problem: std::sync::Mutex<Option<String>>,
}

impl ClusterHandle {
    pub fn new(name: &str, writer: PodWriter) -> ClusterHandle {
        ClusterHandle {
            name: name.to_string(),
            writer,
            healthy: false.into(),
            synced: false.into(),
            problem: std::sync::Mutex::new(None),
        }
    }

    /// Synced and healthy: its pods may be acted on.
    pub fn live(&self) -> bool {
        self.synced.load(Ordering::SeqCst) && self.healthy.load(Ordering::SeqCst)
    }
}

/// A pod's worker slot: set `dirty` to have it look again, `force` to have it observe even
/// a pod recorded as converged.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    dirty: AtomicBool,
    force: AtomicBool,
    /// Wakes a worker parked until a deadline (see `worker::Next::Park`) when the pod is
    /// kicked.
    wake: tokio::sync::Notify,
}

/// Shared engine state.
pub struct Engine {
    pub cfg: EngineConfig,
    pub clusters: BTreeMap<String, Arc<ClusterHandle>>,
    /// The adapter instances of the configuration.
    pub adapters: BTreeMap<String, Arc<dyn Adapter>>,
    /// Calls in flight per adapter instance.
    limits: BTreeMap<String, Arc<Semaphore>>,
    /// Adapter instances whose calls share reads and are bounded inside the adapter
    /// ([`sluice_adapter::Capabilities::shared_reads`]): a call of theirs takes no slot.
    shared_reads: std::collections::BTreeSet<String>,
    /// Workers running at once.
    running: Arc<Semaphore>,
    pub pods: DashMap<PodKey, PodView>,
    pub bindings: DashMap<BindingKey, BindingState>,
    pub budgets: Budgets,
    workers: DashMap<PodKey, Arc<Slot>>,
    /// Adapter writes made (register + deregister), for tests of convergence.
    pub adapter_writes: AtomicU64,
    /// Every adapter call (observe, register, deregister), for tests that bound them.
    pub adapter_calls: AtomicU64,
    /// Pods looked at: worker runs to the end, and kicks of pods whose worker would have
    /// ended at once (`worker::settled`: a converged pod's run writes and calls nothing).
    pub worker_runs: AtomicU64,
    /// Worker tasks started.
    pub workers_started: AtomicU64,
    /// Whether this gateway may act now (leader, shadow, paused, stopping).
    pub authority: Arc<crate::authority::Authority>,
    /// Passes (and orphan deregisters) running now: a shutdown waits for them before it
    /// releases the lease.
    pub in_flight: Arc<AtomicUsize>,
    /// Notified whenever a pod's view changes (watch or own write): what preStop calls and
    /// admission requests wait on.
    pub changed: tokio::sync::Notify,
    /// Pods per percentage budget, with when they were counted (see `matched_pods`).
    matched_cache: DashMap<String, (Instant, usize)>,
    /// Budget rebuilds (a cluster synced, this replica elected) happen one at a time.
    rebuild: std::sync::Mutex<()>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `(cluster, namespace, name)` → the UID of the pod by that name (for the API and the
    /// admission webhook, which are asked by name).
    names: DashMap<(String, String, String), String>,
    /// Every change of a pod's view, for API watches (sent only while one listens).
    pub updates: tokio::sync::broadcast::Sender<PodUpdate>,
    /// Which namespaces may name which backends of which adapter (set once at start).
    pub tenancy: std::sync::OnceLock<crate::tenancy::Tenancy>,
    /// The EndpointDrain records of every cluster (see `crate::endpoint`).
    pub endpoints: DashMap<crate::endpoint::EndpointKey, Arc<crate::endpoint::EndpointDrain>>,
    /// Records with a worker running; `true`: look again when done.
    pub(crate) endpoint_workers: DashMap<crate::endpoint::EndpointKey, Arc<AtomicBool>>,
    /// Clusters whose EndpointDrain records cannot be watched, and why.
    pub endpoint_problems: DashMap<String, String>,
}

/// A change of the engine's view of a pod (or of an EndpointDrain record).
#[derive(Debug, Clone)]
pub enum PodUpdate {
    Changed(Arc<PodView>),
    Deleted(Arc<PodView>),
    Endpoint {
        cluster: String,
        record: Arc<crate::endpoint::EndpointDrain>,
        deleted: bool,
    },
}

/// Updates kept for a watcher that lags; one that falls further behind starts over from
/// the view (see `api`).
const UPDATES_BACKLOG: usize = 16_384;

/// Counts one unit of work in flight for as long as it lives.
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        clusters: BTreeMap<String, Arc<ClusterHandle>>,
        adapters: BTreeMap<String, Arc<dyn Adapter>>,
        authority: Arc<crate::authority::Authority>,
    ) -> Arc<Engine> {
        let limits = adapters
            .keys()
            .map(|k| (k.clone(), Arc::new(Semaphore::new(cfg.adapter_concurrency.max(1)))))
            .collect();
        let shared_reads = adapters
            .iter()
            .filter(|(_, a)| a.capabilities().shared_reads)
            .map(|(k, _)| k.clone())
            .collect();
        Arc::new(Engine {
            shared_reads,
            running: Arc::new(Semaphore::new(cfg.max_workers.max(1))),
            cfg,
            clusters,
            adapters,
            limits,
            pods: DashMap::new(),
            bindings: DashMap::new(),
            budgets: Budgets::default(),
            workers: DashMap::new(),
            adapter_writes: Default::default(),
            adapter_calls: Default::default(),
            worker_runs: Default::default(),
            workers_started: Default::default(),
            authority,
            in_flight: Arc::default(),
            changed: tokio::sync::Notify::new(),
            matched_cache: DashMap::new(),
            rebuild: std::sync::Mutex::new(()),
            metrics: Arc::default(),
            names: DashMap::new(),
            updates: tokio::sync::broadcast::channel(UPDATES_BACKLOG).0,
            tenancy: std::sync::OnceLock::new(),
            endpoints: DashMap::new(),
            endpoint_workers: DashMap::new(),
            endpoint_problems: DashMap::new(),
        })
    }

    /// The tenancy rules (none configured: every adapter open to bindings, none to
    /// endpoints), without a copy.
    pub fn tenancy(&self) -> &crate::tenancy::Tenancy {
        self.tenancy.get_or_init(crate::tenancy::Tenancy::default)
    }

    /// The pod of this name, as the engine sees it.
    pub fn pod_by_name(&self, cluster: &str, namespace: &str, name: &str) -> Option<PodView> {
        let uid = self
            .names
            .get(&(cluster.to_string(), namespace.to_string(), name.to_string()))?
            .clone();
        self.pods
            .get(&PodKey {
                cluster: cluster.to_string(),
                uid,
            })
            .map(|p| p.clone())
    }

    /// Tells API watches of a record's change.
    pub fn publish_endpoint(&self, cluster: &str, record: Arc<crate::endpoint::EndpointDrain>, deleted: bool) {
        self.publish(|| PodUpdate::Endpoint {
            cluster: cluster.to_string(),
            record,
            deleted,
        });
    }

    fn publish(&self, update: impl FnOnce() -> PodUpdate) {
        if self.updates.receiver_count() > 0 {
            let _ = self.updates.send(update());
        }
    }

    /// Every cluster has listed once (for `/readyz`).
    pub fn ready(&self) -> bool {
        self.clusters.values().all(|c| c.synced.load(Ordering::SeqCst))
    }

    /// Sets the metrics that describe the engine's state and returns the exposition.
    pub fn scrape(&self) -> String {
        let m = &self.metrics;
        let (mut drains, mut restores) = (0i64, 0i64);
        let mut blocked: std::collections::BTreeMap<&'static str, i64> = std::collections::BTreeMap::new();
        for p in self.pods.iter() {
            if let Some(s) = p.status() {
                if s.state.under_way() {
                    if s.state.is_drain() {
                        drains += 1;
                    } else {
                        restores += 1;
                    }
                }
                if s.state == crate::model::State::Blocked || !s.blocked.is_empty() {
                    // Counted once, under its first reason's category.
                    let category = s
                        .blocked
                        .first()
                        .map_or("adapter-error", |why| crate::planner::blocked_category(why));
                    *blocked.entry(category).or_default() += 1;
                }
            }
        }
        m.in_flight.clear();
        m.in_flight
            .get_or_create(&crate::metrics::KindLabels { kind: "drain".into() })
            .set(drains);
        m.in_flight
            .get_or_create(&crate::metrics::KindLabels { kind: "restore".into() })
            .set(restores);
        m.blocked.clear();
        for (reason, n) in blocked {
            m.blocked
                .get_or_create(&crate::metrics::ReasonLabels { reason: reason.into() })
                .set(n);
        }
        m.out_of_traffic.clear();
        for (binding, n) in self.budgets.counts() {
            m.out_of_traffic
                .get_or_create(&crate::metrics::BindingLabels { binding })
                .set(n as i64);
        }
        m.leader.set(i64::from(self.authority.may_write()));
        m.frozen.clear();
        for c in self.clusters.values() {
            m.frozen
                .get_or_create(&crate::metrics::ClusterLabels {
                    cluster: c.name.clone(),
                })
                .set(i64::from(!c.healthy.load(Ordering::SeqCst)));
        }
        m.encode()
    }

    /// Pods with a worker running (or queued for a worker permit) now: 0 when the gateway
    /// has nothing left to do.
    pub fn busy_pods(&self) -> usize {
        self.workers.len()
    }

    /// What keeps clusters from syncing, one line each (see [`ClusterHandle::problem`]).
    pub fn cluster_problems(&self) -> Vec<String> {
        self.clusters
            .values()
            .filter_map(|c| c.problem.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Clusters that have not listed yet.
    pub fn unsynced(&self) -> Vec<&str> {
        self.clusters
            .values()
            .filter(|c| !c.synced.load(Ordering::SeqCst))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The valid bindings that select a pod, by name.
    pub fn bindings_for(&self, pod: &PodView) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .bindings
            .iter()
            .filter_map(|b| b.valid().filter(|b| b.matches(pod)).cloned())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// An invalid binding that selects the pod (its name and reason), if any.
    pub fn invalid_binding_for(&self, pod: &PodView) -> Option<(String, String)> {
        self.bindings.iter().find_map(|b| {
            let (cluster, ns, name) = b.key();
            match b.value() {
                BindingState::Invalid(i)
                    if *cluster == pod.cluster && *ns == pod.namespace && selects(b.value(), pod) =>
                {
                    Some((name.clone(), i.reason.clone()))
                }
                _ => None,
            }
        })
    }

    /// The budgets a pod's drain needs a slot of.
    pub(crate) fn needs(&self, bindings: &[Binding]) -> Vec<Need> {
        bindings
            .iter()
            .map(|b| {
                let key = b.budget_key();
                Need {
                    max: b.max_unavailable(|| self.matched_pods(&key)),
                    key,
                }
            })
            .collect()
    }

    /// Pods a budget covers (for a percentage): counted at most once a second per budget,
    /// not at every pass of every pod (which made a pass O(pods)). A count up to a second
    /// old errs by the pods created or deleted within that second.
    fn matched_pods(&self, budget_key: &str) -> usize {
        if let Some(c) = self.matched_cache.get(budget_key) {
            if c.0.elapsed() < Duration::from_secs(1) {
                return c.1;
            }
        }
        let n = self.count_matched_pods(budget_key);
        self.matched_cache.insert(budget_key.to_string(), (Instant::now(), n));
        n
    }

    fn count_matched_pods(&self, budget_key: &str) -> usize {
        let bindings: Vec<Binding> = self
            .bindings
            .iter()
            .filter_map(|b| b.valid().filter(|b| b.budget_key() == budget_key).cloned())
            .collect();
        self.pods
            .iter()
            .filter(|p| bindings.iter().any(|b| b.matches(p)))
            .count()
    }

    /// Gives a pod's budget slots back and wakes, for each, the oldest pod still waiting for
    /// it (known, and not holding a slot of it already: a drain that got its slot by its
    /// own look stays queued until a release passes it over).
    pub fn release_budget(self: &Arc<Self>, pod: &PodKey) {
        let freed = self.budgets.release(pod);
        self.wake_budget_waiters(freed, Some(pod));
    }

    /// Drops the budget slots of pods the engine no longer knows (a safety net), waking
    /// the drains waiting for them.
    pub fn prune_budgets(self: &Arc<Self>) {
        let freed = self.budgets.prune(|k| self.pods.contains_key(k));
        self.wake_budget_waiters(freed, None);
    }

    /// For each budget a slot of which was given back, kicks the oldest pod still waiting.
    fn wake_budget_waiters(self: &Arc<Self>, freed: Vec<String>, gone: Option<&PodKey>) {
        for key in freed {
            while let Some(next) = self.budgets.next_waiter(&key) {
                if Some(&next) != gone && self.pods.contains_key(&next) && !self.budgets.holds_key(&key, &next) {
                    self.kick(next);
                    break;
                }
            }
        }
    }

    /// Forgets a pod that is gone; its budget slots go back.
    pub fn forget(self: &Arc<Self>, key: &PodKey) {
        if let Some((_, gone)) = self.pods.remove(key) {
            self.names.remove_if(
                &(gone.cluster.clone(), gone.namespace.clone(), gone.name.clone()),
                |_, uid| *uid == gone.uid,
            );
            self.publish(|| PodUpdate::Deleted(Arc::new(gone)));
        }
        self.release_budget(key);
    }

    /// Takes a pod as written by the gateway itself, when newer than what the watch has
    /// delivered: the next pass plans from it instead of repeating the step.
    pub fn update_view(&self, cluster: &str, pod: &Pod) -> bool {
        let Some(v) = PodView::from_pod(cluster, pod) else {
            return false;
        };
        match self.pods.get_mut(&v.key()) {
            Some(mut known) if known.is_older_than(&v) => {
                self.publish(|| PodUpdate::Changed(Arc::new(v.clone())));
                *known = v;
                drop(known);
                self.changed.notify_waiters();
                true
            }
            _ => false,
        }
    }

    /// Takes a pod from the watch: answers whether it changed (older versions, delivered
    /// late by a lagging watch, are ignored).
    pub fn observe_pod(&self, v: PodView) -> bool {
        let name = (v.cluster.clone(), v.namespace.clone(), v.name.clone());
        let uid = v.uid.clone();
        match self.pods.entry(v.key()) {
            Entry::Occupied(mut e) => {
                if *e.get() == v || !e.get().is_older_than(&v) {
                    return false;
                }
                self.publish(|| PodUpdate::Changed(Arc::new(v.clone())));
                e.insert(v);
            }
            Entry::Vacant(e) => {
                self.publish(|| PodUpdate::Changed(Arc::new(v.clone())));
                e.insert(v);
                self.names.insert(name, uid);
            }
        }
        self.changed.notify_waiters();
        true
    }

    /// A cluster has listed pods and bindings: every bound pod whose gate is False is out
    /// of traffic and holds its budget slot again; only then is the cluster marked synced
    /// (no worker of it can run before: a kick needs it) and its pods kicked.
    pub fn on_synced(self: &Arc<Self>, cluster: &str) {
        {
            let _one = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            self.retake_budgets(cluster);
            if let Some(c) = self.clusters.get(cluster) {
                c.synced.store(true, Ordering::SeqCst);
            }
        }
        self.kick_cluster(cluster, false);
    }

    /// Every bound pod of the cluster whose gate is False holds its budget slots again.
    fn retake_budgets(&self, cluster: &str) {
        let out: Vec<PodView> = self
            .pods
            .iter()
            .filter(|p| p.cluster == cluster && p.gate == Some(false))
            .map(|p| p.clone())
            .collect();
        for p in out {
            let mut keys: Vec<String> = self.bindings_for(&p).into_iter().map(|b| b.budget_key()).collect();
            keys.extend(
                self.bindings
                    .iter()
                    .filter(|b| {
                        let (cluster, ns, _) = b.key();
                        *cluster == p.cluster && *ns == p.namespace && b.valid().is_none() && selects(b, &p)
                    })
                    .map(|b| format!("{}/{}", p.namespace, b.key().2)),
            );
            self.budgets.retake(&p.key(), keys);
        }
    }

    /// This replica became the leader: what the previous one held is rebuilt from the pods
    /// (gates, ledgers, status annotations), then every pod of the synced clusters is looked
    /// at, so drains continue where they stand.
    pub fn on_elected(self: &Arc<Self>) {
        let synced: Vec<String> = {
            let _one = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            // Slots of pods back in traffic meanwhile (released by another leader) go;
            // those of pods out of traffic, or worked on now, stay.
            self.budgets
                .prune(|k| self.workers.contains_key(k) || self.pods.get(k).is_some_and(|p| p.gate != Some(true)));
            let synced: Vec<String> = self
                .clusters
                .values()
                .filter(|c| c.synced.load(Ordering::SeqCst))
                .map(|c| c.name.clone())
                .collect();
            for c in &synced {
                self.retake_budgets(c);
            }
            synced
        };
        for c in &synced {
            self.kick_cluster(c, false);
        }
        for c in self.clusters.keys() {
            crate::endpoint::kick_cluster(self, c);
        }
    }

    /// Asks for a pod to be (re)considered: starts its worker, or marks the running one
    /// dirty. One worker per pod, atomically.
    pub fn kick(self: &Arc<Self>, key: PodKey) {
        self.kick_with(key, false);
    }

    /// Like [`Engine::kick`], and the worker observes the pod's targets even when it is
    /// recorded as converged (drift repair).
    pub fn kick_forced(self: &Arc<Self>, key: PodKey) {
        self.kick_with(key, true);
    }

    fn kick_with(self: &Arc<Self>, key: PodKey, force: bool) {
        if !self
            .clusters
            .get(&key.cluster)
            .is_some_and(|c| c.synced.load(Ordering::SeqCst))
        {
            return;
        }
        // A standby, or a gateway shutting down, starts nothing (the leader does).
        if !self.authority.leading() || self.authority.stopping() {
            return;
        }
        // A pod whose worker would end at once gets none (looked at all the same).
        if !force
            && !self.workers.contains_key(&key)
            && self
                .pods
                .get(&key)
                .map(|p| p.clone())
                .is_none_or(|pod| worker::settled(self, &key, &pod))
        {
            self.worker_runs.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let slot = match self.workers.entry(key.clone()) {
            Entry::Occupied(e) => {
                if force {
                    e.get().force.store(true, Ordering::SeqCst);
                }
                e.get().dirty.store(true, Ordering::SeqCst);
                e.get().wake.notify_one();
                return;
            }
            Entry::Vacant(e) => {
                let slot = Arc::new(Slot::default());
                slot.force.store(force, Ordering::SeqCst);
                e.insert(slot.clone());
                slot
            }
        };
        self.workers_started.fetch_add(1, Ordering::Relaxed);
        let engine = self.clone();
        let span = tracing::Span::current();
        tokio::spawn(
            async move {
                // The worker cap is taken per pass (`Worker::run_loop`), not for the task's
                // life: a task that held one while it asked for another could deadlock the
                // engine once every permit was held that way.
                loop {
                    slot.dirty.store(false, Ordering::SeqCst);
                    let run = std::panic::AssertUnwindSafe(worker::run(&engine, &key, &slot)).catch_unwind();
                    let run = run.await;
                    engine.worker_runs.fetch_add(1, Ordering::SeqCst);
                    if run.is_err() {
                        // The entry goes, so the pod is not stuck with a dead worker; its slot
                        // stays (the pod may be out of traffic) and is released as usual.
                        error!(pod = ?key, "A pod worker panicked; it starts again in a second.");
                        engine.workers.remove(&key);
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        engine.kick(key);
                        return;
                    }
                    // Leave only if nothing arrived meanwhile: kick marks dirty under the same
                    // shard lock, so an event is never lost between the check and the removal.
                    if engine
                        .workers
                        .remove_if(&key, |_, s| !s.dirty.load(Ordering::SeqCst))
                        .is_some()
                    {
                        return;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Kicks every known pod of one cluster.
    /// Kicks every pod of every cluster (after a pause is lifted).
    pub fn kick_all(self: &Arc<Self>) {
        let clusters: Vec<String> = self.clusters.keys().cloned().collect();
        for c in clusters {
            self.kick_cluster(&c, false);
        }
    }

    pub fn kick_cluster(self: &Arc<Self>, cluster: &str, force: bool) {
        let keys: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|p| p.cluster == cluster)
            .map(|p| p.key().clone())
            .collect();
        for k in keys {
            self.kick_with(k, force);
        }
    }

    /// Kicks the pods a binding change concerns: those its old or new version selects,
    /// and those whose ledger names it.
    pub fn kick_binding(self: &Arc<Self>, key: &BindingKey, before: Option<&BindingState>) {
        let now = self.bindings.get(key).map(|b| b.clone());
        let keys: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|p| p.cluster == key.0 && p.namespace == key.1)
            .filter(|p| {
                [before, now.as_ref()].into_iter().flatten().any(|b| selects(b, p))
                    || p.ledger_annotation
                        .as_deref()
                        .is_some_and(|l| l.contains(&format!("\"binding\":\"{}\"", key.2)))
            })
            .map(|p| p.key().clone())
            .collect();
        for k in keys {
            self.kick(k);
        }
    }

    /// A permit for one call to an adapter instance: none for an adapter that shares its
    /// reads and bounds its own calls (its calls wait for a shared read of the backend, and
    /// holding a slot through that wait would let a few calls at a time make progress).
    pub(crate) async fn permit(&self, adapter: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.adapter_calls.fetch_add(1, Ordering::Relaxed);
        if self.shared_reads.contains(adapter) {
            return None;
        }
        let limit = self.limits.get(adapter)?.clone();
        limit.acquire_owned().await.ok()
    }
}

/// Whether a binding (valid, or invalid with a readable selector) selects the pod.
pub fn selects(b: &BindingState, p: &PodView) -> bool {
    match b {
        BindingState::Valid(b) => b.matches(p),
        BindingState::Invalid(i) => i.selector.as_ref().is_some_and(|s| s.matches(&p.labels)),
    }
}
