//! The planner: a pure function from what a pod asks for, what Sluice recorded (the
//! ledger) and what the traffic components report, to the next steps. No I/O; every
//! signal and case of the design is one row in the tables of `tests.rs`.
//!
//! A pod's targets are the **union** of the targets its bindings select now (*desired*)
//! and the targets its ledger records (*recorded*): the ledger is how a drain still finds
//! traffic a binding edit, a deleted binding or a restart would otherwise hide.
//!
//! Drain (gate False → deregister everywhere → verify → finalizers):
//! 1. take a disruption-budget slot (a pod being deleted or in preStop takes one anyway);
//! 2. set the gate False;
//! 3. `Deregister` every target not observed `Drained` — serving, registered, one whose
//!    adapter asks to move the drain on ([`Seen::State::advance`]), and one that cannot be
//!    observed at all (deregister is idempotent and safe on anything);
//! 4. `Forget` a recorded target once it has been `Drained` for its settle time;
//! 5. remove a kind's finalizer once every target of that kind is drained and settled,
//!    and the ledger guard with the last entry.
//!
//! Restore (register → verify → finalizers → gate True):
//! 1. `Record` each desired target in the ledger (with the guard finalizer) *before*
//!    `Register`;
//! 2. once every desired target serves, recorded targets no binding selects any more are
//!    drained and forgotten: an edit is a move, make-before-break;
//! 3. add each kind's finalizer when its targets serve; the gate goes True when all do.
//!
//! Safety: a finalizer is removed only on verified drain, or at the deadline under
//! `Release` (a [`Step::ReleaseFinalizer`], reported loudly). A recorded target whose
//! adapter instance is gone blocks its kind with a reason that names the instance — never
//! "absent, so drained". Nothing here reacts to a pod or binding *missing* by draining:
//! only explicit signals on a pod start a drain, and only a valid binding edit moves one.

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
    /// A drain request (`sluice.dev/drain-request`, from the admission webhook) stands.
    Requested,
}

impl DrainReason {
    /// The pod's containers stop whatever Sluice does: its drain never waits for a budget
    /// slot and deregisters everything in its first pass.
    pub fn dying(&self) -> bool {
        matches!(self, DrainReason::Deleting | DrainReason::PreStop)
    }
}

/// Why a pod neither drains nor restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    NoIp,
    ContainersNotReady,
    /// A signal Sluice does not understand: refused and reported, never guessed at.
    BadSignal(String),
}

impl Hold {
    /// What to say on the pod, for a hold a person must look at.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Hold::BadSignal(why) => Some(why),
            Hold::NoIp | Hold::ContainersNotReady => None,
        }
    }
}

/// What the pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    Drain(DrainReason),
    Restore,
    /// Neither: leave everything as it is.
    Hold(Hold),
}

impl Intent {
    pub fn dying(&self) -> bool {
        matches!(self, Intent::Drain(r) if r.dying())
    }
}

/// The longest a drain request can stand ahead of now (`admission.requestSeconds` is at
/// most a day), with a minute for clock skew between replicas.
const MAX_DRAIN_REQUEST: jiff::SignedDuration = jiff::SignedDuration::from_secs(86_400 + 60);

/// The intent of a pod, from its signals.
pub fn intent(pod: &PodView) -> Intent {
    if pod.deleting {
        return Intent::Drain(DrainReason::Deleting);
    }
    match pod.desired.as_deref() {
        Some("drained") => return Intent::Drain(DrainReason::Desired),
        None | Some("") => {}
        Some(other) => {
            return Intent::Hold(Hold::BadSignal(format!(
                "annotation sluice.dev/desired is {other:?}; the only value Sluice acts on is \"drained\" \
                 (remove the annotation to restore): nothing changes until it is fixed"
            )))
        }
    }
    if pod.prestop {
        return Intent::Drain(DrainReason::PreStop);
    }
    // A request stands at most `admission.requestSeconds` (≤ 1 day) ahead; one claiming
    // more was written by a clock that runs ahead (or by hand) and is not trusted.
    let now = jiff::Timestamp::now();
    if pod
        .drain_request
        .is_some_and(|until| until > now && until <= now + MAX_DRAIN_REQUEST)
    {
        return Intent::Drain(DrainReason::Requested);
    }
    match pod.kruise_state.as_deref() {
        Some(s @ ("PreparingDelete" | "PreparingUpdate" | "Updating")) => {
            return Intent::Drain(DrainReason::Kruise(s.to_string()))
        }
        Some("PreparingNormal" | "Updated" | "Normal") | None => {}
        Some(other) => {
            return Intent::Hold(Hold::BadSignal(format!(
                "OpenKruise lifecycle state {other:?} is not one Sluice knows (PreparingNormal, Normal, \
                 PreparingUpdate, Updating, Updated, PreparingDelete): nothing changes until it is one"
            )))
        }
    }
    if pod.ip.is_none() {
        return Intent::Hold(Hold::NoIp);
    }
    if pod.containers_ready {
        Intent::Restore
    } else {
        Intent::Hold(Hold::ContainersNotReady)
    }
}

