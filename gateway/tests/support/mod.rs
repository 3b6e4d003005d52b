//! Helpers shared by the gateway's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// Upper bound of every wait in these tests.
pub const T: Duration = Duration::from_secs(60);

/// Status of the pod's `sluice.dev/traffic-ready` condition.
pub fn gate(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "sluice.dev/traffic-ready")
        .map(|c| c.status.clone())
}

/// `state` of the pod's `sluice.dev/status` annotation ("" when absent).
pub fn sluice_state(p: &Pod) -> String {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sluice.dev/status"))
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v["state"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Waits until the pod's `sluice.dev/status` annotation says `state`; answers the whole
/// annotation.
pub async fn wait_status(pods: &kube::Api<Pod>, name: &str, state: &str) -> serde_json::Value {
    within(&format!("{name}'s status annotation to say {state}"), async {
        loop {
            let p = pods.get(name).await.expect("get pod");
            if sluice_state(&p) == state {
                let raw = &p.metadata.annotations.as_ref().expect("annotations")["sluice.dev/status"];
                return serde_json::from_str(raw).expect("the annotation is JSON");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits until the pod's `sluice.dev/traffic-ready` condition is `value`.
pub async fn wait_gate(pods: &kube::Api<Pod>, name: &str, value: &str) {
    within(&format!("{name}'s gate to be {value}"), async {
        while gate(&pods.get(name).await.expect("get pod")).as_deref() != Some(value) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn free_addr() -> std::net::SocketAddr {
    // The shared helper: ports below the ephemeral range, never handed out twice.
    std::net::SocketAddr::from(([127, 0, 0, 1], sluice_adapter::testing::free_port()))
}

/// Opens `n` keep-alive connections through `front` and sends a request of `ms` on each;
/// the handles answer each response's status.
pub async fn hold_requests(
    front: std::net::SocketAddr,
    n: usize,
    ms: u64,
) -> Vec<tokio::task::JoinHandle<hyper::Result<http::StatusCode>>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let (mut s, req) = open_request(front, ms).await;
        held.push(tokio::spawn(
            async move { s.send_request(req).await.map(|r| r.status()) },
        ));
    }
    held
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// A keep-alive connection through `front` and a request of `ms` to send on it.
async fn open_request(
    front: std::net::SocketAddr,
    ms: u64,
) -> (Sender, http::Request<http_body_util::Empty<bytes::Bytes>>) {
    let stream = tokio::net::TcpStream::connect(front).await.unwrap();
    let (s, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("/work?ms={ms}"))
        .header("host", "x")
        .body(http_body_util::Empty::new())
        .unwrap();
    (s, req)
}

/// A request held through the frontend, as it ended: status, the pod address that served
/// it (`x-served-by`), and when its response was complete.
pub struct Held {
    pub status: http::StatusCode,
    pub served_by: String,
    pub done: std::time::Instant,
}

/// Like [`hold_requests`], timing each request's end and naming the pod that served it.
pub async fn hold_timed(front: std::net::SocketAddr, n: usize, ms: u64) -> Vec<tokio::task::JoinHandle<Held>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let (mut s, req) = open_request(front, ms).await;
        held.push(tokio::spawn(async move {
            use http_body_util::BodyExt;
            let resp = within("a held request", s.send_request(req))
                .await
                .expect("a held request is answered");
            let status = resp.status();
            let served_by = resp
                .headers()
                .get(sluice::demo::backend::SERVED_BY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            within("a held response body", resp.into_body().collect())
                .await
                .expect("a held response body is complete");
            Held {
                status,
                served_by,
                done: std::time::Instant::now(),
            }
        }));
    }
    held
}

/// The pod's finalizers, sorted.
pub fn finalizers(p: &Pod) -> Vec<String> {
    let mut f = p.metadata.finalizers.clone().unwrap_or_default();
    f.sort();
    f
}

/// Whether the pod carries any finalizer of Sluice's.
pub fn holds_sluice_finalizer(p: &Pod) -> bool {
    finalizers(p).iter().any(|f| f.starts_with("sluice.dev/"))
}

/// The pod's registration ledger (`sluice.dev/registrations`), parsed (empty when absent).
pub fn ledger(p: &Pod) -> Vec<serde_json::Value> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sluice.dev/registrations"))
        .map(|l| serde_json::from_str(l).expect("the ledger is JSON"))
        .unwrap_or_default()
}

/// The backends (`params.backend`) and adapters the pod's ledger records, as `adapter/backend`.
pub fn ledger_targets(p: &Pod) -> Vec<String> {
    let mut v: Vec<String> = ledger(p)
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["adapter"].as_str().unwrap(),
                e["params"]["backend"].as_str().unwrap_or("")
            )
        })
        .collect();
    v.sort();
    v
}

/// The `sluice.dev/status` annotation, parsed (`null` when absent).
pub fn status_of(p: &Pod) -> serde_json::Value {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sluice.dev/status"))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Events about an object (core/v1, as `kubectl describe` reads them) with this reason.
pub async fn events(client: &kube::Client, object: &str, reason: &str) -> Vec<k8s_openapi::api::core::v1::Event> {
    let api: kube::Api<k8s_openapi::api::core::v1::Event> = kube::Api::namespaced(client.clone(), "default");
    api.list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={object}")))
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// Waits until an Event with this reason exists about the object; answers its note.
pub async fn wait_event(client: &kube::Client, object: &str, reason: &str) -> String {
    within(&format!("a {reason} event about {object}"), async {
        loop {
            if let Some(e) = events(client, object, reason).await.into_iter().next() {
                return e.message.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Polls `f` every 10 ms until it answers `Some`, within the bound.
pub async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// The patch a rollout controller writes to ask for a drain.
pub fn desired_drained() -> kube::api::Patch<serde_json::Value> {
    kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {"sluice.dev/desired": "drained"}}}))
}

/// [`hold_requests`] through the stage's frontend (backend `web`), returning once HAProxy
/// itself counts all `n` sessions on the backend's servers.
pub async fn hold_in_web(
    stage: &sluice::demo::Stage,
    n: usize,
    ms: u64,
) -> Vec<tokio::task::JoinHandle<hyper::Result<http::StatusCode>>> {
    let held = hold_requests(stage.frontend, n, ms).await;
    until("HAProxy to count the held sessions", || async {
        let rows = stage.haproxy().show_stat_servers("web").await.ok()?;
        (rows.iter().map(|r| r.scur()).sum::<u64>() >= n as u64).then_some(())
    })
    .await;
    held
}

/// A gateway whose one binding `web` registers the stage's pods as dynamic servers of
/// HAProxy backend `dyn` (adapter instance `haproxy-dyn`), with `engine` settings; returns
/// once both pods serve.
pub async fn gateway_on_dynamic_servers(stage: &sluice::demo::Stage, engine: &str) -> sluice::gateway::Gateway {
    stage
        .put_binding("web", stage.binding_spec(stage.port, &[("haproxy-dyn", "dyn")]))
        .await
        .unwrap();
    let text = stage.gateway_config_yaml(free_addr(), &stage.haproxy_adapter("haproxy-dyn", "dynamic"), engine);
    let gw = stage.start_gateway_with(&text).await.expect("gateway");
    for i in 0..2 {
        stage
            .wait_ready(i, std::time::Duration::from_secs(60))
            .await
            .expect("serving as a dynamic server");
    }
    gw
}

/// A stage of two pods and a gateway on its default configuration, both pods serving.
pub async fn two_pods_serving() -> (sluice::demo::Stage, sluice::gateway::Gateway) {
    let stage = sluice::demo::Stage::new(2, true).await.expect("stage");
    let gw = stage.start_gateway().await.expect("gateway");
    for i in 0..2 {
        stage
            .wait_ready(i, std::time::Duration::from_secs(60))
            .await
            .expect("serving");
    }
    (stage, gw)
}

/// Asks for pod `name` to be drained, as a rollout controller does.
pub async fn ask_drain(stage: &sluice::demo::Stage, name: &str) {
    stage
        .pods
        .patch(name, &kube::api::PatchParams::default(), &desired_drained())
        .await
        .expect("annotate the pod");
}

/// A `sluice run` child process; SIGKILLed on drop.
pub struct Gw(pub std::process::Child);

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Gw {
    /// Sends a signal (`libc` numbers: 15 SIGTERM, 10 SIGUSR1, 12 SIGUSR2).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.0.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} {}", self.0.id());
    }
}

/// One HTTP/1.1 GET (a gateway's health listener, Prometheus's API): the whole response,
/// headers and body.
pub async fn health_get(health: std::net::SocketAddr, path: &str) -> Option<String> {
    let s = tokio::net::TcpStream::connect(health).await.ok()?;
    get_on(s, path).await
}

/// `GET path` from source address `from` (a pod's IP on loopback: the preStop endpoint
/// identifies its caller by it).
pub async fn get_from(to: std::net::SocketAddr, from: std::net::IpAddr, path: &str) -> Option<String> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(std::net::SocketAddr::new(from, 0)).ok()?;
    let s = socket.connect(to).await.ok()?;
    get_on(s, path).await
}

async fn get_on(mut s: tokio::net::TcpStream, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    Some(buf)
}

/// Starts `sluice run --config <config>` and waits for its `/readyz` (every cluster synced).
pub async fn spawn_gateway(config: &std::path::Path, health: std::net::SocketAddr) -> Gw {
    spawn_gateway_logging(config, health, None).await
}

/// Like [`spawn_gateway`], its log (RUST_LOG=info) written to `log` when given.
pub async fn spawn_gateway_logging(
    config: &std::path::Path,
    health: std::net::SocketAddr,
    log: Option<&std::path::Path>,
) -> Gw {
    spawn_gateway_args(config, health, log, &[]).await
}

/// Like [`spawn_gateway_logging`], with more arguments to `sluice run`.
pub async fn spawn_gateway_args(
    config: &std::path::Path,
    health: std::net::SocketAddr,
    log: Option<&std::path::Path>,
    args: &[&str],
) -> Gw {
    let (level, stderr) = match log {
        Some(path) => (
            "info",
            std::process::Stdio::from(std::fs::File::create(path).expect("log file")),
        ),
        None => ("warn", std::process::Stdio::null()),
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", level)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("sluice starts");
    let gw = Gw(child);
    until("the gateway's /readyz", || async {
        let r = health_get(health, "/readyz").await?;
        r.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    gw
}
