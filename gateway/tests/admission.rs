//! Plain deletes and evictions: the API simulator calls the gateway's validating admission
//! webhook over HTTPS (with the configuration's CA bundle) for `DELETE pods` and
//! `CREATE pods/eviction`, exactly as kube-apiserver does; `kubectl delete` and kube-rs's
//! `evict` (what `kubectl drain` sends) go through it. A kubelet-like harness stops a pod's
//! server as soon as its delete is admitted.

use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams, PostParams};
use serde_json::json;
use sluice::demo::Stage;

mod support;
use support::*;

const T: Duration = Duration::from_secs(60);

struct Setup {
    stage: Stage,
    gw: sluice::gateway::Gateway,
    /// The CA of the webhook's serving certificate.
    ca_pem: String,
}

/// A stage of two serving pods, a gateway with the webhook on (`admission` YAML lines
/// after `listen`, `certFile` and `keyFile`), and the webhook configuration installed with
/// `failurePolicy`.
async fn setup(admission: &str, failure_policy: &str) -> Setup {
    let stage = Stage::new(2, true).await.expect("stage");
    let issued = kube_sim::tls::issue(&["127.0.0.1"]).unwrap();
    let (cert, key) = (stage.dir.join("webhook.crt"), stage.dir.join("webhook.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let text = stage.gateway_config_text(free_addr())
        + &format!(
            "admission:\n  listen: 127.0.0.1:0\n  certFile: {}\n  keyFile: {}\n{admission}",
            cert.display(),
            key.display()
        );
    let gw = stage.start_gateway_with(&text).await.expect("gateway");
    let url = format!("https://{}/validate/demo", gw.admission_addr.unwrap());
    install(&stage, &url, &issued.ca_pem, failure_policy).await;
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    Setup {
        stage,
        gw,
        ca_pem: issued.ca_pem,
    }
}

/// POSTs an AdmissionReview to the webhook over TLS (presenting `client`, a certificate and
/// key in PEM, when given); `None` when the TLS handshake or the exchange fails.
async fn post_review(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<(&str, &str)>,
    review: &serde_json::Value,
) -> Option<serde_json::Value> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.ok()?).ok()?;
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?,
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).ok()?,
            )
            .ok()?,
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?, tcp)
        .await
        .ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::post("/validate/demo")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(review.to_string())))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// The configuration `deploy/` ships, pointed at `url`: deletes of any pod, evictions with
/// no objectSelector (the Eviction's labels are not the pod's).
async fn install(stage: &Stage, url: &str, ca_pem: &str, failure_policy: &str) {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let hook = |name: &str, op: &str, resource: &str| {
        json!({
            "name": name,
            "clientConfig": {"url": url, "caBundle": ca},
            "rules": [{"operations": [op], "apiGroups": [""], "apiVersions": ["v1"], "resources": [resource]}],
            "failurePolicy": failure_policy,
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 30,
        })
    };
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "sluice-gateway"},
        "webhooks": [hook("pods.sluice.dev", "DELETE", "pods"), hook("evictions.sluice.dev", "CREATE", "pods/eviction")]
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(stage.client.clone())
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
}