/// Every signal that asks for the pod's drain now (the API shows them; a Restore through
/// the API is refused while one other than `desired` stands): `deleting`, `desired`,
/// `prestop`, `drain-request`, `lifecycle:<state>`.
pub fn drain_signals(pod: &PodView) -> Vec<String> {
    let mut out = Vec::new();
    if pod.deleting {
        out.push("deleting".to_string());
    }
    if pod.desired.as_deref() == Some("drained") {
        out.push("desired".to_string());
    }
    if pod.prestop {
        out.push("prestop".to_string());
    }
    let now = jiff::Timestamp::now();
    if pod
        .drain_request
        .is_some_and(|until| until > now && until <= now + MAX_DRAIN_REQUEST)
    {
        out.push("drain-request".to_string());
    }
    if let Some(s @ ("PreparingDelete" | "PreparingUpdate" | "Updating")) = pod.kruise_state.as_deref() {
        out.push(format!("lifecycle:{s}"));
    }
    out
}

/// What the engine knows of one target this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Observed. `advance`: the adapter has a drain step due now.
    State { state: TrafficState, advance: bool },
    /// The observation failed; `permanent`: retrying will not help, a person must act.
    Failed { permanent: bool, why: String },
    /// The adapter instance it was registered through is not in the gateway configuration.
    NoAdapter(String),
}

impl Seen {
    fn is(&self, s: TrafficState) -> bool {
        matches!(self, Seen::State { state, .. } if *state == s)
    }
}

/// One target of the pod: desired (a binding selects it), recorded (the ledger has it),
/// or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFact {
    pub id: usize,
    pub kind: String,
    /// e.g. `lb[backend=web] 10.0.0.1:80`, for reasons and waits.
    pub name: String,
    pub desired: bool,
    pub recorded: bool,
    /// Recorded by a binding that still exists but is invalid: kept as it is by a restore.
    pub held: bool,
    pub seen: Seen,
    /// Drained for at least its settle time.
    pub settled: bool,
    /// Drained by force (sessions cut): a release, not a verified drain.
    pub forced: Option<String>,
}

/// Everything the planner decides from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub intent: Intent,
    pub targets: Vec<TargetFact>,
    /// Traffic kinds whose `sluice.dev/<kind>` finalizer the pod carries.
    pub finalizers: BTreeSet<String>,
    /// The ledger guard finalizer is present.
    pub guard: bool,
    /// The pod carries a ledger annotation: the record is authoritative. (A pod whose
    /// finalizers predate the ledger has none, and what it registered is unknown.)
    pub ledger_kept: bool,
    /// The ledger annotation cannot be read: why.
    pub ledger_unreadable: Option<String>,
    /// The `sluice.dev/traffic-ready` condition.
    pub gate: Option<bool>,
    /// This pod already holds a disruption-budget slot.
    pub holds_budget: bool,
    /// A slot is free for it.
    pub budget_free: bool,
    pub deadline_passed: bool,
    pub on_deadline: OnDeadline,
    /// Invalid bindings that select the pod: a restore cannot verify them.
    pub invalid_bindings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take a disruption-budget slot before anything changes.
    TakeBudget,
    WaitForBudget,
    SetGate(bool),
    /// Write the target into the ledger (before registering it).
    Record(usize),
    Register(usize),
    Deregister(usize),
    /// Verified drained (and settled): drop the target from the ledger.
    Forget(usize),
    /// Add the ledger guard finalizer.
    AddGuard,
    /// The ledger is empty: remove the guard.
    RemoveGuard,
    /// Deadline passed under `Release`: the guard goes with entries still recorded.
    ReleaseGuard,
    AddFinalizer(String),
    /// Verified drained: remove the finalizer.
    RemoveFinalizer(String),
    /// Remove the finalizer without verified drain: the deadline passed under `Release`, or
    /// the adapter cut sessions (`why` says which). Always a Warning Event.
    ReleaseFinalizer {
        kind: String,
        why: String,
    },
    /// A person must act: say why (Event once, status).
    Blocked(String),
    /// Something is being verified; observe again.
    Wait(String),
}

