//! Validating admission webhooks for pod deletes and evictions, called over HTTPS with the
//! configuration's CA bundle, as kube-apiserver calls them.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams, PostParams};
use serde_json::{json, Value};

use crate::common::*;

type Answer = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// An HTTPS webhook server on 127.0.0.1: records every AdmissionReview it gets and answers
/// with `answer(request)` as the review's `response` (its `uid` filled in).
struct Hook {
    url: String,
    ca_b64: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hook {
    async fn start(answer: Answer) -> Hook {
        Hook::start_with(answer, None).await
    }

    /// `client_ca`: only callers with a certificate from this CA (PEM) get an answer.
    async fn start_with(answer: Answer, client_ca: Option<&str>) -> Hook {
        let issued = kube_sim::tls::issue(&["127.0.0.1"]).unwrap();
        let certs: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(issued.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap(),
                )
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let recorded = reviews.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, answer, recorded) = (acceptor.clone(), answer.clone(), recorded.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (answer, recorded) = (answer.clone(), recorded.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let review: Value = serde_json::from_slice(&body).unwrap();
                            recorded.lock().unwrap().push(review.clone());
                            let mut response = answer(&review["request"]);
                            response["uid"] = review["request"]["uid"].clone();
                            let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                             "response": response});
                            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(out.to_string()),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Hook {
            url: format!("https://{addr}/validate"),
            ca_b64: base64::engine::general_purpose::STANDARD.encode(issued.ca_pem),
            reviews,
            task,
        }
    }

    fn reviews(&self) -> Vec<Value> {
        self.reviews.lock().unwrap().clone()
    }
}

