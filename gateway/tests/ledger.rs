//! The registration ledger, end to end through real HAProxy and the API simulator: what
//! Sluice registered is recorded on the pod before it registers, so no binding edit,
//! deletion, restart or config change can turn "where is it registered?" into "drained".
//!
//! HAProxy on the stage has `web` (serving), `web2` (the same pods declared in MAINT, for
//! moves) and `dyn` (empty, for dynamic servers). A pod's finalizer may go only while
//! HAProxy shows its server out (MAINT or absent) in every backend it was registered in:
//! the samplers below check that from HAProxy's own answers.

use std::time::Duration;

use sluice::demo::Stage;

mod support;
use support::*;

/// Where pod `i` stands in each backend: `(web, web2)` statuses (`None`: no server).
async fn both(stage: &Stage, i: usize) -> (Option<String>, Option<String>) {
    (
        stage.status_in("web", i).await.unwrap(),
        stage.status_in("web2", i).await.unwrap(),
    )
}

fn out(status: &Option<String>) -> bool {
    status.as_deref().is_none_or(|s| s.starts_with("MAINT"))
}

/// Samples pod `i` every 5 ms until it carries no finalizer of Sluice's, asserting that
/// `sluice.dev/slb` is never missing while HAProxy still has the pod in (not MAINT) in
/// `web` or `web2`.
async fn finalizer_goes_only_when_out_everywhere(stage: &Stage, i: usize) {
    within("the drain to remove the finalizers", async {
        loop {
            let p = stage.get(i).await.unwrap();
            let seen = both(stage, i).await;
            if !finalizers(&p).contains(&"sluice.dev/slb".to_string()) {
                assert!(
                    out(&seen.0) && out(&seen.1),
                    "sluice.dev/slb removed while HAProxy has the pod in: web={:?} web2={:?}",
                    seen.0,
                    seen.1
                );
            }
            if !holds_sluice_finalizer(&p) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_edited_to_another_backend_moves_make_before_break_and_a_drain_covers_both() {
    let stage = Stage::new(2, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    assert_eq!(ledger_targets(&stage.get(0).await.unwrap()), ["haproxy/web"]);

    // Edit the binding to web2 and start a rollout of pod 0 at once: its drain must go
    // through web (the ledger) and web2 (the binding), wherever the move stands.
    stage
        .put_binding("web", stage.binding_spec(stage.port, &[("haproxy", "web2")]))
        .await
        .unwrap();
    stage.set_kruise_state(0, "PreparingUpdate").await.unwrap();
    finalizer_goes_only_when_out_everywhere(&stage, 0).await;
    let (web, web2) = both(&stage, 0).await;
    assert!(out(&web) && out(&web2), "pod 0 out of both: {web:?} {web2:?}");
    assert!(ledger(&stage.get(0).await.unwrap()).is_empty());

    // Pod 1 moved: registered and verified UP in web2 first, then drained from web.
    until("pod 1 to have moved to web2", || async {
        let p = stage.get(1).await.unwrap();
        let (web, web2) = both(&stage, 1).await;
        (ledger_targets(&p) == ["haproxy/web2"] && web2.as_deref() == Some("UP") && out(&web)).then_some(())
    })
    .await;
    let note = wait_event(&stage.client, "web-2", "TrafficMoved").await;
    assert!(note.contains("backend=web]"), "names the target left: {note}");
    assert_eq!(
        gate(&stage.get(1).await.unwrap()).as_deref(),
        Some("True"),
        "served throughout"
    );

    // Pod 0 comes back in web2 only.
    stage.set_kruise_state(0, "Updated").await.unwrap();
    wait_gate(&stage.pods, "web-1", "True").await;
    let (web, web2) = both(&stage, 0).await;
    assert!(out(&web), "{web:?}");
    assert_eq!(web2.as_deref(), Some("UP"));
    assert_eq!(ledger_targets(&stage.get(0).await.unwrap()), ["haproxy/web2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_whose_new_target_cannot_serve_keeps_the_old_one() {
    let stage = Stage::new(1, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    // A port with no server in HAProxy: the new target can never be registered.
    stage
        .put_binding("web", stage.binding_spec(stage.port + 1, &[("haproxy", "web")]))
        .await
        .unwrap();
    let status = until("the restore to say why it cannot move", || async {
        let s = status_of(&stage.get(0).await.unwrap());
        (!s["blocked"].is_null()).then_some(s)
    })
    .await;
    assert!(
        status["blocked"][0]
            .as_str()
            .unwrap()
            .contains("has no server with address"),
        "{status}"
    );
    // Make-before-break: nothing was taken out of the old target.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stage.status_in("web", 0).await.unwrap().as_deref(), Some("UP"));
    let p = stage.get(0).await.unwrap();
    assert_eq!(gate(&p).as_deref(), Some("True"));
    assert!(
        ledger_targets(&p).contains(&"haproxy/web".to_string()),
        "the old target stays recorded: {:?}",
        ledger(&p)
    );
    wait_event(&stage.client, "web-1", "RestoreBlocked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_instance_edit_moves_and_a_removed_instance_blocks_the_drain_naming_it() {
    let stage = Stage::new(1, true).await.expect("stage");
    let with_b = stage.gateway_config_text_with(free_addr(), &stage.haproxy_adapter("haproxy-b", "static"));
    let gw = stage.start_gateway_with(&with_b).await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    // The binding moves to another instance (and backend).
    stage
        .put_binding("web", stage.binding_spec(stage.port, &[("haproxy-b", "web2")]))
        .await
        .unwrap();
    until("the move to instance haproxy-b", || async {
        let p = stage.get(0).await.unwrap();
        let (web, web2) = both(&stage, 0).await;
        (ledger_targets(&p) == ["haproxy-b/web2"] && web2.as_deref() == Some("UP") && out(&web)).then_some(())
    })
    .await;
    drop(gw);

    // The instance leaves the configuration; the gateway restarts; a drain is asked.
    let _gw = stage.start_gateway().await.expect("gateway without haproxy-b");
    stage.set_kruise_state(0, "PreparingUpdate").await.unwrap();
    let status = wait_status(&stage.pods, "web-1", "blocked").await;
    let why = status["blocked"].to_string();
    assert!(
        why.contains("adapter instance \\\"haproxy-b\\\"") && why.contains("not in the gateway configuration"),
        "{status}"
    );
    let note = wait_event(&stage.client, "web-1", "DrainBlocked").await;
    assert!(note.contains("haproxy-b"), "{note}");
    // Never "absent, so drained": the finalizer and the record stay, the pod still serves
    // in web2 (nothing could take it out).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = stage.get(0).await.unwrap();
    assert!(
        finalizers(&p).contains(&"sluice.dev/slb".to_string()),
        "{:?}",
        finalizers(&p)
    );
    assert_eq!(ledger_targets(&p), ["haproxy-b/web2"]);
    assert_eq!(stage.status_in("web2", 0).await.unwrap().as_deref(), Some("UP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_bindings_deleted_drains_its_targets_only_and_a_later_drain_takes_the_rest() {
    let stage = Stage::new(2, true).await.expect("stage");
    stage
        .put_binding("web-b", stage.binding_spec(stage.port, &[("haproxy", "web2")]))
        .await
        .unwrap();
    let _gw = stage.start_gateway().await.expect("gateway");
    for i in 0..2 {
        until("both bindings to serve", || async {
            let (web, web2) = both(&stage, i).await;
            (web.as_deref() == Some("UP") && web2.as_deref() == Some("UP")).then_some(())
        })
        .await;
    }
    stage.delete_binding("web-b").await.unwrap();
    // Its targets are drained on evidence; the pods keep serving through the other binding.
    for i in 0..2 {
        until("web2 to be drained", || async {
            let p = stage.get(i).await.unwrap();
            (ledger_targets(&p) == ["haproxy/web"] && out(&both(&stage, i).await.1)).then_some(())
        })
        .await;
        assert_eq!(stage.status_in("web", i).await.unwrap().as_deref(), Some("UP"));
        assert_eq!(gate(&stage.get(i).await.unwrap()).as_deref(), Some("True"));
    }
    stage.set_kruise_state(0, "PreparingDelete").await.unwrap();
    finalizer_goes_only_when_out_everywhere(&stage, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_deleted_while_the_gateway_was_down_is_drained_from_the_ledger_after_restart() {
    let stage = Stage::new(1, true).await.expect("stage");
    stage
        .put_binding("web-b", stage.binding_spec(stage.port, &[("haproxy", "web2")]))
        .await
        .unwrap();
    let gw = stage.start_gateway().await.expect("gateway");
    until("both bindings to serve", || async {
        let (web, web2) = both(&stage, 0).await;
        (web.as_deref() == Some("UP") && web2.as_deref() == Some("UP")).then_some(())
    })
    .await;
    stage.wait_ready(0, T).await.unwrap();
    drop(gw);
    stage.delete_binding("web-b").await.unwrap();
    // Drained right after the restart: both bindings' targets are taken out, the deleted
    // one's known only from the ledger.
    let _gw = stage.start_gateway().await.expect("gateway again");
    stage.set_kruise_state(0, "PreparingDelete").await.unwrap();
    finalizer_goes_only_when_out_everywhere(&stage, 0).await;
    let (web, web2) = both(&stage, 0).await;
    assert!(out(&web) && out(&web2), "{web:?} {web2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_its_registration_is_in_flight_stays_until_its_address_is_out() {
    let mut stage = Stage::new(1, true).await.expect("stage");
    // The pod's server is down: HAProxy's health check fails, so the registration is
    // never verified (no sluice.dev/slb) — but it is registered (state ready, DOWN).
    stage.backends[0].take();
    until("HAProxy to see the server down", || async {
        let web = stage.status_in("web", 0).await.unwrap();
        web.as_deref().is_some_and(|s| s.starts_with("DOWN")).then_some(())
    })
    .await;
    let _gw = stage.start_gateway().await.expect("gateway");
    until("the registration to be in flight", || async {
        let p = stage.get(0).await.unwrap();
        let web = stage.status_in("web", 0).await.unwrap();
        (ledger_targets(&p) == ["haproxy/web"]
            && finalizers(&p) == ["sluice.dev/ledger"]
            && web.as_deref().is_some_and(|s| s.starts_with("DOWN")))
        .then_some(())
    })
    .await;
    stage
        .pods
        .delete("web-1", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    // The guard holds the pod until its address is verified out of HAProxy.
    let mut last = None;
    within("the pod to go", async {
        loop {
            match stage.pods.get_opt("web-1").await.unwrap() {
                Some(p) => {
                    assert!(p.metadata.deletion_timestamp.is_some());
                    last = stage.status_in("web", 0).await.unwrap();
                }
                None => break,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        stage.status_in("web", 0).await.unwrap().as_deref(),
        Some("MAINT"),
        "the address is out (last seen while the pod existed: {last:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_left_by_a_finalizer_removed_by_hand_is_swept_out() {
    let stage = Stage::new(2, true).await.expect("stage");
    let _gw = gateway_on_dynamic_servers(&stage, "  orphanSweepSeconds: 1\n").await;
    let name = |i: usize| sluice_adapter_slb::dynamic_server_name(stage.ips[i], stage.port);
    assert!(stage.servers("dyn").await.unwrap().contains_key(&name(0)));
    // Someone removes the finalizers by hand and deletes the pod: nothing holds it.
    stage
        .pods
        .patch(
            "web-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    stage
        .pods
        .delete("web-1", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    until("web-1 to be gone", || async {
        stage.pods.get_opt("web-1").await.unwrap().is_none().then_some(())
    })
    .await;
    // Two sweeps in a row find its server orphaned: it is drained and deleted; the other
    // pod's server is left alone.
    until("the orphan to be swept out", || async {
        let servers = stage.servers("dyn").await.unwrap();
        (!servers.contains_key(&name(0))).then_some(())
    })
    .await;
    assert_eq!(
        stage
            .servers("dyn")
            .await
            .unwrap()
            .get(&name(1))
            .map(|s| s.1.clone())
            .as_deref(),
        Some("UP")
    );
    let note = wait_event(&stage.client, "web", "OrphanDrained").await;
    assert!(
        note.contains(&stage.ips[0].to_string()) && note.contains("verified drained"),
        "{note}"
    );
}