impl Step {
    /// Changes something (as opposed to waiting or reporting).
    pub fn acts(&self) -> bool {
        !matches!(self, Step::Wait(_) | Step::WaitForBudget | Step::Blocked(_))
    }
}

/// The next steps for one pod. An empty plan means converged.
pub fn plan(f: &Facts) -> Vec<Step> {
    match &f.intent {
        Intent::Drain(reason) => plan_drain(f, reason.dying()),
        Intent::Restore => plan_restore(f),
        Intent::Hold(_) => Vec::new(),
    }
}

/// Collects actions, waits and blocks while a plan is built.
#[derive(Default)]
struct Plan {
    steps: Vec<Step>,
    waiting: Vec<String>,
    blocked: Vec<String>,
}

impl Plan {
    fn finish(mut self) -> Vec<Step> {
        self.steps.extend(self.blocked.into_iter().map(Step::Blocked));
        if !self.steps.iter().any(Step::acts) && !self.waiting.is_empty() {
            self.steps.push(Step::Wait(self.waiting.join("; ")));
        }
        self.steps
    }
}

/// The bounded category of a blocked reason (a metric label): `deadline`,
/// `adapter-missing`, `invalid-binding`, `no-target`, `ledger-unreadable`, or
/// `adapter-error` (a step an adapter refuses until a person acts).
pub fn blocked_category(why: &str) -> &'static str {
    if why.contains("drain deadline passed") {
        "deadline"
    } else if why.contains("which is not in the gateway configuration") {
        "adapter-missing"
    } else if why.contains("invalid TrafficBinding") {
        "invalid-binding"
    } else if why.contains("neither a binding nor the ledger") {
        "no-target"
    } else if why.contains(crate::model::LEDGER_ANNOTATION) && why.contains("cannot be read") {
        "ledger-unreadable"
    } else {
        "adapter-error"
    }
}

fn no_adapter(t: &TargetFact, instance: &str) -> String {
    format!(
        "{} target {} was registered through adapter instance {instance:?}, which is not in the gateway \
         configuration: nothing can take it out or verify it. Put the instance back in the configuration, \
         or take the address out of that {} backend by hand and then delete its entry from the pod's \
         sluice.dev/registrations annotation",
        t.kind, t.name, t.kind
    )
}

