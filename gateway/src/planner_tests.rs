//! Table-driven tests of the planner: one row per signal and state.

use std::collections::{BTreeMap, BTreeSet};

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
        labels: BTreeMap::new(),
        desired_drained: false,
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
    }
}

#[test]
fn intent_table() {
    type Case = (&'static str, fn(&mut PodView), Intent);
    let cases: Vec<Case> = vec![
        ("ready pod restores", |_| {}, Intent::Restore),
        (
            "not ready holds",
            |p| p.containers_ready = false,
            Intent::Hold("containers not ready"),
        ),
        ("no IP holds", |p| p.ip = None, Intent::Hold("pod has no IP yet")),
        (
            "desired drained",
            |p| p.desired_drained = true,
            Intent::Drain(DrainReason::Desired),
        ),
        ("deleting", |p| p.deleting = true, Intent::Drain(DrainReason::Deleting)),
        (
            "deleting wins over ready",
            |p| {
                p.deleting = true;
                p.containers_ready = true
            },
            Intent::Drain(DrainReason::Deleting),
        ),
        ("prestop", |p| p.prestop = true, Intent::Drain(DrainReason::PreStop)),
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
            Intent::Hold("containers not ready"),
        ),
        (
            "unknown kruise state holds",
            |p| p.kruise_state = Some("Mystery".into()),
            Intent::Hold("unknown OpenKruise lifecycle state"),
        ),
    ];
    for (name, edit, want) in cases {
        let mut p = pod();
        edit(&mut p);
        assert_eq!(intent(&p), want, "{name}");
    }
}

fn facts(intent: Intent, states: &[(&str, Option<TrafficState>)], fins: &[&str], gate: Option<bool>) -> Facts {
    Facts {
        intent,
        targets: states
            .iter()
            .enumerate()
            .map(|(id, (k, s))| TargetFact {
                id,
                kind: k.to_string(),
                state: *s,
            })
            .collect(),
        finalizers: fins.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        gate,
        holds_budget: true,
        budget_free: true,
        deadline_passed: false,
        on_deadline: OnDeadline::Block,
        settled: states.iter().map(|(k, _)| k.to_string()).collect(),
    }
}

fn drain() -> Intent {
    Intent::Drain(DrainReason::Desired)
}

#[test]
fn drain_table() {
    let s = |s: &str| s.to_string();
    let cases: Vec<(&str, Facts, Vec<Step>)> = vec![
        ("gate goes False first", facts(drain(), &[("slb", Some(Serving))], &["slb"], Some(true)), vec![Step::SetGate(false)]),
        ("then deregister", facts(drain(), &[("slb", Some(Serving))], &["slb"], Some(false)), vec![Step::Deregister(0)]),
        ("registered-not-serving is deregistered too", facts(drain(), &[("slb", Some(Registered))], &["slb"], Some(false)), vec![Step::Deregister(0)]),
        ("draining waits", facts(drain(), &[("slb", Some(Draining))], &["slb"], Some(false)), vec![Step::Wait(s("slb target 0 draining"))]),
        ("unobserved waits, never removes", facts(drain(), &[("slb", None)], &["slb"], Some(false)), vec![Step::Wait(s("slb target 0 not observed"))]),
        ("drained removes finalizer", facts(drain(), &[("slb", Some(Drained))], &["slb"], Some(false)), vec![Step::RemoveFinalizer(s("slb"))]),
        ("one kind drained, other still draining", facts(drain(), &[("slb", Some(Drained)), ("dns", Some(Draining))], &["dns", "slb"], Some(false)), vec![Step::RemoveFinalizer(s("slb"))]),
        ("all targets of a kind must be drained", facts(drain(), &[("slb", Some(Drained)), ("slb", Some(Draining))], &["slb"], Some(false)), vec![Step::Wait(s("slb target 1 draining"))]),
        ("converged: nothing to do", facts(drain(), &[("slb", Some(Drained))], &[], Some(false)), vec![]),
        ("drained without finalizer is done even with gate unset", facts(drain(), &[("slb", Some(Drained))], &[], None), vec![]),
        ("finalizer without any target blocks", facts(drain(), &[], &["slb"], Some(false)), vec![Step::Blocked(s("finalizer sluice.dev/slb is set but no binding target of kind slb matches the pod: nothing can verify the drain (restore the binding so Sluice drains it, or take the pod's address out of its slb backends by hand and then remove the finalizer)"))]),
    ];
    for (name, f, want) in cases {
        assert_eq!(plan(&f), want, "{name}");
    }
}

