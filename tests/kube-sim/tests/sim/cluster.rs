//! Cluster-level behaviour: authentication, TLS verification, several clusters in one
//! process, fault injection and kubelet-lite.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_sim::{kubeconfig, ClusterConfig, Failure, KubeletConfig};
use serde_json::json;

use crate::common::{
    client, client_for_context, client_without_retry, pod, pod_on_node, start, start_with, status, within,
};

#[tokio::test]
async fn bearer_token_and_tls_are_enforced() {
    let c = start("auth").await;
    let good = c.kubeconfig();
    let wrong_token = good.replace(c.token(), "not-the-token");
    let pods: Api<Pod> = Api::namespaced(client_for_context(&wrong_token, c.name()).await, "default");
    let e = status(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );

    // A client that trusts another CA refuses the server's certificate.
    let other = start("other-ca").await;
    let other_ca = base64_of(other.ca_pem().unwrap());
    let mine_ca = base64_of(c.ca_pem().unwrap());
    let mismatched = good.replace(&mine_ca, &other_ca);
    let pods: Api<Pod> = Api::namespaced(client_for_context(&mismatched, c.name()).await, "default");
    let err = pods.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "TLS verification must fail before HTTP: {err:?}"
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn token_file_is_read() {
    let dir = std::env::temp_dir().join(format!("kube-sim-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens.csv");
    std::fs::write(&file, "# comment\nsecret-token,admin,1,\"system:masters\"\n").unwrap();
    let c = start_with(ClusterConfig::new("tokfile").token_file(&file).unwrap()).await;
    assert_eq!(c.token(), "secret-token");
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    pods.list(&ListParams::default())
        .await
        .expect("token from the file authenticates");
    std::fs::write(&file, "no-user-column\n").unwrap();
    let err = ClusterConfig::new("bad").token_file(&file).unwrap_err();
    assert!(err.to_string().contains("expected `token,user,uid[,groups]`"), "{err}");
}

#[tokio::test]
async fn several_clusters_in_one_process() {
    let east = start("east").await;
    let west = start("west").await;
    let kc = kubeconfig(&[&east, &west], "east");
    let e: Api<Pod> = Api::namespaced(client_for_context(&kc, "east").await, "default");
    let w: Api<Pod> = Api::namespaced(client_for_context(&kc, "west").await, "default");
    e.create(&PostParams::default(), &pod("only-east")).await.unwrap();
    assert_eq!(e.list(&ListParams::default()).await.unwrap().items.len(), 1);
    assert!(w.list(&ListParams::default()).await.unwrap().items.is_empty());
    assert_ne!(east.addr(), west.addr());
}

#[tokio::test]
async fn injected_failures_latency_and_offline() {
    let c = start("faults").await;
    let pods: Api<Pod> = Api::namespaced(client_without_retry(&c).await, "default");
    c.faults().fail_next(1, Failure::InternalError);
    c.faults()
        .fail_next(1, Failure::TooManyRequests { retry_after_seconds: 2 });
    c.faults()
        .fail_next(1, Failure::ServiceUnavailable { retry_after_seconds: 1 });
    let codes: Vec<(u16, String)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let s = status(pods.list(&ListParams::default()).await.unwrap_err());
            v.push((s.code, s.reason.clone()));
        }
        v
    };
    assert_eq!(
        codes,
        vec![
            (500, "InternalError".to_string()),
            (429, "TooManyRequests".to_string()),
            (503, "ServiceUnavailable".to_string())
        ]
    );
    pods.list(&ListParams::default()).await.expect("faults are used up");

    // kube-rs's default client retries 429 and 503 (and only those): it rides through them.
    let retrying: Api<Pod> = Api::namespaced(client(&c).await, "default");
    c.faults()
        .fail_next(1, Failure::TooManyRequests { retry_after_seconds: 0 });
    c.faults()
        .fail_next(1, Failure::ServiceUnavailable { retry_after_seconds: 0 });
    let before = c.faults().request_count();
    retrying
        .list(&ListParams::default())
        .await
        .expect("retried through 429 and 503");
    assert_eq!(
        c.faults().request_count() - before,
        3,
        "two failed attempts and one success"
    );

    c.faults().set_latency(Duration::from_millis(300));
    let t = Instant::now();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "latency applies");
    c.faults().set_latency(Duration::ZERO);

    c.faults().set_offline(true);
    let err = pods.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "offline is a transport error, not an API answer: {err:?}"
    );
    within("the listener to close", async {
        while std::net::TcpStream::connect(c.addr()).is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    c.faults().set_offline(false);
    within("the cluster to serve again", async {
        loop {
            if pods.list(&ListParams::default()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn kubelet_lite_runs_pods_and_computes_ready_with_gates() {
    let mut cfg = ClusterConfig::new("kubelet");
    cfg.kubelet = Some(KubeletConfig {
        ready_delay: None,
        ..Default::default()
    });
    let c = start_with(cfg).await;
    let pods: Api<Pod> = Api::namespaced(client(&c).await, "default");
    let mut p = pod_on_node("gated", "node-1");
    p.spec.as_mut().unwrap().readiness_gates = Some(vec![serde_json::from_value(
        json!({"conditionType": "sluice.dev/traffic-ready"}),
    )
    .unwrap()]);
    p.metadata.annotations = Some([(kube_sim::POD_IP_ANNOTATION.to_string(), "127.0.0.11".to_string())].into());
    pods.create(&PostParams::default(), &p).await.unwrap();

    let wait = |want: &'static str, cond: &'static str, value: Option<&'static str>| {
        let pods = pods.clone();
        async move {
            within(want, async {
                loop {
                    let p = pods.get("gated").await.unwrap();
                    if condition(&p, cond).as_deref() == value {
                        return p;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
        }
    };
    let running = wait("the pod to run", "PodScheduled", Some("True")).await;
    assert_eq!(running.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(running.status.as_ref().unwrap().pod_ip.as_deref(), Some("127.0.0.11"));
    assert_eq!(condition(&running, "Ready").as_deref(), Some("False"));

    c.kubelet()
        .unwrap()
        .set_containers_ready("default", "gated", true)
        .unwrap();
    let p = wait("ContainersReady", "ContainersReady", Some("True")).await;
    assert_eq!(
        condition(&p, "Ready").as_deref(),
        Some("False"),
        "the readiness gate is not True yet"
    );

    let gate = json!({"status": {"conditions": [{"type": "sluice.dev/traffic-ready", "status": "True"}]}});
    pods.patch_status("gated", &PatchParams::default(), &Patch::Strategic(&gate))
        .await
        .unwrap();
    wait("Ready after the gate", "Ready", Some("True")).await;

    // Deletion: containers stop, then the kubelet finishes the delete.
    pods.delete("gated", &Default::default()).await.unwrap();
    within("the kubelet to finish the delete", async {
        while pods.get_opt("gated").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn request_count_counts_every_request_watches_included() {
    let c = start("counted").await;
    let client = client(&c).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let before = c.faults().request_count();
    pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(c.faults().request_count() - before, 1, "a list");
    let stream = pods
        .watch(&kube::api::WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    assert_eq!(c.faults().request_count() - before, 2, "a watch, once it is made");
    drop(stream);
    let _ = pods.get("missing").await.unwrap_err();
    crate::common::raw(&client, "GET", "/healthz", None, "").await;
    assert_eq!(c.faults().request_count() - before, 4, "a 404 and a health probe");
    let wrong_token = c.kubeconfig().replace(c.token(), "not-the-token");
    let refused: Api<Pod> = Api::namespaced(client_for_context(&wrong_token, c.name()).await, "default");
    let _ = refused.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(c.faults().request_count() - before, 5, "a 401");
}