fn config(name: &str, url: &str, ca_b64: &str, failure_policy: &str, webhooks_extra: Value) -> Value {
    let mut hook = json!({
        "name": "pods.sluice.example.com",
        "clientConfig": {"url": url, "caBundle": ca_b64},
        "rules": [{"operations": ["DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
                  {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/eviction"]}],
        "failurePolicy": failure_policy,
        "sideEffects": "NoneOnDryRun",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 2,
    });
    if let (Some(h), Some(extra)) = (hook.as_object_mut(), webhooks_extra.as_object()) {
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
           "metadata": {"name": name}, "webhooks": [hook]})
}

async fn install(cluster: &kube_sim::Cluster, v: Value) -> Result<ValidatingWebhookConfiguration, kube::Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client(cluster).await);
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
}

async fn pod(pods: &Api<Pod>, name: &str) {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
}

/// Pods of `default` through a client that does not retry 429s, to see the raw answers.
async fn raw_pods(cluster: &kube_sim::Cluster) -> Api<Pod> {
    Api::namespaced(client_without_retry(cluster).await, "default")
}

/// Installs the usual configuration (`Fail`, no selectors) pointing at `hook`.
async fn install_for(cluster: &kube_sim::Cluster, hook: &Hook) {
    install(
        cluster,
        config("sluice.example.com", &hook.url, &hook.ca_b64, "Fail", json!({})),
    )
    .await
    .unwrap();
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn webhook_configurations_are_validated_and_defaulted() {
    let cluster = start("admission-validate").await;
    let hook = Hook::start(Arc::new(|_| json!({"allowed": true}))).await;
    let plain = config(
        "plain.example.com",
        "http://127.0.0.1:1/x",
        &hook.ca_b64,
        "Fail",
        json!({}),
    );
    let (code, reason, message) = api_error(install(&cluster, plain).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("webhooks[0].clientConfig.url"), "{message}");
    let mut no_side_effects = config("x.example.com", &hook.url, &hook.ca_b64, "Fail", json!({}));
    no_side_effects["webhooks"][0]
        .as_object_mut()
        .unwrap()
        .remove("sideEffects");
    let (code, _, message) = api_error(install(&cluster, no_side_effects).await.unwrap_err());
    assert_eq!(code, 422);
    // k8s-openapi sends the required string as "" (a Go pointer to ""): not supported.
    assert!(
        message.contains("webhooks[0].sideEffects: Unsupported value: \"\""),
        "{message}"
    );
    let mut defaults = config("d.example.com", &hook.url, &hook.ca_b64, "Fail", json!({}));
    let h = defaults["webhooks"][0].as_object_mut().unwrap();
    h.remove("failurePolicy");
    h.remove("timeoutSeconds");
    let created = install(&cluster, defaults).await.unwrap();
    let w = &created.webhooks.unwrap()[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(w.timeout_seconds, Some(10));
    assert_eq!(w.match_policy.as_deref(), Some("Equivalent"));
}

#[tokio::test]
async fn a_delete_and_an_eviction_are_reviewed_and_a_denial_is_the_answer() {
    let cluster = start("admission-deny").await;
    let pods = default_pods(&cluster).await;
    pod(&pods, "web-1").await;
    // Denies everything, with the code and message an eviction client retries on.
    let hook = Hook::start(Arc::new(|_| {
        json!({"allowed": false, "status": {"code": 429, "reason": "TooManyRequests", "message": "draining, retry"}})
    }))
    .await;
    install_for(&cluster, &hook).await;
    let raw = raw_pods(&cluster).await;
    let (code, reason, message) = api_error(raw.delete("web-1", &DeleteParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        message,
        "admission webhook \"pods.sluice.example.com\" denied the request: draining, retry"
    );
    let (code, _, _) = api_error(raw.evict("web-1", &EvictParams::default()).await.unwrap_err());
    assert_eq!(code, 429);
    assert!(pods.get("web-1").await.is_ok(), "nothing deleted");
    let reviews = hook.reviews();
    assert_eq!(reviews.len(), 2);
    let delete = &reviews[0]["request"];
    assert_eq!(reviews[0]["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(delete["operation"], "DELETE");
    assert_eq!(delete["kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
    assert_eq!(delete["oldObject"]["metadata"]["name"], "web-1");
    assert!(delete["object"].is_null());
    assert_eq!(delete["options"]["kind"], "DeleteOptions");
    assert!(delete["userInfo"]["username"].as_str().is_some_and(|u| !u.is_empty()));
    let eviction = &reviews[1]["request"];
    assert_eq!(eviction["operation"], "CREATE");
    assert_eq!(eviction["subResource"], "eviction");
    assert_eq!(eviction["resource"]["resource"], "pods");
    assert_eq!(eviction["kind"]["kind"], "Eviction");
    assert_eq!(eviction["object"]["metadata"]["name"], "web-1");
    assert_eq!(eviction["name"], "web-1");
    assert_eq!(eviction["namespace"], "default");
}

#[tokio::test]
async fn an_allowed_eviction_deletes_the_pod() {
    let cluster = start("admission-allow").await;
    let pods = default_pods(&cluster).await;
    pod(&pods, "web-1").await;
    let hook = Hook::start(Arc::new(|_| json!({"allowed": true}))).await;
    install_for(&cluster, &hook).await;
    let status = pods.evict("web-1", &EvictParams::default()).await.unwrap();
    assert_eq!(status.code, 201);
    within("the evicted pod to go", async {
        while pods
            .get_opt("web-1")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    // An eviction for a pod that does not exist is 404, before any webhook.
    let (code, _, _) = api_error(pods.evict("nope", &EvictParams::default()).await.unwrap_err());
    assert_eq!(code, 404);
    assert_eq!(hook.reviews().len(), 1);
}

#[tokio::test]
async fn an_object_selector_sees_the_pods_labels_on_delete_but_the_evictions_on_eviction() {
    let cluster = start("admission-selector").await;
    let pods = default_pods(&cluster).await;
    pod(&pods, "web-1").await;
    pod(&pods, "web-2").await;
    let hook = Hook::start(Arc::new(
        |_| json!({"allowed": false, "status": {"code": 403, "message": "no"}}),
    ))
    .await;
    let selected = json!({"objectSelector": {"matchLabels": {"app": "web"}}});
    install(
        &cluster,
        config("sluice.example.com", &hook.url, &hook.ca_b64, "Fail", selected),
    )
    .await
    .unwrap();
    let raw = raw_pods(&cluster).await;
    assert_eq!(
        api_error(raw.delete("web-1", &DeleteParams::default()).await.unwrap_err()).0,
        403
    );
    // The Eviction carries no labels: the webhook is not called and the pod goes
    // (kubernetes#110169) — why the gateway's manifests put no objectSelector on evictions.
    raw.evict("web-2", &EvictParams::default()).await.unwrap();
    assert_eq!(hook.reviews().len(), 1);
}

#[tokio::test]
async fn failure_policy_decides_when_the_webhook_cannot_be_called() {
    let cluster = start("admission-down").await;
    let pods = default_pods(&cluster).await;
    pod(&pods, "web-1").await;
    pod(&pods, "web-2").await;
    let hook = Hook::start(Arc::new(|_| json!({"allowed": true}))).await;
    let (url, ca) = (hook.url.clone(), hook.ca_b64.clone());
    drop(hook);
    install(&cluster, config("a.example.com", &url, &ca, "Fail", json!({})))
        .await
        .unwrap();
    let raw = raw_pods(&cluster).await;
    let (code, reason, message) = api_error(raw.delete("web-1", &DeleteParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    assert!(
        message.starts_with(
            "Internal error occurred: failed calling webhook \"pods.sluice.example.com\": failed to call webhook: Post"
        ),
        "{message}"
    );
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client(&cluster).await);
    configs.delete("a.example.com", &DeleteParams::default()).await.unwrap();
    install(&cluster, config("b.example.com", &url, &ca, "Ignore", json!({})))
        .await
        .unwrap();
    raw.delete("web-2", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_server_outside_the_ca_bundle_is_a_failed_call() {
    let cluster = start("admission-ca").await;
    let pods = default_pods(&cluster).await;
    pod(&pods, "web-1").await;
    let hook = Hook::start(Arc::new(|_| json!({"allowed": true}))).await;
    let other = Hook::start(Arc::new(|_| json!({"allowed": true}))).await;
    // The URL of one, the CA of the other.
    install(
        &cluster,
        config("a.example.com", &hook.url, &other.ca_b64, "Fail", json!({})),
    )
    .await
    .unwrap();
    let raw = raw_pods(&cluster).await;
    let (code, _, message) = api_error(raw.delete("web-1", &DeleteParams::default()).await.unwrap_err());
    assert_eq!(code, 500, "{message}");
    assert!(hook.reviews().is_empty());
}

#[tokio::test]
async fn validating_webhooks_are_all_called_even_when_one_denies() {
    let cluster = start("admission-parallel").await;
    let pods = default_pods(&cluster).await;
    pod(&pods, "web-1").await;
    let deny = Hook::start(Arc::new(
        |_| json!({"allowed": false, "status": {"message": "no", "reason": "Sluice"}}),
    ))
    .await;
    let allow = Hook::start(Arc::new(|_| json!({"allowed": true}))).await;
    install(
        &cluster,
        config("a.example.com", &deny.url, &deny.ca_b64, "Fail", json!({})),
    )
    .await
    .unwrap();
    let mut second = config("b.example.com", &allow.url, &allow.ca_b64, "Fail", json!({}));
    second["webhooks"][0]["name"] = json!("other.sluice.example.com");
    install(&cluster, second).await.unwrap();
    let raw = raw_pods(&cluster).await;
    let (code, reason, message) = api_error(raw.delete("web-1", &DeleteParams::default()).await.unwrap_err());
    // Code 0 becomes 400; an unknown reason is passed through as sent.
    assert_eq!((code, reason.as_str()), (400, "Sluice"));
    assert_eq!(
        message,
        "admission webhook \"pods.sluice.example.com\" denied the request: no"
    );
    assert_eq!(
        allow.reviews().len(),
        1,
        "called in parallel, not skipped after the denial"
    );
}

#[tokio::test]
async fn a_webhook_that_requires_a_client_certificate_gets_the_configured_one() {
    let client = kube_sim::tls::issue(&["kube-apiserver"]).unwrap();
    let hook = Hook::start_with(Arc::new(|_| json!({"allowed": true})), Some(&client.ca_pem)).await;
    // Without one (the API server's default), the call fails: failurePolicy decides.
    let anonymous = start("admission-anonymous").await;
    let pods = default_pods(&anonymous).await;
    pod(&pods, "web-1").await;
    install(
        &anonymous,
        config("a.example.com", &hook.url, &hook.ca_b64, "Fail", json!({})),
    )
    .await
    .unwrap();
    let raw = raw_pods(&anonymous).await;
    assert_eq!(
        api_error(raw.delete("web-1", &DeleteParams::default()).await.unwrap_err()).0,
        500
    );
    assert!(hook.reviews().is_empty());
    // With the AdmissionConfiguration's certificate, it answers.
    let mut cfg = kube_sim::ClusterConfig::new("admission-mtls");
    cfg.webhook_client_cert =
        Some(kube_sim::admission::ClientCert::from_pem(&client.cert_pem, &client.key_pem).unwrap());
    let cluster = start_with(cfg).await;
    let pods = default_pods(&cluster).await;
    pod(&pods, "web-1").await;
    install(
        &cluster,
        config("a.example.com", &hook.url, &hook.ca_b64, "Fail", json!({})),
    )
    .await
    .unwrap();
    pods.delete("web-1", &DeleteParams::default()).await.unwrap();
    assert_eq!(hook.reviews().len(), 1);
}

async fn running_pod(pods: &Api<Pod>, name: &str) {
    let mut p = pod_on_node(name, "node-1");
    p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    within("the pod to be Ready", async {
        loop {
            let p = pods.get(name).await.unwrap();
            let ready = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_eviction_honours_the_pods_disruption_budget_after_admission() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let mut cfg = kube_sim::ClusterConfig::new("admission-pdb");
    cfg.kubelet = Some(kube_sim::KubeletConfig::default());
    let cluster = start_with(cfg).await;
    let pods = default_pods(&cluster).await;
    running_pod(&pods, "web-1").await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client(&cluster).await, "default");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    budgets.create(&PostParams::default(), &pdb).await.unwrap();
    // No disruption controller: the test writes the status it would.
    let set = |allowed: i32| {
        let budgets = budgets.clone();
        async move {
            let status = json!({"status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1,
                                           "expectedPods": 1, "observedGeneration": 1}});
            budgets
                .patch_status("web", &Default::default(), &kube::api::Patch::Merge(&status))
                .await
                .unwrap();
        }
    };
    set(0).await;
    // Admission runs first (the webhook sees the eviction), then the budget refuses it.
    let hook = Hook::start(Arc::new(|_| json!({"allowed": true}))).await;
    install_for(&cluster, &hook).await;
    let raw = raw_pods(&cluster).await;
    let (code, reason, message) = api_error(raw.evict("web-1", &EvictParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        hook.reviews().len(),
        1,
        "the webhook was called before the budget said no"
    );
    assert!(pods.get("web-1").await.unwrap().metadata.deletion_timestamp.is_none());
    // With a disruption allowed, the eviction takes it.
    set(1).await;
    raw.evict("web-1", &EvictParams::default()).await.unwrap();
    let left = budgets.get("web").await.unwrap().status.unwrap().disruptions_allowed;
    assert_eq!(left, 0);
}
