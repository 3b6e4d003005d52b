//! One pod's worker: observe the pod's targets (concurrently, each adapter within its
//! call limit) → plan (pure) → record the status → execute → pause → again, until the plan
//! is empty. A change of operation (restore ↔ drain) ends the worker so the next one gets
//! a span of its own.
//!
//! A worker holds a slot of the engine's worker cap only while a pass runs, never while
//! it waits, so pods blocked for hours cannot starve new drains. Between passes it pauses
//! at least the poll interval (no busy loop): longer after failures (exponential backoff),
//! while blocked (a second), and after a failure a person must fix (minutes, see
//! `engine.permanentRetrySeconds`). Its own pod writes update the engine's view at once, so
//! a lagging watch never makes it repeat a step.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use sluice_adapter::Observation;
use tracing::{info_span, warn, Instrument};

use super::error::{bounded, StepError};
use super::targets::{self, PodTarget};
use super::{ClusterHandle, Engine, Slot};
use crate::binding::OnDeadline;
use crate::k8s::pod_reference;
use crate::model::status::{now_text, time_text};
use crate::model::{Binding, PodKey, PodView, State, StatusSummary, TargetId};
use crate::planner::{self, Facts, Intent, Seen, Step, TargetFact};

/// How often a blocked drain is looked at again.
const BLOCKED_POLL: Duration = Duration::from_secs(1);
/// The longest pause between observations while a drain or restore waits for evidence.
const MAX_WAIT_POLL: Duration = Duration::from_secs(1);
/// The longest pause of a drain waiting for a budget slot (a slot given back wakes it).
const MAX_BUDGET_POLL: Duration = Duration::from_secs(10);
/// A recorded drain start further in the future than this is not trusted (clock skew
/// between replicas is seconds, not minutes).
const FUTURE_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// What identifies one operation: its trace id and its state since when.
#[derive(Debug, Clone)]
struct Operation {
    trace_id: String,
    /// The span that started the operation (16 hex), when exported.
    span_id: Option<String>,
    state: Option<State>,
    since: String,
}

impl Operation {
    /// A new operation: in the release's trace when the pod names one
    /// (`sluice.dev/traceparent`), else in a trace of its own.
    fn new(traceparent: Option<&str>) -> Operation {
        let trace = traceparent
            .and_then(crate::telemetry::TraceParent::parse)
            .map(|p| p.trace_id)
            .unwrap_or_else(|| rand::random::<u128>().max(1));
        Operation {
            trace_id: format!("{trace:032x}"),
            span_id: None,
            state: None,
            since: String::new(),
        }
    }

    /// The operation recorded on the pod, when it is of the same kind as `intent`: a
    /// restarted gateway (or a worker kicked again) continues it, writing nothing new.
    fn continued(recorded: Option<&StatusSummary>, intent: &Intent) -> Option<Operation> {
        let s = recorded?;
        let same = match intent {
            Intent::Drain(_) => s.state.is_drain(),
            Intent::Restore => s.state.is_restore(),
            Intent::Hold(_) => s.state == State::Holding,
        };
        (same && !s.trace_id.is_empty()).then(|| Operation {
            trace_id: s.trace_id.clone(),
            span_id: s.span_id.clone(),
            state: Some(s.state),
            since: s.last_transition.clone(),
        })
    }
}

/// What the next pass should be.
enum Next {
    Exit,
    After(Duration),
    /// Nothing to do until this long has passed, or the pod changes.
    Park(Duration),
}

/// The outcome of executing one plan.
#[derive(Default)]
pub(super) struct Outcome {
    pub failures: Vec<StepError>,
}

pub(super) struct Worker<'a> {
    pub engine: &'a Arc<Engine>,
    pub cluster: Arc<ClusterHandle>,
    pub key: PodKey,
    slot: &'a Slot,
    op: Operation,
    /// The state recorded when the worker started: a drain that continues keeps its
    /// recorded start (and its deadline).
    pub continued_from: Option<State>,
    first_intent: std::mem::Discriminant<Intent>,
    errors: u32,
    drained_since: HashMap<TargetId, Instant>,
    /// Targets this restore has seen serving.
    serving_seen: std::collections::HashSet<TargetId>,
    pub(super) drain_started: Option<jiff::Timestamp>,
    started: jiff::Timestamp,
    pub(super) restore_started: Option<Instant>,
    restore_late: bool,
    pub released: bool,
    /// Steps that failed permanently in the last pass: blocked reasons until they succeed.
    failed: Vec<String>,
    /// Since when the passes have only waited for evidence (nothing acted, nothing failed).
    waiting_since: Option<Instant>,
    /// The wait under way (budget, settle, TTL, evidence): one span from its first pass to
    /// the pass that ends it.
    wait: Option<Wait>,
    /// The steps of the last pass that planned again at once: the same steps again get a
    /// poll, so an adapter that keeps announcing a due step cannot spin the worker.
    replanned: Option<Vec<Step>>,
}

