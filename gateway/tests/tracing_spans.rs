//! Every drain and restore is a `tracing` span, with a child span per adapter step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::demo::Stage;
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// (span name, parent span name)
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Records (span, parent) name pairs.
struct Recorder(Seen);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, _: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("new span exists");
        let parent = span.parent().map(|p| p.name().to_string());
        self.0.lock().unwrap().push((span.name().to_string(), parent));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_and_restores_are_spans_with_a_child_per_adapter_step() {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Recorder(seen.clone())))
        .expect("first subscriber of this test binary");
    let stage = Stage::new(1, true).await.expect("stage");
    let _gw = stage.start_gateway().await.expect("gateway");
    stage.wait_ready(0, Duration::from_secs(60)).await.unwrap();
    stage.set_kruise_state(0, "PreparingDelete").await.unwrap();
    stage.wait_drained(0, Duration::from_secs(60)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let has = |child: &str, parent: &str| seen.iter().any(|(c, p)| c == child && p.as_deref() == Some(parent));
    assert!(has("observe", "restore"), "observe under restore: {seen:?}");
    assert!(has("observe", "drain"), "observe under drain: {seen:?}");
    assert!(has("deregister", "drain"), "deregister under drain: {seen:?}");
}