/// `kubectl delete pod NAME --wait=false` against the stage: (exit ok, stdout + stderr).
async fn kubectl_delete(stage: &Stage, name: &str) -> (bool, String) {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&stage.kubeconfig)
        .args(["delete", "pod", name, "--wait=false"])
        .output()
        .await
        .expect("kubectl runs (scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn raw_pods(stage: &Stage) -> Api<Pod> {
    let mut cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&stage.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    cfg.default_retry = false;
    Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default")
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_delete_is_admitted_only_after_the_drain_and_loses_nothing() {
    let Setup { mut stage, gw, .. } = setup("", "Fail").await;
    let load = sluice::demo::load::Load::start(stage.frontend, 4);
    let held = hold_timed(stage.frontend, 4, 1500).await;
    until("web-1 to hold a request", || async {
        let s = stage.haproxy().show_stat_servers("web").await.ok()?;
        s.iter().any(|r| r.svname() == "web-1" && r.scur() > 0).then_some(())
    })
    .await;
    let (ok, said) = within("kubectl delete", kubectl_delete(&stage, "web-1")).await;
    let admitted = Instant::now();
    assert!(ok, "{said}");
    assert!(
        said.contains("traffic verified drained in"),
        "kubectl shows the warning: {said}"
    );
    // The kubelet stops the pod's server at once.
    stage.backends[0].take();
    let web1 = stage.ips[0].to_string();
    let mut on_web1 = 0;
    for h in held {
        let h = within("a held request", h).await.unwrap();
        assert_eq!(h.status, 200);
        if h.served_by == web1 {
            on_web1 += 1;
            assert!(
                h.done <= admitted,
                "the delete was admitted before web-1's requests finished"
            );
        }
    }
    assert!(on_web1 > 0, "web-1 held some of the requests");
    // Drained, so nothing holds it: an unscheduled pod goes at once.
    assert!(stage
        .pods
        .get_opt("web-1")
        .await
        .unwrap()
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (requests, failed) = load.finish().await;
    assert!(requests > 20, "{requests}");
    assert_eq!(failed, 0, "no request lost of {requests}");

    // A pod Sluice does not manage passes at once, with nothing written.
    let other: Pod = serde_json::from_value(json!({
        "metadata": {"name": "batch-1", "labels": {"app": "batch"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    stage.pods.create(&PostParams::default(), &other).await.unwrap();
    until("the gateway to see batch-1", || async {
        gw.engine.pods.iter().any(|p| p.name == "batch-1").then_some(())
    })
    .await;
    let started = Instant::now();
    let (ok, said) = kubectl_delete(&stage, "batch-1").await;
    assert!(ok, "{said}");
    assert!(!said.contains("sluice"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // With the gateway gone, failurePolicy Fail refuses the delete of a bound pod — the
    // documented behaviour: deletes wait for the gateway rather than lose traffic.
    drop(gw);
    let (ok, said) = kubectl_delete(&stage, "web-2").await;
    assert!(!ok, "{said}");
    assert!(said.contains("failed calling webhook \"pods.sluice.dev\""), "{said}");
    assert!(stage.get(1).await.unwrap().metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_that_cannot_drain_in_time_is_refused_then_admitted_when_retried() {
    let Setup { stage, gw: _gw, .. } = setup("  holdSeconds: 1\n", "Fail").await;
    let raw = raw_pods(&stage).await;
    // Sessions of three seconds: the drain cannot finish within the one-second hold.
    let held = hold_in_web(&stage, 4, 3000).await;
    let started = Instant::now();
    let (code, message) = api_error(raw.evict("web-1", &EvictParams::default()).await.unwrap_err());
    assert_eq!(code, 429, "{message}");
    assert!(
        message.starts_with("admission webhook \"evictions.sluice.dev\" denied the request: sluice: pod default/web-1 cannot be evicted yet"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "held about a second");
    let p = stage.get(0).await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_none(), "not evicted");
    assert_eq!(gate(&p).as_deref(), Some("False"), "but draining");
    // On the request of whom, for what, until when.
    let request: serde_json::Value =
        serde_json::from_str(&p.metadata.annotations.unwrap()["sluice.dev/drain-request"]).unwrap();
    assert_eq!(request["why"], "eviction");
    assert!(request["by"].as_str().is_some_and(|u| !u.is_empty()), "{request}");
    assert!(request["until"].as_str().is_some(), "{request}");
    // A plain delete is refused the same way (onDeleteTimeout: Deny, the default).
    let (code, message) = api_error(raw.delete("web-1", &Default::default()).await.unwrap_err());
    assert_eq!(code, 429);
    assert!(message.contains("delete again once it is drained"), "{message}");
    for h in held {
        within("a held request", h).await.unwrap().expect("answered");
    }
    stage.wait_drained(0, T).await.unwrap();
    // The retry (kubectl drain retries every few seconds) is admitted at once.
    let started = Instant::now();
    raw.evict("web-1", &EvictParams::default()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(stage.get(0).await.unwrap().metadata.deletion_timestamp.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_eviction_never_retried_lets_the_pod_serve_again() {
    let Setup { stage, gw: _gw, .. } = setup("  holdSeconds: 1\n  requestSeconds: 3\n", "Fail").await;
    let raw = raw_pods(&stage).await;
    let held = hold_in_web(&stage, 4, 1500).await;
    let (code, _) = api_error(raw.evict("web-1", &EvictParams::default()).await.unwrap_err());
    assert_eq!(code, 429);
    for h in held {
        within("a held request", h).await.unwrap().expect("answered");
    }
    stage.wait_drained(0, T).await.unwrap();
    // Nobody evicts it: when the request lapses the pod is restored.
    wait_gate(&stage.pods, "web-1", "True").await;
    assert!(stage.get(0).await.unwrap().metadata.deletion_timestamp.is_none());
    assert_eq!(
        stage.status_in("web", 0).await.unwrap().as_deref(),
        Some("UP"),
        "back in HAProxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_allow_a_delete_that_cannot_drain_in_time_is_admitted_with_a_warning() {
    let Setup { stage, gw: _gw, .. } = setup("  holdSeconds: 1\n  onDeleteTimeout: Allow\n", "Fail").await;
    let held = hold_in_web(&stage, 4, 3000).await;
    let (ok, said) = kubectl_delete(&stage, "web-1").await;
    assert!(ok, "{said}");
    assert!(
        said.contains("deleted before its traffic was verified drained"),
        "{said}"
    );
    assert!(stage.get(0).await.unwrap().metadata.deletion_timestamp.is_some());
    // Terminating now (its finalizers hold it while it drains): holding another delete
    // (the kubelet's last one, a repeat) would protect nothing, so it passes at once.
    let started = Instant::now();
    let (ok, said) = kubectl_delete(&stage, "web-1").await;
    assert!(ok, "{said}");
    assert!(!said.contains("sluice"), "{said}");
    assert!(started.elapsed() < Duration::from_millis(900), "not held");
    for h in held {
        within("a held request", h).await.unwrap().expect("answered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_webhook_the_same_delete_loses_the_requests_in_flight() {
    // The control: the harness does see loss. No webhook configuration, same delete.
    let mut stage = Stage::new(2, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    let held = hold_timed(stage.frontend, 4, 1500).await;
    until("web-1 to hold a request", || async {
        let s = stage.haproxy().show_stat_servers("web").await.ok()?;
        s.iter().any(|r| r.svname() == "web-1" && r.scur() > 0).then_some(())
    })
    .await;
    let (ok, said) = kubectl_delete(&stage, "web-1").await;
    assert!(ok, "{said}");
    stage.backends[0].take();
    let mut lost = 0;
    for h in held {
        if let Ok(Ok(h)) = tokio::time::timeout(T, h).await {
            lost += usize::from(h.status != 200);
        } else {
            lost += 1;
        }
    }
    assert!(
        lost > 0,
        "the requests web-1 held are lost when its server stops at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_callers_with_its_certificate_are_answered() {
    let client = kube_sim::tls::issue(&["kube-apiserver"]).unwrap();
    let stage_ca = sluice_adapter::testing::temp_dir("client-ca").join("ca.pem");
    std::fs::write(&stage_ca, &client.ca_pem).unwrap();
    let Setup { stage, gw, ca_pem } = setup(&format!("  clientCAFile: {}\n", stage_ca.display()), "Fail").await;
    let addr = gw.admission_addr.unwrap();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": "DELETE", "name": "web-1", "namespace": "default",
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "userInfo": {"username": "mallory"}, "dryRun": false}});
    // Anyone else — here the simulated API server, which sends no certificate — gets no
    // answer: with failurePolicy Fail the delete is refused, and nothing was written.
    assert!(post_review(addr, &ca_pem, None, &review).await.is_none());
    let (ok, said) = kubectl_delete(&stage, "web-1").await;
    assert!(!ok && said.contains("failed calling webhook"), "{said}");
    let p = stage.get(0).await.unwrap();
    assert!(!p
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("sluice.dev/drain-request"));
    // A caller with the CA's certificate is answered (a dry run: nothing written).
    let mut dry = review.clone();
    dry["request"]["dryRun"] = json!(true);
    let answer = post_review(addr, &ca_pem, Some((&client.cert_pem, &client.key_pem)), &dry)
        .await
        .expect("answered");
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(
        answer["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("would first drain"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_its_disruption_budget_refuses_does_not_drain_the_pod() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let Setup { stage, gw: _gw, .. } = setup("", "Fail").await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(stage.client.clone(), "default");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    budgets.create(&PostParams::default(), &pdb).await.unwrap();
    let status = json!({"status": {"disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2,
                                   "expectedPods": 2, "observedGeneration": 1}});
    budgets
        .patch_status("web", &Default::default(), &kube::api::Patch::Merge(&status))
        .await
        .unwrap();
    let raw = raw_pods(&stage).await;
    let started = Instant::now();
    let (code, message) = api_error(raw.evict("web-1", &EvictParams::default()).await.unwrap_err());
    assert_eq!(code, 429, "{message}");
    assert!(
        message.contains("PodDisruptionBudget web allows no disruption now"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once");
    // Nothing was drained or written: the pod serves on.
    let p = stage.get(0).await.unwrap();
    assert_eq!(gate(&p).as_deref(), Some("True"));
    assert!(!p
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("sluice.dev/drain-request"));
    assert_eq!(stage.status_in("web", 0).await.unwrap().as_deref(), Some("UP"));
}