fn plan_drain(f: &Facts, dying: bool) -> Vec<Step> {
    let in_traffic = |t: &TargetFact| !t.seen.is(TrafficState::Drained) || t.recorded;
    if !f.targets.iter().any(in_traffic) && f.finalizers.is_empty() && !f.guard {
        return Vec::new();
    }
    let mut p = Plan::default();
    if !f.holds_budget {
        if f.budget_free || dying {
            p.steps.push(Step::TakeBudget);
        } else {
            return vec![Step::WaitForBudget];
        }
    }
    if f.gate != Some(false) {
        p.steps.push(Step::SetGate(false));
    }
    let mut forgotten = BTreeSet::new();
    for t in &f.targets {
        match &t.seen {
            Seen::NoAdapter(instance) => p.blocked.push(no_adapter(t, instance)),
            Seen::State {
                state: TrafficState::Serving | TrafficState::Registered,
                ..
            } => p.steps.push(Step::Deregister(t.id)),
            Seen::State {
                state: TrafficState::Draining,
                advance,
            } => {
                if *advance {
                    p.steps.push(Step::Deregister(t.id));
                }
                p.waiting.push(format!("{} draining", t.name));
            }
            Seen::State {
                state: TrafficState::Drained,
                ..
            } => {
                if t.recorded && t.settled {
                    p.steps.push(Step::Forget(t.id));
                    forgotten.insert(t.id);
                } else if !t.settled {
                    p.waiting.push(format!("{} settling", t.name));
                }
            }
            Seen::Failed { permanent, why } => {
                // Cannot be observed: take it out anyway (idempotent), then verify.
                p.steps.push(Step::Deregister(t.id));
                if *permanent {
                    p.blocked.push(format!("{}: {why}", t.name));
                } else {
                    p.waiting.push(format!("{} not observed: {why}", t.name));
                }
            }
        }
    }
    let mut kinds_left = BTreeSet::new();
    for kind in &f.finalizers {
        let of_kind: Vec<&TargetFact> = f.targets.iter().filter(|t| &t.kind == kind).collect();
        if of_kind.is_empty() {
            if f.ledger_unreadable.is_none() && f.ledger_kept {
                // The record says nothing of this kind is registered.
                p.steps.push(Step::RemoveFinalizer(kind.clone()));
            } else if f.ledger_unreadable.is_none() {
                kinds_left.insert(kind.clone());
                p.blocked.push(format!(
                    "finalizer sluice.dev/{kind} is set but neither a binding nor the ledger names a {kind} target \
                     for this pod: nothing can verify the drain (restore the binding so Sluice drains it, or take the \
                     pod's address out of its {kind} backends by hand and then remove the finalizer)"
                ));
            } else {
                kinds_left.insert(kind.clone());
            }
            continue;
        }
        let drained = of_kind
            .iter()
            .all(|t| t.seen.is(TrafficState::Drained) && t.settled && (!t.recorded || forgotten.contains(&t.id)));
        if drained && f.ledger_unreadable.is_none() {
            match of_kind.iter().find_map(|t| t.forced.clone()) {
                Some(why) => p.steps.push(Step::ReleaseFinalizer {
                    kind: kind.clone(),
                    why,
                }),
                None => p.steps.push(Step::RemoveFinalizer(kind.clone())),
            }
        } else {
            kinds_left.insert(kind.clone());
        }
    }
    let entries_left = f.targets.iter().any(|t| t.recorded && !forgotten.contains(&t.id));
    let guard_left = f.guard && (entries_left || f.ledger_unreadable.is_some());
    if f.guard && !guard_left {
        p.steps.push(Step::RemoveGuard);
    }
    if let Some(why) = &f.ledger_unreadable {
        p.blocked.push(why.clone());
    }
    // A deadline judges a drain that was tried: never in the pass that takes the budget,
    // whose deregisters have not been sent yet (the clock starts once the slot is held).
    let tried = !p.steps.contains(&Step::TakeBudget);
    if f.deadline_passed && tried && (!kinds_left.is_empty() || guard_left) {
        match f.on_deadline {
            OnDeadline::Release => {
                for kind in kinds_left {
                    p.steps.push(Step::ReleaseFinalizer {
                        kind,
                        why: "drain deadline passed (onDeadline: Release)".into(),
                    });
                }
                if guard_left {
                    p.steps.push(Step::ReleaseGuard);
                }
            }
            OnDeadline::Block => {
                let what: Vec<String> = kinds_left.into_iter().collect();
                p.blocked.push(format!(
                    "drain deadline passed with {} traffic not verified gone",
                    if what.is_empty() {
                        "recorded".to_string()
                    } else {
                        what.join(", ")
                    }
                ));
            }
        }
    }
    p.finish()
}

