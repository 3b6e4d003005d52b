//! The engine: shared state (pods, bindings, budgets, cluster health) and the executor —
//! one worker per pod that needs work, which observes the pod's targets, asks the pure
//! planner for the next steps, performs them (adapter calls with deadlines and retries,
//! guarded kube writes) and loops until the plan is empty.
//!
//! All durable state lives on the pods and in the traffic components; a restarted gateway
//! rebuilds everything from them and resumes (a pod whose gate is False and which still
//! carries a finalizer is a drain in progress, and holds its budget slot again).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::json;
use sluice_adapter::{Adapter, Observation, PodRef, Target, TrafficState};
use tracing::{info, info_span, warn, Instrument};

use crate::binding::OnDeadline;
use crate::config::EngineConfig;
use crate::kubeio::{pod_reference, PodWriter};
use crate::model::{finalizer, Binding, PodKey, PodView, DOMAIN};
use crate::planner::{self, DrainReason, Facts, Intent, Step, TargetFact};

/// Per-cluster state.
pub struct ClusterHandle {
    pub name: String,
    pub writer: PodWriter,
    /// Watch healthy: false freezes the cluster's pods (no adapter call, no write).
    pub healthy: AtomicBool,
    /// Both watches (pods, bindings) have completed their first list.
    pub synced: AtomicBool,
}

/// A worker's timers: when the drain started (also kept in the status annotation, so it
/// survives restarts) and, per traffic kind, since when all its targets have reported
/// drained (settle time).
#[derive(Debug, Default)]
struct DrainClock {
    started: Option<jiff::Timestamp>,
    drained_since: BTreeMap<String, Instant>,
}

/// How often a blocked drain is looked at again.
const BLOCKED_POLL: Duration = Duration::from_secs(1);

/// What identifies one operation (a worker) in the status annotation: its trace id (the
/// `trace_id` field of its span) and when its state last changed.
#[derive(Debug)]
struct Operation {
    trace_id: String,
    state: &'static str,
    since: String,
}

/// One pod's resolved target.
struct PodTarget {
    kind: String,
    adapter: Arc<dyn Adapter>,
    target: Target,
}

/// Shared engine state.
pub struct Engine {
    pub cfg: EngineConfig,
    pub clusters: BTreeMap<String, Arc<ClusterHandle>>,
    pub pods: DashMap<PodKey, PodView>,
    pub bindings: DashMap<(String, String, String), Binding>,
    budgets: DashMap<String, BTreeSet<PodKey>>,
    workers: DashMap<PodKey, Arc<AtomicBool>>,
    /// Per pod carrying a finalizer of ours: the bindings it was last bound by. Deleting a
    /// binding, editing its selector away or making it invalid does not take the pod's
    /// traffic out, so the pod's drain still goes through them. In memory only: after a
    /// restart such a drain blocks and says what to do.
    last_bound: DashMap<PodKey, Vec<Binding>>,
    /// Adapter writes made (register + deregister), for tests of convergence.
    pub adapter_writes: std::sync::atomic::AtomicU64,
}

impl Engine {
    pub fn new(cfg: EngineConfig, clusters: BTreeMap<String, Arc<ClusterHandle>>) -> Arc<Engine> {
        Arc::new(Engine {
            cfg,
            clusters,
            pods: DashMap::new(),
            bindings: DashMap::new(),
            budgets: DashMap::new(),
            workers: DashMap::new(),
            last_bound: DashMap::new(),
            adapter_writes: Default::default(),
        })
    }

    pub fn ready(&self) -> bool {
        self.clusters.values().all(|c| c.synced.load(Ordering::SeqCst))
    }

