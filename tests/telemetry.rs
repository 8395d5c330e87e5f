//! OpenTelemetry export against a local OTLP/HTTP receiver: the real binary (demo source,
//! JSON-lines sink) exports a `poll` span per poll and a `publish` span per batch, as protobuf
//! to `/v1/traces`; every message's `Diagnostic-Id` names the trace of a poll span, so a
//! subscriber continuing that trace joins pollbus's spans.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use pollbus_testkit::cli::RunningPollbus;

/// (span name, trace id hex, parent span id hex) of every span received.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// An OTLP/HTTP receiver: decodes each protobuf `ExportTraceServiceRequest` it is sent.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    async fn traces(State(received): State<Received>, body: Bytes) -> &'static str {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        let mut received = received.lock().unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    received.push((
                        span.name,
                        hex::encode(span.trace_id),
                        hex::encode(span.parent_span_id),
                    ));
                }
            }
        }
        ""
    }
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_spans_carry_the_trace_id_of_the_messages_diagnostic_id() {
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pollbus.toml"),
        format!(
            r#"
[state]
url = "sqlite://./state/pollbus.db"
[sink]
kind = "jsonl"
path = "./out/messages.jsonl"
[admin]
listen = "127.0.0.1:0"
[telemetry]
otlp_endpoint = "{endpoint}"
[[sources]]
name = "demo"
kind = "demo"
source_system = "CRM"
interval = "1s"
  [sources.demo]
  seed = 3
  records = 10
  changes_per_minute = 600
  [[sources.resources]]
  name = "customers"
  entity = "customer"
  fields = {{ FirstName = "first_name", City = "address.city" }}
  initial = "emit"
"#
        ),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let mut pollbus = tokio::task::spawn_blocking(move || {
        RunningPollbus::start(env!("CARGO_BIN_EXE_pollbus"), &path)
    })
    .await
    .unwrap();
    let lines = dir.path().join("out/messages.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&lines)
        .unwrap_or_default()
        .lines()
        .count()
        < 10
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            pollbus.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pollbus.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = pollbus.wait();
        (status, pollbus.log())
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
    assert!(
        status.1.contains("exporting spans over OTLP/HTTP"),
        "{}",
        status.1
    );

    let messages: Vec<serde_json::Value> = std::fs::read_to_string(&lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let traces: BTreeSet<String> = messages
        .iter()
        .map(|m| {
            let diag = m["applicationProperties"]["Diagnostic-Id"]
                .as_str()
                .or_else(|| m["application_properties"]["Diagnostic-Id"].as_str())
                .unwrap_or_else(|| panic!("a Diagnostic-Id: {m}"));
            diag.split('-').nth(1).unwrap().to_string()
        })
        .collect();
    // The exporter sends in batches; the flush at exit sends the rest.
    let spans = received.lock().unwrap().clone();
    let poll_traces: BTreeSet<String> = spans
        .iter()
        .filter(|(name, _, _)| name == "poll")
        .map(|(_, trace, _)| trace.clone())
        .collect();
    assert!(!poll_traces.is_empty(), "poll spans exported: {spans:?}");
    for trace in &traces {
        assert!(
            poll_traces.contains(trace),
            "the poll that wrote a message with trace {trace} exported its span in that trace: {poll_traces:?}"
        );
    }
    let publish: Vec<_> = spans
        .iter()
        .filter(|(name, _, _)| name == "publish")
        .collect();
    assert!(!publish.is_empty(), "publish spans exported: {spans:?}");
    assert!(
        publish.iter().all(|(_, trace, _)| traces.contains(trace)),
        "each publish span joins the trace of a message it carried: {publish:?}"
    );
    eprintln!(
        "{} messages in {} traces; {} spans received ({} poll, {} publish)",
        messages.len(),
        traces.len(),
        spans.len(),
        spans.iter().filter(|s| s.0 == "poll").count(),
        publish.len()
    );
}
