//! Table-driven tests of the planner: one row per signal and state. Fixtures read like
//! sentences: `t("slb").recorded().seen(Serving)` is an slb target the ledger records and
//! its adapter reports serving.

use sluice_adapter::TrafficState::{self, *};

use super::*;
use crate::model::PodView;

fn pod() -> PodView {
    PodView {
        cluster: "east".into(),
        namespace: "default".into(),
        name: "web-1".into(),
        uid: "u1".into(),
        resource_version: "1".into(),
        labels: Default::default(),
        desired: None,
        desired_by: None,
        kruise_state: None,
        deleting: false,
        prestop: false,
        restarts: 0,
        containers_ready: true,
        ip: Some("127.0.0.11".parse().unwrap()),
        finalizers: vec![],
        gate: None,
        has_gate: true,
        status_annotation: None,
        ledger_annotation: None,
        traceparent: None,
        drain_request: None,
        host_network: false,
        running: true,
    }
}

#[test]
fn intent_table() {
    let bad = |p: &PodView| matches!(intent(p), Intent::Hold(Hold::BadSignal(_)));
    type Case = (&'static str, fn(&mut PodView), Intent);
    let cases: Vec<Case> = vec![
        ("ready pod restores", |_| {}, Intent::Restore),
        (
            "not ready holds",
            |p| p.containers_ready = false,
            Intent::Hold(Hold::ContainersNotReady),
        ),
        ("no IP holds", |p| p.ip = None, Intent::Hold(Hold::NoIp)),
        (
            "desired drained",
            |p| p.desired = Some("drained".into()),
            Intent::Drain(DrainReason::Desired),
        ),
        (
            "an empty desired is none",
            |p| p.desired = Some(String::new()),
            Intent::Restore,
        ),
        ("deleting", |p| p.deleting = true, Intent::Drain(DrainReason::Deleting)),
        (
            "deleting wins over a bad signal",
            |p| {
                p.deleting = true;
                p.desired = Some("drain".into())
            },
            Intent::Drain(DrainReason::Deleting),
        ),
        ("prestop", |p| p.prestop = true, Intent::Drain(DrainReason::PreStop)),
        (
            "a drain request that stands",
            |p| p.drain_request = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)),
            Intent::Drain(DrainReason::Requested),
        ),
        (
            "a drain request from a clock far ahead is not trusted",
            |p| p.drain_request = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(7 * 86_400)),
            Intent::Restore,
        ),
        (
            "a drain request that lapsed: restore",
            |p| p.drain_request = Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1)),
            Intent::Restore,
        ),
        (
            "kruise PreparingDelete",
            |p| p.kruise_state = Some("PreparingDelete".into()),
            Intent::Drain(DrainReason::Kruise("PreparingDelete".into())),
        ),
        (
            "kruise PreparingUpdate",
            |p| p.kruise_state = Some("PreparingUpdate".into()),
            Intent::Drain(DrainReason::Kruise("PreparingUpdate".into())),
        ),
        (
            "kruise Updating",
            |p| p.kruise_state = Some("Updating".into()),
            Intent::Drain(DrainReason::Kruise("Updating".into())),
        ),
        (
            "kruise Updated restores",
            |p| p.kruise_state = Some("Updated".into()),
            Intent::Restore,
        ),
        (
            "kruise PreparingNormal restores",
            |p| p.kruise_state = Some("PreparingNormal".into()),
            Intent::Restore,
        ),
        (
            "kruise Normal restores",
            |p| p.kruise_state = Some("Normal".into()),
            Intent::Restore,
        ),
        (
            "kruise PreparingNormal but not ready holds",
            |p| {
                p.kruise_state = Some("PreparingNormal".into());
                p.containers_ready = false
            },
            Intent::Hold(Hold::ContainersNotReady),
        ),
    ];
    for (name, edit, want) in cases {
        let mut p = pod();
        edit(&mut p);
        assert_eq!(intent(&p), want, "{name}");
    }
    // Signals Sluice does not understand are refused and reported, never guessed at.
    let mut p = pod();
    p.desired = Some("drain".into());
    assert!(bad(&p), "a typo in sluice.dev/desired");
    let Intent::Hold(h) = intent(&p) else { unreachable!() };
    assert!(h.problem().unwrap().contains("\"drained\""), "{h:?}");
    let mut p = pod();
    p.kruise_state = Some("Mystery".into());
    assert!(bad(&p), "an unknown Kruise state");
    assert_eq!(Hold::ContainersNotReady.problem(), None);
}

