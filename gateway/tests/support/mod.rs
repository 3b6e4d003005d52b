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
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
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
        let stream = tokio::net::TcpStream::connect(front).await.unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("/work?ms={ms}"))
            .header("host", "x")
            .body(http_body_util::Empty::new())
            .unwrap();
        held.push(tokio::spawn(
            async move { s.send_request(req).await.map(|r| r.status()) },
        ));
    }
    held
}