/// A wait of the operation, as one span.
struct Wait {
    kind: &'static str,
    /// Open while the wait lasts; dropping it ends the span.
    _span: tracing::Span,
    since: Instant,
}

/// Runs a pod's worker until its plan is empty (or its operation changes).
pub(crate) async fn run(engine: &Arc<Engine>, key: &PodKey, slot: &Slot) {
    let Some(first) = engine.pods.get(key).map(|p| p.clone()) else {
        return;
    };
    let Some(cluster) = engine.clusters.get(&key.cluster).cloned() else {
        return;
    };
    let intent = planner::intent(&first);
    let recorded = first.status();
    let under_way = recorded
        .as_ref()
        .is_some_and(|s| s.state.under_way() && s.state.is_drain() == matches!(intent, Intent::Drain(_)));
    if engine.authority.paused() && !under_way {
        // Paused: nothing new starts (the drain or restore under way goes on).
        return;
    }
    let continued = Operation::continued(recorded.as_ref(), &intent);
    let mut op = continued
        .clone()
        .unwrap_or_else(|| Operation::new(first.traceparent.as_deref()));
    let trace_id = op.trace_id.clone();
    let pod = first.display();
    // Attributes after the OpenTelemetry Kubernetes conventions.
    let span = match &intent {
        Intent::Drain(r) => info_span!("drain", %pod, uid = %first.uid, reason = ?r, %trace_id,
            "k8s.cluster.name" = %first.cluster, "k8s.namespace.name" = %first.namespace,
            "k8s.pod.name" = %first.name, "k8s.pod.uid" = %first.uid),
        Intent::Restore => info_span!("restore", %pod, uid = %first.uid, %trace_id,
            "k8s.cluster.name" = %first.cluster, "k8s.namespace.name" = %first.namespace,
            "k8s.pod.name" = %first.name, "k8s.pod.uid" = %first.uid),
        Intent::Hold(_) => info_span!("hold", %pod),
    };
    if !matches!(intent, Intent::Hold(_)) {
        // The operation's trace: the recorded trace id (continued after a restart), under
        // the release's span when the pod names one.
        if let Some(cx) = crate::telemetry::parent_context(&trace_id, first.traceparent.as_deref()) {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(cx);
        }
        // A continued operation links to the span that started it (interrupted by a
        // restart or a failover); a new one records its own span for that link.
        match op.span_id.as_deref() {
            Some(started) => {
                if let Some(link) = crate::telemetry::span_context(&trace_id, started) {
                    use tracing_opentelemetry::OpenTelemetrySpanExt;
                    span.add_link(link);
                }
            }
            None => op.span_id = crate::telemetry::span_id_of(&span),
        }
    }
    let continued_from = continued.and_then(|o| o.state);
    let mut w = Worker {
        engine,
        cluster,
        key: key.clone(),
        slot,
        continued_from,
        released: continued_from == Some(State::Released),
        op,
        first_intent: std::mem::discriminant(&intent),
        errors: 0,
        drained_since: HashMap::new(),
        serving_seen: Default::default(),
        drain_started: None,
        waiting_since: None,
        wait: None,
        replanned: None,
        started: jiff::Timestamp::now(),
        restore_started: None,
        restore_late: false,
        failed: Vec::new(),
    };
    w.run_loop().instrument(span).await;
}