/// A target fixture: desired by a binding unless said otherwise, observed drained.
fn t(kind: &str) -> TargetFact {
    TargetFact {
        id: 0,
        kind: kind.into(),
        name: format!("{kind}-target"),
        desired: true,
        recorded: false,
        held: false,
        seen: Seen::State {
            state: Drained,
            advance: false,
        },
        settled: true,
        forced: None,
    }
}

impl TargetFact {
    fn seen(mut self, state: TrafficState) -> Self {
        self.seen = Seen::State { state, advance: false };
        self
    }
    fn advancing(mut self) -> Self {
        self.seen = Seen::State {
            state: Draining,
            advance: true,
        };
        self
    }
    fn failed(mut self, permanent: bool) -> Self {
        self.seen = Seen::Failed {
            permanent,
            why: "refused".into(),
        };
        self
    }
    fn no_adapter(mut self) -> Self {
        self.seen = Seen::NoAdapter("gone-lb".into());
        self
    }
    fn recorded(mut self) -> Self {
        self.recorded = true;
        self
    }
    /// Recorded only: no binding selects it any more.
    fn left(mut self) -> Self {
        self.recorded = true;
        self.desired = false;
        self
    }
    fn held(mut self) -> Self {
        self.held = true;
        self
    }
    fn unsettled(mut self) -> Self {
        self.settled = false;
        self
    }
    fn forced(mut self) -> Self {
        self.forced = Some("sessions cut".into());
        self
    }
    fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
}

/// Facts fixture: budget held, deadline not passed, ledger kept, no finalizer, gate unset.
fn facts(intent: Intent, targets: Vec<TargetFact>) -> Facts {
    Facts {
        intent,
        targets: targets
            .into_iter()
            .enumerate()
            .map(|(id, mut t)| {
                t.id = id;
                t
            })
            .collect(),
        finalizers: BTreeSet::new(),
        guard: false,
        ledger_kept: true,
        ledger_unreadable: None,
        gate: None,
        holds_budget: true,
        budget_free: true,
        deadline_passed: false,
        on_deadline: OnDeadline::Block,
        invalid_bindings: vec![],
    }
}

impl Facts {
    fn fins(mut self, kinds: &[&str]) -> Self {
        self.finalizers = kinds.iter().map(|s| s.to_string()).collect();
        self
    }
    fn guarded(mut self) -> Self {
        self.guard = true;
        self
    }
    fn gate(mut self, g: bool) -> Self {
        self.gate = Some(g);
        self
    }
    fn past_deadline(mut self, on: OnDeadline) -> Self {
        self.deadline_passed = true;
        self.on_deadline = on;
        self
    }
    fn legacy(mut self) -> Self {
        self.ledger_kept = false;
        self
    }
}

/// A pod draining from one recorded slb target, gate False, finalizer and guard held.
fn draining_slb() -> Facts {
    facts(drain(), vec![t("slb").recorded().seen(Draining)])
        .fins(&["slb"])
        .guarded()
        .gate(false)
}

fn drain() -> Intent {
    Intent::Drain(DrainReason::Desired)
}

fn restore() -> Intent {
    Intent::Restore
}

fn wait(s: &str) -> Step {
    Step::Wait(s.into())
}

fn rm(kind: &str) -> Step {
    Step::RemoveFinalizer(kind.into())
}

