//! OpenTelemetry trace export (OTLP over gRPC). Off unless the configuration names an
//! endpoint (`telemetry.otlpEndpoint`) or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables are set; when off, nothing is built and
//! spans cost what `tracing` spans cost.
//!
//! Each drain or restore is a span whose trace is the operation's: the trace id recorded
//! on the pod (`sluice.dev/status` → `traceId`), so a drain continued after a restart or a
//! failover stays in its trace. A rollout controller that sets `sluice.dev/traceparent`
//! (W3C) on its pods puts every pod's drain and restore of one release in one trace, as
//! children of its own span.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

use crate::config::TelemetryConfig;

/// The annotation a rollout controller sets (on the pod template) to put the release's
/// drains and restores in its trace: a W3C `traceparent`.
pub const TRACEPARENT_ANNOTATION: &str = "sluice.dev/traceparent";

/// A parsed W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
}

impl TraceParent {
    pub fn parse(s: &str) -> Option<TraceParent> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent { trace_id, span_id })
    }
}

/// The context a span of the operation `trace_id` (32 hex) is parented on: the release's
/// span when `traceparent` is of the same trace, else a root in that trace.
pub fn parent_context(trace_id: &str, traceparent: Option<&str>) -> Option<Context> {
    let trace = u128::from_str_radix(trace_id, 16).ok().filter(|t| *t != 0)?;
    let span = traceparent
        .and_then(TraceParent::parse)
        .filter(|p| p.trace_id == trace)
        .map(|p| p.span_id)
        // No release span: the operation's own root, derived from its trace id, so every
        // span of the operation (across restarts) hangs from the same parent.
        .unwrap_or((trace as u64).max(1));
    let sc = SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(sc))
}

/// The context of the span `span_id` (16 hex) of the operation `trace_id` (32 hex): the
/// target of a link from a continued operation to the span that started it.
pub fn span_context(trace_id: &str, span_id: &str) -> Option<SpanContext> {
    let trace = u128::from_str_radix(trace_id, 16).ok().filter(|t| *t != 0)?;
    let span = u64::from_str_radix(span_id, 16).ok().filter(|s| *s != 0)?;
    Some(SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// The exported span id of `span` (16 hex); `None` when traces are not exported.
pub fn span_id_of(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format!("{}", sc.span_id()))
}

/// Whether export is on: a configured endpoint or the standard environment variables.
pub fn enabled(cfg: &TelemetryConfig) -> bool {
    cfg.otlp_endpoint.is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

/// Builds the tracer provider (batching exporter over gRPC); `None` when export is off.
pub fn provider(cfg: &TelemetryConfig) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry_otlp::WithExportConfig;
    if !enabled(cfg) {
        return Ok(None);
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = &cfg.otlp_endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let exporter = builder.build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .build();
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_strictly() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.span_id, 0x00f067aa0ba902b7);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_parent_is_the_release_span_only_in_the_same_trace() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parent_context("4bf92f3577b34da6a3ce929d0e0e4736", Some(tp)).unwrap();
        assert_eq!(cx.span().span_context().span_id(), SpanId::from(0x00f067aa0ba902b7u64));
        let other = parent_context("0123456789abcdef0123456789abcdef", Some(tp)).unwrap();
        assert_eq!(
            other.span().span_context().trace_id(),
            TraceId::from(0x0123456789abcdef0123456789abcdefu128)
        );
        assert_ne!(
            other.span().span_context().span_id(),
            SpanId::from(0x00f067aa0ba902b7u64)
        );
        assert!(parent_context("not hex", None).is_none());
    }
}
