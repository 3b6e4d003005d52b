//! High availability with real `sluice` processes, the API simulator and real HAProxy:
//! two replicas elect one leader with a Lease; the simulator records who wrote every pod
//! write, so "exactly one writer at a time" is checked from the server's side. The leader
//! is SIGKILLed mid-drain (the standby takes over when the lease expires) and SIGTERMed
//! mid-drain (it releases the lease: the standby takes over at its next retry). Also:
//! shadow mode writes nothing, and a pause holds new work back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use sluice::demo::Stage;

mod support;
use support::*;

const T: Duration = Duration::from_secs(60);
const LEASE: &str = "leaderElection:\n  namespace: default\n  name: sluice\n  leaseSeconds: 3\n  renewDeadlineMs: 2000\n  retryMs: 200\n";

/// A replica's config file: its own health port and instance name, the shared lease.
fn replica(stage: &Stage, name: &str, extra: &str) -> (std::path::PathBuf, std::net::SocketAddr) {
    // Who wrote what, from the server's side.
    stage.cluster().faults().set_recording(true);
    let health = free_addr();
    let text = stage.gateway_config_yaml(health, "", &format!("  instance: {name}\n")) + extra;
    let path = stage.dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    (path, health)
}

/// The URIs `manager` wrote to, in order (the simulator's write log).
fn writes_by(stage: &Stage, manager: &str) -> Vec<String> {
    stage
        .cluster()
        .faults()
        .write_log()
        .into_iter()
        .filter(|w| w.manager == manager)
        .map(|w| w.uri)
        .collect()
}

/// Waits until `name` holds the lease.
async fn wait_holder(stage: &Stage, name: &str) {
    until(&format!("{name} to hold the lease"), || async {
        (holder(stage).await.as_deref() == Some(name)).then_some(())
    })
    .await;
}

async fn holder(stage: &Stage) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(stage.client.clone(), "default");
    leases.get_opt("sluice").await.ok()??.spec?.holder_identity
}

/// The pod writes (patches of pods) in order, as (writer, when).
fn pod_writes(stage: &Stage) -> Vec<(String, Instant)> {
    stage
        .cluster()
        .faults()
        .write_log()
        .into_iter()
        .filter(|w| w.uri.contains("/pods/") && w.manager.starts_with("gw-"))
        .map(|w| (w.manager, w.at))
        .collect()
}

