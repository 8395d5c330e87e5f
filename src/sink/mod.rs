//! Sinks: where messages go. A sink acknowledges a batch only once it is delivered; the
//! publisher (`crate::outbox`) deletes outbox rows only after that.

pub mod jsonl;
pub mod servicebus;
pub mod stdout;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::SinkConfig;
use crate::contract::Message;

/// Why a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying later (connection lost, busy, timeout); the messages stay in the outbox.
    #[error("{reason}")]
    Transient {
        /// What happened.
        reason: String,
    },
    /// Rejected for good (unknown topic, unauthorized, too large). `index` names the message of
    /// the batch when known; otherwise the publisher retries the batch one message at a time to
    /// find it.
    #[error("{reason}")]
    Rejected {
        /// Which message of the batch, if known.
        index: Option<usize>,
        /// Why, naming the topic.
        reason: String,
    },
}

/// A destination for messages.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Delivers `messages` (all for `topic`, in order). `Ok` means every one was acknowledged.
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError>;

    /// A short description for logs (`stdout`, `jsonl:/path`).
    fn describe(&self) -> String;

    /// Connects ahead of the first message (readiness). Sinks without connections are ready.
    async fn connect(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Checks, without sending, that each topic can be published to (`pollbus check
    /// --probe`). Sinks without topics have nothing to check.
    async fn probe(&self, _topics: &[String]) -> Vec<(String, Result<(), SinkError>)> {
        Vec::new()
    }
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
#[error("sink {kind}: {message}")]
pub struct SinkBuildError {
    /// The sink kind.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Builds the configured sink.
pub async fn build(config: &SinkConfig) -> Result<Arc<dyn Sink>, SinkBuildError> {
    match config {
        SinkConfig::Stdout { .. } => Ok(Arc::new(stdout::StdoutSink::new())),
        SinkConfig::Servicebus(sb) => Ok(Arc::new(servicebus::ServiceBusSink::new(sb)?)),
        SinkConfig::Jsonl { path, .. } => Ok(Arc::new(
            jsonl::JsonlSink::open(path.as_ref())
                .await
                .map_err(|e| SinkBuildError {
                    kind: "jsonl",
                    message: format!("cannot open {path}: {e}"),
                })?,
        )),
    }
}

/// The messages as newline-terminated JSON lines.
pub fn to_lines(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.len() * 512);
    for m in messages {
        serde_json::to_writer(&mut out, m).expect("message serializes");
        out.push(b'\n');
    }
    out
}
