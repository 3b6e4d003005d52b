//! Executes one plan, in the contract's order, each phase only if the one before it
//! succeeded:
//!
//! 1. take the disruption-budget slot (all the pod's budgets or none);
//! 2. set the gate False;
//! 3. one metadata edit: ledger entries recorded and forgotten, finalizers added and
//!    removed — so an entry is durable *before* its `register`, and the last entry and
//!    the guard go together;
//! 4. adapter calls (`register`, `deregister`), concurrently, each instance within its
//!    call limit;
//! 5. set the gate True (after the finalizers of step 3).
//!
//! An Event is sent for each write that really happened, carrying the evidence.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use sluice_adapter::Observation;
use tracing::{info, info_span, warn, Instrument};

use super::budget::Need;
use super::error::{bounded, StepError};
use super::targets::PodTarget;
use super::worker::{Outcome, Worker};
use crate::k8s::MetaEdit;
use crate::model::{finalizer, PodView, State, LEDGER_FINALIZER};
use crate::planner::{Intent, Step};

type Observed = Option<Result<Observation, StepError>>;

/// What an observation said, for Events.
fn evidence(o: &Observed) -> String {
    match o {
        None => "adapter instance not configured".into(),
        Some(Ok(o)) => format!("{:?}: {}", o.state, o.evidence),
        Some(Err(e)) => format!("unobserved: {e}"),
    }
}

