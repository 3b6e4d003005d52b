//! Disruption budgets and the worker cap under the edges a rollout meets: a binding made
//! invalid mid-rollout, a drained pod relabelled out of its binding, a worker cap of one, a
//! slot given back waking the drain that waits for it.
//! Pods out of traffic are counted from HAProxy's own server states.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sluice::demo::Stage;

mod support;
use support::*;

const T: Duration = Duration::from_secs(60);

/// Servers of backend `web` not UP (DRAIN or MAINT): pods out of traffic, as HAProxy sees it.
async fn out_of_traffic(stage: &Stage, n: usize) -> usize {
    let mut out = 0;
    for i in 0..n {
        if stage.status_in("web", i).await.unwrap().as_deref() != Some("UP") {
            out += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_binding_still_lets_only_one_pod_out() {
    let (stage, _gw) = two_pods_serving().await;
    // The binding's budget becomes unreadable (a typo in a rollout's change).
    let mut spec = stage.binding_spec(stage.port, &[("haproxy", "web")]);
    spec["disruptionBudget"]["maxUnavailable"] = json!("150%");
    stage.put_binding("web", spec).await.unwrap();
    let bindings: Api<sluice::binding::TrafficBinding> = Api::namespaced(stage.client.clone(), "default");
    until("the binding to be reported invalid", || async {
        let b = bindings.get("web").await.ok()?;
        let conds = b.status?.conditions;
        conds
            .iter()
            .any(|c| c.type_ == "Valid" && c.status == "False")
            .then_some(())
    })
    .await;
    for name in ["web-1", "web-2"] {
        ask_drain(&stage, name).await;
    }
    // One pod drains (its recorded target is taken out); the other waits: an unreadable
    // budget counts as 1, never as "no budget".
    let waiting = until("one pod drained and the other waiting for the budget", || async {
        let s1 = status_of(&stage.get(0).await.unwrap());
        let s2 = status_of(&stage.get(1).await.unwrap());
        let states = [s1["state"].as_str()?.to_string(), s2["state"].as_str()?.to_string()];
        (states.contains(&"drained".to_string()) && states.contains(&"waiting-for-budget".to_string()))
            .then_some(states)
    })
    .await;
    let since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        assert!(
            out_of_traffic(&stage, 2).await <= 1,
            "two pods out under a budget of 1 ({waiting:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(out_of_traffic(&stage, 2).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_pod_relabelled_out_of_its_binding_gives_its_slot_back() {
    let (stage, _gw) = two_pods_serving().await;
    ask_drain(&stage, "web-1").await;
    wait_status(&stage.pods, "web-1", "drained").await;
    // web-1 leaves the binding (relabelled, its drain request withdrawn): no budget counts it.
    stage
        .pods
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "retired"},
                                               "annotations": {"sluice.dev/desired": null}}})),
        )
        .await
        .unwrap();
    // So web-2 may drain under the budget of 1.
    ask_drain(&stage, "web-2").await;
    stage
        .wait_drained(1, T)
        .await
        .expect("web-2 drains: web-1's slot went back");
    assert_eq!(stage.status_in("web", 1).await.unwrap().as_deref(), Some("MAINT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cap_of_one_still_works_every_pod() {
    let stage = Stage::new(3, true).await.expect("stage");
    let text = stage.gateway_config_yaml(free_addr(), "", "  maxWorkers: 1\n");
    let _gw = stage.start_gateway_with(&text).await.expect("gateway");
    for i in 0..3 {
        stage
            .wait_ready(i, T)
            .await
            .expect("every pod restored, one worker at a time");
    }
    stage.set_kruise_state(1, "PreparingUpdate").await.unwrap();
    stage.wait_drained(1, T).await.expect("a drain with one worker");
    stage.set_kruise_state(1, "Updated").await.unwrap();
    wait_gate(&stage.pods, "web-2", "True").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_budget_does_not_use_up_the_drain_deadline() {
    let (stage, _gw) = two_pods_serving().await;
    let mut spec = stage.binding_spec(stage.port, &[("haproxy", "web")]);
    spec["drainPolicy"] = json!({"deadlineSeconds": 1, "onDeadline": "Release"});
    stage.put_binding("web", spec).await.unwrap();
    // Sessions on both pods that outlive the deadline.
    let _held = hold_in_web(&stage, 4, 8000).await;
    for name in ["web-1", "web-2"] {
        ask_drain(&stage, name).await;
    }
    let (first, second) = until("one pod draining, the other waiting for the budget", || async {
        let s = [
            status_of(&stage.get(0).await.unwrap()),
            status_of(&stage.get(1).await.unwrap()),
        ];
        match (s[0]["state"].as_str()?, s[1]["state"].as_str()?) {
            (_, "waiting-for-budget") => Some((0, 1)),
            ("waiting-for-budget", _) => Some((1, 0)),
            _ => None,
        }
    })
    .await;
    let names = ["web-1", "web-2"];
    // The first is released at its deadline and stays out; the second keeps waiting, far
    // longer than the deadline.
    stage.wait_drained(first, T).await.expect("released at the deadline");
    let waited = std::time::Instant::now();
    until("the second to wait past the deadline", || async {
        (waited.elapsed() > Duration::from_secs(2)).then_some(())
    })
    .await;
    assert_eq!(
        status_of(&stage.get(second).await.unwrap())["state"],
        "waiting-for-budget"
    );
    // The first comes back; the second gets the slot and a whole deadline to drain.
    stage
        .pods
        .patch(
            names[first],
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/desired": null}}})),
        )
        .await
        .unwrap();
    wait_gate(&stage.pods, names[first], "True").await;
    let slot_free = std::time::Instant::now();
    stage
        .wait_drained(second, T)
        .await
        .expect("released at its own deadline");
    assert!(
        slot_free.elapsed() >= Duration::from_millis(900),
        "released {:?} after it got its slot: the time it waited was counted against its deadline",
        slot_free.elapsed()
    );
    assert_ne!(
        stage.status_in("web", second).await.unwrap().as_deref(),
        Some("UP"),
        "deregistered before it was released"
    );
}

/// The instant (the simulator's commit) of the first change of pod `name` after `rv` whose
/// readiness gate is `value`.
fn gate_changed_at(stage: &Stage, name: &str, value: &str, rv: u64) -> Option<std::time::Instant> {
    let store = stage.clusters[0].cluster.state().store();
    let (events, _) = store.subscribe_from(rv)?;
    events.iter().find_map(|e| {
        if e.storage.1 != "pods" || e.obj.name != name {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&e.obj.json).ok()?;
        let gate = v["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "sluice.dev/traffic-ready")?;
        (gate["status"] == value).then_some(e.at)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_given_back_wakes_the_drain_waiting_for_it() {
    let (stage, _gw) = two_pods_serving().await;
    ask_drain(&stage, "web-1").await;
    stage
        .wait_drained(0, T)
        .await
        .expect("web-1 drained, holding the budget's one slot");
    ask_drain(&stage, "web-2").await;
    wait_status(&stage.pods, "web-2", "waiting-for-budget").await;
    // Long enough that a drain looking again on its own would look only every few hundred
    // milliseconds (2 % of the wait so far before; 10 % now, as a safety net).
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rv = stage.clusters[0].cluster.state().store().rv();
    stage
        .pods
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/desired": null}}})),
        )
        .await
        .unwrap();
    wait_gate(&stage.pods, "web-2", "False").await;
    let back = gate_changed_at(&stage, "web-1", "True", rv).expect("web-1's gate True");
    let started = gate_changed_at(&stage, "web-2", "False", rv).expect("web-2's gate False");
    let after = started.saturating_duration_since(back);
    assert!(
        after < Duration::from_millis(200),
        "web-2's drain started {after:?} after web-1 gave its slot back: it was not woken"
    );
}