fn plan_restore(f: &Facts) -> Vec<Step> {
    if let Some(why) = &f.ledger_unreadable {
        // Recording would overwrite a ledger that may hold registrations: stop and say so.
        return vec![Step::Blocked(why.clone())];
    }
    let desired: Vec<&TargetFact> = f.targets.iter().filter(|t| t.desired).collect();
    if f.targets.is_empty() && f.finalizers.is_empty() && !f.guard {
        return Vec::new();
    }
    let mut p = Plan::default();
    let mut recording = false;
    for t in &desired {
        if let Seen::NoAdapter(instance) = &t.seen {
            p.blocked.push(no_adapter(t, instance));
            continue;
        }
        if !t.recorded {
            p.steps.push(Step::Record(t.id));
            recording = true;
        }
        match &t.seen {
            Seen::State {
                state: TrafficState::Drained | TrafficState::Draining,
                ..
            } => p.steps.push(Step::Register(t.id)),
            Seen::State {
                state: TrafficState::Registered,
                ..
            } => p.waiting.push(format!("{} not serving yet", t.name)),
            Seen::State {
                state: TrafficState::Serving,
                ..
            } => {}
            Seen::Failed { permanent: true, why } => p.blocked.push(format!("{}: {why}", t.name)),
            Seen::Failed { why, .. } => p.waiting.push(format!("{} not observed: {why}", t.name)),
            Seen::NoAdapter(_) => unreachable!("handled above"),
        }
    }
    let all_serving = desired.iter().all(|t| t.seen.is(TrafficState::Serving));
    // Recorded targets no binding selects any more: drained once the new ones serve.
    let mut forgotten = BTreeSet::new();
    for t in f.targets.iter().filter(|t| t.recorded && !t.desired && !t.held) {
        match &t.seen {
            Seen::NoAdapter(instance) => p.blocked.push(no_adapter(t, instance)),
            _ if !all_serving => p
                .waiting
                .push(format!("{} kept until the targets replacing it serve", t.name)),
            Seen::State {
                state: TrafficState::Drained,
                ..
            } => {
                if t.settled {
                    p.steps.push(Step::Forget(t.id));
                    forgotten.insert(t.id);
                } else {
                    p.waiting.push(format!("{} settling", t.name));
                }
            }
            Seen::State {
                state: TrafficState::Draining,
                advance,
            } => {
                if *advance {
                    p.steps.push(Step::Deregister(t.id));
                }
                p.waiting.push(format!("{} draining", t.name));
            }
            Seen::State { .. } => p.steps.push(Step::Deregister(t.id)),
            Seen::Failed { permanent, why } => {
                p.steps.push(Step::Deregister(t.id));
                if *permanent {
                    p.blocked.push(format!("{}: {why}", t.name));
                } else {
                    p.waiting.push(format!("{} not observed: {why}", t.name));
                }
            }
        }
    }
    let entries_after = f
        .targets
        .iter()
        .any(|t| (t.recorded || t.desired) && !forgotten.contains(&t.id));
    if (recording || entries_after) && !f.guard {
        p.steps.push(Step::AddGuard);
    } else if f.guard && !entries_after {
        p.steps.push(Step::RemoveGuard);
    }
    let desired_kinds: BTreeSet<&str> = desired.iter().map(|t| t.kind.as_str()).collect();
    for kind in &desired_kinds {
        let serving = desired
            .iter()
            .filter(|t| t.kind == *kind)
            .all(|t| t.seen.is(TrafficState::Serving));
        if serving && !f.finalizers.contains(*kind) {
            p.steps.push(Step::AddFinalizer(kind.to_string()));
        }
    }
    for kind in &f.finalizers {
        // A kind the pod no longer has any traffic of (its last target moved away).
        let left = f
            .targets
            .iter()
            .any(|t| &t.kind == kind && (t.desired || (t.recorded && !forgotten.contains(&t.id))));
        if !left && f.ledger_kept {
            p.steps.push(Step::RemoveFinalizer(kind.clone()));
        }
    }
    if !f.invalid_bindings.is_empty() {
        p.blocked.push(format!(
            "invalid TrafficBinding(s) {} select this pod: its traffic there cannot be verified, so the gate is \
             not set True (see the binding's status)",
            f.invalid_bindings.join(", ")
        ));
    } else if all_serving && !desired.is_empty() && f.gate != Some(true) {
        // After the finalizers of this pass: the executor writes them first.
        p.steps.push(Step::SetGate(true));
    }
    p.finish()
}

#[cfg(test)]
mod tests;