impl Worker<'_> {
    pub(super) async fn execute(
        &mut self,
        pod: &PodView,
        intent: &Intent,
        targets: &[PodTarget],
        observations: &[Observed],
        needs: &[Need],
        steps: &[Step],
    ) -> Outcome {
        let mut out = Outcome::default();
        let writer = self.cluster.writer.clone();
        let (ns, name, uid) = (&pod.namespace, &pod.name, &pod.uid);

        if steps.contains(&Step::TakeBudget) {
            // Checked and taken atomically: two pods planning at once never both get the
            // last slot. A pod losing its containers takes one anyway (it still counts).
            if !self.engine.budgets.try_take(&self.key, needs, intent.dying()) {
                return out;
            }
            if !self.engine.pods.contains_key(&self.key) {
                // Gone while this pass ran (its slots were released then): no slot leaks.
                self.engine.release_budget(&self.key);
                return out;
            }
            info!("Drain started.");
            let what: Vec<String> = targets.iter().map(|t| format!("{} {}", t.kind, t.id)).collect();
            // Asked through the API: who and why go into the Event too.
            let asked = pod
                .desired
                .as_deref()
                .filter(|d| *d == "drained")
                .and_then(|_| crate::api::DesiredBy::parse(pod.desired_by.as_deref()))
                .map(|b| format!(" (asked by {}: {})", b.by, b.why))
                .unwrap_or_default();
            self.event(
                pod,
                false,
                "DrainStarted",
                "Drain",
                format!("draining {}{asked}", what.join(", ")),
            )
            .await;
        }

        if steps.contains(&Step::SetGate(false)) {
            match writer
                .set_gate(ns, name, uid, false, "Draining", "traffic is being drained")
                .await
            {
                Ok(written) => self.took(&written),
                Err(e) => {
                    out.failures.push(e.into());
                    return out;
                }
            }
        }

        let edit = meta_edit(steps, targets);
        if !edit.is_empty() {
            match writer.edit(ns, name, uid, &edit).await {
                Ok(written) => {
                    self.took(&written);
                    if written.changed() {
                        self.report_edit(pod, intent, targets, observations, steps).await;
                    }
                }
                Err(e) => {
                    // Nothing registers without its record.
                    out.failures.push(e.into());
                    return out;
                }
            }
        }

        let calls = steps.iter().filter_map(|s| match s {
            Step::Register(i) => Some((*i, true)),
            Step::Deregister(i) => Some((*i, false)),
            _ => None,
        });
        let this = &*self;
        let results =
            join_all(calls.map(|(i, register)| async move { (i, register, this.call(&targets[i], register).await) }))
                .await;
        for (i, register, result) in results {
            match result {
                Ok(()) => self.report_drift(pod, &targets[i], &observations[i], register).await,
                Err(e) => out.failures.push(e),
            }
        }

        if steps.contains(&Step::SetGate(true)) {
            match writer
                .set_gate(
                    ns,
                    name,
                    uid,
                    true,
                    "TrafficRegistered",
                    "every traffic component serves this pod",
                )
                .await
            {
                Ok(written) => {
                    self.took(&written);
                    // Serving again: the budget slot goes back.
                    self.engine.release_budget(&self.key);
                }
                Err(e) => out.failures.push(e.into()),
            }
        }
        out
    }

    async fn call(&self, t: &PodTarget, register: bool) -> Result<(), StepError> {
        let adapter = t
            .adapter
            .as_ref()
            .expect("the planner acts only through configured adapters");
        let _permit = self.engine.permit(adapter.name()).await;
        // Asked right before the call: a leader past its renew deadline stops here.
        if !self.engine.authority.may_write() {
            return Err(crate::k8s::WriteError::NotLeader(self.engine.authority.describe()).into());
        }
        self.engine.adapter_writes.fetch_add(1, Ordering::SeqCst);
        // Never past the renew deadline: a call that could not finish by then is abandoned.
        let timeout = match self.engine.authority.remaining() {
            Some(left) => self.engine.cfg.call_timeout().min(left),
            None => self.engine.cfg.call_timeout(),
        };
        // One span per adapter step, named by the verb, so a trace reads as
        // "drain > observe, deregister, observe".
        let started = std::time::Instant::now();
        let result = if register {
            let span = info_span!("register", adapter = adapter.name(), kind = %t.kind, target = %t.target.addr(),
                "sluice.adapter" = adapter.name(), "sluice.kind" = %t.kind, "sluice.binding" = %t.binding);
            bounded(adapter.name(), timeout, adapter.register(&t.target))
                .instrument(span)
                .await
        } else {
            let span = info_span!("deregister", adapter = adapter.name(), kind = %t.kind, target = %t.target.addr(),
                "sluice.adapter" = adapter.name(), "sluice.kind" = %t.kind, "sluice.binding" = %t.binding);
            bounded(adapter.name(), timeout, adapter.deregister(&t.target))
                .instrument(span)
                .await
        };
        self.engine.metrics.call(
            adapter.name(),
            if register { "register" } else { "deregister" },
            super::error::outcome(&result),
            started.elapsed(),
        );
        result
    }

    /// ` after 340 ms` (or ` after 12.3 s`): how long the operation has taken, counted
    /// from the drain's recorded start (budget slot held) or the restore's first pass.
    fn took_text(&self, intent: &Intent) -> String {
        let took = match intent {
            Intent::Drain(_) => self
                .drain_started
                .and_then(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t)).ok()),
            _ => self.restore_started.map(|t| t.elapsed()),
        };
        match took {
            Some(d) if d < Duration::from_secs(10) => format!(" after {} ms", d.as_millis()),
            Some(d) => format!(" after {:.1} s", d.as_secs_f64()),
            None => String::new(),
        }
    }

    /// Events for a metadata edit that was written.
    async fn report_edit(
        &mut self,
        pod: &PodView,
        intent: &Intent,
        targets: &[PodTarget],
        observations: &[Observed],
        steps: &[Step],
    ) {
        let of_kind = |kind: &str| -> String {
            targets
                .iter()
                .zip(observations)
                .filter(|(t, _)| t.kind == kind)
                .map(|(t, o)| format!("{} — {}", t.id, evidence(o)))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let forgotten: Vec<usize> = steps
            .iter()
            .filter_map(|s| if let Step::Forget(i) = s { Some(*i) } else { None })
            .collect();
        let still_recorded = || -> String {
            let left: Vec<String> = targets
                .iter()
                .enumerate()
                .filter(|(i, t)| t.recorded && !forgotten.contains(i))
                .map(|(i, t)| format!("{} — {}", t.id, evidence(&observations[i])))
                .collect();
            if left.is_empty() {
                "none".into()
            } else {
                left.join("; ")
            }
        };
        for step in steps {
            match step {
                Step::AddFinalizer(kind) => {
                    self.event(
                        pod,
                        false,
                        "TrafficRestored",
                        "Restore",
                        format!(
                            "{kind} traffic registered and verified serving{}: {}",
                            self.took_text(intent),
                            of_kind(kind)
                        ),
                    )
                    .await
                }
                Step::RemoveFinalizer(kind) => {
                    info!(kind, "Drain verified; finalizer removed.");
                    self.event(
                        pod,
                        false,
                        "TrafficDrained",
                        "Drain",
                        format!(
                            "{kind} traffic verified drained{}; finalizer {} removed: {}",
                            self.took_text(intent),
                            finalizer(kind),
                            of_kind(kind)
                        ),
                    )
                    .await
                }
                Step::ReleaseFinalizer { kind, why } => {
                    self.released = true;
                    warn!(kind, why, "Finalizer released WITHOUT verified drain.");
                    self.event(
                        pod,
                        true,
                        "DrainReleased",
                        "Drain",
                        format!(
                            "{why}: {} removed WITHOUT verified drain; {kind} targets: {}",
                            finalizer(kind),
                            of_kind(kind)
                        ),
                    )
                    .await
                }
                Step::ReleaseGuard => {
                    self.released = true;
                    warn!("Ledger guard released at the deadline with targets still registered.");
                    self.event(
                        pod,
                        true,
                        "DrainReleased",
                        "Drain",
                        format!(
                            "drain deadline passed (onDeadline: Release): {LEDGER_FINALIZER} removed, the pod may go; \
                             still registered: {} (Sluice keeps taking them out while the pod exists; the orphan \
                             sweep takes out what a deleted pod leaves)",
                            still_recorded()
                        ),
                    )
                    .await
                }
                Step::Forget(i) if matches!(intent, Intent::Restore) => {
                    self.event(
                        pod,
                        false,
                        "TrafficMoved",
                        "Restore",
                        format!(
                            "{} verified drained and dropped from the ledger: no binding selects it any more ({})",
                            targets[*i].id,
                            evidence(&observations[*i])
                        ),
                    )
                    .await
                }
                _ => {}
            }
        }
    }

    /// A pod recorded serving whose target had to be registered again, or a drained pod
    /// whose target had to be taken out again: the backend drifted (a reload, a hand
    /// edit). Said once per correction.
    async fn report_drift(&self, pod: &PodView, t: &PodTarget, observed: &Observed, register: bool) {
        // Judged by what the pod says now, not by what it said when this worker started:
        // a worker that restored the pod and keeps watching it still sees the drift. A
        // pod whose gate is True was verified serving (its status may not say so yet).
        let recorded = pod.status().map(|s| s.state);
        let serving = recorded == Some(State::Serving) || (pod.gate == Some(true) && recorded != Some(State::Drained));
        let drift = match (recorded, register) {
            (_, true) if serving && t.recorded => "registered again on a pod recorded serving",
            (Some(State::Drained), false) if matches!(observed, Some(Ok(o)) if o.state != sluice_adapter::TrafficState::Draining) => {
                "taken out again on a pod recorded drained"
            }
            _ => return,
        };
        warn!(target = %t.id, observed = %evidence(observed), "Drift repaired.");
        self.event(
            pod,
            true,
            "TrafficDriftRepaired",
            if register { "Restore" } else { "Drain" },
            format!("{} was {}: {drift}", t.id, evidence(observed)),
        )
        .await;
    }
}

/// The metadata edit of a plan.
fn meta_edit(steps: &[Step], targets: &[PodTarget]) -> MetaEdit {
    let mut edit = MetaEdit::default();
    for s in steps {
        match s {
            Step::Record(i) => edit.record.push(targets[*i].entry()),
            Step::Forget(i) => edit.forget.push(targets[*i].id.clone()),
            Step::AddGuard => {
                edit.add_finalizers.insert(LEDGER_FINALIZER.to_string());
            }
            Step::RemoveGuard | Step::ReleaseGuard => {
                edit.remove_finalizers.insert(LEDGER_FINALIZER.to_string());
            }
            Step::AddFinalizer(k) => {
                edit.add_finalizers.insert(finalizer(k));
            }
            Step::RemoveFinalizer(k) | Step::ReleaseFinalizer { kind: k, .. } => {
                edit.remove_finalizers.insert(finalizer(k));
            }
            Step::TakeBudget
            | Step::WaitForBudget
            | Step::SetGate(_)
            | Step::Register(_)
            | Step::Deregister(_)
            | Step::Blocked(_)
            | Step::Wait(_) => {}
        }
    }
    edit
}
