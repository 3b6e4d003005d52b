//! The executor under outages and drift, through real HAProxy, BIND and the API
//! simulator: a dead DNS secondary, a reloaded load balancer, a hand edit, a cluster down
//! at start, a lagging watch, and a budget asked to drain every pod at once.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::api::PatchParams;
use serde_json::json;
use sluice::demo::Stage;
use sluice_adapter_dns::testing::bind::{Bind, Zone};
use sluice_adapter_dns::testing::dig;

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dns_secondary_does_not_keep_the_address_on_the_primary() {
    let stage = Stage::new(1, true).await.expect("stage");
    let ip = stage.ips[0].to_string();
    let mut bind = Bind::start(vec![Zone::new("example.test", 1, &["www IN A 10.9.9.9"])]).await;
    let secondary = bind.secondary.as_ref().expect("a secondary").addr;
    stage
        .put_binding(
            "web",
            json!({"selector": {"matchLabels": {"app": "web"}}, "port": stage.port,
                   "targets": [{"adapter": "haproxy", "params": {"backend": "web"}},
                               {"adapter": "corp-dns", "params": {"name": "www.example.test"}}],
                   "drainPolicy": {"deadlineSeconds": 60}}),
        )
        .await
        .unwrap();
    let dns = format!(
        "- kind: rfc2136\n  name: corp-dns\n  primary: {}\n  zones: [example.test]\n  servers: [{}, {secondary}]\n  \
         tsigKeyFile: {}\n  ttl: 1\n",
        bind.primary.addr,
        bind.primary.addr,
        bind.key_file("sluice").display(),
    );
    let _gw = stage
        .start_gateway_with(&stage.gateway_config_text_with(free_addr(), &dns))
        .await
        .expect("gateway");
    stage
        .wait_ready(0, T)
        .await
        .expect("serving through HAProxy and both DNS servers");
    assert!(dig(secondary, "www.example.test", "A").contains(&ip));

    bind.secondary.as_mut().unwrap().kill();
    ask_drain(&stage, "web-1").await;
    // The DNS target cannot be observed (one server is dead), yet it is deregistered: the
    // primary stops answering the address. The other kinds drain on their own evidence.
    until("the primary to stop answering the pod's address", || async {
        (!dig(bind.primary.addr, "www.example.test", "A").contains(&ip)).then_some(())
    })
    .await;
    until("sluice.dev/slb to go on its own evidence", || async {
        let p = stage.get(0).await.unwrap();
        (!finalizers(&p).contains(&"sluice.dev/slb".to_string())).then_some(())
    })
    .await;
    assert_eq!(
        dig(bind.primary.addr, "www.example.test", "A"),
        ["10.9.9.9"],
        "only the pod's address was taken out"
    );
    // The DNS drain waits for evidence it cannot get: its finalizer stays, well past the
    // record's TTL, and the status says why.
    let status = until("the status to show the DNS target unobserved", || async {
        let s = status_of(&stage.get(0).await.unwrap());
        s["targets"]
            .as_object()
            .is_some_and(|t| {
                t.iter()
                    .any(|(k, v)| k.starts_with("dns/") && v.as_str().unwrap().starts_with("unobserved"))
            })
            .then_some(s)
    })
    .await;
    assert_eq!(status["state"], "draining", "{status}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = stage.get(0).await.unwrap();
    assert!(
        finalizers(&p).contains(&"sluice.dev/dns".to_string()),
        "no DNS evidence, no removal: {:?}",
        finalizers(&p)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_a_reload_dropped_are_registered_again_within_the_resync_interval() {
    let mut stage = Stage::new(2, true).await.expect("stage");
    let _gw = gateway_on_dynamic_servers(&stage, "  resyncSeconds: 2\n  adapterHealthSeconds: 3600\n").await;
    let names: Vec<String> = (0..2)
        .map(|i| sluice_adapter_slb::dynamic_server_name(stage.ips[i], stage.port))
        .collect();
    let pid = |rt: sluice_adapter_slb::RuntimeClient| async move {
        let info = rt.show_info().await.unwrap();
        info.into_iter().find(|(k, _)| k == "Pid").map(|(_, v)| v)
    };
    let before = pid(stage.haproxy()).await;
    stage.restart_haproxy().await.expect("HAProxy restarted");
    // A new process, started from haproxy.cfg, carries no runtime (dynamic) server: they
    // are gone. (Checking the backend empty instead races the gateway, whose resync may
    // already be adding them back.)
    let after = pid(stage.haproxy()).await;
    assert!(
        before.is_some() && after.is_some() && before != after,
        "{before:?} {after:?}"
    );
    let started = std::time::Instant::now();
    until("both servers back UP", || async {
        let servers = stage.servers("dyn").await.unwrap();
        (0..2)
            .all(|i| servers.get(&names[i]).is_some_and(|s| s.1 == "UP"))
            .then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "within about the resync interval (2 s, jittered, plus the health check): {:?}",
        started.elapsed()
    );
    let note = wait_event(&stage.client, "web-1", "TrafficDriftRepaired").await;
    assert!(note.contains("registered again"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_put_back_by_hand_while_its_pod_is_drained_is_taken_out_again() {
    let stage = Stage::new(2, true).await.expect("stage");
    let text = stage.gateway_config_yaml(free_addr(), "", "  resyncSeconds: 2\n");
    let _gw = stage.start_gateway_with(&text).await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    ask_drain(&stage, "web-1").await;
    wait_status(&stage.pods, "web-1", "drained").await;
    assert_eq!(stage.status_in("web", 0).await.unwrap().as_deref(), Some("MAINT"));
    stage
        .haproxy()
        .set_server_state("web", "web-1", sluice_adapter_slb::AdminCommand::Ready)
        .await
        .unwrap();
    until("the server to be taken out again", || async {
        let s = stage.status_in("web", 0).await.unwrap();
        (s.as_deref() == Some("MAINT")).then_some(())
    })
    .await;
    let note = wait_event(&stage.client, "web-1", "TrafficDriftRepaired").await;
    assert!(note.contains("taken out again"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_down_at_start_holds_back_only_its_own_pods() {
    let stage = Stage::with_clusters(2, true, 2).await.expect("stage");
    stage.clusters[1].cluster.faults().set_offline(true);
    let gw = sluice::gateway::Gateway::start(stage.gateway_config().unwrap())
        .await
        .expect("starts with west down");
    // demo's pod goes through a whole update while west is unreachable.
    stage.wait_ready(0, T).await.expect("demo's pod restored");
    stage.set_kruise_state(0, "PreparingUpdate").await.unwrap();
    stage.wait_drained(0, T).await.expect("demo's pod drained");
    stage.set_kruise_state(0, "Updated").await.unwrap();
    wait_gate(&stage.pods, "web-1", "True").await;
    assert_eq!(gw.engine.unsynced(), ["west"], "the missing cluster is named");
    stage.clusters[1].cluster.faults().set_offline(false);
    stage
        .wait_ready(1, T)
        .await
        .expect("west's pod restored once west is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watch_does_not_multiply_api_requests_or_adapter_calls() {
    let stage = Stage::new(2, true).await.expect("stage");
    let gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    let faults = stage.cluster().faults();
    faults.set_watch_lag(Duration::from_secs(3));
    let requests = faults.request_count();
    let calls = gw.engine.adapter_calls.load(Ordering::SeqCst);
    ask_drain(&stage, "web-1").await;
    // The gateway learns of the request 3 s late, drains, and its own writes reach its
    // watch 3 s late again: it must not redo them meanwhile. This test waits on the
    // gateway's own view (no API request) and counts the few reads it makes itself.
    let own = std::sync::atomic::AtomicU64::new(1); // the patch above
    let view = |gw: &sluice::gateway::Gateway| {
        gw.engine
            .pods
            .iter()
            .find(|v| v.name == "web-1")
            .map(|v| v.clone())
            .expect("web-1 in view")
    };
    until("the gateway's view of web-1 drained", || async {
        let v = view(&gw);
        (!v.holds_sluice_finalizer() && v.status().is_some_and(|s| s.state == sluice::model::State::Drained))
            .then_some(())
    })
    .await;
    let key = until("the gateway's view to catch up with the pod", || async {
        own.fetch_add(1, Ordering::SeqCst);
        let p = stage.get(0).await.unwrap();
        let rv = p.metadata.resource_version.clone().unwrap();
        let v = view(&gw);
        tokio::time::sleep(Duration::from_millis(200)).await;
        (v.resource_version == rv).then_some(v.uid)
    })
    .await;
    assert!(
        !holds_sluice_finalizer(&stage.get(0).await.unwrap()),
        "drained on the server too"
    );
    own.fetch_add(1, Ordering::SeqCst);
    let api = faults.request_count() - requests - own.load(Ordering::SeqCst);
    let adapter = gw.engine.adapter_calls.load(Ordering::SeqCst) - calls;
    eprintln!("lagging watch: pod {key} drained with {api} API requests and {adapter} adapter calls");
    // A drain writes the status, the gate and one metadata edit (a read and a patch each,
    // a few times over as its state changes) plus Events; a handful of observations.
    assert!(api <= 30, "{api} API requests for one drain");
    assert!(adapter <= 20, "{adapter} adapter calls for one drain");
    faults.set_watch_lag(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_asked_to_drain_at_once_still_leaves_only_one_out_of_traffic() {
    let stage = Stage::new(3, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    for i in 0..3 {
        stage.wait_ready(i, T).await.unwrap();
    }
    for i in 0..3 {
        stage
            .pods
            .patch(&Stage::name(i), &PatchParams::default(), &desired_drained())
            .await
            .unwrap();
    }
    let sample = || async {
        let mut out = 0;
        let mut states = Vec::new();
        for i in 0..3 {
            let p = stage.get(i).await.unwrap();
            if gate(&p).as_deref() == Some("False") {
                out += 1;
            }
            states.push(sluice_state(&p));
        }
        let servers = stage.servers("web").await.unwrap();
        let out_in_haproxy = servers
            .values()
            .filter(|(_, s, _)| s.starts_with("DRAIN") || s.starts_with("MAINT"))
            .count();
        assert!(out <= 1, "two pods out of traffic: {states:?}");
        assert!(out_in_haproxy <= 1, "two servers out, seen from HAProxy: {servers:?}");
        states
    };
    until("one drained, two waiting for the budget", || async {
        let states = sample().await;
        let drained = states.iter().filter(|s| *s == "drained").count();
        let waiting = states.iter().filter(|s| *s == "waiting-for-budget").count();
        (drained == 1 && waiting == 2).then_some(())
    })
    .await;
    // And it stays so: the drained pod does not serve again, so its slot is not free.
    let until_t = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until_t {
        sample().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