#[test]
fn drain_budget_deadline_and_settle() {
    let mut f = facts(drain(), &[("slb", Some(Serving))], &["slb"], Some(true));
    f.holds_budget = false;
    assert_eq!(
        plan(&f),
        vec![Step::TakeBudget],
        "a slot is taken before the gate moves"
    );
    f.budget_free = false;
    assert_eq!(plan(&f), vec![Step::WaitForBudget]);

    // Past the deadline: Block says why, Release lets the finalizer go.
    let deadline_policy = |mut f: Facts| {
        f.deadline_passed = true;
        assert_eq!(
            plan(&f),
            vec![Step::Blocked(
                "drain deadline passed with slb traffic not verified gone".into()
            )]
        );
        f.on_deadline = OnDeadline::Release;
        assert_eq!(plan(&f), vec![Step::ReleaseFinalizer("slb".into())]);
    };
    deadline_policy(facts(drain(), &[("slb", Some(Draining))], &["slb"], Some(false)));

    let mut f = facts(drain(), &[("slb", Some(Drained))], &["slb"], Some(false));
    f.settled.clear();
    assert_eq!(plan(&f), vec![Step::Wait("slb settling".into())]);
    // Settling past the deadline follows the deadline policy too.
    deadline_policy(f);

    // Each kind settles on its own clock: slb's finalizer goes while dns still drains.
    let mut f = facts(
        drain(),
        &[("slb", Some(Drained)), ("dns", Some(Draining))],
        &["dns", "slb"],
        Some(false),
    );
    f.settled = BTreeSet::from(["slb".to_string()]);
    assert_eq!(plan(&f), vec![Step::RemoveFinalizer("slb".into())]);

    // The budget holds back drains that can wait, never those of a pod losing its
    // containers (deletion, preStop): they take a slot even when none is free.
    for (reason, want) in [
        (DrainReason::Desired, Step::WaitForBudget),
        (DrainReason::Kruise("PreparingUpdate".into()), Step::WaitForBudget),
        (DrainReason::Deleting, Step::TakeBudget),
        (DrainReason::PreStop, Step::TakeBudget),
    ] {
        let mut f = facts(
            Intent::Drain(reason.clone()),
            &[("slb", Some(Serving))],
            &["slb"],
            Some(true),
        );
        f.holds_budget = false;
        f.budget_free = false;
        assert_eq!(plan(&f), vec![want], "{reason:?}");
    }

    // Without a finalizer, waiting for an unobservable target ends at the deadline (the
    // slot goes back); before it, the drain waits; a target still serving is deregistered.
    let mut f = facts(drain(), &[("slb", None)], &[], Some(false));
    assert_eq!(plan(&f), vec![Step::Wait("slb target 0 not observed".into())]);
    f.deadline_passed = true;
    assert_eq!(plan(&f), vec![]);
    let mut f = facts(drain(), &[("slb", Some(Serving))], &[], Some(false));
    f.deadline_passed = true;
    assert_eq!(plan(&f), vec![Step::Deregister(0)]);

    // A drained pod without finalizers needs no budget.
    let mut f = facts(drain(), &[("slb", Some(Drained))], &[], Some(false));
    f.holds_budget = false;
    f.budget_free = false;
    assert_eq!(plan(&f), vec![]);
}

#[test]
fn restore_table() {
    let s = |s: &str| s.to_string();
    let r = || Intent::Restore;
    let cases: Vec<(&str, Facts, Vec<Step>)> = vec![
        (
            "drained target is registered",
            facts(r(), &[("slb", Some(Drained))], &[], Some(false)),
            vec![Step::Register(0)],
        ),
        (
            "draining target is registered back",
            facts(r(), &[("slb", Some(Draining))], &[], Some(false)),
            vec![Step::Register(0)],
        ),
        (
            "registered waits for serving",
            facts(r(), &[("slb", Some(Registered))], &[], Some(false)),
            vec![Step::Wait(s("slb target 0 not serving yet"))],
        ),
        (
            "serving adds the finalizer before the gate",
            facts(r(), &[("slb", Some(Serving))], &[], Some(false)),
            vec![Step::AddFinalizer(s("slb"))],
        ),
        (
            "then the gate",
            facts(r(), &[("slb", Some(Serving))], &["slb"], Some(false)),
            vec![Step::SetGate(true)],
        ),
        (
            "gate unset counts as not True",
            facts(r(), &[("slb", Some(Serving))], &["slb"], None),
            vec![Step::SetGate(true)],
        ),
        (
            "converged: zero writes",
            facts(r(), &[("slb", Some(Serving))], &["slb"], Some(true)),
            vec![],
        ),
        (
            "gate waits for every kind",
            facts(
                r(),
                &[("slb", Some(Serving)), ("dns", Some(Registered))],
                &["slb"],
                Some(false),
            ),
            vec![Step::Wait(s("dns target 1 not serving yet"))],
        ),
        (
            "unobserved never registers blindly",
            facts(r(), &[("slb", None)], &[], Some(false)),
            vec![Step::Wait(s("slb target 0 not observed"))],
        ),
    ];
    for (name, f, want) in cases {
        assert_eq!(plan(&f), want, "{name}");
    }
}

#[test]
fn hold_does_nothing() {
    let f = facts(
        Intent::Hold("containers not ready"),
        &[("slb", Some(Drained))],
        &["slb"],
        Some(true),
    );
    assert_eq!(plan(&f), vec![]);
}