impl Worker<'_> {
    async fn run_loop(&mut self) {
        // The worker cap's permit is kept from a pass that moved the operation forward to
        // the next one, if that follows within the poll interval: an operation under way
        // goes on before new ones start. Queued again behind every new drain at each pass,
        // a drain of a zone evacuation took as long as all of them. It is given back
        // across any longer pause and while the pod only waits for evidence, so pods
        // waiting or blocked for hours cannot starve new drains.
        let mut permit = None;
        loop {
            self.slot.dirty.store(false, Ordering::SeqCst);
            let forced = self.slot.force.swap(false, Ordering::SeqCst);
            let next = {
                if permit.is_none() {
                    let Ok(p) = self.engine.running.clone().acquire_owned().await else {
                        return;
                    };
                    permit = Some(p);
                }
                let _in_flight = super::InFlight::new(&self.engine.in_flight);
                self.pass(forced).await
            };
            let going_on =
                matches!(next, Next::After(d) if d <= self.engine.cfg.poll_interval()) && self.waiting_since.is_none();
            if !going_on {
                permit = None;
            }
            match next {
                // The engine runs the pod again if something arrived meanwhile (a new
                // operation gets a worker, and a span, of its own).
                Next::Exit => return,
                Next::After(d) => {
                    if !d.is_zero() {
                        // Woken by a shutdown: the next pass ends the worker (and closes its span).
                        self.engine.authority.sleep(d).await;
                    }
                }
                Next::Park(d) => {
                    tokio::select! {
                        _ = self.engine.authority.sleep(d) => {}
                        _ = self.slot.wake.notified() => {}
                    }
                }
            }
        }
    }

    async fn pass(&mut self, forced: bool) -> Next {
        let authority = &self.engine.authority;
        if !authority.leading() || authority.stopping() {
            // A standby, a leader that lost its lease, or a gateway shutting down: the
            // leader (this one again, or another) picks the pod up where it stands.
            return Next::Exit;
        }
        if !self.cluster.healthy.load(Ordering::SeqCst) {
            // Frozen: the watch is failing, what we know may be stale. Do nothing.
            return Next::After(Duration::from_millis(200));
        }
        let Some(pod) = self.engine.pods.get(&self.key).map(|p| p.clone()) else {
            return Next::Exit;
        };
        let intent = planner::intent(&pod);
        if std::mem::discriminant(&intent) != self.first_intent {
            // A new operation: end this worker so the next one runs in a span of its own.
            self.slot.dirty.store(true, Ordering::SeqCst);
            return Next::Exit;
        }
        if let Intent::Hold(h) = &intent {
            if let Some(problem) = h.problem() {
                self.report(&pod, State::Holding, vec![problem.to_string()], "InvalidSignal")
                    .await;
            }
            return Next::Exit;
        }
        let Assessment {
            ledger,
            bindings,
            invalid_selecting,
            targets,
        } = match look(self.engine, &pod, &intent, forced) {
            Look::Idle { unbound_gate } => {
                // No budget counts the pod (or it serves): a slot it held goes back.
                self.engine.release_budget(&self.key);
                if unbound_gate {
                    let problem = "the pod carries readinessGate sluice.dev/traffic-ready but no valid TrafficBinding \
                                   selects it: nothing will set the gate, so it stays NotReady (add a binding, or \
                                   remove the readiness gate)";
                    self.report(&pod, State::Unbound, vec![problem.into()], "NoTrafficBinding")
                        .await;
                }
                return Next::Exit;
            }
            Look::Work(a) => a,
        };
        let observations = join_all(targets.iter().map(|t| self.observe(t))).await;
        let mut needs = self.engine.needs(&bindings);
        // An invalid binding still bounds its pods: its budget cannot be read, so it is
        // taken as 1 (a typo must not let every pod out at once).
        needs.extend(invalid_selecting.iter().map(|name| super::budget::Need {
            key: format!("{}/{name}", pod.namespace),
            max: 1,
        }));
        // A drain resumed after a restart got its slot back when the cluster synced
        // (`Engine::on_synced`), before any worker ran.
        let holds = self.engine.budgets.holds(&self.key, &needs);
        let facts = Facts {
            targets: self.target_facts(&targets, &observations),
            finalizers: pod.kind_finalizers(),
            guard: pod.guarded(),
            ledger_kept: pod.ledger_annotation.is_some(),
            ledger_unreadable: ledger.as_ref().err().map(|e| e.to_string()),
            gate: pod.gate,
            holds_budget: holds,
            budget_free: self.engine.budgets.free(&self.key, &needs),
            deadline_passed: self.deadline_passed(&pod, &intent, &bindings, holds),
            on_deadline: if !bindings.is_empty() && bindings.iter().all(|b| b.on_deadline == OnDeadline::Release) {
                OnDeadline::Release
            } else {
                OnDeadline::Block
            },
            invalid_bindings: invalid_selecting,
            intent: intent.clone(),
        };
        let steps = planner::plan(&facts);
        let state = state_of(&intent, &steps, self.released);
        if authority.role() == crate::authority::Role::Shadow {
            // Shadow mode: say what would be done, do none of it.
            let acts: Vec<&Step> = steps.iter().filter(|s| s.acts()).collect();
            if !acts.is_empty() || pod.status().map(|s| s.state) != Some(state) {
                tracing::info!(state = ?state, steps = ?acts, "Shadow: would act.");
            }
            return Next::Exit;
        }
        let mut problems = Vec::new();
        if !pod.has_gate {
            problems.push(
                "pod lacks readinessGate sluice.dev/traffic-ready: it may be Ready before its traffic is".to_string(),
            );
        }
        if authority.paused() && steps.contains(&Step::TakeBudget) {
            // Paused: a drain that has not taken its slot yet does not start.
            return Next::After(BLOCKED_POLL);
        }
        self.track_wait(wait_kind(&steps, &facts, &observations), &steps);
        self.write_status(&pod, &intent, state, &targets, &observations, &steps, problems.clone())
            .await;
        if steps.is_empty() {
            if matches!(intent, Intent::Restore) && pod.gate == Some(true) {
                self.engine.release_budget(&self.key);
            }
            if let (Intent::Drain(planner::DrainReason::Requested), Some(until)) = (&intent, pod.drain_request) {
                // Drained on request (an eviction the webhook held): if the pod is still
                // here when the request lapses, the next pass restores it.
                let left = Duration::try_from(until.duration_since(jiff::Timestamp::now())).unwrap_or_default();
                return Next::Park(left + Duration::from_millis(50));
            }
            return Next::Exit;
        }
        self.check_restore_deadline(&pod, &intent, &bindings, &steps).await;
        let outcome = self
            .execute(&pod, &intent, &targets, &observations, &needs, &steps)
            .await;
        let observe_failed = observations.iter().any(|o| o.as_ref().is_some_and(|o| o.is_err()));
        let blocked = steps.iter().any(|s| matches!(s, Step::Blocked(_)));
        let acted = steps.iter().any(Step::acts);
        let permanent = !outcome.failures.is_empty() && outcome.failures.iter().all(|e| !e.is_retryable());
        for e in &outcome.failures {
            warn!(error = %e, retryable = e.is_retryable(), "Step failed; will retry.");
        }
        // A failure a person must fix is said where `kubectl describe` shows it (status,
        // and an Event once), and retried slowly.
        let failed: Vec<String> = outcome
            .failures
            .iter()
            .filter(|e| !e.is_retryable())
            .map(|e| e.to_string())
            .collect();
        if failed != self.failed {
            self.failed = failed;
            let state = if self.failed.is_empty() || !matches!(intent, Intent::Drain(_)) {
                state
            } else {
                State::Blocked
            };
            self.write_status(&pod, &intent, state, &targets, &observations, &steps, problems)
                .await;
        }
        self.errors = if outcome.failures.is_empty() && !observe_failed {
            0
        } else {
            self.errors + 1
        };
        let poll = self.engine.cfg.poll_interval();
        let pause = if permanent || (blocked && !acted && matches!(intent, Intent::Restore)) {
            Duration::from_secs(self.engine.cfg.permanent_retry_seconds)
        } else if self.errors > 0 {
            // Exponential backoff, 50 ms → 5 s.
            Duration::from_millis((50u64 << self.errors.min(7)).min(5000))
        } else if blocked {
            poll.max(BLOCKED_POLL)
        } else if acted {
            self.waiting_since = None;
            if self.replanned.as_deref() == Some(&steps[..]) {
                // The same steps again right after they were made: the backend needs a
                // moment to show what changed (and a step it keeps asking for cannot spin
                // the worker).
                poll
            } else {
                // Plan again at once: pod writes are already in the view (`took`), so the
                // last write of a drain (its status) follows the finalizers' without a
                // poll; after an adapter call, its evidence is often there at once (a
                // registry, a server with no session left). When it is not, the next pass
                // only waits, and waits are paced.
                Duration::ZERO
            }
        } else {
            // Only waiting (sessions to end, a TTL, a settle window, a health check): the
            // longer it has waited, the less often it looks — 2 % of the wait so far, at
            // most a second — so a 300 s TTL costs a few hundred observations, not 30,000,
            // while a drain that ends early is still seen within a few percent of its time.
            let since = *self.waiting_since.get_or_insert_with(Instant::now);
            (since.elapsed() / 50).clamp(poll, MAX_WAIT_POLL.max(poll))
        };
        self.replanned = pause.is_zero().then(|| steps.clone());
        if !acted && steps.contains(&Step::WaitForBudget) {
            // Woken when a slot is given back (`Engine::release_budget`): the look it
            // takes on its own (10 % of the wait so far, at most every 10 s) is only a
            // safety net, so thousands of drains waiting for slots do not each observe
            // their targets every second.
            self.engine.budgets.wait(&self.key, needs.iter().map(|n| n.key.clone()));
            if self.engine.budgets.free(&self.key, &needs) {
                // Given back between this pass's look and the queueing.
                return Next::After(Duration::ZERO);
            }
            let since = self.waiting_since.unwrap_or_else(Instant::now);
            return Next::Park((since.elapsed() / 10).clamp(pause, MAX_BUDGET_POLL.max(pause)));
        }
        Next::After(pause)
    }

    /// Opens, keeps or ends the span of the wait under way (`kind`: `None` when the pass
    /// does not only wait). An ended wait's duration goes to the evidence-wait histogram.
    fn track_wait(&mut self, kind: Option<&'static str>, steps: &[Step]) {
        if self.wait.as_ref().map(|w| w.kind) == kind {
            return;
        }
        if let Some(done) = self.wait.take() {
            self.engine.metrics.wait(done.kind, done.since.elapsed());
        }
        self.wait = kind.map(|kind| {
            let waiting = steps
                .iter()
                .find_map(|s| match s {
                    Step::Wait(why) => Some(why.as_str()),
                    Step::WaitForBudget => Some("a disruption-budget slot"),
                    _ => None,
                })
                .unwrap_or_default();
            Wait {
                kind,
                _span: info_span!("wait", "sluice.wait" = kind, "sluice.waiting" = waiting),
                since: Instant::now(),
            }
        });
    }

    /// Observes one target (`None`: no adapter instance to ask).
    async fn observe(&self, t: &PodTarget) -> Option<Result<Observation, StepError>> {
        let adapter = t.adapter.as_ref()?;
        let _permit = self.engine.permit(adapter.name()).await;
        let span = info_span!("observe", adapter = adapter.name(), target = %t.target.addr(),
            "sluice.adapter" = adapter.name(), "sluice.kind" = %t.kind, "sluice.binding" = %t.binding,
            "sluice.state" = tracing::field::Empty, "sluice.evidence" = tracing::field::Empty,
            "sluice.remaining_ms" = tracing::field::Empty, "sluice.error" = tracing::field::Empty);
        let started = Instant::now();
        let result = bounded(
            adapter.name(),
            self.engine.cfg.call_timeout(),
            adapter.observe(&t.target),
        )
        .instrument(span.clone())
        .await;
        // What the observation saw, on its span: the evidence that ended (or prolonged) a wait.
        match &result {
            Ok(o) => {
                span.record("sluice.state", tracing::field::debug(o.state));
                span.record("sluice.evidence", o.evidence.as_str());
                if let Some(r) = o.remaining {
                    span.record("sluice.remaining_ms", r.as_millis() as u64);
                }
            }
            Err(e) => {
                span.record("sluice.error", tracing::field::display(e));
            }
        }
        self.engine.metrics.call(
            adapter.name(),
            "observe",
            super::error::outcome(&result),
            started.elapsed(),
        );
        Some(result)
    }

    fn target_facts(
        &mut self,
        targets: &[PodTarget],
        observations: &[Option<Result<Observation, StepError>>],
    ) -> Vec<TargetFact> {
        self.drained_since.retain(|id, _| targets.iter().any(|t| &t.id == id));
        targets
            .iter()
            .zip(observations)
            .enumerate()
            .map(|(id, (t, o))| {
                let seen = match o {
                    None => Seen::NoAdapter(t.id.adapter.clone()),
                    Some(Ok(o)) => Seen::State {
                        state: o.state,
                        advance: o.advance,
                    },
                    Some(Err(e)) => Seen::Failed {
                        permanent: !e.is_retryable(),
                        why: e.to_string(),
                    },
                };
                let drained = matches!(
                    seen,
                    Seen::State {
                        state: sluice_adapter::TrafficState::Drained,
                        ..
                    }
                );
                // The first time this worker sees a target done: its time, per adapter.
                let restoring = self.first_intent == std::mem::discriminant(&Intent::Restore);
                if drained && !restoring && !self.drained_since.contains_key(&t.id) {
                    if let Some(started) = self.drain_started {
                        let took = jiff::Timestamp::now().duration_since(started);
                        self.engine.metrics.target_done(
                            "drain",
                            &t.id.adapter,
                            &t.kind,
                            Duration::try_from(took).unwrap_or_default(),
                            &self.op.trace_id,
                        );
                    }
                }
                let serving = matches!(
                    seen,
                    Seen::State {
                        state: sluice_adapter::TrafficState::Serving,
                        ..
                    }
                );
                if serving && restoring && self.serving_seen.insert(t.id.clone()) {
                    if let Some(started) = self.restore_started {
                        self.engine.metrics.target_done(
                            "restore",
                            &t.id.adapter,
                            &t.kind,
                            started.elapsed(),
                            &self.op.trace_id,
                        );
                    }
                }
                let settled = if drained {
                    self.drained_since
                        .entry(t.id.clone())
                        .or_insert_with(Instant::now)
                        .elapsed()
                        >= t.settle
                } else {
                    self.drained_since.remove(&t.id);
                    false
                };
                TargetFact {
                    id,
                    kind: t.kind.clone(),
                    name: format!("{} target {}", t.kind, t.id),
                    desired: t.desired,
                    recorded: t.recorded,
                    held: t.held,
                    seen,
                    settled,
                    forced: o.as_ref().and_then(|o| o.as_ref().ok()).and_then(|o| o.forced.clone()),
                }
            })
            .collect()
    }

    /// The deadline of a pod's drain: the strictest of its bindings' (the gateway default
    /// without one), counted from the recorded start — and never before a resumed worker
    /// has had `resumeGraceSeconds` (or the whole deadline, when shorter) to verify: a
    /// gateway outage, or a start forged into the past, never turns into a release by
    /// itself. A start in the future is not trusted.
    fn deadline_passed(&mut self, pod: &PodView, intent: &Intent, bindings: &[Binding], holds_budget: bool) -> bool {
        if !matches!(intent, Intent::Drain(_)) {
            self.drain_started = None;
            return false;
        }
        if !holds_budget && self.drain_started.is_none() {
            // Waiting for a budget slot is not draining: the clock starts with the drain.
            return false;
        }
        let now = jiff::Timestamp::now();
        let continued = self.continued_from.is_some_and(State::is_drain);
        let started = *self.drain_started.get_or_insert_with(|| {
            let recorded = continued
                .then(|| pod.status().and_then(|s| s.drain_started()))
                .flatten();
            match recorded {
                Some(t) if t <= now + FUTURE_SKEW => t,
                Some(t) => {
                    warn!(recorded = %t, "The recorded drain start is in the future; the deadline counts from now.");
                    now
                }
                None => now,
            }
        });
        let deadline = deadline_seconds(bindings, self.engine.cfg.default_deadline_seconds);
        let grace = deadline.min(self.engine.cfg.resume_grace_seconds);
        let by_record = started + jiff::SignedDuration::from_secs(deadline as i64);
        let by_resume = self.started + jiff::SignedDuration::from_secs(grace as i64);
        now > by_record.max(by_resume)
    }

    /// Writes the status annotation when it says something new; Events for new blocked
    /// reasons and problems, once (the annotation is the memory, so a restart does not
    /// repeat them).
    #[allow(clippy::too_many_arguments)]
    async fn write_status(
        &mut self,
        pod: &PodView,
        intent: &Intent,
        state: State,
        targets: &[PodTarget],
        observations: &[Option<Result<Observation, StepError>>],
        steps: &[Step],
        problems: Vec<String>,
    ) {
        let evidence: BTreeMap<String, String> = targets
            .iter()
            .zip(observations)
            .map(|(t, o)| {
                // The state only: evidence counters change every poll and would turn the
                // annotation into a stream of writes (the evidence goes into Events).
                let v = match o {
                    None => format!("adapter instance {:?} not configured", t.id.adapter),
                    Some(Ok(o)) => format!("{:?}", o.state),
                    Some(Err(e)) => format!("unobserved: {e}"),
                };
                (t.status_key(), v)
            })
            .collect();
        let blocked: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Blocked(w) => Some(w.clone()),
                _ => None,
            })
            .chain(self.failed.iter().cloned())
            .collect();
        let drain_started_at = match intent {
            Intent::Drain(_) => self.drain_started.map(time_text),
            _ => None,
        };
        self.set_status(pod, state, evidence, drain_started_at, blocked, problems, intent)
            .await;
    }

    /// Metrics of a state change (once per change: the recorded state is the memory, so a
    /// restart does not count a transition twice).
    fn count_transition(&self, state: State, blocked: &[String]) {
        let m = &self.engine.metrics;
        let since =
            |t: jiff::Timestamp| Duration::try_from(jiff::Timestamp::now().duration_since(t)).unwrap_or_default();
        match state {
            State::Drained => m.transition("drain", "verified", self.drain_started.map(since).unwrap_or_default()),
            State::Released => {
                m.transition("drain", "released", self.drain_started.map(since).unwrap_or_default());
                m.deadline_hits
                    .get_or_create(&crate::metrics::PolicyLabels {
                        policy: "Release".into(),
                    })
                    .inc();
            }
            State::Serving if self.op.state == Some(State::Restoring) => m.transition(
                "restore",
                "verified",
                self.restore_started.map(|s| s.elapsed()).unwrap_or_default(),
            ),
            State::WaitingForBudget => {
                m.budget_waits.inc();
            }
            State::Blocked if blocked.iter().any(|b| b.contains("deadline passed")) => {
                m.deadline_hits
                    .get_or_create(&crate::metrics::PolicyLabels { policy: "Block".into() })
                    .inc();
            }
            _ => {}
        }
    }

    /// Reports a pod Sluice will not act on (a refused signal, no binding).
    async fn report(&mut self, pod: &PodView, state: State, problems: Vec<String>, reason: &str) {
        let recorded = pod.status();
        if recorded
            .as_ref()
            .is_some_and(|r| r.state == state && r.problems == problems)
        {
            return;
        }
        let before = recorded.map(|s| s.problems).unwrap_or_default();
        let wrote = self
            .set_status(
                pod,
                state,
                BTreeMap::new(),
                None,
                vec![],
                problems.clone(),
                &Intent::Restore,
            )
            .await;
        if wrote && before != problems {
            warn!(problem = %problems.join("; "), "Pod not acted on.");
            self.event(pod, true, reason, "Check", problems.join("; ")).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn set_status(
        &mut self,
        pod: &PodView,
        state: State,
        targets: BTreeMap<String, String>,
        drain_started_at: Option<String>,
        blocked: Vec<String>,
        problems: Vec<String>,
        intent: &Intent,
    ) -> bool {
        if self.op.state != Some(state) {
            self.count_transition(state, &blocked);
            self.op.state = Some(state);
            self.op.since = now_text();
        }
        let summary = StatusSummary {
            state,
            last_transition: self.op.since.clone(),
            trace_id: self.op.trace_id.clone(),
            span_id: self.op.span_id.clone(),
            targets,
            drain_started_at,
            blocked,
            problems,
        };
        let recorded = pod.status();
        if recorded.as_ref() == Some(&summary) {
            return false;
        }
        match self
            .cluster
            .writer
            .set_status_annotation(&pod.namespace, &pod.name, &pod.uid, &summary.render())
            .await
        {
            Ok(written) if written.changed() => {
                self.took(&written);
                let before = recorded.map(|r| r.blocked).unwrap_or_default();
                if !summary.blocked.is_empty() && before != summary.blocked {
                    let why = summary.blocked.join("; ");
                    warn!(reason = %why, "Blocked.");
                    let (reason, action) = match intent {
                        Intent::Drain(_) => ("DrainBlocked", "Drain"),
                        _ => ("RestoreBlocked", "Restore"),
                    };
                    self.event(pod, true, reason, action, why).await;
                }
                true
            }
            Ok(written) => {
                self.took(&written);
                false
            }
            // The pod is gone: its last finalizer went and nothing held it. The watch
            // tells the worker so.
            Err(e) if e.is_not_found() => {
                tracing::debug!(error = %e, "The pod is gone; its status is not written.");
                false
            }
            // Not remembered as written: the next pass writes it again.
            Err(e) => {
                warn!(error = %e, "Could not write the status annotation.");
                false
            }
        }
    }

    /// A restore has a deadline too: past it, a Warning Event (once); the pod stays out
    /// of traffic and the restore goes on.
    async fn check_restore_deadline(&mut self, pod: &PodView, intent: &Intent, bindings: &[Binding], steps: &[Step]) {
        if !matches!(intent, Intent::Restore) {
            return;
        }
        let started = *self.restore_started.get_or_insert_with(Instant::now);
        let deadline = Duration::from_secs(deadline_seconds(bindings, self.engine.cfg.default_deadline_seconds));
        if self.restore_late || started.elapsed() <= deadline || pod.gate == Some(true) {
            return;
        }
        self.restore_late = true;
        let why = steps.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join("; ");
        warn!(waiting = %why, "Restore not verified within its deadline; the pod stays out of traffic.");
        self.event(
            pod,
            true,
            "RestoreNotVerified",
            "Restore",
            format!("traffic not verified serving within {deadline:?}; still waiting: {why}"),
        )
        .await;
    }

    /// Takes a pod this worker wrote (or read while writing) into the engine's view, and
    /// looks again if that view moved: the answer may carry a change the watch has not
    /// delivered yet (and, once delivered, that event is older than the view and is not
    /// acted on twice).
    pub(super) fn took(&self, written: &crate::k8s::Written) {
        if self.engine.update_view(&self.cluster.name, written.pod()) {
            self.slot.dirty.store(true, Ordering::SeqCst);
        }
    }

    pub(super) async fn event(&self, pod: &PodView, warning: bool, reason: &str, action: &str, note: String) {
        self.cluster
            .writer
            .event(
                &pod_reference(&pod.namespace, &pod.name, &pod.uid),
                warning,
                reason,
                action,
                note,
            )
            .await;
    }
}

/// The deadline of a pod's drain or restore: the strictest of its bindings'.
fn deadline_seconds(bindings: &[Binding], default: u64) -> u64 {
    bindings.iter().map(|b| b.deadline_seconds).min().unwrap_or(default)
}

/// The invalid bindings of the pod's namespace: those that select it (by name), and every
/// name (their recorded targets are held).
fn invalid_bindings(engine: &Engine, pod: &PodView) -> (Vec<String>, Vec<String>) {
    let mut selecting = Vec::new();
    let mut names = Vec::new();
    for b in engine.bindings.iter() {
        let (cluster, ns, name) = b.key();
        if *cluster != pod.cluster || *ns != pod.namespace || b.valid().is_some() {
            continue;
        }
        names.push(name.clone());
        if super::selects(&b, pod) {
            selecting.push(name.clone());
        }
    }
    selecting.sort();
    (selecting, names)
}

/// Whether a worker's first pass (not forced) would end at once, writing nothing, calling
/// no adapter and raising no Event: a pod held for a reason that is no problem (no address
/// yet, containers not ready), a pod no binding covers with nothing of Sluice's on it, or a
/// restore its record says is done. A kick of such a pod starts no task: at a cluster's sync
/// that is nearly every pod, and a task each (a few KiB apiece, for a million pods at once)
/// was most of the gateway's memory. The budget slot such a pass gives back goes back here.
pub(super) fn settled(engine: &Arc<Engine>, key: &PodKey, pod: &PodView) -> bool {
    let intent = planner::intent(pod);
    if let Intent::Hold(h) = &intent {
        return h.problem().is_none();
    }
    // An unbound gate is reported by the pass.
    let idle = matches!(look(engine, pod, &intent, false), Look::Idle { unbound_gate: false });
    if idle {
        engine.release_budget(key);
    }
    idle
}

/// What a pass finds before it asks any adapter.
enum Look {
    /// Nothing to do: no binding covers the pod and nothing of Sluice's is on it (relabelled,
    /// selector edited), or a restore its record says is done. `unbound_gate`: the pod
    /// waits on a readiness gate no binding will set, which the pass reports.
    Idle {
        unbound_gate: bool,
    },
    Work(Assessment),
}

/// What a pass plans from: the ledger, the bindings, and the targets of both.
struct Assessment {
    ledger: Result<Vec<crate::model::LedgerEntry>, crate::model::ledger::LedgerError>,
    bindings: Vec<Binding>,
    /// Invalid bindings that select the pod, by name.
    invalid_selecting: Vec<String>,
    targets: Vec<PodTarget>,
}

/// The first look of a pass at a pod that is neither held nor waiting: its targets (the
/// ledger's and the bindings'), and whether there is anything to do.
fn look(engine: &Engine, pod: &PodView, intent: &Intent, forced: bool) -> Look {
    let ledger = pod.ledger();
    let bindings = engine.bindings_for(pod);
    let (invalid_selecting, invalid_names) = invalid_bindings(engine, pod);
    let entries = ledger.clone().unwrap_or_default();
    let targets = targets::assemble(pod, &bindings, &entries, &invalid_names, &engine.adapters);
    let restore = matches!(intent, Intent::Restore);
    if targets.is_empty() && !pod.holds_sluice_finalizer() && ledger.is_ok() && invalid_selecting.is_empty() {
        return Look::Idle {
            unbound_gate: restore && pod.has_gate && pod.gate != Some(true),
        };
    }
    if restore && !forced && converged_by_record(pod, &targets, &invalid_selecting) {
        return Look::Idle { unbound_gate: false };
    }
    Look::Work(Assessment {
        ledger,
        bindings,
        invalid_selecting,
        targets,
    })
}

/// A restore the pod's record says is done: serving, gate True, every target it should
/// have recorded and no other, every kind's finalizer and the guard in place. Its worker
/// writes nothing and asks no adapter (the periodic resync does, at a low rate).
fn converged_by_record(pod: &PodView, targets: &[PodTarget], invalid_selecting: &[String]) -> bool {
    let kinds = pod.kind_finalizers();
    pod.gate == Some(true)
        && invalid_selecting.is_empty()
        && pod.guarded()
        && pod
            .status()
            .is_some_and(|s| s.state == State::Serving && s.blocked.is_empty())
        && !targets.is_empty()
        && targets
            .iter()
            .all(|t| t.desired && t.recorded && t.adapter.is_some() && kinds.contains(&t.kind))
}

/// What a pass that only waits is waiting for: `budget` (a disruption-budget slot),
/// `settle` (drained, within its settle window), `ttl` (a DNS answer's lifetime or a
/// registry's TTL still running), `evidence` (sessions to end, a health check); `None`
/// when the pass acts, is blocked, or is done.
fn wait_kind(
    steps: &[Step],
    facts: &Facts,
    observations: &[Option<Result<Observation, StepError>>],
) -> Option<&'static str> {
    if steps.iter().any(|s| matches!(s, Step::Blocked(_))) || steps.iter().any(Step::acts) {
        return None;
    }
    if steps.contains(&Step::WaitForBudget) {
        return Some("budget");
    }
    if !steps.iter().any(|s| matches!(s, Step::Wait(_))) {
        return None;
    }
    let unsettled = facts.targets.iter().any(|t| {
        !t.settled
            && matches!(
                t.seen,
                Seen::State {
                    state: sluice_adapter::TrafficState::Drained,
                    ..
                }
            )
    });
    let open_ttl = observations
        .iter()
        .any(|o| matches!(o, Some(Ok(o)) if o.state != sluice_adapter::TrafficState::Drained && o.remaining.is_some()));
    Some(if open_ttl {
        "ttl"
    } else if unsettled {
        "settle"
    } else {
        "evidence"
    })
}

/// The state word of the status annotation.
fn state_of(intent: &Intent, steps: &[Step], released: bool) -> State {
    let has = |f: fn(&Step) -> bool| steps.iter().any(f);
    match intent {
        // Nothing left but the last writes of a verified drain: drained with this pass
        // (a controller may move on as soon as the finalizers go).
        Intent::Drain(_)
            if !released
                && steps
                    .iter()
                    .all(|s| matches!(s, Step::Forget(_) | Step::RemoveFinalizer(_) | Step::RemoveGuard)) =>
        {
            State::Drained
        }
        Intent::Drain(_) if steps == [Step::WaitForBudget] => State::WaitingForBudget,
        Intent::Drain(_) if has(|s| matches!(s, Step::TakeBudget)) => State::StartingDrain,
        Intent::Drain(_) if released || has(|s| matches!(s, Step::ReleaseFinalizer { .. } | Step::ReleaseGuard)) => {
            State::Released
        }
        Intent::Drain(_) if has(|s| matches!(s, Step::Blocked(_))) => State::Blocked,
        Intent::Drain(_) => State::Draining,
        Intent::Restore if steps.is_empty() => State::Serving,
        Intent::Restore => State::Restoring,
        Intent::Hold(_) => State::Holding,
    }
}