#[test]
fn drain_table() {
    use Step::*;
    let cases: Vec<(&str, Facts, Vec<Step>)> = vec![
        (
            "gate False, then deregister, in one pass",
            facts(drain(), vec![t("slb").recorded().seen(Serving)]).fins(&["slb"]).guarded().gate(true),
            vec![SetGate(false), Deregister(0)],
        ),
        (
            "registered-not-serving is deregistered too",
            facts(drain(), vec![t("slb").recorded().seen(Registered)]).fins(&["slb"]).guarded().gate(false),
            vec![Deregister(0)],
        ),
        (
            "draining waits",
            facts(drain(), vec![t("slb").recorded().seen(Draining)]).fins(&["slb"]).guarded().gate(false),
            vec![wait("slb-target draining")],
        ),
        (
            "draining with a step due calls deregister again",
            facts(drain(), vec![t("slb").recorded().advancing()]).fins(&["slb"]).guarded().gate(false),
            vec![Deregister(0)],
        ),
        (
            "unobservable is deregistered anyway, never counted drained",
            facts(drain(), vec![t("slb").recorded().failed(false)]).fins(&["slb"]).guarded().gate(false),
            vec![Deregister(0)],
        ),
        (
            "a permanent failure is deregistered and reported",
            facts(drain(), vec![t("slb").recorded().failed(true)]).fins(&["slb"]).guarded().gate(false),
            vec![Deregister(0), Blocked("slb-target: refused".into())],
        ),
        (
            "verified and settled: forget, finalizer, guard in one pass",
            facts(drain(), vec![t("slb").recorded()]).fins(&["slb"]).guarded().gate(false),
            vec![Forget(0), rm("slb"), RemoveGuard],
        ),
        (
            "settling keeps the entry and the finalizer",
            facts(drain(), vec![t("slb").recorded().unsettled()]).fins(&["slb"]).guarded().gate(false),
            vec![wait("slb-target settling")],
        ),
        (
            "one kind drained, another still draining",
            facts(
                drain(),
                vec![t("slb").recorded(), t("dns").recorded().seen(Draining)],
            )
            .fins(&["dns", "slb"])
            .guarded()
            .gate(false),
            vec![Forget(0), rm("slb")],
        ),
        (
            "every target of a kind must be drained",
            facts(
                drain(),
                vec![t("slb").recorded(), t("slb").recorded().seen(Draining).named("b")],
            )
            .fins(&["slb"])
            .guarded()
            .gate(false),
            vec![Forget(0)],
        ),
        (
            "a target a binding left is drained with the rest (the union)",
            facts(
                drain(),
                vec![t("slb").recorded(), t("slb").left().seen(Serving).named("old")],
            )
            .fins(&["slb"])
            .guarded()
            .gate(false),
            vec![Forget(0), Deregister(1)],
        ),
        (
            "a held target (invalid binding) is drained too: the drain signal is explicit",
            facts(drain(), vec![t("slb").left().held().seen(Serving)]).fins(&["slb"]).guarded().gate(false),
            vec![Deregister(0)],
        ),
        (
            "a desired target serving without a record is taken out",
            facts(drain(), vec![t("slb").seen(Serving)]).gate(false),
            vec![Deregister(0)],
        ),
        (
            "converged: nothing to do",
            facts(drain(), vec![t("slb")]).gate(false),
            vec![],
        ),
        (
            "never registered, gate unset: nothing to do",
            facts(drain(), vec![t("slb")]),
            vec![],
        ),
        (
            "adapter instance gone: blocked, naming it; the finalizer stays",
            facts(drain(), vec![t("slb").left().no_adapter()]).fins(&["slb"]).guarded().gate(false),
            vec![Blocked(no_adapter(&t("slb"), "gone-lb"))],
        ),
        (
            "the ledger says nothing of a kind is registered: its finalizer goes",
            facts(drain(), vec![]).fins(&["slb"]).gate(false),
            vec![rm("slb")],
        ),
        (
            "a finalizer older than the ledger, nothing names its kind: blocked",
            facts(drain(), vec![]).fins(&["slb"]).gate(false).legacy(),
            vec![Blocked("finalizer sluice.dev/slb is set but neither a binding nor the ledger names a slb target for this pod: nothing can verify the drain (restore the binding so Sluice drains it, or take the pod's address out of its slb backends by hand and then remove the finalizer)".into())],
        ),
        (
            "a guard over an empty ledger goes",
            facts(drain(), vec![]).guarded().gate(false),
            vec![RemoveGuard],
        ),
        (
            "drained by force (sessions cut): a release, not a verified drain",
            facts(drain(), vec![t("slb").recorded().forced()]).fins(&["slb"]).guarded().gate(false),
            vec![
                Forget(0),
                ReleaseFinalizer {
                    kind: "slb".into(),
                    why: "sessions cut".into(),
                },
                RemoveGuard,
            ],
        ),
    ];
    for (name, f, want) in cases {
        assert_eq!(plan(&f), want, "{name}");
    }
}

