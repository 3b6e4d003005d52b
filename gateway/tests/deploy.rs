//! The deployment: `deploy/` renders with `kubectl kustomize` and validates strictly
//! against the Kubernetes schemas (offline, `kubernetes-validate` from PyPI); it holds the
//! CRD `sluice crd` prints and a configuration the gateway accepts; the examples are valid;
//! and the RBAC rules allow every request the gateway really makes — recorded by the
//! simulator under the gateway's own user during a drain, a restore, an invalid binding and
//! leader election — and nothing is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sluice::demo::{Stage, GATEWAY_USER};
use sluice_adapter::testing::output_within;

mod support;
use support::*;

const T: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn render() -> String {
    let out = output_within(
        Command::new("kubectl").arg("kustomize").arg(root().join("deploy")),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubernetes-validate --strict` on the files: (passed, output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let python = sluice_adapter::testing::python_with_grpc();
    let out = output_within(
        Command::new(python)
            .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
            .args(files),
        Duration::from_secs(120),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named"),
        "kubernetes-validate is not installed in {:?}: scripts/test.sh installs it",
        std::env::var("SLUICE_PYTHON")
    );
    (out.status.success(), text)
}

#[test]
fn the_manifests_render_and_validate_strictly() {
    let rendered = render();
    let dir = sluice_adapter::testing::temp_dir("deploy");
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let (ok, text) = validate(&[file]);
    assert!(ok, "{text}");
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(
            text.contains(&format!("resource {}/", kind.to_lowercase())),
            "{kind} validated: {text}"
        );
    }
    // The validator is strict: an unknown field fails it.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        rendered.replacen("minAvailable: 1", "minAvailable: 1\n  minAvialable: 1", 1),
    )
    .unwrap();
    let (ok, text) = validate(&[bad]);
    assert!(!ok && text.contains("minAvialable"), "{text}");

    // The examples' workloads too (CloneSets and TrafficBindings are custom resources: the
    // bindings are checked against the gateway's own rules below).
    let (ok, text) = validate(&[
        root().join("examples/deployment/deployment.yaml"),
        root().join("examples/statefulset/statefulset.yaml"),
    ]);
    assert!(ok, "{text}");
}

#[test]
fn deploy_holds_the_crd_and_a_configuration_the_gateway_accepts() {
    let crd = std::fs::read_to_string(root().join("deploy/crd.yaml")).unwrap();
    assert_eq!(
        crd,
        sluice::binding::crd_yaml(),
        "deploy/crd.yaml is `sluice crd` (regenerate: sluice crd > deploy/crd.yaml)"
    );
    let cfg = sluice::config::Config::load(&root().join("deploy/sluice.yaml")).expect("deploy/sluice.yaml");
    let le = cfg.leader_election.expect("two replicas need leader election");
    // The Role in rbac.yaml grants leases in the gateway's namespace only.
    assert_eq!(le.namespace, "sluice");
    let rendered = render();
    assert!(rendered.contains("replicas: 2"));
    assert!(rendered.contains("terminationGracePeriodSeconds: 30"));
    assert!(cfg.engine.shutdown_seconds < 30, "shutdown fits the grace period");
}

/// The rendered objects of one kind.
fn rendered_of(kind: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let rendered = render();
    serde_yaml::Deserializer::from_str(&rendered)
        .filter_map(|d| serde_json::Value::deserialize(d).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn the_webhook_manifests_fit_the_gateway() {
    let cfg = sluice::config::Config::load(&root().join("deploy/sluice.yaml")).unwrap();
    let admission = cfg.admission.expect("deploy/sluice.yaml turns the webhook on");
    let cluster = &cfg.clusters[0].name;
    let hooks = rendered_of("ValidatingWebhookConfiguration");
    assert_eq!(hooks.len(), 1);
    let webhooks = hooks[0]["webhooks"].as_array().unwrap();
    let service = &rendered_of("Service")[0];
    let deployment = &rendered_of("Deployment")[0];
    let container_ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    let webhook_port = container_ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webhook")
        .expect("a webhook container port");
    assert_eq!(webhook_port["containerPort"], admission.listen.port());
    for w in webhooks {
        let svc = &w["clientConfig"]["service"];
        assert_eq!(svc["path"], format!("/validate/{cluster}"), "{w}");
        assert_eq!(svc["name"], service["metadata"]["name"]);
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == svc["port"])
            .expect("the Service exposes the webhook's port");
        assert_eq!(port["targetPort"], "webhook");
        let timeout = w["timeoutSeconds"].as_u64().unwrap();
        assert!(
            admission.hold_seconds < timeout,
            "the hold ends before the API server gives up"
        );
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["sideEffects"], "NoneOnDryRun");
        assert_eq!(
            w["namespaceSelector"]["matchLabels"]["sluice.dev/admission"], "enabled",
            "opt-in per namespace"
        );
    }
    let eviction = webhooks
        .iter()
        .find(|w| w["rules"][0]["resources"][0] == "pods/eviction")
        .expect("a webhook for evictions");
    assert!(
        eviction.get("objectSelector").is_none(),
        "an objectSelector on pods/eviction matches the Eviction's labels, not the pod's"
    );
    // cert-manager: the CA injected from the Certificate whose Secret the gateway mounts,
    // valid for the Service's name.
    let certificate = &rendered_of("Certificate")[0];
    let inject = hooks[0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        .as_str()
        .unwrap();
    assert_eq!(
        inject,
        format!(
            "{}/{}",
            certificate["metadata"]["namespace"].as_str().unwrap(),
            certificate["metadata"]["name"].as_str().unwrap()
        )
    );
    let secret = certificate["spec"]["secretName"].as_str().unwrap();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().any(|v| v["secret"]["secretName"] == secret),
        "{volumes:?}"
    );
    let dns = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    assert!(
        certificate["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == &dns),
        "the certificate names {dns}"
    );
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        rendered_of("Issuer")[0]["metadata"]["name"]
    );
}

#[tokio::test]
async fn the_webhook_configuration_is_accepted_by_the_api_server() {
    // The simulator validates webhook configurations as kube-apiserver does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = kube_sim::Cluster::start(kube_sim::ClusterConfig::new("deploy-webhook"))
        .await
        .unwrap();
    let api = cluster
        .api("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations")
        .unwrap();
    let hook = rendered_of("ValidatingWebhookConfiguration").remove(0);
    let created = api.create("", hook).expect("accepted");
    assert_eq!(created["webhooks"][1]["matchPolicy"], "Equivalent");
}

/// An adapter that only states its kind and parameters: what binding validation asks.
#[derive(Debug)]
struct Declared(&'static str, &'static str, &'static str);

#[async_trait::async_trait]
impl sluice_adapter::Adapter for Declared {
    fn name(&self) -> &str {
        self.0
    }
    fn capabilities(&self) -> sluice_adapter::Capabilities {
        sluice_adapter::Capabilities {
            kind: self.1.into(),
            required_params: vec![self.2.into()],
            shared_reads: false,
        }
    }
    async fn register(&self, _: &sluice_adapter::Target) -> sluice_adapter::Result<()> {
        unreachable!("validation only")
    }
    async fn deregister(&self, _: &sluice_adapter::Target) -> sluice_adapter::Result<()> {
        unreachable!("validation only")
    }
    async fn observe(&self, _: &sluice_adapter::Target) -> sluice_adapter::Result<sluice_adapter::Observation> {
        unreachable!("validation only")
    }
    async fn health(&self) -> sluice_adapter::Result<()> {
        unreachable!("validation only")
    }
}

#[test]
fn the_example_bindings_are_valid() {
    let adapters: BTreeMap<String, Arc<dyn sluice_adapter::Adapter>> = [
        Declared("edge-lb", "slb", "backend"),
        Declared("corp-dns", "dns", "name"),
        Declared("registry", "rpc", "service"),
    ]
    .into_iter()
    .map(|a| (a.0.to_string(), Arc::new(a) as Arc<dyn sluice_adapter::Adapter>))
    .collect();
    for dir in ["kruise-cloneset", "deployment", "statefulset"] {
        let text = std::fs::read_to_string(root().join("examples").join(dir).join("binding.yaml")).unwrap();
        let tb: sluice::binding::TrafficBinding = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{dir}: {e}"));
        sluice::model::resolve("c", &tb, &adapters, 300).unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
}

/// One RBAC rule of deploy/rbac.yaml.
#[derive(Debug)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    /// `Some(ns)`: a Role's rule, in that namespace only.
    namespace: Option<String>,
}

fn rules() -> Vec<Rule> {
    let text = std::fs::read_to_string(root().join("deploy/rbac.yaml")).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = <serde_json::Value as serde::Deserialize>::deserialize(doc).unwrap();
        let namespace = match v["kind"].as_str() {
            Some("ClusterRole") => None,
            // The kustomization puts every namespaced object in `sluice`.
            Some("Role") => Some("sluice".to_string()),
            _ => continue,
        };
        let strings = |x: &serde_json::Value| -> Vec<String> {
            x.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        for r in v["rules"].as_array().unwrap() {
            out.push(Rule {
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                namespace: namespace.clone(),
            });
        }
    }
    out
}

/// (group, resource[/subresource], verb, namespace) of a request, as RBAC sees it.
fn attributes(method: &str, uri: &str) -> (String, String, String, Option<String>) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _v, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", g, _v, rest @ ..] => (g.to_string(), rest.to_vec()),
        _ => panic!("not an API path: {uri}"),
    };
    let (namespace, rest) = match rest.as_slice() {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest.to_vec()),
        _ => (None, rest),
    };
    let (resource, named) = match rest.as_slice() {
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub] => (format!("{r}/{sub}"), true),
        _ => panic!("unexpected path: {uri}"),
    };
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => panic!("unexpected method {method} {uri}"),
    };
    (group, resource, verb.to_string(), namespace)
}

fn allowed(rules: &[Rule], (group, resource, verb, namespace): &(String, String, String, Option<String>)) -> bool {
    rules.iter().any(|r| {
        r.groups.contains(group)
            && r.resources.contains(resource)
            && r.verbs.contains(verb)
            && (r.namespace.is_none() || r.namespace == *namespace)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_allows_every_request_the_gateway_makes() {
    let stage = Stage::new(2, true).await.expect("stage");
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(stage.client.clone());
    namespaces
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "sluice"}})).unwrap(),
        )
        .await
        .unwrap();
    let faults = stage.cluster().faults();
    faults.set_recording(true);
    let lease = "leaderElection:\n  namespace: sluice\n  leaseSeconds: 3\n  renewDeadlineMs: 2000\n  retryMs: 200\n";
    let health = free_addr();
    let issued = kube_sim::tls::issue(&["127.0.0.1"]).unwrap();
    let (cert, key) = (stage.dir.join("webhook.crt"), stage.dir.join("webhook.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let admission = format!(
        "admission:\n  listen: 127.0.0.1:0\n  certFile: {}\n  keyFile: {}\n  holdSeconds: 1\n",
        cert.display(),
        key.display()
    );
    let api = "api:\n  listen: 127.0.0.1:0\n  insecure: true\n  tokenReview: {}\n  rules:\n  - users: ['*']\n    verbs: ['*']\n    namespaces: ['*']\ntenants:\n  haproxy:\n  - namespaces: ['*']\n    names: ['*']\n    endpoints: [127.0.0.0/24]\n";
    let text = stage.gateway_config_yaml(health, "", "  instance: gw-rbac\n").replace(
        &format!("  health: {health}\n"),
        &format!("  health: {health}\n  prestop: 127.0.0.1:0\n"),
    ) + lease
        + &admission
        + api;
    let gw = stage.start_gateway_with(&text).await.expect("gateway");
    let webhook: k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sluice-gateway"},
            "webhooks": [{
                "name": "evictions.sluice.dev",
                "clientConfig": {"url": format!("https://{}/validate/demo", gw.admission_addr.unwrap()),
                                 "caBundle": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &issued.ca_pem)},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods/eviction"]}],
                "failurePolicy": "Fail", "sideEffects": "NoneOnDryRun", "admissionReviewVersions": ["v1"]
            }]
        }))
        .unwrap();
    kube::Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(stage.client.clone())
        .create(&Default::default(), &webhook)
        .await
        .unwrap();
    // A restore, a drain and a restore again, a preStop, an invalid binding.
    stage.wait_ready(0, T).await.unwrap();
    stage.wait_ready(1, T).await.unwrap();
    stage.set_kruise_state(0, "PreparingUpdate").await.unwrap();
    stage.wait_drained(0, T).await.unwrap();
    stage.set_kruise_state(0, "Updated").await.unwrap();
    wait_gate(&stage.pods, "web-1", "True").await;
    let answer = get_from(gw.prestop_addr.unwrap(), stage.ips[1], "/prestop?timeoutSeconds=30")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // An eviction through the webhook (it reads the pod's disruption budgets, records a
    // drain request; with web-2 out of traffic the budget holds web-1, so it is refused).
    // (kube-rs retries the 429 by itself: one attempt is enough here.)
    let pods = stage.pods.clone();
    let _ = tokio::time::timeout(Duration::from_secs(3), pods.evict("web-1", &Default::default())).await;
    // An API call with a ServiceAccount token (a TokenReview).
    let token = stage.cluster().issue_service_account_token("default", "ci", &[]);
    let mut client = sluice_proto::v1::sluice_client::SluiceClient::connect(format!("http://{}", gw.api_addr.unwrap()))
        .await
        .unwrap();
    let mut get = tonic::Request::new(sluice_proto::v1::GetRequest {
        pod: Some(sluice_proto::v1::PodRef {
            namespace: "default".into(),
            name: "web-1".into(),
            ..Default::default()
        }),
    });
    get.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.get(get).await.expect("a reviewed token reads");
    // An endpoint drain through the API (a record created; its status written).
    let mut drain = tonic::Request::new(sluice_proto::v1::DrainRequest {
        target: Some(sluice_proto::v1::Target {
            target: Some(sluice_proto::v1::target::Target::Endpoint(sluice_proto::v1::Endpoint {
                namespace: "default".into(),
                address: "127.0.0.99".into(),
                port: 80,
                targets: vec![sluice_proto::v1::AdapterTarget {
                    adapter: "haproxy".into(),
                    params_json: r#"{"backend":"web"}"#.into(),
                }],
                ..Default::default()
            })),
        }),
        reason: "rbac".into(),
        ..Default::default()
    });
    drain
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.drain(drain).await.expect("an endpoint drain");
    let records: kube::Api<sluice::endpoint::EndpointDrain> = kube::Api::namespaced(stage.client.clone(), "default");
    until("the record's status", || async {
        records.get("ep-127-0-0-99-80").await.ok()?.status.map(|_| ())
    })
    .await;
    let mut spec = stage.binding_spec(stage.port, &[("haproxy", "web")]);
    spec["port"] = serde_json::json!(0);
    stage.put_binding("web", spec).await.unwrap();
    wait_event(&stage.client, "web", "InvalidBinding").await;
    drop(gw);

    let requests: Vec<_> = faults
        .request_log()
        .into_iter()
        .filter(|r| r.user == GATEWAY_USER)
        .map(|r| attributes(&r.method, &r.uri))
        .collect();
    let rules = rules();
    let used: std::collections::BTreeSet<_> = requests
        .iter()
        .map(|(g, r, v, _)| (g.clone(), r.clone(), v.clone()))
        .collect();
    eprintln!("the gateway used: {used:?}");
    for needed in [
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "patch"),
        ("", "pods/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("sluice.dev", "trafficbindings", "watch"),
        ("sluice.dev", "trafficbindings/status", "patch"),
        ("coordination.k8s.io", "leases", "update"),
        ("policy", "poddisruptionbudgets", "list"),
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("sluice.dev", "endpointdrains", "create"),
        ("sluice.dev", "endpointdrains", "watch"),
        ("sluice.dev", "endpointdrains/status", "patch"),
    ] {
        assert!(
            used.contains(&(needed.0.to_string(), needed.1.to_string(), needed.2.to_string())),
            "the scenario exercises {needed:?}: {used:?}"
        );
    }
    let denied: Vec<_> = requests.iter().filter(|a| !allowed(&rules, a)).collect();
    assert!(
        denied.is_empty(),
        "deploy/rbac.yaml lacks what the gateway uses: {denied:?}"
    );
    // The check can fail: without the lease rule, lease requests are denied.
    let without_leases: Vec<Rule> = rules
        .into_iter()
        .filter(|r| !r.resources.contains(&"leases".to_string()))
        .collect();
    assert!(requests.iter().any(|a| a.1 == "leases" && !allowed(&without_leases, a)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_the_crd_is_named_with_what_to_run() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    let stage = Stage::new(1, true).await.expect("stage");
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(stage.client.clone());
    crds.delete("trafficbindings.sluice.dev", &Default::default())
        .await
        .unwrap();
    let bindings: kube::Api<sluice::binding::TrafficBinding> = kube::Api::all(stage.client.clone());
    until("the CRD to be gone", || async {
        bindings.list(&Default::default()).await.err().map(|_| ())
    })
    .await;
    let cfg = sluice::config::Config::parse(&stage.gateway_config_text(free_addr()), "test").unwrap();
    let gw = sluice::gateway::Gateway::start(cfg).await.expect("starts, not ready");
    let body = until("/readyz to say why it is not ready", || async {
        let r = health_get(gw.health_addr, "/readyz").await?;
        r.contains("CRD is not installed").then_some(r)
    })
    .await;
    assert!(body.starts_with("HTTP/1.1 503"), "{body}");
    assert!(
        body.contains("cluster demo: the TrafficBinding CRD is not installed")
            && body.contains("sluice crd | kubectl apply -f -"),
        "one line naming the cluster and what to run: {body}"
    );
    crds.create(&Default::default(), &sluice::binding::TrafficBinding::crd())
        .await
        .unwrap();
    until("ready once the CRD is installed", || async {
        let r = health_get(gw.health_addr, "/readyz").await?;
        r.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
}
