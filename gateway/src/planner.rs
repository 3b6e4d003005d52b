//! The planner: a pure function from what a pod asks for and what the traffic components
//! report to the next steps. No I/O; every signal of the design is one row in the tables
//! below.
//!
//! Order of operations (the contract):
//! - Drain: gate False → deregister everywhere → verify drained (+ settle) → remove that
//!   kind's finalizer.
//! - Restore: register → verify serving → add finalizers → gate True.
//!
//! Safety: a finalizer is removed only when every target of its kind reports `Drained`,
//! or at the deadline under `Release`. Nothing here reacts to a pod *missing*; only
//! explicit signals on a pod start a drain.

use std::collections::BTreeSet;

use sluice_adapter::TrafficState;

use crate::binding::OnDeadline;
use crate::model::PodView;

/// Why a pod must drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainReason {
    /// `sluice.dev/desired: drained` (rollout controller, gRPC API).
    Desired,
    /// OpenKruise lifecycle state `PreparingDelete`, `PreparingUpdate` or `Updating`.
    Kruise(String),
    /// `metadata.deletionTimestamp` is set.
    Deleting,
    /// A blocking preStop call reached the gateway.
    PreStop,
}

/// What the pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    Drain(DrainReason),
    Restore,
    /// Neither: leave everything as it is (e.g. containers not ready yet).
    Hold(&'static str),
}

/// The intent of a pod, from its signals.
pub fn intent(pod: &PodView) -> Intent {
    if pod.deleting {
        return Intent::Drain(DrainReason::Deleting);
    }
    if pod.desired_drained {
        return Intent::Drain(DrainReason::Desired);
    }
    if pod.prestop {
        return Intent::Drain(DrainReason::PreStop);
    }
    match pod.kruise_state.as_deref() {
        Some(s @ ("PreparingDelete" | "PreparingUpdate" | "Updating")) => {
            return Intent::Drain(DrainReason::Kruise(s.to_string()))
        }
        Some("PreparingNormal" | "Updated" | "Normal") | None => {}
        // Unknown states are not drain signals; they do not restore either.
        Some(_) => return Intent::Hold("unknown OpenKruise lifecycle state"),
    }
    if pod.ip.is_none() {
        return Intent::Hold("pod has no IP yet");
    }
    if pod.containers_ready {
        Intent::Restore
    } else {
        Intent::Hold("containers not ready")
    }
}

/// One target of the pod and what its adapter last reported (`None`: not observed, or the
/// observation failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFact {
    pub id: usize,
    pub kind: String,
    pub state: Option<TrafficState>,
}

/// Everything the planner decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub intent: Intent,
    pub targets: Vec<TargetFact>,
    /// Traffic kinds whose `sluice.dev/<kind>` finalizer the pod carries.
    pub finalizers: BTreeSet<String>,
    /// The `sluice.dev/traffic-ready` condition.
    pub gate: Option<bool>,
    /// This pod already holds a disruption-budget slot.
    pub holds_budget: bool,
    /// A slot is free for it.
    pub budget_free: bool,
    pub deadline_passed: bool,
    pub on_deadline: OnDeadline,
    /// Kinds whose targets have all reported drained for at least the settle time (each
    /// kind on its own clock: one kind's finalizer never waits for another kind).
    pub settled: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take a disruption-budget slot before anything changes.
    TakeBudget,
    WaitForBudget,
    SetGate(bool),
    Deregister(usize),
    Register(usize),
    AddFinalizer(String),
    /// Verified drained: remove the finalizer.
    RemoveFinalizer(String),
    /// Deadline passed under `Release`: remove the finalizer without verified drain.
    ReleaseFinalizer(String),
    /// Deadline passed under `Block`, or nothing can verify a finalizer: stop and say why.
    Blocked(String),
    /// Something is being verified; observe again.
    Wait(String),
}

/// The next steps for one pod. An empty plan means converged.
pub fn plan(f: &Facts) -> Vec<Step> {
    match &f.intent {
        Intent::Drain(_) => plan_drain(f),
        Intent::Restore => plan_restore(f),
        Intent::Hold(_) => Vec::new(),
    }
}

fn kinds(f: &Facts) -> BTreeSet<String> {
    f.targets
        .iter()
        .map(|t| t.kind.clone())
        .chain(f.finalizers.iter().cloned())
        .collect()
}

