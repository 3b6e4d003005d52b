//! Shared helpers: start a cluster and get a kube-rs client for it through the normal
//! kubeconfig loading path.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kube_sim::{Cluster, ClusterConfig};
use serde_json::json;

pub async fn start(name: &str) -> Cluster {
    start_with(ClusterConfig::new(name)).await
}

pub async fn start_with(cfg: ClusterConfig) -> Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Cluster::start(cfg).await.expect("cluster starts")
}

/// A client built from the cluster's kubeconfig, as an operator's would be.
pub async fn client(cluster: &Cluster) -> Client {
    client_for_context(&cluster.kubeconfig(), cluster.name()).await
}

pub async fn client_for_context(kubeconfig: &str, context: &str) -> Client {
    Client::try_from(config_for_context(kubeconfig, context).await).expect("client builds")
}

async fn config_for_context(kubeconfig: &str, context: &str) -> Config {
    let kc = Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig parses");
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("kubeconfig loads")
}

/// A client without kube-rs's default retry of 429/503/504, to see the raw answers.
pub async fn client_without_retry(cluster: &Cluster) -> Client {
    let mut cfg = config_for_context(&cluster.kubeconfig(), cluster.name()).await;
    cfg.default_retry = false;
    Client::try_from(cfg).expect("client builds")
}

/// The pods of namespace `default`.
pub async fn default_pods(cluster: &Cluster) -> Api<Pod> {
    Api::namespaced(client(cluster).await, "default")
}

/// Awaits `f` for at most 10 s, naming what was awaited when it does not finish.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The `Status` of an API error; panics on anything else.
pub fn status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Awaits a call that must fail with an API error; answers its `Status`.
pub async fn fails<T>(call: impl Future<Output = kube::Result<T>>) -> Box<kube::core::Status> {
    match call.await {
        Ok(_) => panic!("expected an API error, the call succeeded"),
        Err(e) => status(e),
    }
}

/// A `Status`'s code, reason and message, to compare in one assertion.
pub fn summary(s: &kube::core::Status) -> (u16, &str, &str) {
    (s.code, s.reason.as_str(), s.message.as_str())
}

/// An object with a name and nothing else (namespaces, leases, …).
pub fn named<K: serde::de::DeserializeOwned>(name: &str) -> K {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("named object")
}

/// Delete options carrying preconditions.
pub fn preconditions(uid: Option<&str>, resource_version: Option<&str>) -> DeleteParams {
    DeleteParams::default().preconditions(Preconditions {
        uid: uid.map(String::from),
        resource_version: resource_version.map(String::from),
    })
}

/// `p` with a finalizer that holds it once deleted.
pub fn held(mut p: Pod) -> Pod {
    p.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    p
}

/// Deletes a pod that something holds; answers it as marked for deletion.
pub async fn marked(pods: &Api<Pod>, name: &str) -> Pod {
    pods.delete(name, &DeleteParams::default())
        .await
        .expect("delete")
        .left()
        .expect("the object, while something holds it")
}

/// Creates namespace `name` holding a pod with a finalizer, then deletes it: the namespace
/// stays `Terminating`. Answers the namespaces and the pods in that one.
pub async fn terminating_namespace(client: &Client, name: &str) -> (Api<Namespace>, Api<Pod>) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &named(name))
        .await
        .expect("namespace created");
    let pods: Api<Pod> = Api::namespaced(client.clone(), name);
    pods.create(&PostParams::default(), &held(pod("held")))
        .await
        .expect("pod created");
    nss.delete(name, &DeleteParams::default())
        .await
        .expect("namespace deleted");
    (nss, pods)
}

pub fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.0"}]}
    }))
    .expect("pod literal")
}

pub fn pod_on_node(name: &str, node: &str) -> Pod {
    let mut p = pod(name);
    p.spec.as_mut().expect("spec").node_name = Some(node.to_string());
    p
}

/// A raw request through the client's transport (auth, TLS, base URL), for what kube-rs
/// cannot express; answers the status, the headers and the body parsed as JSON (`Null` when
/// empty or not JSON), whatever the status code.
pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (http::StatusCode, http::HeaderMap, serde_json::Value) {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header(http::header::CONTENT_TYPE, ct);
    }
    let req = req
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("request builds");
    let resp = client.send(req).await.expect("request is answered");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect_bytes().await.expect("body is read");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}
