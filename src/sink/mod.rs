//! Sinks: where messages go. A sink acknowledges a batch only once it is delivered; the
//! publisher (`crate::outbox`) deletes outbox rows only after that.

pub mod jsonl;
pub mod servicebus;
pub mod stdout;

use std::sync::Arc;
use std::time::Duration;

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
        /// How long the broker asked us to wait (server-busy), when it did; the publisher
        /// waits at least this long (within its backoff bounds).
        retry_after: Option<Duration>,
    },
    /// The topic cannot take messages until an operator fixes something (it does not exist,
    /// we may not send to it, it is disabled or full). The messages stay in the outbox and the
    /// topic is paused with a capped backoff; other topics keep flowing.
    #[error("{reason}")]
    Blocked {
        /// Why, as the `reason` label of `pollbus_topic_blocked`.
        block: TopicBlock,
        /// What happened and what to fix, naming the topic.
        reason: String,
    },
    /// This message is refused for good (too large, invalid). `index` names the message of
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

impl SinkError {
    /// A transient failure without a suggested wait.
    pub fn transient(reason: impl Into<String>) -> Self {
        SinkError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// Why a topic is paused: a problem of the topic, not of a message, that an operator fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicBlock {
    /// The topic does not exist (`amqp:not-found`, `amqp:resource-deleted`).
    NotFound,
    /// We may not send to it (`amqp:unauthorized-access`, `com.microsoft:publisher-revoked`, a
    /// refused token).
    Unauthorized,
    /// The topic is disabled (`com.microsoft:entity-disabled`).
    Disabled,
    /// The topic or namespace is full (`amqp:resource-limit-exceeded`).
    QuotaExceeded,
}

impl TopicBlock {
    /// The `reason` label of `pollbus_topic_blocked`.
    pub fn label(self) -> &'static str {
        match self {
            TopicBlock::NotFound => "not_found",
            TopicBlock::Unauthorized => "unauthorized",
            TopicBlock::Disabled => "disabled",
            TopicBlock::QuotaExceeded => "quota_exceeded",
        }
    }

    /// Every reason, for resetting gauges.
    pub const ALL: [TopicBlock; 4] = [
        TopicBlock::NotFound,
        TopicBlock::Unauthorized,
        TopicBlock::Disabled,
        TopicBlock::QuotaExceeded,
    ];

    /// What the operator should do.
    pub fn fix(self) -> &'static str {
        match self {
            TopicBlock::NotFound => "create the topic or fix topic_prefix/entity",
            TopicBlock::Unauthorized => {
                "grant Send on the topic (SAS key or Azure Service Bus Data Sender role) or renew the key"
            }
            TopicBlock::Disabled => "re-enable the topic",
            TopicBlock::QuotaExceeded => {
                "let subscribers catch up, or raise the topic's or namespace's size quota"
            }
        }
    }
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