#[test]
fn an_unreadable_ledger_never_lets_a_finalizer_go() {
    let mut f = facts(drain(), vec![t("slb")]).fins(&["slb"]).guarded().gate(false);
    f.ledger_unreadable = Some("unreadable".into());
    assert_eq!(plan(&f), vec![Step::Blocked("unreadable".into())]);
    // What the bindings name is still taken out.
    let mut f = facts(drain(), vec![t("slb").seen(Serving)])
        .fins(&["slb"])
        .guarded()
        .gate(false);
    f.ledger_unreadable = Some("unreadable".into());
    assert_eq!(plan(&f), vec![Step::Deregister(0), Step::Blocked("unreadable".into())]);
    // Nor releases at the deadline under Block, and a restore does not overwrite it.
    let mut f = facts(restore(), vec![t("slb")]);
    f.ledger_unreadable = Some("unreadable".into());
    assert_eq!(plan(&f), vec![Step::Blocked("unreadable".into())]);
}

#[test]
fn drain_budget_and_deadline() {
    use Step::*;
    let serving = || {
        facts(drain(), vec![t("slb").recorded().seen(Serving)])
            .fins(&["slb"])
            .guarded()
            .gate(true)
    };
    let mut f = serving();
    f.holds_budget = false;
    assert_eq!(
        plan(&f),
        vec![TakeBudget, SetGate(false), Deregister(0)],
        "a slot is taken before the gate moves"
    );
    f.budget_free = false;
    assert_eq!(plan(&f), vec![WaitForBudget]);

    // The budget holds back drains that can wait, never those of a pod losing its
    // containers (deletion, preStop): they take a slot anyway and deregister at once.
    for (reason, want) in [
        (DrainReason::Desired, vec![WaitForBudget]),
        (DrainReason::Kruise("PreparingUpdate".into()), vec![WaitForBudget]),
        (DrainReason::Deleting, vec![TakeBudget, SetGate(false), Deregister(0)]),
        (DrainReason::PreStop, vec![TakeBudget, SetGate(false), Deregister(0)]),
    ] {
        let mut f = serving();
        f.intent = Intent::Drain(reason.clone());
        f.holds_budget = false;
        f.budget_free = false;
        assert_eq!(plan(&f), want, "{reason:?}");
    }

    // A drained pod without finalizers needs no budget.
    let mut f = facts(drain(), vec![t("slb")]).gate(false);
    f.holds_budget = false;
    f.budget_free = false;
    assert_eq!(plan(&f), vec![]);

    // Past the deadline: Block says why; Release lets the finalizers and the guard go,
    // and the deregistration goes on.
    assert_eq!(
        plan(&draining_slb().past_deadline(OnDeadline::Block)),
        vec![
            Blocked("drain deadline passed with slb traffic not verified gone".into()),
            wait("slb-target draining")
        ]
    );
    assert_eq!(
        plan(&draining_slb().past_deadline(OnDeadline::Release)),
        vec![
            ReleaseFinalizer {
                kind: "slb".into(),
                why: "drain deadline passed (onDeadline: Release)".into()
            },
            ReleaseGuard
        ]
    );
    // Settling past the deadline follows the policy too.
    let settling = facts(drain(), vec![t("slb").recorded().unsettled()])
        .fins(&["slb"])
        .guarded()
        .gate(false);
    assert!(matches!(
        plan(&settling.clone().past_deadline(OnDeadline::Block))[0],
        Blocked(_)
    ));
    // Never in the pass that takes the budget: its deregisters are sent first (a dying pod
    // that reaches its slot past a recorded deadline still gets its drain tried).
    let mut f = serving().past_deadline(OnDeadline::Release);
    f.holds_budget = false;
    assert_eq!(plan(&f), vec![TakeBudget, SetGate(false), Deregister(0)]);
    // A target that cannot be observed is deregistered again at every pass; the deadline
    // still applies to it (an unreachable backend must not hold a Release for ever).
    let unobserved = facts(drain(), vec![t("slb").recorded().failed(false)])
        .fins(&["slb"])
        .guarded()
        .gate(false)
        .past_deadline(OnDeadline::Release);
    assert!(plan(&unobserved).contains(&ReleaseGuard), "{:?}", plan(&unobserved));
    // Released already (no finalizer, no guard): the entries are still drained and forgotten.
    let released = facts(drain(), vec![t("slb").recorded().seen(Serving)]).gate(false);
    assert_eq!(plan(&released.past_deadline(OnDeadline::Release)), vec![Deregister(0)]);
}

