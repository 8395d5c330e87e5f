//! Optional OpenTelemetry trace export (`[telemetry] otlp_endpoint`, off by default).
//!
//! One span per poll (`poll`) and per publish batch (`publish`) goes to an OTLP/HTTP collector
//! (protobuf, `{otlp_endpoint}/v1/traces`) through the `tracing` spans pollbus already has
//! (`tracing-opentelemetry`). The poll span joins the trace named in every message's
//! `Diagnostic-Id` ([`TraceContext`]): its trace id *is* that trace id, so a subscriber that
//! continues the trace (Application Insights, Jaeger) sees the whole path from the vendor
//! request to its handler. A publish batch joins the trace of its first message and links the
//! others'. Spans are exported from a background thread in batches; a collector that is down
//! costs nothing but the dropped spans.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

use crate::config::TelemetryConfig;
use crate::contract::{Message, TraceContext, DIAGNOSTIC_ID};

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint {endpoint:?}: {reason}")]
pub struct TelemetryError {
    /// The configured endpoint.
    pub endpoint: String,
    /// What failed.
    pub reason: String,
}

/// The `tracing` layer that exports spans over `S`, and the provider to flush at exit.
pub type Export<S> = (OpenTelemetryLayer<S, SdkTracer>, SdkTracerProvider);

/// The export layer and its provider; `None` when no endpoint is configured.
pub fn layer<S>(config: &TelemetryConfig) -> Result<Option<Export<S>>, TelemetryError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces)
        .build()
        .map_err(|e| TelemetryError {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("pollbus");
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        provider,
    )))
}

fn remote(trace_id: [u8; 16], span_id: [u8; 8]) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

/// Makes `span` part of `trace` (its trace id becomes `trace`'s). A no-op without the layer.
pub fn join(span: &tracing::Span, trace: &TraceContext) {
    let cx = opentelemetry::Context::new()
        .with_remote_span_context(remote(trace.trace_id, trace.span_id));
    let _ = span.set_parent(cx);
}

/// The trace id and span id of a message's `Diagnostic-Id` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn traceparent(message: &Message) -> Option<([u8; 16], [u8; 8])> {
    let text = message.application_properties.get(DIAGNOSTIC_ID)?;
    let text = match text {
        crate::contract::PropertyValue::String(s) => s,
        _ => return None,
    };
    let mut parts = text.split('-');
    let (_, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    hex::decode_to_slice(span, &mut span_id).ok()?;
    Some((trace_id, span_id))
}

/// Makes a publish batch's `span` part of its first message's trace and links (up to 32) the
/// other traces in the batch. A no-op without the layer.
pub fn join_batch(span: &tracing::Span, messages: &[Message]) {
    let mut traces = messages.iter().filter_map(traceparent);
    let Some((trace_id, span_id)) = traces.next() else {
        return;
    };
    let _ = span.set_parent(
        opentelemetry::Context::new().with_remote_span_context(remote(trace_id, span_id)),
    );
    let mut linked = vec![trace_id];
    for (trace_id, span_id) in traces {
        if linked.len() > 32 {
            break;
        }
        if !linked.contains(&trace_id) {
            linked.push(trace_id);
            span.add_link(remote(trace_id, span_id));
        }
    }
}
