//! The Azure Service Bus sink, on Microsoft's AMQP crate `azure_core_amqp` with a thin Service
//! Bus layer of our own (see design.md → Key decisions). One file per role:
//!
//! - `endpoint.rs`: the namespace URL and transport the configuration describes;
//! - `credentials.rs`: claims-based security, a SAS token (`sas.rs`) or an Entra ID token
//!   (`entra.rs`: workload identity, managed identity, developer login) put to `$cbs` per
//!   topic;
//! - renewal: a task on the AMQP thread puts a fresh token for each topic once half of its
//!   token's lifetime has passed, whether or not anything is being sent (Service Bus detaches
//!   a link whose token expired; Microsoft's SDKs renew on a timer too);
//! - `link.rs`: one connection and session, opened lazily and re-opened after a failure (the
//!   publisher's backoff paces the reconnects), and one sender link per topic, created on first
//!   use and reused;
//! - `mapping.rs`: messages mapped exactly as `contract.rs` describes (MessageId, SessionId =
//!   partitionKey, Subject = event name, ContentType, application properties, JSON body in a
//!   data section);
//! - `batch.rs`: batches in the Service Bus envelope (message format `0x80013700`, one data
//!   section per encoded message, the first message's id/session/partition key on the
//!   envelope), cut at the link's maximum message size and, on partitioned topics, at every
//!   partition-key change;
//! - `classify.rs`: outcomes mapped to retryable (busy, timeouts, lost connections: the rows
//!   stay in the outbox) or permanent (missing topic, unauthorized, too large: dead-letter
//!   table);
//! - `runtime.rs`: the AMQP client's own thread;
//! - this file: the [`ServiceBusSink`] and its send loop; `dlq.rs`: `pollbus dlq`.

mod batch;
mod classify;
mod credentials;
pub mod dlq;
mod endpoint;
mod entra;
mod link;
mod mapping;
mod runtime;
pub mod sas;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core_amqp::{AmqpMessage, AmqpSendOutcome, AmqpSenderApis};
use tokio::sync::Mutex;

pub use batch::BATCH_FORMAT;
pub use link::ensure_crypto_provider;
pub use mapping::to_amqp;
pub use runtime::{AmqpRuntime, RuntimeStopped};

use super::{Sink, SinkBuildError, SinkError};
use crate::config::ServiceBusConfig;
use crate::contract::Message;
use classify::{at_index, classify, from_outcome};
use endpoint::Endpoint;
use link::Link;

/// Publishes to Service Bus topics. The AMQP work runs on a thread of its own
/// ([`runtime`] explains why).
pub struct ServiceBusSink {
    core: Arc<SinkCore>,
    /// The token renewal task (ends when the sink is dropped).
    _renewal: tokio_util::task::AbortOnDropHandle<()>,
    runtime: AmqpRuntime,
}

/// How often the renewal task looks for tokens due at the latest.
const RENEWAL_CHECK: Duration = Duration::from_millis(250);
/// The renewal task's wait after a failure: doubling from the first to the second.
const RENEWAL_RETRY_MIN: Duration = Duration::from_secs(1);
const RENEWAL_RETRY_MAX: Duration = Duration::from_secs(30);

/// The connection state and the publishing logic, used on the AMQP thread only.
struct SinkCore {
    /// Where and how to connect; replaced when a rotated SAS key is picked up.
    endpoint: std::sync::Mutex<Endpoint>,
    config: ServiceBusConfig,
    link: Mutex<Option<Link>>,
}

impl ServiceBusSink {
    /// A sink for `config`; connects on first use.
    pub fn new(config: &ServiceBusConfig) -> Result<Self, SinkBuildError> {
        let core = SinkCore {
            endpoint: std::sync::Mutex::new(Endpoint::from_config(config)?),
            config: config.clone(),
            link: Mutex::new(None),
        };
        let runtime = AmqpRuntime::start("pollbus-amqp").map_err(|e| SinkBuildError {
            kind: "servicebus",
            message: format!("cannot start the Service Bus client thread: {e}"),
        })?;
        let core = Arc::new(core);
        let renewal = runtime.spawn(core.clone().renew_tokens());
        Ok(ServiceBusSink {
            core,
            _renewal: renewal,
            runtime,
        })
    }