fn plan_drain(f: &Facts) -> Vec<Step> {
    let active = f.targets.iter().any(|t| t.state != Some(TrafficState::Drained)) || !f.finalizers.is_empty();
    if !active {
        return Vec::new();
    }
    if !f.holds_budget {
        // A pod being deleted (or in its preStop hook) loses its containers whatever the
        // budget says: holding its drain back would only leave its address in traffic. It
        // still takes (counts in) a slot.
        let dying = matches!(f.intent, Intent::Drain(DrainReason::Deleting | DrainReason::PreStop));
        return vec![if f.budget_free || dying {
            Step::TakeBudget
        } else {
            Step::WaitForBudget
        }];
    }
    if f.gate != Some(false) {
        return vec![Step::SetGate(false)];
    }
    let mut steps = Vec::new();
    let mut waiting = Vec::new();
    for t in &f.targets {
        match t.state {
            Some(TrafficState::Serving | TrafficState::Registered) => steps.push(Step::Deregister(t.id)),
            Some(TrafficState::Draining) => waiting.push(format!("{} target {} draining", t.kind, t.id)),
            Some(TrafficState::Drained) => {}
            None => waiting.push(format!("{} target {} not observed", t.kind, t.id)),
        }
    }
    for kind in kinds(f) {
        if !f.finalizers.contains(&kind) {
            continue;
        }
        let of_kind: Vec<&TargetFact> = f.targets.iter().filter(|t| t.kind == kind).collect();
        let all_drained = of_kind.iter().all(|t| t.state == Some(TrafficState::Drained));
        if of_kind.is_empty() {
            steps.push(Step::Blocked(format!(
                "finalizer sluice.dev/{kind} is set but no binding target of kind {kind} matches the pod: \
                 nothing can verify the drain (restore the binding so Sluice drains it, or take the pod's address out of its {kind} backends by hand and then remove the finalizer)"
            )));
        } else if all_drained && f.settled.contains(&kind) {
            steps.push(Step::RemoveFinalizer(kind));
        } else if all_drained && !f.deadline_passed {
            waiting.push(format!("{kind} settling"));
        } else if f.deadline_passed {
            steps.push(match f.on_deadline {
                OnDeadline::Release => Step::ReleaseFinalizer(kind),
                OnDeadline::Block => {
                    Step::Blocked(format!("drain deadline passed with {kind} traffic not verified gone"))
                }
            });
        }
    }
    // No finalizer left to hold the pod (released at the deadline, or never added) and
    // past the deadline: nothing is gained by waiting longer, and the budget slot it holds
    // would stop every other drain of its bindings.
    if steps.is_empty() && f.finalizers.is_empty() && f.deadline_passed {
        return Vec::new();
    }
    if steps.is_empty() && !waiting.is_empty() {
        steps.push(Step::Wait(waiting.join("; ")));
    }
    steps
}

fn plan_restore(f: &Facts) -> Vec<Step> {
    // No target: nothing was verified, so nothing may claim the pod serves (a pod whose
    // binding is invalid or gone keeps its gate as it is).
    if f.targets.is_empty() {
        return Vec::new();
    }
    let mut steps = Vec::new();
    let mut waiting = Vec::new();
    for t in &f.targets {
        match t.state {
            Some(TrafficState::Drained | TrafficState::Draining) => steps.push(Step::Register(t.id)),
            Some(TrafficState::Registered) => waiting.push(format!("{} target {} not serving yet", t.kind, t.id)),
            None => waiting.push(format!("{} target {} not observed", t.kind, t.id)),
            Some(TrafficState::Serving) => {}
        }
    }
    let mut adding = false;
    for kind in f.targets.iter().map(|t| t.kind.clone()).collect::<BTreeSet<_>>() {
        let serving = f
            .targets
            .iter()
            .filter(|t| t.kind == kind)
            .all(|t| t.state == Some(TrafficState::Serving));
        if serving && !f.finalizers.contains(&kind) {
            steps.push(Step::AddFinalizer(kind));
            adding = true;
        }
    }
    let all_serving = f.targets.iter().all(|t| t.state == Some(TrafficState::Serving));
    if all_serving && !adding && f.gate != Some(true) {
        steps.push(Step::SetGate(true));
    }
    if steps.is_empty() && !waiting.is_empty() {
        steps.push(Step::Wait(waiting.join("; ")));
    }
    steps
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
