//! Dead-letter tooling for topic subscriptions (`pollbus dlq …`), over the sink's connection
//! settings: peek, resubmit, purge.
//!
//! `azure_core_amqp`'s management client sends no request body, so Service Bus's management
//! `peek-message` is out of reach; `peek` therefore locks messages (peek-lock) and releases
//! them, which leaves them in place (their delivery count may rise; dead-letter queues do not
//! dead-letter again). `resubmit` sends each message back to the topic with its body and
//! properties, marked for the subscription it came from (`pollbus-resubmit-for`; the other
//! subscriptions filter it out with the rule in [`RESUBMIT_RULE`]), under a MessageId derived
//! from the original and that subscription ([`resubmit_message_id`]; the original is kept in
//! `pollbus-resubmitted-from`): a resubmit repeated within the topic's duplicate-detection
//! window is dropped by the broker instead of delivered twice. Then it completes the message
//! in the dead-letter queue.
//! `purge` completes (deletes) messages, optionally only those enqueued before a cutoff.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use azure_core_amqp::message::{AmqpAnnotationKey, AmqpMessageBody, AmqpMessageId};
use azure_core_amqp::{
    AmqpDelivery, AmqpDeliveryApis, AmqpMessage, AmqpReceiver, AmqpReceiverApis,
    AmqpReceiverOptions, AmqpSendOutcome, AmqpSender, AmqpSenderApis, AmqpSimpleValue, AmqpSource,
    AmqpValue, ReceiverCreditMode, ReceiverSettleMode,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::endpoint::Endpoint;
use super::link::{connect, Link, CLOSE_TIMEOUT};
use crate::config::ServiceBusConfig;

/// How long a dead-letter queue must stay silent before it counts as drained.
const IDLE: Duration = Duration::from_secs(3);

/// Runs one network step, bounded by `limit`: a broker that stops answering gives a clear
/// error naming the step instead of a tool that hangs.
async fn within<T, E: Display>(
    limit: Duration,
    what: impl FnOnce() -> String,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, DlqError> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DlqError::ServiceBus(format!("{}: {e}", what()))),
        Err(_) => Err(DlqError::ServiceBus(format!(
            "{}: no answer within {limit:?} (sink.send_timeout)",
            what()
        ))),
    }
}

/// A dead-lettered message as the tooling shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// MessageId.
    pub message_id: String,
    /// `DeadLetterReason`.
    pub reason: Option<String>,
    /// `DeadLetterErrorDescription`.
    pub description: Option<String>,
    /// Delivery count from the header.
    pub delivery_count: u32,
    /// `x-opt-enqueued-time`.
    pub enqueued: Option<DateTime<Utc>>,
    /// The body as text.
    pub body: String,
}

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The sink configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// Service Bus refused or failed.
    #[error("{0}")]
    ServiceBus(String),
}

use crate::contract::RESUBMITTED_FROM;
/// The application property naming the subscription a resubmitted message is meant for (a
/// reserved property name: no changed field takes it).
pub use crate::contract::RESUBMIT_FOR;

/// The SQL filter the *other* subscriptions of a topic add (as their rule, combined with
/// their own filter by `AND`) so they ignore resubmits meant for someone else; `{subscription}`
/// is the subscription's own name.
pub const RESUBMIT_RULE: &str =
    "NOT EXISTS([pollbus-resubmit-for]) OR [pollbus-resubmit-for] = '{subscription}'";

/// The MessageId of the resubmitted copy of `original` for `subscription`: the first 32 hex
/// digits of SHA-256 over `original|resubmit|subscription`. The same message resubmitted again
/// for the same subscription gets the same id (duplicate detection drops the repeat); it
/// differs from the original id, which the topic has already seen.
pub fn resubmit_message_id(original: &str, subscription: &str) -> String {
    hex::encode(&Sha256::digest(format!("{original}|resubmit|{subscription}"))[..16])
}

/// An open dead-letter queue of one subscription.
pub struct DeadLetterQueue {
    endpoint: Endpoint,
    link: Link,
    receiver: AmqpReceiver,
    topic: String,
    subscription: String,
    path: String,
    /// Bound on each network step (`sink.send_timeout`).
    timeout: Duration,
}