    /// The bindings that select a pod.
    pub fn bindings_for(&self, pod: &PodView) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| b.matches(pod))
            .map(|b| b.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The bindings a pod's worker acts through: those that match it now, plus, for a drain,
    /// the ones it was last bound by for any kind whose finalizer it still carries and no
    /// current binding covers (its traffic is still registered there).
    fn acting_bindings(&self, pod: &PodView, intent: &Intent) -> Vec<Binding> {
        let key = pod.key();
        let mut current = self.bindings_for(pod);
        let ours: BTreeSet<&str> = pod
            .finalizers
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{DOMAIN}/")))
            .collect();
        if ours.is_empty() {
            // A drain finished through bindings that are gone still reports it, once.
            if matches!(intent, Intent::Drain(_)) && current.is_empty() {
                if let Some(previous) = self.last_bound.get(&key) {
                    return previous.clone();
                }
            }
            self.last_bound.remove(&key);
            return current;
        }
        if matches!(intent, Intent::Drain(_)) {
            let covered: BTreeSet<String> = current
                .iter()
                .flat_map(|b| b.targets.iter().map(|t| t.kind.clone()))
                .collect();
            if let Some(previous) = self.last_bound.get(&key) {
                for b in previous.iter() {
                    let needed = b
                        .targets
                        .iter()
                        .any(|t| ours.contains(t.kind.as_str()) && !covered.contains(&t.kind));
                    if needed && !current.iter().any(|c| c.budget_key() == b.budget_key()) {
                        info!(binding = %b.budget_key(), "Draining through a binding that no longer applies to the pod: its traffic is still registered there.");
                        current.push(b.clone());
                    }
                }
            }
        }
        if !current.is_empty() {
            self.last_bound.insert(key, current.clone());
        }
        current
    }

    /// Forgets a pod that is gone.
    pub fn forget(&self, key: &PodKey) {
        self.pods.remove(key);
        self.last_bound.remove(key);
    }

    /// Asks for a pod to be (re)considered: starts its worker, or marks the running one dirty.
    pub fn kick(self: &Arc<Self>, key: PodKey) {
        if !self.ready() {
            return;
        }
        if let Some(flag) = self.workers.get(&key) {
            flag.store(true, Ordering::SeqCst);
            return;
        }
        let flag = Arc::new(AtomicBool::new(false));
        self.workers.insert(key.clone(), flag.clone());
        let engine = self.clone();
        tokio::spawn(async move {
            engine.run_pod(&key, &flag).await;
            engine.workers.remove(&key);
            // An event that arrived while the worker was exiting is not lost.
            if flag.load(Ordering::SeqCst) {
                engine.kick(key);
            }
        });
    }

    /// Kicks every known pod (after the first sync, after a binding changes).
    pub fn kick_all(self: &Arc<Self>) {
        let keys: Vec<PodKey> = self.pods.iter().map(|p| p.key().clone()).collect();
        for k in keys {
            self.kick(k);
        }
    }

    fn matched_pods(&self, budget_key: &str) -> usize {
        let bindings: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| b.budget_key() == budget_key)
            .map(|b| b.clone())
            .collect();
        self.pods
            .iter()
            .filter(|p| bindings.iter().any(|b| b.matches(p)))
            .count()
    }

    fn release_budget(&self, key: &PodKey) {
        for mut holders in self.budgets.iter_mut() {
            holders.remove(key);
        }
    }

    fn targets(pod: &PodView, bindings: &[Binding]) -> Vec<PodTarget> {
        let Some(ip) = pod.ip else { return Vec::new() };
        let pod_ref = PodRef {
            cluster: pod.cluster.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        };
        let mut out = Vec::new();
        for b in bindings {
            for t in &b.targets {
                out.push(PodTarget {
                    kind: t.kind.clone(),
                    adapter: t.adapter.clone(),
                    target: Target {
                        pod: pod_ref.clone(),
                        ip,
                        port: b.port,
                        params: t.params.clone(),
                    },
                });
            }
        }
        out
    }

    async fn observe(&self, t: &PodTarget) -> Result<Observation, String> {
        let span = info_span!("observe", adapter = t.adapter.name(), target = %t.target.addr());
        match tokio::time::timeout(self.cfg.call_timeout(), t.adapter.observe(&t.target))
            .instrument(span)
            .await
        {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("observe timed out after {:?}", self.cfg.call_timeout())),
        }
    }

    async fn run_pod(self: &Arc<Self>, key: &PodKey, dirty: &AtomicBool) {
        let Some(first) = self.pods.get(key).map(|p| p.clone()) else {
            return;
        };
        let intent = planner::intent(&first);
        // The same kind of operation as the annotation records (a drain resumed after a
        // restart, a pod already serving) keeps its trace and state: a worker that finds
        // nothing to do then writes nothing.
        let op = continued_operation(&first, &intent).unwrap_or_else(|| Operation {
            trace_id: format!("{:032x}", rand::random::<u128>()),
            state: "",
            since: String::new(),
        });
        let trace_id = op.trace_id.clone();
        let pod = format!("{}/{}/{}", first.cluster, first.namespace, first.name);
        let span = match intent {
            Intent::Drain(r) => info_span!("drain", %pod, uid = %first.uid, reason = ?r, %trace_id),
            Intent::Restore => info_span!("restore", %pod, uid = %first.uid, %trace_id),
            Intent::Hold(_) => info_span!("hold", %pod),
        };
        self.pod_loop(key, dirty, op).instrument(span).await;
    }

    async fn pod_loop(self: &Arc<Self>, key: &PodKey, dirty: &AtomicBool, mut op: Operation) {
        let Some(cluster) = self.clusters.get(&key.cluster).cloned() else {
            return;
        };
        let mut errors = 0u32;
        let mut clock = DrainClock::default();
        let mut last_status = String::new();
        let mut last_blocked: Option<String> = None;
        let mut restore_started: Option<Instant> = None;
        let mut restore_late = false;
        let mut last_intent: Option<Intent> = None;
        loop {
            dirty.store(false, Ordering::SeqCst);
            if !cluster.healthy.load(Ordering::SeqCst) {
                // Frozen: the watch is failing, what we know may be stale. Do nothing.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let Some(pod) = self.pods.get(key).map(|p| p.clone()) else {
                self.release_budget(key);
                return;
            };
            let intent = planner::intent(&pod);
            let bindings = self.acting_bindings(&pod, &intent);
            if last_intent
                .as_ref()
                .is_some_and(|i| std::mem::discriminant(i) != std::mem::discriminant(&intent))
            {
                // A new operation (restore → drain or back): end this worker so the next one
                // runs in a span of its own; the dirty flag restarts it at once.
                dirty.store(true, Ordering::SeqCst);
                return;
            }
            last_intent = Some(intent.clone());
            if matches!(intent, Intent::Drain(_)) {
                // From the annotation (a drain resumed after a restart); a drain in progress
                // whose start was never recorded (a failed write, an annotation edited away)
                // starts its deadline now: every wait has one.
                clock.started = clock.started.or_else(|| drain_started(&pod));
                if clock.started.is_none() && pod.gate == Some(false) {
                    clock.started = Some(jiff::Timestamp::now());
                }
            } else {
                clock.started = None;
            }
            let targets = Self::targets(&pod, &bindings);
            if matches!(intent, Intent::Hold(_))
                || (bindings.is_empty() && !pod.finalizers.iter().any(|f| f.starts_with(DOMAIN)))
            {
                self.release_budget(key);
                return;
            }
            let mut observations = Vec::new();
            for t in &targets {
                observations.push(self.observe(t).await);
            }
            let facts = self.facts(&pod, &bindings, &targets, &observations, intent.clone(), &mut clock);
            let steps = planner::plan(&facts);
            if steps.contains(&Step::TakeBudget) {
                clock.started = Some(jiff::Timestamp::now());
            }
            let state = state_of(&intent, &steps);
            if state != op.state {
                op.state = state;
                op.since = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            }
            let summary = status_summary(&pod, &intent, &targets, &observations, &steps, clock.started, &op);
            if summary != last_status && pod.status_annotation.as_deref() != Some(summary.as_str()) {
                match cluster
                    .writer
                    .set_status_annotation(&pod.namespace, &pod.name, &pod.uid, &summary)
                    .await
                {
                    Ok(()) => last_status = summary,
                    // Not remembered as written: the next pass writes it again.
                    Err(e) => warn!(error = %e, "Could not write the status annotation."),
                }
            }
            if steps.is_empty() {
                if matches!(intent, Intent::Drain(_) | Intent::Restore) {
                    self.release_budget(key);
                }
                if !dirty.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            let blocked = blocked_reasons(&steps);
            let blocked_now = (!blocked.is_empty()).then(|| blocked.join("; "));
            if blocked_now.is_some() && blocked_now != last_blocked {
                let why = blocked_now.clone().unwrap_or_default();
                warn!(reason = %why, "Drain blocked.");
                cluster
                    .writer
                    .event(
                        &pod_reference(&pod.namespace, &pod.name, &pod.uid),
                        true,
                        "DrainBlocked",
                        "Drain",
                        why,
                    )
                    .await;
            }
            last_blocked = blocked_now;
            // A restore has a deadline too: past it, the pod stays out of traffic (its gate
            // is not True) and says so once, loudly; the restore goes on.
            if matches!(intent, Intent::Restore) {
                let started = *restore_started.get_or_insert_with(Instant::now);
                let deadline = Duration::from_secs(self.deadline_seconds(&bindings));
                if !restore_late && started.elapsed() > deadline {
                    restore_late = true;
                    let why = steps.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join("; ");
                    warn!(waiting = %why, "Restore not verified within its deadline; the pod stays out of traffic.");
                    cluster
                        .writer
                        .event(
                            &pod_reference(&pod.namespace, &pod.name, &pod.uid),
                            true,
                            "RestoreNotVerified",
                            "Restore",
                            format!("traffic not verified serving within {deadline:?}; still waiting: {why}"),
                        )
                        .await;
                }
            }
            let observe_failed = observations.iter().any(|o| o.is_err());
            let mut failed = false;
            let mut only_waiting = true;
            for step in &steps {
                if !matches!(step, Step::Wait(_) | Step::WaitForBudget | Step::Blocked(_)) {
                    only_waiting = false;
                }
                if let Err(e) = self.execute(&cluster, &pod, &bindings, &targets, step).await {
                    warn!(step = ?step, error = %e, "Step failed; will retry.");
                    failed = true;
                }
            }
            // A failing step or a target that cannot be observed backs off; a blocked drain
            // (waiting for a person, or for its traffic to go after all) polls slowly.
            errors = if failed || observe_failed { errors + 1 } else { 0 };
            let pause = if errors > 0 {
                // Exponential backoff, 50 ms → 5 s.
                Duration::from_millis((50u64 << errors.min(7)).min(5000))
            } else if last_blocked.is_some() {
                self.cfg.poll_interval().max(BLOCKED_POLL)
            } else if only_waiting {
                self.cfg.poll_interval()
            } else {
                Duration::ZERO
            };
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// The deadline of a pod's drain or restore: the strictest of its bindings'.
    fn deadline_seconds(&self, bindings: &[Binding]) -> u64 {
        bindings
            .iter()
            .map(|b| b.deadline_seconds)
            .min()
            .unwrap_or(self.cfg.default_deadline_seconds)
    }

    fn facts(
        &self,
        pod: &PodView,
        bindings: &[Binding],
        targets: &[PodTarget],
        observations: &[Result<Observation, String>],
        intent: Intent,
        clock: &mut DrainClock,
    ) -> Facts {
        let key = pod.key();
        let facts_targets: Vec<TargetFact> = targets
            .iter()
            .zip(observations)
            .enumerate()
            .map(|(id, (t, o))| TargetFact {
                id,
                kind: t.kind.clone(),
                state: o.as_ref().ok().map(|o| o.state),
            })
            .collect();
        let finalizers: BTreeSet<String> = pod
            .finalizers
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{DOMAIN}/")).map(String::from))
            .collect();
        let in_drain = pod.gate == Some(false) && !finalizers.is_empty();
        let mut holds = true;
        let mut free = true;
        for b in bindings {
            let bk = b.budget_key();
            let max = b.max_draining(|| self.matched_pods(&bk));
            let mut holders = self.budgets.entry(bk).or_default();
            if in_drain && matches!(intent, Intent::Drain(_)) {
                // Restart safety: a drain in progress keeps (re-takes) its slot.
                holders.insert(key.clone());
            }
            if !holders.contains(&key) {
                holds = false;
                if holders.len() >= max {
                    free = false;
                }
            }
        }
        let kinds: BTreeSet<&str> = facts_targets.iter().map(|t| t.kind.as_str()).collect();
        clock.drained_since.retain(|k, _| kinds.contains(k.as_str()));
        for kind in kinds {
            let drained = facts_targets
                .iter()
                .filter(|t| t.kind == kind)
                .all(|t| t.state == Some(TrafficState::Drained));
            if drained {
                clock.drained_since.entry(kind.to_string()).or_insert_with(Instant::now);
            } else {
                clock.drained_since.remove(kind);
            }
        }
        let settle = bindings.iter().map(|b| b.settle_seconds).max().unwrap_or(0);
        let deadline = self.deadline_seconds(bindings);
        let on_deadline = if bindings.iter().all(|b| b.on_deadline == OnDeadline::Release) && !bindings.is_empty() {
            OnDeadline::Release
        } else {
            OnDeadline::Block
        };
        let deadline_passed = clock.started.is_some_and(|s| {
            jiff::Timestamp::now().duration_since(s) > jiff::SignedDuration::from_secs(deadline as i64)
        });
        Facts {
            intent,
            targets: facts_targets,
            finalizers,
            gate: pod.gate,
            holds_budget: holds,
            budget_free: free,
            deadline_passed,
            on_deadline,
            settled: clock
                .drained_since
                .iter()
                .filter(|(_, t)| t.elapsed() >= Duration::from_secs(settle))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    async fn execute(
        &self,
        cluster: &ClusterHandle,
        pod: &PodView,
        bindings: &[Binding],
        targets: &[PodTarget],
        step: &Step,
    ) -> Result<(), String> {
        let (ns, name) = (&pod.namespace, &pod.name);
        let reference = pod_reference(ns, name, &pod.uid);
        let call = |fut| async move {
            match tokio::time::timeout(self.cfg.call_timeout(), fut).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e}")),
                Err(_) => Err("adapter call timed out".to_string()),
            }
        };
        match step {
            Step::TakeBudget => {
                // Check and take under the budget's lock: two pods planning at once must not
                // both get the last slot. A dying pod (deletion, preStop) takes one anyway
                // (see the planner).
                let dying = matches!(
                    planner::intent(pod),
                    Intent::Drain(DrainReason::Deleting | DrainReason::PreStop)
                );
                for b in bindings {
                    let bk = b.budget_key();
                    let max = b.max_draining(|| self.matched_pods(&bk));
                    let mut holders = self.budgets.entry(bk).or_default();
                    if !dying && !holders.contains(&pod.key()) && holders.len() >= max {
                        drop(holders);
                        self.release_budget(&pod.key());
                        return Ok(());
                    }
                    holders.insert(pod.key());
                }
                info!("Drain started.");
                cluster
                    .writer
                    .event(
                        &reference,
                        false,
                        "DrainStarted",
                        "Drain",
                        format!("draining {} target(s)", targets.len()),
                    )
                    .await;
                Ok(())
            }
            Step::WaitForBudget | Step::Wait(_) => Ok(()),
            Step::SetGate(v) => {
                let (reason, msg) = if *v {
                    ("TrafficRegistered", "every traffic component serves this pod")
                } else {
                    ("Draining", "traffic is being drained")
                };
                cluster
                    .writer
                    .set_gate(ns, name, &pod.uid, *v, reason, msg)
                    .await
                    .map_err(|e| e.to_string())
            }
            Step::Deregister(i) => {
                let t = &targets[*i];
                let span =
                    info_span!("deregister", adapter = t.adapter.name(), kind = %t.kind, target = %t.target.addr());
                self.adapter_writes.fetch_add(1, Ordering::SeqCst);
                call(t.adapter.deregister(&t.target)).instrument(span).await
            }
            Step::Register(i) => {
                let t = &targets[*i];
                let span =
                    info_span!("register", adapter = t.adapter.name(), kind = %t.kind, target = %t.target.addr());
                self.adapter_writes.fetch_add(1, Ordering::SeqCst);
                call(t.adapter.register(&t.target)).instrument(span).await
            }
            Step::AddFinalizer(kind) => {
                cluster
                    .writer
                    .add_finalizer(ns, name, &pod.uid, kind)
                    .await
                    .map_err(|e| e.to_string())?;
                cluster
                    .writer
                    .event(
                        &reference,
                        false,
                        "TrafficRestored",
                        "Restore",
                        format!("{kind} traffic registered and verified serving"),
                    )
                    .await;
                Ok(())
            }
            Step::RemoveFinalizer(kind) => {
                cluster
                    .writer
                    .remove_finalizer(ns, name, &pod.uid, kind)
                    .await
                    .map_err(|e| e.to_string())?;
                info!(kind, "Drain verified; finalizer removed.");
                cluster
                    .writer
                    .event(
                        &reference,
                        false,
                        "TrafficDrained",
                        "Drain",
                        format!("{kind} traffic verified drained; finalizer {} removed", finalizer(kind)),
                    )
                    .await;
                Ok(())
            }
            Step::ReleaseFinalizer(kind) => {
                cluster
                    .writer
                    .remove_finalizer(ns, name, &pod.uid, kind)
                    .await
                    .map_err(|e| e.to_string())?;
                warn!(
                    kind,
                    "Drain deadline passed; finalizer released WITHOUT verified drain (policy Release)."
                );
                cluster
                    .writer
                    .event(
                        &reference,
                        true,
                        "DrainReleased",
                        "Drain",
                        format!(
                            "deadline passed: {} removed WITHOUT verified drain (onDeadline: Release)",
                            finalizer(kind)
                        ),
                    )
                    .await;
                Ok(())
            }
            // Said once per new reason, by the worker (log and Event).
            Step::Blocked(_) => Ok(()),
        }
    }
}

/// When the current drain started, from the status annotation (survives restarts).
fn drain_started(pod: &PodView) -> Option<jiff::Timestamp> {
    pod.status()?["drainStartedAt"].as_str()?.parse().ok()
}

/// The operation recorded in the pod's status annotation, when it is of the same kind as
/// `intent` (drain states for a drain, restore states for a restore).
fn continued_operation(pod: &PodView, intent: &Intent) -> Option<Operation> {
    let v = pod.status()?;
    let words: &[&'static str] = match intent {
        Intent::Drain(_) => &DRAIN_STATES,
        Intent::Restore => &RESTORE_STATES,
        Intent::Hold(_) => &[],
    };
    let state = *words.iter().find(|w| v["state"] == **w)?;
    Some(Operation {
        trace_id: v["traceId"].as_str().filter(|t| !t.is_empty())?.to_string(),
        state,
        since: v["lastTransition"].as_str()?.to_string(),
    })
}

/// The state words of a drain and of a restore (what [`state_of`] answers).
const DRAIN_STATES: [&str; 5] = ["drained", "starting-drain", "blocked", "waiting-for-budget", "draining"];
const RESTORE_STATES: [&str; 2] = ["serving", "restoring"];

/// Why the plan is blocked, if it is.
fn blocked_reasons(steps: &[Step]) -> Vec<&str> {
    steps
        .iter()
        .filter_map(|s| {
            if let Step::Blocked(w) = s {
                Some(w.as_str())
            } else {
                None
            }
        })
        .collect()
}

/// The state word of the status annotation.
fn state_of(intent: &Intent, steps: &[Step]) -> &'static str {
    match (intent, steps.is_empty()) {
        (Intent::Drain(_), true) => "drained",
        (Intent::Drain(_), false) if steps == [Step::TakeBudget] => "starting-drain",
        (Intent::Drain(_), false) if steps.iter().any(|s| matches!(s, Step::Blocked(_))) => "blocked",
        (Intent::Drain(_), false) if steps.iter().any(|s| matches!(s, Step::WaitForBudget)) => "waiting-for-budget",
        (Intent::Drain(_), false) => "draining",
        (Intent::Restore, true) => "serving",
        (Intent::Restore, false) => "restoring",
        (Intent::Hold(_), _) => "holding",
    }
}

/// The `sluice.dev/status` annotation: state, evidence per target, and what blocks.
fn status_summary(
    pod: &PodView,
    intent: &Intent,
    targets: &[PodTarget],
    observations: &[Result<Observation, String>],
    steps: &[Step],
    drain_start: Option<jiff::Timestamp>,
    op: &Operation,
) -> String {
    let evidence: BTreeMap<String, String> = targets
        .iter()
        .zip(observations)
        .map(|(t, o)| {
            let k = format!("{}/{}", t.kind, t.adapter.name());
            // State only (and whole seconds remaining): evidence counters change every poll and
            // would turn the annotation into a stream of writes.
            let v = match o {
                Ok(o) => match o.remaining {
                    Some(r) => format!("{:?} (remaining {}s)", o.state, r.as_secs()),
                    None => format!("{:?}", o.state),
                },
                Err(e) => format!("unobserved: {e}"),
            };
            (k, v)
        })
        .collect();
    let blocked = blocked_reasons(steps);
    let mut doc = json!({"state": op.state, "lastTransition": op.since, "traceId": op.trace_id, "targets": evidence});
    if let Some(s) = drain_start.filter(|_| matches!(intent, Intent::Drain(_))) {
        doc["drainStartedAt"] = json!(s.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    if !blocked.is_empty() {
        doc["blocked"] = json!(blocked);
    }
    if !pod.has_gate {
        doc["warning"] =
            json!("pod lacks readinessGate sluice.dev/traffic-ready: it may be Ready before its traffic is");
    }
    doc.to_string()
}