/// Drains pod `i` (an in-place update) while it holds long requests, and does `during`
/// once the drain is under way; then lets the update finish and waits for the pod to
/// serve again.
async fn update_with(stage: &Stage, i: usize, during: impl std::future::Future<Output = ()>) {
    let held = hold_in_web(stage, 4, 1500).await;
    stage.set_kruise_state(i, "PreparingUpdate").await.unwrap();
    wait_gate(&stage.pods, &Stage::name(i), "False").await;
    during.await;
    stage.wait_drained(i, T).await.expect("the drain completes");
    for h in held {
        assert_eq!(within("a held request", h).await.unwrap().expect("answered"), 200);
    }
    stage.set_kruise_state(i, "Updated").await.unwrap();
    wait_gate(&stage.pods, &Stage::name(i), "True").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_a_killed_or_stopped_leader_with_nothing_lost() {
    let stage = Stage::new(3, true).await.expect("stage");
    let (a_cfg, a_health) = replica(&stage, "gw-a", LEASE);
    let (b_cfg, b_health) = replica(&stage, "gw-b", LEASE);
    let a = spawn_gateway(&a_cfg, a_health).await;
    wait_holder(&stage, "gw-a").await;
    let b = spawn_gateway(&b_cfg, b_health).await;
    for i in 0..3 {
        stage.wait_ready(i, T).await.expect("restored by the leader");
    }
    let health_b = health_get(b_health, "/healthz").await.unwrap();
    assert!(health_b.contains("standby"), "{health_b}");
    let load = sluice::demo::load::Load::start(stage.frontend, 6);

    // Sample pods out of traffic all along, from HAProxy's side: never more than the
    // budget (1), whoever leads.
    let sampling = Arc::new(AtomicBool::new(true));
    let worst = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, worst, haproxy) = (sampling.clone(), worst.clone(), stage.haproxy());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                if let Ok(rows) = haproxy.show_stat_servers("web").await {
                    let out = rows.iter().filter(|r| r.status() != "UP").count() as u64;
                    worst.fetch_max(out, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // 1. SIGKILL of the leader mid-drain: the standby takes over when the lease expires.
    let mut a = Some(a);
    let killed = std::cell::Cell::new(None);
    update_with(&stage, 0, async {
        drop(a.take()); // SIGKILL
        killed.set(Some(Instant::now()));
        wait_holder(&stage, "gw-b").await;
    })
    .await;
    let killed = killed.get().unwrap();
    let writes = pod_writes(&stage);
    let first_b = writes.iter().find(|(m, _)| m == "gw-b").map(|(_, at)| *at).unwrap();
    eprintln!(
        "failover after SIGKILL: gw-b's first pod write {:?} after the kill (lease 3 s, retry 0.2 s)",
        first_b.duration_since(killed)
    );
    assert!(
        writes
            .iter()
            .all(|(m, at)| (m == "gw-a" && *at < killed) || (m == "gw-b" && *at > killed)),
        "one writer at a time: {:?}",
        writes.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>()
    );
    assert!(first_b.duration_since(killed) < Duration::from_secs(3) + Duration::from_secs(2));

    // 2. gw-a comes back as a standby; SIGTERM of the leader (gw-b) mid-drain: it
    // finishes what is in flight, releases the lease, and gw-a takes over at once.
    let a = spawn_gateway(&a_cfg, a_health).await;
    let mut b = Some(b);
    let stopped = std::cell::Cell::new(None);
    update_with(&stage, 1, async {
        b.as_ref().unwrap().signal("TERM");
        stopped.set(Some(Instant::now()));
        wait_holder(&stage, "gw-a").await;
        let took = stopped.get().unwrap().elapsed();
        eprintln!("failover after SIGTERM: gw-a holds the lease {took:?} after the signal");
        assert!(
            took < Duration::from_secs(2),
            "the lease was released, not left to expire: {took:?}"
        );
    })
    .await;
    let mut b = b.take().unwrap();
    let status = within("gw-b to exit after SIGTERM", async {
        loop {
            if let Some(s) = b.0.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    let stopped = stopped.get().unwrap();
    let after = pod_writes(&stage);
    let since_kill: Vec<&(String, Instant)> = after.iter().filter(|(_, at)| *at > killed).collect();
    let switch = since_kill
        .iter()
        .position(|(m, _)| m == "gw-a")
        .unwrap_or(since_kill.len());
    assert!(
        since_kill[..switch].iter().all(|(m, _)| m == "gw-b") && since_kill[switch..].iter().all(|(m, _)| m == "gw-a"),
        "one writer at a time: {:?}",
        since_kill.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>()
    );
    assert!(since_kill[switch..].iter().all(|(_, at)| *at > stopped));

    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    let (requests, failed) = load.finish().await;
    eprintln!("load through both failovers: {requests} requests, {failed} failed");
    assert!(requests > 100, "the load ran: {requests}");
    assert_eq!(failed, 0, "no request lost");
    assert!(
        worst.load(Ordering::SeqCst) <= 1,
        "at most one pod out of traffic at any sample"
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_gateway_says_what_it_would_do_and_writes_nothing() {
    let stage = Stage::new(2, true).await.expect("stage");
    let (sole_cfg, sole_health) = replica(&stage, "gw-sole", "");
    let sole = spawn_gateway(&sole_cfg, sole_health).await;
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    drop(sole);
    let (cfg, health) = replica(&stage, "gw-shadow", "shadow: true\n");
    let log = stage.dir.join("shadow.log");
    let _shadow = spawn_gateway_logging(&cfg, health, Some(&log)).await;
    ask_drain(&stage, "web-1").await;
    let line = until("the shadow to say what it would do", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .find(|l| l.contains("Shadow: would act") && l.contains("web-1") && l.contains("Deregister"))
            .map(String::from)
    })
    .await;
    assert!(line.contains("SetGate(false)") && line.contains("drain"), "{line}");
    assert!(
        pod_writes(&stage).iter().all(|(m, _)| m != "gw-shadow"),
        "a shadow never writes a pod"
    );
    assert_eq!(stage.status_in("web", 0).await.unwrap().as_deref(), Some("UP"));
    assert!(holds_sluice_finalizer(&stage.get(0).await.unwrap()));
    let h = health_get(health, "/healthz").await.unwrap();
    assert!(h.contains("shadow (writes nothing)"), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_gateway_starts_nothing_new_until_resumed() {
    let stage = Stage::new(2, true).await.expect("stage");
    let (cfg, health) = replica(&stage, "gw-pause", "");
    let gw = spawn_gateway(&cfg, health).await;
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    gw.signal("USR1");
    until("/healthz to say paused", || async {
        health_get(health, "/healthz").await.filter(|h| h.contains("paused"))
    })
    .await;
    ask_drain(&stage, "web-1").await;
    let asked = Instant::now();
    until("a second paused", || async {
        (asked.elapsed() > Duration::from_secs(1)).then_some(())
    })
    .await;
    assert_eq!(
        stage.status_in("web", 0).await.unwrap().as_deref(),
        Some("UP"),
        "nothing started"
    );
    let p = stage.get(0).await.unwrap();
    assert_eq!(gate(&p).as_deref(), Some("True"), "the gate did not move");
    let state = status_of(&p)["state"].as_str().unwrap_or_default().to_string();
    assert!(!state.contains("drain"), "no drain started: {state}");
    gw.signal("USR2");
    stage.wait_drained(0, T).await.expect("the drain starts once resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prestop_call_or_an_eviction_answered_by_the_standby_waits_for_the_leaders_drain() {
    let stage = Stage::new(2, true).await.expect("stage");
    let (a_cfg, a_health) = replica(&stage, "gw-a", LEASE);
    let (b_cfg, b_health) = replica(&stage, "gw-b", LEASE);
    // The standby serves the preStop endpoint and the admission webhook.
    let (b_prestop, b_webhook) = (free_addr(), free_addr());
    let issued = kube_sim::tls::issue(&["127.0.0.1"]).unwrap();
    let (cert, key) = (stage.dir.join("b.crt"), stage.dir.join("b.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let text = std::fs::read_to_string(&b_cfg).unwrap();
    let with = text.replace(
        &format!("  health: {b_health}\n"),
        &format!("  health: {b_health}\n  prestop: {b_prestop}\n"),
    ) + &format!(
        "admission:\n  listen: {b_webhook}\n  certFile: {}\n  keyFile: {}\n",
        cert.display(),
        key.display()
    );
    assert_ne!(text, with);
    std::fs::write(&b_cfg, with).unwrap();
    let _a = spawn_gateway(&a_cfg, a_health).await;
    wait_holder(&stage, "gw-a").await;
    let _b = spawn_gateway(&b_cfg, b_health).await;
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    // The Service sends a pod's preStop call to any replica: the standby records the
    // request (it writes nothing else) and answers once the leader has drained the pod.
    let held = hold_in_web(&stage, 4, 800).await;
    let answer = within(
        "the preStop call",
        get_from(b_prestop, stage.ips[0], "/prestop?timeoutSeconds=30"),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!holds_sluice_finalizer(&stage.get(0).await.unwrap()));
    for h in held {
        assert_eq!(within("a held request", h).await.unwrap().expect("answered"), 200);
    }
    let by_b = writes_by(&stage, "gw-b");
    assert_eq!(by_b.len(), 1, "the standby wrote only the request: {by_b:?}");

    // web-1, drained by its preStop, goes (its budget slot with it).
    stage.pods.delete("web-1", &Default::default()).await.unwrap();
    until("web-1 to go", || async {
        stage.pods.get_opt("web-1").await.ok()?.is_none().then_some(())
    })
    .await;
    // An eviction through the standby's webhook: it records the drain request, the leader
    // drains, the eviction is admitted.
    let config: k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sluice-gateway"},
            "webhooks": [{
                "name": "evictions.sluice.dev",
                "clientConfig": {"url": format!("https://{b_webhook}/validate/demo"),
                                 "caBundle": base64::engine::general_purpose::STANDARD.encode(&issued.ca_pem)},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods/eviction"]}],
                "failurePolicy": "Fail", "sideEffects": "NoneOnDryRun",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 30
            }]
        }))
        .unwrap();
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(stage.client.clone())
        .create(&Default::default(), &config)
        .await
        .unwrap();
    let held = hold_in_web(&stage, 4, 800).await;
    within("the eviction", stage.pods.evict("web-2", &Default::default()))
        .await
        .expect("admitted once drained");
    for h in held {
        assert_eq!(within("a held request", h).await.unwrap().expect("answered"), 200);
    }
    let by_b = writes_by(&stage, "gw-b");
    assert_eq!(by_b.len(), 2, "the standby wrote the two requests only: {by_b:?}");
}

/// The API on a standby: reads answer from its own view; a Drain is a request (recorded on
/// the pod, the leader drains); a Release is refused with UNAVAILABLE (the leader performs
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_of_a_standby_answers_reads_takes_drains_and_refuses_releases() {
    use sluice_proto::v1 as pb;
    let stage = Stage::new(2, true).await.expect("stage");
    let (a_cfg, a_health) = replica(&stage, "gw-a", LEASE);
    let (b_cfg, b_health) = replica(&stage, "gw-b", LEASE);
    let api = free_addr();
    std::fs::write(stage.dir.join("op.token"), "operator-token-0123456789").unwrap();
    let text = std::fs::read_to_string(&b_cfg).unwrap()
        + &format!(
            "api:\n  listen: {api}\n  insecure: true\n  tokens:\n  - user: op\n    file: {}\n  rules:\n  - users: [op]\n    verbs: ['*']\n    namespaces: ['*']\n",
            stage.dir.join("op.token").display()
        );
    std::fs::write(&b_cfg, text).unwrap();
    let _a = spawn_gateway(&a_cfg, a_health).await;
    wait_holder(&stage, "gw-a").await;
    let _b = spawn_gateway(&b_cfg, b_health).await;
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    let mut client = pb::sluice_client::SluiceClient::connect(format!("http://{api}"))
        .await
        .expect("connect");
    fn req<T>(m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", "Bearer operator-token-0123456789".parse().unwrap());
        r
    }
    let pod = |name: &str| pb::PodRef {
        namespace: "default".into(),
        name: name.into(),
        ..Default::default()
    };
    let got = client
        .get(req(pb::GetRequest {
            pod: Some(pod("web-1")),
        }))
        .await
        .expect("a standby answers reads")
        .into_inner();
    assert_eq!(got.gate, "True");
    let mut progress = client
        .drain(req(pb::DrainRequest {
            target: Some(pb::Target {
                target: Some(pb::target::Target::Pod(pod("web-1"))),
            }),
            reason: "through the standby".into(),
            wait: true,
            ..Default::default()
        }))
        .await
        .expect("a standby takes a drain request")
        .into_inner();
    let mut done = false;
    while let Some(p) = within("progress", progress.message()).await.unwrap() {
        done |= p.done;
    }
    assert!(done, "the standby reports the leader's drain");
    assert!(!holds_sluice_finalizer(&stage.get(0).await.unwrap()));
    let e = client
        .release(req(pb::ReleaseRequest {
            pod: Some(pod("web-1")),
            reason: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    // web-1 is drained already: FAILED_PRECONDITION is checked first; web-2 is not draining.
    assert!(
        matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::Unavailable),
        "{e:?}"
    );
    stage
        .pods
        .patch(
            "web-2",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"sluice.dev/desired": "drained"}}}),
            ),
        )
        .await
        .unwrap();
    let held = hold_in_web(&stage, 2, 3000).await;
    until("web-2 to be asked to drain, in the standby's view", || async {
        let t = client
            .clone()
            .get(req(pb::GetRequest {
                pod: Some(pod("web-2")),
            }))
            .await
            .ok()?
            .into_inner();
        // (web-1 holds the budget's one slot: web-2 waits for it.)
        matches!(t.state.as_str(), "waiting-for-budget" | "starting-drain" | "draining").then_some(())
    })
    .await;
    let e = client
        .release(req(pb::ReleaseRequest {
            pod: Some(pod("web-2")),
            kind: "slb".into(),
            reason: "x".into(),
            ..Default::default()
        }))
        .await;
    if let Err(e) = e {
        // (When web-2 drained before the call, nothing is left to release.)
        assert!(
            e.code() == tonic::Code::Unavailable && e.message().contains("send it to the leader")
                || e.code() == tonic::Code::FailedPrecondition,
            "{e:?}"
        );
    } else {
        panic!("a standby performed a release");
    }
    for h in held {
        let _ = within("a held request", h).await;
    }
    let by_b = writes_by(&stage, "gw-b");
    assert_eq!(by_b.len(), 1, "the standby wrote only the drain request: {by_b:?}");
}