#[test]
fn restore_table() {
    use Step::*;
    let cases: Vec<(&str, Facts, Vec<Step>)> = vec![
        (
            "recorded before registered, with the guard",
            facts(restore(), vec![t("slb")]),
            vec![Record(0), Register(0), AddGuard],
        ),
        (
            "recorded: registered",
            facts(restore(), vec![t("slb").recorded()]).guarded(),
            vec![Register(0)],
        ),
        (
            "draining target is registered back",
            facts(restore(), vec![t("slb").recorded().seen(Draining)])
                .guarded()
                .gate(false),
            vec![Register(0)],
        ),
        (
            "registered waits for serving",
            facts(restore(), vec![t("slb").recorded().seen(Registered)])
                .guarded()
                .gate(false),
            vec![wait("slb-target not serving yet")],
        ),
        (
            "serving: finalizer, then gate, in one pass",
            facts(restore(), vec![t("slb").recorded().seen(Serving)])
                .guarded()
                .gate(false),
            vec![AddFinalizer("slb".into()), SetGate(true)],
        ),
        (
            "gate unset counts as not True",
            facts(restore(), vec![t("slb").recorded().seen(Serving)])
                .fins(&["slb"])
                .guarded(),
            vec![SetGate(true)],
        ),
        (
            "converged: zero writes",
            facts(restore(), vec![t("slb").recorded().seen(Serving)])
                .fins(&["slb"])
                .guarded()
                .gate(true),
            vec![],
        ),
        (
            "serving before the ledger existed: recorded, nothing else",
            facts(restore(), vec![t("slb").seen(Serving)])
                .fins(&["slb"])
                .gate(true)
                .legacy(),
            vec![Record(0), AddGuard],
        ),
        (
            "gate waits for every kind",
            facts(
                restore(),
                vec![t("slb").recorded().seen(Serving), t("dns").recorded().seen(Registered)],
            )
            .fins(&["slb"])
            .guarded()
            .gate(false),
            vec![wait("dns-target not serving yet")],
        ),
        (
            "unobserved never registers blindly",
            facts(restore(), vec![t("slb").recorded().failed(false)]).guarded(),
            vec![wait("slb-target not observed: refused")],
        ),
        (
            "a permanent failure is reported",
            facts(restore(), vec![t("slb").recorded().failed(true)]).guarded(),
            vec![Blocked("slb-target: refused".into())],
        ),
    ];
    for (name, f, want) in cases {
        assert_eq!(plan(&f), want, "{name}");
    }
}

#[test]
fn a_binding_edit_is_a_move_make_before_break() {
    use Step::*;
    let old = || t("slb").left().seen(Serving).named("old");
    let new = || t("slb").named("new");
    // The new target is recorded and registered; the old one stays while it is not serving.
    assert_eq!(
        plan(&facts(restore(), vec![new(), old()]).fins(&["slb"]).guarded().gate(true)),
        vec![Record(0), Register(0)]
    );
    assert_eq!(
        plan(
            &facts(restore(), vec![new().recorded().seen(Registered), old()])
                .fins(&["slb"])
                .guarded()
                .gate(true)
        ),
        vec![wait(
            "new not serving yet; old kept until the targets replacing it serve"
        )]
    );
    // Once it serves, the old one is drained, then forgotten when verified.
    assert_eq!(
        plan(
            &facts(restore(), vec![new().recorded().seen(Serving), old()])
                .fins(&["slb"])
                .guarded()
                .gate(true)
        ),
        vec![Deregister(1)]
    );
    assert_eq!(
        plan(
            &facts(restore(), vec![new().recorded().seen(Serving), old().seen(Draining)])
                .fins(&["slb"])
                .guarded()
                .gate(true)
        ),
        vec![wait("old draining")]
    );
    assert_eq!(
        plan(
            &facts(restore(), vec![new().recorded().seen(Serving), old().seen(Drained)])
                .fins(&["slb"])
                .guarded()
                .gate(true)
        ),
        vec![Forget(1)]
    );
    // A port or instance edit whose new target never serves keeps the old one for good.
    let stuck = facts(restore(), vec![new().recorded().seen(Registered), old()])
        .fins(&["slb"])
        .guarded()
        .gate(true);
    assert!(!plan(&stuck).iter().any(|s| matches!(s, Deregister(_))));
}

