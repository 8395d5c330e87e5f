//! An in-memory sink that keeps what it receives, validates every message against the schemas,
//! and fails on demand.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use pollbus::contract::Message;
use pollbus::sink::{Sink, SinkError, TopicBlock};

use crate::schema;

/// How the [`MemorySink`] behaves on the next publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkMode {
    /// Accepts everything.
    Accept,
    /// Fails transiently without delivering.
    FailTransient,
    /// Delivers, then reports a transient failure (the acknowledgement was lost).
    DeliverThenFail,
}

/// A sink that keeps what it receives, validating every message against the schemas.
#[derive(Default)]
pub struct MemorySink {
    received: Mutex<Vec<Message>>,
    mode: Mutex<Option<SinkMode>>,
    reject_topic: Mutex<Option<String>>,
    reject_message: Mutex<Option<String>>,
    fail_message: Mutex<Option<String>>,
    /// How many publish calls were made.
    pub publishes: AtomicUsize,
}

impl MemorySink {
    /// An empty sink that accepts everything.
    pub fn new() -> Arc<Self> {
        Arc::new(MemorySink::default())
    }
    /// Sets how the next publishes behave.
    pub fn set_mode(&self, mode: SinkMode) {
        *self.mode.lock().unwrap() = Some(mode);
    }
    /// Refuses every message for `topic` as a missing topic does (topic-level, not per message).
    pub fn reject_topic(&self, topic: &str) {
        *self.reject_topic.lock().unwrap() = Some(topic.to_string());
    }
    /// Rejects the message with this entity id for good, without saying which in a batch.
    pub fn reject_entity_id(&self, id: &str) {
        *self.reject_message.lock().unwrap() = Some(id.to_string());
    }
    /// Fails every publish whose batch holds the message with this entity id, transiently
    /// (a broker that times out on that one message), delivering nothing of that batch.
    pub fn fail_entity_id(&self, id: &str) {
        *self.fail_message.lock().unwrap() = Some(id.to_string());
    }
    /// Stops rejecting or failing topics and messages.
    pub fn clear_rejections(&self) {
        *self.reject_topic.lock().unwrap() = None;
        *self.reject_message.lock().unwrap() = None;
        *self.fail_message.lock().unwrap() = None;
    }
    /// Forgets the messages received so far.
    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }

    /// Every message received, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.received.lock().unwrap().clone()
    }
    /// Panics when a message id was received twice (a change published twice).
    pub fn assert_unique(&self) {
        let ids: Vec<String> = self.messages().into_iter().map(|m| m.message_id).collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "a change was published twice: {:?}",
            self.summary()
        );
    }

    /// Received messages as (evenType, id, changedFields).
    pub fn summary(&self) -> Vec<(u8, String, String)> {
        self.messages()
            .iter()
            .map(|m| {
                (
                    m.body.even_type.code(),
                    m.body.id.clone(),
                    m.body.changed_fields.clone(),
                )
            })
            .collect()
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        for m in messages {
            assert_eq!(m.topic, topic, "publisher groups by topic");
            schema::assert_valid_message(&serde_json::to_value(m).unwrap());
        }
        if self.reject_topic.lock().unwrap().as_deref() == Some(topic) {
            return Err(SinkError::Blocked {
                block: TopicBlock::NotFound,
                reason: format!("topic {topic} does not exist"),
            });
        }
        if let Some(id) = self.fail_message.lock().unwrap().as_deref() {
            if messages.iter().any(|m| m.body.id == id) {
                return Err(SinkError::Transient {
                    reason: format!("the broker timed out on the batch holding {id}"),
                    retry_after: None,
                });
            }
        }
        if let Some(id) = self.reject_message.lock().unwrap().as_deref() {
            if messages.iter().any(|m| m.body.id == id) {
                return Err(SinkError::Rejected {
                    index: None,
                    reason: format!("message for {id} is too large"),
                });
            }
        }
        let mode = self
            .mode
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(SinkMode::Accept);
        match mode {
            SinkMode::Accept => {
                self.received.lock().unwrap().extend_from_slice(messages);
                Ok(())
            }
            SinkMode::FailTransient => Err(SinkError::transient("connection refused")),
            SinkMode::DeliverThenFail => {
                self.received.lock().unwrap().extend_from_slice(messages);
                Err(SinkError::transient("acknowledgement lost"))
            }
        }
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
