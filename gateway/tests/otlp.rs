//! Trace export: the real `sluice` process sends its spans over OTLP/gRPC to a receiver
//! built here from the collector's proto (`opentelemetry-proto`'s TraceService). Two pods of
//! one release, marked with the same `sluice.dev/traceparent`, drain and restore in that one
//! trace, under the release's span; each adapter step is a child of its drain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use sluice::demo::Stage;

mod support;
use support::*;

const T: Duration = Duration::from_secs(60);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const RELEASE_SPAN: &str = "00f067aa0ba902b7";

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            other => Some(format!("{other:?}")),
        })
}

/// An OTLP receiver on 127.0.0.1, and a stage of two serving pods whose `sluice` process
/// exports to it (RUST_LOG=warn: the log level does not filter the exported spans).
async fn exporting_stage() -> (
    Receiver,
    tokio::task::JoinHandle<()>,
    Stage,
    Gw,
    std::path::PathBuf,
    std::net::SocketAddr,
) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let server = {
        let r = receiver.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("the receiver serves")
        })
    };

    let stage = Stage::new(2, true).await.expect("stage");
    let health = free_addr();
    let config = stage.dir.join("sluice.yaml");
    std::fs::write(
        &config,
        stage.gateway_config_text(health) + &format!("telemetry:\n  otlpEndpoint: http://{otlp}\n"),
    )
    .unwrap();
    let gw = spawn_gateway(&config, health).await;
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    (receiver, server, stage, gw, config, health)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_one_trace_with_a_child_span_per_adapter_step() {
    let (receiver, server, stage, gw, _, _) = exporting_stage().await;
    // The rollout controller marks the release on its pods.
    let traceparent = format!("00-{TRACE}-{RELEASE_SPAN}-01");
    for i in 0..2 {
        stage
            .pods
            .patch(
                &Stage::name(i),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/traceparent": traceparent}}})),
            )
            .await
            .unwrap();
    }
    // Requests held for a second: a drain waits for its sessions to end.
    let held = hold_in_web(&stage, 2, 1000).await;
    for i in 0..2 {
        stage.set_kruise_state(i, "PreparingUpdate").await.unwrap();
        stage.wait_drained(i, T).await.unwrap();
        let status = status_of(&stage.get(i).await.unwrap());
        assert_eq!(status["traceId"], TRACE, "the drain is recorded in the release's trace");
        stage.set_kruise_state(i, "Updated").await.unwrap();
        wait_gate(&stage.pods, &Stage::name(i), "True").await;
    }
    for h in held {
        within("a held request", h).await.unwrap().expect("answered");
    }
    // SIGTERM flushes the spans not exported yet.
    gw.signal("TERM");
    let spans = until("the release's spans to arrive", || async {
        let spans = receiver.0.lock().unwrap().clone();
        let drains = spans
            .iter()
            .filter(|s| s.name == "drain" && hex(&s.trace_id) == TRACE)
            .count();
        (drains >= 2).then_some(spans)
    })
    .await;
    server.abort();

    let in_release: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == TRACE).collect();
    let drains: Vec<&Span> = in_release.iter().copied().filter(|s| s.name == "drain").collect();
    let mut pods: Vec<String> = drains.iter().filter_map(|s| attr(s, "k8s.pod.name")).collect();
    pods.sort();
    pods.dedup();
    assert_eq!(pods, ["web-1", "web-2"], "both pods' drains in the release's trace");
    for d in &drains {
        assert_eq!(hex(&d.parent_span_id), RELEASE_SPAN, "a child of the release's span");
        assert_eq!(attr(d, "k8s.namespace.name").as_deref(), Some("default"));
        assert_eq!(attr(d, "k8s.cluster.name").as_deref(), Some("demo"));
        assert!(attr(d, "k8s.pod.uid").is_some());
    }
    let restores = in_release.iter().filter(|s| s.name == "restore").count();
    assert!(restores >= 2, "the restores after the update too: {restores}");
    let by_id: HashMap<String, &Span> = in_release.iter().map(|s| (hex(&s.span_id), *s)).collect();
    let steps: Vec<&Span> = in_release.iter().copied().filter(|s| s.name == "deregister").collect();
    assert!(steps.len() >= 2, "a deregister span per drain");
    for s in &steps {
        let parent = by_id
            .get(&hex(&s.parent_span_id))
            .unwrap_or_else(|| panic!("the deregister's parent was exported"));
        assert_eq!(parent.name, "drain");
        assert_eq!(attr(s, "sluice.adapter").as_deref(), Some("haproxy"));
        assert_eq!(attr(s, "sluice.kind").as_deref(), Some("slb"));
    }
    // The pod writes of each drain are spans of it: the finalizer's removal among them.
    let patches: Vec<&Span> = in_release
        .iter()
        .copied()
        .filter(|s| s.name == "patch" && by_id.get(&hex(&s.parent_span_id)).is_some_and(|p| p.name == "drain"))
        .collect();
    assert!(
        patches.iter().any(
            |s| attr(s, "sluice.patch").is_some_and(|p| p.contains("remove finalizer sluice.dev/slb"))
                && attr(s, "sluice.outcome").as_deref() == Some("written")
        ),
        "{:?}",
        patches.iter().map(|s| attr(s, "sluice.patch")).collect::<Vec<_>>()
    );
    assert!(patches
        .iter()
        .any(|s| attr(s, "sluice.patch").as_deref() == Some("condition sluice.dev/traffic-ready=False")));
    // The drain of the pod that held requests waited for its evidence, as one span.
    let waits: Vec<&Span> = in_release
        .iter()
        .copied()
        .filter(|s| s.name == "wait" && by_id.get(&hex(&s.parent_span_id)).is_some_and(|p| p.name == "drain"))
        .collect();
    assert!(
        waits
            .iter()
            .any(|s| attr(s, "sluice.wait").as_deref() == Some("evidence")
                && attr(s, "sluice.waiting").is_some_and(|w| w.contains("draining"))
                && s.end_time_unix_nano - s.start_time_unix_nano >= 300_000_000),
        "{:?}",
        waits
            .iter()
            .map(|s| (attr(s, "sluice.wait"), s.end_time_unix_nano - s.start_time_unix_nano))
            .collect::<Vec<_>>()
    );
    let observations: Vec<&&Span> = in_release
        .iter()
        .filter(|s| s.name == "observe" && by_id.get(&hex(&s.parent_span_id)).is_some_and(|p| p.name == "drain"))
        .collect();
    assert!(!observations.is_empty(), "observations are children of the drain");
    // Each carries its evidence; the last one of a drain says drained, from HAProxy's counters.
    assert!(observations.iter().all(|s| attr(s, "sluice.evidence").is_some()));
    assert!(
        observations
            .iter()
            .any(|s| attr(s, "sluice.state").as_deref() == Some("Drained")
                && attr(s, "sluice.evidence").is_some_and(|e| e.contains("scur=0"))),
        "{:?}",
        observations
            .iter()
            .map(|s| attr(s, "sluice.evidence"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_continued_after_a_restart_stays_in_its_trace() {
    let (receiver, server, stage, gw, config, health) = exporting_stage().await;
    // A drain of its own trace (no release), interrupted by SIGKILL while web-1 still
    // holds requests.
    let held = hold_in_web(&stage, 4, 1500).await;
    stage.set_kruise_state(0, "PreparingDelete").await.unwrap();
    wait_gate(&stage.pods, "web-1", "False").await;
    let status = until("the drain's span id on the pod", || async {
        let status = status_of(&stage.get(0).await.ok()?);
        status["spanId"].is_string().then_some(status)
    })
    .await;
    let trace = status["traceId"].as_str().unwrap().to_string();
    let interrupted = status["spanId"].as_str().unwrap().to_string();
    drop(gw);
    // RUST_LOG=warn: the log level does not filter the exported spans.
    let gw = spawn_gateway(&config, health).await;
    stage
        .wait_drained(0, T)
        .await
        .expect("the restarted gateway finishes the drain");
    for h in held {
        within("a held request", h).await.unwrap().expect("answered");
    }
    gw.signal("TERM");
    let drain = until("the continued drain's span", || async {
        let spans = receiver.0.lock().unwrap().clone();
        spans
            .into_iter()
            .find(|s| s.name == "drain" && attr(s, "k8s.pod.name").as_deref() == Some("web-1"))
    })
    .await;
    server.abort();
    assert_eq!(
        hex(&drain.trace_id),
        trace,
        "the restarted gateway continues the recorded trace"
    );
    // ... linked to the span the SIGKILL interrupted (never exported: the link says where
    // the drain began).
    assert!(
        drain
            .links
            .iter()
            .any(|l| hex(&l.trace_id) == trace && hex(&l.span_id) == interrupted),
        "{:?}",
        drain.links
    );
    assert_ne!(hex(&drain.span_id), interrupted);
}