    /// Runs `work` with the core on the AMQP thread.
    async fn on_amqp_thread<T, F, Fut>(&self, work: F) -> Result<T, SinkError>
    where
        F: FnOnce(Arc<SinkCore>) -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .run(work(self.core.clone()))
            .await
            .unwrap_or_else(|stopped| Err(SinkError::transient(stopped.to_string())))
    }

    /// Connects now (readiness, `check --probe`).
    pub async fn connect_now(&self) -> Result<(), SinkError> {
        self.on_amqp_thread(|core| async move {
            let mut guard = core.link.lock().await;
            core.ensure_link(&mut guard).await.map(|_| ())
        })
        .await
    }

    /// Attaches a sender to each topic without sending anything (`check --probe`).
    pub async fn probe_topics(&self, topics: &[String]) -> Vec<(String, Result<(), SinkError>)> {
        let core = self.core.clone();
        let owned = topics.to_vec();
        match self
            .runtime
            .run(async move { core.probe_topics(owned).await })
            .await
        {
            Ok(results) => results,
            Err(stopped) => topics
                .iter()
                .map(|t| {
                    let reason = stopped.to_string();
                    (t.clone(), Err(SinkError::transient(reason)))
                })
                .collect(),
        }
    }
}

impl SinkCore {
    /// The endpoint in force.
    fn endpoint(&self) -> Endpoint {
        self.endpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After the broker refused our credentials: reads the connection string's secret
    /// reference (`${file:…}`, `${env:…}`) again and, when it changed (a regenerated SAS key
    /// rolled out to the mounted secret), connects with the new one from the next attempt on.
    /// A literal connection string or an unchanged one leaves everything as it is.
    fn reload_credentials(&self) {
        let Some(configured) = &self.config.connection_string else {
            return;
        };
        if matches!(configured.reference(), crate::config::SecretRef::Literal) {
            return;
        }
        let mut fresh = configured.clone();
        if let Err(e) = fresh.resolve() {
            tracing::warn!(error = %e, "sink.connection_string could not be read again after an authorization failure");
            return;
        }
        let mut changed = self.config.clone();
        changed.connection_string = Some(fresh);
        match Endpoint::from_config(&changed) {
            Ok(endpoint) => {
                let mut current = self.endpoint.lock().unwrap_or_else(|e| e.into_inner());
                if current.credentials.same_as(&endpoint.credentials) {
                    return;
                }
                *current = endpoint;
                tracing::warn!(
                    namespace = %current.display,
                    "sink.connection_string changed (a regenerated key was rolled out); connecting with the new one"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "the re-read sink.connection_string is not usable; keeping the previous one")
            }
        }
    }

    /// Renews each topic's token once half its lifetime has passed, for as long as the sink
    /// lives. The token is fetched before the link is locked (a slow authority never holds up
    /// a send), then put to `$cbs` for every due topic. After a failure it waits (1 s, doubling
    /// up to 30 s) and tries again; a put-token that failed also closes the connection, as any
    /// failed attempt does, so the next send starts over and reports what is wrong.
    async fn renew_tokens(self: Arc<Self>) {
        let mut retry = RENEWAL_RETRY_MIN;
        loop {
            let next = {
                let guard = self.link.lock().await;
                guard.as_ref().and_then(Link::next_renewal)
            };
            let wait = next
                .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(RENEWAL_CHECK)
                .min(RENEWAL_CHECK);
            tokio::time::sleep(wait).await;
            match self.renew_due().await {
                Ok(()) => retry = RENEWAL_RETRY_MIN,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "token renewal failed");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RENEWAL_RETRY_MAX);
                }
            }
        }
    }

    /// Puts a fresh token for every topic whose token is due.
    async fn renew_due(&self) -> Result<(), SinkError> {
        let due = {
            let guard = self.link.lock().await;
            guard
                .as_ref()
                .map(|l| l.due(SystemTime::now()))
                .unwrap_or_default()
        };
        if due.is_empty() {
            return Ok(());
        }
        let endpoint = self.endpoint();
        endpoint
            .credentials
            .prefetch()
            .await
            .map_err(|e| e.for_topic(&due.join(", ")))?;
        for topic in due {
            let mut guard = self.link.lock().await;
            let Some(link) = guard.as_mut() else {
                return Ok(()); // closed meanwhile: the next send authorizes anew
            };
            if !link.due(SystemTime::now()).contains(&topic) {
                continue; // a send renewed it meanwhile
            }
            let renewed =
                tokio::time::timeout(self.config.send_timeout, link.renew(&endpoint, &topic))
                    .await
                    .unwrap_or_else(|_| {
                        Err(SinkError::transient(format!(
                            "renewing the token of topic {topic} timed out"
                        )))
                    });
            if let Err(e) = renewed {
                if let Some(link) = guard.take() {
                    link.close().await;
                }
                return Err(endpoint.credentials.explain(e));
            }
        }
        Ok(())
    }

    /// The open link, connecting first (within `send_timeout`) when there is none.
    async fn ensure_link<'a>(
        &self,
        guard: &'a mut Option<Link>,
    ) -> Result<&'a mut Link, SinkError> {
        let endpoint = self.endpoint();
        link::ensure(guard, &endpoint, self.config.send_timeout).await
    }

    async fn probe_topics(&self, topics: Vec<String>) -> Vec<(String, Result<(), SinkError>)> {
        let mut out = Vec::new();
        for topic in &topics {
            let mut guard = self.link.lock().await;
            let result = self
                .attempt(
                    &mut guard,
                    &format!("attaching to topic {topic}"),
                    async |g| {
                        let link = self.ensure_link(g).await?;
                        link.sender(&self.endpoint(), topic).await.map(|_| ())
                    },
                )
                .await;
            out.push((topic.clone(), result));
        }
        out
    }

    /// Sends `messages` to `topic` on `link`: one message alone, more in batch envelopes.
    async fn send_all(
        &self,
        link: &mut Link,
        topic: &str,
        messages: &[Message],
    ) -> Result<(), SinkError> {
        let config = &self.config;
        let sender = link.sender(&self.endpoint(), topic).await?;
        let max = config
            .max_batch_bytes
            .unwrap_or(sender.max_message_size)
            .min(sender.max_message_size.max(1));
        let amqp: Vec<AmqpMessage> = messages
            .iter()
            .map(|m| to_amqp(m, config.session_id, config.partitioned))
            .collect();
        let encoded: Vec<Vec<u8>> = amqp
            .iter()
            .map(|m| AmqpMessage::serialize(m).unwrap_or_default())
            .collect();
        for range in batch::cut(messages, &encoded, max, config.partitioned) {
            let single = range.len() == 1;
            tracing::debug!(topic, messages = range.len(), "sending");
            let outcome = if single {
                sender.sender.send_ref(&amqp[range.start], None).await
            } else {
                let envelope = batch::envelope(
                    &messages[range.start],
                    encoded[range.clone()].to_vec(),
                    config.session_id,
                    config.partitioned,
                );
                sender
                    .sender
                    .send(envelope, Some(batch::batch_options()))
                    .await
            };
            let index = single.then_some(range.start);
            match outcome {
                Ok(AmqpSendOutcome::Accepted) => {}
                Ok(other) => return Err(at_index(from_outcome(topic, &other), index)),
                Err(e) => {
                    let e = self
                        .endpoint()
                        .credentials
                        .explain(classify(topic, "sending to", &e));
                    return Err(at_index(e, index));
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        let mut guard = self.link.lock().await;
        self.attempt(
            &mut guard,
            &format!("sending to topic {topic}"),
            async |g| {
                let link = self.ensure_link(g).await?;
                self.send_all(link, topic, messages).await
            },
        )
        .await
    }

    /// Runs `work` on the connection within `send_timeout` (`what` names it in the timeout
    /// error). After any failure the connection is closed, so the next attempt starts over on a
    /// fresh one: after a timeout or a lost connection the old one is in doubt, and a refused
    /// link may leave the session in doubt too (refusals are rare; a reconnect is cheap).
    async fn attempt<T>(
        &self,
        guard: &mut Option<Link>,
        what: &str,
        work: impl AsyncFnOnce(&mut Option<Link>) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let limit = self.config.send_timeout;
        let result = tokio::time::timeout(limit, work(guard))
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::transient(format!(
                    "{what} timed out after {limit:?}"
                )))
            });
        if result.is_err() {
            if let Some(link) = guard.take() {
                link.close().await;
            }
        }
        if let Err(SinkError::Blocked {
            block: crate::sink::TopicBlock::Unauthorized,
            ..
        }) = &result
        {
            self.reload_credentials();
        }
        result
    }
}

#[async_trait]
impl Sink for ServiceBusSink {
    async fn publish(&self, topic: &str, messages: &[Message]) -> Result<(), SinkError> {
        let topic = topic.to_string();
        let messages = messages.to_vec();
        self.on_amqp_thread(|core| async move { core.publish(&topic, &messages).await })
            .await
    }

    fn describe(&self) -> String {
        format!("servicebus:{}", self.core.endpoint().display)
    }

    async fn probe(&self, topics: &[String]) -> Vec<(String, Result<(), SinkError>)> {
        self.probe_topics(topics).await
    }

    async fn connect(&self) -> Result<(), SinkError> {
        self.connect_now().await
    }
}