fn text(v: &AmqpSimpleValue) -> Option<String> {
    match v {
        AmqpSimpleValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn id_text(id: &AmqpMessageId) -> String {
    match id {
        AmqpMessageId::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn describe(message: &AmqpMessage) -> DeadLetter {
    let props = message.application_properties.as_ref().map(|p| &p.0);
    let get = |k: &str| props.and_then(|p| p.get(k)).and_then(text);
    let enqueued = message.message_annotations.as_ref().and_then(|a| {
        a.0.iter().find_map(|(k, v)| match (k, v) {
            (AmqpAnnotationKey::Symbol(s), AmqpValue::TimeStamp(t))
                if s.0 == "x-opt-enqueued-time" =>
            {
                t.0.map(DateTime::<Utc>::from)
            }
            _ => None,
        })
    });
    let body = match &message.body {
        AmqpMessageBody::Binary(parts) => String::from_utf8_lossy(&parts.concat()).into_owned(),
        AmqpMessageBody::Value(v) => format!("{v:?}"),
        AmqpMessageBody::Empty => String::new(),
        other => format!("{other:?}"),
    };
    DeadLetter {
        message_id: message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(id_text)
            .unwrap_or_default(),
        reason: get("DeadLetterReason"),
        description: get("DeadLetterErrorDescription"),
        delivery_count: message
            .header
            .as_ref()
            .map(|h| h.delivery_count)
            .unwrap_or(0),
        enqueued,
        body,
    }
}

impl DeadLetterQueue {
    /// Opens the dead-letter queue of `topic`/`subscription` in peek-lock mode, with at most
    /// `prefetch` messages in flight (a peek of N must not lock messages it will not show).
    pub async fn open(
        config: &ServiceBusConfig,
        topic: &str,
        subscription: &str,
        prefetch: u32,
    ) -> Result<Self, DlqError> {
        let endpoint =
            Endpoint::from_config(config).map_err(|e| DlqError::Config(e.to_string()))?;
        let limit = config.send_timeout;
        let link = within(
            limit,
            || format!("connecting to {}", endpoint.display),
            connect(&endpoint, "pollbus-dlq"),
        )
        .await?;
        let path = format!("{topic}/Subscriptions/{subscription}/$DeadLetterQueue");
        for entity in [path.as_str(), topic] {
            within(
                limit,
                || format!("authorizing {entity}"),
                link.authorize(&endpoint, entity),
            )
            .await?;
        }
        let receiver = AmqpReceiver::new();
        let source = AmqpSource::builder()
            .with_address(endpoint.entity(&path))
            .build();
        within(
            limit,
            || format!("cannot open {path}"),
            receiver.attach(
                &link.session,
                source,
                Some(AmqpReceiverOptions {
                    receiver_settle_mode: Some(ReceiverSettleMode::Second),
                    credit_mode: Some(ReceiverCreditMode::Auto(prefetch.max(1))),
                    name: Some(format!("pollbus-dlq-{subscription}")),
                    ..Default::default()
                }),
            ),
        )
        .await?;
        Ok(DeadLetterQueue {
            endpoint,
            link,
            receiver,
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            path,
            timeout: limit,
        })
    }

    /// The next message, or `None` when the queue stays silent for a moment.
    async fn next(&self) -> Result<Option<AmqpDelivery>, DlqError> {
        match tokio::time::timeout(IDLE, self.receiver.receive_delivery()).await {
            Err(_) => Ok(None),
            Ok(Ok(d)) => Ok(Some(d)),
            Ok(Err(e)) => Err(DlqError::ServiceBus(format!(
                "receiving from {}: {e}",
                self.path
            ))),
        }
    }

    /// Up to `count` messages, left in the queue.
    pub async fn peek(&self, count: usize) -> Result<Vec<DeadLetter>, DlqError> {
        let mut seen = Vec::new();
        let mut held = Vec::new();
        while seen.len() < count {
            let Some(d) = self.next().await? else { break };
            seen.push(describe(d.message()));
            held.push(d);
        }
        self.release_all(held).await?;
        Ok(seen)
    }

    /// Stops asking for messages, then releases `held` and any already on their way, so nothing
    /// stays locked by this tool. A released message can come straight back while the link
    /// still has credit; with credit no longer replenished, this ends once the credit is spent.
    async fn release_all(&self, mut held: Vec<AmqpDelivery>) -> Result<(), DlqError> {
        let _ = self
            .receiver
            .set_credit_mode(ReceiverCreditMode::Manual)
            .await;
        loop {
            while let Ok(Ok(extra)) =
                tokio::time::timeout(Duration::from_millis(300), self.receiver.receive_delivery())
                    .await
            {
                held.push(extra);
            }
            if held.is_empty() {
                return Ok(());
            }
            for d in held.drain(..) {
                within(
                    self.timeout,
                    || format!("releasing a message in {}", self.path),
                    self.receiver.release_delivery(&d),
                )
                .await?;
            }
        }
    }

    /// Sends up to `count` messages back to the topic and completes them here. With `dry_run`,
    /// only lists them (and leaves them).
    pub async fn resubmit(&self, count: usize, dry_run: bool) -> Result<Vec<DeadLetter>, DlqError> {
        if dry_run {
            return self.peek(count).await;
        }
        let sender = AmqpSender::new();
        within(
            self.timeout,
            || format!("cannot send to topic {}", self.topic),
            sender.attach(
                &self.link.session,
                "pollbus-resubmit".into(),
                self.endpoint.entity(&self.topic),
                None,
            ),
        )
        .await?;
        let mut done = Vec::new();
        while done.len() < count {
            let Some(d) = self.next().await? else { break };
            let original = d.message().clone();
            let info = describe(&original);
            let mut copy = AmqpMessage::builder()
                .with_body(original.body.clone())
                .build();
            let mut props = original.properties.clone().unwrap_or_default();
            props.message_id =
                Some(resubmit_message_id(&info.message_id, &self.subscription).into());
            copy.properties = Some(props);
            let mut app = original.application_properties.clone().unwrap_or_default();
            app.0.remove("DeadLetterReason");
            app.0.remove("DeadLetterErrorDescription");
            app.insert(
                RESUBMITTED_FROM.to_string(),
                AmqpSimpleValue::String(info.message_id.clone()),
            );
            app.insert(
                RESUBMIT_FOR.to_string(),
                AmqpSimpleValue::String(self.subscription.clone()),
            );
            copy.application_properties = Some(app);
            match tokio::time::timeout(self.timeout, sender.send(copy, None)).await {
                Ok(Ok(AmqpSendOutcome::Accepted)) => {}
                _ => {
                    let _ = tokio::time::timeout(self.timeout, self.receiver.release_delivery(&d))
                        .await;
                    return Err(DlqError::ServiceBus(format!(
                        "topic {} did not accept the resubmitted message {}; it stays in the dead-letter queue",
                        self.topic, info.message_id
                    )));
                }
            }
            within(
                self.timeout,
                || {
                    format!(
                        "completing {} in {} (it was resubmitted; it may be resubmitted twice)",
                        info.message_id, self.path
                    )
                },
                self.receiver.accept_delivery(&d),
            )
            .await?;
            done.push(info);
        }
        self.release_all(Vec::new()).await?;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sender.detach()).await;
        Ok(done)
    }

    /// Deletes messages enqueued before `older_than` (all when `None`); with `dry_run`, only
    /// lists them. Returns the messages purged (or that would be).
    pub async fn purge(
        &self,
        older_than: Option<DateTime<Utc>>,
        dry_run: bool,
    ) -> Result<Vec<DeadLetter>, DlqError> {
        let mut purged = Vec::new();
        let mut kept = Vec::new();
        while let Some(d) = self.next().await? {
            let info = describe(d.message());
            let old = match (older_than, info.enqueued) {
                (None, _) => true,
                (Some(cutoff), Some(at)) => at < cutoff,
                (Some(_), None) => false,
            };
            if old && !dry_run {
                within(
                    self.timeout,
                    || format!("deleting {} from {}", info.message_id, self.path),
                    self.receiver.accept_delivery(&d),
                )
                .await?;
            } else {
                kept.push(d);
            }
            if old {
                purged.push(info);
            }
        }
        self.release_all(kept).await?;
        Ok(purged)
    }

    /// Closes the connection; gives up on a clean goodbye after a few seconds (dropping the
    /// connection then ends it, and the broker releases any locks it still holds).
    pub async fn close(self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.receiver.detach())
            .await
            .is_err()
        {
            tracing::warn!(path = %self.path, "detaching the receiver timed out");
        }
        self.link.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resubmit_id_is_stable_per_original_and_subscription() {
        let id = resubmit_message_id("3f2a", "errors");
        assert_eq!(id, resubmit_message_id("3f2a", "errors"));
        assert_eq!(id.len(), 32);
        assert_ne!(id, resubmit_message_id("3f2a", "billing"));
        assert_ne!(id, resubmit_message_id("3f2b", "errors"));
        assert_ne!(id, "3f2a");
        // Pinned: subscribers and runbooks may rely on it.
        assert_eq!(
            id,
            hex::encode(&Sha256::digest(b"3f2a|resubmit|errors")[..16])
        );
    }
}