#[test]
fn a_binding_deleted_or_edited_away_drains_what_it_leaves() {
    use Step::*;
    // No binding selects the pod any more: its recorded targets are drained (there is
    // nothing to make first), the finalizer and the guard go with the last entry.
    let gone = |seen: TrafficState| {
        facts(restore(), vec![t("slb").left().seen(seen)])
            .fins(&["slb"])
            .guarded()
            .gate(true)
    };
    assert_eq!(plan(&gone(Serving)), vec![Deregister(0)]);
    assert_eq!(plan(&gone(Drained)), vec![Forget(0), RemoveGuard, rm("slb")]);
    // Another binding still covers the pod: it stays in service there.
    let f = facts(
        restore(),
        vec![t("slb").recorded().seen(Serving), t("dns").left().seen(Drained)],
    )
    .fins(&["dns", "slb"])
    .guarded()
    .gate(true);
    assert_eq!(plan(&f), vec![Forget(1), rm("dns")]);
    // A binding that exists but is invalid holds its targets as they are, and the gate.
    let f = facts(restore(), vec![t("slb").left().held().seen(Serving)])
        .fins(&["slb"])
        .guarded()
        .gate(false);
    let mut f = f;
    f.invalid_bindings = vec!["web".into()];
    let steps = plan(&f);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(matches!(&steps[0], Blocked(w) if w.contains("invalid TrafficBinding(s) web")));
    // A recorded target whose instance left the config cannot be moved: said, not dropped.
    let f = facts(restore(), vec![t("slb").left().no_adapter()])
        .fins(&["slb"])
        .guarded()
        .gate(true);
    assert_eq!(plan(&f), vec![Blocked(no_adapter(&t("slb"), "gone-lb"))]);
}

#[test]
fn hold_does_nothing() {
    let f = facts(
        Intent::Hold(Hold::ContainersNotReady),
        vec![t("slb").recorded().seen(Drained)],
    )
    .fins(&["slb"])
    .guarded()
    .gate(true);
    assert_eq!(plan(&f), vec![]);
}

#[test]
fn every_blocked_reason_the_planner_writes_has_its_metric_category() {
    let blocked = |f: &Facts| -> String {
        plan(f)
            .into_iter()
            .find_map(|s| if let Step::Blocked(w) = s { Some(w) } else { None })
            .expect("a blocked step")
    };
    assert_eq!(
        blocked_category(&blocked(&draining_slb().past_deadline(OnDeadline::Block))),
        "deadline"
    );
    let gone = facts(drain(), vec![t("slb").left().no_adapter()])
        .fins(&["slb"])
        .guarded()
        .gate(false);
    assert_eq!(blocked_category(&blocked(&gone)), "adapter-missing");
    let legacy = facts(drain(), vec![]).fins(&["slb"]).gate(false).legacy();
    assert_eq!(blocked_category(&blocked(&legacy)), "no-target");
    let mut invalid = facts(restore(), vec![t("slb").left().held().seen(Serving)])
        .fins(&["slb"])
        .guarded()
        .gate(false);
    invalid.invalid_bindings = vec!["web".into()];
    assert_eq!(blocked_category(&blocked(&invalid)), "invalid-binding");
    let unreadable = crate::model::ledger::parse(Some("{not json")).unwrap_err().to_string();
    assert_eq!(blocked_category(&unreadable), "ledger-unreadable");
    let refused = facts(drain(), vec![t("slb").recorded().failed(true)])
        .fins(&["slb"])
        .guarded()
        .gate(false);
    assert_eq!(blocked_category(&blocked(&refused)), "adapter-error");
}
